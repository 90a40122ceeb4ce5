// The front's pure parts, in process: per-client keys and limits (with a fake clock), the config
// options of the front, failed-handshake reasons and their warn-then-debug logging.
import { PassThrough } from 'node:stream'
import t from 'tap'
import { Registry } from 'prom-client'
import { validateConfig } from '../../src/config/index.js'
import { configDefaults } from '../../src/config/defaults.js'
import { createLogger } from '../../src/logger.js'
import { clientKey, ConnectionLimits } from '../../src/proxy/conn-limits.js'
import { failureReason, HandshakeFailures } from '../../src/tls/handshake-failures.js'

t.test('client keys: IPv4 as is, IPv6 by /64, IPv4-mapped IPv6 as IPv4', async t => {
  t.equal(clientKey('203.0.113.7'), '203.0.113.7')
  t.equal(clientKey('::ffff:203.0.113.7'), '203.0.113.7')
  t.equal(clientKey('2001:db8:1:2:aaaa::1'), '2001:db8:1:2::/64')
  t.equal(clientKey('2001:0db8:0001:0002:ffff:ffff:ffff:ffff'), '2001:db8:1:2::/64', 'the same /64, written out')
  t.equal(clientKey('2001:db8::1'), '2001:db8:0:0::/64')
  t.equal(clientKey('::1'), '0:0:0:0::/64')
})

t.test('connection cap: counted per client key, released on close, refusals counted', async t => {
  const registry = new Registry()
  const limits = new ConnectionLimits({ maxConnectionsPerClient: 2, newConnectionsPerSecondPerClient: 0, newConnectionBurstPerClient: 1, registry })
  t.ok(limits.enabled)
  t.equal(limits.admit('a'), 'ok')
  t.equal(limits.admit('a'), 'ok')
  t.equal(limits.admit('a'), 'connections')
  t.equal(limits.admit('b'), 'ok', 'another client is not affected')
  limits.release('a')
  t.equal(limits.openConnections('a'), 1)
  t.equal(limits.admit('a'), 'ok')
  t.match(await registry.metrics(), /edge_connections_refused_total\{limit="connections_per_client"\} 1/)
  const off = new ConnectionLimits({ maxConnectionsPerClient: 0, newConnectionsPerSecondPerClient: 0, newConnectionBurstPerClient: 1, registry: new Registry() })
  t.notOk(off.enabled, 'both at 0: off')
})

t.test('new-connection rate: a token bucket refilled at the rate, up to the burst', async t => {
  let now = 0
  const registry = new Registry()
  const limits = new ConnectionLimits({ maxConnectionsPerClient: 0, newConnectionsPerSecondPerClient: 10, newConnectionBurstPerClient: 3, registry, now: () => now })
  t.same([1, 2, 3, 4].map(() => limits.admit('a')), ['ok', 'ok', 'ok', 'rate'], 'the burst, then refused')
  now += 99
  t.equal(limits.admit('a'), 'rate', 'not a whole token after 99 ms at 10/s')
  now += 1
  t.equal(limits.admit('a'), 'ok', 'one token after 100 ms')
  now += 60_000
  t.same([1, 2, 3, 4].map(() => limits.admit('a')), ['ok', 'ok', 'ok', 'rate'], 'a long pause refills up to the burst only')
  t.match(await registry.metrics(), /edge_connections_refused_total\{limit="new_connections_per_client"\} 3/)
})

t.test('config: timeouts and limits, defaults and checks with field paths', async t => {
  const base = { certificates: [{ name: 'x', serverNames: ['x.test'], files: [{ cert: 'x', key: 'x' }] }], routes: [{ upstream: 'http://127.0.0.1:1' }] }
  const c = validateConfig(base, { baseDir: '/' })
  t.same(c.timeouts, { clientHelloMs: configDefaults.timeouts.clientHelloMs, handshakeMs: configDefaults.timeouts.handshakeMs, requestHeadersMs: 10_000, keepAliveIdleMs: 60_000, http2IdleMs: 120_000, requestBodyIdleMs: 30_000 })
  t.same(c.limits, { maxConnections: 0, maxConnectionsPerClient: 0, newConnectionsPerSecondPerClient: 0, newConnectionBurstPerClient: 0, http2MaxConcurrentStreams: 128, http2MaxResetsPerSecond: 100 })
  const set = validateConfig({ ...base, timeouts: { clientHelloMs: 2000, handshakeMs: 3000 }, limits: { maxConnectionsPerClient: 100, newConnectionsPerSecondPerClient: 20 } }, { baseDir: '/' })
  t.same(set.limits, { maxConnections: 0, maxConnectionsPerClient: 100, newConnectionsPerSecondPerClient: 20, newConnectionBurstPerClient: 0, http2MaxConcurrentStreams: 128, http2MaxResetsPerSecond: 100 }, 'burst left at 0: twice the rate, resolved by the limiter')
  const limiter = new ConnectionLimits({ ...set.limits, registry: new Registry(), now: () => 0 })
  t.same(Array.from({ length: 41 }, () => limiter.admit('a')).filter(r => r === 'ok').length, 40, 'a burst of twice the rate (40) when none is set')
  t.equal(set.timeouts.handshakeMs, 3000)
  t.throws(() => validateConfig({ ...base, timeouts: { clientHelloMs: 5000, handshakeMs: 1000 } }, { baseDir: '/' }), { message: /timeouts\.handshakeMs: must not be lower than timeouts\.clientHelloMs/ })
  t.throws(() => validateConfig({ ...base, timeouts: { helloMs: 5 } }, { baseDir: '/' }), { message: /timeouts\.helloMs/ })
  t.throws(() => validateConfig({ ...base, limits: { maxConnectionsPerClient: -1, newConnectionBurstPerClient: -1 } }, { baseDir: '/' }), { message: /limits\.maxConnectionsPerClient[\s\S]*limits\.newConnectionBurstPerClient/ })
})

t.test('failed handshakes: a reason from a fixed set', async t => {
  const err = (code: string, message = ''): NodeJS.ErrnoException => Object.assign(new Error(message), { code })
  t.equal(failureReason(err('ERR_TLS_HANDSHAKE_TIMEOUT')), 'timeout')
  t.equal(failureReason(err('ECONNRESET', 'socket hang up')), 'client_closed')
  t.equal(failureReason(err('ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE')), 'client_alert')
  t.equal(failureReason(err('ERR_SSL_TLSV1_ALERT_UNKNOWN_CA')), 'client_alert')
  t.equal(failureReason(err('ERR_SSL_WRONG_VERSION_NUMBER')), 'protocol')
  t.equal(failureReason(err('ERR_SSL_HTTP_REQUEST')), 'protocol')
  t.equal(failureReason(err('ERR_SSL_UNSUPPORTED_PROTOCOL')), 'protocol')
  t.equal(failureReason(err('ERR_SSL_NO_SHARED_CIPHER')), 'negotiation')
  t.equal(failureReason(err('ERR_SSL_NO_SUITABLE_SIGNATURE_ALGORITHM')), 'negotiation')
  t.equal(failureReason(err('ERR_SSL_NO_APPLICATION_PROTOCOL')), 'negotiation')
  t.equal(failureReason(err('ERR_SSL_LENGTH_MISMATCH')), 'malformed')
  t.equal(failureReason(err('ERR_SSL_UNEXPECTED_MESSAGE')), 'malformed')
  t.equal(failureReason(err('ERR_SSL_EXCESSIVE_MESSAGE_SIZE')), 'malformed')
  t.equal(failureReason(err('ERR_SSL_RECORD_TOO_SMALL')), 'malformed')
  // What the key bridge reports (keyd/bridge): library "keyedge", reason "keyd: …".
  t.equal(failureReason(err('ERR_SSL_KEYD:_NO_ANSWER_WITHIN_1000_MS', 'error:40800001:keyedge:report_io:keyd: no answer within 1000 ms')), 'keyd')
  t.equal(failureReason(err('ERR_OSSL_SOMETHING', 'error:40800003:keyedge:conn_open:keyd: no socket at /run/keyd.sock')), 'keyd')
  t.equal(failureReason(err('ERR_SOMETHING_NEW')), 'other')
})

t.test('failed handshakes: the first of each reason in a window is a warning, the rest debug with a count', async t => {
  const out = new PassThrough()
  const lines: Array<Record<string, unknown>> = []
  out.on('data', (b: Buffer) => { for (const l of b.toString().split('\n')) if (l !== '') lines.push(JSON.parse(l)) })
  let now = 0
  const registry = new Registry()
  const failures = new HandshakeFailures({ log: createLogger({ level: 'debug', destination: out }), registry, windowMs: 1000, now: () => now })
  failures.record('keyd', { code: 'X' })
  failures.record('keyd', { code: 'X' })
  failures.record('protocol')
  failures.record('keyd')
  now += 1000
  failures.record('keyd')
  await new Promise(resolve => setImmediate(resolve))
  t.same(lines.map(l => [l.level, l.reason, l.count, l.sincePreviousWarning]), [
    [40, 'keyd', undefined, undefined],
    [20, 'keyd', 1, undefined],
    [40, 'protocol', undefined, undefined],
    [20, 'keyd', 2, undefined],
    [40, 'keyd', undefined, 2]
  ])
  t.match(await registry.metrics(), /edge_tls_handshake_failures_total\{reason="keyd"\} 4/)
})
