// The ClientHello reader: server name found in a real ClientHello, in fragments, or absent.
import { once } from 'node:events'
import { createServer, type AddressInfo, type Socket } from 'node:net'
import { connect } from 'node:tls'
import t from 'tap'
import { readClientHello } from '../../src/tls/client-hello.js'

async function captureHello (servername: string | undefined): Promise<Buffer> {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const accepted = once(server, 'connection') as Promise<[Socket]>
  const client = connect({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, ...(servername !== undefined ? { servername } : {}) })
  client.on('error', () => {})
  const [socket] = await accepted
  const [first] = await once(socket, 'data') as [Buffer]
  let hello = first
  while (readClientHello(hello).status === 'partial') hello = Buffer.concat([hello, (await once(socket, 'data') as [Buffer])[0]])
  client.destroy()
  socket.destroy()
  server.close()
  return hello
}

/** Re-frames one handshake record as two records split at `at` bytes of payload. */
function splitRecord (hello: Buffer, at: number): Buffer {
  const payload = hello.subarray(5, 5 + hello.readUInt16BE(3))
  const record = (p: Buffer): Buffer => Buffer.concat([Buffer.from([22, 3, 1, p.length >> 8, p.length & 0xff]), p])
  return Buffer.concat([record(payload.subarray(0, at)), record(payload.subarray(at))])
}

t.test('reads the server name of a real ClientHello', async t => {
  const hello = await captureHello('api.Example.test')
  t.same(readClientHello(hello), { status: 'ok', serverName: 'api.Example.test' })
  t.same(readClientHello(hello.subarray(0, 3)), { status: 'partial' })
  t.same(readClientHello(hello.subarray(0, hello.length - 1)), { status: 'partial' })
  t.same(readClientHello(splitRecord(hello, 3)), { status: 'ok', serverName: 'api.Example.test' }, 'across two records')
  t.same(readClientHello(splitRecord(hello, 100).subarray(0, 120)), { status: 'partial' })
})

t.test('no SNI, and things that are not a ClientHello', async t => {
  t.same(readClientHello(await captureHello(undefined)), { status: 'ok', serverName: undefined })
  t.equal(readClientHello(Buffer.from('GET / HTTP/1.1\r\n\r\n')).status, 'invalid')
  t.equal(readClientHello(Buffer.from([22, 3, 1, 0, 4, 2, 0, 0, 0])).status, 'invalid', 'a ServerHello')
  t.equal(readClientHello(Buffer.from([22, 3, 1, 0, 6, 1, 0, 0, 2, 3, 3])).status, 'invalid', 'truncated body')
  t.equal(readClientHello(Buffer.alloc(0)).status, 'partial')
})
