// The dispatch table: every operation keyd answers after HELLO, from the modules of keyd/server/ops/,
// and the one place that applies what all operations share, in this order: the seal state (SEALED),
// the audit log's fail-closed state (AUDIT_UNAVAILABLE), the client's right (FORBIDDEN), the handler,
// then metrics and the audit entry. With fsync audit durability the answer leaves keyd only once its
// audit entry is on disk. Per-signature checks (key grants, policy, rate limits) are in access.ts.
import type { Logger } from 'pino'
import { ErrorCode, Op, Tag, RESPONSE_BIT, errorCodeName, opName } from '../protocol/spec.js'
import { encodeError, encodeFrame, readStr, type Frame, type ItemMap } from '../protocol/codec.js'
import { Refusal } from '../errors.js'
import { errorMessage } from '../../lib/errors.js'
import type { Keystore } from '../keystore/keystore.js'
import type { AuditLog } from '../audit/audit-log.js'
import { auditRecordFor, batchAuditRecords } from '../audit/record.js'
import type { KeyPolicy } from '../policy/key-policy.js'
import type { CustodyKeys } from '../keystore/custody-keys.js'
import type { BackupService } from '../backup/backup-service.js'
import type { KeydMetrics } from './metrics.js'
import type { Client } from './clients.js'
import { authorizeRight } from './access.js'
import type { Sealer } from './sealer.js'
import type { OpContext, OpEntry, OpResult, SignStats } from './context.js'
import { pingOps } from './ops/ping.js'
import { publicKeyOps } from './ops/public-key.js'
import { signOps } from './ops/sign.js'
import { ticketKeyOps } from './ops/ticket-keys.js'
import { keyAdminOps } from './ops/key-admin.js'
import { keyImportOps } from './ops/key-import.js'
import { attestOps } from './ops/attest.js'
import { backupOps } from './ops/backup.js'
import { sealOps } from './ops/seal.js'

function table (entries: OpEntry[]): ReadonlyMap<number, OpEntry> {
  const map = new Map<number, OpEntry>()
  for (const e of entries) {
    if (map.has(e.op)) throw new Error(`two dispatch entries for ${opName(e.op)}`)
    map.set(e.op, e)
  }
  return map
}

/** Every operation after HELLO, by opcode. */
export const OP_TABLE = table([
  ...pingOps, ...publicKeyOps, ...signOps, ...ticketKeyOps, ...keyAdminOps, ...keyImportOps, ...attestOps, ...backupOps, ...sealOps
])

/** An opcode keyd does not know: refused like a handler failure, so it is counted and audited. */
function unknownOp (opcode: number): OpEntry {
  return { op: opcode, right: null, handle: () => { throw new Refusal(ErrorCode.UNKNOWN_OPCODE, `unknown opcode 0x${opcode.toString(16)}`) } }
}

/** The server's live state the dispatcher reads at every request (a sealed keyd fills it in at unseal). */
export interface DispatchState {
  keystore: Keystore | null
  audit: AuditLog | null
  custody: CustodyKeys | null
  backup: BackupService | null
  policy: KeyPolicy
  metrics: KeydMetrics | null
  logger: Logger
}

const SEALED_MESSAGE = 'keyd is sealed: unseal it with "keyedge keyd unseal" (threshold shares)'
const AUDIT_MESSAGE = 'the audit log cannot be written; keyd is fail-closed'

interface Outcome { answer: Buffer, result: string }

export class Dispatcher {
  readonly #state: DispatchState
  readonly #stats: SignStats
  readonly #sealer: Sealer | undefined

  constructor (state: DispatchState, stats: SignStats, sealer?: Sealer) {
    this.#state = state
    this.#stats = stats
    this.#sealer = sealer
  }

  /** An ERROR frame for a request refused before any operation ran, counted as a refusal. */
  refuse (requestId: number, code: number, message: string): Buffer {
    this.#stats.refused++
    this.#state.metrics?.refused(errorCodeName(code))
    return encodeError(requestId, code, message)
  }

  /**
   * Answers one request of an authenticated client. Synchronous unless the handler waits (UNSEAL)
   * or the audit entry must reach the disk before the answer leaves (fsync durability).
   * @param arrivedAt performance.now() when the frame's bytes arrived (queue time in metrics)
   */
  run (client: Client, f: Frame, items: ItemMap, arrivedAt: number): Buffer | Promise<Buffer> {
    const s = this.#state
    const entry = OP_TABLE.get(f.opcode) ?? unknownOp(f.opcode)
    if (s.keystore === null && entry.whileSealed !== true) return this.refuse(f.requestId, ErrorCode.SEALED, SEALED_MESSAGE)
    const audit = entry.unaudited === true ? null : s.audit
    if (audit !== null && audit.failClosed && !audit.writable) return this.refuse(f.requestId, ErrorCode.AUDIT_UNAVAILABLE, AUDIT_MESSAGE)
    const started = performance.now()
    const done = (o: Outcome): Buffer | Promise<Buffer> => this.#finish(client, f, items, audit, o, (started - arrivedAt) / 1000, (performance.now() - started) / 1000)
    let out: OpResult
    try {
      authorizeRight(client, entry.right)
      out = entry.handle(this.#context(client), items)
    } catch (err) {
      return done(this.#failure(f, err))
    }
    if (out instanceof Promise) {
      return out.then(answer => ({ answer: encodeFrame(f.opcode | RESPONSE_BIT, f.requestId, answer), result: 'ok' }), (err: unknown) => this.#failure(f, err)).then(done)
    }
    return done({ answer: encodeFrame(f.opcode | RESPONSE_BIT, f.requestId, out), result: 'ok' })
  }

  #context (client: Client): OpContext {
    const s = this.#state
    return {
      client,
      get keystore (): Keystore {
        if (s.keystore === null) throw new Refusal(ErrorCode.SEALED, SEALED_MESSAGE)
        return s.keystore
      },
      stats: this.#stats,
      policy: s.policy,
      custody: s.custody,
      backup: s.backup,
      sealer: this.#sealer,
      logger: s.logger
    }
  }

  /** The ERROR frame of a failed operation: a Refusal's own code, anything else INTERNAL (and logged). */
  #failure (f: Frame, err: unknown): Outcome {
    this.#stats.refused++
    if (err instanceof Refusal) return { answer: encodeError(f.requestId, err.wire, err.message), result: errorCodeName(err.wire) }
    this.#state.logger.error({ err: errorMessage(err), op: f.opcode }, 'keyd request failed')
    return { answer: encodeError(f.requestId, ErrorCode.INTERNAL, 'internal error: ' + errorMessage(err)), result: errorCodeName(ErrorCode.INTERNAL) }
  }

  #finish (client: Client, f: Frame, items: ItemMap, audit: AuditLog | null, o: Outcome, queueSec: number, execSec: number): Buffer | Promise<Buffer> {
    // Label refusals without the key: a client could otherwise mint label values.
    this.#state.metrics?.observe(opName(f.opcode), o.result === 'ok' ? (readStr(items, Tag.KEY_NAME) ?? null) : null, o.result, queueSec, execSec)
    if (audit === null) return o.answer
    const written = f.opcode === Op.SIGN_BATCH && o.result === 'ok'
      ? Promise.all(batchAuditRecords(client.name, items, o.answer).map(async r => await audit.record(r))).then(() => {})
      : audit.record(auditRecordFor(client.name, f.opcode, items, o.result))
    if (audit.durability === 'buffered') {
      written.catch(() => {})
      return o.answer
    }
    // fsync durability: nothing leaves keyd before its audit entry is on disk.
    return written.then(() => o.answer, () => audit.failClosed ? this.refuse(f.requestId, ErrorCode.AUDIT_UNAVAILABLE, AUDIT_MESSAGE) : o.answer)
  }
}
