// The HTTP front's `timeouts` and `limits` options: defaults, bounds, and hints for likely names.
import t from 'tap'
import { configDefaults, validateConfig } from '../../src/config/index.js'
import { problemsOf } from '../helpers/config.js'

const minimal = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  certificates: [{ name: 'localhost', serverNames: ['localhost'], files: [{ cert: 'a.crt', key: 'a.keyref' }] }],
  routes: [{ upstream: 'http://127.0.0.1:8080' }],
  ...extra
})

t.test('defaults', async t => {
  const config = validateConfig(minimal(), { baseDir: '/etc/keyedge' })
  t.same(config.timeouts, { clientHelloMs: 10_000, handshakeMs: 15_000, requestHeadersMs: 10_000, keepAliveIdleMs: 60_000, http2IdleMs: 120_000, requestBodyIdleMs: 30_000 })
  t.same(config.limits, { maxConnections: 0, maxConnectionsPerClient: 0, newConnectionsPerSecondPerClient: 0, newConnectionBurstPerClient: 0, http2MaxConcurrentStreams: 128, http2MaxResetsPerSecond: 100 })
  t.same(config.timeouts, configDefaults.timeouts, 'the documented defaults are the applied ones')
})

t.test('values are taken field by field', async t => {
  const config = validateConfig(minimal({ timeouts: { keepAliveIdleMs: 5000 }, limits: { http2MaxResetsPerSecond: 10 } }), { baseDir: '/etc/keyedge' })
  t.equal(config.timeouts.keepAliveIdleMs, 5000)
  t.equal(config.timeouts.requestHeadersMs, 10_000)
  t.equal(config.limits.http2MaxResetsPerSecond, 10)
  t.equal(config.limits.http2MaxConcurrentStreams, 128)
})

t.test('bad values and names are refused, each naming its field', async t => {
  const problems = problemsOf(minimal({
    timeouts: { requestHeadersMs: 0, http2IdleMs: 'long', keepAlive: 5 },
    limits: { http2MaxConcurrentStreams: 100_000, maxResetsPerSecond: 5 }
  }))
  t.match(problems, [
    /^timeouts\.keepAlive: unknown key, use "keepAliveIdleMs" \(milliseconds\)/,
    /^timeouts\.requestHeadersMs: /,
    /^timeouts\.http2IdleMs: must be an integer/,
    /^limits\.maxResetsPerSecond: unknown key, use "http2MaxResetsPerSecond"/,
    /^limits\.http2MaxConcurrentStreams: /
  ])
  t.equal(problems.length, 5)
  t.match(problemsOf(minimal({ timeouts: 30 })), [/^timeouts: must be an object/])
})
