// WebSockets over HTTP/2 (RFC 8441): the server announces SETTINGS_ENABLE_CONNECT_PROTOCOL, a client
// opens a stream with `:method CONNECT` and `:protocol websocket`, and that stream carries the
// WebSocket's frames. Upstreams speak HTTP/1.1, so the stream is bridged to an HTTP/1.1
// `Upgrade: websocket` on a new connection to the route's target: its `101` becomes the stream's
// `200` (subprotocol and extensions passed back), any other answer is passed back as it is, and from
// then on bytes are copied both ways unchanged. Idle timeout, metrics, draining, route limits and
// the access-log line are those of HTTP/1.1 WebSockets (websocket.ts).

import { randomBytes } from 'node:crypto'
import { request as httpRequest, type IncomingHttpHeaders, type IncomingMessage } from 'node:http'
import { constants, type OutgoingHttpHeaders, type ServerHttp2Stream } from 'node:http2'
import { request as httpsRequest } from 'node:https'
import type { Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import type { Logger } from 'pino'
import type { Counter, Gauge } from 'prom-client'
import type { RouteConfig } from '../config/types.js'
import { requestIdOf, type AccessLog, type WebSocketRecord } from './access-log.js'
import { clientAddress } from './client-address.js'
import { requestAuthority, upstreamRequestHeaders, withoutHopByHop } from './forward-headers.js'
import { endConnection } from './http-limits.js'
import { upstreamPath } from './path-rewrite.js'
import { addressRefused } from './route-access.js'
import { ANSWERS } from './forward-common.js'
import { admitWebSocket, type RouteLimits } from './route-limits.js'
import type { Router } from './router.js'
import { normalizeAddress } from './trusted-proxies.js'
import { splice } from './websocket-splice.js'

export interface H2WebSockets {
  /** Handles an HTTP/2 CONNECT stream (only `:protocol websocket` is proxied; any other gets 400). */
  connect: (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => void
  /** Ends every open stream and its upstream connection (shutdown). */
  endAll: () => void
  /** WebSockets open now. */
  size: () => number
}

/** The stream's answer when the proxy refuses or fails it: a status and a JSON reason; returns the body's size (0 if none was sent). */
function answer (stream: ServerHttp2Stream, status: number, error: string, message: string, extra: OutgoingHttpHeaders = {}): number {
  if (stream.destroyed || stream.closed) return 0
  if (stream.headersSent) {
    stream.close(constants.NGHTTP2_CANCEL)
    return 0
  }
  const body = JSON.stringify({ error, message })
  const size = Buffer.byteLength(body)
  stream.respond({ ...extra, ':status': status, 'content-type': 'application/json', 'content-length': size })
  stream.end(body)
  return size
}

export function createH2WebSockets (opts: {
  /** The current routes (a reload replaces them) and trusted proxies. */
  routing: () => { router: Router, isTrusted: (address: string) => boolean }
  /** The access log in force (a WebSocket's line goes to the one of when it ends). */
  accessLog: () => AccessLog
  limits: RouteLimits
  targetOf: (route: RouteConfig, headers: IncomingHttpHeaders, peer: string) => string | undefined
  total: Counter<string>
  open: Gauge
  log: Logger
  /** Called after a WebSocket closed (its line written). */
  onClosed?: () => void
}): H2WebSockets {
  const { total, open, limits } = opts
  const pairs = new Map<[ServerHttp2Stream, Socket], WebSocketRecord>()

  function connect (stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    // A stream 'error' nobody listens to would end the worker.
    stream.on('error', () => {})
    const { router, isTrusted } = opts.routing()
    const protocol = String(headers[':protocol'] ?? '').toLowerCase()
    const path = String(headers[':path'] ?? '/')
    const peer = normalizeAddress(stream.session?.socket?.remoteAddress)
    const trusted = isTrusted(peer)
    const rec: WebSocketRecord = {
      id: requestIdOf(headers['x-request-id'], trusted),
      method: 'CONNECT',
      host: typeof headers[':authority'] === 'string' ? headers[':authority'] : headers.host,
      url: path,
      status: 200,
      complete: true,
      bytesIn: 0,
      bytesOut: 0,
      start: performance.now(),
      tls: stream.session?.socket as TLSSocket | undefined
    }
    // Written once, when the stream closes (or at once for a refusal), to the access log of then.
    let logged = false
    const finish = (status?: number): void => {
      if (logged) return
      logged = true
      if (status !== undefined) rec.status = status
      opts.accessLog().webSocket(rec)
    }
    const refused = (status: number, error: string, message: string, extra?: OutgoingHttpHeaders): void => {
      total.inc({ event: 'refused' })
      // As for requests, bytesOut is the size of the proxy's own error body.
      rec.bytesOut = answer(stream, status, error, message, extra)
      finish(status)
    }
    const authority = requestAuthority(headers, [])
    const route = authority.ok ? router.match(authority.host, path) : undefined
    if (protocol !== 'websocket' || !authority.ok || route === undefined) {
      if (protocol !== 'websocket') refused(400, 'websocket_refused', 'only WebSocket CONNECT (RFC 8441) is proxied')
      else if (!authority.ok) refused(400, 'websocket_refused', authority.reason)
      else refused(404, 'websocket_refused', 'no route matches this host and path')
      return
    }
    rec.route = route
    rec.client = clientAddress(headers, peer, isTrusted)
    if (addressRefused(route, rec.client, limits)) {
      refused(403, ANSWERS.forbidden.error, ANSWERS.forbidden.message)
      return
    }
    const admitted = admitWebSocket(limits, route, rec.client)
    if (!admitted.ok) {
      refused(429, admitted.error, admitted.message, admitted.retryAfterSeconds === undefined ? undefined : { 'retry-after': String(admitted.retryAfterSeconds) })
      return
    }
    stream.once('close', admitted.release)
    const out = upstreamRequestHeaders(headers, { host: authority.host, peer, trusted, rules: route.requestHeaders, upstreamHost: route.upstreamHost })
    out['x-request-id'] = rec.id
    out.connection = 'upgrade'
    out.upgrade = 'websocket'
    // RFC 8441 drops the key/accept handshake on the HTTP/2 side; the HTTP/1.1 upstream needs one.
    out['sec-websocket-key'] = randomBytes(16).toString('base64')
    out['sec-websocket-version'] = typeof headers['sec-websocket-version'] === 'string' ? headers['sec-websocket-version'] : '13'
    const origin = opts.targetOf(route, headers, peer)
    if (origin === undefined) {
      refused(503, 'websocket_refused', 'no upstream target of this route is healthy')
      return
    }
    rec.upstream = origin
    rec.upstreamStartMs = performance.now()
    const target = new URL(origin)
    const tls = target.protocol === 'https:'
    // `upstreamHost: "target"` left Host out: the target's own.
    if (out.host === undefined) out.host = target.host
    const req = (tls ? httpsRequest : httpRequest)({
      host: target.hostname,
      port: Number(target.port !== '' ? target.port : tls ? 443 : 80),
      method: 'GET',
      path: upstreamPath(route, path),
      headers: out,
      agent: false,
      ...(tls ? { servername: target.hostname, ALPNProtocols: ['http/1.1'] } : {})
    })
    // Until the upstream's answer: the connect timeout, then the route's request timeout.
    // Either running out is a gateway timeout (504), as for HTTP requests; any other failure 502.
    let timedOut = false
    let timer = setTimeout(() => { timedOut = true; req.destroy(new Error('connect timeout')) }, route.connectTimeoutMs)
    req.once('socket', (s: Socket) => s.once('connect', () => {
      rec.upstreamConnectMs = performance.now() - (rec.upstreamStartMs ?? 0)
      clearTimeout(timer)
      timer = setTimeout(() => { timedOut = true; req.destroy(new Error('upstream timeout')) }, route.timeoutMs)
    }))
    const settle = (): void => clearTimeout(timer)
    // The client gave up before the upstream answered (nginx's 499).
    const onEarlyClose = (): void => {
      req.destroy()
      rec.complete = false
      finish(499)
    }
    stream.once('close', onEarlyClose)
    req.on('error', (err: NodeJS.ErrnoException) => {
      settle()
      if (logged) return
      total.inc({ event: 'upstream_failed' })
      opts.log.warn({ upstream: origin, code: err.code ?? err.message }, 'websocket upstream failed')
      stream.off('close', onEarlyClose)
      rec.bytesOut = timedOut
        ? answer(stream, 504, 'gateway_timeout', 'the upstream did not answer in time')
        : answer(stream, 502, 'bad_gateway', 'the upstream could not be reached or failed')
      finish(timedOut ? 504 : 502)
    })
    req.once('response', (res: IncomingMessage) => {
      // Not a 101: the upstream refused the WebSocket; its answer goes back as it is.
      settle()
      total.inc({ event: 'refused' })
      if (stream.destroyed || stream.closed) {
        res.destroy()
        return
      }
      rec.upstreamHeadersMs = performance.now()
      rec.status = res.statusCode ?? 502
      stream.off('close', onEarlyClose)
      stream.once('close', () => { rec.complete = stream.writableFinished; finish() })
      res.on('data', (chunk: Buffer) => { rec.bytesOut += chunk.length })
      stream.respond({ ...withoutHopByHop(res.headers), ':status': rec.status })
      res.pipe(stream)
    })
    req.once('upgrade', (res: IncomingMessage, upstream: Socket, head: Buffer) => {
      settle()
      rec.upstreamHeadersMs = performance.now()
      stream.off('close', onEarlyClose)
      if (stream.destroyed || stream.closed) {
        upstream.destroy()
        rec.complete = false
        finish(499)
        return
      }
      const back = withoutHopByHop(res.headers)
      delete back['sec-websocket-accept']
      stream.respond({ ...back, ':status': 200 })
      total.inc({ event: 'opened' })
      open.inc()
      const pair: [ServerHttp2Stream, Socket] = [stream, upstream]
      pairs.set(pair, rec)
      const idleMs = route.webSocketIdleMs
      const idle = (): void => {
        rec.complete = false
        total.inc({ event: 'idle_timeout' })
        stream.close(constants.NGHTTP2_NO_ERROR)
        upstream.destroy()
      }
      if (head.length > 0) stream.write(head)
      rec.bytesOut = head.length
      upstream.on('error', () => { rec.complete = false })
      splice(stream, upstream, {
        idleMs,
        onIdle: idle,
        open,
        total,
        count: rec,
        onClosed: () => {
          pairs.delete(pair)
          finish()
          opts.onClosed?.()
        },
        // After the upstream's FIN the pipe has ended the stream (END_STREAM); a reset is for the rest.
        closeClient: () => { if (!stream.destroyed) stream.close(constants.NGHTTP2_NO_ERROR) }
      })
    })
    req.end()
  }

  return {
    connect,
    size: () => pairs.size,
    endAll: () => {
      for (const [[stream, upstream], rec] of pairs) {
        rec.complete = false
        if (!stream.destroyed) stream.end()
        endConnection(upstream)
      }
    }
  }
}
