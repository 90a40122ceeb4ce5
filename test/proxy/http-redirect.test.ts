// The plain-HTTP listener (`httpRedirect`), end to end through a real `keyedge proxy` with two
// workers: routed hosts are sent to the same URL over HTTPS (308, or 307), anything else is refused
// (404 unknown host, 400 without a usable Host), a request's body is never waited for, a head that
// trickles is cut, a reload changes the hosts redirected, and every answer is counted.
import { once } from 'node:events'
import { rmSync, writeFileSync } from 'node:fs'
import { connect as netConnect } from 'node:net'
import { join } from 'node:path'
import t from 'tap'
import { validateConfig } from '../../src/config/index.js'
import { httpsLocation } from '../../src/proxy/http-redirect.js'
import { adminMetrics, metric } from '../helpers/http-front.js'
import { tempHome } from '../helpers/paths.js'
import { spawnCli } from '../helpers/processes.js'
import { selfSigned } from '../helpers/proxy-fixtures.js'
import { admin } from '../helpers/rotation.js'
import { within } from '../helpers/wait.js'

const home = tempHome('keyedge-redirect-')
const cert = selfSigned(home, 'a', ['a.test', '*.b.test'])
const configFile = join(home, 'proxy.json')
const settings = (hosts: string[], permanent = true): Record<string, unknown> => ({
  listen: { host: '127.0.0.1', port: 0 },
  workers: 2,
  httpRedirect: { host: '127.0.0.1', port: 0, permanent },
  certificates: [{ name: 'a', serverNames: ['a.test', '*.b.test'], files: [{ cert: cert.cert, key: cert.key }] }],
  routes: hosts.map(host => ({ host, upstream: 'http://127.0.0.1:9' })),
  timeouts: { requestHeadersMs: 500 },
  admin: { port: 0, drainDelayMs: 0 },
  shutdownGraceMs: 200
})
writeFileSync(configFile, JSON.stringify(settings(['a.test', '*.b.test'])))
const proxy = spawnCli(['proxy', '--config', configFile])
t.teardown(async () => {
  await proxy.stop('SIGKILL')
  rmSync(home, { recursive: true, force: true })
})
const tlsPort = (await proxy.waitFor(o => o.msg === 'proxy listening', 30_000)).port as number
const adminPort = (await proxy.waitFor(o => o.msg === 'admin listening', 10_000)).port as number
const port = (await proxy.waitFor(o => o.msg === 'http redirect listening', 10_000)).port as number

/** Writes `head` (and `body`) on a new connection; resolves with everything the listener sent until it closed. */
async function exchange (head: string, body = ''): Promise<string> {
  const socket = netConnect({ host: '127.0.0.1', port })
  let text = ''
  socket.on('data', (b: Buffer) => { text += b.toString('latin1') })
  socket.write(head + body)
  await within(once(socket, 'close'), 10_000, 'the listener closed the connection')
  return text
}
const status = (answer: string): number => Number(/^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1])
const location = (answer: string): string | undefined => /\r\nlocation: ([^\r]*)\r\n/i.exec(answer)?.[1]

t.test('a routed host is redirected to the same URL over HTTPS, 308, and the connection closed', async t => {
  const a = await exchange('GET /path/x?q=1&r=%20 HTTP/1.1\r\nHost: a.test\r\n\r\n')
  t.equal(status(a), 308)
  t.equal(location(a), `https://a.test:${tlsPort}/path/x?q=1&r=%20`, 'host, the TLS port, path and query kept')
  t.match(a, /\r\nconnection: close\r\n/i)
  const b = await exchange('HEAD / HTTP/1.1\r\nHost: A.Test.:80\r\n\r\n')
  t.equal(location(b), `https://a.test:${tlsPort}/`, 'the host normalized: case, trailing dot and port')
  const w = await exchange('GET /w HTTP/1.1\r\nHost: x.b.test\r\n\r\n')
  t.equal(location(w), `https://x.b.test:${tlsPort}/w`, 'a wildcard route\'s host')
})

t.test('a POST is redirected at once, its body never waited for (308 keeps the method)', async t => {
  const started = Date.now()
  const answer = await exchange('POST /form HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1000000\r\n\r\n', 'only a little')
  t.equal(status(answer), 308)
  t.ok(Date.now() - started < 400, `answered in ${Date.now() - started} ms, before requestHeadersMs`)
})

t.test('no redirect for a host no route serves, or without a usable Host', async t => {
  t.equal(status(await exchange('GET / HTTP/1.1\r\nHost: elsewhere.test\r\n\r\n')), 404, 'unknown host: 404')
  t.equal(status(await exchange('GET / HTTP/1.1\r\nHost: b.test\r\n\r\n')), 404, 'a wildcard covers subdomains only')
  t.equal(status(await exchange('GET / HTTP/1.0\r\n\r\n')), 400, 'no Host')
  t.equal(status(await exchange('GET / HTTP/1.1\r\nHost: a.test\r\nHost: a.test\r\n\r\n')), 400, 'two Host headers')
  t.equal(status(await exchange('GET / HTTP/1.1\r\nHost: a.test@evil.test\r\n\r\n')), 400, 'a Host that is no host name')
  t.equal(status(await exchange('GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n')), 400, 'an absolute target')
  t.equal(status(await exchange('NOT HTTP\r\n\r\n')), 400, 'garbage')
})

t.test('a head that trickles is cut after requestHeadersMs', async t => {
  const socket = netConnect({ host: '127.0.0.1', port })
  socket.on('data', () => {})
  socket.write('GET / HTTP/1.1\r\nHo')
  const started = Date.now()
  await within(once(socket, 'close'), 10_000, 'the listener cut the connection')
  const ms = Date.now() - started
  t.ok(ms >= 300 && ms < 5_000, `cut after ${ms} ms (requestHeadersMs 500)`)
})

t.test('a reload changes the hosts redirected; answers are counted', async t => {
  writeFileSync(configFile, JSON.stringify(settings(['c.test'])))
  const r = await admin(adminPort, '/reload', 'POST')
  t.equal(r.status, 200, r.body)
  t.equal(status(await exchange('GET / HTTP/1.1\r\nHost: c.test\r\n\r\n')), 308, 'the new route\'s host')
  t.equal(status(await exchange('GET / HTTP/1.1\r\nHost: a.test\r\n\r\n')), 404, 'the old one no longer')
  const text = await adminMetrics(adminPort)
  t.ok(metric(text, 'edge_http_redirects_total', { outcome: 'redirected' }) >= 5, 'redirects counted (both workers summed)')
  t.ok(metric(text, 'edge_http_redirects_total', { outcome: 'unknown_host' }) >= 3)
  t.ok(metric(text, 'edge_http_redirects_total', { outcome: 'bad_request' }) >= 4, 'Node\'s own 400s are not counted, the listener\'s are')
})

t.test('the Location: 443 left out, IPv6 in brackets; the port must not be another listener\'s', async t => {
  t.equal(httpsLocation('a.test', 443, '/x'), 'https://a.test/x')
  t.equal(httpsLocation('[::1]', 8443, '/'), 'https://[::1]:8443/')
  t.throws(() => validateConfig({ ...settings(['a.test']), listen: { host: '0.0.0.0', port: 8080 }, httpRedirect: { port: 8080 } }, { baseDir: home }),
    /httpRedirect\.port: 8080 is also listen\.port/)
})
