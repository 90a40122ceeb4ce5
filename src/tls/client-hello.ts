// Pure TLS ClientHello reader: finds the SNI server name in the first bytes of a connection, so
// the listener can hand the socket to the TLS server of the right certificate entry.
// Node's SNICallback cannot do this: it installs only one certificate of the chosen context.

/** Longest ClientHello accepted (post-quantum key shares make them ~2 KB; the spec allows 16 MB). */
export const MAX_CLIENT_HELLO_BYTES = 64 * 1024

export type ClientHelloResult =
  | { status: 'partial' }
  | { status: 'invalid', reason: string }
  | { status: 'ok', serverName: string | undefined }

const HANDSHAKE = 22
const CLIENT_HELLO = 1
const EXT_SERVER_NAME = 0

/** Concatenates the payloads of the leading handshake records; undefined when not a handshake. */
function handshakeBytes (buf: Buffer): { bytes: Buffer, complete: boolean } | undefined {
  const parts: Buffer[] = []
  let offset = 0
  while (offset + 5 <= buf.length) {
    if (buf[offset] !== HANDSHAKE || buf[offset + 1] !== 3) return undefined
    const recordLength = buf.readUInt16BE(offset + 3)
    parts.push(buf.subarray(offset + 5, Math.min(offset + 5 + recordLength, buf.length)))
    offset += 5 + recordLength
    const joined = Buffer.concat(parts)
    if (joined.length >= 4 && joined.length >= 4 + joined.readUIntBE(1, 3)) return { bytes: joined, complete: true }
    if (offset > buf.length) return { bytes: joined, complete: false }
  }
  return { bytes: Buffer.concat(parts), complete: false }
}

/**
 * Reads the server name from the ClientHello at the start of `buf` (one or more TLS records).
 * 'partial' means more bytes are needed; 'invalid' that this is not a TLS ClientHello.
 */
export function readClientHello (buf: Buffer): ClientHelloResult {
  if (buf.length > 0 && buf[0] !== HANDSHAKE) return { status: 'invalid', reason: 'not a TLS handshake record' }
  const hs = handshakeBytes(buf)
  if (hs === undefined) return { status: 'invalid', reason: 'not a TLS handshake record' }
  if (hs.bytes.length >= 1 && hs.bytes[0] !== CLIENT_HELLO) return { status: 'invalid', reason: 'not a ClientHello' }
  if (!hs.complete) {
    return buf.length > MAX_CLIENT_HELLO_BYTES ? { status: 'invalid', reason: 'ClientHello too long' } : { status: 'partial' }
  }
  const body = hs.bytes.subarray(4, 4 + hs.bytes.readUIntBE(1, 3))
  try {
    let p = 2 + 32 // legacy_version, random
    p += 1 + body.readUInt8(p) // session id
    p += 2 + body.readUInt16BE(p) // cipher suites
    p += 1 + body.readUInt8(p) // compression methods
    if (p === body.length) return { status: 'ok', serverName: undefined }
    const end = p + 2 + body.readUInt16BE(p)
    p += 2
    if (end > body.length) return { status: 'invalid', reason: 'truncated extensions' }
    while (p + 4 <= end) {
      const type = body.readUInt16BE(p)
      const len = body.readUInt16BE(p + 2)
      p += 4
      if (type === EXT_SERVER_NAME) {
        // server_name_list: u16 length, then entries of (u8 type, u16 length, name).
        let q = p + 2
        const listEnd = Math.min(p + 2 + body.readUInt16BE(p), p + len)
        while (q + 3 <= listEnd) {
          const nameType = body.readUInt8(q)
          const nameLen = body.readUInt16BE(q + 1)
          if (nameType === 0 && q + 3 + nameLen <= listEnd) {
            return { status: 'ok', serverName: body.toString('latin1', q + 3, q + 3 + nameLen) }
          }
          q += 3 + nameLen
        }
        return { status: 'ok', serverName: undefined }
      }
      p += len
    }
    return { status: 'ok', serverName: undefined }
  } catch {
    return { status: 'invalid', reason: 'malformed ClientHello' }
  }
}

/** A fatal TLS alert record (unrecognized_name, 112), sent before closing a refused connection. */
export const UNRECOGNIZED_NAME_ALERT = Buffer.from([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70])
