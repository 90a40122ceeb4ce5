// What keyd records about one request: who, what, which key, the outcome, and a hash of the message.
import { createHash } from 'node:crypto'
import { Op, Tag, readStr, readUint } from '../protocol/codec.js'
import type { AuditRecord } from './chain.js'

const OP_NAMES = new Map<number, string>(Object.entries(Op).map(([k, v]) => [v, k]))

/** The opcode's name from PROTOCOL.md, or its hex value. */
export function opName (opcode: number): string {
  return OP_NAMES.get(opcode) ?? `0x${opcode.toString(16)}`
}

export function auditRecordFor (client: string, opcode: number, items: Map<number, Uint8Array>, result: string): Omit<AuditRecord, 'seq' | 'time'> {
  const msg = items.get(Tag.MESSAGE)
  const version = readUint(items, Tag.KEY_VERSION, 4)
  return {
    client,
    op: opName(opcode),
    key: readStr(items, Tag.KEY_NAME)?.slice(0, 64) ?? null,
    version: typeof version === 'number' ? version : null,
    result,
    msgSha256: msg === undefined ? null : createHash('sha256').update(msg).digest('hex')
  }
}
