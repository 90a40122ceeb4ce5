// An https target's certificate is checked against the target's own name, never against the Host
// the client sent (as nginx's proxy_ssl_name = $proxy_host). undici takes the TLS server name from
// each request's Host unless told otherwise: a certificate for whatever name the client sent then
// passed — a machine in the path to the target holding a valid certificate for a name of its own
// was trusted when a client asked for that name — and a target addressed by IP with an IP
// certificate failed for every client. Real `keyedge proxy`, real https targets.
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { readFileSync, rmSync, writeFileSync } from 'node:fs'
import type { IncomingMessage } from 'node:http'
import { createServer as createHttpsServer, type Server } from 'node:https'
import type { AddressInfo, Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { join } from 'node:path'
import t from 'tap'
import { tempHome } from '../helpers/paths.js'
import { spawnCli } from '../helpers/processes.js'
import { get, selfSigned, type CertFiles } from '../helpers/proxy-fixtures.js'

const home = tempHome('keyedge-upstream-name-')
const front = selfSigned(home, 'front', ['localhost', '*.site.test'])

interface Target { server: Server, port: number, connections: () => number }
/** An https target answering `name`, with a certificate for `names`, counting its TLS connections. */
async function target (cert: CertFiles, name: string, host = '127.0.0.1'): Promise<Target> {
  const server = createHttpsServer({ cert: readFileSync(cert.cert), key: readFileSync(cert.key) }, (req, res) => { req.resume(); res.end(name) })
  let connections = 0
  server.on('secureConnection', () => { connections++ })
  // A WebSocket upgrade is answered 101 and then the target's name, so a test sees which target took it.
  server.on('upgrade', (req: IncomingMessage, socket: Socket) => {
    const accept = createHash('sha1').update(`${String(req.headers['sec-websocket-key'])}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64')
    socket.end(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n${name}`)
  })
  server.listen(0, host)
  await once(server, 'listening')
  return { server, port: (server.address() as AddressInfo).port, connections: () => connections }
}
const byAddress = selfSigned(home, 'by-address', ['127.0.0.1'])
const byName = selfSigned(home, 'by-name', ['localhost'])
const impostor = selfSigned(home, 'impostor', ['evil.site.test'])
const addressed = await target(byAddress, 'addressed')
const named = await target(byName, 'named', 'localhost')
// What a machine in the path to the configured target could present: a valid certificate, for a name of its own.
const inTheWay = await target(impostor, 'impostor')
const bundle = join(home, 'upstream-cas.pem')
writeFileSync(bundle, [byAddress, byName, impostor].map(c => c.certPem).join(''))

const file = join(home, 'proxy.json')
writeFileSync(file, JSON.stringify({
  listen: { host: '127.0.0.1', port: 0 },
  workers: 1,
  certificates: [{ name: 'front', serverNames: ['localhost', '*.site.test'], files: [{ cert: front.cert, key: front.key }] }],
  routes: [
    { host: 'evil.site.test', upstream: `https://127.0.0.1:${inTheWay.port}`, retry: { attempts: 0 } },
    { host: 'name.site.test', upstream: `https://localhost:${named.port}` },
    { host: '*', upstream: `https://127.0.0.1:${addressed.port}` }
  ],
  log: { level: 'info' }
}))
const proxy = spawnCli(['proxy', '--config', file], { NODE_EXTRA_CA_CERTS: bundle })
t.teardown(async () => {
  await proxy.stop('SIGKILL')
  for (const s of [addressed, named, inTheWay]) { s.server.closeAllConnections(); s.server.close() }
  rmSync(home, { recursive: true, force: true })
})
const port = (await proxy.waitFor(o => o.msg === 'proxy listening', 30_000)).port as number
const ask = async (host: string): Promise<{ status: number, body: string }> => {
  const r = await get(port, { host, ca: front.certPem })
  return { status: r.status, body: r.body.toString() }
}

t.test('a target addressed by IP is verified against its IP, whatever Host the client sent', async t => {
  for (const host of ['localhost', 'a.site.test', 'b.site.test', 'localhost', 'a.site.test']) {
    t.same(await ask(host), { status: 200, body: 'addressed' }, `Host ${host}`)
  }
  t.equal(addressed.connections(), 1, 'requests for different hosts share one upstream connection (the server name does not follow Host)')
})

t.test('a target addressed by name is verified against that name', async t => {
  t.same(await ask('name.site.test'), { status: 200, body: 'named' })
})

t.test('a certificate for the name the client asked for does not stand in for the target\'s', async t => {
  const r = await ask('evil.site.test')
  t.equal(r.status, 502, 'the impostor\'s certificate (valid for evil.site.test, not for 127.0.0.1) is refused')
  t.not(r.body, 'impostor', 'nothing it answered reached the client')
})

t.test('a WebSocket to a target addressed by IP is verified against its IP, with no IP as TLS server name', async t => {
  const socket = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ca: front.certPem, ALPNProtocols: ['http/1.1'] })
  await once(socket, 'secureConnect')
  socket.write('GET /chat HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')
  let got = ''
  socket.on('data', (c: Buffer) => { got += c.toString() })
  await once(socket, 'end')
  socket.destroy()
  t.match(got, /^HTTP\/1\.1 101 /, 'upgraded through the IP-addressed https target')
  t.match(got, /\r\n\r\naddressed$/, 'the target verified against 127.0.0.1 answered')
  // Node warns (DEP0123) when an IP is set as the TLS server name, which RFC 6066 forbids.
  t.notOk(proxy.lines.some(l => l.includes('DEP0123') || l.includes('TLS ServerName to an IP')), 'no IP was sent as server name')
})
