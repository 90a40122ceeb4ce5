// End to end: a real `keyedge proxy` process (2 workers) in front of the demo upstream and tagged
// upstreams, with test-time self-signed certificates (plain in-process keys, no keyd).
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { rmSync, writeFileSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { connect as http2Connect } from 'node:http2'
import { request as httpsRequest } from 'node:https'
import { join } from 'node:path'
import { connect as tlsConnect } from 'node:tls'
import t from 'tap'
import { startDemoUpstream } from '../../src/proxy/demo-upstream.js'
import { tempHome } from '../helpers/paths.js'
import { spawnCli } from '../helpers/processes.js'
import { get, refusedUrl, selfSigned, taggedUpstream } from '../helpers/proxy-fixtures.js'

const home = tempHome('keyedge-proxy-')
const localEc = selfSigned(home, 'localhost-ec', ['localhost', '*.localhost', '127.0.0.1'])
const localRsa = selfSigned(home, 'localhost-rsa', ['localhost', '*.localhost', '127.0.0.1'], 'rsa')
const example = selfSigned(home, 'example', ['example.test', '*.example.test'])
const ca = [localEc.certPem, localRsa.certPem, example.certPem]

const demo = await startDemoUpstream({ host: '127.0.0.1', port: 0 })
const tagA = await taggedUpstream('A')
const tagB = await taggedUpstream('B')
const down = await refusedUrl()
const configFile = join(home, 'proxy.json')
writeFileSync(configFile, JSON.stringify({
  listen: { host: '127.0.0.1', port: 0 },
  workers: 2,
  tls: { defaultCertificate: 'localhost' },
  certificates: [
    { name: 'localhost', serverNames: ['localhost', '*.localhost', '127.0.0.1'], files: [
      { cert: 'localhost-ec.crt', key: 'localhost-ec.key' }, { cert: 'localhost-rsa.crt', key: 'localhost-rsa.key' }] },
    { name: 'example', serverNames: ['example.test', '*.example.test'], files: [{ cert: 'example.crt', key: 'example.key' }] }
  ],
  routes: [
    { host: 'localhost', pathPrefix: '/', upstream: demo.url },
    { host: 'localhost', pathPrefix: '/tag', upstream: tagA.url },
    { host: 'localhost', pathPrefix: '/down', upstream: down },
    { host: 'localhost', pathPrefix: '/slow', upstream: demo.url, timeoutMs: 300 },
    { host: '*.example.test', pathPrefix: '/', upstream: tagB.url },
    { host: 'api.example.test', pathPrefix: '/v1', upstream: tagA.url }
  ],
  trustedProxies: ['127.0.0.2/32', '::1'],
  log: { level: 'info' }
}))

const proxy = spawnCli(['proxy', '--config', configFile])
t.teardown(async () => {
  await proxy.stop('SIGKILL')
  await Promise.all([demo.close(), tagA.close(), tagB.close()])
  rmSync(home, { recursive: true, force: true })
})
const ready = await proxy.waitFor(o => o.msg === 'proxy listening')
const port = ready.port as number
t.equal(ready.workers, 2, 'the primary announces once every worker listens')
t.ok(proxy.lines.some(l => l.includes('KEY CUSTODY BYPASSED')), 'plain private keys are loudly flagged')

const json = (body: Buffer): Record<string, any> => JSON.parse(body.toString())

t.test('GET reaches the demo upstream', async t => {
  const res = await get(port, { ca, host: `localhost:${port}` })
  t.equal(res.status, 200)
  t.match(res.body.toString(), /keyedge demo upstream/)
  t.match(res.body.toString(), /x-forwarded-proto: https/)
})

t.test('a large POST streams both ways (the echo starts before the upload ends)', async t => {
  const chunk = randomBytes(64 * 1024)
  const rest = randomBytes(8 * 1024 * 1024)
  const sent = createHash('sha256').update(chunk).update(rest).digest('hex')
  const req = httpsRequest({
    host: '127.0.0.1', port, method: 'POST', path: '/echo', servername: 'localhost', ca, agent: false,
    headers: { host: 'localhost', 'content-type': 'application/octet-stream', 'transfer-encoding': 'chunked' }
  })
  req.write(chunk)
  const [res] = await once(req, 'response') as [IncomingMessage]
  t.equal(res.statusCode, 200)
  const hash = createHash('sha256')
  let received = 0
  res.on('data', (c: Buffer) => { hash.update(c); received += c.length })
  while (received < chunk.length) await once(res, 'data')
  t.pass('the first echoed bytes came back while the upload was still open')
  req.end(rest)
  await once(res, 'end')
  t.equal(received, chunk.length + rest.length)
  t.equal(hash.digest('hex'), sent)
})

t.test('hop-by-hop headers are removed both ways', async t => {
  const res = await get(port, {
    ca,
    path: '/headers',
    headers: { connection: 'keep-alive, x-hop', 'x-hop': '1', 'keep-alive': 'timeout=5', te: 'trailers', 'proxy-authorization': 'Basic eA==', 'x-kept': '1' }
  })
  const seen = json(res.body).headers as Record<string, string>
  t.equal(seen['x-kept'], '1')
  for (const h of ['x-hop', 'keep-alive', 'te', 'proxy-authorization']) t.notOk(h in seen, `${h} not forwarded`)
  const back = await get(port, { ca, path: '/tag' })
  t.equal(back.headers['x-resp-keep'], '1')
  t.notOk('x-resp-hop' in back.headers, 'a header named by the upstream\'s Connection is dropped')
  t.notOk('proxy-authenticate' in back.headers)
  t.not(back.headers['keep-alive'], 'timeout=9', 'the upstream\'s Keep-Alive is not passed on')
})

t.test('X-Forwarded-* are set, and believed only from trusted peers', async t => {
  const forged = { 'x-forwarded-for': '203.0.113.7', 'x-forwarded-proto': 'http', 'x-forwarded-host': 'evil.test' }
  const untrusted = json((await get(port, { ca, path: '/headers', host: `localhost:${port}`, headers: forged })).body).headers
  t.equal(untrusted['x-forwarded-for'], '127.0.0.1')
  t.equal(untrusted['x-forwarded-proto'], 'https')
  t.equal(untrusted['x-forwarded-host'], `localhost:${port}`)
  t.equal(untrusted.host, `localhost:${port}`, 'the client\'s Host is kept')
  const trusted = json((await get(port, { ca, path: '/headers', headers: forged, localAddress: '127.0.0.2' })).body).headers
  t.equal(trusted['x-forwarded-for'], '203.0.113.7, 127.0.0.2')
  t.equal(trusted['x-forwarded-proto'], 'http')
  t.equal(trusted['x-forwarded-host'], 'evil.test')
})

t.test('routing by host, then longest path prefix; 404 without a route', async t => {
  t.equal(json((await get(port, { ca, host: 'api.example.test', path: '/v1/users' })).body).name, 'A')
  t.equal(json((await get(port, { ca, host: 'api.example.test', path: '/v2' })).body).name, 'B', 'falls back to the wildcard host')
  t.equal(json((await get(port, { ca, host: 'www.example.test', path: '/' })).body).name, 'B')
  t.equal(json((await get(port, { ca, path: '/tag/x?y=1' })).body).url, '/tag/x?y=1')
  const none = await get(port, { ca, host: 'other.example.org', servername: 'localhost' })
  t.equal(none.status, 404)
  t.equal(none.headers['content-type'], 'application/json')
  t.equal(json(none.body).error, 'no_route')
})

t.test('SNI picks the certificate; one context serves ECDSA or RSA by client capability', async t => {
  const peer = async (servername: string, sigalgs?: string): Promise<string> => {
    const socket = tlsConnect({
      host: '127.0.0.1', port, servername, ca, ALPNProtocols: ['http/1.1'], checkServerIdentity: () => undefined,
      ...(sigalgs !== undefined ? { sigalgs } : {})
    })
    await once(socket, 'secureConnect')
    const cert = socket.getPeerCertificate()
    socket.destroy()
    return `${String(cert.subject.CN)} ${cert.bits === 2048 ? 'rsa' : 'ec'}`
  }
  t.equal(await peer('api.example.test'), 'example.test ec')
  t.equal(await peer('localhost'), 'localhost ec')
  t.equal(await peer('localhost', 'rsa_pss_rsae_sha256:rsa_pkcs1_sha256'), 'localhost rsa')
  t.equal(await peer('unknown.test'), 'localhost ec', 'unknown names get the default certificate')
  t.equal(await peer(''), 'localhost ec', 'so do clients that send no SNI')
})

t.test('502 when the upstream refuses, 504 when it is too slow', async t => {
  const refused = await get(port, { ca, path: '/down' })
  t.equal(refused.status, 502)
  t.equal(json(refused.body).error, 'bad_gateway')
  // The upstream's side of the request, to tell which timeout answered (not how long it took).
  let upstreamReply: ServerResponse | undefined
  const onRequest = (req: IncomingMessage, res: ServerResponse): void => { if (req.url?.startsWith('/slow') === true) upstreamReply = res }
  demo.server.on('request', onRequest)
  t.teardown(() => demo.server.off('request', onRequest))
  const slow = await get(port, { ca, path: '/slow?ms=20000' })
  t.equal(slow.status, 504)
  t.equal(json(slow.body).error, 'gateway_timeout')
  t.ok(upstreamReply !== undefined && !upstreamReply.writableFinished, 'answered on the route\'s timeout: the upstream had the request and had not answered yet')
})

t.test('HTTP/2 clients: :authority becomes Host, bodies stream', async t => {
  const session = http2Connect(`https://localhost:${port}`, {
    createConnection: () => tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ca, ALPNProtocols: ['h2'] })
  })
  t.teardown(() => session.close())
  await once(session, 'connect')
  t.equal(session.alpnProtocol, 'h2')
  const request = async (headers: Record<string, string>, body?: Buffer): Promise<{ status: number, body: Buffer }> => {
    const stream = session.request(headers, { endStream: body === undefined })
    if (body !== undefined) stream.end(body)
    const [h] = await once(stream, 'response') as [Record<string, string | number>]
    const chunks: Buffer[] = []
    stream.on('data', (c: Buffer) => chunks.push(c))
    await once(stream, 'end')
    return { status: h[':status'] as number, body: Buffer.concat(chunks) }
  }
  const got = await request({ ':path': '/headers' })
  t.equal(got.status, 200)
  const seen = json(got.body).headers
  t.equal(seen.host, `localhost:${port}`)
  t.equal(seen['x-forwarded-host'], `localhost:${port}`)
  t.equal(seen['x-forwarded-proto'], 'https')
  const payload = randomBytes(1024 * 1024)
  const echoed = await request({ ':path': '/echo', ':method': 'POST' }, payload)
  t.ok(echoed.body.equals(payload), 'echoed over HTTP/2')
  t.equal((await request({ ':path': '/status/418' })).status, 418)
})

t.test('SIGTERM stops the workers gracefully and exits 0', async t => {
  proxy.proc.kill('SIGTERM')
  const { code } = await proxy.exited
  t.equal(code, 0)
  t.ok(proxy.lines.some(l => l.includes('"proxy stopped"')))
})
