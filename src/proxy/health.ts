// Whether a target may get traffic: active health checks (a GET every interval, thresholds both
// ways) and passive outlier ejection (consecutive 5xx or connection failures → ejected for a
// backoff that doubles, never more than a configured share of the pool at once).

import type { Logger } from 'pino'
import type { Requester } from './h2-upstream.js'
import type { HealthCheckConfig, OutlierConfig } from '../config/types.js'
import type { Target } from './balancer.js'

/** Passive ejection of one pool's targets. */
export class OutlierDetector {
  readonly #config: OutlierConfig
  readonly #targets: readonly Target[]
  readonly #onEject: (t: Target, ms: number) => void
  constructor (targets: readonly Target[], config: OutlierConfig, onEject: (t: Target, ms: number) => void) {
    this.#targets = targets
    this.#config = config
    this.#onEject = onEject
  }

  /** A response below 500 (or a passed request): the failure streak ends. */
  success (t: Target, now = Date.now()): void {
    t.consecutiveFailures = 0
    // Well clear of its last ejection, a target starts again from the base backoff.
    if (t.ejections > 0 && now - t.ejectedUntil > this.#config.maxEjectionMs) t.ejections = 0
  }

  /** A 5xx or a failed connection; ejects the target when its streak reaches the threshold and the share allows. */
  failure (t: Target, now = Date.now()): void {
    t.consecutiveFailures++
    const threshold = this.#config.consecutiveFailures
    if (threshold === 0 || t.consecutiveFailures < threshold || t.ejectedUntil > now) return
    const ejected = this.#targets.filter(o => o.ejectedUntil > now).length
    const allowed = Math.min(Math.floor(this.#targets.length * this.#config.maxEjectedPercent / 100), this.#targets.length - 1)
    if (ejected >= allowed) return
    const ms = Math.min(this.#config.baseEjectionMs * 2 ** t.ejections, this.#config.maxEjectionMs)
    t.ejections++
    t.consecutiveFailures = 0
    t.ejectedUntil = now + ms
    this.#onEject(t, ms)
  }
}

interface Verdict { ok: boolean, reason: string }

/** A check's Host: the route's fixed `upstreamHost`; none (the target's own, set by the connection) otherwise. */
const hostHeader = (host: string | undefined): Record<string, string> => host === undefined ? {} : { host }

/** A `GET` of the check path: passes on one of the expected statuses. */
async function httpCheck (requester: Requester, config: HealthCheckConfig, signal: AbortSignal, host: string | undefined): Promise<Verdict> {
  const res = await requester.request({
    method: 'GET', path: config.path, signal, headersTimeout: config.timeoutMs, bodyTimeout: config.timeoutMs, headers: { 'user-agent': 'keyedge-health-check', ...hostHeader(host) }
  })
  await res.body.dump().catch(() => {})
  return { ok: config.expectedStatuses.includes(res.statusCode), reason: `status ${res.statusCode}` }
}

/** The gRPC health checking protocol's method (grpc/grpc doc/health-checking.md). */
export const GRPC_HEALTH_CHECK_PATH = '/grpc.health.v1.Health/Check'
/** HealthCheckResponse.ServingStatus values by number. */
const SERVING_STATUS = ['UNKNOWN', 'SERVING', 'NOT_SERVING', 'SERVICE_UNKNOWN']

/** One length-prefixed gRPC message holding HealthCheckRequest { service } (protobuf field 1, a string). */
export function grpcHealthRequest (service: string): Buffer {
  const name = Buffer.from(service, 'utf8')
  const field = name.length === 0 ? Buffer.alloc(0) : Buffer.concat([Buffer.of(0x0a), varint(name.length), name])
  const frame = Buffer.alloc(5)
  frame.writeUInt32BE(field.length, 1)
  return Buffer.concat([frame, field])
}

function varint (n: number): Buffer {
  const out: number[] = []
  while (n > 0x7f) { out.push((n & 0x7f) | 0x80); n >>>= 7 }
  out.push(n)
  return Buffer.from(out)
}

/**
 * The `status` (field 1, a varint) of the HealthCheckResponse in a gRPC response body (one
 * uncompressed length-prefixed message); 0 (UNKNOWN) when absent, -1 when the body is not one.
 */
export function grpcServingStatus (body: Buffer): number {
  if (body.length < 5 || body[0] !== 0 || body.readUInt32BE(1) !== body.length - 5) return -1
  let status = 0
  for (let i = 5; i < body.length;) {
    const key = body[i++] ?? 0
    if (key === 0x08) { // field 1, varint
      let v = 0
      for (let shift = 0; i < body.length && shift < 35; shift += 7) {
        const b = body[i++] ?? 0
        v |= (b & 0x7f) << shift
        if ((b & 0x80) === 0) break
      }
      status = v
    } else if ((key & 7) === 2) { // a length-delimited field of a newer version: skipped
      const len = body[i++] ?? 0
      if (len > 0x7f) return status
      i += len
    } else {
      return status // a field this check does not know how to skip: what was read stands
    }
  }
  return status
}

/**
 * A `grpc.health.v1.Health/Check` call for the configured service: passes when the target answers
 * grpc-status 0 with status SERVING, as Envoy's gRPC health checker does.
 */
async function grpcCheck (requester: Requester, config: HealthCheckConfig, signal: AbortSignal, host: string | undefined): Promise<Verdict> {
  const res = await requester.request({
    method: 'POST',
    path: GRPC_HEALTH_CHECK_PATH,
    signal,
    headersTimeout: config.timeoutMs,
    bodyTimeout: config.timeoutMs,
    headers: { 'content-type': 'application/grpc', te: 'trailers', 'user-agent': 'keyedge-health-check', ...hostHeader(host) },
    body: grpcHealthRequest(config.grpcService ?? '')
  })
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of res.body as AsyncIterable<Buffer>) {
    size += chunk.length
    // A HealthCheckResponse is a few bytes; a target sending more is not answering this call.
    if (size > 4096) { res.body.destroy(); return { ok: false, reason: 'response too large' } }
    chunks.push(chunk)
  }
  if (res.statusCode !== 200) return { ok: false, reason: `status ${res.statusCode}` }
  // A trailers-only answer (an immediate error) carries grpc-status in the headers.
  const grpcStatus = res.trailers['grpc-status'] ?? res.headers['grpc-status']
  if (grpcStatus !== '0') return { ok: false, reason: `grpc-status ${String(grpcStatus ?? 'missing')}` }
  const status = grpcServingStatus(Buffer.concat(chunks))
  return { ok: status === 1, reason: status === -1 ? 'not a HealthCheckResponse' : SERVING_STATUS[status] ?? `serving status ${status}` }
}

/** Active checks of one pool's targets; `stop()` ends them. Each worker checks on its own. */
export class HealthChecker {
  readonly #timers: NodeJS.Timeout[] = []
  readonly #inFlight = new Set<AbortController>()
  #stopped = false

  constructor (opts: {
    targets: readonly Target[]
    config: HealthCheckConfig
    /** The connection pool of a target's origin. */
    dispatcher: (t: Target) => Requester
    log: Logger
    onChange: (t: Target, healthy: boolean) => void
    /** The Host every check carries (a route's fixed `upstreamHost`); absent: each target's own. */
    host?: string
  }) {
    const { config } = opts
    for (const target of opts.targets) {
      let passes = 0
      let fails = 0
      let running = false
      const check = async (): Promise<void> => {
        if (running || this.#stopped) return
        running = true
        const abort = new AbortController()
        this.#inFlight.add(abort)
        const timer = setTimeout(() => abort.abort(), config.timeoutMs)
        let ok = false
        let reason: string
        try {
          ({ ok, reason } = config.protocol === 'grpc'
            ? await grpcCheck(opts.dispatcher(target), config, abort.signal, opts.host)
            : await httpCheck(opts.dispatcher(target), config, abort.signal, opts.host))
        } catch (err) {
          reason = abort.signal.aborted ? 'timeout' : err instanceof Error && 'code' in err && typeof err.code === 'string' ? err.code : 'error'
        } finally {
          clearTimeout(timer)
          this.#inFlight.delete(abort)
          running = false
        }
        if (this.#stopped) return
        if (ok) {
          passes++
          fails = 0
          if (!target.healthy && passes >= config.healthyThreshold) {
            target.healthy = true
            opts.log.info({ target: target.url }, 'upstream target healthy')
            opts.onChange(target, true)
          }
        } else {
          fails++
          passes = 0
          if (target.healthy && fails >= config.unhealthyThreshold) {
            target.healthy = false
            opts.log.warn({ target: target.url, reason }, 'upstream target failed its health checks')
            opts.onChange(target, false)
          }
        }
      }
      void check()
      const timer = setInterval(() => { void check() }, config.intervalMs)
      timer.unref()
      this.#timers.push(timer)
    }
  }

  stop (): void {
    this.#stopped = true
    for (const t of this.#timers) clearInterval(t)
    for (const a of this.#inFlight) a.abort()
  }
}
