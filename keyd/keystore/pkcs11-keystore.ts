// PKCS#11 keystore, event-loop side: keyd's keys live in a token that only the token worker thread
// (pkcs11-worker.ts) talks to. This side mirrors the keys' public data for the lookups every request
// makes, and sends each token operation to the worker with a deadline: a token that does not answer
// in time costs that request TOKEN_TIMEOUT, never keyd's event loop.
import { Worker, MessageChannel, receiveMessageOnPort } from 'node:worker_threads'
import { createPublicKey, hkdfSync, type KeyObject } from 'node:crypto'
import type { Algorithm, KeyType, Usage } from '../algorithms.js'
import { KeydError, Pkcs11Error, TokenTimeoutError } from '../errors.js'
import type { Keystore, KeyInfo, SignResult } from './keystore.js'
import type { TokenOptions } from './pkcs11-token.js'
import type { KeySnapshot } from './pkcs11-token-store.js'
import type { TokenInit, TokenOp, TokenReply, TokenRequest, TokenWorkerData } from './pkcs11-worker.js'
import { errorMessage } from '../../lib/errors.js'

const DERIVE_SALT = Buffer.from('keyedge derive v1')

/** How long each kind of token operation may take, queueing behind others included (ms). */
export interface TokenDeadlines {
  /** A signature: the bridge gives a handshake signature 1 s in all. */
  signMs: number
  /** Generating a key pair in the token (KEY_CREATE, KEY_ROTATE): RSA in a hardware token can take long. */
  generateMs: number
  /** Writing a record (KEY_ENABLE/DISABLE/DESTROY). */
  changeMs: number
  /** Loading the module, logging in and reading every key, at start. */
  startMs: number
}

export const TOKEN_DEADLINES: TokenDeadlines = { signMs: 1000, generateMs: 60_000, changeMs: 10_000, startMs: 30_000 }

export interface Pkcs11KeystoreOptions extends TokenOptions {
  /** keyd's master key: ticket keys and the audit chain still derive from it; signing keys do not. */
  masterKey: Buffer
  deadlines?: Partial<TokenDeadlines>
}

interface Pending { op: TokenOp, resolve: (r: TokenReply) => void, reject: (e: Error) => void, timer: NodeJS.Timeout, sentAt: number, expiresAt: number, settled: boolean }
interface Mirrored { info: KeyInfo, publicKeys: Map<number, KeyObject> }

function rebuild (e: { code?: string, name: string, message: string }): Error {
  if (e.code === undefined) return new Error(e.message)
  if (e.code.startsWith('KEYD_ERR_PKCS11')) return new Pkcs11Error(e.code as ConstructorParameters<typeof Pkcs11Error>[0], e.message)
  return new KeydError(e.code, e.message)
}

export class Pkcs11Keystore implements Keystore {
  readonly kind = 'pkcs11'
  /** Records or key versions that could not be used at start, with the reason (never key material). */
  readonly loadErrors: Array<{ key: string, reason: string }>
  readonly #master: Buffer
  readonly #worker: Worker
  readonly #deadlines: TokenDeadlines
  readonly #types: Set<string>
  readonly #keys = new Map<string, Mirrored>()
  /** Requests in the order the worker takes them; the first one unanswered is the one it is running. */
  readonly #queue: Array<{ id: number, pending: Pending }> = []
  #nextId = 1

  /**
   * Starts the token worker and waits (at start only, blocking) until it has logged in and read every key.
   * @throws Pkcs11Error as the token does (module unsafe, token not found, login), TokenTimeoutError if it does not answer within `startMs`
   */
  constructor (opts: Pkcs11KeystoreOptions) {
    this.#deadlines = { ...TOKEN_DEADLINES, ...opts.deadlines }
    const { port1, port2 } = new MessageChannel()
    const initFlag = new Int32Array(new SharedArrayBuffer(4))
    const { masterKey, deadlines: _, ...token } = opts
    this.#worker = new Worker(new URL('./pkcs11-worker.js', import.meta.url), { workerData: { opts: token, initPort: port2, initFlag } satisfies TokenWorkerData, transferList: [port2] })
    this.#worker.unref()
    const waited = Atomics.wait(initFlag, 0, 0, this.#deadlines.startMs)
    const init = receiveMessageOnPort(port1)?.message as TokenInit | undefined
    port1.close()
    if (waited === 'timed-out' || init === undefined) {
      void this.#worker.terminate()
      throw new TokenTimeoutError(`the PKCS#11 token did not open within ${this.#deadlines.startMs} ms`)
    }
    if (init.error !== undefined) {
      void this.#worker.terminate()
      throw rebuild(init.error)
    }
    this.#master = Buffer.from(masterKey)
    this.loadErrors = init.loadErrors ?? []
    this.#types = new Set(init.types)
    this.#mirror(init.snapshot ?? [], true)
    this.#worker.on('message', (reply: TokenReply) => this.#onReply(reply))
    this.#worker.on('error', (err: unknown) => { for (const q of this.#queue.splice(0)) this.#settle(q.pending, () => q.pending.reject(new Pkcs11Error('KEYD_ERR_PKCS11', `the PKCS#11 worker failed: ${errorMessage(err)}`))) })
  }

  #mirror (snapshot: KeySnapshot[], full: boolean): void {
    if (full) this.#keys.clear()
    for (const k of snapshot) {
      this.#keys.set(k.info.name, { info: k.info, publicKeys: new Map(k.versions.map(v => [v.version, createPublicKey({ key: Buffer.from(v.spki, 'base64'), format: 'der', type: 'spki' })])) })
    }
  }

  #settle (p: Pending, f: () => void): void {
    if (p.settled) return
    p.settled = true
    clearTimeout(p.timer)
    f()
  }

  #onReply (reply: TokenReply): void {
    // The worker answers in order; a reply for a request that already timed out still updates the mirror.
    const i = this.#queue.findIndex(q => q.id === reply.id)
    const entry = this.#queue[i]
    if (entry === undefined) return
    this.#queue.splice(i, 1)
    const { pending } = entry
    if (reply.snapshot !== undefined) this.#mirror(reply.snapshot, reply.full === true)
    this.#settle(pending, () => pending.resolve(reply))
  }

  /** The request the worker is running now, if it is past its deadline: the token hangs. */
  #hung (now: number): Pending | undefined {
    const head = this.#queue[0]?.pending
    return head !== undefined && now > head.expiresAt ? head : undefined
  }

  /** Sends one operation to the worker. @throws TokenTimeoutError past `ms` (queueing included), or at once while the token hangs */
  async #call (op: TokenOp, args: unknown[], ms: number): Promise<unknown> {
    const now = Date.now()
    const hung = this.#hung(now)
    if (hung !== undefined) throw new TokenTimeoutError(`the PKCS#11 token has not answered a ${hung.op} sent ${now - hung.sentAt} ms ago; nothing more is sent to it until it does`)
    const id = this.#nextId++
    const reply = await new Promise<TokenReply>((resolve, reject) => {
      const pending: Pending = { op, resolve, reject, sentAt: now, expiresAt: now + ms, settled: false, timer: setTimeout(() => this.#settle(pending, () => reject(new TokenTimeoutError(`the PKCS#11 token did not answer ${op} within ${ms} ms`))), ms) }
      this.#queue.push({ id, pending })
      this.#worker.postMessage({ id, op, args, expiresAt: now + ms } satisfies TokenRequest)
    })
    if (reply.skipped === true) throw new TokenTimeoutError(`the PKCS#11 token was busy for ${ms} ms; ${op} was not sent`)
    if (reply.error !== undefined) throw rebuild(reply.error)
    return reply.result
  }

  list (): KeyInfo[] {
    return [...this.#keys.values()].map(k => k.info)
  }

  get (name: string): KeyInfo | undefined {
    return this.#keys.get(name)?.info
  }

  supportsType (type: KeyType): boolean {
    return this.#types.has(type)
  }

  publicKey (name: string, version: number): { version: number, key: KeyObject } | undefined {
    const k = this.#keys.get(name)
    const v = version === 0 ? k?.info.currentVersion : version
    const key = v === undefined ? undefined : k?.publicKeys.get(v)
    return key === undefined ? undefined : { version: v as number, key }
  }

  /** Always undefined: the private keys never leave the token. */
  signingKey (): undefined {
    return undefined
  }

  /** @throws Pkcs11Error KEYD_ERR_PKCS11_UNSUPPORTED for a type the token cannot make, KEYD_ERR_PKCS11 if it refuses; TokenTimeoutError */
  async create (name: string, type: KeyType, usage: Usage): Promise<KeyInfo> {
    if (!this.supportsType(type)) throw new Pkcs11Error('KEYD_ERR_PKCS11_UNSUPPORTED', `the token cannot generate ${type} keys`)
    if (this.#keys.has(name)) throw new KeydError('KEYD_ERR_KEY_EXISTS', `a key named ${name} exists`)
    return await this.#call('create', [name, type, usage], this.#deadlines.generateMs) as KeyInfo
  }

  async rotate (name: string, opts: { signGraceSeconds?: number | null } = {}): Promise<KeyInfo> {
    return await this.#call('rotate', [name, opts], this.#deadlines.generateMs) as KeyInfo
  }

  async setState (name: string, state: 'enabled' | 'disabled'): Promise<KeyInfo> {
    return await this.#call('setState', [name, state], this.#deadlines.changeMs) as KeyInfo
  }

  async destroy (name: string): Promise<KeyInfo> {
    return await this.#call('destroy', [name], this.#deadlines.changeMs) as KeyInfo
  }

  /**
   * Signs in the token (ECDSA, RSA PKCS#1 v1.5 and PSS: see TokenStore.sign).
   * @throws Pkcs11Error KEYD_ERR_PKCS11 if the token refuses; TokenTimeoutError past the sign deadline
   */
  async sign (name: string, version: number, alg: Algorithm, message: Uint8Array, p1363: boolean): Promise<SignResult | undefined> {
    const k = this.#keys.get(name)
    if (k === undefined || (version !== 0 && !k.publicKeys.has(version))) return undefined
    const r = await this.#call('sign', [name, version, alg, message, p1363], this.#deadlines.signMs) as { version: number, signature: Uint8Array } | undefined
    return r === undefined ? undefined : { version: r.version, signature: Buffer.from(r.signature.buffer, r.signature.byteOffset, r.signature.byteLength) }
  }

  deriveSecret (info: Uint8Array, length: number): Buffer {
    return Buffer.from(hkdfSync('sha256', this.#master, DERIVE_SALT, info, length))
  }

  /** Logs out of the token and ends the worker. */
  close (): void {
    this.#worker.postMessage({ id: 0, op: 'close', args: [], expiresAt: Infinity } satisfies TokenRequest)
    this.#master.fill(0)
  }
}
