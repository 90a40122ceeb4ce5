// The TLS listener of one worker. A plain TCP front (src/tls/front.ts) reads each ClientHello's server
// name when there is a choice to make and hands the socket to the TLS server of that certificate
// entry, whose own context holds every cert/key pair (ECDSA and RSA served by client capability).
// Node's SNICallback would install only one certificate of the chosen context. Requests then go to
// the forwarder (HTTP/2 or HTTP/1.1 by ALPN).

import { once } from 'node:events'
import { createServer as createHttpsServer } from 'node:https'
import type { IncomingMessage, Server as HttpServer, ServerResponse } from 'node:http'
import { createSecureServer, type Http2Session, type ServerHttp2Session } from 'node:http2'
import { createServer as createNetServer, type AddressInfo, type Socket } from 'node:net'
import type { TLSSocket, Server as TlsServer } from 'node:tls'
import type { Logger } from 'pino'
import type { Registry } from 'prom-client'
import { configDefaults } from '../config/defaults.js'
import type { CertificateConfig, EdgeConfig, TlsConfig } from '../config/types.js'
import { ReloadRefusedError } from '../errors.js'
import { registerExpiryGauge } from '../tls/cert-info.js'
import { CertStore } from '../tls/cert-store.js'
import { TlsFront, type RoutedHello } from '../tls/front.js'
import { loadCertificate, type LoadedCertificate } from '../tls/secure-context.js'
import { startResumption, type Variant } from '../tls/resumption.js'
import { ConnectionLimits } from './conn-limits.js'
import { createForwarder, type ClientRequest, type ClientResponse } from './forward.js'
import { createHttp2Guard } from './h2-guard.js'
import { createHttp1Limits } from './http-limits.js'

export interface ProxyServer {
  /** The port actually listened on (useful with port 0). */
  readonly port: number
  /** The live certificate store: `certs.load(entries)` swaps certificates for new connections. */
  readonly certs: CertStore
  /**
   * Loads `entries` (and `tls`, default the current settings) beside the served set, each entry on
   * its own; `commit()` swaps them in for new connections only if every entry loaded.
   */
  reload: (entries: readonly CertificateConfig[], tls?: TlsConfig) => ReloadPlan
  /** Stops accepting, lets in-flight requests finish for up to `graceMs`, then cuts the rest. */
  close: (graceMs?: number) => Promise<void>
}

/** The outcome of loading one certificate entry during a reload; `error` never holds key material. */
export interface EntryResult { name: string, ok: boolean, code?: string, error?: string }

export interface ReloadPlan {
  /** True when every entry loaded. */
  ok: boolean
  results: EntryResult[]
  loaded: LoadedCertificate[]
  /** Serves the new set to new connections. @throws ReloadRefusedError (EDGE_ERR_RELOAD_REFUSED) unless ok. */
  commit: () => void
}

/**
 * Loads the certificates and starts listening on `config.listen`.
 * @throws the certificate errors of CertStore.load (EDGE_ERR_CERT_LOAD, EDGE_ERR_KEY_LOAD,
 *   EDGE_ERR_CERT_KEY_MISMATCH, EDGE_ERR_SECURE_CONTEXT) and listen errors (EADDRINUSE …).
 */
export async function startProxyServer (opts: { config: EdgeConfig, log: Logger, registry: Registry }): Promise<ProxyServer> {
  const { config, log, registry } = opts
  const certs = new CertStore({ tls: config.tls, log, registry })
  certs.load(config.certificates)
  const forwarder = createForwarder({ routes: config.routes, trustedProxies: config.trustedProxies, timeouts: config.timeouts, log, registry })
  const http1Limits = createHttp1Limits({ timeouts: config.timeouts, registry, log })
  const http2Guard = createHttp2Guard({ timeouts: config.timeouts, limits: config.limits, registry, log })
  const resumption = await startResumption({ config, log, registry })

  let closing = false
  const sessions = new Set<Http2Session>()
  // HTTP/1 connections and how many requests each has in flight, to close idle ones on shutdown.
  const sockets = new Map<TLSSocket, number>()

  const onRequest = (req: ClientRequest, res: ClientResponse): void => {
    if (req.httpVersionMajor < 2) {
      http1Limits.request(req as IncomingMessage, res as ServerResponse)
      const socket = req.socket as TLSSocket
      const count = sockets.get(socket)
      if (count !== undefined) sockets.set(socket, count + 1)
      if (closing) res.setHeader('connection', 'close')
      res.once('close', () => {
        const before = sockets.get(socket)
        if (before === undefined) return
        sockets.set(socket, before - 1)
        if (closing && before === 1) socket.end()
      })
    }
    forwarder.handle(req, res)
  }

  // One TLS server per loaded certificate entry (and per resumption variant: with or without the
  // TLS 1.2 session-ID cache); it never listens, the front hands it sockets. A reload builds new
  // servers for new connections; connections already handed over finish on theirs.
  const serverOf = new WeakMap<LoadedCertificate, Map<string, TlsServer>>()
  const { handshakeMs } = config.timeouts
  const buildTlsServer = (cert: LoadedCertificate, variant: Variant): TlsServer => {
    const options = { ...cert.options, ...variant.options, handshakeTimeout: handshakeMs }
    const server: TlsServer = config.http2
      ? createSecureServer({ ...options, ...http2Guard.serverOptions, allowHTTP1: true }, onRequest)
      : createHttpsServer({ ...options, ALPNProtocols: ['http/1.1'] }, onRequest)
    // The HTTP timeouts are ours (./http-limits.ts): Node's 5 s keep-alive must not cut in first.
    if (!config.http2) (server as unknown as HttpServer).keepAliveTimeout = 0
    resumption.attach(server, variant)
    front.watch(server)
    server.on('secureConnection', (socket: TLSSocket) => {
      if (socket.alpnProtocol === 'h2') return
      http1Limits.connection(socket)
      sockets.set(socket, 0)
      socket.once('close', () => sockets.delete(socket))
    })
    server.on('session', (session: ServerHttp2Session) => {
      http2Guard.session(session)
      sessions.add(session)
      session.once('close', () => sessions.delete(session))
    })
    return server
  }
  const tlsServerFor = (cert: LoadedCertificate, variant: Variant = resumption.variantFor()): TlsServer => {
    let servers = serverOf.get(cert)
    if (servers === undefined) serverOf.set(cert, servers = new Map())
    let server = servers.get(variant.id)
    if (server === undefined) {
      server = buildTlsServer(cert, variant)
      servers.set(variant.id, server)
    }
    return server
  }
  registerExpiryGauge(registry, certs)

  let tls = config.tls
  // With one entry, no strict SNI and no session-cache split, every ClientHello goes to one server.
  const helloMatters = (): boolean => certs.list().length > 1 || tls.strictSni || resumption.needsHello
  let needsHello = helloMatters()
  const reload = (entries: readonly CertificateConfig[], nextTls: TlsConfig = tls): ReloadPlan => {
    const loaded: LoadedCertificate[] = []
    const results = entries.map((entry): EntryResult => {
      try {
        const cert = loadCertificate(entry, nextTls, log)
        tlsServerFor(cert)
        loaded.push(cert)
        return { name: entry.name, ok: true }
      } catch (err) {
        const e = err as Error & { code?: string }
        return { name: entry.name, ok: false, code: e.code ?? 'EDGE_ERR_CERT_LOAD', error: e.message }
      }
    })
    const ok = results.every(r => r.ok)
    return {
      ok,
      results,
      loaded,
      commit: () => {
        if (!ok) throw new ReloadRefusedError(results.filter(r => !r.ok).map(r => `${r.name}: ${r.error ?? ''} (${r.code ?? ''})`))
        certs.replace(entries, loaded, nextTls)
        tls = nextTls
        needsHello = helloMatters()
      }
    }
  }

  const route = (hello: RoutedHello): TlsServer | 'refuse' => {
    const cert = hello === undefined ? certs.get(tls.defaultCertificate) : certs.select(hello.serverName)
    if (cert === undefined) return 'refuse'
    // Building a TLS server loads the key reference through the bridge, which can fail (keyd down):
    // the front closes this connection rather than let the exception end the worker.
    return tlsServerFor(cert, resumption.variantFor(hello))
  }
  const front = new TlsFront({
    log,
    registry,
    timeouts: config.timeouts,
    limits: new ConnectionLimits({ ...config.limits, registry }),
    route,
    needsHello: () => needsHello
  })
  for (const cert of certs.list()) tlsServerFor(cert)

  const listener = createNetServer({ allowHalfOpen: true }, socket => front.accept(socket))
  listener.listen(config.listen.port, config.listen.host)
  await once(listener, 'listening')
  const port = (listener.address() as AddressInfo).port

  async function close (graceMs: number = config.shutdownGraceMs ?? configDefaults.shutdownGraceMs): Promise<void> {
    if (closing) return
    closing = true
    const closed = once(listener, 'close')
    listener.close()
    front.destroyReading()
    for (const session of sessions) session.close()
    for (const [socket, inflight] of sockets) if (inflight === 0) socket.end()
    const timer = setTimeout(() => {
      for (const session of sessions) session.destroy()
      for (const socket of sockets.keys()) socket.destroy()
    }, graceMs)
    timer.unref()
    await closed
    clearTimeout(timer)
    await forwarder.close()
    resumption.close()
  }

  return { port, certs, reload, close }
}
