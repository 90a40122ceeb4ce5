// Raw TLS first flights for tests of the front: real ClientHellos captured from Node's TLS client,
// grown to any size, re-framed into records of any size, and sent over a raw socket whose answer
// (bytes, then how the server ended the connection) is collected for comparison with plain OpenSSL.
import { once } from 'node:events'
import { connect as netConnect, createServer, type AddressInfo, type Socket } from 'node:net'
import { Duplex } from 'node:stream'
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls'

export const HANDSHAKE = 22
/** The largest ClientHello body the TLS grammar allows (and OpenSSL's own cap, CLIENT_HELLO_MAX_LENGTH). */
export const MAX_HELLO_BODY = 131_396

/** Splits TLS records; `rest` is what follows the last complete record. */
export function splitRecords (bytes: Buffer): { records: Array<{ type: number, version: number, payload: Buffer }>, rest: Buffer } {
  const records: Array<{ type: number, version: number, payload: Buffer }> = []
  let p = 0
  while (p + 5 <= bytes.length) {
    const len = bytes.readUInt16BE(p + 3)
    if (p + 5 + len > bytes.length) break
    records.push({ type: bytes.readUInt8(p), version: bytes.readUInt16BE(p + 1), payload: bytes.subarray(p + 5, p + 5 + len) })
    p += 5 + len
  }
  return { records, rest: bytes.subarray(p) }
}

/** The handshake message (type, u24 length, body) carried by the leading handshake records of `bytes`, once complete. */
export function firstHandshakeMessage (bytes: Buffer): Buffer | undefined {
  const payload = Buffer.concat(splitRecords(bytes).records.filter(r => r.type === HANDSHAKE).map(r => r.payload))
  if (payload.length < 4) return undefined
  const len = payload.readUIntBE(1, 3)
  return payload.length >= 4 + len ? payload.subarray(0, 4 + len) : undefined
}

/**
 * Frames a handshake message into handshake records whose payload sizes come from `sizes` (one
 * size for all, or a function of the record index); `version` is the record-layer version.
 */
export function frame (message: Buffer, sizes: number | ((i: number) => number), version = 0x0301): Buffer {
  const parts: Buffer[] = []
  for (let p = 0, i = 0; p < message.length; i++) {
    const n = Math.max(1, Math.min(typeof sizes === 'number' ? sizes : sizes(i), message.length - p))
    const header = Buffer.alloc(5)
    header[0] = HANDSHAKE
    header.writeUInt16BE(version, 1)
    header.writeUInt16BE(n, 3)
    parts.push(header, message.subarray(p, p + n))
    p += n
  }
  return Buffer.concat(parts)
}

/** The first flight of Node's TLS client with `opts` (servername, versions, ALPN, session …), as sent. */
export async function captureFirstFlight (opts: ConnectionOptions = {}): Promise<Buffer> {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  try {
    const accepted = once(server, 'connection') as Promise<[Socket]>
    const client = tlsConnect({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, rejectUnauthorized: false, ...opts })
    client.on('error', () => {})
    const [socket] = await accepted
    let bytes = Buffer.alloc(0)
    while (firstHandshakeMessage(bytes) === undefined) bytes = Buffer.concat([bytes, (await once(socket, 'data') as [Buffer])[0]])
    client.destroy()
    socket.destroy()
    return bytes
  } finally {
    server.close()
  }
}

interface Hello { head: Buffer, ciphers: Buffer, compression: Buffer, extensions: Array<{ type: number, data: Buffer }> }

function parseHello (message: Buffer): Hello {
  const body = message.subarray(4)
  let p = 2 + 32
  p += 1 + body.readUInt8(p)
  const head = body.subarray(0, p)
  const cl = body.readUInt16BE(p)
  const ciphers = body.subarray(p + 2, p + 2 + cl)
  p += 2 + cl
  const compression = body.subarray(p + 1, p + 1 + body.readUInt8(p))
  p += 1 + body.readUInt8(p)
  const extensions: Array<{ type: number, data: Buffer }> = []
  const end = p + 2 + body.readUInt16BE(p)
  for (p += 2; p < end;) {
    const len = body.readUInt16BE(p + 2)
    extensions.push({ type: body.readUInt16BE(p), data: body.subarray(p + 4, p + 4 + len) })
    p += 4 + len
  }
  return { head, ciphers, compression, extensions }
}

function buildHello (h: Hello): Buffer {
  const u16 = (n: number): Buffer => { const b = Buffer.alloc(2); b.writeUInt16BE(n); return b }
  const exts = Buffer.concat(h.extensions.flatMap(e => [u16(e.type), u16(e.data.length), e.data]))
  const body = Buffer.concat([h.head, u16(h.ciphers.length), h.ciphers, Buffer.from([h.compression.length]), h.compression, u16(exts.length), exts])
  const header = Buffer.from([1, 0, 0, 0])
  header.writeUIntBE(body.length, 1, 3)
  return Buffer.concat([header, body])
}

/** `message` (a ClientHello) with extension `type` set to `data`: replaced in place, else added before pre_shared_key (which must stay last). */
export function withExtension (message: Buffer, type: number, data: Buffer): Buffer {
  const h = parseHello(message)
  const at = h.extensions.findIndex(e => e.type === type)
  if (at >= 0) h.extensions[at] = { type, data }
  else {
    const psk = h.extensions.findIndex(e => e.type === EXT_PRE_SHARED_KEY)
    h.extensions.splice(psk >= 0 ? psk : h.extensions.length, 0, { type, data })
  }
  return buildHello(h)
}

const EXT_PADDING = 21
const EXT_PRE_SHARED_KEY = 41

/**
 * Grows a ClientHello message to a body of exactly `bodyBytes` (up to MAX_HELLO_BODY): with
 * unassigned cipher suites (servers skip those), then a padding extension and unassigned extensions
 * placed before pre_shared_key (which must stay last), then (only to reach the very maximum) a
 * 32-byte session ID and 255 compression methods, which only a TLS 1.2 server accepts. The key
 * shares are untouched, so a server answers with its ServerHello (the handshake cannot finish: the
 * transcript changed).
 */
export function growHello (message: Buffer, bodyBytes: number): Buffer {
  const h = parseHello(message)
  const current = message.length - 4
  if (bodyBytes < current) throw new Error(`cannot shrink a ${current}-byte hello`)
  let need = bodyBytes - current
  // Cipher suites 0xfe00… are unassigned: servers skip suites they do not know.
  let extra = Math.min(need, 65_534 - h.ciphers.length) & ~1
  // Leave nothing, or room for a whole extension (4 bytes at least), for the rest.
  if (need - extra > 0 && need - extra < 4 && extra >= 4) extra -= 4
  const suites = Buffer.alloc(extra)
  for (let i = 0; i < extra; i += 2) suites.writeUInt16BE(0xfe00 + (i / 2) % 0x100, i)
  h.ciphers = Buffer.concat([h.ciphers, suites])
  need -= extra
  const added: Array<{ type: number, data: Buffer }> = []
  let room = 65_535 - h.extensions.reduce((n, e) => n + 4 + e.data.length, 0)
  let type = 0xfd00
  while (need >= 4 && room >= 4) {
    let len = Math.min(need - 4, room - 4, 65_000)
    const left = need - 4 - len
    if (left > 0 && left < 4 && len >= 4) len -= 4
    added.push({ type: added.length === 0 ? EXT_PADDING : type++, data: Buffer.alloc(len) })
    need -= 4 + len
    room -= 4 + len
  }
  const psk = h.extensions.findIndex(e => e.type === EXT_PRE_SHARED_KEY)
  if (psk >= 0) h.extensions.splice(psk, 0, ...added)
  else h.extensions.push(...added)
  const sid = h.head.readUInt8(34)
  if (need > 0 && sid < 32) {
    const grow = Math.min(need, 32 - sid)
    h.head = Buffer.concat([h.head.subarray(0, 34), Buffer.from([sid + grow]), h.head.subarray(35), Buffer.alloc(grow, 0x5a)])
    need -= grow
  }
  if (need > 0 && h.compression.length < 255) {
    const grow = Math.min(need, 255 - h.compression.length)
    h.compression = Buffer.concat([h.compression, Buffer.from(Array.from({ length: grow }, (_, i) => 0x40 + i % 0x40))])
  }
  const grown = buildHello(h)
  if (grown.length - 4 !== bodyBytes) throw new Error(`grew to ${grown.length - 4}, not ${bodyBytes}`)
  return grown
}

export interface Answer {
  /** Every byte the server sent. */
  bytes: Buffer
  /** How the connection ended: the server closed it (FIN), reset it, or neither before the deadline. */
  end: 'fin' | 'reset' | 'open'
  ms: number
}

/**
 * Sends `bytes` on a new connection in TCP writes of `chunk` bytes (all at once by default), then
 * half-closes if `halfClose`, and collects the answer until the server closes or `ms` pass, or
 * (with `until`) as soon as the bytes received satisfy it.
 */
export async function exchange (port: number, bytes: Buffer, opts: { chunk?: number, halfClose?: boolean, ms?: number, until?: (received: Buffer) => boolean } = {}): Promise<Answer> {
  const socket = netConnect({ host: '127.0.0.1', port })
  socket.setNoDelay(true)
  const t0 = Date.now()
  const received: Buffer[] = []
  let size = 0
  return await new Promise((resolve, reject) => {
    let settled = false
    const done = (end: Answer['end']): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.destroy()
      resolve({ bytes: Buffer.concat(received), end, ms: Date.now() - t0 })
    }
    const timer = setTimeout(() => done('open'), opts.ms ?? 5000)
    socket.on('data', (b: Buffer) => {
      received.push(b)
      size += b.length
      if (opts.until?.(Buffer.concat(received, size)) === true) done('open')
    })
    socket.on('end', () => done('fin'))
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ECONNRESET' || err.code === 'EPIPE') done('reset')
      else if (!settled) { settled = true; clearTimeout(timer); reject(err) }
    })
    socket.once('connect', () => {
      void (async () => {
        const step = opts.chunk ?? bytes.length
        for (let p = 0; p < bytes.length && !settled; p += step) {
          if (!socket.write(bytes.subarray(p, p + step))) await once(socket, 'drain')
          // Separate TCP segments: let the event loop (and the kernel) send this piece first.
          if (opts.chunk !== undefined) await new Promise(resolve => setImmediate(resolve))
        }
        if (opts.halfClose === true && !settled) socket.end()
      })().catch(() => done('reset'))
    })
  })
}

/** The TLS records of an answer as `type:detail` strings (handshake message types, alert level/description). */
export function describe (bytes: Buffer): string[] {
  const { records, rest } = splitRecords(bytes)
  const out = records.map(r => {
    if (r.type === 21 && r.payload.length === 2) return `alert:${r.payload[0]}/${r.payload[1]}`
    if (r.type === HANDSHAKE) return `handshake:${r.payload[0]}`
    return `record:${r.type}`
  })
  if (rest.length > 0) out.push(`bytes:${rest.toString('hex').slice(0, 40)}`)
  return out
}

/**
 * A duplex to give `tls.connect({ socket })`: passes the client's bytes to `socket`, except that
 * the first handshake message (the ClientHello) is re-framed with `frame(msg, sizes)` and written
 * in TCP pieces of `chunk` bytes. The handshake then completes: framing is not in the transcript.
 */
export function reframing (socket: Socket, sizes: number | ((i: number) => number), chunk?: number): Duplex {
  let pending: Buffer | undefined = Buffer.alloc(0)
  const duplex = new Duplex({
    read () { socket.resume() },
    write (data: Buffer, _enc, callback) {
      if (pending === undefined) {
        socket.write(data, callback)
        return
      }
      pending = Buffer.concat([pending, data])
      const message = firstHandshakeMessage(pending)
      if (message === undefined) { callback(); return }
      const rest = splitRecords(pending).rest
      pending = undefined
      const bytes = Buffer.concat([frame(message, sizes), rest])
      const step = chunk ?? bytes.length
      void (async () => {
        for (let p = 0; p < bytes.length; p += step) {
          if (!socket.write(bytes.subarray(p, p + step))) await once(socket, 'drain')
          if (chunk !== undefined) await new Promise(resolve => setImmediate(resolve))
        }
      })().then(() => callback(), callback)
    },
    final (callback) { socket.end(callback) },
    destroy (err, callback) { socket.destroy(); callback(err) }
  })
  socket.on('data', (b: Buffer) => { if (!duplex.push(b)) socket.pause() })
  socket.on('end', () => duplex.push(null))
  socket.on('error', err => duplex.destroy(err))
  socket.on('close', () => duplex.destroy())
  return duplex
}
