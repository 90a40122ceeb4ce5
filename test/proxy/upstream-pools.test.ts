// End to end: a real `keyedge proxy` (one worker) in front of pools of real target processes:
// weights respected, hashing sticky (header, cookie, client address), a slow target avoided, a target killed mid-traffic (marked down
// by its health checks within the interval, no idempotent request lost), ejection, retries within
// the budget, 503 at once when no target is healthy, per-target metrics.
import { writeFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { tempHome } from '../helpers/paths.js'
import { spawnCli, spawnLogged, type Spawned } from '../helpers/processes.js'
import { get, refusedUrl, selfSigned } from '../helpers/proxy-fixtures.js'
import { adminMetrics, metric } from '../helpers/http-front.js'
import { until } from '../helpers/wait.js'
import { defined } from '../helpers/defined.js'

const TARGET = new URL('../helpers/pool-target.js', import.meta.url).pathname
const home = tempHome('keyedge-pools-')
const cert = selfSigned(home, 'localhost', ['localhost', '127.0.0.1'])
const started: Spawned[] = []

async function target (name: string, mode = 'ok'): Promise<{ url: string, proc: Spawned }> {
  const proc = spawnLogged(process.execPath, [TARGET, name, mode])
  started.push(proc)
  const line = await proc.waitFor(o => o.msg === 'listening', 15_000)
  return { url: `http://127.0.0.1:${line.port as number}`, proc }
}

const [a, b, c, d, e, slow, fast, sick, good, failing] = await Promise.all([
  target('a'), target('b'), target('c'), target('d'), target('e'), target('slow', 'slow'), target('fast'), target('sick', 'fail'), target('good'), target('failing', 'fail')
])
const refused1 = await refusedUrl()
const refused2 = await refusedUrl()
const check = { path: '/healthz', intervalMs: 200, timeoutMs: 500, unhealthyThreshold: 1, healthyThreshold: 1 }
const file = join(home, 'proxy.json')
writeFileSync(file, JSON.stringify({
  listen: { host: '127.0.0.1', port: 0 },
  workers: 1,
  certificates: [{ name: 'localhost', serverNames: ['localhost', '127.0.0.1'], files: [{ cert: cert.cert, key: cert.key }] }],
  routes: [
    { pathPrefix: '/wrr', upstreams: [{ url: a.url, weight: 3 }, { url: b.url }] },
    { pathPrefix: '/hash', upstreams: [{ url: a.url }, { url: b.url }, { url: c.url }], balance: { policy: 'hash', hashOn: 'header', hashKey: 'x-user' } },
    { pathPrefix: '/cookie', upstreams: [{ url: a.url }, { url: b.url }, { url: c.url }], balance: { policy: 'hash', hashOn: 'cookie', hashKey: 'sid' } },
    { pathPrefix: '/client', upstreams: [{ url: a.url }, { url: b.url }, { url: c.url }], balance: { policy: 'hash' } },
    { pathPrefix: '/slow', upstreams: [{ url: slow.url }, { url: fast.url }], balance: { policy: 'least_outstanding' } },
    { pathPrefix: '/kill', upstreams: [{ url: d.url }, { url: e.url }], healthCheck: check, outlier: { consecutiveFailures: 2 }, retry: { budgetPercent: 50 } },
    { pathPrefix: '/none', upstreams: [{ url: refused1 }, { url: refused2 }], healthCheck: check },
    { pathPrefix: '/retry', upstreams: [{ url: sick.url }, { url: good.url }], outlier: { consecutiveFailures: 0 }, retry: { retryOn: [503], budgetPercent: 100 } },
    { pathPrefix: '/budget', upstreams: [{ url: failing.url }, { url: sick.url }], outlier: { consecutiveFailures: 0 }, retry: { retryOn: [503], budgetPercent: 0, minRetries: 0 } },
    { pathPrefix: '/eject', upstreams: [{ url: failing.url }, { url: c.url }], outlier: { consecutiveFailures: 2, baseEjectionMs: 60_000 }, retry: { attempts: 0 } },
    { pathPrefix: '/refused', upstreams: [{ url: refused1 }] },
    { pathPrefix: '/', upstream: a.url }
  ],
  admin: { port: 0, drainDelayMs: 0 },
  log: { level: 'info' }
}))
const proxy = spawnCli(['proxy', '--config', file])
t.teardown(async () => {
  await proxy.stop('SIGKILL')
  await Promise.all(started.map(async p => await p.stop('SIGKILL')))
  rmSync(home, { recursive: true, force: true })
})
const port = (await proxy.waitFor(o => o.msg === 'proxy listening', 30_000)).port as number
const adminPort = (await proxy.waitFor(o => o.msg === 'admin listening', 10_000)).port as number
const ca = cert.certPem

const metrics = async (): Promise<string> => await adminMetrics(adminPort)

async function name (path: string, headers: Record<string, string> = {}): Promise<string> {
  const res = await get(port, { ca, path, headers })
  if (res.status !== 200) return `status ${res.status}`
  return (JSON.parse(res.body.toString()) as { name: string }).name
}

const tally = (names: string[]): Record<string, number> => names.reduce<Record<string, number>>((o, n) => { o[n] = (o[n] ?? 0) + 1; return o }, {})

t.test('the single upstream still works (a pool of one)', async t => {
  t.equal(await name('/'), 'a')
})

t.test('weighted round-robin: 3:1 over 40 requests', async t => {
  const names: string[] = []
  for (let i = 0; i < 40; i++) names.push(await name('/wrr'))
  t.same(tally(names), { a: 30, b: 10 })
  const text = await metrics()
  t.ok(metric(text, 'edge_upstream_requests_total', { route: '*/wrr', target: a.url }) >= 30, 'per-target request counter')
  t.ok(metric(text, 'edge_upstream_duration_seconds_count', { route: '*/wrr', target: b.url }) >= 10, 'per-target latency histogram')
})

t.test('consistent hashing on a header: the same user keeps its target', async t => {
  const owners = new Set<string>()
  for (const user of ['alice', 'bob', 'carol', 'dave', 'erin', 'frank']) {
    const seen = new Set<string>()
    for (let i = 0; i < 4; i++) seen.add(await name('/hash', { 'x-user': user }))
    t.equal(seen.size, 1, `${user} always reaches ${[...seen].join()}`)
    owners.add(defined([...seen][0], `${user}'s target`))
  }
  t.ok(owners.size >= 2, `six users spread over ${owners.size} targets`)
})

t.test('consistent hashing on a cookie and on the client address', async t => {
  for (const sid of ['s1', 's2', 's3']) {
    const seen = new Set<string>()
    for (let i = 0; i < 3; i++) seen.add(await name('/cookie', { cookie: `theme=dark; sid=${sid}` }))
    t.equal(seen.size, 1, `session ${sid} always reaches ${[...seen].join()}`)
  }
  const anonymous = new Set<string>()
  for (let i = 0; i < 3; i++) anonymous.add(await name('/cookie'))
  t.equal(anonymous.size, 3, 'without the cookie: round-robin over the three targets')
  const client = new Set<string>()
  for (let i = 0; i < 5; i++) client.add(await name('/client', { 'x-forwarded-for': `10.9.9.${i}` }))
  t.equal(client.size, 1, 'one client address (an untrusted X-Forwarded-For is ignored), one target')
})

t.test('least outstanding: a slow target gets few requests from 4 client loops', async t => {
  // Round-robin would park every loop on the slow target half the time (about as many requests to
  // each); with the power of two choices the slow one only gets a request when it is no busier.
  const names: string[] = []
  await Promise.all(Array.from({ length: 4 }, async () => {
    while (names.length < 48) names.push(await name('/slow'))
  }))
  const counts = tally(names)
  t.ok((counts.fast ?? 0) > (counts.slow ?? 0) * 3, `fast ${counts.fast ?? 0}, slow ${counts.slow ?? 0}`)
  t.equal((counts.fast ?? 0) + (counts.slow ?? 0), names.length, 'every request answered')
})

t.test('a target killed mid-traffic: marked down within the interval, no idempotent request lost', async t => {
  let stop = false
  const results: string[] = []
  const loops = Array.from({ length: 4 }, async () => {
    while (!stop) results.push(await name('/kill'))
  })
  await until(() => results.length >= 40, 15_000)
  const killedAt = Date.now()
  await e.proc.stop('SIGKILL')
  const checked = proxy.waitFor(o => o.msg === 'upstream target failed its health checks' && o.target === e.url, 10_000)
  const down = await until(async () => metric(await metrics(), 'edge_upstream_healthy', { route: '*/kill', target: e.url }) === 0, 10_000)
  const tookMs = Date.now() - killedAt
  await checked
  const checkMs = Date.now() - killedAt
  const after = results.length
  await until(() => results.length >= after + 40, 15_000)
  stop = true
  await Promise.all(loops)
  t.ok(down, `the killed target is reported down after ${tookMs} ms`)
  t.ok(checkMs < check.intervalMs + check.timeoutMs + 1000, `its health checks failed it ${checkMs} ms after the kill: within one interval and timeout (plus log slack)`)
  const bad = results.filter(r => r.startsWith('status'))
  t.same(bad, [], `none of ${results.length} requests failed`)
  t.ok(results.slice(after).every(r => r === 'd'), 'after that every request goes to the survivor')
  const text = await metrics()
  t.ok(metric(text, 'edge_upstream_requests_total', { route: '*/kill', target: e.url }) >= 10, 'the killed target had its share before')
})

t.test('no healthy target: 503 at once', async t => {
  await until(async () => metric(await metrics(), 'edge_upstream_healthy', { route: '*/none' }) === 0 &&
    (await metrics()).includes('route="*/none"'), 10_000)
  const startedAt = Date.now()
  const res = await get(port, { ca, path: '/none' })
  const ms = Date.now() - startedAt
  t.equal(res.status, 503)
  t.equal((JSON.parse(res.body.toString()) as { error: string }).error, 'no_healthy_upstream')
  t.ok(ms < 1000, `answered in ${ms} ms (TLS handshake included), without trying a target`)
  t.ok(metric(await metrics(), 'edge_proxy_requests_total', { outcome: 'no_healthy_upstream' }) >= 1)
})

t.test('a target that refuses: 502, and the log names the target', async t => {
  const res = await get(port, { ca, path: '/refused' })
  t.equal(res.status, 502)
  const line = await proxy.waitFor(o => o.msg === 'upstream request failed' && o.upstream === refused1, 5000)
  t.equal(line.code, 'ECONNREFUSED')
})

t.test('a 503 is retried on another target (idempotent only), within the budget', async t => {
  const names: string[] = []
  for (let i = 0; i < 10; i++) names.push(await name('/retry'))
  t.same(tally(names), { good: 10 }, 'every GET ends on the good target')
  const post = await get(port, { ca, path: '/retry', method: 'POST', body: 'x' })
  const post2 = await get(port, { ca, path: '/retry', method: 'POST', body: 'x' })
  t.same([post.status, post2.status].sort(), [200, 503], 'a POST is never retried: round-robin hands one to the failing target')
  t.ok(metric(await metrics(), 'edge_upstream_retries_total', { route: '*/retry', result: 'sent' }) >= 5)
})

t.test('a spent budget lets the failure through instead of retrying', async t => {
  for (let i = 0; i < 3; i++) t.equal((await get(port, { ca, path: '/budget' })).status, 503, 'the upstream\'s 503 is passed on')
  const text = await metrics()
  t.equal(metric(text, 'edge_upstream_retries_total', { route: '*/budget', result: 'sent' }), 0, 'no retry sent')
  t.equal(metric(text, 'edge_upstream_retries_total', { route: '*/budget', result: 'budget_exhausted' }), 3, 'each refused by the budget')
  t.equal(metric(text, 'edge_upstream_requests_total', { route: '*/budget' }), 3, 'one upstream request per client request')
})

t.test('consecutive 5xx eject a target; the pool then uses the rest', async t => {
  const names: string[] = []
  for (let i = 0; i < 12; i++) names.push(await name('/eject'))
  const firstFailures = names.filter(n => n !== 'c').length
  t.equal(firstFailures, 2, `two failures (threshold) before the ejection: ${names.join(',')}`)
  t.ok(names.slice(4).every(n => n === 'c'), 'then only the healthy target')
  const text = await metrics()
  t.equal(metric(text, 'edge_upstream_ejections_total', { route: '*/eject', target: failing.url }), 1)
  t.equal(metric(text, 'edge_upstream_healthy', { route: '*/eject', target: failing.url }), 0)
  t.ok(metric(text, 'edge_upstream_errors_total', { route: '*/eject', target: failing.url, kind: 'status_5xx' }) >= 2)
})
