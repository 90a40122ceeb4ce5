// Live reload of the top-level `timeouts` and `limits`, end to end: a real `keyedge proxy` (one
// worker) has its config file changed and reloaded (POST /reload, then SIGHUP); the report lists
// them as applied, not restart-required; then new connections run on the new values: the
// ClientHello clock, the HTTP/1.1 keep-alive clock, the per-client connection limit and the HTTP/2
// stream limit a new session is told. Restart-only settings are still reported as such.
import { once } from 'node:events'
import { rmSync, writeFileSync } from 'node:fs'
import { connect as h2connect } from 'node:http2'
import { connect as netConnect } from 'node:net'
import { join } from 'node:path'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import t from 'tap'
import { metric } from '../helpers/http-front.js'
import { tempHome } from '../helpers/paths.js'
import { spawnCli } from '../helpers/processes.js'
import { selfSigned, taggedUpstream } from '../helpers/proxy-fixtures.js'
import { until, within } from '../helpers/wait.js'
import { admin as adminCall, type AdminReply } from '../helpers/rotation.js'

const home = tempHome('keyedge-live-timeouts-')
const cert = selfSigned(home, 'localhost', ['localhost'])
const up = await taggedUpstream('A')
const file = join(home, 'proxy.json')
const write = (extra: Record<string, unknown>): void => writeFileSync(file, JSON.stringify({
  listen: { host: '127.0.0.1', port: 0 },
  workers: 1,
  certificates: [{ name: 'localhost', serverNames: ['localhost'], files: [{ cert: cert.cert, key: cert.key }] }],
  routes: [{ host: '*', pathPrefix: '/', upstream: up.url }],
  admin: { port: 0, drainDelayMs: 0 },
  log: { level: 'info' },
  ...extra
}, null, 2))
write({})
const proxy = spawnCli(['proxy', '--config', file])
t.teardown(async () => {
  await proxy.stop('SIGKILL')
  await up.close()
  rmSync(home, { recursive: true, force: true })
})
const port = (await proxy.waitFor(o => o.msg === 'proxy listening', 30_000)).port as number
const adminPort = (await proxy.waitFor(o => o.msg === 'admin listening', 10_000)).port as number

const admin = async (path: string, method = 'GET'): Promise<AdminReply> => await adminCall(adminPort, path, method)

async function tls (): Promise<TLSSocket> {
  const socket = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ca: cert.certPem, ALPNProtocols: ['http/1.1'] })
  socket.on('error', () => {})
  await within(once(socket, 'secureConnect'), 10_000, 'the handshake')
  return socket
}

/** ms until `socket` closes, bounded. */
async function closesAfter (socket: { once: (e: 'close', f: () => void) => unknown }, ms: number): Promise<number> {
  const at = Date.now()
  await within(new Promise<void>(resolve => socket.once('close', () => resolve())), ms, 'the close')
  return Date.now() - at
}

// The defaults before: clientHelloMs 10 s, keepAliveIdleMs 60 s, no per-client limit, 128 streams.
const next = {
  timeouts: { clientHelloMs: 400, keepAliveIdleMs: 500 },
  limits: { maxConnections: 500, maxConnectionsPerClient: 2, http2MaxConcurrentStreams: 7 }
}

t.test('POST /reload applies timeouts and limits live and says so', async t => {
  write(next)
  const r = await admin('/reload', 'POST')
  t.equal(r.status, 200)
  const report = JSON.parse(r.body) as { applied: string[], restartRequired: string[] }
  t.same(report.applied.sort(), ['limits', 'timeouts'])
  t.same(report.restartRequired, [], 'nothing waits for a restart')
})

t.test('the worker\'s connection cap is the new one', async t => {
  t.ok(await until(async () => metric((await admin('/metrics')).body, 'edge_connections_max') === 500, 5_000), 'edge_connections_max 500 (the automatic cap before)')
})

t.test('a new connection that sends nothing is closed by the new ClientHello clock', async t => {
  const socket = netConnect({ host: '127.0.0.1', port })
  socket.on('error', () => {})
  await once(socket, 'connect')
  const ms = await closesAfter(socket, 5_000)
  t.ok(ms < 5_000, `closed after ${ms} ms (400 ms now; 10 s before the reload)`)
})

t.test('a keep-alive connection is closed by the new idle clock', async t => {
  const socket = await tls()
  socket.write('GET / HTTP/1.1\r\nHost: localhost\r\n\r\n')
  const [data] = await within(once(socket, 'data'), 10_000, 'the answer') as [Buffer]
  t.match(data.toString('latin1'), /^HTTP\/1\.1 200 /)
  socket.resume()
  const ms = await closesAfter(socket, 5_000)
  t.ok(ms >= 300, `idle for ${ms} ms (500 ms now; 60 s before the reload)`)
})

t.test('the new per-client connection limit refuses a third connection', async t => {
  const before = metric((await admin('/metrics')).body, 'edge_connections_refused_total', { limit: 'connections_per_client' })
  const held = [await tls(), await tls()]
  t.teardown(() => { for (const s of held) s.destroy() })
  const third = netConnect({ host: '127.0.0.1', port })
  third.on('error', () => {})
  const ms = await closesAfter(third, 5_000)
  t.ok(ms < 5_000, 'closed at accept')
  t.ok(await until(async () => metric((await admin('/metrics')).body, 'edge_connections_refused_total', { limit: 'connections_per_client' }) > before, 5_000), 'counted')
})

t.test('a new HTTP/2 session is told the new stream limit', async t => {
  // The two held connections of the test before have closed (requestHeadersMs or teardown): wait for room.
  let seen = 0
  t.ok(await until(async () => {
    const s = h2connect(`https://127.0.0.1:${port}`, { ca: cert.certPem, servername: 'localhost' })
    s.on('error', () => {})
    try {
      await within(once(s, 'remoteSettings'), 5_000, 'the SETTINGS')
      if (s.remoteSettings.maxConcurrentStreams !== 7) await within(once(s, 'remoteSettings'), 5_000, 'the second SETTINGS')
      seen = s.remoteSettings.maxConcurrentStreams ?? 0
      return true
    } catch {
      return false
    } finally {
      s.destroy()
    }
  }, 15_000), 'a session opened')
  t.equal(seen, 7)
})

t.test('SIGHUP: a restart-only setting is still reported and kept', async t => {
  write({ ...next, shutdownGraceMs: 1234 })
  proxy.proc.kill('SIGHUP')
  const line = await proxy.waitFor(o => o.msg === 'config changes that take effect only at restart: these settings keep their old values until then', 15_000)
  t.same(line.settings, ['shutdownGraceMs'])
})
