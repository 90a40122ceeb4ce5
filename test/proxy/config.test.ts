// Config validation: defaults, every problem listed with its field path, unknown keys with hints,
// relative paths resolved against the config file, and the `keyedge validate` command.
import { once } from 'node:events'
import { mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { configDefaults, loadConfig, validateConfig } from '../../src/config/index.js'
import { tempHome } from '../helpers/paths.js'
import { spawnCli } from '../helpers/processes.js'
import { selfSigned } from '../helpers/proxy-fixtures.js'
import { defined } from '../helpers/defined.js'
import { problemsOf } from '../helpers/config.js'

const minimal = (): Record<string, unknown> => ({
  certificates: [{ name: 'localhost', serverNames: ['localhost'], files: [{ cert: 'certs/a.crt', key: 'certs/a.keyref' }] }],
  routes: [{ upstream: 'http://127.0.0.1:8080' }]
})

/** The first file pair of the first certificate entry of a raw config, to edit. */
const firstFile = (m: Record<string, unknown>): { key: string } =>
  defined(defined((m.certificates as Array<{ files: Array<{ key: string }> }>)[0], 'a certificate entry').files[0], 'a file pair')

t.test('defaults fill what the file leaves out', async t => {
  const config = validateConfig(minimal(), { baseDir: '/etc/keyedge' })
  t.same(config.listen, configDefaults.listen)
  t.equal(config.workers, 0)
  t.equal(config.keyd, undefined, 'no keyd section, no bridge')
  t.equal(config.tls.defaultCertificate, 'localhost', 'the first certificate is the default')
  t.equal(config.tls.ciphers, configDefaults.tls.ciphers)
  t.same(config.routes[0], {
    host: '*', pathPrefix: '/', upstream: 'http://127.0.0.1:8080', timeoutMs: 30_000, connectTimeoutMs: 5_000,
    // Upstream pool defaults (a single upstream is a pool of one).
    balance: { policy: 'round_robin', hashOn: 'client', hashKey: null },
    outlier: { consecutiveFailures: 5, baseEjectionMs: 10_000, maxEjectionMs: 300_000, maxEjectedPercent: 50 },
    retry: { attempts: 1, retryOn: [502, 503], budgetPercent: 20, minRetries: 3 },
    // Edge HTTP defaults: in the access log, no body, rate or WebSocket limit, WebSockets idle 5 min.
    accessLog: true, maxBodyBytes: 0, requestsPerSecondPerClient: 0, requestBurstPerClient: 0, webSocketsPerClient: 0, requestHeaders: { set: [], remove: [] }, responseHeaders: { set: [], remove: [] }, webSocketIdleMs: 300_000,
    // HTTP/1.1 to the targets unless told h2c or h2.
    upstreamProtocol: 'http1',
    // The client's Host goes upstream.
    upstreamHost: 'client'
  })
  t.equal(config.routes[0]?.rewritePrefix, undefined, 'the path goes upstream unchanged')
  t.equal(config.http2, true)
  t.equal(config.log.level, 'info')
  const withKeyd = validateConfig({ ...minimal(), keyd: { timeoutMs: 250 } }, { baseDir: '/etc/keyedge' })
  t.same(withKeyd.keyd, { socket: '/etc/keyedge/keyd.sock', clientName: 'proxy', secretFile: '/etc/keyedge/clients/proxy.secret', timeoutMs: 250 })
})

t.test('every problem is listed, each naming its field, in the order of the fields', async t => {
  const raw = {
    listen: { port: 'eighty' },
    workers: -1,
    tls: { minVersion: 'TLSv1.0', strictSni: 'yes', defaultCertificate: 'nope' },
    certificates: [
      { name: 'a', serverNames: [], files: [{ cert: 'a.crt' }] },
      { name: 'a', serverNames: ['bad name!'], files: [] }
    ],
    routes: [
      { upstream: 'http://127.0.0.1:1' },
      { upstream: 'ftp://example.com', pathPrefix: 'api', timeoutMs: 0 },
      { host: '*', pathPrefix: '/', upstream: 'http://127.0.0.1:2' }
    ],
    trustedProxies: ['10.0.0.0/33', 'localhost'],
    log: { level: 'loud' }
  }
  const problems = problemsOf(raw)
  const expected = [
    'listen.port: must be an integer, got a string',
    'workers: must be between 0 and 1024, got -1',
    'tls.minVersion: must be one of "TLSv1.2", "TLSv1.3", got "TLSv1.0"',
    'tls.strictSni: must be true or false, got a string',
    'tls.defaultCertificate: "nope" is not the name of any entry of "certificates"',
    'certificates[0].serverNames: must not be empty',
    'certificates[0].files[0].key: is required',
    'certificates[1].name: "a" is used by another certificate entry',
    'certificates[1].serverNames[0]: "bad name!" is not a host name, a "*." wildcard or an IP address',
    'certificates[1].files: must not be empty',
    'routes[1].pathPrefix: must start with "/" and hold no "?", "#" or spaces',
    'routes[1].upstream: must be an http:// or https:// URL',
    'routes[1].timeoutMs: must be between 1 and 3600000, got 0',
    'routes[2]: same host and pathPrefix as routes[0]',
    'trustedProxies[0]: "10.0.0.0/33" is not an IP address or CIDR (e.g. "10.0.0.0/8", "::1")',
    'trustedProxies[1]: "localhost" is not an IP address or CIDR (e.g. "10.0.0.0/8", "::1")',
    'log.level: must be one of "fatal", "error", "warn", "info", "debug", "trace", "silent", got "loud"'
  ]
  t.same(problems, expected)
  t.same(problemsOf({}), ['certificates: is required', 'routes: is required'])
  t.same(problemsOf([]), ['(root): must be an object, got an array'])
})

t.test('unknown keys are rejected with a hint', async t => {
  const raw = minimal()
  raw.upstreams = ['http://x']
  raw.http2s = true
  const route = defined((raw.routes as Array<Record<string, unknown>>)[0], 'a route')
  route.timeout = 5
  route.upstrem = 'x'
  raw.tls = { sessionTimeout: 10, zzz: 1 }
  t.same(problemsOf(raw), [
    'upstreams: unknown key, each route has its own "upstream": see "routes"',
    'http2s: unknown key, did you mean "http2"?',
    'tls.sessionTimeout: unknown key, use "sessionTimeoutSeconds"',
    'tls.zzz: unknown key (known keys: minVersion, maxVersion, ciphers, groups, strictSni, defaultCertificate, sessionTimeoutSeconds, sessionTickets, ticketRotationSeconds, ticketPreviousKeys, sessionCacheSize, contextCacheSize, ocspStapling, ocspResponderTimeoutMs)',
    'routes[0].timeout: unknown key, use "timeoutMs" (milliseconds)',
    'routes[0].upstrem: unknown key, did you mean "upstream"?'
  ])
})

t.test('loadConfig resolves relative paths against the config file and checks files are readable', async t => {
  const home = tempHome()
  t.teardown(() => rmSync(home, { recursive: true, force: true }))
  mkdirSync(join(home, 'etc', 'certs'), { recursive: true })
  writeFileSync(join(home, 'etc', 'certs', 'a.crt'), 'x')
  writeFileSync(join(home, 'etc', 'certs', 'a.keyref'), 'x')
  const file = join(home, 'etc', 'proxy.json')
  writeFileSync(file, JSON.stringify({ ...minimal(), keyd: { socket: '../run/keyd.sock' } }))
  const config = loadConfig(file)
  t.same(config.certificates[0]?.files[0], { cert: join(home, 'etc', 'certs', 'a.crt'), key: join(home, 'etc', 'certs', 'a.keyref') })
  t.equal(config.keyd?.socket, join(home, 'run', 'keyd.sock'))
  t.equal(config.file, file)

  const missing = join(home, 'etc', 'missing.json')
  const m = minimal()
  firstFile(m).key = 'certs/nothing.keyref'
  writeFileSync(missing, JSON.stringify(m))
  t.throws(() => loadConfig(missing), {
    code: 'EDGE_ERR_CONFIG_INVALID',
    problems: [`certificates[0].files[0].key: cannot read ${join(home, 'etc', 'certs', 'nothing.keyref')} (ENOENT)`]
  })
  writeFileSync(missing, '{ "routes": ')
  t.throws(() => loadConfig(missing), { code: 'EDGE_ERR_CONFIG_INVALID' })
})

t.test('keyedge validate prints "config OK" or every problem', async t => {
  const home = tempHome()
  t.teardown(() => rmSync(home, { recursive: true, force: true }))
  mkdirSync(join(home, 'certs'))
  selfSigned(join(home, 'certs'), 'a', ['localhost'])
  const good = join(home, 'good.json')
  const m = minimal()
  firstFile(m).key = 'certs/a.key'
  writeFileSync(good, JSON.stringify(m))
  const bad = join(home, 'bad.json')
  writeFileSync(bad, JSON.stringify({ ...minimal(), workers: 'many', port: 1 }))

  const ok = spawnCli(['validate', '--config', good])
  const [okCode] = await once(ok.proc, 'close') as [number]
  t.equal(okCode, 0)
  t.same(ok.lines, ['config OK'])

  const ko = spawnCli(['validate', '--config', bad])
  const [koCode] = await once(ko.proc, 'close') as [number]
  t.equal(koCode, 1)
  t.same(ko.lines, ['port: unknown key, moved to "listen.port"', 'workers: must be an integer, got a string'])
})
