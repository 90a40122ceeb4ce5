// A real Prometheus (Debian's package; its own instance on a free loopback port, its data in a temp
// dir) scrapes a running keyd and proxy with deploy/prometheus/prometheus.yml's jobs and evaluates
// deploy/prometheus/keyedge.rules.yml every second. The test drives traffic (full and resumed TLS
// handshakes with requests, a refused client, an access violation, a key rotation, a backup export and
// a restore drill into a scratch keyd), then every recording rule and every query of every panel of
// deploy/grafana/keyedge.json must return data, and no rule may fail to evaluate.
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { parse, stringify } from 'yaml'
import { ROOT, tempHome } from '../helpers/paths.js'
import { startStack, startProxy, curl } from '../helpers/edge.js'
import { startKeyd, refusal } from '../helpers/keyd.js'
import { runCli } from '../helpers/backup.js'
import { visit } from '../helpers/resume.js'
import { tls13Input } from '../helpers/tls-inputs.js'
import { KeydClient } from '../../keyd/client/client.js'

interface Panel { type: string, title: string, targets?: Array<{ expr: string }> }

/**
 * Series the dashboard can show that this test cannot produce, and why. The test checks that they are
 * indeed absent (so the list stays true) and leaves them out of nothing else: every query still has data.
 */
const NOT_PRODUCED: Array<{ query: string, why: string }> = [
  { query: 'edge_tls_handshake_duration_seconds_count{custody="in_process"}', why: 'custody in_process needs a PEM private key in the proxy\'s files, which the test stack (like any keyedge deployment meant to be one) never has' },
  { query: 'keyedge_restore_drill_last_success_timestamp_seconds', why: 'written by node_exporter\'s textfile collector after a manual drill; the drill here is a scratch keyd scraped while it restores (keyd_backup_last_success_timestamp_seconds{kind="restore"})' },
  { query: 'keyd_refused_total{reason=~"INTERNAL|TOKEN_TIMEOUT|SEALED|AUDIT_UNAVAILABLE|OVERLOADED"} > 0', why: 'keyd\'s own failures (internal error, PKCS#11 token timeout, sealed, unwritable audit log, overload) are driven by their own tests (test/keyd/); the availability queries have data from the successful operations' }
]

const rulesFile = join(ROOT, 'deploy', 'prometheus', 'keyedge.rules.yml')
const dashboard = JSON.parse(readFileSync(join(ROOT, 'deploy', 'grafana', 'keyedge.json'), 'utf8')) as { panels: Panel[] }
const records = (parse(readFileSync(rulesFile, 'utf8')) as { groups: Array<{ rules: Array<{ record?: string }> }> })
  .groups.flatMap(g => g.rules).map(r => r.record).filter((r): r is string => r !== undefined)
const panelQueries = dashboard.panels.filter(p => p.type !== 'row').flatMap(p => (p.targets ?? []).map(q => ({ panel: p.title, expr: q.expr })))

async function freePort (): Promise<number> {
  const s = createServer().listen(0, '127.0.0.1')
  await once(s, 'listening')
  const port = (s.address() as { port: number }).port
  s.close()
  await once(s, 'close')
  return port
}

const stack = await startStack({ keyd: async () => await startKeyd(undefined, ['--metrics-port', '0']) })
t.teardown(async () => { await stack.stop() })
const keydPort = (await stack.keyd.waitFor(o => o.msg === 'keyd ready')).metricsPort as number
const proxy = await startProxy(stack, { admin: {} })
t.teardown(async () => { await proxy.stop() })
// The restore drill's scratch keyd: empty, its own dev master key, scraped as job keyd-drill.
const drillHome = tempHome('keyedge-drill-')
const drill = await startKeyd(drillHome, ['--metrics-port', '0'])
t.teardown(async () => { await drill.stop(); rmSync(drillHome, { recursive: true, force: true }) })
const drillPort = (await drill.waitFor(o => o.msg === 'keyd ready')).metricsPort as number

// Prometheus: deploy/prometheus/prometheus.yml with these targets, 1 s intervals, the rules by path.
const promDir = tempHome('keyedge-prom-')
t.teardown(() => rmSync(promDir, { recursive: true, force: true }))
const config = parse(readFileSync(join(ROOT, 'deploy', 'prometheus', 'prometheus.yml'), 'utf8')) as { global: Record<string, string>, rule_files: string[], scrape_configs: Array<{ job_name: string, static_configs: Array<{ targets: string[] }> }> }
const targets: Record<string, number> = { keyd: keydPort, 'keyedge-proxy': proxy.adminPort as number }
t.same(config.scrape_configs.map(c => c.job_name).sort(), Object.keys(targets).sort(), 'the example config has the jobs the rules expect')
config.global = { scrape_interval: '1s', evaluation_interval: '1s', scrape_timeout: '1s' }
config.rule_files = [rulesFile]
for (const c of config.scrape_configs) c.static_configs = [{ targets: [`127.0.0.1:${targets[c.job_name] ?? 0}`] }]
config.scrape_configs.push({ job_name: 'keyd-drill', static_configs: [{ targets: [`127.0.0.1:${drillPort}`] }] })
writeFileSync(join(promDir, 'prometheus.yml'), stringify(config))
const promPort = await freePort()
const api = `http://127.0.0.1:${promPort}`
const prom: ChildProcess = spawn('prometheus', [
  `--config.file=${join(promDir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(promDir, 'data')}`,
  `--web.listen-address=127.0.0.1:${promPort}`, '--storage.tsdb.retention.time=1h', '--log.level=warn'
], { stdio: ['ignore', 'ignore', 'pipe'] })
let promLog = ''
prom.stderr?.on('data', (b: Buffer) => { promLog = (promLog + b.toString()).slice(-4000) })
// No prometheus binary: say so (Debian: apt-get install prometheus; .ci/run installs it).
prom.on('error', (err: NodeJS.ErrnoException) => { promLog += `cannot run prometheus (${err.code ?? err.message}): apt-get install prometheus` })
t.teardown(async () => {
  if (prom.exitCode === null && prom.pid !== undefined) {
    process.kill(prom.pid, 'SIGTERM')
    await once(prom, 'exit')
  }
})

/** Polls `f` until it returns a value, every 250 ms, for at most `ms`; undefined on timeout. */
async function poll<T> (ms: number, f: () => Promise<T | undefined>): Promise<T | undefined> {
  const end = Date.now() + ms
  for (;;) {
    const v = await f().catch(() => undefined)
    if (v !== undefined || Date.now() > end) return v
    await new Promise(resolve => setTimeout(resolve, 250))
  }
}

async function query (expr: string): Promise<unknown[]> {
  const res = await fetch(`${api}/api/v1/query?query=${encodeURIComponent(expr)}`)
  const body = await res.json() as { status: string, error?: string, data?: { result: unknown[] } }
  if (body.status !== 'success') throw new Error(`${expr}: ${body.error ?? res.status}`)
  return body.data?.result ?? []
}

t.test('Prometheus scrapes keyd, the proxy and the drill keyd', async t => {
  // Deadlines: 15 s to start, 15 s for the first scrapes, 25 s for the queries (< 60 s in all).
  const ready = await poll(15_000, async () => (await fetch(`${api}/-/ready`)).ok ? true : undefined)
  t.ok(ready, `prometheus ready on 127.0.0.1:${promPort} (${promLog})`)
  const up = await poll(15_000, async () => {
    const r = await query('up == 1') as Array<{ metric: { job: string } }>
    return r.length === 3 ? r.map(s => s.metric.job).sort() : undefined
  })
  t.same(up, ['keyd', 'keyd-drill', 'keyedge-proxy'], 'all three targets up')
})

t.test('traffic: handshakes, requests, keyd operations, a backup and a drill', async t => {
  const ca = readFileSync(stack.caFile)
  // Full handshakes, then resumed ones (TLS 1.3 tickets and TLS 1.2), each with one request.
  for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
    let session: Buffer | undefined
    for (let i = 0; i < 4; i++) {
      const v = await visit(proxy.port, ca, version, session)
      t.equal(v.error, undefined, `${version} visit ${i}`)
      session = v.session
    }
  }
  const r = await curl(['--cacert', stack.caFile, '--resolve', `localhost:${proxy.port}:127.0.0.1`, `https://localhost:${proxy.port}/`])
  t.equal(r.code, 0, r.stderr)
  // Signatures straight from a keyd client, and an access violation: the proxy client asking for
  // the dev CA key (cert-sign), outside its rights.
  const client = stack.keyd.client('proxy')
  t.teardown(() => client.close())
  for (let i = 0; i < 5; i++) await client.sign('localhost-ec', 'ecdsa-sha256', tls13Input())
  t.equal((await refusal(client.sign('dev-ca', 'ecdsa-sha256', Buffer.from('tbs')))).code, 'KEYD_ERR_USAGE_FORBIDDEN')
  // A refused client: the proxy's name with a wrong secret.
  const wrongSecret = join(promDir, 'wrong.secret')
  writeFileSync(wrongSecret, 'not-the-secret\n', { mode: 0o600 })
  const intruder = new KeydClient({ socketPath: stack.keyd.paths.socket, clientName: 'proxy', secretFile: wrongSecret, timeoutMs: 5000 })
  t.match(await intruder.ping().then(() => 'answered', (e: unknown) => e), { code: 'KEYD_ERR_UNKNOWN_CLIENT' })
  intruder.close()
  // A rotation.
  await stack.keyd.admin.createKey('rotated', 'ec-p256', 'tls-server')
  await stack.keyd.admin.rotateKey('rotated')
  // A backup export, restored into the drill's scratch keyd.
  const bundle = join(promDir, 'keys.bundle')
  const pass = join(promDir, 'backup.pass')
  writeFileSync(pass, 'a backup passphrase for the drill\n', { mode: 0o600 })
  const exported = await runCli(['keyd', 'backup', 'export', '--out', bundle, '--passphrase-file', pass], { KEYEDGE_HOME: stack.keyd.paths.home })
  t.equal(exported.code, 0, exported.err)
  const restored = await runCli(['keyd', 'backup', 'restore', '--in', bundle, '--passphrase-file', pass], { KEYEDGE_HOME: drillHome })
  t.equal(restored.code, 0, restored.err)
})

t.test('every recording rule and every panel query returns data; no rule fails', async t => {
  const queries = [...records.map(r => ({ panel: `recording rule ${r}`, expr: r })), ...panelQueries]
  t.ok(panelQueries.length >= 30, `${panelQueries.length} panel queries`)
  // Rates need two samples of each new series: poll each query with one shared deadline of 25 s.
  const end = Date.now() + 25_000
  for (const q of queries) {
    const result = await poll(Math.max(0, end - Date.now()), async () => {
      const r = await query(q.expr)
      return r.length > 0 ? r : undefined
    })
    t.ok(result !== undefined && result.length > 0, `${q.panel}: ${q.expr}`)
  }
  const rules = await (await fetch(`${api}/api/v1/rules`)).json() as { data: { groups: Array<{ rules: Array<{ name: string, health: string, lastError?: string }> }> } }
  const all = rules.data.groups.flatMap(g => g.rules)
  t.ok(all.length >= records.length)
  for (const r of all) t.equal(r.health, 'ok', `${r.name} evaluates${r.lastError !== undefined && r.lastError !== '' ? `: ${r.lastError}` : ''}`)
})

t.test('the SLIs say what the traffic did', async t => {
  const value = async (expr: string): Promise<number> => Number((await query(expr) as Array<{ value: [number, string] }>)[0]?.value[1])
  const handshakes = await query('keyedge:edge_handshakes:rate5m') as Array<{ metric: Record<string, string> }>
  t.same(handshakes.map(s => `${s.metric.resumed ?? ''}/${s.metric.custody ?? ''}`).sort(), ['full/keyd', 'resumed/keyd'], 'full and resumed handshakes, keys in keyd')
  t.equal(await value('min(keyedge:keyd_audit_completeness:ratio)'), 1, 'every operation audited')
  t.equal(await value('sum(keyedge:keyd_unaudited_operations)'), 0, 'no operation without its audit entry')
  t.equal(await value('keyedge:keyd_availability:ratio_rate5m'), 1, 'no keyd failure (the USAGE_FORBIDDEN is the client\'s)')
  const headroom = await value('keyedge:keyd_capacity_headroom:ratio')
  t.ok(headroom > 0 && headroom <= 1, `headroom ${headroom}`)
  const age = await value('keyedge:keyd_backup_age_seconds')
  t.ok(age >= 0 && age < 120, `backup age ${age} s`)
  t.ok(await value('keyedge:keyd_sign_latency_seconds:p99_5m') < 0.2, 'p99 sign latency within the SLO')
  t.equal(await value('sum(keyedge:keyd_access_violations:rate5m) > bool 0'), 1, 'the access violation is counted')
  const alerts = await query('ALERTS{alertstate="firing"}') as Array<{ metric: Record<string, string> }>
  // For-less alerts fire at once: the test's access violation and refused client.
  t.ok(alerts.some(a => a.metric.alertname === 'KeydAccessViolation'), 'KeydAccessViolation fires')
  t.ok(alerts.some(a => a.metric.alertname === 'KeydClientRefused'), 'KeydClientRefused fires')
})

t.test('what the test cannot produce is absent, and said why', async t => {
  for (const n of NOT_PRODUCED) {
    t.same(await query(n.query), [], `not produced: ${n.query} (${n.why})`)
  }
})
