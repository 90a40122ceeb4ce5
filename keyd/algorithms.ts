// Signature algorithms keyd offers (PROTOCOL.md "Signature algorithms"), and which key types they fit.
import { constants } from 'node:crypto'

export type KeyType = 'ec-p256' | 'ec-p384' | 'rsa-2048' | 'rsa-3072' | 'rsa-4096' | 'ed25519'
export const KEY_TYPES: readonly KeyType[] = ['ec-p256', 'ec-p384', 'rsa-2048', 'rsa-3072', 'rsa-4096', 'ed25519']

export type Usage = 'tls-server' | 'token-sign' | 'cert-sign'
export const USAGES: readonly Usage[] = ['tls-server', 'token-sign', 'cert-sign']

export type KeyFamily = 'ec' | 'rsa' | 'ed25519'

export interface Algorithm {
  code: number
  name: string
  family: KeyFamily
  /** Node digest name, or null for pure Ed25519. */
  hash: 'sha224' | 'sha256' | 'sha384' | 'sha512' | null
  pss: boolean
}

const table: Algorithm[] = [
  { code: 0x0001, name: 'ecdsa-sha256', family: 'ec', hash: 'sha256', pss: false },
  { code: 0x0002, name: 'ecdsa-sha384', family: 'ec', hash: 'sha384', pss: false },
  { code: 0x0003, name: 'ecdsa-sha512', family: 'ec', hash: 'sha512', pss: false },
  // SHA-224: what OpenSSL negotiates in TLS 1.2 with a client that offers only SHA-224 schemes.
  { code: 0x0004, name: 'ecdsa-sha224', family: 'ec', hash: 'sha224', pss: false },
  { code: 0x0011, name: 'rsa-pkcs1-sha256', family: 'rsa', hash: 'sha256', pss: false },
  { code: 0x0012, name: 'rsa-pkcs1-sha384', family: 'rsa', hash: 'sha384', pss: false },
  { code: 0x0013, name: 'rsa-pkcs1-sha512', family: 'rsa', hash: 'sha512', pss: false },
  { code: 0x0014, name: 'rsa-pkcs1-sha224', family: 'rsa', hash: 'sha224', pss: false },
  { code: 0x0021, name: 'rsa-pss-sha256', family: 'rsa', hash: 'sha256', pss: true },
  { code: 0x0022, name: 'rsa-pss-sha384', family: 'rsa', hash: 'sha384', pss: true },
  { code: 0x0023, name: 'rsa-pss-sha512', family: 'rsa', hash: 'sha512', pss: true },
  { code: 0x0030, name: 'ed25519', family: 'ed25519', hash: null, pss: false }
]

export const ALGORITHMS: ReadonlyMap<number, Algorithm> = new Map(table.map(a => [a.code, a]))
export const ALGORITHMS_BY_NAME: ReadonlyMap<string, Algorithm> = new Map(table.map(a => [a.name, a]))

export function keyFamily (type: KeyType): KeyFamily {
  return type.startsWith('ec-') ? 'ec' : type.startsWith('rsa-') ? 'rsa' : 'ed25519'
}

export function isKeyType (s: string): s is KeyType {
  return (KEY_TYPES as readonly string[]).includes(s)
}

export function isUsage (s: string): s is Usage {
  return (USAGES as readonly string[]).includes(s)
}

export const KEY_NAME_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/

const SALT: Record<string, number> = { sha224: 28, sha256: 32, sha384: 48, sha512: 64 }

/** node:crypto sign options for an algorithm (salt length = digest length for PSS). */
export function signOptions (alg: Algorithm, ieeeP1363: boolean): { padding?: number, saltLength?: number, dsaEncoding?: 'der' | 'ieee-p1363' } {
  if (alg.family === 'rsa') {
    return alg.pss
      ? { padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: SALT[alg.hash as string] }
      : { padding: constants.RSA_PKCS1_PADDING }
  }
  if (alg.family === 'ec') return { dsaEncoding: ieeeP1363 ? 'ieee-p1363' : 'der' }
  return {}
}
