// End to end: gRPC through a real `keyedge proxy` (one worker) to real @grpc/grpc-js servers, over
// cleartext HTTP/2 with prior knowledge (h2c) and over TLS with ALPN h2, driven by a real grpc-js
// client: unary, server and bidirectional streaming with many messages, statuses and trailers
// passed back, deadlines (the client's and the proxy's own, mid-stream too), client cancellation
// reaching the target, a dead target answered UNAVAILABLE; and plain HTTP/2 requests (GET, an
// echoed POST) to an h2c pool with health checks over HTTP/2.
// The service is defined with grpc-js's generic client and server and string serializers: no .proto.
import { once } from 'node:events'
import { rmSync, readFileSync } from 'node:fs'
import { connect as h2connect, constants as h2constants, createServer as createH2Server, type ClientHttp2Session, type IncomingHttpHeaders, type ServerHttp2Session } from 'node:http2'
import type { AddressInfo } from 'node:net'
import * as grpc from '@grpc/grpc-js'
import t from 'tap'
import { validateConfig } from '../../src/config/index.js'
import { ConfigInvalidError } from '../../src/errors.js'
import { tempHome } from '../helpers/paths.js'
import { startProxy, startStack } from '../helpers/edge.js'
import { get, refusedUrl, selfSigned } from '../helpers/proxy-fixtures.js'
import { metric } from '../helpers/http-front.js'
import { until } from '../helpers/wait.js'

const home = tempHome('keyedge-grpc-')
// keyd, dev certificates and a proxy whose handshakes are signed by keyd (test/helpers/edge.ts).
const stack = await startStack()
const frontCa = readFileSync(stack.caFile, 'utf8')
// The TLS target's certificate: self-signed, so it is its own test CA, trusted by the proxy
// through NODE_EXTRA_CA_CERTS (as any https:// upstream's CA is).
const upstreamCa = selfSigned(home, 'upstream', ['127.0.0.1'])

const ser = (s: string): Buffer => Buffer.from(s, 'utf8')
const de = (b: Buffer): string => b.toString('utf8')
function method (path: string, requestStream: boolean, responseStream: boolean): grpc.MethodDefinition<string, string> {
  return { path, requestStream, responseStream, requestSerialize: ser, requestDeserialize: de, responseSerialize: ser, responseDeserialize: de }
}
function service (name: string): grpc.ServiceDefinition {
  return {
    Unary: method(`/${name}/Unary`, false, false),
    List: method(`/${name}/List`, false, true),
    Chat: method(`/${name}/Chat`, true, true),
    Quit: method(`/${name}/Quit`, true, true),
    Slow: method(`/${name}/Slow`, false, false),
    Forever: method(`/${name}/Forever`, false, true),
    Fail: method(`/${name}/Fail`, false, false)
  }
}

/** What the targets saw: calls cancelled (by RST_STREAM from the proxy), per method. */
const seen = { slowCancelled: 0, foreverCancelled: 0, slowStarted: 0, foreverStarted: 0 }

function handlers (tag: string): grpc.UntypedServiceImplementation {
  return {
    Unary: (call: grpc.ServerUnaryCall<string, string>, cb: grpc.sendUnaryData<string>) => {
      const trailer = new grpc.Metadata()
      trailer.set('x-served-by', tag)
      cb(null, `${tag}:${call.request}`, trailer)
    },
    List: (call: grpc.ServerWritableStream<string, string>) => {
      const n = Number(call.request)
      for (let i = 0; i < n; i++) call.write(`item-${i}`)
      call.end()
    },
    Chat: (call: grpc.ServerDuplexStream<string, string>) => {
      // Answers in order; `wait:N` makes this target slow: it answers that message N ms later.
      let answered = Promise.resolve()
      call.on('data', (m: string) => {
        const wait = /^wait:(\d+)$/.exec(m)
        answered = answered.then(async () => {
          if (wait !== null) await new Promise(resolve => setTimeout(resolve, Number(wait[1])))
          call.write(`echo:${m}`)
        })
      })
      call.on('end', () => { void answered.then(() => call.end()) })
    },
    Quit: (call: grpc.ServerDuplexStream<string, string>) => {
      // Ends the call at the first message, while the client still streams.
      call.once('data', (m: string) => {
        call.write(`bye:${m}`)
        const trailer = new grpc.Metadata()
        trailer.set('x-quit', 'early')
        call.end(trailer)
      })
    },
    Slow: (call: grpc.ServerUnaryCall<string, string>) => {
      // Never answers: only a cancellation ends it.
      seen.slowStarted++
      call.on('cancelled', () => { seen.slowCancelled++ })
    },
    Forever: (call: grpc.ServerWritableStream<string, string>) => {
      seen.foreverStarted++
      let i = 0
      const timer = setInterval(() => call.write(`tick-${i++}`), 20)
      call.on('cancelled', () => {
        clearInterval(timer)
        seen.foreverCancelled++
      })
    },
    Fail: (_call: grpc.ServerUnaryCall<string, string>, cb: grpc.sendUnaryData<string>) => {
      cb({ code: grpc.status.NOT_FOUND, details: 'no such thing: ünïcode 100%' })
    }
  }
}

async function grpcServer (creds: grpc.ServerCredentials, tag: string, names: string[]): Promise<{ server: grpc.Server, port: number }> {
  const server = new grpc.Server()
  for (const name of names) server.addService(service(name), handlers(tag))
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', creds, (err, p) => { if (err !== null) reject(err); else resolve(p) })
  })
  return { server, port }
}

const h2c = await grpcServer(grpc.ServerCredentials.createInsecure(), 'h2c', ['h2c.Echo', 'deadline.Echo'])
const tls = await grpcServer(grpc.ServerCredentials.createSsl(null, [{ private_key: readFileSync(upstreamCa.key), cert_chain: readFileSync(upstreamCa.cert) }], false), 'tls', ['tls.Echo'])

// A plain HTTP/2 (h2c) server for ordinary requests and health checks.
let healthChecks = 0
/** `/plain/hold` requests wait here until `holdUntil` of them arrived, so they are in flight together. */
const held: Array<() => void> = []
let holdUntil = Infinity
/** The proxy's sessions to this target: streams open on each now, and the most at once. */
const targetSessions = new Map<ServerHttp2Session, { open: number, max: number }>()
const plain = createH2Server((req, res) => {
  const counts = targetSessions.get(req.stream.session as ServerHttp2Session)
  if (counts !== undefined) {
    counts.open++
    counts.max = Math.max(counts.max, counts.open)
    req.stream.once('close', () => { counts.open-- })
  }
  if (req.url === '/plain/hold') {
    held.push(() => res.end('held'))
    if (held.length >= holdUntil) for (const release of held.splice(0)) release()
    return
  }
  if (req.url === '/healthz') {
    healthChecks++
    res.end('ok')
    return
  }
  if (req.url === '/plain/reset') {
    // Starts a response, then fails: RST_STREAM INTERNAL_ERROR mid-body.
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.write('partial', () => res.stream.close(h2constants.NGHTTP2_INTERNAL_ERROR))
    return
  }
  const chunks: Buffer[] = []
  req.on('data', (c: Buffer) => chunks.push(c))
  req.on('end', () => {
    const body = Buffer.concat(chunks)
    res.writeHead(200, { 'content-type': 'text/plain', 'x-upstream-http': req.httpVersion })
    res.end(req.method === 'POST' ? body : `hello over h2 ${req.url}`)
  })
})
plain.on('session', (session: ServerHttp2Session) => {
  targetSessions.set(session, { open: 0, max: 0 })
  session.once('close', () => targetSessions.delete(session))
})
plain.listen(0, '127.0.0.1')
await once(plain, 'listening')
const plainUrl = `http://127.0.0.1:${(plain.address() as AddressInfo).port}`
const dead = await refusedUrl()

// Read by the proxy processes at their start (this process only passes its environment on).
process.env.NODE_EXTRA_CA_CERTS = upstreamCa.cert
const proxy = await startProxy(stack, {
  admin: {},
  extra: {
    log: { level: 'info' },
    routes: [
      { pathPrefix: '/h2c.Echo/', upstream: `http://127.0.0.1:${h2c.port}`, upstreamProtocol: 'h2c', timeoutMs: 1000 },
      { pathPrefix: '/deadline.Echo/', upstream: `http://127.0.0.1:${h2c.port}`, upstreamProtocol: 'h2c' },
      { pathPrefix: '/tls.Echo/', upstream: `https://127.0.0.1:${tls.port}`, upstreamProtocol: 'h2' },
      { pathPrefix: '/dead.Echo/', upstream: dead, upstreamProtocol: 'h2c', retry: { attempts: 0 } },
      { pathPrefix: '/pool/', upstreams: [{ url: dead }, { url: plainUrl }], upstreamProtocol: 'h2c', outlier: { consecutiveFailures: 0 }, retry: { budgetPercent: 100 } },
      { pathPrefix: '/plain/', upstreams: [{ url: plainUrl }], upstreamProtocol: 'h2c', healthCheck: { path: '/healthz', intervalMs: 200, timeoutMs: 1000, unhealthyThreshold: 1, healthyThreshold: 1 } }
    ]
  }
})
const port = proxy.port
const adminPort = proxy.adminPort as number
const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createSsl(Buffer.from(frontCa)))
let raw: ClientHttp2Session | undefined
t.teardown(async () => {
  client.close()
  raw?.destroy()
  await proxy.stop('SIGKILL')
  await stack.stop()
  h2c.server.forceShutdown()
  tls.server.forceShutdown()
  plain.close()
  rmSync(home, { recursive: true, force: true })
})

/** The final status of a call (waits for 'status' only: a failed call also emits 'error'). */
async function statusOf (call: grpc.ClientReadableStream<string> | grpc.ClientDuplexStream<string, string>): Promise<grpc.StatusObject> {
  call.on('error', () => {})
  return await new Promise(resolve => call.once('status', resolve))
}

interface Unary { value?: string, err?: grpc.ServiceError, trailers?: grpc.Metadata }
async function unary (path: string, arg: string, options: grpc.CallOptions = {}): Promise<Unary> {
  return await new Promise(resolve => {
    let out: Unary = {}
    const call = client.makeUnaryRequest(path, ser, de, arg, new grpc.Metadata(), options, (err, value) => {
      out = err !== null ? { err } : { value }
    })
    call.on('status', (s: grpc.StatusObject) => resolve({ ...out, trailers: s.metadata }))
  })
}

t.test('unary: the answer and the trailers come back through the proxy (h2c target)', async t => {
  const r = await unary('/h2c.Echo/Unary', 'hello')
  t.equal(r.err, undefined)
  t.equal(r.value, 'h2c:hello')
  t.same(r.trailers?.get('x-served-by'), ['h2c'], 'a custom trailer reaches the client')
})

t.test('server streaming: 2000 messages in order', async t => {
  const call = client.makeServerStreamRequest('/h2c.Echo/List', ser, de, '2000', new grpc.Metadata(), {})
  const got: string[] = []
  call.on('data', (m: string) => got.push(m))
  const status = await statusOf(call)
  t.equal(status.code, grpc.status.OK)
  t.equal(got.length, 2000)
  t.ok(got.every((m, i) => m === `item-${i}`), 'in order')
})

t.test('bidirectional streaming: 1000 messages each way, interleaved', async t => {
  const call = client.makeBidiStreamRequest('/h2c.Echo/Chat', ser, de, new grpc.Metadata(), {})
  const got: string[] = []
  call.on('data', (m: string) => got.push(m))
  // The first answer arrives before the client finished sending: the streams really overlap.
  call.write('m-0')
  await until(() => got.length === 1, 10_000)
  t.equal(got[0], 'echo:m-0', 'answered while the request stream is still open')
  for (let i = 1; i < 1000; i++) call.write(`m-${i}`)
  call.end()
  const status = await statusOf(call)
  t.equal(status.code, grpc.status.OK)
  t.equal(got.length, 1000)
  t.ok(got.every((m, i) => m === `echo:m-${i}`), 'in order')
})

t.test('a target that ends a bidi call while the client still streams: the client gets the status and trailers', async t => {
  const call = client.makeBidiStreamRequest('/h2c.Echo/Quit', ser, de, new grpc.Metadata(), {})
  const got: string[] = []
  call.on('data', (m: string) => got.push(m))
  call.write('hi')
  const status = await statusOf(call)
  t.equal(status.code, grpc.status.OK, status.details)
  t.same(got, ['bye:hi'])
  t.same(status.metadata.get('x-quit'), ['early'])
  call.end()
})

t.test('an error status and its message reach the client (trailers-only response)', async t => {
  const r = await unary('/h2c.Echo/Fail', 'x')
  t.equal(r.err?.code, grpc.status.NOT_FOUND, r.err?.message ?? '')
  t.equal(r.err?.details, 'no such thing: ünïcode 100%')
})

t.test('TLS target with ALPN h2, trusted through a test CA', async t => {
  const r = await unary('/tls.Echo/Unary', 'secure')
  t.equal(r.err, undefined, r.err?.message ?? '')
  t.equal(r.value, 'tls:secure')
  const call = client.makeBidiStreamRequest('/tls.Echo/Chat', ser, de, new grpc.Metadata(), {})
  const got: string[] = []
  call.on('data', (m: string) => got.push(m))
  for (let i = 0; i < 200; i++) call.write(`t-${i}`)
  call.end()
  const status = await statusOf(call)
  t.equal(status.code, grpc.status.OK)
  t.equal(got.length, 200)
})

t.test('a dead target: UNAVAILABLE as a gRPC status, not a 502 page', async t => {
  const r = await unary('/dead.Echo/Unary', 'x')
  t.equal(r.err?.code, grpc.status.UNAVAILABLE, r.err?.message ?? '')
  t.match(r.err?.details, /upstream could not be reached/)
})

t.test('a deadline shorter than a slow handler: DEADLINE_EXCEEDED, and the target sees the call cancelled', async t => {
  const before = seen.slowCancelled
  const started = Date.now()
  const r = await unary('/deadline.Echo/Slow', 'x', { deadline: Date.now() + 300 })
  t.equal(r.err?.code, grpc.status.DEADLINE_EXCEEDED)
  t.ok(Date.now() - started < 5000, 'ends at its deadline, not at a timeout far later')
  t.ok(await until(() => seen.slowCancelled > before, 5000), 'the target saw RST_STREAM CANCEL')
})

t.test('the route\'s timeout does not cut a call within its grpc deadline, and applies without one', async t => {
  // The /h2c.Echo/ route has timeoutMs 1000; the target answers after 1500 ms.
  const within = client.makeBidiStreamRequest('/h2c.Echo/Chat', ser, de, new grpc.Metadata(), { deadline: Date.now() + 20_000 })
  const got: string[] = []
  within.on('data', (m: string) => got.push(m))
  within.on('error', () => {})
  within.write('wait:1500')
  within.end()
  const ok = await statusOf(within)
  t.equal(ok.code, grpc.status.OK, ok.details)
  t.same(got, ['echo:wait:1500'])
  const without = client.makeBidiStreamRequest('/h2c.Echo/Chat', ser, de, new grpc.Metadata(), {})
  without.on('data', () => {})
  without.on('error', () => {})
  without.write('wait:1500')
  without.end()
  const cut = await statusOf(without)
  t.equal(cut.code, grpc.status.UNAVAILABLE, 'no deadline: the route timeout (504) ends it, as UNAVAILABLE')
})

t.test('client cancellation reaches the target', async t => {
  const before = seen.foreverCancelled
  const call = client.makeServerStreamRequest('/h2c.Echo/Forever', ser, de, 'x', new grpc.Metadata(), {})
  let n = 0
  call.on('data', () => { n++ })
  call.on('error', () => {})
  t.ok(await until(() => n >= 3, 10_000), 'messages flow')
  call.cancel()
  const status = await statusOf(call)
  t.equal(status.code, grpc.status.CANCELLED)
  t.ok(await until(() => seen.foreverCancelled > before, 5000), 'the target saw the call cancelled')
})

/** One gRPC frame: flag byte, 4-byte length, message. */
function frame (message: string): Buffer {
  const body = Buffer.from(message)
  const head = Buffer.alloc(5)
  head.writeUInt32BE(body.length, 1)
  return Buffer.concat([head, body])
}

/** A call by a bare HTTP/2 client that never cancels on its own: only the proxy can end it at the deadline. */
async function rawCall (path: string, timeout: string): Promise<{ headers: IncomingHttpHeaders, trailers: IncomingHttpHeaders, bytes: number, ms: number }> {
  raw ??= h2connect(`https://127.0.0.1:${port}`, { ca: frontCa })
  const started = Date.now()
  const stream = raw.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers', 'grpc-timeout': timeout })
  stream.end(frame('x'))
  let headers: IncomingHttpHeaders = {}
  let trailers: IncomingHttpHeaders = {}
  let bytes = 0
  stream.on('response', h => { headers = h })
  stream.on('trailers', h => { trailers = h })
  stream.on('data', (c: Buffer) => { bytes += c.length })
  await once(stream, 'close')
  return { headers, trailers, bytes, ms: Date.now() - started }
}

t.test('the proxy enforces grpc-timeout itself: before the first message and mid-stream', async t => {
  const slowBefore = seen.slowCancelled
  const slow = await rawCall('/deadline.Echo/Slow', '300m')
  t.equal(slow.trailers['grpc-status'] ?? slow.headers['grpc-status'], '4', 'DEADLINE_EXCEEDED from the proxy')
  t.ok(slow.ms >= 290 && slow.ms < 5000, `ended at the deadline (${slow.ms} ms)`)
  t.ok(await until(() => seen.slowCancelled > slowBefore, 5000), 'the target saw the call cancelled')
  const foreverBefore = seen.foreverCancelled
  const forever = await rawCall('/deadline.Echo/Forever', '400m')
  t.ok(forever.bytes > 0, 'messages flowed before the deadline')
  t.equal(forever.headers['grpc-status'], undefined, 'the status is not in the headers…')
  t.equal(forever.trailers['grpc-status'], '4', '…but in the trailers: DEADLINE_EXCEEDED mid-stream')
  t.ok(await until(() => seen.foreverCancelled > foreverBefore, 5000), 'the target saw the call cancelled')
})

t.test('plain HTTP/2 upstream: GET and POST from HTTP/1.1 and HTTP/2 clients, health checks over h2', async t => {
  const r = await get(port, { ca: frontCa, path: '/plain/a?b=1', host: 'localhost' })
  t.equal(r.status, 200)
  t.equal(r.body.toString(), 'hello over h2 /plain/a?b=1')
  t.equal(r.headers['x-upstream-http'], '2.0', 'the target was spoken to in HTTP/2')
  raw ??= h2connect(`https://127.0.0.1:${port}`, { ca: frontCa })
  const payload = Buffer.alloc(3 * 1024 * 1024, 'k')
  const stream = raw.request({ ':method': 'POST', ':path': '/plain/echo', 'content-type': 'application/octet-stream' })
  stream.end(payload)
  const chunks: Buffer[] = []
  let status = 0
  stream.on('response', h => { status = Number(h[':status']) })
  stream.on('data', (c: Buffer) => chunks.push(c))
  await once(stream, 'end')
  t.equal(status, 200)
  t.ok(Buffer.concat(chunks).equals(payload), '3 MB echoed intact')
  const cut = raw.request({ ':method': 'GET', ':path': '/plain/reset' })
  cut.end()
  cut.on('data', () => {})
  cut.on('error', () => {})
  // Not once(): a reset with an error code emits 'error' first, which once() would reject with.
  await new Promise(resolve => cut.once('close', resolve))
  t.equal(cut.rstCode, h2constants.NGHTTP2_INTERNAL_ERROR, 'a target that fails mid-body: the client\'s stream is reset with INTERNAL_ERROR, not ended as if complete')
  t.ok(await until(() => healthChecks >= 2, 5000), 'health checks reach the target over HTTP/2')
  const text = await new Promise<string>((resolve, reject) => {
    void import('node:http').then(({ get: httpGet }) => httpGet({ host: '127.0.0.1', port: adminPort, path: '/metrics' }, res => {
      let s = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { s += c })
      res.on('end', () => resolve(s))
    }).on('error', reject))
  })
  t.equal(metric(text, 'edge_upstream_healthy', { route: '*/plain/', target: plainUrl }), 1)
  t.ok(metric(text, 'edge_upstream_requests_total', { route: '*/plain/', target: plainUrl }) >= 2, 'per-target metrics count h2 requests')
  t.ok(metric(text, 'edge_upstream_errors_total', { route: '*/dead.Echo/', target: dead, kind: 'connect' }) >= 1, 'the dead target\'s failure is counted')
})

/** A GET through the proxy over HTTP/2: status and body. */
async function h2get (path: string): Promise<{ status: number, body: string }> {
  raw ??= h2connect(`https://127.0.0.1:${port}`, { ca: frontCa })
  const stream = raw.request({ ':method': 'GET', ':path': path })
  stream.end()
  let status = 0
  let body = ''
  stream.setEncoding('utf8')
  stream.on('response', h => { status = Number(h[':status']) })
  stream.on('data', (c: string) => { body += c })
  await once(stream, 'close')
  return { status, body }
}

t.test('sessions: more streams than one session takes open a second one (at most 100 streams each)', async t => {
  const n = 120
  holdUntil = n
  const replies = await Promise.all(Array.from({ length: n }, async () => await h2get('/plain/hold')))
  holdUntil = Infinity
  t.ok(replies.every(r => r.status === 200 && r.body === 'held'), `${n} requests in flight at once all answered`)
  const sessions = [...targetSessions.values()]
  t.ok(sessions.length >= 2 && sessions.length <= 4, `the target saw ${sessions.length} sessions (2 to 4)`)
  t.ok(sessions.every(c => c.max <= 100), `no session carried more than 100 streams (${sessions.map(c => c.max).join(', ')})`)
})

t.test('a session ended by the target (GOAWAY) is replaced by a new one', async t => {
  t.equal((await h2get('/plain/before')).status, 200)
  const old = [...targetSessions.keys()]
  for (const session of old) session.close()
  t.ok(await until(() => old.every(s => !targetSessions.has(s)), 5000), 'the target closed its sessions')
  const after = await h2get('/plain/after')
  t.equal(after.status, 200)
  t.equal(after.body, 'hello over h2 /plain/after')
  t.ok(targetSessions.size >= 1, 'on a new session')
})

t.test('an h2c pool with a dead target: requests are retried on the live one', async t => {
  for (let i = 0; i < 4; i++) {
    const r = await h2get(`/pool/${i}`)
    t.equal(r.status, 200)
    t.equal(r.body, `hello over h2 /pool/${i}`)
  }
})

t.test('the worker lived through it all', async t => {
  t.notOk(proxy.lines.some(l => l.includes('worker died')), 'no worker died')
  t.notOk(proxy.lines.some(l => /uncaught|unhandled/i.test(l)), 'no uncaught error')
})

t.test('config: h2c needs http:// targets, h2 needs https://, with field paths; old names get hints', async t => {
  const problems = (routes: unknown[]): string[] => {
    try {
      validateConfig({ certificates: [{ name: 'a', serverNames: ['a.test'], files: [{ cert: 'a.crt', key: 'a.keyref' }] }], routes }, { baseDir: '/etc/keyedge' })
    } catch (err) {
      if (err instanceof ConfigInvalidError) return err.problems
      throw err
    }
    return []
  }
  t.same(problems([{ upstream: 'http://127.0.0.1:1', upstreamProtocol: 'h2c' }]), [])
  t.same(problems([{ upstreams: [{ url: 'https://a.test' }], upstreamProtocol: 'h2' }]), [])
  t.match(problems([{ upstream: 'https://127.0.0.1:1', upstreamProtocol: 'h2c' }]).join('\n'), /routes\[0\]\.upstream.*h2c.*http:\/\//)
  t.match(problems([{ upstreams: [{ url: 'https://a.test' }, { url: 'http://b.test' }], upstreamProtocol: 'h2' }]).join('\n'), /routes\[0\]\.upstreams\[1\]\.url.*h2.*https:\/\//)
  t.match(problems([{ upstream: 'http://127.0.0.1:1', upstreamProtocol: 'http3' }]).join('\n'), /routes\[0\]\.upstreamProtocol/)
  t.match(problems([{ upstream: 'http://127.0.0.1:1', http2: true }]).join('\n'), /upstreamProtocol/)
})
