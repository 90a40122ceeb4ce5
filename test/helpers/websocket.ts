// WebSocket test pieces: RFC 6455 frames (encoded and parsed) and an HTTP/1.1 WebSocket upstream
// that checks the handshake and echoes every frame back, as a real WebSocket server does.

import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { createServer, type IncomingMessage, type Server } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'

export interface Frame { opcode: number, payload: Buffer }

/** One WebSocket frame (FIN set); client frames are masked (RFC 6455 §5.3). */
export function encode (opcode: number, payload: Buffer, masked: boolean): Buffer {
  const len = payload.length
  const head = len < 126 ? Buffer.from([0x80 | opcode, len]) : len < 65536 ? Buffer.from([0x80 | opcode, 126, len >> 8, len & 0xff]) : Buffer.concat([Buffer.from([0x80 | opcode, 127]), (() => { const b = Buffer.alloc(8); b.writeBigUInt64BE(BigInt(len)); return b })()])
  if (!masked) return Buffer.concat([head, payload])
  head[1] = (head[1] ?? 0) | 0x80
  const mask = randomBytes(4)
  const body = Buffer.from(payload)
  for (let i = 0; i < body.length; i++) body[i] = (body[i] ?? 0) ^ (mask[i % 4] ?? 0)
  return Buffer.concat([head, mask, body])
}

/** Parses the frames of a byte stream as they come. */
export function decoder (onFrame: (f: Frame) => void): (chunk: Buffer) => void {
  let buf = Buffer.alloc(0)
  return chunk => {
    buf = Buffer.concat([buf, chunk])
    for (;;) {
      if (buf.length < 2) return
      const b1 = buf[1] ?? 0
      let len = b1 & 0x7f
      let off = 2
      if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); off = 4 }
      if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); off = 10 }
      const masked = (b1 & 0x80) !== 0
      const mask = masked ? buf.subarray(off, off + 4) : undefined
      if (masked) off += 4
      if (buf.length < off + len) return
      const payload = Buffer.from(buf.subarray(off, off + len))
      if (mask !== undefined) for (let i = 0; i < payload.length; i++) payload[i] = (payload[i] ?? 0) ^ (mask[i % 4] ?? 0)
      onFrame({ opcode: (buf[0] ?? 0) & 0x0f, payload })
      buf = buf.subarray(off + len)
    }
  }
}

export interface EchoUpstream {
  url: string
  /** Every upgrade request it got, in order. */
  seen: IncomingMessage[]
  close: () => void
}

/**
 * A WebSocket server (HTTP/1.1) that checks the handshake (key of 16 bytes, version 13; else 400),
 * answers `/refuse` with 403, and echoes each frame back unmasked; a close frame is answered and
 * its side ended.
 */
export async function echoUpstream (opts: { protocol?: string } = {}): Promise<EchoUpstream> {
  const seen: IncomingMessage[] = []
  const sockets = new Set<Socket>()
  const server: Server = createServer((_req, res) => res.end('plain'))
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    seen.push(req)
    sockets.add(socket)
    socket.on('error', () => {})
    const key = req.headers['sec-websocket-key']
    if (typeof key !== 'string' || Buffer.from(key, 'base64').length !== 16 || req.headers['sec-websocket-version'] !== '13') {
      socket.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n')
      return
    }
    if (req.url === '/refuse') {
      socket.end('HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nno')
      return
    }
    const accept = createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64')
    const protocol = opts.protocol === undefined ? '' : `Sec-WebSocket-Protocol: ${opts.protocol}\r\n`
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n${protocol}\r\n`)
    const feed = decoder(f => {
      if (f.opcode === 0x8) socket.end(encode(0x8, f.payload, false))
      else socket.write(encode(f.opcode, f.payload, false))
    })
    if (head.length > 0) feed(head)
    socket.on('data', feed)
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    close: () => {
      for (const s of sockets) s.destroy()
      server.close()
    }
  }
}
