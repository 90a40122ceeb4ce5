// AES-256-GCM sealing of small secrets, with associated data binding each blob to its purpose.
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto'

export interface SealedBlob { iv: string, tag: string, ct: string }

export function seal (key: Uint8Array, plaintext: Uint8Array, aad: string): SealedBlob {
  const iv = randomBytes(12)
  const c = createCipheriv('aes-256-gcm', key, iv)
  c.setAAD(Buffer.from(aad))
  const ct = Buffer.concat([c.update(plaintext), c.final()])
  return { iv: iv.toString('base64'), tag: c.getAuthTag().toString('base64'), ct: ct.toString('base64') }
}

/** Opens a sealed blob; throws if the key, the AAD or the bytes are wrong. */
export function open (key: Uint8Array, blob: SealedBlob, aad: string): Buffer {
  const d = createDecipheriv('aes-256-gcm', key, Buffer.from(blob.iv, 'base64'))
  d.setAAD(Buffer.from(aad))
  d.setAuthTag(Buffer.from(blob.tag, 'base64'))
  return Buffer.concat([d.update(Buffer.from(blob.ct, 'base64')), d.final()])
}

export function isSealedBlob (x: unknown): x is SealedBlob {
  const b = x as SealedBlob
  return typeof b === 'object' && b !== null && typeof b.iv === 'string' && typeof b.tag === 'string' && typeof b.ct === 'string'
}
