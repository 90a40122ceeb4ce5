// The TLS listener of one worker. A plain TCP front reads each ClientHello's server name and hands
// the socket to the TLS server of that certificate entry, whose own context holds every cert/key
// pair (ECDSA and RSA served by client capability). Node's SNICallback would install only one
// certificate of the chosen context. Requests then go to the forwarder (HTTP/2 or HTTP/1.1 by ALPN).

import { once } from 'node:events'
import { createServer as createHttpsServer } from 'node:https'
import { createSecureServer, type Http2Session } from 'node:http2'
import { createServer as createNetServer, type AddressInfo, type Socket } from 'node:net'
import type { TLSSocket, Server as TlsServer } from 'node:tls'
import type { Logger } from 'pino'
import type { Registry } from 'prom-client'
import { configDefaults } from '../config/defaults.js'
import type { EdgeConfig } from '../config/types.js'
import { CertStore } from '../tls/cert-store.js'
import { readClientHello, UNRECOGNIZED_NAME_ALERT } from '../tls/client-hello.js'
import type { LoadedCertificate } from '../tls/secure-context.js'
import { createForwarder, type ClientRequest, type ClientResponse } from './forward.js'

/** How long a new connection may take to send its ClientHello. */
const CLIENT_HELLO_TIMEOUT_MS = 10_000

export interface ProxyServer {
  /** The port actually listened on (useful with port 0). */
  readonly port: number
  /** The live certificate store: `certs.load(entries)` swaps certificates for new connections. */
  readonly certs: CertStore
  /** Stops accepting, lets in-flight requests finish for up to `graceMs`, then cuts the rest. */
  close: (graceMs?: number) => Promise<void>
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
  const forwarder = createForwarder({ routes: config.routes, trustedProxies: config.trustedProxies, log, registry })

  let closing = false
  const sessions = new Set<Http2Session>()
  // HTTP/1 connections and how many requests each has in flight, to close idle ones on shutdown.
  const sockets = new Map<TLSSocket, number>()
  const waiting = new Set<Socket>()

  const onRequest = (req: ClientRequest, res: ClientResponse): void => {
    if (req.httpVersionMajor < 2) {
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

  // One TLS server per certificate entry; it never listens, the front hands it sockets.
  const tlsServers = new Map<string, { server: TlsServer, options: LoadedCertificate['options'] }>()
  const tlsServerFor = (cert: LoadedCertificate): TlsServer => {
    const known = tlsServers.get(cert.name)
    if (known !== undefined) {
      if (known.options !== cert.options) {
        known.server.setSecureContext(cert.options)
        known.options = cert.options
      }
      return known.server
    }
    const server: TlsServer = config.http2
      ? createSecureServer({ ...cert.options, allowHTTP1: true }, onRequest)
      : createHttpsServer({ ...cert.options, ALPNProtocols: ['http/1.1'] }, onRequest)
    server.on('secureConnection', (socket: TLSSocket) => {
      if (socket.alpnProtocol === 'h2') return
      sockets.set(socket, 0)
      socket.once('close', () => sockets.delete(socket))
    })
    server.on('session', (session: Http2Session) => {
      sessions.add(session)
      session.once('close', () => sessions.delete(session))
    })
    server.on('tlsClientError', (err: NodeJS.ErrnoException) => {
      log.debug({ certificate: cert.name, code: err.code, reason: err.message.slice(0, 200) }, 'TLS handshake failed')
    })
    tlsServers.set(cert.name, { server, options: cert.options })
    return server
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
      socket.unshift(buf)
      tlsServerFor(cert).emit('connection', socket)
    }
    socket.on('data', onData)
    socket.on('error', (err: NodeJS.ErrnoException) => log.debug({ code: err.code }, 'client connection error'))
    socket.once('close', done)
  }

  const front = createNetServer(dispatch)
  front.listen(config.listen.port, config.listen.host)
  await once(front, 'listening')
  const port = (front.address() as AddressInfo).port

  async function close (graceMs: number = configDefaults.shutdownGraceMs): Promise<void> {
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
  }

  return { port, certs, close }
}
