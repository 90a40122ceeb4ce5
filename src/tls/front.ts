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
import { HandshakeTimer } from './handshake-metrics.js'

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
}

/** Accepts connections for TLS servers; `watch` every TLS server it may hand sockets to. */
export class TlsFront {
  readonly #o: FrontOptions
  readonly #timeouts: Counter<'kind'>
  readonly #failures: HandshakeFailures
  readonly #handshakes: HandshakeTimer
  /** Handshake timers of connections not yet secure, by `address port` (their TLS socket reports the same). */
  readonly #handshaking = new Map<string, NodeJS.Timeout>()
  /** Connections the handshake timeout closed: their TLS server's error is not counted again. */
  readonly #timedOut = new WeakSet<Socket>()
  /** Connections still in the front (not handed to a TLS server yet). */
  readonly #reading = new Set<Socket>()
  readonly #watched = new WeakSet<TlsServer>()

  constructor (o: FrontOptions) {
    this.#o = o
    this.#timeouts = timeoutCounter(o.registry)
    this.#failures = new HandshakeFailures({ log: o.log, registry: o.registry })
    this.#handshakes = new HandshakeTimer(o.registry)
  }

  /** Counts and logs failed handshakes (also used by the TLS servers' errors). */
  get failures (): HandshakeFailures {
    return this.#failures
  }

  /** Handles a new TCP connection (a `connection` listener of a net.Server with allowHalfOpen). */
  accept (socket: Socket): void {
    const { limits, log } = this.#o
    socket.on('error', (err: NodeJS.ErrnoException) => log.debug({ code: err.code }, 'client connection error'))
    if (limits.enabled) {
      const key = clientKey(socket.remoteAddress ?? '')
      const admission = limits.admit(key)
      if (admission !== 'ok') {
        log.debug({ client: key, limit: admission }, 'connection refused by a per-client limit')
        socket.destroy()
        return
      }
      socket.once('close', () => limits.release(key))
    }
    const id = `${socket.remoteAddress ?? ''} ${socket.remotePort ?? ''}`
    const timer = setTimeout(() => {
      this.#timedOut.add(socket)
      this.#timeouts.inc({ kind: 'handshake' })
      this.#failures.record('timeout', { timeoutMs: this.#o.timeouts.handshakeMs })
      socket.destroy()
    }, this.#o.timeouts.handshakeMs)
    this.#handshaking.set(id, timer)
    socket.once('close', () => {
      clearTimeout(timer)
      if (this.#handshaking.get(id) === timer) this.#handshaking.delete(id)
    })
    this.#read(socket)
  }

  /** Reads until the route is known, then hands the socket over (or closes it on timeout/EOF). */
  #read (socket: Socket): void {
    const reader = this.#o.needsHello() ? new ClientHelloReader() : undefined
    let received = 0
    this.#reading.add(socket)
    const stop = (): void => {
      clearTimeout(timer)
      this.#reading.delete(socket)
      socket.off('data', onData)
      socket.off('end', onEnd)
    }
    const timer = setTimeout(() => {
      stop()
      this.#timeouts.inc({ kind: 'client_hello' })
      this.#o.log.debug({ bytes: received }, 'no complete ClientHello in time, connection closed')
      socket.destroy()
    }, this.#o.timeouts.clientHelloMs)
    const onData = (chunk: Buffer): void => {
      if (received === 0) this.#handshakes.firstByte(socket)
      received += chunk.length
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
      if (received > 0) this.#failures.record('client_closed', { bytes: received })
      socket.destroy()
    }
    socket.on('data', onData)
    socket.on('end', onEnd)
    socket.once('close', stop)
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
    server.emit('connection', socket)
  }

  /** Counts the handshake failures of `server` and ends the handshake timer of its connections. */
  watch (server: TlsServer): void {
    if (this.#watched.has(server)) return
    this.#watched.add(server)
    server.on('secureConnection', (tls: TLSSocket) => {
      this.#handshakes.secure(server, tls)
      const id = `${tls.remoteAddress ?? ''} ${tls.remotePort ?? ''}`
      clearTimeout(this.#handshaking.get(id))
      this.#handshaking.delete(id)
    })
    server.on('tlsClientError', (err: NodeJS.ErrnoException, tls: TLSSocket) => {
      // The TLS socket's peer address is gone once closed; Node keeps the accepted socket as `_parent`.
      const parent = (tls as unknown as { _parent?: unknown })._parent
      if (parent instanceof Socket && this.#timedOut.has(parent)) return
      this.#failures.record(failureReason(err), { code: err.code, err: err.message.slice(0, 200) })
    })
  }

  /** Closes the connections still being read (shutdown). */
  destroyReading (): void {
    for (const socket of this.#reading) socket.destroy()
  }
}
