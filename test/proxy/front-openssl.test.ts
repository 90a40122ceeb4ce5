// The front answers like OpenSSL alone: the same first flights (valid, huge, oddly framed and
// segmented, malformed, truncated) sent on raw sockets to keyedge's listener and to a plain Node
// TLS server with the same certificate and settings get the same bytes back (alerts byte for byte,
// a ServerHello for what OpenSSL serves) and the same end of connection. Twice: with the front
// reading the ClientHello (two certificate entries) and with it handing over the first bytes unread.
import { once } from 'node:events'
import { rmSync } from 'node:fs'
import { connect as netConnect, type AddressInfo } from 'node:net'
import { constants } from 'node:crypto'
import { createServer as createTlsServer, connect as tlsConnect } from 'node:tls'
import t from 'tap'
import { Registry } from 'prom-client'
import { validateConfig } from '../../src/config/index.js'
import { createLogger } from '../../src/logger.js'
import { startProxyServer } from '../../src/proxy/server.js'
import { loadCertificate } from '../../src/tls/secure-context.js'
import { tempHome } from '../helpers/paths.js'
import { selfSigned } from '../helpers/proxy-fixtures.js'
import { captureFirstFlight, describe, exchange, firstHandshakeMessage, frame, growHello, MAX_HELLO_BODY, reframing, splitRecords, type Answer } from '../helpers/hello-forge.js'
import { defined } from '../helpers/defined.js'

const home = tempHome('keyedge-front-')
t.teardown(() => rmSync(home, { recursive: true, force: true }))
const a = selfSigned(home, 'a', ['localhost', '127.0.0.1'])
const b = selfSigned(home, 'b', ['b.test'])
const log = createLogger({ level: 'silent' })

const configOf = (certificates: unknown[], tls: Record<string, unknown> = {}): ReturnType<typeof validateConfig> => validateConfig({
  listen: { host: '127.0.0.1', port: 0 },
  tls: { defaultCertificate: 'a', ...tls },
  certificates,
  routes: [{ upstream: 'http://127.0.0.1:1' }]
}, { baseDir: home })
const entryA = { name: 'a', serverNames: ['localhost', '127.0.0.1'], files: [{ cert: a.cert, key: a.key }] }
const entryB = { name: 'b', serverNames: ['b.test'], files: [{ cert: b.cert, key: b.key }] }
const reading = configOf([entryA, entryB])
// One entry, no session-ID cache: nothing to choose, the front hands the first bytes over unread.
const unread = configOf([entryA], { sessionCacheSize: 0 })

const readingEdge = { name: 'front reads the ClientHello', server: await startProxyServer({ config: reading, log, registry: new Registry() }) }
const unreadEdge = { name: 'front hands over unread', server: await startProxyServer({ config: unread, log, registry: new Registry() }) }
const edges = [readingEdge, unreadEdge]
t.teardown(async () => { for (const e of edges) await e.server.close(100) })

// OpenSSL alone: a Node TLS server with entry a's context options (versions, ciphers, certificate).
const options = loadCertificate(defined(reading.certificates[0], 'entry a'), reading.tls, log).options
const plain = createTlsServer({ ...options, secureOptions: constants.SSL_OP_NO_RENEGOTIATION | constants.SSL_OP_PRIORITIZE_CHACHA, ALPNProtocols: ['h2', 'http/1.1'] }, s => s.end())
plain.on('tlsClientError', () => {})
plain.listen(0, '127.0.0.1')
await once(plain, 'listening')
t.teardown(() => plain.close())
const plainPort = (plain.address() as AddressInfo).port

const hello13 = firstHandshakeMessage(await captureFirstFlight({ servername: 'localhost' })) as Buffer
const hello12 = firstHandshakeMessage(await captureFirstFlight({ servername: 'localhost', maxVersion: 'TLSv1.2' })) as Buffer
const servedHello = (bytes: Buffer): boolean => describe(bytes).includes('handshake:2')

/** A ClientHello body with one field rewritten (the handshake header is fixed up). */
function mutate (message: Buffer, edit: (body: Buffer) => Buffer): Buffer {
  const body = edit(Buffer.from(message.subarray(4)))
  const head = Buffer.from([message.readUInt8(0), 0, 0, 0])
  head.writeUIntBE(body.length, 1, 3)
  return Buffer.concat([head, body])
}
const extensionsAt = (body: Buffer): number => {
  let p = 34
  p += 1 + body.readUInt8(p)
  p += 2 + body.readUInt16BE(p)
  return p + 1 + body.readUInt8(p)
}
const extensionsBytes = (message: Buffer): number => message.readUInt16BE(4 + extensionsAt(message.subarray(4)))

/** Puts `n` empty handshake records before each record of `framed`. */
function withEmptyRuns (framed: Buffer, n: number): Buffer {
  const empty = Buffer.concat(Array.from({ length: n }, () => Buffer.from([22, 3, 1, 0, 0])))
  return Buffer.concat(splitRecords(framed).records.flatMap(r => [empty, frame(r.payload, r.payload.length)]))
}

/** An SSLv2-format ClientHello (as old clients sent for compatibility): 12 cipher specs, 32-byte challenge. */
function sslv2Hello (): Buffer {
  const specs = Buffer.from('0700c0030080060040020080040080000039000038000035000033000032000004000005', 'hex')
  const body = Buffer.concat([Buffer.from([1, 3, 1]), Buffer.from([0, specs.length, 0, 0, 0, 32]), specs, Buffer.alloc(32, 7)])
  return Buffer.concat([Buffer.from([0x80 | (body.length >> 8), body.length & 0xff]), body])
}

const served: Array<[string, Buffer, { chunk?: number }?]> = [
  ['TLS 1.3 hello', frame(hello13, 16_384)],
  ['TLS 1.2 hello', frame(hello12, 16_384)],
  ['TLS 1.3 hello in one-byte records, written a byte at a time', frame(hello13, 1), { chunk: 1 }],
  ['65,600-byte hello in 16 KB records', frame(growHello(hello13, 65_600), 16_384)],
  ['65,600-byte hello in one-byte records, odd TCP segments', frame(growHello(hello13, 65_600), 1), { chunk: 997 }],
  ['the largest hello (131,396 bytes) in records of 1 to 3 bytes', frame(growHello(hello12, MAX_HELLO_BODY), i => 1 + i % 3), { chunk: 65_536 }],
  ['records with record-layer versions 3.1 and 3.3 mixed', Buffer.concat([frame(hello13.subarray(0, 100), 100, 0x0301), frame(hello13.subarray(100), 100, 0x0303)])],
  ['runs of 32 empty records between records', withEmptyRuns(frame(hello13, 64), 32)]
]

const refused: Array<[string, Buffer, { halfClose?: boolean }?]> = [
  ['HTTP on the TLS port', Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')],
  ['an alert first', Buffer.from([21, 3, 3, 0, 2, 2, 40])],
  ['application data first', Buffer.from([23, 3, 3, 0, 5, 1, 2, 3, 4, 5])],
  ['change_cipher_spec first', Buffer.from([20, 3, 3, 0, 1, 1])],
  ['SSLv2-format ClientHello', sslv2Hello()],
  ['record-layer version 2.0', Buffer.from([22, 2, 0, 0, 5, 1, 0, 0, 1, 0])],
  ['record-layer version 4.0', Buffer.concat([Buffer.from([22, 4, 0]), frame(hello13, 16_384).subarray(3)])],
  ['a record over 2^14', frame(growHello(hello13, 20_000), 16_385)],
  ['a ServerHello instead', frame(mutate(hello13, body => body).fill(2, 0, 1), 16_384)],
  ['a HelloRequest', Buffer.from([22, 3, 1, 0, 4, 0, 0, 0, 0])],
  ['a ClientHello longer than OpenSSL reads', Buffer.from([22, 3, 1, 0, 4, 1, 0x02, 0x01, 0x45])],
  ['a zero-length ClientHello', Buffer.from([22, 3, 1, 0, 4, 1, 0, 0, 0])],
  ['extensions longer than the hello', frame(mutate(hello13, body => { const p = extensionsAt(body); body.writeUInt16BE(body.readUInt16BE(p) + 9, p); return body }), 16_384)],
  ['trailing bytes after the extensions', frame(mutate(hello13, body => Buffer.concat([body, Buffer.from([0, 0, 0])])), 16_384)],
  ['cipher suites of odd length', frame(mutate(hello13, body => { const p = 35 + body.readUInt8(34); body.writeUInt16BE(body.readUInt16BE(p) - 1, p); return body }), 16_384)],
  ['a malformed server_name', frame(mutate(hello13, body => {
    let p = extensionsAt(body) + 2
    while (body.readUInt16BE(p) !== 0) p += 4 + body.readUInt16BE(p + 2)
    body.writeUInt16BE(body.readUInt16BE(p + 4) + 5, p + 4)
    return body
  }), 16_384)],
  ['TLS 1.3 with a compression method', frame(mutate(hello13, body => {
    const p = 35 + body.readUInt8(34)
    const c = p + 2 + body.readUInt16BE(p)
    return Buffer.concat([body.subarray(0, c), Buffer.from([2, 0, 1]), body.subarray(c + 2)])
  }), 16_384)],
  ['33 empty records', Buffer.concat(Array.from({ length: 33 }, () => Buffer.from([22, 3, 1, 0, 0])))],
  ['a truncated ClientHello, then EOF', frame(hello13, 16_384).subarray(0, 120), { halfClose: true }],
  ['three bytes, then EOF', frame(hello13, 16_384).subarray(0, 3), { halfClose: true }],
  ['one byte of garbage, then EOF', Buffer.from([0x42]), { halfClose: true }],
  ['HTTP, then EOF', Buffer.from('GET / HTTP/1.0\r\n\r\n'), { halfClose: true }]
]

function show (x: Answer): string {
  return `${describe(x.bytes).join(',') || 'nothing'} then ${x.end}`
}

for (const edge of edges) {
  t.test(`${edge.name}: served like OpenSSL serves them`, async t => {
    for (const [name, bytes, opts] of served) {
      const [mine, theirs] = await Promise.all([exchange(edge.server.port, bytes, { ...opts, ms: 10_000, until: servedHello }), exchange(plainPort, bytes, { ...opts, ms: 10_000, until: servedHello })])
      t.ok(servedHello(theirs.bytes), `${name}: OpenSSL answers with a ServerHello (${show(theirs)})`)
      t.ok(servedHello(mine.bytes), `${name}: so does keyedge (${show(mine)})`)
    }
  })

  t.test(`${edge.name}: refused exactly as OpenSSL refuses them`, async t => {
    for (const [name, bytes, opts] of refused) {
      const [mine, theirs] = await Promise.all([exchange(edge.server.port, bytes, { ...opts, ms: 10_000 }), exchange(plainPort, bytes, { ...opts, ms: 10_000 })])
      t.not(theirs.end, 'open', `${name}: OpenSSL ends the connection (${show(theirs)})`)
      t.equal(show(mine), show(theirs), `${name}: keyedge answers the same`)
      t.ok(mine.bytes.equals(theirs.bytes), `${name}: byte for byte (${mine.bytes.toString('hex')})`)
    }
  })
}

t.test('real clients complete handshakes through odd framing and segmentation', async t => {
  for (const [name, sizes, chunk] of [['one-byte records', 1, 7], ['records of 1 to 5 bytes', (i: number) => 1 + i % 5, 1], ['16 KB records', 16_384, undefined]] as const) {
    const raw = netConnect({ host: '127.0.0.1', port: readingEdge.server.port })
    await once(raw, 'connect')
    const tls = tlsConnect({ socket: reframing(raw, sizes, chunk), servername: 'localhost', ca: a.certPem })
    await once(tls, 'secureConnect')
    t.equal(tls.getPeerCertificate().subject.CN, 'localhost', `${name}: handshake done, certificate of the name`)
    tls.destroy()
  }
  // A real ClientHello over 64 KiB: extensions filled to their 65,535-byte limit with ALPN names.
  const base = firstHandshakeMessage(await captureFirstFlight({ servername: 'localhost', ALPNProtocols: ['http/1.1'] })) as Buffer
  let room = 65_535 - extensionsBytes(base)
  const alpn: string[] = []
  while (room > 2) { const n = Math.min(255, room - 1); alpn.push(`x-${alpn.length}-`.padEnd(n, 'p')); room -= 1 + n }
  alpn.push('http/1.1')
  const big = firstHandshakeMessage(await captureFirstFlight({ servername: 'localhost', ALPNProtocols: alpn })) as Buffer
  t.ok(big.length > 65_536, `the ClientHello is ${big.length} bytes`)
  for (const port of [readingEdge.server.port, unreadEdge.server.port]) {
    const tls = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ca: a.certPem, ALPNProtocols: alpn })
    await once(tls, 'secureConnect')
    t.equal(tls.alpnProtocol, 'http/1.1', 'served, http/1.1 chosen from the long list')
    tls.destroy()
  }
})
