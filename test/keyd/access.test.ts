// Least privilege per client: the CA-oracle attack (only the proxy's secret, SIGN a TBSCertificate with
// the dev CA key) must fail, refusals are audited and counted, and clients.json is checked, migrated
// and re-read without a restart.
import t from 'tap'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import 'reflect-metadata'
import * as x509 from '@peculiar/x509'
import { startKeyd, refusal } from '../helpers/keyd.js'
import { spawnCli } from '../helpers/processes.js'
import { tempHome } from '../helpers/paths.js'
import { tls13Input } from '../helpers/tls-inputs.js'
import { issueDevCertificates } from '../../src/cli/cert.js'
import { keydCryptoKey, keydWebCrypto } from '../../certs/keyd-crypto.js'
import type { KeydClient } from '../../keyd/client/client.js'

// keyd's own defaults, as `npm start` and `keyedge cert dev` leave them.
const keyd = await startKeyd(undefined, ['--metrics-port', '0'], {}, { keydDefaults: true })
t.teardown(() => keyd.stop())
const ready = await keyd.waitFor(o => o.msg === 'keyd ready')
const metricsUrl = `http://127.0.0.1:${ready.metricsPort as number}/metrics`
const certs = await issueDevCertificates(keyd.admin, keyd.paths.certsDir)
const ca = new x509.X509Certificate(readFileSync(certs.caFile, 'utf8'))
const proxy = keyd.client('proxy')
t.teardown(() => proxy.close())

/** What a compromised proxy worker would try: a certificate for any name, signed in keyd by the dev CA key. */
async function forgeCertificate (client: KeydClient): Promise<x509.X509Certificate> {
  const crypto = keydWebCrypto(client)
  const keys = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify'])
  return await x509.X509CertificateGenerator.create({
    subject: 'CN=bank.example',
    issuer: ca.subject,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 86_400_000),
    publicKey: keys.publicKey,
    signingKey: keydCryptoKey('dev-ca', 'ec-p256') as never,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: 'bank.example' }])]
  }, crypto)
}

t.test('the defaults: the proxy may use tls-server keys only, the admin (issuer) every usage', async t => {
  const file = JSON.parse(readFileSync(keyd.paths.clientsFile, 'utf8')) as { clients: Array<{ name: string, usages: string[], keys: string[], rights: string[] }> }
  const byName = new Map(file.clients.map(c => [c.name, c]))
  t.same(byName.get('proxy')?.usages, ['tls-server'])
  t.same(byName.get('proxy')?.rights, ['sign'])
  t.same(byName.get('admin')?.usages, ['tls-server', 'token-sign', 'cert-sign'])
})

t.test('CA oracle: with only the proxy secret, the dev CA key signs no certificate', async t => {
  const err = await forgeCertificate(proxy).then(() => undefined, (e: unknown) => e)
  t.match(err, { code: 'KEYD_ERR_USAGE_FORBIDDEN', message: /proxy may not use cert-sign keys such as dev-ca/ }, 'keyd refuses the SIGN')
  // Whatever the client library does, the raw SIGN of a TBSCertificate-shaped message fails too.
  const tbs = Buffer.from('3082010aa003020102', 'hex')
  t.equal((await refusal(proxy.sign('dev-ca', 'ecdsa-sha256', tbs))).code, 'KEYD_ERR_USAGE_FORBIDDEN')
  const batch = await proxy.signBatch([
    { name: 'localhost-ec', algorithm: 'ecdsa-sha256', message: tls13Input() },
    { name: 'dev-ca', algorithm: 'ecdsa-sha256', message: tbs, ieeeP1363: true }
  ])
  t.ok(!(batch[0] instanceof Error), 'the TLS entry of the batch signs')
  t.match(batch[1], { code: 'KEYD_ERR_USAGE_FORBIDDEN' }, 'the CA entry of the batch is refused on its own')
  t.ok((await proxy.sign('localhost-ec', 'ecdsa-sha256', tls13Input())).signature.length > 0, 'the proxy still signs handshakes')
  // The admin (issuer) still issues: `keyedge cert dev` works.
  const issued = await forgeCertificate(keyd.admin)
  t.ok(await issued.verify({ publicKey: ca.publicKey }), 'the issuer client signs certificates')
})

t.test('refusals are audited and counted as access violations', async t => {
  const text = await (await fetch(metricsUrl)).text()
  t.match(text, /keyd_access_violations_total\{client="proxy"\} 3/)
  t.match(text, /keyd_refused_total\{reason="USAGE_FORBIDDEN"\} 2/)
  t.ok(keyd.lines.some(l => l.includes('access violation') && l.includes('"client":"proxy"')), 'keyd logs the violation')
  const entries = readFileSync(join(keyd.paths.keydDir, 'audit.log'), 'utf8').trim().split('\n').map(l => JSON.parse(l) as { client: string, op: string, key: string, result: string })
  const refused = entries.filter(e => e.result === 'USAGE_FORBIDDEN')
  t.ok(refused.length >= 3 && refused.every(e => e.client === 'proxy' && e.key === 'dev-ca'), 'each refused SIGN and batch entry is in the audit log')
  t.ok(refused.some(e => e.op === 'SIGN_BATCH'), 'the batch entry too')
})

t.test('a grant or a revocation in clients.json applies without a restart', async t => {
  await keyd.admin.createKey('acc-jwt', 'ec-p256', 'token-sign')
  t.equal((await refusal(proxy.sign('acc-jwt', 'ecdsa-sha256', Buffer.from('x')))).code, 'KEYD_ERR_USAGE_FORBIDDEN', 'token-sign is not granted by default')
  const file = JSON.parse(readFileSync(keyd.paths.clientsFile, 'utf8')) as { clients: Array<Record<string, unknown>> }
  const edit = (f: (c: Record<string, unknown>) => void): void => {
    for (const c of file.clients) if (c.name === 'proxy') f(c)
    writeFileSync(keyd.paths.clientsFile, JSON.stringify(file, null, 2))
  }
  edit(c => { c.usages = ['tls-server', 'token-sign']; c.keys = ['localhost-ec', 'localhost-rsa', 'acc-jwt'] })
  await keyd.waitFor(o => o.msg === 'keyd clients file reloaded')
  t.ok((await proxy.sign('acc-jwt', 'ecdsa-sha256', Buffer.from('x'))).signature.length > 0, 'granted: token-sign key acc-jwt signs on the open connection')
  t.equal((await refusal(proxy.getPublicKey('dev-ca'))).code, 'KEYD_ERR_USAGE_FORBIDDEN', 'a key outside the list is refused')
  edit(c => { c.secretSha256 = 'ab'.repeat(32) })
  let reloads = 0
  await keyd.waitFor(o => o.msg === 'keyd clients file reloaded' && ++reloads === 2)
  t.equal((await refusal(proxy.ping())).code, 'KEYD_ERR_UNKNOWN_CLIENT', 'a changed secret closes the open connection')
})

t.test('clients.json: cert-sign without an issuer right stops keyd; a file without usages is migrated', async t => {
  const home = tempHome()
  const first = await startKeyd(home, [], {}, { keydDefaults: true })
  await first.stop()
  const clientsFile = first.paths.clientsFile
  const original = JSON.parse(readFileSync(clientsFile, 'utf8')) as { clients: Array<Record<string, unknown>> }
  writeFileSync(clientsFile, JSON.stringify({ clients: original.clients.map(c => c.name === 'proxy' ? { ...c, usages: ['tls-server', 'cert-sign'] } : c) }))
  const bad = spawnCli(['keyd', 'serve', '--dev'], { KEYEDGE_HOME: home })
  const [code] = await new Promise<[number | null]>(resolve => bad.proc.once('exit', c => resolve([c])))
  t.not(code, 0, 'keyd refuses to start')
  t.match(bad.lines.join('\n'), /clients\[\d\]\.usages: cert-sign needs the "issue" or "admin" right/)

  // An older keyd wrote no usages: the proxy gets tls-server and token-sign, never cert-sign, with a warning.
  writeFileSync(clientsFile, JSON.stringify({ clients: original.clients.map(({ usages: _usages, ...c }) => c) }))
  const migrated = await startKeyd(home, [], {}, { keydDefaults: true })
  t.teardown(() => migrated.stop())
  t.ok(migrated.lines.some(l => l.includes('has no \\"usages\\"') || l.includes('has no "usages"')), 'keyd warns about the migrated clients')
  await migrated.admin.createKey('mig-ca', 'ec-p256', 'cert-sign')
  await migrated.admin.createKey('mig-jwt', 'ec-p256', 'token-sign')
  const p = migrated.client('proxy')
  t.teardown(() => p.close())
  t.equal((await refusal(p.sign('mig-ca', 'ecdsa-sha256', Buffer.from('tbs')))).code, 'KEYD_ERR_USAGE_FORBIDDEN', 'never cert-sign')
  t.ok((await p.sign('mig-jwt', 'ecdsa-sha256', Buffer.from('x'))).signature.length > 0, 'token-sign as before')
  t.ok((await migrated.admin.sign('mig-ca', 'ecdsa-sha256', Buffer.from('tbs'))).signature.length > 0, 'the admin keeps issuing')
  t.notMatch(readFileSync(clientsFile, 'utf8'), /usages/, 'keyd does not rewrite the operator\'s file')
})
