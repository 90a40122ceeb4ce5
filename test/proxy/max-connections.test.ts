// The worker's cap on open connections (limits.maxConnections): the automatic cap from the
// open-file limit, and end to end on a real proxy (one worker) — an idle HTTP/1.1 connection and
// an idle HTTP/2 session give their place to a new connection, and a new connection is refused at
// accept when every connection is busy.
import t from 'tap'
import { once } from 'node:events'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import { Registry } from 'prom-client'
import { createLogger } from '../../src/logger.js'
import { automaticCap, ConnectionCap, openFileLimit } from '../../src/proxy/conn-cap.js'
import { validateConfig } from '../../src/config/index.js'
import { countingUpstream, h2Open, metric, startFront, tlsOpen, untilClosed } from '../helpers/http-front.js'
import { until, within } from '../helpers/wait.js'

const LIMITS = `Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            20000                524288               files
Max locked memory         8388608              8388608              bytes
`

t.test('the automatic cap: half the soft open-file limit after 256', async t => {
  t.equal(openFileLimit(LIMITS), 20000, 'the soft limit')
  t.equal(openFileLimit(LIMITS.replace('20000 ', 'unlimited ')), undefined, 'unlimited: no cap')
  t.equal(openFileLimit('nothing here'), undefined)
  t.equal(automaticCap(20000), 9872)
  t.equal(automaticCap(1024), 384)
  t.equal(automaticCap(100), 1, 'never below one')
  t.equal(automaticCap(undefined), undefined)
  const config = validateConfig({
    certificates: [{ name: 'x', serverNames: ['x.test'], files: [{ cert: 'x', key: 'x' }] }],
    routes: [{ upstream: 'http://127.0.0.1:1' }]
  }, { baseDir: '/' })
  t.equal(config.limits.maxConnections, 0, 'automatic by default')
})

t.test('admit, reclaim, refuse and release; the gauges follow', async t => {
  const registry = new Registry()
  let idle = 1
  const cap = new ConnectionCap({ maxConnections: 2, registry, log: createLogger({ level: 'silent' }), reclaimIdle: () => idle-- > 0, fdLimit: 1000 })
  t.equal(cap.max, 2)
  t.ok(cap.admit())
  t.ok(cap.admit())
  t.ok(cap.admit(), 'at the cap, an idle connection makes room')
  t.notOk(cap.admit(), 'none idle: refused')
  t.equal(cap.open, 3, 'the reclaimed one is released when it closes')
  cap.release()
  cap.release()
  t.ok(cap.admit(), 'room again')
  const text = await registry.metrics()
  t.equal(metric(text, 'edge_connections_reclaimed_total'), 1)
  t.equal(metric(text, 'edge_connections_refused_total', { limit: 'max_connections' }), 1)
  t.equal(metric(text, 'edge_connections_open'), 2)
  t.equal(metric(text, 'edge_connections_max'), 2)
  cap.update(0)
  t.equal(cap.max, 372, 'a reload back to 0: the automatic cap of the worker\'s file limit')
  t.equal(metric(await registry.metrics(), 'edge_connections_max'), 372)
})

const upstream = await countingUpstream()
t.teardown(() => upstream.close())

/** One keep-alive HTTP/1.1 GET of `path` on `socket`; resolves with the head once a response arrives. */
async function get (socket: TLSSocket, path: string): Promise<string> {
  socket.write(`GET ${path} HTTP/1.1\r\nHost: localhost\r\n\r\n`)
  const [data] = await within(once(socket, 'data'), 10_000, 'the response') as [Buffer]
  return data.toString('latin1')
}

/** Whether a new TLS connection completes its handshake (false: closed before it did). */
async function handshakes (port: number, ca: string): Promise<boolean> {
  const socket = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ca, ALPNProtocols: ['http/1.1'] })
  socket.on('error', () => {})
  try {
    return await within(new Promise<boolean>(resolve => {
      socket.once('secureConnect', () => resolve(true))
      socket.once('close', () => resolve(false))
    }), 10_000, 'the handshake or the close')
  } finally {
    socket.destroy()
  }
}

t.test('HTTP/1.1: the oldest idle connection makes room; with none idle a new one is refused', async t => {
  const front = await startFront({ upstream: upstream.url, limits: { maxConnections: 3 } })
  t.teardown(() => front.stop())
  const open: TLSSocket[] = []
  t.teardown(() => { upstream.release(); for (const s of open) s.destroy() })
  for (let i = 0; i < 3; i++) {
    const s = await tlsOpen(front.port, front.ca)
    open.push(s)
    t.match(await get(s, '/'), /^HTTP\/1\.1 200 /)
  }
  t.ok(await until(async () => metric(await front.metrics(), 'edge_connections_open') === 3, 5_000), 'three open')
  t.equal(metric(await front.metrics(), 'edge_connections_max'), 3)

  const fourth = await tlsOpen(front.port, front.ca)
  open.push(fourth)
  t.ok((await untilClosed(open[0] as TLSSocket, 5_000)).closed, 'the oldest idle connection was closed')
  t.match(await get(fourth, '/'), /^HTTP\/1\.1 200 /, 'the new one is served')
  t.notOk((open[1] as TLSSocket).destroyed, 'the others stay open')

  // Every connection busy: a request in flight on each.
  for (const s of open.slice(1)) s.write('GET /hold HTTP/1.1\r\nHost: localhost\r\n\r\n')
  t.ok(await until(async () => upstream.held.length === 3, 10_000), 'three requests held upstream')
  t.notOk(await handshakes(front.port, front.ca), 'a fifth connection is closed before its handshake')
  const text = await front.metrics()
  t.equal(metric(text, 'edge_connections_refused_total', { limit: 'max_connections' }), 1)
  t.equal(metric(text, 'edge_connections_reclaimed_total'), 1)
  const answers = open.slice(1).map(async s => await within(once(s, 'data'), 10_000, 'a held response') as [Buffer])
  upstream.release()
  for (const answer of answers) t.match((await answer)[0].toString('latin1'), /^HTTP\/1\.1 200 [\s\S]*released/, 'the busy connections were left alone')
})

t.test('HTTP/2: an idle session gets GOAWAY NO_ERROR to make room', async t => {
  const front = await startFront({ upstream: upstream.url, http2: true, limits: { maxConnections: 2 } })
  t.teardown(() => front.stop())
  const idle = await h2Open(front.port, front.ca)
  const busy = await h2Open(front.port, front.ca)
  t.teardown(() => { upstream.release(); idle.destroy(); busy.destroy() })
  const done = idle.request({ ':path': '/' })
  done.resume()
  await once(done, 'end')
  const held = busy.request({ ':path': '/hold' })
  held.on('error', () => {})
  t.ok(await until(async () => upstream.held.length === 1, 10_000), 'a request held on the busy session')

  const goaway = once(idle, 'goaway')
  const third = await tlsOpen(front.port, front.ca)
  t.teardown(() => third.destroy())
  const [code] = await within(goaway, 5_000, 'the GOAWAY') as [number]
  t.equal(code, 0, 'NO_ERROR: the client opens a new connection for its next request')
  t.match(await get(third, '/'), /^HTTP\/1\.1 200 /, 'the new connection is served')
  upstream.release()
  const [response] = await within(once(held, 'response'), 5_000, 'the held response') as [Record<string, unknown>]
  t.equal(response[':status'], 200, 'the busy session was left alone')
  t.equal(metric(await front.metrics(), 'edge_connections_reclaimed_total'), 1)
})
