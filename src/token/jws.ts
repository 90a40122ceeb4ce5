// JWS compact serialisation pieces: the JOSE algorithm ↔ keyd algorithm map, JWKs with their
// RFC 7638 thumbprints, and the base64url signing input. No signing here: keyd signs.
import { createHash, type KeyObject } from 'node:crypto'
import type { JwsAlgorithm } from '../config/token.js'

export interface AlgorithmSpec {
  /** keyd algorithm name (keyd/algorithms.ts). */
  keyd: string
  /** keyd key types this algorithm fits. */
  keyTypes: readonly string[]
  /** ECDSA signatures in JWS are IEEE P1363 r‖s, not DER. */
  ieeeP1363: boolean
}

export const JWS_TO_KEYD: Readonly<Record<JwsAlgorithm, AlgorithmSpec>> = {
  ES256: { keyd: 'ecdsa-sha256', keyTypes: ['ec-p256'], ieeeP1363: true },
  RS256: { keyd: 'rsa-pkcs1-sha256', keyTypes: ['rsa-2048', 'rsa-3072', 'rsa-4096'], ieeeP1363: false },
  // keyd's PSS uses a salt as long as the digest (32 bytes), which is what RFC 7518 requires.
  PS256: { keyd: 'rsa-pss-sha256', keyTypes: ['rsa-2048', 'rsa-3072', 'rsa-4096'], ieeeP1363: false },
  EdDSA: { keyd: 'ed25519', keyTypes: ['ed25519'], ieeeP1363: false }
}

/** A public JWK: its `kty` and the members RFC 7638 hashes for that type, all strings. */
export interface PublicJwk { kty: string, [member: string]: string }

export function b64url (data: Uint8Array | string): string {
  return Buffer.from(data).toString('base64url')
}

/** The public JWK of `key` with only the members RFC 7638 hashes (plus nothing private). */
export function publicJwk (key: KeyObject): PublicJwk {
  const jwk = key.export({ format: 'jwk' })
  const member = (name: string): string => {
    const value = jwk[name]
    if (typeof value !== 'string') throw new TypeError(`the ${String(jwk.kty)} key has no "${name}" member`)
    return value
  }
  if (jwk.kty === 'EC') return { kty: 'EC', crv: member('crv'), x: member('x'), y: member('y') }
  if (jwk.kty === 'RSA') return { kty: 'RSA', n: member('n'), e: member('e') }
  if (jwk.kty === 'OKP') return { kty: 'OKP', crv: member('crv'), x: member('x') }
  throw new TypeError(`unsupported key type ${String(jwk.kty)}`)
}

/** RFC 7638 thumbprint: SHA-256 over the required members in lexicographic order, base64url. */
export function jwkThumbprint (jwk: PublicJwk): string {
  const required: Record<string, string[]> = { EC: ['crv', 'kty', 'x', 'y'], RSA: ['e', 'kty', 'n'], OKP: ['crv', 'kty', 'x'] }
  const members = required[jwk.kty]
  if (members === undefined) throw new TypeError(`unsupported kty ${jwk.kty}`)
  const canonical = '{' + members.map(m => {
    const value = jwk[m]
    if (value === undefined) throw new TypeError(`a ${jwk.kty} JWK needs the "${m}" member`)
    return `${JSON.stringify(m)}:${JSON.stringify(value)}`
  }).join(',') + '}'
  return createHash('sha256').update(canonical).digest('base64url')
}

/** `base64url(header) . base64url(payload)`: the bytes keyd signs. */
export function signingInput (header: Record<string, unknown>, payload: Record<string, unknown>): string {
  return `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`
}

/** JSON with object keys sorted at every depth: one string per logically equal request. */
export function canonicalJson (value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`
  if (value !== null && typeof value === 'object') {
    const o = value as Record<string, unknown>
    return `{${Object.keys(o).sort().map(k => `${JSON.stringify(k)}:${canonicalJson(o[k])}`).join(',')}}`
  }
  return JSON.stringify(value)
}
