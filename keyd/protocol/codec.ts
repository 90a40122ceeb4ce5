// Pure codec for the keyd wire protocol (PROTOCOL.md): bytes in, objects out. Never touches a socket.

import { Op, Tag, TAGS, PROTOCOL_VERSION, HEADER_SIZE, DEFAULT_MAX_FRAME, type ErrorName } from './spec.js'

// The numbers themselves are declared once, in spec.ts; re-exported here for the codec's callers.
export { Op, Tag, ErrorCode, PROTOCOL_VERSION, HEADER_SIZE, DEFAULT_MAX_FRAME, errorCodeName, opName } from './spec.js'
export type ErrorCodeName = ErrorName

export interface Item { tag: number, value: Uint8Array }

export interface Frame {
  version: number
  opcode: number
  flags: number
  requestId: number
  payload: Uint8Array
}

/** Encodes one frame. Throws RangeError if an item is too large for the format. */
export function encodeFrame (opcode: number, requestId: number, items: Item[] = []): Buffer {
  let size = HEADER_SIZE
  for (const it of items) size += 5 + it.value.length
  const out = Buffer.allocUnsafe(size)
  out.writeUInt32BE(size - 4, 0)
  out[4] = PROTOCOL_VERSION
  out[5] = opcode
  out.writeUInt16BE(0, 6)
  out.writeUInt32BE(requestId >>> 0, 8)
  let off = HEADER_SIZE
  for (const it of items) {
    out[off] = it.tag
    out.writeUInt32BE(it.value.length, off + 1)
    out.set(it.value, off + 5)
    off += 5 + it.value.length
  }
  return out
}

/**
 * Parsed items: a map where the first occurrence of a tag wins (`get`), which also keeps every
 * later occurrence for the repeatable tags (ENTRY) so `all(tag)` returns them in order.
 */
export class ItemMap extends Map<number, Uint8Array> {
  #repeats: Map<number, Uint8Array[]> | undefined

  /** Every occurrence of `tag`, in frame order (empty if absent). */
  all (tag: number): Uint8Array[] {
    const first = this.get(tag)
    if (first === undefined) return []
    return [first, ...(this.#repeats?.get(tag) ?? [])]
  }

  /** Records one item: the first occurrence becomes `get(tag)`, later ones are kept for `all`. */
  add (tag: number, value: Uint8Array): void {
    if (!this.has(tag)) { this.set(tag, value); return }
    this.#repeats ??= new Map()
    const list = this.#repeats.get(tag)
    if (list === undefined) this.#repeats.set(tag, [value])
    else list.push(value)
  }
}

/** Parses a frame payload into items; the first occurrence of a tag wins. Returns null if malformed. */
export function parseItems (payload: Uint8Array): ItemMap | null {
  const items = new ItemMap()
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength)
  let off = 0
  while (off < payload.length) {
    if (off + 5 > payload.length) return null
    const tag = view.getUint8(off)
    const len = view.getUint32(off + 1)
    if (off + 5 + len > payload.length) return null
    items.add(tag, payload.subarray(off + 5, off + 5 + len))
    off += 5 + len
  }
  return items
}

/**
 * Every occurrence of the repeatable `tag` in `payload`, each parsed as a nested item list
 * (ENTRY of SIGN_BATCH). Returns null if the payload or any nested list is malformed.
 */
export function parseRepeated (payload: Uint8Array, tag: number): ItemMap[] | null {
  const outer = parseItems(payload)
  if (outer === null) return null
  const out: ItemMap[] = []
  for (const v of outer.all(tag)) {
    const inner = parseItems(v)
    if (inner === null) return null
    out.push(inner)
  }
  return out
}

/** Encodes an item list without a frame header (the value of a nested ENTRY item). */
export function encodeItems (items: Item[]): Buffer {
  return encodeFrame(0, 0, items).subarray(HEADER_SIZE)
}

export type DecodeEvent =
  | { kind: 'frame', frame: Frame }
  | { kind: 'too-large', length: number, requestId: number | null }

/**
 * Incremental frame splitter: feed it chunks, get whole frames back. After a frame over the
 * size limit it stops (the stream cannot be resynchronised) and reports `too-large` once.
 */
export class FrameDecoder {
  #buf: Buffer = Buffer.alloc(0)
  /** Chunks of a frame still incomplete, joined once it is whole (not at every chunk: that is quadratic). */
  #parts: Uint8Array[] = []
  #partBytes = 0
  #need = 0
  #dead = false
  readonly maxFrame: number

  constructor (maxFrame = DEFAULT_MAX_FRAME) {
    this.maxFrame = maxFrame
  }

  /** Bytes buffered but not yet returned as a frame. */
  get pending (): number { return this.#buf.length + this.#partBytes }

  /** Takes `chunk` (a socket read: the caller does not reuse it) and returns the frames it completes. */
  push (chunk: Uint8Array): DecodeEvent[] {
    if (this.#dead) return []
    if (this.#need > 0) {
      this.#parts.push(chunk)
      this.#partBytes += chunk.length
      if (this.#buf.length + this.#partBytes < this.#need) return []
      this.#buf = Buffer.concat([this.#buf, ...this.#parts])
      this.#parts = []
      this.#partBytes = 0
      this.#need = 0
    } else {
      this.#buf = this.#buf.length === 0 ? Buffer.from(chunk) : Buffer.concat([this.#buf, chunk])
    }
    const events: DecodeEvent[] = []
    while (this.#buf.length >= 4) {
      const length = this.#buf.readUInt32BE(0)
      if (length + 4 > this.maxFrame || length < HEADER_SIZE - 4) {
        const requestId = this.#buf.length >= HEADER_SIZE ? this.#buf.readUInt32BE(8) : null
        events.push({ kind: 'too-large', length, requestId })
        this.#dead = true
        this.#buf = Buffer.alloc(0)
        break
      }
      if (this.#buf.length < length + 4) { this.#need = length + 4; break }
      const f = this.#buf.subarray(0, length + 4)
      events.push({
        kind: 'frame',
        frame: {
          version: f.readUInt8(4),
          opcode: f.readUInt8(5),
          flags: f.readUInt16BE(6),
          requestId: f.readUInt32BE(8),
          payload: Buffer.from(f.subarray(HEADER_SIZE))
        }
      })
      this.#buf = this.#buf.subarray(length + 4)
    }
    return events
  }
}

// Item builders and readers.

export function itemStr (tag: number, s: string): Item {
  return { tag, value: Buffer.from(s, 'utf8') }
}
export function itemBytes (tag: number, b: Uint8Array): Item {
  return { tag, value: b }
}
export function itemU8 (tag: number, n: number): Item {
  return { tag, value: Uint8Array.of(n & 0xff) }
}
export function itemU16 (tag: number, n: number): Item {
  const b = Buffer.allocUnsafe(2); b.writeUInt16BE(n); return { tag, value: b }
}
export function itemU32 (tag: number, n: number): Item {
  const b = Buffer.allocUnsafe(4); b.writeUInt32BE(n >>> 0); return { tag, value: b }
}

/** Reads a fixed-size unsigned integer item; `undefined` if absent, `null` if the wrong size. */
export function readUint (items: Map<number, Uint8Array>, tag: number, size: 1 | 2 | 4): number | undefined | null {
  const v = items.get(tag)
  if (v === undefined) return undefined
  if (v.length !== size) return null
  const b = Buffer.from(v.buffer, v.byteOffset, v.byteLength)
  return size === 1 ? b[0] : size === 2 ? b.readUInt16BE(0) : b.readUInt32BE(0)
}

export function readStr (items: Map<number, Uint8Array>, tag: number): string | undefined {
  const v = items.get(tag)
  return v === undefined ? undefined : Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('utf8')
}

/** `s` cut to at most `max` bytes of UTF-8 without splitting a character. */
export function truncateUtf8 (s: string, max: number): string {
  const b = Buffer.from(s, 'utf8')
  if (b.length <= max) return s
  let end = max
  while (end > 0 && ((b[end] ?? 0) & 0xc0) === 0x80) end--
  return b.subarray(0, end).toString('utf8')
}

/** Builds the ERROR response frame; the message is cut to the ERROR_MESSAGE bound. */
export function encodeError (requestId: number, code: number, message: string): Buffer {
  return encodeFrame(Op.ERROR, requestId, [itemU16(Tag.ERROR_CODE, code), itemStr(Tag.ERROR_MESSAGE, truncateUtf8(message, TAGS.ERROR_MESSAGE.max))])
}

// Key references: the PEM the proxy holds instead of a private key.

export const KEY_REF_LABEL = 'KEYEDGE KEY REFERENCE'
const KEY_REF_MAGIC = Buffer.from('KER1')

export interface KeyReference { name: string, version: number, type: string }

/** Encodes a key reference PEM (no secret in it). */
export function encodeKeyReference (ref: KeyReference): string {
  const items = [itemStr(Tag.KEY_NAME, ref.name), itemU32(Tag.KEY_VERSION, ref.version), itemStr(Tag.KEY_TYPE, ref.type)]
  const body = Buffer.concat([KEY_REF_MAGIC, encodeFrame(0, 0, items).subarray(HEADER_SIZE)]).toString('base64')
  const lines = body.match(/.{1,64}/g) ?? []
  return `-----BEGIN ${KEY_REF_LABEL}-----\n${lines.join('\n')}\n-----END ${KEY_REF_LABEL}-----\n`
}

/** Decodes a key reference PEM; returns null if the text is not one. */
export function decodeKeyReference (pem: string): KeyReference | null {
  const m = new RegExp(`-----BEGIN ${KEY_REF_LABEL}-----([A-Za-z0-9+/=\\s]+)-----END ${KEY_REF_LABEL}-----`).exec(pem)
  const base64 = m?.[1]
  if (base64 === undefined) return null
  const raw = Buffer.from(base64.replace(/\s+/g, ''), 'base64')
  if (raw.length < 4 || !raw.subarray(0, 4).equals(KEY_REF_MAGIC)) return null
  const items = parseItems(raw.subarray(4))
  if (items === null) return null
  const name = readStr(items, Tag.KEY_NAME)
  const version = readUint(items, Tag.KEY_VERSION, 4)
  const type = readStr(items, Tag.KEY_TYPE)
  if (name === undefined || typeof version !== 'number' || version === 0 || type === undefined) return null
  return { name, version, type }
}
