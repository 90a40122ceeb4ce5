// The TLS end-to-end path under a second Node runtime (the machine's own, e.g. Node 20 with OpenSSL 3.0,
// while the suite runs on Node 24 with OpenSSL 3.5): the same bridge .so loaded by another OpenSSL,
// and session resumption (tickets across a ticket-key rotation, the ratio metric) under it.
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { secondNode } from '../helpers/paths.js'
import { startStack, startProxy, curl, sClient } from '../helpers/edge.js'
import { visit, workersPastEpoch } from '../helpers/resume.js'
import { call } from '../helpers/token.js'

const bin = secondNode()
if (bin === undefined) {
  t.pass(`skipped: no Node of another major version than ${process.version} on this machine (set KEYEDGE_SECOND_NODE)`, { skip: true })
} else {
  const version = execFileSync(bin, ['-p', 'process.versions.node + " " + process.versions.openssl'], { encoding: 'utf8' }).trim()
  t.match(version, /^\d+\.\d+\.\d+ 3\.\d+/, `second runtime: Node ${version.replace(' ', ', OpenSSL ')}`)
  t.not(version.split('.')[0], process.versions.node.split('.')[0], 'a different major version than the suite runs on')
  const stack = await startStack()
  t.teardown(() => stack.stop())
  const proxy = await startProxy(stack, { workers: 1, node: bin })
  t.teardown(() => proxy.stop())

  t.test('curl over TLS 1.3 and 1.2 through a proxy on the second runtime', async t => {
    for (const v of [['--tlsv1.3'], ['--tlsv1.2', '--tls-max', '1.2']]) {
      const r = await curl(['--cacert', stack.caFile, ...v, '--http2', `https://localhost:${proxy.port}/`])
      t.equal(r.code, 0, `${v[0]}: ${r.stderr}`)
      t.match(r.stdout, /keyedge demo upstream/)
    }
  })

  t.test('ECDSA and RSA (PSS and PKCS#1) signatures from keyd under the OpenSSL of the second runtime', async t => {
    const cases: Array<[string[], RegExp]> = [
      [['-tls1_3', '-sigalgs', 'ecdsa_secp256r1_sha256'], /Peer signature type: ECDSA/],
      [['-tls1_3', '-sigalgs', 'rsa_pss_rsae_sha256'], /Peer signature type: RSA-PSS/],
      [['-tls1_2', '-sigalgs', 'RSA+SHA256'], /Peer signature type: RSA\b/],
      [['-tls1_2', '-sigalgs', 'ECDSA+SHA384'], /Peer signature type: ECDSA/]
    ]
    for (const [args, sig] of cases) {
      const out = await sClient(proxy.port, ['-servername', 'localhost', ...args], stack.caFile)
      t.match(out, /Verification: OK|Verify return code: 0 \(ok\)/, args.join(' '))
      t.match(out, sig, args.join(' '))
    }
  })
  t.test('TLS 1.3 and 1.2 tickets resume under the second runtime, across workers and a ticket-key rotation; the ratio metric agrees', async t => {
    const ROTATION_SECONDS = 10
    const resuming = await startProxy(stack, { workers: 2, node: bin, name: 'second-runtime-resumption', admin: {}, tls: { ticketRotationSeconds: ROTATION_SECONDS, ticketPreviousKeys: 1 } })
    t.teardown(() => resuming.stop())
    const ca = readFileSync(stack.caFile)
    const started = Date.now()
    const seen = { resumed: 0, full: 0 }
    const count = (v: { error?: string, reused: boolean }): void => { if (v.error === undefined) seen[v.reused ? 'resumed' : 'full']++ }
    const sessions = new Map<string, Buffer | undefined>()
    for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
      const first = await visit(resuming.port, ca, version)
      count(first)
      let session = first.session
      let resumed = 0
      for (let i = 0; i < 10; i++) {
        const v = await visit(resuming.port, ca, version, session)
        t.equal(v.error, undefined, `${version}: no error`)
        count(v)
        if (v.reused) resumed++
        session = v.session
      }
      t.equal(resumed, 10, `${version}: 10 of 10 reconnects resumed`)
    }
    // Tickets of this epoch's key, offered again after the next epoch began (a new key encrypts).
    const epoch = (): number => Math.floor(Date.now() / 1000 / ROTATION_SECONDS)
    for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
      const v = await visit(resuming.port, ca, version)
      count(v)
      sessions.set(version, v.session)
    }
    // Read after the tickets were issued: their key's epoch is at most this one, whichever side of a boundary they fell.
    const before = epoch()
    await workersPastEpoch(resuming, before)
    for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
      const v = await visit(resuming.port, ca, version, sessions.get(version))
      count(v)
      t.equal(v.error, undefined)
      t.ok(v.reused, `${version}: a ticket of the previous key resumes after the rotation`)
    }
    const metrics = (await call({ port: resuming.adminPort as number }, { path: '/metrics' })).body
    const read = (re: RegExp): number => Number(re.exec(metrics)?.[1] ?? NaN)
    const ratio = read(/^edge_tls_resumption_ratio (\S+)$/m)
    if (Date.now() - started < 50_000) {
      // Every handshake of this test is still inside the 60 s window.
      t.equal(read(/^edge_tls_resumption_window_handshakes\{resumed="true"\} (\S+)$/m), seen.resumed, 'resumed handshakes in the window, summed over the workers')
      t.equal(read(/^edge_tls_resumption_window_handshakes\{resumed="false"\} (\S+)$/m), seen.full, 'full handshakes in the window')
      t.ok(Math.abs(ratio - seen.resumed / (seen.resumed + seen.full)) < 1e-9, `edge_tls_resumption_ratio ${ratio} = ${seen.resumed} / ${seen.resumed + seen.full}`)
    } else {
      t.ok(ratio > 0 && ratio <= 1, 'ratio within (0, 1] (the test outlasted most of the window)')
    }
  })
}
