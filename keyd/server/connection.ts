// One client connection's bytes: framing, the HELLO deadline, and every memory bound — a small buffer
// before HELLO, backpressure (reading stops while the client leaves answers unread), a cap on what the
// connection holds and a share of the global budget. What a frame means is the server's business.
import type { Socket } from 'node:net'
import type { Logger } from 'pino'
import { FrameDecoder, ErrorCode, HEADER_SIZE, encodeError, type Frame } from '../protocol/codec.js'
import type { Client } from './clients.js'
import type { MemoryBudget } from './limits.js'
import type { KeydMetrics } from './metrics.js'

export interface ConnectionOptions {
  maxFrameBytes: number
  helloTimeoutMs: number
  budget: MemoryBudget
  logger: Logger
  metrics: KeydMetrics | null
  /** Called for every whole frame, in order. */
  onFrame: (conn: Connection, frame: Frame) => void
  /** Called for an error frame keyd sends on its own (oversized frame, memory bound): counted as a refusal. */
  onRefused: (code: number) => void
  onClose: (conn: Connection) => void
}

/**
 * The native SIGN path's side of a connection handed to it (keyd/server/native-sign.ts): from then on
 * its threads read the socket and write every answer, and this connection gets the bytes they did not
 * answer themselves (`feed`), in order.
 */
export interface NativeWire {
  write: (buf: Buffer) => void
  pause: () => void
  resume: () => void
  /** Half-close after what is queued (the error frame of a refusal). */
  shutdown: () => void
  /** The peer closed: write what is queued, then close (the socket is destroyed once that is done). */
  end: () => void
  drop: () => void
}

/** Why keyd closed a connection (a metric label). */
export type DisconnectReason = 'hello-timeout' | 'frame-too-large' | 'pre-hello-buffer' | 'memory' | 'stalled' | 'unknown-client' | 'revoked'

export class Connection {
  /** Set by a successful HELLO. */
  client: Client | undefined
  /** Requests accepted and not yet answered. */
  inFlight = 0
  /** performance.now() when the last chunk arrived (queue-time metric). */
  arrived = 0
  readonly #socket: Socket
  readonly #o: ConnectionOptions
  #decoder: FrameDecoder | null
  readonly #helloTimer: NodeJS.Timeout
  #requestBytes = 0
  #queuedBytes = 0
  #pendingBytes = 0
  #held = 0
  #paused = false
  #stallTimer: NodeJS.Timeout | null = null
  #closed = false
  /** Set once the native SIGN path holds the socket. */
  #wire: NativeWire | null = null
  /** Waiting to hand the socket over at the next frame boundary (see handOff). */
  #handOff: ((fd: number) => NativeWire | null) | null = null
  /** Bytes of answers given to the native side and not yet written by it, in order. */
  #wireWrites: number[] = []
  #wireQueued = 0

  constructor (socket: Socket, opts: ConnectionOptions) {
    this.#socket = socket
    this.#o = opts
    this.#decoder = new FrameDecoder(opts.maxFrameBytes)
    this.#helloTimer = setTimeout(() => this.close('hello-timeout'), opts.helloTimeoutMs)
    this.#helloTimer.unref()
    socket.on('data', chunk => this.#onData(chunk))
    socket.on('drain', () => { this.#resume(); this.#tryHandOff() })
    socket.on('error', err => opts.logger.debug({ err: err.message }, 'keyd connection error'))
    socket.on('close', () => this.#onClose())
  }

  /** Marks the connection authenticated. */
  authenticated (client: Client): void {
    this.client = client
    clearTimeout(this.#helloTimer)
  }

  get destroyed (): boolean { return this.#socket.destroyed }

  /**
   * Hands the socket to the native SIGN path as soon as nothing is half-read or half-written (a frame
   * boundary, every answer flushed): `take(fd)` starts it, or answers null to keep this path.
   */
  handOff (take: (fd: number) => NativeWire | null): void {
    if (this.#wire !== null || this.#closed) return
    this.#handOff = take
  }

  #tryHandOff (): void {
    const take = this.#handOff
    if (take === null || this.#closed || this.#paused || this.#socket.destroyed) return
    if (this.#decoder === null || this.#decoder.pending !== 0) return
    // The HELLO answer still in Node's queue: try once more after this turn (two writers would interleave).
    if (this.#socket.writableLength !== 0) { setImmediate(() => this.#tryHandOff()); return }
    const fd = (this.#socket as unknown as { _handle?: { fd?: number } | null })._handle?.fd
    this.#handOff = null
    if (typeof fd !== 'number' || fd < 0) return
    const wire = take(fd)
    if (wire === null) return
    stopReading(this.#socket)
    this.#wire = wire
  }

  /** Bytes the native side read and did not answer itself, in stream order. */
  feed (chunk: Buffer): void { this.#onData(chunk) }

  /** The native side wrote `bytes` of an answer this connection gave it (the first not yet written). */
  flushed (bytes: number): void {
    const n = this.#wireWrites.shift()
    if (n === undefined) return
    this.#wireQueued -= n
    if (!this.#closed) {
      this.#queuedBytes -= bytes
      this.#account()
    }
    if (this.#wireQueued === 0) this.#resume()
  }

  /** The peer closed its side (seen by the native side): answers already queued are written, then the socket closes. */
  remoteEnded (): void {
    if (this.#wire === null) { this.#socket.destroy(); return }
    this.#wire.end()
  }

  /** The native side closed its copy of the socket: Node's closes too (and 'close' follows). */
  destroySocket (): void { this.#socket.destroy() }

  /**
   * Accepts a request of `bytes` for processing, or returns false if holding it would pass this
   * connection's cap or the shared budget (the caller answers OVERLOADED). Pair with `done`.
   */
  admit (bytes: number): boolean {
    if (!this.#o.budget.allows(this.#held, this.#held + bytes)) return false
    this.inFlight++
    this.#requestBytes += bytes
    this.#account()
    return true
  }

  /** A request admitted with `admit(bytes)` is answered (or dropped). */
  done (bytes: number): void {
    this.inFlight--
    if (this.#closed) return // #release gave everything back
    this.#requestBytes -= bytes
    this.#account()
  }

  /** Queues an answer; stops reading the socket while answers pile up unread. */
  reply (buf: Buffer): void {
    if (this.#closed || this.#socket.destroyed) return
    const n = buf.length
    this.#queuedBytes += n
    this.#account()
    if (this.#wire !== null) {
      this.#wireWrites.push(n)
      this.#wireQueued += n
      this.#wire.write(buf)
    } else {
      this.#socket.write(buf, () => {
        if (this.#closed) return // #onClose released everything
        this.#queuedBytes -= n
        this.#account()
      })
    }
    if ((this.#wire !== null ? this.#wireQueued : this.#socket.writableLength) > this.#o.budget.limits.writeHighWater) this.#pause()
    // Answers to a client that never reads can pass the cap only through requests already read; close it.
    if (this.#held > this.#o.budget.limits.maxConnectionBytes) this.close('memory', ErrorCode.OVERLOADED, `more than ${this.#o.budget.limits.maxConnectionBytes} bytes of unread answers on this connection`)
  }

  /** Sends an error frame (if `code`) and closes; the reason is counted. */
  close (reason: DisconnectReason, code?: number, message?: string, requestId = 0): void {
    if (this.#closed) return
    this.#o.metrics?.disconnected(reason)
    if (code !== undefined && !this.#socket.destroyed) {
      this.#o.onRefused(code)
      // keyd stops reading before it answers: what the client still sends stays in the kernel's
      // socket buffer (bounded by the client's send buffer). Reading and dropping it instead (the rest
      // of an unfinished 1 MiB frame, on each of 300 connections) was 300 MiB of garbage for the GC
      // and kept keyd's only thread from a well-behaved client. The error frame and a FIN follow. On a
      // unix socket what keyd wrote stays readable after keyd closes, but a client still writing gets
      // EPIPE at the close and may drop its socket before reading the frame (a Node client does), so
      // keyd closes only once the client had `closeLingerMs` to read it. Not reading, keyd cannot see
      // the client leave sooner; meanwhile the connection costs a descriptor, and nothing more is read.
      stopReading(this.#socket)
      const wire = this.#wire
      if (wire !== null) {
        wire.pause()
        wire.write(encodeError(requestId, code, message ?? ''))
        wire.shutdown()
      } else {
        this.#socket.end(encodeError(requestId, code, message ?? ''))
      }
      setTimeout(() => this.#socket.destroy(), this.#o.budget.limits.closeLingerMs).unref()
    } else {
      this.#socket.destroy()
    }
    this.#release()
  }

  #onData (chunk: Buffer): void {
    if (this.#closed) return
    const decoder = this.#decoder
    if (decoder === null) return
    this.arrived = performance.now()
    const limits = this.#o.budget.limits
    // Before HELLO a frame bigger than the small buffer is refused from its length alone, before it is copied.
    if (this.client === undefined && decoder.pending === 0 && chunk.length >= 4 && chunk.readUInt32BE(0) + 4 > limits.preHelloBytes) {
      this.close('pre-hello-buffer', ErrorCode.FRAME_TOO_LARGE, `before HELLO a frame may be at most ${limits.preHelloBytes} bytes`)
      return
    }
    for (const ev of decoder.push(chunk)) {
      if (this.#closed) return
      if (ev.kind === 'too-large') {
        this.close('frame-too-large', ErrorCode.FRAME_TOO_LARGE, `frame of ${ev.length + 4} bytes is outside ${HEADER_SIZE}..${decoder.maxFrame}`, ev.requestId ?? 0)
        return
      }
      this.#o.onFrame(this, ev.frame)
    }
    if (this.#closed) return
    if (this.#handOff !== null) this.#tryHandOff()
    const pending = decoder.pending
    if (this.client === undefined && pending > limits.preHelloBytes) {
      this.close('pre-hello-buffer', ErrorCode.FRAME_TOO_LARGE, `before HELLO a connection may send at most ${limits.preHelloBytes} bytes`)
      return
    }
    if (pending !== this.#pendingBytes) {
      const before = this.#held
      const after = before + pending - this.#pendingBytes
      if (pending > this.#pendingBytes && !this.#o.budget.allows(before, after)) {
        this.close('memory', ErrorCode.OVERLOADED, 'keyd cannot hold this frame now: this connection or keyd as a whole holds too many unanswered bytes')
        return
      }
      this.#pendingBytes = pending
      this.#account()
    }
  }

  #account (): void {
    const held = this.#requestBytes + this.#queuedBytes + this.#pendingBytes
    this.#o.budget.move(this.#held, held)
    this.#held = held
  }

  #pause (): void {
    if (this.#paused) return
    this.#paused = true
    if (this.#wire !== null) this.#wire.pause()
    else this.#socket.pause()
    this.#o.metrics?.paused(1)
    this.#stallTimer = setTimeout(() => this.close('stalled'), this.#o.budget.limits.stallTimeoutMs)
    this.#stallTimer.unref()
  }

  #resume (): void {
    if (!this.#paused || this.#closed) return
    this.#paused = false
    this.#o.metrics?.paused(-1)
    if (this.#stallTimer !== null) clearTimeout(this.#stallTimer)
    this.#stallTimer = null
    if (this.#wire !== null) this.#wire.resume()
    else this.#socket.resume()
  }

  #release (): void {
    if (this.#closed) return
    this.#closed = true
    this.#decoder = null // a partial frame is garbage now
    clearTimeout(this.#helloTimer)
    if (this.#stallTimer !== null) clearTimeout(this.#stallTimer)
    if (this.#paused) this.#o.metrics?.paused(-1)
    this.#paused = false
    // Requests still running finish into the void; their bytes are no longer this connection's.
    this.#o.budget.move(this.#held, 0)
    this.#held = 0
    this.#requestBytes = 0
    this.#queuedBytes = 0
    this.#pendingBytes = 0
  }

  #onClose (): void {
    this.#release()
    this.#wire?.drop()
    this.#wire = null
    this.#o.onClose(this)
  }
}

/**
 * Stops reading `socket` at once. pause() alone stops 'data' events, but Node keeps reading until its
 * stream buffer is full — one more chunk of up to 64 KiB per socket; stopping the handle's reads
 * (Node's own pause() does this for sockets with an `onread` buffer) reads nothing more. The handle's
 * `reading` flag is left set, so Node does not start reading again to refill its buffer. Only for a
 * socket that is never resumed. Without a handle (a future Node), pause() still bounds the reads.
 */
function stopReading (socket: Socket): void {
  socket.pause()
  const handle = (socket as unknown as { _handle?: { readStop?: () => number } | null })._handle
  handle?.readStop?.()
}
