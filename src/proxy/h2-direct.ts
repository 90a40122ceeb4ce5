// The direct HTTP/2 path: the common request — not gRPC, not CONNECT, no `Expect` but `100-continue`, to a route whose
// targets speak HTTP/1.1, with or without a body — served on its ServerHttp2Stream itself instead of through
// Node's compatibility layer (Http2ServerRequest/Http2ServerResponse), and sent upstream with
// undici's `dispatch` handler API (RoutePool.dispatch) instead of its promise `request()`: the
// answer's head goes out with one `stream.respond()`, its body chunks with `stream.write()` as they
// arrive. Per request that skips two compat objects and their stream listeners, the trailers
// round trip the compat response makes on every stream, undici's body Readable, a promise and a
// parsed-header copy: the garbage that made HTTP/2 cost more per request than HTTP/1.1
// (docs/benchmarks.md, "Direct HTTP/2 path").
//
// Everything else takes the compatibility path (forward.ts), chosen here from the request's headers
// and its route before anything is allocated for it. Behaviour is the forwarder's: the same
// routing, header rules, limits, retries, outlier ejection, timeouts (502/504/503), the request
// body's streaming, idle timeout (408), size limit (413) and early-response rules (request-body.ts,
// read from the stream itself), access-log line, request id, metrics and rapid-reset deferral.

import { constants, type IncomingHttpHeaders, type OutgoingHttpHeaders, type ServerHttp2Stream } from 'node:http2'
import type { TLSSocket } from 'node:tls'
import type { Logger } from 'pino'
import type { Counter } from 'prom-client'
import { util as undiciUtil, type Dispatcher } from 'undici'
import type { RouteConfig, TimeoutsConfig } from '../config/types.js'
import { peerAddress } from '../tls/proxy-protocol.js'
import { NO_ACCESS_LOG, type StreamRecord } from './access-log.js'
import type { Target } from './balancer.js'
import { clientAddress } from './client-address.js'
import { ANSWERS, countedBody, errorCode, failureAnswer, leaveGeneration, requestPath, type Generation, type Outcome, type OutcomeCells } from './forward-common.js'
import { clientResponseHeaders, requestAuthority, upstreamRequestHeaders, withoutHopByHop, type OutgoingHeaders } from './forward-headers.js'
import { isGrpc } from './grpc.js'
import { failStream } from './h2-guard.js'
import { upstreamPath } from './path-rewrite.js'
import { addressRefused } from './route-access.js'
import { watchStreamBody, type StreamBodyWatch } from './request-body.js'
import { observe } from './request-metrics.js'
import type { RouteLimits } from './route-limits.js'
import type { Cancel, UpstreamSink } from './route-pool.js'
import { normalizeAddress } from './trusted-proxies.js'
import { watchConnectTime } from './upstream-connect-time.js'

/** What the direct path needs of the forwarder that owns it. */
export interface DirectContext {
  /** The config generation new requests start on. */
  generation: () => Generation
  /** The metric cells of an outcome. */
  cellsOf: (o: Outcome) => OutcomeCells
  limits: RouteLimits
  log: Logger
  /** `edge_early_responses_total` (request-body.ts). */
  early: Counter<'action'>
  /** `edge_timeouts_total`. */
  timeouts: Counter<'kind'>
  /** The timeouts in force, read per request (a reload may change them). */
  config: Pick<TimeoutsConfig, 'requestBodyIdleMs'>
}

/**
 * Serves a new HTTP/2 stream directly and returns true, or returns false having touched nothing
 * (the caller hands the stream to the compatibility layer).
 */
export type StreamHandler = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, rawHeaders: readonly string[]) => boolean

const EXCHANGE = Symbol('keyedge.h2Exchange')
type Stream = ServerHttp2Stream & { [EXCHANGE]?: Exchange }

// One set of listeners for every stream (not closures per request): the exchange hangs on the stream.
function onFinish (this: Stream): void { this[EXCHANGE]?.finished() }
function onClose (this: Stream): void { this[EXCHANGE]?.closed() }
function onDrain (this: Stream): void { this[EXCHANGE]?.drained() }
function onWantTrailers (this: Stream): void { this[EXCHANGE]?.sendTrailers() }
// A stream's errors (a client's reset with an error code) end in 'close', which settles the request;
// unheard, an 'error' would end the worker.
function ignoreError (): void {}

/**
 * True for a request the direct path can serve whatever its route: the cheap checks, made first.
 * `Expect: 100-continue` is served here as the compatibility layer serves it; any other expectation
 * gets its 417 there.
 */
function plainRequest (headers: IncomingHttpHeaders): boolean {
  const expect = headers.expect
  return headers[':method'] !== 'CONNECT' && (expect === undefined || expect === '100-continue') && !isGrpc(headers)
}

/** Builds the stream handler of one forwarder. */
export function createDirectH2 (ctx: DirectContext): StreamHandler {
  // Exchanges whose upstream request waits for the rest of this read (a RST_STREAM right behind the
  // HEADERS must be seen first, as on the compatibility path): one setImmediate for all of them.
  let queue: Exchange[] = []
  const flush = (): void => {
    const batch = queue
    queue = []
    for (const x of batch) x.dispatch()
  }

  return (stream, headers, rawHeaders) => {
    if (!plainRequest(headers)) return false
    const gen = ctx.generation()
    // Reset in the same read as its HEADERS (rapid reset): counted, nothing more spent on it.
    if (stream.destroyed || stream.closed) {
      stream.on('error', ignoreError)
      settleCells(ctx.cellsOf('aborted'), performance.now())
      return true
    }
    const authority = requestAuthority(headers, rawHeaders)
    const url = headers[':path'] ?? '/'
    const route = authority.ok ? gen.router.match(authority.host, url) : undefined
    if (route !== undefined && !gen.routePools.get(route).dispatchable) return false
    // 100 (Continue) at once, before any answer, as Node's compatibility layer sends it (the
    // `expect` header itself never goes upstream).
    if (headers.expect !== undefined) stream.additionalHeaders({ ':status': constants.HTTP_STATUS_CONTINUE })

    const x = new Exchange(ctx, stream, headers, gen, url)
    if (!authority.ok) {
      x.settle('bad_request')
      x.answer(400, { error: 'bad_request', message: authority.reason })
      return true
    }
    if (route === undefined) {
      x.settle('no_route')
      x.answer(404, ANSWERS.noRoute)
      return true
    }
    if (x.admit(route, authority.host)) {
      queue.push(x)
      if (queue.length === 1) setImmediate(flush)
    }
    return true
  }
}

function settleCells (cells: OutcomeCells, t0: number): void {
  cells.count.n++
  observe(cells.time, (performance.now() - t0) / 1000)
}

/** One request on the direct path: the client's stream on one side, undici's dispatch on the other. */
class Exchange implements UpstreamSink {
  readonly #ctx: DirectContext
  readonly #stream: Stream
  readonly #headers: IncomingHttpHeaders
  readonly #gen: Generation
  readonly #url: string
  readonly #t0 = performance.now()
  readonly #rec: StreamRecord
  readonly #peer: string
  readonly #socket: TLSSocket | undefined
  #outcome: Outcome | undefined
  #route: RouteConfig | undefined
  #upstreamHeaders: OutgoingHeaders | undefined
  /** The status sent (200 until one is: what the access log says of a request with no answer). */
  #status = 200
  /** The `content-length` of an answer of the proxy's own (NaN for a forwarded one). */
  #declared = NaN
  /** The response was sent whole (our side of the stream ended). */
  #ended = false
  /** Headers went out (from upstream or our own). */
  #responded = false
  /** The client went away before the response was whole. */
  #gone = false
  #cancel: Cancel | undefined
  #resumeUpstream: (() => void) | undefined
  #waitingDrain = false
  #trailers: OutgoingHttpHeaders | undefined
  #stopConnectTime: (() => void) | undefined
  /** The request body on its way upstream (undefined without one). */
  #watch: StreamBodyWatch | undefined
  /** The body outgrew the route's maxBodyBytes: the upstream request failed for that. */
  #overLimit = false
  /** The proxy cancelled the upstream request itself: its error is no news. */
  #abandoned = false

  constructor (ctx: DirectContext, stream: Stream, headers: IncomingHttpHeaders, gen: Generation, url: string) {
    this.#ctx = ctx
    this.#stream = stream
    this.#headers = headers
    this.#gen = gen
    this.#url = url
    gen.inflight++
    stream[EXCHANGE] = this
    // `on`, not `once`: each is emitted once per stream, and once() wraps its listener in a new closure.
    stream.on('error', ignoreError)
    stream.on('finish', onFinish)
    stream.on('close', onClose)
    const socket = stream.session?.socket as TLSSocket | undefined
    this.#socket = socket
    this.#peer = normalizeAddress(peerAddress(socket))
    this.#rec = gen.accessLog.beginStream(headers, socket, gen.isTrusted(this.#peer))
  }

  settle (o: Outcome): void {
    if (this.#outcome !== undefined) return
    this.#outcome = o
    settleCells(this.#ctx.cellsOf(o), this.#t0)
  }

  /**
   * The checks before a request goes upstream (rate limit, declared body size), then its upstream
   * headers. False when the proxy answered it itself.
   */
  admit (route: RouteConfig, host: string): boolean {
    const rec = this.#rec
    const headers = this.#headers
    const { isTrusted } = this.#gen
    const limits = this.#ctx.limits
    this.#route = route
    rec.route = route
    rec.client = clientAddress(headers, this.#peer, isTrusted)
    if (addressRefused(route, rec.client, limits)) {
      this.settle('forbidden')
      this.answer(403, ANSWERS.forbidden)
      return false
    }
    const admission = limits.admit(route, rec.client)
    if (!admission.ok) {
      this.settle('rate_limited')
      this.answer(429, ANSWERS.rateLimited, String(admission.retryAfterSeconds))
      return false
    }
    const declared = Number(headers['content-length'])
    if (Number.isFinite(declared) && limits.tooLarge(route, declared)) {
      limits.hit('body_size')
      this.settle('too_large')
      this.answer(413, ANSWERS.tooLarge)
      return false
    }
    const up = upstreamRequestHeaders(headers, { host, peer: this.#peer, trusted: isTrusted(this.#peer), socket: this.#socket, rules: route.requestHeaders, upstreamHost: route.upstreamHost })
    up['x-request-id'] = rec.id
    this.#upstreamHeaders = up
    if (!this.#stream.endAfterHeaders) {
      this.#watch = watchStreamBody(this.#stream, declared, { idleMs: this.#ctx.config.requestBodyIdleMs, early: this.#ctx.early, onIdle: () => { this.#bodyStalled() } })
    }
    return true
  }

  /** The client stopped sending its body while the proxy waited for it: 408, or a cut if the answer started. */
  #bodyStalled (): void {
    this.#ctx.timeouts.inc({ kind: 'request_body' })
    if (this.#ended) return
    this.settle('request_timeout')
    this.#abandon()
    this.#watch?.stop()
    this.answer(408, ANSWERS.requestTimeout)
  }

  /** Cancels the upstream request on the proxy's own account. */
  #abandon (): void {
    this.#abandoned = true
    this.#cancel?.cancel()
  }

  /** Sends the upstream request (after the rest of the read that brought the HEADERS). */
  dispatch (): void {
    const stream = this.#stream
    const route = this.#route as RouteConfig // set by admit()
    if (stream.destroyed || stream.closed) {
      this.settle('aborted')
      return
    }
    const rec = this.#rec
    rec.upstreamStartMs = performance.now()
    // Only for a written access log: the connect time goes nowhere else.
    if (this.#gen.accessLog !== NO_ACCESS_LOG) this.#stopConnectTime = watchConnectTime(rec.id, rec)
    const method = this.#headers[':method'] as string
    const options: Dispatcher.DispatchOptions = {
      method: method,
      path: upstreamPath(route, requestPath(this.#url)),
      headers: this.#upstreamHeaders,
      // undici sends any async iterable (its types only name streams).
      body: (this.#watch === undefined ? null : countedBody(this.#watch.body, rec, route.maxBodyBytes, () => { this.#overLimit = true })) as Dispatcher.DispatchOptions['body'],
      headersTimeout: route.timeoutMs,
      bodyTimeout: route.timeoutMs
    }
    this.#cancel = this.#gen.routePools.get(route).dispatch(options, { method, headers: this.#headers, peer: this.#peer, hasBody: this.#watch !== undefined }, this)
  }

  /** Answers with the proxy's own JSON (`retryAfter`: a 429's Retry-After); a response already started is cut. */
  answer (status: number, body: Readonly<Record<string, string>>, retryAfter?: string): void {
    const stream = this.#stream
    if (stream.destroyed || stream.closed) return
    if (this.#responded) {
      failStream(stream)
      return
    }
    const text = JSON.stringify(body)
    const length = Buffer.byteLength(text)
    const head: OutgoingHttpHeaders = { ':status': status, 'x-request-id': this.#rec.id }
    if (retryAfter !== undefined) head['retry-after'] = retryAfter
    head['content-type'] = 'application/json'
    head['content-length'] = length
    head['cache-control'] = 'no-store'
    this.#status = status
    this.#declared = length
    this.#responded = true
    this.#ended = true
    stream.respond(head)
    // A HEAD request's stream ended with the headers.
    if (!stream.writableEnded) stream.end(text)
  }

  onUpstreamHeaders (statusCode: number, rawHeaders: Buffer[], resume: () => void, target: Target): boolean {
    const rec = this.#rec
    const stream = this.#stream
    rec.upstream = target.url
    rec.upstreamHeadersMs = performance.now()
    // The client is gone, or the proxy answered already: the cancel is on its way; read nothing more.
    if (this.#gone || this.#abandoned || stream.destroyed || stream.closed) return true
    const parsed = undiciUtil.parseHeaders(rawHeaders) as Record<string, string | string[] | undefined>
    // An HTTP/1.1 answer carries trailers only in a chunked body: only then does the stream wait for them.
    const mayTrail = parsed['transfer-encoding'] !== undefined || parsed.trailer !== undefined
    const head: OutgoingHttpHeaders = clientResponseHeaders(parsed, (this.#route as RouteConfig).responseHeaders)
    if (head['x-request-id'] === undefined) head['x-request-id'] = rec.id
    head[':status'] = statusCode
    this.#resumeUpstream = resume
    try {
      if (mayTrail) {
        stream.once('wantTrailers', onWantTrailers)
        stream.respond(head, { waitForTrailers: true })
      } else {
        stream.respond(head)
      }
    } catch (err) {
      // Headers HTTP/2 cannot carry (Node refuses them): the upstream's answer is unusable.
      this.#ctx.log.warn({ upstream: target.url, code: errorCode(err) }, 'upstream response headers refused')
      this.#abandon()
      this.settle('bad_gateway')
      this.answer(502, ANSWERS.badGateway)
      return true
    }
    this.#status = statusCode
    this.#responded = true
    // HEAD, 204, 304: the stream ended with the headers.
    if (stream.writableEnded) this.#ended = true
    return true
  }

  onUpstreamData (chunk: Buffer): boolean {
    const stream = this.#stream
    if (this.#gone || stream.writableEnded || stream.destroyed) return true
    this.#rec.bytesOut += chunk.length
    if (stream.write(chunk) || this.#waitingDrain) return true
    // The client's side is full: undici pauses the upstream until the stream drains.
    this.#waitingDrain = true
    stream.once('drain', onDrain)
    return false
  }

  drained (): void {
    this.#waitingDrain = false
    if (!this.#gone) this.#resumeUpstream?.()
  }

  onUpstreamEnd (rawTrailers: Array<Buffer | string> | null): void {
    this.#rec.upstreamEndMs = performance.now()
    const stream = this.#stream
    if (this.#gone || stream.destroyed || stream.closed) return
    if (rawTrailers !== null && rawTrailers.length > 0) this.#trailers = withoutHopByHop(undiciUtil.parseHeaders(rawTrailers))
    this.#ended = true
    if (!stream.writableEnded) stream.end()
  }

  sendTrailers (): void {
    const stream = this.#stream
    if (!stream.destroyed && !stream.closed) stream.sendTrailers(this.#trailers ?? {})
  }

  onUpstreamError (err: Error): void {
    const stream = this.#stream
    if (this.#gone || this.#abandoned || this.#ended || stream.destroyed || stream.closed) return
    if (this.#overLimit && !this.#responded) {
      // The body outgrew route.maxBodyBytes: the upstream request was aborted mid-body.
      this.#ctx.limits.hit('body_size')
      this.settle('too_large')
      this.answer(413, ANSWERS.tooLarge)
      return
    }
    const failure = failureAnswer(err)
    if (this.#responded) {
      // Headers are gone already: all that can be done is to cut the client off.
      this.#ctx.log.warn({ upstream: this.#rec.upstream, code: failure.code }, 'upstream response body failed')
      this.settle(failure.outcome === 'gateway_timeout' ? 'gateway_timeout' : 'bad_gateway')
      failStream(stream)
      return
    }
    this.settle(failure.outcome)
    if (failure.logMessage !== undefined) {
      const route = this.#route as RouteConfig // set before anything is dispatched
      this.#ctx.log.warn({ upstream: failure.target ?? `${route.host}${route.pathPrefix}`, method: this.#headers[':method'], code: failure.code ?? err.name }, failure.logMessage)
    }
    this.answer(failure.status, failure.body)
  }

  /** The stream's writable side finished: the response is whole, or the stream was reset. */
  finished (): void {
    this.#watch?.responseEnded(this.#ended)
    if (this.#ended) this.settle('forwarded')
    else this.#left()
  }

  /** The client went away before its response was whole: cancel the upstream request now. */
  #left (): void {
    if (this.#gone) return
    this.#gone = true
    this.settle('aborted')
    this.#cancel?.cancel()
  }

  closed (): void {
    const stream = this.#stream
    this.#watch?.responseEnded(false)
    if (!this.#ended) this.#left()
    else this.settle('forwarded')
    stream[EXCHANGE] = undefined
    this.#stopConnectTime?.()
    const complete = this.#ended && (stream.rstCode === undefined || stream.rstCode === constants.NGHTTP2_NO_ERROR)
    this.#rec.end?.(this.#status, this.#rec.upstreamHeadersMs === undefined ? this.#declared : NaN, complete)
    leaveGeneration(this.#gen)
  }
}

/**
 * Puts `handle` in front of Node's compatibility layer on an `http2.createSecureServer` that has a
 * 'request' listener: Node then has exactly one 'stream' listener, which builds the compat request
 * and response; it is kept and called for every stream `handle` declines (and for all of them if
 * Node ever wires its server differently: then nothing is changed).
 */
export function serveStreamsDirectly (server: NodeJS.EventEmitter, handle: StreamHandler): boolean {
  const listeners = server.listeners('stream')
  const compat = listeners[0]
  if (listeners.length !== 1 || compat === undefined) return false
  server.removeListener('stream', compat as (...args: unknown[]) => void)
  server.on('stream', function (this: unknown, stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number, rawHeaders: string[]) {
    if (!handle(stream, headers, rawHeaders)) compat.call(this, stream, headers, flags, rawHeaders)
  })
  return true
}
