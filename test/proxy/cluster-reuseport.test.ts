// The `reuseport` cluster scheduling (the default on Linux): one SO_REUSEPORT socket per worker,
// bound and kept by the primary. Each worker accepts on its own socket only (no worker wakes for
// another's connection); a worker that dies leaves its socket open, so connections queued on it are
// served by its replacement instead of being reset; `none` and `rr` still serve.
import { readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { schedulingPolicy } from '../../src/proxy/cluster.js'
import { canBindSlotSockets } from '../../src/proxy/slot-sockets.js'
import { startDemoUpstream } from '../../src/proxy/demo-upstream.js'
import { tempHome } from '../helpers/paths.js'
import { spawnCli, type Spawned } from '../helpers/processes.js'
import { get, selfSigned } from '../helpers/proxy-fixtures.js'
import { defined } from '../helpers/defined.js'
import { until } from '../helpers/wait.js'
import { errorCode } from '../../lib/errors.js'

const home = tempHome('keyedge-reuseport-')
t.teardown(() => rmSync(home, { recursive: true, force: true }))
const cert = selfSigned(home, 'a', ['localhost'])
const demo = await startDemoUpstream({ port: 0 })
t.teardown(async () => await demo.close())
const config = join(home, 'proxy.json')
writeFileSync(config, JSON.stringify({
  listen: { host: '127.0.0.1', port: 0 },
  certificates: [{ name: 'localhost', serverNames: ['localhost'], files: [{ cert: cert.cert, key: cert.key }] }],
  routes: [{ upstream: demo.url }]
}))

/** The sockets listening on `port` (from /proc/net/tcp): inode → connections waiting in its accept queue. */
function listeners (port: number): Map<number, number> {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0')
  const out = new Map<number, number>()
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/)
    // For a listening socket, rx_queue is the accept queue's length.
    if (f[1]?.endsWith(`:${hexPort}`) === true && f[3] === '0A') out.set(Number(f[9]), parseInt(f[4]?.split(':')[1] ?? '0', 16))
  }
  return out
}

const listeningInodes = (port: number): Set<number> => new Set(listeners(port).keys())

/** Inodes of the sockets `pid` has open. */
function socketInodes (pid: number): Set<number> {
  const out = new Set<number>()
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))
      if (m !== null) out.add(Number(m[1]))
    } catch { /* closed meanwhile */ }
  }
  return out
}

const NO_REUSEPORT = process.platform !== 'linux' ? 'SO_REUSEPORT balancing is Linux-only' : !canBindSlotSockets ? 'this Node.js has no net.BoundSocket' : false

const intersect = (a: Set<number>, b: Set<number>): number[] => [...a].filter(x => b.has(x))

/** The pids of the workers that logged 'certificate loaded' (each worker logs it once at start). */
function workerPids (proxy: Spawned): number[] {
  return [...new Set(proxy.lines.flatMap(l => {
    try { const o = JSON.parse(l); return o.msg === 'certificate loaded' ? [o.pid as number] : [] } catch { return [] }
  }))]
}

async function startProxy (t: Test, env: Record<string, string> = { KEYEDGE_CLUSTER_SCHED: 'reuseport' }): Promise<{ proxy: Spawned, port: number }> {
  const proxy = spawnCli(['proxy', '--config', config, '--workers', '2'], env)
  t.teardown(async () => await proxy.stop('SIGKILL'))
  const { port } = await proxy.waitFor(o => o.msg === 'proxy listening') as { port: number }
  await until(() => workerPids(proxy).length >= 2, 10_000)
  return { proxy, port }
}

t.test('the scheduling policy: a shared socket by default, reuseport when asked, and only known values', async t => {
  t.equal(schedulingPolicy({}, true), 'none', 'load-aware accept by default (a stuck worker accepts nothing)')
  t.equal(schedulingPolicy({}, false), 'none', 'a runtime without net.BoundSocket shares one socket')
  t.throws(() => schedulingPolicy({ KEYEDGE_CLUSTER_SCHED: 'reuseport' }, false), { code: 'EDGE_ERR_CONFIG_INVALID', message: /needs Node.js 24.19/ })
  for (const v of ['reuseport', 'none', 'rr'] as const) t.equal(schedulingPolicy({ KEYEDGE_CLUSTER_SCHED: v }, true), v)
  t.throws(() => schedulingPolicy({ KEYEDGE_CLUSTER_SCHED: 'herd' }), { code: 'EDGE_ERR_CONFIG_INVALID', message: /must be "reuseport", "none" or "rr"/ })
})

t.test('each worker accepts on its own socket; the primary holds both and never a third', { skip: NO_REUSEPORT }, async t => {
  const { proxy, port } = await startProxy(t)
  t.match(proxy.lines.join('\n'), /"schedulingPolicy":"reuseport"/)
  const listening = listeningInodes(port)
  t.equal(listening.size, 2, 'two listening sockets on the port')
  const [w1, w2] = workerPids(proxy).map(pid => intersect(socketInodes(pid), listening))
  t.equal(w1?.length, 1, 'the first worker has one of them')
  t.equal(w2?.length, 1, 'the second worker has one of them')
  t.not(w1?.[0], w2?.[0], 'not the same one')
  t.same(intersect(socketInodes(defined(proxy.proc.pid, 'primary pid')), listening).sort(), [...listening].sort(), 'the primary keeps both')
  const answers = await Promise.all(Array.from({ length: 8 }, async () => (await get(port, { ca: cert.certPem })).status))
  t.same(answers, Array(8).fill(200))
})

t.test('connections queued on a worker that dies are served by its replacement, on the same socket', { skip: NO_REUSEPORT }, async t => {
  const { proxy, port } = await startProxy(t)
  const listening = listeningInodes(port)
  const [victim, survivor] = workerPids(proxy)
  const victimPid = defined(victim, 'a worker pid')
  const victimSocket = defined(intersect(socketInodes(victimPid), listening)[0], "the victim's socket")
  // Stopped, the victim accepts nothing: the connections the kernel gives its socket wait in its queue.
  process.kill(victimPid, 'SIGSTOP')
  const replies = Array.from({ length: 16 }, async () => await get(port, { ca: cert.certPem }).then(r => r.status, (err: unknown) => errorCode(err) ?? String(err)))
  // The kernel spreads them over both sockets (all 16 on the survivor's: odds 1 in 65,536).
  t.ok(await until(() => (listeners(port).get(victimSocket) ?? 0) > 0, 10_000), "connections wait in the stopped worker's accept queue")
  process.kill(victimPid, 'SIGKILL')
  await proxy.waitFor(o => o.msg === 'worker died, restarting it' && o.workerPid === victimPid)
  t.ok(listeningInodes(port).has(victimSocket), "the dead worker's socket still listens (the primary holds it)")
  t.same(await Promise.all(replies), Array(16).fill(200), 'every queued connection is served, none reset')
  const isNew = (pid: number): boolean => pid !== victimPid && pid !== survivor
  t.ok(await until(() => workerPids(proxy).some(isNew), 10_000), 'a new worker started')
  const replacement = workerPids(proxy).find(isNew)
  t.ok(socketInodes(defined(replacement, 'replacement pid')).has(victimSocket), 'the new worker took over the same socket')
})

t.test('shared-socket (none) and round-robin (rr) scheduling still serve', async t => {
  for (const sched of ['none', 'rr']) {
    const { proxy, port } = await startProxy(t, { KEYEDGE_CLUSTER_SCHED: sched })
    t.match(proxy.lines.join('\n'), new RegExp(`"schedulingPolicy":"${sched}"`))
    t.equal(listeningInodes(port).size, 1, `${sched}: one listening socket`)
    const answers = await Promise.all(Array.from({ length: 4 }, async () => (await get(port, { ca: cert.certPem })).status))
    t.same(answers, Array(4).fill(200), `${sched}: answered`)
    await proxy.stop()
  }
})

t.test('the proxy stops listening when it stops: no socket left behind', { skip: NO_REUSEPORT }, async t => {
  const { proxy, port } = await startProxy(t)
  t.equal(listeningInodes(port).size, 2)
  proxy.proc.kill('SIGTERM')
  await proxy.waitFor(o => o.msg === 'proxy stopped')
  t.ok(await until(() => listeningInodes(port).size === 0, 10_000), 'nothing listens on the port')
})
