// The live certificate store of a worker: every configured entry checked (cert-check.ts) and its
// bytes spooled, its server names indexed for SNI, and a TLS context built only when a ClientHello
// asks for it (context-cache.ts). Loads are incremental: an entry whose files did not change keeps
// its checked state (and its built context); only new and changed entries are read and checked.
// A load is prepared beside the served set and swapped in at once by commit(), or dropped.

import type { Logger } from 'pino'
import { errorCode, errorMessage } from '../../lib/errors.js'
import { Counter, Gauge, type Registry } from 'prom-client'
import type { TlsOptions } from 'node:tls'
import type { CertificateConfig, TlsConfig } from '../config/types.js'
import { CertLoadError } from '../errors.js'
import { certRef, CheckPass, readStamped, type CheckedEntry, type CheckedPair } from './cert-check.js'
import { CertSpool, type SpoolRef } from './cert-spool.js'
import { clientAuthServerOptions, loadClientAuth, sameClientAuth, type LoadedClientAuth } from './client-auth.js'
import { collectGarbage } from './heap.js'
import { contextOptions, parseCertificate, warnCustodyBypassed, type ContextTls } from './secure-context.js'
import { buildSniIndex, selectCertificate, type SniIndex } from './sni.js'
import { fastCounter, type CounterCell, type FastCounter } from '../proxy/request-metrics.js'

function metric<T> (registry: Registry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make()
}

/** The outcome of one entry in a load; `error` never holds key material. */
export interface EntryResult { name: string, ok: boolean, code?: string, error?: string }

/** What a commit changed, for the context cache. */
export interface StoreChange {
  /** Entries no longer served as they were (changed or removed): their contexts must go. */
  dropped: readonly number[]
  /** The context settings changed: every built context must go. */
  tlsChanged: boolean
}

/** A load prepared beside the served set. */
export interface PreparedLoad {
  /** True when every entry is served by the load. */
  readonly ok: boolean
  /** Entries read and checked by this load (new or changed) and every refused one. */
  readonly results: EntryResult[]
  /** Entries kept as they were (files unchanged). */
  readonly unchanged: number
  /** The first refusal, as thrown. */
  readonly error: Error | undefined
  /** Names of the entries this load (re)checked and that loaded. */
  readonly loaded: string[]
  /** Serves the load to new connections. @throws Error unless `ok`. */
  commit: () => void
  /** Drops the load (its spooled bytes become garbage). */
  abort: () => void
}

/** Options of `prepare`. */
export interface PrepareOptions {
  /** Files known to have changed (from a file watcher): only the entries naming them are looked at; the others are kept without a stat. Undefined: stat every file. */
  changedFiles?: ReadonlySet<string>
  now?: number
}

/** `entry`'s files are the same paths, in the same order, as `checked`'s. */
function sameFiles (entry: CertificateConfig, checked: CheckedEntry): boolean {
  return entry.files.length === checked.pairs.length &&
    entry.files.every((f, i) => f.cert === checked.pairs[i]?.certFile && f.key === checked.pairs[i]?.keyFile)
}

const sameContextTls = (a: ContextTls, b: ContextTls): boolean =>
  a.minVersion === b.minVersion && a.maxVersion === b.maxVersion && a.ciphers === b.ciphers && a.groups === b.groups && a.sessionTimeoutSeconds === b.sessionTimeoutSeconds

/** Up to this many entries read by a load get a `certificate loaded` line each; beyond, the summary line only. */
const LOGGED_ENTRIES = 100
/** A load that checked at least this many entries ends with a full garbage collection (heap.ts). */
const COLLECT_AFTER_ENTRIES = 5000
/** Rewrite the spool once garbage outweighs live bytes by this much. */
const SPOOL_SLACK_BYTES = 16 << 20

/** What the store counts over its entries: pairs bypassing custody (and one of their key files), certificate bytes spooled. */
interface Tally { bypassed: number, bypassedExample: string, certBytes: number }

const emptyTally = (): Tally => ({ bypassed: 0, bypassedExample: '', certBytes: 0 })

function add (t: Tally, entries: Iterable<CheckedEntry>): Tally {
  for (const e of entries) {
    for (const p of e.pairs) {
      t.certBytes += p.certLength
      if (p.custody === 'in-process') { t.bypassed++; t.bypassedExample ||= p.keyFile }
    }
  }
  return t
}

function subtract (t: Tally, entries: Iterable<CheckedEntry>): Tally {
  for (const e of entries) {
    for (const p of e.pairs) {
      t.certBytes -= p.certLength
      if (p.custody === 'in-process') t.bypassed--
    }
  }
  return t
}

/** Checked certificate entries by name, with SNI selection over them. */
export class CertStore {
  #entries = new Map<string, CheckedEntry>()
  #list: readonly CertificateConfig[] = []
  #index: SniIndex = buildSniIndex([])
  #tls: TlsConfig
  #spool: CertSpool
  /** Counts over the served entries, kept up to date at each commit. */
  #tally: Tally = emptyTally()
  readonly #log: Logger
  /** Counted in plain numbers, one cell per `match` value (one selection per connection). */
  readonly #selections: FastCounter
  readonly #selectionCells = new Map<string, CounterCell>()
  readonly #refused: Counter<string>
  readonly #listeners: Array<(change: StoreChange) => void> = []
  /** The client-certificate settings (CA bundle read and checked) of the entries that have them. */
  readonly #clientAuth = new WeakMap<CheckedEntry, LoadedClientAuth>()

  constructor (opts: { tls: TlsConfig, log: Logger, registry: Registry }) {
    const { registry } = opts
    this.#tls = opts.tls
    this.#log = opts.log
    this.#spool = new CertSpool({
      onFallback: reason => opts.log.warn({ reason },
        'checked certificates are kept in memory, not in a temporary file (~1 KB per certificate entry): give the proxy a writable TMPDIR for many certificates')
    })
    this.#selections = fastCounter(registry, { name: 'edge_tls_sni_selections_total', help: 'Certificate selections by SNI, by how the certificate was chosen', labelNames: ['match'] })
    this.#refused = metric(registry, 'edge_tls_sni_refused_total', () => new Counter({
      name: 'edge_tls_sni_refused_total', help: 'Handshakes refused because strict SNI found no certificate for the name', registers: [registry]
    }))
    const gauge: Gauge<string> = metric(registry, 'edge_certificate_entries', () => new Gauge({
      name: 'edge_certificate_entries',
      help: 'Certificate entries served (checked and indexed; their TLS contexts are built on demand)',
      aggregator: 'max',
      registers: [registry],
      collect: () => { gauge.set(this.#entries.size) }
    }))
  }

  /** Hears every commit (the context cache drops what changed). */
  onCommit (listener: (change: StoreChange) => void): void {
    this.#listeners.push(listener)
  }

  /** The TLS settings served. */
  get tls (): TlsConfig { return this.#tls }

  /** Number of entries served. */
  get size (): number { return this.#entries.size }

  /**
   * Loads `entries` and serves them at once.
   * @throws the first refusal: CertLoadError (EDGE_ERR_CERT_LOAD), KeyLoadError (EDGE_ERR_KEY_LOAD),
   *   CertKeyMismatchError (EDGE_ERR_CERT_KEY_MISMATCH), SecureContextError (EDGE_ERR_SECURE_CONTEXT).
   */
  load (entries: readonly CertificateConfig[], tls: TlsConfig = this.#tls): void {
    const plan = this.prepare(entries, tls)
    if (plan.error !== undefined) {
      plan.abort()
      throw plan.error
    }
    plan.commit()
  }

  /**
   * Prepares `entries` (undefined: the entries served now, with their files looked at again) and
   * `tls` beside the served set. Entries whose files did not change keep their checked state.
   */
  prepare (entries: readonly CertificateConfig[] | undefined, tls: TlsConfig = this.#tls, opts: PrepareOptions = {}): PreparedLoad {
    const list = entries ?? this.#list
    const pass = new CheckPass({ spool: this.#spool, log: this.#log, tls, ...(opts.now !== undefined ? { now: opts.now } : {}) })
    const results: EntryResult[] = []
    const loaded: string[] = []
    let unchanged = 0
    let error: Error | undefined
    const refuse = (name: string, err: unknown): void => {
      error ??= err instanceof Error ? err : new Error(errorMessage(err))
      results.push({ name, ok: false, code: errorCode(err) ?? 'EDGE_ERR_CERT_LOAD', error: errorMessage(err) })
    }
    const check = (entry: Pick<CertificateConfig, 'name' | 'files' | 'clientAuth'>): CheckedEntry | undefined => {
      try {
        const clientAuth = entry.clientAuth === undefined ? undefined : loadClientAuth(entry.clientAuth)
        const checked = pass.check(entry)
        if (clientAuth !== undefined) this.#clientAuth.set(checked, clientAuth)
        loaded.push(entry.name)
        results.push({ name: entry.name, ok: true })
        return checked
      } catch (err) {
        refuse(entry.name, err)
        return undefined
      }
    }
    let next: Map<string, CheckedEntry>
    let replaced: CheckedEntry[] | undefined
    if (entries === undefined && opts.changedFiles !== undefined) {
      // The served list, a watcher's changed files: only the entries naming them are read again.
      const changed = opts.changedFiles
      next = new Map(this.#entries)
      replaced = []
      for (const old of this.#entries.values()) {
        if (old.notAfter <= pass.now) { refuse(old.name, this.#expired(old)); continue }
        const clientAuth = this.#clientAuth.get(old)?.config
        if (!old.pairs.some(p => changed.has(p.certFile) || changed.has(p.keyFile)) && (clientAuth === undefined || !changed.has(clientAuth.caFile))) { unchanged++; continue }
        const checked = check({ name: old.name, files: old.pairs.map(p => ({ cert: p.certFile, key: p.keyFile })), ...(clientAuth !== undefined ? { clientAuth } : {}) })
        if (checked !== undefined) { next.set(old.name, checked); replaced.push(old) }
      }
    } else {
      next = new Map()
      for (const entry of list) {
        const old = this.#entries.get(entry.name)
        if (old !== undefined && sameFiles(entry, old) && this.#unchanged(old, pass, opts.changedFiles) && this.#sameClientAuth(entry, old, pass, opts.changedFiles)) {
          if (old.notAfter <= pass.now) { refuse(entry.name, this.#expired(old)); continue }
          next.set(entry.name, old)
          unchanged++
          continue
        }
        const checked = check(entry)
        if (checked !== undefined) next.set(entry.name, checked)
      }
    }
    const ok = error === undefined
    let done = false
    return {
      ok,
      results,
      unchanged,
      error,
      loaded,
      commit: () => {
        if (error !== undefined) throw error
        if (done) return
        done = true
        this.#commit({ list, next, tls, loaded, pass, ...(replaced !== undefined ? { replaced } : {}) })
      },
      abort: () => { done = true }
    }
  }

  /**
   * Whether `old`'s files still hold what was checked: not named by `changedFiles` when given; else
   * the same stamps, or (a stamp changed) the same bytes — the new stamps are then kept.
   */
  #unchanged (old: CheckedEntry, pass: CheckPass, changedFiles: ReadonlySet<string> | undefined): boolean {
    if (changedFiles !== undefined) return !old.pairs.some(p => changedFiles.has(p.certFile) || changedFiles.has(p.keyFile))
    for (const pair of old.pairs) {
      if (pass.stamp(pair.certFile) !== pair.certStamp && !this.#sameBytes(pair, 'cert')) return false
      if (pass.stamp(pair.keyFile) !== pair.keyStamp && !this.#sameBytes(pair, 'key')) return false
    }
    return true
  }

  /** Whether `old`'s client-certificate settings are `entry`'s, its CA bundle not changed (by stamp, or named by `changedFiles`). */
  #sameClientAuth (entry: CertificateConfig, old: CheckedEntry, pass: CheckPass, changedFiles: ReadonlySet<string> | undefined): boolean {
    const loaded = this.#clientAuth.get(old)
    if (loaded !== undefined && changedFiles?.has(loaded.config.caFile) === true) return false
    return sameClientAuth(entry.clientAuth, loaded, file => pass.stamp(file))
  }

  #sameBytes (pair: CheckedPair, which: 'cert' | 'key'): boolean {
    let now
    try {
      now = readStamped(which === 'cert' ? pair.certFile : pair.keyFile)
    } catch {
      return false
    }
    const held = which === 'cert' ? certRef(pair) : pair.key
    const same = typeof held === 'string' ? now.bytes.equals(Buffer.from(held)) : now.bytes.equals(this.#spool.read(held))
    if (same) {
      if (which === 'cert') pair.certStamp = now.stamp
      else pair.keyStamp = now.stamp
    }
    return same
  }

  #expired (entry: CheckedEntry): Error {
    const pair = entry.pairs[0]
    if (pair === undefined) return new Error(`certificate entry ${entry.name} has no certificate`)
    try {
      parseCertificate(pair.certFile, this.#spool.read(certRef(pair)), Date.now(), this.#log)
    } catch (err) {
      if (err instanceof Error) return err
    }
    return new CertLoadError(pair.certFile, `expired on ${new Date(entry.notAfter).toISOString()}`)
  }

  /**
   * Serves `next`. `replaced`: the only entries that changed (a watcher's reload of the served
   * list), so the tallies are adjusted for them instead of counted again over every entry.
   */
  #commit (o: { list: readonly CertificateConfig[], next: Map<string, CheckedEntry>, tls: TlsConfig, loaded: string[], pass: CheckPass, replaced?: CheckedEntry[] }): void {
    const { list, next, tls, loaded, pass, replaced } = o
    const fresh = loaded.flatMap(name => next.get(name) ?? [])
    let dropped: number[]
    if (replaced !== undefined) {
      dropped = replaced.map(e => e.id)
      this.#tally = subtract(add(this.#tally, fresh), replaced)
    } else {
      dropped = []
      for (const [name, old] of this.#entries) if (next.get(name) !== old) dropped.push(old.id)
      this.#tally = add(emptyTally(), next.values())
    }
    const tlsChanged = !sameContextTls(tls, this.#tls)
    this.#entries = next
    // The same list (a reload of the served entries) keeps its index.
    if (list !== this.#list) this.#index = buildSniIndex(list)
    this.#list = list
    this.#tls = tls
    this.#spool.flush()
    // Once per load, counting every served pair that bypasses custody (checked now or kept).
    warnCustodyBypassed(this.#log, this.#tally.bypassed, pass.bypassedExample || this.#tally.bypassedExample)
    // One line per entry a load read when they are few; a summary for all of them in any case.
    for (const entry of fresh.length <= LOGGED_ENTRIES ? fresh : []) {
      for (const pair of entry.pairs) {
        this.#log.info({ certificate: entry.name, certFile: pair.certFile, keyFile: pair.keyFile, custody: pair.custody, notAfter: new Date(entry.notAfter).toISOString() }, 'certificate loaded')
      }
    }
    this.#log.info({ entries: next.size, loaded: loaded.length, unchanged: next.size - loaded.length, dropped: dropped.length }, 'certificates loaded')
    this.#compactIfWasteful()
    for (const listener of this.#listeners) listener({ dropped, tlsChanged })
    if (loaded.length >= COLLECT_AFTER_ENTRIES) collectGarbage()
  }

  /** Rewrites the spool with only the served bytes when most of it is garbage (changed entries leave theirs behind). */
  #compactIfWasteful (): void {
    // The tally counts certificate bytes only (key references are few and small).
    const live = this.#tally.certBytes
    if (this.#spool.size - live < Math.max(live, SPOOL_SLACK_BYTES)) return
    const keys = new Set<SpoolRef>()
    for (const entry of this.#entries.values()) {
      for (const p of entry.pairs) if (typeof p.key !== 'string') keys.add(p.key)
    }
    const pairs = [...this.#entries.values()].flatMap(e => e.pairs)
    const shared = [...keys]
    const { spool, refs } = this.#spool.compact([...pairs.map(certRef), ...shared])
    pairs.forEach((p, i) => {
      const r = refs[i]
      if (r === undefined) throw new Error('spool compaction lost a reference')
      p.certOffset = r.offset
      p.certLength = r.length
    })
    shared.forEach((k, i) => { Object.assign(k, refs[pairs.length + i]) })
    this.#spool = spool
  }

  /** The served entry named `name`. */
  get (name: string): CheckedEntry | undefined {
    return this.#entries.get(name)
  }

  /** The entry served to clients that send no server name. */
  defaultEntry (): CheckedEntry | undefined {
    return this.#entries.get(this.#tls.defaultCertificate)
  }

  /**
   * The entry for a ClientHello's server name (undefined: no SNI sent → the default entry), or
   * undefined when the handshake must be refused (strict mode); counts the outcome.
   */
  #selected (match: string): void {
    let cell = this.#selectionCells.get(match)
    if (cell === undefined) this.#selectionCells.set(match, cell = this.#selections.cell({ match }))
    cell.n++
  }

  select (servername: string | undefined): CheckedEntry | undefined {
    if (servername === undefined || servername === '') {
      this.#selected('no_sni')
      return this.defaultEntry()
    }
    const selection = selectCertificate(this.#index, servername, {
      strict: this.#tls.strictSni,
      defaultCertificate: this.#tls.defaultCertificate
    })
    this.#selected(selection.match)
    const entry = selection.certificate === undefined ? undefined : this.#entries.get(selection.certificate)
    if (entry === undefined) this.#refused.inc()
    return entry
  }

  /**
   * The options of `entry`'s TLS server: its context from the checked bytes and the served TLS
   * settings, and, for an entry with client certificates, what asks for them (client-auth.ts).
   */
  contextOptions (entry: CheckedEntry): TlsOptions {
    const options: TlsOptions = contextOptions(
      entry.pairs.map(p => this.#spool.read(certRef(p))),
      entry.pairs.map(p => typeof p.key === 'string' ? p.key : this.#spool.read(p.key)),
      this.#tls
    )
    const clientAuth = this.#clientAuth.get(entry)
    return clientAuth === undefined ? options : { ...options, ...clientAuthServerOptions(entry.name, clientAuth) }
  }

  /** `entry`'s client-certificate settings, if it has any. */
  clientAuth (entry: CheckedEntry): LoadedClientAuth | undefined {
    return this.#clientAuth.get(entry)
  }

  /** The certificate chain PEM and (for a key reference) the key PEM of each pair of `entry`, for admin views; never a private key. */
  pems (entry: CheckedEntry): Array<{ pair: CheckedPair, cert: Buffer, keyReference: Buffer | null }> {
    return entry.pairs.map(pair => ({ pair, cert: this.#spool.read(certRef(pair)), keyReference: typeof pair.key === 'string' ? null : this.#spool.read(pair.key) }))
  }

  /** Every served entry, in config order. */
  * entries (): IterableIterator<CheckedEntry> {
    for (const e of this.#list) {
      const entry = this.#entries.get(e.name)
      if (entry !== undefined) yield entry
    }
  }

  close (): void {
    this.#spool.close()
  }
}
