// A route's pool of targets: picks one (balancer.ts), sends the request on that origin's
// connection pool (upstream-pools.ts), feeds the outcome to outlier ejection (health.ts), retries
// on another target within the budget (retry.ts), and keeps per-target metrics whose labels are
// the route and the target URL as configured (bounded by the config).

import type { IncomingHttpHeaders } from 'node:http'
import type { Logger } from 'pino'
import { Counter, Gauge, type Registry } from 'prom-client'
import type { Dispatcher } from 'undici'
import type { RouteConfig } from '../config/types.js'
import { EdgeError } from '../errors.js'
import { Balancer, hashKey, Target } from './balancer.js'
import { clientAddress } from './client-address.js'
import { H2Upstreams, type Requester } from './h2-upstream.js'
import { fixedUpstreamHost } from './forward-headers.js'
import { HealthChecker, OutlierDetector } from './health.js'
import { replayable, RetryBudget, retriableError } from './retry.js'
import { UpstreamPools } from './upstream-pools.js'
import { DispatchRun, type Cancel, type UpstreamSink } from './route-dispatch.js'
import { fastCounter, fastHistogram, observe, type CounterCell, type FastCounter, type FastHistogram, type HistogramCell } from './request-metrics.js'

/** Every target of the pool is down or ejected: answered `503` at once. */
export class NoHealthyUpstreamError extends EdgeError {
  constructor (route: string) {
    super('EDGE_ERR_NO_HEALTHY_UPSTREAM', `no healthy upstream target for route ${route}`)
  }
}

const failedTargets = new WeakMap<object, string>()

/** The URL of the target a request failed on, for the log line of `err` (undefined when none was tried). */
export function failedTarget (err: unknown): string | undefined {
  return typeof err === 'object' && err !== null ? failedTargets.get(err) : undefined
}

/** What the pool needs to know of the client request. */
export interface RequestContext {
  method: string | undefined
  headers: IncomingHttpHeaders
  peer: string
  hasBody: boolean
}

export type { Cancel, UpstreamSink }

export interface UpstreamResult {
  response: Dispatcher.ResponseData
  target: Target
}

interface PoolMetrics {
  /** Per request: counted in plain numbers, handed to prom-client at scrape time (request-metrics.ts). */
  requests: FastCounter
  errors: Counter<string>
  duration: FastHistogram
  ejections: Counter<string>
  retries: Counter<string>
}

function metric<T> (registry: Registry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make()
}

function errorCode (err: unknown): string | undefined {
  return err instanceof Error && 'code' in err && typeof err.code === 'string' ? err.code : undefined
}

const TIMEOUTS = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT'])

/** The `route` label: host and path prefix, as configured. */
export function routeLabel (route: Pick<RouteConfig, 'host' | 'pathPrefix'>): string {
  return `${route.host}${route.pathPrefix}`
}

/** The targets of a route: `upstreams`, or its single `upstream` as a pool of one. */
export function routeTargets (route: RouteConfig): Array<{ url: string, weight: number }> {
  return route.upstreams ?? (route.upstream !== undefined ? [{ url: route.upstream, weight: 1 }] : [])
}

/** One route's pool. */
export class RoutePool {
  readonly label: string
  readonly targets: readonly Target[]
  /** True when active health checks run on the targets. */
  readonly checked: boolean
  readonly #route: RouteConfig
  readonly #balancer: Balancer
  readonly #outliers: OutlierDetector
  readonly #budget: RetryBudget
  readonly #checker: HealthChecker | undefined
  readonly #connections: UpstreamPools
  readonly #metrics: PoolMetrics
  readonly #isTrusted: (a: string) => boolean
  readonly #h2: H2Upstreams
  /** The per-request metric cells of each target, resolved once. */
  readonly #cells = new Map<Target, { requests: CounterCell, duration: HistogramCell }>()

  constructor (route: RouteConfig, opts: { connections: UpstreamPools, h2: H2Upstreams, log: Logger, metrics: PoolMetrics, isTrusted: (a: string) => boolean }) {
    this.#route = route
    this.label = routeLabel(route)
    this.targets = routeTargets(route).map(t => new Target(t))
    this.#balancer = new Balancer(this.targets, route.balance.policy)
    this.#connections = opts.connections
    this.#metrics = opts.metrics
    this.#isTrusted = opts.isTrusted
    this.#h2 = opts.h2
    this.#budget = new RetryBudget(route.retry)
    this.#outliers = new OutlierDetector(this.targets, route.outlier, (t, ms) => {
      opts.metrics.ejections.inc({ route: this.label, target: t.url })
      opts.log.warn({ route: this.label, target: t.url, ejectedMs: ms }, 'upstream target ejected')
    })
    this.checked = route.healthCheck !== undefined
    this.#checker = route.healthCheck === undefined
      ? undefined
      : new HealthChecker({ targets: this.targets, config: route.healthCheck, dispatcher: t => this.#dispatcher(t), log: opts.log.child({ route: this.label }), onChange: () => {}, host: fixedUpstreamHost(route.upstreamHost) })
  }

  #dispatcher (t: Target): Requester {
    // `upstreamProtocol` h2c / h2: HTTP/2 sessions to the target (h2-upstream.ts) instead of undici's HTTP/1.1 pool.
    if (this.#route.upstreamProtocol !== 'http1') return this.#h2.get(t.url, this.#route.connectTimeoutMs)
    return this.#connections.get({ upstream: t.url, connectTimeoutMs: this.#route.connectTimeoutMs })
  }

  /** The origin a connection-level request (a WebSocket upgrade) goes to: an eligible target by the route's balancing, or undefined. */
  pickUrl (ctx: Pick<RequestContext, 'headers' | 'peer'>): string | undefined {
    const key = hashKey(this.#route.balance, ctx.headers, () => clientAddress(ctx.headers, ctx.peer, this.#isTrusted))
    const now = Date.now()
    return this.#balancer.pick(t => t.eligible(now), key)?.url
  }

  #cellsOf (t: Target): { requests: CounterCell, duration: HistogramCell } {
    let cells = this.#cells.get(t)
    if (cells === undefined) {
      const labels = { route: this.label, target: t.url }
      this.#cells.set(t, cells = { requests: this.#metrics.requests.cell(labels), duration: this.#metrics.duration.cell(labels) })
    }
    return cells
  }

  /** Sends `options` to a target, retrying on another one when allowed; rejects with NoHealthyUpstreamError when none is eligible. */
  async request (options: Dispatcher.RequestOptions, ctx: RequestContext): Promise<UpstreamResult> {
    this.#budget.request()
    const key = hashKey(this.#route.balance, ctx.headers, () => clientAddress(ctx.headers, ctx.peer, this.#isTrusted))
    const tried = new Set<Target>()
    const now = Date.now()
    const pick = (): Target | undefined => this.#balancer.pick(t => !tried.has(t) && t.eligible(now), key)
    let target = pick()
    if (target === undefined) throw new NoHealthyUpstreamError(this.label)
    const canRetry = replayable(ctx.method, ctx.hasBody)
    let retriesLeft = canRetry ? this.#route.retry.attempts : 0
    for (;;) {
      tried.add(target)
      const cells = this.#cellsOf(target)
      cells.requests.n++
      const started = performance.now()
      target.outstanding++
      let response: Dispatcher.ResponseData
      try {
        response = await this.#dispatcher(target).request(options)
      } catch (err) {
        target.outstanding--
        const code = errorCode(err)
        const aborted = options.signal !== undefined && options.signal !== null && (options.signal as AbortSignal).aborted
        if (aborted) throw err
        this.#metrics.errors.inc({ route: this.label, target: target.url, kind: TIMEOUTS.has(code ?? '') ? 'timeout' : 'connect' })
        this.#outliers.failure(target)
        const next = retriesLeft > 0 && retriableError(code) ? this.#nextTarget(pick) : undefined
        if (next === undefined) {
          if (typeof err === 'object' && err !== null) failedTargets.set(err, target.url)
          throw err
        }
        retriesLeft--
        target = next
        continue
      }
      const current = target
      response.body.once('close', () => {
        current.outstanding--
        observe(cells.duration, (performance.now() - started) / 1000)
      })
      if (response.statusCode >= 500) {
        this.#metrics.errors.inc({ route: this.label, target: target.url, kind: 'status_5xx' })
        this.#outliers.failure(current)
      } else {
        this.#outliers.success(current)
      }
      const next = retriesLeft > 0 && this.#route.retry.retryOn.includes(response.statusCode) ? this.#nextTarget(pick) : undefined
      if (next === undefined) return { response, target: current }
      // Read and drop the refused answer so its connection stays reusable (destroying the body would
      // emit an abort error with no one listening).
      response.body.dump().catch(() => {})
      retriesLeft--
      target = next
    }
  }

  /** True when `dispatch` serves this pool (HTTP/1.1 targets: undici's pools). */
  get dispatchable (): boolean {
    return this.#route.upstreamProtocol === 'http1'
  }

  /**
   * What `request` does — balancing, per-target metrics, outlier ejection, retries within the
   * budget — with undici's `dispatch` handler API: the answer's head and body go straight to `sink`
   * as they arrive, with no body stream, promise or parsed-header object in between (the direct
   * HTTP/2 path, h2-direct.ts). Only for `dispatchable` pools. Returns the cancel switch; errors
   * (NoHealthyUpstreamError included) reach `sink.onUpstreamError`, never a throw.
   */
  dispatch (options: Dispatcher.DispatchOptions, ctx: RequestContext, sink: UpstreamSink): Cancel {
    this.#budget.request()
    const key = hashKey(this.#route.balance, ctx.headers, () => clientAddress(ctx.headers, ctx.peer, this.#isTrusted))
    const run = new DispatchRun(this, options, sink, key, replayable(ctx.method, ctx.hasBody) ? this.#route.retry.attempts : 0)
    const first = run.pick()
    if (first === undefined) sink.onUpstreamError(new NoHealthyUpstreamError(this.label))
    else run.send(first)
    return run
  }

  /** @internal The next target of a DispatchRun (route-dispatch.ts), and the steps below. */
  _pick (tried: ReadonlySet<Target>, key: ReturnType<typeof hashKey>, now: number): Target | undefined {
    return this.#balancer.pick(t => !tried.has(t) && t.eligible(now), key)
  }

  /** @internal */
  _start (target: Target, options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): { requests: CounterCell, duration: HistogramCell } {
    const cells = this.#cellsOf(target)
    cells.requests.n++
    target.outstanding++
    this.#connections.get({ upstream: target.url, connectTimeoutMs: this.#route.connectTimeoutMs }).dispatch(options, handler)
    return cells
  }

  /** @internal An attempt failed before its answer: counted, ejection fed. */
  _failed (target: Target, code: string | undefined): void {
    this.#metrics.errors.inc({ route: this.label, target: target.url, kind: TIMEOUTS.has(code ?? '') ? 'timeout' : 'connect' })
    this.#outliers.failure(target)
  }

  /** @internal The request failed on `target` for good: `failedTarget(err)` names it. */
  _gaveUp (target: Target, err: Error): void {
    failedTargets.set(err, target.url)
  }

  /** @internal An attempt's answer came: a 5xx counts against its target. True when it is to be retried (a `retryOn` status). */
  _answered (target: Target, status: number, retriesLeft: number): boolean {
    if (status >= 500) {
      this.#metrics.errors.inc({ route: this.label, target: target.url, kind: 'status_5xx' })
      this.#outliers.failure(target)
    } else {
      this.#outliers.success(target)
    }
    return retriesLeft > 0 && this.#route.retry.retryOn.includes(status)
  }

  /** @internal */
  _nextTarget (pick: () => Target | undefined): Target | undefined {
    return this.#nextTarget(pick)
  }

  /** Another eligible target, if one exists and the budget allows a retry (counted either way). */
  #nextTarget (pick: () => Target | undefined): Target | undefined {
    const next = pick()
    if (next === undefined) {
      this.#metrics.retries.inc({ route: this.label, result: 'no_target' })
      return undefined
    }
    if (!this.#budget.tryRetry()) {
      this.#metrics.retries.inc({ route: this.label, result: 'budget_exhausted' })
      return undefined
    }
    this.#metrics.retries.inc({ route: this.label, result: 'sent' })
    return next
  }

  /** The keys (UpstreamPools.keyOf) of the connection pools this pool's targets use. */
  connectionKeys (): string[] {
    return this.targets.map(t => UpstreamPools.keyOf({ upstream: t.url, connectTimeoutMs: this.#route.connectTimeoutMs }))
  }

  stop (): void {
    this.#checker?.stop()
  }
}

/** The RoutePools whose targets the `edge_upstream_healthy` gauge of a registry shows: the newest (a reload replaces them). */
const shown = new WeakMap<Registry, { pools: RoutePools }>()

/**
 * Copies what is known of a target's health (active checks, ejection) from the pools before a
 * reload: the same URL on the same route first, else on any route. A target kept across a reload
 * must not get traffic again just because its pool was rebuilt, nor start over as unknown.
 */
function carryHealth (pools: Iterable<RoutePool>, previous: RoutePools): void {
  const byUrl = new Map<string, Target>()
  const byRoute = new Map<string, Target>()
  for (const pool of previous.pools()) {
    for (const t of pool.targets) {
      byRoute.set(`${pool.label} ${t.url}`, t)
      if (!byUrl.has(t.url)) byUrl.set(t.url, t)
    }
  }
  for (const pool of pools) {
    for (const t of pool.targets) {
      const old = byRoute.get(`${pool.label} ${t.url}`) ?? byUrl.get(t.url)
      if (old === undefined) continue
      // Without active checks nothing would ever mark it healthy again.
      if (pool.checked) t.healthy = old.healthy
      t.ejectedUntil = old.ejectedUntil
      t.ejections = old.ejections
      t.consecutiveFailures = old.consecutiveFailures
    }
  }
}

/** The pools of every route of a worker, created up front so health checks run before traffic. */
export class RoutePools {
  readonly #pools = new Map<RouteConfig, RoutePool>()
  readonly #h2: H2Upstreams
  /** `previous`: the pools a reload replaces; targets kept (same URL) keep their health state. */
  constructor (routes: readonly RouteConfig[], opts: { connections: UpstreamPools, log: Logger, registry: Registry, isTrusted: (a: string) => boolean, previous?: RoutePools }) {
    const { registry } = opts
    const labelNames = ['route', 'target']
    const metrics: PoolMetrics = {
      requests: fastCounter(registry, { name: 'edge_upstream_requests_total', help: 'Requests sent to each upstream target (retries included)', labelNames }),
      errors: metric(registry, 'edge_upstream_errors_total', () => new Counter({ name: 'edge_upstream_errors_total', help: 'Failed upstream requests by target and kind (connect, timeout, status_5xx)', labelNames: [...labelNames, 'kind'], registers: [registry] })),
      duration: fastHistogram(registry, { name: 'edge_upstream_duration_seconds', help: 'Upstream request time per target, from sending to the end of the response body', buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30] }),
      ejections: metric(registry, 'edge_upstream_ejections_total', () => new Counter({ name: 'edge_upstream_ejections_total', help: 'Passive outlier ejections per target', labelNames, registers: [registry] })),
      retries: metric(registry, 'edge_upstream_retries_total', () => new Counter({ name: 'edge_upstream_retries_total', help: 'Retry decisions per route (sent, budget_exhausted, no_target)', labelNames: ['route', 'result'], registers: [registry] }))
    }
    this.#h2 = new H2Upstreams(opts.log)
    const made = routes.map(route => new RoutePool(route, { ...opts, h2: this.#h2, metrics }))
    // Before any health check's first answer can land (they start in the constructor, answers come later).
    if (opts.previous !== undefined) carryHealth(made, opts.previous)
    routes.forEach((route, i) => { const pool = made[i]; if (pool !== undefined) this.#pools.set(route, pool) })
    let view = shown.get(registry)
    if (view === undefined) shown.set(registry, view = { pools: this })
    view.pools = this
    if (registry.getSingleMetric('edge_upstream_healthy') === undefined) {
      const current = view
      new Gauge({
        name: 'edge_upstream_healthy',
        help: '1 when a target may get traffic (passes its health checks and is not ejected), else 0; the cluster shows the lowest of the workers',
        labelNames,
        aggregator: 'min',
        registers: [registry],
        collect () {
          const now = Date.now()
          // Targets a reload removed disappear from the gauge.
          this.reset()
          for (const pool of current.pools.pools()) for (const t of pool.targets) this.set({ route: pool.label, target: t.url }, t.eligible(now) ? 1 : 0)
        }
      })
    }
  }

  /** The pool of `route` (one of the routes given at construction). */
  get (route: RouteConfig): RoutePool {
    const pool = this.#pools.get(route)
    if (pool === undefined) throw new Error('unknown route')
    return pool
  }

  /** Every route's pool. */
  pools (): IterableIterator<RoutePool> {
    return this.#pools.values()
  }

  /** The keys of every connection pool these routes use (UpstreamPools.closeUnused keeps them). */
  connectionKeys (): Set<string> {
    const keys = new Set<string>()
    for (const pool of this.#pools.values()) for (const k of pool.connectionKeys()) keys.add(k)
    return keys
  }

  /** Stops every health check (a reload: the requests in flight still use these pools). */
  stop (): void {
    for (const pool of this.#pools.values()) pool.stop()
  }

  /** Stops every health check and closes the HTTP/2 sessions (their streams in flight finish). */
  close (): void {
    this.stop()
    this.#h2.close()
  }
}
