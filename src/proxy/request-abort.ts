// The cancel switch of one proxied request: what an AbortController is to undici, for a fraction of
// its cost. undici takes an EventEmitter with `aborted` as a request's signal; an AbortController
// is an EventTarget, whose listener bookkeeping (undici adds and removes one per request) cost the
// worker ~5 µs per proxied request in cpu-prof, more than the rest of the forwarder's own logic.
import { EventEmitter } from 'node:events'

/** Aborts one upstream request; `signal` is itself (AbortController's shape, so callers read `abort.signal.aborted`). */
export class RequestAbort extends EventEmitter {
  /** True once abort() was called. */
  aborted = false

  /** The signal to hand to undici (this object). */
  get signal (): this { return this }

  /** Cancels the request (once): undici's listener fails it with RequestAbortedError. */
  abort (): void {
    if (this.aborted) return
    this.aborted = true
    this.emit('abort')
  }
}
