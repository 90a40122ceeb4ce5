// End to end: WebSockets over HTTP/2 (RFC 8441 extended CONNECT) through a real `keyedge proxy` (one
// worker) to a real WebSocket upstream speaking HTTP/1.1 (handshake checked, frames parsed and
// echoed). The HTTP/2 client waits for SETTINGS_ENABLE_CONNECT_PROTOCOL, then sends the CONNECT;
// frames go both ways; the idle timeout closes the stream; metrics count it; refusals; and the
// HTTP/1.1 upgrade on the same listener still works.
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { rmSync } from 'node:fs'
import type { IncomingMessage } from 'node:http'
import { connect as h2connect, type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2'
import { connect as tlsConnect } from 'node:tls'
import t from 'tap'
import { adminMetrics, metric } from '../helpers/http-front.js'
import { tempHome } from '../helpers/paths.js'
import { within } from '../helpers/wait.js'
import { selfSigned, startWebSocketProxy } from '../helpers/proxy-fixtures.js'
import { decoder, echoUpstream, encode, type Frame } from '../helpers/websocket.js'

// The upstream: a WebSocket server (HTTP/1.1) that checks the handshake and echoes each frame back unmasked.
const home = tempHome('keyedge-ws-h2-')
const cert = selfSigned(home, 'localhost', ['localhost'])
const up = await echoUpstream({ protocol: 'chat' })
const seen = up.seen
const upstreamUrl = up.url

const { proxy, port, adminPort } = await startWebSocketProxy(home, cert, ['localhost'], 'localhost', upstreamUrl)
const sessions: ClientHttp2Session[] = []
t.teardown(async () => {
  for (const s of sessions) s.destroy()
  await proxy.stop('SIGKILL')
  up.close()
  rmSync(home, { recursive: true, force: true })
})

const metrics = async (): Promise<string> => await adminMetrics(adminPort)

/** An HTTP/2 session that has seen the proxy's SETTINGS (with ENABLE_CONNECT_PROTOCOL). */
async function session (): Promise<ClientHttp2Session> {
  const s = h2connect(`https://127.0.0.1:${port}`, { ca: cert.certPem, servername: 'localhost' })
  sessions.push(s)
  s.on('error', () => {})
  await once(s, 'remoteSettings')
  return s
}

/** Sends the extended CONNECT; resolves the response headers and the stream. */
async function wsConnect (s: ClientHttp2Session, path: string, authority = 'localhost'): Promise<{ status: number, headers: Record<string, unknown>, stream: ClientHttp2Stream }> {
  const stream = s.request({ ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': 'https', ':path': path, ':authority': authority, 'sec-websocket-version': '13', 'sec-websocket-protocol': 'chat' }, { endStream: false })
  stream.on('error', () => {})
  const [headers] = await once(stream, 'response') as [Record<string, unknown>]
  return { status: Number(headers[':status']), headers, stream }
}

t.test('the proxy announces SETTINGS_ENABLE_CONNECT_PROTOCOL', async t => {
  const s = await session()
  t.equal(s.remoteSettings.enableConnectProtocol, true)
})

t.test('a WebSocket over HTTP/2 reaches the HTTP/1.1 upstream; frames flow both ways', async t => {
  const s = await session()
  const { status, headers, stream } = await wsConnect(s, '/chat?room=1')
  t.equal(status, 200, 'the upstream\'s 101 becomes 200 on the stream')
  t.equal(headers['sec-websocket-protocol'], 'chat', 'the chosen subprotocol is passed back')
  t.equal(headers['sec-websocket-accept'], undefined, 'no HTTP/1.1 accept header on HTTP/2')
  const req = seen.at(-1) as IncomingMessage
  t.equal(req.url, '/chat?room=1')
  t.equal(req.headers.upgrade, 'websocket')
  t.equal(req.headers.host, 'localhost')
  t.equal(req.headers['x-forwarded-for'], '127.0.0.1')
  t.equal(req.headers['sec-websocket-protocol'], 'chat')
  t.equal(metric(await metrics(), 'edge_websocket_open'), 1, 'counted open')

  const frames: Frame[] = []
  const feed = decoder(f => frames.push(f))
  stream.on('data', feed)
  const big = randomBytes(200_000)
  stream.write(encode(0x1, Buffer.from('hello over h2'), true))
  stream.write(encode(0x2, big, true))
  const deadline = Date.now() + 10_000
  while (frames.length < 2 && Date.now() < deadline) await once(stream, 'data')
  t.equal(frames[0]?.opcode, 0x1)
  t.equal(frames[0]?.payload.toString(), 'hello over h2', 'a text frame came back (unmasked, from the upstream)')
  t.ok(frames[1]?.payload.equals(big), `a ${big.length}-byte binary frame came back unchanged`)

  // Close handshake: the upstream answers the close frame and ends its side; the stream ends.
  stream.write(encode(0x8, Buffer.from([0x03, 0xe8]), true))
  await once(stream, 'close')
  t.equal(frames.at(-1)?.opcode, 0x8, 'the close frame came back')
  let open = -1
  const closed = Date.now() + 10_000
  while (open !== 0 && Date.now() < closed) open = metric(await metrics(), 'edge_websocket_open')
  t.equal(open, 0, 'no longer counted open')
  t.ok(metric(await metrics(), 'edge_websocket_total', { event: 'closed' }) >= 1)
})

t.test('a WebSocket over HTTP/2 idle both ways is closed after webSocketIdleMs, the session stays', async t => {
  const s = await session()
  const { status, stream } = await wsConnect(s, '/idle')
  t.equal(status, 200)
  stream.resume()
  const started = Date.now()
  await within(once(stream, 'close'), 15_000, 'the close')
  const after = Date.now() - started
  t.ok(after >= 900, `closed after ${after} ms`)
  t.ok(metric(await metrics(), 'edge_websocket_total', { event: 'idle_timeout' }) >= 1)
  t.notOk(s.closed || s.destroyed, 'the HTTP/2 session is still open')
  const again = await wsConnect(s, '/chat')
  t.equal(again.status, 200, 'and opens another WebSocket')
  again.stream.close()
})

t.test('refusals: no route 404, the upstream\'s own refusal passed back, a CONNECT without :protocol 400', async t => {
  const s = await session()
  t.equal((await wsConnect(s, '/chat', 'other.test')).status, 404)
  const refused = await wsConnect(s, '/refuse')
  t.equal(refused.status, 403, 'the upstream\'s 403 reaches the client')
  const plain = s.request({ ':method': 'CONNECT', ':authority': 'localhost:443' }, { endStream: false })
  plain.on('error', () => {})
  const [headers] = await once(plain, 'response') as [Record<string, unknown>]
  t.equal(Number(headers[':status']), 400, 'a plain CONNECT tunnel is not proxied')
  plain.close()
})

t.test('HTTP/1.1 WebSockets still work on the same listener', async t => {
  const socket = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ca: cert.certPem, ALPNProtocols: ['http/1.1'] })
  t.teardown(() => socket.destroy())
  await once(socket, 'secureConnect')
  socket.write('GET /chat HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n')
  let buf = Buffer.alloc(0)
  const frames: Frame[] = []
  const feed = decoder(f => frames.push(f))
  let headDone = false
  socket.write(encode(0x1, Buffer.from('hello over h1'), true))
  const deadline = Date.now() + 10_000
  while (frames.length < 1 && Date.now() < deadline) {
    const [chunk] = await once(socket, 'data') as [Buffer]
    if (headDone) { feed(chunk); continue }
    buf = Buffer.concat([buf, chunk])
    const end = buf.indexOf('\r\n\r\n')
    if (end === -1) continue
    headDone = true
    t.match(buf.subarray(0, end).toString('latin1'), /^HTTP\/1\.1 101 /)
    feed(buf.subarray(end + 4))
  }
  t.equal(frames[0]?.payload.toString(), 'hello over h1')
})

t.test('on shutdown an open WebSocket over HTTP/2 is ended and the proxy exits', async t => {
  const s = await session()
  const { status, stream } = await wsConnect(s, '/chat')
  t.equal(status, 200)
  stream.resume()
  const closed = once(stream, 'close')
  proxy.proc.kill('SIGTERM')
  await within(closed, 15_000, 'the close')
  t.pass('the client saw its stream end')
  const exit = await proxy.exited
  t.equal(exit.code, 0, 'the proxy exits 0')
})
