// The TLS listener of one worker. A plain TCP front reads each ClientHello's server name and hands
// the socket to the TLS server of that certificate entry, whose own context holds every cert/key
// pair (ECDSA and RSA served by client capability). Node's SNICallback would install only one
// certificate of the chosen context. Requests then go to the forwarder (HTTP/2 or HTTP/1.1 by ALPN).

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
import { readClientHello, UNRECOGNIZED_NAME_ALERT } from '../tls/client-hello.js'
import { loadCertificate, type LoadedCertificate } from '../tls/secure-context.js'
import { startResumption, type Variant } from '../tls/resumption.js'
import { createForwarder, type ClientRequest, type ClientResponse } from './forward.js'
import { createHttp2Guard } from './h2-guard.js'
import { createHttp1Limits } from './http-limits.js'

/** How long a new connection may take to send its ClientHello. */
const CLIENT_HELLO_TIMEOUT_MS = 10_000

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
  const waiting = new Set<Socket>()

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

  // One TLS server per loaded certificate entry; it never listens, the front hands it sockets. A
  // reload builds new servers for new connections; connections already handed over finish on theirs.
  // Node holds one ticket key per server: each entry has a server per resumption variant (ticket key,
  // session cache) by variant id; those of expired ticket keys are dropped (src/tls/resumption.ts).
  const serverOf = new WeakMap<LoadedCertificate, Map<string, TlsServer>>()
  resumption.onChange(() => {
    for (const cert of certs.list()) for (const id of serverOf.get(cert)?.keys() ?? []) if (!resumption.isLive(id)) serverOf.get(cert)?.delete(id)
  })
  const buildTlsServer = (cert: LoadedCertificate, variant: Variant): TlsServer => {
    const server: TlsServer = config.http2
      ? createSecureServer({ ...cert.options, ...variant.options, ...http2Guard.serverOptions, allowHTTP1: true }, onRequest)
      : createHttpsServer({ ...cert.options, ...variant.options, ALPNProtocols: ['http/1.1'] }, onRequest)
    // The HTTP timeouts are ours (./http-limits.ts): Node's 5 s keep-alive must not cut in first.
    if (!config.http2) (server as unknown as HttpServer).keepAliveTimeout = 0
    resumption.attach(server, variant)
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
    server.on('tlsClientError', (err: NodeJS.ErrnoException) => {
      log.debug({ certificate: cert.name, code: err.code, reason: err.message.slice(0, 200) }, 'TLS handshake failed')
    })
    return server
  }
  const tlsServerFor = (cert: LoadedCertificate, variant: Variant = resumption.defaultVariant()): TlsServer => {
    let servers = serverOf.get(cert)
    if (servers === undefined) serverOf.set(cert, servers = new Map())
    let server = servers.get(variant.id)
    if (server === undefined) {
      server = buildTlsServer(cert, variant)
      servers.set(variant.id, server)
    }
    return server
  }
  for (const cert of certs.list()) tlsServerFor(cert)
  registerExpiryGauge(registry, certs)

  let tls = config.tls
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
      }
    }
  }

  const dispatch = (socket: Socket): void => {
    let buf: Buffer = Buffer.alloc(0)
    waiting.add(socket)
    const done = (): void => {
      clearTimeout(timer)
      waiting.delete(socket)
      socket.off('data', onData)
    }
    const timer = setTimeout(() => { done(); socket.destroy() }, CLIENT_HELLO_TIMEOUT_MS)
    const onData = (chunk: Buffer): void => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk])
      const hello = readClientHello(buf)
      if (hello.status === 'partial') return
      done()
      socket.pause()
      if (hello.status === 'invalid') {
        log.debug({ reason: hello.reason }, 'not a TLS ClientHello, connection closed')
        socket.destroy()
        return
      }
      const cert = certs.select(hello.serverName)
      if (cert === undefined) {
        log.debug({ servername: hello.serverName?.slice(0, 253) }, 'no certificate for server name, handshake refused')
        socket.end(UNRECOGNIZED_NAME_ALERT)
        return
      }
      // Building a TLS server loads the key reference through the bridge, which can fail (keyd
      // down): refuse this connection rather than let the exception end the worker.
      let server: TlsServer
      try {
        server = tlsServerFor(cert, resumption.variantFor(hello))
      } catch (err) {
        log.error({ certificate: cert.name, err: (err as Error).message.slice(0, 200) }, 'cannot build the TLS server for this connection, connection closed')
        socket.destroy()
        return
      }
      socket.unshift(buf)
      server.emit('connection', socket)
    }
    socket.on('data', onData)
    socket.on('error', (err: NodeJS.ErrnoException) => log.debug({ code: err.code }, 'client connection error'))
    socket.once('close', done)
  }

  const front = createNetServer(dispatch)
  front.listen(config.listen.port, config.listen.host)
  await once(front, 'listening')
  const port = (front.address() as AddressInfo).port

  async function close (graceMs: number = config.shutdownGraceMs ?? configDefaults.shutdownGraceMs): Promise<void> {
    if (closing) return
    closing = true
    const closed = once(front, 'close')
    front.close()
    for (const socket of waiting) socket.destroy()
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
