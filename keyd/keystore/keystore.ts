// The Keystore interface: where keyd keeps keys. The file store is the default; a PKCS#11 token is the other.
import type { KeyObject } from 'node:crypto'
import type { Algorithm, KeyType, Usage } from '../algorithms.js'

export interface KeyVersionInfo { version: number, createdAt: string }

/** `enabled` signs; `disabled` refuses SIGN (KEY_DISABLED); `destroyed` is a tombstone without private keys (KEY_DESTROYED). */
export type KeyState = 'enabled' | 'disabled' | 'destroyed'

export interface KeyInfo {
  name: string
  type: KeyType
  usage: Usage
  createdAt: string
  origin: 'generated' | 'imported'
  currentVersion: number
  versions: KeyVersionInfo[]
  /** Absent = enabled (stores written before the lifecycle operations). */
  state?: KeyState
  /** Seconds after a rotation during which older versions may still sign; absent or null = without limit. */
  signGraceSeconds?: number | null
  destroyedAt?: string
}

/** A result a keystore gives at once (work well under a millisecond) or later (key generation, slow signatures, a token). */
export type MaybeAsync<T> = T | Promise<T>

/** Applies `f` to `v` now if it is a value, or once it resolves: sync results stay sync (the hot SIGN path). */
export function whenDone<T, U> (v: MaybeAsync<T>, f: (v: T) => U): MaybeAsync<U> {
  return v instanceof Promise ? v.then(f) : f(v)
}

export interface SignResult { version: number, signature: Buffer }

/**
 * Where keyd keeps keys. Anything that could hold keyd's event loop for more than about a millisecond
 * (generating a key, an RSA or P-384 signature, every call into a token) returns a promise.
 */
export interface Keystore {
  readonly kind: string
  list (): KeyInfo[]
  get (name: string): KeyInfo | undefined
  /**
   * Generates a key inside the store; the caller has checked that the name is free and valid.
   * @throws KeydError KEYD_ERR_KEY_EXISTS if the name was taken while the key was being generated
   */
  create (name: string, type: KeyType, usage: Usage): MaybeAsync<KeyInfo>
  /**
   * Generates a new version of an existing key, which becomes current; older versions still sign.
   * @throws KeydError KEYD_ERR_KEY_DESTROYED if the key was destroyed while the version was being generated
   */
  rotate (name: string, opts?: { signGraceSeconds?: number | null }): MaybeAsync<KeyInfo>
  /** Persists `enabled` or `disabled` (atomic). Optional: a backend without it answers NOT_SUPPORTED. */
  setState? (name: string, state: 'enabled' | 'disabled'): MaybeAsync<KeyInfo>
  /** Removes every private key of `name` for good, leaving a tombstone that keeps the name taken. */
  destroy? (name: string): MaybeAsync<KeyInfo>
  /** Stores an existing private key as version 1 of a new key, marked `origin: imported` forever. */
  importKey? (name: string, type: KeyType, usage: Usage, privateKey: KeyObject): KeyInfo
  /** Public key of a version (0 = current). */
  publicKey (name: string, version: number): { version: number, key: KeyObject } | undefined
  /**
   * Private key handle for signing, inside keyd only; never serialised. Undefined for a store whose
   * keys never leave their device (PKCS#11): sign through `sign` instead.
   */
  signingKey (name: string, version: number): { version: number, key: KeyObject } | undefined
  /**
   * Signs the whole `message` with `alg` (the store hashes it); ECDSA as DER, or IEEE P1363 r||s when
   * `p1363`. Undefined if the key or version does not exist. @throws KeydError (e.g. KEYD_ERR_PKCS11)
   */
  sign (name: string, version: number, alg: Algorithm, message: Uint8Array, p1363: boolean): MaybeAsync<SignResult | undefined>
  /** False for a key type this store cannot generate (a token without Ed25519); absent = all types. */
  supportsType? (type: KeyType): boolean
  /**
   * `length` bytes derived from the master secret by HKDF-SHA256 (salt `keyedge derive v1`,
   * `info` given): the same on every keyd sharing that master. The master itself never leaves.
   */
  deriveSecret (info: Uint8Array, length: number): Buffer
}
