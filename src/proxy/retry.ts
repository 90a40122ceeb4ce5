// Retries of idempotent requests, bounded by a budget: within a sliding 10 s window, retries may
// add at most `budgetPercent` of the route's requests (or `minRetries`), so that when every target
// fails, retries add a bounded share of load instead of multiplying it.

import type { RetryConfig } from '../config/types.js'

/** Methods whose requests may be sent twice (RFC 9110 §9.2.2). */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE'])

/** Errors meaning the request did not get an answer from that target: refused, reset, cut or unreachable. */
const RETRIABLE_ERRORS = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN',
  'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_CLOSED'
])

/** True when a request may go to another target: an idempotent method and no body to replay. */
export function replayable (method: string | undefined, hasBody: boolean): boolean {
  return !hasBody && IDEMPOTENT.has(method ?? '')
}

/** True for an error that a retry on another target may cure. */
export function retriableError (code: string | undefined): boolean {
  return code !== undefined && RETRIABLE_ERRORS.has(code)
}

const BUCKETS = 10
const BUCKET_MS = 1000

/** Requests and retries counted per second over the last 10 s. */
export class RetryBudget {
  readonly #config: RetryConfig
  readonly #requests = new Uint32Array(BUCKETS)
  readonly #retries = new Uint32Array(BUCKETS)
  #epoch = 0
  constructor (config: RetryConfig) {
    this.#config = config
  }

  #advance (now: number): number {
    const epoch = Math.floor(now / BUCKET_MS)
    const gap = Math.min(epoch - this.#epoch, BUCKETS)
    for (let i = 1; i <= gap; i++) {
      const slot = (this.#epoch + i) % BUCKETS
      this.#requests[slot] = 0
      this.#retries[slot] = 0
    }
    if (gap > 0) this.#epoch = epoch
    return epoch % BUCKETS
  }

  /** Counts a client request (once, not per try). */
  request (now = Date.now()): void {
    const slot = this.#advance(now)
    this.#requests[slot] = (this.#requests[slot] ?? 0) + 1 // slot < BUCKETS
  }

  /** Takes one retry from the budget: false when it is spent. */
  tryRetry (now = Date.now()): boolean {
    const slot = this.#advance(now)
    let requests = 0
    let retries = 0
    for (const n of this.#requests) requests += n
    for (const n of this.#retries) retries += n
    const allowed = Math.max(this.#config.minRetries, Math.floor(requests * this.#config.budgetPercent / 100))
    if (retries >= allowed) return false
    this.#retries[slot] = (this.#retries[slot] ?? 0) + 1 // slot < BUCKETS
    return true
  }
}
