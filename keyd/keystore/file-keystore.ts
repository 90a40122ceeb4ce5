// Encrypted-file keystore: one JSON file per key, every private key sealed with AES-256-GCM under the master key.
import { mkdirSync, readdirSync, readFileSync, chmodSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { createPrivateKey, createPublicKey, generateKeyPairSync, hkdfSync, type KeyObject } from 'node:crypto'
import { writeFileAtomic } from './atomic-file.js'
import { seal, open, isSealedBlob, type SealedBlob } from './aead.js'
import { isKeyType, isUsage, type KeyType, type Usage } from '../algorithms.js'
import type { Keystore, KeyInfo, KeyVersionInfo } from './keystore.js'

interface StoredVersion { version: number, createdAt: string, publicKey: string, privateKey: SealedBlob }
interface StoredKey { format: 'keyedge-key-v1', name: string, type: KeyType, usage: Usage, createdAt: string, origin: 'generated', versions: StoredVersion[] }

interface LoadedVersion { info: KeyVersionInfo, privateKey: KeyObject, publicKey: KeyObject }
interface LoadedKey { info: KeyInfo, versions: Map<number, LoadedVersion> }

/** HKDF salt of every secret derived from the master key (ticket keys, …). */
const DERIVE_SALT = Buffer.from('keyedge derive v1')

function aad (name: string, version: number, type: string): string {
  return `keyedge-key-v1|${name}|${version}|${type}`
}

/** Generates a fresh key pair of `type` inside this process. */
export function generateKey (type: KeyType): { privateKey: KeyObject, publicKey: KeyObject } {
  switch (type) {
    case 'ec-p256': return generateKeyPairSync('ec', { namedCurve: 'P-256' })
    case 'ec-p384': return generateKeyPairSync('ec', { namedCurve: 'P-384' })
    case 'ed25519': return generateKeyPairSync('ed25519')
    default: return generateKeyPairSync('rsa', { modulusLength: Number(type.slice(4)), publicExponent: 65537 })
  }
}

export class FileKeystore implements Keystore {
  readonly kind = 'file'
  readonly #dir: string
  readonly #master: Buffer
  readonly #keys = new Map<string, LoadedKey>()
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
        this.loadErrors.push({ file: join(dir, f), reason: err instanceof SyntaxError ? 'not valid JSON (truncated or corrupt)' : (err as Error).message })
      }
    }
  }

  #decode (raw: unknown): LoadedKey {
    const s = raw as StoredKey
    if (s?.format !== 'keyedge-key-v1' || typeof s.name !== 'string' || !isKeyType(s.type) || !isUsage(s.usage) || !Array.isArray(s.versions) || s.versions.length === 0) {
      throw new Error('not a keyedge key file')
    }
    const versions = new Map<number, LoadedVersion>()
    for (const v of s.versions) {
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
    return { info: { name: s.name, type: s.type, usage: s.usage, createdAt: s.createdAt, origin: s.origin, currentVersion: current, versions: [...versions.values()].map(v => v.info) }, versions }
  }

  list (): KeyInfo[] {
    return [...this.#keys.values()].map(k => k.info)
  }

  get (name: string): KeyInfo | undefined {
    return this.#keys.get(name)?.info
  }

  create (name: string, type: KeyType, usage: Usage): KeyInfo {
    const { privateKey, publicKey } = generateKey(type)
    const createdAt = new Date().toISOString()
    const der = privateKey.export({ format: 'der', type: 'pkcs8' })
    const stored: StoredKey = {
      format: 'keyedge-key-v1',
      name,
      type,
      usage,
      createdAt,
      origin: 'generated',
      versions: [{ version: 1, createdAt, publicKey: publicKey.export({ format: 'der', type: 'spki' }).toString('base64'), privateKey: seal(this.#master, der, aad(name, 1, type)) }]
    }
    der.fill(0)
    writeFileAtomic(join(this.#dir, `${name}.json`), JSON.stringify(stored, null, 2) + '\n')
    const info: KeyInfo = { name, type, usage, createdAt, origin: 'generated', currentVersion: 1, versions: [{ version: 1, createdAt }] }
    this.#keys.set(name, { info, versions: new Map([[1, { info: info.versions[0], privateKey, publicKey }]]) })
    return info
  }

  rotate (name: string): KeyInfo {
    const k = this.#keys.get(name)
    if (k === undefined) throw new Error(`no key named ${name}`)
    const file = join(this.#dir, `${name}.json`)
    const stored = JSON.parse(readFileSync(file, 'utf8')) as StoredKey
    const version = Math.max(...stored.versions.map(v => v.version)) + 1
    const { privateKey, publicKey } = generateKey(stored.type)
    const createdAt = new Date().toISOString()
    const der = privateKey.export({ format: 'der', type: 'pkcs8' })
    stored.versions.push({ version, createdAt, publicKey: publicKey.export({ format: 'der', type: 'spki' }).toString('base64'), privateKey: seal(this.#master, der, aad(name, version, stored.type)) })
    der.fill(0)
    writeFileAtomic(file, JSON.stringify(stored, null, 2) + '\n')
    const info: KeyVersionInfo = { version, createdAt }
    k.versions.set(version, { info, privateKey, publicKey })
    k.info = { ...k.info, currentVersion: version, versions: [...k.info.versions, info] }
    return k.info
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
    return v === undefined ? undefined : { version: v.info.version, key: v.privateKey }
  }

  deriveSecret (info: Uint8Array, length: number): Buffer {
    return Buffer.from(hkdfSync('sha256', this.#master, DERIVE_SALT, info, length))
  }
}
