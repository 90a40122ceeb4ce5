// The one place loggers are made: JSON lines (pino) with anything key-, secret- or token-like redacted.
import { pino, type Logger } from 'pino'

export const REDACT_PATHS = [
  'key', '*.key', 'privateKey', '*.privateKey', 'secret', '*.secret', 'passphrase', '*.passphrase',
  'token', '*.token', 'authorization', '*.authorization', 'req.headers.authorization', 'headers.authorization'
]

/** A logger named `name` writing JSON lines to stdout; level from KEYEDGE_LOG_LEVEL (default info). */
export function createLogger (name: string, level = process.env.KEYEDGE_LOG_LEVEL ?? 'info'): Logger {
  return pino({ name, level, redact: { paths: REDACT_PATHS, censor: '[redacted]' } })
}
