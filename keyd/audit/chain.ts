// The audit log's record format and keyed hash chain, shared by the writer and the offline verifier.
import { createHmac, hkdfSync } from 'node:crypto'

export interface AuditRecord {
  seq: number
  time: string
  client: string
  op: string
  key: string | null
  version: number | null
  result: string
  /** SHA-256 of the signed message, hex; never the message itself. */
  msgSha256: string | null
}

export interface AuditEntry extends AuditRecord { chain: string }

/**
 * What keyd could not write, added up over every keyd that used this log (each carries it over):
 * `acknowledged` = entries of operations answered to clients (buffered durability) that never reached
 * the log, the first of them after entry `afterSeq`; `withheld` = operations whose answers keyd withheld
 * because their entries could not be written (never acknowledged, not in the log); `unrecorded` =
 * operations run without an entry under --audit-fail-open.
 */
export interface UnwrittenEntries { acknowledged: number, afterSeq: number | null, withheld: number, unrecorded: number }

/**
 * The MACed head of the log: the last entry on disk (`seq`, `chain`), the durability the writer used
 * (so a partial last line is classified truthfully at restart), and what it could not write.
 */
export interface AuditCheckpoint { seq: number, chain: string, time: string, mac: string, durability?: 'buffered' | 'fsync', unwritten?: UnwrittenEntries }

export const GENESIS_CHAIN = '0'.repeat(64)

/** The audit chain key, derived from the master key (so only the keystore's owner can extend or verify the chain). */
export function auditKey (masterKey: Uint8Array): Buffer {
  return Buffer.from(hkdfSync('sha256', masterKey, Buffer.from('keyedge'), Buffer.from('audit-chain-v1'), 32))
}

/** Canonical bytes of a record: fixed field order, so the writer and the verifier hash the same text. */
export function canonical (r: AuditRecord): string {
  return JSON.stringify({ seq: r.seq, time: r.time, client: r.client, op: r.op, key: r.key, version: r.version, result: r.result, msgSha256: r.msgSha256 })
}

/**
 * The canonical text of a record after its seq and time: `"client":…}`. keyd's native chain
 * (keyd/native/chain.c) writes `{"seq":N,"time":"T",` before it, which makes canonical(record).
 */
export function canonicalTail (r: Omit<AuditRecord, 'seq' | 'time'>): string {
  return JSON.stringify({ client: r.client, op: r.op, key: r.key, version: r.version, result: r.result, msgSha256: r.msgSha256 }).slice(1)
}

/** The start of canonicalTail for a SIGN by `client` with `key`, up to its version's value (the native path adds the rest). */
export function signTailHead (client: string, key: string): string {
  return JSON.stringify({ client, op: 'SIGN', key }).slice(1, -1) + ',"version":'
}

/** chain(n) = HMAC-SHA256(K, chain(n-1) ‖ canonical(record n)); `text` is canonical(r) when already at hand. */
export function nextChain (key: Uint8Array, prev: string, r: AuditRecord, text = canonical(r)): string {
  return createHmac('sha256', key).update(prev).update(text).digest('hex')
}

/** The checkpoint's MAC over every field (the original four alone for a checkpoint of an older keyd without the others). */
export function checkpointMac (key: Uint8Array, cp: Omit<AuditCheckpoint, 'mac'>): string {
  const extra = cp.durability === undefined && cp.unwritten === undefined ? '' : '|' + JSON.stringify({ durability: cp.durability ?? null, unwritten: cp.unwritten ?? null })
  return createHmac('sha256', key).update(`checkpoint|${cp.seq}|${cp.chain}|${cp.time}${extra}`).digest('hex')
}

/** Serialises an entry as one log line (record fields in canonical order, then the chain). */
export function entryLine (e: AuditEntry, text = canonical(e)): string {
  return lineOf(e.chain, text)
}

/** The log line of an entry whose canonical text is `text` and chain value `chain` (no entry object built). */
export function lineOf (chain: string, text: string): string {
  return text.slice(0, -1) + `,"chain":"${chain}"}\n`
}
