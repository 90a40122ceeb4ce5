// The dispatch table: every operation keyd answers after HELLO, from the modules of keyd/server/ops/,
// and the one place that applies what all operations share, in this order: the seal state (SEALED),
// the audit log's fail-closed state (AUDIT_UNAVAILABLE), the client's right (FORBIDDEN), the handler,
// then metrics and the audit entry. With fsync audit durability the answer leaves keyd only once its
// audit entry is on disk. Per-signature checks (key grants, policy, rate limits) are in access.ts.
import type { Logger } from 'pino'
import { ErrorCode, Op, Tag, RESPONSE_BIT, errorCodeName, opName, type ErrorName } from '../protocol/spec.js'
import { encodeError, encodeFrame, readStr, type Frame, type ItemMap } from '../protocol/codec.js'
import { KeydError, Refusal } from '../errors.js'
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

  /** Counts a refusal keyd answers before any operation ran (also the connection's own: oversized frames, memory bounds). */
  countRefusal (code: number): void {
    this.#stats.refused++
    this.#state.metrics?.refused(errorCodeName(code))
  }

  /** An ERROR frame for a request refused before any operation ran, counted as a refusal. */
  refuse (requestId: number, code: number, message: string): Buffer {
    this.countRefusal(code)
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
    // keyd's wrapping key is generated off the event loop at first start; an admin request in those first seconds waits for it.
    const custody = s.custody
    if (custody !== null && !custody.isReady && f.opcode >= Op.KEY_CREATE && entry.whileSealed !== true) {
      return custody.ready.then(() => this.run(client, f, items, arrivedAt), () => this.run(client, f, items, arrivedAt))
    }
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

  /** One context per client object (clients.json reloads make new ones): not an object and a getter per request. */
  readonly #contexts = new WeakMap<Client, OpContext>()

  #context (client: Client): OpContext {
    let ctx = this.#contexts.get(client)
    if (ctx === undefined) {
      ctx = this.#newContext(client)
      this.#contexts.set(client, ctx)
    }
    return ctx
  }

  #newContext (client: Client): OpContext {
    const s = this.#state
    return {
      client,
      get keystore (): Keystore {
        if (s.keystore === null) throw new Refusal(ErrorCode.SEALED, SEALED_MESSAGE)
        return s.keystore
      },
      stats: this.#stats,
      // Read live (the context is kept): a restore replaces the policy, unseal sets custody and backup.
      get policy (): KeyPolicy { return s.policy },
      get custody (): CustodyKeys | null { return s.custody },
      get backup (): BackupService | null { return s.backup },
      sealer: this.#sealer,
      get logger (): Logger { return s.logger }
    }
  }

  /**
   * The ERROR frame of a failed operation: a Refusal's own code, a KeydError whose code names a wire
   * error (TOKEN_TIMEOUT from the PKCS#11 keystore) that code, anything else INTERNAL (and logged).
   */
  #failure (f: Frame, err: unknown): Outcome {
    this.#stats.refused++
    if (err instanceof Refusal) return { answer: encodeError(f.requestId, err.wire, err.message), result: errorCodeName(err.wire) }
    const wire = err instanceof KeydError ? wireCode(err.code) : undefined
    if (wire !== undefined) return { answer: encodeError(f.requestId, wire, err instanceof Error ? err.message : ''), result: errorCodeName(wire) }
    this.#state.logger.error({ err: errorMessage(err), op: f.opcode }, 'keyd request failed')
    return { answer: encodeError(f.requestId, ErrorCode.INTERNAL, 'internal error: ' + errorMessage(err)), result: errorCodeName(ErrorCode.INTERNAL) }
  }

  #finish (client: Client, f: Frame, items: ItemMap, audit: AuditLog | null, o: Outcome, queueSec: number, execSec: number): Buffer | Promise<Buffer> {
    const metrics = this.#state.metrics
    // Label refusals without the key: a client could otherwise mint label values.
    metrics?.observe(opName(f.opcode), o.result === 'ok' ? (readStr(items, Tag.KEY_NAME) ?? null) : null, o.result, queueSec, execSec)
    const batch = f.opcode === Op.SIGN_BATCH && o.result === 'ok' && (audit !== null || metrics !== null) ? batchAuditRecords(client.name, items, o.answer) : null
    const violations = o.result === 'USAGE_FORBIDDEN' ? 1 : batch?.filter(r => r.result === 'USAGE_FORBIDDEN').length ?? 0
    if (violations > 0) this.#accessViolation(client, f, items, violations)
    if (audit === null) return o.answer
    // An answer whose audit entry cannot be written: refused when fail-closed, else sent (fail-open).
    const unaudited = (): Buffer => audit.failClosed ? this.refuse(f.requestId, ErrorCode.AUDIT_UNAVAILABLE, AUDIT_MESSAGE) : o.answer
    if (batch === null) {
      // One entry (every request but SIGN_BATCH): no arrays on the per-signature path.
      let wait: Promise<void> | null
      try {
        wait = audit.append(auditRecordFor(client.name, f.opcode, items, o.result))
      } catch {
        return unaudited()
      }
      return wait === null ? o.answer : wait.then(() => o.answer, unaudited)
    }
    let waits: Array<Promise<void>>
    try {
      // append answers null when the entry is queued and covered by the space reserve (buffered
      // durability: answer now), a promise when the answer must wait for the write (fsync, or
      // buffered entries beyond what the reserve covers); it throws when the log is unwritable.
      waits = batch.map(r => audit.append(r)).filter((w): w is Promise<void> => w !== null)
    } catch {
      return unaudited() // the log became unwritable while this request ran
    }
    if (waits.length === 0) return o.answer
    return Promise.all(waits).then(() => o.answer, unaudited)
  }

  #lastViolationLog = 0
  /** A request outside the client's rights: counted, and logged (at most once a second: a compromised client could flood the log). */
  #accessViolation (client: Client, f: Frame, items: ItemMap, count: number): void {
    this.#state.metrics?.accessViolation(client.name, count)
    const now = Date.now()
    if (now - this.#lastViolationLog < 1000) return
    this.#lastViolationLog = now
    this.#state.logger.warn({ client: client.name, op: opName(f.opcode), key: readStr(items, Tag.KEY_NAME)?.slice(0, 64) ?? null, count }, 'keyd refused a request outside the client\'s rights (USAGE_FORBIDDEN): access violation')
  }
}

/** The wire code a KeydError's code names (`KEYD_ERR_TOKEN_TIMEOUT` → TOKEN_TIMEOUT), if any. */
function wireCode (code: string): number | undefined {
  const name = code.startsWith('KEYD_ERR_') ? code.slice('KEYD_ERR_'.length) : ''
  return Object.hasOwn(ErrorCode, name) ? ErrorCode[name as ErrorName] : undefined
}
