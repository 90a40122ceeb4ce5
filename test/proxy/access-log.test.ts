// End to end: the access log and per-route limits of a real `keyedge proxy` (one worker) in front of
// a real upstream that echoes what it received. Lines, query stripping, request ids, sampling, the
// per-route switch; 413 and 429; and traffic going on when the log's directory does not exist or
// the log's file system is full (a small tmpfs, when the test may mount one).
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { once } from 'node:events'
import { connect as http2Connect } from 'node:http2'
import { request as httpsRequest } from 'node:https'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { adminMetrics, metric } from '../helpers/http-front.js'
import { FLUSH_EVERY_MS } from '../../src/proxy/access-log.js'
import { tempHome } from '../helpers/paths.js'
import { spawnCli, type Spawned } from '../helpers/processes.js'
import { get, selfSigned, taggedUpstream, type CertFiles } from '../helpers/proxy-fixtures.js'
import { until } from '../helpers/wait.js'

const home = tempHome('keyedge-access-')
const cert: CertFiles = selfSigned(home, 'localhost', ['localhost', '127.0.0.1'])
const up = await taggedUpstream('A')
const procs: Spawned[] = []
const mounts: string[] = []
t.teardown(async () => {
  await Promise.all(procs.map(async p => await p.stop('SIGKILL')))
  await up.close()
  for (const dir of mounts) execFileSync('umount', ['-l', dir])
  rmSync(home, { recursive: true, force: true })
})

interface Running { port: number, adminPort: number, proc: Spawned }

async function startProxy (name: string, accessLog: Record<string, unknown>, routes?: Array<Record<string, unknown>>): Promise<Running> {
  const file = join(home, `${name}.json`)
  writeFileSync(file, JSON.stringify({
    listen: { host: '127.0.0.1', port: 0 },
    workers: 1,
    certificates: [{ name: 'localhost', serverNames: ['localhost', '127.0.0.1'], files: [{ cert: cert.cert, key: cert.key }] }],
    routes: routes ?? [{ host: '*', pathPrefix: '/', upstream: up.url }],
    trustedProxies: ['127.0.0.1/32'],
    accessLog,
    admin: { port: 0, drainDelayMs: 0 },
    log: { level: 'info' }
  }))
  const proc = spawnCli(['proxy', '--config', file])
  procs.push(proc)
  const ready = await proc.waitFor(o => o.msg === 'proxy listening', 30_000)
  const admin = await proc.waitFor(o => o.msg === 'admin listening', 10_000)
  return { port: ready.port as number, adminPort: admin.port as number, proc }
}

const metrics = async (adminPort: number): Promise<string> => await adminMetrics(adminPort)

const lines = (file: string): Array<Record<string, any>> => existsSync(file)
  ? readFileSync(file, 'utf8').split('\n').filter(l => l !== '').map(l => JSON.parse(l) as Record<string, any>)
  : []
const echoed = (body: Buffer): Record<string, any> => JSON.parse(body.toString())

const logFile = join(home, 'logs', 'access.log')
mkdirSync(join(home, 'logs'))
// The proxies of the later cases start with the main one (the full file system's waits for its mount).
const [main, sampled, noDir] = await Promise.all([
  startProxy('main', { path: 'logs/access.log' }, [
    { host: '*', pathPrefix: '/', upstream: up.url },
    { host: '*', pathPrefix: '/quiet', upstream: up.url, accessLog: false },
    { host: '*', pathPrefix: '/small', upstream: up.url, maxBodyBytes: 100 },
    { host: '*', pathPrefix: '/rate', upstream: up.url, requestsPerSecondPerClient: 1, requestBurstPerClient: 2 }
  ]),
  startProxy('sampled', { path: 'sampled.log', sampleRate: 0.5, includeQuery: true }),
  startProxy('nodir', { bufferBytes: 4096, path: 'missing-dir/access.log' })
])
const ca = cert.certPem

// The rate case needs its three requests within the bucket's refill second: it runs alone, first
// (created before t.jobs is raised, it is not buffered).
t.test('rate: a token bucket per client address → 429 with Retry-After', async t => {
  const from = (addr: string): Record<string, string> => ({ 'x-forwarded-for': addr })
  const statuses: number[] = []
  for (let i = 0; i < 3; i++) statuses.push((await get(main.port, { ca, path: '/rate', headers: from('198.51.100.1') })).status)
  t.same(statuses.slice(0, 2), [200, 200], 'the burst passes')
  t.equal(statuses[2], 429, 'then the bucket is empty')
  const refused = await get(main.port, { ca, path: '/rate', headers: from('198.51.100.1') })
  t.equal(refused.status, 429)
  t.ok(Number(refused.headers['retry-after']) >= 1, 'with Retry-After in seconds')
  t.equal((await get(main.port, { ca, path: '/rate', headers: from('198.51.100.2') })).status, 200, 'another client has its own bucket')
  t.ok(metric(await metrics(main.adminPort), 'edge_route_limit_hits_total', { limit: 'rate' }) >= 2)
})

// The other cases run side by side: each waits about a flush period for its lines, on requests of its
// own (its own ids, paths, forwarded addresses and route limits) or on a proxy of its own.
t.jobs = 9

t.test('one line per request with the TLS, HTTP and upstream fields; query stripped; id passed upstream', async t => {
  const res = await get(main.port, { ca, path: '/hello?token=secret', localAddress: '127.0.0.2' })
  t.equal(res.status, 200)
  const id = res.headers['x-request-id'] as string
  t.match(id, /^[0-9a-f-]{36}$/, 'a generated request id comes back to the client')
  t.equal(echoed(res.body).headers['x-request-id'], id, 'and went upstream')
  t.ok(await until(() => lines(logFile).some(l => l.requestId === id)), 'the line is written')
  const line = lines(logFile).find(l => l.requestId === id) as Record<string, any>
  t.match(line, {
    client: '127.0.0.2',
    sni: 'localhost',
    tlsVersion: /^TLSv1\.[23]$/,
    cipher: /\w/,
    tlsResumed: false,
    method: 'GET',
    host: 'localhost',
    path: '/hello',
    status: 200,
    complete: true,
    bytesIn: 0,
    bytesOut: res.body.length,
    upstream: up.url
  })
  t.notOk('alpn' in line, 'no ALPN field when the client offered none (Node\'s https client)')
  t.ok(typeof line.time === 'string' && !Number.isNaN(Date.parse(line.time)), 'an ISO time')
  for (const k of ['upstreamFirstByteMs', 'upstreamTotalMs', 'totalMs']) t.ok(typeof line[k] === 'number' && line[k] >= 0, `${k} is a duration`)
  t.notOk(readFileSync(logFile, 'utf8').includes('secret'), 'the query never reaches the log')
})

t.test('HTTP/2: the line names ALPN h2 and the session\'s TLS parameters', async t => {
  const session = http2Connect(`https://127.0.0.1:${main.port}`, { ca, servername: 'localhost' })
  t.teardown(() => session.close())
  const stream = session.request({ ':path': '/h2?q=1', ':authority': 'localhost' })
  const [headers] = await once(stream, 'response') as [Record<string, string>]
  stream.resume()
  await once(stream, 'end')
  const id = headers['x-request-id']
  t.ok(await until(() => lines(logFile).some(l => l.requestId === id)))
  t.match(lines(logFile).find(l => l.requestId === id), { alpn: 'h2', sni: 'localhost', tlsVersion: 'TLSv1.3', path: '/h2', status: 200, host: 'localhost' })
})

t.test('a trusted peer\'s X-Request-Id and X-Forwarded-For are believed, an untrusted one\'s are not', async t => {
  const trusted = await get(main.port, { ca, path: '/t', headers: { 'x-request-id': 'edge-abc-1', 'x-forwarded-for': '203.0.113.9' } })
  t.equal(trusted.headers['x-request-id'], 'edge-abc-1')
  t.equal(echoed(trusted.body).headers['x-request-id'], 'edge-abc-1')
  const untrusted = await get(main.port, { ca, path: '/u', localAddress: '127.0.0.2', headers: { 'x-request-id': 'edge-abc-2', 'x-forwarded-for': '203.0.113.9' } })
  t.not(untrusted.headers['x-request-id'], 'edge-abc-2')
  t.equal(echoed(untrusted.body).headers['x-request-id'], untrusted.headers['x-request-id'])
  t.ok(await until(() => lines(logFile).some(l => l.path === '/u')))
  t.equal(lines(logFile).find(l => l.path === '/t')?.client, '203.0.113.9', 'client address after trusted X-Forwarded-For')
  t.equal(lines(logFile).find(l => l.path === '/u')?.client, '127.0.0.2', 'an untrusted peer\'s X-Forwarded-For is ignored')
})

t.test('a route with accessLog: false writes no line', async t => {
  const res = await get(main.port, { ca, path: '/quiet/x' })
  t.equal(res.status, 200)
  const after = await get(main.port, { ca, path: '/after-quiet' })
  t.ok(await until(() => lines(logFile).some(l => l.requestId === after.headers['x-request-id'])))
  t.notOk(lines(logFile).some(l => l.requestId === res.headers['x-request-id']), 'no line for the quiet route')
})

t.test('body size: 413 before the upstream sees the request; chunked bodies cut past the limit', async t => {
  const before = await metrics(main.adminPort)
  const declared = await get(main.port, { ca, method: 'POST', path: '/small/up', body: Buffer.alloc(101), headers: { 'content-type': 'application/octet-stream' } })
  t.equal(declared.status, 413)
  t.equal(declared.headers.connection, 'close')
  const fits = await get(main.port, { ca, method: 'POST', path: '/small/up', body: Buffer.alloc(100) })
  t.equal(fits.status, 200, 'a body at the limit passes')
  // Chunked, of unknown length: the proxy counts as it streams.
  const chunked = await new Promise<number>((resolve, reject) => {
    const req = httpsRequest({ host: '127.0.0.1', port: main.port, method: 'POST', path: '/small/chunked', servername: 'localhost', ca, agent: false, headers: { host: 'localhost', 'transfer-encoding': 'chunked' } }, res => {
      res.resume()
      resolve(res.statusCode ?? 0)
    })
    req.on('error', reject)
    req.write(Buffer.alloc(60))
    req.end(Buffer.alloc(60))
  })
  t.equal(chunked, 413)
  const after = await metrics(main.adminPort)
  t.equal(metric(after, 'edge_route_limit_hits_total', { limit: 'body_size' }) - metric(before, 'edge_route_limit_hits_total', { limit: 'body_size' }), 2)
  t.ok(await until(() => lines(logFile).some(l => l.path === '/small/chunked')))
  t.equal(lines(logFile).find(l => l.path === '/small/up' && l.status === 413)?.upstream, undefined, 'the 413 never went upstream')
})

t.test('sampling: about half the requests with sampleRate 0.5; includeQuery keeps the query', async t => {
  const file = join(home, 'sampled.log')
  const p = sampled
  const n = 120
  const ids: string[] = []
  for (let i = 0; i < n; i++) ids.push((await get(p.port, { ca, path: `/s?i=${i}` })).headers['x-request-id'] as string)
  // The last line may trail its response: wait until the count is stable.
  let count = -1
  await until(() => { const c = lines(file).length; const stable = c === count; count = c; return stable && c > 0 }, 5000)
  // Binomial(120, 0.5): mean 60, sd 5.5; 30–90 is more than 5 sd either way.
  t.ok(count >= 30 && count <= 90, `${count} of ${n} logged`)
  t.ok(lines(file).every(l => /^\/s\?i=\d+$/.test(l.path as string)), 'the query is kept')
})

async function trafficWhileDropping (t: Test, p: Running): Promise<void> {
  const flushedPast = Date.now() + 2 * FLUSH_EVERY_MS
  for (let i = 0; i < 40; i++) {
    const res = await get(p.port, { ca, path: `/d/${i}/${'x'.repeat(200)}` })
    if (res.status !== 200) t.fail(`request ${i}: ${res.status}`)
  }
  t.pass('40 requests answered 200')
  // The batches' flush timer runs over the failed destination (once, it wrote to a never-opened one's
  // fd -1 and ended the worker): still served two flush periods on.
  const served = async (): Promise<boolean> => (await get(p.port, { ca, path: '/d/later' })).status === 200 && Date.now() >= flushedPast
  t.ok(await until(served, 2 * FLUSH_EVERY_MS + 10_000), 'still served two flush periods later')
  t.ok(await until(async () => metric(await metrics(p.adminPort), 'edge_access_log_dropped_total') > 0), 'dropped lines are counted')
  const warn = await p.proc.waitFor(o => o.msg === 'access log lines are being dropped; traffic continues', 5000)
  t.ok(warn, 'and warned')
  t.equal(p.proc.lines.filter(l => l.includes('access log lines are being dropped')).length, 1, 'once')
  // The failed open or write is reported by the file stream on its own time, after lines were already dropped.
  t.ok(await until(async () => metric(await metrics(p.adminPort), 'edge_access_log_errors_total') >= 1), 'the failure is counted')
  // A failing log must not hold up the worker's exit.
  await p.proc.stop('SIGTERM')
  t.ok(p.proc.lines.some(l => l.includes('"worker stopped"')), 'the worker stops cleanly on SIGTERM')
  t.notOk(p.proc.lines.some(l => l.includes('"worker died, restarting it"')), 'the worker never died')
  t.same(p.proc.lines.filter(l => !isJson(l)), [], 'nothing but log lines: no crash trace, at exit either')
}

const isJson = (line: string): boolean => {
  try {
    JSON.parse(line)
    return true
  } catch {
    return false
  }
}

t.test('a log in a directory that does not exist: traffic goes on, lines dropped and counted', async t => {
  await trafficWhileDropping(t, noDir)
})

t.test('a log on a full file system: traffic goes on, lines dropped and counted', async t => {
  const dir = join(home, 'full')
  mkdirSync(dir)
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', dir], { stdio: 'pipe' })
  } catch (err) {
    t.comment(`skipped: cannot mount a tmpfs here (${err instanceof Error ? err.message.split('\n')[0] : String(err)})`)
    return
  }
  mounts.push(dir)
  // Fill it: dd stops with ENOSPC.
  try {
    execFileSync('dd', ['if=/dev/zero', `of=${join(dir, 'filler')}`, 'bs=4k'], { stdio: 'pipe' })
  } catch {
    // Expected: dd fails once the file system is full.
  }
  await trafficWhileDropping(t, await startProxy('full', { bufferBytes: 4096, path: 'full/access.log' }))
})
