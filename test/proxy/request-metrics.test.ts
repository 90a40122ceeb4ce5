// The per-request metrics counted in plain numbers (src/proxy/request-metrics.ts) must read exactly
// as prom-client's own Counter and Histogram would, and the hand-built access-log line exactly as
// the pino line it replaced.
import { pino } from 'pino'
import { Counter, Histogram, Registry } from 'prom-client'
import t from 'tap'
import { accessLine } from '../../src/proxy/access-log.js'
import { fastCounter, fastHistogram, observe } from '../../src/proxy/request-metrics.js'

t.test('counter and histogram cells scrape as prom-client\'s own metrics', async t => {
  const theirs = new Registry()
  const ours = new Registry()
  const buckets = [0.001, 0.01, 1]
  const h1 = new Histogram({ name: 'x_seconds', help: 'h', labelNames: ['outcome'], buckets, registers: [theirs] })
  const c1 = new Counter({ name: 'y_total', help: 'c', labelNames: ['outcome'], registers: [theirs] })
  const h2 = fastHistogram(ours, { name: 'x_seconds', help: 'h', buckets })
  const c2 = fastCounter(ours, { name: 'y_total', help: 'c', labelNames: ['outcome'] })
  t.equal(fastCounter(ours, { name: 'y_total', help: 'c', labelNames: ['outcome'] }), c2, 'one counter per registry and name')
  const cells = { a: { c: c2.cell({ outcome: 'a' }), h: h2.cell({ outcome: 'a' }) }, b: { c: c2.cell({ outcome: 'b' }), h: h2.cell({ outcome: 'b' }) } }
  t.equal(await ours.metrics(), await theirs.metrics(), 'a cell nothing was counted in does not show')
  for (const [o, v] of [['a', 0.0005], ['a', 0.001], ['b', 0.5], ['a', 5], ['b', 0.01]] as const) {
    h1.observe({ outcome: o }, v)
    c1.inc({ outcome: o })
    observe(cells[o].h, v)
    cells[o].c.n++
  }
  t.equal(await ours.metrics(), await theirs.metrics(), 'the same text')
  c1.inc({ outcome: 'a' })
  cells.a.c.n++
  t.equal(await ours.metrics(), await theirs.metrics(), 'counted again after a scrape: totals, not lost nor doubled')
  const json = async (r: Registry): Promise<unknown> => (await r.getMetricsAsJSON()).map(m => ({ ...m, values: m.values.map(v => ({ value: v.value, labels: v.labels, metricName: (v as { metricName?: string }).metricName })) }))
  t.same(await json(ours), await json(theirs), 'the same values for the cluster\'s aggregation')
})

t.test('the access-log line has the bytes pino wrote for the same fields', async t => {
  const lines: string[] = []
  const out = pino({ base: null, timestamp: false }, { write: (l: string) => { lines.push(l) } })
  const rec = {
    time: '2026-01-01T00:00:00.000Z', requestId: 'a"b\\c\u0001\ud800é', client: undefined, method: 'GET', host: 'h', path: '/p', status: 200, complete: true,
    bytesIn: 0, bytesOut: NaN, upstream: undefined, upstreamConnectMs: 0.123, upstreamFirstByteMs: -0, upstreamTotalMs: Infinity, totalMs: 1e21
  }
  const facts = { sni: null, tlsVersion: 'TLSv1.3', cipher: 'TLS_AES_128_GCM_SHA256', tlsResumed: false, alpn: 'h2', clientCert: { subject: 'CN=x "y"', serial: '01' } as never }
  out.info({ time: rec.time, requestId: rec.requestId, client: rec.client, ...facts, method: rec.method, host: rec.host, path: rec.path, status: rec.status, complete: rec.complete, bytesIn: rec.bytesIn, bytesOut: rec.bytesOut, upstream: rec.upstream, upstreamConnectMs: rec.upstreamConnectMs, upstreamFirstByteMs: rec.upstreamFirstByteMs, upstreamTotalMs: rec.upstreamTotalMs, totalMs: rec.totalMs })
  out.info({ time: rec.time, requestId: 'id', client: '10.0.0.1', method: 'POST', path: '/', status: 502, complete: false, bytesIn: 12, bytesOut: 0, upstream: 'http://u', totalMs: 3.5 })
  t.equal(accessLine(rec.time, rec.requestId, rec.client, facts, rec.method, rec.host, rec.path, rec.status, rec.complete, rec.bytesIn, rec.bytesOut, rec.upstream, rec.upstreamConnectMs, rec.upstreamFirstByteMs, rec.upstreamTotalMs, rec.totalMs), lines[0], 'escapes, nulls, objects, non-finite numbers')
  t.equal(accessLine(rec.time, 'id', '10.0.0.1', undefined, 'POST', undefined, '/', 502, false, 12, 0, 'http://u', undefined, undefined, undefined, 3.5), lines[1], 'a line without TLS facts nor upstream timings')
})

t.test('the access-log line: a connection\'s TLS fields and the time, reused between lines, stay those of that line', async t => {
  const lines: string[] = []
  const out = pino({ base: null, timestamp: false }, { write: (l: string) => { lines.push(l) } })
  const a = { sni: 'a.example', tlsVersion: 'TLSv1.3', cipher: 'TLS_AES_128_GCM_SHA256', tlsResumed: false, alpn: 'h2', clientCert: undefined }
  const b = { sni: 'b.example', tlsVersion: 'TLSv1.2', cipher: 'ECDHE-ECDSA-AES128-GCM-SHA256', tlsResumed: true, alpn: 'http/1.1', clientCert: undefined }
  const calls = [[a, '2026-01-01T00:00:00.001Z'], [a, '2026-01-01T00:00:00.001Z'], [b, '2026-01-01T00:00:00.002Z'], [a, '2026-01-01T00:00:01.000Z']] as const
  for (const [facts, time] of calls) {
    // The fields by name: accessLine keeps the serialized fields on the facts object.
    out.info({ time, requestId: 'r', sni: facts.sni, tlsVersion: facts.tlsVersion, cipher: facts.cipher, tlsResumed: facts.tlsResumed, alpn: facts.alpn, method: 'GET', path: '/', status: 200, complete: true, bytesIn: 0, bytesOut: 1 })
    t.equal(accessLine(time, 'r', undefined, facts, 'GET', undefined, '/', 200, true, 0, 1, undefined, undefined, undefined, undefined, undefined), lines[lines.length - 1], `${facts.sni} at ${time}`)
  }
})
