// End to end: real keyd, real proxy process with the bridge, real curl and openssl clients.
import t from 'tap'
import { connect } from 'node:net'
import { once } from 'node:events'
import { startStack, startProxy, curl, sClient } from '../helpers/edge.js'

const stack = await startStack()
t.teardown(() => stack.stop())
const proxy = await startProxy(stack, { workers: 2 })
t.teardown(() => proxy.stop())
const url = (path = '/'): string => `https://localhost:${proxy.port}${path}`
const ca = ['--cacert', stack.caFile]

t.test('curl over TLS 1.3 and 1.2, HTTP/1.1 and HTTP/2, reaches the upstream', async t => {
  for (const v of [['--tlsv1.3'], ['--tlsv1.2', '--tls-max', '1.2']]) {
    for (const h of ['--http1.1', '--http2']) {
      const r = await curl([...ca, ...v, h, '-w', '\n%{http_version} %{http_code}', url()])
      t.equal(r.code, 0, `${v[0]} ${h}: ${r.stderr}`)
      t.match(r.stdout, /keyedge demo upstream/)
      t.match(r.stdout, h === '--http2' ? /\n2 200$/ : /\n1\.1 200$/)
    }
  }
})

t.test('ECDSA or RSA certificate by client capability, signatures made by keyd', async t => {
  const cases: Array<[string[], RegExp, RegExp]> = [
    [['-tls1_3', '-sigalgs', 'ecdsa_secp256r1_sha256'], /Peer signature type: ECDSA/, /256 bit/],
    [['-tls1_3', '-sigalgs', 'rsa_pss_rsae_sha256'], /Peer signature type: RSA-PSS/, /2048 bit/],
    [['-tls1_2', '-sigalgs', 'ECDSA+SHA256'], /Peer signature type: ECDSA/, /256 bit/],
    [['-tls1_2', '-sigalgs', 'RSA+SHA256'], /Peer signature type: RSA\b/, /2048 bit/],
    [['-tls1_2', '-cipher', 'ECDHE-RSA-AES128-GCM-SHA256'], /Peer signature type: RSA/, /2048 bit/]
  ]
  for (const [args, sig, bits] of cases) {
    const out = await sClient(proxy.port, ['-servername', 'localhost', ...args], stack.caFile)
    t.match(out, /Verification: OK|Verify return code: 0 \(ok\)/, `${args.join(' ')} verifies`)
    t.match(out, sig, args.join(' '))
    t.match(out, new RegExp(`Server public key is ${bits.source}`))
  }
})

t.test('SNI: exact name, wildcard, and default for unknown names', async t => {
  const subject = async (name: string): Promise<string> => {
    const out = await sClient(proxy.port, ['-servername', name, '-tls1_3'], stack.caFile)
    return /subject=([^\n]*)/.exec(out)?.[1] ?? out
  }
  t.match(await subject('localhost'), /CN\s*=\s*localhost/)
  t.match(await subject('other.test'), /CN\s*=\s*other\.test/)
  t.match(await subject('a.wild.test'), /CN\s*=\s*other\.test/, 'single-label wildcard')
  t.match(await subject('a.b.wild.test'), /CN\s*=\s*localhost/, 'wildcard covers one label only; default served')
  t.match(await subject('unknown.example'), /CN\s*=\s*localhost/, 'default certificate')
})

t.test('strict SNI refuses unknown names', async t => {
  const strict = await startProxy(stack, { tls: { strictSni: true }, name: 'strict' })
  t.teardown(() => strict.stop())
  const ok = await sClient(strict.port, ['-servername', 'other.test'], stack.caFile)
  t.match(ok, /CN\s*=\s*other\.test/)
  const refused = await sClient(strict.port, ['-servername', 'unknown.example'], stack.caFile)
  t.notMatch(refused, /subject=/, 'no certificate for an unknown name')
  t.match(refused, /alert|handshake failure|errno|error/i)
})

t.test('garbage on the TLS port does not hurt the proxy', async t => {
  for (const junk of ['GET / HTTP/1.1\r\nHost: x\r\n\r\n', '\x16\x03\x01\x00\x05hello', '\x00'.repeat(5000)]) {
    const s = connect(proxy.port, '127.0.0.1')
    s.on('error', () => {})
    s.resume() // OpenSSL may answer with an alert: read it, or 'close' never comes
    await once(s, 'connect')
    s.end(junk)
    await once(s, 'close')
  }
  t.equal((await curl([...ca, url()])).code, 0, 'still serving')
})
