// WebSocket proxying (HTTP/1.1 `Upgrade: websocket`, RFC 6455): the upgrade request goes to the
// route's upstream over a new TCP (or TLS) connection with the usual forwarding headers, and from
// then on bytes are copied both ways unchanged — the upstream's 101 (or refusal) included. A pair
// idle in both directions for the route's `webSocketIdleMs` is closed; on shutdown every pair is
// ended (FIN both ways) once the grace period is over. WebSockets over HTTP/2 (RFC 8441 extended
// CONNECT) are bridged to the same HTTP/1.1 upgrade by websocket-h2.ts.

import type { IncomingMessage } from 'node:http'
import type { ServerHttp2Stream } from 'node:http2'
import { connect as netConnect, type Socket } from 'node:net'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import type { Logger } from 'pino'
import { Counter, Gauge, type Registry } from 'prom-client'
import type { RouteConfig } from '../config/types.js'
import { NO_ACCESS_LOG, requestIdOf, type AccessLog, type WebSocketRecord } from './access-log.js'
import { clientAddress } from './client-address.js'
import { requestAuthority, upstreamRequestHeaders } from './forward-headers.js'
import { endConnection } from './http-limits.js'
import { upstreamPath } from './path-rewrite.js'
import { addressRefused } from './route-access.js'
import { ANSWERS } from './forward-common.js'
import { admitWebSocket, createRouteLimits, type RouteLimits } from './route-limits.js'
import { createRouter } from './router.js'
import { createTrustMatcher, normalizeAddress } from './trusted-proxies.js'
import { peerAddress } from '../tls/proxy-protocol.js'
import { createH2WebSockets } from './websocket-h2.js'
import { splice } from './websocket-splice.js'
import { targetHost } from './target-host.js'

export type WebSocketOutcome = 'opened' | 'refused' | 'upstream_failed' | 'idle_timeout' | 'closed'

export interface WebSocketProxy {
  /** Handles an HTTP/1.1 upgrade request (the server's 'upgrade' event). */
  upgrade: (req: IncomingMessage, socket: Socket, head: Buffer) => void
  /** Handles an HTTP/2 extended CONNECT stream (RFC 8441, `:protocol websocket`). */
  connect: (stream: ServerHttp2Stream, headers: IncomingMessage['headers']) => void
  /**
   * New upgrades use these routes (a config reload); open pairs go on as they are, and their lines
   * go to `accessLog` when they end.
   */
  update: (next: { routes: readonly RouteConfig[], trustedProxies: readonly string[], accessLog?: AccessLog }) => void
  /** Ends every open pair (FIN both ways, destroyed a second later). */
  endAll: () => void
  /**
   * Resolves once no WebSocket is open (each one's line written); those still open after `ms` are
   * ended (endAll), so it resolves at most about CLOSE_LINGER_MS later. Shutdown awaits it before
   * the access log is closed.
   */
  drain: (ms: number) => Promise<void>
}

const REASONS: Record<number, string> = { 400: 'Bad Request', 403: 'Forbidden', 404: 'Not Found', 429: 'Too Many Requests', 502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout' }

/** Answers an upgrade the proxy will not pass on, and closes the connection; returns the body's size. */
function refuse (socket: Socket, status: number, error: string, reason: string, extra = ''): number {
  const body = JSON.stringify({ error, message: reason })
  const size = Buffer.byteLength(body)
  socket.end(`HTTP/1.1 ${status} ${REASONS[status] ?? 'Error'}\r\nConnection: close\r\n${extra}Content-Type: application/json\r\nContent-Length: ${size}\r\n\r\n${body}`)
  return size
}

/** The upstream's answer head is read (for the access log's status) up to this size; a longer one is passed on uncounted. */
const MAX_HEAD_BYTES = 16 * 1024

/** Builds the WebSocket half of a worker's forwarder. */
export function createWebSocketProxy (opts: {
  routes: readonly RouteConfig[]
  trustedProxies: readonly string[]
  log: Logger
  registry: Registry
  /** Where each WebSocket's line goes when it ends (a reload may replace it meanwhile). */
  accessLog?: AccessLog
  /** The route limits shared with HTTP requests (rate buckets); default: the WebSockets' own. */
  limits?: RouteLimits
  /** The upstream origin of a route (its pool's balancing and health); undefined = none eligible. */
  targetOf: (route: RouteConfig, headers: IncomingMessage['headers'], peer: string) => string | undefined
}): WebSocketProxy {
  let router = createRouter(opts.routes)
  let isTrusted = createTrustMatcher(opts.trustedProxies)
  let accessLog = opts.accessLog ?? NO_ACCESS_LOG
  const limits = opts.limits ?? createRouteLimits({ registry: opts.registry })
  const total = (opts.registry.getSingleMetric('edge_websocket_total') as Counter<string> | undefined) ??
    new Counter({ name: 'edge_websocket_total', help: 'WebSocket upgrades and how they ended (opened, refused, upstream_failed, idle_timeout, closed)', labelNames: ['event'], registers: [opts.registry] })
  const open = (opts.registry.getSingleMetric('edge_websocket_open') as Gauge | undefined) ??
    new Gauge({ name: 'edge_websocket_open', help: 'WebSocket connections open now', registers: [opts.registry] })
  const pairs = new Map<[Socket, Socket], WebSocketRecord>()
  // Shutdown's waiters for the last WebSocket to close (drain).
  let drained: Array<() => void> = []
  const closedOne = (): void => {
    if (pairs.size > 0 || h2.size() > 0) return
    const waiters = drained
    drained = []
    for (const resolve of waiters) resolve()
  }
  const h2 = createH2WebSockets({ routing: () => ({ router, isTrusted }), accessLog: () => accessLog, limits, targetOf: opts.targetOf, total, open, log: opts.log, onClosed: closedOne })

  function upgrade (req: IncomingMessage, socket: Socket, head: Buffer): void {
    const peer = normalizeAddress(peerAddress(socket))
    const trusted = isTrusted(peer)
    const rec: WebSocketRecord = {
      id: requestIdOf(req.headers['x-request-id'], trusted),
      method: req.method ?? 'GET',
      host: req.headers.host,
      url: req.url ?? '/',
      status: 101,
      complete: true,
      bytesIn: head.length,
      bytesOut: 0,
      start: performance.now(),
      tls: socket as TLSSocket
    }
    // Written once, to the access log in force when the WebSocket ends.
    let logged = false
    const finish = (status?: number): void => {
      if (logged) return
      logged = true
      if (status !== undefined) rec.status = status
      accessLog.webSocket(rec)
    }
    const refused = (status: number, error: string, reason: string, extra = ''): void => {
      total.inc({ event: 'refused' })
      // As for requests, bytesOut is the size of the proxy's own error body.
      rec.bytesOut = refuse(socket, status, error, reason, extra)
      finish(status)
    }
    const proto = String(req.headers.upgrade ?? '').toLowerCase()
    const authority = requestAuthority(req.headers, req.rawHeaders)
    const route = authority.ok ? router.match(authority.host, rec.url) : undefined
    if (proto !== 'websocket' || !authority.ok || route === undefined) {
      refused(route === undefined && authority.ok && proto === 'websocket' ? 404 : 400, 'websocket_refused',
        proto !== 'websocket' ? 'only WebSocket upgrades are proxied' : authority.ok ? 'no route matches this host and path' : authority.reason)
      return
    }
    rec.route = route
    rec.client = clientAddress(req.headers, peer, isTrusted)
    if (addressRefused(route, rec.client, limits)) {
      refused(403, ANSWERS.forbidden.error, ANSWERS.forbidden.message)
      return
    }
    const admitted = admitWebSocket(limits, route, rec.client)
    if (!admitted.ok) {
      refused(429, admitted.error, admitted.message, admitted.retryAfterSeconds === undefined ? '' : `Retry-After: ${admitted.retryAfterSeconds}\r\n`)
      return
    }
    socket.once('close', admitted.release)
    const headers = upstreamRequestHeaders(req.headers, { host: authority.host, peer, trusted, socket, rules: route.requestHeaders, upstreamHost: route.upstreamHost })
    headers['x-request-id'] = rec.id
    headers.connection = 'upgrade'
    headers.upgrade = 'websocket'
    const origin = opts.targetOf(route, req.headers, peer)
    if (origin === undefined) {
      refused(503, 'websocket_refused', 'no upstream target of this route is healthy')
      return
    }
    rec.upstream = origin
    const target = new URL(origin)
    const port = Number(target.port !== '' ? target.port : target.protocol === 'https:' ? 443 : 80)
    // `upstreamHost: "target"` left Host out: the target's own.
    if (headers.host === undefined) headers.host = target.host
    // Verified against the target's own name or IP, as the undici pools are.
    const { host, servername } = targetHost(target)
    rec.upstreamStartMs = performance.now()
    const upstream: Socket = target.protocol === 'https:'
      ? tlsConnect({ host, port, servername, ALPNProtocols: ['http/1.1'] })
      : netConnect({ host, port })
    // A target that does not connect in time is a gateway timeout (504), as for HTTP requests; any other failure 502.
    let timedOut = false
    const connectTimer = setTimeout(() => { timedOut = true; upstream.destroy(new Error('connect timeout')) }, route.connectTimeoutMs)
    connectTimer.unref()
    let lines = `${rec.method} ${upstreamPath(route, rec.url)} HTTP/1.1\r\n`
    for (const [name, value] of Object.entries(headers)) {
      for (const v of Array.isArray(value) ? value : [value]) lines += `${name}: ${v}\r\n`
    }
    upstream.write(`${lines}\r\n`)
    if (head.length > 0) upstream.write(head)
    let opened = false
    upstream.once(target.protocol === 'https:' ? 'secureConnect' : 'connect', () => {
      clearTimeout(connectTimer)
      rec.upstreamConnectMs = performance.now() - (rec.upstreamStartMs ?? 0)
      if (socket.destroyed) return
      opened = true
      total.inc({ event: 'opened' })
      open.inc()
      const pair: [Socket, Socket] = [socket, upstream]
      pairs.set(pair, rec)
      const idle = (): void => {
        total.inc({ event: 'idle_timeout' })
        rec.complete = false
        socket.destroy()
        upstream.destroy()
      }
      splice(socket, upstream, {
        idleMs: route.webSocketIdleMs,
        onIdle: idle,
        open,
        total,
        count: rec,
        onClosed: () => {
          pairs.delete(pair)
          finish()
          closedOne()
        },
        closeClient: () => socket.destroy()
      })
      readStatus(upstream, rec)
    })
    upstream.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(connectTimer)
      if (opened) {
        rec.complete = false
        return
      }
      if (logged) return
      total.inc({ event: 'upstream_failed' })
      opts.log.warn({ upstream: origin, code: err.code ?? err.message }, 'websocket upstream failed')
      const status = timedOut ? 504 : 502
      if (socket.writable) socket.end(`HTTP/1.1 ${status} ${REASONS[status] ?? ''}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`)
      else socket.destroy()
      finish(status)
    })
    socket.on('error', () => {
      rec.complete = false
      upstream.destroy()
    })
    // The client left before the upstream connected: nothing to join (nginx's 499).
    socket.once('close', () => {
      if (opened || logged) return
      clearTimeout(connectTimer)
      upstream.destroy()
      rec.complete = false
      finish(499)
    })
  }

  function endAll (): void {
    // FIN both ways, then destroyed after a short linger if a peer does not close its side.
    for (const [[client, upstream], rec] of pairs) {
      rec.complete = false
      endConnection(client)
      endConnection(upstream)
    }
    h2.endAll()
  }

  return {
    upgrade,
    connect: h2.connect,
    update: next => {
      router = createRouter(next.routes)
      isTrusted = createTrustMatcher(next.trustedProxies)
      if (next.accessLog !== undefined) accessLog = next.accessLog
    },
    endAll,
    drain: async ms => {
      if (pairs.size === 0 && h2.size() === 0) return
      const timer = setTimeout(endAll, ms)
      await new Promise<void>(resolve => drained.push(resolve))
      clearTimeout(timer)
    }
  }
}

/**
 * Reads the upstream's answer head as it passes (the bytes go on to the client unchanged): its
 * status becomes the line's (101, or the upstream's refusal), its arrival the upstream's first-byte
 * time, and its bytes are not the WebSocket's.
 */
function readStatus (upstream: Socket, rec: WebSocketRecord): void {
  let seen = Buffer.alloc(0)
  const onData = (chunk: Buffer): void => {
    seen = Buffer.concat([seen, chunk])
    const end = seen.indexOf('\r\n\r\n')
    if (end === -1 && seen.length < MAX_HEAD_BYTES) return
    upstream.off('data', onData)
    const status = /^HTTP\/1\.[01] (\d{3})/.exec(seen.subarray(0, 16).toString('latin1'))
    if (status?.[1] !== undefined) rec.status = Number(status[1])
    rec.upstreamHeadersMs = performance.now()
    if (end !== -1) rec.bytesOut -= end + 4
  }
  upstream.on('data', onData)
}
