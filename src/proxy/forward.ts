// Forwards one client request (HTTP/1.1 or HTTP/2) to its upstream with undici, streaming both
// bodies; answers 404 without a route, 502 when the upstream fails, 504 when it times out.

import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2'
import type { Logger } from 'pino'
import { Counter, type Registry } from 'prom-client'
import type { Dispatcher } from 'undici'
import type { RouteConfig } from '../config/types.js'
import { clientResponseHeaders, upstreamRequestHeaders } from './forward-headers.js'
import { createRouter } from './router.js'
import { createTrustMatcher, normalizeAddress } from './trusted-proxies.js'
import { UpstreamPools } from './upstream-pools.js'

export type ClientRequest = IncomingMessage | Http2ServerRequest
export type ClientResponse = ServerResponse | Http2ServerResponse

export interface Forwarder {
  handle: (req: ClientRequest, res: ClientResponse) => void
  close: () => Promise<void>
}

const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT'])

/** `writeHead` on either response kind (their overloads do not unify into one callable type). */
function writeHead (res: ClientResponse, status: number, headers: Record<string, string | number | string[]>): void {
  if ('stream' in res) res.writeHead(status, headers)
  else res.writeHead(status, headers)
}

function sendJson (res: ClientResponse, status: number, body: Record<string, string>): void {
  if (res.headersSent) {
    res.destroy()
    return
  }
  const text = JSON.stringify(body)
  writeHead(res, status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' })
  res.end(text)
}

function hasBody (req: ClientRequest): boolean {
  if (req.httpVersionMajor >= 2) return !(req as Http2ServerRequest).stream.endAfterHeaders
  const length = req.headers['content-length']
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0')
}

function requestPath (url: string): string {
  if (url.startsWith('/')) return url
  try {
    const parsed = new URL(url)
    return `${parsed.pathname}${parsed.search}`
  } catch {
    return url
  }
}

/** Builds the request handler of a worker; `close()` releases its upstream pools. */
export function createForwarder (opts: {
  routes: readonly RouteConfig[]
  trustedProxies: readonly string[]
  log: Logger
  registry: Registry
}): Forwarder {
  const router = createRouter(opts.routes)
  const isTrusted = createTrustMatcher(opts.trustedProxies)
  const pools = new UpstreamPools()
  const log = opts.log
  const requests = (opts.registry.getSingleMetric('edge_proxy_requests_total') as Counter<string> | undefined) ??
    new Counter({
      name: 'edge_proxy_requests_total',
      help: 'Client requests by outcome (forwarded, no_route, bad_request, bad_gateway, gateway_timeout, aborted)',
      labelNames: ['outcome'],
      registers: [opts.registry]
    })

  function handle (req: ClientRequest, res: ClientResponse): void {
    const authority = (req.headers[':authority'] as string | undefined) ?? req.headers.host
    const url = req.url ?? '/'
    if (authority === undefined || authority === '') {
      requests.inc({ outcome: 'bad_request' })
      sendJson(res, 400, { error: 'bad_request', message: 'the request has no Host' })
      return
    }
    const route = router.match(authority, url)
    if (route === undefined) {
      requests.inc({ outcome: 'no_route' })
      sendJson(res, 404, { error: 'no_route', message: 'no route matches this host and path' })
      return
    }
    const peer = normalizeAddress(req.socket?.remoteAddress)
    const headers = upstreamRequestHeaders(req.headers, { host: authority, peer, trusted: isTrusted(peer) })
    const abort = new AbortController()
    let done = false
    res.once('close', () => {
      if (!done && !res.writableFinished) abort.abort()
    })
    const options: Dispatcher.RequestOptions = {
      method: req.method as Dispatcher.HttpMethod,
      path: requestPath(url),
      headers,
      body: hasBody(req) ? req : null,
      signal: abort.signal,
      headersTimeout: route.timeoutMs,
      bodyTimeout: route.timeoutMs
    }
    pools.get(route).request(options).then(upstream => {
      requests.inc({ outcome: 'forwarded' })
      writeHead(res, upstream.statusCode, clientResponseHeaders(upstream.headers))
      upstream.body.on('error', (err: NodeJS.ErrnoException) => {
        // Headers are gone already: all that can be done is to cut the client off.
        if (!abort.signal.aborted) {
          log.warn({ upstream: route.upstream, code: err.code }, 'upstream response body failed')
        }
        res.destroy()
      })
      upstream.body.on('end', () => { done = true })
      upstream.body.pipe(res as NodeJS.WritableStream)
    }, (err: NodeJS.ErrnoException) => {
      done = true
      if (abort.signal.aborted) {
        requests.inc({ outcome: 'aborted' })
        return
      }
      const timeout = TIMEOUT_CODES.has(err.code ?? '')
      requests.inc({ outcome: timeout ? 'gateway_timeout' : 'bad_gateway' })
      log.warn({ upstream: route.upstream, method: req.method, code: err.code ?? err.name }, timeout ? 'upstream timed out' : 'upstream request failed')
      sendJson(res, timeout ? 504 : 502, timeout
        ? { error: 'gateway_timeout', message: 'the upstream did not answer in time' }
        : { error: 'bad_gateway', message: 'the upstream could not be reached or failed' })
    })
  }

  return { handle, close: async () => await pools.close() }
}
