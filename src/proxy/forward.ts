// Forwards one client request (HTTP/1.1 or HTTP/2) to its upstream with undici, streaming both
// bodies with backpressure; answers 400 for a missing or ambiguous Host, 404 without a route, 502
// when the upstream fails, 504 when it times out, 408 when the client's body stalls. A request whose
// client goes away (an HTTP/2 reset included) is cancelled upstream at once and counted `aborted`.
// The target is chosen by the route's pool (route-pool.ts): 503 at once when none is healthy.
//
// Three ways through: an HTTP/1.1 request to an HTTP/1.1 pool is sent with undici's dispatch API
// and answered straight into its response (h1-direct.ts); most HTTP/2 requests never reach this
// file (h2-direct.ts serves them on their stream); the rest — gRPC, an `Expect` other than
// 100-continue, routes to HTTP/2 upstreams — go through Node's request/response objects and
// undici's `request()`.

import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http'
import { constants as h2constants, type Http2ServerRequest, type Http2ServerResponse } from 'node:http2'
import type { Logger } from 'pino'
import { Counter, type Registry } from 'prom-client'
import type { Dispatcher } from 'undici'
import type { RouteConfig, TimeoutsConfig } from '../config/types.js'
import { NO_ACCESS_LOG, type AccessLog } from './access-log.js'
import { clientAddress } from './client-address.js'
import { clientResponseHeaders, requestAuthority, upstreamRequestHeaders } from './forward-headers.js'
import { answerGrpcError, grpcDeadline, passTrailersOnly, relayTrailers } from './grpc.js'
import { resetStream } from './h2-guard.js'
import { watchRequestBody, whenResponseEnds } from './request-body.js'
import { relayResponseBody } from './response-body.js'
import { RequestAbort } from './request-abort.js'
import { createRouteLimits, type RouteLimits } from './route-limits.js'
import { fastCounter, fastHistogram, observe } from './request-metrics.js'
import { createRouter } from './router.js'
import { timeoutCounter } from './timeout-metric.js'
import { createTrustMatcher, normalizeAddress } from './trusted-proxies.js'
import { peerAddress } from '../tls/proxy-protocol.js'
import { RoutePools } from './route-pool.js'
import { UpstreamPools } from './upstream-pools.js'
import { watchConnectTime } from './upstream-connect-time.js'
import { createDirectH2, type StreamHandler } from './h2-direct.js'
import { upstreamPath } from './path-rewrite.js'
import { addressRefused } from './route-access.js'
import { H1Exchange } from './h1-direct.js'
import { ANSWERS, countedBody, failureAnswer, leaveGeneration, requestPath, TIMEOUT_CODES, type Generation, type Outcome, type OutcomeCells } from './forward-common.js'

export type ClientRequest = IncomingMessage | Http2ServerRequest
export type ClientResponse = ServerResponse | Http2ServerResponse

export interface Forwarder {
  handle: (req: ClientRequest, res: ClientResponse) => void
  /** Serves a new HTTP/2 stream on the direct path (h2-direct.ts) when it can: false leaves it to `handle` through the compatibility layer. */
  handleStream: StreamHandler
  /** The upstream origin of `route` for a connection-level request (WebSocket), by its pool's balancing and health; undefined when none is eligible. */
  targetOf: (route: RouteConfig, headers: IncomingHttpHeaders, peer: string) => string | undefined
  /**
   * Serves new requests with `next` (a config reload); requests in flight finish on what they
   * started with. The replaced pools' health checks stop now; connection pools no route uses any
   * more, and a replaced access log, are closed once the last request that started before is done.
   */
  update: (next: ForwardingConfig) => void
  /** Closes the upstream pools and the access log. */
  close: () => Promise<void>
}

/** What a reload can change in the forwarder (see createForwarder). */
export interface ForwardingConfig {
  routes: readonly RouteConfig[]
  trustedProxies: readonly string[]
  accessLog?: AccessLog
}

export type { Outcome }

function counter (registry: Registry, name: string, help: string, labelNames: string[]): Counter<string> {
  return (registry.getSingleMetric(name) as Counter<string> | undefined) ??
    new Counter({ name, help, labelNames, registers: [registry] })
}

/** `writeHead` on either response kind (their overloads do not unify into one callable type). */
function writeHead (res: ClientResponse, status: number, headers: Record<string, string | number | string[]>): void {
  if ('stream' in res) res.writeHead(status, headers)
  else res.writeHead(status, headers)
}

function sendJson (res: ClientResponse, status: number, body: Readonly<Record<string, string>>): void {
  if (res.headersSent) {
    res.destroy()
    return
  }
  // A gRPC call gets its error as a gRPC status in trailers (grpc.ts).
  if (answerGrpcError(res, status, body.message ?? body.error ?? '')) return
  const text = JSON.stringify(body)
  writeHead(res, status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' })
  res.end(text)
}

function hasBody (req: ClientRequest): boolean {
  if (req.httpVersionMajor >= 2) return !(req as Http2ServerRequest).stream.endAfterHeaders
  const length = req.headers['content-length']
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0')
}

/** True once an HTTP/2 request's stream is gone (the client reset it). */
function streamGone (req: ClientRequest): boolean {
  if (req.httpVersionMajor < 2) return false
  const stream = (req as Http2ServerRequest).stream
  return stream.destroyed || stream.closed
}

/** Cuts a response whose headers are out: HTTP/2 resets the stream, HTTP/1.1 drops the connection. */
function cutResponse (req: ClientRequest, res: ClientResponse): void {
  // RST_STREAM INTERNAL_ERROR, as on the direct path (h2-guard.ts failStream); the compatibility layer waits for trailers, so close() sends no END_STREAM first.
  if (req.httpVersionMajor >= 2) resetStream((req as Http2ServerRequest).stream, h2constants.NGHTTP2_INTERNAL_ERROR)
  else res.destroy()
}

/** Builds the request handler of a worker; `close()` releases its upstream pools. */
export function createForwarder (opts: {
  routes: readonly RouteConfig[]
  trustedProxies: readonly string[]
  timeouts: Pick<TimeoutsConfig, 'requestBodyIdleMs'>
  log: Logger
  registry: Registry
  /** Where each request's line goes (default: nowhere; request ids are still passed upstream). */
  accessLog?: AccessLog
  /** The route limits, shared with the worker's WebSockets (default: the forwarder's own). */
  limits?: RouteLimits
}): Forwarder {
  const pools = new UpstreamPools()
  const log = opts.log
  const generation = (next: ForwardingConfig, previous?: Generation): Generation => {
    const isTrusted = createTrustMatcher(next.trustedProxies)
    return {
      router: createRouter(next.routes),
      isTrusted,
      routePools: new RoutePools(next.routes, { connections: pools, log, registry: opts.registry, isTrusted, ...(previous === undefined ? {} : { previous: previous.routePools }) }),
      accessLog: next.accessLog ?? NO_ACCESS_LOG,
      inflight: 0
    }
  }
  let current = generation(opts)
  // Counted in plain numbers per outcome; prom-client gets the totals when /metrics is read (request-metrics.ts).
  const requests = fastCounter(opts.registry, { name: 'edge_proxy_requests_total',
    help: 'Client requests by outcome (forwarded, no_route, bad_request, bad_gateway, gateway_timeout, request_timeout, aborted, no_healthy_upstream, too_large, rate_limited, forbidden)', labelNames: ['outcome'] })
  const early = counter(opts.registry, 'edge_early_responses_total',
    'Responses complete before their request body, by what became of the rest of the body (drained, closed, reset)', ['action'])
  const timeouts = timeoutCounter(opts.registry)
  // Settled once per request: for `forwarded` when the response's last byte is written.
  const duration = fastHistogram(opts.registry, {
    name: 'edge_proxy_request_duration_seconds', help: 'Client requests from their headers to their outcome (for forwarded: the response\'s end), by outcome', buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
  })
  const outcomeCells = new Map<Outcome, OutcomeCells>()
  const cellsOf = (o: Outcome): OutcomeCells => {
    let cells = outcomeCells.get(o)
    if (cells === undefined) outcomeCells.set(o, cells = { count: requests.cell({ outcome: o }), time: duration.cell({ outcome: o }) })
    return cells
  }
  const limits = opts.limits ?? createRouteLimits({ registry: opts.registry })

  function handle (req: ClientRequest, res: ClientResponse): void {
    let outcome: Outcome | undefined
    const t0 = performance.now()
    const settle = (o: Outcome): void => {
      if (outcome !== undefined) return
      outcome = o
      const cells = cellsOf(o)
      cells.count.n++
      observe(cells.time, (performance.now() - t0) / 1000)
    }
    // Node emits an HTTP/2 request a tick after its HEADERS: a RST_STREAM in the same read (rapid
    // reset) has closed it already. Spend nothing more on it.
    if (streamGone(req)) {
      settle('aborted')
      return
    }
    // This request sees the routes, pools and access log of now to its end, whatever a reload does meanwhile.
    const gen = current
    const { router, isTrusted, routePools, accessLog } = gen
    gen.inflight++
    // After this response's access-log line, written on the same event by a listener added later.
    res.once('close', () => leaveGeneration(gen))
    const peer = normalizeAddress(peerAddress(req.socket))
    const trusted = isTrusted(peer)
    const rec = accessLog.begin(req, res, trusted)
    res.setHeader('x-request-id', rec.id)
    const authority = requestAuthority(req.headers, req.rawHeaders)
    if (!authority.ok) {
      settle('bad_request')
      if (req.httpVersionMajor < 2) res.setHeader('connection', 'close')
      sendJson(res, 400, { error: 'bad_request', message: authority.reason })
      return
    }
    const url = req.url ?? '/'
    const route = router.match(authority.host, url)
    if (route === undefined) {
      settle('no_route')
      sendJson(res, 404, ANSWERS.noRoute)
      return
    }
    rec.route = route
    rec.client = clientAddress(req.headers, peer, isTrusted)
    if (addressRefused(route, rec.client, limits)) {
      settle('forbidden')
      sendJson(res, 403, ANSWERS.forbidden)
      return
    }
    const admission = limits.admit(route, rec.client)
    if (!admission.ok) {
      settle('rate_limited')
      res.setHeader('retry-after', String(admission.retryAfterSeconds))
      sendJson(res, 429, ANSWERS.rateLimited)
      return
    }
    const declared = Number(req.headers['content-length'])
    if (Number.isFinite(declared) && limits.tooLarge(route, declared)) {
      limits.hit('body_size')
      settle('too_large')
      // The body is not read: the connection cannot carry another request.
      if (req.httpVersionMajor < 2) res.setHeader('connection', 'close')
      sendJson(res, 413, ANSWERS.tooLarge)
      return
    }
    const headers = upstreamRequestHeaders(req.headers, { host: authority.host, peer, trusted, socket: req.socket, rules: route.requestHeaders, upstreamHost: route.upstreamHost })
    headers['x-request-id'] = rec.id
    // HTTP/1.1 to an HTTP/1.1 pool: undici's dispatch API, the answer written straight to `res` (h1-direct.ts).
    const pool = routePools.get(route)
    if (req.httpVersionMajor < 2 && pool.dispatchable) {
      rec.upstreamStartMs = performance.now()
      if (accessLog !== NO_ACCESS_LOG) res.once('close', watchConnectTime(rec.id, rec))
      const method = req.method ?? 'GET'
      let tooLarge = false
      const exchange = new H1Exchange({
        res: res as ServerResponse,
        rec,
        route,
        method,
        headers: req.headers,
        peer,
        settle,
        answer: (status, body) => { sendJson(res, status, body) },
        log,
        tooLarge: () => {
          if (!tooLarge) return false
          // The body outgrew route.maxBodyBytes: the upstream request was aborted mid-body.
          limits.hit('body_size')
          settle('too_large')
          res.setHeader('connection', 'close')
          sendJson(res, 413, ANSWERS.tooLarge)
          return true
        }
      })
      const watch = hasBody(req)
        ? watchRequestBody(req, res, {
          idleMs: opts.timeouts.requestBodyIdleMs,
          early,
          onIdle: () => {
            timeouts.inc({ kind: 'request_body' })
            if (exchange.over) return
            settle('request_timeout')
            exchange.abandon()
            watch?.stop()
            if (res.headersSent) {
              res.destroy()
              return
            }
            res.setHeader('connection', 'close')
            sendJson(res, 408, ANSWERS.requestTimeout)
          }
        })
        : undefined
      // undici sends any async iterable (its types only name streams).
      const body = (watch === undefined ? null : countedBody(watch.body, rec, route.maxBodyBytes, () => { tooLarge = true })) as Dispatcher.DispatchOptions['body']
      exchange.start(pool, { method, path: upstreamPath(route, requestPath(url)), headers, body, headersTimeout: route.timeoutMs, bodyTimeout: route.timeoutMs }, watch !== undefined)
      return
    }
    let overLimit = false
    const abort = new RequestAbort()
    let responded = false
    whenResponseEnds(req, res, complete => {
      responded = complete
      if (complete) {
        settle('forwarded')
        return
      }
      // The client went away before its response was complete: cancel the upstream request now.
      settle('aborted')
      abort.abort()
    })
    const watch = hasBody(req)
      ? watchRequestBody(req, res, {
        idleMs: opts.timeouts.requestBodyIdleMs,
        early,
        onIdle: () => {
          timeouts.inc({ kind: 'request_body' })
          if (responded) return
          settle('request_timeout')
          abort.abort()
          watch?.stop()
          if (res.headersSent) {
            cutResponse(req, res)
            return
          }
          if (req.httpVersionMajor < 2) res.setHeader('connection', 'close')
          sendJson(res, 408, ANSWERS.requestTimeout)
        }
      })
      : undefined

    const dispatch = (): void => {
      // An HTTP/2 stream reset in the same read as its HEADERS (rapid reset) never reaches the upstream.
      if (streamGone(req)) {
        settle('aborted')
        return
      }
      // A gRPC call's grpc-timeout replaces the route's timeouts; at its end: DEADLINE_EXCEEDED (grpc.ts).
      const deadline = grpcDeadline(req, res, () => { settle('gateway_timeout'); abort.abort() })
      const options: Dispatcher.RequestOptions = {
        method: req.method as Dispatcher.HttpMethod,
        path: upstreamPath(route, requestPath(url)),
        headers,
        // undici sends any async iterable (its types only name streams).
        body: (watch === undefined ? null : countedBody(watch.body, rec, route.maxBodyBytes, () => { overLimit = true })) as Dispatcher.RequestOptions['body'],
        signal: abort.signal,
        headersTimeout: deadline === undefined ? route.timeoutMs : 0,
        bodyTimeout: deadline === undefined ? route.timeoutMs : 0
      }
      let target = ''
      rec.upstreamStartMs = performance.now()
      // Only for a written access log: the connect time goes nowhere else.
      if (accessLog !== NO_ACCESS_LOG) res.once('close', watchConnectTime(rec.id, rec))
      let pending: ReturnType<ReturnType<typeof routePools.get>['request']>
      try {
        pending = routePools.get(route).request(options, { method: req.method, headers: req.headers, peer, hasBody: watch !== undefined })
      } catch (err) {
        // The pools are closed: the worker is stopping.
        onUpstreamError(err)
        return
      }
      pending.then(({ response: upstream, target: chosen }) => {
        target = chosen.url
        rec.upstream = chosen.url
        rec.upstreamHeadersMs = performance.now()
        if (abort.signal.aborted || res.writableEnded) {
          // The client is gone: discard the body. destroy() would make undici emit UND_ERR_ABORTED on
          // a stream nobody listens to any more, which ends the worker; dump() reads it away quietly.
          upstream.body.dump().catch(() => {})
          return
        }
        const head = clientResponseHeaders(upstream.headers, route.responseHeaders)
        // A gRPC trailers-only response goes on as one (grpc.ts); anything else as usual.
        if (!passTrailersOnly(req, res, upstream, head)) writeHead(res, upstream.statusCode, head)
        // Before the relay's own 'end' listener: HTTP/2 trailers go out before the response ends.
        relayTrailers(req, res, upstream)
        relayResponseBody(upstream.body, res, rec, err => {
          if (abort.signal.aborted) return
          // Headers are gone already: all that can be done is to cut the client off.
          log.warn({ upstream: target, code: err.code }, 'upstream response body failed')
          settle(TIMEOUT_CODES.has(err.code ?? '') ? 'gateway_timeout' : 'bad_gateway')
          cutResponse(req, res)
        })
      }, onUpstreamError)
    }
    const onUpstreamError = (err: unknown): void => {
      if (abort.signal.aborted || res.writableEnded) return
      if (overLimit) {
        // The body outgrew route.maxBodyBytes: the upstream request was aborted mid-body.
        limits.hit('body_size')
        settle('too_large')
        if (req.httpVersionMajor < 2) res.setHeader('connection', 'close')
        sendJson(res, 413, ANSWERS.tooLarge)
        return
      }
      const failure = failureAnswer(err)
      settle(failure.outcome)
      if (failure.logMessage !== undefined) log.warn({ upstream: failure.target ?? `${route.host}${route.pathPrefix}`, method: req.method, code: failure.code ?? (err instanceof Error ? err.name : 'unknown') }, failure.logMessage)
      sendJson(res, failure.status, failure.body)
    }
    // HTTP/2: wait until the rest of this read is processed, so a RST_STREAM right behind the
    // HEADERS is seen before anything goes upstream.
    if (req.httpVersionMajor >= 2) setImmediate(dispatch)
    else dispatch()
  }

  return {
    handle,
    handleStream: createDirectH2({ generation: () => current, cellsOf, limits, log, early, timeouts, config: opts.timeouts }),
    targetOf: (route, headers, peer) => {
      try {
        return current.routePools.get(route).pickUrl({ headers, peer })
      } catch {
        // A route of a config a reload replaced: none of its targets is known any more.
        return undefined
      }
    },
    update: next => {
      const old = current
      current = generation(next, old)
      old.routePools.stop()
      old.retired = () => {
        old.retired = undefined
        // Pools of the newest config stay, with their connections; a later reload sweeps again.
        pools.closeUnused(current.routePools.connectionKeys())
        old.routePools.close() // its HTTP/2 sessions: no request of this generation is left on them
        if (old.accessLog !== current.accessLog) void old.accessLog.close()
      }
      if (old.inflight === 0) old.retired()
    },
    close: async () => {
      current.routePools.close()
      await pools.close()
      await current.accessLog.close()
    }
  }
}
