// keyd's /metrics and /healthz: operations by result, queue and execution time, refusals, sealed state.
import t from 'tap'
import { startKeyd } from '../helpers/keyd.js'
import { tls13Input } from '../helpers/tls-inputs.js'

const keyd = await startKeyd(undefined, ['--metrics-port', '0'])
t.teardown(() => keyd.stop())
const ready = await keyd.waitFor(o => o.msg === 'keyd ready')
const base = `http://127.0.0.1:${ready.metricsPort as number}`

t.test('operations, refusals and durations are counted', async t => {
  await keyd.admin.createKey('m-tls', 'ec-p256', 'tls-server')
  const proxy = keyd.client('proxy')
  t.teardown(() => proxy.close())
  for (let i = 0; i < 5; i++) await proxy.sign('m-tls', 'ecdsa-sha256', tls13Input())
  await t.rejects(proxy.sign('m-tls', 'ecdsa-sha256', Buffer.from('not tls')))
  await t.rejects(proxy.sign('no-such-key', 'ecdsa-sha256', tls13Input()))
  const text = await (await fetch(`${base}/metrics`)).text()
  t.match(text, /keyd_operations_total\{op="SIGN",key="m-tls",result="ok"\} 5/)
  t.match(text, /keyd_operations_total\{op="SIGN",key="",result="POLICY_DENIED_MESSAGE"\} 1/)
  t.match(text, /keyd_refused_total\{reason="KEY_NOT_FOUND"\} 1/)
  t.notMatch(text, /no-such-key/, 'client-chosen names never become label values')
  t.match(text, /keyd_operation_duration_seconds_count\{op="SIGN",phase="exec"\} 7/)
  t.match(text, /keyd_operation_duration_seconds_count\{op="SIGN",phase="queue"\} 7/)
  t.match(text, /keyd_sealed 0/)
  t.match(text, /keyd_audit_writable 1/)
})

t.test('native signatures counted in C are folded in at each scrape once, buckets and all', async t => {
  const proxy = keyd.client('proxy')
  t.teardown(() => proxy.close())
  for (let i = 0; i < 3; i++) await proxy.sign('m-tls', 'ecdsa-sha256', tls13Input())
  await fetch(`${base}/metrics`) // a scrape in between: what it folded in is not added again
  await proxy.sign('m-tls', 'ecdsa-sha256', tls13Input())
  const text = await (await fetch(`${base}/metrics`)).text()
  t.match(text, /keyd_operations_total\{op="SIGN",key="m-tls",result="ok"\} 9/)
  t.match(text, /keyd_audited_operations_total\{op="SIGN"\} 11/, 'every SIGN audited, the two refusals too')
  for (const phase of ['queue', 'exec', 'total']) {
    t.match(text, new RegExp(`keyd_operation_duration_seconds_count\\{op="SIGN",phase="${phase}"\\} 11`))
    t.match(text, new RegExp(`keyd_operation_duration_seconds_bucket\\{le="\\+Inf",op="SIGN",phase="${phase}"\\} 11`))
    const buckets = [...text.matchAll(new RegExp(`keyd_operation_duration_seconds_bucket\\{le="[^"]+",op="SIGN",phase="${phase}"\\} (\\d+)`, 'g'))].map(m => Number(m[1]))
    t.same(buckets, [...buckets].sort((x, y) => x - y), `${phase}: cumulative buckets`)
    const sum = Number(new RegExp(`keyd_operation_duration_seconds_sum\\{op="SIGN",phase="${phase}"\\} (\\S+)`).exec(text)?.[1])
    t.ok(sum >= 0 && sum < 11, `${phase}: a sum of seconds (${sum})`)
  }
})

t.test('/healthz answers 200 when unsealed and the audit log is writable', async t => {
  const res = await fetch(`${base}/healthz`)
  t.equal(res.status, 200)
  t.match(await res.json(), { ok: true, sealed: false, auditWritable: true })
  t.equal((await fetch(`${base}/nope`)).status, 404)
})
