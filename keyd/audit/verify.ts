// Offline verification of an audit log: edited, deleted, reordered or truncated entries are each
// reported, and what keyd could not write is told apart truthfully: written, acknowledged but not
// written, never acknowledged.
import { existsSync, readFileSync } from 'node:fs'
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
