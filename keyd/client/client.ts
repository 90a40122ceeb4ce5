// The TypeScript keyd client: one pipelined connection, every request bounded by a timeout, reconnects on demand.
import { connect, type Socket } from 'node:net'
import { readFileSync } from 'node:fs'
import { createPublicKey, type KeyObject } from 'node:crypto'
import {
  FrameDecoder, Op, Tag, encodeFrame, readStr, readUint, errorCodeName, parseItems,
  itemStr, itemBytes, itemU32, itemU16, itemU8, encodeItems, ItemMap, type Item
} from '../protocol/codec.js'
import { ALGORITHMS_BY_NAME } from '../algorithms.js'
import { TicketTag, decodeTicketKeySet, readU64, type TicketKey } from '../protocol/ticket-keys.js'
import { decodeKeyVersions, type KeyVersionTime } from '../protocol/key-versions.js'
import type { KeyInfo } from '../keystore/keystore.js'
import type { AttestationDocument } from '../server/attestation.js'
import { secretBytes } from '../../lib/secret-file.js'
import { KeydRemoteError, KeydTimeoutError, KeydUnavailableError } from '../errors.js'

export interface KeydClientOptions {
  socketPath: string
  clientName: string
  /** Path of the client's secret file (read at each connect). */
  secretFile: string
  timeoutMs?: number
}

/** One signature of a SIGN_BATCH: like the arguments of `sign`. */
export interface BatchEntry { name: string, algorithm: string, message: Uint8Array, version?: number, ieeeP1363?: boolean }

export interface PublicKeyInfo {
  name: string
  version: number
  type: string
  bits: number
  spki: Buffer
  publicKey: KeyObject
  /** Every version of the key with its creation time, oldest first (KEY_VERSIONS); empty from a keyd without it. */
  versions: KeyVersionTime[]
}

/** A key as KEY_LIST / KEY_INFO describe it: KeyInfo plus state, fingerprint, and per-version detail in KEY_INFO. */
export type KeyDetail = Omit<KeyInfo, 'versions'> & {
  state: string
  exportable: false
  /** SHA-256 of the current version's SubjectPublicKeyInfo, hex. */
  fingerprint: string | null
  versions: Array<KeyInfo['versions'][number] & { current?: boolean, spkiSha256?: string | null, signsUntil?: string | null, canSign?: boolean }>
}

interface Pending { resolve: (items: Map<number, Uint8Array>) => void, reject: (err: Error) => void, timer: NodeJS.Timeout }

export class KeydClient {
  readonly #opts: Required<KeydClientOptions>
  #socket: Socket | null = null
  #ready: Promise<void> | null = null
  #nextId = 1
  readonly #pending = new Map<number, Pending>()

  constructor (opts: KeydClientOptions) {
    this.#opts = { timeoutMs: 1000, ...opts }
  }

  /** Connects and authenticates if not connected. @throws KeydUnavailableError, KeydRemoteError (UNKNOWN_CLIENT) */
  async connect (): Promise<void> {
    if (this.#ready === null) {
      this.#ready = this.#open().catch(err => { this.#ready = null; throw err })
    }
    await this.#ready
  }

  async #open (): Promise<void> {
    const socket = connect(this.#opts.socketPath)
    socket.unref()
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { socket.destroy(); reject(new KeydTimeoutError(this.#opts.timeoutMs)) }, this.#opts.timeoutMs)
      socket.once('connect', () => { clearTimeout(timer); resolve() })
      socket.once('error', err => { clearTimeout(timer); reject(new KeydUnavailableError(`keyd is not reachable at ${this.#opts.socketPath}: ${(err as NodeJS.ErrnoException).code ?? err.message}`, { cause: err })) })
    })
    const decoder = new FrameDecoder()
    socket.on('data', chunk => {
      for (const ev of decoder.push(chunk)) {
        if (ev.kind !== 'frame') { socket.destroy(); return }
        const p = this.#pending.get(ev.frame.requestId)
        if (p === undefined) continue
        this.#pending.delete(ev.frame.requestId)
        clearTimeout(p.timer)
        const items = parseItems(ev.frame.payload) ?? new Map()
        if (ev.frame.opcode === Op.ERROR) {
          const code = readUint(items, Tag.ERROR_CODE, 2) ?? 0
          p.reject(new KeydRemoteError(errorCodeName(code ?? 0), code ?? 0, readStr(items, Tag.ERROR_MESSAGE) ?? 'keyd error'))
        } else {
          p.resolve(items)
        }
      }
    })
    const onGone = (err?: Error): void => {
      if (this.#socket === socket) { this.#socket = null; this.#ready = null }
      for (const [id, p] of this.#pending) {
        clearTimeout(p.timer)
        this.#pending.delete(id)
        p.reject(new KeydUnavailableError('keyd connection closed' + (err !== undefined ? `: ${err.message}` : '')))
      }
    }
    socket.on('close', () => onGone())
    socket.on('error', err => onGone(err))
    this.#socket = socket
    let secret: Buffer
    try {
      secret = secretBytes(readFileSync(this.#opts.secretFile))
    } catch (err) {
      socket.destroy()
      throw new KeydUnavailableError(`cannot read the client secret file ${this.#opts.secretFile}: ${(err as NodeJS.ErrnoException).code ?? ''}`, { cause: err })
    }
    await this.#send(Op.HELLO, [itemStr(Tag.CLIENT_NAME, this.#opts.clientName), itemBytes(Tag.CLIENT_SECRET, secret)])
  }

  async #send (opcode: number, items: Item[]): Promise<Map<number, Uint8Array>> {
    const socket = this.#socket
    if (socket === null) throw new KeydUnavailableError('keyd connection closed')
    const id = this.#nextId
    this.#nextId = (this.#nextId + 1) >>> 0 || 1
    return await new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id)
        reject(new KeydTimeoutError(this.#opts.timeoutMs))
      }, this.#opts.timeoutMs)
      this.#pending.set(id, { resolve, reject, timer })
      socket.ref()
      socket.write(encodeFrame(opcode, id, items))
    }).finally(() => { if (this.#pending.size === 0) socket.unref() }) as Map<number, Uint8Array>
  }

  /** Sends one request (connecting first if needed) and returns the answer's items. */
  async request (opcode: number, items: Item[] = []): Promise<Map<number, Uint8Array>> {
    await this.connect()
    return await this.#send(opcode, items)
  }

  async ping (payload: Uint8Array = new Uint8Array(0)): Promise<Buffer> {
    const r = await this.request(Op.PING, [itemBytes(Tag.PAYLOAD, payload)])
    return Buffer.from(r.get(Tag.PAYLOAD) ?? [])
  }

  async getPublicKey (name: string, version = 0): Promise<PublicKeyInfo> {
    return toPublicKeyInfo(await this.request(Op.GET_PUBLIC_KEY, [itemStr(Tag.KEY_NAME, name), itemU32(Tag.KEY_VERSION, version)]))
  }

  /** Signs `message` whole with `algorithm` (a name like `ecdsa-sha256`, see keyd/algorithms.ts). */
  async sign (name: string, algorithm: string, message: Uint8Array, opts: { version?: number, ieeeP1363?: boolean } = {}): Promise<{ signature: Buffer, version: number }> {
    const alg = ALGORITHMS_BY_NAME.get(algorithm)
    if (alg === undefined) throw new TypeError(`unknown algorithm ${algorithm}`)
    const r = await this.request(Op.SIGN, [
      itemStr(Tag.KEY_NAME, name), itemU32(Tag.KEY_VERSION, opts.version ?? 0), itemU16(Tag.ALGORITHM, alg.code),
      itemBytes(Tag.MESSAGE, message), itemU8(Tag.SIG_ENCODING, opts.ieeeP1363 === true ? 1 : 0)
    ])
    return { signature: Buffer.from(r.get(Tag.SIGNATURE) ?? []), version: readUint(r, Tag.KEY_VERSION, 4) ?? 0 }
  }

  /**
   * Signs several messages in one SIGN_BATCH frame; each result is a signature or that entry's own
   * refusal (a KeydRemoteError), in the order of `entries`.
   * @throws KeydUnavailableError, KeydTimeoutError, KeydRemoteError for the frame as a whole
   */
  async signBatch (entries: BatchEntry[]): Promise<Array<{ signature: Buffer, version: number } | KeydRemoteError>> {
    const items = entries.map(e => {
      const alg = ALGORITHMS_BY_NAME.get(e.algorithm)
      if (alg === undefined) throw new TypeError(`unknown algorithm ${e.algorithm}`)
      return itemBytes(Tag.ENTRY, encodeItems([
        itemStr(Tag.KEY_NAME, e.name), itemU32(Tag.KEY_VERSION, e.version ?? 0), itemU16(Tag.ALGORITHM, alg.code),
        itemBytes(Tag.MESSAGE, e.message), itemU8(Tag.SIG_ENCODING, e.ieeeP1363 === true ? 1 : 0)
      ]))
    })
    const r = await this.request(Op.SIGN_BATCH, items)
    const answers = r instanceof ItemMap ? r.all(Tag.ENTRY) : []
    if (answers.length !== entries.length) throw new KeydUnavailableError(`keyd answered SIGN_BATCH with ${answers.length} entries for ${entries.length}`)
    return answers.map(a => {
      const e = parseItems(a) ?? new Map<number, Uint8Array>()
      const code = readUint(e, Tag.ERROR_CODE, 2)
      if (typeof code === 'number') return new KeydRemoteError(errorCodeName(code), code, readStr(e, Tag.ERROR_MESSAGE) ?? 'keyd error')
      return { signature: Buffer.from(e.get(Tag.SIGNATURE) ?? []), version: readUint(e, Tag.KEY_VERSION, 4) ?? 0 }
    })
  }

  /**
   * The TLS ticket keys of `rotationSeconds`-long epochs: `previous` older ones (decrypt only), the
   * current one and the next one, oldest first, with keyd's clock. Secrets: never log them.
   * @throws KeydUnavailableError, KeydTimeoutError, KeydRemoteError (FORBIDDEN without the sign right)
   */
  async getTicketKeys (rotationSeconds: number, previous = 1): Promise<{ keys: TicketKey[], serverTimeMs: number }> {
    const r = await this.request(Op.GET_TICKET_KEYS, [itemU32(TicketTag.ROTATION_SECONDS, rotationSeconds), itemU32(TicketTag.PREVIOUS, previous)])
    const keys = decodeTicketKeySet(r.get(TicketTag.KEY_SET) ?? new Uint8Array(0))
    if (keys === null) throw new KeydUnavailableError('keyd answered GET_TICKET_KEYS with a malformed key set')
    return { keys, serverTimeMs: readU64(r.get(TicketTag.SERVER_TIME)) ?? Date.now() }
  }

  async createKey (name: string, type: string, usage: string): Promise<PublicKeyInfo> {
    return toPublicKeyInfo(await this.request(Op.KEY_CREATE, [itemStr(Tag.KEY_NAME, name), itemStr(Tag.KEY_TYPE, type), itemStr(Tag.USAGE, usage)]))
  }

  /**
   * Generates a new current version of key `name` (admin); older versions keep verifying, and signing
   * for the key's grace: `signGraceSeconds` sets it (null = without limit), absent keeps it.
   */
  async rotateKey (name: string, opts: { signGraceSeconds?: number | null } = {}): Promise<PublicKeyInfo> {
    const grace = opts.signGraceSeconds === undefined ? [] : [itemU32(Tag.SIGN_GRACE_SECONDS, opts.signGraceSeconds ?? 0xffffffff)]
    return toPublicKeyInfo(await this.request(Op.KEY_ROTATE, [itemStr(Tag.KEY_NAME, name), ...grace]))
  }

  /** KEY_INFO (admin): one key's detail with every version (public data only); works on a destroyed key's tombstone. */
  async keyInfo (name: string): Promise<KeyDetail> {
    return JSON.parse(readStr(await this.request(Op.KEY_INFO, [itemStr(Tag.KEY_NAME, name)]), Tag.JSON) ?? '{}') as KeyDetail
  }

  /** KEY_DISABLE / KEY_ENABLE / KEY_DESTROY (admin); answers the key's summary. */
  async setKeyState (name: string, action: 'disable' | 'enable' | 'destroy'): Promise<KeyDetail> {
    const op = action === 'disable' ? Op.KEY_DISABLE : action === 'enable' ? Op.KEY_ENABLE : Op.KEY_DESTROY
    return JSON.parse(readStr(await this.request(op, [itemStr(Tag.KEY_NAME, name)]), Tag.JSON) ?? '{}') as KeyDetail
  }

  /** KEY_IMPORT of a PKCS#8 DER private key (admin), or of a bring-your-own-key bundle made with `wrapForImport`. */
  async importKey (name: string, usage: string, key: { pkcs8: Uint8Array } | { wrappedAesKey: Uint8Array, wrappedPrivateKey: Uint8Array }): Promise<PublicKeyInfo> {
    const material = 'pkcs8' in key
      ? [itemBytes(Tag.PRIVATE_KEY, key.pkcs8)]
      : [itemBytes(Tag.WRAPPED_AES_KEY, key.wrappedAesKey), itemBytes(Tag.WRAPPED_PRIVATE_KEY, key.wrappedPrivateKey)]
    return toPublicKeyInfo(await this.request(Op.KEY_IMPORT, [itemStr(Tag.KEY_NAME, name), itemStr(Tag.USAGE, usage), ...material]))
  }

  /** keyd's RSA-OAEP wrapping public key for wrapped imports (admin). */
  async getWrappingKey (): Promise<{ publicKey: KeyObject, bits: number }> {
    const r = await this.request(Op.WRAPPING_KEY)
    return { publicKey: createPublicKey({ key: Buffer.from(r.get(Tag.PUBLIC_KEY) ?? []), format: 'der', type: 'spki' }), bits: readUint(r, Tag.KEY_BITS, 4) ?? 0 }
  }

  /** keyd's Ed25519 attestation public key (admin). */
  async getAttestationKey (): Promise<KeyObject> {
    const r = await this.request(Op.ATTESTATION_KEY)
    return createPublicKey({ key: Buffer.from(r.get(Tag.PUBLIC_KEY) ?? []), format: 'der', type: 'spki' })
  }

  /** KEY_ATTEST (admin): a signed statement about one version (0 = current); check it with `verifyAttestation`. */
  async attestKey (name: string, version = 0): Promise<AttestationDocument> {
    const r = await this.request(Op.KEY_ATTEST, [itemStr(Tag.KEY_NAME, name), itemU32(Tag.KEY_VERSION, version)])
    return JSON.parse(readStr(r, Tag.STATEMENT) ?? '{}') as AttestationDocument
  }

  async listKeys (): Promise<KeyDetail[]> {
    const r = await this.request(Op.KEY_LIST)
    return JSON.parse(readStr(r, Tag.JSON) ?? '[]') as KeyDetail[]
  }

  close (): void {
    this.#socket?.destroy()
    this.#socket = null
    this.#ready = null
  }
}

function toPublicKeyInfo (r: Map<number, Uint8Array>): PublicKeyInfo {
  const spki = Buffer.from(r.get(Tag.PUBLIC_KEY) ?? [])
  return {
    name: readStr(r, Tag.KEY_NAME) ?? '',
    version: readUint(r, Tag.KEY_VERSION, 4) ?? 0,
    type: readStr(r, Tag.KEY_TYPE) ?? '',
    bits: readUint(r, Tag.KEY_BITS, 4) ?? 0,
    spki,
    publicKey: createPublicKey({ key: spki, format: 'der', type: 'spki' }),
    versions: decodeKeyVersions(r.get(Tag.KEY_VERSIONS) ?? new Uint8Array(0)) ?? []
  }
}
