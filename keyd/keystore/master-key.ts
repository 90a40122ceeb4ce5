// The master key that encrypts the keystore: from a passphrase through scrypt, or (development) a 0600 file.
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { randomBytes, scryptSync } from 'node:crypto'
import { writeFileAtomic } from './atomic-file.js'
import { seal, open, isSealedBlob, type SealedBlob } from './aead.js'
import { KeystoreError } from '../errors.js'
import { split, combine, encodeShare, type Share } from './shamir.js'

const SCRYPT = { N: 1 << 15, r: 8, p: 1, maxmem: 64 * 1024 * 1024 }
const SEAL_AAD = 'keyedge-master-key-v1'

interface ShamirSealFile { version: 1, kind: 'shamir', shares: number, threshold: number, check: SealedBlob }

interface SealFile { version: 1, kind?: 'passphrase', kdf: 'scrypt', N: number, r: number, p: number, salt: string, wrapped: SealedBlob }

export type MasterKeySource = { kind: 'dev' } | { kind: 'passphrase', passphrase: string }

const CHECK_AAD = 'keyedge-master-check-v1'

/** How this keystore's master key is protected, from the files in `dir`. */
export function sealKind (dir: string): 'dev' | 'passphrase' | 'shamir' | 'none' {
  if (existsSync(join(dir, 'master.key'))) return 'dev'
  const sealFile = join(dir, 'seal.json')
  if (!existsSync(sealFile)) return 'none'
  try {
    return (JSON.parse(readFileSync(sealFile, 'utf8')) as { kind?: string }).kind === 'shamir' ? 'shamir' : 'passphrase'
  } catch {
    throw new KeystoreError('KEYD_ERR_KEYSTORE_CORRUPT', `${sealFile} is not valid JSON`)
  }
}

/**
 * Creates a new master key split into `shares` Shamir shares, any `threshold` of which unseal it.
 * Only a check value (the master key sealing a constant) is written; the shares are returned once.
 */
export function initShamir (dir: string, shares: number, threshold: number): string[] {
  if (sealKind(dir) !== 'none') throw new KeystoreError('KEYD_ERR_NO_MASTER_KEY', `a master key already exists in ${dir}; refusing to replace it`)
  const key = randomBytes(32)
  const parts = split(key, shares, threshold)
  const body: ShamirSealFile = { version: 1, kind: 'shamir', shares, threshold, check: seal(key, Buffer.from(CHECK_AAD), CHECK_AAD) }
  writeFileAtomic(join(dir, 'seal.json'), JSON.stringify(body, null, 2) + '\n')
  key.fill(0)
  return parts.map(encodeShare)
}

/** Threshold and share count of a Shamir-sealed keystore. */
export function shamirParams (dir: string): { shares: number, threshold: number } {
  const body = JSON.parse(readFileSync(join(dir, 'seal.json'), 'utf8')) as ShamirSealFile
  return { shares: body.shares, threshold: body.threshold }
}

/**
 * Rebuilds the master key from `threshold` distinct shares and checks it.
 * @throws KeystoreError KEYD_ERR_BAD_SHARE if the shares do not rebuild this keystore's key.
 */
export function unsealShamir (dir: string, shares: Share[]): Buffer {
  const body = JSON.parse(readFileSync(join(dir, 'seal.json'), 'utf8')) as ShamirSealFile
  const key = combine(shares)
  try {
    open(key, body.check, CHECK_AAD)
  } catch {
    key.fill(0)
    throw new KeystoreError('KEYD_ERR_BAD_SHARE', 'these shares do not rebuild this keystore\'s master key (a wrong or foreign share)')
  }
  return key
}

/**
 * Loads (or on first use creates) the 32-byte master key in `dir`.
 * @throws KeystoreError KEYD_ERR_WRONG_PASSPHRASE, KEYD_ERR_KEYSTORE_CORRUPT, KEYD_ERR_NO_MASTER_KEY
 */
export function loadMasterKey (dir: string, source: MasterKeySource): { key: Buffer, created: boolean } {
  const devFile = join(dir, 'master.key')
  const sealFile = join(dir, 'seal.json')
  if (sealKind(dir) === 'shamir') throw new KeystoreError('KEYD_ERR_SEALED', 'this keystore is sealed by Shamir shares: start keyd without --dev or a passphrase and unseal it with "keyedge keyd unseal"')
  if (source.kind === 'dev') {
    if (existsSync(sealFile)) throw new KeystoreError('KEYD_ERR_NO_MASTER_KEY', 'this keystore is sealed by a passphrase; start keyd with KEYEDGE_KEYD_PASSPHRASE or --passphrase-file, not --dev')
    if (!existsSync(devFile)) {
      const key = randomBytes(32)
      writeFileAtomic(devFile, key.toString('hex') + '\n')
      return { key, created: true }
    }
    const hex = readFileSync(devFile, 'utf8').trim()
    if (!/^[0-9a-f]{64}$/.test(hex)) throw new KeystoreError('KEYD_ERR_KEYSTORE_CORRUPT', `${devFile} is not a 32-byte hex master key`)
    return { key: Buffer.from(hex, 'hex'), created: false }
  }
  if (existsSync(devFile)) throw new KeystoreError('KEYD_ERR_NO_MASTER_KEY', `this keystore uses a development master key (${devFile}); start keyd with --dev`)
  if (source.passphrase.length < 8) throw new KeystoreError('KEYD_ERR_WRONG_PASSPHRASE', 'the passphrase must be at least 8 characters')
  if (!existsSync(sealFile)) {
    const key = randomBytes(32)
    const salt = randomBytes(16)
    const kek = scryptSync(source.passphrase, salt, 32, SCRYPT)
    const body: SealFile = { version: 1, kdf: 'scrypt', N: SCRYPT.N, r: SCRYPT.r, p: SCRYPT.p, salt: salt.toString('base64'), wrapped: seal(kek, key, SEAL_AAD) }
    writeFileAtomic(sealFile, JSON.stringify(body, null, 2) + '\n')
    return { key, created: true }
  }
  let body: SealFile
  try {
    body = JSON.parse(readFileSync(sealFile, 'utf8')) as SealFile
    if (body.kdf !== 'scrypt' || !isSealedBlob(body.wrapped) || typeof body.salt !== 'string') throw new Error('bad fields')
  } catch (err) {
    throw new KeystoreError('KEYD_ERR_KEYSTORE_CORRUPT', `${sealFile} is not a valid seal file`, { cause: err })
  }
  const kek = scryptSync(source.passphrase, Buffer.from(body.salt, 'base64'), 32, { N: body.N, r: body.r, p: body.p, maxmem: SCRYPT.maxmem })
  try {
    return { key: open(kek, body.wrapped, SEAL_AAD), created: false }
  } catch {
    throw new KeystoreError('KEYD_ERR_WRONG_PASSPHRASE', 'wrong passphrase: the master key did not unseal')
  }
}
