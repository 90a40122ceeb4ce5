// The HTTP/1.1 twin of the direct HTTP/2 path (h2-direct.ts): a request to a route whose targets
// speak HTTP/1.1 is sent with undici's `dispatch` handler API (RoutePool.dispatch)
// and its answer written straight to Node's ServerResponse — no undici body Readable, promise or
// relay listeners in between. The forwarder (forward.ts) makes every check before handing it over
// (authority, route, rate limit, declared size) and keeps the request's outcome, access-log record,
// config generation and request-body watch (a body goes upstream as the watch's async iterable).

import type { IncomingHttpHeaders, ServerResponse } from 'node:http'
import type { Logger } from 'pino'
import { util as undiciUtil, type Dispatcher } from 'undici'
import type { RouteConfig } from '../config/types.js'
import type { AccessRecord } from './access-log.js'
import type { Target } from './balancer.js'
import { ANSWERS, failureAnswer, type Outcome } from './forward-common.js'
import { clientResponseHeaders, type OutgoingHeaders } from './forward-headers.js'
import type { Cancel, RoutePool, UpstreamSink } from './route-pool.js'

const EXCHANGE = Symbol('keyedge.h1Exchange')
type Response = ServerResponse & { [EXCHANGE]?: H1Exchange }

// Shared listeners (no closures per request): the exchange hangs on the response.
function onFinish (this: Response): void { this[EXCHANGE]?.finished() }
function onClose (this: Response): void { this[EXCHANGE]?.closed() }
function onDrain (this: Response): void { this[EXCHANGE]?.drained() }

/** What the forwarder gives the exchange of one request. */
export interface H1Request {
  res: ServerResponse
  rec: AccessRecord
  route: RouteConfig
  method: string
  headers: IncomingHttpHeaders
  peer: string
  /** Counts the request's outcome (once). */
  settle: (o: Outcome) => void
  /** Answers with the proxy's own JSON (or cuts a response already started). */
  answer: (status: number, body: Readonly<Record<string, string>>) => void
  log: Logger
  /** When the request body outgrew the route's limit: answers 413 and returns true. */
  tooLarge: () => boolean
}

/** One HTTP/1.1 request sent upstream with `dispatch`, its answer relayed to its response. */
export class H1Exchange implements UpstreamSink {
  readonly #r: H1Request
  readonly #res: Response
  #cancel: Cancel | undefined
  #resumeUpstream: (() => void) | undefined
  #waitingDrain = false
  /** The exchange is over for the client (its response finished, or it went away). */
  #over = false
  /** The proxy cancelled the upstream request itself (it answered the client): its error is no news. */
  #abandoned = false

  constructor (r: H1Request) {
    this.#r = r
    const res = r.res as Response
    this.#res = res
    res[EXCHANGE] = this
    // `on`, not `once`: each is emitted once per response, and once() wraps its listener in a new closure.
    res.on('finish', onFinish)
    res.on('close', onClose)
  }

  /** Sends the request upstream on `pool` (`hasBody`: `options.body` streams the client's body). */
  start (pool: RoutePool, options: Dispatcher.DispatchOptions, hasBody: boolean): void {
    const r = this.#r
    this.#cancel = pool.dispatch(options, { method: r.method, headers: r.headers, peer: r.peer, hasBody }, this)
  }

  /** True once the response finished or the client went away. */
  get over (): boolean {
    return this.#over
  }

  /** Cancels the upstream request on the proxy's own account (it answers the client itself). */
  abandon (): void {
    this.#abandoned = true
    this.#cancel?.cancel()
  }

  onUpstreamHeaders (statusCode: number, rawHeaders: Buffer[], resume: () => void, target: Target): boolean {
    const { rec } = this.#r
    rec.upstream = target.url
    rec.upstreamHeadersMs = performance.now()
    const res = this.#res
    if (this.#over || this.#abandoned || res.writableEnded) return true
    this.#resumeUpstream = resume
    const head: OutgoingHeaders = clientResponseHeaders(undiciUtil.parseHeaders(rawHeaders), this.#r.route.responseHeaders)
    try {
      res.writeHead(statusCode, head)
    } catch (err) {
      // Headers Node refuses to send: the upstream's answer is unusable.
      this.#r.log.warn({ upstream: target.url, code: err instanceof Error && 'code' in err ? err.code : undefined }, 'upstream response headers refused')
      this.abandon()
      this.#r.settle('bad_gateway')
      this.#r.answer(502, ANSWERS.badGateway)
    }
    return true
  }

  onUpstreamData (chunk: Buffer): boolean {
    const res = this.#res
    if (this.#over || res.writableEnded) return true
    this.#r.rec.bytesOut += chunk.length
    if (res.write(chunk) || this.#waitingDrain) return true
    // The client's side is full: undici pauses the upstream until the response drains.
    this.#waitingDrain = true
    res.once('drain', onDrain)
    return false
  }

  drained (): void {
    this.#waitingDrain = false
    if (!this.#over) this.#resumeUpstream?.()
  }

  onUpstreamEnd (): void {
    this.#r.rec.upstreamEndMs = performance.now()
    if (this.#over || this.#res.writableEnded) return
    this.#res.end()
  }

  onUpstreamError (err: Error): void {
    const res = this.#res
    if (this.#over || this.#abandoned || res.writableEnded) return
    const r = this.#r
    if (!res.headersSent && r.tooLarge()) return
    const failure = failureAnswer(err)
    if (res.headersSent) {
      // Headers are gone already: all that can be done is to cut the client off.
      r.log.warn({ upstream: r.rec.upstream, code: failure.code }, 'upstream response body failed')
      r.settle(failure.outcome === 'gateway_timeout' ? 'gateway_timeout' : 'bad_gateway')
      res.destroy()
      return
    }
    r.settle(failure.outcome)
    if (failure.logMessage !== undefined) r.log.warn({ upstream: failure.target ?? `${r.route.host}${r.route.pathPrefix}`, method: r.method, code: failure.code ?? err.name }, failure.logMessage)
    r.answer(failure.status, failure.body)
  }

  finished (): void {
    this.#over = true
    this.#r.settle('forwarded')
  }

  closed (): void {
    this.#res[EXCHANGE] = undefined
    if (this.#over) return
    // The client went away before its response was complete: cancel the upstream request now.
    this.#over = true
    this.#r.settle('aborted')
    this.#cancel?.cancel()
  }
}
