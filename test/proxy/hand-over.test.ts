// The front hands a connection's first bytes to Node's TLS socket in pieces smaller than its first
// 1 KiB input buffer (src/tls/hand-over.ts), so a ClientHello over 1 KiB (every client offering
// X25519MLKEM768) does not leave a 16 KiB buffer on the connection for its life. Here: the pieces
// and the socket's own read back afterwards, on real sockets; and such clients served end to end.
import { once } from 'node:events'
import { createServer, connect as netConnect, type AddressInfo, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import t, { type Test } from 'tap'
import { HAND_OVER_PIECE, readInPieces, splitsInPieces } from '../../src/tls/hand-over.js'
import { captureFirstFlight, firstHandshakeMessage } from '../helpers/hello-forge.js'
import { countingUpstream, h2Open, h2Request, startFront } from '../helpers/http-front.js'

/** A connected pair: the accepted (server) side paused, holding `bytes` unread. */
async function heldBytes (t: Test, bytes: Buffer): Promise<Socket> {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => server.close())
  const accepted = once(server, 'connection') as Promise<[Socket]>
  const client = netConnect((server.address() as AddressInfo).port, '127.0.0.1')
  t.teardown(() => client.destroy())
  const [socket] = await accepted
  t.teardown(() => socket.destroy())
  socket.pause()
  client.write(bytes)
  // Paused: what arrives is buffered; wait (event-driven, bounded) until all of it is. read(0) reads
  // nothing but asks for the next 'readable' (it is not emitted again for a buffer nobody read).
  while (socket.readableLength < bytes.length) {
    const more = once(socket, 'readable', { signal: AbortSignal.timeout(10_000) })
    socket.read(0)
    await more
  }
  return socket
}

t.test('read() gives the buffered bytes in pieces, then the socket reads as Node does', async t => {
  const bytes = Buffer.alloc(2 * HAND_OVER_PIECE + 345)
  for (let i = 0; i < bytes.length; i++) bytes[i] = i % 251
  const socket = await heldBytes(t, bytes)
  readInPieces(socket)
  t.ok(Object.hasOwn(socket, 'read'), 'patched on this socket only')
  const pieces: Buffer[] = []
  let piece: Buffer | null
  while ((piece = socket.read() as Buffer | null) !== null) pieces.push(piece)
  t.same(pieces.map(p => p.length), [HAND_OVER_PIECE, HAND_OVER_PIECE, 345], 'pieces of at most HAND_OVER_PIECE bytes')
  t.ok(HAND_OVER_PIECE < 1024, 'below the TLS input buffer Node starts a server connection with')
  t.ok(Buffer.concat(pieces).equals(bytes), 'every byte, in order')
  t.notOk(Object.hasOwn(socket, 'read'), 'once empty, the prototype read is back')
})

t.test('read(n) with a size is left as it is', async t => {
  const socket = await heldBytes(t, Buffer.alloc(3000, 7))
  readInPieces(socket)
  t.equal((socket.read(2500) as Buffer).length, 2500, 'the size asked for, not a piece')
  t.equal((socket.read() as Buffer).length, 500, 'then the rest (under a piece)')
  t.equal(socket.read(), null)
  t.notOk(Object.hasOwn(socket, 'read'))
})

t.test('only a flight that starts like TLS and is over a piece is split', async t => {
  const hello = firstHandshakeMessage(await captureFirstFlight({ servername: 'localhost' })) as Buffer
  const record = (version: number, body: Buffer): Buffer => Buffer.concat([Buffer.from([22, version >> 8, version & 0xff, body.length >> 8, body.length & 0xff]), body])
  t.ok(splitsInPieces(record(0x0301, hello)), 'a ClientHello record over 1 KiB')
  t.notOk(splitsInPieces(record(0x0301, hello.subarray(0, 600))), 'one piece or less: nothing to split')
  // OpenSSL refuses these on their first record without an alert or an error state: fed a second
  // piece in the same tick it would go on, so they go whole (front-openssl.test checks the answers).
  t.notOk(splitsInPieces(record(0x0400, hello)), 'a record version OpenSSL does not take for TLS')
  t.notOk(splitsInPieces(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n' + 'x'.repeat(2000))), 'HTTP on the TLS port')
})

t.test('clients whose ClientHello is over 1 KiB (post-quantum key share) are served, HTTP/1.1 and HTTP/2', async t => {
  // Node 24's default client offers X25519MLKEM768: a 1,184-byte key share alone.
  const hello = firstHandshakeMessage(await captureFirstFlight({ servername: 'localhost' })) as Buffer
  t.ok(hello.length > HAND_OVER_PIECE, `a default client's ClientHello is ${hello.length} bytes: handed over in pieces`)
  const upstream = await countingUpstream()
  t.teardown(async () => await upstream.close())
  for (const http2 of [true, false]) {
    const front = await startFront({ upstream: upstream.url, http2 })
    t.teardown(async () => await front.stop())
    const socket = tlsConnect({ host: '127.0.0.1', port: front.port, servername: 'localhost', ca: front.ca, ALPNProtocols: ['http/1.1'] })
    await once(socket, 'secureConnect')
    t.equal(socket.getProtocol(), 'TLSv1.3')
    let text = ''
    socket.on('data', (c: Buffer) => { text += c.toString('latin1') })
    socket.write('GET /h1 HTTP/1.1\r\nHost: localhost\r\n\r\n')
    while (!text.endsWith('ok')) await once(socket, 'data')
    t.match(text, /^HTTP\/1\.1 200 /, `HTTP/1.1 through the front (http2: ${String(http2)})`)
    socket.destroy()
    if (http2) {
      const session = await h2Open(front.port, front.ca)
      const res = await h2Request(session, { ':path': '/h2', ':authority': 'localhost' })
      t.equal(res.status, 200, 'HTTP/2 through the front')
      t.equal(res.body.toString(), 'ok')
      session.destroy()
    }
  }
  t.equal(upstream.seen.get('/h1'), 2)
  t.equal(upstream.seen.get('/h2'), 1)
})
