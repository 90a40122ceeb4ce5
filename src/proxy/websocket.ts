// WebSocket proxying (HTTP/1.1 `Upgrade: websocket`, RFC 6455): the upgrade request goes to the
// route's upstream over a new TCP (or TLS) connection with the usual forwarding headers, and from
// then on bytes are copied both ways unchanged — the upstream's 101 (or refusal) included. A pair
// idle in both directions for the route's `webSocketIdleMs` is closed; on shutdown every pair is
// ended (FIN both ways) once the grace period is over. WebSockets over HTTP/2 (RFC 8441 extended
// CONNECT) are bridged to the same HTTP/1.1 upgrade by websocket-h2.ts.

import { randomUUID } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import type { ServerHttp2Stream } from 'node:http2'
import { connect as netConnect, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import type { Logger } from 'pino'
import { Counter, Gauge, type Registry } from 'prom-client'
import type { RouteConfig } from '../config/types.js'
import { requestAuthority, upstreamRequestHeaders } from './forward-headers.js'
import { endConnection } from './http-limits.js'
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
  /** New upgrades use these routes (a config reload); open pairs go on as they are. */
  update: (next: { routes: readonly RouteConfig[], trustedProxies: readonly string[] }) => void
  /** Ends every open pair (FIN both ways, destroyed a second later). */
  endAll: () => void
}

function refuse (socket: Socket, status: number, reason: string): void {
  const body = JSON.stringify({ error: 'websocket_refused', message: reason })
  socket.end(`HTTP/1.1 ${status} ${status === 404 ? 'Not Found' : status === 503 ? 'Service Unavailable' : 'Bad Request'}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`)
}

/** Builds the WebSocket half of a worker's forwarder. */
export function createWebSocketProxy (opts: {
  routes: readonly RouteConfig[]
  trustedProxies: readonly string[]
  log: Logger
  registry: Registry
  /** The upstream origin of a route (its pool's balancing and health); undefined = none eligible. */
  targetOf: (route: RouteConfig, headers: IncomingMessage['headers'], peer: string) => string | undefined
}): WebSocketProxy {
  let router = createRouter(opts.routes)
  let isTrusted = createTrustMatcher(opts.trustedProxies)
  const total = (opts.registry.getSingleMetric('edge_websocket_total') as Counter<string> | undefined) ??
    new Counter({ name: 'edge_websocket_total', help: 'WebSocket upgrades and how they ended (opened, refused, upstream_failed, idle_timeout, closed)', labelNames: ['event'], registers: [opts.registry] })
  const open = (opts.registry.getSingleMetric('edge_websocket_open') as Gauge | undefined) ??
    new Gauge({ name: 'edge_websocket_open', help: 'WebSocket connections open now', registers: [opts.registry] })
  const pairs = new Set<[Socket, Socket]>()
  const h2 = createH2WebSockets({ routing: () => ({ router, isTrusted }), targetOf: opts.targetOf, total, open, log: opts.log })

  function upgrade (req: IncomingMessage, socket: Socket, head: Buffer): void {
    const proto = String(req.headers.upgrade ?? '').toLowerCase()
    const authority = requestAuthority(req.headers, req.rawHeaders)
    const route = authority.ok ? router.match(authority.host, req.url ?? '/') : undefined
    if (proto !== 'websocket' || !authority.ok || route === undefined) {
      total.inc({ event: 'refused' })
      refuse(socket, route === undefined && authority.ok && proto === 'websocket' ? 404 : 400,
        proto !== 'websocket' ? 'only WebSocket upgrades are proxied' : authority.ok ? 'no route matches this host and path' : authority.reason)
      return
    }
    const peer = normalizeAddress(peerAddress(socket))
    const trusted = isTrusted(peer)
    const headers = upstreamRequestHeaders(req.headers, { host: authority.host, peer, trusted, socket })
    const given = req.headers['x-request-id']
    headers['x-request-id'] = trusted && typeof given === 'string' && given !== '' ? given : randomUUID()
    headers.connection = 'upgrade'
    headers.upgrade = 'websocket'
    const origin = opts.targetOf(route, req.headers, peer)
    if (origin === undefined) {
      total.inc({ event: 'refused' })
      refuse(socket, 503, 'no upstream target of this route is healthy')
      return
    }
    const target = new URL(origin)
    const port = Number(target.port !== '' ? target.port : target.protocol === 'https:' ? 443 : 80)
    // Verified against the target's own name or IP, as the undici pools are.
    const { host, servername } = targetHost(target)
    const upstream: Socket = target.protocol === 'https:'
      ? tlsConnect({ host, port, servername, ALPNProtocols: ['http/1.1'] })
      : netConnect({ host, port })
    const connectTimer = setTimeout(() => upstream.destroy(new Error('connect timeout')), route.connectTimeoutMs)
    connectTimer.unref()
    let lines = `${req.method ?? 'GET'} ${req.url ?? '/'} HTTP/1.1\r\n`
    for (const [name, value] of Object.entries(headers)) {
      for (const v of Array.isArray(value) ? value : [value]) lines += `${name}: ${v}\r\n`
    }
    upstream.write(`${lines}\r\n`)
    if (head.length > 0) upstream.write(head)
    let opened = false
    upstream.once(target.protocol === 'https:' ? 'secureConnect' : 'connect', () => {
      clearTimeout(connectTimer)
      opened = true
      total.inc({ event: 'opened' })
      open.inc()
      const pair: [Socket, Socket] = [socket, upstream]
      pairs.add(pair)
      const idle = (): void => {
        total.inc({ event: 'idle_timeout' })
        socket.destroy()
        upstream.destroy()
      }
      splice(socket, upstream, { idleMs: route.webSocketIdleMs, onIdle: idle, open, total, onClosed: () => pairs.delete(pair), closeClient: () => socket.destroy() })
    })
    upstream.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(connectTimer)
      if (opened) return
      total.inc({ event: 'upstream_failed' })
      opts.log.warn({ upstream: route.upstream, code: err.code ?? err.message }, 'websocket upstream failed')
      if (socket.writable) socket.end('HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Length: 0\r\n\r\n')
      else socket.destroy()
    })
    socket.on('error', () => upstream.destroy())
  }

  return {
    upgrade,
    connect: h2.connect,
    update: next => {
      router = createRouter(next.routes)
      isTrusted = createTrustMatcher(next.trustedProxies)
    },
    endAll: () => {
      // FIN both ways, then destroyed after a short linger if a peer does not close its side.
      for (const [client, upstream] of pairs) {
        endConnection(client)
        endConnection(upstream)
      }
      h2.endAll()
    }
  }
}
