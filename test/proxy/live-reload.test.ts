// Live reload of routes and pools, end to end: a real `keyedge proxy` (two workers) under continuous
// keep-alive traffic has its config file changed — reloaded by the file watcher, by SIGHUP and by
// POST /reload — and no request fails; new requests go to the new targets; a long request in flight
// on the old target completes; the replaced pools' connections and health checks end; a target kept
// across a reload keeps its health state; a new per-route limit applies; restart-only settings are
// reported and kept; an invalid config changes nothing and is refused with its field path.
import { once } from 'node:events'
import { rmSync, writeFileSync } from 'node:fs'
import { createServer, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { join } from 'node:path'
import t from 'tap'
import { Client, Pool } from 'undici'
import { metric } from '../helpers/http-front.js'
import { tempHome } from '../helpers/paths.js'
import { spawnCli } from '../helpers/processes.js'
import { selfSigned } from '../helpers/proxy-fixtures.js'
import { until } from '../helpers/wait.js'
import { admin as adminCall, type AdminReply } from '../helpers/rotation.js'

/** A target answering `{"name"}`; `/long` is held until `release()`; `/healthz` hangs when `hangHealth`. */
interface Target {
  name: string
  url: string
  /** Connections open now. */
  open: () => number
  healthChecks: () => number
  longArrived: Promise<void>
  release: () => void
  close: () => Promise<void>
}

async function target (name: string, opts: { hangHealth?: boolean } = {}): Promise<Target> {
  const sockets = new Set<Socket>()
  const hung: ServerResponse[] = []
  let checks = 0
  let held: ServerResponse | undefined
  let arrived: () => void = () => {}
  const longArrived = new Promise<void>(resolve => { arrived = resolve })
  const body = JSON.stringify({ name })
  const answer = (res: ServerResponse): void => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
    res.end(body)
  }
  const server = createServer((req, res) => {
    req.resume()
    if (req.url === '/healthz') {
      checks++
      if (opts.hangHealth === true) hung.push(res)
      else answer(res)
    } else if (req.url === '/long') {
      held = res
      arrived()
    } else {
      answer(res)
    }
  })
  server.on('connection', (s: Socket) => { sockets.add(s); s.once('close', () => sockets.delete(s)) })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return {
    name,
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    open: () => sockets.size,
    healthChecks: () => checks,
    longArrived,
    release: () => { if (held !== undefined) answer(held) },
    close: async () => {
      for (const s of sockets) s.destroy()
      await new Promise(resolve => server.close(resolve))
    }
  }
}

const home = tempHome('keyedge-live-reload-')
const cert = selfSigned(home, 'localhost', ['localhost'])
const [old, a, sick, c] = await Promise.all([target('old'), target('a'), target('sick', { hangHealth: true }), target('c')])
// Health checks that time out (2 s) on `sick`: a target not carried over would get traffic for 2 s.
const check = { path: '/healthz', intervalMs: 200, timeoutMs: 2000, unhealthyThreshold: 1, healthyThreshold: 1 }
const file = join(home, 'proxy.json')
const base = {
  listen: { host: '127.0.0.1', port: 0 },
  workers: 2,
  certificates: [{ name: 'localhost', serverNames: ['localhost'], files: [{ cert: cert.cert, key: cert.key }] }],
  admin: { port: 0, drainDelayMs: 0 },
  log: { level: 'info' }
}
const write = (routes: unknown[], extra: Record<string, unknown> = {}): void => writeFileSync(file, JSON.stringify({ ...base, ...extra, routes }, null, 2))
write([{ pathPrefix: '/limited', upstream: old.url }, { pathPrefix: '/', upstream: old.url }])

const proxy = spawnCli(['proxy', '--config', file])
const pool = { current: undefined as Pool | undefined }
t.teardown(async () => {
  await pool.current?.destroy()
  await proxy.stop('SIGKILL')
  await Promise.all([old, a, sick, c].map(async x => await x.close()))
  rmSync(home, { recursive: true, force: true })
})
const port = (await proxy.waitFor(o => o.msg === 'proxy listening', 30_000)).port as number
const adminPort = (await proxy.waitFor(o => o.msg === 'admin listening', 10_000)).port as number
const origin = `https://127.0.0.1:${port}`
const connect = { ca: cert.certPem, servername: 'localhost' }

const admin = async (path: string, method = 'GET'): Promise<AdminReply> => await adminCall(adminPort, path, method)
const logged = (pred: (o: Record<string, unknown>) => boolean): number => proxy.lines.filter(l => { try { return pred(JSON.parse(l)) } catch { return false } }).length
const healthy = async (url: string): Promise<number> => metric((await admin('/metrics')).body, 'edge_upstream_healthy', { route: '*/', target: url })

// Continuous traffic: 4 loops on 4 keep-alive connections, each answer recorded in order.
interface Answer { status: number, name: string, startedAt: number }
const answers: Answer[] = []
const failures: string[] = []
let running = true
pool.current = new Pool(origin, { connections: 4, connect })
const traffic = Promise.all(Array.from({ length: 4 }, async () => {
  while (running) {
    const startedAt = Date.now()
    try {
      const res = await defined(pool.current).request({ method: 'GET', path: '/', headers: { host: 'localhost' } })
      const text = await res.body.text()
      const name = res.statusCode === 200 ? (JSON.parse(text) as { name: string }).name : text
      answers.push({ status: res.statusCode, name, startedAt })
      if (res.statusCode !== 200) failures.push(`status ${res.statusCode}: ${text}`)
    } catch (err) {
      failures.push(err instanceof Error ? err.message : String(err))
      answers.push({ status: 0, name: '', startedAt })
    }
  }
}))
function defined<T> (v: T | undefined): T {
  if (v === undefined) throw new Error('undefined')
  return v
}
const namesSince = (at: number): Set<string> => new Set(answers.filter(x => x.startedAt >= at).map(x => x.name))

t.test('edit the file: new requests go to the new pool, a long request on the old target completes, the old pool closes after it', async t => {
  t.ok(await until(() => answers.length >= 20, 15_000), 'traffic flows')
  t.same([...namesSince(0)], ['old'], 'to the first upstream')
  const longClient = new Client(origin, { connect })
  t.teardown(async () => await longClient.close())
  const long = longClient.request({ method: 'GET', path: '/long', headers: { host: 'localhost' } })
  await old.longArrived
  const limited = new Client(origin, { connect })
  t.teardown(async () => await limited.close())
  const limitedStatus = async (): Promise<number> => {
    const res = await limited.request({ method: 'GET', path: '/limited', headers: { host: 'localhost' } })
    await res.body.dump()
    return res.statusCode
  }
  t.same([await limitedStatus(), await limitedStatus(), await limitedStatus()], [200, 200, 200], 'no limit on /limited before')

  write([
    { pathPrefix: '/limited', upstream: a.url, requestsPerSecondPerClient: 1, requestBurstPerClient: 1 },
    { pathPrefix: '/', upstreams: [{ url: a.url }, { url: sick.url }], healthCheck: check }
  ])
  t.ok(await proxy.waitFor(o => o.msg === 'config reloaded: new requests use the new settings' && o.trigger === 'file-change', 15_000), 'the file watcher reloaded the config')
  const at = Date.now()
  t.ok(await until(() => answers.filter(x => x.startedAt >= at).length >= 20, 15_000))
  t.notOk(namesSince(at).has('old'), 'requests started after the reload never reach the old target')
  t.ok(namesSince(at).has('a'), 'they reach the new pool')
  const statuses = [await limitedStatus(), await limitedStatus()]
  t.same(statuses, [200, 429], 'the new per-route limit applies (one keep-alive connection: one worker)')

  t.ok(old.open() > 0, 'the old target still has the long request\'s connection')
  old.release()
  const res = await long
  t.equal(res.statusCode, 200, 'the long request in flight on the old target completes')
  t.same(JSON.parse(await res.body.text()), { name: 'old' })
  t.ok(await until(() => old.open() === 0, 10_000), 'then the old pool closes its connections')
  t.ok(await until(() => logged(o => o.msg === 'upstream target failed its health checks' && o.target === sick.url) >= 2, 15_000), 'the hanging health check marks `sick` down in both workers')
})

t.test('SIGHUP: a target kept across the reload keeps its health state and a new one is added', async t => {
  const sickBefore = answers.filter(x => x.name === 'sick').length
  write([
    { pathPrefix: '/limited', upstream: a.url, requestsPerSecondPerClient: 1, requestBurstPerClient: 1 },
    { pathPrefix: '/', upstreams: [{ url: a.url }, { url: sick.url }, { url: c.url }], healthCheck: check }
  ])
  // Before the watcher's debounce (200 ms): the SIGHUP reload reads the new file.
  proxy.proc.kill('SIGHUP')
  const line = await proxy.waitFor(o => o.msg === 'config reloaded: new requests use the new settings' && o.trigger !== 'file-change', 15_000)
  t.equal(line.trigger, 'SIGHUP')
  const at = Date.now()
  t.ok(await until(() => namesSince(at).has('c'), 10_000), 'the new target gets traffic')
  t.ok(await until(() => answers.filter(x => x.startedAt >= at).length >= 40, 15_000))
  t.equal(answers.filter(x => x.name === 'sick').length, sickBefore, 'the target known down stays down: not one request to it')
  t.equal(await healthy(sick.url), 0, 'and the gauge shows it down')
  t.equal(await healthy(c.url), 1, 'the gauge shows the new pool')
})

t.test('POST /reload: restart-only settings are reported and kept; removed targets lose their connections and health checks', async t => {
  write([{ pathPrefix: '/', upstreams: [{ url: c.url }], healthCheck: check }], { workers: 3 })
  const r = await admin('/reload', 'POST')
  t.equal(r.status, 200)
  const report = JSON.parse(r.body) as { applied: string[], restartRequired: string[] }
  t.same(report.applied, ['routes'], 'the routes were applied live')
  t.same(report.restartRequired, ['workers'], 'the worker count needs a restart')
  t.ok(logged(o => o.msg === 'config changes that take effect only at restart: these settings keep their old values until then') >= 1, 'and the log says so')
  const at = Date.now()
  t.ok(await until(() => answers.filter(x => x.startedAt >= at).length >= 20, 15_000))
  t.same([...namesSince(at)], ['c'], 'only the remaining target gets requests')
  t.ok(await until(() => a.open() === 0, 10_000), 'the removed target\'s pool is closed')
  const checks = a.healthChecks()
  const cChecks = c.healthChecks()
  t.ok(await until(() => c.healthChecks() >= cChecks + 6, 10_000), 'three more rounds of checks on the remaining target (two workers)')
  t.equal(a.healthChecks(), checks, 'none on the removed one: its health checks stopped')
  t.notOk((await admin('/metrics')).body.includes(`edge_upstream_healthy{route="*/",target="${a.url}"}`), 'it left the health gauge')
})

t.test('an invalid config changes nothing and is refused with the field path', async t => {
  write([{ pathPrefix: '/', upstreams: [{ url: a.url, weight: -1 }] }])
  const r = await admin('/reload', 'POST')
  t.equal(r.status, 422)
  const report = JSON.parse(r.body) as { ok: boolean, errors: string[], applied: string[] }
  t.equal(report.ok, false)
  t.match(report.errors.join('\n'), /routes\[0\]\.upstreams\[0\]\.weight/, 'the error names the field')
  t.same(report.applied, [])
  t.ok(await until(() => logged(o => o.code === 'EDGE_ERR_RELOAD_REFUSED') >= 1, 5_000), 'the log says the reload was refused')
  const at = Date.now()
  t.ok(await until(() => answers.filter(x => x.startedAt >= at).length >= 20, 15_000))
  t.same([...namesSince(at)], ['c'], 'traffic still goes where it went')
})

t.test('not one request failed through all the reloads', async t => {
  running = false
  await traffic
  t.same(failures, [], `${answers.length} requests`)
  t.ok(answers.length > 100)
})
