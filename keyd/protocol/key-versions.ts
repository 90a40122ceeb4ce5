// The KEY_VERSIONS item (PROTOCOL.md): every version of a key with its creation time, so a client
// (the token endpoint) can derive key roles from keyd alone. Pure encoder/decoder, no socket.

import { TAGS } from './spec.js'

/** One record: u32 version ‖ u64 creation time, unix milliseconds. */
export const KEY_VERSION_RECORD_BYTES: 12 = TAGS.KEY_VERSIONS.record

export interface KeyVersionTime { version: number, createdAtMs: number }

/** Encodes `versions` oldest first (sorted by version). */
export function encodeKeyVersions (versions: readonly KeyVersionTime[]): Buffer {
  const sorted = [...versions].sort((a, b) => a.version - b.version)
  const out = Buffer.alloc(sorted.length * KEY_VERSION_RECORD_BYTES)
  sorted.forEach((v, i) => {
    out.writeUInt32BE(v.version >>> 0, i * KEY_VERSION_RECORD_BYTES)
    out.writeBigUInt64BE(BigInt(Math.max(0, Math.floor(v.createdAtMs))), i * KEY_VERSION_RECORD_BYTES + 4)
  })
  return out
}

/** Decodes a KEY_VERSIONS value; null if its length is not a whole number of records. */
export function decodeKeyVersions (value: Uint8Array): KeyVersionTime[] | null {
  if (value.length % KEY_VERSION_RECORD_BYTES !== 0) return null
  const b = Buffer.from(value.buffer, value.byteOffset, value.length)
  const out: KeyVersionTime[] = []
  for (let off = 0; off < b.length; off += KEY_VERSION_RECORD_BYTES) {
    out.push({ version: b.readUInt32BE(off), createdAtMs: Number(b.readBigUInt64BE(off + 4)) })
  }
  return out
}
