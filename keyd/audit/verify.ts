// Verification of an audit log: edited, deleted, reordered or truncated entries are each reported,
// and what keyd could not write is told apart truthfully: written, acknowledged but not written,
// never acknowledged. verifyAuditLog checks a whole file offline (`audit verify`); AuditChainVerifier
// checks one line at a time (`audit export`, which follows a live log).
import { closeSync, existsSync, openSync, readFileSync, readSync } from 'node:fs'
import { GENESIS_CHAIN, nextChain, checkpointMac, type AuditEntry, type AuditCheckpoint } from './chain.js'

export interface AuditReport {
  /** Whole entries in the log (written). */
  entries: number
  lastSeq: number
  checkpointSeq: number | null
  /** The durability the last keyd wrote with (from the checkpoint), if it says. */
  durability: 'buffered' | 'fsync' | null
  /** Operations answered to a client whose entries are not in the log (each a problem too). */
  acknowledgedNotWritten: string[]
  /** Operations whose entries are not in the log but which were never answered: no gap in the record. */
  neverAcknowledged: string[]
  problems: string[]
}

/** Checks every entry's sequence and chain value, and the log against its MACed head checkpoint. */
export function verifyAuditLog (file: string, checkpointFile: string, key: Buffer): AuditReport {
  const problems: string[] = []
  const acknowledgedNotWritten: string[] = []
  const neverAcknowledged: string[] = []
  let cp: AuditCheckpoint | null = null
  let cpValid = false
  if (existsSync(checkpointFile)) {
    try { cp = JSON.parse(readFileSync(checkpointFile, 'utf8')) as AuditCheckpoint } catch { problems.push('head checkpoint is not valid JSON') }
    if (cp !== null) {
      cpValid = checkpointMac(key, cp) === cp.mac
      if (!cpValid) problems.push('head checkpoint MAC does not match: the checkpoint was edited (or another key)')
    }
  }
  const durability = cpValid && (cp?.durability === 'buffered' || cp?.durability === 'fsync') ? cp.durability : null
  const text = existsSync(file) ? readFileSync(file, 'utf8') : ''
  const lines = text.split('\n')
  if (lines[lines.length - 1] === '') lines.pop()
  else if (text !== '') {
    // keyd stopped while writing this entry; the next keyd drops it at start.
    const n = lines.length
    lines.pop()
    if (durability === 'fsync') neverAcknowledged.push(`line ${n}: a partial entry; in fsync durability its operation was answered only after a complete write, so never`)
    else {
      const what = `line ${n}: a partial entry written in ${durability ?? 'unknown'} durability${durability === 'buffered' ? ': its operation had been answered' : ': it may have been answered'}`
      acknowledgedNotWritten.push(what)
      problems.push(`${what} (acknowledged but not written)`)
    }
  }
  let prevSeq = 0
  let prevChain = GENESIS_CHAIN
  const chainAt = new Map<number, string>()
  lines.forEach((line, i) => {
    const n = i + 1
    let e: AuditEntry
    try { e = JSON.parse(line) as AuditEntry } catch { problems.push(`line ${n}: not valid JSON (edited or corrupt)`); return }
    if (e.seq !== prevSeq + 1) {
      problems.push(e.seq <= prevSeq
        ? `line ${n}: seq ${e.seq} after ${prevSeq}: entries reordered or duplicated`
        : `line ${n}: seq ${e.seq} after ${prevSeq}: ${e.seq - prevSeq - 1} entries deleted`)
    }
    const want = nextChain(key, prevChain, e)
    if (want !== e.chain && e.seq === prevSeq + 1) problems.push(`line ${n} (seq ${e.seq}): chain value does not match: the entry was edited`)
    else if (want !== e.chain) problems.push(`line ${n} (seq ${e.seq}): chain value does not follow the previous entry`)
    chainAt.set(e.seq, e.chain)
    prevSeq = e.seq
    prevChain = e.chain
  })
  if (cp === null) {
    if (lines.length > 0 && !existsSync(checkpointFile)) problems.push('no head checkpoint: truncation of the log cannot be ruled out')
  } else if (cpValid) {
    if (cp.seq > prevSeq) problems.push(`log truncated: the checkpoint vouches for seq ${cp.seq} but the log ends at seq ${prevSeq}`)
    else if ((cp.seq === 0 ? GENESIS_CHAIN : chainAt.get(cp.seq)) !== cp.chain) problems.push(`entry seq ${cp.seq} differs from the checkpoint: the log was rewritten`)
    const u = cp.unwritten
    if (u !== undefined) {
      if (u.acknowledged > 0) {
        const what = `${u.acknowledged} entries of answered operations were never written${u.afterSeq !== null ? ` (the first would have followed seq ${u.afterSeq})` : ''}: keyd could not write them before it stopped`
        acknowledgedNotWritten.push(what)
        problems.push(`${what} (acknowledged but not written)`)
      }
      if (u.withheld > 0) neverAcknowledged.push(`${u.withheld} operations whose entries could not be written were refused (AUDIT_UNAVAILABLE): never answered, not in the log`)
      if (u.unrecorded > 0) problems.push(`${u.unrecorded} operations ran without an audit entry while the log was unwritable (--audit-fail-open)`)
    }
  }
  return { entries: lines.length, lastSeq: prevSeq, checkpointSeq: cp?.seq ?? null, durability, acknowledgedNotWritten, neverAcknowledged, problems }
}

/** One line of the log as the verifier saw it. */
export interface CheckedLine {
  /** 1-based line number in the file. */
  line: number
  /** The entry, or null when the line is not JSON. */
  entry: AuditEntry | null
  /** What is wrong with this line (empty when it follows its predecessor). */
  problems: string[]
  /** True while every line from the first to this one verified: the chain from genesis is intact. */
  verified: boolean
}

/** What a head checkpoint says about the log read so far. */
export type CheckpointResult =
  | { state: 'verified', seq: number }
  /** It vouches for an entry not read yet: at the end of the file, the log was truncated. */
  | { state: 'ahead', seq: number }
  | { state: 'invalid', seq: number, problem: string }

/** Chain values kept for comparing a checkpoint read after the entries (keyd writes one a second). */
const RECENT_CHAINS = 65_536

/** Checks audit log lines in order, each against its predecessor, from the genesis chain value. */
export class AuditChainVerifier {
  readonly #key: Buffer
  #line = 0
  #prevSeq = 0
  #prevChain = GENESIS_CHAIN
  #intact = true
  #anchoredSeq = 0
  #anchoredChain = GENESIS_CHAIN
  readonly #recent = new Map<number, string>()
  readonly #watched = new Map<number, string | undefined>()

  /** `key`: the audit chain key (auditKey of the master key). */
  constructor (key: Buffer) {
    this.#key = key
  }

  /** Lines checked so far. */
  get lines (): number { return this.#line }
  /** Sequence number of the last entry read. */
  get lastSeq (): number { return this.#prevSeq }
  /** False once any line failed. */
  get intact (): boolean { return this.#intact }
  /** The highest sequence number a verified checkpoint vouched for (0: none). */
  get anchoredSeq (): number { return this.#anchoredSeq }

  /** Keeps the chain value of entry `seq` whatever its age, for a checkpoint read before the log. */
  watch (seq: number): void {
    if (!this.#watched.has(seq)) this.#watched.set(seq, undefined)
  }

  /** Checks the next line (without its newline). */
  push (text: string): CheckedLine {
    const n = ++this.#line
    let e: AuditEntry
    try {
      e = JSON.parse(text) as AuditEntry
    } catch {
      this.#intact = false
      return { line: n, entry: null, problems: [`line ${n}: not valid JSON (edited or corrupt)`], verified: false }
    }
    const problems: string[] = []
    const prevSeq = this.#prevSeq
    if (e.seq !== prevSeq + 1) {
      problems.push(e.seq <= prevSeq
        ? `line ${n}: seq ${e.seq} after ${prevSeq}: entries reordered or duplicated`
        : `line ${n}: seq ${e.seq} after ${prevSeq}: ${e.seq - prevSeq - 1} entries deleted`)
    }
    const want = nextChain(this.#key, this.#prevChain, e)
    if (want !== e.chain && e.seq === prevSeq + 1) problems.push(`line ${n} (seq ${e.seq}): chain value does not match: the entry was edited`)
    else if (want !== e.chain) problems.push(`line ${n} (seq ${e.seq}): chain value does not follow the previous entry`)
    // The next line is judged against what this one claims, so each tampered place is named once.
    this.#prevSeq = e.seq
    this.#prevChain = e.chain
    this.#recent.set(e.seq, e.chain)
    if (this.#recent.size > RECENT_CHAINS) this.#recent.delete(this.#recent.keys().next().value as number)
    if (this.#watched.has(e.seq)) this.#watched.set(e.seq, e.chain)
    if (problems.length > 0) this.#intact = false
    return { line: n, entry: e, problems, verified: this.#intact }
  }

  /** Checks a head checkpoint against the entries read so far; a verified one anchors them. */
  checkpoint (cp: AuditCheckpoint): CheckpointResult {
    const seq = cp.seq
    if (!Number.isInteger(seq) || seq < 0 || typeof cp.chain !== 'string' || typeof cp.time !== 'string' || checkpointMac(this.#key, cp) !== cp.mac) {
      return { state: 'invalid', seq, problem: 'head checkpoint MAC does not match: the checkpoint was edited (or another key)' }
    }
    if (seq > this.#prevSeq) return { state: 'ahead', seq }
    if (seq < this.#anchoredSeq) {
      return { state: 'invalid', seq, problem: `head checkpoint went back from seq ${this.#anchoredSeq} to ${seq}: the log was cut and keyd restarted on it` }
    }
    const at = seq === 0 ? GENESIS_CHAIN : seq === this.#anchoredSeq ? this.#anchoredChain : this.#recent.get(seq) ?? this.#watched.get(seq)
    if (at !== cp.chain) return { state: 'invalid', seq, problem: `entry seq ${seq} differs from the checkpoint: the log was rewritten` }
    this.#anchoredSeq = seq
    this.#anchoredChain = cp.chain
    return { state: 'verified', seq }
  }
}

/** The head checkpoint file: undefined if absent, null if it is not JSON. */
export function readCheckpoint (file: string): AuditCheckpoint | null | undefined {
  if (!existsSync(file)) return undefined
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as AuditCheckpoint
  } catch {
    return null
  }
}

/**
 * Calls `onLine` with each complete line of `file` from byte `start` to byte `end` (default: its
 * size now), reading 64 KiB at a time. Returns the offset after the last complete line and the
 * bytes of an unfinished last line (no newline yet), if any.
 */
export function forEachLine (file: string, onLine: (text: string) => void, start = 0, end = Infinity): { offset: number, partial: Buffer } {
  const fd = openSync(file, 'r')
  const buf = Buffer.alloc(65_536)
  let pending: Buffer = Buffer.alloc(0)
  let offset = start
  let pos = start
  try {
    for (;;) {
      const want = Math.min(buf.length, end - pos)
      if (want <= 0) break
      const n = readSync(fd, buf, 0, want, pos)
      if (n === 0) break
      pos += n
      let chunk = pending.length === 0 ? buf.subarray(0, n) : Buffer.concat([pending, buf.subarray(0, n)])
      for (let nl = chunk.indexOf(0x0a); nl !== -1; nl = chunk.indexOf(0x0a)) {
        onLine(chunk.subarray(0, nl).toString('utf8'))
        offset += nl + 1
        chunk = chunk.subarray(nl + 1)
      }
      pending = Buffer.from(chunk)
    }
  } finally {
    closeSync(fd)
  }
  return { offset, partial: pending }
}
