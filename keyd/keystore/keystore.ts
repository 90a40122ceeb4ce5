// The Keystore interface: where keyd keeps keys. The file store is the default; PKCS#11 comes later.
import type { KeyObject } from 'node:crypto'
import type { KeyType, Usage } from '../algorithms.js'

export interface KeyVersionInfo { version: number, createdAt: string }

export interface KeyInfo {
  name: string
  type: KeyType
  usage: Usage
  createdAt: string
  origin: 'generated' | 'imported'
  currentVersion: number
  versions: KeyVersionInfo[]
}

export interface Keystore {
  readonly kind: string
  list (): KeyInfo[]
  get (name: string): KeyInfo | undefined
  /** Generates a key inside the store; the caller has checked that the name is free and valid. */
  create (name: string, type: KeyType, usage: Usage): KeyInfo
  /** Generates a new version of an existing key, which becomes current; older versions still sign. */
  rotate (name: string): KeyInfo
  /** Public key of a version (0 = current). */
  publicKey (name: string, version: number): { version: number, key: KeyObject } | undefined
  /** Private key handle for signing, inside keyd only; never serialised. */
  signingKey (name: string, version: number): { version: number, key: KeyObject } | undefined
  /**
   * `length` bytes derived from the master secret by HKDF-SHA256 (salt `keyedge derive v1`,
   * `info` given): the same on every keyd sharing that master. The master itself never leaves.
   */
  deriveSecret (info: Uint8Array, length: number): Buffer
}
