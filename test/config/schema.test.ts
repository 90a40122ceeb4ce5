// The one config schema: it is valid JSON Schema, the defaults come from it, the reference tables
// of docs/configuration.md are generated from it (and fail here when stale), and the example
// config of that page validates.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { Ajv } from 'ajv'
import { configDefaults, EdgeConfigSchema, validateConfig } from '../../src/config/index.js'
import { defaultsOf } from '../../src/config/defaults.js'
import { GENERATE_COMMAND, renderConfigDocs } from '../../src/config/docs.js'
import { compileSchema } from '../../src/config/schema-validator.js'
import { ROOT } from '../helpers/paths.js'
import { problemsOf } from '../helpers/config.js'

const DOC = join(ROOT, 'docs', 'configuration.md')

const minimal = (): Record<string, unknown> => ({
  certificates: [{ name: 'a', serverNames: ['a.test'], files: [{ cert: 'a.crt', key: 'a.keyref' }] }],
  routes: [{ upstream: 'http://127.0.0.1:8080' }]
})

t.test('the schema is valid JSON Schema and compiles in strict mode', async t => {
  const ajv = new Ajv({ strict: true, allowUnionTypes: true })
  for (const keyword of ['check', 'transform', 'renamed', 'docDefault']) ajv.addKeyword(keyword)
  t.ok(ajv.validateSchema(EdgeConfigSchema), JSON.stringify(ajv.errors))
  t.doesNotThrow(() => compileSchema(EdgeConfigSchema, { checkSchema: true }))
})

t.test('defaults are the schema\'s and are what a minimal config gets', async t => {
  const config = validateConfig(minimal(), { baseDir: '/etc/keyedge' })
  t.same(config.listen, configDefaults.listen)
  t.same({ ...config.tls, defaultCertificate: null }, configDefaults.tls)
  t.equal(config.shutdownGraceMs, configDefaults.shutdownGraceMs)
  const admin = validateConfig({ ...minimal(), admin: {} }, { baseDir: '/' }).admin
  t.same(admin, defaultsOf({ ...EdgeConfigSchema.properties.admin, default: {} }))
  t.same(configDefaults.listen, { host: '0.0.0.0', port: 8443 })
  t.equal(configDefaults.reloadDebounceMs, 200, 'fixed settings stay beside them')
})

t.test('the input document is not changed by validation', async t => {
  const raw = minimal()
  const before = JSON.stringify(raw)
  validateConfig(raw, { baseDir: '/' })
  t.equal(JSON.stringify(raw), before)
})

t.test('values are normalized as the schema says', async t => {
  const raw = minimal()
  raw.certificates = [{ name: 'a', serverNames: ['A.Test.'], files: [{ cert: 'c/a.crt', key: '/abs/a.keyref' }] }]
  raw.routes = [{ host: 'API.Example.com', upstream: 'http://127.0.0.1:8080/' }]
  raw.keyd = {}
  raw.token = {
    issuer: 'https://t.test///',
    keys: [{ name: 'old', role: 'retired', retiredAt: '2026-01-01T00:00:00Z' }, { name: 'k' }],
    callers: [{ name: 'c', secretSha256: 'AB:'.repeat(31) + 'AB', secretFile: 's/c.secret', audiences: ['x'] }]
  }
  const config = validateConfig(raw, { baseDir: '/etc/keyedge' })
  t.same(config.certificates[0], { name: 'a', serverNames: ['a.test'], files: [{ cert: '/etc/keyedge/c/a.crt', key: '/abs/a.keyref' }] })
  t.equal(config.routes[0]?.host, 'api.example.com')
  t.equal(config.routes[0]?.upstream, 'http://127.0.0.1:8080')
  t.equal(config.token?.issuer, 'https://t.test')
  t.same(config.token?.keys[0], { name: 'old', role: 'retired', algorithm: 'ES256', retiredAtMs: Date.parse('2026-01-01T00:00:00Z') })
  t.equal(config.token?.callers[0]?.secretSha256, 'ab'.repeat(32), 'hex without colons, lower-case')
  t.equal(config.token?.callers[0]?.secretFile, '/etc/keyedge/s/c.secret')
  t.equal(config.token?.callers[0]?.maxLifetimeSeconds, 3600, 'a caller\'s lifetime defaults to the section\'s')
})

t.test('unknown keys: migration hints, did-you-mean, else the known keys', async t => {
  const raw = minimal()
  raw.keyd = { socketPath: 'x', timeoutMS: 5 }
  raw.admin = { listen: 1, drainDelay: 5 }
  raw.token = { issuer: 'https://t.test', key: { name: 'k', poll: 1 }, callers: [{ name: 'c', secretSha256: 'ab'.repeat(32), audiences: ['x'], audience: 'x' }], clients: [] }
  t.same(problemsOf(raw), [
    'keyd.socketPath: unknown key, use "socket"',
    'keyd.timeoutMS: unknown key, did you mean "timeoutMs"?',
    'admin.listen: unknown key, use "host" and "port"',
    'admin.drainDelay: unknown key, use "drainDelayMs" (milliseconds)',
    'token.clients: unknown key, use "callers"',
    'token.key.poll: unknown key, use "pollIntervalSeconds"',
    'token.callers[0].audience: unknown key, use "audiences" (a list)'
  ])
  t.same(problemsOf({ ...minimal(), log: { lvl: 'x' } }), ['log.lvl: unknown key (known keys: level)'])
})

t.test('one problem per field: the most basic one', async t => {
  t.same(problemsOf({ ...minimal(), workers: '3', tls: { minVersion: 3, ciphers: '' } }), [
    'workers: must be an integer, got a string',
    'tls.minVersion: must be a non-empty string, got a number',
    'tls.ciphers: must be a non-empty string, got an empty string'
  ])
  t.same(problemsOf({ ...minimal(), tls: { defaultCertificate: 7 } }), ['tls.defaultCertificate: must be a non-empty string, got a number'])
  t.same(problemsOf({ ...minimal(), tls: { ciphers: 'NOT-A-CIPHER' } }), ['tls.ciphers: OpenSSL accepts none of these cipher names'])
  t.same(problemsOf({ ...minimal(), tls: { groups: 'X25519:NOT-A-GROUP' } }), ['tls.groups: OpenSSL refuses the group list "X25519:NOT-A-GROUP" (names are separated by ":", e.g. "X25519MLKEM768:X25519:P-256")'])
  t.same(problemsOf({ ...minimal(), tls: { groups: 'X25519MLKEM768:P-256' } }), [])
  t.same(problemsOf({ ...minimal(), routes: [{ upstream: 'http://a.test/path' }] }),
    ['routes[0].upstream: must be an origin only (scheme://host[:port]), without path, query or credentials'])
})

t.test('listeners on one port are refused: same host, wildcard, localhost', async t => {
  const at = (listen: unknown, admin: unknown, token?: unknown): string[] => problemsOf({
    ...minimal(),
    listen,
    admin,
    ...(token !== undefined ? { keyd: {}, token: { issuer: 'https://t.test', keys: [{ name: 'k' }], callers: [{ name: 'c', secretSha256: 'ab'.repeat(32), audiences: ['x'] }], listen: token } } : {})
  })
  t.same(at({ port: 9443 }, {}), ['admin.port: 9443 is also listen.port: two listeners cannot share a port'], 'listen on 0.0.0.0 (the default) takes the port on loopback too')
  t.same(at({ host: '::', port: 7000 }, { port: 7000 }), ['admin.port: 7000 is also listen.port: two listeners cannot share a port'])
  t.same(at({ host: '127.0.0.1', port: 7000 }, { host: 'localhost', port: 7000 }), ['admin.port: 7000 is also listen.port: two listeners cannot share a port'])
  t.same(at({ host: '127.0.0.2', port: 7000 }, { host: '127.0.0.1', port: 7000 }), [], 'two loopback addresses do not collide')
  t.same(at({ port: 0 }, { port: 0 }), [], 'port 0 picks a free port each')
  t.same(at({ port: 7000 }, { port: 7001 }, { host: '127.0.0.1', port: 7001 }), ['token.listen.port: 7001 is also admin.port: two listeners cannot share a port'])
})

t.test('docs/configuration.md reference tables are generated from the schema', async t => {
  const current = readFileSync(DOC, 'utf8')
  const rendered = renderConfigDocs(current)
  t.ok(current === rendered, `docs/configuration.md tables match the schema (when stale: run \`${GENERATE_COMMAND}\`)`)
  for (const section of ['(root)', 'keyd', 'tls', 'certificates[]', 'admin', 'token', 'token.keys[]', 'token.callers[]', 'routes[]']) {
    t.match(current, `<!-- BEGIN GENERATED config table ${section} -->`, `a table for ${section}`)
  }
  t.match(rendered, '| `keyd.timeoutMs` | integer 1–60000 | `1000` |', 'a row holds the bounds and the default')
  const stale = current.replace('| `keyd.timeoutMs` | integer 1–60000 | `1000` |', '| `keyd.timeoutMs` | integer 1–60000 | `999` |')
  t.not(renderConfigDocs(stale), stale, 'a hand-edited row is rewritten')
})

t.test('the example config of docs/configuration.md is valid', async t => {
  const example = /```json\n([\s\S]*?)```/.exec(readFileSync(DOC, 'utf8'))?.[1]
  t.ok(example !== undefined)
  t.same(problemsOf(JSON.parse(example ?? '{}')), [])
})
