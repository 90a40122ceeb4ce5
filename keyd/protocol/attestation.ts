// Key attestation statements (the STATEMENT item of KEY_ATTEST, PROTOCOL.md): what keyd says about
// one key version, signed by keyd's own Ed25519 attestation key, and the offline check of such a
// statement against that key's public half (used by `keyedge keyd key verify-attestation`).
import { createHash, sign, verify, type KeyObject } from 'node:crypto'

export interface AttestationStatement {
  format: 'keyedge-attestation-v1'
  keyId: string
  version: number
  type: string
  /** SubjectPublicKeyInfo, DER, base64. */
  spki: string
  spkiSha256: string
  origin: 'generated' | 'imported'
  exportable: false
  usage: string
  state: string
  policy: Record<string, unknown>
  keyCreatedAt: string
  versionCreatedAt: string
  keystore: string
  attestationKeySha256: string
  issuedAt: string
}

export interface AttestationDocument { statement: AttestationStatement, signature: string, algorithm: 'ed25519' }

const DOMAIN = Buffer.from('keyedge-attestation-v1\0')

/** JSON with object keys sorted at every depth: the bytes that are signed. */
export function canonicalJson (v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>
    return `{${Object.keys(o).filter(k => o[k] !== undefined).sort().map(k => `${JSON.stringify(k)}:${canonicalJson(o[k])}`).join(',')}}`
  }
  return JSON.stringify(v)
}

/** SHA-256 of a public key's SPKI DER, hex: the fingerprint `key list` shows. */
export function spkiFingerprint (key: KeyObject): string {
  return createHash('sha256').update(key.export({ format: 'der', type: 'spki' })).digest('hex')
}

function signedBytes (s: AttestationStatement): Buffer {
  return Buffer.concat([DOMAIN, Buffer.from(canonicalJson(s))])
}

/** Signs `statement` with the attestation private key (inside keyd only). */
export function signStatement (statement: AttestationStatement, attestationKey: KeyObject): AttestationDocument {
  return { statement, signature: sign(null, signedBytes(statement), attestationKey).toString('base64'), algorithm: 'ed25519' }
}

/**
 * True if `doc` is a well-formed statement signed by `attestationPublicKey` and names that key's
 * fingerprint. Any edited field, reordered content aside, makes it false.
 */
export function verifyAttestation (doc: unknown, attestationPublicKey: KeyObject): boolean {
  const d = doc as AttestationDocument
  if (typeof d !== 'object' || d === null || typeof d.signature !== 'string' || d.algorithm !== 'ed25519') return false
  const s = d.statement
  if (typeof s !== 'object' || s === null || s.format !== 'keyedge-attestation-v1' || s.exportable !== false) return false
  if (attestationPublicKey.asymmetricKeyType !== 'ed25519' || s.attestationKeySha256 !== spkiFingerprint(attestationPublicKey)) return false
  try {
    return verify(null, signedBytes(s), attestationPublicKey, Buffer.from(d.signature, 'base64'))
  } catch {
    return false
  }
}
