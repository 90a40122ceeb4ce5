// What `keyedge status` reads from Prometheus text: samples by name and labels, sums over label
// filters, and quantiles from a histogram's cumulative buckets (interpolated as Prometheus does).

/** One sample of the text exposition format. */
export interface Sample { name: string, labels: Record<string, string>, value: number }

const LINE_RE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/
const LABEL_RE = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g

/** Parses Prometheus text (comments skipped, malformed lines ignored). */
export function parseMetrics (text: string): Sample[] {
  const out: Sample[] = []
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const m = LINE_RE.exec(line)
    if (m === null) continue
    const labels: Record<string, string> = {}
    for (const l of (m[2] ?? '').matchAll(LABEL_RE)) labels[l[1] as string] = (l[2] as string).replace(/\\(.)/g, (_s, c: string) => c === 'n' ? '\n' : c)
    const value = m[3] === '+Inf' ? Infinity : m[3] === '-Inf' ? -Infinity : Number(m[3])
    if (!Number.isNaN(value)) out.push({ name: m[1] as string, labels, value })
  }
  return out
}

/** The sum of `name`'s samples whose labels pass `keep` (0 when none). */
export function sumOf (samples: readonly Sample[], name: string, keep: (labels: Record<string, string>) => boolean = () => true): number {
  let s = 0
  for (const x of samples) if (x.name === name && keep(x.labels)) s += x.value
  return s
}

/** Whether any sample is named `name`. */
export function has (samples: readonly Sample[], name: string): boolean {
  return samples.some(x => x.name === name)
}

/**
 * The `q` quantile (0–1) of histogram `name` (its `_bucket` series, summed over the label sets
 * `keep` passes), linearly interpolated inside the bucket that holds it; null with no observation.
 * A quantile in the +Inf bucket is reported as the highest finite bound (as histogram_quantile does).
 */
export function histogramQuantile (samples: readonly Sample[], name: string, q: number, keep: (labels: Record<string, string>) => boolean = () => true): number | null {
  const byLe = new Map<number, number>()
  for (const x of samples) {
    if (x.name !== `${name}_bucket` || !keep(x.labels) || x.labels.le === undefined) continue
    const le = x.labels.le === '+Inf' ? Infinity : Number(x.labels.le)
    byLe.set(le, (byLe.get(le) ?? 0) + x.value)
  }
  const buckets = [...byLe.entries()].sort((a, b) => a[0] - b[0])
  const total = buckets.at(-1)?.[1] ?? 0
  if (total === 0) return null
  const rank = q * total
  let prevLe = 0
  let prevCount = 0
  for (const [le, count] of buckets) {
    if (count >= rank) {
      if (le === Infinity) return prevLe
      if (count === prevCount) return le
      return prevLe + (le - prevLe) * (rank - prevCount) / (count - prevCount)
    }
    prevLe = le
    prevCount = count
  }
  return prevLe
}
