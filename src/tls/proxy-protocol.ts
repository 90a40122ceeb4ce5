// The PROXY protocol (HAProxy's, versions 1 and 2) read at the very start of a TCP connection,
// before any TLS byte. A trusted load balancer must send one header; anyone else must not. The
// reader copies each byte at most once into a fixed buffer of the largest header accepted, so it is
// linear and bounded, and it hands back the bytes after the header exactly as they arrived.
// Spec: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt

import { isIPv4, isIPv6, SocketAddress, type Socket } from 'node:net'

/** Why a connection was refused at its PROXY header (the metric's bounded label). */
export type ProxyRefusal =
  /** A PROXY header from a peer outside `proxyProtocol.trustedCidrs`. */
  | 'untrusted_peer'
  /** A trusted peer sent something else than a PROXY header (a direct TLS client, say). */
  | 'missing'
  /** A header that breaks the grammar or whose lengths do not add up. */
  | 'malformed'
  /** A v1 line without CRLF within 107 bytes, or a v2 header longer than accepted. */
  | 'too_long'
  /** A version, command, family or transport this proxy does not take (v2 version ≠ 2, DGRAM…). */
  | 'unsupported'
  /** The header did not arrive within `timeouts.clientHelloMs`. */
  | 'timeout'
  /** The peer closed before a whole header. */
  | 'closed'

export const PROXY_REFUSALS: readonly ProxyRefusal[] = ['untrusted_peer', 'missing', 'malformed', 'too_long', 'unsupported', 'timeout', 'closed']

/** What an accepted header said. `address` is absent when the header carries none to use (LOCAL, UNKNOWN, UNSPEC, UNIX): the real peer's then applies. */
export interface ProxiedSource {
  version: 1 | 2
  command: 'proxy' | 'local'
  /** The original client's address, canonical (IPv6 compressed, lower case, IPv4-mapped as `::ffff:a.b.c.d`). */
  address?: string
  port?: number
}

export type ProxyVerdict =
  | { status: 'partial' }
  | { status: 'refused', reason: ProxyRefusal, detail: string }
  /** `rest`: the bytes after the header in the chunks pushed so far (or, with no header, every byte), to be read as TLS. */
  | { status: 'done', source?: ProxiedSource, rest: Buffer }

/** A v1 line is at most 107 bytes, CRLF included (spec §2.1). */
export const V1_MAX = 107
/** The longest v2 address block (addresses + TLVs) accepted. AWS NLB, GCP and HAProxy send well under 300 bytes. */
export const V2_MAX_LENGTH = 2048

const EMPTY = Buffer.alloc(0)
const V1_SIG = Buffer.from('PROXY ', 'latin1')
const V2_SIG = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a])
const V2_HEAD = 16
/** Address block sizes by family (spec §2.2): INET 4+4+2+2, INET6 16+16+2+2, UNIX 108+108. */
const V2_ADDR_LEN = [0, 12, 36, 216]

type Stage = 'sig' | 'v1' | 'v2-head' | 'v2-body'

/**
 * Reads a PROXY header off the first bytes of a connection. `required` (a trusted peer): a header
 * must come first. `forbidden` (any other peer): a header is refused, anything else is handed on
 * untouched after at most 12 bytes (and after one byte for a TLS record, whose first byte is 0x16).
 */
export class ProxyHeaderReader {
  readonly #mode: 'required' | 'forbidden'
  /** The header's bytes so far when it spans chunks; allocated only then (most headers come whole). */
  #buf: Buffer | undefined
  /** Where the stages read the header: the first chunk itself, or #buf. */
  #src: Buffer = EMPTY
  #len = 0
  #stage: Stage = 'sig'
  /** Bytes the current stage needs in #src before it can decide. */
  #need = 1
  #v1 = true
  #v2 = true

  constructor (mode: 'required' | 'forbidden') {
    this.#mode = mode
  }

  /** True when a header must come first (the peer is a trusted balancer). */
  get required (): boolean {
    return this.#mode === 'required'
  }

  /** Feeds the next chunk; after a `refused` or `done` verdict the reader must not be fed again. */
  push (chunk: Buffer): ProxyVerdict {
    // Nothing held yet: read the chunk in place (offsets in it are offsets in the header), and
    // copy only what is left undecided at its end.
    const direct = this.#len === 0
    if (!direct) this.#src = this.#buffer()
    else this.#src = chunk
    let off = 0
    while (off < chunk.length) {
      if (this.#stage === 'v1') {
        // Up to the LF (or the v1 limit), no further: the rest belongs to TLS.
        const limit = Math.min(chunk.length, off + V1_MAX - this.#len)
        const lf = chunk.indexOf(0x0a, off)
        const end = lf !== -1 && lf < limit ? lf + 1 : limit
        if (!direct) chunk.copy(this.#src, this.#len, off, end)
        this.#len += end - off
        off = end
        if (this.#src[this.#len - 1] === 0x0a) return this.#finish(this.#v1Line(), chunk, off)
        if (this.#len >= V1_MAX) return refused('too_long', `no CRLF within ${V1_MAX} bytes`)
        continue
      }
      const n = Math.min(this.#need - this.#len, chunk.length - off)
      if (!direct) chunk.copy(this.#src, this.#len, off, off + n)
      this.#len += n
      off += n
      if (this.#len < this.#need) break
      const step = this.#step()
      if (step === undefined) continue
      if (step.status === 'done' && step.source === undefined) {
        // Not a PROXY header (forbidden mode): every byte read so far goes on; usually the first
        // byte of the first chunk (0x16), and then that chunk goes on as it is.
        return { status: 'done', rest: direct ? chunk : Buffer.concat([this.#src.subarray(0, this.#len), chunk.subarray(off)]) }
      }
      return this.#finish(step, chunk, off)
    }
    if (direct) chunk.copy(this.#buffer(), 0, 0, this.#len)
    return { status: 'partial' }
  }

  #buffer (): Buffer {
    // Forbidden mode decides within the 12-byte signature.
    this.#buf ??= Buffer.allocUnsafe(this.#mode === 'required' ? V2_HEAD + V2_MAX_LENGTH : V2_SIG.length)
    return this.#buf
  }

  #finish (v: ProxyVerdict, chunk: Buffer, off: number): ProxyVerdict {
    if (v.status === 'done') v.rest = chunk.subarray(off)
    return v
  }

  /** Decides on #src[0, #need): a verdict, or undefined with #need moved on. */
  #step (): ProxyVerdict | undefined {
    const b = this.#src
    if (this.#stage === 'sig') {
      const i = this.#len - 1
      const byte = b[i]
      this.#v1 = this.#v1 && V1_SIG[i] === byte
      this.#v2 = this.#v2 && V2_SIG[i] === byte
      if (!this.#v1 && !this.#v2) {
        if (this.#mode === 'forbidden') return { status: 'done', rest: EMPTY }
        return refused('missing', `the first bytes are not a PROXY header (0x${b.subarray(0, this.#len).toString('hex')})`)
      }
      const complete = this.#v1 ? this.#len === V1_SIG.length : this.#len === V2_SIG.length
      if (!complete) {
        this.#need++
        return undefined
      }
      if (this.#mode === 'forbidden') return refused('untrusted_peer', `a PROXY v${this.#v1 ? 1 : 2} header from a peer not in proxyProtocol.trustedCidrs`)
      if (this.#v1) this.#stage = 'v1'
      else {
        this.#stage = 'v2-head'
        this.#need = V2_HEAD
      }
      return undefined
    }
    if (this.#stage === 'v2-head') {
      const verCmd = b[12] ?? 0
      const famProto = b[13] ?? 0
      const length = b.readUInt16BE(14)
      if (verCmd >> 4 !== 2) return refused('unsupported', `PROXY v2 header with version ${verCmd >> 4}`)
      if ((verCmd & 0x0f) > 1) return refused('unsupported', `PROXY v2 header with command ${verCmd & 0x0f}`)
      const family = famProto >> 4
      if (family > 3) return refused('unsupported', `PROXY v2 header with address family ${family}`)
      if (length > V2_MAX_LENGTH) return refused('too_long', `PROXY v2 address block of ${length} bytes (at most ${V2_MAX_LENGTH})`)
      const local = (verCmd & 0x0f) === 0
      if (!local && length < (V2_ADDR_LEN[family] ?? 0)) return refused('malformed', `PROXY v2 address block of ${length} bytes, too short for family ${family}`)
      this.#stage = 'v2-body'
      this.#need = V2_HEAD + length
      if (length > 0) return undefined
    }
    return this.#v2Body()
  }

  #v2Body (): ProxyVerdict {
    const b = this.#src
    const local = ((b[12] ?? 0) & 0x0f) === 0
    const family = (b[13] ?? 0) >> 4
    const transport = (b[13] ?? 0) & 0x0f
    const addrLen = V2_ADDR_LEN[family] ?? 0
    // LOCAL: the balancer's own connection (a health check): the real peer is the client, and the
    // block (whatever its family) is discarded, as the spec says.
    if (local) return { status: 'done', source: { version: 2, command: 'local' }, rest: EMPTY }
    // TLVs are skipped, but their framing must fill the block exactly.
    for (let p = V2_HEAD + addrLen; family !== 0 && p < this.#need;) {
      if (p + 3 > this.#need) return refused('malformed', 'PROXY v2 TLV header truncated')
      p += 3 + b.readUInt16BE(p + 1)
      if (p > this.#need) return refused('malformed', 'PROXY v2 TLV longer than its header')
    }
    if (family === 0 || family === 3) {
      // UNSPEC or UNIX: no IP address to believe; the spec says to use the real connection's.
      return { status: 'done', source: { version: 2, command: 'proxy' }, rest: EMPTY }
    }
    if (transport !== 1) return refused('unsupported', `PROXY v2 transport ${transport} (only STREAM)`)
    const address = family === 1
      ? `${b[16] ?? 0}.${b[17] ?? 0}.${b[18] ?? 0}.${b[19] ?? 0}`
      : canonical6(Array.from({ length: 8 }, (_, i) => b.readUInt16BE(16 + 2 * i).toString(16)).join(':'))
    const port = b.readUInt16BE(V2_HEAD + addrLen - 4)
    return { status: 'done', source: { version: 2, command: 'proxy', address, port }, rest: EMPTY }
  }

  /** Parses the complete v1 line in #src (it ends with LF). */
  #v1Line (): ProxyVerdict {
    const b = this.#src
    if (this.#len < 2 || b[this.#len - 2] !== 0x0d) return refused('malformed', 'PROXY v1 line not ended by CRLF')
    const line = b.toString('latin1', V1_SIG.length, this.#len - 2)
    const parts = line.split(' ')
    // UNKNOWN: the balancer could not tell (spec: ignore the rest of the line, use the real peer).
    if (parts[0] === 'UNKNOWN') return { status: 'done', source: { version: 1, command: 'proxy' }, rest: EMPTY }
    const [proto, src, dst, sport, dport] = parts
    if (parts.length !== 5 || src === undefined || dst === undefined || sport === undefined || dport === undefined) {
      return refused('malformed', 'PROXY v1 line: expected "PROXY TCP4|TCP6 src dst sport dport"')
    }
    const valid = proto === 'TCP4' ? isIPv4 : proto === 'TCP6' ? isIPv6 : undefined
    if (valid === undefined) return refused('malformed', 'PROXY v1 protocol not TCP4, TCP6 or UNKNOWN')
    if (!valid(src) || !valid(dst)) return refused('malformed', `PROXY v1 address not ${proto === 'TCP4' ? 'IPv4' : 'IPv6'}`)
    if (!PORT.test(sport) || !PORT.test(dport) || Number(sport) > 65_535 || Number(dport) > 65_535) {
      return refused('malformed', 'PROXY v1 port not a decimal number 0-65535')
    }
    const address = proto === 'TCP4' ? src : canonical6(src)
    return { status: 'done', source: { version: 1, command: 'proxy', address, port: Number(sport) }, rest: EMPTY }
  }
}

/** A port as the spec writes it: decimal, no sign, no leading zero. */
const PORT = /^(?:0|[1-9][0-9]{0,4})$/

function refused (reason: ProxyRefusal, detail: string): ProxyVerdict {
  return { status: 'refused', reason, detail }
}

function canonical6 (address: string): string {
  return new SocketAddress({ address, family: 'ipv6' }).address
}

const PROXIED = Symbol('keyedge.proxiedSource')

/** Attaches the source a PROXY header carried to `socket` (the accepted socket, then its TLS socket). */
export function setProxiedSource (socket: Socket, source: ProxiedSource): void {
  (socket as Socket & { [PROXIED]?: ProxiedSource })[PROXIED] = source
}

/** The source a PROXY header carried for this connection, if any (also through an HTTP/2 request's socket proxy). */
export function proxiedSource (socket: object | null | undefined): ProxiedSource | undefined {
  if (socket === null || socket === undefined) return undefined
  return (socket as { [PROXIED]?: ProxiedSource })[PROXIED]
}

/**
 * The client's address for this connection: what a PROXY header carried, else the socket's peer.
 * Every per-client decision downstream (X-Forwarded-For, access log, limits, hashing) starts here.
 */
export function peerAddress (socket: (object & { remoteAddress?: string }) | null | undefined): string | undefined {
  return proxiedSource(socket)?.address ?? socket?.remoteAddress
}
