// KEY_ROTATE (new key versions, older ones keep signing), the certificate-request policy for
// tls-server keys, and `keyedge cert renew` (dev CA and --csr) against a real keyd.
import t from 'tap'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { verify, webcrypto } from 'node:crypto'
import 'reflect-metadata'
import * as x509 from '@peculiar/x509'
import { startKeyd } from '../helpers/keyd.js'
import { spawnCli } from '../helpers/processes.js'
import { tls13Input } from '../helpers/tls-inputs.js'
import { KeydRemoteError } from '../../keyd/errors.js'
import { decodeKeyReference } from '../../keyd/protocol/codec.js'
import { csrInfoPublicKey } from '../../keyd/policy/csr-message.js'
import { issueDevCertificates } from '../../src/cli/cert.js'
import { keydCertificateRequest } from '../../certs/renew.js'
import { defined } from '../helpers/defined.js'

/** The first element inside a DER SEQUENCE (a CSR's CertificationRequestInfo, what gets signed). */
function firstInner (der: Buffer): Buffer {
  const skip = (at: number): { start: number, end: number } => {
    const b = der.readUInt8(at + 1)
    const n = b & 0x80 ? b & 0x7f : 0
    let len = n === 0 ? b : 0
    for (let i = 0; i < n; i++) len = len * 256 + der.readUInt8(at + 2 + i)
    return { start: at + 2 + n, end: at + 2 + n + len }
  }
  const inner = skip(skip(0).start)
  return der.subarray(skip(0).start, inner.end)
}

const keyd = await startKeyd()
t.teardown(() => keyd.stop())
const proxy = keyd.client('proxy')
t.teardown(() => proxy.close())

t.test('KEY_ROTATE makes a new current version; the old one keeps signing', async t => {
  const v1 = await keyd.admin.createKey('rot-ec', 'ec-p256', 'tls-server')
  const v2 = await keyd.admin.rotateKey('rot-ec')
  t.equal(v1.version, 1)
  t.equal(v2.version, 2)
  t.notSame(v2.spki, v1.spki, 'a new key pair')
  t.equal((await proxy.getPublicKey('rot-ec')).version, 2, 'version 0 means the newest')
  t.same((await proxy.getPublicKey('rot-ec', 1)).spki, v1.spki, 'version 1 is still there')
  const msg = tls13Input()
  for (const [version, info] of [[1, v1], [2, v2]] as const) {
    const s = await proxy.sign('rot-ec', 'ecdsa-sha256', msg, { version })
    t.equal(s.version, version)
    t.ok(verify('sha256', msg, { key: Buffer.from(info.spki), format: 'der', type: 'spki' }, s.signature), `version ${version} signs`)
  }
  const list = (await keyd.admin.listKeys()).find(k => k.name === 'rot-ec')
  t.equal(list?.currentVersion, 2)
  await t.rejects(proxy.rotateKey('rot-ec'), { code: 'KEYD_ERR_FORBIDDEN' }, 'admin only')
  await t.rejects(keyd.admin.rotateKey('no-such-key'), { code: 'KEYD_ERR_KEY_NOT_FOUND' })
})

t.test('a tls-server key signs a request for itself for an admin only', async t => {
  const key = await keyd.admin.createKey('csr-ec', 'ec-p256', 'tls-server')
  const ref = { name: 'csr-ec', version: key.version, type: 'ec-p256' }
  const csr = await keydCertificateRequest(keyd.admin, ref, key.spki, ['csr.test', '127.0.0.1'])
  t.ok(await csr.verify(), 'the request verifies with the key it certifies')
  const info = firstInner(Buffer.from(csr.rawData))
  t.same(csrInfoPublicKey(info), Buffer.from(key.spki), 'the policy finds the public key in the request info')
  t.equal(csrInfoPublicKey(tls13Input()), null, 'a TLS input is no request')
  t.equal(csrInfoPublicKey(Buffer.concat([info, Buffer.of(0)])), null, 'trailing bytes are refused')
  const err = await proxy.sign('csr-ec', 'ecdsa-sha256', info).catch((e: unknown) => e)
  t.ok(err instanceof KeydRemoteError && err.code === 'KEYD_ERR_POLICY_DENIED_MESSAGE', 'the proxy client cannot have a request signed')
  const other = await keyd.admin.createKey('csr-other', 'ec-p256', 'tls-server')
  const foreign = await keydCertificateRequest(keyd.admin, { name: 'csr-other', version: other.version, type: 'ec-p256' }, other.spki, ['x.test'])
  const denied = await keyd.admin.sign('csr-ec', 'ecdsa-sha256', firstInner(Buffer.from(foreign.rawData))).catch((e: unknown) => e)
  t.ok(denied instanceof KeydRemoteError && denied.code === 'KEYD_ERR_POLICY_DENIED_MESSAGE', 'nor a request for another key, even for an admin')
})

t.test('keyedge cert renew: dev CA, and --csr for an external CA', async t => {
  const dev = await issueDevCertificates(keyd.admin, keyd.paths.certsDir, 'renew')
  const ec = defined(dev.leaves[0], 'the EC leaf')
  const before = new x509.X509Certificate(readFileSync(ec.certFile, 'utf8'))
  const run = spawnCli(['cert', 'renew', '--name', 'renew-ec'], { KEYEDGE_HOME: keyd.paths.home })
  const { code: code } = await run.exited
  t.equal(code, 0, run.lines.join('\n'))
  const after = new x509.X509Certificate(readFileSync(ec.certFile, 'utf8'))
  t.not(after.serialNumber, before.serialNumber, 'a new certificate')
  t.same(decodeKeyReference(readFileSync(ec.keyRefFile, 'utf8')), { name: 'renew-ec', version: 2, type: 'ec-p256' }, 'the reference names the new version')
  t.same(Buffer.from(after.publicKey.rawData), (await keyd.admin.getPublicKey('renew-ec', 2)).spki, 'certified key = the new version')
  const names = (c: x509.X509Certificate): string[] => c.getExtension(x509.SubjectAlternativeNameExtension)?.names.items.map(n => n.value) ?? []
  t.same(names(after), names(before), 'same names')
  t.ok(await after.verify({ publicKey: await new x509.X509Certificate(readFileSync(dev.caFile, 'utf8')).publicKey.export(webcrypto) }, webcrypto), 'signed by the dev CA')

  const csrFile = join(keyd.paths.home, 'renew-rsa.csr')
  const csrRun = spawnCli(['cert', 'renew', '--name', 'renew-rsa', '--csr', csrFile, '--san', 'www.example.test'], { KEYEDGE_HOME: keyd.paths.home })
  const { code: csrCode } = await csrRun.exited
  t.equal(csrCode, 0, csrRun.lines.join('\n'))
  const csr = new x509.Pkcs10CertificateRequest(readFileSync(csrFile, 'utf8'))
  t.ok(await csr.verify(), 'the CSR verifies')
  t.match(csr.subject, /CN=www\.example\.test/)
  t.same(decodeKeyReference(readFileSync(`${csrFile}.keyref`, 'utf8')), { name: 'renew-rsa', version: 2, type: 'rsa-2048' })
  t.same(Buffer.from(csr.publicKey.rawData), (await keyd.admin.getPublicKey('renew-rsa', 2)).spki)
  t.same(decodeKeyReference(readFileSync(defined(dev.leaves[1], 'the RSA leaf').keyRefFile, 'utf8'))?.version, 1, 'the served files are left alone')

  const missing = spawnCli(['cert', 'renew', '--name', 'nothing-here'], { KEYEDGE_HOME: keyd.paths.home })
  const { code: missingCode } = await missing.exited
  t.equal(missingCode, 1)
  t.match(missing.lines.join('\n'), /EDGE_ERR_CERT_RENEW/)
  t.notOk(existsSync(join(keyd.paths.certsDir, 'nothing-here.crt')))
})
