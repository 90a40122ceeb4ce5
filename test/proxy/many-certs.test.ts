// Many certificate entries in one worker (in process, 2,000 entries sharing one key): every entry is
// checked at load, but a TLS context is built only for the names handshakes ask for, at most
// tls.contextCacheSize of them; a reload reads and checks only the entries whose files changed,
// rebuilds only those, and serves the bytes it checked even after the files changed on disk.
import { X509Certificate } from 'node:crypto'
import { once } from 'node:events'
import { readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { connect as tlsConnect } from 'node:tls'
import t from 'tap'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { validateConfig } from '../../src/config/index.js'
import { startProxyServer } from '../../src/proxy/server.js'
import { describeEntry } from '../../src/tls/cert-info.js'
import { hostOf, makeManyCerts, reissue } from '../helpers/many-certs.js'
import { tempHome } from '../helpers/paths.js'

const ENTRIES = 2000
const CACHE = 50
const home = tempHome('keyedge-many-certs-')
t.teardown(() => rmSync(home, { recursive: true, force: true }))
const certs = makeManyCerts(join(home, 'certs'), ENTRIES, ['ec'])
const ca = readFileSync(certs.caFile)
const entries = Array.from({ length: ENTRIES }, (_, i) => ({ name: `e${i}`, serverNames: [hostOf(i)], files: [{ cert: certs.certFile('ec', i), key: certs.keys.ec }] }))
const config = validateConfig({
  listen: { host: '127.0.0.1', port: 0 },
  tls: { strictSni: true, contextCacheSize: CACHE, sessionTickets: false, sessionCacheSize: 0 },
  certificates: entries,
  routes: [{ upstream: 'http://127.0.0.1:1' }]
}, { baseDir: home })
const registry = new Registry()
const t0 = Date.now()
const server = await startProxyServer({ config, log: pino({ level: 'silent' }), registry })
const startMs = Date.now() - t0
t.teardown(async () => await server.close(100))

async function metric (name: string): Promise<number> {
  const m = registry.getSingleMetric(name)
  if (m === undefined) return NaN
  return (await m.get()).values.reduce((sum, v) => sum + v.value, 0)
}

/** One TLS 1.3 handshake for host `i`; the serial of the certificate served. */
async function serialOf (i: number): Promise<string> {
  const socket = tlsConnect({ host: '127.0.0.1', port: server.port, servername: hostOf(i), ca, minVersion: 'TLSv1.3' })
  try {
    await once(socket, 'secureConnect')
    return socket.getPeerCertificate().serialNumber
  } finally {
    socket.destroy()
  }
}

t.test('start: every entry checked and indexed, one context built (the default entry)', async t => {
  t.equal(await metric('edge_certificate_entries'), ENTRIES)
  t.equal(await metric('edge_tls_contexts_built_total'), 1, 'only the default entry is built at start')
  t.equal(await metric('edge_tls_contexts_cached'), 1)
  t.comment(`${ENTRIES} entries checked and listening in ${startMs} ms`)
})

t.test('a context is built on the first handshake for a name, once', async t => {
  const first = await serialOf(7)
  t.equal(await metric('edge_tls_contexts_built_total'), 2, 'built for the first handshake')
  t.equal(await serialOf(7), first, 'the same certificate again')
  for (const i of [8, 9, 10]) await serialOf(i)
  t.equal(await metric('edge_tls_contexts_built_total'), 5, 'one per name asked for')
  t.equal(await metric('edge_tls_contexts_cached'), 5)
  await t.rejects(serialOf(ENTRIES + 5), 'strict SNI: a name of no entry is refused (nothing built)')
  t.equal(await metric('edge_tls_contexts_built_total'), 5)
})

t.test('at most tls.contextCacheSize entries keep their contexts; the least recently used go first', async t => {
  for (let i = 100; i < 100 + CACHE + 10; i++) await serialOf(i)
  t.equal(await metric('edge_tls_contexts_cached'), CACHE, 'bounded')
  t.ok(await metric('edge_tls_context_evictions_total') >= 10, 'evictions counted')
  const built = await metric('edge_tls_contexts_built_total')
  await serialOf(100 + CACHE + 9)
  t.equal(await metric('edge_tls_contexts_built_total'), built, 'a recent one is still built')
  await serialOf(7)
  t.equal(await metric('edge_tls_contexts_built_total'), built + 1, 'an evicted one is built again')
})

t.test('a reload reads and rebuilds only the changed entry', async t => {
  const warm = [7, 100 + CACHE + 9]
  for (const i of warm) await serialOf(i)
  const before = await serialOf(3)
  const renewed = reissue(certs, 'ec', 3)
  writeFileSync(certs.certFile('ec', 3), renewed)
  const r0 = Date.now()
  const plan = server.reload()
  const prepareMs = Date.now() - r0
  t.equal(plan.ok, true)
  t.same(plan.results, [{ name: 'e3', ok: true }], 'only the changed entry is read and checked')
  t.equal(plan.unchanged, ENTRIES - 1)
  const built = await metric('edge_tls_contexts_built_total')
  plan.commit()
  t.comment(`reload of ${ENTRIES} entries, one changed: prepared in ${prepareMs} ms`)
  const after = await serialOf(3)
  t.not(after, before, 'the renewed certificate is served')
  t.equal(await metric('edge_tls_contexts_built_total'), built + 1, 'its context was built again')
  for (const i of warm) await serialOf(i)
  t.equal(await metric('edge_tls_contexts_built_total'), built + 1, 'unchanged entries kept their contexts')
})

t.test('a file watcher\'s list of changed files limits the reload to the entries naming them', async t => {
  writeFileSync(certs.certFile('ec', 4), reissue(certs, 'ec', 4))
  writeFileSync(certs.certFile('ec', 5), reissue(certs, 'ec', 5))
  const plan = server.reload(undefined, undefined, [certs.certFile('ec', 4)])
  t.same([plan.results, plan.unchanged], [[{ name: 'e4', ok: true }], ENTRIES - 1], 'e5 is not looked at')
  plan.commit()
  const full = server.reload()
  t.same(full.results, [{ name: 'e5', ok: true }], 'a reload without the list finds e5')
  full.commit()
})

t.test('a broken entry is refused at reload, and the served one keeps serving what was checked', async t => {
  // Entry 1500 was never asked for: its context does not exist yet, and its file is spoiled below.
  const cold = 1500
  const cases: Array<[string, string, string]> = [
    ['garbage', 'not a certificate\n', 'EDGE_ERR_CERT_LOAD'],
    ['a certificate of another key', reissue(certs, 'ec', cold, { otherKey: true }), 'EDGE_ERR_CERT_KEY_MISMATCH'],
    ['a truncated certificate', reissue(certs, 'ec', cold).slice(0, 300) + '\n-----END CERTIFICATE-----\n', 'EDGE_ERR_CERT_LOAD']
  ]
  const original = readFileSync(certs.certFile('ec', cold))
  const originalSerial = new X509Certificate(original).serialNumber
  for (const [what, content, code] of cases) {
    writeFileSync(certs.certFile('ec', cold), content)
    const plan = server.reload()
    t.equal(plan.ok, false, `${what}: refused`)
    t.match(plan.results, [{ name: `e${cold}`, ok: false, code }], `${what}: ${code}`)
    plan.abort()
    t.equal(await serialOf(cold), originalSerial, `${what}: the never-built entry is built from the bytes checked at load, not from the file`)
  }
  writeFileSync(certs.certFile('ec', cold), original)
  const plan = server.reload()
  t.same([plan.ok, plan.results], [true, []], 'the original bytes back: unchanged')
})

t.test('the certificate view reads the checked bytes back', async t => {
  const entry = server.certs.get('e42')
  t.ok(entry)
  if (entry === undefined) return
  const info = describeEntry(server.certs, entry)
  t.match(info, { name: 'e42', pairs: [{ names: [hostOf(42)], keyType: 'ec', keyReference: null, certFile: certs.certFile('ec', 42), keyFile: certs.keys.ec }] })
})
