// Bringing existing private keys into keyd: the key-type check, and the bring-your-own-key wrapping
// (RSA-OAEP SHA-256 over an ephemeral AES-256 key, RFC 5649 AES key wrap with padding over the PKCS#8).
import { constants, createCipheriv, createDecipheriv, createPrivateKey, createPublicKey, privateDecrypt, publicEncrypt, randomBytes, sign, verify, type KeyObject } from 'node:crypto'
import { KeyMaterialError } from '../errors.js'
import type { KeyType } from '../algorithms.js'

/** RFC 5649's alternative initial value; Node's `id-aes256-wrap-pad` wants it as the IV. */
const KWP_IV = Buffer.from('a65959a6', 'hex')
const OAEP = { padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' } as const

/** The keyd key type of a private key, or null if keyd does not hold keys of its kind. */
export function importedKeyType (key: KeyObject): KeyType | null {
  const d = key.asymmetricKeyDetails ?? {}
  switch (key.asymmetricKeyType) {
    case 'ec': return d.namedCurve === 'prime256v1' ? 'ec-p256' : d.namedCurve === 'secp384r1' ? 'ec-p384' : null
    case 'rsa': return [2048, 3072, 4096].includes(d.modulusLength ?? 0) && d.publicExponent === 65537n ? `rsa-${d.modulusLength}` as KeyType : null
    case 'ed25519': return 'ed25519'
    default: return null
  }
}

/** Parses a PKCS#8 DER private key and checks that it signs and verifies. @throws KeyMaterialError */
export function parseImportedKey (pkcs8: Uint8Array): { key: KeyObject, type: KeyType } {
  let key: KeyObject
  try {
    key = createPrivateKey({ key: Buffer.from(pkcs8), format: 'der', type: 'pkcs8' })
  } catch {
    throw new KeyMaterialError('the key to import is not a PKCS#8 private key')
  }
  const type = importedKeyType(key)
  if (type === null) throw new KeyMaterialError(`keyd does not hold ${key.asymmetricKeyType ?? 'unknown'} keys of this size or curve (ec P-256/P-384, RSA 2048/3072/4096 with e=65537, Ed25519)`)
  const probe = Buffer.from('keyedge import pairwise check')
  const hash = type === 'ed25519' ? null : 'sha256'
  if (!verify(hash, probe, createPublicKey(key), sign(hash, probe, key))) throw new KeyMaterialError('the key to import fails its sign/verify check')
  return { key, type }
}

/** PEM (PKCS#8, PKCS#1 or SEC1) to PKCS#8 DER, operator side. @throws KeyMaterialError */
export function pemToPkcs8 (pem: string): Buffer {
  try {
    return createPrivateKey(pem).export({ format: 'der', type: 'pkcs8' })
  } catch {
    throw new KeyMaterialError('the file holds no unencrypted private key PEM')
  }
}

export interface WrappedKey {
  /** RSA-OAEP (SHA-256, MGF1 SHA-256, no label) encryption of the 32-byte AES key under keyd's wrapping key. */
  wrappedAesKey: Buffer
  /** AES-256 key wrap with padding (RFC 5649) of the PKCS#8 DER private key. */
  wrappedPrivateKey: Buffer
}

/** Operator side: wraps `pkcs8` for the keyd whose wrapping public key is `wrappingKey`. */
export function wrapForImport (wrappingKey: KeyObject, pkcs8: Uint8Array): WrappedKey {
  const aes = randomBytes(32)
  try {
    const c = createCipheriv('id-aes256-wrap-pad', aes, KWP_IV)
    const wrappedPrivateKey = Buffer.concat([c.update(pkcs8), c.final()])
    return { wrappedAesKey: publicEncrypt({ key: wrappingKey, ...OAEP }, aes), wrappedPrivateKey }
  } finally {
    aes.fill(0)
  }
}

/** keyd side: unwraps both layers with the wrapping private key. @throws KeyMaterialError (nothing about the bytes) */
export function unwrapImport (wrappingKey: KeyObject, wrapped: WrappedKey): Buffer {
  let aes: Buffer
  try {
    aes = privateDecrypt({ key: wrappingKey, ...OAEP }, wrapped.wrappedAesKey)
  } catch {
    throw new KeyMaterialError('the wrapped AES key does not decrypt under this keyd\'s wrapping key (RSA-OAEP SHA-256)')
  }
  try {
    if (aes.length !== 32) throw new KeyMaterialError(`the wrapped AES key is ${aes.length} bytes, not 32 (AES-256)`)
    const d = createDecipheriv('id-aes256-wrap-pad', aes, KWP_IV)
    return Buffer.concat([d.update(wrapped.wrappedPrivateKey), d.final()])
  } catch (err) {
    if (err instanceof KeyMaterialError) throw err
    throw new KeyMaterialError('the wrapped private key fails its RFC 5649 integrity check (corrupt bundle or another AES key)')
  } finally {
    aes.fill(0)
  }
}

/** The bundle file `keyedge keyd key wrap` writes: base64 of RSA-OAEP ciphertext ‖ KWP ciphertext (the Vault / cloud KMS layout). */
export function encodeBundle (w: WrappedKey): string {
  return Buffer.concat([w.wrappedAesKey, w.wrappedPrivateKey]).toString('base64') + '\n'
}

/** Splits a bundle at the wrapping key's modulus size. @throws KeyMaterialError */
export function decodeBundle (text: string, wrappingKeyBits: number): WrappedKey {
  const raw = Buffer.from(text.replace(/\s+/g, ''), 'base64')
  const n = wrappingKeyBits / 8
  if (raw.length < n + 16) throw new KeyMaterialError(`the wrapped bundle is ${raw.length} bytes: too short for a ${wrappingKeyBits}-bit wrapping key and a wrapped private key`)
  return { wrappedAesKey: raw.subarray(0, n), wrappedPrivateKey: raw.subarray(n) }
}
