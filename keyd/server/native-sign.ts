// keyd's native SIGN path, the JavaScript half (docs/keyd.md, "Native SIGN path"). The addon of
// keyd/native/ signs on a pool of C threads, each an epoll loop over the connections handed to it after
// HELLO, and answers only the success path of SIGN for a (client, key, version) in the eligibility
// table this module computes from the same rules as findKey / authorizeKey / checkSignable /
// admitSignature — pairs with a rate limit stay in JavaScript. Everything else it reads comes back here
// in order and runs through Connection and the dispatcher unchanged; their answers go back to be written.
// Each native signature's audit record is queued in C before its answer is written, and an answer is
// written only within the credit this module grants from the audit log's space reserve (AuditLog's rule
// for answering before the write); the records are appended here, in order, with their own times.
import { createRequire } from 'node:module'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import type { Logger } from 'pino'
import { ALGORITHMS, keyFamily } from '../algorithms.js'
import { signDenied } from '../policy/access.js'
import { canonical, lineOf } from '../audit/chain.js'
import { BUFFERED_DELAY_MS, type AuditLog } from '../audit/audit-log.js'
import type { Keystore } from '../keystore/keystore.js'
import type { KeyPolicy } from '../policy/key-policy.js'
import type { ClientRegistry, Client } from './clients.js'
import type { Connection, NativeWire } from './connection.js'
import type { KeydMetrics } from './metrics.js'
import type { SignStats } from './context.js'
import { signableUntil } from './keys.js'
import { errorMessage } from '../../lib/errors.js'

/** The addon's functions (keyd/native/addon.c). */
export interface NativeAddon {
  start: (threads: number, maxFrame: number, outCap: number, stallMs: number, recordDelayMs: number, onWake: () => void) => boolean
  adopt: (id: number, fd: number, clientKey: string, clientName: string) => boolean
  write: (id: number, buf: Buffer) => boolean
  pause: (id: number) => boolean
  resume: (id: number) => boolean
  shutdown: (id: number) => boolean
  end: (id: number) => boolean
  drop: (id: number) => boolean
  setKey: (name: string, version: number, pkcs8: Buffer) => boolean
  dropKey: (name: string, version: number) => boolean
  setTable: (flat: Array<string | number>) => boolean
  grant: (total: number) => boolean
  /** Records and events queued since the last call (`recordsOnly`: the events stay queued). */
  drain: (recordsOnly: boolean) => { records: Array<string | number | null>, events: Array<number | Buffer> }
  /** Returns once no thread is between its credit check and its queued record. */
  fence: () => boolean
  stats: () => { signatures: number, used: number, granted: number }
}

const ADDON = fileURLToPath(new URL('../../../keyd/native/build/Release/keyd_native.node', import.meta.url))

let loaded: NativeAddon | null | undefined
let taken = false

/** The addon, or null (logged once) when it was not built: keyd then signs in JavaScript as before. */
export function loadNativeAddon (logger: Logger): NativeAddon | null {
  if (loaded !== undefined) return loaded
  try {
    if (!existsSync(ADDON)) throw new Error(`${ADDON} is missing (npm install builds it: node-gyp rebuild -C keyd/native)`)
    loaded = createRequire(import.meta.url)(ADDON) as NativeAddon
  } catch (err) {
    logger.warn({ err: errorMessage(err) }, 'keyd native SIGN path unavailable: every signature is made in JavaScript')
    loaded = null
  }
  return loaded
}

/** Audit reserve bytes the native side may answer ahead of JavaScript's next drain (~200 entries). */
const CREDIT_WINDOW = 64 * 1024

const EV_DATA = 1
const EV_EOF = 2
const EV_FLUSHED = 3
const EV_STALLED = 4
const EV_CLOSED = 5

/** The algorithm codes in the bit order of keyd/native/frame.c fs_alg_bit. */
const ALG_BITS = [0x0001, 0x0002, 0x0003, 0x0004, 0x0011, 0x0012, 0x0013, 0x0014, 0x0021, 0x0022, 0x0023, 0x0030]

/** The live server state this module reads (a sealed keyd fills it in at unseal; a restore replaces the policy). */
export interface NativeState {
  keystore: Keystore | null
  audit: AuditLog | null
  policy: KeyPolicy
  metrics: KeydMetrics | null
  logger: Logger
}

export interface NativeSignOptions {
  threads: number
  maxFrameBytes: number
  /** Answers a native connection may have unwritten before its thread stops reading it (its free allowance). */
  outCap: number
  stallTimeoutMs: number
}

/** Where a client's rights and secret stand: a changed secret matches no table entry (JavaScript then closes the connection). */
function clientKey (c: Client): string { return `${c.name}:${c.secretSha256}` }

/** The longest audit line a native SIGN by `client` with `key` can make (AuditLog's acked rule counts line bytes). */
function lineBound (client: string, key: string): number {
  const text = canonical({ seq: Number.MAX_SAFE_INTEGER, time: '+275760-09-13T00:00:00.000Z', client, op: 'SIGN', key, version: 0xffffffff, result: 'ok', msgSha256: 'f'.repeat(64) })
  return Buffer.byteLength(lineOf('f'.repeat(64), text))
}

export class NativeSign {
  readonly #addon: NativeAddon
  readonly #state: NativeState
  readonly #clients: ClientRegistry
  readonly #stats: SignStats
  readonly #conns = new Map<number, Connection>()
  #nextId = 1
  /** Keys given to the addon, by `name\0version`. */
  readonly #pushed = new Set<string>()
  /** Sum of the credit bounds of every record drained (the addon's `used` counts the undrained ones too). */
  #drainedUsed = 0
  #watched: AuditLog | null = null
  #clientList: Client[] = []
  readonly threads: number

  private constructor (addon: NativeAddon, state: NativeState, clients: ClientRegistry, stats: SignStats, threads: number) {
    this.#addon = addon
    this.#state = state
    this.#clients = clients
    this.#stats = stats
    this.threads = threads
  }

  /** Starts the signing threads, or returns null (keyd signs in JavaScript): no addon, or another server of this process has it. */
  static start (state: NativeState, clients: ClientRegistry, stats: SignStats, o: NativeSignOptions): NativeSign | null {
    const addon = loadNativeAddon(state.logger)
    if (addon === null) return null
    if (taken) {
      state.logger.warn('keyd native SIGN path already used by another server in this process: this one signs in JavaScript')
      return null
    }
    taken = true
    let self: NativeSign | null = null
    // Records wake JavaScript BUFFERED_DELAY_MS after the first (group commit, as buffered appends); the
    // entries are then written at once. Frames for JavaScript wake it at once.
    addon.start(o.threads, o.maxFrameBytes, o.outCap, o.stallTimeoutMs, BUFFERED_DELAY_MS, () => self?.drain())
    self = new NativeSign(addon, state, clients, stats, o.threads)
    self.refresh()
    state.logger.info({ threads: o.threads }, 'keyd native SIGN path on')
    return self
  }

  /** Whether a connection of `client` goes to the native side: it may sign, and the audit and keystore allow it. */
  wants (client: Client): boolean {
    const { audit, keystore } = this.#state
    return client.rights.includes('sign') && audit !== null && audit.durability === 'buffered' && audit.failClosed && keystore?.kind === 'file'
  }

  /** The NativeWire of `conn` once its socket `fd` is taken by a thread, or null to keep it in JavaScript. */
  adopt (conn: Connection, fd: number): NativeWire | null {
    const client = conn.client
    if (client === undefined || !this.wants(client)) return null
    const id = this.#nextId++
    if (this.#nextId > 0xfffffff0) this.#nextId = 1
    try {
      this.#addon.adopt(id, fd, clientKey(client), client.name)
    } catch (err) {
      this.#state.logger.warn({ err: errorMessage(err) }, 'keyd native SIGN path could not take a connection; it stays in JavaScript')
      return null
    }
    this.#conns.set(id, conn)
    const a = this.#addon
    return {
      write: buf => { a.write(id, buf) },
      pause: () => { a.pause(id) },
      resume: () => { a.resume(id) },
      shutdown: () => { a.shutdown(id) },
      end: () => { a.end(id) },
      drop: () => { if (this.#conns.delete(id)) a.drop(id) }
    }
  }

  /**
   * Recomputes the eligibility table and gives it (and any key it needs) to the addon, at once: called
   * on every change of keys, clients, policy, seal state or audit log, before the answer of the
   * operation that made it is sent, so the very next SIGN sees the change.
   */
  refresh (): void {
    const { keystore, audit, policy } = this.#state
    this.#watch(audit)
    const flat: Array<string | number> = []
    const used = new Set<string>()
    this.#clientList = this.#clients.list()
    if (keystore !== null && keystore.kind === 'file' && audit !== null) {
      const now = Date.now()
      const keys = keystore.list()
      for (const client of this.#clientList) {
        if (!this.wants(client) || policy.clientRateLimit(client.name) !== undefined) continue
        for (const info of keys) {
          if ((info.state ?? 'enabled') !== 'enabled' || signDenied(client, info) !== null) continue
          const rule = policy.rule(info.name)
          if (rule?.rateLimit !== undefined || (rule?.clients !== undefined && !rule.clients.includes(client.name))) continue
          const family = keyFamily(info.type)
          let mask = 0
          ALG_BITS.forEach((code, bit) => {
            const alg = ALGORITHMS.get(code)
            if (alg !== undefined && alg.family === family && (rule?.algorithms === undefined || rule.algorithms.includes(alg.name))) mask |= 1 << bit
          })
          if (mask === 0) continue
          const bound = lineBound(client.name, info.name)
          for (const v of info.versions) {
            const until = signableUntil(info, v.version)
            if (until !== null && now > until) continue
            const id = `${info.name}\0${v.version}`
            if (!this.#pushed.has(id) && !this.#pushKey(keystore, info.name, v.version)) continue
            used.add(id)
            const entry = (alias: number): void => { flat.push(clientKey(client), client.name, info.name, alias, v.version, mask >>> 0, info.usage === 'tls-server' ? 1 : 0, until ?? 0, bound) }
            entry(v.version)
            if (v.version === info.currentVersion) entry(0)
          }
        }
      }
    }
    this.#addon.setTable(flat)
    // Keys no entry names any more (destroyed, disabled, sealed, removed by a restore) leave the addon.
    for (const id of [...this.#pushed]) {
      if (used.has(id)) continue
      const [name, version] = id.split('\0')
      this.#addon.dropKey(name ?? '', Number(version))
      this.#pushed.delete(id)
    }
    this.#grant()
  }

  /** Re-reads clients.json's entries: a reload made new objects. */
  clientsChanged (): boolean {
    const now = this.#clients.list()
    return now.length !== this.#clientList.length || now.some((c, i) => c !== this.#clientList[i])
  }

  #pushKey (keystore: Keystore, name: string, version: number): boolean {
    const k = keystore.signingKey(name, version)
    if (k === undefined) return false
    const der = k.key.export({ format: 'der', type: 'pkcs8' })
    try {
      this.#addon.setKey(name, version, der)
      this.#pushed.add(`${name}\0${version}`)
      return true
    } catch (err) {
      this.#state.logger.warn({ key: name, version, err: errorMessage(err) }, 'keyd native SIGN path cannot use this key; it signs in JavaScript')
      return false
    } finally {
      der.fill(0)
    }
  }

  #watch (audit: AuditLog | null): void {
    if (audit === this.#watched) return
    this.#watched?.watchCredit(null)
    audit?.watchCredit(failing => {
      if (!failing) { this.#grant(); return }
      // A write failed: no native answer from now on, and every one already made is appended before the reserve is used.
      this.#addon.grant(this.#drainedUsed)
      this.#addon.fence()
      this.#appendRecords(this.#addon.drain(true).records)
      audit.promise(0)
    })
    this.#watched = audit
  }

  /**
   * Credit = every record drained so far + a window of what the log can still take as
   * answered-but-unwritten; the log promises that window away from its own acknowledged appends, so
   * the entries answered here and there together never pass what the reserve holds.
   */
  #grant (): void {
    const audit = this.#state.audit
    const window = audit === null || this.#state.keystore === null ? 0 : Math.min(CREDIT_WINDOW, audit.answerCredit)
    audit?.promise(window)
    this.#addon.grant(this.#drainedUsed + window)
  }

  /** Takes what the threads queued: audit records first (appended in order), then the connections' events. */
  drain (): void {
    const { records, events } = this.#addon.drain(false)
    this.#appendRecords(records)
    this.#handle(events)
  }

  #appendRecords (records: Array<string | number | null>): void {
    const { audit, metrics } = this.#state
    for (let i = 0; i + 7 < records.length; i += 8) {
      const client = records[i] as string
      const key = records[i + 1] as string
      const version = records[i + 2] as number | null
      audit?.appendAnswered({ client, op: 'SIGN', key, version, result: 'ok', msgSha256: records[i + 3] as string }, records[i + 4] as number)
      this.#stats.signatures++
      metrics?.observe('SIGN', key, 'ok', records[i + 5] as number, records[i + 6] as number)
      metrics?.audited('SIGN')
      this.#drainedUsed += records[i + 7] as number
    }
    if (records.length > 0) {
      audit?.writeAnswered()
      this.#grant()
    }
  }

  #handle (events: Array<number | Buffer>): void {
    for (let i = 0; i + 2 < events.length; i += 3) {
      const type = events[i] as number
      const conn = this.#conns.get(events[i + 1] as number)
      if (conn === undefined) continue
      const data = events[i + 2] as Buffer | number
      if (type === EV_DATA && Buffer.isBuffer(data)) conn.feed(data)
      else if (type === EV_FLUSHED && typeof data === 'number') conn.flushed(data)
      else if (type === EV_EOF) conn.remoteEnded()
      else if (type === EV_STALLED) conn.close('stalled')
      else if (type === EV_CLOSED) { this.#conns.delete(events[i + 1] as number); conn.destroySocket() }
    }
  }

  /** Stops native signing (an empty table, no credit) and appends every record already made. */
  stop (): void {
    this.#addon.setTable([])
    this.#addon.grant(this.#drainedUsed)
    this.drain()
  }

  /** Signatures made natively since start. */
  get signatures (): number { return this.#addon.stats().signatures }
}
