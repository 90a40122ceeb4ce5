// Byte-exact PROXY protocol headers (HAProxy's spec, v1 and v2) for the tests, and a client that
// sends one before its TLS handshake over a real socket.

import { once } from 'node:events'
import { request as httpsRequest } from 'node:https'
import { connect as netConnect, type Socket } from 'node:net'
import { Duplex } from 'node:stream'
import { connect as tlsConnect } from 'node:tls'

const SIG = Buffer.from('0d0a0d0a000d0a515549540a', 'hex')

/** A v2 header: `command` 0 LOCAL / 1 PROXY, `family` 0 UNSPEC / 1 INET / 2 INET6 / 3 UNIX, `transport` 1 STREAM / 2 DGRAM. */
function v2 (o: { command: number, family: number, transport: number, body: Buffer, version?: number }): Buffer {
  const head = Buffer.alloc(4)
  head[0] = ((o.version ?? 2) << 4) | o.command
  head[1] = (o.family << 4) | o.transport
  head.writeUInt16BE(o.body.length, 2)
  return Buffer.concat([SIG, head, o.body])
}

/** 192.0.2.10:51234 → 198.51.100.1:443. */
const inet4 = Buffer.from([192, 0, 2, 10, 198, 51, 100, 1, 0xc8, 0x22, 0x01, 0xbb])
/** TLVs as AWS NLB and HAProxy send them: ALPN (0x01) "h2", AUTHORITY (0x02) "example.com", a NOOP (0x04) pad, AWS's 0xEA VPC endpoint id. */
const tlvs = Buffer.concat([
  Buffer.from([0x01, 0x00, 0x02]), Buffer.from('h2'),
  Buffer.from([0x02, 0x00, 0x0b]), Buffer.from('example.com'),
  Buffer.from([0x04, 0x00, 0x03, 0, 0, 0]),
  Buffer.from([0xea, 0x00, 0x17, 0x01]), Buffer.from('vpce-08d2bf15fac5001c9')
])

/** Written out in hex where it matters, so the tests do not only check the builder against itself. */
export const fixtures = {
  v2,
  inet4,
  v1Tcp4: Buffer.from('PROXY TCP4 192.0.2.10 198.51.100.1 51234 443\r\n', 'latin1'),
  v2Tcp4Tlvs: Buffer.concat([Buffer.from('0d0a0d0a000d0a515549540a' + '21' + '11' + (inet4.length + tlvs.length).toString(16).padStart(4, '0'), 'hex'), inet4, tlvs]),
  v2Tcp6: Buffer.from('0d0a0d0a000d0a515549540a' + '21' + '21' + '0024' +
    '20010db8000000000000000000000001' + '20010db8000000000000000000000002' + '01bb' + '01bb', 'hex'),
  /** What HAProxy's health checks send (`check-send-proxy` with `send-proxy-v2`): LOCAL, UNSPEC, no block. */
  v2Local: Buffer.from('0d0a0d0a000d0a515549540a' + '20' + '00' + '0000', 'hex')
}

/** `PROXY TCP4 <address> 198.51.100.1 40000 443` (v1) or its v2 equivalent, for an IPv4 client `address`. */
export function headerFor (address: string, version: 1 | 2): Buffer {
  if (version === 1) return Buffer.from(`PROXY TCP4 ${address} 198.51.100.1 40000 443\r\n`, 'latin1')
  const body = Buffer.from([...address.split('.').map(Number), 198, 51, 100, 1, 0x9c, 0x40, 0x01, 0xbb])
  return v2({ command: 1, family: 1, transport: 1, body })
}

/** A TCP connection from `localAddress` to 127.0.0.1:`port`, connected. */
export async function rawConnect (port: number, localAddress: string): Promise<Socket> {
  const socket = netConnect({ host: '127.0.0.1', port, localAddress })
  socket.setNoDelay(true)
  await once(socket, 'connect')
  return socket
}

/** Writes `bytes` one byte per write (each a TCP segment of its own: no Nagle), each awaited. */
export async function writeBytewise (socket: Socket, bytes: Buffer): Promise<void> {
  for (const b of bytes) {
    await new Promise<void>((resolve, reject) => socket.write(Buffer.from([b]), err => err == null ? resolve() : reject(err)))
  }
}

/** A stream over `socket` whose writes go out one byte per TCP segment (a ClientHello cut into pieces). */
export function bytewiseStream (socket: Socket): Duplex {
  const stream = new Duplex({
    read () { socket.resume() },
    write (chunk: Buffer, _encoding, callback) { writeBytewise(socket, chunk).then(() => callback(), callback) },
    final (callback) { socket.end(); callback() },
    destroy (err, callback) { socket.destroy(); callback(err) }
  })
  socket.on('data', (c: Buffer) => { if (!stream.push(c)) socket.pause() })
  socket.on('end', () => stream.push(null))
  socket.on('error', err => stream.destroy(err))
  return stream
}

export interface Echo { status: number, body: Record<string, any> }

/**
 * Sends `header` from `localAddress`, then an HTTPS/1.1 GET for `path` on the same connection (the
 * header and the TLS handshake one byte per segment when `bytewise`); resolves with the status and the JSON body (a tagged upstream's echo).
 */
export async function proxiedGet (port: number, o: { header: Buffer, localAddress: string, ca: string, path?: string, headers?: Record<string, string>, bytewise?: boolean }): Promise<Echo> {
  const socket = await rawConnect(port, o.localAddress)
  if (o.bytewise === true) await writeBytewise(socket, o.header)
  else socket.write(o.header)
  const tls = tlsConnect({ socket: o.bytewise === true ? bytewiseStream(socket) : socket, servername: 'localhost', ca: o.ca, ALPNProtocols: ['http/1.1'] })
  return await new Promise((resolve, reject) => {
    const req = httpsRequest({ createConnection: () => tls, host: 'localhost', path: o.path ?? '/', headers: { host: 'localhost', ...o.headers } }, res => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString()
        let body: Record<string, any>
        try { body = JSON.parse(text) as Record<string, any> } catch { body = { text } }
        resolve({ status: res.statusCode ?? 0, body })
        tls.destroy()
      })
    })
    req.on('error', reject)
    req.end()
  })
}

/** Writes `bytes` and collects what comes back until the peer closes or `ms` pass. */
export async function sendAndWait (socket: Socket, bytes: Buffer, ms: number): Promise<{ closed: boolean, received: number, afterMs: number }> {
  const started = Date.now()
  let received = 0
  socket.on('data', (c: Buffer) => { received += c.length })
  socket.on('error', () => {})
  const closed = new Promise<boolean>(resolve => {
    const timer = setTimeout(() => resolve(false), ms)
    socket.once('close', () => { clearTimeout(timer); resolve(true) })
  })
  if (bytes.length > 0) socket.write(bytes)
  const c = await closed
  socket.destroy()
  return { closed: c, received, afterMs: Date.now() - started }
}
