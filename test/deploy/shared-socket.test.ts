// The layout of deploy/: keyd puts its socket and the proxy client's secret in one shared directory
// (--socket, --proxy-secret-dir), and a proxy whose config names nothing of keyd's home but that
// directory serves handshakes signed by keyd.
import t from 'tap'
import { copyFileSync, existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { spawnCli } from '../helpers/processes.js'
import { tempHome } from '../helpers/paths.js'
import { curl } from '../helpers/edge.js'
import { KeydClient } from '../../keyd/client/client.js'
import { startDemoUpstream } from '../../src/proxy/demo-upstream.js'
import { issueDevCertificates } from '../../src/cli/cert.js'

const root = tempHome('keyedge-shared-')
const home = join(root, 'keyd-state')
const shared = join(root, 'keyd-socket')
const proxyDir = join(root, 'proxy')
mkdirSync(join(proxyDir, 'certs'), { recursive: true })
const keyd = spawnCli(['keyd', 'serve', '--dev', '--socket', join(shared, 'keyd.sock'), '--proxy-secret-dir', shared], { KEYEDGE_HOME: home })
const upstream = await startDemoUpstream({ host: '127.0.0.1', port: 0 })
t.teardown(async () => {
  await upstream.close()
  await keyd.stop()
  rmSync(root, { recursive: true, force: true })
})
await keyd.waitFor(o => o.msg === 'keyd ready')

t.test('keyd writes the proxy secret beside the socket, and keeps its own home to itself', async t => {
  t.same(readdirSync(shared).sort(), ['keyd.sock', 'proxy.secret'])
  t.equal(statSync(join(shared, 'proxy.secret')).mode & 0o777, 0o600)
  t.equal(statSync(shared).mode & 0o777, 0o700)
  t.notOk(existsSync(join(home, 'clients', 'proxy.secret')), 'no proxy secret in keyd\'s home')
  t.ok(existsSync(join(home, 'clients', 'admin.secret')), 'the admin secret stays in keyd\'s home')
})

t.test('a proxy that sees only the shared directory serves handshakes signed by keyd', async t => {
  const admin = new KeydClient({ socketPath: join(shared, 'keyd.sock'), clientName: 'admin', secretFile: join(home, 'clients', 'admin.secret'), timeoutMs: 10_000 })
  const certs = await issueDevCertificates(admin, join(home, 'certs'))
  admin.close()
  // What an operator hands the proxy: certificates and key references, no key.
  const files = certs.leaves.map(l => {
    const cert = join(proxyDir, 'certs', `${l.keyName}.crt`)
    const key = join(proxyDir, 'certs', `${l.keyName}.keyref`)
    copyFileSync(l.certFile, cert)
    copyFileSync(l.keyRefFile, key)
    return { cert, key }
  })
  const config = {
    listen: { host: '127.0.0.1', port: 0 },
    workers: 1,
    keyd: { socket: join(shared, 'keyd.sock'), secretFile: join(shared, 'proxy.secret') },
    stateDir: join(proxyDir, 'state'),
    certificates: [{ name: 'localhost', serverNames: ['localhost'], files }],
    routes: [{ upstream: upstream.url }]
  }
  const text = JSON.stringify(config)
  t.notOk(text.includes(home), 'the config names nothing in keyd\'s home')
  writeFileSync(join(proxyDir, 'proxy.json'), text)
  const proxy = spawnCli(['proxy', '--config', join(proxyDir, 'proxy.json')])
  t.teardown(() => proxy.stop())
  const ready = await proxy.waitFor(o => o.msg === 'proxy listening', 30_000)
  t.same(readdirSync(join(proxyDir, 'state')), ['openssl-proxy.cnf'], 'the proxy writes in its own state directory')
  t.same(readdirSync(shared).sort(), ['keyd.sock', 'proxy.secret'], 'and nothing in the shared one')
  for (const v of [['--tlsv1.3'], ['--tlsv1.2', '--tls-max', '1.2']]) {
    const r = await curl(['--cacert', certs.caFile, ...v, `https://localhost:${ready.port as number}/`])
    t.equal(r.code, 0, `${v.join(' ')}: ${r.stderr}`)
  }
})
