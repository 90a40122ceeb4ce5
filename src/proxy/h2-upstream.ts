// HTTP/2 to upstream targets (a route's `upstreamProtocol: "h2c"` or `"h2"`): a few node:http2
// sessions per target origin, each carrying many streams, answering the same `request()` call as
// undici's HTTP/1.1 pools so that balancing, health checks, outlier ejection, retries and per-target
// metrics (route-pool.ts, health.ts) work unchanged. undici 7 speaks HTTP/2 only after TLS ALPN
// (no h2c with prior knowledge) and gives no control of RST_STREAM codes, which gRPC needs: a
// cancelled request must reach the target as RST_STREAM CANCEL, and trailers must come back.
//
// Errors reuse undici's classes and codes (ConnectTimeoutError, HeadersTimeoutError,
// BodyTimeoutError, RequestAbortedError) so the pool and the forwarder map them as they map
// undici's: timeouts → 504, refused connections → retried on another target, then 502.

import { connect, constants, type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2'
import { EventEmitter } from 'node:events'
import { Readable } from 'node:stream'
import type { Logger } from 'pino'
import { errors, type Dispatcher } from 'undici'
import { targetHost } from './target-host.js'

/** What a route's pool asks of a target's connections: undici's promise `request()` (its Pool, or an H2Origin). */
export interface Requester {
  request: (options: Dispatcher.RequestOptions) => Promise<Dispatcher.ResponseData>
}

/** Sessions opened to one target at most; a new one opens only when every open one is full. */
export const H2_MAX_SESSIONS_PER_TARGET = 4
/** Streams put on one session at most (fewer if the target's SETTINGS say so); beyond, nghttp2 queues them. */
export const H2_MAX_STREAMS_PER_SESSION = 100
/** A session without streams for this long is closed (as undici's keep-alive timeout does for HTTP/1.1). */
export const H2_IDLE_SESSION_MS = 60_000
/**
 * Liveness of a session with streams in flight: a PING this often, and a session whose target does
 * not answer one within the timeout is destroyed (its streams fail; new requests get a new session).
 * A target that vanished without a FIN or RST (power loss, a firewall dropping packets) would
 * otherwise keep every request sent to its session waiting until its own timeout, for as long as
 * TCP keeps retransmitting (minutes). Idle sessions are not pinged: they close after H2_IDLE_SESSION_MS.
 */
export const H2_PING = { intervalMs: 10_000, timeoutMs: 5_000 }

interface Session {
  session: ClientHttp2Session
  /** Streams open on it (ours). */
  active: number
  /** GOAWAY received or closing: no new streams. */
  draining: boolean
  /** A liveness PING is out, unanswered. */
  pinging: boolean
}

/** Connection-specific headers that HTTP/2 forbids (RFC 9113 §8.2.2); `host` becomes `:authority`. */
const H2_FORBIDDEN = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'host', 'te', 'http2-settings'])

function requestHeaders (options: Dispatcher.RequestOptions, scheme: string, origin: URL): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {}
  let authority: string | undefined
  // Header values are strings, numbers or lists of them (undici's forms).
  const one = (v: unknown): string => (typeof v === 'string' || typeof v === 'number' ? String(v) : '')
  const add = (name: string, value: unknown): void => {
    const lower = name.toLowerCase()
    if (lower === 'host') authority = one(value)
    if (H2_FORBIDDEN.has(lower) || lower.startsWith(':') || value === undefined || value === null) return
    out[lower] = Array.isArray(value) ? value.map(one) : one(value)
  }
  const given = options.headers
  if (Array.isArray(given)) {
    for (let i = 0; i + 1 < given.length; i += 2) add(String(given[i]), given[i + 1])
  } else if (given !== null && given !== undefined && typeof given === 'object') {
    for (const [name, value] of Object.entries(given as Record<string, unknown>)) add(name, value)
  }
  // gRPC servers may insist on `te: trailers` (the only TE value HTTP/2 allows); the hop-by-hop
  // filter removed the client's.
  const type = out['content-type']
  if (typeof type === 'string' && type.startsWith('application/grpc')) out.te = 'trailers'
  return {
    ...out,
    [constants.HTTP2_HEADER_METHOD]: options.method,
    [constants.HTTP2_HEADER_PATH]: options.path,
    [constants.HTTP2_HEADER_SCHEME]: scheme,
    [constants.HTTP2_HEADER_AUTHORITY]: authority ?? origin.host
  }
}

/** Resolves once `stream` can take more data, or it closed (then false). */
async function drained (stream: ClientHttp2Stream): Promise<boolean> {
  if (stream.destroyed || stream.closed) return false
  return await new Promise(resolve => {
    const done = (ok: boolean) => (): void => {
      stream.off('drain', onDrain)
      stream.off('close', onClose)
      resolve(ok)
    }
    const onDrain = done(true)
    const onClose = done(false)
    stream.once('drain', onDrain)
    stream.once('close', onClose)
  })
}

/**
 * Calls `onAbort` when `signal` fires: an AbortSignal, or an EventEmitter with `aborted` and an
 * 'abort' event (the forwarder's RequestAbort; undici accepts both). Returns the unsubscribe.
 */
function watchAbort (signal: AbortSignal | EventEmitter | null | undefined, onAbort: () => void): () => void {
  if (signal === null || signal === undefined) return () => {}
  if (signal instanceof EventEmitter) {
    signal.once('abort', onAbort)
    return () => { signal.off('abort', onAbort) }
  }
  signal.addEventListener('abort', onAbort, { once: true })
  return () => { signal.removeEventListener('abort', onAbort) }
}

/** Cancels `stream` with RST_STREAM CANCEL (the target sees the call cancelled), unless it is over. */
function cancel (stream: ClientHttp2Stream): void {
  if (!stream.closed && !stream.destroyed) stream.close(constants.NGHTTP2_CANCEL)
}

/**
 * A response body over an HTTP/2 stream, with the parts of undici's body the proxy uses: a
 * Readable, `dump()` and the trailers filled in before 'end'.
 */
class H2Body extends Readable {
  readonly #stream: ClientHttp2Stream
  /** The response was its HEADERS alone (END_STREAM on them): a gRPC trailers-only response has this. */
  readonly endedWithHeaders: boolean
  constructor (stream: ClientHttp2Stream, endedWithHeaders: boolean) {
    super()
    this.#stream = stream
    this.endedWithHeaders = endedWithHeaders
  }

  override _read (): void {
    this.#stream.resume()
  }

  override _destroy (err: Error | null, callback: (error?: Error | null) => void): void {
    // A body dropped before its end: the target stops sending (RST_STREAM CANCEL).
    cancel(this.#stream)
    callback(err)
  }

  /** Drops the rest of the body: the stream is cancelled rather than read (HTTP/2 needs no reuse of it). */
  async dump (): Promise<void> {
    if (!this.readableEnded) this.destroy()
    await Promise.resolve()
  }
}

/** The HTTP/2 sessions to one target origin. */
export class H2Origin implements Requester {
  readonly #origin: URL
  readonly #scheme: 'http' | 'https'
  readonly #connectTimeoutMs: number
  readonly #log: Logger
  readonly #sessions: Session[] = []
  #connecting: Promise<Session> | undefined
  #closed = false

  readonly #ping: { intervalMs: number, timeoutMs: number }

  constructor (opts: { url: string, connectTimeoutMs: number, log: Logger, ping?: { intervalMs: number, timeoutMs: number } }) {
    this.#ping = opts.ping ?? H2_PING
    this.#origin = new URL(opts.url)
    this.#scheme = this.#origin.protocol === 'https:' ? 'https' : 'http'
    this.#connectTimeoutMs = opts.connectTimeoutMs
    this.#log = opts.log
  }

  /** A session with room for one more stream: an open one, or a new one while fewer than the maximum are open. */
  async #acquire (): Promise<Session> {
    if (this.#closed) throw new errors.ClientDestroyedError()
    const open = this.#sessions.filter(s => !s.draining && !s.session.closed && !s.session.destroyed)
    const room = (s: Session): number => Math.min(H2_MAX_STREAMS_PER_SESSION, s.session.remoteSettings.maxConcurrentStreams ?? H2_MAX_STREAMS_PER_SESSION) - s.active
    const free = open.find(s => room(s) > 0)
    if (free !== undefined) return free
    if (open.length < H2_MAX_SESSIONS_PER_TARGET || open.length === 0) {
      // One connection attempt at a time: a burst of requests to a new target shares it.
      this.#connecting ??= this.#connect().finally(() => { this.#connecting = undefined })
      return await this.#connecting
    }
    // Every session is full: the least busy one takes the stream, and nghttp2 holds it until a slot frees.
    return open.reduce((a, b) => (b.active < a.active ? b : a))
  }

  async #connect (): Promise<Session> {
    const tls = this.#scheme === 'https'
    const { servername } = targetHost(this.#origin)
    const session = connect(this.#origin.origin, {
      settings: { enablePush: false },
      ...(tls ? { ALPNProtocols: ['h2'], ...(servername !== undefined ? { servername } : {}) } : {})
    })
    const entry: Session = { session, active: 0, draining: false, pinging: false }
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        session.destroy()
        reject(new errors.ConnectTimeoutError())
      }, this.#connectTimeoutMs)
      session.once('connect', () => {
        clearTimeout(timer)
        resolve()
      })
      session.once('error', (err: Error) => {
        clearTimeout(timer)
        reject(err)
      })
      session.once('close', () => {
        clearTimeout(timer)
        reject(new errors.SocketError('the upstream closed the HTTP/2 connection while it was being set up'))
      })
    })
    // Errors of an established session reach its streams too; only log them here.
    session.on('error', (err: NodeJS.ErrnoException) => {
      this.#log.warn({ upstream: this.#origin.origin, code: err.code }, 'upstream HTTP/2 session failed')
    })
    session.on('goaway', () => { entry.draining = true })
    const liveness = setInterval(() => { this.#pingIfBusy(entry) }, this.#ping.intervalMs)
    liveness.unref()
    session.once('close', () => {
      clearInterval(liveness)
      entry.draining = true
      const i = this.#sessions.indexOf(entry)
      if (i !== -1) this.#sessions.splice(i, 1)
    })
    // An idle session closes by itself (no frame either way for this long); traffic keeps it open.
    session.setTimeout(H2_IDLE_SESSION_MS, () => {
      if (entry.active === 0) {
        entry.draining = true
        session.close()
      }
    })
    if (this.#closed) {
      session.close()
      throw new errors.ClientDestroyedError()
    }
    this.#sessions.push(entry)
    return entry
  }

  /** PINGs a session that has streams in flight; one that does not answer in time is destroyed. */
  #pingIfBusy (entry: Session): void {
    const { session } = entry
    if (entry.active === 0 || entry.pinging || session.closed || session.destroyed) return
    entry.pinging = true
    const timer = setTimeout(() => {
      this.#log.warn({ upstream: this.#origin.origin, timeoutMs: this.#ping.timeoutMs, streams: entry.active }, 'upstream HTTP/2 session did not answer a PING: closed, its streams fail')
      entry.draining = true
      session.destroy(new errors.SocketError(`the upstream did not answer an HTTP/2 PING within ${this.#ping.timeoutMs} ms`))
    }, this.#ping.timeoutMs)
    timer.unref()
    // false: the session cannot send one now (closing, or too many unanswered): the timer decides.
    session.ping(() => {
      clearTimeout(timer)
      entry.pinging = false
    })
  }

  /** Sends one request on a stream; resolves with the response head, its body streaming. */
  async request (options: Dispatcher.RequestOptions): Promise<Dispatcher.ResponseData> {
    const signal = options.signal as AbortSignal | EventEmitter | null | undefined
    const aborted = (): boolean => (signal as { aborted?: boolean } | null | undefined)?.aborted === true
    if (aborted()) throw new errors.RequestAbortedError()
    const entry = await this.#acquire()
    // The client may have gone while the session was being set up.
    if (aborted()) throw new errors.RequestAbortedError()
    const body = options.body
    const stream = entry.session.request(requestHeaders(options, this.#scheme, this.#origin), { endStream: body === null || body === undefined })
    entry.active++
    stream.once('close', () => { entry.active-- })
    return await new Promise((resolve, reject) => {
      let response: Dispatcher.ResponseData | undefined
      let bodyStream: H2Body | undefined
      const trailers: Record<string, string> = {}
      let timer: NodeJS.Timeout | undefined
      const fail = (err: Error): void => {
        clearTimeout(timer)
        unwatch()
        cancel(stream)
        if (response === undefined) {
          reject(err)
          return
        }
        // Someone may hold the body without listening for errors (a dumped body): no unhandled 'error'.
        if (bodyStream !== undefined && !bodyStream.destroyed) bodyStream.destroy(bodyStream.listenerCount('error') > 0 ? err : undefined)
      }
      const onAbort = (): void => fail(new errors.RequestAbortedError())
      const unwatch = watchAbort(signal, onAbort)
      const arm = (ms: number | null | undefined, make: () => Error): void => {
        clearTimeout(timer)
        if (stream.closed || stream.destroyed) return
        if (ms !== undefined && ms !== null && ms > 0) timer = setTimeout(() => fail(make()), ms)
      }
      arm(options.headersTimeout ?? 300_000, () => new errors.HeadersTimeoutError())

      stream.on('error', (err: Error) => fail(err))
      stream.once('response', (headers: IncomingHttpHeaders, flags: number) => {
        const out = new H2Body(stream, (flags & constants.NGHTTP2_FLAG_END_STREAM) !== 0)
        bodyStream = out
        const bodyTimeout = options.bodyTimeout ?? 300_000
        arm(bodyTimeout, () => new errors.BodyTimeoutError())
        stream.on('data', (chunk: Buffer) => {
          arm(bodyTimeout, () => new errors.BodyTimeoutError())
          if (!out.push(chunk)) stream.pause()
        })
        stream.once('trailers', (t: IncomingHttpHeaders) => {
          for (const [name, value] of Object.entries(t)) {
            if (value !== undefined && !name.startsWith(':')) trailers[name] = Array.isArray(value) ? value.join(', ') : value
          }
        })
        stream.once('end', () => {
          clearTimeout(timer)
          unwatch()
          out.push(null)
        })
        // Closed without its end: reset by the target, or its session went away.
        stream.once('close', () => {
          if (!stream.readableEnded && !out.destroyed) fail(new errors.SocketError(`the upstream reset the HTTP/2 stream (code ${stream.rstCode ?? 'unknown'})`))
        })
        const { [constants.HTTP2_HEADER_STATUS]: status, ...rest } = headers
        response = { statusCode: Number(status), headers: rest, trailers, body: out, opaque: null, context: {} } as unknown as Dispatcher.ResponseData
        resolve(response)
      })
      stream.once('close', () => {
        clearTimeout(timer)
        unwatch()
        if (response === undefined) fail(new errors.SocketError(`the upstream closed the HTTP/2 stream before its response (code ${stream.rstCode ?? 'unknown'})`))
      })
      if (body !== null && body !== undefined) {
        this.#pump(body, stream).catch((err: unknown) => fail(err instanceof Error ? err : new Error(String(err))))
      }
    })
  }

  /** Streams the request body with backpressure; a failing body (the client's stalled or too large) cancels the stream. */
  async #pump (body: NonNullable<Dispatcher.RequestOptions['body']>, stream: ClientHttp2Stream): Promise<void> {
    if (typeof body === 'string' || body instanceof Uint8Array) {
      stream.end(body)
      return
    }
    for await (const chunk of body as AsyncIterable<Buffer | string>) {
      if (stream.closed || stream.destroyed) return
      if (!stream.write(chunk) && !(await drained(stream))) return
    }
    if (!stream.closed && !stream.destroyed) stream.end()
  }

  /** Closes every session: streams in flight finish, no new ones start. */
  close (): void {
    this.#closed = true
    for (const s of this.#sessions.splice(0)) {
      s.draining = true
      s.session.close()
    }
  }
}

/** The HTTP/2 origins of one worker's pools, one per target URL and connect timeout. */
export class H2Upstreams {
  readonly #origins = new Map<string, H2Origin>()
  readonly #log: Logger
  constructor (log: Logger) {
    this.#log = log
  }

  /** The sessions to `url`. */
  get (url: string, connectTimeoutMs: number): H2Origin {
    const key = `${url} ${connectTimeoutMs}`
    let origin = this.#origins.get(key)
    if (origin === undefined) {
      origin = new H2Origin({ url, connectTimeoutMs, log: this.#log })
      this.#origins.set(key, origin)
    }
    return origin
  }

  /** Closes every origin's sessions gracefully. */
  close (): void {
    for (const origin of this.#origins.values()) origin.close()
    this.#origins.clear()
  }
}
