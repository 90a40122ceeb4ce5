// keyd's own keys, never reachable by clients: the Ed25519 attestation key (made at first start) and the
// RSA-OAEP wrapping key for bring-your-own-key imports (made on first use). Both sealed under the master key.
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto'
import { writeFileAtomic } from './atomic-file.js'
import { seal, open, isSealedBlob, type SealedBlob } from './aead.js'

export type CustodyPurpose = 'attestation' | 'wrapping'

interface StoredCustodyKey { format: 'keyedge-custody-key-v1', purpose: CustodyPurpose, createdAt: string, publicKey: string, privateKey: SealedBlob }

export interface CustodyKey { purpose: CustodyPurpose, createdAt: string, privateKey: KeyObject, publicKey: KeyObject }

/** Modulus of the wrapping key: 3072 bits (128-bit strength, the level of the AES-256 transport key's use). */
export const WRAPPING_KEY_BITS = 3072

function aad (purpose: CustodyPurpose): string {
  return `keyedge-custody-key-v1|${purpose}`
}

export class CustodyKeys {
  readonly #dir: string
  readonly #master: Buffer
  readonly #keys = new Map<CustodyPurpose, CustodyKey>()

  /**
   * Opens (or creates) the attestation key in `keydDir`. @throws Error naming the file if it does not
   * decrypt under `masterKey` (never key material).
   */
  constructor (keydDir: string, masterKey: Buffer) {
    this.#dir = keydDir
    this.#master = Buffer.from(masterKey)
    this.get('attestation')
  }

  /** The key for `purpose`, generated and stored sealed the first time it is needed. */
  get (purpose: CustodyPurpose): CustodyKey {
    const cached = this.#keys.get(purpose)
    if (cached !== undefined) return cached
    const file = join(this.#dir, `${purpose}-key.json`)
    const key = existsSync(file) ? this.#load(file, purpose) : this.#create(file, purpose)
    this.#keys.set(purpose, key)
    return key
  }

  #load (file: string, purpose: CustodyPurpose): CustodyKey {
    const s = JSON.parse(readFileSync(file, 'utf8')) as StoredCustodyKey
    if (s?.format !== 'keyedge-custody-key-v1' || s.purpose !== purpose || !isSealedBlob(s.privateKey)) throw new Error(`${file} is not a keyd ${purpose} key file`)
    let der: Buffer
    try {
      der = open(this.#master, s.privateKey, aad(purpose))
    } catch {
      throw new Error(`${file} does not decrypt under this master key (wrong master key or tampered file)`)
    }
    const privateKey = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' })
    der.fill(0)
    return { purpose, createdAt: s.createdAt, privateKey, publicKey: createPublicKey(privateKey) }
  }

  #create (file: string, purpose: CustodyPurpose): CustodyKey {
    const { privateKey, publicKey } = purpose === 'attestation'
      ? generateKeyPairSync('ed25519')
      : generateKeyPairSync('rsa', { modulusLength: WRAPPING_KEY_BITS, publicExponent: 65537 })
    const der = privateKey.export({ format: 'der', type: 'pkcs8' })
    const createdAt = new Date().toISOString()
    const stored: StoredCustodyKey = {
      format: 'keyedge-custody-key-v1',
      purpose,
      createdAt,
      publicKey: publicKey.export({ format: 'der', type: 'spki' }).toString('base64'),
      privateKey: seal(this.#master, der, aad(purpose))
    }
    der.fill(0)
    writeFileAtomic(file, JSON.stringify(stored, null, 2) + '\n')
    return { purpose, createdAt, privateKey, publicKey }
  }
}
