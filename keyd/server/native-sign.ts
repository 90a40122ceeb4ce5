// keyd's native SIGN path, the JavaScript half (docs/keyd.md, "Native SIGN path"). The addon of
// keyd/native/ signs on a pool of C threads, each an epoll loop over the connections handed to it after
// HELLO, and answers only the success path of SIGN for a (client, key, version) in the eligibility
// table this module computes from the same rules as findKey / authorizeKey / checkSignable /
// admitSignature — pairs with a rate limit stay in JavaScript. Everything else it reads comes back here
// in order and runs through Connection and the dispatcher unchanged; their answers go back to be written.
// The audit chain moves into C while the path is on (the AuditLog's ChainSink): each native signature's
// entry is chained and written to the log before its answer is queued, and JavaScript's own entries go
// through the same chain. JavaScript wakes only for frames it must answer and for a failed audit write;
// the native signatures' metrics are counted in C (per key, and bucketed) and folded into keyd's
// metrics when they are read (a scrape, keyd stopping): no JavaScript runs per native signature.
import { createRequire } from 'node:module'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import type { Logger } from 'pino'
import { ALGORITHMS, keyFamily } from '../algorithms.js'
import { signDenied } from '../policy/access.js'
import { signTailHead } from '../audit/chain.js'
import type { AuditLog, ChainSink, SinkState } from '../audit/audit-log.js'
import type { Keystore } from '../keystore/keystore.js'
import type { KeyPolicy } from '../policy/key-policy.js'
import type { ClientRegistry, Client } from './clients.js'
import type { Connection, NativeWire } from './connection.js'
import { BUCKETS, type KeydMetrics, type NativeCounts } from './metrics.js'
import type { SignStats } from './context.js'
import { signableUntil } from './keys.js'
import { errorMessage } from '../../lib/errors.js'

/** The addon's functions (keyd/native/addon.c). */
export interface NativeAddon {
  start: (threads: number, maxFrame: number, outCap: number, stallMs: number, onWake: () => void, bounds: readonly number[]) => boolean
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
  /** The connections' events queued since the last call. */
  drain: () => { events: Array<number | Buffer> }
  /** The native signatures counted since the last call (then reset): see NativeCounts. */
  takeMetrics: () => NativeCounts
  stats: () => { signatures: number }
  chainAttach: (fd: number, key: Buffer, seq: number, chain: string, size: number) => boolean
  chainAppend: (tail: string) => number
  chainDetach: () => SinkState
  chainHead: () => SinkState
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

const EV_DATA = 1
const EV_EOF = 2
const EV_FLUSHED = 3
const EV_STALLED = 4
const EV_CLOSED = 5
const EV_AUDIT = 6

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


export class NativeSign {
  readonly #addon: NativeAddon
  readonly #state: NativeState
  readonly #clients: ClientRegistry
  readonly #stats: SignStats
  readonly #conns = new Map<number, Connection>()
  #nextId = 1
  /** Keys given to the addon, by `name\0version`. */
  readonly #pushed = new Set<string>()
  #watched: AuditLog | null = null
  /** Native signatures whose counts were folded into stats.signatures and the metrics. */
  #folded = 0
  readonly #sink: ChainSink
  #clientList: Client[] = []
  readonly threads: number

  private constructor (addon: NativeAddon, state: NativeState, clients: ClientRegistry, stats: SignStats, threads: number) {
    this.#addon = addon
    this.#state = state
    this.#clients = clients
    this.#stats = stats
    this.threads = threads
    this.#sink = {
      attach: (fd, key, seq, chain, size) => { addon.chainAttach(fd, key, seq, chain, size) },
      append: tail => addon.chainAppend(tail),
      head: () => addon.chainHead(),
      detach: () => addon.chainDetach()
    }
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
    // Frames for JavaScript and a failed audit write wake it at once; native signatures do not.
    addon.start(o.threads, o.maxFrameBytes, o.outCap, o.stallTimeoutMs, () => self?.drain(), BUCKETS)
    self = new NativeSign(addon, state, clients, stats, o.threads)
    self.refresh()
    const s = self
    state.metrics?.beforeScrape(() => { s.fold() })
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
          const head = signTailHead(client.name, info.name)
          for (const v of info.versions) {
            const until = signableUntil(info, v.version)
            if (until !== null && now > until) continue
            const id = `${info.name}\0${v.version}`
            if (!this.#pushed.has(id) && !this.#pushKey(keystore, info.name, v.version)) continue
            used.add(id)
            const entry = (alias: number): void => { flat.push(clientKey(client), client.name, info.name, alias, v.version, mask >>> 0, info.usage === 'tls-server' ? 1 : 0, until ?? 0, head) }
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

  /** Hands the audit chain of `audit` to the addon (the log attaches it once nothing waits to be written). */
  #watch (audit: AuditLog | null): void {
    if (audit === this.#watched) return
    this.#watched?.useSink(null)
    audit?.useSink(this.#sink)
    this.#watched = audit
  }

  /** Takes the connections' events the threads queued, in order. */
  drain (): void {
    this.#handle(this.#addon.drain().events)
  }

  /** Folds the native signatures counted in C since the last fold into stats.signatures and the metrics. */
  fold (): void {
    const counts = this.#addon.takeMetrics()
    this.#folded += counts.count
    this.#stats.signatures += counts.count
    this.#state.metrics?.nativeSigned(counts)
  }

  #handle (events: Array<number | Buffer>): void {
    for (let i = 0; i + 2 < events.length; i += 3) {
      const type = events[i] as number
      // Before the frames that follow it: the SIGN whose entry failed comes next, and is refused.
      if (type === EV_AUDIT) { this.#watched?.sinkFailed(); continue }
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

  /** Stops native signing (an empty table; the audit log takes its chain back) and takes the last events and counts. */
  stop (): void {
    this.#addon.setTable([])
    this.#watch(null)
    this.drain()
    this.fold()
  }

  /** Signatures made natively since start. */
  get signatures (): number { return this.#addon.stats().signatures }

  /** Native signatures not yet in stats.signatures (counted in C, not folded yet). */
  get undrained (): number { return this.signatures - this.#folded }
}
