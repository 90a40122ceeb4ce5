// An upstream response body on its way to the client, once its headers are written: every chunk
// is counted for the access log and written straight to the client's response, the upstream body
// paused while the client's side is full (its 'drain' resumes it), so a slow reader never makes
// the worker hold more than the two streams' buffers. One 'data' listener does the counting and
// the writing: what `pipe()` plus a counting listener did with two listeners, a pipe-state lookup
// and an 'unpipe' bookkeeping per response.
//
// Where a 1 MiB response's CPU goes (docs/benchmarks.md, "1 MiB streaming, session 4"): mostly
// TLS record writes and V8's full collections of the socket read buffers, not this loop.

import type { Dispatcher } from 'undici'
import type { ClientResponse } from './forward.js'

/** What the relay reports into (the access-log record's fields it fills). */
export interface BodyRecord {
  bytesOut: number
  upstreamEndMs?: number
}

/**
 * Relays `body` to `res` with backpressure and ends `res` with it. `onError` runs on an upstream
 * body error (timeout, reset mid-body): the response's headers are out, so the caller can only cut
 * the client off. A client that goes away leaves the body paused; the caller aborts the upstream
 * request then (forward.ts), which ends it with an error `onError` is given too.
 */
export function relayResponseBody (body: Dispatcher.ResponseData['body'], res: ClientResponse, rec: BodyRecord, onError: (err: NodeJS.ErrnoException) => void): void {
  // Either response kind is a Writable; their write/end overloads do not unify into one callable type.
  const out = res as NodeJS.WritableStream
  /** Set when the response closes (the client went away, or the exchange is done): nothing more is written. */
  let closed = false
  let waiting = false
  const resume = (): void => {
    waiting = false
    if (!closed) body.resume()
  }
  const onClose = (): void => {
    // As pipe() did: stop writing to a response that is gone (an HTTP/2 stream's response has no
    // `destroyed`, and a write to it after its stream closed would destroy it with an error).
    closed = true
    body.pause()
  }
  res.once('close', onClose)
  body.on('data', (chunk: Buffer) => {
    if (closed) return
    rec.bytesOut += chunk.length
    if (!out.write(chunk) && !waiting) {
      waiting = true
      body.pause()
      res.once('drain', resume)
    }
  })
  body.once('end', () => {
    rec.upstreamEndMs = performance.now()
    res.off('drain', resume)
    if (!closed) out.end()
  })
  body.on('error', (err: NodeJS.ErrnoException) => {
    res.off('drain', resume)
    onError(err)
  })
}
