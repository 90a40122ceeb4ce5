// Secure contexts and the cert store: certificate/key checks with clear errors and no PEM in
// messages, the custody warning, and strict SNI refusing unknown names (counted), in process.
import { once } from 'node:events'
import { rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { connect as tlsConnect } from 'node:tls'
import t from 'tap'
import { Registry } from 'prom-client'
import { validateConfig } from '../../src/config/index.js'
import type { CertificateConfig, TlsConfig } from '../../src/config/types.js'
import { createLogger } from '../../src/logger.js'
import { startProxyServer } from '../../src/proxy/server.js'
import { loadCertificate } from '../../src/tls/secure-context.js'
import { tempHome } from '../helpers/paths.js'
import { selfSigned } from '../helpers/proxy-fixtures.js'
import { errorCode, errorMessage } from '../../lib/errors.js'

const home = tempHome('keyedge-tls-')
t.teardown(() => rmSync(home, { recursive: true, force: true }))
const a = selfSigned(home, 'a', ['a.test', '*.a.test'])
const aRsa = selfSigned(home, 'a-rsa', ['a.test', '*.a.test'], 'rsa')
const b = selfSigned(home, 'b', ['b.test'])
const bRsa = selfSigned(home, 'b-rsa', ['b.test'], 'rsa')
const tls: TlsConfig = validateConfig({
  certificates: [{ name: 'x', serverNames: ['x.test'], files: [{ cert: 'x', key: 'x' }] }],
  routes: [{ upstream: 'http://127.0.0.1:1' }]
}, { baseDir: home }).tls

function capture (): { log: ReturnType<typeof createLogger>, lines: () => string[] } {
  const out = new PassThrough()
  const chunks: string[] = []
  out.on('data', (c: Buffer) => chunks.push(c.toString()))
  return { log: createLogger({ level: 'debug', destination: out }), lines: () => chunks.join('').split('\n').filter(l => l !== '') }
}

const entry = (files: Array<{ cert: string, key: string }>): CertificateConfig => ({ name: 'e', serverNames: ['a.test'], files })

t.test('a certificate that does not match its key is refused, naming both files', async t => {
  const { log, lines } = capture()
  t.throws(() => loadCertificate(entry([{ cert: a.cert, key: b.key }]), tls, log), {
    code: 'EDGE_ERR_CERT_KEY_MISMATCH',
    name: 'CertKeyMismatchError',
    message: `certificate ${a.cert} does not match key ${b.key}`
  })
  t.notOk(lines().some(l => l.includes('-----BEGIN')), 'no PEM in any log line')
})

t.test('expired, unparsable and unreadable certificates, bad keys: clear errors without PEM', async t => {
  const { log } = capture()
  const inTenDays = new Date(Date.now() + 10 * 86_400_000)
  t.throws(() => loadCertificate(entry([{ cert: a.cert, key: a.key }]), tls, log, inTenDays), { code: 'EDGE_ERR_CERT_LOAD', message: /expired on .*CN=a\.test/ })
  const garbage = join(home, 'garbage.crt')
  writeFileSync(garbage, '-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n')
  t.throws(() => loadCertificate(entry([{ cert: garbage, key: a.key }]), tls, log), { code: 'EDGE_ERR_CERT_LOAD', message: /cannot parse/ })
  t.throws(() => loadCertificate(entry([{ cert: join(home, 'none.crt'), key: a.key }]), tls, log), { code: 'EDGE_ERR_CERT_LOAD', message: /ENOENT/ })
  t.throws(() => loadCertificate(entry([{ cert: a.key, key: a.key }]), tls, log), { code: 'EDGE_ERR_CERT_LOAD', message: /no PEM CERTIFICATE/ },
    'a key given as the certificate is refused without echoing it')
  const ref = join(home, 'web.keyref')
  writeFileSync(ref, '-----BEGIN KEYEDGE KEY REFERENCE-----\nS0VSMQMAAAADd2ViBAAAAAQAAAABBQAAAAdlYy1wMjU2\n-----END KEYEDGE KEY REFERENCE-----\n')
  try {
    loadCertificate(entry([{ cert: a.cert, key: ref }]), tls, log)
    t.fail('a key reference cannot load without the bridge')
  } catch (err) {
    t.equal(errorCode(err), 'EDGE_ERR_KEY_LOAD')
    t.match(errorMessage(err), /needs the keyd bridge/)
    t.notMatch(errorMessage(err), /-----|S0VSMQ/, 'the reference itself is not echoed')
  }
})

t.test('a plain private key works but logs that custody is bypassed, once with the count', async t => {
  const { log, lines } = capture()
  const loaded = loadCertificate(entry([{ cert: a.cert, key: a.key }, { cert: aRsa.cert, key: aRsa.key }]), tls, log)
  t.same(loaded.pairs.map(p => p.custody), ['in-process', 'in-process'])
  const warnings = lines().map(l => JSON.parse(l) as { level: number, msg: string, pairs: number }).filter(l => l.level === 40)
  t.equal(warnings.length, 1, 'one warning per load')
  t.match(warnings[0], { msg: /KEY CUSTODY BYPASSED: 2 certificate pair/, pairs: 2 })
  t.notOk(lines().some(l => l.includes('PRIVATE KEY')))
})

t.test('strict SNI refuses unknown names and counts them; known names and no-SNI clients are served', async t => {
  const registry = new Registry()
  const { log } = capture()
  const config = validateConfig({
    listen: { host: '127.0.0.1', port: 0 },
    tls: { strictSni: true, defaultCertificate: 'a' },
    certificates: [
      { name: 'a', serverNames: ['a.test', '*.a.test'], files: [{ cert: a.cert, key: a.key }, { cert: aRsa.cert, key: aRsa.key }] },
      { name: 'b', serverNames: ['b.test'], files: [{ cert: bRsa.cert, key: bRsa.key }, { cert: b.cert, key: b.key }] }
    ],
    routes: [{ upstream: 'http://127.0.0.1:1' }]
  }, { baseDir: home })
  const server = await startProxyServer({ config, log, registry })
  t.teardown(async () => await server.close(100))
  const ca = [a.certPem, aRsa.certPem, b.certPem, bRsa.certPem]
  const handshake = async (servername: string, sigalgs?: string): Promise<string> => {
    const socket = tlsConnect({ host: '127.0.0.1', port: server.port, servername, ca, checkServerIdentity: () => undefined, ...(sigalgs !== undefined ? { sigalgs } : {}) })
    try {
      await once(socket, 'secureConnect')
      const cert = socket.getPeerCertificate()
      return `${String(cert.subject.CN)} ${cert.bits === 2048 ? 'rsa' : 'ec'}`
    } finally {
      socket.destroy()
    }
  }
  t.equal(await handshake('b.test'), 'b.test ec', 'ECDSA preferred after switching context by SNI')
  t.equal(await handshake('B.TEST.'), 'b.test ec', 'case and trailing dot ignored')
  t.equal(await handshake('b.test', 'rsa_pss_rsae_sha256:rsa_pkcs1_sha256'), 'b.test rsa', 'RSA for a client without ECDSA')
  t.equal(await handshake('www.a.test'), 'a.test ec')
  t.equal(await handshake(''), 'a.test ec', 'no SNI: the default certificate')
  await t.rejects(handshake('unknown.test'), 'unknown name refused in strict mode')
  await t.rejects(handshake('x.y.a.test'), 'a wildcard covers one label only')
  const refused = await registry.getSingleMetricAsString('edge_tls_sni_refused_total')
  t.match(refused, /edge_tls_sni_refused_total 2/)
  const selections = await registry.getSingleMetricAsString('edge_tls_sni_selections_total')
  t.match(selections, /match="exact"} 3/)
  t.match(selections, /match="wildcard"} 1/)
})

t.test('tls.groups: the key exchange follows the list, a client sharing no group gets handshake_failure, a reload changes it', async t => {
  const { log } = capture()
  const settings = (groups?: string): Record<string, unknown> => ({
    listen: { host: '127.0.0.1', port: 0 },
    ...(groups === undefined ? {} : { tls: { groups } }),
    certificates: [{ name: 'a', serverNames: ['a.test'], files: [{ cert: a.cert, key: a.key }] }],
    routes: [{ upstream: 'http://127.0.0.1:1' }]
  })
  const config = validateConfig(settings('P-256'), { baseDir: home })
  const server = await startProxyServer({ config, log, registry: new Registry() })
  t.teardown(async () => await server.close(100))
  // The group the client ends up using; its own default offers X25519MLKEM768, X25519 and more.
  const group = async (ecdhCurve?: string): Promise<string> => {
    const socket = tlsConnect({ host: '127.0.0.1', port: server.port, servername: 'a.test', ca: [a.certPem], checkServerIdentity: () => undefined, minVersion: 'TLSv1.3', ...(ecdhCurve === undefined ? {} : { ecdhCurve }) })
    try {
      await once(socket, 'secureConnect')
      return String((socket.getEphemeralKeyInfo() as { name?: string } | null)?.name)
    } finally {
      socket.destroy()
    }
  }
  t.equal(await group(), 'prime256v1', 'P-256 only: chosen over the client\'s X25519 and X25519MLKEM768')
  await t.rejects(group('X25519'), { code: 'ERR_SSL_SSL/TLS_ALERT_HANDSHAKE_FAILURE' }, 'a client offering no listed group gets handshake_failure')
  server.reload(undefined, validateConfig(settings('X25519:P-256'), { baseDir: home }).tls).commit()
  t.equal(await group(), 'X25519', 'after a reload, the new list')
  server.reload(undefined, validateConfig(settings(), { baseDir: home }).tls).commit()
  t.equal(await group(), 'X25519MLKEM768', 'the default (auto): OpenSSL 3.5 prefers the post-quantum hybrid')
  t.equal(await group('X25519'), 'X25519')
})
