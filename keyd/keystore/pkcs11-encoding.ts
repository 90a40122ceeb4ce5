// Signature encodings keyd computes itself for a PKCS#11 token: PKCS#1 v1.5 DigestInfo, EMSA-PSS
// (p11-kit 0.24's RPC does not carry RSA-PSS parameters), ECDSA r||s to DER, and public keys to KeyObjects.
import { createHash, createPublicKey, randomBytes, type KeyObject } from 'node:crypto'

type Hash = 'sha224' | 'sha256' | 'sha384' | 'sha512'

/** DER prefixes of DigestInfo (RFC 8017 §9.2 note 1); the digest follows. */
const DIGEST_INFO_PREFIX: Record<Hash, Buffer> = {
  sha224: Buffer.from('302d300d06096086480165030402040500041c', 'hex'),
  sha256: Buffer.from('3031300d060960864801650304020105000420', 'hex'),
  sha384: Buffer.from('3041300d060960864801650304020205000430', 'hex'),
  sha512: Buffer.from('3051300d060960864801650304020305000440', 'hex')
}

/** DigestInfo of `message` under `hash`: the input of CKM_RSA_PKCS, which adds the type-1 padding. */
export function digestInfo (hash: Hash, message: Uint8Array): Buffer {
  return Buffer.concat([DIGEST_INFO_PREFIX[hash], createHash(hash).update(message).digest()])
}

function mgf1 (hash: Hash, seed: Buffer, length: number): Buffer {
  const out: Buffer[] = []
  for (let counter = 0, got = 0; got < length; counter++) {
    const c = Buffer.alloc(4)
    c.writeUInt32BE(counter)
    const block = createHash(hash).update(seed).update(c).digest()
    out.push(block)
    got += block.length
  }
  return Buffer.concat(out).subarray(0, length)
}

/**
 * EMSA-PSS-ENCODE (RFC 8017 §9.1.1) with MGF1 of the same hash and a salt as long as the digest,
 * left-padded to the modulus length: the input of the raw RSA mechanism (CKM_RSA_X_509).
 */
export function pssEncode (hash: Hash, message: Uint8Array, modulusBits: number, salt?: Buffer): Buffer {
  const mHash = createHash(hash).update(message).digest()
  const hLen = mHash.length
  const s = salt ?? randomBytes(hLen)
  const emBits = modulusBits - 1
  const emLen = Math.ceil(emBits / 8)
  if (emLen < hLen + s.length + 2) throw new RangeError('modulus too small for this PSS hash')
  const h = createHash(hash).update(Buffer.alloc(8)).update(mHash).update(s).digest()
  const db = Buffer.alloc(emLen - hLen - 1)
  db[db.length - s.length - 1] = 0x01
  s.copy(db, db.length - s.length)
  const mask = mgf1(hash, h, db.length)
  for (let i = 0; i < db.length; i++) db.writeUInt8(db.readUInt8(i) ^ mask.readUInt8(i), i)
  db.writeUInt8(db.readUInt8(0) & (0xff >> (8 * emLen - emBits)), 0)
  const em = Buffer.concat([db, h, Buffer.of(0xbc)])
  const k = Math.ceil(modulusBits / 8)
  return k === emLen ? em : Buffer.concat([Buffer.alloc(k - emLen), em])
}

function derInteger (v: Buffer): Buffer {
  let i = 0
  while (i < v.length - 1 && v[i] === 0) i++
  let body = v.subarray(i)
  const top = body[0]
  if (top !== undefined && (top & 0x80) !== 0) body = Buffer.concat([Buffer.of(0), body])
  return Buffer.concat([Buffer.of(0x02), derLength(body.length), body])
}

function derLength (n: number): Buffer {
  return n < 0x80 ? Buffer.of(n) : n < 0x100 ? Buffer.of(0x81, n) : Buffer.of(0x82, n >> 8, n & 0xff)
}

/** ECDSA signature from the PKCS#11 form (r||s, each the field size) to DER SEQUENCE { r, s }. */
export function ecdsaRawToDer (raw: Buffer): Buffer {
  const half = raw.length / 2
  const body = Buffer.concat([derInteger(raw.subarray(0, half)), derInteger(raw.subarray(half))])
  return Buffer.concat([Buffer.of(0x30), derLength(body.length), body])
}

/** Unwraps a DER OCTET STRING (how tokens return CKA_EC_POINT); returns the input if it is not one. */
export function unwrapOctetString (der: Buffer): Buffer {
  const first = der[1]
  if (der[0] !== 0x04 || first === undefined) return der
  if (first < 0x80) return first === der.length - 2 ? der.subarray(2) : der
  const n = first & 0x7f
  let len = 0
  for (let i = 0; i < n; i++) {
    const b = der[2 + i]
    if (b === undefined) return der // the length runs past the end: not an OCTET STRING
    len = len * 256 + b
  }
  return len === der.length - 2 - n ? der.subarray(2 + n) : der
}

/** Public KeyObject of an EC point (04||x||y) on P-256 or P-384. */
export function ecPublicKey (curve: 'P-256' | 'P-384', point: Buffer): KeyObject {
  const size = (point.length - 1) / 2
  if (point[0] !== 0x04 || !Number.isInteger(size)) throw new Error('EC point is not uncompressed')
  const b64 = (b: Buffer): string => b.toString('base64url')
  return createPublicKey({ key: { kty: 'EC', crv: curve, x: b64(point.subarray(1, 1 + size)), y: b64(point.subarray(1 + size)) }, format: 'jwk' })
}

/** Public KeyObject of an RSA modulus and public exponent (big-endian). */
export function rsaPublicKey (modulus: Buffer, exponent: Buffer): KeyObject {
  return createPublicKey({ key: { kty: 'RSA', n: modulus.toString('base64url'), e: exponent.toString('base64url') }, format: 'jwk' })
}
