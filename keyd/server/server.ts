// keyd's socket server: accepts unix-socket connections, authenticates them, and answers framed requests.
import { createServer, connect, type Server, type Socket } from 'node:net'
import { chmodSync, existsSync, unlinkSync, mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import { once } from 'node:events'
import type { Logger } from 'pino'
import {
  Op, Tag, ErrorCode, PROTOCOL_VERSION, DEFAULT_MAX_FRAME, HEADER_SIZE,
  parseItems, readStr, readUint, encodeFrame, encodeError, itemStr, errorCodeName, type Frame, type ErrorCodeName
} from '../protocol/codec.js'
import { handle, Refusal, type SignStats } from './handlers.js'
import { Connection } from './connection.js'
import { CONNECTION_LIMITS, MemoryBudget, type ConnectionLimits } from './limits.js'
import type { ClientRegistry, Client } from './clients.js'
import type { Keystore, MaybeAsync } from '../keystore/keystore.js'
import { KeydConfigError, KeydError } from '../errors.js'
import type { AuditLog } from '../audit/audit-log.js'
import { decodeShare, type Share } from '../keystore/shamir.js'
import { auditRecordFor, batchAuditRecords, opName } from '../audit/record.js'
import type { KeydMetrics } from './metrics.js'
import { KeyPolicy } from '../policy/key-policy.js'
import type { CustodyKeys } from '../keystore/custody-keys.js'
import type { BackupService } from '../backup/backup-service.js'

export interface KeydServerOptions {
  socketPath: string
  /** null while sealed: every key operation is refused with SEALED until UNSEAL rebuilds the master key. */
  keystore: Keystore | null
  /** For a Shamir-sealed keystore: how many shares, and what to do once they are all in. */
  sealed?: { threshold: number, unseal: (shares: Share[]) => Promise<{ keystore: Keystore, audit: AuditLog | null, custody?: CustodyKeys | null }> }
  clients: ClientRegistry
  logger: Logger
  devMode: boolean
  maxFrameBytes?: number
  /** Requests in flight per connection before OVERLOADED. */
  maxInFlight?: number
  maxConnections?: number
  /** A connection that has not sent HELLO by then is closed. */
  helloTimeoutMs?: number
  /** Every operation but PING is appended here; null = no audit (benchmarks only). */
  audit?: AuditLog | null
  metrics?: KeydMetrics | null
  policy?: KeyPolicy
  /** keyd's own attestation and wrapping keys (set at unseal for a sealed keyd); null = those operations answer NOT_SUPPORTED. */
  custody?: CustodyKeys | null
  /** Backup and restore (keyd/backup); null = BACKUP_EXPORT and BACKUP_RESTORE answer NOT_SUPPORTED. */
  backup?: BackupService | null
  /** Memory bounds per connection and for all of them (limits.ts); absent fields keep CONNECTION_LIMITS. */
  limits?: Partial<ConnectionLimits>
}

export const KEYD_DEFAULTS = { maxFrameBytes: DEFAULT_MAX_FRAME, maxInFlight: 256, maxConnections: 1024, helloTimeoutMs: 5000, audit: null, metrics: null, sealed: undefined, policy: new KeyPolicy(), custody: null, backup: null, limits: {} }

export class KeydServer {
  readonly #opts: Required<Omit<KeydServerOptions, 'sealed'>> & Pick<KeydServerOptions, 'sealed'>
  readonly #server: Server
  readonly #sockets = new Set<Socket>()
  readonly #budget: MemoryBudget
  readonly #refreshTimer: NodeJS.Timeout
  readonly stats: SignStats = { signatures: 0, refused: 0 }
  #shares: Share[] = []
  #unsealing = false

  /** The audit log in use (set at unseal for a sealed keyd). */
  get audit (): AuditLog | null { return this.#opts.audit }

  /** Replaces the per-key policy at once (a restore brought keyd/policy.json). */
  setPolicy (policy: KeyPolicy): void { this.#opts.policy = policy }

  /** True until the keystore is open. */
  get sealed (): boolean { return this.#opts.keystore === null }

  /** STATUS and UNSEAL: answered by the server itself, sealed or not. */
  async #sealOp (client: Client, opcode: number, requestId: number, items: Map<number, Uint8Array>): Promise<Buffer> {
    if (!client.rights.includes('admin')) return encodeError(requestId, ErrorCode.FORBIDDEN, `client ${client.name} lacks the admin right`)
    const threshold = this.#opts.sealed?.threshold ?? 0
    const status = (): Buffer => encodeFrame(opcode | 0x80, requestId, [itemStr(Tag.JSON, JSON.stringify({
      sealed: this.sealed, shares: this.#shares.length, threshold, keys: this.#opts.keystore?.list().length ?? null, devMode: this.#opts.devMode
    }))])
    if (opcode === Op.STATUS || !this.sealed) return status()
    const seal = this.#opts.sealed
    if (seal === undefined) return encodeError(requestId, ErrorCode.INTERNAL, 'sealed without an unseal method')
    if (this.#unsealing) return encodeError(requestId, ErrorCode.OVERLOADED, 'an unseal is in progress')
    let share: Share
    try {
      share = decodeShare(readStr(items, Tag.SHARE) ?? '')
    } catch (err) {
      return encodeError(requestId, ErrorCode.BAD_SHARE, (err as Error).message)
    }
    if (!this.#shares.some(s => s.x === share.x)) this.#shares.push(share)
    if (this.#shares.length < threshold) return status()
    this.#unsealing = true
    try {
      const opened = await seal.unseal(this.#shares)
      this.#opts.keystore = opened.keystore
      this.#opts.audit = opened.audit
      this.#opts.custody = opened.custody ?? null
      this.#opts.logger.info({ keys: opened.keystore.list().length }, 'keyd unsealed')
      return status()
    } catch (err) {
      const wire = err instanceof KeydError && err.code === 'KEYD_ERR_BAD_SHARE' ? ErrorCode.BAD_SHARE : ErrorCode.INTERNAL
      this.#opts.logger.warn({ code: (err as KeydError).code }, 'keyd unseal failed; shares discarded')
      return encodeError(requestId, wire, (err as Error).message)
    } finally {
      for (const s of this.#shares) s.y.fill(0)
      this.#shares = []
      this.#unsealing = false
    }
  }

  constructor (opts: KeydServerOptions) {
    this.#opts = { ...KEYD_DEFAULTS, ...opts }
    this.#budget = new MemoryBudget({ ...CONNECTION_LIMITS, ...this.#opts.limits })
    this.#server = createServer(s => this.#onConnection(s))
    this.#server.maxConnections = this.#opts.maxConnections
    this.#server.on('error', err => this.#opts.logger.error({ err }, 'keyd socket error'))
    this.#opts.clients.useLogger(this.#opts.logger)
    this.#refreshTimer = setInterval(() => this.#opts.clients.refresh(), 1000)
    this.#refreshTimer.unref()
    this.#opts.metrics?.watchConnections(() => ({ connections: this.#sockets.size, heldBytes: this.#budget.held, sharedBytes: this.#budget.drawn }))
  }

  /** Binds the socket (0600, parent directory 0700), replacing a stale one. @throws KeydConfigError if another keyd is live. */
  async listen (): Promise<void> {
    const path = this.#opts.socketPath
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 })
    if (existsSync(path)) {
      if (await isLive(path)) throw new KeydConfigError(`another keyd is already listening on ${path}`)
      unlinkSync(path)
    }
    const oldMask = process.umask(0o177)
    try {
      this.#server.listen(path)
      await once(this.#server, 'listening')
    } finally {
      process.umask(oldMask)
    }
    chmodSync(path, 0o600)
  }

  async close (): Promise<void> {
    clearInterval(this.#refreshTimer)
    const closed = new Promise<void>(resolve => this.#server.close(() => resolve()))
    for (const s of this.#sockets) s.destroy()
    await closed
  }

  #onConnection (socket: Socket): void {
    this.#sockets.add(socket)
    // eslint-disable-next-line no-new -- the connection lives on its socket's events
    new Connection(socket, {
      maxFrameBytes: this.#opts.maxFrameBytes,
      helloTimeoutMs: this.#opts.helloTimeoutMs,
      budget: this.#budget,
      logger: this.#opts.logger,
      metrics: this.#opts.metrics,
      onFrame: (conn, f) => this.#onFrame(conn, f),
      onRefused: code => this.#countRefusal(code),
      onClose: () => this.#sockets.delete(socket)
    })
  }

  #countRefusal (code: number): void {
    this.stats.refused++
    this.#opts.metrics?.refused(errorCodeName(code))
  }

  /** Answers a request keyd refuses before running it. */
  #refuse (conn: Connection, requestId: number, code: number, message: string): void {
    this.#countRefusal(code)
    conn.reply(encodeError(requestId, code, message))
  }

  #onFrame (conn: Connection, f: Frame): void {
    const { logger, clients } = this.#opts
    if (f.version !== PROTOCOL_VERSION) return this.#refuse(conn, f.requestId, ErrorCode.UNSUPPORTED_VERSION, `protocol version ${f.version} is not supported; this keyd speaks 1`)
    if (f.flags !== 0) return this.#refuse(conn, f.requestId, ErrorCode.BAD_FRAME, 'flags must be 0')
    const items = parseItems(f.payload)
    if (items === null) return this.#refuse(conn, f.requestId, ErrorCode.BAD_FRAME, 'payload items run past the end of the frame')
    if (f.opcode === Op.HELLO) {
      const name = readStr(items, Tag.CLIENT_NAME) ?? ''
      const c = clients.authenticate(name, items.get(Tag.CLIENT_SECRET) ?? new Uint8Array(0))
      if (c === undefined) {
        logger.warn({ client: name.slice(0, 64) }, 'keyd refused an unknown client')
        this.#opts.audit?.record(auditRecordFor(name.slice(0, 64), f.opcode, items, 'UNKNOWN_CLIENT')).catch(() => {})
        conn.close('unknown-client', ErrorCode.UNKNOWN_CLIENT, 'unknown client or wrong secret', f.requestId)
        return
      }
      conn.authenticated(c)
      conn.reply(encodeFrame(Op.HELLO | 0x80, f.requestId, [itemStr(Tag.SERVER_INFO, JSON.stringify({ name: 'keyd', version: 1, devMode: this.#opts.devMode }))]))
      return
    }
    if (conn.client === undefined) return this.#refuse(conn, f.requestId, ErrorCode.NOT_AUTHENTICATED, 'send HELLO first')
    // Rights are read at every request: a grant or a revocation in clients.json applies to open connections.
    const client = clients.get(conn.client.name)
    if (client === undefined || client.secretSha256 !== conn.client.secretSha256) {
      logger.warn({ client: conn.client.name }, 'keyd closed a connection whose client was removed or given a new secret')
      conn.close('revoked', ErrorCode.UNKNOWN_CLIENT, 'this client was removed from keyd or its secret changed', f.requestId)
      return
    }
    conn.client = client
    const size = HEADER_SIZE + f.payload.length
    const { maxInFlight } = this.#opts
    if (conn.inFlight >= maxInFlight) return this.#refuse(conn, f.requestId, ErrorCode.OVERLOADED, `more than ${maxInFlight} requests in flight on this connection`)
    if (!conn.admit(size)) return this.#refuse(conn, f.requestId, ErrorCode.OVERLOADED, 'too many unanswered bytes on this connection, or in keyd as a whole; read the answers, then retry')
    if (f.opcode === Op.STATUS || f.opcode === Op.UNSEAL) {
      this.#sealOp(client, f.opcode, f.requestId, items)
        .catch(err => encodeError(f.requestId, ErrorCode.INTERNAL, (err as Error).message))
        .then(answer => { conn.done(size); conn.reply(answer) }, () => {})
      return
    }
    const keystore = this.#opts.keystore
    if (keystore === null && f.opcode !== Op.PING) { conn.done(size); return this.#refuse(conn, f.requestId, ErrorCode.SEALED, 'keyd is sealed: unseal it with "keyedge keyd unseal" (threshold shares)') }
    const audit = this.#opts.audit
    if (audit !== null && audit.failClosed && !audit.writable && f.opcode !== Op.PING) {
      conn.done(size)
      return this.#refuse(conn, f.requestId, ErrorCode.AUDIT_UNAVAILABLE, 'the audit log cannot be written; keyd is fail-closed')
    }
    const started = performance.now()
    const queued = started - conn.arrived
    const run = (): MaybeAsync<Buffer> => handle({ keystore: keystore as Keystore, client, stats: this.stats, policy: this.#opts.policy, custody: this.#opts.custody, backup: this.#opts.backup }, f.opcode, f.requestId, items)
    let answer: MaybeAsync<Buffer>
    try {
      // keyd's wrapping key is generated at first start off the event loop; an admin request in the first seconds waits for it.
      const custody = this.#opts.custody
      answer = custody !== null && !custody.isReady && f.opcode >= Op.KEY_CREATE ? custody.ready.then(run) : run()
    } catch (err) {
      answer = this.#refusalFrame(f, err)
    }
    if (answer instanceof Promise) {
      answer.catch(err => this.#refusalFrame(f, err)).then(a => this.#answer(conn, client, f, items, size, a, started, queued), () => {})
    } else {
      this.#answer(conn, client, f, items, size, answer, started, queued)
    }
  }

  /** The ERROR frame for a failed request: a Refusal's own code, a KeydError whose code names a wire error, else INTERNAL. */
  #refusalFrame (f: Frame, err: unknown): Buffer {
    if (err instanceof Refusal) return encodeError(f.requestId, err.wire, err.message)
    const wire: unknown = err instanceof KeydError ? ErrorCode[err.code.slice('KEYD_ERR_'.length) as ErrorCodeName] : undefined
    if (typeof wire === 'number') return encodeError(f.requestId, wire, (err as Error).message)
    this.#opts.logger.error({ err: (err as Error).message, op: f.opcode }, 'keyd request failed')
    return encodeError(f.requestId, ErrorCode.INTERNAL, 'internal error: ' + (err as Error).message)
  }

  /** Counts, audits and sends one answer (after its audit entry is written, where the durability asks). */
  #answer (conn: Connection, client: Client, f: Frame, items: Map<number, Uint8Array>, size: number, answer: Buffer, started: number, queued: number): void {
    const code = answer[5] === Op.ERROR ? readUint(parseItems(answer.subarray(HEADER_SIZE)) ?? new Map(), Tag.ERROR_CODE, 2) : undefined
    const result = typeof code === 'number' ? errorCodeName(code) : 'ok'
    if (result !== 'ok') this.stats.refused++
    const metrics = this.#opts.metrics
    if (metrics !== null) {
      // Label refusals without the key: a client could otherwise mint label values.
      metrics.observe(opName(f.opcode), result === 'ok' ? (readStr(items, Tag.KEY_NAME) ?? null) : null, result, queued / 1000, (performance.now() - started) / 1000)
    }
    const audit = this.#opts.audit
    const batch = f.opcode === Op.SIGN_BATCH && result === 'ok' && (audit !== null || metrics !== null) ? batchAuditRecords(client.name, items, answer) : null
    const violations = result === 'USAGE_FORBIDDEN' ? 1 : batch?.filter(r => r.result === 'USAGE_FORBIDDEN').length ?? 0
    if (violations > 0) this.#accessViolation(client, f, items, violations)
    if (audit === null || f.opcode === Op.PING) { conn.done(size); conn.reply(answer); return }
    const unaudited = (): void => {
      conn.done(size)
      if (audit.failClosed) this.#refuse(conn, f.requestId, ErrorCode.AUDIT_UNAVAILABLE, 'the audit log cannot be written; keyd is fail-closed')
      else conn.reply(answer)
    }
    let waits: Array<Promise<void>>
    try {
      waits = (batch ?? [auditRecordFor(client.name, f.opcode, items, result)]).map(r => audit.append(r)).filter((w): w is Promise<void> => w !== null)
    } catch {
      unaudited() // the log became unwritable while this request ran
      return
    }
    if (waits.length === 0) { conn.done(size); conn.reply(answer); return }
    // Held until the entries are written: fsync durability, or buffered entries beyond what the space reserve covers.
    Promise.all(waits).then(() => { conn.done(size); conn.reply(answer) }, unaudited)
  }

  #lastViolationLog = 0
  /** A request outside the client's rights: counted, and logged (at most once a second: a compromised client could flood the log). */
  #accessViolation (client: Client, f: Frame, items: Map<number, Uint8Array>, count: number): void {
    this.#opts.metrics?.accessViolation(client.name, count)
    const now = Date.now()
    if (now - this.#lastViolationLog < 1000) return
    this.#lastViolationLog = now
    this.#opts.logger.warn({ client: client.name, op: opName(f.opcode), key: readStr(items, Tag.KEY_NAME)?.slice(0, 64) ?? null, count }, 'keyd refused a request outside the client\'s rights (USAGE_FORBIDDEN): access violation')
  }
}

/** True if something accepts connections on the unix socket `path`. */
async function isLive (path: string): Promise<boolean> {
  return await new Promise(resolve => {
    const s = connect(path)
    s.once('connect', () => { s.destroy(); resolve(true) })
    s.once('error', () => resolve(false))
  })
}
