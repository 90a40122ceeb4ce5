// What keyd records about one request: who, what, which key, the outcome, and a hash of the message.
import { hash } from 'node:crypto'
import { Op, Tag, HEADER_SIZE, ItemMap, parseItems, readStr, readUint, errorCodeName, opName } from '../protocol/codec.js'
import type { AuditRecord } from './chain.js'

// Audit records read the request's items leniently (no typed decode): a refused request, even a
// malformed one, is still recorded with whatever key name and version it carried.

export function auditRecordFor (client: string, opcode: number, items: Map<number, Uint8Array>, result: string): Omit<AuditRecord, 'seq' | 'time'> {
  const msg = items.get(Tag.MESSAGE)
  const version = readUint(items, Tag.KEY_VERSION, 4)
  return {
    client,
    op: opName(opcode),
    key: readStr(items, Tag.KEY_NAME)?.slice(0, 64) ?? null,
    version: typeof version === 'number' ? version : null,
    result,
    // The one-shot digest: a third of createHash's cost for a message this small (no Hash object).
    msgSha256: msg === undefined ? null : hash('sha256', msg, 'hex')
  }
}

/**
 * One record per entry of a SIGN_BATCH, each with its own key, message hash and outcome (read
 * from the answer frame), so a batch is audited exactly like the same signatures sent one by one.
 */
export function batchAuditRecords (client: string, items: Map<number, Uint8Array>, answer: Buffer): Array<Omit<AuditRecord, 'seq' | 'time'>> {
  const requests = items instanceof ItemMap ? items.all(Tag.ENTRY) : []
  const answered = parseItems(answer.subarray(HEADER_SIZE))
  const results = answered instanceof ItemMap ? answered.all(Tag.ENTRY) : []
  return requests.map((raw, i) => {
    const entry = parseItems(raw) ?? new Map<number, Uint8Array>()
    const res = results[i] === undefined ? null : parseItems(results[i])
    const code = res === null ? undefined : readUint(res, Tag.ERROR_CODE, 2)
    return auditRecordFor(client, Op.SIGN_BATCH, entry, typeof code === 'number' ? errorCodeName(code) : res === null ? 'unanswered' : 'ok')
  })
}
