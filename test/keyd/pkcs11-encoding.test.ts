// The encodings keyd computes for a PKCS#11 token, checked against node:crypto's own verification.
import t from 'tap'
import { generateKeyPairSync, privateDecrypt, privateEncrypt, sign, verify, constants } from 'node:crypto'
import { digestInfo, pssEncode, ecdsaRawToDer, unwrapOctetString, ecPublicKey } from '../../keyd/keystore/pkcs11-encoding.js'

const message = Buffer.from('keyedge pkcs11 encoding test')

t.test('EMSA-PSS then raw RSA verifies as RSA-PSS (salt = digest length)', async t => {
  for (const [bits, hash] of [[2048, 'sha256'], [2048, 'sha384'], [3072, 'sha512']] as const) {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: bits })
    const em = pssEncode(hash, message, bits)
    t.equal(em.length, Math.ceil(bits / 8), `${bits}: EM padded to the modulus length`)
    // Raw RSA with the private key, as CKM_RSA_X_509 does in the token.
    const signature = privateDecrypt({ key: privateKey, padding: constants.RSA_NO_PADDING }, em)
    const saltLength = { sha256: 32, sha384: 48, sha512: 64 }[hash]
    t.ok(verify(hash, message, { key: publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength }, signature), `${bits} ${hash} verifies`)
    t.notOk(verify(hash, Buffer.from('other'), { key: publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength }, signature), 'not for another message')
  }
  const odd = pssEncode('sha256', message, 2049)
  t.equal(odd.length, 257, 'a modulus of 8k+1 bits: EM is one byte shorter, left-padded to k bytes')
  t.equal(odd[0], 0)
  t.not(pssEncode('sha256', message, 2048).toString('hex'), pssEncode('sha256', message, 2048).toString('hex'), 'random salt')
})

t.test('DigestInfo with type-1 padding verifies as RSA PKCS#1 v1.5', async t => {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
  for (const hash of ['sha224', 'sha256', 'sha384', 'sha512'] as const) {
    const signature = privateEncrypt({ key: privateKey, padding: constants.RSA_PKCS1_PADDING }, digestInfo(hash, message))
    t.ok(verify(hash, message, { key: publicKey, padding: constants.RSA_PKCS1_PADDING }, signature), hash)
    t.same(signature, sign(hash, message, { key: privateKey, padding: constants.RSA_PKCS1_PADDING }), `${hash}: same bytes as node`)
  }
})

t.test('ECDSA r||s to DER', async t => {
  for (const curve of ['P-256', 'P-384'] as const) {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: curve })
    for (let i = 0; i < 20; i++) {
      const raw = sign('sha256', message, { key: privateKey, dsaEncoding: 'ieee-p1363' })
      t.ok(verify('sha256', message, { key: publicKey, dsaEncoding: 'der' }, ecdsaRawToDer(raw)), `${curve} #${i}`)
    }
  }
  const der = ecdsaRawToDer(Buffer.concat([Buffer.alloc(31), Buffer.of(1), Buffer.alloc(32, 0xff)]))
  t.equal(der.toString('hex'), '3026020101022100' + 'ff'.repeat(32), 'minimal INTEGERs, sign byte added')
})

t.test('CKA_EC_POINT (DER OCTET STRING) to a public key', async t => {
  const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const jwk = publicKey.export({ format: 'jwk' })
  const point = Buffer.concat([Buffer.of(4), Buffer.from(jwk.x as string, 'base64url'), Buffer.from(jwk.y as string, 'base64url')])
  const wrapped = Buffer.concat([Buffer.of(0x04, 0x41), point])
  t.same(unwrapOctetString(wrapped), point)
  t.same(unwrapOctetString(point), point, 'a bare point passes through')
  t.ok(ecPublicKey('P-256', unwrapOctetString(wrapped)).equals(publicKey))
  t.throws(() => ecPublicKey('P-256', Buffer.of(2, 1, 2)), /uncompressed/)
})
