// Pure TLS ClientHello reader: finds the SNI server name and the offered ticket's key name in the
// first bytes of a connection, so the listener can hand the socket to the right TLS server.
// Node's SNICallback cannot do this: it installs only one certificate of the chosen context.

/** Longest ClientHello accepted (post-quantum key shares make them ~2 KB; the spec allows 16 MB). */
export const MAX_CLIENT_HELLO_BYTES = 64 * 1024

export type ClientHelloResult =
  | { status: 'partial' }
  | { status: 'invalid', reason: string }
  | { status: 'ok', serverName: string | undefined, ticketKeyName?: Buffer, offersTls13?: boolean }

const HANDSHAKE = 22
const CLIENT_HELLO = 1
const EXT_SERVER_NAME = 0
const EXT_SESSION_TICKET = 35
const EXT_PRE_SHARED_KEY = 41
const EXT_SUPPORTED_VERSIONS = 43
/** A ticket made by OpenSSL (Node) starts with the 16-byte name of the key that encrypted it. */
const TICKET_KEY_NAME_BYTES = 16

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
    let serverName: string | undefined
    let ticketKeyName: Buffer | undefined
    let offersTls13 = false
    while (p + 4 <= end) {
      const type = body.readUInt16BE(p)
      const len = body.readUInt16BE(p + 2)
      p += 4
      if (type === EXT_SERVER_NAME) serverName ??= readServerName(body, p, len)
      else if (type === EXT_SESSION_TICKET) ticketKeyName ??= keyName(body, p, len)
      else if (type === EXT_PRE_SHARED_KEY && len >= 4) {
        // PreSharedKeyExtension: identities<7..2^16-1> of (u16 length, identity, u32 age); the first one.
        ticketKeyName ??= keyName(body, p + 4, Math.min(body.readUInt16BE(p + 2), len - 4))
      } else if (type === EXT_SUPPORTED_VERSIONS && len >= 1) {
        for (let q = p + 1; q + 2 <= Math.min(p + 1 + body.readUInt8(p), p + len); q += 2) if (body.readUInt16BE(q) === 0x0304) offersTls13 = true
      }
      p += len
    }
    return { status: 'ok', serverName, ...(ticketKeyName !== undefined ? { ticketKeyName } : {}), ...(offersTls13 ? { offersTls13 } : {}) }
  } catch {
    return { status: 'invalid', reason: 'malformed ClientHello' }
  }
}

/** server_name_list: u16 length, then entries of (u8 type, u16 length, name); the first host_name. */
function readServerName (body: Buffer, p: number, len: number): string | undefined {
  let q = p + 2
  const listEnd = Math.min(p + 2 + body.readUInt16BE(p), p + len)
  while (q + 3 <= listEnd) {
    const nameType = body.readUInt8(q)
    const nameLen = body.readUInt16BE(q + 1)
    if (nameType === 0 && q + 3 + nameLen <= listEnd) return body.toString('latin1', q + 3, q + 3 + nameLen)
    q += 3 + nameLen
  }
  return undefined
}

/** The key name at the start of a ticket of `len` bytes at `p`, if it is long enough to hold one. */
function keyName (body: Buffer, p: number, len: number): Buffer | undefined {
  if (len < TICKET_KEY_NAME_BYTES || p + TICKET_KEY_NAME_BYTES > body.length) return undefined
  return Buffer.from(body.subarray(p, p + TICKET_KEY_NAME_BYTES))
}

/** A fatal TLS alert record (unrecognized_name, 112), sent before closing a refused connection. */
export const UNRECOGNIZED_NAME_ALERT = Buffer.from([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70])
