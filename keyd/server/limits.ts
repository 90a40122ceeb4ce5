// Memory bounds for keyd's connections: what one connection may hold (a partial frame, requests not
// yet answered, answers not yet read by the client) and a budget shared by all of them, so a client
// that pipelines without reading, or opens many connections with unfinished frames, cannot grow keyd.

/** Per-connection and global limits (docs/keyd.md, "Limits"). */
export interface ConnectionLimits {
  /** Bytes a connection may have buffered before a successful HELLO (a HELLO is ~150 bytes). */
  preHelloBytes: number
  /** Answers queued for a client above this: keyd stops reading its socket until they drain. */
  writeHighWater: number
  /** Bytes one connection may hold at once (partial frame + unanswered requests + unread answers); above: OVERLOADED, or disconnect. */
  maxConnectionBytes: number
  /** Bytes each connection may hold without drawing on the shared budget. */
  freeBytesPerConnection: number
  /** The shared budget: bytes held beyond each connection's free allowance, all connections together. */
  sharedBytes: number
  /** A connection whose client reads none of its answers for this long is closed. */
  stallTimeoutMs: number
  /**
   * After keyd refuses a connection (an error frame, then close) it stops reading it and closes it
   * this much later, so the client can read the error frame first.
   */
  closeLingerMs: number
}

export const CONNECTION_LIMITS: ConnectionLimits = {
  preHelloBytes: 4096,
  writeHighWater: 256 * 1024,
  maxConnectionBytes: 4 * 1024 * 1024,
  freeBytesPerConnection: 16 * 1024,
  sharedBytes: 16 * 1024 * 1024,
  stallTimeoutMs: 30_000,
  closeLingerMs: 1000
}

/** The shared budget: each connection reports how many bytes it holds; only the excess over its free allowance is drawn. */
export class MemoryBudget {
  #drawn = 0
  #held = 0
  constructor (readonly limits: ConnectionLimits) {}

  /** Bytes held by every connection together (a gauge). */
  get held (): number { return this.#held }
  /** Bytes drawn from the shared budget. */
  get drawn (): number { return this.#drawn }

  /** A connection's holding changes from `before` to `after` bytes. */
  move (before: number, after: number): void {
    this.#held += after - before
    this.#drawn += this.#excess(after) - this.#excess(before)
  }

  /** Whether a connection holding `before` bytes may hold `after` without passing its own cap or the shared budget. */
  allows (before: number, after: number): boolean {
    if (after > this.limits.maxConnectionBytes) return false
    return this.#drawn + this.#excess(after) - this.#excess(before) <= this.limits.sharedBytes
  }

  #excess (n: number): number {
    return n > this.limits.freeBytesPerConnection ? n - this.limits.freeBytesPerConnection : 0
  }
}
