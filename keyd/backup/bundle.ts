// The backup bundle format (docs/keyd.md, "Backup and restore"): a cleartext header, then every key sealed
// with AES-256-GCM under a backup key from a passphrase (scrypt) or from Shamir shares. Pure: bytes in, bytes out.
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes, scryptSync, timingSafeEqual } from 'node:crypto'
import { BackupError } from '../errors.js'

export const BUNDLE_MAGIC = Buffer.from('KEYEDGEB')
export const BUNDLE_VERSION = 1
/** magic (8) ‖ u16 format version ‖ u32 header length */
const PREFIX = 14
const TAG_BYTES = 16
const HKDF_SALT = Buffer.from('keyedge backup v1')
/** scrypt cost of passphrase bundles: the same as the passphrase seal of the master key (seal.json). */
export const BACKUP_SCRYPT = { N: 1 << 15, r: 8, p: 1 }
const SCRYPT_MAXMEM = 64 * 1024 * 1024
export const MIN_PASSPHRASE_CHARS = 12

export type BundleWrap =
  | { kind: 'passphrase', kdf: 'scrypt', N: number, r: number, p: number, salt: string }
  | { kind: 'shamir', shares: number, threshold: number }

export interface BundleHeader {
  format: 'keyedge-backup'
  version: 1
  createdAt: string
  cipher: 'aes-256-gcm'
  /** base64, 12 bytes */
  iv: string
  /** bytes of ciphertext between the header and the 16-byte GCM tag */
  ctLength: number
  /** base64 HKDF(backup key, "key check")[0..16]: tells a wrong passphrase or share from a tampered body */
  keyCheck: string
  wrap: BundleWrap
}

export interface ParsedBundle { header: BundleHeader, aad: Buffer, ct: Buffer, tag: Buffer }

function derive (backupKey: Uint8Array, info: string, length: number): Buffer {
  return Buffer.from(hkdfSync('sha256', backupKey, HKDF_SALT, Buffer.from(info), length))
}

/** A fresh passphrase wrap (random salt) and the backup key it gives. @throws BackupError BAD_REQUEST if too short */
export function passphraseWrap (passphrase: string): { wrap: BundleWrap, key: Buffer } {
  if (passphrase.length < MIN_PASSPHRASE_CHARS) throw new BackupError('KEYD_ERR_BACKUP_BAD_REQUEST', `a backup passphrase needs at least ${MIN_PASSPHRASE_CHARS} characters`)
  const wrap: BundleWrap = { kind: 'passphrase', kdf: 'scrypt', ...BACKUP_SCRYPT, salt: randomBytes(16).toString('base64') }
  return { wrap, key: passphraseKey(passphrase, wrap) }
}

/** The backup key of a passphrase bundle. @throws BackupError MALFORMED if the KDF parameters are out of range */
export function passphraseKey (passphrase: string, wrap: BundleWrap & { kind: 'passphrase' }): Buffer {
  const { N, r, p } = wrap
  if (!Number.isInteger(N) || N < 1 << 14 || N > 1 << 20 || (N & (N - 1)) !== 0 || r !== 8 || !Number.isInteger(p) || p < 1 || p > 4 || 128 * N * r > SCRYPT_MAXMEM) {
    throw new BackupError('KEYD_ERR_BACKUP_MALFORMED', 'the bundle\'s scrypt parameters are out of range')
  }
  return scryptSync(passphrase, Buffer.from(wrap.salt, 'base64'), 32, { N, r, p, maxmem: SCRYPT_MAXMEM })
}

/** Encrypts `contents` (the JSON document of every key) into a bundle under `backupKey`. */
export function sealBundle (contents: Uint8Array, backupKey: Uint8Array, wrap: BundleWrap, now = new Date()): Buffer {
  const iv = randomBytes(12)
  const header: BundleHeader = {
    format: 'keyedge-backup',
    version: BUNDLE_VERSION,
    createdAt: now.toISOString(),
    cipher: 'aes-256-gcm',
    iv: iv.toString('base64'),
    ctLength: contents.length,
    keyCheck: derive(backupKey, 'key check', 16).toString('base64'),
    wrap
  }
  const headerBytes = Buffer.from(JSON.stringify(header))
  const prefix = Buffer.alloc(PREFIX)
  BUNDLE_MAGIC.copy(prefix, 0)
  prefix.writeUInt16BE(BUNDLE_VERSION, 8)
  prefix.writeUInt32BE(headerBytes.length, 10)
  const aad = Buffer.concat([prefix, headerBytes])
  const encKey = derive(backupKey, 'encrypt', 32)
  const c = createCipheriv('aes-256-gcm', encKey, iv)
  encKey.fill(0)
  c.setAAD(aad)
  const ct = Buffer.concat([c.update(contents), c.final()])
  return Buffer.concat([aad, ct, c.getAuthTag()])
}

/**
 * Splits a bundle into its header and ciphertext without decrypting.
 * @throws BackupError KEYD_ERR_BACKUP_TRUNCATED (ends early), KEYD_ERR_BACKUP_MALFORMED (not a bundle, other version)
 */
export function parseBundle (bytes: Uint8Array): ParsedBundle {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const magicSeen = b.subarray(0, Math.min(b.length, BUNDLE_MAGIC.length))
  if (!magicSeen.equals(BUNDLE_MAGIC.subarray(0, magicSeen.length))) throw new BackupError('KEYD_ERR_BACKUP_MALFORMED', 'not a keyedge backup bundle (bad magic)')
  if (b.length < PREFIX) throw new BackupError('KEYD_ERR_BACKUP_TRUNCATED', `the bundle is truncated: ${b.length} bytes, shorter than its fixed header`)
  const version = b.readUInt16BE(8)
  if (version !== BUNDLE_VERSION) throw new BackupError('KEYD_ERR_BACKUP_MALFORMED', `backup bundle format version ${version} is not supported; this keyd reads ${BUNDLE_VERSION}`)
  const headerLength = b.readUInt32BE(10)
  if (headerLength > 64 * 1024) throw new BackupError('KEYD_ERR_BACKUP_MALFORMED', 'the bundle header is over 64 KiB')
  if (b.length < PREFIX + headerLength) throw new BackupError('KEYD_ERR_BACKUP_TRUNCATED', 'the bundle is truncated inside its header')
  let header: BundleHeader
  try {
    header = JSON.parse(b.subarray(PREFIX, PREFIX + headerLength).toString('utf8')) as BundleHeader
  } catch {
    throw new BackupError('KEYD_ERR_BACKUP_MALFORMED', 'the bundle header is not valid JSON')
  }
  checkHeader(header)
  const want = PREFIX + headerLength + header.ctLength + TAG_BYTES
  if (b.length < want) throw new BackupError('KEYD_ERR_BACKUP_TRUNCATED', `the bundle is truncated: ${b.length} of ${want} bytes`)
  if (b.length > want) throw new BackupError('KEYD_ERR_BACKUP_MALFORMED', `the bundle has ${b.length - want} bytes after its end`)
  const ctStart = PREFIX + headerLength
  return {
    header,
    aad: Buffer.from(b.subarray(0, ctStart)),
    ct: Buffer.from(b.subarray(ctStart, ctStart + header.ctLength)),
    tag: Buffer.from(b.subarray(ctStart + header.ctLength))
  }
}

function checkHeader (h: BundleHeader): void {
  const bad = (field: string): never => { throw new BackupError('KEYD_ERR_BACKUP_MALFORMED', `the bundle header field ${field} is missing or invalid`) }
  if (typeof h !== 'object' || h === null || h.format !== 'keyedge-backup') bad('format')
  if (h.version !== BUNDLE_VERSION) bad('version')
  if (h.cipher !== 'aes-256-gcm') bad('cipher')
  if (typeof h.iv !== 'string' || Buffer.from(h.iv, 'base64').length !== 12) bad('iv')
  if (!Number.isSafeInteger(h.ctLength) || h.ctLength < 0) bad('ctLength')
  if (typeof h.keyCheck !== 'string' || Buffer.from(h.keyCheck, 'base64').length !== 16) bad('keyCheck')
  const w = h.wrap
  if (w?.kind === 'passphrase') {
    if (w.kdf !== 'scrypt' || typeof w.salt !== 'string' || Buffer.from(w.salt, 'base64').length < 16) bad('wrap')
  } else if (w?.kind === 'shamir') {
    if (!Number.isInteger(w.threshold) || !Number.isInteger(w.shares) || w.threshold < 2 || w.shares < w.threshold || w.shares > 255) bad('wrap')
  } else {
    bad('wrap.kind')
  }
}

/** Whether `backupKey` is the key this bundle was sealed under (constant time). */
export function keyMatches (parsed: ParsedBundle, backupKey: Uint8Array): boolean {
  return timingSafeEqual(derive(backupKey, 'key check', 16), Buffer.from(parsed.header.keyCheck, 'base64'))
}

/**
 * Decrypts the bundle's contents; the caller has checked the key with `keyMatches`.
 * @throws BackupError KEYD_ERR_BACKUP_TAMPERED if GCM authentication fails (edited header or body)
 */
export function openBundle (parsed: ParsedBundle, backupKey: Uint8Array): Buffer {
  const encKey = derive(backupKey, 'encrypt', 32)
  const d = createDecipheriv('aes-256-gcm', encKey, Buffer.from(parsed.header.iv, 'base64'))
  encKey.fill(0)
  d.setAAD(parsed.aad)
  d.setAuthTag(parsed.tag)
  const out = d.update(parsed.ct)
  try {
    d.final()
  } catch {
    out.fill(0)
    throw new BackupError('KEYD_ERR_BACKUP_TAMPERED', 'the bundle failed authentication (AES-GCM): it was modified after it was written')
  }
  return out
}
