// The resumption ratio as a metric: each worker counts full and resumed handshakes over a sliding
// window; the primary sums the workers' windows and divides, so the cluster ratio weighs every handshake.
import { Gauge, type Registry } from 'prom-client'

/** Window of the ratio, and how finely it slides (12 buckets of 5 s). */
export const RESUMPTION_WINDOW_SECONDS = 60
const BUCKETS = 12

export const WINDOW_METRIC = 'edge_tls_resumption_window_handshakes'
export const RATIO_METRIC = 'edge_tls_resumption_ratio'

/** Full and resumed handshake counts over the last `windowSeconds` (to one bucket's precision). */
export class HandshakeWindow {
  readonly #bucketMs: number
  readonly #resumed = new Array<number>(BUCKETS).fill(0)
  readonly #full = new Array<number>(BUCKETS).fill(0)
  #head: number

  constructor (windowSeconds = RESUMPTION_WINDOW_SECONDS, nowMs = Date.now()) {
    this.#bucketMs = windowSeconds * 1000 / BUCKETS
    this.#head = Math.floor(nowMs / this.#bucketMs)
  }

  #advance (nowMs: number): number {
    const b = Math.floor(nowMs / this.#bucketMs)
    // Buckets the clock moved past are emptied (all of them after a long quiet spell).
    for (let i = this.#head + 1; i <= Math.min(b, this.#head + BUCKETS); i++) {
      this.#resumed[i % BUCKETS] = 0
      this.#full[i % BUCKETS] = 0
    }
    this.#head = Math.max(this.#head, b)
    return this.#head % BUCKETS
  }

  record (resumed: boolean, nowMs = Date.now()): void {
    const i = this.#advance(nowMs)
    const counts = resumed ? this.#resumed : this.#full
    counts[i] = (counts[i] ?? 0) + 1 // every bucket starts at 0; i is the head bucket, always in range
  }

  counts (nowMs = Date.now()): { resumed: number, full: number } {
    this.#advance(nowMs)
    const sum = (a: number[]): number => a.reduce((x, y) => x + y, 0)
    return { resumed: sum(this.#resumed), full: sum(this.#full) }
  }
}

/** resumed / all, or NaN when there was no handshake (no ratio, rather than a misleading 0). */
export function resumptionRatio (c: { resumed: number, full: number }): number {
  const all = c.resumed + c.full
  return all === 0 ? NaN : c.resumed / all
}

const windows = new WeakMap<Registry, HandshakeWindow>()

/**
 * The worker side: a window fed by `record`, exported as `edge_tls_resumption_window_handshakes{resumed}`
 * (summed across workers by the primary's aggregation). One window per registry.
 */
export function handshakeWindow (registry: Registry): HandshakeWindow {
  let w = windows.get(registry)
  if (w !== undefined) return w
  const win = new HandshakeWindow()
  w = win
  windows.set(registry, win)
  const gauge = new Gauge({
    name: WINDOW_METRIC,
    help: `TLS handshakes completed in the last ${RESUMPTION_WINDOW_SECONDS} s, by whether a session was resumed`,
    labelNames: ['resumed'],
    registers: [registry],
    aggregator: 'sum',
    collect () {
      const c = win.counts()
      this.set({ resumed: 'true' }, c.resumed)
      this.set({ resumed: 'false' }, c.full)
    }
  })
  gauge.set({ resumed: 'true' }, 0)
  return w
}

/** The cluster ratio from the workers' aggregated exposition text (their summed windows). */
export function ratioFromExposition (text: string): number {
  const read = (resumed: string): number => {
    const m = new RegExp(`^${WINDOW_METRIC}\\{resumed="${resumed}"\\} (\\S+)$`, 'm').exec(text)
    return m === null ? 0 : Number(m[1])
  }
  return resumptionRatio({ resumed: read('true'), full: read('false') })
}

/** The primary side: `edge_tls_resumption_ratio` on `registry`, to be set from each scrape's text. */
export function ratioGauge (registry: Registry): Gauge {
  return new Gauge({ name: RATIO_METRIC, help: `Share of TLS handshakes that resumed a session, over the last ${RESUMPTION_WINDOW_SECONDS} s, all workers`, registers: [registry] })
}
