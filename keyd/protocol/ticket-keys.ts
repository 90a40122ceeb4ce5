// TLS session-ticket keys on the wire (GET_TICKET_KEYS, PROTOCOL.md): the tags, the epoch arithmetic,
// the HKDF info label, and the pure encoder/decoder of the key-set item. Never touches a socket.

import { Tag, TAGS } from './spec.js'

/** Item tags of GET_TICKET_KEYS, by their short names (declared in spec.ts as TICKET_*, SERVER_TIME). */
export const TicketTag = {
  /** u32: seconds per epoch (one key encrypts for one epoch). */
  ROTATION_SECONDS: Tag.TICKET_ROTATION_SECONDS,
  /** u32: how many keys before the current one are still answered (decrypt only). */
  PREVIOUS: Tag.TICKET_PREVIOUS,
  /** bytes: the key records, oldest epoch first (below). */
  KEY_SET: Tag.TICKET_KEY_SET,
  /** u64: keyd's clock when it answered, unix milliseconds. */
  SERVER_TIME: Tag.SERVER_TIME
} as const

/** Node's ticket key: 16-byte name ‖ 16-byte HMAC secret ‖ 16-byte AES-128 key. */
export const TICKET_KEY_BYTES = 48
export const TICKET_KEY_NAME_BYTES = 16
/** One record: u64 epoch, u64 encryptFrom, u64 encryptUntil, u64 decryptUntil (unix seconds), key. */
export const TICKET_RECORD_BYTES: 80 = TAGS.TICKET_KEY_SET.record

/** Bounds of TICKET_ROTATION_SECONDS and TICKET_PREVIOUS (spec.ts); out of range is BAD_FRAME. */
export const TICKET_ROTATION_MIN_SECONDS = TAGS.TICKET_ROTATION_SECONDS.range[0]
export const TICKET_ROTATION_MAX_SECONDS = TAGS.TICKET_ROTATION_SECONDS.range[1]
export const TICKET_PREVIOUS_MAX = TAGS.TICKET_PREVIOUS.range[1]

/** HKDF-SHA256 `info` prefix; the full info is this ‖ u32 rotationSeconds ‖ u64 epoch. */
export const TICKET_HKDF_INFO = 'keyedge tls ticket key v1'

export interface TicketKey {
  epoch: number
  /** Unix seconds: this key encrypts new tickets in [encryptFrom, encryptUntil). */
  encryptFrom: number
  encryptUntil: number
  /** Unix seconds: tickets under this key are accepted until then. */
  decryptUntil: number
  /** 48 bytes; a secret: never log it. */
  key: Buffer
}

/** The epoch of unix time `nowMs` for a rotation period. */
export function epochOf (nowMs: number, rotationSeconds: number): number {
  return Math.floor(nowMs / 1000 / rotationSeconds)
}

/** The HKDF info that derives one epoch's key; distinct per rotation period and epoch. */
export function ticketKeyInfo (rotationSeconds: number, epoch: number): Buffer {
  const label = Buffer.from(TICKET_HKDF_INFO, 'ascii')
  const tail = Buffer.alloc(12)
  tail.writeUInt32BE(rotationSeconds, 0)
  tail.writeBigUInt64BE(BigInt(epoch), 4)
  return Buffer.concat([label, tail])
}

/** Validity times of the key of `epoch`: it encrypts during its epoch, decrypts `previous` epochs more. */
export function ticketKeyTimes (epoch: number, rotationSeconds: number, previous: number): Omit<TicketKey, 'key' | 'epoch'> {
  return {
    encryptFrom: epoch * rotationSeconds,
    encryptUntil: (epoch + 1) * rotationSeconds,
    decryptUntil: (epoch + 1 + previous) * rotationSeconds
  }
}

/** Encodes key records into the KEY_SET item value. */
export function encodeTicketKeySet (keys: readonly TicketKey[]): Buffer {
  const out = Buffer.alloc(keys.length * TICKET_RECORD_BYTES)
  keys.forEach((k, i) => {
    const o = i * TICKET_RECORD_BYTES
    out.writeBigUInt64BE(BigInt(k.epoch), o)
    out.writeBigUInt64BE(BigInt(k.encryptFrom), o + 8)
    out.writeBigUInt64BE(BigInt(k.encryptUntil), o + 16)
    out.writeBigUInt64BE(BigInt(k.decryptUntil), o + 24)
    k.key.copy(out, o + 32)
  })
  return out
}

/** Decodes a KEY_SET item value; null when its size is not a whole number of records. */
export function decodeTicketKeySet (value: Uint8Array): TicketKey[] | null {
  if (value.length === 0 || value.length % TICKET_RECORD_BYTES !== 0) return null
  const b = Buffer.from(value.buffer, value.byteOffset, value.byteLength)
  const keys: TicketKey[] = []
  for (let o = 0; o < b.length; o += TICKET_RECORD_BYTES) {
    keys.push({
      epoch: Number(b.readBigUInt64BE(o)),
      encryptFrom: Number(b.readBigUInt64BE(o + 8)),
      encryptUntil: Number(b.readBigUInt64BE(o + 16)),
      decryptUntil: Number(b.readBigUInt64BE(o + 24)),
      key: Buffer.from(b.subarray(o + 32, o + TICKET_RECORD_BYTES))
    })
  }
  return keys
}
