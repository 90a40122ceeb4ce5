// The HTTP/2 upstream client (src/proxy/h2-upstream.ts) against real node:http2 servers on port 0,
// and grpc.ts's pure parts: grpc-timeout parsing and the HTTP → gRPC status mapping.
import { once } from 'node:events'
import { createServer as createNetServer, type AddressInfo, type Socket } from 'node:net'
import { constants, createServer, type Http2Server, type ServerHttp2Stream } from 'node:http2'
import pino from 'pino'
import t from 'tap'
import { H2Origin } from '../../src/proxy/h2-upstream.js'
import { RequestAbort } from '../../src/proxy/request-abort.js'
import { GrpcStatus, grpcStatusOf, grpcTimeoutMs, isGrpc } from '../../src/proxy/grpc.js'
import { refusedUrl } from '../helpers/proxy-fixtures.js'
import { until } from '../helpers/wait.js'

const log = pino({ level: 'silent' })

async function listen (server: Http2Server): Promise<string> {
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

t.test('grpc-timeout values and status mapping', async t => {
  t.equal(grpcTimeoutMs('100m'), 100)
  t.equal(grpcTimeoutMs('2S'), 2000)
  t.equal(grpcTimeoutMs('1M'), 60_000)
  t.equal(grpcTimeoutMs('1H'), 3_600_000)
  t.equal(grpcTimeoutMs('1500u'), 2, 'rounded up to whole ms')
  t.equal(grpcTimeoutMs('5n'), 1, 'at least 1 ms')
  for (const bad of ['', '10', 'm', '123456789m', '1.5S', '-1S', '10x', undefined]) t.equal(grpcTimeoutMs(bad), undefined, `refused: ${String(bad)}`)
  t.equal(grpcStatusOf(502), GrpcStatus.UNAVAILABLE)
  t.equal(grpcStatusOf(503), GrpcStatus.UNAVAILABLE)
  t.equal(grpcStatusOf(504), GrpcStatus.UNAVAILABLE)
  t.equal(grpcStatusOf(429), GrpcStatus.UNAVAILABLE)
  t.equal(grpcStatusOf(404), GrpcStatus.UNIMPLEMENTED)
  t.equal(grpcStatusOf(400), GrpcStatus.INTERNAL)
  t.equal(grpcStatusOf(413), GrpcStatus.UNKNOWN)
  t.ok(isGrpc({ 'content-type': 'application/grpc' }))
  t.ok(isGrpc({ 'content-type': 'application/grpc+proto' }))
  t.notOk(isGrpc({ 'content-type': 'application/grpc-web+proto' }), 'gRPC-Web is not gRPC')
  t.notOk(isGrpc({ 'content-type': 'application/json' }))
})

t.test('a response with trailers, a streamed request body, :authority from Host', async t => {
  const server = createServer()
  let rst: number | undefined
  server.on('stream', (stream: ServerHttp2Stream, headers) => {
    stream.on('close', () => { rst = stream.rstCode })
    const chunks: Buffer[] = []
    stream.on('data', (c: Buffer) => chunks.push(c))
    stream.on('end', () => {
      stream.respond({ ':status': 200, 'x-authority': String(headers[':authority']), 'x-te': String(headers.te) }, { waitForTrailers: true })
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0', 'x-sum': String(Buffer.concat(chunks).length) }))
      stream.end(Buffer.concat(chunks))
    })
  })
  const url = await listen(server)
  const origin = new H2Origin({ url, connectTimeoutMs: 2000, log })
  t.teardown(() => { origin.close(); server.close() })
  async function * body (): AsyncGenerator<Buffer> {
    for (let i = 0; i < 64; i++) yield Buffer.alloc(16 * 1024, i)
  }
  const res = await origin.request({ method: 'POST', path: '/x', headers: { host: 'api.test', 'content-type': 'application/grpc', connection: 'keep-alive' }, body: body() as never })
  t.equal(res.statusCode, 200)
  t.equal(res.headers['x-authority'], 'api.test')
  t.equal(res.headers['x-te'], 'trailers', 'te: trailers added for gRPC')
  const chunks: Buffer[] = []
  for await (const c of res.body) chunks.push(c as Buffer)
  t.equal(Buffer.concat(chunks).length, 64 * 16 * 1024, '1 MB echoed')
  t.same(res.trailers, { 'grpc-status': '0', 'x-sum': String(64 * 16 * 1024) })
  t.ok(await until(() => rst !== undefined, 5000))
  t.equal(rst, constants.NGHTTP2_NO_ERROR, 'a complete exchange is not reset')
})

t.test('timeouts: headers and body idle, as undici names them; the target sees the stream cancelled', async t => {
  const cancelled: number[] = []
  const server = createServer()
  server.on('stream', (stream: ServerHttp2Stream, headers) => {
    stream.on('close', () => { if (stream.rstCode === constants.NGHTTP2_CANCEL) cancelled.push(1) })
    stream.on('error', () => {})
    // /stall-body: headers and one chunk, then nothing. /stall: nothing at all.
    if (headers[':path'] === '/stall-body') {
      stream.respond({ ':status': 200 })
      stream.write('first')
    }
  })
  const url = await listen(server)
  const origin = new H2Origin({ url, connectTimeoutMs: 2000, log })
  t.teardown(() => { origin.close(); server.close() })
  await t.rejects(origin.request({ method: 'GET', path: '/stall', headersTimeout: 200 }), { code: 'UND_ERR_HEADERS_TIMEOUT' })
  const res = await origin.request({ method: 'GET', path: '/stall-body', bodyTimeout: 200 })
  res.body.on('data', () => {})
  const [err] = await once(res.body, 'error') as [NodeJS.ErrnoException]
  t.equal(err.code, 'UND_ERR_BODY_TIMEOUT')
  t.ok(await until(() => cancelled.length === 2, 5000), 'both streams were cancelled at the target (RST_STREAM CANCEL)')
})

t.test('an aborted request cancels its stream at the target (AbortController and the forwarder\'s RequestAbort)', async t => {
  const rsts: number[] = []
  const server = createServer()
  server.on('stream', (stream: ServerHttp2Stream) => {
    stream.on('close', () => { rsts.push(stream.rstCode ?? -1) })
    stream.on('error', () => {})
    stream.respond({ ':status': 200 })
    stream.write('x')
  })
  const url = await listen(server)
  const origin = new H2Origin({ url, connectTimeoutMs: 2000, log })
  t.teardown(() => { origin.close(); server.close() })
  for (const abort of [new AbortController(), new RequestAbort()]) {
    const res = await origin.request({ method: 'GET', path: '/', signal: abort.signal })
    res.body.on('error', () => {})
    abort.abort()
  }
  t.ok(await until(() => rsts.length === 2, 5000))
  t.same(rsts, [constants.NGHTTP2_CANCEL, constants.NGHTTP2_CANCEL])
})

t.test('connect failures: refused, and a connect timeout', async t => {
  const refused = new H2Origin({ url: await refusedUrl(), connectTimeoutMs: 2000, log })
  await t.rejects(refused.request({ method: 'GET', path: '/' }), { code: 'ECONNREFUSED' })
  refused.close()
  // A TLS target that accepts TCP and never answers the ClientHello: the h2 session never connects.
  const sockets: Socket[] = []
  const silent = createNetServer(s => sockets.push(s))
  silent.listen(0, '127.0.0.1')
  await once(silent, 'listening')
  const origin = new H2Origin({ url: `https://127.0.0.1:${(silent.address() as AddressInfo).port}`, connectTimeoutMs: 200, log })
  t.teardown(() => { origin.close(); for (const s of sockets) s.destroy(); silent.close() })
  const started = Date.now()
  await t.rejects(origin.request({ method: 'GET', path: '/' }), { code: 'UND_ERR_CONNECT_TIMEOUT' })
  t.ok(Date.now() - started < 5000)
})

t.test('a target that stops answering: its busy session is PINGed, then destroyed, and the next request gets a new one', async t => {
  // A hand-made HTTP/2 target: it does the connection preface and the SETTINGS exchange, then reads
  // and answers nothing — no PING ACK, no response (a host gone without a FIN).
  const sockets: Socket[] = []
  const silent = createNetServer(s => {
    sockets.push(s)
    let greeted = false
    s.on('data', () => {
      if (greeted) return
      greeted = true
      s.write(Buffer.from('000000040000000000' + '000000040100000000', 'hex')) // SETTINGS, SETTINGS ACK
    })
    s.on('error', () => {})
  })
  silent.listen(0, '127.0.0.1')
  await once(silent, 'listening')
  const origin = new H2Origin({ url: `http://127.0.0.1:${(silent.address() as AddressInfo).port}`, connectTimeoutMs: 2000, log, ping: { intervalMs: 100, timeoutMs: 200 } })
  t.teardown(() => { origin.close(); for (const s of sockets) s.destroy(); silent.close() })
  const started = Date.now()
  await t.rejects(origin.request({ method: 'GET', path: '/' }), /PING|closed/, 'the request fails with its session')
  const took = Date.now() - started
  t.ok(took >= 200 && took < 3000, `after one interval and the PING timeout, not the request's own timeout (${took} ms)`)
  t.equal(sockets.length, 1)
  await t.rejects(origin.request({ method: 'GET', path: '/' }), /PING|closed/)
  t.equal(sockets.length, 2, 'the next request opened a new connection: the dead session was dropped')
})

t.test('a busy session whose target answers PINGs is kept', async t => {
  const server = createServer()
  server.on('stream', (stream: ServerHttp2Stream) => {
    setTimeout(() => { if (!stream.closed) { stream.respond({ ':status': 200 }); stream.end('late') } }, 800)
  })
  let sessions = 0
  server.on('session', () => { sessions++ })
  const url = await listen(server)
  const origin = new H2Origin({ url, connectTimeoutMs: 2000, log, ping: { intervalMs: 100, timeoutMs: 200 } })
  t.teardown(() => { origin.close(); server.close() })
  const res = await origin.request({ method: 'GET', path: '/' })
  t.equal(res.statusCode, 200, 'a slow answer (800 ms, past several PINGs) still arrives')
  const chunks: Buffer[] = []
  for await (const c of res.body) chunks.push(c as Buffer)
  t.equal(Buffer.concat(chunks).toString(), 'late')
  t.equal(sessions, 1)
})
