// keyd's append-only audit log: batched appends (group commit), a keyed hash chain, and a MACed head checkpoint.
import { openSync, closeSync, readFileSync, existsSync, truncateSync, statSync } from 'node:fs'
import { open as openAsync, type FileHandle } from 'node:fs/promises'
import type { Logger } from 'pino'
import { writeFileAtomic } from '../keystore/atomic-file.js'
import { GENESIS_CHAIN, nextChain, entryLine, checkpointMac, canonical, type AuditRecord, type AuditCheckpoint } from './chain.js'
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
  /** `fsync`: an operation is answered only once its entry is on disk. `buffered`: appended within one event-loop turn. */
  durability: 'fsync' | 'buffered'
  /** Refuse every operation once the log cannot be written. */
  failClosed: boolean
  checkpointIntervalMs?: number
}

/** How long buffered mode gathers entries before one append. */
export const BUFFERED_DELAY_MS = 2

export const AUDIT_DEFAULTS = { durability: 'buffered' as const, failClosed: true, checkpointIntervalMs: 1000 }

type NewRecord = Omit<AuditRecord, 'seq' | 'time'>

export class AuditLog {
  readonly #o: Required<AuditLogOptions>
  #fh: FileHandle | null = null
  #seq: number
  #chain: string
  #pending: string[] = []
  /** One promise per batch, shared by every entry in it (no allocation per entry). */
  #batch: { done: Promise<void>, resolve: () => void, reject: (e: Error) => void } | null = null
  #flushing: Promise<void> | null = null
  #broken: Error | null = null
  #durableSeq: number
  #checkpointedSeq: number
  #timer: NodeJS.Timeout | null = null
  written = 0

  private constructor (o: Required<AuditLogOptions>, seq: number, chain: string) {
    this.#o = o
    this.#seq = seq
    this.#chain = chain
    this.#durableSeq = seq
    this.#checkpointedSeq = -1
  }

  /**
   * Opens (creating, 0600) the log, drops a partial last line left by a crash, and resumes the chain.
   * @throws AuditLogError if the last complete entry does not parse.
   */
  static async open (opts: AuditLogOptions): Promise<AuditLog> {
    const o = { ...AUDIT_DEFAULTS, ...opts }
    let seq = 0
    let chain = GENESIS_CHAIN
    if (existsSync(o.file) && statSync(o.file).isFile()) {
      const text = readFileSync(o.file, 'utf8')
      const end = text.lastIndexOf('\n') + 1
      if (end < text.length) {
        truncateSync(o.file, Buffer.byteLength(text.slice(0, end)))
        o.logger.warn({ file: o.file, bytes: Buffer.byteLength(text.slice(end)) }, 'audit log ended with a partial entry (crash while writing); it was never acknowledged and has been dropped')
      }
      const lines = text.slice(0, end).split('\n').filter(l => l !== '')
      if (lines.length > 0) {
        try {
          const last = JSON.parse(lines[lines.length - 1]) as { seq: number, chain: string }
          if (!Number.isInteger(last.seq) || !/^[0-9a-f]{64}$/.test(last.chain)) throw new Error('bad fields')
          seq = last.seq
          chain = last.chain
        } catch (err) {
          throw new AuditLogError(`the last entry of ${o.file} is corrupt; run "keyedge keyd audit verify" and move the log aside to start a new one`, { cause: err })
        }
      }
    }
    closeSync(openSync(o.file, 'a', 0o600))
    const log = new AuditLog(o, seq, chain)
    // A checkpoint of the head as found, at once: a keyd killed before its first timer tick still leaves one.
    log.#writeCheckpoint(seq, chain)
    log.#fh = await openAsync(o.file, 'a', 0o600)
    log.#timer = setInterval(() => { log.#checkpoint() }, o.checkpointIntervalMs)
    log.#timer.unref()
    return log
  }

  /** False once a write failed: with failClosed, keyd then refuses operations. */
  get writable (): boolean { return this.#broken === null }
  get seq (): number { return this.#seq }
  /** Entries recorded but not yet on disk. */
  get backlog (): number { return this.#seq - this.#durableSeq }
  get failClosed (): boolean { return this.#o.failClosed }
  get durability (): 'fsync' | 'buffered' { return this.#o.durability }

  /** Appends an entry; resolves once it is written (and fsynced in `fsync` durability). */
  async record (r: NewRecord): Promise<void> {
    if (this.#broken !== null) throw new AuditLogError(`audit log not writable: ${this.#broken.message}`)
    const rec: AuditRecord = { seq: this.#seq + 1, time: new Date().toISOString(), ...r }
    const text = canonical(rec)
    this.#chain = nextChain(this.#o.key, this.#chain, rec, text)
    this.#seq = rec.seq
    this.#pending.push(entryLine({ ...rec, chain: this.#chain }, text))
    if (this.#batch === null) {
      let resolve!: () => void
      let reject!: (e: Error) => void
      const done = new Promise<void>((res, rej) => { resolve = res; reject = rej })
      this.#batch = { done, resolve, reject }
    }
    const done = this.#batch.done
    if (this.#flushing === null) this.#flushing = this.#flushLoop()
    return await done
  }

  async #flushLoop (): Promise<void> {
    // Group commit: everything recorded while one write is under way goes out in the next one.
    // Buffered mode also waits a couple of milliseconds so one write carries many entries.
    await new Promise<void>(resolve => this.#o.durability === 'buffered' ? setTimeout(resolve, BUFFERED_DELAY_MS) : setImmediate(resolve))
    while (this.#pending.length > 0) {
      const lines = this.#pending
      const batch = this.#batch
      const upTo = this.#seq
      this.#pending = []
      this.#batch = null
      try {
        const fh = this.#fh
        if (fh === null) throw new Error('audit log closed')
        await fh.write(lines.join(''))
        if (this.#o.durability === 'fsync') await fh.datasync()
        this.#durableSeq = upTo
        this.written += lines.length
        batch?.resolve()
      } catch (err) {
        this.#broken = err instanceof Error ? err : new Error(errorMessage(err))
        this.#o.logger.error({ err: errorMessage(err), file: this.#o.file }, 'audit log write failed')
        const e = new AuditLogError(`audit log write failed: ${errorMessage(err)}`)
        batch?.reject(e)
        ;(this.#batch as { reject: (e: Error) => void } | null)?.reject(e)
        this.#batch = null
        this.#pending = []
      }
    }
    this.#flushing = null
  }

  /** Writes the MACed head checkpoint (after making the log durable), so a truncated log is detected. */
  #checkpoint (): void {
    if (this.#durableSeq === this.#checkpointedSeq || this.#broken !== null) return
    const seq = this.#durableSeq
    const chain = seq === this.#seq ? this.#chain : null
    if (chain === null) return // mid-flush: the chain value of seq is not at hand; next tick
    const fh = this.#fh
    if (fh === null) return
    fh.datasync().then(() => { this.#writeCheckpoint(seq, chain) }).catch(err => { this.#o.logger.error({ err: errorMessage(err) }, 'audit checkpoint failed') })
  }

  #writeCheckpoint (seq: number, chain: string): void {
    const time = new Date().toISOString()
    const cp: AuditCheckpoint = { seq, chain, time, mac: checkpointMac(this.#o.key, seq, chain, time) }
    writeFileAtomic(this.#o.checkpointFile, JSON.stringify(cp) + '\n')
    this.#checkpointedSeq = seq
  }

  /** Flushes, writes the checkpoint and closes. */
  async close (): Promise<void> {
    if (this.#timer !== null) clearInterval(this.#timer)
    while (this.#flushing !== null) await this.#flushing
    const fh = this.#fh
    if (fh !== null && this.#broken === null) {
      await fh.datasync()
      this.#writeCheckpoint(this.#seq, this.#chain)
    }
    await fh?.close()
    this.#fh = null
  }

  /** Size of the log file in bytes. */
  size (): number { return statSync(this.#o.file).size }
}
