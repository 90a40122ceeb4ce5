// `keyedge status` against a real stack (keyd with its metrics endpoint, a proxy with its admin
// listener): the table names the certificates and their days left; --json has the documented fields
// with plausible values after real full and resumed handshakes; an edited audit entry breaks the
// chain; with keyd stopped it says so, exits 1 and answers within a bound; with the proxy stopped
// too it names the proxy.
import t from 'tap'
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { startStack, startProxy } from '../helpers/edge.js'
import { startKeyd } from '../helpers/keyd.js'
import { spawnCli } from '../helpers/processes.js'
import { visit } from '../helpers/resume.js'
import { parseMetrics, histogramQuantile, sumOf } from '../../src/cli/status-metrics.js'
import type { StatusReport } from '../../src/cli/status.js'

async function status (args: string[]): Promise<{ code: number | null, out: string, ms: number }> {
  const t0 = Date.now()
  const p = spawnCli(['status', ...args])
  const { code } = await p.exited
  return { code, out: p.lines.join('\n'), ms: Date.now() - t0 }
}

t.test('histogramQuantile interpolates inside the bucket, as Prometheus does', async t => {
  const text = [
    '# TYPE d histogram',
    'd_bucket{op="SIGN",le="0.001"} 50',
    'd_bucket{op="SIGN",le="0.01"} 90',
    'd_bucket{op="SIGN",le="+Inf"} 100',
    'd_bucket{op="PING",le="0.001"} 1000',
    'd_bucket{op="PING",le="0.01"} 1000',
    'd_bucket{op="PING",le="+Inf"} 1000',
    'ops_total{result="ok"} 9',
    'ops_total{result="KEY_NOT_FOUND"} 1'
  ].join('\n')
  const s = parseMetrics(text)
  const sign = (l: Record<string, string>): boolean => l.op === 'SIGN'
  t.equal(histogramQuantile(s, 'd', 0.5, sign), 0.001)
  t.equal(Math.round((histogramQuantile(s, 'd', 0.7, sign) ?? 0) * 1e6), 5500, 'halfway between 1 ms and 10 ms')
  t.equal(histogramQuantile(s, 'd', 0.99, sign), 0.01, 'in +Inf: the highest finite bound')
  t.equal(histogramQuantile(s, 'd', 0.5, l => l.op === 'NONE'), null, 'no observation: null')
  t.equal(sumOf(s, 'ops_total', l => l.result !== 'ok'), 1)
})

t.test('status of a running stack, then with keyd and the proxy down', async t => {
  const stack = await startStack({ keyd: async () => await startKeyd(undefined, ['--metrics-port', '0']) })
  t.teardown(async () => { await stack.stop() })
  const ready = await stack.keyd.waitFor(o => o.msg === 'keyd ready')
  const keydMetrics = `http://127.0.0.1:${String(ready.metricsPort)}`
  const proxy = await startProxy(stack, { admin: {} })
  t.teardown(async () => { await proxy.stop() })
  const args = ['--config', proxy.configFile, '--home', stack.keyd.paths.home, '--admin', `http://127.0.0.1:${String(proxy.adminPort)}`, '--keyd-metrics', keydMetrics]
  const ca = readFileSync(stack.caFile)

  // Full handshakes, then resumed ones (TLS 1.2 session tickets).
  let session: Buffer | undefined
  for (let i = 0; i < 5; i++) {
    const v = await visit(proxy.port, ca, 'TLSv1.2')
    t.equal(v.error, undefined)
    session = v.session
  }
  let resumed = 0
  for (let i = 0; i < 5; i++) if ((await visit(proxy.port, ca, 'TLSv1.2', session)).reused) resumed++
  t.ok(resumed > 0, `some handshakes resumed (${resumed})`)

  const human = await status(args)
  t.equal(human.code, 0, human.out)
  t.match(human.out, /^proxy +http:\/\/127\.0\.0\.1:\d+ +ready, 1 worker$/m)
  t.match(human.out, /^keyd .* up, sign p50 [\d.]+ ms p99 [\d.]+ ms/m)
  t.match(human.out, /^audit +chain verified up to entry \d+/m)
  t.match(human.out, /^ {2}localhost +ec +36[45] +\d{4}-\d\d-\d\d +localhost-ec v1 +localhost, \*\.localhost, 127\.0\.0\.1/m, 'the EC certificate, its days left and its key')
  t.match(human.out, /^ {2}other +ec +36[45] .* other-ec v1 +other\.test, \*\.wild\.test$/m)
  t.match(human.out, /^ {2}localhost-rsa +rsa-2048 +tls-server +enabled +v1\*$/m, 'a key with its version and state')
  t.match(human.out, /\nOK\n?$/)

  // --json while handshakes go on, so the two samples see some.
  let busy = true
  const traffic = (async () => { let n = 0; while (busy && n < 2000) { await visit(proxy.port, ca, 'TLSv1.3'); n++ } })()
  const json = await status([...args, '--json', '--interval', '1500'])
  busy = false
  await traffic
  t.equal(json.code, 0, json.out)
  const r = JSON.parse(json.out) as StatusReport
  t.equal(r.ok, true)
  t.same(r.problems, [])
  t.equal(r.proxy.up, true)
  t.equal(r.proxy.ready, true)
  t.equal(r.proxy.workers, 1)
  t.same(r.certificates?.map(c => c.entry).sort(), ['localhost', 'localhost', 'other'])
  for (const c of r.certificates ?? []) {
    t.ok(c.daysLeft >= 364 && c.daysLeft <= 365, `${c.entry} ${c.keyType}: ${c.daysLeft} days`)
    t.ok(Date.parse(c.notAfter) > Date.now())
  }
  const h = r.handshakes
  t.ok(h !== null && h.fullTotal >= 5 && h.resumedTotal >= resumed, `handshake totals: ${JSON.stringify(h)}`)
  t.ok(h !== null && (h.fullPerSecond ?? 0) > 0 && h.intervalSeconds >= 1.5, 'handshakes per second seen between the samples')
  t.equal(r.keyd.up, true)
  t.equal(r.keyd.sealed, false)
  const lat = r.keyd.signLatencyMs
  t.ok(lat !== null && lat.p50 !== null && lat.p99 !== null && lat.p50 > 0 && lat.p99 >= lat.p50 && lat.p99 < 1000, `sign latency ${JSON.stringify(lat)}`)
  t.ok((r.keyd.operations ?? 0) >= 5, 'keyd counted operations')
  t.ok(r.keyd.errorRate !== null && r.keyd.errorRate >= 0 && r.keyd.errorRate < 0.5, `error rate ${r.keyd.errorRate}`)
  const ec = r.keys?.find(k => k.name === 'localhost-ec')
  t.same(ec && { state: ec.state, usage: ec.usage, currentVersion: ec.currentVersion, versions: ec.versions.map(v => v.version) }, { state: 'enabled', usage: 'tls-server', currentVersion: 1, versions: [1] })
  t.equal(r.audit.state, 'verified')
  t.ok((r.audit.lastSeq ?? 0) >= 1 && r.audit.writable === true, `audit ${JSON.stringify(r.audit)}`)

  // An edited audit entry (same length, in place, while keyd appends): broken, named, exit 1.
  const auditFile = join(stack.keyd.paths.keydDir, 'audit.log')
  const at = readFileSync(auditFile, 'latin1').indexOf('"client":"admin"')
  t.ok(at >= 0)
  const fd = openSync(auditFile, 'r+')
  writeSync(fd, 'N', at + '"client":"admi'.length)
  closeSync(fd)
  const broken = await status([...args, '--interval', '0'])
  t.equal(broken.code, 1, broken.out)
  t.match(broken.out, /^audit +BROKEN: line \d+ \(seq \d+\): chain value does not match: the entry was edited$/m)
  t.match(broken.out, /^! the audit chain is broken: .* \(npx keyedge keyd audit verify --dev\)$/m)

  // keyd down: named, exit 1, bounded (each probe 1 s; the whole command includes starting node).
  await stack.keyd.stop()
  const down = await status([...args, '--timeout', '1000', '--interval', '0'])
  t.equal(down.code, 1, down.out)
  t.match(down.out, /^keyd .* DOWN/m)
  t.match(down.out, /keyd does not answer on .*keyd\.sock .*start it with "npm start" or "npx keyedge keyd serve --dev"/)
  t.ok(down.ms < 20_000, `answered in ${down.ms} ms`)
  const downJson = JSON.parse((await status([...args, '--json', '--timeout', '1000', '--interval', '0'])).out) as StatusReport
  t.equal(downJson.ok, false)
  t.equal(downJson.keyd.up, false)
  t.equal(downJson.proxy.up, true, 'the proxy still answers (not ready)')

  await proxy.stop()
  const none = await status([...args, '--timeout', '1000', '--interval', '0'])
  t.equal(none.code, 1)
  t.match(none.out, /^proxy .* DOWN \(ECONNREFUSED\)/m)
  t.match(none.out, /the proxy's admin listener http:\/\/127\.0\.0\.1:\d+ does not answer \(ECONNREFUSED\): start it with/)
})

t.test('nothing to look at: a clear usage error', async t => {
  const r = await status(['--home', '/nonexistent-keyedge-home'])
  t.equal(r.code, 2)
  t.match(r.out, /endpoints\.json does not exist \(start the stack with "npm start", or give --config FILE\)/)
})
