// What `bench testssl` makes of two scans: the findings whose severity differs between keyedge and
// nginx (the table it prints), those with the same severity but other words, and the markdown report.
import { byId, SEVERITIES, type Finding, type ScanResult } from './testssl-scan.js'

/** One server's scan, as the result file keeps it. */
export interface TargetScan { label: string, version: string, scan: ScanResult }

/** A finding id with what each server said (undefined: that server's scan has no such id). */
export interface Difference { id: string, keyedge?: Finding, nginx?: Finding }

export interface TestsslResult {
  benchmark: 'testssl'
  startedAt: string
  env: Record<string, unknown>
  testssl: string
  options: { checks: string[], timeoutS: number }
  targets: TargetScan[]
  /** Findings whose severity differs (or that only one server has). */
  severityDiffers: Difference[]
  /** Findings with the same severity and other words. */
  wordingDiffers: Difference[]
  notes: string[]
}

/** Client simulations and timings say the same thing as the cipher order, or nothing about the servers. */
const NOISE = /^(scanTime|clientsimulation-|cert_fingerprint|cert_serialNumber|cert_notBefore|cert_notAfter|cert_validityPeriod|cert_extlifeSpan|HTTP_clock_skew|TLS_timestamp|DROWN_hint|HTTP_headerAge)/

/** Splits the ids of both scans into severity differences and wording differences (client simulations by name). */
export function compare (keyedge: Finding[], nginx: Finding[]): { severity: Difference[], wording: Difference[] } {
  const k = byId(keyedge)
  const n = byId(nginx)
  const severity: Difference[] = []
  const wording: Difference[] = []
  for (const id of new Set([...k.keys(), ...n.keys()])) {
    const a = k.get(id)
    const b = n.get(id)
    const row: Difference = { id, ...(a !== undefined ? { keyedge: a } : {}), ...(b !== undefined ? { nginx: b } : {}) }
    if (a?.severity !== b?.severity) severity.push(row)
    else if (a?.finding !== b?.finding && !NOISE.test(id)) wording.push(row)
  }
  const rank = (d: Difference): number => Math.max(SEVERITIES.indexOf(d.keyedge?.severity ?? 'DEBUG'), SEVERITIES.indexOf(d.nginx?.severity ?? 'DEBUG'))
  severity.sort((x, y) => rank(y) - rank(x))
  return { severity, wording }
}

const cell = (s: string, max: number): string => {
  const one = s.replace(/\s+/g, ' ').replace(/\|/g, '\\|').trim()
  return one.length > max ? `${one.slice(0, max - 1)}…` : one
}
const sev = (f: Finding | undefined): string => f?.severity ?? '—'
const said = (f: Finding | undefined, max: number): string => f === undefined ? '(not reported)' : cell(f.finding, max)

/** A markdown table of `rows` (findings cut to `max` characters). */
export function differenceTable (rows: Difference[], max = 70): string {
  if (rows.length === 0) return '(none)'
  return [
    '| finding id | keyedge | keyedge says | nginx | nginx says |',
    '|---|---|---|---|---|',
    ...rows.map(r => `| \`${r.id}\` | ${sev(r.keyedge)} | ${said(r.keyedge, max)} | ${sev(r.nginx)} | ${said(r.nginx, max)} |`)
  ].join('\n')
}

/** Every finding of one scan at LOW or above, and every WARN (a check that could not run). */
export function notableTable (scan: ScanResult): string {
  const rows = scan.findings.filter(f => SEVERITIES.indexOf(f.severity) >= SEVERITIES.indexOf('LOW'))
  if (rows.length === 0) return '(none)'
  return ['| finding id | severity | finding |', '|---|---|---|', ...rows.map(f => `| \`${f.id}\` | ${f.severity} | ${cell(f.finding, 110)} |`)].join('\n')
}

/** The markdown report. */
export function testsslMarkdown (r: TestsslResult): string {
  const env = r.env as { node?: string, openssl?: string, cpus?: number, cpuModel?: string }
  return [
    `# testssl.sh: keyedge beside nginx — ${r.startedAt}`,
    '',
    `testssl.sh ${r.testssl} (\`${r.options.checks.join(' ')}\`, each scan bounded to ${r.options.timeoutS} s); ${r.targets.map(t => t.version).join('; ')}.`,
    `Machine: ${env.cpus ?? '?'} × ${env.cpuModel ?? '?'}. Both servers on 127.0.0.1 with the same ECDSA and RSA certificates (keys in keyd for keyedge, in files for nginx), proxying to the same upstream; scanned at the same time.`,
    '',
    ...r.targets.map(t => `- ${t.label}: ${t.scan.findings.length} findings in ${Math.round(t.scan.ms / 1000)} s${t.scan.timedOut ? ' — **cut short by the deadline**' : ''}${t.scan.findings.length === 0 ? ` — no findings; testssl said: ${cell(t.scan.stderr, 300)}` : ''}`),
    '',
    '## Findings whose severity differs',
    '',
    differenceTable(r.severityDiffers, 90),
    '',
    '## Same severity, other words',
    '',
    'Client simulations, fingerprints, dates and timings left out.',
    '',
    differenceTable(r.wordingDiffers, 90),
    '',
    ...r.targets.flatMap(t => [`## ${t.label}: findings at LOW or above, and checks that could not run (WARN)`, '', notableTable(t.scan), '']),
    ...r.notes.map(n => `- note: ${n}`),
    ''
  ].join('\n')
}
