// Encrypted-file keystore: one JSON file per key, every private key sealed with AES-256-GCM under the master key.
import { mkdirSync, readdirSync, readFileSync, chmodSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { createPrivateKey, createPublicKey, generateKeyPair, hkdfSync, sign as cryptoSign, type KeyObject } from 'node:crypto'
import { promisify } from 'node:util'
import { writeFileAtomic } from './atomic-file.js'
import { errorMessage } from '../../lib/errors.js'
import { seal, open, isSealedBlob, type SealedBlob } from './aead.js'
import { isKeyType, isUsage, signOptions, KEY_NAME_RE, type Algorithm, type KeyType, type Usage } from '../algorithms.js'
import type { Keystore, KeyInfo, KeyVersionInfo, KeyState, MaybeAsync, SignResult } from './keystore.js'
import { KeydError } from '../errors.js'

/** `privateKey` is absent only in a destroyed key's tombstone. */
interface StoredVersion { version: number, createdAt: string, publicKey: string, privateKey?: SealedBlob }
interface StoredKey {
  format: 'keyedge-key-v1', name: string, type: KeyType, usage: Usage, createdAt: string, origin: 'generated' | 'imported',
  versions: StoredVersion[], state?: KeyState, signGraceSeconds?: number | null, destroyedAt?: string
}

/** `privateKey` is null once the key is destroyed. */
interface LoadedVersion { info: KeyVersionInfo, privateKey: KeyObject | null, publicKey: KeyObject }
interface LoadedKey { info: KeyInfo, versions: Map<number, LoadedVersion> }

/** HKDF salt of every secret derived from the master key (ticket keys, …). */
const DERIVE_SALT = Buffer.from('keyedge derive v1')

function aad (name: string, version: number, type: string): string {
  return `keyedge-key-v1|${name}|${version}|${type}`
}

const generateKeyPairAsync = promisify(generateKeyPair)
type KeyPair = { privateKey: KeyObject, publicKey: KeyObject }

/**
 * Generates a fresh key pair of `type` inside this process, on libuv's thread pool: an RSA-4096 key
 * takes seconds, which keyd's event loop (every other client's signatures) must not wait for.
 */
export async function generateKey (type: KeyType): Promise<KeyPair> {
  switch (type) {
    case 'ec-p256': return await generateKeyPairAsync('ec', { namedCurve: 'P-256' })
    case 'ec-p384': return await generateKeyPairAsync('ec', { namedCurve: 'P-384' })
    case 'ed25519': return await generateKeyPairAsync('ed25519')
    default: return await generateKeyPairAsync('rsa', { modulusLength: Number(type.slice(4)), publicExponent: 65537 })
  }
}

/**
 * Key types whose signature takes about a millisecond or more (RSA: 1.5 ms at 2048 bits, 13 ms at
 * 4096 on a loaded 2-core machine; P-384 has no fast path): signed on the thread pool. P-256 and
 * Ed25519 (~40 µs) sign inline, where a thread hop would cost more than the signature.
 */
const SLOW_SIGNERS: ReadonlySet<KeyType> = new Set(['rsa-2048', 'rsa-3072', 'rsa-4096', 'ec-p384'])

export class FileKeystore implements Keystore {
  readonly kind = 'file'
  readonly #dir: string
  readonly #master: Buffer
  readonly #keys = new Map<string, LoadedKey>()
  /** Key generations run one at a time: each holds a thread-pool thread (shared with the audit log's writes) for up to seconds. */
  #generating: Promise<unknown> = Promise.resolve()
  /** Files that could not be opened at start, with the reason (never key material). */
  readonly loadErrors: Array<{ file: string, reason: string }> = []

  /** Opens the store in `dir` (created 0700 if missing) and decrypts every key. */
  constructor (dir: string, masterKey: Buffer) {
    this.#dir = dir
    this.#master = Buffer.from(masterKey) // own copy: the caller wipes its buffer
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    chmodSync(dir, 0o700)
    for (const f of readdirSync(dir).sort()) {
      // A temp file is a write that kill -9 interrupted before its rename: never acknowledged, so dropped.
      if (f.startsWith('.') && f.endsWith('.tmp')) { rmSync(join(dir, f), { force: true }); continue }
      if (!f.endsWith('.json')) continue
      try {
        const k = this.#decode(JSON.parse(readFileSync(join(dir, f), 'utf8')))
        this.#keys.set(k.info.name, k)
      } catch (err) {
        this.loadErrors.push({ file: join(dir, f), reason: err instanceof SyntaxError ? 'not valid JSON (truncated or corrupt)' : errorMessage(err) })
      }
    }
  }

  #decode (raw: unknown): LoadedKey {
    const s = raw as StoredKey
    if (s?.format !== 'keyedge-key-v1' || typeof s.name !== 'string' || !isKeyType(s.type) || !isUsage(s.usage) || !Array.isArray(s.versions) || s.versions.length === 0) {
      throw new Error('not a keyedge key file')
    }
    const state: KeyState = s.state ?? 'enabled'
    if (!['enabled', 'disabled', 'destroyed'].includes(state) || (s.origin !== 'generated' && s.origin !== 'imported')) throw new Error(`state or origin malformed in key ${s.name}`)
    const versions = new Map<number, LoadedVersion>()
    for (const v of s.versions) {
      if (state === 'destroyed') {
        if (!Number.isInteger(v.version) || typeof v.publicKey !== 'string' || v.privateKey !== undefined) throw new Error(`tombstone entry malformed in key ${s.name}`)
        const publicKey = createPublicKey({ key: Buffer.from(v.publicKey, 'base64'), format: 'der', type: 'spki' })
        versions.set(v.version, { info: { version: v.version, createdAt: v.createdAt }, privateKey: null, publicKey })
        continue
      }
      if (!Number.isInteger(v.version) || !isSealedBlob(v.privateKey)) throw new Error(`version entry malformed in key ${s.name}`)
      let der: Buffer
      try {
        der = open(this.#master, v.privateKey, aad(s.name, v.version, s.type))
      } catch {
        throw new Error(`key ${s.name} v${v.version} does not decrypt under this master key (wrong master key or tampered file)`)
      }
      const privateKey = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' })
      der.fill(0)
      const publicKey = createPublicKey(privateKey)
      versions.set(v.version, { info: { version: v.version, createdAt: v.createdAt }, privateKey, publicKey })
    }
    const current = Math.max(...versions.keys())
    const info: KeyInfo = { name: s.name, type: s.type, usage: s.usage, createdAt: s.createdAt, origin: s.origin, currentVersion: current, versions: [...versions.values()].map(v => v.info), state, signGraceSeconds: s.signGraceSeconds ?? null }
    if (s.destroyedAt !== undefined) info.destroyedAt = s.destroyedAt
    return { info, versions }
  }

  list (): KeyInfo[] {
    return [...this.#keys.values()].map(k => k.info)
  }

  get (name: string): KeyInfo | undefined {
    return this.#keys.get(name)?.info
  }

  /** The next key pair of `type`, after any generation under way. */
  async #generate (type: KeyType): Promise<KeyPair> {
    const next = this.#generating.then(async () => await generateKey(type))
    this.#generating = next.catch(() => {})
    return await next
  }

  async create (name: string, type: KeyType, usage: Usage): Promise<KeyInfo> {
    const { privateKey, publicKey } = await this.#generate(type)
    // The name was free when the request came; another request may have taken it during the generation.
    if (this.#keys.has(name)) throw new KeydError('KEYD_ERR_KEY_EXISTS', `a key named ${name} was created while this one was being generated`)
    return this.#add(name, type, usage, privateKey, publicKey, 'generated')
  }

  importKey (name: string, type: KeyType, usage: Usage, privateKey: KeyObject): KeyInfo {
    return this.#add(name, type, usage, privateKey, createPublicKey(privateKey), 'imported')
  }

  #add (name: string, type: KeyType, usage: Usage, privateKey: KeyObject, publicKey: KeyObject, origin: 'generated' | 'imported'): KeyInfo {
    const createdAt = new Date().toISOString()
    const der = privateKey.export({ format: 'der', type: 'pkcs8' })
    const stored: StoredKey = {
      format: 'keyedge-key-v1',
      name,
      type,
      usage,
      createdAt,
      origin,
      state: 'enabled',
      versions: [{ version: 1, createdAt, publicKey: publicKey.export({ format: 'der', type: 'spki' }).toString('base64'), privateKey: seal(this.#master, der, aad(name, 1, type)) }]
    }
    der.fill(0)
    writeFileAtomic(join(this.#dir, `${name}.json`), JSON.stringify(stored, null, 2) + '\n')
    const v1 = { version: 1, createdAt }
    const info: KeyInfo = { name, type, usage, createdAt, origin, currentVersion: 1, versions: [v1], state: 'enabled', signGraceSeconds: null }
    this.#keys.set(name, { info, versions: new Map([[1, { info: v1, privateKey, publicKey }]]) })
    return info
  }

  async rotate (name: string, opts: { signGraceSeconds?: number | null } = {}): Promise<KeyInfo> {
    const type = this.#keys.get(name)?.info.type
    if (type === undefined) throw new Error(`no key named ${name}`)
    const { privateKey, publicKey } = await this.#generate(type)
    // From here on nothing waits: the file is read, the version numbered and written in one go, so
    // concurrent rotations get successive versions and a destroy meanwhile is not undone.
    const k = this.#keys.get(name)
    if (k === undefined || k.info.state === 'destroyed') throw new KeydError('KEYD_ERR_KEY_DESTROYED', `key ${name} was destroyed while its new version was being generated`)
    const file = join(this.#dir, `${name}.json`)
    const stored = JSON.parse(readFileSync(file, 'utf8')) as StoredKey
    if (opts.signGraceSeconds !== undefined) stored.signGraceSeconds = opts.signGraceSeconds
    const version = Math.max(...stored.versions.map(v => v.version)) + 1
    const createdAt = new Date().toISOString()
    const der = privateKey.export({ format: 'der', type: 'pkcs8' })
    stored.versions.push({ version, createdAt, publicKey: publicKey.export({ format: 'der', type: 'spki' }).toString('base64'), privateKey: seal(this.#master, der, aad(name, version, stored.type)) })
    der.fill(0)
    writeFileAtomic(file, JSON.stringify(stored, null, 2) + '\n')
    const info: KeyVersionInfo = { version, createdAt }
    k.versions.set(version, { info, privateKey, publicKey })
    k.info = { ...k.info, currentVersion: version, versions: [...k.info.versions, info], signGraceSeconds: stored.signGraceSeconds ?? null }
    return k.info
  }

  setState (name: string, state: 'enabled' | 'disabled'): KeyInfo {
    const k = this.#loaded(name)
    const file = join(this.#dir, `${name}.json`)
    const stored = JSON.parse(readFileSync(file, 'utf8')) as StoredKey
    stored.state = state
    writeFileAtomic(file, JSON.stringify(stored, null, 2) + '\n')
    k.info = { ...k.info, state }
    return k.info
  }

  /** Rewrites the key file without a single sealed private key (atomic rename), then drops the keys from memory. */
  destroy (name: string): KeyInfo {
    const k = this.#loaded(name)
    const file = join(this.#dir, `${name}.json`)
    const stored = JSON.parse(readFileSync(file, 'utf8')) as StoredKey
    const destroyedAt = new Date().toISOString()
    const tombstone: StoredKey = {
      ...stored,
      state: 'destroyed',
      destroyedAt,
      versions: stored.versions.map(v => ({ version: v.version, createdAt: v.createdAt, publicKey: v.publicKey }))
    }
    writeFileAtomic(file, JSON.stringify(tombstone, null, 2) + '\n')
    for (const v of k.versions.values()) v.privateKey = null
    k.info = { ...k.info, state: 'destroyed', destroyedAt }
    return k.info
  }

  #loaded (name: string): LoadedKey {
    const k = this.#keys.get(name)
    if (k === undefined) throw new Error(`no key named ${name}`)
    return k
  }

  /** Resolves version 0 to the current one; undefined if the key or version does not exist. */
  #version (name: string, version: number): LoadedVersion | undefined {
    const k = this.#keys.get(name)
    if (k === undefined) return undefined
    return k.versions.get(version === 0 ? k.info.currentVersion : version)
  }

  publicKey (name: string, version: number): { version: number, key: KeyObject } | undefined {
    const v = this.#version(name, version)
    return v === undefined ? undefined : { version: v.info.version, key: v.publicKey }
  }

  signingKey (name: string, version: number): { version: number, key: KeyObject } | undefined {
    const v = this.#version(name, version)
    return v === undefined || v.privateKey === null ? undefined : { version: v.info.version, key: v.privateKey }
  }

  sign (name: string, version: number, alg: Algorithm, message: Uint8Array, p1363: boolean): MaybeAsync<SignResult | undefined> {
    const k = this.signingKey(name, version)
    if (k === undefined) return undefined
    const key = { key: k.key, ...signOptions(alg, p1363) }
    const type = this.#keys.get(name)?.info.type
    if (type === undefined || !SLOW_SIGNERS.has(type)) return { version: k.version, signature: cryptoSign(alg.hash, message, key) }
    return new Promise((resolve, reject) => {
      cryptoSign(alg.hash, message, key, (err, signature) => { if (err !== null) reject(err); else resolve({ version: k.version, signature }) })
    })
  }

  deriveSecret (info: Uint8Array, length: number): Buffer {
    return Buffer.from(hkdfSync('sha256', this.#master, DERIVE_SALT, info, length))
  }

  /**
   * Backup, inside keyd only (keyd/backup): every key file as stored, each sealed private key opened to
   * `pkcs8` (base64 DER). The result goes straight into an encrypted bundle and is never written or sent.
   */
  backupKeyFiles (): Array<Record<string, unknown>> {
    return [...this.#keys.keys()].map(name => {
      const stored = JSON.parse(readFileSync(join(this.#dir, `${name}.json`), 'utf8')) as StoredKey
      const versions = stored.versions.map(({ privateKey, ...rest }) => privateKey === undefined
        ? rest
        : { ...rest, pkcs8: open(this.#master, privateKey, aad(stored.name, rest.version, stored.type)).toString('base64') })
      return { ...stored, versions }
    })
  }

  /**
   * Restore, inside keyd only: the name and file text of one key from a backup, every `pkcs8` checked
   * against its version's public key and sealed under this store's master key. Writes nothing.
   * @throws Error naming the malformed key (never its material)
   */
  sealBackupKeyFile (raw: unknown): { name: string, text: string } {
    const s = raw as Omit<StoredKey, 'versions'> & { versions: Array<Omit<StoredVersion, 'privateKey'> & { pkcs8?: unknown }> }
    if (s?.format !== 'keyedge-key-v1' || typeof s.name !== 'string' || !KEY_NAME_RE.test(s.name) || !isKeyType(s.type) || !isUsage(s.usage) || !Array.isArray(s.versions) || s.versions.length === 0) {
      throw new Error('a key entry is not a keyedge key file')
    }
    const versions = s.versions.map(({ pkcs8, ...rest }) => {
      if (!Number.isInteger(rest.version) || rest.version < 1 || typeof rest.publicKey !== 'string') throw new Error(`key ${s.name}: a version entry is malformed`)
      if (pkcs8 === undefined) return rest
      if (typeof pkcs8 !== 'string') throw new Error(`key ${s.name} v${rest.version}: private key malformed`)
      const der = Buffer.from(pkcs8, 'base64')
      try {
        const spki = createPublicKey(createPrivateKey({ key: der, format: 'der', type: 'pkcs8' })).export({ format: 'der', type: 'spki' }).toString('base64')
        if (spki !== rest.publicKey) throw new Error(`key ${s.name} v${rest.version}: the private key does not match its public key`)
        return { ...rest, privateKey: seal(this.#master, der, aad(s.name, rest.version, s.type)) }
      } catch (err) {
        throw new Error(`key ${s.name} v${rest.version}: ${errorMessage(err).startsWith('key ') ? 'the private key does not match its public key' : 'the private key does not parse'}`, { cause: err })
      } finally {
        der.fill(0)
      }
    })
    return { name: s.name, text: JSON.stringify({ ...s, versions }, null, 2) + '\n' }
  }

  /** Loads the key files a committed restore moved into the directory; returns the names it added. */
  loadRestored (): string[] {
    const fresh = new FileKeystore(this.#dir, this.#master)
    fresh.#master.fill(0)
    const added: string[] = []
    for (const [name, k] of fresh.#keys) {
      if (this.#keys.has(name)) continue
      this.#keys.set(name, k)
      added.push(name)
    }
    this.loadErrors.push(...fresh.loadErrors)
    return added
  }
}
