// End to end: the access log's `upstreamConnectMs` from a real `keyedge proxy` (one worker): the
// request that opens an upstream connection logs how long the connect took (TCP, plus TLS for an
// https target), a request on a reused connection logs 0, and a request that never reached an
// upstream has no such field.
import { once } from 'node:events'
import { readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer as createHttpsServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { tempHome } from '../helpers/paths.js'
import { spawnCli } from '../helpers/processes.js'
import { get, selfSigned, taggedUpstream } from '../helpers/proxy-fixtures.js'
import { until } from '../helpers/wait.js'

const home = tempHome('keyedge-connect-time-')
const cert = selfSigned(home, 'localhost', ['localhost'])
// The target's certificate is verified against the target's own name (here its address).
const upCert = selfSigned(home, 'upstream', ['127.0.0.1', 'localhost'])
const plain = await taggedUpstream('plain')
const secure = createHttpsServer({ cert: readFileSync(upCert.cert), key: readFileSync(upCert.key) }, (req, res) => { req.resume(); res.end('secure') })
secure.listen(0, '127.0.0.1')
await once(secure, 'listening')
const logFile = join(home, 'access.log')
const file = join(home, 'proxy.json')
writeFileSync(file, JSON.stringify({
  listen: { host: '127.0.0.1', port: 0 },
  workers: 1,
  certificates: [{ name: 'localhost', serverNames: ['localhost'], files: [{ cert: cert.cert, key: cert.key }] }],
  routes: [
    { host: 'localhost', pathPrefix: '/tls', upstream: `https://127.0.0.1:${(secure.address() as AddressInfo).port}` },
    { host: 'localhost', pathPrefix: '/', upstream: plain.url }
  ],
  accessLog: { path: logFile },
  log: { level: 'info' }
}))
// The https target's self-signed certificate is trusted through Node's extra CA bundle.
const proxy = spawnCli(['proxy', '--config', file], { NODE_EXTRA_CA_CERTS: upCert.cert })
t.teardown(async () => {
  await proxy.stop('SIGKILL')
  await plain.close()
  secure.closeAllConnections()
  secure.close()
  rmSync(home, { recursive: true, force: true })
})
const port = (await proxy.waitFor(o => o.msg === 'proxy listening', 30_000)).port as number

/** The access-log line of the request answered with `id`. */
async function line (id: string): Promise<Record<string, unknown>> {
  let found: Record<string, unknown> | undefined
  await until(() => {
    let text: string
    try { text = readFileSync(logFile, 'utf8') } catch { return false }
    found = text.split('\n').filter(l => l !== '').map(l => JSON.parse(l) as Record<string, unknown>).find(o => o.requestId === id)
    return found !== undefined
  }, 10_000)
  if (found === undefined) throw new Error(`no access-log line for ${id}`)
  return found
}

async function send (t: Test, path: string): Promise<Record<string, unknown>> {
  const res = await get(port, { ca: cert.certPem, path })
  t.equal(res.status, 200, `${path} answered`)
  return await line(String(res.headers['x-request-id']))
}

// The cases wait about a flush period per access-log line, each on its own upstream (plain, https, none):
// side by side.
t.jobs = 3

t.test('a new connection logs its connect time, a reused one 0 (plain TCP)', async t => {
  const first = await send(t, '/one')
  t.type(first.upstreamConnectMs, 'number')
  t.ok((first.upstreamConnectMs as number) > 0, `first request: connect took ${String(first.upstreamConnectMs)} ms`)
  t.ok((first.upstreamConnectMs as number) <= (first.totalMs as number), 'within the request\'s total time')
  const second = await send(t, '/two')
  t.equal(second.upstreamConnectMs, 0, 'the next request reuses the connection: 0')
  // The upstream drops its idle keep-alive connections: the next request opens a new one.
  plain.server.closeIdleConnections()
  const third = await send(t, '/three')
  t.ok((third.upstreamConnectMs as number) > 0, `after the upstream closed it, a new connection: ${String(third.upstreamConnectMs)} ms`)
})

t.test('an https target: the connect time includes the TLS handshake', async t => {
  const first = await send(t, '/tls/a')
  t.ok((first.upstreamConnectMs as number) > 0, `TLS connect took ${String(first.upstreamConnectMs)} ms`)
  t.equal((await send(t, '/tls/b')).upstreamConnectMs, 0, 'reused: 0')
})

t.test('no upstream request, no upstreamConnectMs', async t => {
  const noRoute = await get(port, { ca: cert.certPem, host: 'unknown.test', servername: 'localhost', path: '/' })
  const o = await line(String(noRoute.headers['x-request-id']))
  t.equal(o.status, 404)
  t.notOk('upstreamConnectMs' in o, 'absent when nothing was sent upstream')
})
