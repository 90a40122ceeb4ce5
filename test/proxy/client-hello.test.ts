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
  t.has(readClientHello(hello), { status: 'ok', serverName: 'api.Example.test' })
  t.same(readClientHello(hello.subarray(0, 3)), { status: 'partial' })
  t.same(readClientHello(hello.subarray(0, hello.length - 1)), { status: 'partial' })
  t.has(readClientHello(splitRecord(hello, 3)), { status: 'ok', serverName: 'api.Example.test' }, 'across two records')
  t.same(readClientHello(splitRecord(hello, 100).subarray(0, 120)), { status: 'partial' })
})

t.test('no SNI, and things that are not a ClientHello', async t => {
  t.has(readClientHello(await captureHello(undefined)), { status: 'ok', serverName: undefined })
  t.equal(readClientHello(Buffer.from('GET / HTTP/1.1\r\n\r\n')).status, 'invalid')
  t.equal(readClientHello(Buffer.from([22, 3, 1, 0, 4, 2, 0, 0, 0])).status, 'invalid', 'a ServerHello')
  t.equal(readClientHello(Buffer.from([22, 3, 1, 0, 6, 1, 0, 0, 2, 3, 3])).status, 'invalid', 'truncated body')
  t.equal(readClientHello(Buffer.alloc(0)).status, 'partial')
})

t.test('the key name of an offered ticket (TLS 1.2 session_ticket, TLS 1.3 pre_shared_key)', async t => {
  const { createServer: createTlsServer } = await import('node:tls')
  const { generateKeyPairSync, randomBytes } = await import('node:crypto')
  const { execFileSync } = await import('node:child_process')
  const { mkdtempSync, writeFileSync } = await import('node:fs')
  const { tmpdir } = await import('node:os')
  const { join } = await import('node:path')
  const dir = mkdtempSync(join(tmpdir(), 'hello-'))
  const key = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ type: 'pkcs8', format: 'pem' })
  writeFileSync(join(dir, 'k.pem'), key, { mode: 0o600 })
  const cert = execFileSync('openssl', ['req', '-x509', '-new', '-key', join(dir, 'k.pem'), '-subj', '/CN=localhost', '-days', '1'], { encoding: 'utf8' })
  const ticketKeys = randomBytes(48)
  const server = createTlsServer({ key, cert, ticketKeys })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => server.close())
  for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
    const session = await new Promise<Buffer>((resolve, reject) => {
      // Same server name as the connection that offers the ticket: OpenSSL 3.5 offers a session only to the name it was made for.
      const c = connect({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, servername: 'localhost', rejectUnauthorized: false, minVersion: version, maxVersion: version })
      c.once('session', (s: Buffer) => { resolve(s); c.destroy() })
      c.on('error', reject)
    })
    const hello = await new Promise<Buffer>(resolve => {
      const plain = createServer(s => s.once('data', (b: Buffer) => { resolve(b); s.destroy(); plain.close() }))
      plain.listen(0, '127.0.0.1', () => {
        const c = connect({ host: '127.0.0.1', port: (plain.address() as AddressInfo).port, session, servername: 'localhost', minVersion: version, maxVersion: version })
        c.on('error', () => {})
      })
    })
    const r = readClientHello(hello)
    t.equal(r.status, 'ok')
    if (r.status === 'ok') {
      t.equal(r.ticketKeyName?.toString('hex'), ticketKeys.subarray(0, 16).toString('hex'), `${version}: the ticket starts with the server's key name`)
      t.equal(r.offersTls13 === true, version === 'TLSv1.3', `${version}: supported_versions read`)
    }
  }
})
