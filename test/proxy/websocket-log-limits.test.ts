// End to end: the access-log line and the route limits of WebSockets, through a real `keyedge proxy`
// (one worker) to a real WebSocket upstream (handshake checked, frames echoed). Over HTTP/1.1 the
// client is undici's WebSocket (the WHATWG client Node ships); over HTTP/2 an extended CONNECT
// (RFC 8441) on a node:http2 session. One line per WebSocket when it ends (status 101 / 200, bytes
// each way, route, upstream, times), one per refusal (its status), complete false when the proxy
// cut it (idle timeout, shutdown); webSocketsPerClient and the route's request rate refuse with 429.
import { once } from 'node:events'
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { connect as h2connect, type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2'
import { createServer as createNetServer, type AddressInfo, type Socket } from 'node:net'
import { join } from 'node:path'
import { connect as tlsConnect } from 'node:tls'
import t from 'tap'
import { Agent, WebSocket } from 'undici'
import { adminMetrics, metric } from '../helpers/http-front.js'
import { tempHome } from '../helpers/paths.js'
import { spawnCli } from '../helpers/processes.js'
import { selfSigned } from '../helpers/proxy-fixtures.js'
import { until, within } from '../helpers/wait.js'
import { decoder, echoUpstream, encode, type Frame } from '../helpers/websocket.js'

const home = tempHome('keyedge-ws-log-')
const cert = selfSigned(home, 'localhost', ['localhost', '127.0.0.1'])
const up = await echoUpstream()
// A target that accepts TCP and never says a word: no TLS handshake, no HTTP answer.
const silentSockets = new Set<Socket>()
const silent = createNetServer(s => { silentSockets.add(s); s.on('error', () => {}); s.once('close', () => silentSockets.delete(s)) })
await new Promise<void>(resolve => silent.listen(0, '127.0.0.1', resolve))
const silentPort = (silent.address() as AddressInfo).port
const logFile = join(home, 'access.log')
const configFile = join(home, 'proxy.json')
writeFileSync(configFile, JSON.stringify({
  listen: { host: '127.0.0.1', port: 0 },
  workers: 1,
  certificates: [{ name: 'localhost', serverNames: ['localhost', '127.0.0.1'], files: [{ cert: cert.cert, key: cert.key }] }],
  routes: [
    { host: '*', pathPrefix: '/chat', upstream: up.url },
    { host: '*', pathPrefix: '/refuse', upstream: up.url },
    { host: '*', pathPrefix: '/one', upstream: up.url, webSocketsPerClient: 1 },
    { host: '*', pathPrefix: '/rate', upstream: up.url, requestsPerSecondPerClient: 1, requestBurstPerClient: 1 },
    { host: '*', pathPrefix: '/quiet', upstream: up.url, accessLog: false },
    { host: '*', pathPrefix: '/idle', upstream: up.url, webSocketIdleMs: 300 },
    { host: '*', pathPrefix: '/silent-tls', upstream: `https://127.0.0.1:${silentPort}`, connectTimeoutMs: 300 },
    { host: '*', pathPrefix: '/silent', upstream: `http://127.0.0.1:${silentPort}`, timeoutMs: 300 }
  ],
  accessLog: { path: logFile },
  admin: { port: 0, drainDelayMs: 0 },
  shutdownGraceMs: 300,
  log: { level: 'info' }
}))
const proxy = spawnCli(['proxy', '--config', configFile])
const agent = new Agent({ connect: { ca: cert.certPem, servername: 'localhost' } })
const sessions: ClientHttp2Session[] = []
t.teardown(async () => {
  for (const s of sessions) s.destroy()
  await agent.close()
  await proxy.stop('SIGKILL')
  up.close()
  for (const s of silentSockets) s.destroy()
  silent.close()
  rmSync(home, { recursive: true, force: true })
})
const port = (await proxy.waitFor(o => o.msg === 'proxy listening', 30_000)).port as number
const adminPort = (await proxy.waitFor(o => o.msg === 'admin listening', 10_000)).port as number

const lines = (): Array<Record<string, any>> => existsSync(logFile)
  ? readFileSync(logFile, 'utf8').split('\n').filter(l => l !== '').map(l => JSON.parse(l) as Record<string, any>)
  : []
/** The access-log line matching `probe`, waited for (lines reach the file within a second). */
async function lineWhere (probe: (l: Record<string, any>) => boolean): Promise<Record<string, any> | undefined> {
  let found: Record<string, any> | undefined
  await until(() => (found = lines().find(probe)) !== undefined, 10_000)
  return found
}

/** A WebSocket of undici's client over HTTP/1.1; resolves once open. */
async function openWs (path: string): Promise<WebSocket> {
  const ws = new WebSocket(`wss://127.0.0.1:${port}${path}`, { dispatcher: agent })
  ws.binaryType = 'arraybuffer'
  await within(new Promise<void>((resolve, reject) => {
    ws.addEventListener('open', () => resolve())
    ws.addEventListener('error', () => reject(new Error(`WebSocket ${path} failed`)))
  }), 10_000, `WebSocket ${path} open`)
  return ws
}

/** A raw HTTP/1.1 upgrade (to read a refusal's status, which a WebSocket client does not expose). */
async function upgradeStatus (path: string): Promise<{ status: number, head: string }> {
  const socket = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ca: cert.certPem, ALPNProtocols: ['http/1.1'] })
  try {
    await once(socket, 'secureConnect')
    socket.write(`GET ${path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`)
    const [data] = await within(once(socket, 'data'), 10_000, 'the answer') as [Buffer]
    const head = data.toString('latin1')
    return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]), head }
  } finally {
    socket.destroy()
  }
}

async function session (): Promise<ClientHttp2Session> {
  const s = h2connect(`https://127.0.0.1:${port}`, { ca: cert.certPem, servername: 'localhost' })
  sessions.push(s)
  s.on('error', () => {})
  await once(s, 'remoteSettings')
  return s
}

async function h2Ws (s: ClientHttp2Session, path: string): Promise<{ status: number, headers: Record<string, unknown>, stream: ClientHttp2Stream }> {
  const stream = s.request({ ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': 'https', ':path': path, ':authority': 'localhost', 'sec-websocket-version': '13' }, { endStream: false })
  stream.on('error', () => {})
  const [headers] = await within(once(stream, 'response'), 10_000, 'the CONNECT answer') as [Record<string, unknown>]
  return { status: Number(headers[':status']), headers, stream }
}

t.test('an HTTP/1.1 WebSocket gets one line when it ends: 101, bytes both ways, route, upstream, times', async t => {
  const ws = await openWs('/chat/room?secret=1')
  const echoed = new Promise<string>(resolve => ws.addEventListener('message', e => resolve(String(e.data)), { once: true }))
  ws.send('x'.repeat(1000))
  t.equal((await within(echoed, 10_000, 'the echo')).length, 1000, 'the message came back through the proxy')
  t.equal(lines().filter(l => l.path === '/chat/room').length, 0, 'no line while it is open')
  const closed = once(ws, 'close')
  ws.close(1000, 'bye')
  await within(closed, 10_000, 'the close')
  const line = await lineWhere(l => l.path === '/chat/room')
  t.ok(line, 'a line was written')
  if (line === undefined) return
  t.equal(line.status, 101)
  t.equal(line.method, 'GET')
  t.equal(line.path, '/chat/room', 'the query is left out, as for requests')
  t.equal(line.complete, true, 'ended by its peers')
  t.equal(line.upstream, up.url)
  t.equal(line.alpn, 'http/1.1')
  t.equal(line.client, '127.0.0.1')
  t.equal(line.requestId, up.seen.at(-1)?.headers['x-request-id'], 'the request id sent upstream')
  // 1000 bytes each way in a frame (client frames carry a 4-byte mask), plus the close frames; the 101 head is not counted.
  t.ok(line.bytesIn >= 1000 + 8 && line.bytesIn < 1100, `bytesIn ${String(line.bytesIn)}`)
  t.ok(line.bytesOut >= 1000 + 4 && line.bytesOut < 1100, `bytesOut ${String(line.bytesOut)}`)
  t.ok(line.upstreamConnectMs >= 0 && line.upstreamFirstByteMs >= 0, 'connect and first-byte times')
  t.ok(line.upstreamTotalMs >= line.upstreamFirstByteMs && line.totalMs >= line.upstreamTotalMs, 'times measured to the end')
  t.match(line, { level: 30, sni: 'localhost', tlsVersion: 'TLSv1.3' }, 'the fields of a request\'s line')
})

// The first case judges the upstream's last request, so it runs alone; these then run side by side,
// each waiting for its own line (its own paths; per-client limits on routes of their own); shutdown last.
t.test('the other WebSocket lines and limits, side by side', { jobs: 8 }, async t => {
  t.test('an HTTP/2 WebSocket gets one line when it ends: 200 (what the client saw), CONNECT, h2', async t => {
    const s = await session()
    const { status, stream } = await h2Ws(s, '/chat/h2')
    t.equal(status, 200)
    const frames: Frame[] = []
    const feed = decoder(f => frames.push(f))
    stream.on('data', feed)
    stream.write(encode(0x1, Buffer.from('y'.repeat(500)), true))
    stream.write(encode(0x8, Buffer.from([0x03, 0xe8]), true))
    await within(once(stream, 'close'), 10_000, 'the stream\'s close')
    t.equal(frames[0]?.payload.length, 500)
    const line = await lineWhere(l => l.path === '/chat/h2')
    t.ok(line, 'a line was written')
    if (line === undefined) return
    t.equal(line.status, 200)
    t.equal(line.method, 'CONNECT')
    t.equal(line.host, 'localhost')
    t.equal(line.alpn, 'h2')
    t.equal(line.upstream, up.url)
    t.equal(line.complete, true)
    t.ok(line.bytesIn >= 500 + 8 + 8 && line.bytesIn < 600, `bytesIn ${String(line.bytesIn)}`)
    t.ok(line.bytesOut >= 500 + 4 + 4 && line.bytesOut < 600, `bytesOut ${String(line.bytesOut)}`)
  })

  t.test('refused upgrades log their status: no route 404, the upstream\'s own 403', async t => {
    t.equal((await upgradeStatus('/nowhere')).status, 404)
    const line = await lineWhere(l => l.path === '/nowhere')
    t.equal(line?.status, 404)
    t.equal(line?.method, 'GET')
    t.ok(Number(line?.bytesOut) > 20, 'bytesOut: the size of the proxy\'s error body, as for requests')
    const s = await session()
    const refused = await h2Ws(s, '/refuse')
    t.equal(refused.status, 403)
    refused.stream.resume()
    await within(once(refused.stream, 'close'), 10_000, 'the refusal\'s end')
    const h2Line = await lineWhere(l => l.path === '/refuse' && l.method === 'CONNECT')
    t.equal(h2Line?.status, 403, 'the upstream\'s refusal, as the client got it')
    t.equal(h2Line?.bytesOut, 2, 'its body')
  })

  t.test('an upstream that does not answer in time: 504, as for requests, over HTTP/1.1 and HTTP/2', async t => {
    // HTTP/1.1: the target's TLS handshake never completes within connectTimeoutMs.
    const h1 = await upgradeStatus('/silent-tls')
    t.equal(h1.status, 504, 'HTTP/1.1: 504 Gateway Timeout')
    t.match(h1.head, /^HTTP\/1\.1 504 Gateway Timeout\r\n/)
    t.equal((await lineWhere(l => l.path === '/silent-tls'))?.status, 504, 'logged as 504')
    // HTTP/2: connected, but no answer to the upgrade within timeoutMs.
    const s = await session()
    const h2 = await h2Ws(s, '/silent')
    t.equal(h2.status, 504, 'HTTP/2: 504')
    h2.stream.resume()
    await within(once(h2.stream, 'close'), 10_000, 'the answer\'s end')
    t.equal((await lineWhere(l => l.path === '/silent' && l.method === 'CONNECT'))?.status, 504, 'logged as 504')
  })

  t.test('a route with accessLog false writes no WebSocket line', async t => {
    const ws = await openWs('/quiet')
    const closed = once(ws, 'close')
    ws.close()
    await within(closed, 10_000, 'the close')
    // A later line (written after the quiet one would have been) bounds the wait.
    t.equal((await upgradeStatus('/nowhere-after-quiet')).status, 404)
    await lineWhere(l => l.path === '/nowhere-after-quiet')
    t.equal(lines().filter(l => l.path === '/quiet').length, 0)
  })

  t.test('webSocketsPerClient: one open per client on the route; another gets 429 over HTTP/1.1 and HTTP/2', async t => {
    const first = await openWs('/one')
    const h1 = await upgradeStatus('/one')
    t.equal(h1.status, 429, 'a second HTTP/1.1 upgrade is refused')
    t.match(h1.head, /"error":"too_many_websockets"/)
    const s = await session()
    const h2 = await h2Ws(s, '/one')
    t.equal(h2.status, 429, 'so is one over HTTP/2 (many WebSockets share one HTTP/2 connection)')
    h2.stream.close()
    t.ok(metric(await adminMetrics(adminPort), 'edge_route_limit_hits_total', { limit: 'websockets' }) >= 2, 'counted')
    t.equal((await upgradeStatus('/chat')).status, 101, 'other routes are not limited')
    const closed = once(first, 'close')
    first.close()
    await within(closed, 10_000, 'the close')
    // The place is given back when the first one's client socket closes.
    let again = 0
    await until(async () => {
      const next = await h2Ws(s, '/one')
      again = next.status
      next.stream.close()
      return again === 200
    }, 10_000)
    t.equal(again, 200, 'once it closed, the client may open another')
    const refusal = await lineWhere(l => l.path === '/one' && l.status === 429)
    t.ok(refusal, 'the refusal has its line')
  })

  t.test('requestsPerSecondPerClient: upgrades take tokens like requests; out of tokens, 429 with Retry-After', async t => {
    // Burst 1, one token a second: of three upgrades sent at once, at most one gets a token.
    const answers = await Promise.all([upgradeStatus('/rate'), upgradeStatus('/rate'), upgradeStatus('/rate')])
    const refused = answers.filter(a => a.status === 429)
    t.ok(refused.length >= 2, `${refused.length} of 3 refused`)
    t.match(refused[0]?.head, /Retry-After: \d+/i)
    t.match(refused[0]?.head, /"error":"rate_limited"/)
    const s = await session()
    const h2 = await h2Ws(s, '/rate')
    if (h2.status === 429) t.match(String(h2.headers['retry-after']), /^\d+$/, 'HTTP/2: Retry-After too')
    h2.stream.close()
    t.ok(metric(await adminMetrics(adminPort), 'edge_route_limit_hits_total', { limit: 'rate' }) >= 2, 'counted as rate hits')
  })

  t.test('a WebSocket the idle timeout closed is logged as not complete', async t => {
    const ws = await openWs('/idle')
    await within(once(ws, 'close'), 10_000, 'the idle close')
    const line = await lineWhere(l => l.path === '/idle')
    t.equal(line?.status, 101)
    t.equal(line?.complete, false, 'cut by the proxy')
    t.ok(Number(line?.totalMs) >= 250, `open ${String(line?.totalMs)} ms`)
  })
})

t.test('on shutdown an open WebSocket is ended and its line is in the file before the proxy exits', async t => {
  const ws = await openWs('/chat/last')
  const closed = once(ws, 'close')
  proxy.proc.kill('SIGTERM')
  await within(closed, 15_000, 'the close')
  const exit = await proxy.exited
  t.equal(exit.code, 0, 'the proxy exits 0')
  const line = lines().find(l => l.path === '/chat/last')
  t.equal(line?.status, 101, 'the line was written and flushed')
  t.equal(line?.complete, false, 'the proxy ended it')
})
