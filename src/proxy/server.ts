// The TLS listener of one worker. A plain TCP front (src/tls/front.ts) reads each ClientHello's server
// name when there is a choice to make and hands the socket to the TLS server of that certificate
// entry, whose own context holds every cert/key pair (ECDSA and RSA served by client capability).
// Node's SNICallback would install only one certificate of the chosen context. Requests then go to
// the forwarder (HTTP/2 or HTTP/1.1 by ALPN).

import { once } from 'node:events'
import { createServer as createHttpsServer } from 'node:https'
import type { IncomingMessage, Server as HttpServer, ServerResponse } from 'node:http'
import { constants as http2Constants, createSecureServer, type Http2ServerRequest, type ServerHttp2Session } from 'node:http2'
import { createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net'
import type { SecureContextOptions, TLSSocket, Server as TlsServer } from 'node:tls'
import type { Logger } from 'pino'
import type { Registry } from 'prom-client'
import { configDefaults } from '../config/defaults.js'
import type { CertificateConfig, EdgeConfig, TlsConfig } from '../config/types.js'
import { ReloadRefusedError } from '../errors.js'
import { registerExpiryGauge } from '../tls/cert-info.js'
import { CertStore, type EntryResult } from '../tls/cert-store.js'
import { ContextCache } from '../tls/context-cache.js'
import { OcspStapler } from '../tls/ocsp-stapler.js'
import { TlsFront, type RoutedHello } from '../tls/front.js'
import { startResumption, type Variant } from '../tls/resumption.js'
import { ConnectionCap } from './conn-cap.js'
import { ConnectionLimits } from './conn-limits.js'
import { createAccessLog } from './access-log.js'
import { createForwarder, type ClientRequest, type ClientResponse } from './forward.js'
import { serveStreamsDirectly } from './h2-direct.js'
import { createHttp2Guard } from './h2-guard.js'
import { createHttp1Limits } from './http-limits.js'
import { createRouteLimits } from './route-limits.js'
import { createTrustMatcher } from './trusted-proxies.js'
import { createWebSocketProxy } from './websocket.js'

export interface ProxyServer {
  /** The port actually listened on (useful with port 0). */
  readonly port: number
  /** The live certificate store: `certs.load(entries)` swaps certificates for new connections. */
  readonly certs: CertStore
  /**
   * Loads `entries` (undefined: the entries served, their files looked at again; `changedFiles`: only
   * the entries naming these files) and `tls` (default the current settings) beside the served set,
   * each entry on its own, unchanged entries kept as they are; `commit()` swaps them in for new
   * connections only if every entry loaded.
   */
  reload: (entries?: readonly CertificateConfig[], tls?: TlsConfig, changedFiles?: readonly string[]) => ReloadPlan
  /**
   * Serves new requests with `live`'s routes, pools, trusted proxies and access log, and new
   * connections and clocks with its timeouts and limits (a config reload); requests and WebSockets
   * in flight finish on what they started with.
   */
  applyLive: (live: LiveConfig) => void
  /** Stops accepting, lets in-flight requests finish for up to `graceMs`, then cuts the rest. */
  close: (graceMs?: number) => Promise<void>
}

export type { EntryResult }

/** The settings a reload changes without a restart (the rest of a changed config waits for one). */
export type LiveConfig = Pick<EdgeConfig, 'routes' | 'trustedProxies' | 'accessLog' | 'timeouts' | 'limits'>

/** Top-level settings that a reload applies live (LiveConfig). */
export const LIVE_SETTINGS = ['routes', 'trustedProxies', 'accessLog', 'timeouts', 'limits'] as const

export interface ReloadPlan {
  /** True when every entry loaded. */
  ok: boolean
  /** The entries read and checked (new or changed) and every refused one. */
  results: EntryResult[]
  /** Entries kept as they were. */
  unchanged: number
  /** Names of the entries (re)loaded. */
  loaded: string[]
  /** Serves the new set to new connections. @throws ReloadRefusedError (EDGE_ERR_RELOAD_REFUSED) unless ok. */
  commit: () => void
  /** Drops what was prepared. */
  abort: () => void
}

/**
 * Loads the certificates and starts listening on `config.listen`.
 * @throws the certificate errors of CertStore.load (EDGE_ERR_CERT_LOAD, EDGE_ERR_KEY_LOAD,
 *   EDGE_ERR_CERT_KEY_MISMATCH, EDGE_ERR_SECURE_CONTEXT) and listen errors (EADDRINUSE …).
 */
export async function startProxyServer (opts: {
  config: EdgeConfig
  log: Logger
  registry: Registry
  /** Starts `listener` listening instead of `config.listen` (a cluster worker listens on its slot's socket). */
  listen?: (listener: NetServer) => void
}): Promise<ProxyServer> {
  const { config, log, registry } = opts
  const certs = new CertStore({ tls: config.tls, log, registry })
  certs.load(config.certificates)
  let live: LiveConfig = { routes: config.routes, trustedProxies: config.trustedProxies, accessLog: config.accessLog, timeouts: config.timeouts, limits: config.limits }
  // The timeouts in force, one object a reload updates in place: the TLS front and the forwarder
  // read it each time a clock starts (applyLive).
  const timeouts = { ...config.timeouts }
  const connectionLimits = new ConnectionLimits({ ...config.limits, registry })
  let accessLog = createAccessLog({ config: config.accessLog, log, registry })
  // One set of route limits: a WebSocket upgrade takes a token of its route's rate like any request.
  const limits = createRouteLimits({ registry })
  const forwarder = createForwarder({ routes: config.routes, trustedProxies: config.trustedProxies, timeouts, log, registry, accessLog, limits })
  const webSockets = createWebSocketProxy({ routes: config.routes, trustedProxies: config.trustedProxies, log, registry, accessLog, limits, targetOf: forwarder.targetOf })
  const http1Limits = createHttp1Limits({ timeouts: config.timeouts, registry, log })
  const http2Guard = createHttp2Guard({ timeouts: config.timeouts, limits: config.limits, registry, log })
  const resumption = await startResumption({ config, log, registry })

  let closing = false
  const sessions = new Set<ServerHttp2Session>()
  // HTTP/1 connections and how many requests each has in flight, to close idle ones on shutdown.
  const sockets = new Map<TLSSocket, number>()
  // One close listener for all of them (a closure each would be kept for the connection's life).
  function dropSocket (this: TLSSocket): void { sockets.delete(this) }

  // At limits.maxConnections a new connection takes the place of the oldest idle one: an HTTP/1.1
  // connection without a request in flight (closed; its client reconnects as after a keep-alive
  // timeout), else an HTTP/2 session without open streams (GOAWAY NO_ERROR, then closed).
  const reclaimIdle = (): boolean => {
    for (const [socket, inflight] of sockets) {
      if (inflight !== 0) continue
      sockets.delete(socket)
      socket.destroy()
      return true
    }
    for (const session of sessions) {
      if (session.closed || session.destroyed || !http2Guard.idle(session)) continue
      http2Guard.reclaim(session)
      return true
    }
    return false
  }
  const cap = new ConnectionCap({ maxConnections: config.limits.maxConnections, registry, log, reclaimIdle })

  // One listener for every HTTP/1.1 response (not a closure per request): its socket, from its request.
  function responseClosed (this: ServerResponse): void {
    const socket = this.req.socket as TLSSocket
    const before = sockets.get(socket)
    if (before === undefined) return
    sockets.set(socket, before - 1)
    if (closing && before === 1) socket.end()
  }

  const onRequest = (req: ClientRequest, res: ClientResponse): void => {
    if (req.httpVersionMajor < 2) {
      http1Limits.request(req as IncomingMessage, res as ServerResponse)
      const socket = req.socket as TLSSocket
      const count = sockets.get(socket)
      if (count !== undefined) sockets.set(socket, count + 1)
      if (closing) res.setHeader('connection', 'close')
      res.once('close', responseClosed)
    }
    forwarder.handle(req, res)
  }

  // One TLS server per certificate entry in use (and per resumption variant: with or without the
  // TLS 1.2 session-ID cache), built on the first ClientHello for it (src/tls/context-cache.ts); it
  // never listens, the front hands it sockets. Connections already handed over finish on theirs.
  const buildTlsServer = (certOptions: SecureContextOptions, variant: Variant): TlsServer => {
    const options = { ...certOptions, ...variant.options, handshakeTimeout: timeouts.handshakeMs }
    const server: TlsServer = config.http2
      // enableConnectProtocol: SETTINGS_ENABLE_CONNECT_PROTOCOL, so clients may open WebSockets over HTTP/2 (RFC 8441).
      ? createSecureServer({ ...options, ...http2Guard.serverOptions, settings: { ...http2Guard.serverOptions.settings, enableConnectProtocol: true }, allowHTTP1: true }, onRequest)
      : createHttpsServer({ ...options, ALPNProtocols: ['http/1.1'] }, onRequest)
    // The common HTTP/2 request skips the compatibility layer (h2-direct.ts); the rest go to onRequest.
    if (config.http2) serveStreamsDirectly(server, forwarder.handleStream)
    // The HTTP timeouts are ours (./http-limits.ts): Node's 5 s keep-alive must not cut in first. The
    // HTTP/2 server carrying HTTP/1.1 (allowHTTP1) has that 5 s default too (Node 24).
    ;(server as unknown as HttpServer).keepAliveTimeout = 0
    // HTTP/1.1 upgrades (WebSocket); the HTTP/2 server with allowHTTP1 emits them too.
    server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
      if (closing) {
        socket.destroy()
        return
      }
      http1Limits.upgraded(socket)
      sockets.delete(socket as TLSSocket)
      webSockets.upgrade(req, socket, head)
    })
    // HTTP/2 CONNECT streams: extended CONNECT (RFC 8441) opens a WebSocket. Without a listener
    // Node answers 405; an HTTP/1.1 CONNECT (allowHTTP1) gets its socket closed, as before.
    if (config.http2) {
      server.on('connect', (req: ClientRequest, resOrSocket: unknown) => {
        if (req.httpVersionMajor < 2) {
          (resOrSocket as Socket).destroy()
          return
        }
        const stream = (req as Http2ServerRequest).stream
        if (closing) stream.close(http2Constants.NGHTTP2_REFUSED_STREAM)
        else webSockets.connect(stream, req.headers)
      })
    }
    resumption.attach(server, variant)
    front.watch(server)
    server.on('secureConnection', (socket: TLSSocket) => {
      if (socket.alpnProtocol === 'h2') return
      http1Limits.connection(socket)
      sockets.set(socket, 0)
      socket.on('close', dropSocket) // 'close' comes once: no once() wrapper per connection
    })
    server.on('session', (session: ServerHttp2Session) => {
      http2Guard.session(session)
      sessions.add(session)
      session.once('close', () => sessions.delete(session))
    })
    return server
  }
  const stapler = new OcspStapler({ store: certs, log, registry, settings: config.tls })
  // The certificate list served (a reload without entries keeps it), for its response files.
  let certificateList: readonly CertificateConfig[] = config.certificates
  stapler.responseFiles(certificateList)
  const contexts = new ContextCache({ store: certs, maxEntries: config.tls.contextCacheSize, registry, log, makeServer: buildTlsServer, stapler })
  registerExpiryGauge(registry, certs)

  // With one entry, no strict SNI and no session-cache split, every ClientHello goes to one server.
  const helloMatters = (): boolean => certs.size > 1 || certs.tls.strictSni || resumption.needsHello
  let needsHello = helloMatters()
  const reload = (entries?: readonly CertificateConfig[], nextTls: TlsConfig = certs.tls, changedFiles?: readonly string[]): ReloadPlan => {
    const plan = certs.prepare(entries, nextTls, changedFiles === undefined ? {} : { changedFiles: new Set(changedFiles) })
    return {
      ok: plan.ok,
      results: plan.results,
      unchanged: plan.unchanged,
      loaded: plan.loaded,
      commit: () => {
        if (!plan.ok) throw new ReloadRefusedError(plan.results.filter(r => !r.ok).map(r => `${r.name}: ${r.error ?? ''} (${r.code ?? ''})`))
        plan.commit()
        contexts.resize(nextTls.contextCacheSize)
        if (entries !== undefined) certificateList = entries
        const restaple = stapler.update(nextTls)
        if (stapler.responseFiles(certificateList) || restaple) contexts.dropAll()
        needsHello = helloMatters()
      },
      abort: plan.abort
    }
  }

  const applyLive = (next: LiveConfig): void => {
    // An unchanged access log keeps its file open; a changed one is opened beside the old, which
    // the forwarder closes after the last request that writes to it.
    if (JSON.stringify(next.accessLog) !== JSON.stringify(live.accessLog)) accessLog = createAccessLog({ config: next.accessLog, log, registry })
    if (JSON.stringify(next.timeouts) !== JSON.stringify(live.timeouts) || JSON.stringify(next.limits) !== JSON.stringify(live.limits)) {
      Object.assign(timeouts, next.timeouts)
      http1Limits.update(next.timeouts)
      http2Guard.update(next.timeouts, next.limits)
      connectionLimits.update(next.limits)
      cap.update(next.limits.maxConnections)
    }
    live = next
    forwarder.update({ routes: next.routes, trustedProxies: next.trustedProxies, accessLog })
    webSockets.update({ routes: next.routes, trustedProxies: next.trustedProxies, accessLog })
  }

  const route = (hello: RoutedHello): TlsServer | 'refuse' => {
    const entry = hello === undefined ? certs.defaultEntry() : certs.select(hello.serverName)
    if (entry === undefined) return 'refuse'
    // Building a TLS server loads the key reference through the bridge, which can fail (keyd down):
    // the front closes this connection rather than let the exception end the worker.
    return contexts.serverFor(entry, resumption.variantFor(hello))
  }
  const front = new TlsFront({
    log,
    registry,
    timeouts,
    limits: connectionLimits,
    cap,
    route,
    needsHello: () => needsHello,
    proxyTrusted: config.proxyProtocol === undefined ? undefined : createTrustMatcher(config.proxyProtocol.trustedCidrs)
  })
  // The default entry answers clients without SNI (and unknown names): built now, the others on demand.
  const defaultEntry = certs.defaultEntry()
  if (defaultEntry !== undefined) contexts.serverFor(defaultEntry, resumption.variantFor())

  // noDelay: TCP_NODELAY on every client socket, as Node's own https server sets it. Without it,
  // Nagle held the last partial segment of each response until the client's (delayed) ACK: 1 MiB
  // responses streamed at less than half the minimal Node proxy's rate (docs/benchmarks.md).
  const listener = createNetServer({ allowHalfOpen: true, noDelay: true }, socket => front.accept(socket))
  if (opts.listen !== undefined) opts.listen(listener)
  else listener.listen(config.listen.port, config.listen.host)
  await once(listener, 'listening')
  const port = (listener.address() as AddressInfo).port

  async function close (graceMs: number = config.shutdownGraceMs ?? configDefaults.shutdownGraceMs): Promise<void> {
    if (closing) return
    closing = true
    const stopAt = performance.now()
    const closed = once(listener, 'close')
    listener.close()
    front.destroyReading()
    for (const session of sessions) session.close()
    for (const [socket, inflight] of sockets) if (inflight === 0) socket.end()
    const timer = setTimeout(() => {
      webSockets.endAll()
      for (const session of sessions) session.destroy()
      for (const socket of sockets.keys()) socket.destroy()
    }, graceMs)
    timer.unref()
    await closed
    // WebSockets may outlive the listener: their lines go to the access log the forwarder closes.
    await webSockets.drain(Math.max(0, graceMs - (performance.now() - stopAt)))
    clearTimeout(timer)
    await forwarder.close()
    resumption.close()
    stapler.close()
    certs.close()
  }

  return { port, certs, reload, applyLive, close }
}
