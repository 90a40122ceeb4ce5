// What a `bench peers` run leaves behind: the JSON of every run, the markdown report and the SVG
// chart, written from one result object (also re-rendered from a saved JSON with --from).
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { CaseId, Counts, Run } from './peers-cases.js'
import { peersChart } from './peers-chart.js'
import type { PeerId } from './peers-process.js'
import { absoluteTable, checksTable, PEER_ORDER, ratioTable, scalingTable, summaryTable, targetTable, type Summary } from './peers-report.js'
import { resultStamp, writeResultFiles, type runtimeEnv } from './runner.js'

export type PeersEnv = ReturnType<typeof runtimeEnv> & { placement: string, peers: Record<string, string>, h2load: string }

export interface PeersResult {
  benchmark: 'peers'
  startedAt: string
  env: PeersEnv
  options: { cases: CaseId[], peers: PeerId[], rounds: number, counts: Counts, warmupShare: number, pin: boolean, quick: boolean }
  /** The TLS probes of every instance before the runs. */
  checks: Array<Record<string, unknown>>
  runs: Run[]
  summaries: Summary[]
  skipped: string[]
  failures: string[]
  notes: string[]
}

/** The markdown report. */
export function peersMarkdown (r: PeersResult): string {
  const { env, options: o, summaries } = r
  const order = PEER_ORDER.filter(p => o.peers.includes(p))
  const peerVersions = Object.values(env.peers).join(', ')
  return [
    `# keyedge beside its peers — ${r.startedAt}`,
    '',
    `Runtime: Node ${env.node} (OpenSSL ${env.openssl}) runs keyedge, keyd and the minimal Node proxy${peerVersions === '' ? '' : `; ${peerVersions}`}; ${env.h2load.split('\n')[0] ?? 'h2load'}.`,
    `Machine: ${env.cpus} × ${env.cpuModel}, Linux ${env.kernel}; ${env.placement}. ${o.rounds} interleaved round(s)${o.quick ? ' (--quick: a smoke run, not a measurement)' : ''}; ` +
      `${o.counts.handshakes} handshakes, ${o.counts.requests} keep-alive requests, ${o.counts.stream} × 1 MiB, ${o.counts.idle} idle connections per case; h2load with ${o.counts.clients} clients.`,
    '',
    '## Summary',
    '',
    summaryTable(summaries, order),
    '',
    '## Detail',
    '',
    absoluteTable(summaries, order),
    '',
    '`[key N]`: the part spent in the key process (keyd, h2o\'s neverbleed), included in the figure. ⚠: the case reported a problem (listed below).',
    '',
    ratioTable(summaries, order),
    '',
    ...(o.cases.includes('workers-2') ? [scalingTable(summaries, order), ''] : []),
    ...(o.quick ? ['A --quick run measures too little to judge a target: the verdicts below only show the table works.', ''] : []),
    targetTable(summaries),
    '',
    checksTable(summaries),
    '',
    ...r.skipped.map(s => `- not run: ${s}`),
    ...r.notes.map(n => `- note: ${n}`),
    '',
    r.failures.length === 0 ? 'No failures: every request answered 200, versions, certificates and resumption as pinned.' : `**FAILURES:**\n\n${r.failures.map(f => `- ${f}`).join('\n')}`,
    ''
  ].join('\n')
}

/**
 * Writes `<name>-latest.md`, `<name>-<date>.svg` and `<name>-latest.svg` (and `<name>-<date>.json`
 * when `json`) into `dir`; `name` is `peers`, or `peers-quick` for a smoke run, so that one never
 * replaces the latest real results.
 */
export function writePeersResult (dir: string, r: PeersResult, json: boolean): { json: string | null, md: string, svg: string, markdown: string } {
  const name = r.options.quick ? 'peers-quick' : 'peers'
  const at = new Date(r.startedAt)
  const markdown = peersMarkdown(r)
  let jsonFile: string | null = null
  let mdFile: string
  if (json) {
    const files = writeResultFiles(dir, name, at, r, markdown)
    jsonFile = files.json
    mdFile = files.md
  } else {
    mdFile = join(dir, `${name}-latest.md`)
    writeFileSync(mdFile, markdown)
  }
  const order = PEER_ORDER.filter(p => r.options.peers.includes(p))
  const env = r.env
  const svg = peersChart(r.summaries, order, `keyedge beside its peers — server CPU per operation, ${r.startedAt.slice(0, 10)}`, [
    `Node ${env.node} (OpenSSL ${env.openssl}) for keyedge, keyd and the Node proxy; ${Object.values(env.peers).join(', ')}`,
    `${env.cpus} × ${env.cpuModel}; ${env.placement}; h2load; medians of ${r.options.rounds} round(s)${r.options.quick ? ' (--quick smoke run: not a measurement)' : ''}`
  ])
  const svgFile = join(dir, `${name}-${resultStamp(at)}.svg`)
  writeFileSync(svgFile, svg)
  writeFileSync(join(dir, `${name}-latest.svg`), svg)
  return { json: jsonFile, md: mdFile, svg: svgFile, markdown }
}
