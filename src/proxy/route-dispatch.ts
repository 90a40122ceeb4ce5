// One client request sent with undici's `dispatch` handler API on a route's pool
// (RoutePool.dispatch, route-pool.ts): its attempts one after another, each an undici handler that
// passes the answer's head and body chunks straight to the caller's sink (the direct request paths,
// h1-direct.ts and h2-direct.ts). The pool keeps the policy (balancing, metrics, outlier ejection,
// the retry budget); this file the order of events.

import { errors as undiciErrors, type Dispatcher } from 'undici'
import type { Target } from './balancer.js'
import { observe, type CounterCell, type HistogramCell } from './request-metrics.js'
import { retriableError } from './retry.js'

/**
 * Where a streamed upstream exchange (RoutePool.dispatch) reports: the answer that is passed on
 * (after any retries), its body chunk by chunk with undici's backpressure (return false to pause,
 * then call `resume`), its end, or the error that ended it (before or after the headers).
 */
export interface UpstreamSink {
  onUpstreamHeaders: (statusCode: number, rawHeaders: Buffer[], resume: () => void, target: Target) => boolean
  onUpstreamData: (chunk: Buffer) => boolean
  onUpstreamEnd: (rawTrailers: Array<Buffer | string> | null) => void
  onUpstreamError: (err: Error) => void
}

/** No target tried yet: the first pick's set (a request that is never retried needs no Set of its own). */
const NONE_TRIED: ReadonlySet<Target> = new Set()

/** Cancels a dispatched exchange (the client went away): the attempt in flight fails with RequestAbortedError. */
export interface Cancel { cancel: () => void }

/** What a DispatchRun asks of its pool (RoutePool's `_` methods). */
export interface DispatchPool {
  _pick: (tried: ReadonlySet<Target>, key: string | undefined, now: number) => Target | undefined
  _start: (target: Target, options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler) => { requests: CounterCell, duration: HistogramCell }
  _failed: (target: Target, code: string | undefined) => void
  _gaveUp: (target: Target, err: Error) => void
  _answered: (target: Target, status: number, retriesLeft: number) => boolean
  _nextTarget: (pick: () => Target | undefined) => Target | undefined
}

function errorCode (err: unknown): string | undefined {
  return err instanceof Error && 'code' in err && typeof err.code === 'string' ? err.code : undefined
}

/**
 * One client request dispatched on a RoutePool: its attempts, one after another (a retry starts
 * when the previous attempt failed before its answer, or answered a `retryOn` status, whose body
 * is then read and dropped so its connection stays reusable).
 */
export class DispatchRun implements Cancel {
  readonly #pool: DispatchPool
  readonly #options: Dispatcher.DispatchOptions
  readonly #sink: UpstreamSink
  readonly #key: string | undefined
  /** The targets tried so far; made when a retry first needs it (until then the one in `#target`). */
  #tried: Set<Target> | undefined
  readonly #now = Date.now()
  #retriesLeft: number
  #target: Target | undefined
  #attempt: Attempt | undefined
  cancelled = false

  constructor (pool: DispatchPool, options: Dispatcher.DispatchOptions, sink: UpstreamSink, key: string | undefined, retries: number) {
    this.#pool = pool
    this.#options = options
    this.#sink = sink
    this.#key = key
    this.#retriesLeft = retries
  }

  /** An eligible target not tried yet, by the pool's balancing. */
  pick (): Target | undefined {
    if (this.#target === undefined) return this.#pool._pick(NONE_TRIED, this.#key, this.#now)
    if (this.#tried === undefined) this.#tried = new Set([this.#target])
    return this.#pool._pick(this.#tried, this.#key, this.#now)
  }

  /** pick() for the pool's retry step: a closure made only when a retry is considered. */
  #retryPick (): () => Target | undefined {
    return () => this.pick()
  }

  /** Starts an attempt on `target`. */
  send (target: Target): void {
    this.#tried?.add(target)
    this.#target = target
    const attempt = new Attempt(this, target)
    this.#attempt = attempt
    try {
      attempt.cells = this.#pool._start(target, this.#options, attempt)
    } catch (err) {
      // The pools are closed: the worker is stopping.
      this.#sink.onUpstreamError(err instanceof Error ? err : new Error(String(err)))
    }
  }

  cancel (): void {
    if (this.cancelled) return
    this.cancelled = true
    this.#attempt?.abort()
  }

  /** The attempt on `target` failed before its answer: retry elsewhere, or report the error. */
  failed (target: Target, err: Error): void {
    if (this.cancelled) {
      this.#sink.onUpstreamError(err)
      return
    }
    const code = errorCode(err)
    this.#pool._failed(target, code)
    const next = this.#retriesLeft > 0 && retriableError(code) ? this.#pool._nextTarget(this.#retryPick()) : undefined
    if (next === undefined) {
      this.#pool._gaveUp(target, err)
      this.#sink.onUpstreamError(err)
      return
    }
    this.#retriesLeft--
    this.send(next)
  }

  /** An attempt's answer: false when it is dropped for a retry (already started), true when it goes to the sink. */
  answered (target: Target, status: number, rawHeaders: Buffer[], resume: () => void): boolean | 'retried' {
    if (this.#pool._answered(target, status, this.#retriesLeft)) {
      const next = this.#pool._nextTarget(this.#retryPick())
      if (next !== undefined && !this.cancelled) {
        this.#retriesLeft--
        this.send(next)
        return 'retried'
      }
    }
    return this.#sink.onUpstreamHeaders(status, rawHeaders, resume, target)
  }

  get sink (): UpstreamSink { return this.#sink }
  get current (): Target | undefined { return this.#target }
}

/** One attempt of a DispatchRun: undici's (legacy, allocation-free) dispatch handler. */
class Attempt implements Dispatcher.DispatchHandler {
  readonly #run: DispatchRun
  readonly #target: Target
  readonly #started = performance.now()
  cells: { requests: CounterCell, duration: HistogramCell } | undefined
  #abort: ((err: Error) => void) | undefined
  /** 'waiting' for the answer; 'passed' to the sink; 'dropped' (a retried answer, its body read away); 'done'. */
  #state: 'waiting' | 'passed' | 'dropped' | 'done' = 'waiting'

  constructor (run: DispatchRun, target: Target) {
    this.#run = run
    this.#target = target
  }

  abort (): void {
    if (this.#state === 'done' || this.#state === 'dropped') return
    this.#abort?.(new undiciErrors.RequestAbortedError())
  }

  onConnect (abort: (err?: Error) => void): void {
    this.#abort = abort
    if (this.#run.cancelled) abort(new undiciErrors.RequestAbortedError())
  }

  onError (err: Error): void {
    const state = this.#state
    this.#state = 'done'
    this.#target.outstanding--
    if (state === 'waiting') {
      this.#run.failed(this.#target, err)
      return
    }
    this.#observe()
    if (state === 'passed') this.#run.sink.onUpstreamError(err)
  }

  onHeaders (statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    // 1xx interim answers are not passed on (as undici's request() does).
    if (statusCode < 200 || this.#state !== 'waiting') return true
    const answer = this.#run.answered(this.#target, statusCode, rawHeaders, resume)
    if (answer === 'retried') {
      this.#state = 'dropped'
      return true
    }
    this.#state = 'passed'
    return answer
  }

  onData (chunk: Buffer): boolean {
    return this.#state !== 'passed' || this.#run.sink.onUpstreamData(chunk)
  }

  onComplete (rawTrailers: Array<Buffer | string> | null): void {
    const state = this.#state
    this.#state = 'done'
    this.#target.outstanding--
    this.#observe()
    if (state === 'passed') this.#run.sink.onUpstreamEnd(rawTrailers)
  }

  #observe (): void {
    if (this.cells !== undefined) observe(this.cells.duration, (performance.now() - this.#started) / 1000)
  }
}
