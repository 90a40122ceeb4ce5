// A client request body on its way upstream: handed to undici as an async iterable read on demand
// (so undici's backpressure reaches the client, and undici never destroys the client's request), cut when the client stalls for
// `timeouts.requestBodyIdleMs` while the proxy waits for it, and settled when the response ends
// before the body: HTTP/1.1 drains the rest (bounded) to keep the connection, or closes it; HTTP/2
// resets the stream with NO_ERROR (RFC 9113 §8.1), so no client is left half-sent and hanging.

import type { Http2ServerRequest, Http2ServerResponse, ServerHttp2Stream } from 'node:http2'
import type { Readable } from 'node:stream'
import { constants } from 'node:http2'
import type { Counter } from 'prom-client'
import { deferEarlyReset } from './grpc.js'
import { endConnection } from './http-limits.js'
import { resetStream } from './h2-guard.js'
import type { ClientRequest, ClientResponse } from './forward.js'

/** After an early response, at most this much of the rest of an HTTP/1.1 body is read and discarded… */
export const EARLY_RESPONSE_DRAIN_BYTES = 1024 * 1024
/** …for at most this long; past either bound the connection is closed instead. */
export const EARLY_RESPONSE_DRAIN_MS = 5_000

export type EarlyAction = 'drained' | 'closed' | 'reset'

/**
 * Calls `done(true)` once the response is complete, or `done(false)` if the exchange ended first
 * (the client went away, or reset the stream). HTTP/2 watches the stream itself: its compat
 * response emits 'finish' only when the whole stream closes, resets included.
 */
export function whenResponseEnds (req: ClientRequest, res: ClientResponse, done: (complete: boolean) => void): void {
  let called = false
  const end = (complete: boolean): void => {
    if (called) return
    called = true
    done(complete)
  }
  if (req.httpVersionMajor >= 2) {
    // A reset stream also ends its writable side (and emits 'finish'): complete only if we ended it.
    const stream = (res as Http2ServerResponse).stream
    stream.once('finish', () => end(res.writableEnded))
    stream.once('close', () => end(false))
    return
  }
  res.once('finish', () => end(true))
  res.once('close', () => end(false))
}

export interface BodyWatch {
  /** The body for undici: yields the client's chunks as undici asks for them. */
  body: AsyncIterable<Buffer>
  /** The exchange is over: stops the idle clock and makes undici let go of the body. */
  stop: () => void
}

/** Settings of a body watch. */
export interface BodyWatchOptions {
  idleMs: number
  onIdle: () => void
  early: Counter<'action'>
}

/** A body watch whose caller reports the response's end itself (the direct HTTP/2 path). */
export interface StreamBodyWatch extends BodyWatch {
  /** The response is over: `complete` when sent whole, false when the exchange ended first. */
  responseEnded: (complete: boolean) => void
}

/**
 * Watches the body of `req`. `onIdle` runs once if the client stalls while the proxy waits for
 * it (it answers the client; the watch then settles the body as for an early response).
 * `early` counts how early responses were settled.
 */
export function watchRequestBody (req: ClientRequest, res: ClientResponse, opts: BodyWatchOptions): BodyWatch {
  const h2 = req.httpVersionMajor >= 2
  const cut = h2
    ? () => {
        const stream = (req as Http2ServerRequest).stream
        const reset = (): void => resetStream(stream, constants.NGHTTP2_NO_ERROR)
        // A gRPC call's status is in trailers, which Node sends after this point (grpc.ts).
        if (!deferEarlyReset(req, reset)) reset()
      }
    : () => endConnection(req.socket)
  const w = watchBody(req, { h2, declared: Number(req.headers['content-length']), cut }, opts)
  whenResponseEnds(req, res, w.responseEnded)
  return { body: w.body, stop: w.stop }
}

/**
 * Watches the body of a request read straight from its HTTP/2 stream (h2-direct.ts); the caller
 * reports the response's end with `responseEnded`. An early response resets the stream with
 * NO_ERROR once the response is out.
 */
export function watchStreamBody (stream: ServerHttp2Stream, declared: number, opts: BodyWatchOptions): StreamBodyWatch {
  return watchBody(stream, { h2: true, declared, cut: () => resetStream(stream, constants.NGHTTP2_NO_ERROR) }, opts)
}

/** The body as read: a request (HTTP/1.1: `complete` once its last byte was parsed) or an HTTP/2 stream. */
type Body = Readable & { complete?: boolean }

function watchBody (req: Body, src: { h2: boolean, declared: number, cut: () => void }, opts: BodyWatchOptions): StreamBodyWatch {
  const h2 = src.h2
  /** `open` until the response is complete; then `draining` (HTTP/1.1) or `done`. */
  let state: 'open' | 'draining' | 'done' = 'open'
  let iterating = false
  let timedOut = false
  let received = 0
  let drainLimit = Infinity
  let drainDeadline: NodeJS.Timeout | undefined
  /** True once the response is complete. */
  let responded = false

  // Fires `idleMs` after the last chunk that arrived. Data already buffered means the proxy is the
  // slow side (the upstream is not reading): that is not the client's stall, so wait again.
  const timer = setTimeout(() => {
    if (bodyDone()) return
    if (req.readableLength > 0) {
      timer.refresh()
      return
    }
    timedOut = true
    opts.onIdle()
    if (responded) cut()
  }, opts.idleMs)
  timer.unref()

  function bodyDone (): boolean {
    return req.readableEnded || req.destroyed || (!h2 && req.complete === true && req.readableLength === 0)
  }

  // Chunks are read on demand (paused mode), so backpressure from undici reaches the client. The
  // loop ends with an error, never normally, when the client's body was cut short or is no longer
  // wanted: a normal end would let undici finish a chunked upload that is in fact truncated.
  let wake: (() => void) | undefined
  let stopped = false
  const onReadable = (): void => { const w = wake; wake = undefined; w?.() }
  async function * chunks (): AsyncGenerator<Buffer> {
    iterating = true
    for (const event of ['readable', 'end', 'close', 'error']) req.on(event, onReadable)
    try {
      while (true) {
        if (stopped) throw new Error('the request body is no longer wanted')
        const chunk = req.read() as Buffer | null
        if (chunk !== null) {
          received += chunk.length
          timer.refresh()
          yield chunk
          continue
        }
        if (req.readableEnded) return
        if (req.destroyed) throw new Error('the client request body was cut short')
        await new Promise<void>(resolve => { wake = resolve })
      }
    } finally {
      iterating = false
      for (const event of ['readable', 'end', 'close', 'error']) req.off(event, onReadable)
      if (responded) settle()
    }
  }
  /** Makes undici let go of the body: the exchange is over. */
  const stop = (): void => {
    stopped = true
    onReadable()
  }

  /** Ends what is left of the exchange at once: HTTP/2 resets the stream, HTTP/1.1 closes the connection. */
  function cut (): void {
    clearTimeout(timer)
    clearTimeout(drainDeadline)
    req.off('data', onDrainData)
    if (state === 'done') return
    state = 'done'
    opts.early.inc({ action: h2 ? 'reset' : 'closed' })
    src.cut()
  }

  function onDrainData (chunk: Buffer): void {
    received += chunk.length
    timer.refresh()
    if (received > drainLimit) cut()
  }

  // The response is complete but the body is not: never leave the client half-sent.
  function settle (): void {
    if (state !== 'open' || bodyDone()) return
    const declared = src.declared
    if (h2 || timedOut || (Number.isFinite(declared) && declared - received > EARLY_RESPONSE_DRAIN_BYTES)) {
      cut()
      return
    }
    // Drain once undici has let go of the body.
    if (iterating) {
      stop()
      return
    }
    // HTTP/1.1: read and discard the rest to keep the connection, as Node does for an unread body,
    // but bounded in bytes and time.
    state = 'draining'
    drainLimit = received + EARLY_RESPONSE_DRAIN_BYTES
    drainDeadline = setTimeout(cut, EARLY_RESPONSE_DRAIN_MS)
    drainDeadline.unref()
    req.on('data', onDrainData)
    req.once('end', () => {
      if (state !== 'draining') return
      state = 'done'
      clearTimeout(drainDeadline)
      clearTimeout(timer)
      opts.early.inc({ action: 'drained' })
    })
    req.resume()
  }

  let ended = false
  return {
    body: chunks(),
    stop: () => {
      clearTimeout(timer)
      stop()
    },
    responseEnded: complete => {
      if (ended) return
      ended = true
      responded = complete
      if (!complete) {
        clearTimeout(timer)
        stop()
      } else if (bodyDone()) {
        clearTimeout(timer)
      } else {
        settle()
      }
    }
  }
}
