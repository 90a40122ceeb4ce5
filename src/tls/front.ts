// The plain TCP front of a worker's TLS listener: per-client limits at accept, the ClientHello read
// (only when it can change where the connection goes) under its own timeout, the hand-off of the
// socket and the bytes read to a TLS server, and the handshake timeout from accept to Finished.
// It never answers a client itself, except strict SNI's unrecognized_name (OpenSSL's own bytes).

import { Socket } from 'node:net'
import type { Server as TlsServer, TLSSocket } from 'node:tls'
import type { Logger } from 'pino'
import { errorMessage } from '../../lib/errors.js'
import type { Counter, Registry } from 'prom-client'
import { clientKey, type ConnectionLimits } from '../proxy/conn-limits.js'
import { timeoutCounter } from '../proxy/timeout-metric.js'
import { ClientHelloReader, UNRECOGNIZED_NAME_ALERT, type HelloVerdict } from './client-hello.js'
import { failureReason, HandshakeFailures } from './handshake-failures.js'
import { peerAddress, ProxyHeaderReader, proxiedSource, setProxiedSource, type ProxyRefusal } from './proxy-protocol.js'
import { proxyProtocolMetrics, type ProxyProtocolMetrics } from './proxy-protocol-metrics.js'
import { HandshakeTimer } from './handshake-metrics.js'
import { readInPieces, splitsInPieces } from './hand-over.js'

export interface FrontTimeouts {
  /** From accept until the ClientHello is read (or, when the front does not read it, its first byte). */
  clientHelloMs: number
  /** From accept until the handshake's Finished. */
  handshakeMs: number
}

/** What the front routes by; `undefined` when the ClientHello was not read or could not be. */
export type RoutedHello = Extract<HelloVerdict, { status: 'ok' }> | undefined

export interface FrontOptions {
  log: Logger
  registry: Registry
  timeouts: FrontTimeouts
  limits: ConnectionLimits
  /**
   * The TLS server for a connection, or `refuse` (strict SNI, no certificate for the name). May
   * throw (a TLS server that cannot be built): the connection is then closed.
   */
  route: (hello: RoutedHello) => TlsServer | 'refuse'
  /** Whether a ClientHello can change the route; if not, the first bytes are handed over unread. */
  needsHello: () => boolean
  /**
   * Whether a peer must send a PROXY header (proxyProtocol.trustedCidrs); every other peer must
   * not. Absent: nobody may (a PROXY header is refused from anyone).
   */
  proxyTrusted?: (address: string | undefined) => boolean
}

interface Handshaking { timer: NodeJS.Timeout, socket: Socket, onClose: () => void }

/** Accepts connections for TLS servers; `watch` every TLS server it may hand sockets to. */
export class TlsFront {
  readonly #o: FrontOptions
  readonly #timeouts: Counter<'kind'>
  readonly #failures: HandshakeFailures
  readonly #handshakes: HandshakeTimer
  /**
   * Connections not yet secure, by `address port` (their TLS socket reports the same): the handshake
   * timer and the close listener that ends it, both dropped once secure so that an idle connection
   * keeps neither (nor what their closures hold).
   */
  readonly #handshaking = new Map<string, Handshaking>()
  /** Connections the handshake timeout closed: their TLS server's error is not counted again. */
  readonly #timedOut = new WeakSet<Socket>()
  /** Connections still in the front (not handed to a TLS server yet). */
  readonly #reading = new Set<Socket>()
  readonly #watched = new WeakSet<TlsServer>()
  readonly #proxy: ProxyProtocolMetrics
  /** One 'error' listener for every client socket (a closure per connection would live as long as it). */
  readonly #onSocketError: (err: NodeJS.ErrnoException) => void

  constructor (o: FrontOptions) {
    this.#o = o
    this.#onSocketError = err => o.log.debug({ code: err.code }, 'client connection error')
    this.#timeouts = timeoutCounter(o.registry)
    this.#proxy = proxyProtocolMetrics(o.registry, o.log)
    this.#failures = new HandshakeFailures({ log: o.log, registry: o.registry })
    this.#handshakes = new HandshakeTimer(o.registry)
  }

  /** Counts and logs failed handshakes (also used by the TLS servers' errors). */
  get failures (): HandshakeFailures {
    return this.#failures
  }

  /** Handles a new TCP connection (a `connection` listener of a net.Server with allowHalfOpen). */
  accept (socket: Socket): void {
    socket.on('error', this.#onSocketError)
    // From a trusted balancer the limits count the client its PROXY header names, once it is read.
    const proxyRequired = this.#o.proxyTrusted?.(socket.remoteAddress) === true
    if (!proxyRequired && !this.#admit(socket, socket.remoteAddress)) return
    const id = `${socket.remoteAddress ?? ''} ${socket.remotePort ?? ''}`
    const timer = setTimeout(() => {
      this.#timedOut.add(socket)
      this.#timeouts.inc({ kind: 'handshake' })
      this.#failures.record('timeout', { timeoutMs: this.#o.timeouts.handshakeMs })
      socket.destroy()
    }, this.#o.timeouts.handshakeMs)
    const onClose = (): void => {
      clearTimeout(timer)
      if (this.#handshaking.get(id)?.timer === timer) this.#handshaking.delete(id)
    }
    this.#handshaking.set(id, { timer, socket, onClose })
    socket.once('close', onClose)
    this.#read(socket, new ProxyHeaderReader(proxyRequired ? 'required' : 'forbidden'))
  }

  /** Applies the per-client connection limits to `address`; false when refused (the socket is destroyed). */
  #admit (socket: Socket, address: string | undefined): boolean {
    const { limits, log } = this.#o
    if (!limits.enabled) return true
    const key = clientKey(address ?? '')
    const admission = limits.admit(key)
    if (admission !== 'ok') {
      log.debug({ client: key, limit: admission }, 'connection refused by a per-client limit')
      socket.destroy()
      return false
    }
    socket.once('close', () => limits.release(key))
    return true
  }

  /**
   * Reads the PROXY header (required from a trusted balancer, refused from anyone else), then until
   * the route is known, then hands the socket over (or closes it on timeout/EOF). Both run under
   * the ClientHello timeout.
   */
  #read (socket: Socket, proxyHeader: ProxyHeaderReader): void {
    const reader = this.#o.needsHello() ? new ClientHelloReader() : undefined
    let proxy: ProxyHeaderReader | undefined = proxyHeader
    const required = proxyHeader.required
    let received = 0
    this.#reading.add(socket)
    const stop = (): void => {
      clearTimeout(timer)
      this.#reading.delete(socket)
      socket.off('data', onData)
      socket.off('end', onEnd)
      // Also this listener: the reader, its bytes and this closure are not kept for the connection's life.
      socket.off('close', stop)
    }
    const timer = setTimeout(() => {
      stop()
      this.#timeouts.inc({ kind: 'client_hello' })
      if (proxy !== undefined && required) {
        this.#refuse(socket, 'timeout', `no complete PROXY header within ${this.#o.timeouts.clientHelloMs} ms (${received} bytes)`)
        return
      }
      this.#o.log.debug({ bytes: received }, 'no complete ClientHello in time, connection closed')
      socket.destroy()
    }, this.#o.timeouts.clientHelloMs)
    const onData = (data: Buffer): void => {
      let chunk = data
      if (received === 0) this.#handshakes.firstByte(socket)
      received += chunk.length
      if (proxy !== undefined) {
        const verdict = proxy.push(chunk)
        if (verdict.status === 'partial') return
        proxy = undefined
        if (verdict.status === 'refused') {
          stop()
          this.#refuse(socket, verdict.reason, verdict.detail)
          return
        }
        if (verdict.source !== undefined) {
          this.#proxy.accepted(verdict.source)
          setProxiedSource(socket, verdict.source)
        }
        if (required && !this.#admit(socket, peerAddress(socket))) {
          stop()
          return
        }
        chunk = verdict.rest
        // What follows is TLS: the counts below are about its bytes only.
        received = chunk.length
        if (chunk.length === 0) return
      }
      if (reader === undefined) { stop(); this.#handOff(socket, chunk, undefined); return }
      const verdict = reader.push(chunk)
      if (verdict.status === 'partial') return
      stop()
      if (verdict.status === 'unroutable') this.#o.log.debug({ reason: verdict.reason }, 'ClientHello not routable, handed to the default TLS server')
      this.#handOff(socket, reader.bytes(), verdict.status === 'ok' ? verdict : undefined)
    }
    // EOF before the route is known: OpenSSL would answer nothing and close; so does the front.
    const onEnd = (): void => {
      stop()
      if (proxy !== undefined && required) {
        // A balancer's plain TCP health check opens and closes without a byte: not a refusal.
        if (received > 0) this.#refuse(socket, 'closed', `closed after ${received} bytes of a PROXY header`)
        else socket.destroy()
        return
      }
      if (received > 0) this.#failures.record('client_closed', { bytes: received })
      socket.destroy()
    }
    socket.on('data', onData)
    socket.on('end', onEnd)
    socket.once('close', stop)
  }

  /** Closes a connection refused at its PROXY header, without a byte: it is not TLS yet (counted, logged). */
  #refuse (socket: Socket, reason: ProxyRefusal, detail: string): void {
    this.#proxy.refused(reason, { peer: socket.remoteAddress, detail })
    socket.destroy()
  }

  #handOff (socket: Socket, bytes: Buffer, hello: RoutedHello): void {
    socket.pause()
    let server: TlsServer | 'refuse'
    try {
      server = this.#o.route(hello)
    } catch (err) {
      this.#o.log.error({ err: errorMessage(err).slice(0, 200) }, 'cannot build the TLS server for this connection, connection closed')
      socket.destroy()
      return
    }
    if (server === 'refuse') {
      this.#failures.record('unknown_server_name', { servername: hello?.serverName?.slice(0, 253) })
      socket.end(UNRECOGNIZED_NAME_ALERT)
      return
    }
    this.watch(server)
    // The TLS socket inherits allowHalfOpen: without this, a client's EOF would leave it waiting.
    socket.allowHalfOpen = false
    socket.unshift(bytes)
    // Node's TLS socket takes these bytes with socket.read() on its first tick: in pieces, so that
    // a ClientHello over 1 KiB does not leave a 16 KiB input buffer on the connection for its life.
    if (splitsInPieces(bytes)) readInPieces(socket)
    server.emit('connection', socket)
  }

  /** Counts the handshake failures of `server` and ends the handshake timer of its connections. */
  watch (server: TlsServer): void {
    if (this.#watched.has(server)) return
    this.#watched.add(server)
    // Before the HTTP server's own listener: the client address a PROXY header carried goes on the
    // TLS socket, where the HTTP layer reads it (peerAddress).
    server.prependListener('secureConnection', (tls: TLSSocket) => {
      const source = proxiedSource((tls as unknown as { _parent?: unknown })._parent as Socket | undefined)
      if (source !== undefined) setProxiedSource(tls, source)
    })
    server.on('secureConnection', (tls: TLSSocket) => {
      this.#handshakes.secure(server, tls)
      const id = `${tls.remoteAddress ?? ''} ${tls.remotePort ?? ''}`
      const handshaking = this.#handshaking.get(id)
      if (handshaking === undefined) return
      clearTimeout(handshaking.timer)
      handshaking.socket.off('close', handshaking.onClose)
      this.#handshaking.delete(id)
    })
    server.on('tlsClientError', (err: NodeJS.ErrnoException, tls: TLSSocket) => {
      // The TLS socket's peer address is gone once closed; Node keeps the accepted socket as `_parent`.
      const parent = (tls as unknown as { _parent?: unknown })._parent
      if (parent instanceof Socket && this.#timedOut.has(parent)) return
      // A client certificate that did not verify (clientAuth "require"): Node closes the connection
      // once the handshake is done, and the error is its "socket hang up"; the reason is on the socket.
      const unverified = tls.authorizationError
      if (unverified !== undefined && unverified !== null) {
        this.#failures.record('client_certificate', { authorizationError: String(unverified), servername: typeof tls.servername === 'string' ? tls.servername.slice(0, 253) : undefined })
        return
      }
      this.#failures.record(failureReason(err), { code: err.code, err: err.message.slice(0, 200) })
    })
  }

  /** Closes the connections still being read (shutdown). */
  destroyReading (): void {
    for (const socket of this.#reading) socket.destroy()
  }
}
