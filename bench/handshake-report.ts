// Turns the handshake benchmark's runs into per-case medians, a markdown table and the JSON and
// markdown result files.
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

export type VariantId = 'keyd' | 'in-process' | 'keyd-rr'

export interface Run {
  round: number
  group: string
  variant: VariantId
  handshakes: number
  warmupHandshakes: number
  errors: number
  reused: number
  elapsedMs: number
  rate: number
  proxyMicros: number
  /** The part of proxyMicros spent by the cluster primary (round-robin: it accepts every connection). */
  primaryMicros: number
  keydMicros: number | null
  clientMicros: number
  signatures: number | null
  cipher: string | undefined
}

export interface CaseSummary {
  group: string
  variant: VariantId
  rounds: number
  rate: number
  proxyUs: number
  primaryUs: number
  keydUs: number | null
  totalUs: number
  totalUsMin: number
  totalUsMax: number
  clientUs: number
  sigsPerHandshake: number | null
  cpuVsInProcess: number | null
  rateVsInProcess: number | null
  handshakes: number
  errors: number
  reused: number
  cipher: string | undefined
}

export const VARIANT_LABEL: Record<VariantId, string> = {
  keyd: 'A keyd (SCHED_NONE)',
  'in-process': 'B in-process (SCHED_NONE)',
  'keyd-rr': 'A keyd (round-robin)'
}

export function median (xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  const hi = s[m]
  if (hi === undefined) return NaN
  if (s.length % 2 === 1) return hi
  const lo = s[m - 1]
  if (lo === undefined) throw new Error('median: index out of range')
  return (lo + hi) / 2
}

const perHs = (r: Run, micros: number): number => micros / r.handshakes

/** One summary per (group, variant), medians over the rounds, ratios against the group's in-process case. */
export function summarize (runs: Run[]): CaseSummary[] {
  const keys = [...new Set(runs.map(r => `${r.group}\u0000${r.variant}`))]
  const out = keys.map((k): CaseSummary => {
    const [group, variant] = k.split('\u0000') as [string, VariantId]
    const rs = runs.filter(r => r.group === group && r.variant === variant && r.handshakes > 0)
    const totals = rs.map(r => perHs(r, r.proxyMicros + (r.keydMicros ?? 0)))
    const keydRuns = rs.filter(r => r.keydMicros !== null)
    const sigRuns = rs.filter(r => r.signatures !== null)
    return {
      group,
      variant,
      rounds: rs.length,
      rate: median(rs.map(r => r.rate)),
      proxyUs: median(rs.map(r => perHs(r, r.proxyMicros))),
      primaryUs: median(rs.map(r => perHs(r, r.primaryMicros))),
      keydUs: keydRuns.length === 0 ? null : median(keydRuns.map(r => perHs(r, r.keydMicros ?? 0))),
      totalUs: median(totals),
      totalUsMin: Math.min(...totals),
      totalUsMax: Math.max(...totals),
      clientUs: median(rs.map(r => perHs(r, r.clientMicros))),
      sigsPerHandshake: sigRuns.length === 0 ? null : sigRuns.reduce((a, r) => a + (r.signatures ?? 0), 0) / sigRuns.reduce((a, r) => a + r.handshakes + r.warmupHandshakes, 0),
      cpuVsInProcess: null,
      rateVsInProcess: null,
      handshakes: rs.reduce((a, r) => a + r.handshakes, 0),
      errors: runs.filter(r => r.group === group && r.variant === variant).reduce((a, r) => a + r.errors, 0),
      reused: runs.filter(r => r.group === group && r.variant === variant).reduce((a, r) => a + r.reused, 0),
      cipher: rs[0]?.cipher
    }
  })
  for (const s of out) {
    const base = out.find(b => b.group === s.group && b.variant === 'in-process')
    if (base === undefined) continue
    s.cpuVsInProcess = s.totalUs / base.totalUs
    s.rateVsInProcess = s.rate / base.rate
  }
  return out
}

const f0 = (n: number | null): string => n === null ? '–' : Math.round(n).toLocaleString('en-US')
const f2 = (n: number | null): string => n === null ? '–' : n.toFixed(2)

/** The markdown table of `summaries`. */
export function markdownTable (summaries: CaseSummary[]): string {
  const head = ['case', 'handshakes/s', 'proxy µs/hs (of which primary)', 'keyd µs/hs', 'total µs/hs (min–max)', 'CPU × in-process', 'rate × in-process', 'keyd signatures/hs', 'client µs/hs', 'errors', 'resumed']
  const rows = summaries.map(s => [
    `${s.group} · ${VARIANT_LABEL[s.variant]}`,
    f0(s.rate),
    `${f0(s.proxyUs)} (${f0(s.primaryUs)})`,
    f0(s.keydUs),
    `${f0(s.totalUs)} (${f0(s.totalUsMin)}–${f0(s.totalUsMax)})`,
    f2(s.cpuVsInProcess),
    f2(s.rateVsInProcess),
    f2(s.sigsPerHandshake),
    f0(s.clientUs),
    String(s.errors),
    String(s.reused)
  ])
  const line = (cells: string[]): string => `| ${cells.join(' | ')} |`
  return [line(head), line(head.map((_, i) => i === 0 ? '---' : '---:')), ...rows.map(line)].join('\n') + '\n'
}

/** Writes `handshakes-<date>.json` and `handshakes-latest.md` into `dir`; returns their paths. */
export function writeResults (dir: string, result: { startedAt: Date, env: Record<string, unknown>, options: Record<string, unknown>, runs: Run[], summaries: CaseSummary[], failures: string[] }): { json: string, md: string } {
  mkdirSync(dir, { recursive: true })
  const stamp = result.startedAt.toISOString().slice(0, 16).replace(':', '')
  const json = join(dir, `handshakes-${stamp}.json`)
  writeFileSync(json, JSON.stringify({ benchmark: 'handshakes', ...result, startedAt: result.startedAt.toISOString() }, null, 2) + '\n')
  const md = join(dir, 'handshakes-latest.md')
  const env = result.env
  writeFileSync(md, [
    `# Full-handshake benchmark — ${result.startedAt.toISOString()}`,
    '',
    `Node ${String(env.node)} (OpenSSL ${String(env.openssl)}), ${String(env.cpus)} × ${String(env.cpuModel)}, ` +
      `${String(result.options.workers)} proxy workers, ${String(result.options.rounds)} rounds × ${String(result.options.durationMs)} ms per case, ` +
      `${String(result.options.concurrency)} concurrent connections. Medians over the rounds; server CPU = utime+stime of ` +
      'the proxy primary, its workers and keyd (from /proc), per handshake. The load generator shares the two cores.',
    '',
    markdownTable(result.summaries),
    result.failures.length === 0 ? 'No failures.' : `**FAILURES:**\n\n${result.failures.map(f => `- ${f}`).join('\n')}`,
    ''
  ].join('\n'))
  return { json, md }
}
