// keyd/policy.json: which clients and algorithms a key allows, and token-bucket rate limits per key and client.
import t from 'tap'
import { writeFileSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { startKeyd } from '../helpers/keyd.js'
import { tempHome } from '../helpers/paths.js'
import { tls13Input } from '../helpers/tls-inputs.js'
import { spawnCli } from '../helpers/processes.js'
import { until } from '../helpers/wait.js'
import { errorCode } from '../../lib/errors.js'

const home = tempHome()
mkdirSync(join(home, 'keyd'), { recursive: true, mode: 0o700 })
writeFileSync(join(home, 'keyd', 'policy.json'), JSON.stringify({
  keys: {
    'p-admin-only': { clients: ['admin'], algorithms: ['ecdsa-sha256'] },
    'p-rate': { rateLimit: { perSecond: 1, burst: 5 } }
  },
  clients: { admin: { rateLimit: { perSecond: 1, burst: 3 } } }
}))
const keyd = await startKeyd(home, ['--metrics-port', '0'])
t.teardown(() => keyd.stop())
const proxy = keyd.client('proxy')
t.teardown(() => proxy.close())
await keyd.admin.createKey('p-admin-only', 'ec-p256', 'tls-server')
await keyd.admin.createKey('p-rate', 'ec-p256', 'tls-server')

t.test('allowed clients and algorithms', async t => {
  await t.rejects(proxy.sign('p-admin-only', 'ecdsa-sha256', tls13Input()), { code: 'KEYD_ERR_FORBIDDEN', message: /does not allow client proxy/ })
  t.ok((await keyd.admin.sign('p-admin-only', 'ecdsa-sha256', tls13Input())).signature.length > 0)
  await t.rejects(keyd.admin.sign('p-admin-only', 'ecdsa-sha384', tls13Input()), { code: 'KEYD_ERR_FORBIDDEN', message: /does not allow ecdsa-sha384/ })
})

t.test('a key rate limit refuses past its burst, counts it, and refills', async t => {
  // The bucket refills while the requests are under way, by at most perSecond per second of the
  // window they were sent and answered in: counted, not assumed to be zero on a loaded machine.
  const started = performance.now()
  const results = await Promise.allSettled(Array.from({ length: 10 }, async () => await proxy.sign('p-rate', 'ecdsa-sha256', tls13Input())))
  const refills = Math.floor((performance.now() - started) / 1000)
  const passed = results.filter(r => r.status === 'fulfilled').length
  t.ok(passed >= 5 && passed <= 5 + refills, `the burst passes, and no more than the refills of ${refills} s (${passed} of 10)`)
  const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected')
  t.equal(refused.length, 10 - passed)
  t.ok(refused.length > 0 && refused.every(r => r.reason.code === 'KEYD_ERR_RATE_LIMITED'), 'the rest are refused as rate limited')
  const ready = await keyd.waitFor(o => o.msg === 'keyd ready')
  const metrics = async (): Promise<string> => await (await fetch(`http://127.0.0.1:${ready.metricsPort as number}/metrics`)).text()
  t.match(await metrics(), new RegExp(`keyd_refused_total\\{reason="RATE_LIMITED"\\} ${refused.length}\\b`), 'every refusal counted')
  // Refused until a token is back (one a second), then signed: polled with a deadline, not slept.
  t.ok(await until(async () => await proxy.sign('p-rate', 'ecdsa-sha256', tls13Input()).then(s => s.signature.length > 0, () => false)), 'tokens refill at perSecond')
})

t.test('a client rate limit applies across its keys', async t => {
  const results = await Promise.allSettled(Array.from({ length: 6 }, async () => await keyd.admin.sign('p-admin-only', 'ecdsa-sha256', tls13Input())))
  t.ok(results.some(r => r.status === 'rejected' && errorCode(r.reason) === 'KEYD_ERR_RATE_LIMITED'))
})

t.test('a malformed policy file stops keyd with an error naming the field', async t => {
  const bad = tempHome()
  mkdirSync(join(bad, 'keyd'), { recursive: true })
  writeFileSync(join(bad, 'keyd', 'policy.json'), JSON.stringify({ keys: { x: { rateLimit: { perSecond: 0, burst: 1 } } } }))
  const p = spawnCli(['keyd', 'serve', '--dev'], { KEYEDGE_HOME: bad })
  const { code } = await p.exited
  t.equal(code, 1)
  t.match(p.lines.join('\n'), /keys\.x\.rateLimit needs perSecond > 0.*KEYD_ERR_CONFIG_INVALID/)
})
