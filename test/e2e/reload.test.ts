// Certificate rotation without restart: file changes, SIGHUP and POST /reload swap certificates in
// for new connections; anything that does not load is refused whole and the old certificate keeps serving.
import t from 'tap'
import { mkdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { Agent, request } from 'node:https'
import { join } from 'node:path'
import type { TLSSocket } from 'node:tls'
import { startStack, startProxy, sClient } from '../helpers/edge.js'
import { admin, fileSerial, servedSerial, until } from '../helpers/rotation.js'
import { renewCertificate } from '../../certs/renew.js'
import { ensureDevCa, issueLeaf, signLeafCertificate } from '../../certs/dev-ca.js'
import { encodeKeyReference } from '../../keyd/protocol/codec.js'
import { writeFileAtomic } from '../../keyd/keystore/atomic-file.js'

const stack = await startStack()
t.teardown(() => stack.stop())
const proxy = await startProxy(stack, { workers: 2, admin: {} })
t.teardown(() => proxy.stop())
const adminPort = proxy.adminPort as number
const certsDir = stack.keyd.paths.certsDir
const ecCert = join(certsDir, 'localhost-ec.crt')
const served = async (): Promise<string | undefined> => await servedSerial(proxy.port, stack.caFile)
const logged = (pred: (o: Record<string, unknown>) => boolean): number => proxy.lines.filter(l => { try { return pred(JSON.parse(l)) } catch { return false } }).length

/** A GET on a keep-alive agent; resolves the status and the serial of the connection's certificate. */
async function keepAliveGet (agent: Agent): Promise<{ status: number, serial: string }> {
  return await new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: proxy.port, servername: 'localhost', path: '/', agent, ca: readFileSync(stack.caFile), sigalgs: 'ecdsa_secp256r1_sha256' }, res => {
      const serial = (res.socket as TLSSocket).getPeerCertificate().serialNumber
      res.resume()
      res.on('end', () => resolve({ status: res.statusCode ?? 0, serial }))
    })
    req.on('error', reject)
    req.end()
  })
}

t.test('a renewed certificate file is served to new connections, without a restart', async t => {
  const before = await served()
  t.equal(before, fileSerial(ecCert), 'serves the file it started with')
  const pids = proxy.workerPids().sort()
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  t.teardown(() => agent.destroy())
  t.same(await keepAliveGet(agent), { status: 200, serial: before }, 'a keep-alive connection opened before')
  const r = await renewCertificate(stack.keyd.admin, { name: 'localhost-ec', certsDir })
  t.equal(r.version, 2, 'a new key version in keyd')
  t.not(r.serialNumber, before)
  t.ok(await until(async () => await served() === r.serialNumber), 'the new serial is served')
  t.same(proxy.workerPids().sort(), pids, 'same worker processes')
  t.same(await keepAliveGet(agent), { status: 200, serial: before }, 'the connection opened before keeps its certificate and keeps working')
  t.ok(logged(o => o.msg === 'certificates reloaded' && o.trigger === 'file-change') >= 1, 'logged as a file-change reload')
  const certs = (await admin(adminPort, '/certs')).json().certificates
  const ec = certs.find((c: any) => c.name === 'localhost').pairs.find((p: any) => p.keyType === 'ec')
  t.same(ec.keyReference, { name: 'localhost-ec', version: 2, type: 'ec-p256' }, '/certs shows the new key version')
})

t.test('SIGHUP reloads in every worker, and workers survive it', async t => {
  const pids = proxy.workerPids().sort()
  const seen = logged(o => o.msg === 'certificates reloaded' && o.trigger === 'SIGHUP')
  proxy.proc.kill('SIGHUP')
  await proxy.waitFor(o => o.msg === 'certificates reloaded' && o.trigger === 'SIGHUP' && logged(x => x.msg === 'certificates reloaded' && x.trigger === 'SIGHUP') > seen)
  t.same(proxy.workerPids().sort(), pids, 'same worker processes')
  t.equal(await served(), fileSerial(ecCert))
})

t.test('POST /reload answers with the per-certificate result: only what changed is loaded again', async t => {
  const r = await admin(adminPort, '/reload', 'POST')
  t.equal(r.status, 200, r.body)
  const report = r.json()
  t.equal(report.ok, true)
  t.same(report.results, [], 'no file changed: no entry read again')
  t.equal(report.unchanged, 2, 'both entries kept as they were')
  t.same(report.certificates, [])
  // The same bytes written again (a new inode and mtime) are compared, not reloaded.
  writeFileAtomic(ecCert, readFileSync(ecCert, 'utf8'), 0o644)
  const again = (await admin(adminPort, '/reload', 'POST')).json()
  t.same([again.results, again.unchanged], [[], 2], 'rewritten with the same contents: still unchanged')
  t.equal((await admin(adminPort, '/reload')).status, 405, 'GET /reload is not allowed')
})

t.test('a reload that does not load is refused whole and the old certificate keeps serving', async t => {
  const goodCert = readFileSync(ecCert, 'utf8')
  const goodSerial = fileSerial(ecCert)
  const ca = await ensureDevCa(stack.keyd.admin, certsDir)
  const key = await stack.keyd.admin.getPublicKey('localhost-ec')
  const expired = (await signLeafCertificate(stack.keyd.admin, ca, { spki: key.spki, keyType: 'ec-p256', serverNames: ['localhost'], days: -0.5 })).toString('pem')
  const cases: Array<[string, () => void, RegExp]> = [
    ['certificate of another key', () => writeFileAtomic(ecCert, readFileSync(stack.other.certFile, 'utf8'), 0o644), /EDGE_ERR_CERT_KEY_MISMATCH/],
    ['expired certificate', () => writeFileAtomic(ecCert, expired + '\n', 0o644), /EDGE_ERR_CERT_LOAD[\s\S]*expired|expired[\s\S]*EDGE_ERR_CERT_LOAD/],
    ['garbage', () => writeFileAtomic(ecCert, 'not a certificate\n', 0o644), /EDGE_ERR_CERT_LOAD/],
    ['missing file', () => rmSync(ecCert), /EDGE_ERR_CONFIG_INVALID/]
  ]
  for (const [name, spoil, code] of cases) {
    spoil()
    const r = await admin(adminPort, '/reload', 'POST')
    t.equal(r.status, 422, `${name}: refused with 422`)
    t.match(r.body, code, `${name}: ${code.source}`)
    t.notMatch(r.body, /BEGIN/, `${name}: no PEM in the answer`)
    t.equal(await served(), goodSerial, `${name}: the old certificate keeps serving`)
    t.equal((await admin(adminPort, '/ready')).status, 200, `${name}: still ready`)
  }
  t.ok(logged(o => o.msg === 'certificate reload refused, the previous certificates keep serving' && o.code === 'EDGE_ERR_RELOAD_REFUSED') >= 4, 'refusals are logged')
  t.notOk(proxy.lines.some(l => /BEGIN (CERTIFICATE|KEYEDGE|.*PRIVATE)/.test(l)), 'no PEM in any log line')
  writeFileAtomic(ecCert, goodCert, 0o644)
  t.equal((await admin(adminPort, '/reload', 'POST')).status, 200, 'good files load again')
  t.equal(await served(), goodSerial)
})

t.test('the config file\'s certificate list is reloaded; settings that need a restart are reported', async t => {
  const subject = async (name: string): Promise<string> => {
    const out = await sClient(proxy.port, ['-servername', name, '-tls1_3'], stack.caFile)
    return /subject=([^\n]*)/.exec(out)?.[1] ?? out
  }
  t.match(await subject('extra.test'), /CN\s*=\s*localhost/, 'an unknown name gets the default before')
  const original = readFileSync(proxy.configFile, 'utf8')
  const config = JSON.parse(original)
  config.certificates[1].serverNames.push('extra.test')
  config.routes[0].timeoutMs = 1234
  config.shutdownGraceMs = 4321
  writeFileAtomic(proxy.configFile, JSON.stringify(config, null, 2), 0o644)
  t.ok(await until(async () => /CN\s*=\s*other\.test/.test(await subject('extra.test'))), 'the new server name is served by its entry')
  const r = await admin(adminPort, '/reload', 'POST')
  t.equal(r.status, 200)
  t.same(r.json().restartRequired, ['shutdownGraceMs'], 'a change that needs a restart is reported')
  t.same(r.json().applied, [], 'the route change was applied by the file-change reload before')
  writeFileAtomic(proxy.configFile, original, 0o644)
  t.ok(await until(async () => /CN\s*=\s*localhost/.test(await subject('extra.test'))), 'and back')
})

t.test('a Kubernetes-style ..data symlink swap is seen', async t => {
  const dir = join(stack.keyd.paths.home, 'k8s')
  const v1 = join(dir, '..v1')
  mkdirSync(v1, { recursive: true })
  const ca = await ensureDevCa(stack.keyd.admin, certsDir)
  const leaf = await issueLeaf(stack.keyd.admin, v1, ca, { keyName: 'k8s-ec', keyType: 'ec-p256', serverNames: ['localhost'] })
  renameSync(leaf.certFile, join(v1, 'tls.crt'))
  renameSync(leaf.keyRefFile, join(v1, 'tls.keyref'))
  symlinkSync('..v1', join(dir, '..data'))
  symlinkSync('..data/tls.crt', join(dir, 'tls.crt'))
  symlinkSync('..data/tls.keyref', join(dir, 'tls.keyref'))
  const k8s = await startProxy(stack, {
    name: 'k8s',
    admin: {},
    extra: { certificates: [{ name: 'localhost', serverNames: ['localhost'], files: [{ cert: join(dir, 'tls.crt'), key: join(dir, 'tls.keyref') }] }] }
  })
  t.teardown(() => k8s.stop())
  t.equal(await servedSerial(k8s.port, stack.caFile), fileSerial(join(dir, 'tls.crt')))
  // What the kubelet does: write a new timestamped directory, point ..data at it with one rename.
  const v2 = join(dir, '..v2')
  mkdirSync(v2)
  const rotated = await stack.keyd.admin.rotateKey('k8s-ec')
  const cert = await signLeafCertificate(stack.keyd.admin, ca, { spki: rotated.spki, keyType: 'ec-p256', serverNames: ['localhost'] })
  writeFileSync(join(v2, 'tls.crt'), cert.toString('pem') + '\n')
  writeFileSync(join(v2, 'tls.keyref'), encodeKeyReference({ name: 'k8s-ec', version: rotated.version, type: 'ec-p256' }))
  symlinkSync('..v2', join(dir, '..data_tmp'))
  renameSync(join(dir, '..data_tmp'), join(dir, '..data'))
  t.ok(await until(async () => await servedSerial(k8s.port, stack.caFile) === cert.serialNumber.toUpperCase()), 'the new certificate is served after the swap')
})
