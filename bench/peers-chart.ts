// The `bench peers` bar chart as a self-contained SVG (no dependency): one group of horizontal bars
// per case, one bar per peer, the length its median relative to nginx's (1.0 = nginx); each bar is
// labelled with the ratio and the absolute median. Without nginx, ratios are to the first peer run.
import { CASES, isMemory } from './peers-cases.js'
import { PEER_LABEL, type Summary } from './peers-report.js'
import type { PeerId } from './peers-process.js'

const COLORS: Record<PeerId, string> = {
  nginx: '#2f9e44',
  haproxy: '#1971c2',
  h2o: '#f08c00',
  node: '#868e96',
  keyedge: '#9c36b5',
  'keyedge-keyd': '#e03131'
}

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')

/** The chart for `summaries` (cases in table order; the worker-scaling case is left to the table). */
export function peersChart (summaries: Summary[], peers: PeerId[], title: string, subtitle: string[]): string {
  const base: PeerId | undefined = peers.includes('nginx') ? 'nginx' : peers[0]
  if (base === undefined) throw new Error('a chart needs at least one peer')
  const cases = CASES.filter(d => d.id !== 'workers-2' && summaries.some(s => s.caseId === d.id))
  const ratio = (caseId: string, p: PeerId): { r: number, abs: number, key: number } | undefined => {
    const s = summaries.find(x => x.caseId === caseId && x.peer === p)
    const b = summaries.find(x => x.caseId === caseId && x.peer === base)
    if (s === undefined || b === undefined || !Number.isFinite(s.median) || !(b.median > 0)) return undefined
    return { r: Math.max(0, s.median / b.median), abs: s.median, key: Math.max(0, (s.keyMedian ?? 0) / b.median) }
  }
  const maxRatio = Math.max(2, ...cases.flatMap(d => peers.map(p => ratio(d.id, p)?.r ?? 0)))
  const axisMax = Math.ceil(maxRatio)
  const left = 330
  const plotW = 560
  const barH = 13
  const gap = 3
  const groupGap = 16
  const top = 62 + subtitle.length * 16
  const x = (r: number): number => left + r / axisMax * plotW
  const parts: string[] = []
  let y = top
  for (const d of cases) {
    const groupH = peers.length * (barH + gap)
    parts.push(`<text x="${left - 10}" y="${y + groupH / 2}" text-anchor="end" dominant-baseline="middle" class="case">${esc(d.label)}</text>`)
    for (const p of peers) {
      const v = ratio(d.id, p)
      if (v !== undefined) {
        const unit = isMemory(d) ? ' KiB' : ' µs'
        const abs = isMemory(d) ? v.abs.toFixed(1) : Math.round(v.abs).toLocaleString('en-US')
        parts.push(`<rect x="${left}" y="${y}" width="${Math.max(1, x(v.r) - left).toFixed(1)}" height="${barH}" fill="${COLORS[p]}"><title>${esc(`${PEER_LABEL[p]}: ${abs}${unit}, ${v.r.toFixed(2)}× ${base}`)}</title></rect>`)
        // The key process's part (keyd, neverbleed), hatched at the end of the bar.
        const kw = Math.min(v.key, v.r) / axisMax * plotW
        if (kw >= 1) parts.push(`<rect x="${(x(v.r) - kw).toFixed(1)}" y="${y}" width="${kw.toFixed(1)}" height="${barH}" fill="url(#key)"><title>${esc(`key process: ${Math.round(v.key * 100) / 100}× ${base}`)}</title></rect>`)
        parts.push(`<text x="${(x(v.r) + 4).toFixed(1)}" y="${y + barH / 2}" dominant-baseline="middle" class="val">${v.r.toFixed(2)}× · ${abs}${unit}</text>`)
      } else {
        parts.push(`<text x="${left + 4}" y="${y + barH / 2}" dominant-baseline="middle" class="na">${esc(PEER_LABEL[p])}: not run</text>`)
      }
      y += barH + gap
    }
    y += groupGap
  }
  const bottom = y
  const grid: string[] = []
  const step = axisMax <= 10 ? 1 : axisMax <= 25 ? 2 : 5
  for (let t = 0; t <= axisMax; t += step) {
    grid.push(`<line x1="${x(t)}" y1="${top - 6}" x2="${x(t)}" y2="${bottom - groupGap}" class="${t === 1 ? 'one' : 'grid'}"/>`)
    grid.push(`<text x="${x(t)}" y="${bottom - groupGap + 14}" text-anchor="middle" class="tick">${t}×</text>`)
  }
  const legend = peers.map((p, i) => {
    const lx = 20 + (i % 3) * 300
    const ly = bottom + 28 + Math.floor(i / 3) * 18
    return `<rect x="${lx}" y="${ly - 10}" width="12" height="12" fill="${COLORS[p]}"/><text x="${lx + 18}" y="${ly}" class="legend">${esc(PEER_LABEL[p])}</text>`
  })
  const height = bottom + 28 + Math.ceil(peers.length / 3) * 18 + 10
  const width = left + plotW + 150
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif">
<style>
.title{font-size:16px;font-weight:bold}.sub{font-size:11px;fill:#495057}.case{font-size:11px;fill:#212529}
.val{font-size:10px;fill:#212529}.na{font-size:10px;fill:#adb5bd}.tick{font-size:10px;fill:#495057}.legend{font-size:11px}
.grid{stroke:#dee2e6;stroke-width:1}.one{stroke:#2f9e44;stroke-width:1.5;stroke-dasharray:4 3}
</style>
<defs><pattern id="key" width="5" height="5" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="5" height="5" fill="#ffffff" fill-opacity="0.35"/><line x1="0" y1="0" x2="0" y2="5" stroke="#000000" stroke-opacity="0.45" stroke-width="2"/></pattern></defs>
<rect width="100%" height="100%" fill="#ffffff"/>
<text x="20" y="26" class="title">${esc(title)}</text>
${subtitle.map((s, i) => `<text x="20" y="${46 + i * 16}" class="sub">${esc(s)}</text>`).join('\n')}
<text x="20" y="${46 + subtitle.length * 16}" class="sub">${esc(`Bar length: median server CPU per operation (memory: worker RSS per idle connection) relative to ${PEER_LABEL[base]} (1×, dashed); hatched: the key process's part. Lower is better.`)}</text>
${grid.join('\n')}
${parts.join('\n')}
${legend.join('\n')}
</svg>
`
}
