// No private key byte in the proxy: its workers' memory is scanned for the keys keyd holds,
// and the same scan finds an in-process key (so the scan can fail).
import t from 'tap'
import { writeFileSync, mkdtempSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { tmpdir } from 'node:os'
import { generateKeyPairSync } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { startStack, startProxy, curl } from '../helpers/edge.js'
import { privateNeedles, jwkNeedles, scanMemory } from '../helpers/memory.js'
import { spawnCli } from '../helpers/processes.js'
import { defined } from '../helpers/defined.js'

const stack = await startStack()
t.teardown(() => stack.stop())

t.test('proxy workers never hold the keyd keys, even after serving handshakes', async t => {
  const proxy = await startProxy(stack, { workers: 1 })
  t.teardown(() => proxy.stop())
  for (const v of ['--tlsv1.3', '--tlsv1.2']) t.equal((await curl(['--cacert', stack.caFile, v, `https://localhost:${proxy.port}/`])).code, 0)
  const needles = [...privateNeedles(stack.keyd.paths.home, 'localhost-ec'), ...privateNeedles(stack.keyd.paths.home, 'localhost-rsa')]
  t.equal(needles.length, 8, 'EC d, RSA d, p, q; both byte orders')
  for (const pid of [proxy.proc.pid as number, ...proxy.workerPids()]) {
    t.same(scanMemory(pid, needles), needles.map(() => false), `pid ${pid}: no private key bytes`)
  }
  const logs = proxy.lines.join('\n')
  t.notMatch(logs, /PRIVATE KEY/)
})

t.test('the scan finds a key that is in process (control)', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'keyedge-control-'))
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const keyFile = join(dir, 'k.pem')
  writeFileSync(keyFile, privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 })
  execFileSync('openssl', ['req', '-x509', '-new', '-key', keyFile, '-subj', '/CN=localhost', '-days', '1', '-out', join(dir, 'c.pem')])
  const cfg = join(dir, 'p.json')
  writeFileSync(cfg, JSON.stringify({
    listen: { host: '127.0.0.1', port: 0 },
    workers: 1,
    tls: { defaultCertificate: 'x' },
    certificates: [{ name: 'x', serverNames: ['localhost'], files: [{ cert: join(dir, 'c.pem'), key: keyFile }] }],
    routes: [{ host: '*', pathPrefix: '/', upstream: stack.upstream.url }]
  }))
  const p = spawnCli(['proxy', '--config', cfg])
  t.teardown(() => p.stop())
  const ready = await p.waitFor(o => o.msg === 'proxy listening')
  t.equal((await curl(['-k', `https://localhost:${ready.port as number}/`])).code, 0)
  const workers = readFileSync(`/proc/${p.proc.pid as number}/task/${p.proc.pid as number}/children`, 'utf8').trim().split(/\s+/).map(Number)
  const needles = jwkNeedles(privateKey.export({ format: 'jwk' }))
  t.ok(scanMemory(defined(workers[0], 'a worker pid'), needles).some(Boolean), 'in-process key found by the scan')
})
