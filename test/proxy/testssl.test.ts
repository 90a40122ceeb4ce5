// What a scanner sees of keyedge's TLS front: testssl.sh (Debian's `testssl`) scans keyedge as
// `npm start` runs it (every TLS setting at its default, an ECDSA and an RSA certificate, keys in
// keyd) with a bounded subset of its checks: protocols, renegotiation, TLS and HTTP compression,
// and the vulnerability checks that answer in seconds; and, with a plain client, the server's cipher
// order with ChaCha20 for a client that prefers it. The full scan beside nginx is `npm run bench
// -- testssl` (docs/tls-conformance.md).
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { connect } from 'node:tls'
import t, { type Test } from 'tap'
import { prepareScan, startKeyedgeScan } from '../../bench/testssl-servers.js'
import { byId, runTestssl, TESTSSL_MISSING, testsslCommand, type Finding } from '../../bench/testssl-scan.js'

/**
 * -p protocols, -R renegotiation, -C CRIME (TLS compression), -B BREACH (HTTP compression), -H
 * Heartbleed, -I CCS injection, -BB ROBOT, -4 RC4, -W SWEET32, -F FREAK, -O POODLE: one run of
 * about 40 s on a loaded 2-core machine. Left out: the cipher, preference and server-default groups
 * and client simulations (minutes), and the session resumption check, whose TLS 1.3 ticket test
 * races s_client's exit against the ticket (docs/tls-conformance.md).
 */
const CHECKS = ['-p', '-R', '-C', '-B', '-H', '-I', '-BB', '-4', '-W', '-F', '-O']
/** The scan's deadline: past it testssl is killed and the test fails as cut short. */
const SCAN_DEADLINE_MS = 80_000

const cmd = testsslCommand()
const m = await prepareScan()
t.teardown(m.stop)
const keyedge = await startKeyedgeScan(m)
t.teardown(keyedge.stop)
const ca = readFileSync(m.caFile)

/** The suite keyedge picks for a client offering `ciphers` in this order. */
async function negotiated (ciphers: string, version: 'TLSv1.2' | 'TLSv1.3'): Promise<string | undefined> {
  const socket = connect({ host: '127.0.0.1', port: keyedge.port, servername: 'localhost', ca, ciphers, minVersion: version, maxVersion: version })
  try {
    await Promise.race([once(socket, 'secureConnect'), once(socket, 'error').then(([err]) => { throw err })])
    return socket.getCipher().standardName
  } finally { socket.destroy() }
}

// Not a testssl check: the server's cipher order, and a client that prefers ChaCha20 getting it.
t.test('the server\'s order (AES-128-GCM first), but ChaCha20 for a client that lists it first', async t => {
  t.equal(await negotiated('TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256', 'TLSv1.3'), 'TLS_AES_128_GCM_SHA256', 'TLS 1.3: the server\'s first suite')
  t.equal(await negotiated('TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256', 'TLSv1.3'), 'TLS_CHACHA20_POLY1305_SHA256', 'TLS 1.3: ChaCha20 first, ChaCha20 chosen')
  t.equal(await negotiated('ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256', 'TLSv1.2'), 'TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256', 'TLS 1.2: the server\'s first suite')
  t.equal(await negotiated('ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256', 'TLSv1.2'), 'TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256', 'TLS 1.2: ChaCha20 first, ChaCha20 chosen')
})

if (cmd === undefined && process.env.CI !== 'true') {
  t.comment(`testssl scan skipped: ${TESTSSL_MISSING}`)
} else {
  t.test(`testssl.sh ${CHECKS.join(' ')}`, scanChecks)
}

async function scanChecks (t: Test): Promise<void> {
  t.ok(cmd, `testssl is on PATH (under CI=true it must be: .ci/run installs it). If not: ${TESTSSL_MISSING}`)
  if (cmd === undefined) return
  const scan = await runTestssl({ cmd, port: keyedge.port, checks: CHECKS, caFile: m.caFile, timeoutMs: SCAN_DEADLINE_MS, dir: m.dir, name: 'keyedge' })
  t.notOk(scan.timedOut, `the scan ends within ${SCAN_DEADLINE_MS / 1000} s (took ${Math.round(scan.ms / 1000)} s)`)
  t.ok(scan.findings.length > 0, `testssl reports findings (exit ${String(scan.exitCode)}; stderr: ${scan.stderr.slice(-300)})`)
  const found = byId(scan.findings)
  const said = (id: string): Finding | undefined => found.get(id)
  const expect = (t: Test, id: string, severity: Finding['severity'], words: RegExp, what: string): void => {
    const f = said(id)
    t.ok(f !== undefined && f.severity === severity && words.test(f.finding), `${what}: ${id} is ${severity} /${words.source}/ (got ${f === undefined ? 'nothing' : `${f.severity} "${f.finding}"`})`)
  }

  t.test('no finding of severity HIGH or CRITICAL', async t => {
    const bad = scan.findings.filter(f => f.severity === 'HIGH' || f.severity === 'CRITICAL')
    t.same(bad.map(f => `${f.id} ${f.severity}: ${f.finding}`), [])
  })

  t.test('no check that could not run', async t => {
    t.same(scan.findings.filter(f => f.severity === 'WARN').map(f => `${f.id}: ${f.finding}`), [])
  })

  t.test('protocols: exactly TLS 1.2 and TLS 1.3, HTTP/2 and HTTP/1.1 by ALPN', async t => {
    for (const id of ['SSLv2', 'SSLv3', 'TLS1', 'TLS1_1']) t.match(said(id)?.finding, /^not offered/, `${id} not offered`)
    expect(t, 'TLS1_2', 'OK', /^offered/, 'TLS 1.2')
    expect(t, 'TLS1_3', 'OK', /^offered with final/, 'TLS 1.3 (RFC 8446)')
    expect(t, 'ALPN_HTTP2', 'OK', /^h2$/, 'h2 by ALPN')
    expect(t, 'ALPN', 'INFO', /^http\/1\.1$/, 'HTTP/1.1 by ALPN')
    t.match(said('NPN')?.finding, /^not offered/, 'no NPN/SPDY')
  })

  t.test('renegotiation: the RFC 5746 extension, a client-initiated renegotiation refused', async t => {
    expect(t, 'secure_renego', 'OK', /^supported/, 'secure renegotiation indication')
    expect(t, 'secure_client_renego', 'OK', /^not vulnerable/, 'client-initiated renegotiation refused')
  })

  t.test('no compression: TLS (CRIME) nor HTTP (BREACH, from the demo upstream through keyedge)', async t => {
    expect(t, 'CRIME_TLS', 'OK', /^not vulnerable/, 'no TLS compression')
    expect(t, 'BREACH', 'OK', /no HTTP compression/, 'keyedge adds no HTTP compression')
  })

  t.test('the vulnerability checks of the subset all pass', async t => {
    expect(t, 'heartbleed', 'OK', /no heartbeat extension/, 'Heartbleed')
    expect(t, 'CCS', 'OK', /^not vulnerable/, 'CCS injection')
    expect(t, 'ROBOT', 'OK', /no RSA key transport cipher/, 'ROBOT: no RSA key exchange')
    expect(t, 'RC4', 'OK', /^not vulnerable/, 'no RC4')
    expect(t, 'SWEET32', 'OK', /^not vulnerable/, 'no 64-bit block ciphers')
    expect(t, 'FREAK', 'OK', /^not vulnerable/, 'no export RSA')
    expect(t, 'POODLE_SSL', 'OK', /no SSLv3/, 'POODLE: no SSLv3')
  })
}
