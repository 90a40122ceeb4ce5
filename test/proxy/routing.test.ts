// Pure parts of forwarding: route matching, forwarding headers, trusted proxy matching.
import t from 'tap'
import type { RouteConfig } from '../../src/config/types.js'
import { clientResponseHeaders, upstreamRequestHeaders } from '../../src/proxy/forward-headers.js'
import { createRouter, normalizeHost, pathMatches } from '../../src/proxy/router.js'
import { createTrustMatcher, normalizeAddress } from '../../src/proxy/trusted-proxies.js'

const r = (host: string, pathPrefix: string, upstream: string): RouteConfig =>
  ({ host, pathPrefix, upstream, timeoutMs: 1000, connectTimeoutMs: 1000, accessLog: true, maxBodyBytes: 0, requestsPerSecondPerClient: 0, requestBurstPerClient: 0, webSocketIdleMs: 1000 }) as RouteConfig

t.test('routes: host first (exact, wildcard, any), then the longest path prefix', async t => {
  const router = createRouter([
    r('*', '/', 'http://any'),
    r('*', '/static/', 'http://any-static'),
    r('*.example.com', '/', 'http://wild'),
    r('api.example.com', '/v1', 'http://api-v1'),
    r('api.example.com', '/v1/admin', 'http://api-admin')
  ])
  const up = (host: string, path: string): string | undefined => router.match(host, path)?.upstream
  t.equal(up('api.example.com', '/v1/users?x=1'), 'http://api-v1')
  t.equal(up('api.example.com', '/v1/admin/x'), 'http://api-admin')
  t.equal(up('API.example.com:8443', '/v1'), 'http://api-v1', 'port and case ignored')
  t.equal(up('api.example.com', '/v10'), 'http://wild', 'a prefix matches whole segments; falls through to the wildcard')
  t.equal(up('www.example.com', '/'), 'http://wild')
  t.equal(up('a.b.example.com', '/static/x.css'), 'http://any-static', 'wildcards match one label')
  t.equal(up('other.test', '/'), 'http://any')
  const strict = createRouter([r('only.test', '/app', 'http://app')])
  t.equal(strict.match('only.test', '/other'), undefined)
  t.equal(strict.match('else.test', '/app'), undefined)
})

t.test('host and path helpers', async t => {
  t.equal(normalizeHost('[::1]:8443'), '[::1]')
  t.equal(normalizeHost('Example.com.:443'), 'example.com')
  t.ok(pathMatches('/', '/anything'))
  t.ok(pathMatches('/api', '/api'))
  t.ok(pathMatches('/api', '/api/x'))
  t.notOk(pathMatches('/api', '/apix'))
  t.ok(pathMatches('/api/', '/api/x'))
  t.notOk(pathMatches('/api/', '/api'))
})

t.test('hop-by-hop headers are dropped both ways, including those Connection names', async t => {
  const out = upstreamRequestHeaders({
    host: 'a.test',
    connection: 'keep-alive, X-Hop',
    'x-hop': '1',
    'keep-alive': 'timeout=5',
    'proxy-authorization': 'Basic x',
    te: 'trailers',
    trailer: 'x-t',
    'transfer-encoding': 'chunked',
    upgrade: 'websocket',
    expect: '100-continue',
    'x-kept': 'yes'
  }, { host: 'a.test', peer: '10.0.0.9', trusted: false })
  t.same(Object.keys(out).sort(), ['host', 'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto', 'x-kept'])
  const back = clientResponseHeaders({ connection: 'x-r', 'x-r': '1', 'keep-alive': 'timeout=9', 'proxy-authenticate': 'Basic', 'set-cookie': ['a=1', 'b=2'], 'content-length': '3' })
  t.same(back, { 'set-cookie': ['a=1', 'b=2'], 'content-length': '3' })
})

t.test('forwarding headers: replaced for untrusted peers, appended for trusted ones', async t => {
  const incoming = {
    ':authority': 'h2.test', 'x-forwarded-for': '1.2.3.4', 'x-forwarded-proto': 'http', 'x-forwarded-host': 'evil.test',
    'x-forwarded-port': '80', forwarded: 'for=1.2.3.4'
  }
  const untrusted = upstreamRequestHeaders(incoming, { host: 'h2.test', peer: '10.0.0.9', trusted: false })
  t.same(untrusted, { host: 'h2.test', 'x-forwarded-for': '10.0.0.9', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'h2.test' })
  const trusted = upstreamRequestHeaders(incoming, { host: 'h2.test', peer: '10.0.0.9', trusted: true })
  t.equal(trusted['x-forwarded-for'], '1.2.3.4, 10.0.0.9')
  t.equal(trusted['x-forwarded-proto'], 'http')
  t.equal(trusted['x-forwarded-host'], 'evil.test')
  t.equal(trusted.forwarded, 'for=1.2.3.4')
  t.notOk(':authority' in trusted, 'pseudo-headers never go upstream')
})

t.test('trusted proxies: addresses and CIDRs, v4, v6 and v4-mapped', async t => {
  const trusted = createTrustMatcher(['10.0.0.0/8', '192.168.1.7', '::1', 'fd00::/8'])
  t.ok(trusted('10.200.3.4'))
  t.ok(trusted('::ffff:10.1.1.1'))
  t.ok(trusted('192.168.1.7'))
  t.notOk(trusted('192.168.1.8'))
  t.ok(trusted('::1'))
  t.ok(trusted('fd12:3456::1'))
  t.notOk(trusted('fe80::1'))
  t.notOk(trusted(undefined))
  t.notOk(createTrustMatcher([])('127.0.0.1'))
  t.equal(normalizeAddress('::FFFF:127.0.0.1'), '127.0.0.1')
})
