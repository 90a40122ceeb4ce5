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
          const res = await opts.dispatcher(target).request({
            method: 'GET', path: config.path, signal: abort.signal, headersTimeout: config.timeoutMs, bodyTimeout: config.timeoutMs, headers: { 'user-agent': 'keyedge-health-check' }
          })
          await res.body.dump().catch(() => {})
          ok = config.expectedStatuses.includes(res.statusCode)
          reason = `status ${res.statusCode}`
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
