// The TLS end-to-end path under Node 24 (OpenSSL 3.5): the same bridge .so, loaded by another OpenSSL.
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { node24 } from '../helpers/paths.js'
import { startStack, startProxy, curl, sClient } from '../helpers/edge.js'

const bin = node24()
if (bin === undefined) {
  // CI installs it (.ci/run); a developer runs `npm run node24` once.
  if (process.env.CI === 'true') t.fail('Node 24 is not installed: run npm run node24')
  else t.pass('skipped: Node 24 not installed (npm run node24)', { skip: true })
} else {
  const version = execFileSync(bin, ['-p', 'process.versions.node + " " + process.versions.openssl'], { encoding: 'utf8' }).trim()
  t.match(version, /^24\.\d+\.\d+ 3\.[5-9]/, `running ${version}`)
  const stack = await startStack()
  t.teardown(() => stack.stop())
  const proxy = await startProxy(stack, { workers: 1, node: bin })
  t.teardown(() => proxy.stop())

  t.test('curl over TLS 1.3 and 1.2 through a Node 24 proxy', async t => {
    for (const v of [['--tlsv1.3'], ['--tlsv1.2', '--tls-max', '1.2']]) {
      const r = await curl(['--cacert', stack.caFile, ...v, '--http2', `https://localhost:${proxy.port}/`])
      t.equal(r.code, 0, `${v[0]}: ${r.stderr}`)
      t.match(r.stdout, /keyedge demo upstream/)
    }
  })

  t.test('ECDSA and RSA (PSS and PKCS#1) signatures from keyd under OpenSSL 3.5', async t => {
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
}
