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

t.test('/healthz answers 200 when unsealed and the audit log is writable', async t => {
  const res = await fetch(`${base}/healthz`)
  t.equal(res.status, 200)
  t.match(await res.json(), { ok: true, sealed: false, auditWritable: true })
  t.equal((await fetch(`${base}/nope`)).status, 404)
})
