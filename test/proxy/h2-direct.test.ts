// End to end: the direct HTTP/2 path (src/proxy/h2-direct.ts) of a real `keyedge proxy` (one worker)
// in front of real upstreams, with real clients (Node's http2 client, curl --http2, h2load). What
// the compatibility path did, it does: the answer and its headers, HEAD, duplicate headers, request
// ids, retries on a refused target and on a `retryOn` status, 502/503/504, trailers of a chunked
// answer, a client reset cancelling the upstream request, the access-log line and the outcome
// metrics, request bodies (413 past the route's limit), Expect: 100-continue. Requests it does not
// take (gRPC, CONNECT, other expectations, HTTP/2 upstreams) still go through the compatibility layer.
import { execFile } from 'node:child_process'
import { once } from 'node:events'
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { ClientHttp2Session, IncomingHttpHeaders } from 'node:http2'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { adminMetrics, h2Open, metric, tlsOpen, untilClosed } from '../helpers/http-front.js'
import { tempHome } from '../helpers/paths.js'
import { spawnCli } from '../helpers/processes.js'
import { get, refusedUrl, selfSigned } from '../helpers/proxy-fixtures.js'
import { until, within } from '../helpers/wait.js'

const home = tempHome('keyedge-h2-direct-')
const cert = selfSigned(home, 'localhost', ['localhost', '127.0.0.1'])

/** Upstream requests seen, by path, with when their response closed. */
const seen = new Map<string, { req: IncomingMessage, res: ServerResponse, closed: Promise<void> }>()

async function upstream (name: string, handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ server: Server, url: string }> {
  const server = createServer((req, res) => {
    seen.set(`${name}${req.url ?? ''}`, { req, res, closed: once(res, 'close').then(() => {}) })
    req.resume()
    handler(req, res)
  })
  server.keepAliveTimeout = 60_000
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }
}

const echo = (name: string) => (req: IncomingMessage, res: ServerResponse): void => {
  if (req.url === '/hold') {
    // Half a body, the rest never: the client has to go away.
    res.writeHead(200, { 'content-length': 1 << 20 })
    res.write(Buffer.alloc(64 * 1024, 'h'))
    return
  }
  if (req.url === '/trailers') {
    res.writeHead(200, { 'content-type': 'text/plain', trailer: 'x-checksum' })
    res.write('part one, ')
    res.addTrailers({ 'x-checksum': 'abc123' })
    res.end('part two')
    return
  }
  if (req.url === '/later') {
    setTimeout(() => { if (!res.destroyed) res.end('late answer') }, 300).unref()
    return
  }
  if (req.url?.endsWith('/slow') === true) {
    setTimeout(() => { if (!res.destroyed) res.end('late') }, 5000).unref()
    return
  }
  const body = JSON.stringify({ name, method: req.method, url: req.url, headers: req.headers })
  res.setHeader('set-cookie', ['a=1', 'b=2'])
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), connection: 'keep-alive', 'keep-alive': 'timeout=60' })
  res.end(req.method === 'HEAD' ? undefined : body)
}

const good = await upstream('good', echo('good'))
const sick = await upstream('sick', (_req, res) => { res.writeHead(503, { 'content-length': 4 }); res.end('sick') })
const refused = await refusedUrl()
const refused2 = await refusedUrl()

const logFile = join(home, 'access.log')
const file = join(home, 'proxy.json')
writeFileSync(file, JSON.stringify({
  listen: { host: '127.0.0.1', port: 0 },
  workers: 1,
  certificates: [{ name: 'localhost', serverNames: ['localhost', '127.0.0.1'], files: [{ cert: cert.cert, key: cert.key }] }],
  routes: [
    // Round-robin starts on the first target: the refused or sick one is tried first.
    { pathPrefix: '/refused-then-good', upstreams: [{ url: refused }, { url: good.url }], retry: { budgetPercent: 100 } },
    { pathPrefix: '/sick-then-good', upstreams: [{ url: sick.url }, { url: good.url }], outlier: { consecutiveFailures: 0 }, retry: { retryOn: [503], budgetPercent: 100 } },
    { pathPrefix: '/refused', upstreams: [{ url: refused }, { url: refused2 }], retry: { attempts: 0 } },
    { pathPrefix: '/timeout', upstream: good.url, timeoutMs: 300 },
    { pathPrefix: '/small', upstream: good.url, maxBodyBytes: 1024 },
    { pathPrefix: '/', upstream: good.url }
  ],
  accessLog: { path: logFile },
  admin: { port: 0, drainDelayMs: 0 },
  log: { level: 'info' }
}))
const proxy = spawnCli(['proxy', '--config', file])
t.teardown(async () => {
  await proxy.stop('SIGKILL')
  for (const s of [good, sick]) {
    s.server.closeAllConnections()
    s.server.close()
  }
  rmSync(home, { recursive: true, force: true })
})
const port = (await proxy.waitFor(o => o.msg === 'proxy listening', 30_000)).port as number
const adminPort = (await proxy.waitFor(o => o.msg === 'admin listening', 10_000)).port as number
const metrics = async (): Promise<string> => await adminMetrics(adminPort)
const session: ClientHttp2Session = await h2Open(port, cert.certPem)
t.teardown(() => session.destroy())

interface Answer { headers: IncomingHttpHeaders, body: Buffer, trailers: IncomingHttpHeaders | undefined }

async function request (path: string, method = 'GET', body?: string): Promise<Answer> {
  const stream = session.request({ ':path': path, ':method': method, ':authority': 'localhost' }, { endStream: body === undefined })
  if (body !== undefined) stream.end(body)
  let trailers: IncomingHttpHeaders | undefined
  stream.on('trailers', (h: IncomingHttpHeaders) => { trailers = h })
  const [headers] = await within(once(stream, 'response'), 15_000, `the answer to ${path}`) as [IncomingHttpHeaders]
  const chunks: Buffer[] = []
  stream.on('data', (c: Buffer) => chunks.push(c))
  await within(once(stream, 'end'), 15_000, `the end of ${path}`)
  return { headers, body: Buffer.concat(chunks), trailers }
}

const json = (a: Answer): Record<string, any> => JSON.parse(a.body.toString()) as Record<string, any>
const logLines = (): Array<Record<string, any>> => existsSync(logFile)
  ? readFileSync(logFile, 'utf8').split('\n').filter(l => l !== '').map(l => JSON.parse(l) as Record<string, any>)
  : []
async function logLine (id: string): Promise<Record<string, any> | undefined> {
  await until(() => logLines().some(l => l.requestId === id), 10_000)
  return logLines().find(l => l.requestId === id)
}

t.test('a GET: the answer, its headers cleaned of hop-by-hop ones, the request id both ways', async t => {
  const before = metric(await metrics(), 'edge_proxy_requests_total', { outcome: 'forwarded' })
  const a = await request('/hello?x=1')
  t.equal(a.headers[':status'], 200)
  const got = json(a)
  t.equal(got.name, 'good')
  t.equal(got.url, '/hello?x=1')
  t.equal(got.headers.host, 'localhost', 'the authority becomes Host')
  t.equal(got.headers['x-forwarded-proto'], 'https')
  t.equal(got.headers['x-forwarded-for'], '127.0.0.1')
  t.equal(got.headers['x-request-id'], a.headers['x-request-id'], 'the same request id upstream and back')
  t.match(a.headers['x-request-id'], /^[0-9a-f-]{36}$/)
  t.same(a.headers['set-cookie'], ['a=1', 'b=2'], 'a repeated header stays repeated')
  t.equal(a.headers['keep-alive'], undefined, 'hop-by-hop headers are dropped')
  t.equal(a.headers.connection, undefined)
  t.ok(typeof a.headers.date === 'string', 'a date')
  const line = await logLine(a.headers['x-request-id'] as string)
  t.match(line, { method: 'GET', host: 'localhost', path: '/hello', status: 200, complete: true, bytesIn: 0, bytesOut: a.body.length, upstream: good.url, alpn: 'h2', client: '127.0.0.1' })
  t.ok(typeof line?.upstreamFirstByteMs === 'number' && typeof line?.totalMs === 'number', 'upstream and total times')
  t.ok(await until(async () => metric(await metrics(), 'edge_proxy_requests_total', { outcome: 'forwarded' }) === before + 1, 5000), 'counted forwarded once')
})

t.test('HEAD: headers only', async t => {
  const a = await request('/head', 'HEAD')
  t.equal(a.headers[':status'], 200)
  t.equal(a.body.length, 0)
  t.ok(Number(a.headers['content-length']) > 0, 'the length of the body a GET would get')
})

t.test('a refused target is retried on the next one; a 503 in retryOn too', async t => {
  const a = await request('/refused-then-good/x')
  t.equal(a.headers[':status'], 200)
  t.equal(json(a).name, 'good')
  for (let i = 0; i < 4; i++) {
    const b = await request('/sick-then-good/y')
    t.equal(b.headers[':status'], 200, 'never the 503')
    t.equal(json(b).name, 'good')
  }
  const text = await metrics()
  t.ok(metric(text, 'edge_upstream_retries_total', { route: '*/refused-then-good', result: 'sent' }) >= 1)
  t.ok(metric(text, 'edge_upstream_retries_total', { route: '*/sick-then-good', result: 'sent' }) >= 2)
  t.ok(metric(text, 'edge_upstream_errors_total', { route: '*/sick-then-good', target: sick.url, kind: 'status_5xx' }) >= 2)
})

t.test('a refused target without retries: 502, the log names it; a slow one: 504', async t => {
  const a = await request('/refused/z')
  t.equal(a.headers[':status'], 502)
  t.equal(json(a).error, 'bad_gateway')
  t.match(a.headers['x-request-id'], /^[0-9a-f-]{36}$/)
  const logged = await proxy.waitFor(o => o.msg === 'upstream request failed' && o.upstream === refused, 5000)
  t.equal(logged.code, 'ECONNREFUSED')
  const line = await logLine(a.headers['x-request-id'] as string)
  t.match(line, { status: 502, bytesOut: a.body.length })
  const b = await request('/timeout/slow')
  t.equal(b.headers[':status'], 504)
  t.equal(json(b).error, 'gateway_timeout')
  const text = await metrics()
  t.ok(metric(text, 'edge_proxy_requests_total', { outcome: 'bad_gateway' }) >= 1)
  t.ok(metric(text, 'edge_proxy_requests_total', { outcome: 'gateway_timeout' }) >= 1)
})

t.test('the trailers of a chunked answer reach the client', async t => {
  const a = await request('/trailers')
  t.equal(a.headers[':status'], 200)
  t.equal(a.body.toString(), 'part one, part two')
  t.equal(a.trailers?.['x-checksum'], 'abc123')
})

t.test('a client that resets mid-body: the upstream response is cancelled, counted aborted', async t => {
  const before = metric(await metrics(), 'edge_proxy_requests_total', { outcome: 'aborted' })
  const stream = session.request({ ':path': '/hold', ':authority': 'localhost' })
  stream.on('error', () => {})
  await within(once(stream, 'data'), 15_000, 'the first bytes')
  stream.close()
  const held = seen.get('good/hold')
  t.ok(held !== undefined, 'the upstream saw the request')
  await within(held?.closed ?? Promise.resolve(), 10_000, 'the upstream response cancelled')
  t.notOk(held?.res.writableFinished, 'cut before its end')
  t.ok(await until(async () => metric(await metrics(), 'edge_proxy_requests_total', { outcome: 'aborted' }) === before + 1, 5000), 'counted aborted')
})

t.test('a request body is streamed upstream; past the route\'s maxBodyBytes: 413', async t => {
  const a = await request('/post', 'POST', 'payload')
  t.equal(a.headers[':status'], 200)
  t.match(json(a), { name: 'good', method: 'POST', url: '/post' })
  t.equal(json(a).headers['content-length'], undefined, 'streamed (HTTP/2 gives no length)')
  t.match(await logLine(a.headers['x-request-id'] as string), { method: 'POST', status: 200, bytesIn: 7 })
  const big = await request('/small/upload', 'POST', 'x'.repeat(64 * 1024))
  t.equal(big.headers[':status'], 413)
  t.equal(json(big).error, 'too_large')
  t.ok(metric(await metrics(), 'edge_proxy_requests_total', { outcome: 'too_large' }) >= 1)
})

t.test('Expect: 100-continue: the 100 comes at once, then the body goes upstream without the header; another expectation: 417', async t => {
  const stream = session.request({ ':path': '/post', ':method': 'POST', ':authority': 'localhost', expect: '100-continue' }, { endStream: false })
  const response = once(stream, 'response')
  await within(once(stream, 'continue'), 15_000, 'the 100 (Continue)')
  stream.end('after continue')
  const [headers] = await within(response, 15_000, 'the answer') as [IncomingHttpHeaders]
  const chunks: Buffer[] = []
  stream.on('data', (c: Buffer) => chunks.push(c))
  await within(once(stream, 'end'), 15_000, 'the end of the answer')
  t.equal(headers[':status'], 200)
  const up = JSON.parse(Buffer.concat(chunks).toString()) as Record<string, any>
  t.match(up, { name: 'good', method: 'POST', url: '/post' })
  t.equal(up.headers.expect, undefined, 'no Expect upstream')
  t.match(await logLine(headers['x-request-id'] as string), { method: 'POST', status: 200, bytesIn: 'after continue'.length, complete: true })
  const other = await new Promise<IncomingHttpHeaders>((resolve, reject) => {
    const s = session.request({ ':path': '/post', ':method': 'POST', ':authority': 'localhost', expect: 'something-else' }, { endStream: false })
    s.once('response', resolve)
    s.once('error', reject)
    s.resume()
  })
  t.equal(other[':status'], 417, 'an expectation the proxy cannot meet')
})

t.test('HTTP/1.1 on its direct path: a body streamed upstream; a chunked one past maxBodyBytes: 413 and the connection closed', async t => {
  const post = await get(port, { ca: cert.certPem, path: '/post-h1', method: 'POST', body: 'h1 payload' })
  t.equal(post.status, 200)
  t.match(JSON.parse(post.body.toString()), { name: 'good', method: 'POST', url: '/post-h1' })
  t.match(await logLine(post.headers['x-request-id'] as string), { method: 'POST', status: 200, bytesIn: 10 })
  const socket = await tlsOpen(port, cert.certPem)
  const chunk = 'y'.repeat(16 * 1024)
  socket.write('POST /small/h1 HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\n\r\n')
  for (let i = 0; i < 4; i++) socket.write(`${chunk.length.toString(16)}\r\n${chunk}\r\n`)
  socket.write('0\r\n\r\n')
  const got = await untilClosed(socket, 15_000)
  t.match(got.data, /^HTTP\/1\.1 413 /)
  t.match(got.data, /"error":"too_large"/)
  t.ok(got.closed, 'the connection is closed')
})

t.test('a gRPC call is not taken: its failure still comes as a gRPC status (UNAVAILABLE), not a JSON 502', async t => {
  const stream = session.request({ ':path': '/refused/pkg.Svc/Call', ':method': 'POST', ':authority': 'localhost', 'content-type': 'application/grpc', te: 'trailers' })
  stream.end()
  stream.resume()
  const [headers] = await within(once(stream, 'response'), 15_000, 'the answer') as [IncomingHttpHeaders]
  await within(once(stream, 'close'), 15_000, 'the end')
  t.equal(headers[':status'], 200)
  t.equal(headers['grpc-status'], '14')
  t.equal(headers['content-type'], 'application/grpc')
})

t.test('curl --http2 and h2load: every request answered', async t => {
  // Not execFileSync: the upstream answers from this process.
  const run = promisify(execFile)
  const { stdout: out } = await run('curl', ['-sS', '--http2', '--cacert', cert.cert, '--resolve', `localhost:${port}:127.0.0.1`, '-o', '/dev/null', '-w', '%{http_version} %{http_code}', `https://localhost:${port}/curl`], { timeout: 30_000 })
  t.equal(out, '2 200')
  const before = metric(await metrics(), 'edge_proxy_requests_total', { outcome: 'forwarded' })
  const { stdout: report } = await run('h2load', ['-n', '2000', '-c', '4', '-m', '16', `https://127.0.0.1:${port}/load`], { timeout: 60_000 })
  t.match(report, /2000 succeeded, 0 failed/)
  t.match(report, /status codes: 2000 2xx/)
  t.ok(await until(async () => metric(await metrics(), 'edge_proxy_requests_total', { outcome: 'forwarded' }) === before + 2000, 10_000), 'each counted forwarded once')
})

t.test('SIGTERM: a request in flight on the direct path is answered whole, then the proxy exits 0', async t => {
  const answer = request('/later')
  t.ok(await until(() => seen.has('good/later'), 10_000), 'the upstream has the request')
  proxy.proc.kill('SIGTERM')
  const t0 = Date.now()
  const a = await answer
  t.comment(`answered after ${Date.now() - t0} ms`)
  t.equal(a.headers[':status'], 200)
  t.equal(a.body.toString(), 'late answer')
  const { code } = await within(proxy.exited, 20_000, 'the proxy to exit')
  t.comment(`exited after ${Date.now() - t0} ms`)
  t.equal(code, 0)
})
