// keyd's append-only audit log: batched appends (group commit), a keyed hash chain, a MACed head
// checkpoint, and honesty under disk faults: an entry keyd answered before writing (buffered
// durability) is always covered by a space reserve, and keyd leaves fail-closed by itself. While keyd's
// native SIGN path is on, the chain and the writes move into C (a ChainSink): every entry is then
// written before its operation is answered, and JavaScript's entries go through the same chain.
import { openSync, closeSync, readFileSync, existsSync, truncateSync, statSync } from 'node:fs'
import { constants as osConstants } from 'node:os'
import { open as openAsync, statfs, type FileHandle } from 'node:fs/promises'
import { dirname, basename, join } from 'node:path'
import type { Logger } from 'pino'
import { writeFileAtomic, writeFileAtomicAsync } from '../keystore/atomic-file.js'
import { GENESIS_CHAIN, nextChain, lineOf, checkpointMac, canonical, canonicalTail, type AuditRecord, type AuditCheckpoint, type UnwrittenEntries } from './chain.js'
import { SpaceReserve, RESERVE_BYTES } from './reserve.js'
import { KeydError } from '../errors.js'
import { errorMessage } from '../../lib/errors.js'

export class AuditLogError extends KeydError {
  constructor (message: string, options?: { cause?: unknown }) {
    super('KEYD_ERR_AUDIT_UNAVAILABLE', message, options)
  }
}

export interface AuditLogOptions {
  file: string
  checkpointFile: string
  key: Buffer
  logger: Logger
  /**
   * `fsync`: an operation is answered only once its entry is on disk. `buffered`: answered at once
   * and appended within a few milliseconds, as long as the entries so answered fit the space reserve.
   */
  durability: 'fsync' | 'buffered'
  /** Refuse every operation once the log cannot be written. */
  failClosed: boolean
  checkpointIntervalMs?: number
  /** How often keyd tries to leave the unwritable state (write what waits, take the reserve back). */
  probeIntervalMs?: number
  /** Bytes of disk kept in reserve beside the log (RESERVE_BYTES). */
  reserveBytes?: number
}

/** How long buffered mode gathers entries before one append. */
export const BUFFERED_DELAY_MS = 2
/** Room the filesystem may need beyond the entries themselves (a partly filled last block, metadata). */
const RESERVE_SLACK = 64 * 1024

export const AUDIT_DEFAULTS = { durability: 'buffered' as const, failClosed: true, checkpointIntervalMs: 1000, probeIntervalMs: 500, reserveBytes: RESERVE_BYTES }

type NewRecord = Omit<AuditRecord, 'seq' | 'time'>

/** Where a ChainSink stands: the last entry written (`seq`, `chain`), the file's size in whole entries, the errno of a failed write (0: none). */
export interface SinkState { seq: number, chain: string, size: number, written: number, error: number, attached: boolean }

/**
 * Chains and writes entries outside JavaScript: keyd's native SIGN path (keyd/native/chain.c). While
 * attached it holds the chain's head and the log's descriptor, and every entry — its own signatures'
 * and the ones the log appends through it — is chained and written (into the page cache) in one order,
 * before the operation it records is answered.
 */
export interface ChainSink {
  /** Takes the chain after entry `seq` (chain value `chain`), the file holding `size` bytes of whole entries. */
  attach: (fd: number, key: Buffer, seq: number, chain: string, size: number) => void
  /** Chains and writes one entry (`tail`: canonicalTail); its seq, or -errno (a failed write detaches the sink by itself). */
  append: (tail: string) => number
  head: () => SinkState
  /** Gives the chain back: no entry is made by the sink afterwards. */
  detach: () => SinkState
}

function errnoName (code: number): string {
  return Object.entries(osConstants.errno).find(([, v]) => v === code)?.[0] ?? `errno ${code}`
}
interface Queued { seq: number, chain: string, line: Buffer, acked: boolean }
interface Waiter { upTo: number, resolve: () => void, reject: (e: Error) => void }

function isUnwritten (u: unknown): u is UnwrittenEntries {
  const x = u as UnwrittenEntries
  return typeof x === 'object' && x !== null && Number.isInteger(x.acknowledged) && Number.isInteger(x.withheld) && Number.isInteger(x.unrecorded)
}

/** The first and last seq of a run of entries, for logs (undefined for none). */
function seqRange (entries: ReadonlyArray<{ seq: number }>): [number, number] | undefined {
  const first = entries[0]
  const last = entries.at(-1)
  return first === undefined || last === undefined ? undefined : [first.seq, last.seq]
}

/** What the previous keyd's checkpoint said, read at open before it is replaced. */
function readCheckpoint (file: string): Partial<AuditCheckpoint> | null {
  try { return JSON.parse(readFileSync(file, 'utf8')) as Partial<AuditCheckpoint> } catch { return null }
}

export class AuditLog {
  readonly #o: Required<AuditLogOptions>
  readonly #reserve: SpaceReserve
  #fh: FileHandle | null = null
  /** Bytes of whole entries in the file: after a failed write the file is cut back to this. */
  #size: number
  #seq: number
  #chain: string
  /** The last entry on disk. */
  #durableSeq: number
  #durableChain: string
  #queue: Queued[] = []
  /** Bytes of queued entries already answered (buffered durability): never more than the reserve covers. */
  #ackedBytes = 0
  #waiters: Waiter[] = []
  #flushing: Promise<void> | null = null
  #broken: Error | null = null
  #probe: NodeJS.Timeout | null = null
  #withheld = 0
  #unrecorded = 0
  #checkpointedSeq: number
  #checkpointing = false
  #checkpointFailed = false
  #timer: NodeJS.Timeout | null = null
  written = 0

  private constructor (o: Required<AuditLogOptions>, seq: number, chain: string, size: number) {
    this.#o = o
    this.#reserve = new SpaceReserve(join(dirname(o.file), `.${basename(o.file)}.reserve`), o.reserveBytes)
    this.#seq = seq
    this.#chain = chain
    this.#durableSeq = seq
    this.#durableChain = chain
    this.#size = size
    this.#checkpointedSeq = -1
  }

  /**
   * Opens (creating, 0600) the log, drops a partial last line left by a crash (saying truthfully
   * whether it had been answered), resumes the chain and takes the space reserve.
   * @throws AuditLogError if the last complete entry does not parse.
   */
  static async open (opts: AuditLogOptions): Promise<AuditLog> {
    const o = { ...AUDIT_DEFAULTS, ...opts }
    let seq = 0
    let chain = GENESIS_CHAIN
    const found = readCheckpoint(o.checkpointFile)
    // Only a checkpoint this key MACed is believed (an edited one is verify's business, not carried over).
    const previous = found !== null && typeof found.mac === 'string' && checkpointMac(o.key, found as AuditCheckpoint) === found.mac ? found : null
    if (existsSync(o.file) && statSync(o.file).isFile()) {
      const text = readFileSync(o.file, 'utf8')
      const end = text.lastIndexOf('\n') + 1
      if (end < text.length) {
        truncateSync(o.file, Buffer.byteLength(text.slice(0, end)))
        const mode = previous?.durability
        o.logger.warn({ file: o.file, bytes: Buffer.byteLength(text.slice(end)), durability: mode ?? 'unknown' }, mode === 'fsync'
          ? 'audit log ended with a partial entry (keyd stopped while writing it); in fsync durability it was never acknowledged, and it has been dropped'
          : mode === 'buffered'
            ? 'audit log ended with a partial entry (keyd stopped while writing it); in buffered durability its operation had been answered: acknowledged but not written. It has been dropped'
            : 'audit log ended with a partial entry (keyd stopped while writing it); the durability it was written with is unknown, so it may have been acknowledged. It has been dropped')
      }
      const lines = text.slice(0, end).split('\n').filter(l => l !== '')
      const lastLine = lines.at(-1)
      if (lastLine !== undefined) {
        try {
          const last = JSON.parse(lastLine) as { seq: number, chain: string }
          if (!Number.isInteger(last.seq) || !/^[0-9a-f]{64}$/.test(last.chain)) throw new Error('bad fields')
          seq = last.seq
          chain = last.chain
        } catch (err) {
          throw new AuditLogError(`the last entry of ${o.file} is corrupt; run "keyedge keyd audit verify" and move the log aside to start a new one`, { cause: err })
        }
      }
    }
    const u = isUnwritten(previous?.unwritten) ? previous.unwritten : undefined
    if (u !== undefined && (u.acknowledged > 0 || u.unrecorded > 0)) {
      o.logger.error({ acknowledgedButNotWritten: u.acknowledged, afterSeq: u.afterSeq, withheld: u.withheld, unrecorded: u.unrecorded }, 'this audit log misses entries an earlier keyd could not write (see "keyedge keyd audit verify")')
    }
    closeSync(openSync(o.file, 'a', 0o600))
    const log = new AuditLog(o, seq, chain, statSync(o.file).isFile() ? statSync(o.file).size : 0)
    // The account of unwritten entries is carried from keyd to keyd, so verify keeps reporting it.
    log.#inherited = u
    // A checkpoint of the head as found, at once: a keyd killed before its first timer tick still leaves one.
    log.#writeCheckpointSync(seq, chain, log.#unwritten(false))
    log.#fh = await openAsync(o.file, 'a', 0o600)
    try {
      await log.#reserve.take()
    } catch (err) {
      log.#fail(new Error(`no room for the ${o.reserveBytes}-byte space reserve beside the audit log: ${errorMessage(err)}`))
    }
    log.#timer = setInterval(() => { log.#checkpoint() }, o.checkpointIntervalMs)
    log.#timer.unref()
    return log
  }

  /** False while the log cannot be written (or its space reserve is gone): with failClosed, keyd then refuses operations. */
  get writable (): boolean { return this.#broken === null && !this.#failing }

  /**
   * A write failed and the flush loop is still writing the answered entries into the reserve's space:
   * fail-closed, nothing new is accepted meanwhile (it would be answered from space that the entries
   * already answered need, or wait for a log about to be declared unwritable).
   */
  #failing = false
  get seq (): number { return this.#sink !== null ? this.#sink.head().seq : this.#seq }
  /** Entries recorded but not yet on disk (none while the sink holds the chain: it writes each before its answer). */
  get backlog (): number { return this.#sink !== null ? 0 : this.#seq - this.#durableSeq }
  get failClosed (): boolean { return this.#o.failClosed }
  get durability (): 'fsync' | 'buffered' { return this.#o.durability }

  /**
   * Appends an entry and says when the operation it records may be answered: null = at once
   * (buffered durability, and the entries answered so far still fit the space reserve), else a
   * promise that resolves once the entry is written (fsynced in `fsync` durability) and rejects
   * with AuditLogError if it cannot be (the entry is then dropped: never acknowledged).
   * @throws AuditLogError while the log is unwritable (under --audit-fail-open the operation is counted as unrecorded)
   */
  append (r: NewRecord): Promise<void> | null {
    if (this.#broken !== null) {
      if (!this.#o.failClosed) this.#unrecorded++
      throw new AuditLogError(`audit log not writable: ${this.#broken.message}`)
    }
    if (this.#failing && this.#o.failClosed) throw new AuditLogError('audit log not writable: a write just failed')
    const sink = this.#sink
    if (sink !== null) {
      // Chained and written now, in the native path's order: answered at once, nothing left to write.
      const seq = sink.append(canonicalTail(r))
      if (seq > 0) return null
      if (sink.head().error !== 0) {
        this.#sinkBroke()
        throw new AuditLogError(`audit log not writable: ${this.#lastError?.message ?? 'the write failed'}`)
      }
      throw new AuditLogError(`audit entry could not be chained (${errnoName(-seq)})`)
    }
    const rec: AuditRecord = { seq: this.#seq + 1, time: this.#now(), ...r }
    const text = canonical(rec)
    this.#chain = nextChain(this.#o.key, this.#chain, rec, text)
    this.#seq = rec.seq
    const line = Buffer.from(lineOf(this.#chain, text))
    const acked = this.#o.durability === 'buffered' && this.#reserve.held && this.#ackedBytes + line.length <= this.#o.reserveBytes - RESERVE_SLACK
    if (acked) this.#ackedBytes += line.length
    this.#queue.push({ seq: rec.seq, chain: this.#chain, line, acked })
    if (this.#flushing === null) this.#flushing = this.#flushLoop()
    if (acked) return null
    // One promise per batch (no allocation per entry): entries appended before the next write starts share it.
    if (this.#open !== null) {
      this.#open.waiter.upTo = rec.seq
      return this.#open.done
    }
    let resolve!: () => void
    let reject!: (e: Error) => void
    const done = new Promise<void>((res, rej) => { resolve = res; reject = rej })
    const waiter = { upTo: rec.seq, resolve, reject }
    this.#waiters.push(waiter)
    this.#open = { waiter, done }
    return done
  }

  #sinkWanted: ChainSink | null = null
  /** The sink while it holds the chain (attached): #seq, #chain and #size are then its, read back at detach. */
  #sink: ChainSink | null = null

  /**
   * Hands the chain to `sink` (keyd's native SIGN path) as soon as nothing is waiting to be written,
   * or (null) takes it back. Only in buffered, fail-closed durability with the reserve held: the
   * sink writes every entry before its answer, so none is ever answered unwritten.
   */
  useSink (sink: ChainSink | null): void {
    if (sink === this.#sinkWanted) return
    if (this.#sink !== null) this.#detach()
    this.#sinkWanted = sink
    this.#tryAttach()
  }

  /** Whether the sink holds the chain now. */
  get sinkAttached (): boolean { return this.#sink !== null }

  #tryAttach (): void {
    const sink = this.#sinkWanted
    const fh = this.#fh
    if (sink === null || this.#sink !== null || fh === null || this.#o.durability !== 'buffered' || !this.#o.failClosed) return
    if (this.#broken !== null || this.#failing || this.#queue.length > 0 || this.#flushing !== null || !this.#reserve.held) return
    sink.attach(fh.fd, this.#o.key, this.#seq, this.#chain, this.#size)
    this.#sink = sink
  }

  /** Takes the chain back from the sink: its head and size become the log's. */
  #detach (): SinkState {
    const sink = this.#sink as ChainSink
    const st = sink.detach()
    this.#sink = null
    this.#seq = this.#durableSeq = st.seq
    this.#chain = this.#durableChain = st.chain
    this.#size = st.size
    this.written += st.written
    return st
  }

  /**
   * The sink's write failed (keyd's native SIGN path says so, or an append through it returned the
   * error): the entry was not written and its operation is not answered. The log takes the chain
   * back and fails closed. The reserve stays: no answered entry waits to be written into it (freeing it
   * would only let the probe take it back at once); the probe waits for room beyond it instead.
   */
  sinkFailed (): void {
    if (this.#sink !== null && this.#sink.head().error !== 0) this.#sinkBroke()
  }

  #sinkBroke (): void {
    if (this.#sink === null) return
    const st = this.#detach()
    const err = new Error(`audit log write failed: ${errnoName(st.error)}`)
    this.#lastError = err
    this.#o.logger.warn({ file: this.#o.file, seq: st.seq, err: err.message }, 'audit log write failed on the native SIGN path: nothing was answered for it; the chain is back in JavaScript')
    this.#fail(err)
  }

  /** The last entry on disk: the sink's while it holds the chain. */
  #head (): { seq: number, chain: string } {
    if (this.#sink === null) return { seq: this.#durableSeq, chain: this.#durableChain }
    const h = this.#sink.head()
    return { seq: h.seq, chain: h.chain }
  }

  #isoMs = -1
  #iso = ''
  /** The entry time: Date's ISO string costs ~1 µs, and every entry within one millisecond shares it. */
  #now (): string {
    const ms = Date.now()
    if (ms !== this.#isoMs) { this.#isoMs = ms; this.#iso = new Date(ms).toISOString() }
    return this.#iso
  }

  /** The waiter later entries join, until a write starts. */
  #open: { waiter: Waiter, done: Promise<void> } | null = null

  /** Appends an entry; resolves once it is written (and fsynced in `fsync` durability). */
  async record (r: NewRecord): Promise<void> {
    const wait = this.append(r)
    if (wait !== null) { await wait; return }
    const seq = this.#seq
    if (this.#durableSeq >= seq) return
    await new Promise<void>((resolve, reject) => this.#waiters.push({ upTo: seq, resolve, reject }))
  }

  async #flushLoop (gather = true): Promise<void> {
    // Group commit: everything recorded while one write is under way goes out in the next one.
    // Buffered mode also waits a couple of milliseconds so one write carries many entries.
    await new Promise<void>(resolve => this.#o.durability === 'buffered' && gather ? setTimeout(resolve, BUFFERED_DELAY_MS) : setImmediate(resolve))
    while (this.#queue.length > 0 && this.#broken === null && this.#fh !== null) {
      if (await this.#writeQueue()) continue
      this.#failing = true
      // The write failed (and the file is cut back to its last whole entry). Entries already
      // answered are written into the space the reserve frees; then keyd refuses until it can take
      // the reserve back.
      if (this.#reserve.held) {
        await this.#reserve.release().catch(() => {})
        this.#o.logger.warn({ file: this.#o.file, entries: this.#queue.length, reserveBytes: this.#o.reserveBytes }, 'audit log write failed; released the space reserve to write the entries keyd has recorded')
        // First the entries already answered (the reserve surely holds them), then the others if they fit.
        const answered = this.#queue.map(q => q.acked).lastIndexOf(true) + 1
        if ((answered === 0 || await this.#writeQueue(answered)) && (this.#queue.length === 0 || await this.#writeQueue())) {
          this.#fail(new Error('the disk is full: the space reserve was used'))
          break
        }
      }
      this.#fail(this.#lastError ?? new Error('audit log write failed'))
      this.#dropWithheld()
      break
    }
    this.#failing = false
    this.#flushing = null
    this.#tryAttach()
  }

  #lastError: Error | null = null

  /** Writes the first `count` queued entries (fsynced in fsync durability); true on success. On failure cuts the file back to its last whole entry. */
  async #writeQueue (count = this.#queue.length): Promise<boolean> {
    const fh = this.#fh
    if (fh === null) return false
    this.#open = null // entries appended from now on wait for the next write
    const batch = this.#queue.slice(0, count)
    const last = batch.at(-1)
    if (last === undefined) return true // nothing queued, nothing to write
    const buf = batch.length === 1 ? last.line : Buffer.concat(batch.map(q => q.line))
    try {
      for (let off = 0; off < buf.length;) {
        const { bytesWritten } = await fh.write(buf, off, buf.length - off)
        if (bytesWritten === 0) throw new Error('no bytes written')
        off += bytesWritten
      }
      if (this.#o.durability === 'fsync') await fh.datasync()
    } catch (err) {
      this.#lastError = err instanceof Error ? err : new Error(errorMessage(err))
      await fh.truncate(this.#size).catch(() => {})
      return false
    }
    this.#committed(batch, buf.length)
    return true
  }

  /** The first `batch.length` queued entries (`bytes` of lines) are on disk: the queue, the durable head, the acknowledged bytes and the waiters move on. */
  #committed (batch: Queued[], bytes: number): void {
    const last = batch.at(-1)
    if (last === undefined) return
    this.#size += bytes
    this.#queue.splice(0, batch.length)
    this.#durableSeq = last.seq
    this.#durableChain = last.chain
    this.written += batch.length
    for (const q of batch) if (q.acked) this.#ackedBytes -= q.line.length
    this.#release(last.seq)
  }

  /** Resolves every waiter whose entries are all on disk now. */
  #release (upTo: number): void {
    const ready = this.#waiters.filter(w => w.upTo <= upTo)
    if (ready.length === 0) return
    this.#waiters = this.#waiters.filter(w => w.upTo > upTo)
    for (const w of ready) w.resolve()
  }

  /**
   * After a failure that even the reserve did not cure: entries nobody was answered for, at the end of
   * the queue, are dropped and their answers withheld (never acknowledged; the chain steps back so no
   * gap is left). Entries already answered stay queued: keyd holds them and writes them when it can.
   */
  #dropWithheld (): void {
    let keep = this.#queue.length
    while (keep > 0 && this.#queue[keep - 1]?.acked === false) keep--
    const dropped = this.#queue.splice(keep)
    if (dropped.length === 0) return
    this.#withheld += dropped.length
    const before = (keep > 0 ? this.#queue[keep - 1] : undefined) ?? { seq: this.#durableSeq, chain: this.#durableChain }
    this.#seq = before.seq
    this.#chain = before.chain
    const err = new AuditLogError(`audit log write failed: ${this.#broken?.message ?? 'unknown'}`)
    this.#open = null
    const rejected = this.#waiters.filter(w => w.upTo > before.seq)
    this.#waiters = this.#waiters.filter(w => w.upTo <= before.seq)
    for (const w of rejected) w.reject(err)
    this.#o.logger.error({ withheld: dropped.length, seq: seqRange(dropped) }, 'audit entries could not be written: their operations were not answered (never acknowledged) and the entries were dropped')
    if (this.#queue.length > 0) this.#logHeld()
  }

  #logHeld (): void {
    this.#o.logger.error({ acknowledgedButNotWritten: seqRange(this.#queue) }, 'audit entries of answered operations are not written yet; keyd holds them and retries')
  }

  /** Enters the unwritable state (fail-closed refuses from now on) and starts the recovery probe. */
  #fail (err: Error): void {
    if (this.#broken === null) {
      this.#broken = err
      this.#o.logger.error({ err: err.message, file: this.#o.file, failClosed: this.#o.failClosed }, this.#o.failClosed
        ? 'audit log cannot be written: keyd refuses operations until it can (it retries by itself)'
        : 'audit log cannot be written: keyd keeps signing without recording (--audit-fail-open)')
    }
    if (this.#probe === null) {
      this.#probe = setInterval(() => { void this.#tryRecover() }, this.#o.probeIntervalMs)
      this.#probe.unref()
    }
  }

  #recovering = false
  /** The probe: write what waits, then take the reserve back; both done = writable again. */
  async #tryRecover (): Promise<void> {
    if (this.#recovering || this.#fh === null) return
    this.#recovering = true
    try {
      if (this.#queue.length > 0 && !await this.#writeQueue()) return
      if (this.#reserve.held) {
        // After a failed write of the native path the reserve was kept (nothing answered waited to be
        // written into it): room for as much again beyond it is what makes the log writable again.
        const fs = await statfs(dirname(this.#o.file))
        if (fs.bavail * fs.bsize < this.#o.reserveBytes) return
      } else {
        await this.#reserve.take()
      }
      this.#broken = null
      if (this.#probe !== null) clearInterval(this.#probe)
      this.#probe = null
      this.#o.logger.info({ file: this.#o.file, seq: this.#durableSeq }, 'audit log writable again; keyd serves again')
      this.#tryAttach()
    } catch {
      // still no room: the next probe tries again
    } finally {
      this.#recovering = false
    }
  }

  #inherited: UnwrittenEntries | undefined

  /** What keyd could not write, for the checkpoint; answered entries still queued count as lost only when keyd stops (`final`). */
  #unwritten (final: boolean): UnwrittenEntries | undefined {
    const lost = final ? this.#queue.filter(q => q.acked).length : 0
    const i = this.#inherited
    if (i === undefined && lost === 0 && this.#withheld === 0 && this.#unrecorded === 0) return undefined
    return {
      acknowledged: (i?.acknowledged ?? 0) + lost,
      afterSeq: i?.afterSeq ?? (lost > 0 ? this.#durableSeq : null),
      withheld: (i?.withheld ?? 0) + this.#withheld,
      unrecorded: (i?.unrecorded ?? 0) + this.#unrecorded
    }
  }

  #checkpointRecord (seq: number, chain: string, unwritten: UnwrittenEntries | undefined): AuditCheckpoint {
    const body: Omit<AuditCheckpoint, 'mac'> = { seq, chain, time: new Date().toISOString(), durability: this.#o.durability, ...(unwritten !== undefined ? { unwritten } : {}) }
    return { ...body, mac: checkpointMac(this.#o.key, body) }
  }

  #checkpointedUnwritten = 'null'

  #writeCheckpointSync (seq: number, chain: string, unwritten: UnwrittenEntries | undefined): void {
    writeFileAtomic(this.#o.checkpointFile, JSON.stringify(this.#checkpointRecord(seq, chain, unwritten)) + '\n')
    this.#checkpointedSeq = seq
    this.#checkpointedUnwritten = JSON.stringify(unwritten ?? null)
  }

  /** Writes the MACed head checkpoint (after making the log durable), so a truncated log is detected. Off the event loop. */
  #checkpoint (): void {
    if (this.#checkpointing || this.#fh === null) return
    const unwritten = this.#unwritten(false)
    const { seq, chain } = this.#head()
    if (seq === this.#checkpointedSeq && this.#checkpointedUnwritten === JSON.stringify(unwritten ?? null)) return
    const fh = this.#fh
    this.#checkpointing = true
    fh.datasync()
      .then(async () => { await writeFileAtomicAsync(this.#o.checkpointFile, JSON.stringify(this.#checkpointRecord(seq, chain, unwritten)) + '\n') })
      .then(() => { this.#checkpointedSeq = seq; this.#checkpointedUnwritten = JSON.stringify(unwritten ?? null); this.#checkpointFailed = false }, (err: unknown) => {
        // Logged once per failure spell: on a full disk it fails every second.
        if (!this.#checkpointFailed) this.#o.logger.error({ err: errorMessage(err) }, 'audit checkpoint failed')
        this.#checkpointFailed = true
      })
      .finally(() => { this.#checkpointing = false })
  }

  /** Flushes what it can, writes the checkpoint (with an account of anything unwritten) and closes. */
  async close (): Promise<void> {
    if (this.#timer !== null) clearInterval(this.#timer)
    if (this.#probe !== null) clearInterval(this.#probe)
    this.#probe = null
    this.#sinkWanted = null
    if (this.#sink !== null) this.#detach()
    while (this.#flushing !== null) await this.#flushing
    const fh = this.#fh
    if (fh !== null && this.#queue.length > 0 && await this.#writeQueue()) this.#broken = null
    const lost = this.#queue.filter(q => q.acked)
    if (lost.length > 0) {
      this.#o.logger.error({ acknowledgedButNotWritten: lost.length, seq: seqRange(lost), afterSeq: this.#durableSeq }, 'keyd stops with audit entries of answered operations it could not write: acknowledged but not written')
    }
    const unwritten = this.#unwritten(true)
    const err = new AuditLogError('keyd stopped before the entry was written')
    for (const w of this.#waiters.splice(0)) w.reject(err)
    try {
      if (fh !== null) await fh.datasync()
      while (this.#checkpointing) await new Promise(resolve => setTimeout(resolve, 5))
      this.#writeCheckpointSync(this.#durableSeq, this.#durableChain, unwritten)
    } catch (e) {
      this.#o.logger.error({ err: errorMessage(e) }, 'audit checkpoint at stop failed')
    }
    await fh?.close()
    this.#fh = null
    // The reserve file stays: the next start takes the same blocks back, even on a full disk.
  }

  /** Size of the log file in bytes. */
  size (): number { return statSync(this.#o.file).size }
}
