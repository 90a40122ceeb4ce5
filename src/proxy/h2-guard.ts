// Guards each HTTP/2 session: bounded concurrent streams, a rapid-reset limit (streams reset faster
// than `limits.http2MaxResetsPerSecond` get the session GOAWAY ENHANCE_YOUR_CALM and every request in
// flight cancelled), and idle timeouts (no complete first request within `requestHeadersMs`, or no
// open stream for `http2IdleMs`: GOAWAY, then close).

import { constants, type Http2Stream, type SecureServerOptions, type ServerHttp2Session } from 'node:http2'
import type { Logger } from 'pino'
import { Counter, type Registry } from 'prom-client'
import type { LimitsConfig, TimeoutsConfig } from '../config/types.js'
import { CLOSE_LINGER_MS } from './http-limits.js'
import { timeoutCounter } from './timeout-metric.js'
import { peerAddress } from '../tls/proxy-protocol.js'

/** Streams the proxy itself reset: not held against the client's reset budget. */
const resetByUs = new WeakSet<Http2Stream>()

/** Resets `stream` with `code` on the proxy's own initiative (not counted as a client reset). */
export function resetStream (stream: Http2Stream, code: number = constants.NGHTTP2_CANCEL): void {
  if (stream.destroyed || stream.closed) return
  resetByUs.add(stream)
  stream.close(code)
}

/**
 * Cuts a response the proxy cannot finish (its upstream failed after the headers went out): RST_STREAM
 * INTERNAL_ERROR, as nginx sends; a gRPC client reads it as INTERNAL, not as its own cancellation.
 * Node resets a stream destroyed with an error with INTERNAL_ERROR, dropping what it has not sent yet
 * and without ending the writable side first: close() would, so the client would see END_STREAM (a
 * response cut short of its content-length: a PROTOCOL_ERROR on its side) before the reset. The
 * stream must have an 'error' listener.
 */
export function failStream (stream: Http2Stream): void {
  if (stream.destroyed || stream.closed) return
  resetByUs.add(stream)
  stream.destroy(new Error('the response was cut: its upstream failed'))
}

export interface Http2Guard {
  /** Options for `http2.createSecureServer` (the current ones): SETTINGS_MAX_CONCURRENT_STREAMS. */
  readonly serverOptions: Pick<SecureServerOptions, 'settings'>
  /** Watches a new session; call from the server's 'session' event. */
  session: (session: ServerHttp2Session) => void
  /**
   * New timeouts and limits (a config reload): idle clocks started from now on and sessions opened
   * from now on use them; a session keeps the reset budget and stream limit it started with.
   */
  update: (timeouts: TimeoutsConfig, limits: LimitsConfig) => void
  /** Whether a watched session has no stream open (idle, or not yet sent its first request). */
  idle: (session: ServerHttp2Session) => boolean
  /** Ends an idle session to make room for a new connection: GOAWAY NO_ERROR, then closed. */
  reclaim: (session: ServerHttp2Session) => void
}

/** What a session's guard does when one of its streams is reset or closes. */
interface SessionWatch {
  /** Streams open now. */
  open: number
  onReset: (stream: Http2Stream) => void
  closed: () => void
}
const WATCH = Symbol('keyedge.h2Watch')
type GuardedStream = Http2Stream & { [WATCH]?: SessionWatch }

// Each emitted at most once per stream.
function onStreamAborted (this: GuardedStream): void { this[WATCH]?.onReset(this) }
function onStreamClose (this: GuardedStream): void { this[WATCH]?.closed() }

function counter (registry: Registry, name: string, help: string): Counter {
  return (registry.getSingleMetric(name) as Counter | undefined) ?? new Counter({ name, help, registers: [registry] })
}

/** The HTTP/2 session guard of one worker. */
export function createHttp2Guard (opts: { timeouts: TimeoutsConfig, limits: LimitsConfig, registry: Registry, log: Logger }): Http2Guard {
  let { requestHeadersMs, http2IdleMs } = opts.timeouts
  let limits = opts.limits
  // TLS servers already built announce the stream limit they were built with: a session of one
  // gets a SETTINGS frame with the reloaded value (Node's localSettings are not known yet at 'session').
  const builtStreams = opts.limits.http2MaxConcurrentStreams
  const timeouts = timeoutCounter(opts.registry)
  const resets = counter(opts.registry, 'edge_http2_stream_resets_total',
    'HTTP/2 streams reset by the client (or for its protocol errors) before their response was complete')
  const calm = counter(opts.registry, 'edge_http2_rapid_reset_total',
    'HTTP/2 sessions sent GOAWAY ENHANCE_YOUR_CALM for resetting streams faster than limits.http2MaxResetsPerSecond')
  let lastWarn = 0
  // Each watched session's watch, read only when a connection must be reclaimed.
  const watches = new WeakMap<ServerHttp2Session, SessionWatch>()

  /** GOAWAY with `code`. NO_ERROR: close once the open streams are done (if ever: destroyed after a
   * short linger). Otherwise destroy the session right after the frame is out: every stream goes,
   * and their responses abort their upstream requests. */
  const goaway = (session: ServerHttp2Session, code: number): void => {
    if (session.destroyed) return
    const destroy = (): void => { if (!session.destroyed) session.destroy() }
    if (code === constants.NGHTTP2_NO_ERROR) {
      session.close(destroy)
      setTimeout(destroy, CLOSE_LINGER_MS).unref()
    } else {
      session.goaway(code)
      // Never destroy with an Error: Node would destroy every stream with it, and a stream 'error'
      // nobody listens to ends the worker. Clients act on the first GOAWAY; the NO_ERROR one that
      // destroying adds changes nothing.
      setImmediate(destroy)
    }
  }

  return {
    get serverOptions () { return { settings: { maxConcurrentStreams: limits.http2MaxConcurrentStreams } } },
    update (timeouts, next) {
      ({ requestHeadersMs, http2IdleMs } = timeouts)
      limits = next
    },
    idle: session => watches.get(session)?.open === 0,
    reclaim: session => { goaway(session, constants.NGHTTP2_NO_ERROR) },
    session (session) {
      const rate = limits.http2MaxResetsPerSecond
      // A client may cancel every stream it has open at once (a page navigated away from): allow that.
      const burst = Math.max(2 * rate, limits.http2MaxConcurrentStreams)
      if (limits.http2MaxConcurrentStreams !== builtStreams) session.settings({ maxConcurrentStreams: limits.http2MaxConcurrentStreams })
      let timer: NodeJS.Timeout | undefined
      let tokens = burst
      let refilledAt = performance.now()
      let calmed = false

      const idle = (ms: number, kind: 'request_headers' | 'http2_idle'): void => {
        clearTimeout(timer)
        timer = setTimeout(() => {
          timer = undefined
          if (session.destroyed || session.closed) return
          timeouts.inc({ kind })
          goaway(session, constants.NGHTTP2_NO_ERROR)
        }, ms)
        timer.unref()
      }

      const onReset = (stream: Http2Stream): void => {
        if (calmed || resetByUs.has(stream) || session.destroyed || session.closed) return
        resets.inc()
        const now = performance.now()
        tokens = Math.min(burst, tokens + (now - refilledAt) * rate / 1000)
        refilledAt = now
        tokens -= 1
        if (tokens >= 0) return
        calmed = true
        calm.inc()
        if (now - lastWarn > 10_000) {
          lastWarn = now
          opts.log.warn({ peer: peerAddress(session.socket), limit: rate }, 'HTTP/2 client resets streams too fast: GOAWAY ENHANCE_YOUR_CALM, its requests cancelled')
        }
        goaway(session, constants.NGHTTP2_ENHANCE_YOUR_CALM)
      }

      const watch: SessionWatch = {
        open: 0,
        onReset,
        closed () {
          watch.open--
          if (watch.open === 0 && !session.destroyed && !session.closed) idle(http2IdleMs, 'http2_idle')
        }
      }
      watches.set(session, watch)

      idle(requestHeadersMs, 'request_headers')
      session.on('stream', (stream: GuardedStream) => {
        clearTimeout(timer)
        timer = undefined
        // Node emits 'stream' on the next tick: a RST_STREAM in the same read as the HEADERS has
        // closed the stream by then.
        if (stream.destroyed) {
          // Reset before it was ever emitted: `aborted` is not always set then (a loaded worker reads
          // HEADERS and RST_STREAM of many streams at once), the reset code is.
          if (stream.aborted || (stream.rstCode !== undefined && stream.rstCode !== constants.NGHTTP2_NO_ERROR)) onReset(stream)
          if (watch.open === 0) idle(http2IdleMs, 'http2_idle')
          return
        }
        watch.open++
        // 'aborted': the stream closed while our response was still open (RST_STREAM from the client,
        // or a reset nghttp2 made for the client's protocol error). Shared listeners that find the
        // session's watch on the stream: no closures nor once-wrappers per stream.
        stream[WATCH] = watch
        stream.on('aborted', onStreamAborted)
        stream.on('close', onStreamClose)
      })
      session.once('close', () => clearTimeout(timer))
    }
  }
}
