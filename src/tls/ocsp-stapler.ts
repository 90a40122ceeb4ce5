// OCSP stapling (nginx `ssl_stapling` + `ssl_stapling_verify`, Caddy's default): for each certificate
// entry whose TLS context is built (context-cache.ts) and whose certificate names an OCSP responder
// and has its issuer next in the chain file, the worker fetches an OCSP response, verifies it
// (ocsp-verify.ts), keeps it in memory and hands it to clients that ask (status_request) through
// the TLS server's 'OCSPRequest' event.
//
// When: the fetch starts when the entry's context is built — at start for the default entry, on
// the first ClientHello for the others (that client gets no staple, as with nginx) — so an entry
// never used costs nothing, however many are configured. The response is refreshed at half its
// thisUpdate→nextUpdate window (jittered), retried with jittered exponential backoff on failure,
// served until its nextUpdate and never after. A `revoked` (or `unknown`) answer drops what was
// stapled. The state goes with the entry's contexts: evicted from the context cache or changed by
// a reload, it is dropped, and fetched again when the entry is next built.
//
// Cost: Node calls into JavaScript on every full handshake of a server that has an 'OCSPRequest'
// listener (the certificate callback), so the listener is attached only while there is a response
// to staple, and it does no more than read a field and the clock.

import type { Server as TlsServer } from 'node:tls'
import type { Logger } from 'pino'
import { errorMessage } from '../../lib/errors.js'
import { Counter, Gauge, type Registry } from 'prom-client'
import type { CertificateConfig } from '../config/types.js'
import type { CheckedEntry } from './cert-check.js'
import type { CertStore } from './cert-store.js'
import { obtainOcsp, ocspSubject, OcspFetchError, type OcspSubject } from './ocsp-request.js'
import { OcspResponseError, verifyOcspResponse } from './ocsp-verify.js'
import { fastCounter, type CounterCell } from '../proxy/request-metrics.js'

/** The stapling settings (`tls.ocspStapling`, `tls.ocspResponderTimeoutMs`). */
export interface StaplingSettings { ocspStapling: boolean, ocspResponderTimeoutMs: number }

/** Never refresh sooner than this after a fetch (a responder with a tiny window is not hammered). */
const MIN_REFRESH_MS = 10_000
/** The first retry after a failure; doubled on each further one, up to MAX_RETRY_MS. */
const FIRST_RETRY_MS = 10_000
const MAX_RETRY_MS = 10 * 60_000
/** How long a response without nextUpdate is served (refreshed at half of it). */
const NO_NEXT_UPDATE_MS = 60 * 60_000
/** Responders asked at once by one worker (a start with many entries built does not open hundreds of connections). */
const MAX_CONCURRENT_FETCHES = 8

type OcspHandler = (certificate: Buffer, issuer: Buffer, callback: (err: Error | null, response: Buffer | null) => void) => void

/** One entry's stapling state: the servers (resumption variants) it staples on, the response, its clocks. */
class Staple {
  der: Buffer | undefined
  expiresAt = 0
  failures = 0
  closed = false
  refreshTimer: NodeJS.Timeout | undefined
  expiryTimer: NodeJS.Timeout | undefined
  readonly servers = new Set<TlsServer>()
  readonly listener: OcspHandler
  constructor (readonly entry: CheckedEntry, public subject: OcspSubject, stapled: CounterCell) {
    // Per status_request handshake: a field, the clock, a callback. Nothing is hashed or parsed.
    this.listener = (_certificate, _issuer, callback) => {
      const der = this.der
      if (der !== undefined && Date.now() < this.expiresAt) {
        stapled.n++
        callback(null, der)
      } else {
        callback(null, null)
      }
    }
  }

  get name (): string { return this.entry.name }

  listen (on: boolean): void {
    for (const server of this.servers) {
      server.removeListener('OCSPRequest', this.listener)
      if (on) server.on('OCSPRequest', this.listener)
    }
  }
}

/** Fetches, verifies, caches and staples OCSP responses for the built certificate entries of a worker. */
export class OcspStapler {
  readonly #store: CertStore
  readonly #log: Logger
  #settings: StaplingSettings
  /** Entries with something to staple, by entry id. */
  readonly #staples = new Map<number, Staple>()
  /** Response files provided by the operator (`files[].ocsp` of single-certificate entries), by entry name. */
  #files = new Map<string, string>()
  /** Entries looked at and found to have nothing to staple (one look per checked version of an entry). */
  #nothing = new WeakSet<CheckedEntry>()
  /** Entries built in this turn, their stapling state made in the next (#start). */
  readonly #pending = new Map<number, { entry: CheckedEntry, servers: Set<TlsServer> }>()
  readonly #responses: Counter<string>
  readonly #stapled: CounterCell
  #fetching = 0
  readonly #waiting: Array<() => void> = []

  constructor (o: { store: CertStore, log: Logger, registry: Registry, settings: StaplingSettings }) {
    this.#store = o.store
    this.#log = o.log
    this.#settings = { ocspStapling: o.settings.ocspStapling, ocspResponderTimeoutMs: o.settings.ocspResponderTimeoutMs }
    const r = o.registry
    this.#responses = (r.getSingleMetric('edge_tls_ocsp_responses_total') as Counter<string> | undefined) ?? new Counter({
      name: 'edge_tls_ocsp_responses_total',
      help: 'OCSP responses fetched for stapling, by result: good (verified, stapled), revoked, unknown (not stapled), invalid (failed verification), fetch_failed (no response: connection, timeout, HTTP status, size)',
      labelNames: ['result'],
      registers: [r]
    })
    for (const result of ['good', 'revoked', 'unknown', 'invalid', 'fetch_failed']) this.#responses.inc({ result }, 0)
    this.#stapled = fastCounter(r, { name: 'edge_tls_ocsp_stapled_total', help: 'Handshakes whose client asked for certificate status (status_request) and got a stapled OCSP response', labelNames: [] }).cell({})
    if (r.getSingleMetric('edge_tls_ocsp_staple_expiry_seconds') === undefined) {
      const staples = this.#staples
      const gauge: Gauge<string> = new Gauge({
        name: 'edge_tls_ocsp_staple_expiry_seconds',
        help: 'Seconds until the OCSP response stapled for each certificate entry expires (its nextUpdate); entries without a stapled response have no series',
        labelNames: ['name'],
        aggregator: 'min',
        registers: [r],
        collect () {
          gauge.reset()
          const now = Date.now()
          for (const s of staples.values()) if (s.der !== undefined && s.expiresAt > now) gauge.set({ name: s.name }, Math.round((s.expiresAt - now) / 1000))
        }
      })
    }
  }

  /** Applies new settings (a reload); true when they changed what is stapled (the caller rebuilds the contexts). */
  update (settings: StaplingSettings): boolean {
    const changed = settings.ocspStapling !== this.#settings.ocspStapling
    this.#settings = { ocspStapling: settings.ocspStapling, ocspResponderTimeoutMs: settings.ocspResponderTimeoutMs }
    if (changed && !settings.ocspStapling) for (const id of [...this.#staples.keys()]) this.release(id)
    return changed
  }

  /**
   * Takes the response files of `certificates` (at start and at each reload): a file-backed entry
   * reads its file again now (nginx reads `ssl_stapling_file` at each reload), and an entry whose
   * file was added, changed or removed switches source. True when an entry that had nothing to
   * staple got a file: the caller rebuilds the contexts (their servers have no stapling state).
   */
  responseFiles (certificates: readonly CertificateConfig[]): boolean {
    const files = new Map<string, string>()
    for (const c of certificates) {
      const file = c.files.length === 1 ? c.files[0]?.ocsp : undefined
      if (file !== undefined) files.set(c.name, file)
    }
    const before = this.#files
    this.#files = files
    let gained = false
    const stapled = new Set<string>()
    for (const s of this.#staples.values()) stapled.add(s.name)
    for (const name of files.keys()) if (!before.has(name) && !stapled.has(name)) gained = true
    if (gained) this.#nothing = new WeakSet()
    for (const [id, s] of [...this.#staples]) {
      if (before.get(s.name) !== files.get(s.name)) {
        const subject = this.#subjectOf(s.entry)
        if (subject === undefined) { this.release(id); continue }
        s.subject = subject
        this.#drop(s)
      }
      if (s.subject.file !== undefined || before.get(s.name) !== files.get(s.name)) {
        s.failures = 0
        this.#schedule(s, 0)
      }
    }
    return gained && this.#settings.ocspStapling
  }

  /**
   * Staples `entry`'s OCSP response on `server` (one of its resumption variants), starting the fetch
   * if this is the entry's first server; nothing when stapling is off or the entry has nothing to staple.
   */
  attach (entry: CheckedEntry, server: TlsServer): void {
    if (!this.#settings.ocspStapling || this.#nothing.has(entry)) return
    const staple = this.#staples.get(entry.id)
    if (staple !== undefined) {
      staple.servers.add(server)
      if (staple.der !== undefined) server.on('OCSPRequest', staple.listener)
      return
    }
    let waiting = this.#pending.get(entry.id)
    if (waiting === undefined) {
      this.#pending.set(entry.id, waiting = { entry, servers: new Set() })
      // Off the handshake that built the context: reading the chain, checking the issuer's signature
      // and making the CertID take about 1 ms for a certificate with an OCSP URL (30 µs without).
      setImmediate(() => { this.#start(entry.id) })
    }
    waiting.servers.add(server)
  }

  #start (id: number): void {
    const waiting = this.#pending.get(id)
    if (waiting === undefined) return // released meanwhile
    this.#pending.delete(id)
    if (!this.#settings.ocspStapling) return
    const subject = this.#subjectOf(waiting.entry)
    if (subject === undefined) {
      this.#nothing.add(waiting.entry)
      return
    }
    const staple = new Staple(waiting.entry, subject, this.#stapled)
    for (const server of waiting.servers) staple.servers.add(server)
    this.#staples.set(id, staple)
    void this.#refresh(staple)
  }

  /** Stops stapling for entry `id` (its contexts were dropped): timers cleared, listeners removed. */
  release (id: number): void {
    this.#pending.delete(id)
    const staple = this.#staples.get(id)
    if (staple === undefined) return
    this.#staples.delete(id)
    staple.closed = true
    clearTimeout(staple.refreshTimer)
    clearTimeout(staple.expiryTimer)
    staple.listen(false)
    staple.servers.clear()
  }

  /** Entries with something to staple (with or without a response yet). */
  get size (): number { return this.#staples.size }

  close (): void {
    this.#pending.clear()
    for (const id of [...this.#staples.keys()]) this.release(id)
  }

  #subjectOf (entry: CheckedEntry): OcspSubject | undefined {
    const pems = this.#store.pems(entry)
    const first = pems[0]
    if (first === undefined) return undefined
    let outcome
    try {
      outcome = ocspSubject(first.cert, this.#files.get(entry.name))
    } catch (err) {
      this.#log.warn({ certificate: entry.name, reason: errorMessage(err) }, 'OCSP stapling: cannot read the certificate chain; not stapled')
      return undefined
    }
    if ('skip' in outcome) {
      if (outcome.skip === 'no_issuer') this.#log.warn({ certificate: entry.name, certFile: first.pair.certFile }, 'OCSP stapling: the certificate names an OCSP responder but its file holds no issuer certificate after it; not stapled')
      if (outcome.skip === 'issuer_mismatch') this.#log.warn({ certificate: entry.name, certFile: first.pair.certFile }, 'OCSP stapling: the second certificate of the file did not issue the first; not stapled')
      return undefined
    }
    if (pems.length > 1) {
      // Node hands OpenSSL one response per context, whichever certificate the handshake picks:
      // with an ECDSA and an RSA certificate in one entry a client could get the other one's response.
      this.#log.info({ certificate: entry.name, responder: outcome.subject.url }, 'OCSP stapling: entries with more than one certificate are not stapled')
      return undefined
    }
    return outcome.subject
  }

  async #slot (): Promise<void> {
    if (this.#fetching < MAX_CONCURRENT_FETCHES) { this.#fetching++; return }
    await new Promise<void>(resolve => this.#waiting.push(resolve))
  }

  #freeSlot (): void {
    const next = this.#waiting.shift()
    if (next !== undefined) next()
    else this.#fetching--
  }

  async #refresh (s: Staple): Promise<void> {
    s.refreshTimer = undefined
    await this.#slot()
    let der: Buffer
    try {
      if (s.closed) return
      der = await obtainOcsp(s.subject, this.#settings.ocspResponderTimeoutMs)
    } catch (err) {
      if (s.closed) return
      this.#responses.inc({ result: 'fetch_failed' })
      this.#failed(s, 'warn', err instanceof OcspFetchError ? err.message : 'fetch failed')
      return
    } finally {
      this.#freeSlot()
    }
    if (s.closed) return
    const now = Date.now()
    let verified
    try {
      verified = verifyOcspResponse(der, s.subject, now)
    } catch (err) {
      const result = err instanceof OcspResponseError ? err.result : 'invalid'
      this.#responses.inc({ result })
      if (result !== 'invalid') this.#drop(s) // revoked or unknown now: what was stapled no longer holds
      this.#failed(s, result === 'revoked' ? 'error' : 'warn', errorMessage(err), result)
      return
    }
    this.#responses.inc({ result: 'good' })
    const expiresAt = verified.nextUpdate ?? now + NO_NEXT_UPDATE_MS
    const start = verified.nextUpdate === undefined ? now : Math.min(verified.thisUpdate, now)
    const wasStapled = s.der !== undefined
    s.der = der
    s.expiresAt = expiresAt
    s.failures = 0
    if (!wasStapled) s.listen(true)
    // Half the window, jittered down by up to a tenth (workers and proxies do not refresh in step).
    const refreshAt = start + (expiresAt - start) / 2 * (0.9 + Math.random() * 0.1)
    this.#schedule(s, Math.max(refreshAt - now, MIN_REFRESH_MS))
    clearTimeout(s.expiryTimer)
    s.expiryTimer = setTimeout(() => { this.#expire(s) }, Math.min(expiresAt - now, 2 ** 31 - 1)).unref()
    this.#log.info({ certificate: s.name, responder: s.subject.url, status: 'good', nextUpdate: verified.nextUpdate === undefined ? null : new Date(verified.nextUpdate).toISOString() }, 'OCSP response stapled')
  }

  #failed (s: Staple, level: 'warn' | 'error', reason: string, status?: string): void {
    s.failures++
    // Jittered exponential backoff (half to all of the step).
    const step = Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** Math.min(s.failures - 1, 16))
    const delay = step * (0.5 + Math.random() * 0.5)
    this.#schedule(s, delay)
    const stapled = s.der !== undefined && Date.now() < s.expiresAt
    this.#log[level]({ certificate: s.name, responder: s.subject.url, ...(status !== undefined ? { status } : {}), reason, retryInSeconds: Math.round(delay / 1000), stillStapled: stapled },
      status === 'revoked' ? 'OCSP responder says the certificate is revoked; not stapled' : 'OCSP response not stapled')
  }

  #schedule (s: Staple, delayMs: number): void {
    clearTimeout(s.refreshTimer)
    s.refreshTimer = setTimeout(() => { void this.#refresh(s) }, Math.min(delayMs, 2 ** 31 - 1)).unref()
  }

  #expire (s: Staple): void {
    if (s.closed || s.der === undefined) return
    const left = s.expiresAt - Date.now()
    if (left > 0) { s.expiryTimer = setTimeout(() => { this.#expire(s) }, left + 1).unref(); return }
    this.#log.warn({ certificate: s.name, responder: s.subject.url, expiredAt: new Date(s.expiresAt).toISOString() }, 'OCSP response expired before a new one could be fetched; not stapled')
    this.#drop(s)
  }

  #drop (s: Staple): void {
    if (s.der === undefined) return
    s.der = undefined
    s.expiresAt = 0
    clearTimeout(s.expiryTimer)
    s.listen(false)
  }
}
