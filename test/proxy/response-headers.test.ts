// A route's `responseHeaders` and `requestHeaders` through a real `keyedge proxy`: removed, then set (replacing the
// upstream's own), on HTTP/1.1 and HTTP/2, on the direct paths (an HTTP/1.1 target) and on the
// compatibility path (an h2c target); other routes and the proxy's own answers are left alone; names
// and values are checked at load.
import { rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { createServer as createH2cServer, type ClientHttp2Session } from 'node:http2'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import t from 'tap'
import { validateConfig } from '../../src/config/index.js'
import { tempHome } from '../helpers/paths.js'
import { spawnCli } from '../helpers/processes.js'
import { selfSigned } from '../helpers/proxy-fixtures.js'
import { viaH1 as edgeViaH1, viaH2 as edgeViaH2, type Reply } from '../helpers/route-edge.js'

const UPSTREAM_HEADERS = { server: 'upstream/1.0', 'x-powered-by': 'php', 'strict-transport-security': 'max-age=1', 'x-keep': 'yes', 'content-type': 'text/plain' }
// `/req…`: answers with the request headers it got, as JSON.
const h1 = createServer((req, res) => {
  if (req.url?.startsWith('/req') === true) {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify(req.headers))
    return
  }
  res.writeHead(200, UPSTREAM_HEADERS)
  res.end('ok')
})
await new Promise<void>(resolve => h1.listen(0, '127.0.0.1', resolve))
const h2c = createH2cServer()
h2c.on('stream', stream => { stream.respond({ ':status': 200, ...UPSTREAM_HEADERS }); stream.end('ok') })
await new Promise<void>(resolve => h2c.listen(0, '127.0.0.1', resolve))
const origin = (s: { address: () => unknown }): string => `http://127.0.0.1:${(s.address() as AddressInfo).port}`

const home = tempHome('keyedge-resp-headers-')
const cert = selfSigned(home, 'localhost', ['localhost'])
const rules = {
  set: [{ name: 'Strict-Transport-Security', value: 'max-age=31536000; includeSubDomains' }, { name: 'x-frame-options', value: 'DENY' }],
  remove: ['server', 'X-Powered-By']
}
const settings = (responseHeaders: unknown = rules): Record<string, unknown> => ({
  listen: { host: '127.0.0.1', port: 0 },
  workers: 1,
  certificates: [{ name: 'localhost', serverNames: ['localhost'], files: [{ cert: cert.cert, key: cert.key }] }],
  routes: [
    { pathPrefix: '/h1', upstream: origin(h1), responseHeaders },
    { pathPrefix: '/h2c', upstream: origin(h2c), upstreamProtocol: 'h2c', responseHeaders },
    { pathPrefix: '/plain', upstream: origin(h1) },
    { pathPrefix: '/req', upstream: origin(h1), requestHeaders: { set: [{ name: 'X-Api-Key', value: 'from-the-proxy' }], remove: ['cookie'] } }
  ],
  admin: { port: 0, drainDelayMs: 0 }
})
const configFile = join(home, 'proxy.json')
writeFileSync(configFile, JSON.stringify(settings()))
const proxy = spawnCli(['proxy', '--config', configFile])
const sessions: ClientHttp2Session[] = []
t.teardown(async () => {
  for (const s of sessions) s.destroy()
  await proxy.stop('SIGKILL')
  h1.close()
  h2c.close()
  rmSync(home, { recursive: true, force: true })
})
const port = (await proxy.waitFor(o => o.msg === 'proxy listening', 30_000)).port as number

const SENT = { cookie: 'session=secret', 'x-api-key': 'from-the-client' }

// The client's own headers on every request: the requestHeaders rules below replace or remove them.
const viaH1 = async (path: string): Promise<Reply> => await edgeViaH1({ port }, cert, path, SENT)
const viaH2 = async (path: string): Promise<Reply> => await edgeViaH2({ port, sessions }, cert, path, SENT)

const changed = (headers: Record<string, unknown>): Record<string, unknown> => ({
  hsts: headers['strict-transport-security'], frame: headers['x-frame-options'], server: headers.server, powered: headers['x-powered-by'], keep: headers['x-keep']
})
const WANT = { hsts: 'max-age=31536000; includeSubDomains', frame: 'DENY', server: undefined, powered: undefined, keep: 'yes' }

t.test('removed, then set (replacing the upstream\'s own), on every path', async t => {
  for (const [what, get] of [['HTTP/1.1, direct path', async () => await viaH1('/h1/x')], ['HTTP/2, direct path', async () => await viaH2('/h1/x')],
    ['HTTP/1.1, h2c target', async () => await viaH1('/h2c/x')], ['HTTP/2, h2c target (compatibility path)', async () => await viaH2('/h2c/x')]] as const) {
    const r = await get()
    t.equal(r.status, 200, what)
    t.same(changed(r.headers), WANT, what)
  }
})

t.test('another route, and the proxy\'s own answers, are left as they are', async t => {
  const plain = await viaH2('/plain')
  t.same(changed(plain.headers), { hsts: 'max-age=1', frame: undefined, server: 'upstream/1.0', powered: 'php', keep: 'yes' })
  const own = await viaH1('/nowhere')
  t.equal(own.status, 404)
  t.equal(own.headers['strict-transport-security'], undefined)
})

const problemsOf = (route: Record<string, unknown>): string => {
  try {
    validateConfig({ ...settings(), routes: [{ upstream: origin(h1), ...route }] }, { baseDir: home })
    return ''
  } catch (err) {
    return String(err)
  }
}

t.test('requestHeaders: removed, then set (replacing the client\'s own), before the request goes upstream', async t => {
  for (const [what, get] of [['HTTP/1.1', async () => await viaH1('/req')], ['HTTP/2', async () => await viaH2('/req')]] as const) {
    const seen = JSON.parse((await get()).body) as Record<string, string>
    t.equal(seen['x-api-key'], 'from-the-proxy', `${what}: set`)
    t.equal(seen.cookie, undefined, `${what}: removed`)
    t.equal(seen['x-forwarded-for'], '127.0.0.1', `${what}: the forwarding headers are still the proxy's`)
  }
  const other = JSON.parse((await viaH1('/req/deeper')).body) as Record<string, string>
  t.equal(other['x-api-key'], 'from-the-proxy', 'any path under the route')
  t.match(problemsOf({ requestHeaders: { set: [{ name: 'x-forwarded-for', value: '1.2.3.4' }] } }), /"x-forwarded-for" is a header the proxy sets or removes itself/, 'the forwarding headers cannot be named')
  t.match(problemsOf({ requestHeaders: { set: [{ name: 'host', value: 'elsewhere' }] } }), /"host" is a header the proxy sets or removes itself/)
})

t.test('names and values are checked at load', async t => {
  const problems = (responseHeaders: unknown): string => {
    try {
      validateConfig(settings(responseHeaders), { baseDir: home })
      return ''
    } catch (err) {
      return String(err)
    }
  }
  t.match(problems({ set: [{ name: 'x-a', value: 'one\r\nx-b: two' }] }), /responseHeaders\.set\[0\]\.value: must be printable text without line breaks/)
  t.match(problems({ set: [{ name: 'content-length', value: '1' }] }), /"content-length" is a header the proxy sets or removes itself/)
  t.match(problems({ remove: ['bad name'] }), /is not an HTTP header name/)
  t.match(problems({ add: [] }), /use "set"/)
  t.equal(problems({ set: [{ name: 'x-ok', value: 'a\tb' }] }), '')
})
