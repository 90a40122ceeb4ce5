// keyd's socket server: accepts unix-socket connections, authenticates them, and answers framed requests.
import { createServer, connect, type Server, type Socket } from 'node:net'
import { chmodSync, existsSync, unlinkSync, mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import { once } from 'node:events'
import type { Logger } from 'pino'
import {
  FrameDecoder, Op, Tag, ErrorCode, PROTOCOL_VERSION, DEFAULT_MAX_FRAME,
  parseItems, readStr, encodeFrame, encodeError, itemStr, errorCodeName, type Frame
} from '../protocol/codec.js'
import { handle, Refusal, type SignStats } from './handlers.js'
import type { ClientRegistry, Client } from './clients.js'
import type { Keystore } from '../keystore/keystore.js'
import { KeydConfigError } from '../errors.js'
import type { AuditLog } from '../audit/audit-log.js'
import { decodeShare, type Share } from '../keystore/shamir.js'
import { KeydError } from '../errors.js'
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
}

export const KEYD_DEFAULTS = { maxFrameBytes: DEFAULT_MAX_FRAME, maxInFlight: 256, maxConnections: 1024, helloTimeoutMs: 5000, audit: null, metrics: null, sealed: undefined, policy: new KeyPolicy(), custody: null, backup: null }

export class KeydServer {
  readonly #opts: Required<Omit<KeydServerOptions, 'sealed'>> & Pick<KeydServerOptions, 'sealed'>
  readonly #server: Server
  readonly #sockets = new Set<Socket>()
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
    this.#server = createServer(s => this.#onConnection(s))
    this.#server.maxConnections = this.#opts.maxConnections
    this.#server.on('error', err => this.#opts.logger.error({ err }, 'keyd socket error'))
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
    const closed = new Promise<void>(resolve => this.#server.close(() => resolve()))
    for (const s of this.#sockets) s.destroy()
    await closed
  }

  #onConnection (socket: Socket): void {
    const { logger, maxFrameBytes, maxInFlight, helloTimeoutMs } = this.#opts
    this.#sockets.add(socket)
    const decoder = new FrameDecoder(maxFrameBytes)
    let client: Client | undefined
    let inFlight = 0
    const helloTimer = setTimeout(() => socket.destroy(), helloTimeoutMs)
    helloTimer.unref()
    socket.on('close', () => { clearTimeout(helloTimer); this.#sockets.delete(socket) })
    socket.on('error', err => logger.debug({ err: err.message }, 'keyd connection error'))

    const reply = (buf: Buffer): void => {
      if (!socket.destroyed) socket.write(buf)
    }
    const refuse = (requestId: number, code: number, message: string): void => {
      this.stats.refused++
      this.#opts.metrics?.refused(errorCodeName(code))
      reply(encodeError(requestId, code, message))
    }

    let arrived = 0
    const onFrame = (f: Frame): void => {
      if (f.version !== PROTOCOL_VERSION) return refuse(f.requestId, ErrorCode.UNSUPPORTED_VERSION, `protocol version ${f.version} is not supported; this keyd speaks 1`)
      if (f.flags !== 0) return refuse(f.requestId, ErrorCode.BAD_FRAME, 'flags must be 0')
      const items = parseItems(f.payload)
      if (items === null) return refuse(f.requestId, ErrorCode.BAD_FRAME, 'payload items run past the end of the frame')
      if (f.opcode === Op.HELLO) {
        const name = readStr(items, Tag.CLIENT_NAME) ?? ''
        const c = this.#opts.clients.authenticate(name, items.get(Tag.CLIENT_SECRET) ?? new Uint8Array(0))
        if (c === undefined) {
          logger.warn({ client: name.slice(0, 64) }, 'keyd refused an unknown client')
          this.#opts.audit?.record(auditRecordFor(name.slice(0, 64), f.opcode, items, 'UNKNOWN_CLIENT')).catch(() => {})
          refuse(f.requestId, ErrorCode.UNKNOWN_CLIENT, 'unknown client or wrong secret')
          socket.end()
          return
        }
        client = c
        clearTimeout(helloTimer)
        reply(encodeFrame(Op.HELLO | 0x80, f.requestId, [itemStr(Tag.SERVER_INFO, JSON.stringify({ name: 'keyd', version: 1, devMode: this.#opts.devMode }))]))
        return
      }
      if (client === undefined) return refuse(f.requestId, ErrorCode.NOT_AUTHENTICATED, 'send HELLO first')
      if (f.opcode === Op.STATUS || f.opcode === Op.UNSEAL) {
        const who = client
        this.#sealOp(who, f.opcode, f.requestId, items).then(reply, err => refuse(f.requestId, ErrorCode.INTERNAL, (err as Error).message))
        return
      }
      const keystore = this.#opts.keystore
      if (keystore === null && f.opcode !== Op.PING) return refuse(f.requestId, ErrorCode.SEALED, 'keyd is sealed: unseal it with "keyedge keyd unseal" (threshold shares)')
      if (inFlight >= maxInFlight) return refuse(f.requestId, ErrorCode.OVERLOADED, `more than ${maxInFlight} requests in flight on this connection`)
      const audit = this.#opts.audit
      if (audit !== null && audit.failClosed && !audit.writable && f.opcode !== Op.PING) {
        return refuse(f.requestId, ErrorCode.AUDIT_UNAVAILABLE, 'the audit log cannot be written; keyd is fail-closed')
      }
      inFlight++
      let answer: Buffer
      let result = 'ok'
      const started = performance.now()
      try {
        answer = handle({ keystore: keystore as Keystore, client, stats: this.stats, policy: this.#opts.policy, custody: this.#opts.custody, backup: this.#opts.backup }, f.opcode, f.requestId, items)
      } catch (err) {
        if (!(err instanceof Refusal)) logger.error({ err: (err as Error).message, op: f.opcode }, 'keyd request failed')
        const wire = err instanceof Refusal ? err.wire : ErrorCode.INTERNAL
        result = errorCodeName(wire)
        this.stats.refused++
        answer = encodeError(f.requestId, wire, err instanceof Refusal ? err.message : 'internal error: ' + (err as Error).message)
      }
      const metrics = this.#opts.metrics
      if (metrics !== null) {
        // Label refusals without the key: a client could otherwise mint label values.
        metrics.observe(opName(f.opcode), result === 'ok' ? (readStr(items, Tag.KEY_NAME) ?? null) : null, result, (started - arrived) / 1000, (performance.now() - started) / 1000)
      }
      if (audit === null || f.opcode === Op.PING) { inFlight--; reply(answer); return }
      const written = f.opcode === Op.SIGN_BATCH && result === 'ok'
        ? Promise.all(batchAuditRecords(client.name, items, answer).map(async r => await audit.record(r))).then(() => {})
        : audit.record(auditRecordFor(client.name, f.opcode, items, result))
      if (audit.durability === 'buffered') {
        written.catch(() => {})
        inFlight--
        reply(answer)
        return
      }
      // fsync durability: nothing leaves keyd before its audit entry is on disk.
      written.then(() => reply(answer), () => {
        if (audit.failClosed) refuse(f.requestId, ErrorCode.AUDIT_UNAVAILABLE, 'the audit log cannot be written; keyd is fail-closed')
        else reply(answer)
      }).finally(() => { inFlight-- })
    }

    socket.on('data', chunk => {
      arrived = performance.now()
      for (const ev of decoder.push(chunk)) {
        if (ev.kind === 'too-large') {
          refuse(ev.requestId ?? 0, ErrorCode.FRAME_TOO_LARGE, `frame of ${ev.length + 4} bytes is outside 12..${maxFrameBytes}`)
          socket.end()
          return
        }
        onFrame(ev.frame)
      }
    })
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
