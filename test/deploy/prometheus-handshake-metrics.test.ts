// The handshake latency SLI's labels mean what they say: a first handshake counts as full, its
// resumption as resumed, a certificate whose key is in keyd as custody="keyd" and one whose key
// is a PEM file read by the proxy as custody="in_process" (the live Prometheus test cannot produce
// the latter: its stack has no key outside keyd). The proxy's request duration counts the requests.
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { generateKeyPairSync } from 'node:crypto'
import { readFileSync, writeFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { startStack, startProxy, sClient } from '../helpers/edge.js'
import { visit } from '../helpers/resume.js'
import { tempHome } from '../helpers/paths.js'

const stack = await startStack()
t.teardown(async () => { await stack.stop() })
// A certificate entry for pem.test whose key the proxy holds itself (generated now, never committed).
const dir = tempHome('keyedge-pem-')
t.teardown(() => rmSync(dir, { recursive: true, force: true }))
const keyFile = join(dir, 'k.pem')
writeFileSync(keyFile, generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 })
execFileSync('openssl', ['req', '-x509', '-new', '-key', keyFile, '-subj', '/CN=pem.test', '-addext', 'subjectAltName=DNS:pem.test', '-days', '1', '-out', join(dir, 'c.pem')])
const proxy = await startProxy(stack, {
  admin: {},
  extra: {
    certificates: [
      { name: 'localhost', serverNames: ['localhost', '127.0.0.1'], files: stack.certs.leaves.map(l => ({ cert: l.certFile, key: l.keyRefFile })) },
      { name: 'pem', serverNames: ['pem.test'], files: [{ cert: join(dir, 'c.pem'), key: keyFile }] }
    ]
  }
})
t.teardown(async () => { await proxy.stop() })

/** `edge_tls_handshake_duration_seconds_count` and `edge_proxy_request_duration_seconds_count` by labels, from the admin listener. */
async function counts (): Promise<Map<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${proxy.adminPort as number}/metrics`)).text()
  const out = new Map<string, number>()
  for (const m of text.matchAll(/^(edge_tls_handshake_duration_seconds_count|edge_proxy_request_duration_seconds_count)\{([^}]*)\} (\d+)/gm)) out.set(`${m[1] ?? ''}{${m[2] ?? ''}}`, Number(m[3]))
  return out
}

t.test('full and resumed handshakes, keys in keyd and in process, requests', async t => {
  const ca = readFileSync(stack.caFile)
  const first = await visit(proxy.port, ca, 'TLSv1.3')
  t.equal(first.error, undefined)
  const second = await visit(proxy.port, ca, 'TLSv1.3', first.session)
  t.ok(second.reused, 'the second visit resumed')
  const out = await sClient(proxy.port, ['-servername', 'pem.test', '-verify_return_error', '-CAfile', join(dir, 'c.pem')], join(dir, 'c.pem'))
  t.match(out, /Verify return code: 0/, 'pem.test served with its in-process key')
  const c = await counts()
  t.equal(c.get('edge_tls_handshake_duration_seconds_count{resumed="full",custody="keyd"}'), 1, 'one full handshake, key in keyd')
  t.equal(c.get('edge_tls_handshake_duration_seconds_count{resumed="resumed",custody="keyd"}'), 1, 'one resumed handshake')
  t.equal(c.get('edge_tls_handshake_duration_seconds_count{resumed="full",custody="in_process"}'), 1, 'one full handshake, key in process')
  t.equal(c.get('edge_proxy_request_duration_seconds_count{outcome="forwarded"}'), 2, 'both visits\' requests timed')
})
