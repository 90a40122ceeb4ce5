// A route's `upstreamHost` through a real `keyedge proxy`: the Host (HTTP/2 `:authority`) the target
// receives is the client's (default), the target's own `host:port`, or a fixed name, on HTTP/1.1 and
// HTTP/2 (direct paths to an HTTP/1.1 target, the compatibility path to an h2c target), WebSocket
// upgrades over HTTP/1.1 and HTTP/2; X-Forwarded-Host keeps the client's host; an https target
// (HTTP/1.1 and h2) still gets its own name as SNI; a reload changes it; bad values are refused at
// load with their field path.
import { once } from 'node:events'
import { readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createSecureServer, type Http2ServerRequest, type Http2ServerResponse } from 'node:http2'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import type { TLSSocket } from 'node:tls'
import t from 'tap'
import { validateConfig } from '../../src/config/index.js'
import { tempHome } from '../helpers/paths.js'
import { selfSigned } from '../helpers/proxy-fixtures.js'
import { baseSettings, recorder, startEdge, viaH1, viaH2, wsH1, wsH2, type Seen, routeProblems } from '../helpers/route-edge.js'
import { until } from '../helpers/wait.js'

const home = tempHome('keyedge-upstream-host-')
const cert = selfSigned(home, 'localhost', ['localhost'])
const up = await recorder()
const hostOf = (url: string): string => new URL(url).host

// An https target speaking HTTP/1.1 and h2 (ALPN), certificate for `localhost`: answers with the
// server name the proxy sent and the Host/:authority it got.
const targetCert = selfSigned(home, 'target', ['localhost'])
const tlsTarget = createSecureServer({ cert: readFileSync(targetCert.cert), key: readFileSync(targetCert.key), allowHTTP1: true }, (req: Http2ServerRequest, res: Http2ServerResponse) => {
  res.writeHead(200, { 'content-type': 'application/json' })
  res.end(JSON.stringify({ sni: (req.socket as TLSSocket).servername, host: req.headers[':authority'] ?? req.headers.host, version: req.httpVersion }))
})
tlsTarget.listen(0, 'localhost')
await once(tlsTarget, 'listening')
const tlsUrl = `https://localhost:${(tlsTarget.address() as AddressInfo).port}`
const bundle = join(home, 'target-ca.pem')
writeFileSync(bundle, targetCert.certPem)

const routes = (fixed = 'Bucket.S3.Example.com'): unknown[] => [
  { pathPrefix: '/client', upstream: up.h1 },
  { pathPrefix: '/target', upstream: up.h1, upstreamHost: 'target', healthCheck: { path: '/health/target', intervalMs: 3_600_000 } },
  { pathPrefix: '/fixed', upstream: up.h1, upstreamHost: fixed, healthCheck: { path: '/health/fixed', intervalMs: 3_600_000 } },
  { pathPrefix: '/port', upstream: up.h1, upstreamHost: 'api.example.com:8443' },
  { pathPrefix: '/h2c-target', upstream: up.h2c, upstreamProtocol: 'h2c', upstreamHost: 'target' },
  { pathPrefix: '/h2c-fixed', upstream: up.h2c, upstreamProtocol: 'h2c', upstreamHost: fixed, healthCheck: { path: '/health/h2c', intervalMs: 3_600_000 } },
  { pathPrefix: '/tls1', upstream: tlsUrl, upstreamHost: 'bucket.example' },
  { pathPrefix: '/tls2', upstream: tlsUrl, upstreamProtocol: 'h2', upstreamHost: 'bucket.example' }
]
const edge = await startEdge(home, baseSettings(home, cert, routes()), { NODE_EXTRA_CA_CERTS: bundle })
t.teardown(async () => {
  await edge.stop()
  up.close()
  tlsTarget.close()
  rmSync(home, { recursive: true, force: true })
})

const seenHost = (s: Seen): unknown => s.via === 'h2c' ? s.headers[':authority'] : s.headers.host
// The last WebSocket upgrade the target saw (health checks may come in between).
const lastUpgrade = (): Seen | undefined => up.seen.filter(s => s.via === 'ws').at(-1)

t.test('HTTP/1.1 and HTTP/2: the client\'s, the target\'s or a fixed Host; X-Forwarded-Host the client\'s', async t => {
  for (const [how, send, clientHost] of [['HTTP/1.1', viaH1, 'localhost'], ['HTTP/2', viaH2, `localhost:${edge.port}`]] as const) {
    const cases: Array<[string, string]> = [
      ['/client', clientHost],
      ['/target', hostOf(up.h1)],
      ['/fixed', 'bucket.s3.example.com'],
      ['/port', 'api.example.com:8443'],
      ['/h2c-target', hostOf(up.h2c)],
      ['/h2c-fixed', 'bucket.s3.example.com']
    ]
    for (const [path, want] of cases) {
      const r = await send(edge, cert, path)
      t.equal(r.status, 200, `${how} ${path}`)
      const saw = JSON.parse(r.body) as Seen
      t.equal(seenHost(saw), want, `${how} ${path}: Host ${want}`)
      t.equal(saw.headers['x-forwarded-host'], clientHost, `${how} ${path}: X-Forwarded-Host is the client's`)
      if (saw.via === 'h2c') t.equal(saw.headers.host, undefined, 'no Host besides :authority')
    }
  }
})

t.test('WebSocket upgrades over HTTP/1.1 and HTTP/2', async t => {
  for (const [path, want] of [['/target/ws', hostOf(up.h1)], ['/fixed/ws', 'bucket.s3.example.com'], ['/client/ws', 'localhost']] as const) {
    t.equal((await wsH1(edge, cert, path)).status, 101, `HTTP/1.1 ${path}`)
    t.equal(lastUpgrade()?.headers.host, want, `HTTP/1.1 upgrade ${path}: Host ${want}`)
    t.equal(lastUpgrade()?.headers['x-forwarded-host'], 'localhost')
    t.equal((await wsH2(edge, cert, path)).status, 200, `HTTP/2 ${path}`)
    t.equal(lastUpgrade()?.headers.host, want, `HTTP/2 CONNECT ${path}: Host ${want}`)
  }
})

t.test('health checks carry a fixed upstreamHost; with "target" (or "client") the target\'s own', async t => {
  const check = (path: string): Seen | undefined => up.seen.find(s => s.url === path && s.headers['user-agent'] === 'keyedge-health-check')
  t.ok(await until(() => check('/health/h2c') !== undefined, 5_000), 'the checks ran')
  t.equal(check('/health/fixed')?.headers.host, 'bucket.s3.example.com', 'HTTP/1.1 target: the fixed name')
  t.equal(check('/health/h2c')?.headers[':authority'], 'bucket.s3.example.com', 'h2c target: the fixed name as :authority')
  t.equal(check('/health/target')?.headers.host, hostOf(up.h1), '"target": the target\'s own')
})

t.test('an https target gets its own name as SNI whatever the Host', async t => {
  for (const [path, version] of [['/tls1', '1.1'], ['/tls2', '2.0']] as const) {
    for (const send of [viaH1, viaH2]) {
      const r = await send(edge, cert, path)
      t.equal(r.status, 200, r.body)
      t.same(JSON.parse(r.body), { sni: 'localhost', host: 'bucket.example', version }, `${path}: SNI the target's name, Host the fixed one`)
    }
  }
})

t.test('the access log keeps the client\'s host', async t => {
  // Lines reach the file in batches, at the latest a second after their response.
  const fixed = (): Array<Record<string, unknown>> => edge.accessLines().filter(l => String(l.path).startsWith('/fixed'))
  t.ok(await until(() => fixed().length > 0, 5_000), 'the /fixed requests are logged')
  const lines = fixed()
  t.ok(lines.every(l => String(l.host).startsWith('localhost')), 'host as the client sent it')
})

t.test('a reload changes it', async t => {
  const r = await edge.reload(baseSettings(home, cert, routes('other.example')))
  t.equal(r.status, 200, r.body)
  t.equal((JSON.parse((await viaH1(edge, cert, '/fixed')).body) as Seen).headers.host, 'other.example')
  t.equal((JSON.parse((await viaH2(edge, cert, '/h2c-fixed')).body) as Seen).headers[':authority'], 'other.example')
})

t.test('refused at load, with the field path', async t => {
  const problems = (upstreamHost: unknown): string => routeProblems(home, cert, up.h1, { upstreamHost })
  for (const bad of ['bad host', 'a/b', 'host:0', 'host:70000', '*.example.com', '[zz::1]', 'a..b', 'http://x', '']) {
    t.match(problems(bad), /routes\[0\]\.upstreamHost/, `"${bad}" refused`)
  }
  t.match(problems('bad host'), /"bad host" is not "client", "target" nor a host name with an optional port/)
  for (const good of ['client', 'target', 'Target', 'example.com', 'example.com:8080', '10.0.0.1:80', '[::1]:8443', 's3']) t.equal(problems(good), '', `"${good}" accepted`)
  const config = validateConfig(baseSettings(home, cert, [{ upstream: up.h1 }]), { baseDir: home })
  t.equal(config.routes[0]?.upstreamHost, 'client', 'the default: the client\'s Host')
})
