// The token side of the PKCS#11 keystore, run in keyd's token worker thread (pkcs11-worker.ts): every key
// pair is generated inside the token (sensitive, never extractable) and signs there; keyd keeps only
// public keys and a per-key JSON record, itself a data object in the token. Every method here may block
// on the token, which is why it never runs on keyd's event loop (pkcs11-keystore.ts is that side).
import { createHash, createPublicKey, randomBytes, type KeyObject } from 'node:crypto'
import type * as P11 from 'pkcs11js'
import { isKeyType, isUsage, type Algorithm, type KeyType, type Usage } from '../algorithms.js'
import { Pkcs11Error } from '../errors.js'
import type { KeyInfo, KeyState } from './keystore.js'
import { Pkcs11Token, isConnectionLoss, type TokenOptions } from './pkcs11-token.js'
import { digestInfo, pssEncode, ecdsaRawToDer, unwrapOctetString, ecPublicKey, rsaPublicKey } from './pkcs11-encoding.js'
import { errorMessage } from '../../lib/errors.js'

/** CKA_APPLICATION of keyedge's data objects. */
const APPLICATION = 'keyedge'
/** DER OIDs for CKA_EC_PARAMS. */
const EC_PARAMS: Partial<Record<KeyType, Buffer>> = {
  'ec-p256': Buffer.from('06082a8648ce3d030107', 'hex'),
  'ec-p384': Buffer.from('06052b81040022', 'hex')
}

/** The record of one key: a CKO_DATA object labelled `keyedge/<name>` (no secret in it). */
interface KeyRecord {
  format: 'keyedge-pkcs11-v1', name: string, type: KeyType, usage: Usage, createdAt: string, origin: 'generated'
  /** Grows with every change: after a crash between writing a record and removing the one it replaces, the higher wins. */
  seq: number
  versions: Array<{ version: number, createdAt: string, publicKey: string }>
  state?: KeyState, signGraceSeconds?: number | null, destroyedAt?: string
}

interface Loaded { info: KeyInfo, record: KeyRecord, data: P11.Handle, publicKeys: Map<number, KeyObject>, privateKeys: Map<number, P11.Handle> }

const keyLabel = (name: string): string => `keyedge/${name}`
const versionLabel = (name: string, version: number): string => `keyedge/${name}/v${version}`

/** What the event-loop side mirrors of one key: its info and every version's public key (SPKI DER, base64). */
export interface KeySnapshot { info: KeyInfo, versions: Array<{ version: number, spki: string }> }

export class TokenStore {
  readonly #token: Pkcs11Token
  readonly #keys = new Map<string, Loaded>()
  readonly #mechanisms: Set<number>
  #reconnects = 0
  /** Records or key versions that could not be used at start, with the reason (never key material). */
  readonly loadErrors: Array<{ key: string, reason: string }> = []

  /**
   * Logs in to the token and indexes keyedge's keys (blocking: in the worker only).
   * @throws Pkcs11Error (see Pkcs11Token)
   */
  constructor (opts: TokenOptions) {
    this.#token = new Pkcs11Token(opts)
    this.#mechanisms = new Set(this.#token.mechanisms())
    this.#index()
  }

  #index (): void {
    const p = this.#token.p11
    this.#keys.clear()
    this.loadErrors.length = 0
    for (const data of this.#token.find([{ type: p.CKA_CLASS, value: p.CKO_DATA }, { type: p.CKA_APPLICATION, value: APPLICATION }])) {
      const label = this.#token.attribute(data, p.CKA_LABEL).toString()
      try {
        const record = JSON.parse(this.#token.attribute(data, p.CKA_VALUE).toString()) as KeyRecord
        if (record?.format !== 'keyedge-pkcs11-v1' || keyLabel(record.name) !== label || !isKeyType(record.type) || !isUsage(record.usage) || !Array.isArray(record.versions)) throw new Error('not a keyedge key record')
        const older = this.#keys.get(record.name)
        if (older !== undefined) {
          // Two records: a change was interrupted after its new record was written; the older one is superseded.
          if (older.record.seq > record.seq) { this.#destroyObject(data); continue }
          this.#destroyObject(older.data)
        }
        const loaded: Loaded = { info: this.#info(record), record, data, publicKeys: new Map(), privateKeys: new Map() }
        for (const v of record.versions) {
          loaded.publicKeys.set(v.version, createPublicKey({ key: Buffer.from(v.publicKey, 'base64'), format: 'der', type: 'spki' }))
          if (record.state === 'destroyed') { this.#destroyPrivate(record.name, v.version); continue } // a destroy cut short
          const priv = this.#privateKey(versionLabel(record.name, v.version))
          if (priv === undefined) this.loadErrors.push({ key: label, reason: `version ${v.version}: no private key object in the token, or one that is extractable or not sensitive` })
          else loaded.privateKeys.set(v.version, priv)
        }
        this.#keys.set(record.name, loaded)
      } catch (err) {
        this.loadErrors.push({ key: label, reason: err instanceof SyntaxError ? 'record is not valid JSON' : errorMessage(err) })
      }
    }
  }

  /** The private key object labelled `label`, only if the token says it is sensitive and was never extractable. */
  #privateKey (label: string): P11.Handle | undefined {
    const p = this.#token.p11
    const [h] = this.#token.find([{ type: p.CKA_CLASS, value: p.CKO_PRIVATE_KEY }, { type: p.CKA_LABEL, value: label }])
    if (h === undefined) return undefined
    const flag = (t: number): boolean => this.#token.attribute(h, t)[0] === 1
    return flag(p.CKA_SENSITIVE) && !flag(p.CKA_EXTRACTABLE) && flag(p.CKA_NEVER_EXTRACTABLE) ? h : undefined
  }

  #info (r: KeyRecord): KeyInfo {
    const info: KeyInfo = {
      name: r.name,
      type: r.type,
      usage: r.usage,
      createdAt: r.createdAt,
      origin: r.origin,
      currentVersion: Math.max(...r.versions.map(v => v.version)),
      versions: r.versions.map(v => ({ version: v.version, createdAt: v.createdAt }))
    }
    if (r.state !== undefined) info.state = r.state
    if (r.signGraceSeconds !== undefined) info.signGraceSeconds = r.signGraceSeconds
    if (r.destroyedAt !== undefined) info.destroyedAt = r.destroyedAt
    return info
  }

  supportsType (type: KeyType): boolean {
    const p = this.#token.p11
    if (type.startsWith('rsa-')) return this.#mechanisms.has(p.CKM_RSA_PKCS_KEY_PAIR_GEN) && this.#mechanisms.has(p.CKM_RSA_PKCS) && this.#mechanisms.has(p.CKM_RSA_X_509)
    if (type.startsWith('ec-')) return this.#mechanisms.has(p.CKM_EC_KEY_PAIR_GEN) && this.#mechanisms.has(p.CKM_ECDSA)
    return false // Ed25519: neither SoftHSM 2.6 nor the p11-kit 0.24 RPC offers CKM_EDDSA
  }

  /** Generates the key pair of one version in the token; returns its public key. */
  #generate (name: string, version: number, type: KeyType): KeyObject {
    const p = this.#token.p11
    const lib = this.#token.lib
    const label = versionLabel(name, version)
    // Objects already under this label are the remains of a create or rotate that never committed its record.
    for (const h of this.#token.find([{ type: p.CKA_LABEL, value: label }])) this.#destroyObject(h)
    const id = randomBytes(16)
    const common = [{ type: p.CKA_TOKEN, value: true }, { type: p.CKA_LABEL, value: label }, { type: p.CKA_ID, value: id }]
    const priv = [...common, { type: p.CKA_PRIVATE, value: true }, { type: p.CKA_SENSITIVE, value: true }, { type: p.CKA_EXTRACTABLE, value: false },
      { type: p.CKA_SIGN, value: true }, { type: p.CKA_DECRYPT, value: false }, { type: p.CKA_UNWRAP, value: false }, { type: p.CKA_DERIVE, value: false }]
    const ec = EC_PARAMS[type]
    const pair = ec !== undefined
      ? this.#token.call('C_GenerateKeyPair', () => lib.C_GenerateKeyPair(this.#token.session, { mechanism: p.CKM_EC_KEY_PAIR_GEN },
        [...common, { type: p.CKA_VERIFY, value: true }, { type: p.CKA_EC_PARAMS, value: ec }], priv))
      : this.#token.call('C_GenerateKeyPair', () => lib.C_GenerateKeyPair(this.#token.session, { mechanism: p.CKM_RSA_PKCS_KEY_PAIR_GEN },
        [...common, { type: p.CKA_VERIFY, value: true }, { type: p.CKA_MODULUS_BITS, value: Number(type.slice(4)) }, { type: p.CKA_PUBLIC_EXPONENT, value: Buffer.from([1, 0, 1]) }], priv))
    if (ec !== undefined) return ecPublicKey(type === 'ec-p256' ? 'P-256' : 'P-384', unwrapOctetString(this.#token.attribute(pair.publicKey, p.CKA_EC_POINT)))
    return rsaPublicKey(this.#token.attribute(pair.publicKey, p.CKA_MODULUS), this.#token.attribute(pair.publicKey, p.CKA_PUBLIC_EXPONENT))
  }

  #destroyPrivate (name: string, version: number): void {
    const p = this.#token.p11
    for (const h of this.#token.find([{ type: p.CKA_LABEL, value: versionLabel(name, version) }, { type: p.CKA_CLASS, value: p.CKO_PRIVATE_KEY }])) this.#destroyObject(h)
  }

  #destroyObject (h: P11.Handle): void {
    this.#token.call('C_DestroyObject', () => this.#token.lib.C_DestroyObject(this.#token.session, h))
  }

  /**
   * Writes `record` as a new data object, then removes the one it replaces (a data object's CKA_VALUE
   * is read-only once created). Creating the new object is the commit point of every change.
   */
  #commit (record: KeyRecord, existing?: P11.Handle): P11.Handle {
    const p = this.#token.p11
    const lib = this.#token.lib
    const value = Buffer.from(JSON.stringify(record))
    const created = this.#token.call('C_CreateObject', () => lib.C_CreateObject(this.#token.session, [
      { type: p.CKA_CLASS, value: p.CKO_DATA }, { type: p.CKA_TOKEN, value: true }, { type: p.CKA_PRIVATE, value: true },
      { type: p.CKA_APPLICATION, value: APPLICATION }, { type: p.CKA_LABEL, value: keyLabel(record.name) }, { type: p.CKA_VALUE, value }
    ]))
    if (existing !== undefined) this.#destroyObject(existing)
    return created
  }

  list (): KeyInfo[] {
    return [...this.#keys.values()].map(k => k.info)
  }

  get (name: string): KeyInfo | undefined {
    return this.#keys.get(name)?.info
  }

  /** @throws Pkcs11Error KEYD_ERR_PKCS11_UNSUPPORTED for a type the token cannot make, KEYD_ERR_PKCS11 if the token refuses */
  create (name: string, type: KeyType, usage: Usage): KeyInfo {
    if (!this.supportsType(type)) throw new Pkcs11Error('KEYD_ERR_PKCS11_UNSUPPORTED', `the token cannot generate ${type} keys`)
    const publicKey = this.#generate(name, 1, type)
    const createdAt = new Date().toISOString()
    const record: KeyRecord = { format: 'keyedge-pkcs11-v1', name, type, usage, createdAt, origin: 'generated', seq: 1, versions: [{ version: 1, createdAt, publicKey: spki(publicKey) }] }
    const data = this.#commit(record)
    const priv = this.#privateKey(versionLabel(name, 1))
    if (priv === undefined) throw new Pkcs11Error('KEYD_ERR_PKCS11', `generated key ${name} v1 is not sensitive and non-extractable in the token`)
    const loaded: Loaded = { info: this.#info(record), record, data, publicKeys: new Map([[1, publicKey]]), privateKeys: new Map([[1, priv]]) }
    this.#keys.set(name, loaded)
    return loaded.info
  }

  rotate (name: string, opts: { signGraceSeconds?: number | null } = {}): KeyInfo {
    const k = this.#loaded(name)
    const version = k.info.currentVersion + 1
    const publicKey = this.#generate(name, version, k.record.type)
    const record: KeyRecord = { ...k.record, seq: k.record.seq + 1, versions: [...k.record.versions, { version, createdAt: new Date().toISOString(), publicKey: spki(publicKey) }] }
    if (opts.signGraceSeconds !== undefined) record.signGraceSeconds = opts.signGraceSeconds
    k.data = this.#commit(record, k.data)
    const priv = this.#privateKey(versionLabel(name, version))
    if (priv === undefined) throw new Pkcs11Error('KEYD_ERR_PKCS11', `generated key ${name} v${version} is not sensitive and non-extractable in the token`)
    k.record = record
    k.info = this.#info(record)
    k.publicKeys.set(version, publicKey)
    k.privateKeys.set(version, priv)
    return k.info
  }

  setState (name: string, state: 'enabled' | 'disabled'): KeyInfo {
    const k = this.#loaded(name)
    const record: KeyRecord = { ...k.record, seq: k.record.seq + 1, state }
    k.data = this.#commit(record, k.data)
    k.record = record
    k.info = this.#info(record)
    return k.info
  }

  /** Records the tombstone first, then destroys every private key object of `name` in the token. */
  destroy (name: string): KeyInfo {
    const k = this.#loaded(name)
    const record: KeyRecord = { ...k.record, seq: k.record.seq + 1, state: 'destroyed', destroyedAt: new Date().toISOString() }
    k.data = this.#commit(record, k.data)
    for (const v of record.versions) this.#destroyPrivate(name, v.version)
    k.record = record
    k.info = this.#info(record)
    k.privateKeys.clear()
    return k.info
  }

  #loaded (name: string): Loaded {
    const k = this.#keys.get(name)
    if (k === undefined) throw new Error(`no key named ${name}`)
    return k
  }

  publicKey (name: string, version: number): { version: number, key: KeyObject } | undefined {
    const k = this.#keys.get(name)
    const v = version === 0 ? k?.info.currentVersion : version
    const key = v === undefined ? undefined : k?.publicKeys.get(v)
    return key === undefined ? undefined : { version: v as number, key }
  }

  /**
   * ECDSA: keyd hashes, CKM_ECDSA signs the digest (r||s). RSA PKCS#1 v1.5: CKM_RSA_PKCS over the
   * DigestInfo. RSA-PSS: keyd encodes EMSA-PSS and CKM_RSA_X_509 applies the raw private key, because
   * p11-kit 0.24's RPC does not carry CK_RSA_PKCS_PSS_PARAMS.
   * @throws Pkcs11Error KEYD_ERR_PKCS11 if the token refuses (after one reconnect on a lost connection)
   */
  sign (name: string, version: number, alg: Algorithm, message: Uint8Array, p1363: boolean): { version: number, signature: Buffer } | undefined {
    const k = this.#keys.get(name)
    if (k === undefined || alg.hash === null) return undefined
    const v = version === 0 ? k.info.currentVersion : version
    if (!k.privateKeys.has(v)) return undefined
    const p = this.#token.p11
    let mechanism: number
    let input: Buffer
    let outLength: number
    if (alg.family === 'ec') {
      mechanism = p.CKM_ECDSA
      input = createHash(alg.hash).update(message).digest()
      outLength = k.record.type === 'ec-p256' ? 64 : 96
    } else {
      const bits = Number(k.record.type.slice(4))
      mechanism = alg.pss ? p.CKM_RSA_X_509 : p.CKM_RSA_PKCS
      input = alg.pss ? pssEncode(alg.hash, message, bits) : digestInfo(alg.hash, message)
      outLength = bits / 8
    }
    const once = (): Buffer => {
      const lib = this.#token.lib
      const s = this.#token.session
      const h = this.#keys.get(name)?.privateKeys.get(v)
      if (h === undefined) throw new Pkcs11Error('KEYD_ERR_PKCS11', `key ${name} v${v} is gone from the token`)
      return this.#token.call('C_Sign', () => { lib.C_SignInit(s, { mechanism }, h); return lib.C_Sign(s, input, Buffer.alloc(outLength)) })
    }
    let raw: Buffer
    try {
      raw = once()
    } catch (err) {
      if (!isConnectionLoss(err)) throw err
      this.#token.reopen()
      this.#index()
      this.#reconnects++
      raw = once()
    }
    return { version: v, signature: alg.family === 'ec' && !p1363 ? ecdsaRawToDer(raw) : raw }
  }

  /** What the event-loop side mirrors: one key, or every key (after start or a reconnect). */
  snapshot (name?: string): KeySnapshot[] {
    const keys = name === undefined ? [...this.#keys.values()] : [this.#keys.get(name)].filter((k): k is Loaded => k !== undefined)
    return keys.map(k => ({ info: k.info, versions: k.record.versions.map(v => ({ version: v.version, spki: v.publicKey })) }))
  }

  /** How many times the connection to the token was reopened (a reconnect re-reads every key). */
  get reconnects (): number { return this.#reconnects }

  /** Logs out and drops the module connection. */
  close (): void {
    this.#token.close()
  }
}

function spki (key: KeyObject): string {
  return key.export({ format: 'der', type: 'spki' }).toString('base64')
}
