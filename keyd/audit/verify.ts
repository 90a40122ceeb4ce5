// Offline verification of an audit log: edited, deleted, reordered or truncated entries are each reported.
import { existsSync, readFileSync } from 'node:fs'
import { GENESIS_CHAIN, nextChain, checkpointMac, type AuditEntry, type AuditCheckpoint } from './chain.js'

export interface AuditReport { entries: number, lastSeq: number, checkpointSeq: number | null, problems: string[] }

/** Checks every entry's sequence and chain value, and the log against its MACed head checkpoint. */
export function verifyAuditLog (file: string, checkpointFile: string, key: Buffer): AuditReport {
  const problems: string[] = []
  const text = existsSync(file) ? readFileSync(file, 'utf8') : ''
  const lines = text.split('\n')
  if (lines[lines.length - 1] === '') lines.pop()
  else if (text !== '') problems.push(`line ${lines.length}: partial last entry (no newline)`)
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
  let checkpointSeq: number | null = null
  if (!existsSync(checkpointFile)) {
    if (lines.length > 0) problems.push('no head checkpoint: truncation of the log cannot be ruled out')
  } else {
    let cp: AuditCheckpoint | null = null
    try { cp = JSON.parse(readFileSync(checkpointFile, 'utf8')) as AuditCheckpoint } catch { problems.push('head checkpoint is not valid JSON') }
    if (cp !== null) {
      checkpointSeq = cp.seq
      if (checkpointMac(key, cp.seq, cp.chain, cp.time) !== cp.mac) problems.push('head checkpoint MAC does not match: the checkpoint was edited (or another key)')
      else if (cp.seq > prevSeq) problems.push(`log truncated: the checkpoint vouches for seq ${cp.seq} but the log ends at seq ${prevSeq}`)
      else if ((cp.seq === 0 ? GENESIS_CHAIN : chainAt.get(cp.seq)) !== cp.chain) problems.push(`entry seq ${cp.seq} differs from the checkpoint: the log was rewritten`)
    }
  }
  return { entries: lines.length, lastSeq: prevSeq, checkpointSeq, problems }
}
