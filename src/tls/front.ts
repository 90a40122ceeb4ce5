// The plain TCP front of a worker's TLS listener: the worker's connection cap and per-client limits at accept, the ClientHello read
// (only when it can change where the connection goes) under its own timeout, the hand-off of the
// socket and the bytes read to a TLS server, and the handshake timeout from accept to Finished.
// It never answers a client itself, except strict SNI's unrecognized_name (OpenSSL's own bytes).

import { Socket } from 'node:net'
import type { Server as TlsServer, TLSSocket } from 'node:tls'
import type { Logger } from 'pino'
import { errorMessage } from '../../lib/errors.js'
import type { Counter, Registry } from 'prom-client'
import type { ConnectionCap } from '../proxy/conn-cap.js'
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
  /** The worker's cap on open connections, checked first at accept. */
  cap: ConnectionCap
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

/**
 * One connection from accept until its handshake ends: its timers, readers and first-byte time.
 * The front's listeners are shared by every connection (functions of the front, not closures of
 * each connection) and find this through the raw socket; what a connection keeps after its
 * handshake is at most its limit key (when per-client limits are on).
 */
interface Arrival {
  readonly socket: Socket
  /** From accept until Finished. */
  timer: NodeJS.Timeout | undefined
  /** From accept until the route is known (only while the front reads). */
  helloTimer: NodeJS.Timeout | undefined
  /** The PROXY header reader, until the header (or its absence) is known. */
  proxy: ProxyHeaderReader | undefined
  readonly required: boolean
  /** The ClientHello reader, when the route depends on the hello. */
  reader: ClientHelloReader | undefined
  /** Bytes received while reading (TLS bytes only, once a PROXY header is read). */
  received: number
  /** performance.now() of the connection's first byte; NaN before it. */
  firstByteAt: number
  /** The per-client limit key this connection holds (released when it closes). */
  limitKey: string | undefined
}

/** Accepts connections for TLS servers; `watch` every TLS server it may hand sockets to. */
export class TlsFront {
  readonly #o: FrontOptions
  readonly #timeouts: Counter<'kind'>
  readonly #failures: HandshakeFailures
  readonly #handshakes: HandshakeTimer
  /**
   * Connections not yet secure (and, with per-client limits, every open one: its key), by raw
   * socket. The TLS socket finds its raw socket as `_parent`.
   */
  readonly #arrivals = new WeakMap<Socket, Arrival>()
  /** Connections the handshake timeout closed: their TLS server's error is not counted again. */
  readonly #timedOut = new WeakSet<Socket>()
  /** Connections still in the front (not handed to a TLS server yet). */
  readonly #reading = new Set<Socket>()
  readonly #watched = new WeakSet<TlsServer>()
  readonly #proxy: ProxyProtocolMetrics
  /** One 'error' listener for every client socket (a closure per connection would live as long as it). */
  readonly #onSocketError: (err: NodeJS.ErrnoException) => void
  // The listeners below are shared by every connection (`this` is the raw socket).
  readonly #onData: (this: Socket, data: Buffer) => void
  readonly #onEnd: (this: Socket) => void
  readonly #onClose: (this: Socket) => void
  /** Every admitted connection's 'close': its place under the cap is free again. */
  readonly #released: () => void

  constructor (o: FrontOptions) {
    this.#o = o
    this.#onSocketError = err => o.log.debug({ code: err.code }, 'client connection error')
    this.#released = () => { o.cap.release() }
    this.#timeouts = timeoutCounter(o.registry)
    this.#proxy = proxyProtocolMetrics(o.registry, o.log)
    this.#failures = new HandshakeFailures({ log: o.log, registry: o.registry })
    this.#handshakes = new HandshakeTimer(o.registry)
    const arrivals = this.#arrivals
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const front = this
    this.#onData = function (this: Socket, data: Buffer): void {
      const a = arrivals.get(this)
      if (a !== undefined) front.#data(a, data)
    }
    this.#onEnd = function (this: Socket): void {
      const a = arrivals.get(this)
      if (a !== undefined) front.#end(a)
    }
    this.#onClose = function (this: Socket): void {
      const a = arrivals.get(this)
      if (a === undefined) return
      arrivals.delete(this)
      front.#stopReading(a)
      clearTimeout(a.timer)
      a.timer = undefined
      if (a.limitKey !== undefined) front.#o.limits.release(a.limitKey)
    }
  }

  /** Counts and logs failed handshakes (also used by the TLS servers' errors). */
  get failures (): HandshakeFailures {
    return this.#failures
  }

  /** Handles a new TCP connection (a `connection` listener of a net.Server with allowHalfOpen). */
  accept (socket: Socket): void {
    // The cap first: a flood from many addresses is refused before anything is allocated for it.
    if (!this.#o.cap.admit()) {
      socket.destroy()
      return
    }
    socket.on('close', this.#released)
    socket.on('error', this.#onSocketError)
    // From a trusted balancer the limits count the client its PROXY header names, once it is read.
    const proxyRequired = this.#o.proxyTrusted?.(socket.remoteAddress) === true
    const a: Arrival = {
      socket,
      timer: undefined,
      helloTimer: undefined,
      proxy: undefined,
      required: proxyRequired,
      reader: undefined,
      received: 0,
      firstByteAt: NaN,
      limitKey: undefined
    }
    this.#arrivals.set(socket, a)
    // 'on', not 'once' ('close' comes once; once() would wrap the shared listener in a closure per connection).
    socket.on('close', this.#onClose)
    if (!proxyRequired && !this.#admit(a, undefined)) return
    a.timer = setTimeout(this.#handshakeTimeout, this.#o.timeouts.handshakeMs, this, a)
    // A PROXY header can come only from a trusted balancer; from anyone else the reader refuses one.
    a.proxy = new ProxyHeaderReader(proxyRequired ? 'required' : 'forbidden')
    a.reader = this.#o.needsHello() ? new ClientHelloReader() : undefined
    a.helloTimer = setTimeout(this.#helloTimeout, this.#o.timeouts.clientHelloMs, this, a)
    this.#reading.add(socket)
    socket.on('data', this.#onData)
    socket.on('end', this.#onEnd)
  }

  /**
   * Applies the per-client connection limits to `address` (undefined: the socket's peer, looked up
   * only when a limit is on); false when refused (the socket is destroyed).
   */
  #admit (a: Arrival, address: string | undefined): boolean {
    const { limits, log } = this.#o
    if (!limits.enabled) return true
    const key = clientKey(address ?? a.socket.remoteAddress ?? '')
    const admission = limits.admit(key)
    if (admission !== 'ok') {
      log.debug({ client: key, limit: admission }, 'connection refused by a per-client limit')
      a.socket.destroy()
      return false
    }
    a.limitKey = key
    return true
  }

  // setTimeout callbacks, one for every connection (the connection is their argument).
  readonly #handshakeTimeout = (front: TlsFront, a: Arrival): void => {
    a.timer = undefined
    front.#timedOut.add(a.socket)
    front.#timeouts.inc({ kind: 'handshake' })
    front.#failures.record('timeout', { timeoutMs: front.#o.timeouts.handshakeMs })
    a.socket.destroy()
  }

  readonly #helloTimeout = (front: TlsFront, a: Arrival): void => {
    a.helloTimer = undefined
    const proxyPending = a.proxy !== undefined && a.required
    front.#stopReading(a)
    front.#timeouts.inc({ kind: 'client_hello' })
    if (proxyPending) {
      front.#refuse(a.socket, 'timeout', `no complete PROXY header within ${front.#o.timeouts.clientHelloMs} ms (${a.received} bytes)`)
      return
    }
    front.#o.log.debug({ bytes: a.received }, 'no complete ClientHello in time, connection closed')
    a.socket.destroy()
  }

  /** The front stops reading `a` (route known, refused, timed out or closed); its readers are dropped. */
  #stopReading (a: Arrival): void {
    if (a.helloTimer !== undefined) { clearTimeout(a.helloTimer); a.helloTimer = undefined }
    if (!this.#reading.delete(a.socket)) return
    a.socket.off('data', this.#onData)
    a.socket.off('end', this.#onEnd)
    a.reader = undefined
    a.proxy = undefined
  }

  /**
   * The PROXY header (required from a trusted balancer, refused from anyone else), then the bytes
   * until the route is known, then the hand-over (all under the ClientHello timeout).
   */
  #data (a: Arrival, data: Buffer): void {
    const socket = a.socket
    let chunk = data
    // The first TLS byte (after a PROXY header that came alone, the first byte after it).
    if (a.received === 0) a.firstByteAt = performance.now()
    a.received += chunk.length
    const proxy = a.proxy
    if (proxy !== undefined) {
      const verdict = proxy.push(chunk)
      if (verdict.status === 'partial') return
      a.proxy = undefined
      if (verdict.status === 'refused') {
        this.#stopReading(a)
        this.#refuse(socket, verdict.reason, verdict.detail)
        return
      }
      if (verdict.source !== undefined) {
        this.#proxy.accepted(verdict.source)
        setProxiedSource(socket, verdict.source)
      }
      if (a.required && !this.#admit(a, peerAddress(socket))) {
        this.#stopReading(a)
        return
      }
      chunk = verdict.rest
      // What follows is TLS: the counts below are about its bytes only.
      a.received = chunk.length
      if (chunk.length === 0) return
    }
    const reader = a.reader
    if (reader === undefined) { this.#stopReading(a); this.#handOff(socket, chunk, undefined); return }
    const verdict = reader.push(chunk)
    if (verdict.status === 'partial') return
    this.#stopReading(a)
    if (verdict.status === 'unroutable') this.#o.log.debug({ reason: verdict.reason }, 'ClientHello not routable, handed to the default TLS server')
    this.#handOff(socket, reader.bytes(), verdict.status === 'ok' ? verdict : undefined)
  }

  /** EOF before the route is known: OpenSSL would answer nothing and close; so does the front. */
  #end (a: Arrival): void {
    const proxyPending = a.proxy !== undefined && a.required
    this.#stopReading(a)
    const socket = a.socket
    if (proxyPending) {
      // A balancer's plain TCP health check opens and closes without a byte: not a refusal.
      if (a.received > 0) this.#refuse(socket, 'closed', `closed after ${a.received} bytes of a PROXY header`)
      else socket.destroy()
      return
    }
    if (a.received > 0) this.#failures.record('client_closed', { bytes: a.received })
    socket.destroy()
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
      // Node keeps the accepted socket as `_parent` of the TLS socket built on it.
      const parent = (tls as unknown as { _parent?: Socket })._parent
      if (parent === undefined) return
      const source = proxiedSource(parent)
      if (source !== undefined) setProxiedSource(tls, source)
      const a = this.#arrivals.get(parent)
      if (a === undefined) return
      clearTimeout(a.timer)
      a.timer = undefined
      if (!Number.isNaN(a.firstByteAt)) this.#handshakes.observe(server, tls, a.firstByteAt)
      // An idle connection keeps nothing of its handshake; with per-client limits, its key.
      if (a.limitKey === undefined) {
        this.#arrivals.delete(parent)
        parent.off('close', this.#onClose)
      }
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
