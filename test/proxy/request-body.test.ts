// Request bodies and request heads at the HTTP front, end to end: an upstream that answers before
// reading the body (curl must not hang, HTTP/1.1 and HTTP/2), and ambiguous Host headers (400).
import { once } from 'node:events'
import { writeFileSync, rmSync } from 'node:fs'
import { constants } from 'node:http2'
import { join } from 'node:path'
import t from 'tap'
import { curl } from '../helpers/edge.js'
import { countingUpstream, h2Open, h2Request, metric, startFront, tlsOpen, untilClosed } from '../helpers/http-front.js'
import { tempHome } from '../helpers/paths.js'
import type { TLSSocket } from 'node:tls'

const upstream = await countingUpstream()
const front = await startFront({ upstream: upstream.url })
const dir = tempHome('keyedge-body-')
const caFile = join(dir, 'ca.pem')
writeFileSync(caFile, front.ca)
const bigFile = join(dir, 'big.bin')
writeFileSync(bigFile, Buffer.alloc(32 * 1024 * 1024, 7))
t.teardown(async () => {
  await front.stop()
  await upstream.close()
  rmSync(dir, { recursive: true, force: true })
})

const url = (path: string): string => `https://localhost:${front.port}${path}`
const curlArgs = ['--cacert', caFile, '--resolve', `localhost:${front.port}:127.0.0.1`, '-o', '-', '-w', '\n%{http_code}']

/** Reads HTTP/1.1 responses off `socket` until `count` status lines were seen. */
async function responses (socket: TLSSocket, count: number, ms = 10_000): Promise<string> {
  let text = ''
  const deadline = Date.now() + ms
  while ((text.match(/HTTP\/1\.1 \d\d\d/g) ?? []).length < count) {
    if (Date.now() > deadline || socket.destroyed) throw new Error(`no ${count} responses; got: ${text.slice(0, 300)}`)
    const [chunk] = await Promise.race([once(socket, 'data'), new Promise<[Buffer]>(resolve => setTimeout(() => resolve([Buffer.alloc(0)]), 200))])
    text += chunk.toString('latin1')
  }
  return text
}

t.test('early response, HTTP/1.1 and HTTP/2: curl gets the 413 at once and exits', async t => {
  for (const proto of ['--http1.1', '--http2']) {
    const fixed = await curl([proto, ...curlArgs, '-T', bigFile, url('/early')], 20)
    t.equal(fixed.code, 0, `${proto} with Content-Length: curl exited 0 (${fixed.stderr.trim()})`)
    t.match(fixed.stdout, /too large\n\n413$/)
    t.ok(fixed.ms < 5000, `${proto} with Content-Length: ${fixed.ms} ms`)
  }
  const chunked = await curl(['--http1.1', ...curlArgs, '-H', 'transfer-encoding: chunked', '-T', bigFile, url('/early')], 20)
  t.equal(chunked.code, 0, `chunked: curl exited 0 (${chunked.stderr.trim()})`)
  t.match(chunked.stdout, /413$/)
  t.ok(chunked.ms < 5000, `chunked: ${chunked.ms} ms`)
})

t.test('early response, HTTP/1.1: a small rest of the body is drained and the connection kept', async t => {
  const socket = await tlsOpen(front.port, front.ca)
  t.teardown(() => socket.destroy())
  socket.write('POST /early HTTP/1.1\r\nHost: localhost\r\nContent-Length: 300000\r\n\r\n' + 'x'.repeat(1000))
  const first = await responses(socket, 1)
  t.match(first, /^HTTP\/1\.1 413 /)
  socket.write('y'.repeat(299_000))
  socket.write('GET /after HTTP/1.1\r\nHost: localhost\r\n\r\n')
  const second = await responses(socket, 1)
  t.match(second, /HTTP\/1\.1 200 /, 'the next request on the same connection is served')
  t.equal(upstream.seen.get('/after'), 1)
})

t.test('early response, HTTP/1.1: a large rest of the body gets the connection closed', async t => {
  const socket = await tlsOpen(front.port, front.ca)
  socket.write('POST /early HTTP/1.1\r\nHost: localhost\r\nContent-Length: 50000000\r\n\r\n' + 'x'.repeat(65536))
  const result = await untilClosed(socket, 8000)
  t.ok(result.closed, `closed after ${result.afterMs} ms`)
  t.match(result.data, /^HTTP\/1\.1 413 /, 'after the response')
})

t.test('early response, HTTP/2: the stream is reset with NO_ERROR after the response', async t => {
  const session = await h2Open(front.port, front.ca)
  t.teardown(() => session.destroy())
  const stream = session.request({ ':path': '/early', ':method': 'POST' })
  stream.on('error', () => {})
  const chunk = Buffer.alloc(16384)
  let sent = 0
  const pump = (): void => {
    while (!stream.destroyed && sent < 16 * 1024 * 1024) {
      sent += chunk.length
      if (!stream.write(chunk)) { stream.once('drain', pump); return }
    }
  }
  pump()
  const [headers] = await once(stream, 'response') as [Record<string, number>]
  t.equal(headers[':status'], 413)
  stream.resume()
  // node:http2 keeps a stream whose own upload never ended open after RST_STREAM(NO_ERROR) (curl
  // stops, as the test above shows); the reset itself is what this checks.
  const deadline = Date.now() + 5000
  while (!stream.closed && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 20))
  t.ok(stream.closed, 'the server closed the stream')
  t.equal(stream.rstCode, constants.NGHTTP2_NO_ERROR, 'with RST_STREAM NO_ERROR')
  t.ok(sent < 16 * 1024 * 1024, `the client's upload stopped after ${sent} bytes were queued`)
})

t.test('early responses are counted by what became of the body', async t => {
  const text = await front.metrics()
  t.ok(metric(text, 'edge_early_responses_total', { action: 'drained' }) >= 1, 'drained')
  t.ok(metric(text, 'edge_early_responses_total', { action: 'closed' }) >= 1, 'closed')
  t.ok(metric(text, 'edge_early_responses_total', { action: 'reset' }) >= 1, 'reset')
})

t.test('two Host headers: 400, and the connection is closed', async t => {
  const socket = await tlsOpen(front.port, front.ca)
  socket.write('GET /dup HTTP/1.1\r\nHost: localhost\r\nHost: evil.test\r\n\r\n')
  const result = await untilClosed(socket, 5000)
  t.match(result.data, /^HTTP\/1\.1 400 /)
  t.match(result.data, /more than one Host/)
  t.ok(result.closed, 'closed')
  t.equal(upstream.seen.get('/dup'), undefined, 'nothing reached the upstream')
})

t.test('HTTP/2: a Host that differs from :authority gets 400; a matching one is served', async t => {
  const session = await h2Open(front.port, front.ca)
  t.teardown(() => session.destroy())
  const conflicting = await h2Request(session, { ':path': '/conflict', ':authority': 'localhost', host: 'evil.test' })
  t.equal(conflicting.status, 400)
  t.match(conflicting.body.toString(), /differs from :authority/)
  t.equal(upstream.seen.get('/conflict'), undefined)
  const same = await h2Request(session, { ':path': '/same', ':authority': 'localhost', host: 'LOCALHOST' })
  t.equal(same.status, 200, 'the same authority in another case is fine')
  const text = await front.metrics()
  t.ok(metric(text, 'edge_proxy_requests_total', { outcome: 'bad_request' }) >= 2, 'counted bad_request')
})
