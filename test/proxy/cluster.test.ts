// The cluster primary as a real process: a dead worker is replaced, a worker that cannot start
// stops the proxy with exit code 1 and a clear error, and --help prints usage.
import { once } from 'node:events'
import { rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { startDemoUpstream } from '../../src/proxy/demo-upstream.js'
import { tempHome } from '../helpers/paths.js'
import { spawnCli } from '../helpers/processes.js'
import { get, selfSigned } from '../helpers/proxy-fixtures.js'
import { defined } from '../helpers/defined.js'
import { until } from '../helpers/wait.js'

const home = tempHome('keyedge-cluster-')
t.teardown(() => rmSync(home, { recursive: true, force: true }))
const a = selfSigned(home, 'a', ['localhost'])
const b = selfSigned(home, 'b', ['localhost'])

function writeConfig (name: string, files: Array<{ cert: string, key: string }>, upstream: string): string {
  const file = join(home, name)
  writeFileSync(file, JSON.stringify({
    listen: { host: '127.0.0.1', port: 0 },
    certificates: [{ name: 'localhost', serverNames: ['localhost'], files }],
    routes: [{ upstream }]
  }))
  return file
}

t.test('a worker that dies is restarted and the proxy keeps serving', async t => {
  const demo = await startDemoUpstream({ port: 0 })
  const proxy = spawnCli(['proxy', '--config', writeConfig('ok.json', [{ cert: a.cert, key: a.key }], demo.url), '--workers', '2'])
  t.teardown(async () => { await proxy.stop('SIGKILL'); await demo.close() })
  const { port } = await proxy.waitFor(o => o.msg === 'proxy listening') as { port: number }
  // Each worker writes its own lines (asynchronously): the primary's 'proxy listening' may come first.
  const loadedBy = (): Set<number> => new Set(proxy.lines.flatMap(l => {
    try { const o = JSON.parse(l); return o.msg === 'certificate loaded' ? [o.pid as number] : [] } catch { return [] }
  }))
  await until(() => loadedBy().size >= 2, 10_000)
  const workerPids = loadedBy()
  t.equal(workerPids.size, 2)
  const victim = defined([...workerPids][0], 'a worker pid')
  process.kill(victim, 'SIGKILL')
  const died = await proxy.waitFor(o => o.msg === 'worker died, restarting it')
  t.equal(died.workerPid, victim)
  await proxy.waitFor(o => o.msg === 'certificate loaded' && !workerPids.has(o.pid as number))
  for (let i = 0; i < 4; i++) t.equal((await get(port, { ca: a.certPem })).status, 200)
  const exited = once(proxy.proc, 'exit')
  proxy.proc.kill('SIGINT')
  t.equal((await exited)[0], 0, 'SIGINT stops it with exit code 0')
})

t.test('a worker that cannot start stops the proxy with a clear error', async t => {
  const proxy = spawnCli(['proxy', '--config', writeConfig('mismatch.json', [{ cert: a.cert, key: b.key }], 'http://127.0.0.1:1'), '--workers', '1'])
  t.teardown(async () => await proxy.stop('SIGKILL'))
  const [code] = await once(proxy.proc, 'close') as [number]
  t.equal(code, 1)
  const fatal = proxy.lines.map(l => { try { return JSON.parse(l) } catch { return {} } }).find(o => o.msg === 'worker failed to start')
  t.equal(fatal?.code, 'EDGE_ERR_CERT_KEY_MISMATCH')
  t.match(fatal?.err, `certificate ${a.cert} does not match key ${b.key}`)
  t.notOk(proxy.lines.some(l => l.includes('-----BEGIN')), 'no PEM in the output')
})

t.test('usage and config errors', async t => {
  const help = spawnCli(['proxy', '--help'])
  t.equal((await once(help.proc, 'close'))[0], 0)
  t.match(help.lines.join('\n'), /usage: keyedge proxy --config FILE/)
  const bad = join(home, 'bad.json')
  writeFileSync(bad, JSON.stringify({ routes: [] }))
  const invalid = spawnCli(['proxy', '--config', bad])
  t.equal((await once(invalid.proc, 'close'))[0], 1)
  t.match(invalid.lines.join('\n'), /certificates: is required/)
  t.match(invalid.lines.join('\n'), /routes: must not be empty/)
})
