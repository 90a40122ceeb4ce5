// A WebCrypto object for @peculiar/x509 whose `sign` goes to keyd: certificates are signed without the key leaving keyd.
import { webcrypto } from 'node:crypto'
import type { KeydClient } from '../keyd/client/client.js'

const KEYD_KEY = Symbol('keyedge.keydKey')

/** A CryptoKey-shaped handle naming a keyd key; it holds no key material. */
export interface KeydCryptoKey {
  readonly type: 'private'
  readonly extractable: false
  readonly usages: ['sign']
  readonly algorithm: { name: 'ECDSA', namedCurve: string } | { name: 'RSASSA-PKCS1-v1_5', hash: { name: string } }
  readonly [KEYD_KEY]: { name: string, version: number }
}

/** Makes a signing handle for keyd key `name` of `type` (ec-p256, ec-p384, rsa-*). */
export function keydCryptoKey (name: string, type: string, version = 0): KeydCryptoKey {
  const algorithm = type.startsWith('ec-')
    ? { name: 'ECDSA' as const, namedCurve: type === 'ec-p384' ? 'P-384' : 'P-256' }
    : { name: 'RSASSA-PKCS1-v1_5' as const, hash: { name: 'SHA-256' } }
  return { type: 'private', extractable: false, usages: ['sign'], algorithm, [KEYD_KEY]: { name, version } }
}

function hashName (h: unknown): string {
  const n = typeof h === 'string' ? h : (h as { name?: string } | undefined)?.name ?? 'SHA-256'
  return n.toUpperCase().replace('-', '')
}

const ALG_BY_HASH: Record<string, Record<string, string>> = {
  ECDSA: { SHA256: 'ecdsa-sha256', SHA384: 'ecdsa-sha384', SHA512: 'ecdsa-sha512' },
  'RSASSA-PKCS1-V1_5': { SHA256: 'rsa-pkcs1-sha256', SHA384: 'rsa-pkcs1-sha384', SHA512: 'rsa-pkcs1-sha512' }
}

/**
 * A `Crypto` for @peculiar/x509: everything is Node's WebCrypto except `subtle.sign` on a
 * KeydCryptoKey, which asks keyd (ECDSA in IEEE P1363 form, as WebCrypto returns it).
 */
export function keydWebCrypto (client: KeydClient): webcrypto.Crypto {
  const subtle = webcrypto.subtle
  const keydSubtle = new Proxy(subtle, {
    get (target, prop) {
      if (prop === 'sign') {
        return async (algorithm: { name: string, hash?: unknown }, key: webcrypto.CryptoKey | KeydCryptoKey, data: webcrypto.BufferSource): Promise<ArrayBuffer> => {
          const ref = KEYD_KEY in key ? key[KEYD_KEY] : undefined
          if (ref === undefined) return await target.sign(algorithm, key, data)
          const alg = ALG_BY_HASH[algorithm.name.toUpperCase()]?.[hashName(algorithm.hash)]
          if (alg === undefined) throw new TypeError(`keyd cannot sign ${algorithm.name}`)
          const bytes = ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : new Uint8Array(data)
          const { signature } = await client.sign(ref.name, alg, bytes, { version: ref.version, ieeeP1363: algorithm.name === 'ECDSA' })
          return signature.buffer.slice(signature.byteOffset, signature.byteOffset + signature.byteLength) as ArrayBuffer
        }
      }
      const v = Reflect.get(target, prop) as unknown
      return typeof v === 'function' ? v.bind(target) as unknown : v
    }
  })
  return { subtle: keydSubtle, getRandomValues: webcrypto.getRandomValues.bind(webcrypto), randomUUID: webcrypto.randomUUID.bind(webcrypto) }
}
