// The TypeScript keyd client: one pipelined connection, every request bounded by a timeout, reconnects
// on demand. Requests and answers go through the typed codecs of keyd/protocol/messages.ts; an answer
// that does not decode (a missing or wrong-size item) is a KeydUnavailableError, never a default value.
import { connect, type Socket } from 'node:net'
import { readFileSync } from 'node:fs'
import { createPublicKey, type KeyObject } from 'node:crypto'
import { FrameDecoder, Op, encodeFrame, errorCodeName, opName, parseItems, type Item, type ItemMap } from '../protocol/codec.js'
import { RESPONSE_BIT } from '../protocol/spec.js'
import {
  encodeHelloRequest, encodePingRequest, decodePingResponse, encodeGetPublicKeyRequest, decodePublicKeyResponse,
  encodeSignRequest, decodeSignResponse, encodeSignBatchRequest, decodeSignBatchResponse, encodeGetTicketKeysRequest,
  decodeGetTicketKeysResponse, encodeKeyCreateRequest, encodeKeyRotateRequest, encodeKeyNameRequest, decodeKeyJsonResponse,
  encodeKeyImportRequest, encodeEmptyRequest, decodeWrappingKeyResponse, decodeAttestationKeyResponse, encodeKeyAttestRequest,
  decodeKeyAttestResponse, decodeKeyListResponse, decodeErrorResponse, decodeHelloResponse, GRACE_UNLIMITED,
  type PublicKeyResponse, type SignRequest
} from '../protocol/messages.js'
import { ALGORITHMS_BY_NAME } from '../algorithms.js'
import { decodeTicketKeySet, type TicketKey } from '../protocol/ticket-keys.js'
import { decodeKeyVersions, type KeyVersionTime } from '../protocol/key-versions.js'
import type { KeyInfo } from '../keystore/keystore.js'
import type { AttestationDocument } from '../protocol/attestation.js'
import { secretBytes } from '../../lib/secret-file.js'
import { errorCode, errorMessage } from '../../lib/errors.js'
import { KeydRemoteError, KeydTimeoutError, KeydUnavailableError, Refusal } from '../errors.js'

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

interface Pending { opcode: number, resolve: (items: ItemMap) => void, reject: (err: Error) => void, timer: NodeJS.Timeout }

/** Decodes an answer with `decode`; an answer that does not decode is keyd's fault, not the caller's. */
function decoded<T> (opcode: number, items: ItemMap, decode: (items: ItemMap) => T): T {
  try {
    return decode(items)
  } catch (err) {
    if (!(err instanceof Refusal)) throw err
    throw new KeydUnavailableError(`keyd answered ${opName(opcode)} with a malformed frame: ${err.message}`, { cause: err })
  }
}

/** The SIGN request of the `sign` / `signBatch` arguments. @throws TypeError for an unknown algorithm */
function signRequest (name: string, algorithm: string, message: Uint8Array, version: number | undefined, ieeeP1363: boolean | undefined): SignRequest {
  const alg = ALGORITHMS_BY_NAME.get(algorithm)
  if (alg === undefined) throw new TypeError(`unknown algorithm ${algorithm}`)
  return { name, version: version ?? 0, algorithm: alg.code, message: Buffer.from(message.buffer, message.byteOffset, message.byteLength), encoding: ieeeP1363 === true ? 1 : 0 }
}

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
      this.#ready = this.#open().catch((err: unknown) => { this.#ready = null; throw err })
    }
    await this.#ready
  }

  async #open (): Promise<void> {
    const socket = connect(this.#opts.socketPath)
    socket.unref()
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { socket.destroy(); reject(new KeydTimeoutError(this.#opts.timeoutMs)) }, this.#opts.timeoutMs)
      socket.once('connect', () => { clearTimeout(timer); resolve() })
      socket.once('error', err => { clearTimeout(timer); reject(new KeydUnavailableError(`keyd is not reachable at ${this.#opts.socketPath}: ${errorCode(err) ?? err.message}`, { cause: err })) })
    })
    const decoder = new FrameDecoder()
    socket.on('data', chunk => {
      for (const ev of decoder.push(chunk)) {
        if (ev.kind !== 'frame') { socket.destroy(); return }
        const p = this.#pending.get(ev.frame.requestId)
        if (p === undefined) continue
        this.#pending.delete(ev.frame.requestId)
        clearTimeout(p.timer)
        this.#settle(p, ev.frame.opcode, parseItems(ev.frame.payload))
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
      throw new KeydUnavailableError(`cannot read the client secret file ${this.#opts.secretFile}: ${errorCode(err) ?? ''}`, { cause: err })
    }
    decoded(Op.HELLO, await this.#send(Op.HELLO, encodeHelloRequest({ clientName: this.#opts.clientName, clientSecret: secret })), decodeHelloResponse)
  }

  /** Resolves or rejects one pending request with the answer frame's items. */
  #settle (p: Pending, opcode: number, items: ItemMap | null): void {
    if (items === null) {
      p.reject(new KeydUnavailableError(`keyd answered ${opName(p.opcode)} with items that run past the frame`))
    } else if (opcode === Op.ERROR) {
      try {
        const e = decodeErrorResponse(items)
        p.reject(new KeydRemoteError(errorCodeName(e.code), e.code, e.message))
      } catch (err) {
        p.reject(new KeydUnavailableError(`keyd answered ${opName(p.opcode)} with a malformed ERROR frame: ${errorMessage(err)}`, { cause: err }))
      }
    } else if (opcode !== (p.opcode | RESPONSE_BIT)) {
      p.reject(new KeydUnavailableError(`keyd answered ${opName(p.opcode)} with opcode 0x${opcode.toString(16)}`))
    } else {
      p.resolve(items)
    }
  }

  async #send (opcode: number, items: Item[]): Promise<ItemMap> {
    const socket = this.#socket
    if (socket === null) throw new KeydUnavailableError('keyd connection closed')
    const id = this.#nextId
    this.#nextId = (this.#nextId + 1) >>> 0 || 1
    return await new Promise<ItemMap>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id)
        reject(new KeydTimeoutError(this.#opts.timeoutMs))
      }, this.#opts.timeoutMs)
      this.#pending.set(id, { opcode, resolve, reject, timer })
      socket.ref()
      socket.write(encodeFrame(opcode, id, items))
    }).finally(() => { if (this.#pending.size === 0) socket.unref() })
  }

  /** Sends one request (connecting first if needed) and returns the answer's items. */
  async request (opcode: number, items: Item[] = []): Promise<ItemMap> {
    await this.connect()
    return await this.#send(opcode, items)
  }

  /** Sends one request and decodes its answer with `decode`. */
  async #call<T> (opcode: number, items: Item[], decode: (items: ItemMap) => T): Promise<T> {
    return decoded(opcode, await this.request(opcode, items), decode)
  }

  async ping (payload: Uint8Array = new Uint8Array(0)): Promise<Buffer> {
    const r = await this.#call(Op.PING, encodePingRequest({ payload: Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength) }), decodePingResponse)
    return Buffer.from(r.payload)
  }

  async getPublicKey (name: string, version = 0): Promise<PublicKeyInfo> {
    return toPublicKeyInfo(await this.#call(Op.GET_PUBLIC_KEY, encodeGetPublicKeyRequest({ name, version }), decodePublicKeyResponse))
  }

  /** Signs `message` whole with `algorithm` (a name like `ecdsa-sha256`, see keyd/algorithms.ts). */
  async sign (name: string, algorithm: string, message: Uint8Array, opts: { version?: number, ieeeP1363?: boolean } = {}): Promise<{ signature: Buffer, version: number }> {
    const r = await this.#call(Op.SIGN, encodeSignRequest(signRequest(name, algorithm, message, opts.version, opts.ieeeP1363)), decodeSignResponse)
    return { signature: Buffer.from(r.signature), version: r.version }
  }

  /**
   * Signs several messages in one SIGN_BATCH frame; each result is a signature or that entry's own
   * refusal (a KeydRemoteError), in the order of `entries`.
   * @throws KeydUnavailableError, KeydTimeoutError, KeydRemoteError for the frame as a whole
   */
  async signBatch (entries: BatchEntry[]): Promise<Array<{ signature: Buffer, version: number } | KeydRemoteError>> {
    const requests = entries.map(e => signRequest(e.name, e.algorithm, e.message, e.version, e.ieeeP1363))
    const answers = await this.#call(Op.SIGN_BATCH, encodeSignBatchRequest(requests), decodeSignBatchResponse)
    if (answers.length !== entries.length) throw new KeydUnavailableError(`keyd answered SIGN_BATCH with ${answers.length} entries for ${entries.length}`)
    return answers.map(a => 'code' in a ? new KeydRemoteError(errorCodeName(a.code), a.code, a.message) : { signature: Buffer.from(a.signature), version: a.version })
  }

  /**
   * The TLS ticket keys of `rotationSeconds`-long epochs: `previous` older ones (decrypt only), the
   * current one and the next one, oldest first, with keyd's clock. Secrets: never log them.
   * @throws KeydUnavailableError, KeydTimeoutError, KeydRemoteError (FORBIDDEN without the sign right)
   */
  async getTicketKeys (rotationSeconds: number, previous = 1): Promise<{ keys: TicketKey[], serverTimeMs: number }> {
    const r = await this.#call(Op.GET_TICKET_KEYS, encodeGetTicketKeysRequest({ rotationSeconds, previous }), decodeGetTicketKeysResponse)
    const keys = decodeTicketKeySet(r.keySet)
    if (keys === null) throw new KeydUnavailableError('keyd answered GET_TICKET_KEYS with a malformed key set')
    return { keys, serverTimeMs: r.serverTime }
  }

  async createKey (name: string, type: string, usage: string): Promise<PublicKeyInfo> {
    return toPublicKeyInfo(await this.#call(Op.KEY_CREATE, encodeKeyCreateRequest({ name, type, usage }), decodePublicKeyResponse))
  }

  /**
   * Generates a new current version of key `name` (admin); older versions keep verifying, and signing
   * for the key's grace: `signGraceSeconds` sets it (null = without limit), absent keeps it.
   */
  async rotateKey (name: string, opts: { signGraceSeconds?: number | null } = {}): Promise<PublicKeyInfo> {
    const grace = opts.signGraceSeconds === undefined ? {} : { signGraceSeconds: opts.signGraceSeconds ?? GRACE_UNLIMITED }
    return toPublicKeyInfo(await this.#call(Op.KEY_ROTATE, encodeKeyRotateRequest({ name, ...grace }), decodePublicKeyResponse))
  }

  /** KEY_INFO (admin): one key's detail with every version (public data only); works on a destroyed key's tombstone. */
  async keyInfo (name: string): Promise<KeyDetail> {
    return JSON.parse((await this.#call(Op.KEY_INFO, encodeKeyNameRequest({ name }), decodeKeyJsonResponse)).json) as KeyDetail
  }

  /** KEY_DISABLE / KEY_ENABLE / KEY_DESTROY (admin); answers the key's summary. */
  async setKeyState (name: string, action: 'disable' | 'enable' | 'destroy'): Promise<KeyDetail> {
    const op = action === 'disable' ? Op.KEY_DISABLE : action === 'enable' ? Op.KEY_ENABLE : Op.KEY_DESTROY
    return JSON.parse((await this.#call(op, encodeKeyNameRequest({ name }), decodeKeyJsonResponse)).json) as KeyDetail
  }

  /** KEY_IMPORT of a PKCS#8 DER private key (admin), or of a bring-your-own-key bundle made with `wrapForImport`. */
  async importKey (name: string, usage: string, key: { pkcs8: Uint8Array } | { wrappedAesKey: Uint8Array, wrappedPrivateKey: Uint8Array }): Promise<PublicKeyInfo> {
    const buf = (b: Uint8Array): Buffer => Buffer.from(b.buffer, b.byteOffset, b.byteLength)
    const material = 'pkcs8' in key
      ? { privateKey: buf(key.pkcs8) }
      : { wrappedAesKey: buf(key.wrappedAesKey), wrappedPrivateKey: buf(key.wrappedPrivateKey) }
    return toPublicKeyInfo(await this.#call(Op.KEY_IMPORT, encodeKeyImportRequest({ name, usage, ...material }), decodePublicKeyResponse))
  }

  /** keyd's RSA-OAEP wrapping public key for wrapped imports (admin). */
  async getWrappingKey (): Promise<{ publicKey: KeyObject, bits: number }> {
    const r = await this.#call(Op.WRAPPING_KEY, encodeEmptyRequest(), decodeWrappingKeyResponse)
    return { publicKey: createPublicKey({ key: r.publicKey, format: 'der', type: 'spki' }), bits: r.bits }
  }

  /** keyd's Ed25519 attestation public key (admin). */
  async getAttestationKey (): Promise<KeyObject> {
    const r = await this.#call(Op.ATTESTATION_KEY, encodeEmptyRequest(), decodeAttestationKeyResponse)
    return createPublicKey({ key: r.publicKey, format: 'der', type: 'spki' })
  }

  /** KEY_ATTEST (admin): a signed statement about one version (0 = current); check it with `verifyAttestation`. */
  async attestKey (name: string, version = 0): Promise<AttestationDocument> {
    const r = await this.#call(Op.KEY_ATTEST, encodeKeyAttestRequest({ name, version }), decodeKeyAttestResponse)
    return JSON.parse(r.statement) as AttestationDocument
  }

  async listKeys (): Promise<KeyDetail[]> {
    return JSON.parse((await this.#call(Op.KEY_LIST, encodeEmptyRequest(), decodeKeyListResponse)).json) as KeyDetail[]
  }

  close (): void {
    this.#socket?.destroy()
    this.#socket = null
    this.#ready = null
  }
}

function toPublicKeyInfo (r: PublicKeyResponse): PublicKeyInfo {
  const spki = Buffer.from(r.publicKey)
  return {
    name: r.name,
    version: r.version,
    type: r.type,
    bits: r.bits,
    spki,
    publicKey: createPublicKey({ key: spki, format: 'der', type: 'spki' }),
    versions: r.versions === undefined ? [] : decodeKeyVersions(r.versions) ?? []
  }
}
