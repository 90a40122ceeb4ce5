// `keyedge status`: one look at a running stack, from the proxy's admin listener, keyd (its admin
// client and its metrics endpoint) and keyd's audit log. Every probe is bounded by --timeout.
import { parseArgs } from 'node:util'
import { existsSync, readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { homePaths, type HomePaths } from '../../lib/home.js'
import { errorCode, errorMessage } from '../../lib/errors.js'
import { KeydClient, type KeyDetail } from '../../keyd/client/client.js'
import { loadConfig } from '../config/index.js'
import type { CertEntryInfo } from '../tls/cert-info.js'
import { endpointsFile, type StartEndpoints } from './start.js'
import { histogramQuantile, parseMetrics, sumOf, has, type Sample } from './status-metrics.js'
import { auditChainState, type AuditState } from './keyd-audit.js'
import { renderStatus } from './status-render.js'

const USAGE = `Usage: keyedge status [--config FILE] [--json] [options]

Shows the state of a running keyedge: the served certificates with days to expiry, keyd's keys
with their versions and states, keyd up / sealed, its signing latency (p50, p99) and error rate,
TLS handshakes per second (full / resumed, from two samples of the proxy's metrics --interval
apart) and the audit chain (verified up to entry N, or broken). Exit code 0 when every part is up
and sound, 1 when one is down, sealed or broken (the output says which and how to start it), 2 for
a usage error. Every probe gives up after --timeout.

Where it looks: without --config, at what "npx keyedge start" wrote in <home>/endpoints.json;
with --config, at the admin listener and keyd socket of that proxy config (keyd's metrics only
with --keyd-metrics). Credentials: keyd's admin client secret <home>/clients/admin.secret lists
the keys (without it, only keyd's reachability is checked, with the config's keyd client); the
audit chain is verified only where keyd runs in development mode (<home>/keyd/master.key);
otherwise use "npx keyedge keyd audit verify" with the passphrase. Fields of --json: docs/admin.md.

Options:
  --config FILE        a proxy config (default: the one "keyedge start" runs)
  --home DIR           state directory (default $KEYEDGE_HOME or ./.keyedge)
  --admin URL          the proxy's admin listener, e.g. http://127.0.0.1:9443 (for a config
                       whose admin port is 0: the "admin listening" log line has the port)
  --keyd-metrics URL   keyd's metrics endpoint, e.g. http://127.0.0.1:9464
  --json               one JSON document for scripts instead of the table
  --interval MS        time between the two metrics samples (default 1000; 0 = one sample)
  --timeout MS         bound of each probe (default 2000)
  -h, --help           this help
`

/** The JSON document of `keyedge status --json` (docs/admin.md, "keyedge status"). */
export interface StatusReport {
  ok: boolean
  time: string
  proxy: { admin: string | null, up: boolean, ready: boolean | null, readiness: string | null, workers: number | null, error: string | null }
  certificates: Array<{ entry: string, names: string[], keyType: string, notAfter: string, daysLeft: number, key: string | null }> | null
  handshakes: { intervalSeconds: number, fullPerSecond: number | null, resumedPerSecond: number | null, fullTotal: number, resumedTotal: number } | null
  keyd: {
    socket: string | null
    up: boolean
    sealed: boolean | null
    error: string | null
    metrics: string | null
    signLatencyMs: { p50: number | null, p99: number | null, queueP99: number | null } | null
    operations: number | null
    errors: number | null
    errorRate: number | null
  }
  keys: Array<{ name: string, type: string, usage: string, state: string, currentVersion: number, versions: Array<{ version: number, createdAt: string, canSign: boolean | null }> }> | null
  audit: AuditState
  problems: string[]
}

interface Targets { admin: string | null, keydMetrics: string | null, socket: string | null, client: { name: string, secretFile: string } | null, paths: HomePaths }

/** GET `url` with a deadline. @throws on a network error, a timeout, or (unless `anyStatus`) a non-2xx answer */
async function get (url: string, timeoutMs: number, anyStatus = false): Promise<{ status: number, text: string }> {
  const r = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) })
  const text = await r.text()
  if (!anyStatus && !r.ok) throw new Error(`${url} answered ${r.status}`)
  return { status: r.status, text }
}

/** Why a probe failed, in a word where there is one: `no answer in time`, `ECONNREFUSED` … */
function why (err: unknown): string {
  if (err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError')) return 'no answer in time'
  // fetch's network errors carry the socket's error as their cause.
  const cause = err instanceof Error ? errorCode(err.cause) : undefined
  return cause ?? errorCode(err) ?? errorMessage(err)
}

function targets (values: StatusSources): Targets {
  const paths = homePaths(values.home)
  const adminSecret = join(paths.secretsDir, 'admin.secret')
  const client = existsSync(adminSecret) ? { name: 'admin', secretFile: adminSecret } : null
  if (values.config !== undefined) {
    const c = loadConfig(values.config, { checkFiles: false })
    if (values.admin === undefined && c.admin?.port === 0) throw new UsageError(`${values.config}: admin.port is 0 (any free port): give --admin URL with the port of its "admin listening" log line`)
    return {
      admin: values.admin ?? (c.admin === undefined ? null : `http://${c.admin.host.includes(':') ? `[${c.admin.host}]` : c.admin.host}:${c.admin.port}`),
      keydMetrics: values['keyd-metrics'] ?? null,
      socket: c.keyd?.socket ?? null,
      client: client ?? (c.keyd === undefined ? null : { name: c.keyd.clientName, secretFile: c.keyd.secretFile }),
      paths
    }
  }
  const file = endpointsFile(paths)
  if (!existsSync(file)) throw new UsageError(`nothing to look at: ${file} does not exist (start the stack with "npm start", or give --config FILE)`)
  const e = JSON.parse(readFileSync(file, 'utf8')) as StartEndpoints
  return { admin: values.admin ?? e.admin, keydMetrics: values['keyd-metrics'] ?? e.keydMetrics, socket: e.keydSocket, client, paths }
}

class UsageError extends Error {}

/** Where `keyedge status` looks (the command's options). */
export interface StatusSources { config?: string, home?: string, admin?: string, 'keyd-metrics'?: string }

/** Handshake counters of the proxy's metrics: full and resumed totals. */
function handshakeTotals (s: readonly Sample[]): { full: number, resumed: number } {
  return {
    full: sumOf(s, 'edge_tls_handshakes_total', l => l.resumed === 'false'),
    resumed: sumOf(s, 'edge_tls_handshakes_total', l => l.resumed === 'true')
  }
}

async function probeProxy (t: Targets, intervalMs: number, timeoutMs: number, report: StatusReport): Promise<void> {
  if (t.admin === null) { report.problems.push('the proxy config has no "admin" section: nothing to ask the proxy'); return }
  try {
    const ready = await get(`${t.admin}/ready`, timeoutMs, true)
    const body = JSON.parse(ready.text) as { status?: string, workers?: number }
    report.proxy = { ...report.proxy, up: true, ready: ready.status === 200, readiness: body.status ?? null, workers: body.workers ?? null }
    if (ready.status !== 200) report.problems.push(`the proxy is not ready: ${body.status ?? ready.status}`)
  } catch (err) {
    report.proxy.error = why(err)
    report.problems.push(`the proxy's admin listener ${t.admin} does not answer (${report.proxy.error}): start it with "npm start" or "npx keyedge proxy --config FILE"`)
    return
  }
  const [certs, first] = await Promise.all([get(`${t.admin}/certs`, timeoutMs), get(`${t.admin}/metrics`, timeoutMs)])
  const entries = (JSON.parse(certs.text) as { certificates: CertEntryInfo[] }).certificates
  report.certificates = entries.flatMap(e => e.pairs.map(p => ({
    entry: e.name, names: p.names, keyType: p.keyType, notAfter: p.notAfter, daysLeft: p.daysLeft,
    key: p.keyReference === null ? null : `${p.keyReference.name} v${p.keyReference.version}`
  })))
  for (const c of report.certificates) if (c.daysLeft < 14) report.problems.push(`certificate ${c.entry} (${c.keyType}) expires in ${c.daysLeft} day${c.daysLeft === 1 ? '' : 's'}: renew it (npx keyedge cert renew, or docs/runbooks)`)
  const a = handshakeTotals(parseMetrics(first.text))
  const t0 = Date.now()
  let rates: { full: number | null, resumed: number | null } = { full: null, resumed: null }
  let seconds = 0
  if (intervalMs > 0) {
    await new Promise(resolve => setTimeout(resolve, intervalMs))
    const b = handshakeTotals(parseMetrics((await get(`${t.admin}/metrics`, timeoutMs)).text))
    seconds = (Date.now() - t0) / 1000
    rates = { full: (b.full - a.full) / seconds, resumed: (b.resumed - a.resumed) / seconds }
    a.full = b.full
    a.resumed = b.resumed
  }
  report.handshakes = { intervalSeconds: round(seconds, 3), fullPerSecond: rates.full === null ? null : round(rates.full, 2), resumedPerSecond: rates.resumed === null ? null : round(rates.resumed, 2), fullTotal: a.full, resumedTotal: a.resumed }
}

function round (x: number, digits: number): number {
  const f = 10 ** digits
  return Math.round(x * f) / f
}

async function probeKeyd (t: Targets, timeoutMs: number, report: StatusReport): Promise<void> {
  const k = report.keyd
  if (t.socket !== null && t.client !== null) {
    const client = new KeydClient({ socketPath: t.socket, clientName: t.client.name, secretFile: t.client.secretFile, timeoutMs })
    try {
      if (t.client.name === 'admin') {
        const keys = await client.listKeys()
        // Per-version detail (may it still sign) from KEY_INFO, for a bounded number of keys.
        const details = await Promise.all(keys.slice(0, 100).map(async (key): Promise<KeyDetail> => await client.keyInfo(key.name).catch(() => key)))
        report.keys = [...details, ...keys.slice(100)].map(d => ({
          name: d.name, type: d.type, usage: d.usage, state: d.state, currentVersion: d.currentVersion,
          versions: d.versions.map(v => ({ version: v.version, createdAt: v.createdAt, canSign: v.canSign ?? null }))
        }))
      } else {
        await client.ping()
      }
      k.up = true
      k.sealed = false
    } catch (err) {
      const code = errorCode(err) ?? 'error'
      if (code === 'KEYD_ERR_SEALED') { k.up = true; k.sealed = true } else if (code === 'KEYD_ERR_UNAVAILABLE' || code === 'KEYD_ERR_TIMEOUT') k.up = false
      else k.up = true // it answered, with a refusal
      k.error = `${code}: ${errorMessage(err)}`
    } finally {
      client.close()
    }
  }
  if (t.keydMetrics !== null) {
    try {
      const health = await get(`${t.keydMetrics}/healthz`, timeoutMs, true)
      const h = JSON.parse(health.text) as { sealed?: boolean, auditWritable?: boolean }
      k.up = true
      k.sealed = h.sealed ?? k.sealed
      report.audit.writable = h.auditWritable ?? null
      const s = parseMetrics((await get(`${t.keydMetrics}/metrics`, timeoutMs)).text)
      const sign = (l: Record<string, string>): boolean => /^SIGN/.test(l.op ?? '')
      const ms = (v: number | null): number | null => v === null ? null : round(v * 1000, 3)
      k.signLatencyMs = {
        p50: ms(histogramQuantile(s, 'keyd_operation_duration_seconds', 0.5, l => sign(l) && l.phase === 'exec')),
        p99: ms(histogramQuantile(s, 'keyd_operation_duration_seconds', 0.99, l => sign(l) && l.phase === 'exec')),
        queueP99: ms(histogramQuantile(s, 'keyd_operation_duration_seconds', 0.99, l => sign(l) && l.phase === 'queue'))
      }
      if (has(s, 'keyd_operations_total') || has(s, 'keyd_sealed')) {
        k.operations = sumOf(s, 'keyd_operations_total')
        k.errors = sumOf(s, 'keyd_operations_total', l => l.result !== 'ok')
        k.errorRate = k.operations === 0 ? 0 : round(k.errors / k.operations, 6)
      }
    } catch (err) {
      if (t.socket === null || t.client === null) k.up = false
      report.problems.push(`keyd's metrics endpoint ${t.keydMetrics} does not answer (${why(err)})`)
    }
  }
  if (!k.up) report.problems.push(`keyd does not answer on ${t.socket ?? '(no socket configured)'} (${k.error ?? 'unreachable'}): start it with "npm start" or "npx keyedge keyd serve --dev" (docs/running.md)`)
  else if (k.sealed === true) report.problems.push('keyd is sealed: unseal it with "npx keyedge keyd unseal" (docs/runbooks)')
  else if (k.error !== null) report.problems.push(`keyd refused the status request: ${k.error}`)
}

/** Gathers the whole report. @throws UsageError when there is nothing to look at */
export async function gatherStatus (values: StatusSources, intervalMs: number, timeoutMs: number): Promise<StatusReport> {
  const t = targets(values)
  const report: StatusReport = {
    ok: false,
    time: new Date().toISOString(),
    proxy: { admin: t.admin, up: false, ready: null, readiness: null, workers: null, error: null },
    certificates: null,
    handshakes: null,
    keyd: { socket: t.socket, up: false, sealed: null, error: null, metrics: t.keydMetrics, signLatencyMs: null, operations: null, errors: null, errorRate: null },
    keys: null,
    audit: { state: 'unchecked', entries: null, lastSeq: null, checkpointSeq: null, problem: null, writable: null },
    problems: []
  }
  const proxy = probeProxy(t, intervalMs, timeoutMs, report).catch((err: unknown) => {
    report.problems.push(`the proxy's admin listener answered something unexpected: ${why(err)}`)
  })
  await Promise.all([proxy, probeKeyd(t, timeoutMs, report)])
  const audit = auditChainState(t.paths.keydDir, timeoutMs)
  report.audit = { ...audit, writable: report.audit.writable }
  if (audit.state === 'broken') report.problems.push(`the audit chain is broken: ${audit.problem ?? ''} (npx keyedge keyd audit verify --dev)`)
  if (report.audit.writable === false) report.problems.push('keyd cannot write its audit log: it refuses operations (fail-closed); see docs/runbooks')
  report.ok = report.proxy.up && report.proxy.ready === true && report.keyd.up && report.keyd.sealed !== true && audit.state !== 'broken' && report.audit.writable !== false
  return report
}

export async function main (argv: string[]): Promise<number> {
  let values
  try {
    values = parseArgs({
      args: argv,
      options: { help: { type: 'boolean', short: 'h' }, config: { type: 'string' }, home: { type: 'string' }, admin: { type: 'string' }, 'keyd-metrics': { type: 'string' }, json: { type: 'boolean' }, interval: { type: 'string' }, timeout: { type: 'string' } }
    }).values
  } catch (err) {
    process.stderr.write(`keyedge status: ${errorMessage(err)}\n\n${USAGE}`)
    return 2
  }
  if (values.help === true) { process.stdout.write(USAGE); return 0 }
  const intervalMs = Number(values.interval ?? 1000)
  const timeoutMs = Number(values.timeout ?? 2000)
  if (!Number.isInteger(intervalMs) || intervalMs < 0 || intervalMs > 60_000) { process.stderr.write('keyedge status: --interval must be 0-60000 (ms)\n'); return 2 }
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > 60_000) { process.stderr.write('keyedge status: --timeout must be 1-60000 (ms)\n'); return 2 }
  let report: StatusReport
  try {
    report = await gatherStatus({ ...values, ...(values.config !== undefined ? { config: resolve(values.config) } : {}) }, intervalMs, timeoutMs)
  } catch (err) {
    process.stderr.write(`keyedge status: ${errorMessage(err)}\n`)
    return err instanceof UsageError || errorCode(err) === 'EDGE_ERR_CONFIG_INVALID' ? 2 : 1
  }
  process.stdout.write(values.json === true ? JSON.stringify(report, null, 2) + '\n' : renderStatus(report))
  return report.ok ? 0 : 1
}
