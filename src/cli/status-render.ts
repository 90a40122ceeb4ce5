// The person's view of `keyedge status`: aligned sections, warnings first-class, no colour needed.
import type { StatusReport } from './status.js'

/** Pads the columns of `rows` to their widest cell. */
function table (rows: string[][], indent = '  '): string {
  const widths: number[] = []
  for (const r of rows) r.forEach((c, i) => { widths[i] = Math.max(widths[i] ?? 0, c.length) })
  return rows.map(r => indent + r.map((c, i) => i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n') + '\n'
}

const num = (v: number | null, unit = ''): string => v === null ? '-' : `${v}${unit}`

/** The report as text for a terminal. */
export function renderStatus (r: StatusReport): string {
  let out = ''
  const p = r.proxy
  out += `proxy   ${p.admin ?? '(no admin listener)'}  ${p.up ? `${p.ready === true ? 'ready' : `NOT READY (${p.readiness ?? '?'})`}, ${num(p.workers)} worker${p.workers === 1 ? '' : 's'}` : `DOWN (${p.error ?? 'unreachable'})`}\n`
  const k = r.keyd
  out += `keyd    ${k.socket ?? '-'}  ${!k.up ? 'DOWN' : k.sealed === true ? 'SEALED' : 'up'}` +
    (k.signLatencyMs !== null ? `, sign p50 ${num(k.signLatencyMs.p50, ' ms')} p99 ${num(k.signLatencyMs.p99, ' ms')} (queue p99 ${num(k.signLatencyMs.queueP99, ' ms')})` : '') +
    (k.errorRate !== null ? `, errors ${num(k.errors)}/${num(k.operations)} (${(k.errorRate * 100).toFixed(2)} %)` : '') + '\n'
  if (r.handshakes !== null) {
    const h = r.handshakes
    out += `tls     handshakes/s full ${num(h.fullPerSecond)}  resumed ${num(h.resumedPerSecond)}  (over ${h.intervalSeconds} s; totals ${h.fullTotal} full, ${h.resumedTotal} resumed)\n`
  }
  const a = r.audit
  out += `audit   ${a.state === 'verified' ? `chain verified up to entry ${num(a.lastSeq)} (checkpoint ${num(a.checkpointSeq)})` : a.state === 'broken' ? `BROKEN: ${a.problem ?? ''}` : a.state === 'partial' ? `verified up to entry ${num(a.lastSeq)}, the rest not checked in time` : `not checked: ${a.problem ?? ''}`}` +
    (a.writable === false ? ', NOT WRITABLE' : '') + '\n'
  if (r.certificates !== null) {
    out += `\ncertificates (${r.certificates.length})\n`
    out += table([['ENTRY', 'TYPE', 'DAYS', 'EXPIRES', 'KEY', 'NAMES'], ...r.certificates.map(c => [
      c.entry, c.keyType, c.daysLeft < 14 ? `${c.daysLeft} !` : String(c.daysLeft), c.notAfter.slice(0, 10), c.key ?? '(in process)', c.names.join(', ')
    ])])
  }
  if (r.keys !== null) {
    out += `\nkeyd keys (${r.keys.length})\n`
    out += table([['NAME', 'TYPE', 'USAGE', 'STATE', 'VERSIONS'], ...r.keys.map(key => [
      key.name, key.type, key.usage, key.state,
      key.versions.map(v => `v${v.version}${v.version === key.currentVersion ? '*' : ''}${v.canSign === false ? ' (no longer signs)' : ''}`).join(' ')
    ])])
  } else if (r.keyd.up) {
    out += '\nkeyd keys: not listed (needs keyd\'s admin client secret, <home>/clients/admin.secret)\n'
  }
  out += r.problems.length === 0 ? '\nOK\n' : `\n${r.problems.map(x => `! ${x}`).join('\n')}\n`
  return out
}
