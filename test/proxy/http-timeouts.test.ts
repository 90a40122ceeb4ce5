// The HTTP front's connection timeouts, end to end with raw TLS sockets and a node:http2 client:
// slowloris request heads, idle connections (HTTP/1.1 and HTTP/2), and stalled request bodies.
import { once } from 'node:events'
import { constants } from 'node:http2'
import t from 'tap'
import { countingUpstream, h2Open, h2Request, metric, startFront, tlsOpen, untilClosed } from '../helpers/http-front.js'

const timeouts = { requestHeadersMs: 1500, keepAliveIdleMs: 1000, http2IdleMs: 1000, requestBodyIdleMs: 1000 }
/** Scheduling slack on a loaded 2-core machine. */
const SLACK_MS = 1500

const upstream = await countingUpstream()
// The fronts whose keep-alive idle timeout is past Node's own 5 s start with the main one: their
// 6.5 s waits then run alongside the other cases.
const longIdle = { ...timeouts, keepAliveIdleMs: 6500 }
const [front, h1Only, h1WithH2] = await Promise.all([
  startFront({ upstream: upstream.url, timeouts }),
  startFront({ upstream: upstream.url, http2: false, timeouts: longIdle }),
  startFront({ upstream: upstream.url, http2: true, timeouts: longIdle })
])
t.teardown(async () => {
  await Promise.all([front.stop(), h1Only.stop(), h1WithH2.stop()])
  await upstream.close()
})

const GET = 'GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n'

// Every cut waits on the proxy's clocks, each on a connection of its own: the cases run side by side
// (they idle, so they do not slow each other's measurements); the 8 MiB upload and the metrics after them.
t.test('the connection timeouts, side by side', { jobs: 9 }, async t => {
  t.test('slowloris: a request head trickled byte by byte is cut at requestHeadersMs with 408', async t => {
    const socket = await tlsOpen(front.port, front.ca)
    const head = 'GET /slow HTTP/1.1\r\nHost: localhost\r\nX-Pad: ' + 'a'.repeat(200)
    let i = 0
    // One byte every 250 ms: never idle long enough for any idle timeout, never a complete head.
    const trickle = setInterval(() => { if (!socket.destroyed) socket.write(head.charAt(i++ % head.length)) }, 250)
    const result = await untilClosed(socket, timeouts.requestHeadersMs + SLACK_MS + 2000)
    clearInterval(trickle)
    t.ok(result.closed, `closed after ${result.afterMs} ms`)
    t.ok(result.afterMs >= timeouts.requestHeadersMs - 100, 'not before requestHeadersMs')
    t.ok(result.afterMs < timeouts.requestHeadersMs + SLACK_MS, 'and not much after')
    t.match(result.data, /^HTTP\/1\.1 408 /, 'told 408 Request Timeout')
    t.equal(upstream.seen.get('/slow'), undefined, 'nothing reached the upstream')
  })

  t.test('a connection that completes the handshake and sends nothing is closed at requestHeadersMs', async t => {
    const socket = await tlsOpen(front.port, front.ca)
    const result = await untilClosed(socket, timeouts.requestHeadersMs + SLACK_MS + 2000)
    t.ok(result.closed, `closed after ${result.afterMs} ms`)
    t.ok(result.afterMs < timeouts.requestHeadersMs + SLACK_MS)
    t.equal(result.data, '', 'without a response: it never asked for anything')
  })

  t.test('HTTP/1.1 keep-alive: idle connections close at keepAliveIdleMs, busy ones stay', async t => {
    const idle = await tlsOpen(front.port, front.ca)
    idle.write(GET)
    await once(idle, 'data')
    const started = Date.now()
    const result = await untilClosed(idle, timeouts.keepAliveIdleMs + SLACK_MS + 2000)
    t.ok(result.closed, `idle connection closed after ${Date.now() - started} ms`)
    t.ok(result.afterMs >= timeouts.keepAliveIdleMs - 300 && result.afterMs < timeouts.keepAliveIdleMs + SLACK_MS, 'at keepAliveIdleMs (measured from the client, after its answer arrived)')

    // A client that keeps asking every 400 ms keeps its connection past several idle timeouts.
    const busy = await tlsOpen(front.port, front.ca)
    let answers = 0
    busy.on('data', (c: Buffer) => { answers += c.toString().split('HTTP/1.1 200').length - 1 })
    const until = Date.now() + 3 * timeouts.keepAliveIdleMs
    while (Date.now() < until && !busy.destroyed) {
      const before = answers
      busy.write(GET)
      const deadline = Date.now() + 5000
      while (answers === before && Date.now() < deadline && !busy.destroyed) await once(busy, 'data')
      await new Promise(resolve => setTimeout(resolve, 400))
    }
    t.notOk(busy.destroyed, 'a connection in use is not cut')
    t.ok(answers >= 5, `${answers} answers on one connection`)
    busy.destroy()
  })

  t.test('slowloris after a keep-alive request is cut at requestHeadersMs too', async t => {
    const socket = await tlsOpen(front.port, front.ca)
    socket.write(GET)
    await once(socket, 'data')
    const head = 'GET /slow2 HTTP/1.1\r\nHost: localhost\r\nX-Pad: ' + 'a'.repeat(200)
    let i = 0
    const trickle = setInterval(() => { if (!socket.destroyed) socket.write(head.charAt(i++ % head.length)) }, 250)
    const result = await untilClosed(socket, timeouts.requestHeadersMs + SLACK_MS + 2000)
    clearInterval(trickle)
    t.ok(result.closed, `closed after ${result.afterMs} ms`)
    t.ok(result.afterMs < timeouts.requestHeadersMs + SLACK_MS, 'the keep-alive idle clock did not take over')
    t.match(result.data, /HTTP\/1\.1 408 /)
  })

  t.test('HTTP/2: a session with no request, and one idle after its requests, get GOAWAY then close', async t => {
    const silent = await h2Open(front.port, front.ca)
    const goaway = once(silent, 'goaway')
    const started = Date.now()
    const [code] = await goaway as [number]
    t.equal(code, constants.NGHTTP2_NO_ERROR, 'GOAWAY NO_ERROR')
    if (!silent.destroyed) await once(silent, 'close')
    t.ok(Date.now() - started < timeouts.requestHeadersMs + SLACK_MS, `closed after ${Date.now() - started} ms`)

    const used = await h2Open(front.port, front.ca)
    t.equal((await h2Request(used, { ':path': '/a' })).status, 200)
    const idleFrom = Date.now()
    const [code2] = await once(used, 'goaway') as [number]
    t.equal(code2, constants.NGHTTP2_NO_ERROR)
    const after = Date.now() - idleFrom
    t.ok(after >= timeouts.http2IdleMs - 100 && after < timeouts.http2IdleMs + SLACK_MS, `GOAWAY ${after} ms after the last stream`)
    if (!used.destroyed) await once(used, 'close')
  })

  t.test('HTTP/1.1: a body that stalls gets 408 and the connection closes', async t => {
    const socket = await tlsOpen(front.port, front.ca)
    socket.write('POST /sink HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n' + 'x'.repeat(1000))
    const result = await untilClosed(socket, timeouts.requestBodyIdleMs + SLACK_MS + 3000)
    t.ok(result.closed, `closed after ${result.afterMs} ms`)
    t.match(result.data, /^HTTP\/1\.1 408 /)
    t.match(result.data, /request_timeout/)
  })

  t.test('HTTP/2: a body that stalls gets 408, then the stream ends', async t => {
    const session = await h2Open(front.port, front.ca)
    t.teardown(() => session.destroy())
    const stream = session.request({ ':path': '/sink', ':method': 'POST' })
    stream.write(Buffer.alloc(1000))
    const [headers] = await once(stream, 'response') as [Record<string, number>]
    t.equal(headers[':status'], 408)
    stream.resume()
    await once(stream, 'close')
    t.pass('the stream closed: the client is not left sending')
  })

  for (const [http2, h1] of [[false, h1Only], [true, h1WithH2]] as const) {
    t.test(`with http2 ${http2 ? 'on (HTTP/1.1 through allowHTTP1)' : 'off'}, keepAliveIdleMs governs (not Node's own 5 s keep-alive timeout)`, async t => {
      const socket = await tlsOpen(h1.port, h1.ca)
      socket.write(GET)
      await once(socket, 'data')
      const result = await untilClosed(socket, 6500 + SLACK_MS + 2000)
      t.ok(result.closed, `closed after ${result.afterMs} ms`)
      t.ok(result.afterMs > 6000, 'still open past Node\'s 5 s default')
      t.ok(result.afterMs < 6500 + SLACK_MS, 'closed at keepAliveIdleMs')
    })
  }
})

t.test('a slow upstream is not the client\'s stall: no 408 while the proxy is the one not reading', async t => {
  // The upstream reads nothing for 2.5 × requestBodyIdleMs; the client sends 8 MiB at full speed
  // and is held back by backpressure meanwhile.
  const session = await h2Open(front.port, front.ca)
  t.teardown(() => session.destroy())
  const body = Buffer.alloc(8 * 1024 * 1024, 1)
  const res = await h2Request(session, { ':path': `/stall?ms=${Math.round(2.5 * timeouts.requestBodyIdleMs)}`, ':method': 'POST' }, body)
  t.equal(res.status, 200)
  t.equal(res.body.toString(), String(body.length), 'the whole body arrived')
})

t.test('every cut is counted in edge_timeouts_total{kind}', async t => {
  const text = await front.metrics()
  t.ok(metric(text, 'edge_timeouts_total', { kind: 'request_headers' }) >= 3, 'request_headers')
  t.ok(metric(text, 'edge_timeouts_total', { kind: 'keepalive_idle' }) >= 1, 'keepalive_idle')
  t.ok(metric(text, 'edge_timeouts_total', { kind: 'http2_idle' }) >= 1, 'http2_idle')
  t.ok(metric(text, 'edge_timeouts_total', { kind: 'request_body' }) >= 2, 'request_body')
  t.ok(metric(text, 'edge_proxy_requests_total', { outcome: 'request_timeout' }) >= 2, 'requests counted request_timeout')
})
