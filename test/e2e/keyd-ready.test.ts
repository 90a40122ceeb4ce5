// keyd faults seen from the proxy's side: /ready fails while keyd is stuck or gone (and recovers),
// resumed handshakes keep working meanwhile, failed handshakes are counted by reason, and the first
// failure of a burst is a warning while the rest are debug lines with a count.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { startStack, startProxy, curl } from '../helpers/edge.js'
import { startKeyd } from '../helpers/keyd.js'
import { admin, until } from '../helpers/rotation.js'
import { visit } from '../helpers/resume.js'
import { defined } from '../helpers/defined.js'

const stack = await startStack()
t.teardown(() => stack.stop())
const proxy = await startProxy(stack, { admin: {}, extra: { log: { level: 'debug' } } })
t.teardown(() => proxy.stop())
const port = proxy.adminPort as number
const ca = readFileSync(stack.caFile)
const url = `https://localhost:${proxy.port}/`
const ready = async (): Promise<{ status: number, body: any }> => {
  const r = await admin(port, '/ready')
  return { status: r.status, body: r.json() }
}
const keydFailures = async (): Promise<number> =>
  Number(/edge_tls_handshake_failures_total\{reason="keyd"\} (\d+)/.exec((await admin(port, '/metrics')).body)?.[1] ?? 0)

t.test('keyd stuck (SIGSTOP): not ready within seconds, resumption still works, failures counted; ready again after SIGCONT', async t => {
  t.equal((await ready()).status, 200)
  t.same((await ready()).body.keyd.problem, null)
  const session = (await visit(proxy.port, ca, 'TLSv1.3')).session
  t.match((await admin(port, '/metrics')).body, /edge_keyd_up 1/)
  stack.keyd.proc.kill('SIGSTOP')
  try {
    t.ok(await until(async () => (await ready()).status === 503, 5000), '/ready answers 503')
    const r = await ready()
    t.equal(r.body.status, 'keyd_unreachable')
    t.equal(r.body.keyd.error, 'KEYD_ERR_TIMEOUT')
    t.equal((await admin(port, '/healthz')).status, 200, 'still alive: a restart would not help')
    t.match((await admin(port, '/metrics')).body, /edge_keyd_up 0/)
    const resumed = await visit(proxy.port, ca, 'TLSv1.3', session)
    t.equal(resumed.error, undefined)
    t.ok(resumed.reused, 'a resumed handshake needs no keyd: it still works')
    const before = await keydFailures()
    t.not((await curl([url, '--cacert', stack.caFile], 10)).code, 0, 'a full handshake fails')
    t.not((await curl([url, '--cacert', stack.caFile], 10)).code, 0, 'and another')
    t.equal(await keydFailures() - before, 2, 'edge_tls_handshake_failures_total{reason="keyd"} counts both')
  } finally {
    stack.keyd.proc.kill('SIGCONT')
  }
  t.ok(await until(async () => (await ready()).status === 200, 5000), 'ready again once keyd answers')
  // The worker's bridge may still hold its circuit open for the rest of its interval (at most 5 s).
  t.ok(await until(async () => (await curl([url, '--cacert', stack.caFile])).code === 0, 8000), 'full handshakes work again')
})

t.test('keyd gone: not ready at once; back: ready; the first failure of a burst is a warning, the rest debug with a count', async t => {
  await stack.keyd.stop()
  t.ok(await until(async () => (await ready()).status === 503, 5000))
  t.equal((await ready()).body.keyd.error, 'KEYD_ERR_UNAVAILABLE')
  const seen = proxy.lines.length
  for (let i = 0; i < 3; i++) t.not((await curl([url, '--cacert', stack.caFile])).code, 0)
  const keydLines = (from: number): any[] => proxy.lines.slice(from).map(l => { try { return JSON.parse(l) } catch { return {} } }).filter((o: any) => o.reason === 'keyd')
  t.ok(await until(() => keydLines(seen).length >= 3, 5000), 'three failures logged')
  const logged = keydLines(seen)
  // The stuck-keyd test above already warned for this reason within the window: all three are debug.
  t.same(logged.map((o: any) => o.level), [20, 20, 20], 'later failures of the burst: debug')
  const counts = logged.map((o: any) => o.count as number)
  const firstCount = defined(counts[0], 'a logged count')
  t.same(counts, [firstCount, firstCount + 1, firstCount + 2], `with a running count (${counts.join(', ')})`)
  t.ok(firstCount >= 2, 'counting on from the failures of the stuck keyd')
  t.notMatch(JSON.stringify(logged), /BEGIN|PRIVATE|secret/i, 'nothing secret in them')
  const again = await startKeyd(stack.keyd.paths.home)
  t.teardown(() => again.stop())
  t.ok(await until(async () => (await ready()).status === 200, 5000), 'ready once keyd is back')
  t.equal((await curl([url, '--cacert', stack.caFile])).code, 0)
  const first = proxy.lines.map(l => { try { return JSON.parse(l) } catch { return {} } }).find((o: any) => o.reason === 'keyd')
  t.equal(first?.level, 40, 'the first keyd failure was a warning')
  t.match(first?.msg, /TLS handshake failed \(keyd\)/)
})
