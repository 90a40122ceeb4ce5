// keyd's socket server: accepts unix-socket connections, authenticates them, and answers framed requests.
import { createServer, connect, type Server, type Socket } from 'node:net'
import { chmodSync, existsSync, unlinkSync, mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import { once } from 'node:events'
import type { Logger } from 'pino'
import {
  Op, ErrorCode, PROTOCOL_VERSION, DEFAULT_MAX_FRAME, HEADER_SIZE, parseItems, encodeFrame, errorCodeName, type Frame
} from '../protocol/codec.js'
import type { ClientRegistry } from './clients.js'
import { Connection } from './connection.js'
import { CONNECTION_LIMITS, MemoryBudget, type ConnectionLimits } from './limits.js'
import type { Keystore } from '../keystore/keystore.js'
import { KeydConfigError } from '../errors.js'
import { errorMessage } from '../../lib/errors.js'
import type { AuditLog } from '../audit/audit-log.js'
import { auditRecordFor } from '../audit/record.js'
import type { KeydMetrics } from './metrics.js'
import { KeyPolicy } from '../policy/key-policy.js'
import type { CustodyKeys } from '../keystore/custody-keys.js'
import type { BackupService } from '../backup/backup-service.js'
import type { SignStats } from './context.js'
import { Dispatcher } from './dispatch.js'
import { Sealer, type SealOptions } from './sealer.js'
import { hello, helloAnswer } from './hello.js'
import { shareWithGroup } from '../../lib/privileges.js'
import { NativeSign } from './native-sign.js'

export interface KeydServerOptions {
  socketPath: string
  /** null while sealed: every key operation is refused with SEALED until UNSEAL rebuilds the master key. */
  keystore: Keystore | null
  /** For a Shamir-sealed keystore: how many shares, and what to do once they are all in. */
  sealed?: SealOptions
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
  /**
   * The group that may connect (`keyd serve --socket-group`): the socket's directory becomes 0750 and
   * the socket 0660, both of that group. undefined: 0700 and 0600, keyd's user alone.
   */
  socketGroup?: number
  /**
   * keyd's native SIGN path (native-sign.ts): signing threads, or null = every signature in JavaScript
   * (the default of an embedded server; `keyd serve` turns it on unless --no-native-sign). Used only
   * with the file keystore and buffered, fail-closed audit; without the addon keyd falls back to JavaScript.
   */
  nativeSign?: { threads: number } | null
}

/** Operations after whose answer the native SIGN path's table is recomputed (before the answer is sent). */
const TABLE_CHANGING_OPS: ReadonlySet<number> = new Set([Op.KEY_CREATE, Op.KEY_ROTATE, Op.KEY_DISABLE, Op.KEY_ENABLE, Op.KEY_DESTROY, Op.KEY_IMPORT, Op.UNSEAL, Op.BACKUP_RESTORE])

export const KEYD_DEFAULTS = { maxFrameBytes: DEFAULT_MAX_FRAME, maxInFlight: 256, maxConnections: 1024, helloTimeoutMs: 5000, audit: null, metrics: null, sealed: undefined, policy: new KeyPolicy(), custody: null, backup: null, limits: {}, nativeSign: null }

export class KeydServer {
  readonly #opts: Required<Omit<KeydServerOptions, 'sealed' | 'socketGroup'>> & Pick<KeydServerOptions, 'sealed' | 'socketGroup'>
  readonly #server: Server
  readonly #sockets = new Set<Socket>()
  readonly #budget: MemoryBudget
  readonly #refreshTimer: NodeJS.Timeout
  readonly stats: SignStats = { signatures: 0, refused: 0 }
  readonly #sealer: Sealer
  readonly #dispatch: Dispatcher
  readonly #native: NativeSign | null

  /** The audit log in use (set at unseal for a sealed keyd). */
  get audit (): AuditLog | null { return this.#opts.audit }

  /** Replaces the per-key policy at once (a restore brought keyd/policy.json). */
  setPolicy (policy: KeyPolicy): void {
    this.#opts.policy = policy
    this.#native?.refresh()
  }

  /** Signatures the native SIGN path made (0 without it). */
  get nativeSignatures (): number { return this.#native?.signatures ?? 0 }

  /** Every signature made so far: stats.signatures, plus the native ones whose metrics are not drained yet. */
  get signatures (): number { return this.stats.signatures + (this.#native?.undrained ?? 0) }

  /** Whether the native SIGN path is on. */
  get nativeSign (): boolean { return this.#native !== null }

  /** True until the keystore is open. */
  get sealed (): boolean { return this.#opts.keystore === null }

  constructor (opts: KeydServerOptions) {
    this.#opts = { ...KEYD_DEFAULTS, ...opts }
    const o = this.#opts
    this.#sealer = new Sealer(o.sealed, () => ({ keystore: o.keystore, devMode: o.devMode }), opened => {
      o.keystore = opened.keystore
      o.audit = opened.audit
      o.custody = opened.custody ?? null
      this.#native?.refresh()
    }, o.logger)
    // #opts is the live state: the dispatcher sees what unseal and setPolicy change.
    this.#dispatch = new Dispatcher(o, this.stats, this.#sealer)
    this.#budget = new MemoryBudget({ ...CONNECTION_LIMITS, ...o.limits })
    const limits = this.#budget.limits
    this.#native = o.nativeSign === null
      ? null
      : NativeSign.start(o, o.clients, this.stats, { threads: o.nativeSign.threads, maxFrameBytes: o.maxFrameBytes, outCap: limits.freeBytesPerConnection, stallTimeoutMs: limits.stallTimeoutMs })
    this.#server = createServer(s => this.#onConnection(s))
    this.#server.maxConnections = this.#opts.maxConnections
    this.#server.on('error', err => this.#opts.logger.error({ err }, 'keyd socket error'))
    // Grants and revocations in clients.json apply without a restart, to open connections too.
    o.clients.useLogger(o.logger)
    this.#refreshTimer = setInterval(() => {
      o.clients.refresh()
      if (this.#native?.clientsChanged() === true) this.#native.refresh()
    }, 1000)
    this.#refreshTimer.unref()
    o.metrics?.watchConnections(() => ({ connections: this.#sockets.size, heldBytes: this.#budget.held, sharedBytes: this.#budget.drawn }))
  }

  /**
   * Binds the socket (0600, parent directory 0700; with `socketGroup` 0660 and 0750, of that group),
   * replacing a stale one. @throws KeydConfigError if another keyd is live; PrivilegeError if the group cannot be given
   */
  async listen (): Promise<void> {
    const path = this.#opts.socketPath
    const group = this.#opts.socketGroup
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 })
    // The directory first: the kernel checks search permission on it at connect(), so it is the gate.
    if (group !== undefined) shareWithGroup(dirname(path), group, 0o750)
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
    if (group === undefined) chmodSync(path, 0o600)
    else shareWithGroup(path, group, 0o660)
  }

  async close (): Promise<void> {
    clearInterval(this.#refreshTimer)
    const closed = new Promise<void>(resolve => this.#server.close(() => resolve()))
    for (const s of this.#sockets) s.destroy()
    // No native signature after this, and every record of one made before is appended.
    this.#native?.stop()
    await closed
  }

  #onConnection (socket: Socket): void {
    this.#sockets.add(socket)
    // Not kept: the connection lives on its socket's events.
    new Connection(socket, {
      maxFrameBytes: this.#opts.maxFrameBytes,
      helloTimeoutMs: this.#opts.helloTimeoutMs,
      budget: this.#budget,
      logger: this.#opts.logger,
      metrics: this.#opts.metrics,
      onFrame: (conn, f) => { this.#onFrame(conn, f) },
      onRefused: code => { this.#dispatch.countRefusal(code) },
      onClose: () => { this.#sockets.delete(socket) }
    })
  }

  /** Answers a request keyd refuses before running it. */
  #refuse (conn: Connection, requestId: number, code: number, message: string): void {
    conn.reply(this.#dispatch.refuse(requestId, code, message))
  }

  #onFrame (conn: Connection, f: Frame): void {
    const { logger, clients } = this.#opts
    if (f.version !== PROTOCOL_VERSION) return this.#refuse(conn, f.requestId, ErrorCode.UNSUPPORTED_VERSION, `protocol version ${f.version} is not supported; this keyd speaks 1`)
    if (f.flags !== 0) return this.#refuse(conn, f.requestId, ErrorCode.BAD_FRAME, 'flags must be 0')
    const items = parseItems(f.payload)
    if (items === null) return this.#refuse(conn, f.requestId, ErrorCode.BAD_FRAME, 'payload items run past the end of the frame')
    if (f.opcode === Op.HELLO) {
      const h = hello(clients, items)
      if (!h.ok) {
        logger.warn({ client: h.name }, 'keyd refused an unknown client')
        this.#opts.audit?.record(auditRecordFor(h.name, f.opcode, items, errorCodeName(h.refusal.wire))).catch(() => {})
        conn.close('unknown-client', h.refusal.wire, h.refusal.message, f.requestId)
        return
      }
      conn.authenticated(h.client)
      conn.reply(encodeFrame(Op.HELLO | 0x80, f.requestId, helloAnswer(this.#opts.devMode)))
      const native = this.#native
      if (native?.wants(h.client) === true) conn.handOff(fd => native.adopt(conn, fd))
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
    const send = (answer: Buffer): void => {
      // A key, seal or restore change reaches the native SIGN path before this answer leaves.
      if (TABLE_CHANGING_OPS.has(f.opcode)) this.#native?.refresh()
      conn.done(size)
      conn.reply(answer)
    }
    const answer = this.#dispatch.run(client, f, items, conn.arrived)
    if (answer instanceof Promise) {
      answer.then(send, (err: unknown) => { send(this.#dispatch.refuse(f.requestId, ErrorCode.INTERNAL, errorMessage(err))) })
    } else {
      send(answer)
    }
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
