// In-process tests of the resumption-ratio window and of the primary's ratio from the workers' sums.
import t from 'tap'
import { Registry } from 'prom-client'
import { HandshakeWindow, handshakeWindow, ratioFromExposition, resumptionRatio } from '../../src/tls/resumption-ratio.js'

t.test('the window counts the last 60 s in 5 s buckets and forgets older handshakes', async t => {
  const w = new HandshakeWindow(60, 0)
  w.record(false, 0)
  w.record(true, 1_000)
  w.record(true, 30_000)
  t.same(w.counts(30_000), { resumed: 2, full: 1 })
  t.same(w.counts(59_999), { resumed: 2, full: 1 })
  t.same(w.counts(60_000), { resumed: 1, full: 0 }, 'the first bucket (0–5 s) slid out')
  t.same(w.counts(95_000), { resumed: 0, full: 0 })
  w.record(false, 10_000_000)
  t.same(w.counts(10_000_000), { resumed: 0, full: 1 }, 'after a long quiet spell only the new handshake counts')
})

t.test('ratio: resumed / all, NaN without handshakes', async t => {
  t.equal(resumptionRatio({ resumed: 3, full: 1 }), 0.75)
  t.ok(Number.isNaN(resumptionRatio({ resumed: 0, full: 0 })))
})

t.test('the primary divides the summed windows, weighing every handshake alike', async t => {
  // Worker A: 90 of 100 resumed; worker B: 0 of 10. Averaging the workers' ratios would say 0.45.
  const text = '# HELP x\nedge_tls_resumption_window_handshakes{resumed="true"} 90\nedge_tls_resumption_window_handshakes{resumed="false"} 20\n'
  t.equal(ratioFromExposition(text), 90 / 110)
  t.ok(Number.isNaN(ratioFromExposition('')))
})

t.test('a worker registry exports its window as a gauge (one per registry)', async t => {
  const registry = new Registry()
  const w = handshakeWindow(registry)
  t.equal(handshakeWindow(registry), w)
  w.record(true)
  w.record(false)
  w.record(true)
  const text = await registry.metrics()
  t.match(text, /edge_tls_resumption_window_handshakes\{resumed="true"\} 2/)
  t.match(text, /edge_tls_resumption_window_handshakes\{resumed="false"\} 1/)
  t.equal(ratioFromExposition(text), 2 / 3)
})
