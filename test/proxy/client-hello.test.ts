// The ClientHello reader, in process: what it routes by (server name, TLS 1.3 offered) in real
// ClientHellos however they are framed and chunked, linear work for the worst framing, the bytes it
// hands on, and what it leaves to OpenSSL (never rejecting anything itself).
import t from 'tap'
import { ClientHelloReader, MAX_CLIENT_HELLO_BODY, readClientHello } from '../../src/tls/client-hello.js'
import { captureFirstFlight, firstHandshakeMessage, frame, growHello, MAX_HELLO_BODY, splitRecords } from '../helpers/hello-forge.js'

const hello13 = firstHandshakeMessage(await captureFirstFlight({ servername: 'api.Example.test' })) as Buffer
const hello12 = firstHandshakeMessage(await captureFirstFlight({ servername: 'b.test', maxVersion: 'TLSv1.2' })) as Buffer
const noSni = firstHandshakeMessage(await captureFirstFlight({})) as Buffer

/** Feeds `bytes` in chunks of `size` and returns the last verdict and the bytes handed on. */
function feed (bytes: Buffer, size: number): { verdict: ReturnType<ClientHelloReader['push']>, bytes: Buffer } {
  const r = new ClientHelloReader()
  let verdict = r.push(Buffer.alloc(0))
  for (let p = 0; p < bytes.length; p += size) verdict = r.push(bytes.subarray(p, p + size))
  return { verdict, bytes: r.bytes() }
}

t.test('server name and TLS 1.3 offer of real ClientHellos, however framed and chunked', async t => {
  t.same(readClientHello(frame(hello13, 16_384)), { status: 'ok', serverName: 'api.Example.test', offersTls13: true, offersTicket: false })
  t.same(readClientHello(frame(hello12, 16_384)), { status: 'ok', serverName: 'b.test', offersTls13: false, offersTicket: false })
  t.same(readClientHello(frame(noSni, 16_384)), { status: 'ok', serverName: undefined, offersTls13: true, offersTicket: false })
  for (const [records, chunk] of [[1, 1], [1, 7], [3, 1000], [100, 1], [16_384, 1], [16_384, 3]] as const) {
    const bytes = frame(hello13, records, records % 2 === 0 ? 0x0303 : 0x0301)
    const r = feed(bytes, chunk)
    t.same(r.verdict, { status: 'ok', serverName: 'api.Example.test', offersTls13: true, offersTicket: false }, `records of ${records}, chunks of ${chunk}`)
    t.ok(r.bytes.equals(bytes), 'hands on every byte, unchanged')
  }
  t.same(readClientHello(frame(hello13, 16_384).subarray(0, 3)), { status: 'partial' })
  t.same(readClientHello(frame(hello13, 100).subarray(0, hello13.length)), { status: 'partial' })
  t.same(readClientHello(Buffer.alloc(0)), { status: 'partial' })
})

t.test('the largest ClientHello OpenSSL reads, in one-byte records: routed, in linear time', async t => {
  const max = growHello(hello12, MAX_HELLO_BODY)
  t.equal(MAX_CLIENT_HELLO_BODY, MAX_HELLO_BODY)
  const half = frame(growHello(hello12, 65_000), 1)
  const full = frame(max, 1)
  t.equal(full.length, 6 * (MAX_HELLO_BODY + 4), '131,400 records, 788,400 bytes')
  const time = (bytes: Buffer, chunk: number): number => {
    const t0 = process.cpuUsage()
    const r = feed(bytes, chunk)
    const used = process.cpuUsage(t0)
    t.same(r.verdict, { status: 'ok', serverName: 'b.test', offersTls13: false, offersTicket: false })
    return (used.user + used.system) / 1000
  }
  time(half, 65_536) // warm up
  const halfMs = time(half, 65_536)
  const fullMs = time(full, 65_536)
  // Quadratic reading (what this replaced) took ~2 s of CPU for 64 KB in one-byte records.
  t.ok(fullMs < 1000, `788 KB of one-byte records read in ${fullMs.toFixed(1)} ms of CPU (64 KB chunks)`)
  t.ok(fullMs < 6 * Math.max(halfMs, 5), `twice the bytes, about twice the time: ${halfMs.toFixed(1)} ms, then ${fullMs.toFixed(1)} ms`)
  const byteMs = time(full, 1)
  t.ok(byteMs < 3000, `the same pushed one byte at a time: ${byteMs.toFixed(1)} ms of CPU`)
})

t.test('what it cannot route is left to OpenSSL, with the bytes read', async t => {
  const cases: Array<[string, Buffer, string]> = [
    ['HTTP', Buffer.from('GET / HTTP/1.1\r\n\r\n'), 'not a TLS handshake record'],
    ['an alert first', Buffer.from([21, 3, 3, 0, 2, 2, 40]), 'not a TLS handshake record'],
    ['application data first', Buffer.from([23, 3, 3, 0, 1, 0]), 'not a TLS handshake record'],
    ['SSLv2-format hello', Buffer.from('802e0103010015000000100700c0030080', 'hex'), 'not a TLS handshake record'],
    ['record version 2.x', Buffer.from([22, 2, 0, 0, 1, 1]), 'not a TLS record version'],
    ['record over 2^14', Buffer.from([22, 3, 1, 0x40, 0x01]), 'record longer than 2^14'],
    ['a ServerHello', Buffer.from([22, 3, 1, 0, 4, 2, 0, 0, 0]), 'first handshake message is not a ClientHello'],
    ['a hello longer than OpenSSL reads', Buffer.from([22, 3, 1, 0, 4, 1, 0x02, 0x01, 0x45]), 'ClientHello longer than OpenSSL reads'],
    ['a truncated body', Buffer.from([22, 3, 1, 0, 6, 1, 0, 0, 2, 3, 3]), 'malformed ClientHello'],
    ['33 empty records', Buffer.concat(Array.from({ length: 33 }, () => Buffer.from([22, 3, 1, 0, 0]))), 'too many empty records']
  ]
  for (const [name, bytes, reason] of cases) {
    const r = feed(bytes, 1)
    t.same(r.verdict, { status: 'unroutable', reason }, name)
    t.ok(r.bytes.equals(bytes), `${name}: every byte handed on`)
  }
  const longer = Buffer.from([22, 3, 1, 0, 4, 1, 0x02, 0x01, 0x44])
  t.same(readClientHello(longer), { status: 'partial' }, 'exactly the longest length: waits for the body')
  // Bytes after the verdict are kept too (OpenSSL reads them next).
  const r = new ClientHelloReader()
  r.push(Buffer.from('GET / HT'))
  r.push(Buffer.from('TP/1.1\r\n'))
  t.equal(r.bytes().toString(), 'GET / HTTP/1.1\r\n')
})

t.test('empty records: accepted as OpenSSL accepts them (32 in a row), not kept', async t => {
  const empty = (n: number): Buffer => Buffer.concat(Array.from({ length: n }, () => Buffer.from([22, 3, 1, 0, 0])))
  const framed = frame(hello13, 50)
  const parts: Buffer[] = []
  for (let p = 0; p < framed.length;) {
    const len = framed.readUInt16BE(p + 3)
    parts.push(empty(32), framed.subarray(p, p + 5 + len))
    p += 5 + len
  }
  const withEmpties = Buffer.concat(parts)
  const r = feed(withEmpties, 13)
  t.same(r.verdict, { status: 'ok', serverName: 'api.Example.test', offersTls13: true, offersTicket: false })
  t.ok(r.bytes.equals(framed), 'runs of empty records are dropped from the bytes handed on')
  const partial = new ClientHelloReader()
  partial.push(Buffer.concat([frame(hello13, 50).subarray(0, 55), empty(2), Buffer.from([22, 3])]))
  t.ok(partial.bytes().equals(Buffer.concat([frame(hello13, 50).subarray(0, 55), empty(2), Buffer.from([22, 3])])), 'before a verdict: the pending run and header are handed on')
})

t.test('any framing, any chunking: the same verdict, and the bytes handed on are the flight less its empty records', async t => {
  let seed = 7
  const random = (n: number): number => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed % n }
  const empty = Buffer.from([22, 3, 1, 0, 0])
  for (let round = 0; round < 300; round++) {
    const message = round % 2 === 0 ? hello13 : hello12
    const framed = frame(message, () => 1 + random(round % 3 === 0 ? 4 : 300))
    const parts: Buffer[] = []
    for (const r of splitRecords(framed).records) {
      for (let e = random(4) === 0 ? random(33) : 0; e > 0; e--) parts.push(empty)
      parts.push(frame(r.payload, r.payload.length))
    }
    const flight = Buffer.concat(parts)
    const reader = new ClientHelloReader()
    let verdict = reader.push(Buffer.alloc(0))
    for (let p = 0; p < flight.length;) {
      const n = 1 + random(random(2) === 0 ? 7 : 2000)
      verdict = reader.push(flight.subarray(p, p + n))
      p += n
    }
    if (verdict.status !== 'ok' || !reader.bytes().equals(framed)) {
      t.fail(`round ${round}: ${JSON.stringify(verdict)}`)
      return
    }
  }
  t.pass('300 random framings and chunkings')
})

t.test('a first flight in one chunk (read in place) gets the verdict and bytes of the record-by-record path', async t => {
  const record = (payload: Buffer, version = 0x0301): Buffer => Buffer.concat([Buffer.from([22, version >> 8, version & 0xff, payload.length >> 8, payload.length & 0xff]), payload])
  const flights: Array<[string, Buffer]> = [
    ['one record', frame(hello13, 16_384)],
    ['one record, then another record in the same chunk', Buffer.concat([frame(hello12, 16_384), Buffer.from([20, 3, 3, 0, 1, 1])])],
    ['a record holding the hello and more bytes after it', record(Buffer.concat([hello13, Buffer.from([1, 2, 3])]))],
    ['the hello spread over two records', frame(hello13, hello13.length - 10)],
    ['a record longer than the chunk', record(hello13).subarray(0, hello13.length)],
    ['an empty record first', Buffer.concat([Buffer.from([22, 3, 1, 0, 0]), frame(hello13, 16_384)])],
    ['not a ClientHello', record(Buffer.concat([Buffer.from([2]), hello13.subarray(1)]))],
    ['a hello body longer than its record says', record(Buffer.concat([hello13.subarray(0, 1), Buffer.from([0, 0xff, 0xff]), hello13.subarray(4)]))],
    ['record version 4', record(hello13, 0x0401)]
  ]
  for (const [what, flight] of flights) {
    const whole = new ClientHelloReader()
    const v = whole.push(flight)
    const slow = feed(flight, 1)
    t.same(v, slow.verdict, `${what}: same verdict`)
    t.ok(whole.bytes().equals(slow.bytes), `${what}: same bytes handed on`)
  }
})
