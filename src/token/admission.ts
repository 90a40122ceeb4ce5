// Admission control for token signing: token buckets per caller and overall. A request that would
// need a new keyd signature and finds its bucket empty is refused at once with a Retry-After.

/** A classic token bucket: `burst` tokens, refilled at `ratePerSecond`. */
export class TokenBucket {
  #tokens: number
  #last: number

  constructor (readonly ratePerSecond: number, readonly burst: number, nowMs = performance.now()) {
    this.#tokens = burst
    this.#last = nowMs
  }

  /** Takes one token: returns 0 if admitted, else the milliseconds until one will be there. */
  take (nowMs = performance.now()): number {
    this.#tokens = Math.min(this.burst, this.#tokens + Math.max(0, nowMs - this.#last) * this.ratePerSecond / 1000)
    this.#last = Math.max(this.#last, nowMs)
    if (this.#tokens >= 1) {
      this.#tokens -= 1
      return 0
    }
    return Math.ceil((1 - this.#tokens) * 1000 / this.ratePerSecond)
  }

  /** Gives back a token taken for a request that was refused further on (never above the burst). */
  refund (): void {
    this.#tokens = Math.min(this.burst, this.#tokens + 1)
  }
}

export type RejectReason = 'caller_rate' | 'global_rate' | 'queue_full' | 'queue_deadline'

/** Seconds for a Retry-After header: at least 1 (HTTP has no finer unit). */
export function retryAfterSeconds (ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000))
}

export class Admission {
  readonly #global: TokenBucket
  readonly #callers = new Map<string, TokenBucket>()

  constructor (global: { ratePerSecond: number, burst: number }, callers: Array<{ name: string, ratePerSecond: number, burst: number }>) {
    this.#global = new TokenBucket(global.ratePerSecond, global.burst)
    for (const c of callers) this.#callers.set(c.name, new TokenBucket(c.ratePerSecond, c.burst))
  }

  /** Admits one signature for `caller`, or says why not and when to retry. */
  admit (caller: string, nowMs = performance.now()): { ok: true } | { ok: false, reason: RejectReason, retryAfterMs: number } {
    const mine = this.#callers.get(caller)
    const waitCaller = mine?.take(nowMs) ?? 0
    if (waitCaller > 0) return { ok: false, reason: 'caller_rate', retryAfterMs: waitCaller }
    const waitGlobal = this.#global.take(nowMs)
    if (waitGlobal > 0) {
      mine?.refund()
      return { ok: false, reason: 'global_rate', retryAfterMs: waitGlobal }
    }
    return { ok: true }
  }
}
