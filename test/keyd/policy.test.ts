// keyd/policy.json: which clients and algorithms a key allows, and token-bucket rate limits per key and client.
import t from 'tap'
import { writeFileSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { startKeyd } from '../helpers/keyd.js'
import { tempHome } from '../helpers/paths.js'
import { tls13Input } from '../helpers/tls-inputs.js'
import { spawnCli } from '../helpers/processes.js'
import { once } from 'node:events'

const home = tempHome()
mkdirSync(join(home, 'keyd'), { recursive: true, mode: 0o700 })
writeFileSync(join(home, 'keyd', 'policy.json'), JSON.stringify({
  keys: {
    'p-admin-only': { clients: ['admin'], algorithms: ['ecdsa-sha256'] },
    'p-rate': { rateLimit: { perSecond: 5, burst: 5 } }
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
  const results = await Promise.allSettled(Array.from({ length: 8 }, async () => await proxy.sign('p-rate', 'ecdsa-sha256', tls13Input())))
  t.equal(results.filter(r => r.status === 'fulfilled').length, 5, 'the burst passes')
  const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected')
  t.equal(refused.length, 3)
  t.ok(refused.every(r => r.reason.code === 'KEYD_ERR_RATE_LIMITED'))
  await new Promise(resolve => setTimeout(resolve, 450))
  t.ok((await proxy.sign('p-rate', 'ecdsa-sha256', tls13Input())).signature.length > 0, 'tokens refill at perSecond')
  const ready = await keyd.waitFor(o => o.msg === 'keyd ready')
  const text = await (await fetch(`http://127.0.0.1:${ready.metricsPort as number}/metrics`)).text()
  t.match(text, /keyd_refused_total\{reason="RATE_LIMITED"\} 3/)
})

t.test('a client rate limit applies across its keys', async t => {
  await new Promise(resolve => setTimeout(resolve, 50))
  const results = await Promise.allSettled(Array.from({ length: 6 }, async () => await keyd.admin.sign('p-admin-only', 'ecdsa-sha256', tls13Input())))
  t.ok(results.some(r => r.status === 'rejected' && (r.reason as { code: string }).code === 'KEYD_ERR_RATE_LIMITED'))
})

t.test('a malformed policy file stops keyd with an error naming the field', async t => {
  const bad = tempHome()
  mkdirSync(join(bad, 'keyd'), { recursive: true })
  writeFileSync(join(bad, 'keyd', 'policy.json'), JSON.stringify({ keys: { x: { rateLimit: { perSecond: 0, burst: 1 } } } }))
  const p = spawnCli(['keyd', 'serve', '--dev'], { KEYEDGE_HOME: bad })
  const [code] = await once(p.proc, 'exit')
  t.equal(code, 1)
  t.match(p.lines.join('\n'), /keys\.x\.rateLimit needs perSecond > 0.*KEYD_ERR_CONFIG_INVALID/)
})
