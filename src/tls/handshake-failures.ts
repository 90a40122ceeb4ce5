// Failed TLS handshakes: a reason from a small fixed set for each (the metric label), and logging
// that stays readable during a flood: the first failure of each reason in a window is a warning,
// the rest of that window are debug lines with a running count, summed up by the next warning.

import type { Logger } from 'pino'
import { Counter, type Registry } from 'prom-client'

/** Every value of `edge_tls_handshake_failures_total{reason}`. */
export const FAILURE_REASONS = [
  /** The handshake did not finish within `timeouts.handshakeMs`. */
  'timeout',
  /** The client closed or reset the connection before the handshake finished. */
  'client_closed',
  /** The client sent a fatal alert (it did not accept the certificate, …). */
  'client_alert',
  /** Not TLS, or a protocol version this server does not speak (HTTP on the TLS port, SSLv3 …). */
  'protocol',
  /** A malformed or unexpected message (decode_error, record_overflow, unexpected_message …). */
  'malformed',
  /** No common cipher suite, group, signature algorithm or application protocol. */
  'negotiation',
  /** Strict SNI refused the server name (unrecognized_name). */
  'unknown_server_name',
  /** An entry with `clientAuth` mode `require`: no client certificate sent, or one that did not verify. */
  'client_certificate',
  /** The signature could not be made: keyd unreachable, stuck, sealed or refusing. */
  'keyd',
  'other'
] as const

export type FailureReason = typeof FAILURE_REASONS[number]

const PROTOCOL = /WRONG_VERSION_NUMBER|UNSUPPORTED_PROTOCOL|UNKNOWN_PROTOCOL|HTTPS?_REQUEST|HTTPS_PROXY_REQUEST|VERSION_TOO_(LOW|HIGH)|UNSUPPORTED_SSL_VERSION|INAPPROPRIATE_FALLBACK|BAD_PROTOCOL_VERSION/
const NEGOTIATION = /NO_SHARED|NO_SUITABLE|NO_CIPHERS|NO_PROTOCOLS_AVAILABLE|NO_APPLICATION_PROTOCOL|NO_SUITABLE_KEY_SHARE|NO_COMMON_SIGNATURE|WRONG_CURVE|NO_SHARED_GROUPS/
const MALFORMED = /LENGTH|TOO_SMALL|TOO_LONG|EXCESSIVE|UNEXPECTED|BAD_|DECODE|PARSE|INVALID|MISSING|DUPLICATE|RECORD|EXTENSION|COMPRESSION|CCS_RECEIVED_EARLY|ILLEGAL|MALFORMED/
/** The key bridge's errors (keyd/bridge): library "keyedge", reasons starting "keyd:". */
const BRIDGE = /KEYD|KEYEDGE/
/** OpenSSL refused a missing client certificate (SSL_VERIFY_FAIL_IF_NO_PEER_CERT). */
const CLIENT_CERTIFICATE = /PEER_DID_NOT_RETURN_A_CERTIFICATE/

/** The reason of a `tlsClientError` (Node maps OpenSSL's reason to `code`, e.g. ERR_SSL_NO_SHARED_CIPHER). */
export function failureReason (err: NodeJS.ErrnoException): FailureReason {
  const code = err.code ?? ''
  if (code === 'ERR_TLS_HANDSHAKE_TIMEOUT') return 'timeout'
  if (code === 'ECONNRESET' || code === 'EPIPE' || code === 'ERR_SSL_UNEXPECTED_EOF_WHILE_READING') return 'client_closed'
  if (/^ERR_SSL_(SSLV3|TLSV1|TLSV13)_ALERT_/.test(code)) return 'client_alert'
  if (BRIDGE.test(code) || /\bkeyd\b|:keyedge:/i.test(err.message)) return 'keyd'
  if (!code.startsWith('ERR_SSL_') && !code.startsWith('ERR_OSSL_')) return 'other'
  if (CLIENT_CERTIFICATE.test(code)) return 'client_certificate'
  if (PROTOCOL.test(code)) return 'protocol'
  if (NEGOTIATION.test(code)) return 'negotiation'
  if (MALFORMED.test(code)) return 'malformed'
  return 'other'
}

/** Counts failed handshakes by reason and logs them as described above. */
export class HandshakeFailures {
  readonly #log: Logger
  readonly #counter: Counter<string>
  readonly #windowMs: number
  readonly #now: () => number
  readonly #state = new Map<FailureReason, { warnedAt: number, since: number }>()

  constructor (o: { log: Logger, registry: Registry, windowMs?: number, now?: () => number }) {
    this.#log = o.log
    this.#windowMs = o.windowMs ?? 60_000
    this.#now = o.now ?? Date.now
    this.#counter = (o.registry.getSingleMetric('edge_tls_handshake_failures_total') as Counter<string> | undefined) ?? new Counter({
      name: 'edge_tls_handshake_failures_total',
      help: `TLS handshakes that failed, by reason (${FAILURE_REASONS.join(', ')})`,
      labelNames: ['reason'],
      registers: [o.registry]
    })
  }

  /** Counts and logs one failure; `detail` holds no secret (codes, a short OpenSSL reason, names). */
  record (reason: FailureReason, detail: Record<string, unknown> = {}): void {
    this.#counter.inc({ reason })
    const now = this.#now()
    const s = this.#state.get(reason)
    if (s === undefined || now - s.warnedAt >= this.#windowMs) {
      this.#log.warn({ reason, ...detail, ...(s !== undefined && s.since > 0 ? { sincePreviousWarning: s.since } : {}) },
        `TLS handshake failed (${reason}); more of the same within ${this.#windowMs / 1000} s are logged at debug level`)
      this.#state.set(reason, { warnedAt: now, since: 0 })
      return
    }
    s.since++
    this.#log.debug({ reason, ...detail, count: s.since }, 'TLS handshake failed')
  }
}
