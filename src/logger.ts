// Creates the proxy's pino logger, with redaction of anything key-, secret- or token-like.
// Modules receive the logger as a parameter; nothing reaches for a global one.

import { pino, type Logger } from 'pino'

export type { Logger } from 'pino'

/** Paths pino censors wherever they appear in a log object (top level or one level down). */
export const REDACT_PATHS = [
  'key', 'keys', 'pem', 'secret', 'password', 'passphrase', 'token', 'privateKey', 'ticketKeys',
  '*.key', '*.keys', '*.pem', '*.secret', '*.password', '*.passphrase', '*.token', '*.privateKey', '*.ticketKeys',
  'headers.authorization', 'headers.cookie', 'headers["set-cookie"]', 'headers["proxy-authorization"]',
  '*.headers.authorization', '*.headers.cookie', '*.headers["set-cookie"]', '*.headers["proxy-authorization"]'
]

/** A JSON logger on stdout (or `destination`) with key-like fields redacted. */
export function createLogger (opts: { level: string, name?: string, destination?: NodeJS.WritableStream }): Logger {
  const options = {
    level: opts.level,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    base: { pid: process.pid, ...(opts.name !== undefined ? { name: opts.name } : {}) }
  }
  return opts.destination === undefined ? pino(options) : pino(options, opts.destination)
}
