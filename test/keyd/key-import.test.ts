// Import (plain and bring-your-own-key wrapped) and attestation statements against a real keyd: round
// trips whose signatures verify under the original public key, clean refusals, tamper detection.
import t from 'tap'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { constants, createPublicKey, generateKeyPairSync, randomBytes, verify } from 'node:crypto'
import { startKeyd, keydCli, refusal } from '../helpers/keyd.js'
import { KeyMaterialError } from '../../keyd/errors.js'
import { ErrorCode } from '../../keyd/protocol/codec.js'
import { wrapForImport, decodeBundle, encodeBundle } from '../../keyd/keystore/key-import.js'
import { verifyAttestation, type AttestationDocument } from '../../keyd/protocol/attestation.js'

const keyd = await startKeyd()
t.teardown(async () => await keyd.stop())
const home = keyd.paths.home

const cli = async (args: string[]): Promise<{ code: number | null, out: string }> => await keydCli(home, args)

t.test('plain import: marked imported, signs under the original public key', async t => {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-384' })
  const k = await keyd.admin.importKey('imp-ec', 'token-sign', { pkcs8: privateKey.export({ format: 'der', type: 'pkcs8' }) })
  t.match(k, { name: 'imp-ec', version: 1, type: 'ec-p384' })
  t.same(k.spki, publicKey.export({ format: 'der', type: 'spki' }))
  const msg = Buffer.from('migrated')
  const s = await keyd.admin.sign('imp-ec', 'ecdsa-sha384', msg)
  t.ok(verify('sha384', msg, publicKey, s.signature), 'verifies with the original public key')
  t.equal((await keyd.admin.listKeys()).find(x => x.name === 'imp-ec')?.origin, 'imported')
  await keyd.admin.rotateKey('imp-ec')
  t.equal((await keyd.admin.keyInfo('imp-ec')).origin, 'imported', 'imported forever, even after a rotation')

  const sec1 = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const pem = join(home, 'sec1.pem')
  writeFileSync(pem, sec1.privateKey.export({ format: 'pem', type: 'sec1' }), { mode: 0o600 })
  const run = await cli(['key', 'import', '--name', 'imp-cli', '--file', pem, '--usage', 'tls-server'])
  t.equal(run.code, 0, run.out)
  t.same((await keyd.admin.getPublicKey('imp-cli')).spki, sec1.publicKey.export({ format: 'der', type: 'spki' }), 'a SEC1 PEM imports through the CLI')
  t.notMatch(run.out, /PRIVATE KEY/)
})

t.test('plain import refusals', async t => {
  const bad = await refusal(keyd.admin.importKey('imp-bad', 'token-sign', { pkcs8: randomBytes(64) }))
  t.equal(bad.code, 'KEYD_ERR_BAD_KEY_MATERIAL')
  t.equal(bad.wire, ErrorCode.BAD_KEY_MATERIAL)
  const k1 = generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).privateKey.export({ format: 'der', type: 'pkcs8' })
  t.equal((await refusal(keyd.admin.importKey('imp-bad', 'token-sign', { pkcs8: k1 }))).code, 'KEYD_ERR_BAD_KEY_MATERIAL', 'a curve keyd does not hold')
  const ok = generateKeyPairSync('ed25519').privateKey.export({ format: 'der', type: 'pkcs8' })
  t.equal((await refusal(keyd.admin.importKey('imp-ec', 'token-sign', { pkcs8: ok }))).code, 'KEYD_ERR_KEY_EXISTS')
  t.equal((await refusal(keyd.admin.importKey('Bad Name', 'token-sign', { pkcs8: ok }))).code, 'KEYD_ERR_BAD_KEY_NAME')
  t.equal((await refusal(keyd.admin.importKey('imp-x', 'everything', { pkcs8: ok }))).code, 'KEYD_ERR_BAD_KEY_TYPE')
  t.equal((await refusal(keyd.client('proxy').importKey('imp-x', 'token-sign', { pkcs8: ok }))).code, 'KEYD_ERR_FORBIDDEN')
  t.notOk((await keyd.admin.listKeys()).some(k => k.name === 'imp-bad'), 'nothing stored by a refused import')
  const line = readFileSync(join(keyd.paths.keydDir, 'audit.log'), 'utf8').split('\n').filter(l => l.includes('"KEY_IMPORT"'))
  t.ok(line.length >= 6 && line.every(l => !l.includes(ok.toString('base64').slice(10, 40))), 'imports audited, without the key')
})

t.test('wrapped import (RSA-OAEP + RFC 5649) round trip, and corrupt bundles refused cleanly', async t => {
  const wrapping = await keyd.admin.getWrappingKey()
  t.equal(wrapping.bits, 3072)
  t.equal(wrapping.publicKey.asymmetricKeyType, 'rsa')
  const again = await keyd.admin.getWrappingKey()
  t.same(again.publicKey.export({ format: 'der', type: 'spki' }), wrapping.publicKey.export({ format: 'der', type: 'spki' }), 'generated once')
  const stored = readFileSync(join(keyd.paths.keydDir, 'wrapping-key.json'), 'utf8')
  t.match(JSON.parse(stored), { purpose: 'wrapping', privateKey: { iv: String, tag: String, ct: String } }, 'stored sealed')

  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const pkcs8 = privateKey.export({ format: 'der', type: 'pkcs8' })
  const wrapped = wrapForImport(wrapping.publicKey, pkcs8)
  const k = await keyd.admin.importKey('byok-rsa', 'token-sign', wrapped)
  t.same(k.spki, publicKey.export({ format: 'der', type: 'spki' }))
  const msg = Buffer.from('bring your own key')
  const s = await keyd.admin.sign('byok-rsa', 'rsa-pss-sha256', msg)
  t.ok(verify('sha256', msg, { key: publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }, s.signature), 'verifies with the original public key')
  t.equal((await keyd.admin.keyInfo('byok-rsa')).origin, 'imported')

  const flip = (b: Buffer, at: number): Buffer => { const c = Buffer.from(b); c.writeUInt8(c.readUInt8(at) ^ 0x01, at); return c }
  const e1 = await refusal(keyd.admin.importKey('byok-bad', 'token-sign', { ...wrapped, wrappedPrivateKey: flip(wrapped.wrappedPrivateKey, 20) }))
  t.equal(e1.code, 'KEYD_ERR_BAD_KEY_MATERIAL', 'a flipped bit in the wrapped private key')
  t.match(e1.message, /RFC 5649/)
  const e2 = await refusal(keyd.admin.importKey('byok-bad', 'token-sign', { ...wrapped, wrappedAesKey: flip(wrapped.wrappedAesKey, 5) }))
  t.equal(e2.code, 'KEYD_ERR_BAD_KEY_MATERIAL', 'a flipped bit in the wrapped AES key')
  const other = wrapForImport(generateKeyPairSync('rsa', { modulusLength: 3072 }).publicKey, pkcs8)
  t.equal((await refusal(keyd.admin.importKey('byok-bad', 'token-sign', other))).code, 'KEYD_ERR_BAD_KEY_MATERIAL', 'wrapped for another keyd')
  t.equal((await refusal(keyd.admin.importKey('byok-bad', 'token-sign', { ...wrapped, wrappedPrivateKey: wrapped.wrappedPrivateKey.subarray(0, 16) }))).code, 'KEYD_ERR_BAD_KEY_MATERIAL', 'truncated')
  t.throws(() => decodeBundle(encodeBundle(wrapped).slice(0, 100), 3072), KeyMaterialError, 'a truncated bundle file')
  t.same(await keyd.admin.ping(Buffer.from('ok')), Buffer.from('ok'), 'keyd keeps serving')
  t.notOk((await keyd.admin.listKeys()).some(x => x.name === 'byok-bad'))
})

t.test('wrapped import end to end through the CLI (wrapping-key, wrap, import --wrapped)', async t => {
  const pub = join(home, 'wrapping.pem')
  const keyPem = join(home, 'byok.pem')
  const bundle = join(home, 'byok.bundle')
  const { privateKey, publicKey } = generateKeyPairSync('ed25519')
  writeFileSync(keyPem, privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 })
  t.equal((await cli(['key', 'wrapping-key', '--out', pub])).code, 0)
  const w = await cli(['key', 'wrap', '--wrapping-key', pub, '--in', keyPem, '--out', bundle])
  t.equal(w.code, 0, w.out)
  const i = await cli(['key', 'import', '--name', 'byok-cli', '--wrapped', bundle, '--usage', 'token-sign'])
  t.equal(i.code, 0, i.out)
  const msg = Buffer.from('cli round trip')
  t.ok(verify(null, msg, publicKey, (await keyd.admin.sign('byok-cli', 'ed25519', msg)).signature))
  const text = readFileSync(bundle, 'utf8')
  writeFileSync(bundle, text.slice(0, 40) + (text[40] === 'A' ? 'B' : 'A') + text.slice(41))
  const bad = await cli(['key', 'import', '--name', 'byok-cli2', '--wrapped', bundle, '--usage', 'token-sign'])
  t.equal(bad.code, 1)
  t.match(bad.out, /KEYD_ERR_BAD_KEY_MATERIAL/)
})

t.test('attestation: signed by keyd\'s own key, verifies, and a tampered statement does not', async t => {
  const attKey = await keyd.admin.getAttestationKey()
  t.equal(attKey.asymmetricKeyType, 'ed25519')
  const doc = await keyd.admin.attestKey('byok-rsa')
  t.match(doc.statement, { keyId: 'byok-rsa', version: 1, type: 'rsa-2048', origin: 'imported', exportable: false, usage: 'token-sign', keystore: 'file' })
  t.same(Buffer.from(doc.statement.spki, 'base64'), (await keyd.admin.getPublicKey('byok-rsa')).spki)
  t.ok(verifyAttestation(doc, attKey), 'verifies')
  const gen = await keyd.admin.createKey('att-gen', 'ec-p256', 'tls-server')
  const g = await keyd.admin.attestKey('att-gen')
  t.match(g.statement, { origin: 'generated', policy: { usage: 'tls-server', tlsMessageStructure: true } })
  t.same(Buffer.from(g.statement.spki, 'base64'), gen.spki)

  const tamper = (edit: (d: AttestationDocument) => void): AttestationDocument => { const c = JSON.parse(JSON.stringify(doc)) as AttestationDocument; edit(c); return c }
  t.notOk(verifyAttestation(tamper(d => { d.statement.origin = 'generated' }), attKey), 'origin edited')
  t.notOk(verifyAttestation(tamper(d => { (d.statement as { exportable: boolean }).exportable = true }), attKey), 'exportable edited')
  t.notOk(verifyAttestation(tamper(d => { d.statement.spki = g.statement.spki }), attKey), 'public key swapped')
  t.notOk(verifyAttestation(tamper(d => { d.signature = g.signature }), attKey), 'signature of another statement')
  t.notOk(verifyAttestation(doc, generateKeyPairSync('ed25519').publicKey), 'another attestation key')
  t.notOk(verifyAttestation({ nonsense: true }, attKey))

  const stmt = join(home, 'att.json')
  const attPem = join(home, 'att.pem')
  t.equal((await cli(['key', 'attest', '--name', 'byok-rsa', '--out', stmt])).code, 0)
  t.equal((await cli(['key', 'attestation-key', '--out', attPem])).code, 0)
  t.same(createPublicKey(readFileSync(attPem, 'utf8')).export({ format: 'der', type: 'spki' }), attKey.export({ format: 'der', type: 'spki' }))
  const ok = await cli(['key', 'verify-attestation', '--in', stmt, '--attestation-key', attPem])
  t.equal(ok.code, 0, ok.out)
  writeFileSync(stmt, readFileSync(stmt, 'utf8').replace('"usage": "token-sign"', '"usage": "cert-sign"'))
  const nok = await cli(['key', 'verify-attestation', '--in', stmt, '--attestation-key', attPem])
  t.equal(nok.code, 1, 'the CLI rejects a tampered statement')
  t.match(nok.out, /FAILED/)
  t.notOk((await keyd.admin.listKeys()).some(k => k.name.includes('attest')), 'the attestation key is no client key')
})
