// keyd's side of BACKUP_EXPORT and BACKUP_RESTORE: the bundle is built and opened inside keyd, moves over the
// socket only as ciphertext in chunks, and a restore re-seals every key under this keyd's own master key.
import { createHash, randomBytes } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import type { Keystore } from '../keystore/keystore.js'
import { split, combine, encodeShare, decodeShare, type Share } from '../keystore/shamir.js'
import { BackupError } from '../errors.js'
import { errorMessage } from '../../lib/errors.js'
import { KeyPolicy } from '../policy/key-policy.js'
import { sealBundle, parseBundle, openBundle, keyMatches, passphraseWrap, passphraseKey, type BundleWrap } from './bundle.js'
import { stageAndCommit, keyFileNames, type RestorePaths } from './restore-stage.js'

/** What a keystore offers to be backed up and restored (FileKeystore; a PKCS#11 token keeps keys non-extractable). */
export interface BackupCapable {
  backupKeyFiles (): Array<Record<string, unknown>>
  sealBackupKeyFile (raw: unknown): { name: string, text: string }
  loadRestored (): string[]
}

export const BACKUP_DEFAULTS = {
  /** bytes of bundle per frame: well under the 1 MiB frame limit */
  chunkBytes: 512 * 1024,
  maxBundleBytes: 64 * 1024 * 1024,
  /** an unfinished export or restore transfer is dropped after this long */
  transferTtlMs: 10 * 60 * 1000,
  maxTransfers: 4
}

export interface BackupServiceOptions extends Partial<typeof BACKUP_DEFAULTS> {
  /** Called with the restored keyd/policy.json so it applies at once, without a restart. */
  applyPolicy?: (policy: KeyPolicy) => void
}

interface Transfer { kind: 'export' | 'restore', bytes: Buffer, received: number, expires: number }

const CONTENTS_FORMAT = 'keyedge-backup-contents-v1'

function bad (message: string): BackupError {
  return new BackupError('KEYD_ERR_BACKUP_BAD_REQUEST', message)
}

function backupCapable (k: Keystore): Keystore & BackupCapable {
  const c = k as Partial<BackupCapable>
  if (typeof c.backupKeyFiles !== 'function' || typeof c.sealBackupKeyFile !== 'function' || typeof c.loadRestored !== 'function') {
    throw new BackupError('KEYD_ERR_NOT_SUPPORTED', `the ${k.kind} keystore does not support backup and restore (its keys are not extractable)`)
  }
  return k as Keystore & BackupCapable
}

function countVersions (keys: Array<Record<string, unknown>>): number {
  return keys.reduce((n, k) => n + (Array.isArray(k.versions) ? k.versions.length : 0), 0)
}

export class BackupService {
  readonly #paths: RestorePaths
  readonly #opts: typeof BACKUP_DEFAULTS
  readonly #applyPolicy: ((p: KeyPolicy) => void) | undefined
  readonly #transfers = new Map<string, Transfer>()

  constructor (paths: RestorePaths, opts: BackupServiceOptions = {}) {
    const { applyPolicy, ...rest } = opts
    this.#paths = paths
    this.#opts = { ...BACKUP_DEFAULTS, ...rest }
    this.#applyPolicy = applyPolicy
  }

  /**
   * Answers one BACKUP_EXPORT request: its JSON parameters, and the answer's JSON and bundle chunk;
   * `last` when this chunk ends the bundle (the export is complete, for the backup metrics).
   * @throws BackupError with a KEYD_ERR_ code whose name is the wire error code
   */
  exportChunk (keystore: Keystore, request: { json: string }): { json: string, payload: Buffer, last: boolean } {
    const req = this.#request('export', request.json)
    const { answer, chunk } = req.transfer === undefined ? this.#startExport(backupCapable(keystore), req) : this.#exportChunk(req)
    const { size, offset } = answer as { size: number, offset: number }
    return { json: JSON.stringify(answer), payload: chunk, last: offset + chunk.length >= size }
  }

  /**
   * Answers one BACKUP_RESTORE request: its JSON parameters and, for an upload, the bundle chunk;
   * `committed` when it was the commit that restored the keys (not a chunk upload).
   * @throws BackupError with a KEYD_ERR_ code whose name is the wire error code
   */
  restoreChunk (keystore: Keystore, request: { json: string, payload?: Buffer }): { json: string, committed: boolean } {
    const req = this.#request('restore', request.json)
    const committed = req.commit === true
    const answer = committed ? this.#commitRestore(backupCapable(keystore), req) : this.#receive(keystore, req, request.payload)
    return { json: JSON.stringify(answer), committed }
  }

  /** The request's JSON object, after dropping expired transfers. @throws BackupError BACKUP_BAD_REQUEST */
  #request (op: 'export' | 'restore', json: string): Record<string, unknown> {
    let req: unknown
    try {
      req = JSON.parse(json)
    } catch {
      req = undefined
    }
    if (typeof req !== 'object' || req === null || Array.isArray(req)) throw bad(`BACKUP_${op.toUpperCase()} needs a JSON item holding an object`)
    this.#purge()
    return req as Record<string, unknown>
  }

  #purge (): void {
    const now = Date.now()
    for (const [id, t] of this.#transfers) if (t.expires < now) { t.bytes.fill(0); this.#transfers.delete(id) }
  }

  #newTransfer (kind: Transfer['kind'], bytes: Buffer): string {
    if (this.#transfers.size >= this.#opts.maxTransfers) throw bad(`${this.#opts.maxTransfers} backup transfers are already open; finish them or wait ${this.#opts.transferTtlMs / 1000} s`)
    const id = randomBytes(16).toString('hex')
    this.#transfers.set(id, { kind, bytes, received: 0, expires: Date.now() + this.#opts.transferTtlMs })
    return id
  }

  #transfer (kind: Transfer['kind'], id: unknown): Transfer & { id: string } {
    const t = typeof id === 'string' ? this.#transfers.get(id) : undefined
    if (t === undefined || t.kind !== kind) throw bad(`unknown or expired ${kind} transfer`)
    return { ...t, id: id as string }
  }

  #startExport (ks: Keystore & BackupCapable, req: Record<string, unknown>): { answer: Record<string, unknown>, chunk: Buffer } {
    let wrap: BundleWrap
    let key: Buffer
    let shares: string[] | undefined
    if (req.wrap === 'passphrase') {
      if (typeof req.passphrase !== 'string') throw bad('a passphrase export needs "passphrase"')
      ;({ wrap, key } = passphraseWrap(req.passphrase))
    } else if (req.wrap === 'shamir') {
      const n = req.shares
      const m = req.threshold
      if (!Number.isInteger(n) || !Number.isInteger(m) || (m as number) < 2 || (n as number) < (m as number) || (n as number) > 255) throw bad('a Shamir export needs 2 <= threshold <= shares <= 255')
      key = randomBytes(32)
      const parts = split(key, n as number, m as number)
      shares = parts.map(encodeShare)
      for (const p of parts) p.y.fill(0)
      wrap = { kind: 'shamir', shares: n as number, threshold: m as number }
    } else {
      throw bad('"wrap" must be "passphrase" or "shamir"')
    }
    const keys = ks.backupKeyFiles()
    const policy = existsSync(this.#paths.policyFile) ? readFileSync(this.#paths.policyFile, 'utf8') : null
    // The opened keys exist only in this buffer (and transiently as JS strings) until sealBundle encrypts them.
    const contents = Buffer.from(JSON.stringify({ format: CONTENTS_FORMAT, createdAt: new Date().toISOString(), keys, policy }))
    const bundle = sealBundle(contents, key, wrap)
    contents.fill(0)
    key.fill(0)
    if (bundle.length > this.#opts.maxBundleBytes) throw bad(`the bundle would be ${bundle.length} bytes, over the ${this.#opts.maxBundleBytes}-byte limit`)
    const id = this.#newTransfer('export', bundle)
    const answer: Record<string, unknown> = {
      transfer: id, size: bundle.length, offset: 0, sha256: createHash('sha256').update(bundle).digest('hex'),
      keys: keys.length, versions: countVersions(keys), policy: policy !== null,
      // Key files that did not open at start are not in the bundle: the operator must hear of it.
      unreadable: (ks as { loadErrors?: unknown[] }).loadErrors?.length ?? 0
    }
    if (shares !== undefined) answer.shares = shares
    return { answer, chunk: this.#slice(id, 0) }
  }

  #exportChunk (req: Record<string, unknown>): { answer: Record<string, unknown>, chunk: Buffer } {
    const t = this.#transfer('export', req.transfer)
    const offset = req.offset
    if (!Number.isInteger(offset) || (offset as number) < 0 || (offset as number) >= t.bytes.length) throw bad(`offset must be 0..${t.bytes.length - 1}`)
    return { answer: { transfer: t.id, size: t.bytes.length, offset }, chunk: this.#slice(t.id, offset as number) }
  }

  /** One chunk of an export; the transfer is dropped once its last byte has been handed out. */
  #slice (id: string, offset: number): Buffer {
    const t = this.#transfers.get(id) as Transfer
    const chunk = Buffer.from(t.bytes.subarray(offset, offset + this.#opts.chunkBytes))
    if (offset + chunk.length >= t.bytes.length) this.#transfers.delete(id)
    return chunk
  }

  #requireEmpty (ks: Keystore): void {
    const n = Math.max(ks.list().length, keyFileNames(this.#paths.keysDir).length)
    if (n > 0) throw new BackupError('KEYD_ERR_RESTORE_NOT_EMPTY', `this keyd already holds ${n} key(s): restore only into an empty keyd`)
  }

  #receive (ks: Keystore, req: Record<string, unknown>, chunk: Uint8Array | undefined): Record<string, unknown> {
    let t: Transfer & { id: string }
    if (req.transfer === undefined) {
      this.#requireEmpty(ks)
      const size = req.size
      if (!Number.isInteger(size) || (size as number) < 0 || (size as number) > this.#opts.maxBundleBytes) throw bad(`"size" must be 0..${this.#opts.maxBundleBytes} bytes`)
      t = this.#transfer('restore', this.#newTransfer('restore', Buffer.alloc(size as number)))
    } else {
      t = this.#transfer('restore', req.transfer)
    }
    const data = chunk ?? new Uint8Array(0)
    if ((req.offset ?? 0) !== t.received) throw bad(`chunk out of order: expected offset ${t.received}`)
    if (t.received + data.length > t.bytes.length) throw bad(`chunk runs past the announced size of ${t.bytes.length} bytes`)
    t.bytes.set(data, t.received)
    const stored = this.#transfers.get(t.id) as Transfer
    stored.received = t.received + data.length
    return { transfer: t.id, received: stored.received, size: t.bytes.length }
  }

  #commitRestore (ks: Keystore & BackupCapable, req: Record<string, unknown>): Record<string, unknown> {
    const t = this.#transfer('restore', req.transfer)
    this.#transfers.delete(t.id)
    if (t.received !== t.bytes.length) throw bad(`the upload stopped at ${t.received} of ${t.bytes.length} bytes`)
    this.#requireEmpty(ks)
    const parsed = parseBundle(t.bytes)
    const key = this.#backupKey(parsed.header.wrap, req)
    if (!keyMatches(parsed, key)) {
      key.fill(0)
      throw parsed.header.wrap.kind === 'passphrase'
        ? new BackupError('KEYD_ERR_BACKUP_WRONG_PASSPHRASE', 'wrong passphrase for this bundle')
        : new BackupError('KEYD_ERR_BACKUP_BAD_SHARES', 'these shares do not rebuild this bundle\'s key (a wrong or foreign share)')
    }
    let contents: Buffer
    try { contents = openBundle(parsed, key) } finally { key.fill(0); t.bytes.fill(0) }
    let json: unknown
    try { json = JSON.parse(contents.toString('utf8')) } catch { json = undefined } finally { contents.fill(0) }
    const doc: { format?: unknown, keys?: unknown, policy?: unknown } = typeof json === 'object' && json !== null ? json : {}
    if (doc.format !== CONTENTS_FORMAT || !Array.isArray(doc.keys) || (doc.policy !== null && typeof doc.policy !== 'string')) {
      throw new BackupError('KEYD_ERR_BACKUP_MALFORMED', 'the bundle decrypted but its contents are not a keyedge backup')
    }
    const files = new Map<string, string>()
    for (const raw of doc.keys) {
      let sealed: { name: string, text: string }
      try { sealed = ks.sealBackupKeyFile(raw) } catch (err) { throw new BackupError('KEYD_ERR_BACKUP_MALFORMED', `the bundle holds a bad key entry: ${errorMessage(err)}`) }
      if (files.has(sealed.name)) throw new BackupError('KEYD_ERR_BACKUP_MALFORMED', `the bundle holds key ${sealed.name} twice`)
      files.set(sealed.name, sealed.text)
    }
    const keepPolicy = existsSync(this.#paths.policyFile)
    const policy = keepPolicy ? null : doc.policy
    // The staged policy.json must load before the commit: a restore never leaves a keyd that cannot start.
    stageAndCommit(this.#paths, files, policy, staged => {
      try { return new KeyPolicy(staged) } catch (err) { throw new BackupError('KEYD_ERR_BACKUP_MALFORMED', `the bundle's policy.json is invalid: ${errorMessage(err)}`) }
    })
    const added = ks.loadRestored()
    if (policy !== null) this.#applyPolicy?.(new KeyPolicy(this.#paths.policyFile))
    return {
      keys: added.length,
      versions: countVersions(doc.keys as Array<Record<string, unknown>>),
      policy: doc.policy === null ? 'none' : keepPolicy ? 'kept-existing' : 'restored'
    }
  }

  /** The backup key from the request's passphrase or shares. @throws BackupError BAD_SHARES, BAD_REQUEST */
  #backupKey (wrap: BundleWrap, req: Record<string, unknown>): Buffer {
    if (wrap.kind === 'passphrase') {
      if (typeof req.passphrase !== 'string') throw bad('this bundle is sealed by a passphrase: send "passphrase"')
      return passphraseKey(req.passphrase, wrap)
    }
    if (!Array.isArray(req.shares) || !req.shares.every(s => typeof s === 'string')) throw new BackupError('KEYD_ERR_BACKUP_BAD_SHARES', `this bundle is sealed by Shamir shares: send ${wrap.threshold} of them`)
    const distinct: Share[] = []
    for (const [i, text] of req.shares.entries()) {
      let s: Share
      try { s = decodeShare(text) } catch (err) { throw new BackupError('KEYD_ERR_BACKUP_BAD_SHARES', `share ${i + 1}: ${errorMessage(err)}`) }
      if (s.y.length !== 32) throw new BackupError('KEYD_ERR_BACKUP_BAD_SHARES', `share ${i + 1} is not a share of a backup key`)
      if (!distinct.some(d => d.x === s.x)) distinct.push(s)
    }
    if (distinct.length < wrap.threshold) throw new BackupError('KEYD_ERR_BACKUP_BAD_SHARES', `too few shares: this bundle needs ${wrap.threshold} distinct shares, got ${distinct.length}`)
    const key = combine(distinct)
    for (const s of distinct) s.y.fill(0)
    return key
  }
}
