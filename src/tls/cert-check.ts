// Checking a certificate entry without building its TLS context (about 20–40 µs an entry, a
// context costs 1–3 ms and ~50 KB): every file read once; every certificate of a file read by the
// strict DER reader (x509-der.ts), or by OpenSSL when that reader refuses it; the leaf not expired;
// each key loaded once per load however many entries share it (a key reference through the keyd
// bridge, which fetches its public key from keyd then); each pair matched (OpenSSL's check for the
// first certificate of each key, a byte comparison of the public key after). What only a context
// build can refuse (a key too small or a signature algorithm too weak for OpenSSL's security level)
// is tried by building one context per distinct kind of pair — key type and size, signature
// algorithms — and dropping it: a few builds per load, not one per entry. The checked bytes go to
// the spool, from which the context is built later (cert-spool.ts).

import { createHash, X509Certificate, type KeyObject } from 'node:crypto'
import { closeSync, fstatSync, openSync, readFileSync, readSync, statSync, type Stats } from 'node:fs'
import type { Logger } from 'pino'
import type { CertificateConfig } from '../config/types.js'
import { errorMessage } from '../../lib/errors.js'
import { CertLoadError, KeyLoadError } from '../errors.js'
import type { CertSpool, SpoolRef } from './cert-spool.js'
import { checkPair, contextOptions, parseCertificate, parseKey, readFailure, safeReason, signatureOf, tryContext, type ContextTls, type KeyCustody } from './secure-context.js'
import { pemCertificateBlocks, readCertificateDer, type CertificateFields } from './x509-der.js'

const BEGIN_CERTIFICATE = '-----BEGIN CERTIFICATE-----'

/**
 * What identifies a file's version without reading it: a 53-bit hash of its device, inode, size,
 * mtime and ctime (a number, not a string: at 100,000 entries a string costs ~20 MB of heap).
 */
export type FileStamp = number

/** Two 32-bit multiply-xorshift hashes over the stat fields (each up to 2^53), as one 53-bit number. */
export function stampOf (st: Stats): FileStamp {
  let a = 0x811c9dc5
  let b = 0x01000193
  for (const v of [st.dev, st.ino, st.size, Math.round(st.mtimeMs * 1000), Math.round(st.ctimeMs * 1000)]) {
    const lo = v >>> 0
    const hi = Math.floor(v / 0x1_0000_0000) >>> 0
    a = Math.imul(a ^ lo, 0x9e3779b1); a ^= a >>> 15; a = Math.imul(a ^ hi, 0x85ebca6b); a ^= a >>> 13
    b = Math.imul(b ^ hi, 0xc2b2ae35); b ^= b >>> 16; b = Math.imul(b ^ lo, 0x27d4eb2f); b ^= b >>> 15
  }
  return (a >>> 0) * 0x20_0000 + (b >>> 11)
}

/** One checked cert/key pair: where its bytes are and what the files were when read. */
export interface CheckedPair {
  readonly certFile: string
  readonly keyFile: string
  readonly custody: KeyCustody
  /** The certificate chain's PEM, in the spool (inline, not a SpoolRef: one object less per entry). */
  certOffset: number
  certLength: number
  /** A key reference's PEM in the spool, or (custody `in-process`) the private key PEM itself: never spooled. */
  readonly key: SpoolRef | string
  certStamp: FileStamp
  keyStamp: FileStamp
}

/** A checked certificate entry. A new one (new `id`) for every version of its files. */
export interface CheckedEntry {
  readonly id: number
  readonly name: string
  readonly pairs: readonly CheckedPair[]
  /** The earliest notAfter of its leaves, epoch ms. */
  readonly notAfter: number
}

interface FileRead { bytes: Buffer, stamp: FileStamp }

/** A file's bytes and stamp, from one open (fstat of the opened file: what was read is what is stamped). */
export function readStamped (file: string): FileRead {
  const fd = openSync(file, 'r')
  try {
    const st = fstatSync(fd)
    if (st.isDirectory()) throw Object.assign(new Error(`${file} is a directory`), { code: 'EISDIR' })
    // One byte more than its size: a file that grew since fstat is read again whole.
    const bytes = Buffer.allocUnsafe(st.size + 1)
    const n = readSync(fd, bytes, 0, bytes.length, 0)
    return { bytes: n <= st.size ? bytes.subarray(0, n) : readFileSync(fd), stamp: stampOf(st) }
  } finally {
    closeSync(fd)
  }
}

/**
 * Reads `file` into `scratch` (grown when too small), with its stamp; returns the bytes as a view
 * of the scratch buffer, valid until the next read. Thousands of certificates read this way
 * allocate nothing per file.
 */
function readInto (file: string, scratch: { buffer: Buffer }): { bytes: Buffer, stamp: FileStamp } {
  const fd = openSync(file, 'r')
  try {
    const st = fstatSync(fd)
    if (st.isDirectory()) throw Object.assign(new Error(`${file} is a directory`), { code: 'EISDIR' })
    if (scratch.buffer.length <= st.size) scratch.buffer = Buffer.allocUnsafe(Math.max(st.size + 1, 2 * scratch.buffer.length))
    const n = readSync(fd, scratch.buffer, 0, scratch.buffer.length, 0)
    // One byte more than its size: a file that grew since fstat is read again whole.
    const bytes = n <= st.size ? scratch.buffer.subarray(0, n) : readFileSync(fd)
    return { bytes, stamp: stampOf(st) }
  } finally {
    closeSync(fd)
  }
}

/**
 * The fields of a DER certificate as OpenSSL reads it (for what the strict reader refuses).
 * @throws CertLoadError (EDGE_ERR_CERT_LOAD) when OpenSSL refuses it too.
 */
function opensslFields (file: string, der: Buffer): CertificateFields {
  let x509: X509Certificate
  try {
    x509 = new X509Certificate(der)
  } catch (err) {
    throw new CertLoadError(file, `cannot parse the certificate (${safeReason(err)})`, { cause: err })
  }
  const spki = x509.publicKey.export({ type: 'spki', format: 'der' })
  return {
    notBefore: Date.parse(x509.validFrom),
    notAfter: Date.parse(x509.validTo),
    spki,
    signature: Buffer.from(`openssl:${signatureOf(x509)}`),
    // The whole public key stands for its type and size (one context tried per such certificate).
    keyAlgorithm: spki,
    keyBytes: spki.length
  }
}

let nextId = 1

/** Where the certificate chain of `pair` is in the spool. */
export const certRef = (pair: CheckedPair): SpoolRef => ({ offset: pair.certOffset, length: pair.certLength })

/** A key as a pass loaded it, shared by every pair that uses it. */
interface LoadedKey {
  key: KeyObject
  custody: KeyCustody
  pem: string
  spooled?: SpoolRef
  /** The SubjectPublicKeyInfo of a certificate OpenSSL found to match this key (the first one checked). */
  spki?: Buffer
}

/**
 * The state of one load (start or reload): key files read and keys loaded once however many
 * entries share them, the context kinds already tried, the pairs that bypass custody, and where
 * new bytes are spooled.
 */
export class CheckPass {
  readonly #spool: CertSpool
  readonly #log: Logger
  readonly #now: number
  readonly #tls: ContextTls
  readonly #keyByFile = new Map<string, { key: LoadedKey, stamp: FileStamp } | Error>()
  readonly #keys = new Map<string, LoadedKey>()
  readonly #stamps = new Map<string, FileStamp | undefined>()
  readonly #tried = new Set<string>()
  readonly #scratch = { buffer: Buffer.allocUnsafe(16 << 10) }
  /** Pairs checked in this pass whose key is a plain private key. */
  bypassed = 0
  bypassedExample = ''

  constructor (o: { spool: CertSpool, log: Logger, tls: ContextTls, now?: number }) {
    this.#spool = o.spool
    this.#log = o.log
    this.#tls = o.tls
    this.#now = o.now ?? Date.now()
  }

  get now (): number { return this.#now }

  /** The current stamp of `file` (undefined when it cannot be stat'ed), stat'ed once per pass. */
  stamp (file: string): FileStamp | undefined {
    if (this.#stamps.has(file)) return this.#stamps.get(file)
    let s: FileStamp | undefined
    try { s = stampOf(statSync(file)) } catch { s = undefined }
    this.#stamps.set(file, s)
    return s
  }

  /** The key of key file `file`: read and loaded once per pass, and once per distinct PEM however many files hold it. */
  #keyOf (file: string): { key: LoadedKey, stamp: FileStamp } {
    let found = this.#keyByFile.get(file)
    if (found === undefined) {
      try {
        const read = readStamped(file)
        const id = createHash('sha256').update(read.bytes).digest('base64')
        let key = this.#keys.get(id)
        if (key === undefined) {
          const pem = read.bytes.toString('utf8')
          // No asymmetricKeyDetails here: on Node 20 it aborts the process for a key the bridge provides.
          key = { ...parseKey(file, pem), pem }
          if (key.custody === 'keyd') key.spooled = this.#spool.append(read.bytes)
          this.#keys.set(id, key)
        }
        found = { key, stamp: read.stamp }
      } catch (err) {
        found = err instanceof KeyLoadError ? err : new KeyLoadError(file, readFailure(err), { cause: err })
      }
      this.#keyByFile.set(file, found)
    }
    if (found instanceof Error) throw found
    return found
  }

  /**
   * The leaf's fields, every CERTIFICATE block of `bytes` read: by the strict DER reader, or, for
   * a block it refuses, by OpenSSL (which then has the last word, so no certificate OpenSSL takes
   * is refused here, and none it refuses is taken).
   * @throws CertLoadError (EDGE_ERR_CERT_LOAD): no block, a block that does not parse, a leaf expired
   *   or with a validity that is not a time.
   */
  #certificate (file: string, bytes: Buffer): { leaf: CertificateFields, signatures: string } {
    if (!bytes.includes(BEGIN_CERTIFICATE)) throw new CertLoadError(file, 'holds no PEM CERTIFICATE block')
    let blocks: Buffer[]
    try {
      blocks = pemCertificateBlocks(bytes)
    } catch (err) {
      throw new CertLoadError(file, `cannot parse the certificate (${errorMessage(err)})`, { cause: err })
    }
    let leaf: CertificateFields | undefined
    let signatures = ''
    for (const der of blocks) {
      let fields: CertificateFields
      try {
        fields = readCertificateDer(der)
      } catch {
        fields = opensslFields(file, der)
      }
      leaf ??= fields
      signatures += fields.signature.toString('latin1')
    }
    if (leaf === undefined) throw new CertLoadError(file, 'holds no PEM CERTIFICATE block')
    if (Number.isNaN(leaf.notAfter) || Number.isNaN(leaf.notBefore)) throw new CertLoadError(file, 'cannot parse the certificate (its validity is not a time)')
    if (leaf.notAfter <= this.#now) {
      // OpenSSL's parse words the refusal as ever (with the subject).
      parseCertificate(file, bytes, this.#now, this.#log)
      throw new CertLoadError(file, `expired on ${new Date(leaf.notAfter).toISOString()}`)
    }
    if (leaf.notBefore > this.#now) this.#log.warn({ file, notBefore: new Date(leaf.notBefore).toISOString() }, 'certificate is not valid yet')
    return { leaf, signatures }
  }

  /**
   * Whether the certificate is the key's: its public key equals (byte for byte) that of a certificate
   * OpenSSL matched with the key before; the first certificate of each key, or one whose public key
   * is encoded differently, is matched by OpenSSL itself.
   * @throws CertKeyMismatchError (EDGE_ERR_CERT_KEY_MISMATCH)
   */
  #match (certFile: string, keyFile: string, bytes: Buffer, spki: Buffer, key: LoadedKey): void {
    if (key.spki?.equals(spki) === true) return
    checkPair(certFile, keyFile, parseCertificate(certFile, bytes, this.#now, this.#log).x509, key.key)
    key.spki ??= Buffer.from(spki)
  }

  /**
   * Checks every pair of `entry` and spools its bytes.
   * @throws CertLoadError, KeyLoadError, CertKeyMismatchError, SecureContextError (see secure-context.ts)
   */
  check (entry: Pick<CertificateConfig, 'name' | 'files'>): CheckedEntry {
    // Sized once: at 100,000 entries a pushed-to array's spare capacity alone is megabytes.
    const pairs = new Array<CheckedPair>(entry.files.length)
    let notAfter = Infinity
    for (let i = 0; i < entry.files.length; i++) {
      const files = entry.files[i]
      if (files === undefined) throw new Error(`certificate entry ${entry.name}: files[${i}] missing`)
      const { cert: certFile, key: keyFile } = files
      let certRead: { bytes: Buffer, stamp: FileStamp }
      try {
        certRead = readInto(certFile, this.#scratch)
      } catch (err) {
        throw new CertLoadError(certFile, readFailure(err), { cause: err })
      }
      const cert = this.#certificate(certFile, certRead.bytes)
      const { key, stamp: keyStamp } = this.#keyOf(keyFile)
      this.#match(certFile, keyFile, certRead.bytes, cert.leaf.spki, key)
      // What OpenSSL's security level looks at: key type and size, signature algorithms.
      const shape = `${key.custody}|${cert.leaf.keyAlgorithm.toString('latin1')}|${cert.leaf.keyBytes}|${cert.signatures}`
      if (!this.#tried.has(shape)) {
        tryContext(entry.name, contextOptions([certRead.bytes], [key.pem], this.#tls))
        this.#tried.add(shape)
      }
      if (key.custody === 'in-process') {
        this.bypassed++
        this.bypassedExample ||= keyFile
      }
      notAfter = Math.min(notAfter, cert.leaf.notAfter)
      const ref = this.#spool.append(certRead.bytes)
      pairs[i] = {
        certFile,
        keyFile,
        custody: key.custody,
        certOffset: ref.offset,
        certLength: ref.length,
        key: key.spooled ?? key.pem,
        certStamp: certRead.stamp,
        keyStamp
      }
    }
    return { id: nextId++, name: entry.name, pairs, notAfter }
  }
}
