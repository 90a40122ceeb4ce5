// The admin listener (health, readiness, cluster-wide metrics, certificates) and the graceful drain
// on SIGTERM: readiness fails first, then new connections stop, in-flight requests finish, exit 0.
import t from 'tap'
import type { IncomingMessage } from 'node:http'
import { connect } from 'node:net'
import { startStack, startProxy, curl } from '../helpers/edge.js'
import { admin, fileSerial, until } from '../helpers/rotation.js'
import { defined } from '../helpers/defined.js'

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
  t.equal(ec.serialNumber, fileSerial(defined(stack.certs.leaves[0], 'a dev leaf').certFile))
  t.ok(ec.daysLeft >= 300, 'days left')
  t.ok(Date.parse(ec.notAfter) > Date.now())
  t.same(ec.keyReference, { name: 'localhost-ec', version: 1, type: 'ec-p256' })
})

t.test('SIGTERM: ready fails first, in-flight requests finish, new connections stop, exit 0', async t => {
  // Orders of events, not durations, are asserted: the drain delay is long enough that the steps inside
  // it fit on a loaded machine, and the grace is far longer than anything else, so a proxy that waited
  // for it (instead of exiting once the in-flight request finished) would miss the exit deadline below.
  const DRAIN_MS = 2500
  const GRACE_MS = 60_000
  const proxy = await startProxy(stack, { name: 'drain', workers: 2, admin: { drainDelayMs: DRAIN_MS }, extra: { shutdownGraceMs: GRACE_MS } })
  t.teardown(() => proxy.stop('SIGKILL'))
  const port = proxy.adminPort as number
  const url = `https://localhost:${proxy.port}`
  const reached = new Promise<void>(resolve => {
    const onRequest = (req: IncomingMessage): void => {
      if (req.url?.startsWith('/slow') !== true) return
      stack.upstream.server.off('request', onRequest)
      resolve()
    }
    stack.upstream.server.on('request', onRequest)
  })
  const inflight = curl(['--cacert', stack.caFile, '-w', '\n%{http_code}', `${url}/slow?ms=${DRAIN_MS * 2}`], 30)
  await reached
  const t0 = Date.now()
  proxy.proc.kill('SIGTERM')
  t.ok(await until(async () => (await admin(port, '/ready')).status === 503), '/ready answers 503')
  t.same((await admin(port, '/ready')).json().status, 'draining')
  t.equal((await admin(port, '/healthz')).status, 200, 'still healthy while draining')
  const during = await curl(['--cacert', stack.caFile, `${url}/`])
  t.equal(during.code, 0, 'readiness failed first: new connections are still served after /ready said 503')
  t.ok(await until(async () => await new Promise<boolean>(resolve => {
    const s = connect(proxy.port, '127.0.0.1')
    s.once('connect', () => { s.destroy(); resolve(false) })
    s.once('error', () => resolve(true))
  }), 30_000), 'after the delay, new connections are refused')
  t.ok(Date.now() - t0 >= DRAIN_MS - 100, 'not before the delay')
  const r = await inflight
  t.equal(r.code, 0, `the in-flight request completes: ${r.stderr}`)
  t.match(r.stdout, /\n200$/)
  const exit = await Promise.race([proxy.exited, new Promise<undefined>(resolve => setTimeout(() => resolve(undefined), GRACE_MS / 2).unref())])
  t.ok(exit !== undefined, 'the proxy exits once the in-flight request is done, without waiting out the grace period')
  t.equal(exit?.code, 0, 'the proxy exits 0')
})
