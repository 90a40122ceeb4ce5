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
const TLS13 = 0x0304

/** What the reader found; `unroutable` connections go to the default server with the bytes read. */
export type HelloVerdict =
  | { status: 'partial' }
  | { status: 'unroutable', reason: string }
  | { status: 'ok', serverName: string | undefined, offersTls13: boolean }

/**
 * Reads one connection's first flight, chunk by chunk. Each byte is handled a bounded number of
 * times (copied once into the replay buffer, once more into the handshake message, and read once
 * when the body is parsed), so a ClientHello spread over one-byte records costs the same per byte
 * as one in a single record. Memory: the bytes to replay (at most 6 × 131,400 bytes: every record
 * carries at least one byte) plus the handshake message. Empty records are accepted as OpenSSL
 * accepts them (up to 32 in a row) but not kept once a non-empty record follows: OpenSSL would
 * accept the flight without them just the same, and keeping them would let 160 bytes of headers
 * ride on every byte of hello.
 */
export class ClientHelloReader {
  /** The bytes the TLS server must see, in order: [0, #outLength). */
  #out = Buffer.allocUnsafe(2048)
  #outLength = 0
  /** A record header, possibly split across chunks. */
  readonly #header = Buffer.alloc(5)
  #headerHave = 0
  /** Payload bytes still expected in the current record. */
  #recordLeft = 0
  /** Empty records since the last non-empty one, and their headers (at most MAX_EMPTY_RECORDS + 1). */
  #emptyRun = 0
  readonly #runHeaders = Buffer.alloc(5 * (MAX_EMPTY_RECORDS + 1))
  /** The handshake message body, once its length is known; before that its 4-byte header. */
  #message: Buffer | undefined
  readonly #head = Buffer.alloc(4)
  #have = 0
  #verdict: HelloVerdict = { status: 'partial' }

  /** The bytes to hand to the TLS server: what was received, less the empty records dropped. */
  bytes (): Buffer {
    const pending = this.#verdict.status === 'partial' ? this.#pendingBytes() : Buffer.alloc(0)
    return Buffer.concat([this.#out.subarray(0, this.#outLength), pending])
  }

  /** How many bytes the reader holds (for memory accounting). */
  get heldBytes (): number {
    return this.#out.length + (this.#message?.length ?? 0)
  }

  /** Feeds the next chunk; returns the verdict, which stays fixed once it is not `partial`. */
  push (chunk: Buffer): HelloVerdict {
    if (this.#verdict.status !== 'partial') {
      this.#append(chunk, 0, chunk.length)
      return this.#verdict
    }
    let p = 0
    while (p < chunk.length && this.#verdict.status === 'partial') {
      if (this.#recordLeft > 0) {
        const take = Math.min(this.#recordLeft, chunk.length - p)
        this.#append(chunk, p, p + take)
        this.#payload(chunk, p, take)
        this.#recordLeft -= take
        p += take
        continue
      }
      const take = Math.min(5 - this.#headerHave, chunk.length - p)
      chunk.copy(this.#header, this.#headerHave, p, p + take)
      this.#headerHave += take
      p += take
      // Not a handshake record, or not a TLS one (SSLv2-format hello, HTTP …): OpenSSL decides.
      if (this.#header[0] !== HANDSHAKE) this.#decide({ status: 'unroutable', reason: 'not a TLS handshake record' })
      else if (this.#headerHave >= 2 && this.#header[1] !== 3) this.#decide({ status: 'unroutable', reason: 'not a TLS record version' })
      if (this.#verdict.status !== 'partial' || this.#headerHave < 5) continue
      const length = this.#header.readUInt16BE(3)
      if (length > MAX_RECORD_PAYLOAD) {
        this.#decide({ status: 'unroutable', reason: 'record longer than 2^14' })
      } else if (length === 0) {
        this.#header.copy(this.#runHeaders, 5 * this.#emptyRun)
        this.#headerHave = 0
        if (++this.#emptyRun > MAX_EMPTY_RECORDS) this.#decide({ status: 'unroutable', reason: 'too many empty records' })
      } else {
        this.#emptyRun = 0
        this.#headerHave = 0
        this.#append(this.#header, 0, 5)
        this.#recordLeft = length
      }
    }
    if (this.#verdict.status !== 'partial') this.#append(chunk, p, chunk.length)
    return this.#verdict
  }

  /** Empty-record headers and a partial header not yet in #out. */
  #pendingBytes (): Buffer {
    return Buffer.concat([this.#runHeaders.subarray(0, 5 * this.#emptyRun), this.#header.subarray(0, this.#headerHave)])
  }

  #decide (verdict: HelloVerdict): void {
    if (verdict.status !== 'partial') {
      const pending = this.#pendingBytes()
      this.#append(pending, 0, pending.length)
      this.#emptyRun = 0
      this.#headerHave = 0
    }
    this.#verdict = verdict
  }

  #append (src: Buffer, from: number, to: number): void {
    const n = to - from
    if (n <= 0) return
    if (this.#outLength + n > this.#out.length) {
      const grown = Buffer.allocUnsafe(Math.max(this.#out.length * 2, this.#outLength + n))
      this.#out.copy(grown, 0, 0, this.#outLength)
      this.#out = grown
    }
    src.copy(this.#out, this.#outLength, from, to)
    this.#outLength += n
  }

  /** Handshake payload bytes: the 4-byte header, then the body, copied once into its own buffer. */
  #payload (chunk: Buffer, p: number, n: number): void {
    if (this.#message === undefined) {
      const take = Math.min(4 - this.#have, n)
      chunk.copy(this.#head, this.#have, p, p + take)
      this.#have += take
      p += take
      n -= take
      if (this.#have >= 1 && this.#head[0] !== CLIENT_HELLO) { this.#verdict = { status: 'unroutable', reason: 'first handshake message is not a ClientHello' }; return }
      if (this.#have < 4) return
      const length = this.#head.readUIntBE(1, 3)
      if (length > MAX_CLIENT_HELLO_BODY) { this.#verdict = { status: 'unroutable', reason: 'ClientHello longer than OpenSSL reads' }; return }
      this.#message = Buffer.allocUnsafe(length)
      this.#have = 0
      if (length === 0) { this.#verdict = parseClientHelloBody(this.#message); return }
    }
    const take = Math.min(this.#message.length - this.#have, n)
    chunk.copy(this.#message, this.#have, p, p + take)
    this.#have += take
    if (this.#have === this.#message.length) this.#verdict = parseClientHelloBody(this.#message)
  }
}

/**
 * Reads the routing facts from a ClientHello body. Anything malformed is `unroutable`: OpenSSL
 * will say what is wrong with it (decode_error …), whichever server it reaches.
 */
export function parseClientHelloBody (body: Buffer): HelloVerdict {
  const bad = { status: 'unroutable', reason: 'malformed ClientHello' } as const
  if (body.length < 2 + 32 + 1) return bad
  let p = 2 + 32
  p += 1 + body[p] // session id
  if (p + 2 > body.length) return bad
  p += 2 + body.readUInt16BE(p) // cipher suites
  if (p + 1 > body.length) return bad
  p += 1 + body[p] // compression methods
  if (p > body.length) return bad
  if (p === body.length) return { status: 'ok', serverName: undefined, offersTls13: false }
  if (p + 2 > body.length) return bad
  const end = p + 2 + body.readUInt16BE(p)
  if (end > body.length) return bad
  p += 2
  let serverName: string | undefined
  let offersTls13 = false
  while (p + 4 <= end) {
    const type = body.readUInt16BE(p)
    const len = body.readUInt16BE(p + 2)
    p += 4
    if (p + len > end) return bad
    if (type === EXT_SERVER_NAME && serverName === undefined) serverName = readServerName(body, p, len)
    else if (type === EXT_SUPPORTED_VERSIONS && len >= 1) {
      const listEnd = Math.min(p + 1 + body[p], p + len)
      for (let q = p + 1; q + 2 <= listEnd; q += 2) if (body.readUInt16BE(q) === TLS13) offersTls13 = true
    }
    p += len
  }
  return { status: 'ok', serverName, offersTls13 }
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
