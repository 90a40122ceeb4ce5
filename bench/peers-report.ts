// `bench peers` results: medians and spread per case and peer, ratios to nginx and to the minimal
// Node proxy, worker scaling, the issue's targets, and the markdown report.
import { median } from './handshake-report.js'
import { CASES, isMemory, type CaseId, type Run } from './peers-cases.js'
import type { PeerId } from './peers-process.js'

export const PEER_LABEL: Record<PeerId, string> = {
  nginx: 'nginx',
  haproxy: 'HAProxy',
  h2o: 'h2o (neverbleed)',
  node: 'Node https/http2 + undici',
  keyedge: 'keyedge, key in process',
  'keyedge-keyd': 'keyedge, key in keyd'
}

export const PEER_ORDER: PeerId[] = ['nginx', 'haproxy', 'h2o', 'node', 'keyedge', 'keyedge-keyd']

export interface Summary {
  caseId: CaseId
  peer: PeerId
  rounds: number
  /** Median server CPU µs per operation (KiB per connection for memory). */
  median: number
  min: number
  max: number
  /** Median of the key process's part (keyd, neverbleed). */
  keyMedian: number | null
  /** Memory: the whole server side's growth, key process included. */
  totalMedian: number | null
  rate: number
  signaturesPerHandshake: number | null
  /** Handshakes the server itself counted as resumed, over all rounds (null: no counter). */
  resumedCounted: number | null
  problems: number
  vsNginx: number | null
  vsNode: number | null
  /** workers-2 only: median over rounds of (this round's 2-worker value ÷ the same round's 1-worker value). */
  scaling: { median: number, min: number, max: number } | null
}

export function summarize (runs: Run[]): Summary[] {
  const out: Summary[] = []
  for (const def of CASES) {
    for (const peer of PEER_ORDER) {
      const all = runs.filter(r => r.caseId === def.id && r.peer === peer)
      if (all.length === 0) continue
      const rs = all.filter(r => r.ops > 0)
      const vals = rs.map(r => r.value)
      const keyRuns = rs.filter(r => r.keyValue !== null)
      const sigRuns = rs.filter(r => r.signaturesPerHandshake !== null)
      const countedRuns = rs.filter(r => r.counted !== null)
      let scaling: Summary['scaling'] = null
      if (def.id === 'workers-2') {
        const ratios = rs.flatMap(r => {
          const one = runs.find(x => x.caseId === 'full-13-ec' && x.peer === peer && x.round === r.round && x.ops > 0)
          return one === undefined ? [] : [r.value / one.value]
        })
        if (ratios.length > 0) scaling = { median: median(ratios), min: Math.min(...ratios), max: Math.max(...ratios) }
      }
      out.push({
        caseId: def.id,
        peer,
        rounds: rs.length,
        median: vals.length === 0 ? NaN : median(vals),
        min: Math.min(...vals),
        max: Math.max(...vals),
        keyMedian: keyRuns.length === 0 ? null : median(keyRuns.map(r => r.keyValue as number)),
        totalMedian: rs.some(r => r.totalValue !== null) ? median(rs.map(r => r.totalValue ?? NaN)) : null,
        rate: rs.length === 0 ? 0 : median(rs.map(r => r.rate)),
        signaturesPerHandshake: sigRuns.length === 0 ? null : median(sigRuns.map(r => r.signaturesPerHandshake as number)),
        resumedCounted: countedRuns.length === 0 ? null : countedRuns.reduce((a, r) => a + (r.counted?.resumed ?? 0), 0),
        problems: all.reduce((a, r) => a + r.problems.length, 0),
        vsNginx: null,
        vsNode: null,
        scaling
      })
    }
  }
  for (const s of out) {
    const nginx = out.find(b => b.caseId === s.caseId && b.peer === 'nginx')
    const node = out.find(b => b.caseId === s.caseId && b.peer === 'node')
    if (nginx !== undefined && nginx.median > 0) s.vsNginx = s.median / nginx.median
    if (node !== undefined && node.median > 0) s.vsNode = s.median / node.median
  }
  return out
}

const f0 = (n: number | null | undefined): string => n === null || n === undefined || !Number.isFinite(n) ? '–' : Math.round(n).toLocaleString('en-US')
const f1 = (n: number | null | undefined): string => n === null || n === undefined || !Number.isFinite(n) ? '–' : n.toFixed(1)
const f2 = (n: number | null | undefined): string => n === null || n === undefined || !Number.isFinite(n) ? '–' : n.toFixed(2)
const line = (cells: string[]): string => `| ${cells.join(' | ')} |`
/** A header row and its alignment row: the first `textCols` columns left, the rest right. */
const head = (cells: string[], textCols = 1): string[] => [line(cells), line(cells.map((_, i) => i < textCols ? '---' : '---:'))]

function find (ss: Summary[], c: CaseId, p: PeerId): Summary | undefined { return ss.find(s => s.caseId === c && s.peer === p) }

/** Absolute medians with their spread: server CPU µs per operation, or KiB per idle connection. */
export function absoluteTable (ss: Summary[], peers: PeerId[]): string {
  const rows = CASES.filter(d => ss.some(s => s.caseId === d.id)).map(d => [
    `${d.label} (${isMemory(d) ? 'KiB of worker RSS' : 'µs'} per ${d.op})`,
    ...peers.map(p => {
      const s = find(ss, d.id, p)
      if (s === undefined || s.rounds === 0) return '–'
      const fmt = isMemory(d) ? f1 : f0
      const key = s.keyMedian !== null ? ` [key ${fmt(s.keyMedian)}]` : ''
      const spread = s.rounds > 1 ? ` (${fmt(s.min)}–${fmt(s.max)})` : ''
      return `${fmt(s.median)}${spread}${key}${s.problems > 0 ? ' ⚠' : ''}`
    })
  ])
  return [...head(['median (min–max) over the rounds', ...peers.map(p => PEER_LABEL[p])]), ...rows.map(line)].join('\n')
}

/** The summary for the README: medians per peer (key process's part in brackets) and keyedge-in-keyd's ratios. */
export function summaryTable (ss: Summary[], peers: PeerId[]): string {
  const ratios: Array<{ title: string, of: (s: Summary | undefined) => number | null | undefined }> = []
  if (peers.includes('keyedge-keyd') && peers.includes('nginx')) ratios.push({ title: 'keyedge (keyd) × nginx', of: s => s?.vsNginx })
  if (peers.includes('keyedge-keyd') && peers.includes('node')) ratios.push({ title: 'keyedge (keyd) × Node', of: s => s?.vsNode })
  const rows = CASES.filter(d => d.id !== 'workers-2' && ss.some(s => s.caseId === d.id)).map(d => {
    const fmt = isMemory(d) ? f1 : f0
    return [
      `${d.label}${isMemory(d) ? ' (KiB)' : ''}`,
      ...peers.map(p => { const s = find(ss, d.id, p); return s === undefined ? '–' : `${fmt(s.median)}${s.keyMedian !== null ? ` [${fmt(s.keyMedian)}]` : ''}` }),
      ...ratios.map(r => f2(r.of(find(ss, d.id, 'keyedge-keyd'))))
    ]
  })
  const scaling = ss.some(s => s.caseId === 'workers-2')
    ? [['2 workers ÷ 1 worker, CPU per full TLS 1.3 ECDSA handshake + GET', ...peers.map(p => f2(find(ss, 'workers-2', p)?.scaling?.median)), ...ratios.map(() => '')]]
    : []
  return [...head(['server CPU µs per operation [key process], median', ...peers.map(p => PEER_LABEL[p]), ...ratios.map(r => r.title)]), ...[...rows, ...scaling].map(line)].join('\n')
}

/** Ratios of each peer's median to nginx's and to the minimal Node proxy's, and custody's cost. */
export function ratioTable (ss: Summary[], peers: PeerId[]): string {
  const others = peers.filter(p => p !== 'nginx')
  const cols: Array<{ title: string, cell: (c: CaseId) => string }> = []
  for (const p of others) {
    if (peers.includes('nginx')) cols.push({ title: `${PEER_LABEL[p]} × nginx`, cell: c => f2(find(ss, c, p)?.vsNginx) })
    if ((p === 'keyedge' || p === 'keyedge-keyd') && peers.includes('node')) cols.push({ title: `${PEER_LABEL[p]} × Node`, cell: c => f2(find(ss, c, p)?.vsNode) })
  }
  if (peers.includes('keyedge') && peers.includes('keyedge-keyd')) {
    cols.push({ title: 'custody: keyd ÷ in process', cell: c => { const a = find(ss, c, 'keyedge-keyd'); const b = find(ss, c, 'keyedge'); return a === undefined || b === undefined ? '–' : f2(a.median / b.median) } })
  }
  const rows = CASES.filter(d => d.id !== 'workers-2' && ss.some(s => s.caseId === d.id)).map(d => [d.label, ...cols.map(c => c.cell(d.id))])
  return [...head(['ratio of medians', ...cols.map(c => c.title)]), ...rows.map(line)].join('\n')
}

/** CPU per handshake with 2 workers ÷ with 1, per peer (median of per-round ratios, spread). */
export function scalingTable (ss: Summary[], peers: PeerId[]): string {
  const cells = peers.map(p => {
    const s = find(ss, 'workers-2', p)?.scaling
    return s === undefined || s === null ? '–' : `${f2(s.median)} (${f2(s.min)}–${f2(s.max)})`
  })
  return [...head(['CPU per full handshake + GET: 2 workers ÷ 1 worker', ...peers.map(p => PEER_LABEL[p])]), line(['TLS 1.3 ECDSA P-256', ...cells])].join('\n')
}

interface Target { what: string, limit: number, value: number | null | undefined, unit?: string }

/** The issue's targets that this benchmark measures, with the measured medians. */
export function targetTable (ss: Summary[]): string {
  const v = (c: CaseId, p: PeerId): Summary | undefined => find(ss, c, p)
  const div = (a: number | undefined, b: number | undefined): number | undefined => a === undefined || b === undefined ? undefined : a / b
  const targets: Target[] = [
    { what: 'keep-alive HTTP/1.1: keyedge (keyd) × Node', limit: 1.0, value: v('keepalive-h1', 'keyedge-keyd')?.vsNode },
    { what: 'keep-alive HTTP/1.1: keyedge (keyd) × nginx', limit: 2.0, value: v('keepalive-h1', 'keyedge-keyd')?.vsNginx },
    { what: 'keep-alive HTTP/2: keyedge (keyd) × Node', limit: 1.0, value: v('keepalive-h2', 'keyedge-keyd')?.vsNode },
    { what: 'keep-alive HTTP/2: keyedge (keyd) × nginx', limit: 2.0, value: v('keepalive-h2', 'keyedge-keyd')?.vsNginx },
    { what: 'TLS 1.3 ECDSA full handshake + GET: keyedge (keyd) × Node (key in process)', limit: 1.10, value: v('full-13-ec', 'keyedge-keyd')?.vsNode },
    { what: 'TLS 1.3 ECDSA full handshake + GET: keyedge (keyd) × nginx', limit: 2.5, value: v('full-13-ec', 'keyedge-keyd')?.vsNginx },
    { what: 'custody, TLS 1.3 ECDSA: keyd ÷ in process', limit: 1.10, value: div(v('full-13-ec', 'keyedge-keyd')?.median, v('full-13-ec', 'keyedge')?.median) },
    { what: 'custody, TLS 1.3 RSA-2048: keyd ÷ in process', limit: 1.05, value: div(v('full-13-rsa', 'keyedge-keyd')?.median, v('full-13-rsa', 'keyedge')?.median) },
    { what: 'keyd CPU per ECDSA handshake ÷ h2o key process\'s', limit: 1.0, value: div(v('full-13-ec', 'keyedge-keyd')?.keyMedian ?? undefined, v('full-13-ec', 'h2o')?.keyMedian ?? undefined) },
    { what: 'keyedge (keyd): 2 workers ÷ 1 worker per handshake', limit: 1.10, value: v('workers-2', 'keyedge-keyd')?.scaling?.median },
    { what: 'keyedge (keyd): worker memory per idle TLS connection', limit: 25, value: v('idle-memory', 'keyedge-keyd')?.median, unit: ' KiB' }
  ]
  const rows = targets.map(t => [t.what, `≤ ${t.limit}${t.unit ?? ''}`, t.value === undefined || t.value === null ? 'not measured' : `${f2(t.value)}${t.unit ?? ''}`,
    t.value === undefined || t.value === null ? '–' : t.value <= t.limit ? 'met' : `missed by ${f0((t.value / t.limit - 1) * 100)} %`])
  return [...head(['target (issue 11)', 'target', 'measured', 'status']), ...rows.map(line)].join('\n')
}

/** Checks of resumption and custody: the servers' counters and keyd's signatures per handshake. */
export function checksTable (ss: Summary[]): string {
  const rows = ss.filter(s => s.resumedCounted !== null || s.signaturesPerHandshake !== null).map(s => [
    CASES.find(d => d.id === s.caseId)?.label ?? s.caseId, PEER_LABEL[s.peer], s.resumedCounted === null ? '–' : String(s.resumedCounted), f2(s.signaturesPerHandshake)
  ])
  return [...head(['case', 'peer', 'handshakes the server counted as resumed', 'keyd signatures per handshake'], 2), ...rows.map(line)].join('\n')
}
