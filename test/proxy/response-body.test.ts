// The response body relay (src/proxy/response-body.ts) at its edges, end to end: an upstream that
// dies mid-body cuts the client off (HTTP/1.1: the connection closes short of content-length;
// HTTP/2: the stream is reset) and the worker lives on; a client that goes away mid-body has the
// upstream response cancelled at once; a complete body arrives whole on both protocols.
import { once } from 'node:events'
import { createServer, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { constants as h2constants } from 'node:http2'
import t from 'tap'
import { writeRepeated } from '../helpers/body.js'
import { h2Open, startFront, tlsOpen, untilClosed } from '../helpers/http-front.js'
import { within } from '../helpers/wait.js'

const CHUNK = Buffer.alloc(64 * 1024, 'x')
const DECLARED = 4 * 1024 * 1024

/** Upstream responses still being written, by path, and when each closed. */
const open = new Map<string, { res: ServerResponse, closed: Promise<void> }>()
const upstream = createServer((req, res) => {
  req.resume()
  const closed = once(res, 'close').then(() => {})
  open.set(req.url ?? '', { res, closed })
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': DECLARED })
  if (req.url === '/whole') {
    writeRepeated(res, CHUNK, DECLARED / CHUNK.length)
    return
  }
  // Half the body, then the upstream dies (/die) or keeps the rest back until the client goes (/hold).
  for (let i = 0; i < DECLARED / CHUNK.length / 2; i++) res.write(CHUNK)
  if (req.url?.startsWith('/die') === true) setImmediate(() => res.socket?.destroy())
})
upstream.keepAliveTimeout = 60_000
upstream.listen(0, '127.0.0.1')
await once(upstream, 'listening')
const front = await startFront({ upstream: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}` })
t.teardown(async () => {
  await front.stop()
  upstream.closeAllConnections()
  upstream.close()
})

/** Bytes of body after the head in a raw HTTP/1.1 response. */
function bodyBytes (raw: string): number {
  const at = raw.indexOf('\r\n\r\n')
  return at === -1 ? 0 : raw.length - at - 4
}

t.test('HTTP/1.1: a whole body arrives whole on a kept connection', async t => {
  const socket = await tlsOpen(front.port, front.ca)
  socket.write('GET /whole HTTP/1.1\r\nhost: localhost\r\n\r\n')
  let raw = ''
  await within(new Promise<void>(resolve => {
    socket.on('data', (c: Buffer) => {
      raw += c.toString('latin1')
      if (bodyBytes(raw) >= DECLARED) resolve()
    })
    socket.once('close', () => resolve())
  }), 30_000, 'the whole body')
  t.equal(bodyBytes(raw), DECLARED, 'every byte')
  t.notOk(socket.destroyed, 'the connection stays open')
  socket.destroy()
})

t.test('HTTP/1.1: an upstream that dies mid-body closes the client connection short of content-length', async t => {
  const socket = await tlsOpen(front.port, front.ca)
  socket.write('GET /die-h1 HTTP/1.1\r\nhost: localhost\r\n\r\n')
  const got = await untilClosed(socket, 30_000)
  t.ok(got.closed, 'the proxy closed the connection')
  t.match(got.data, /^HTTP\/1\.1 200/, 'the head had gone out')
  t.ok(bodyBytes(got.data) < DECLARED, `short of the declared length (${bodyBytes(got.data)} of ${DECLARED} bytes)`)
})

t.test('HTTP/2: an upstream that dies mid-body resets the stream; the session lives on', async t => {
  const session = await h2Open(front.port, front.ca)
  t.teardown(() => session.destroy())
  const stream = session.request({ ':path': '/die-h2', ':authority': 'localhost' })
  let received = 0
  stream.on('data', (c: Buffer) => { received += c.length })
  stream.on('error', () => {})
  // Not once(): a reset with an error code emits 'error' first, which once() would reject with.
  await within(new Promise(resolve => stream.once('close', resolve)), 30_000, 'the reset')
  t.equal(stream.rstCode, h2constants.NGHTTP2_INTERNAL_ERROR, 'reset with INTERNAL_ERROR (as nginx does): the proxy failed, the client did not cancel')
  t.ok(received < DECLARED, `short of the declared length (${received} bytes)`)
  const next = session.request({ ':path': '/whole', ':authority': 'localhost' })
  let whole = 0
  next.on('data', (c: Buffer) => { whole += c.length })
  await within(once(next, 'end'), 30_000, 'the whole body')
  t.equal(whole, DECLARED, 'the same session then serves a whole body')
})

t.test('a client gone mid-body: the upstream response is cancelled at once, HTTP/1.1 and HTTP/2', async t => {
  const socket = await tlsOpen(front.port, front.ca)
  socket.write('GET /hold-h1 HTTP/1.1\r\nhost: localhost\r\n\r\n')
  await within(once(socket, 'data'), 30_000, 'the first bytes')
  socket.destroy()
  const h1 = open.get('/hold-h1')
  t.ok(h1 !== undefined, 'the upstream saw the request')
  await within(h1?.closed ?? Promise.resolve(), 10_000, 'the upstream response cancelled')
  t.notOk(h1?.res.writableFinished, 'the upstream response was cut before its end')

  const session = await h2Open(front.port, front.ca)
  const stream = session.request({ ':path': '/hold-h2', ':authority': 'localhost' })
  stream.on('error', () => {})
  await within(once(stream, 'data'), 30_000, 'the first bytes')
  stream.close()
  const h2 = open.get('/hold-h2')
  t.ok(h2 !== undefined, 'the upstream saw the request')
  await within(h2?.closed ?? Promise.resolve(), 10_000, 'the upstream response cancelled')
  t.notOk(h2?.res.writableFinished, 'the upstream response was cut before its end')
  session.destroy()
})

t.test('the worker lived through it all', async t => {
  const socket = await tlsOpen(front.port, front.ca)
  socket.write('GET /whole HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n')
  const got = await untilClosed(socket, 30_000)
  t.equal(bodyBytes(got.data), DECLARED, 'a whole body after the cut ones')
})
