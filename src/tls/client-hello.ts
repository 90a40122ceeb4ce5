// The ClientHello reader in front of OpenSSL: reads the first handshake message of a connection,
// record by record, in time and memory linear in the bytes received, and finds what the listener
// routes by (the SNI server name, whether TLS 1.3 is offered). It never judges the connection:
// whatever it cannot read is handed, with the bytes read, to a TLS server, so that OpenSSL answers
// exactly as it would alone. Node's SNICallback cannot replace it: it installs only one certificate
// of the chosen context.

/**
 * The longest ClientHello body OpenSSL reads (CLIENT_HELLO_MAX_LENGTH in OpenSSL 3.0 and 3.5): the
 * largest the TLS grammar allows (legacy_version, random, session ID ≤ 32, cipher suites ≤ 65534,
 * compression methods ≤ 255, extensions ≤ 65535, with their length fields). OpenSSL refuses a
 * longer one with illegal_parameter as soon as it reads the 4-byte handshake header.
 */
export const MAX_CLIENT_HELLO_BODY = 131_396
/** The largest TLSPlaintext fragment (2^14); OpenSSL answers a longer record with record_overflow. */
export const MAX_RECORD_PAYLOAD = 16_384
/** OpenSSL's MAX_EMPTY_RECORDS: more consecutive empty records than this end the connection. */
export const MAX_EMPTY_RECORDS = 32

const HANDSHAKE = 22
const CLIENT_HELLO = 1
const EXT_SERVER_NAME = 0
const EXT_SUPPORTED_VERSIONS = 43
const EXT_SESSION_TICKET = 35
const TLS13 = 0x0304

/** What the reader found; `unroutable` connections go to the default server with the bytes read. */
export type HelloVerdict =
  | { status: 'partial' }
  | { status: 'unroutable', reason: string }
  /** `offersTicket`: a non-empty session_ticket extension (a TLS 1.2 ticket to resume with). */
  | { status: 'ok', serverName: string | undefined, offersTls13: boolean, offersTicket: boolean }

/**
 * Reads one connection's first flight, chunk by chunk. Each byte is handled a bounded number of
 * times (kept once for the replay, copied once more into the handshake message, read once when the
 * body is parsed), so a ClientHello spread over one-byte records costs the same per byte as one in
 * a single record. Memory: the bytes to replay (at most 6 × 131,400: every record carries at least
 * one byte) plus the handshake message. Empty records are accepted as OpenSSL accepts them (up to
 * 32 in a row) but not kept once a non-empty record follows: OpenSSL would accept the flight
 * without them just the same, and keeping them would let 160 bytes of headers ride on every byte.
 */
export class ClientHelloReader {
  /** The bytes the TLS server must see, in order: [0, #outLength) … */
  #out: Buffer | undefined
  #outLength = 0
  /** … or, when the whole flight came in one chunk and all of it is kept, that chunk. */
  #whole: Buffer | undefined
  /**
   * A record header split across chunks (not in #out until it is known not to be empty). This and
   * the two buffers below are allocated only when a flight needs them: the usual hello (one record,
   * one chunk) is read in place, without them.
   */
  #headerBuf: Buffer | undefined
  #headerHave = 0
  /** Payload bytes still expected in the current record. */
  #recordLeft = 0
  /** Empty records since the last non-empty one, and their headers (at most MAX_EMPTY_RECORDS + 1). */
  #emptyRun = 0
  #runHeadersBuf: Buffer | undefined
  /** The handshake message body, once its length is known; before that its 4-byte header. */
  #message: Buffer | undefined
  #headBuf: Buffer | undefined
  #have = 0
  #verdict: HelloVerdict = { status: 'partial' }

  /** The bytes to hand to the TLS server: what was received, less the empty records dropped. */
  bytes (): Buffer {
    if (this.#whole !== undefined) return this.#whole
    const kept = this.#out === undefined ? Buffer.alloc(0) : this.#out.subarray(0, this.#outLength)
    return this.#verdict.status === 'partial' ? Buffer.concat([kept, this.#pendingBytes()]) : kept
  }

  get #header (): Buffer { return (this.#headerBuf ??= Buffer.alloc(5)) }
  get #runHeaders (): Buffer { return (this.#runHeadersBuf ??= Buffer.alloc(5 * (MAX_EMPTY_RECORDS + 1))) }
  get #head (): Buffer { return (this.#headBuf ??= Buffer.alloc(4)) }

  /** Feeds the next chunk; returns the verdict, which stays fixed once it is not `partial`. */
  push (chunk: Buffer): HelloVerdict {
    if (this.#verdict.status !== 'partial') {
      this.#append(chunk, 0, chunk.length)
      return this.#verdict
    }
    if (this.#fresh()) {
      const whole = wholeHelloBody(chunk)
      if (whole !== undefined) {
        // What the record-by-record path below finds for such a chunk, without copying a byte.
        this.#verdict = parseClientHelloBody(whole)
        this.#whole = chunk
        return this.#verdict
      }
    }
    const len = chunk.length
    /** Start of the bytes of this chunk not yet kept (nor set aside as pending). */
    let keepFrom = 0
    let p = 0
    while (p < len && this.#verdict.status === 'partial') {
      if (this.#recordLeft > 0) {
        const take = Math.min(this.#recordLeft, len - p)
        this.#payload(chunk, p, take)
        this.#recordLeft -= take
        p += take
        continue
      }
      let header: Buffer
      let at: number
      if (this.#headerHave === 0 && len - p >= 5) {
        header = chunk
        at = p
        p += 5
      } else {
        // A header split across chunks: set its bytes aside until it is complete.
        this.#append(chunk, keepFrom, p)
        const take = Math.min(5 - this.#headerHave, len - p)
        chunk.copy(this.#header, this.#headerHave, p, p + take)
        this.#headerHave += take
        p += take
        keepFrom = p
        header = this.#header
        at = 0
      }
      const have = header === this.#headerBuf ? this.#headerHave : 5
      // Not a handshake record, or not a TLS one (SSLv2-format hello, HTTP …): OpenSSL decides.
      if (header[at] !== HANDSHAKE) { this.#decide('not a TLS handshake record'); break }
      if (have >= 2 && header[at + 1] !== 3) { this.#decide('not a TLS record version'); break }
      if (have < 5) continue
      const length = header.readUInt16BE(at + 3)
      if (length > MAX_RECORD_PAYLOAD) { this.#decide('record longer than 2^14'); break }
      if (length === 0) {
        // Set the empty record's header aside: dropped once a non-empty record follows.
        if (header === chunk) { this.#append(chunk, keepFrom, at); keepFrom = p }
        header.copy(this.#runHeaders, 5 * this.#emptyRun, at, at + 5)
        this.#headerHave = 0
        if (++this.#emptyRun > MAX_EMPTY_RECORDS) { this.#decide('too many empty records'); break }
        continue
      }
      this.#emptyRun = 0
      if (header === this.#headerBuf) this.#append(header, 0, 5)
      this.#headerHave = 0
      this.#recordLeft = length
    }
    // The usual case: the whole hello in one chunk, handed on as it came.
    if (this.#out === undefined && keepFrom === 0 && this.#verdict.status !== 'partial') this.#whole = chunk
    else this.#append(chunk, keepFrom, len)
    return this.#verdict
  }

  /** Nothing read yet. */
  #fresh (): boolean {
    return this.#out === undefined && this.#whole === undefined && this.#headerHave === 0 && this.#recordLeft === 0 && this.#emptyRun === 0 && this.#message === undefined && this.#have === 0
  }

  /** Empty-record headers and a partial header not yet kept. */
  #pendingBytes (): Buffer {
    if (this.#emptyRun === 0 && this.#headerHave === 0) return Buffer.alloc(0)
    return Buffer.concat([this.#runHeaders.subarray(0, 5 * this.#emptyRun), this.#header.subarray(0, this.#headerHave)])
  }

  /**
   * The flight is not routable: keeps what was set aside (empty records, a partial header); the
   * caller keeps the rest of the chunk. (When empty records are set aside, nothing of the current
   * chunk before them is left unkept, so the order holds.)
   */
  #decide (reason: string): void {
    const pending = this.#pendingBytes()
    if (pending.length > 0) this.#append(pending, 0, pending.length)
    this.#emptyRun = 0
    this.#headerHave = 0
    this.#verdict = { status: 'unroutable', reason }
  }

  #append (src: Buffer, from: number, to: number): void {
    const n = to - from
    if (n <= 0) return
    if (this.#whole !== undefined) {
      const whole = this.#whole
      this.#whole = undefined
      this.#append(whole, 0, whole.length)
    }
    if (this.#out === undefined || this.#outLength + n > this.#out.length) {
      const grown = Buffer.allocUnsafe(Math.max(2 * (this.#out?.length ?? 1024), this.#outLength + n))
      this.#out?.copy(grown, 0, 0, this.#outLength)
      this.#out = grown
    }
    if (n < 16) for (let i = 0; i < n; i++) this.#out[this.#outLength + i] = src.readUInt8(from + i)
    else src.copy(this.#out, this.#outLength, from, to)
    this.#outLength += n
  }

  /** Handshake payload bytes: the 4-byte header, then the body, copied once into its own buffer. */
  #payload (chunk: Buffer, p: number, n: number): void {
    if (this.#message === undefined) {
      while (this.#have < 4 && n > 0) { this.#head[this.#have++] = chunk.readUInt8(p++); n-- }
      if (this.#head[0] !== CLIENT_HELLO) { this.#verdict = { status: 'unroutable', reason: 'first handshake message is not a ClientHello' }; return }
      if (this.#have < 4) return
      const length = this.#head.readUIntBE(1, 3)
      if (length > MAX_CLIENT_HELLO_BODY) { this.#verdict = { status: 'unroutable', reason: 'ClientHello longer than OpenSSL reads' }; return }
      this.#message = Buffer.allocUnsafe(length)
      this.#have = 0
      if (length === 0) { this.#verdict = parseClientHelloBody(this.#message); return }
    }
    const message = this.#message
    const take = Math.min(message.length - this.#have, n)
    if (take < 16) for (let i = 0; i < take; i++) message[this.#have + i] = chunk.readUInt8(p + i)
    else chunk.copy(message, this.#have, p, p + take)
    this.#have += take
    if (this.#have === message.length) this.#verdict = parseClientHelloBody(message)
  }
}

/**
 * The ClientHello body when `chunk` starts with one whole non-empty handshake record (of at most
 * 2^14 bytes, TLS major version 3) whose payload starts with a whole ClientHello of at most
 * MAX_CLIENT_HELLO_BODY bytes: the usual first flight. Anything else (split, spread over records,
 * empty records, oversized) is undefined, for the reader's record-by-record path.
 */
function wholeHelloBody (chunk: Buffer): Buffer | undefined {
  if (chunk.length < 9 || chunk[0] !== HANDSHAKE || chunk[1] !== 3 || chunk[5] !== CLIENT_HELLO) return undefined
  const record = chunk.readUInt16BE(3)
  if (record === 0 || record > MAX_RECORD_PAYLOAD || 5 + record > chunk.length) return undefined
  const body = chunk.readUIntBE(6, 3)
  if (body > MAX_CLIENT_HELLO_BODY || 4 + body > record) return undefined
  return chunk.subarray(9, 9 + body)
}

/**
 * Reads the routing facts from a ClientHello body. Anything malformed is `unroutable`: OpenSSL
 * will say what is wrong with it (decode_error …), whichever server it reaches.
 */
export function parseClientHelloBody (body: Buffer): HelloVerdict {
  const bad = { status: 'unroutable', reason: 'malformed ClientHello' } as const
  if (body.length < 2 + 32 + 1) return bad
  let p = 2 + 32
  p += 1 + body.readUInt8(p) // session id
  if (p + 2 > body.length) return bad
  p += 2 + body.readUInt16BE(p) // cipher suites
  if (p + 1 > body.length) return bad
  p += 1 + body.readUInt8(p) // compression methods
  if (p > body.length) return bad
  if (p === body.length) return { status: 'ok', serverName: undefined, offersTls13: false, offersTicket: false }
  if (p + 2 > body.length) return bad
  const end = p + 2 + body.readUInt16BE(p)
  if (end > body.length) return bad
  p += 2
  let serverName: string | undefined
  let offersTls13 = false
  let offersTicket = false
  while (p + 4 <= end) {
    const type = body.readUInt16BE(p)
    const len = body.readUInt16BE(p + 2)
    p += 4
    if (p + len > end) return bad
    if (type === EXT_SERVER_NAME && serverName === undefined) serverName = readServerName(body, p, len)
    else if (type === EXT_SUPPORTED_VERSIONS && len >= 1) {
      const listEnd = Math.min(p + 1 + body.readUInt8(p), p + len)
      for (let q = p + 1; q + 2 <= listEnd; q += 2) if (body.readUInt16BE(q) === TLS13) offersTls13 = true
    } else if (type === EXT_SESSION_TICKET && len > 0) offersTicket = true
    p += len
  }
  return { status: 'ok', serverName, offersTls13, offersTicket }
}

/** server_name_list: u16 length, then entries of (u8 type, u16 length, name); the first host_name. */
function readServerName (body: Buffer, p: number, len: number): string | undefined {
  if (len < 2) return undefined
  const listEnd = Math.min(p + 2 + body.readUInt16BE(p), p + len)
  for (let q = p + 2; q + 3 <= listEnd;) {
    const nameType = body[q]
    const nameLen = body.readUInt16BE(q + 1)
    if (nameType === 0 && q + 3 + nameLen <= listEnd) return body.toString('latin1', q + 3, q + 3 + nameLen)
    q += 3 + nameLen
  }
  return undefined
}

/** Reads a whole first flight at once (tests, tools): the verdict for `bytes`. */
export function readClientHello (bytes: Buffer): HelloVerdict {
  return new ClientHelloReader().push(bytes)
}

/**
 * A fatal unrecognized_name alert (112), byte for byte what OpenSSL sends when its servername
 * callback refuses a name: strict SNI refuses a ClientHello with it, then closes.
 */
export const UNRECOGNIZED_NAME_ALERT = Buffer.from([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70])
