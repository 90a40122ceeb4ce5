// gRPC through the proxy: a gRPC call is an HTTP/2 request with `content-type: application/grpc…`
// whose status travels in trailers. The forwarder (forward.ts) calls in here to pass trailers on,
// to answer its own errors as gRPC statuses (as Envoy maps them) instead of JSON pages, and to
// honour the call's `grpc-timeout` in place of the route's response timeout.

import type { IncomingHttpHeaders } from 'node:http'
import type { Http2ServerRequest, Http2ServerResponse, OutgoingHttpHeaders } from 'node:http2'
import type { Dispatcher } from 'undici'
import { withoutHopByHop } from './forward-headers.js'
import type { ClientRequest, ClientResponse } from './forward.js'

/** gRPC status codes the proxy itself answers with. */
export const GrpcStatus = {
  UNKNOWN: 2,
  DEADLINE_EXCEEDED: 4,
  PERMISSION_DENIED: 7,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNIMPLEMENTED: 12,
  UNAUTHENTICATED: 16
} as const

/** True for a gRPC request (`application/grpc`, `application/grpc+proto`, …; gRPC-Web is not gRPC). */
export function isGrpc (headers: IncomingHttpHeaders): boolean {
  const type = headers['content-type']
  return type !== undefined && type.startsWith('application/grpc') && !type.startsWith('application/grpc-web')
}

/** A gRPC call of an HTTP/2 client: only those get gRPC statuses and trailers from the proxy. */
function grpcCall (req: ClientRequest): req is Http2ServerRequest {
  return req.httpVersionMajor >= 2 && isGrpc(req.headers)
}

const UNIT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000_001 }

/** The `grpc-timeout` header in milliseconds (at least 1), or undefined when absent or malformed (up to 8 digits and a unit). */
export function grpcTimeoutMs (value: string | string[] | undefined): number | undefined {
  const v = Array.isArray(value) ? value[0] : value
  const m = v === undefined ? null : /^(\d{1,8})([HMSmun])$/.exec(v)
  if (m === null) return undefined
  const unit = UNIT_MS[m[2] as string] as number // the pattern admits only its keys
  return Math.max(1, Math.ceil(Number(m[1]) * unit))
}

/**
 * The gRPC status for an HTTP status the proxy would answer, as Envoy maps them
 * (400 → INTERNAL, 401 → UNAUTHENTICATED, 403 → PERMISSION_DENIED, 404 → UNIMPLEMENTED,
 * 429/502/503/504 → UNAVAILABLE, anything else → UNKNOWN).
 */
export function grpcStatusOf (httpStatus: number): number {
  switch (httpStatus) {
    case 400: return GrpcStatus.INTERNAL
    case 401: return GrpcStatus.UNAUTHENTICATED
    case 403: return GrpcStatus.PERMISSION_DENIED
    case 404: return GrpcStatus.UNIMPLEMENTED
    case 429: case 502: case 503: case 504: return GrpcStatus.UNAVAILABLE
    default: return GrpcStatus.UNKNOWN
  }
}

/** `grpc-message` is percent-encoded (gRPC over HTTP/2 spec): anything outside printable ASCII and `%`. */
function encodeMessage (message: string): string {
  return Array.from(Buffer.from(message, 'utf8'), b => (b >= 0x20 && b <= 0x7e && b !== 0x25 ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`)).join('')
}

/**
 * Ends a gRPC call with `status`. Before any response byte it is a "trailers-only" response (the
 * status in the HEADERS frame that ends the stream), sent at once: the compat layer would send
 * trailers only after the stream's 'finish', when an unread request body may already have made the
 * proxy reset the stream (request-body.ts), and the client would see no status. Mid-stream the
 * status goes in the trailers.
 */
function endCall (res: Http2ServerResponse, status: number, message: string): void {
  if (res.writableEnded || res.stream.destroyed || res.stream.closed) return
  const fields = { 'grpc-status': String(status), 'grpc-message': encodeMessage(message) }
  if (res.headersSent) {
    res.addTrailers(fields)
    res.end()
    return
  }
  respondTrailersOnly(res, { ...res.getHeaders(), 'content-type': 'application/grpc', ...fields })
}

/** Sends `headers` as the whole response (HEADERS with END_STREAM) and ends the compat response with it. */
function respondTrailersOnly (res: Http2ServerResponse, headers: OutgoingHttpHeaders): void {
  res.stream.respond({ ...headers, ':status': 200 }, { endStream: true })
  res.end()
}

/**
 * Writes the upstream's response head to the client; true when it was a gRPC "trailers-only"
 * response (its status in the headers, the upstream stream ended with them), which is passed on as
 * one: the client then gets the status even though no body and no trailers follow. False otherwise
 * (the caller writes the head as usual).
 */
export function passTrailersOnly (req: ClientRequest, res: ClientResponse, upstream: Dispatcher.ResponseData, headers: Record<string, string | string[]>): boolean {
  if (!grpcCall(req) || upstream.statusCode !== 200 || headers['grpc-status'] === undefined) return false
  if ((upstream.body as { endedWithHeaders?: boolean }).endedWithHeaders !== true) return false
  const r = res as Http2ServerResponse
  respondTrailersOnly(r, { ...r.getHeaders(), ...headers })
  return true
}

/**
 * Answers the proxy's own error `httpStatus` as a gRPC status when `res` belongs to a gRPC call of
 * an HTTP/2 client (a failed connect → UNAVAILABLE, not an HTML or JSON 502); false otherwise, and
 * the caller answers as usual.
 */
export function answerGrpcError (res: ClientResponse, httpStatus: number, message: string): boolean {
  const req = (res as { req?: ClientRequest }).req
  if (req === undefined || !grpcCall(req)) return false
  endCall(res as Http2ServerResponse, grpcStatusOf(httpStatus), message)
  return true
}

/**
 * For a gRPC call with a `grpc-timeout`: arms its deadline and returns it in milliseconds, else
 * undefined. The deadline replaces the route's response timeout (a long stream within its deadline
 * is not cut); when it passes, `onExpire` runs (it cancels the upstream request, so the target
 * sees RST_STREAM CANCEL) and the client gets DEADLINE_EXCEEDED, also mid-stream.
 */
export function grpcDeadline (req: ClientRequest, res: ClientResponse, onExpire: () => void): number | undefined {
  if (!grpcCall(req)) return undefined
  const ms = grpcTimeoutMs(req.headers['grpc-timeout'])
  if (ms === undefined) return undefined
  const timer = setTimeout(() => {
    if (res.writableEnded) return
    onExpire()
    endCall(res as Http2ServerResponse, GrpcStatus.DEADLINE_EXCEEDED, 'deadline exceeded at the proxy')
  }, ms)
  req.stream.once('close', () => clearTimeout(timer))
  return ms
}

/**
 * Passes the upstream response's trailers (`grpc-status`, `grpc-message`, …) on to an HTTP/2
 * client when its body ends; call before piping the body so they are added before the end.
 */
export function relayTrailers (req: ClientRequest, res: ClientResponse, upstream: Dispatcher.ResponseData): void {
  if (req.httpVersionMajor < 2) return
  upstream.body.once('end', () => {
    const trailers = withoutHopByHop(upstream.trailers)
    if (Object.keys(trailers).length > 0 && !res.writableEnded) res.addTrailers(trailers)
  })
}

/**
 * The early reset (RST_STREAM NO_ERROR) of an HTTP/2 request whose response ended before its body
 * (request-body.ts), for a gRPC call: the compat response sends its trailers, the call's status,
 * on 'wantTrailers', which comes after the 'finish' that triggers the reset; a reset at once would
 * beat them and the client would get no status (a bidi call the target ends while the client still
 * streams). The reset then waits for them. A trailers-only response has its status out already and
 * gets no reset: a gRPC client ends its side once it has the status. False for any other request:
 * the caller resets at once.
 */
export function deferEarlyReset (req: ClientRequest, reset: () => void): boolean {
  if (!grpcCall(req)) return false
  req.stream.once('wantTrailers', () => setImmediate(reset))
  return true
}
