// End to end: PROXY protocol on a real `keyedge proxy` (one worker). HAProxy from Debian in TCP mode
// sends v2 (`send-proxy-v2`, HTTP/2 through it) and v1 (`send-proxy`) from 127.0.0.2, the only
// trusted balancer; curl binds its own source address, which the upstream must see in
// X-Forwarded-For and the access log must record. Raw sockets send byte-exact headers: the carried
// address drives trustedProxies, route rate limits, connection limits, client hashing and the
// WebSocket upgrade's X-Forwarded-For; every
// malformed or misplaced header is refused without a byte in reply, counted by reason; a header
// that never completes is closed at timeouts.clientHelloMs.
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import type { IncomingMessage } from 'node:http'
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net'
import { join } from 'node:path'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import t from 'tap'
import { curl } from '../helpers/edge.js'
import { adminMetrics, metric } from '../helpers/http-front.js'
import { tempHome } from '../helpers/paths.js'
import { spawnCli, type Spawned } from '../helpers/processes.js'
import { fixtures, headerFor, proxiedGet, rawConnect, sendAndWait, writeBytewise } from '../helpers/proxy-protocol.js'
import { selfSigned, taggedUpstream, type CertFiles } from '../helpers/proxy-fixtures.js'
import { until } from '../helpers/wait.js'

const home = tempHome('keyedge-pp-')
const cert: CertFiles = selfSigned(home, 'localhost', ['localhost', '127.0.0.1'])
const ca = cert.certPem
const other: CertFiles = selfSigned(home, 'other', ['other.test'])
const up = await taggedUpstream('A')
const upB = await taggedUpstream('B')
const procs: Spawned[] = []
let haproxy: ChildProcess | undefined
t.teardown(async () => {
  // Still running (a process ended by a signal has exitCode null too, and signalCode set).
  if (haproxy !== undefined && haproxy.exitCode === null && haproxy.signalCode === null) {
    const gone = once(haproxy, 'exit')
    haproxy.kill('SIGKILL')
    await gone
  }
  await Promise.all(procs.map(async p => await p.stop('SIGKILL')))
  await up.close()
  await upB.close()
  rmSync(home, { recursive: true, force: true })
})

const HELLO_MS = 1500
const BALANCER = '127.0.0.2'
const logFile = join(home, 'access.log')
const configFile = join(home, 'edge.json')
writeFileSync(configFile, JSON.stringify({
  listen: { host: '127.0.0.1', port: 0 },
  workers: 1,
  // Two entries: the front reads every ClientHello (after the PROXY header) to choose one.
  certificates: [
    { name: 'localhost', serverNames: ['localhost', '127.0.0.1'], files: [{ cert: cert.cert, key: cert.key }] },
    { name: 'other', serverNames: ['other.test'], files: [{ cert: other.cert, key: other.key }] }
  ],
  routes: [
    { host: '*', pathPrefix: '/rate', upstream: up.url, requestsPerSecondPerClient: 1, requestBurstPerClient: 1 },
    { host: '*', pathPrefix: '/hash', upstreams: [{ url: up.url }, { url: upB.url }], balance: { policy: 'hash' } },
    { host: '*', pathPrefix: '/', upstream: up.url }
  ],
  trustedProxies: ['127.0.0.5/32'],
  proxyProtocol: { trustedCidrs: [`${BALANCER}/32`] },
  accessLog: { path: 'access.log' },
  admin: { port: 0, drainDelayMs: 0 },
  timeouts: { clientHelloMs: HELLO_MS, handshakeMs: 10_000 },
  limits: { maxConnectionsPerClient: 2 },
  log: { level: 'info' }
}))
const proc = spawnCli(['proxy', '--config', configFile])
procs.push(proc)
const port = (await proc.waitFor(o => o.msg === 'proxy listening', 30_000)).port as number
const adminPort = (await proc.waitFor(o => o.msg === 'admin listening', 10_000)).port as number

const metrics = async (): Promise<string> => await adminMetrics(adminPort)
const refusedCount = async (reason: string): Promise<number> => metric(await metrics(), 'edge_proxy_protocol_refused_total', { reason })
const lines = (): Array<Record<string, any>> => existsSync(logFile)
  ? readFileSync(logFile, 'utf8').split('\n').filter(l => l !== '').map(l => JSON.parse(l) as Record<string, any>)
  : []

/** A listening socket on a free port for HAProxy to inherit (it cannot bind port 0 itself). */
async function inheritable (): Promise<{ server: Server, port: number, fd: number }> {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const fd = (server as unknown as { _handle: { fd: number } })._handle.fd
  return { server, port: (server.address() as AddressInfo).port, fd }
}

t.test('HAProxy in front (send-proxy-v2 and send-proxy): the upstream and the access log see curl\'s address', async t => {
  const v2 = await inheritable()
  const v1 = await inheritable()
  const cfg = join(home, 'haproxy.cfg')
  writeFileSync(cfg, [
    'defaults',
    '  mode tcp',
    '  timeout connect 5s',
    '  timeout client 30s',
    '  timeout server 30s',
    'frontend fv2',
    '  bind fd@3',
    '  default_backend kv2',
    'frontend fv1',
    '  bind fd@4',
    '  default_backend kv1',
    'backend kv2',
    `  server k 127.0.0.1:${port} source ${BALANCER} send-proxy-v2`,
    'backend kv1',
    `  server k 127.0.0.1:${port} source ${BALANCER} send-proxy`,
    // Health checks only (no frontend): with check-send-proxy, HAProxy sends the v2 LOCAL command.
    'backend checks',
    `  server k 127.0.0.1:${port} source ${BALANCER} send-proxy-v2 check check-send-proxy inter 200`,
    ''
  ].join('\n'))
  let stderr = ''
  haproxy = spawn('haproxy', ['-db', '-f', cfg], { stdio: ['ignore', 'ignore', 'pipe', v2.fd, v1.fd] })
  haproxy.stderr?.on('data', (c: Buffer) => { stderr += c.toString() })
  // HAProxy holds the listening sockets now; the kernel queues connections until it accepts them.
  v2.server.close()
  v1.server.close()
  t.teardown(() => { if (haproxy?.exitCode !== null) t.comment(stderr) })

  const base = ['--cacert', cert.cert, '--fail']
  const r2 = await curl([...base, '--http2', '--interface', '127.0.0.9', '--resolve', `localhost:${v2.port}:127.0.0.1`, '-H', 'x-forwarded-for: 6.6.6.6', `https://localhost:${v2.port}/via-v2`], 20)
  t.equal(r2.code, 0, `curl through HAProxy (v2, HTTP/2): ${r2.stderr}`)
  const e2 = JSON.parse(r2.stdout || '{}') as Record<string, any>
  t.equal(e2.headers?.['x-forwarded-for'], '127.0.0.9', 'the upstream sees curl\'s address (and not the client\'s own X-Forwarded-For)')
  const r1 = await curl([...base, '--http1.1', '--interface', '127.0.0.10', '--resolve', `localhost:${v1.port}:127.0.0.1`, `https://localhost:${v1.port}/via-v1`], 20)
  t.equal(r1.code, 0, `curl through HAProxy (v1, HTTP/1.1): ${r1.stderr}`)
  t.equal((JSON.parse(r1.stdout || '{}') as Record<string, any>).headers?.['x-forwarded-for'], '127.0.0.10')

  t.ok(await until(() => lines().some(l => l.path === '/via-v1') && lines().some(l => l.path === '/via-v2')), 'both requests logged')
  t.match(lines().find(l => l.path === '/via-v2'), { client: '127.0.0.9', alpn: 'h2', status: 200 })
  t.match(lines().find(l => l.path === '/via-v1'), { client: '127.0.0.10', status: 200 })
  const text = await metrics()
  t.ok(metric(text, 'edge_proxy_protocol_accepted_total', { version: '2', command: 'proxy' }) >= 1)
  t.ok(metric(text, 'edge_proxy_protocol_accepted_total', { version: '1', command: 'proxy' }) >= 1)
  t.ok(await until(async () => metric(await metrics(), 'edge_proxy_protocol_accepted_total', { version: '2', command: 'local' }) >= 1, 15_000),
    'HAProxy\'s health checks arrive as LOCAL and are accepted')
  // Its health checks (every 200 ms) would otherwise go on connecting while later subtests count refusals.
  const gone = once(haproxy, 'exit')
  haproxy.kill('SIGKILL')
  await gone
})

t.test('byte-exact headers from the balancer: v1, v2 with TLVs, v2 sent one byte per segment', async t => {
  const v1 = await proxiedGet(port, { header: fixtures.v1Tcp4, localAddress: BALANCER, ca, path: '/raw-v1' })
  t.equal(v1.status, 200)
  t.equal(v1.body.headers['x-forwarded-for'], '192.0.2.10')
  const v2 = await proxiedGet(port, { header: fixtures.v2Tcp4Tlvs, localAddress: BALANCER, ca, path: '/raw-v2' })
  t.equal(v2.body.headers['x-forwarded-for'], '192.0.2.10')
  const v6 = await proxiedGet(port, { header: fixtures.v2Tcp6, localAddress: BALANCER, ca, path: '/raw-v6' })
  t.equal(v6.body.headers['x-forwarded-for'], '2001:db8::1')
  const slow = await proxiedGet(port, { header: headerFor('192.0.2.77', 2), localAddress: BALANCER, ca, path: '/bytewise', bytewise: true })
  t.equal(slow.status, 200, 'a header in 28 one-byte segments, then the ClientHello in one-byte segments: served')
  t.equal(slow.body.headers['x-forwarded-for'], '192.0.2.77')
  const local = await proxiedGet(port, { header: fixtures.v2Local, localAddress: BALANCER, ca, path: '/local' })
  t.equal(local.body.headers['x-forwarded-for'], BALANCER, 'LOCAL: the balancer\'s own connection, its real address')
  t.ok(await until(() => lines().some(l => l.path === '/raw-v6')))
  t.equal(lines().find(l => l.path === '/raw-v6')?.client, '2001:db8::1', 'the access log records the carried address')
})

t.test('trustedProxies applies to the carried address', async t => {
  const via = await proxiedGet(port, { header: headerFor('127.0.0.5', 1), localAddress: BALANCER, ca, path: '/xff-trusted', headers: { 'x-forwarded-for': '203.0.113.50' } })
  t.equal(via.body.headers['x-forwarded-for'], '203.0.113.50, 127.0.0.5', 'a trusted proxy behind the balancer: its X-Forwarded-For is kept')
  const direct = await proxiedGet(port, { header: headerFor('203.0.113.60', 1), localAddress: BALANCER, ca, path: '/xff-untrusted', headers: { 'x-forwarded-for': '6.6.6.6' } })
  t.equal(direct.body.headers['x-forwarded-for'], '203.0.113.60', 'an untrusted client behind the balancer: its X-Forwarded-For is dropped')
  t.ok(await until(() => lines().some(l => l.path === '/xff-untrusted') && lines().some(l => l.path === '/xff-trusted')))
  t.equal(lines().find(l => l.path === '/xff-trusted')?.client, '203.0.113.50')
  t.equal(lines().find(l => l.path === '/xff-untrusted')?.client, '203.0.113.60')
})

t.test('route rate limits and client hashing key on the carried address', async t => {
  const get = async (address: string, path: string): Promise<{ status: number, body: Record<string, any> }> =>
    await proxiedGet(port, { header: headerFor(address, 2), localAddress: BALANCER, ca, path })
  t.equal((await get('198.51.100.20', '/rate')).status, 200)
  t.equal((await get('198.51.100.20', '/rate')).status, 429, 'the same client behind the balancer: limited')
  t.equal((await get('198.51.100.21', '/rate')).status, 200, 'another client behind the same balancer: not limited')
  const targets = new Map<string, string>()
  for (let i = 1; i <= 16; i++) targets.set(`10.1.0.${i}`, (await get(`10.1.0.${i}`, '/hash')).body.name as string)
  t.same(new Set(targets.values()), new Set(['A', 'B']), 'clients spread over both targets although every connection comes from one balancer')
  let stable = true
  for (const [address, name] of targets) if ((await get(address, '/hash')).body.name !== name) stable = false
  t.ok(stable, 'each client keeps its target')
})

t.test('a WebSocket upgrade carries the PROXY client in X-Forwarded-For', async t => {
  // The upstream answers 101 and echoes the X-Forwarded-For it got; the proxy pipes it back as is.
  const onUpgrade = (req: IncomingMessage, socket: Socket): void => {
    socket.end(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Seen-For: ${String(req.headers['x-forwarded-for'])}\r\n\r\n`)
  }
  up.server.on('upgrade', onUpgrade)
  t.teardown(() => { up.server.off('upgrade', onUpgrade) })
  const socket = await rawConnect(port, BALANCER)
  socket.write(headerFor('192.0.2.44', 2))
  const tls = tlsConnect({ socket, servername: 'localhost', ca, ALPNProtocols: ['http/1.1'] })
  await once(tls, 'secureConnect')
  tls.write('GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')
  let text = ''
  tls.on('data', (c: Buffer) => { text += c.toString('latin1') })
  tls.on('error', () => {})
  t.ok(await until(() => text.includes('\r\n\r\n'), 10_000), 'the 101 comes back')
  tls.destroy()
  t.match(text, /^HTTP\/1\.1 101 /)
  t.match(text, /x-seen-for: 192\.0\.2\.44\r\n/i)
})

t.test('connection limits count the carried address', async t => {
  const before = metric(await metrics(), 'edge_connections_refused_total', { limit: 'connections_per_client' })
  const open: TLSSocket[] = []
  for (let i = 0; i < 2; i++) {
    const socket = await rawConnect(port, BALANCER)
    socket.write(headerFor('198.51.100.30', 2))
    const tls = tlsConnect({ socket, servername: 'localhost', ca })
    await once(tls, 'secureConnect')
    open.push(tls)
  }
  t.teardown(() => { for (const s of open) s.destroy() })
  const third = await rawConnect(port, BALANCER)
  const refused = await sendAndWait(third, headerFor('198.51.100.30', 2), 10_000)
  t.match(refused, { closed: true, received: 0 }, 'a third connection of the same client: closed after its header')
  t.equal(metric(await metrics(), 'edge_connections_refused_total', { limit: 'connections_per_client' }), before + 1)
  const other = await proxiedGet(port, { header: headerFor('198.51.100.31', 2), localAddress: BALANCER, ca, path: '/other' })
  t.equal(other.status, 200, 'another client through the same balancer is served')
})

t.test('refused, without a byte in reply, and counted by reason', async t => {
  const sig = fixtures.v2Tcp4Tlvs
  const cases: Array<[string, Buffer, string, string]> = [
    ['bad v2 signature', Buffer.concat([sig.subarray(0, 11), Buffer.from([0x0b]), sig.subarray(12)]), BALANCER, 'missing'],
    ['v2 version 1', Buffer.concat([sig.subarray(0, 12), Buffer.from([0x11]), sig.subarray(13)]), BALANCER, 'unsupported'],
    ['v2 command 2', Buffer.concat([sig.subarray(0, 12), Buffer.from([0x22]), sig.subarray(13)]), BALANCER, 'unsupported'],
    ['v2 length too big', Buffer.concat([sig.subarray(0, 14), Buffer.from([0xff, 0xff])]), BALANCER, 'too_long'],
    ['v2 TCP4 block too short', fixtures.v2({ command: 1, family: 1, transport: 1, body: Buffer.alloc(4) }), BALANCER, 'malformed'],
    ['v2 TLV past the block', fixtures.v2({ command: 1, family: 1, transport: 1, body: Buffer.concat([fixtures.inet4, Buffer.from([1, 0, 9])]) }), BALANCER, 'malformed'],
    ['v1 too long', Buffer.from(`PROXY UNKNOWN ${'x'.repeat(120)}\r\n`), BALANCER, 'too_long'],
    ['v1 without CRLF', Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n'), BALANCER, 'malformed'],
    ['v1 bad address', Buffer.from('PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n'), BALANCER, 'malformed'],
    ['v1 unknown protocol', Buffer.from('PROXY TCP9 1.2.3.4 5.6.7.8 1 2\r\n'), BALANCER, 'malformed'],
    ['v2 from an untrusted peer', fixtures.v2Tcp4Tlvs, '127.0.0.1', 'untrusted_peer'],
    ['v1 from an untrusted peer', fixtures.v1Tcp4, '127.0.0.3', 'untrusted_peer']
  ]
  for (const [what, bytes, from, reason] of cases) {
    const before = await refusedCount(reason)
    const socket = await rawConnect(port, from)
    const r = await sendAndWait(socket, Buffer.concat([bytes, Buffer.from([0x16, 3, 1, 0, 0])]), 10_000)
    t.match(r, { closed: true, received: 0 }, `${what}: closed, nothing sent back`)
    t.ok(r.afterMs < HELLO_MS, `${what}: at once, not at the timeout (${r.afterMs} ms)`)
    t.equal(await refusedCount(reason), before + 1, `${what}: counted as ${reason}`)
  }
})

t.test('TLS without a header: refused from the balancer, served from anyone else', async t => {
  const before = await refusedCount('missing')
  const tls = tlsConnect({ socket: await rawConnect(port, BALANCER), servername: 'localhost', ca })
  const [err] = await once(tls, 'error') as [NodeJS.ErrnoException]
  t.ok(err.code === 'ECONNRESET' || /socket disconnected|closed/i.test(err.message), `the handshake fails: ${err.code ?? ''} ${err.message}`)
  t.equal(await refusedCount('missing'), before + 1)
  const direct = await proxiedGet(port, { header: Buffer.alloc(0), localAddress: '127.0.0.3', ca, path: '/direct' })
  t.equal(direct.status, 200)
  t.equal(direct.body.headers['x-forwarded-for'], '127.0.0.3', 'a direct client (not a balancer): its own address')
})

t.test('a header that never completes is closed at timeouts.clientHelloMs', async t => {
  const before = await refusedCount('timeout')
  const silent = await rawConnect(port, BALANCER)
  const r = await sendAndWait(silent, Buffer.alloc(0), 20_000)
  t.match(r, { closed: true, received: 0 }, 'no header at all: closed')
  t.ok(r.afterMs >= HELLO_MS - 100, `not before the timeout (${r.afterMs} ms)`)

  const trickle = await rawConnect(port, BALANCER)
  const header = fixtures.v2Tcp4Tlvs
  const started = Date.now()
  const closed = once(trickle, 'close')
  trickle.on('error', () => {})
  // One byte every 100 ms: the whole header would take 8 s; the timeout runs from accept.
  let i = 0
  const timer = setInterval(() => {
    if (trickle.destroyed || i >= header.length) return
    trickle.write(header.subarray(i, i + 1))
    i++
  }, 100)
  await closed
  clearInterval(timer)
  const afterMs = Date.now() - started
  t.ok(afterMs >= HELLO_MS - 100 && i < header.length, `trickled: closed after ${afterMs} ms, ${i} of ${header.length} bytes sent`)
  t.ok(await until(async () => await refusedCount('timeout') === before + 2), 'both counted as timeout')
})

t.test('a v1 header in one-byte segments, then the TLS handshake on the same connection', async t => {
  const socket = await rawConnect(port, BALANCER)
  await writeBytewise(socket, headerFor('192.0.2.99', 1))
  const tls = tlsConnect({ socket, servername: 'localhost', ca })
  await once(tls, 'secureConnect')
  t.ok(tls.authorized, 'handshake done over the same connection')
  tls.destroy()
})
