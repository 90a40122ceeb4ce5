// An https target's certificate is checked against the target's own name, never against the Host
// the client sent (as nginx's proxy_ssl_name = $proxy_host). undici takes the TLS server name from
// each request's Host unless told otherwise: a certificate for whatever name the client sent then
// passed — a machine in the path to the target holding a valid certificate for a name of its own
// was trusted when a client asked for that name — and a target addressed by IP with an IP
// certificate failed for every client. Real `keyedge proxy`, real https targets.
import { once } from 'node:events'
import { readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer as createHttpsServer, type Server } from 'node:https'
import type { AddressInfo } from 'node:net'
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
