// OCSP stapling against real `openssl ocsp` responders, with a test CA and a delegated responder
// certificate made at test time: a proxy staples a verified `good` response (openssl s_client
// -status), does not staple a revoked certificate (counted and logged) nor an `unknown` answer,
// keeps handshaking without a staple when the responder is down, drops a cached response once it
// expires (a responder whose clock runs behind, under libfaketime), refuses a response signed by a
// certificate not issued for OCSP signing, staples a response file (files[].ocsp) without asking a
// responder and refuses one for another certificate, follows a reload that turns stapling off and
// on, and attaches no 'OCSPRequest' listener to entries without an OCSP URL (nor to an entry before
// it has a response).
import t from 'tap'
import { execFile } from 'node:child_process'
import { rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createServer as createTlsServer, type TlsOptions } from 'node:tls'
import { Registry } from 'prom-client'
import { validateConfig } from '../../src/config/index.js'
import { createLogger } from '../../src/logger.js'
import { CertStore } from '../../src/tls/cert-store.js'
import { ContextCache } from '../../src/tls/context-cache.js'
import { OcspStapler } from '../../src/tls/ocsp-stapler.js'
import { adminMetrics, metric } from '../helpers/http-front.js'
import { issueLeaf, makeOcspPki, saveResponse, startResponder } from '../helpers/ocsp-pki.js'
import { tempHome } from '../helpers/paths.js'
import { spawnCli } from '../helpers/processes.js'
import { refusedUrl } from '../helpers/proxy-fixtures.js'
import { until } from '../helpers/wait.js'

const home = tempHome('keyedge-ocsp-')
t.teardown(() => rmSync(home, { recursive: true, force: true }))
const pki = makeOcspPki(home, { good: ['1001', '1003', '1004', '1005', '1006', '1007', '1008'], revoked: ['1002'] })
const responder = await startResponder(pki)
t.teardown(responder.stop)
// Its responses are valid for 60 s from its clock, 48 s behind ours: 12 s after each fetch.
const lagging = await startResponder(pki, 48)
t.teardown(lagging.stop)
const down = await refusedUrl()
const plain = issueLeaf(pki, 'plain.test', '1005', undefined)
// Signs with a certificate the CA issued for serverAuth, not OCSP signing: what it says must not be believed.
const impostor = await startResponder(pki, 0, { cert: plain.certFile, key: plain.keyFile })
t.teardown(impostor.stop)

const good = issueLeaf(pki, 'good.test', '1001', responder.url)
const revoked = issueLeaf(pki, 'revoked.test', '1002', responder.url)
const expiring = issueLeaf(pki, 'expiring.test', '1003', lagging.url)
const unreachable = issueLeaf(pki, 'down.test', '1004', down)
const misSigned = issueLeaf(pki, 'missigned.test', '1006', impostor.url)
// Response files (nginx ssl_stapling_file) for leaves that name no responder: one right, one for another certificate.
const filed = issueLeaf(pki, 'filed.test', '1007', undefined)
const wrongFile = issueLeaf(pki, 'wrongfile.test', '1008', undefined)
// A serial the responder's index does not hold: it answers `unknown`.
const stranger = issueLeaf(pki, 'unknown.test', '1009', responder.url)
saveResponse(pki, filed, responder.url, join(home, 'filed.der'))
saveResponse(pki, plain, responder.url, join(home, 'plain.der'))

const entry = (name: string, leaf: { chainFile: string, keyFile: string }): Record<string, unknown> =>
  ({ name, serverNames: [name], files: [{ cert: leaf.chainFile, key: leaf.keyFile }] })

/** One `openssl s_client -status` handshake with `name`; its whole output. */
async function status (port: number, name: string): Promise<string> {
  return await new Promise(resolve => {
    const c = execFile('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', name, '-status', '-CAfile', pki.caFile, '-verify_return_error'],
      { encoding: 'utf8', timeout: 10_000 }, (_err, stdout, stderr) => resolve(`${stdout}${stderr}`))
    c.stdin?.end()
  })
}
const stapledGood = (out: string): boolean => out.includes('OCSP Response Status: successful') && out.includes('Cert Status: good')
const handshook = (out: string): boolean => out.includes('Verify return code: 0 (ok)')
const noStaple = (out: string): boolean => out.includes('OCSP response: no response sent')

t.test('config: on by default, checked with field paths', async t => {
  const base = { certificates: [{ name: 'x', serverNames: ['x.test'], files: [{ cert: 'x', key: 'x' }] }], routes: [{ upstream: 'http://127.0.0.1:1' }] }
  const config = validateConfig(base, { baseDir: '/' })
  t.equal(config.tls.ocspStapling, true)
  t.equal(config.tls.ocspResponderTimeoutMs, 5000)
  t.throws(() => validateConfig({ ...base, tls: { ocspStapling: 'yes' } }, { baseDir: '/' }), /tls\.ocspStapling/)
  t.throws(() => validateConfig({ ...base, tls: { ocspResponderTimeoutMs: 10 } }, { baseDir: '/' }), /tls\.ocspResponderTimeoutMs/)
  t.throws(() => validateConfig({ ...base, tls: { sslStapling: true } }, { baseDir: '/' }), /ocspStapling/)
})

t.test('a proxy staples good responses only, and survives a responder that is down', async t => {
  const file = join(home, 'proxy.json')
  const writeConfig = (tls: Record<string, unknown>, plainOcsp?: string): void => writeFileSync(file, JSON.stringify({
    listen: { host: '127.0.0.1', port: 0 },
    workers: 1,
    tls: { defaultCertificate: 'good.test', ocspResponderTimeoutMs: 2000, ...tls },
    certificates: [entry('good.test', good), entry('revoked.test', revoked), entry('expiring.test', expiring), entry('down.test', unreachable),
      { ...entry('plain.test', plain), files: [{ cert: plain.chainFile, key: plain.keyFile, ...(plainOcsp !== undefined ? { ocsp: plainOcsp } : {}) }] },
      entry('missigned.test', misSigned),
      { ...entry('filed.test', filed), files: [{ cert: filed.chainFile, key: filed.keyFile, ocsp: join(home, 'filed.der') }] },
      { ...entry('wrongfile.test', wrongFile), files: [{ cert: wrongFile.chainFile, key: wrongFile.keyFile, ocsp: join(home, 'filed.der') }] },
      entry('unknown.test', stranger)],
    routes: [{ upstream: down }],
    admin: { port: 0, drainDelayMs: 0 },
    shutdownGraceMs: 200,
    log: { level: 'info' }
  }))
  writeConfig({})
  const proxy = spawnCli(['proxy', '--config', file])
  t.teardown(() => proxy.stop())
  const port = (await proxy.waitFor(o => o.msg === 'proxy listening', 30_000)).port as number
  const adminPort = (await proxy.waitFor(o => o.msg === 'admin listening', 10_000)).port as number

  // The default entry's context is built at start: its response is fetched then.
  await proxy.waitFor(o => o.msg === 'OCSP response stapled' && o.certificate === 'good.test', 15_000)
  const out = await status(port, 'good.test')
  t.ok(stapledGood(out), 'good.test: a verified good response is stapled')
  t.ok(handshook(out))
  t.match(out, /Responder Id: CN = keyedge OCSP test responder/, 'signed by the delegated responder')
  t.ok(noStaple(await status(port, 'plain.test')), 'no OCSP URL: nothing stapled')

  // The others are fetched when first used; that first client gets no staple.
  t.ok(handshook(await status(port, 'revoked.test')))
  const line = await proxy.waitFor(o => o.certificate === 'revoked.test' && o.status === 'revoked', 15_000)
  t.equal(line.level, 50, 'a revoked certificate is logged as an error')
  t.equal(line.responder, responder.url)
  const again = await status(port, 'revoked.test')
  t.ok(handshook(again) && noStaple(again), 'revoked.test: handshakes go on, nothing stapled')

  t.ok(handshook(await status(port, 'down.test')))
  const failed = await proxy.waitFor(o => o.certificate === 'down.test' && o.msg === 'OCSP response not stapled', 15_000)
  t.match(String(failed.reason), /cannot reach the responder/)
  const downOut = await status(port, 'down.test')
  t.ok(handshook(downOut) && noStaple(downOut), 'down.test: handshakes work without a staple')

  t.ok(handshook(await status(port, 'missigned.test')))
  const refused = await proxy.waitFor(o => o.certificate === 'missigned.test' && o.msg === 'OCSP response not stapled', 15_000)
  t.match(String(refused.reason), /not for OCSP signing/, 'a responder certificate without id-kp-OCSPSigning is refused')
  t.ok(noStaple(await status(port, 'missigned.test')), 'missigned.test: nothing stapled')

  // A response file: verified and stapled without asking any responder; one for another certificate is not.
  await status(port, 'filed.test')
  await proxy.waitFor(o => o.msg === 'OCSP response stapled' && o.certificate === 'filed.test', 15_000)
  t.ok(stapledGood(await status(port, 'filed.test')), 'filed.test: the response file is stapled')
  await status(port, 'wrongfile.test')
  const wrong = await proxy.waitFor(o => o.certificate === 'wrongfile.test' && o.msg === 'OCSP response not stapled', 15_000)
  t.match(String(wrong.reason), /CertID/, 'a response file for another certificate is refused')
  t.ok(noStaple(await status(port, 'wrongfile.test')))

  await status(port, 'unknown.test')
  const unknown = await proxy.waitFor(o => o.certificate === 'unknown.test' && o.msg === 'OCSP response not stapled', 15_000)
  t.equal(unknown.status, 'unknown', 'a certificate the responder does not know is not stapled')
  t.ok(noStaple(await status(port, 'unknown.test')))

  const text = await adminMetrics(adminPort)
  t.ok(metric(text, 'edge_tls_ocsp_responses_total', { result: 'good' }) >= 1)
  t.equal(metric(text, 'edge_tls_ocsp_responses_total', { result: 'revoked' }), 1)
  t.ok(metric(text, 'edge_tls_ocsp_responses_total', { result: 'fetch_failed' }) >= 1)
  t.ok(metric(text, 'edge_tls_ocsp_responses_total', { result: 'invalid' }) >= 2)
  t.ok(metric(text, 'edge_tls_ocsp_responses_total', { result: 'unknown' }) >= 1)
  t.ok(metric(text, 'edge_tls_ocsp_stapled_total') >= 1)
  const left = metric(text, 'edge_tls_ocsp_staple_expiry_seconds', { name: 'good.test' })
  t.ok(left > 0 && left <= 60, `seconds until good.test's response expires: ${left}`)
  t.equal(metric(text, 'edge_tls_ocsp_staple_expiry_seconds', { name: 'revoked.test' }), 0, 'no series for an entry without a staple')
  t.notOk(proxy.lines.some(l => l.includes('PRIVATE KEY')), 'no key in the logs')

  // A response that expires: stapled while current, dropped once its nextUpdate passes with the
  // responder gone (the refresh fails).
  await status(port, 'expiring.test')
  await proxy.waitFor(o => o.msg === 'OCSP response stapled' && o.certificate === 'expiring.test', 15_000)
  t.ok(stapledGood(await status(port, 'expiring.test')), 'expiring.test: stapled while current')
  await lagging.stop()
  await proxy.waitFor(o => o.msg === 'OCSP response expired before a new one could be fetched; not stapled' && o.certificate === 'expiring.test', 30_000)
  const late = await status(port, 'expiring.test')
  t.ok(handshook(late) && noStaple(late), 'expired: no longer stapled')

  // A reload turns stapling off (no staple at once) and on again (fetched when the entry is next built).
  const reloads = (): number => proxy.lines.filter(l => l.includes('"msg":"certificates reloaded"')).length
  const reloadWith = async (tls: Record<string, unknown>, plainOcsp?: string): Promise<boolean> => {
    const before = reloads()
    writeConfig(tls, plainOcsp)
    proxy.proc.kill('SIGHUP')
    return await until(() => reloads() > before, 15_000)
  }
  t.ok(await reloadWith({ ocspStapling: false }), 'reloaded with ocspStapling: false')
  t.ok(noStaple(await status(port, 'good.test')), 'off: nothing stapled')
  t.ok(await reloadWith({ ocspStapling: true }), 'reloaded with ocspStapling: true')
  t.ok(await until(async () => stapledGood(await status(port, 'good.test')), 15_000), 'on again: stapled')
  // A reload that gives an entry already built (same certificate and key) a response file: stapled.
  t.ok(noStaple(await status(port, 'plain.test')))
  t.ok(await reloadWith({}, join(home, 'plain.der')), 'reloaded with a response file for plain.test')
  t.ok(await until(async () => stapledGood(await status(port, 'plain.test')), 15_000), 'plain.test: its new response file is stapled')
})

t.test('listeners: none without an OCSP URL, one per server once a response is cached, none after release', async t => {
  const log = createLogger({ level: 'silent' })
  const registry = new Registry()
  const config = validateConfig({
    certificates: [entry('good.test', good), entry('plain.test', plain)],
    routes: [{ upstream: down }]
  }, { baseDir: '/' })
  const store = new CertStore({ tls: config.tls, log, registry })
  store.load(config.certificates)
  t.teardown(() => store.close())
  const stapler = new OcspStapler({ store, log, registry, settings: config.tls })
  t.teardown(() => stapler.close())
  const cache = new ContextCache({ store, maxEntries: 1, registry, log, stapler, makeServer: (options: TlsOptions) => createTlsServer(options) })
  const variant = { id: 'test', options: { secureOptions: 0 }, cache: false }
  const goodEntry = store.get('good.test')
  const plainEntry = store.get('plain.test')
  if (goodEntry === undefined || plainEntry === undefined) throw new Error('entries not loaded')
  const plainServer = cache.serverFor(plainEntry, variant)
  t.equal(plainServer.listenerCount('OCSPRequest'), 0, 'no OCSP URL: no listener, no per-handshake callback')
  t.equal(stapler.size, 0)
  const goodServer = cache.serverFor(goodEntry, variant)
  t.equal(goodServer.listenerCount('OCSPRequest'), 0, 'no response yet: no listener')
  t.ok(await until(() => goodServer.listenerCount('OCSPRequest') === 1, 15_000), 'a verified response: the listener is attached')
  const der = await new Promise<Buffer | null>(resolve => goodServer.emit('OCSPRequest', Buffer.alloc(0), Buffer.alloc(0), (_err: Error | null, res: Buffer | null) => resolve(res)))
  t.ok(der !== null && der.length > 0, 'it hands out the cached response')
  cache.serverFor(plainEntry, variant) // the cache holds one entry: good.test is evicted
  t.equal(goodServer.listenerCount('OCSPRequest'), 0, 'evicted: listener removed, stapling state dropped')
  t.equal(stapler.size, 0)
})
