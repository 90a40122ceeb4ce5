// End to end: WebSocket upgrades through a real `keyedge proxy` (one worker) to a real upstream that
// answers 101 and then echoes every byte. Byte-for-byte both ways, forwarding headers, refusals,
// the idle timeout, metrics, and the end of open WebSockets when the proxy shuts down.
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { rmSync } from 'node:fs'
import { createServer, type IncomingMessage } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import t from 'tap'
import { adminMetrics, metric } from '../helpers/http-front.js'
import { tempHome } from '../helpers/paths.js'
import { within } from '../helpers/wait.js'
import { selfSigned, startWebSocketProxy } from '../helpers/proxy-fixtures.js'

const home = tempHome('keyedge-ws-')
const cert = selfSigned(home, 'localhost', ['localhost', '127.0.0.1'])
const seen: IncomingMessage[] = []
const upstreamSockets = new Set<Socket>()
const upstream = createServer((_req, res) => res.end('plain'))
upstream.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
  seen.push(req)
  upstreamSockets.add(socket)
  const accept = createHash('sha1').update(`${String(req.headers['sec-websocket-key'])}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64')
  socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`)
  if (head.length > 0) socket.write(head)
  socket.pipe(socket)
})
upstream.listen(0, '127.0.0.1')
await once(upstream, 'listening')
const upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`

const { proxy, port, adminPort } = await startWebSocketProxy(home, cert, ['localhost', '127.0.0.1'], '*', upstreamUrl)
t.teardown(async () => {
  await proxy.stop('SIGKILL')
  for (const s of upstreamSockets) s.destroy()
  upstream.close()
  rmSync(home, { recursive: true, force: true })
})

const metrics = async (): Promise<string> => await adminMetrics(adminPort)

/** Opens a TLS connection (ALPN http/1.1) and sends a WebSocket upgrade request; returns the response head and what followed it. */
async function upgrade (path: string, extra = ''): Promise<{ socket: TLSSocket, head: string, rest: Buffer }> {
  const socket = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ca: cert.certPem, ALPNProtocols: ['http/1.1'] })
  await once(socket, 'secureConnect')
  socket.write(`GET ${path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n${extra}\r\n`)
  let buf = Buffer.alloc(0)
  while (!buf.includes('\r\n\r\n')) {
    const chunk = await new Promise<Buffer | null>(resolve => {
      socket.once('data', resolve)
      socket.once('end', () => resolve(null))
    })
    if (chunk === null) break
    buf = Buffer.concat([buf, chunk])
  }
  const end = buf.indexOf('\r\n\r\n')
  return { socket, head: buf.subarray(0, end === -1 ? buf.length : end).toString('latin1'), rest: end === -1 ? Buffer.alloc(0) : buf.subarray(end + 4) }
}

async function readN (socket: TLSSocket, n: number, first: Buffer): Promise<Buffer> {
  let buf = first
  while (buf.length < n) {
    const [chunk] = await once(socket, 'data') as [Buffer]
    buf = Buffer.concat([buf, chunk])
  }
  return buf
}

t.test('an upgrade is proxied and bytes flow both ways unchanged', async t => {
  const { socket, head, rest } = await upgrade('/chat?room=1')
  t.teardown(() => socket.destroy())
  t.match(head, /^HTTP\/1\.1 101 /)
  t.match(head, /Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=/i, 'the upstream\'s handshake reaches the client as sent')
  const req = seen.at(-1) as IncomingMessage
  t.equal(req.url, '/chat?room=1')
  t.equal(req.headers.upgrade, 'websocket')
  t.equal(req.headers['sec-websocket-key'], 'dGhlIHNhbXBsZSBub25jZQ==')
  t.equal(req.headers['x-forwarded-for'], '127.0.0.1')
  t.match(req.headers['x-request-id'], /^[0-9a-f-]{36}$/)
  const bytes = Buffer.concat([Buffer.from(Array.from({ length: 256 }, (_, i) => i)), randomBytes(200_000)])
  socket.write(bytes)
  const back = await readN(socket, bytes.length, rest)
  t.ok(back.equals(bytes), `${bytes.length} bytes (every byte value) came back unchanged`)
  t.ok(metric(await metrics(), 'edge_websocket_total', { event: 'opened' }) >= 1)
  t.equal(metric(await metrics(), 'edge_websocket_open'), 1)
})

t.test('other upgrades are refused', async t => {
  const h2c = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ca: cert.certPem, ALPNProtocols: ['http/1.1'] })
  await once(h2c, 'secureConnect')
  h2c.write('GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n')
  const [data] = await once(h2c, 'data') as [Buffer]
  t.match(data.toString(), /^HTTP\/1\.1 400 /)
  h2c.destroy()
  t.ok(metric(await metrics(), 'edge_websocket_total', { event: 'refused' }) >= 1)
})

t.test('a WebSocket idle both ways is closed after webSocketIdleMs', async t => {
  const { socket, head } = await upgrade('/idle')
  t.match(head, /^HTTP\/1\.1 101 /)
  const started = Date.now()
  socket.resume()
  await within(once(socket, 'close'), 15_000, 'the close')
  const after = Date.now() - started
  t.ok(after >= 900, `closed after ${after} ms`)
  t.ok(metric(await metrics(), 'edge_websocket_total', { event: 'idle_timeout' }) >= 1)
})

t.test('on shutdown an open WebSocket is ended and the proxy exits', async t => {
  const { socket, head } = await upgrade('/')
  t.match(head, /^HTTP\/1\.1 101 /)
  socket.resume()
  const closed = once(socket, 'close')
  proxy.proc.kill('SIGTERM')
  await within(closed, 15_000, 'the close')
  t.pass('the client saw its connection end')
  const exit = await proxy.exited
  t.equal(exit.code, 0, 'the proxy exits 0')
})
