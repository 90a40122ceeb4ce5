// The admin listener (health, readiness, cluster-wide metrics, certificates) and the graceful drain
// on SIGTERM: readiness fails first, then new connections stop, in-flight requests finish, exit 0.
import t from 'tap'
import { once } from 'node:events'
import { connect } from 'node:net'
import { startStack, startProxy, curl } from '../helpers/edge.js'
import { admin, fileSerial, until } from '../helpers/rotation.js'

const stack = await startStack()
t.teardown(() => stack.stop())

t.test('healthz, ready, metrics and certs', async t => {
  const proxy = await startProxy(stack, { workers: 2, admin: {} })
  t.teardown(() => proxy.stop())
  const port = proxy.adminPort as number
  t.ok(proxy.lines.some(l => /"msg":"admin listening"/.test(l) && /"port":\d+/.test(l)), 'the admin port is logged in a JSON line')
  const health = await admin(port, '/healthz')
  t.equal(health.status, 200)
  t.same(health.json(), { status: 'ok', workers: 2 })
  t.equal((await admin(port, '/ready')).status, 200)
  t.equal((await admin(port, '/nope')).status, 404)

  t.equal((await curl(['--cacert', stack.caFile, `https://localhost:${proxy.port}/`])).code, 0)
  const metrics = await admin(port, '/metrics')
  t.equal(metrics.status, 200)
  t.match(metrics.body, /edge_certificate_expiry_seconds\{name="localhost"\} \d+/, 'expiry gauge per certificate')
  t.match(metrics.body, /edge_certificate_expiry_seconds\{name="other"\} \d+/)
  const expiry = Number(/edge_certificate_expiry_seconds\{name="localhost"\} (\d+)/.exec(metrics.body)?.[1])
  t.ok(expiry > 300 * 86_400 && expiry <= 366 * 86_400, 'about a year left, not summed over workers')
  t.match(metrics.body, /process_cpu_user_seconds_total \d/, 'default metrics of the workers')
  t.match(metrics.body, /edge_tls_sni_selections_total\{match="exact"\} \d/, 'proxy metrics of the workers')
  t.match(metrics.body, /edge_draining 0/, 'metrics of the primary')

  const certs = await admin(port, '/certs')
  t.equal(certs.status, 200)
  t.notMatch(certs.body, /BEGIN|PRIVATE/, 'no key material, no PEM')
  const list = certs.json().certificates
  t.same(list.map((c: any) => c.name), ['localhost', 'other'])
  const ec = list[0].pairs.find((p: any) => p.keyType === 'ec')
  t.same(ec.names, ['localhost', '*.localhost', '127.0.0.1', '0:0:0:0:0:0:0:1'].slice(0, ec.names.length))
  t.ok(ec.names.includes('localhost'))
  t.match(ec.fingerprint256, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/)
  t.equal(ec.serialNumber, fileSerial(stack.certs.leaves[0].certFile))
  t.ok(ec.daysLeft >= 300, 'days left')
  t.ok(Date.parse(ec.notAfter) > Date.now())
  t.same(ec.keyReference, { name: 'localhost-ec', version: 1, type: 'ec-p256' })
})

t.test('SIGTERM: ready fails first, in-flight requests finish, new connections stop, exit 0', async t => {
  const proxy = await startProxy(stack, { name: 'drain', workers: 2, admin: { drainDelayMs: 1500 }, extra: { shutdownGraceMs: 5000 } })
  t.teardown(() => proxy.stop('SIGKILL'))
  const port = proxy.adminPort as number
  const url = `https://localhost:${proxy.port}`
  const inflight = curl(['--cacert', stack.caFile, '-w', '\n%{http_code}', `${url}/slow?ms=2500`])
  await new Promise(resolve => setTimeout(resolve, 300))
  const t0 = Date.now()
  const exited = once(proxy.proc, 'exit')
  proxy.proc.kill('SIGTERM')
  t.ok(await until(async () => (await admin(port, '/ready')).status === 503, 1000), '/ready answers 503 at once')
  t.same((await admin(port, '/ready')).json().status, 'draining')
  t.equal((await admin(port, '/healthz')).status, 200, 'still healthy while draining')
  const during = await curl(['--cacert', stack.caFile, `${url}/`])
  t.equal(during.code, 0, 'new connections are still served during the drain delay')
  t.ok(Date.now() - t0 < 1500, 'that was within the delay')
  t.ok(await until(async () => await new Promise<boolean>(resolve => {
    const s = connect(proxy.port, '127.0.0.1')
    s.once('connect', () => { s.destroy(); resolve(false) })
    s.once('error', () => resolve(true))
  }), 4000), 'after the delay, new connections are refused')
  t.ok(Date.now() - t0 >= 1400, 'not before the delay')
  const r = await inflight
  t.equal(r.code, 0, `the in-flight request completes: ${r.stderr}`)
  t.match(r.stdout, /\n200$/)
  const [code] = await exited
  t.equal(code, 0, 'the proxy exits 0')
  t.ok(Date.now() - t0 < 6000, 'within the grace period')
})
