// Per-request metrics counted in plain numbers. prom-client hashes a label object on every inc()
// and observe() (~5 µs per proxied request in a worker's cpu-prof, for the four per-request
// series): here each label set is a cell resolved once (by the caller, or from a small map by one
// label value), the hot path adds to its numbers, and prom-client sees the totals only when
// /metrics is scraped. A counter is a real prom-client Counter whose `collect()` adds what was
// counted since the last scrape; a histogram is a metric object of its own (prom-client has no
// way to add many observations at once) that gives the same values, labels and text as a
// prom-client Histogram, so the cluster's aggregation and every reader see no difference.

import { Counter, type MetricValueWithName, type Registry } from 'prom-client'

/** A counter's value for one label set, added to by the hot path. */
export interface CounterCell { n: number }

/** A histogram's observations for one label set, added to by the hot path. */
export interface HistogramCell {
  /** Observations per bucket (not cumulative); the last slot is +Inf. */
  readonly counts: number[]
  sum: number
  count: number
  /** The bucket upper bounds (shared by every cell of the histogram). */
  readonly bounds: readonly number[]
}

/** Adds one observation of `value` to `cell`. */
export function observe (cell: HistogramCell, value: number): void {
  const bounds = cell.bounds
  let i = 0
  while (i < bounds.length && value > (bounds[i] as number)) i++
  ;(cell.counts[i] as number)++
  cell.sum += value
  cell.count++
}

function labelKey (labels: Record<string, string>): string {
  return JSON.stringify(labels)
}

/** A prom-client Counter fed from cells at scrape time. */
export class FastCounter {
  readonly metric: Counter<string>
  readonly #cells = new Map<string, { labels: Record<string, string>, cell: CounterCell }>()

  constructor (registry: Registry, cfg: { name: string, help: string, labelNames: string[] }) {
    const cells = this.#cells
    this.metric = new Counter({
      ...cfg,
      registers: [registry],
      collect () {
        for (const c of cells.values()) {
          if (c.cell.n === 0) continue
          this.inc(c.labels, c.cell.n)
          c.cell.n = 0
        }
      }
    })
  }

  /** The cell of `labels` (the same object every time: keep it, and add to its `n`). */
  cell (labels: Record<string, string>): CounterCell {
    const key = labelKey(labels)
    let c = this.#cells.get(key)
    if (c === undefined) this.#cells.set(key, c = { labels: { ...labels }, cell: { n: 0 } })
    return c.cell
  }

  /** Adds `n` (default 1) to `labels`' value: for rare events, where a label object per call does not matter. */
  inc (labels: Record<string, string>, n = 1): void {
    this.cell(labels).n += n
  }
}

/**
 * A histogram with prom-client's output (`_bucket{…,le}` cumulative, `_sum`, `_count`, summed
 * across workers), whose observations go into cells.
 */
export class FastHistogram {
  readonly name: string
  readonly help: string
  readonly type = 'histogram' as const
  readonly aggregator = 'sum' as const
  readonly #bounds: readonly number[]
  readonly #cells = new Map<string, { labels: Record<string, string>, cell: HistogramCell }>()

  constructor (registry: Registry, cfg: { name: string, help: string, buckets: number[] }) {
    this.name = cfg.name
    this.help = cfg.help
    this.#bounds = [...cfg.buckets].sort((a, b) => a - b)
    registry.registerMetric(this as unknown as Parameters<Registry['registerMetric']>[0])
  }

  /** The cell of `labels` (the same object every time: keep it, and pass it to observe()). */
  cell (labels: Record<string, string>): HistogramCell {
    const key = labelKey(labels)
    let c = this.#cells.get(key)
    if (c === undefined) this.#cells.set(key, c = { labels: { ...labels }, cell: { counts: new Array<number>(this.#bounds.length + 1).fill(0), sum: 0, count: 0, bounds: this.#bounds } })
    return c.cell
  }

  /** Observes `value` for `labels`: for rare events. */
  observe (labels: Record<string, string>, value: number): void {
    observe(this.cell(labels), value)
  }

  /** Every value, as prom-client's Histogram gives them (for the registry and the cluster's aggregation). */
  get (): Promise<{ name: string, help: string, type: 'histogram', values: Array<MetricValueWithName<string>>, aggregator: 'sum' }> {
    const values: Array<MetricValueWithName<string>> = []
    for (const { labels, cell } of this.#cells.values()) {
      // As prom-client: a label set appears once observed (a reset forgets it).
      if (cell.count === 0) continue
      let acc = 0
      for (let i = 0; i < this.#bounds.length; i++) {
        acc += cell.counts[i] ?? 0
        values.push({ value: acc, labels: { le: this.#bounds[i], ...labels }, metricName: `${this.name}_bucket` })
      }
      values.push({ value: cell.count, labels: { le: '+Inf', ...labels }, metricName: `${this.name}_bucket` })
      values.push({ value: cell.sum, labels: { ...labels }, metricName: `${this.name}_sum` })
      values.push({ value: cell.count, labels: { ...labels }, metricName: `${this.name}_count` })
    }
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator })
  }

  /** Forgets every observation (Registry.resetMetrics). */
  reset (): void {
    for (const { cell } of this.#cells.values()) {
      cell.counts.fill(0)
      cell.sum = 0
      cell.count = 0
    }
  }
}

const made = new WeakMap<Registry, Map<string, FastCounter | FastHistogram>>()

function shared<T extends FastCounter | FastHistogram> (registry: Registry, name: string, make: () => T): T {
  let byName = made.get(registry)
  if (byName === undefined) made.set(registry, byName = new Map<string, FastCounter | FastHistogram>())
  let m = byName.get(name)
  if (m === undefined) byName.set(name, m = make())
  return m as T
}

/** The FastCounter `name` of `registry`, created on first use (every caller shares it). */
export function fastCounter (registry: Registry, cfg: { name: string, help: string, labelNames: string[] }): FastCounter {
  return shared(registry, cfg.name, () => new FastCounter(registry, cfg))
}

/** The FastHistogram `name` of `registry`, created on first use (every caller shares it). */
export function fastHistogram (registry: Registry, cfg: { name: string, help: string, buckets: number[] }): FastHistogram {
  return shared(registry, cfg.name, () => new FastHistogram(registry, cfg))
}
