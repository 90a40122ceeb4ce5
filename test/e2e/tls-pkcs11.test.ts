// End to end with the keys in SoftHSM2: real keyd on a PKCS#11 token (via p11-kit server), the proxy
// with the bridge, curl and openssl over TLS 1.2 and 1.3 with ECDSA and RSA.
import t from 'tap'
import { startStack, startProxy, curl, sClient } from '../helpers/edge.js'
import { softhsmSkipReason, startPkcs11Keyd } from '../helpers/softhsm.js'

const skip = softhsmSkipReason()
if (skip !== undefined) {
  t.plan(0, skip)
} else {
  const stack = await startStack({ keyd: async () => await startPkcs11Keyd() })
  t.teardown(() => stack.stop())
  const proxy = await startProxy(stack, { workers: 2 })
  t.teardown(() => proxy.stop())

  t.test('every key of the stack lives in the token', async t => {
    t.ok(stack.keyd.lines.some(l => l.includes('"keystore":"pkcs11"')))
    const keys = await stack.keyd.admin.listKeys()
    t.ok(keys.length >= 3, 'leaf keys and the dev CA key were generated through keyd')
  })

  t.test('curl over TLS 1.3 and 1.2, HTTP/1.1 and HTTP/2', async t => {
    for (const v of [['--tlsv1.3'], ['--tlsv1.2', '--tls-max', '1.2']]) {
      for (const h of ['--http1.1', '--http2']) {
        const r = await curl(['--cacert', stack.caFile, ...v, h, '-w', '\n%{http_version} %{http_code}', `https://localhost:${proxy.port}/`])
        t.equal(r.code, 0, `${v[0]} ${h}: ${r.stderr}`)
        t.match(r.stdout, /keyedge demo upstream/)
      }
    }
  })

  t.test('ECDSA, RSA-PSS and RSA PKCS#1 handshakes signed in the token', async t => {
    const cases: Array<[string[], RegExp, RegExp]> = [
      [['-tls1_3', '-sigalgs', 'ecdsa_secp256r1_sha256'], /Peer signature type: ECDSA/, /256 bit/],
      [['-tls1_3', '-sigalgs', 'rsa_pss_rsae_sha256'], /Peer signature type: RSA-PSS/, /2048 bit/],
      [['-tls1_2', '-sigalgs', 'ECDSA+SHA256'], /Peer signature type: ECDSA/, /256 bit/],
      [['-tls1_2', '-sigalgs', 'RSA+SHA256'], /Peer signature type: RSA\b/, /2048 bit/],
      [['-tls1_2', '-sigalgs', 'RSA-PSS+SHA256'], /Peer signature type: RSA-PSS/, /2048 bit/]
    ]
    for (const [args, sig, bits] of cases) {
      const out = await sClient(proxy.port, ['-servername', 'localhost', ...args], stack.caFile)
      t.match(out, /Verification: OK|Verify return code: 0 \(ok\)/, `${args.join(' ')} verifies`)
      t.match(out, sig, args.join(' '))
      t.match(out, new RegExp(`Server public key is ${bits.source}`))
    }
  })
}
