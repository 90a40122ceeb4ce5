// What the two request paths of a worker share: the forwarder (forward.ts, for Node's request and
// response objects: HTTP/1.1 and HTTP/2 through the compatibility layer) and the direct HTTP/2
// path (h2-direct.ts, on the stream itself). Outcomes, config generations, and the answers the
// proxy gives itself.

import type { AccessLog } from './access-log.js'
import type { CounterCell, HistogramCell } from './request-metrics.js'
import type { createRouter } from './router.js'
import { failedTarget, type RoutePools } from './route-pool.js'

/** How a client request ended, counted once in `edge_proxy_requests_total{outcome}`. */
export type Outcome = 'forwarded' | 'no_route' | 'bad_request' | 'bad_gateway' | 'gateway_timeout' | 'request_timeout' | 'aborted' | 'no_healthy_upstream' | 'too_large' | 'rate_limited' | 'forbidden'

/** The metric cells one outcome settles into: its count and its duration histogram. */
export interface OutcomeCells { count: CounterCell, time: HistogramCell }

/** The routes, pools and access log that requests started under one config see to their end. */
export interface Generation {
  router: ReturnType<typeof createRouter>
  isTrusted: (address: string) => boolean
  routePools: RoutePools
  accessLog: AccessLog
  /** Requests that started on this generation and are not done yet. */
  inflight: number
  /** Set when a reload replaced it: runs once `inflight` is 0. */
  retired?: () => void
}

/** A request of `gen` is over: the last one of a replaced generation releases it (after this turn's access-log lines). */
export function leaveGeneration (gen: Generation): void {
  if (--gen.inflight === 0 && gen.retired !== undefined) setImmediate(() => { if (gen.inflight === 0) gen.retired?.() })
}

/** undici's timeout errors: answered 504 (else 502). */
export const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT'])

/** The `code` of an error (undici's `UND_ERR_*`, Node's `E*`), if it has one. */
export function errorCode (err: unknown): string | undefined {
  return err instanceof Error && 'code' in err && typeof err.code === 'string' ? err.code : undefined
}

/** The path to send upstream: an absolute-form request target loses its scheme and authority. */
export function requestPath (url: string): string {
  if (url.startsWith('/')) return url
  try {
    const parsed = new URL(url)
    return `${parsed.pathname}${parsed.search}`
  } catch {
    return url
  }
}

/**
 * Passes a request body on, counting its bytes into `rec`; past `max` bytes (0: no limit) it calls
 * `onOver` and fails, which makes undici abort the upstream request before the body is complete.
 */
export async function * countedBody (body: AsyncIterable<Buffer>, rec: { bytesIn: number }, max: number, onOver: () => void): AsyncGenerator<Buffer> {
  for await (const chunk of body) {
    rec.bytesIn += chunk.length
    if (max > 0 && rec.bytesIn > max) {
      onOver()
      throw new Error('the request body is larger than the route accepts')
    }
    yield chunk
  }
}

/** The JSON bodies of the proxy's own answers. */
export const ANSWERS = {
  tooLarge: { error: 'too_large', message: 'the request body is larger than this route accepts' },
  noRoute: { error: 'no_route', message: 'no route matches this host and path' },
  requestTimeout: { error: 'request_timeout', message: 'the request body stalled' },
  rateLimited: { error: 'rate_limited', message: 'too many requests from this client address' },
  forbidden: { error: 'forbidden', message: 'this client address may not use this route' },
  noHealthy: { error: 'no_healthy_upstream', message: 'no upstream target of this route is healthy' },
  gatewayTimeout: { error: 'gateway_timeout', message: 'the upstream did not answer in time' },
  badGateway: { error: 'bad_gateway', message: 'the upstream could not be reached or failed' }
} as const

/** How the proxy answers an upstream failure that came before any answer. */
export interface FailureAnswer {
  outcome: Outcome
  status: number
  body: Readonly<Record<string, string>>
  code: string | undefined
  /** The target it failed on, when one was tried. */
  target: string | undefined
  /** The warning to log (none for "no healthy target", which the pool's gauges show). */
  logMessage: string | undefined
}

/** 503 when no target is eligible, 504 for undici's timeouts, 502 for the rest. */
export function failureAnswer (err: unknown): FailureAnswer {
  const code = errorCode(err)
  if (code === 'EDGE_ERR_NO_HEALTHY_UPSTREAM') return { outcome: 'no_healthy_upstream', status: 503, body: ANSWERS.noHealthy, code, target: undefined, logMessage: undefined }
  const target = failedTarget(err)
  return TIMEOUT_CODES.has(code ?? '')
    ? { outcome: 'gateway_timeout', status: 504, body: ANSWERS.gatewayTimeout, code, target, logMessage: 'upstream timed out' }
    : { outcome: 'bad_gateway', status: 502, body: ANSWERS.badGateway, code, target, logMessage: 'upstream request failed' }
}
