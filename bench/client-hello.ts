// Real ClientHellos for the abuse benchmark: one captured from Node's TLS client (SNI localhost,
// ALPN h2 and http/1.1, TLS 1.2–1.3), optionally padded (RFC 7685) and re-framed into 1-byte records.
import { once } from 'node:events'
import { createServer, type AddressInfo, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'

const HANDSHAKE = 0x16
const PADDING_EXTENSION = 0x0015

/** The first flight of a Node TLS client: one TLS record holding one ClientHello. */
export async function captureClientHello (): Promise<Buffer> {
  let resolveHello: (b: Buffer) => void = () => {}
  const hello = new Promise<Buffer>(resolve => { resolveHello = resolve })
  const server = createServer((socket: Socket) => {
    let buf = Buffer.alloc(0)
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk])
      if (buf.length >= 5 && buf.length >= 5 + buf.readUInt16BE(3)) {
        resolveHello(buf.subarray(0, 5 + buf.readUInt16BE(3)))
        socket.destroy()
      }
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const client = tlsConnect({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, servername: 'localhost', ALPNProtocols: ['h2', 'http/1.1'], rejectUnauthorized: false })
  client.on('error', () => {})
  try {
    return await hello
  } finally {
    client.destroy()
    server.close()
  }
}

/**
 * The handshake message of `record` (a single-record ClientHello) with a padding extension added so
 * that the message body reaches `bodyBytes`.
 */
export function paddedHandshake (record: Buffer, bodyBytes: number): Buffer {
  if (record[0] !== HANDSHAKE || record[5] !== 0x01) throw new Error('not a ClientHello record')
  const body = record.subarray(9, 9 + record.readUIntBE(6, 3))
  // Walk to the extensions: version, random, session id, cipher suites, compression methods.
  let at = 2 + 32
  at += 1 + body.readUInt8(at)
  at += 2 + body.readUInt16BE(at)
  at += 1 + body.readUInt8(at)
  const extensionsAt = at
  const extensions = body.subarray(extensionsAt + 2, extensionsAt + 2 + body.readUInt16BE(extensionsAt))
  const padLength = Math.max(0, bodyBytes - body.length - 4)
  const padding = Buffer.alloc(4 + padLength)
  padding.writeUInt16BE(PADDING_EXTENSION, 0)
  padding.writeUInt16BE(padLength, 2)
  // TLS 1.3 wants pre_shared_key last; Node's first flight has none, so padding may go at the end.
  const allExtensions = Buffer.concat([extensions, padding])
  const extLength = Buffer.alloc(2)
  extLength.writeUInt16BE(allExtensions.length)
  const newBody = Buffer.concat([body.subarray(0, extensionsAt), extLength, allExtensions])
  const head = Buffer.alloc(4)
  head[0] = 0x01
  head.writeUIntBE(newBody.length, 1, 3)
  return Buffer.concat([head, newBody])
}

/** `message` (a handshake message) framed as TLS handshake records of `size` bytes each. */
export function inRecords (message: Buffer, size: number): Buffer {
  const out: Buffer[] = []
  for (let i = 0; i < message.length; i += size) {
    const part = message.subarray(i, i + size)
    const head = Buffer.from([HANDSHAKE, 0x03, 0x01, 0, 0])
    head.writeUInt16BE(part.length, 3)
    out.push(head, part)
  }
  return Buffer.concat(out)
}
