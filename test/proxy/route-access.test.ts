// A route's `allow`/`deny` client-address lists: the matcher itself (longest prefix decides, `deny`
// on a tie, IPv4 and IPv6), then through a real `keyedge proxy`: a refused client gets 403
// `{"error":"forbidden",…}` on HTTP/1.1 and HTTP/2 (direct paths and the compatibility path, a gRPC
// call as PERMISSION_DENIED) and on WebSocket upgrades over HTTP/1.1 and HTTP/2, before the rate
// limit and before anything goes upstream; the client address is the one after trusted
// X-Forwarded-For; counted in the metrics and the access log; a reload changes the lists; bad
// entries are refused at load with their field path.
import { rmSync } from 'node:fs'
import { BlockList } from 'node:net'
import t from 'tap'
import { compileAccess } from '../../src/proxy/route-access.js'
import { metric } from '../helpers/http-front.js'
import { tempHome } from '../helpers/paths.js'
import { selfSigned } from '../helpers/proxy-fixtures.js'
import { baseSettings, recorder, startEdge, viaH1, viaH2, wsH1, wsH2, routeProblems } from '../helpers/route-edge.js'
import { until } from '../helpers/wait.js'

t.test('the matcher: the most specific entry decides, deny on a tie, IPv4 and IPv6', async t => {
  const cases: Array<[{ allow?: string[], deny?: string[] }, Record<string, boolean>]> = [
    [{ allow: ['10.0.0.0/8'], deny: ['10.6.6.0/24'] }, { '10.1.1.1': true, '10.6.6.7': false, '10.6.7.1': true, '11.0.0.1': false, '::1': false, '': false }],
    [{ deny: ['10.0.0.0/8'], allow: ['10.1.2.3'] }, { '10.1.2.3': true, '10.1.2.4': false, '192.0.2.1': false }],
    [{ allow: ['0.0.0.0/0', '::/0', '10.1.2.3'], deny: ['10.0.0.0/8'] }, { '10.1.2.3': true, '10.1.2.4': false, '192.0.2.1': true, '2001:db8::1': true }],
    [{ deny: ['192.0.2.0/24', '::1'] }, { '192.0.2.5': false, '198.51.100.1': true, '::1': false, '::2': true, '': true }],
    [{ allow: ['2001:db8::/32'], deny: ['2001:db8:dead::/48'] }, { '2001:db8::1': true, '2001:0db8:0:0::ffff': true, '2001:db8:dead::1': false, '2001:db8:dead:1::1': false, '2001:db9::1': false, '10.0.0.1': false, 'fe80::1%eth0': false }],
    [{ allow: ['10.0.0.0/8'], deny: ['10.0.0.0/8'] }, { '10.0.0.1': false }],
    [{ allow: ['::ffff:127.0.0.0/104'] }, { '127.0.0.1': true, '128.0.0.1': false }],
    [{ allow: ['::ffff:192.0.2.1'] }, { '192.0.2.1': true, '192.0.2.2': false }],
    [{ allow: ['10.1.2.3/8'] }, { '10.9.9.9': true, '11.0.0.0': false }],
    [{ allow: ['255.255.255.255', '0.0.0.0/32'] }, { '255.255.255.255': true, '0.0.0.0': true, '255.255.255.254': false }],
    [{ allow: ['::1.2.3.4', 'fd00::/8'] }, { '::102:304': true, 'fdff:ffff::1': true, 'fe00::1': false, '1.2.3.4': false }],
    [{ allow: ['128.0.0.0/1'] }, { '200.1.1.1': true, '127.255.255.255': false }]
  ]
  for (const [lists, want] of cases) {
    const check = compileAccess(lists)
    for (const [address, allowed] of Object.entries(want)) t.equal(check(address), allowed, `${JSON.stringify(lists)}: ${address || '(none)'} ${allowed ? 'allowed' : 'refused'}`)
  }
})

t.test('the matcher agrees with node:net BlockList on random addresses in every textual form', async t => {
  // Deterministic pseudo-random numbers (a failure reproduces).
  let seed = 12_345
  const rand = (n: number): number => { seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648; return seed % n }
  const groups = (): number[] => Array.from({ length: 8 }, () => rand(4) === 0 ? 0 : rand(65_536))
  // The full form, the compressed one (WHATWG URL's), upper case, and an IPv4 tail.
  const forms = (g: number[]): string[] => {
    const full = g.map(x => x.toString(16)).join(':')
    const short = new URL(`http://[${full}]`).hostname.slice(1, -1)
    const tail = `${g.slice(0, 6).map(x => x.toString(16)).join(':')}:${(g[6] ?? 0) >> 8}.${(g[6] ?? 0) & 255}.${(g[7] ?? 0) >> 8}.${(g[7] ?? 0) & 255}`
    return [full, short, short.toUpperCase(), tail]
  }
  let compared = 0
  for (let round = 0; round < 200; round++) {
    const base = groups()
    const len = rand(129)
    const entry = `${forms(base)[1] ?? ''}/${len}`
    const list = new BlockList()
    list.addSubnet(entry.split('/')[0] ?? '', len, 'ipv6')
    const check = compileAccess({ allow: [entry] })
    for (let k = 0; k < 10; k++) {
      // Near the base (only the low groups changed) or anywhere.
      const g = k < 6 ? base.map((x, i) => i >= 8 - k ? rand(65_536) : x) : groups()
      // BlockList reads IPv4-mapped addresses as IPv4; the proxy normalizes them before matching.
      if (g.slice(0, 6).join() === '0,0,0,0,0,65535') continue
      const want = list.check(forms(g)[0] ?? '', 'ipv6')
      for (const form of forms(g)) {
        compared++
        if (check(form) !== want) t.fail(`${entry}: ${form} should be ${want ? 'allowed' : 'refused'}`)
      }
    }
  }
  let compared4 = 0
  for (let round = 0; round < 300; round++) {
    const base = `${rand(256)}.${rand(256)}.${rand(256)}.${rand(256)}`
    const len = rand(33)
    const list = new BlockList()
    list.addSubnet(base, len, 'ipv4')
    const check = compileAccess({ deny: [`${base}/${len}`] })
    for (let k = 0; k < 10; k++) {
      const parts = base.split('.').map((p, i) => i >= 4 - (k % 4) ? String(rand(256)) : p)
      const address = parts.join('.')
      compared4++
      if (check(address) === list.check(address, 'ipv4')) t.fail(`${base}/${len}: ${address}`)
    }
  }
  t.ok(compared > 7000, `${compared} IPv6 and ${compared4} IPv4 comparisons agree`)
  for (const bad of ['', '1.2.3', '1.2.3.4.5', '256.1.1.1', '1..2.3', ':::', '1:2:3:4:5:6:7:8:9', '1::2::3', '12345::', 'g::1', '1:', ':1', 'localhost']) {
    t.equal(compileAccess({ deny: ['0.0.0.0/0', '::/0'] })(bad), true, `"${bad}" is no address: only deny, so let through`)
  }
})

const home = tempHome('keyedge-route-access-')
const cert = selfSigned(home, 'localhost', ['localhost'])
const up = await recorder()
const routes = (office = ['10.0.0.0/8', '2001:db8::/32']): unknown[] => [
  { pathPrefix: '/open', upstream: up.h1 },
  { pathPrefix: '/office/', upstream: up.h1, allow: office, deny: ['10.6.6.0/24'], requestsPerSecondPerClient: 1, requestBurstPerClient: 1 },
  { pathPrefix: '/h2c/', upstream: up.h2c, upstreamProtocol: 'h2c', deny: ['192.0.2.0/24'] }
]
// The test's connections come from 127.0.0.1, a trusted proxy: X-Forwarded-For names the client.
const settings = (office?: string[], trustedProxies = ['127.0.0.1']): Record<string, unknown> => baseSettings(home, cert, routes(office), { trustedProxies })
const edge = await startEdge(home, settings())
t.teardown(async () => {
  await edge.stop()
  up.close()
  rmSync(home, { recursive: true, force: true })
})
const from = (address: string): Record<string, string> => ({ 'x-forwarded-for': address })

t.test('HTTP/1.1 and HTTP/2: refused with 403 before the rate limit and before anything goes upstream', async t => {
  for (const [how, send] of [['HTTP/1.1', viaH1], ['HTTP/2', viaH2]] as const) {
    const before = up.seen.length
    for (let i = 0; i < 3; i++) {
      const r = await send(edge, cert, '/office/x', from('10.6.6.9'))
      t.equal(r.status, 403, `${how}: a denied subnet inside the allowed one, try ${i + 1}: 403, never 429`)
      t.same(JSON.parse(r.body), { error: 'forbidden', message: 'this client address may not use this route' })
      t.equal(r.headers['content-type'], 'application/json')
      t.match(r.headers['x-request-id'], /^[0-9a-f-]{36}$/)
    }
    t.equal((await send(edge, cert, '/office/x', from('192.0.2.7'))).status, 403, `${how}: outside allow`)
    t.equal((await send(edge, cert, '/h2c/x', from('192.0.2.7'))).status, 403, `${how}: deny only, compatibility path`)
    t.equal(up.seen.length, before, `${how}: the targets saw none of them`)
    t.equal((await send(edge, cert, '/h2c/x', from('198.51.100.1'))).status, 200, `${how}: deny only, another address`)
    t.equal((await send(edge, cert, '/open', from('192.0.2.7'))).status, 200, `${how}: a route without lists`)
  }
  // Each allowed address has a bucket of one request (requestBurstPerClient 1).
  t.equal((await viaH1(edge, cert, '/office/x', from('10.1.1.1'))).status, 200, 'allowed (IPv4)')
  t.equal((await viaH2(edge, cert, '/office/x', from('2001:db8::7'))).status, 200, 'allowed (IPv6)')
  t.equal((await viaH2(edge, cert, '/office/x', from('2001:db9::7'))).status, 403, 'outside the IPv6 allow')
  t.equal((await viaH1(edge, cert, '/office/x', from('10.1.1.1'))).status, 429, 'an allowed client still meets the rate limit')
})

t.test('a gRPC call gets PERMISSION_DENIED', async t => {
  const r = await viaH2(edge, cert, '/h2c/pkg.Echo/Say', { ...from('192.0.2.7'), 'content-type': 'application/grpc', te: 'trailers' })
  t.equal(r.status, 200, 'gRPC errors ride on a 200')
  t.equal(r.headers['grpc-status'], '7', 'PERMISSION_DENIED')
})

t.test('WebSocket upgrades over HTTP/1.1 and HTTP/2', async t => {
  const before = up.seen.length
  const refused = await wsH1(edge, cert, '/office/ws', 'X-Forwarded-For: 10.6.6.9\r\n')
  t.equal(refused.status, 403)
  t.match(refused.head, /"error":"forbidden"/)
  const s = await wsH2(edge, cert, '/office/ws')
  t.equal(s.status, 403, 'HTTP/2 CONNECT from 127.0.0.1 (no X-Forwarded-For): outside allow')
  t.equal(up.seen.length, before, 'the target saw neither')
  t.equal((await wsH1(edge, cert, '/office/ws', 'X-Forwarded-For: 10.2.2.2\r\n')).status, 101, 'an allowed client')
})

t.test('metrics and access log', async t => {
  const text = await edge.metrics()
  t.equal(metric(text, 'edge_route_limit_hits_total', { limit: 'address' }), 14, 'every refusal counted once (11 HTTP, 1 gRPC, 2 WebSocket)')
  t.equal(metric(text, 'edge_proxy_requests_total', { outcome: 'forbidden' }), 12, 'HTTP and gRPC refusals as outcome forbidden')
  t.equal(metric(text, 'edge_route_limit_hits_total', { limit: 'rate' }), 1, 'refused requests took no token')
  t.ok(metric(text, 'edge_websocket_total', { event: 'refused' }) >= 2, 'WebSocket refusals')
  t.ok(await until(() => edge.accessLines().filter(l => l.status === 403).length === 13, 5_000), 'one 403 line per refusal (the gRPC call\'s status is 200)')
  const line = edge.accessLines().find(l => l.status === 403 && l.path === '/office/x')
  t.equal(line?.client, '10.6.6.9', 'the client address after trusted X-Forwarded-For')
  t.equal(line?.upstream, undefined, 'never went upstream')
})

t.test('a reload changes the lists; X-Forwarded-For is believed from trusted peers only', async t => {
  let r = await edge.reload(settings(['192.0.2.0/24']))
  t.equal(r.status, 200, r.body)
  t.equal((await viaH1(edge, cert, '/office/x', from('192.0.2.8'))).status, 200, 'newly allowed')
  t.equal((await viaH2(edge, cert, '/office/x', from('10.1.1.2'))).status, 403, 'no longer allowed')
  r = await edge.reload(settings(['10.0.0.0/8'], []))
  t.equal(r.status, 200, r.body)
  t.equal((await viaH1(edge, cert, '/office/x', from('10.1.1.3'))).status, 403, 'an untrusted peer\'s X-Forwarded-For is not believed: the client is 127.0.0.1')
  r = await edge.reload(settings(['127.0.0.1'], []))
  t.equal(r.status, 200, r.body)
  t.equal((await viaH2(edge, cert, '/office/x', from('10.6.6.9'))).status, 200, 'the peer itself decides')
})

t.test('refused at load, with the field path', async t => {
  const problems = (route: Record<string, unknown>): string => routeProblems(home, cert, up.h1, route)
  t.match(problems({ allow: ['10.0.0.0/33'] }), /routes\[0\]\.allow\[0\]: "10\.0\.0\.0\/33" is not an IP address or CIDR/)
  t.match(problems({ deny: ['10.0.0.1', 'example.com'] }), /routes\[0\]\.deny\[1\]: "example\.com" is not an IP address or CIDR/)
  t.match(problems({ deny: ['2001:db8::/129'] }), /routes\[0\]\.deny\[0\]/)
  t.match(problems({ allow: [] }), /routes\[0\]\.allow/)
  t.match(problems({ allowFrom: ['10.0.0.0/8'] }), /use "allow"/)
  t.equal(problems({ allow: ['10.0.0.0/8', '::1'], deny: ['10.1.0.0/16'] }), '')
})
