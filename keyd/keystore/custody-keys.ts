// keyd's own keys, never reachable by clients: the Ed25519 attestation key and the RSA-OAEP wrapping key
// for bring-your-own-key imports, both made at keyd's first start and sealed under the master key.
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { createPrivateKey, createPublicKey, generateKeyPair, generateKeyPairSync, type KeyObject } from 'node:crypto'
import { promisify } from 'node:util'
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

const generateKeyPairAsync = promisify(generateKeyPair)

export class CustodyKeys {
  readonly #dir: string
  readonly #master: Buffer
  readonly #keys = new Map<CustodyPurpose, CustodyKey>()
  /** Resolves once both keys are at hand: at once if they were on disk, else when the wrapping key is generated. */
  readonly ready: Promise<void>

  /**
   * Opens both keys in `keydDir`, creating what is missing: the Ed25519 attestation key at once, the
   * RSA-3072 wrapping key on the thread pool (up to seconds; `ready` says when). Never inside a request.
   * @throws Error naming the file if one does not decrypt under `masterKey` (never key material).
   */
  constructor (keydDir: string, masterKey: Buffer) {
    this.#dir = keydDir
    this.#master = Buffer.from(masterKey)
    this.#open('attestation', () => generateKeyPairSync('ed25519'))
    const wrapping = join(this.#dir, 'wrapping-key.json')
    if (existsSync(wrapping)) {
      this.#keys.set('wrapping', this.#load(wrapping, 'wrapping'))
      this.ready = Promise.resolve()
    } else {
      this.ready = generateKeyPairAsync('rsa', { modulusLength: WRAPPING_KEY_BITS, publicExponent: 65537 })
        .then(pair => { this.#keys.set('wrapping', this.#store(wrapping, 'wrapping', pair)) })
      this.ready.catch(() => {}) // a failure is reported to whoever awaits `ready`
    }
  }

  /** Whether both keys are at hand. */
  get isReady (): boolean { return this.#keys.size === 2 }

  /** The key for `purpose`. @throws Error if it is still being generated (await `ready` first). */
  get (purpose: CustodyPurpose): CustodyKey {
    const key = this.#keys.get(purpose)
    if (key === undefined) throw new Error(`keyd's ${purpose} key is still being generated`)
    return key
  }

  #open (purpose: CustodyPurpose, generate: () => { privateKey: KeyObject, publicKey: KeyObject }): void {
    const file = join(this.#dir, `${purpose}-key.json`)
    this.#keys.set(purpose, existsSync(file) ? this.#load(file, purpose) : this.#store(file, purpose, generate()))
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

  #store (file: string, purpose: CustodyPurpose, { privateKey, publicKey }: { privateKey: KeyObject, publicKey: KeyObject }): CustodyKey {
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
