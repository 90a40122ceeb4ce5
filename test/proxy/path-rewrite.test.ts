// A route's `rewritePrefix` through a real `keyedge proxy`: the matched prefix replaced before the
// request goes upstream, query kept, no `//` made by the join, on HTTP/1.1 and HTTP/2 (direct paths
// to an HTTP/1.1 target, the compatibility path to an h2c target, a gRPC call), WebSocket upgrades
// over HTTP/1.1 and HTTP/2; the access log keeps the client's path; a reload changes it; a bad value
// is refused at load with its field path.
import { rmSync } from 'node:fs'
import t from 'tap'
import { rewritePath, upstreamPath } from '../../src/proxy/path-rewrite.js'
import { tempHome } from '../helpers/paths.js'
import { selfSigned } from '../helpers/proxy-fixtures.js'
import { baseSettings, recorder, startEdge, viaH1, viaH2, wsH1, wsH2, type Seen, routeProblems } from '../helpers/route-edge.js'
import { until } from '../helpers/wait.js'

t.test('the join: prefix replaced, slash boundary kept, query kept, always a leading slash', async t => {
  const cases: Array<[string, string, string, string]> = [
    // pathPrefix, rewritePrefix, client path, upstream path
    ['/api/', '/', '/api/users?x=1', '/users?x=1'],
    ['/api/', '/', '/api/', '/'],
    ['/api/', '/', '/api/?x=1', '/?x=1'],
    ['/api', '/', '/api', '/'],
    ['/api', '/', '/api?x=1', '/?x=1'],
    ['/api', '/', '/api/users', '/users'],
    ['/api/', '/v2', '/api/users', '/v2/users'],
    ['/api/', '/v2/', '/api/users', '/v2/users'],
    ['/api', '/v2/', '/api/users/', '/v2/users/'],
    ['/api', '/v2/', '/api', '/v2/'],
    ['/api', '/v2', '/api?q', '/v2?q'],
    ['/', '/base', '/x/y?z', '/base/x/y?z'],
    ['/', '/base/', '/', '/base/'],
    ['/', '/', '/x', '/x'],
    ['/api', '/', '/api//twice', '//twice']
  ]
  for (const [prefix, to, path, want] of cases) t.equal(rewritePath(prefix, to, path), want, `${prefix} → ${to}: ${path}`)
  t.equal(upstreamPath({ pathPrefix: '/api' }, '/api/x?y'), '/api/x?y', 'no rewritePrefix: unchanged')
})

const home = tempHome('keyedge-path-rewrite-')
const cert = selfSigned(home, 'localhost', ['localhost'])
const up = await recorder()
const routes = (api = '/'): unknown[] => [
  { pathPrefix: '/api/', rewritePrefix: api, upstream: up.h1 },
  { pathPrefix: '/v1', rewritePrefix: '/version/1/', upstream: up.h1 },
  { pathPrefix: '/h2c/', rewritePrefix: '/svc', upstream: up.h2c, upstreamProtocol: 'h2c' },
  { pathPrefix: '/ws/', rewritePrefix: '/socket/', upstream: up.h1 },
  { pathPrefix: '/plain', upstream: up.h1 }
]
const edge = await startEdge(home, baseSettings(home, cert, routes()))
t.teardown(async () => {
  await edge.stop()
  up.close()
  rmSync(home, { recursive: true, force: true })
})

const upstreamSaw = (body: string): Seen => JSON.parse(body) as Seen

t.test('HTTP/1.1 and HTTP/2, direct and compatibility paths', async t => {
  const cases: Array<[string, string, Seen['via']]> = [
    ['/api/users?x=1', '/users?x=1', 'h1'],
    ['/api/', '/', 'h1'],
    ['/v1', '/version/1/', 'h1'],
    ['/v1/items?page=2', '/version/1/items?page=2', 'h1'],
    ['/h2c/call?a=b', '/svc/call?a=b', 'h2c'],
    ['/plain/keep?q', '/plain/keep?q', 'h1']
  ]
  for (const [how, send] of [['HTTP/1.1', viaH1], ['HTTP/2', viaH2]] as const) {
    for (const [path, want, via] of cases) {
      const r = await send(edge, cert, path)
      t.equal(r.status, 200, `${how} ${path}`)
      const saw = upstreamSaw(r.body)
      t.equal(saw.url, want, `${how} ${path} goes up as ${want}`)
      t.equal(saw.via, via)
    }
  }
})

t.test('a gRPC call (compatibility path, h2c target) is rewritten too', async t => {
  const before = up.seen.length
  await viaH2(edge, cert, '/h2c/pkg.Echo/Say', { 'content-type': 'application/grpc', te: 'trailers' }).catch(() => undefined)
  t.ok(await until(() => up.seen.length > before, 5_000), 'the call reached the target')
  t.equal(up.seen.at(-1)?.url, '/svc/pkg.Echo/Say')
})

t.test('WebSocket upgrades over HTTP/1.1 and HTTP/2 (extended CONNECT)', async t => {
  const h1 = await wsH1(edge, cert, '/ws/room?id=7')
  t.equal(h1.status, 101)
  t.equal(up.seen.at(-1)?.via, 'ws')
  t.equal(up.seen.at(-1)?.url, '/socket/room?id=7')
  const h2 = await wsH2(edge, cert, '/ws/room?id=8')
  t.equal(h2.status, 200)
  t.equal(up.seen.at(-1)?.url, '/socket/room?id=8')
})

t.test('the access log keeps the client\'s path', async t => {
  t.ok(await until(() => edge.accessLines().some(l => l.path === '/api/users?x=1'), 5_000), 'a line with the client\'s path')
  t.notOk(edge.accessLines().some(l => l.path === '/users?x=1'), 'never the upstream\'s')
  t.ok(await until(() => edge.accessLines().some(l => l.path === '/ws/room?id=7' && l.status === 101), 5_000), 'WebSocket lines too')
})

t.test('a reload changes the rewrite', async t => {
  const r = await edge.reload(baseSettings(home, cert, routes('/next/')))
  t.equal(r.status, 200, r.body)
  t.equal(upstreamSaw((await viaH1(edge, cert, '/api/users')).body).url, '/next/users')
  t.equal(upstreamSaw((await viaH2(edge, cert, '/api/users')).body).url, '/next/users')
  t.equal((await wsH1(edge, cert, '/ws/a')).status, 101)
  t.equal(up.seen.at(-1)?.url, '/socket/a', 'the other routes as they were')
})

t.test('refused at load, with the field path', async t => {
  const problems = (route: Record<string, unknown>): string => routeProblems(home, cert, up.h1, route)
  t.match(problems({ pathPrefix: '/api/', rewritePrefix: 'users' }), /routes\[0\]\.rewritePrefix: must start with "\/"/)
  t.match(problems({ pathPrefix: '/api/', rewritePrefix: '/a?b' }), /routes\[0\]\.rewritePrefix: must start with "\/" and hold no "\?"/)
  t.match(problems({ pathPrefix: '/api/', rewritePrefix: 7 }), /routes\[0\]\.rewritePrefix/)
  t.equal(problems({ pathPrefix: '/api/', rewritePrefix: '/' }), '')
})
