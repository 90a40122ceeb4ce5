// The OpenSSL config the proxy's workers load: it activates the bridge (the system openssl tool
// lists it), carries the circuit-breaker settings when given, and refuses values it cannot hold.
import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { writeOpensslConfig } from '../../keyd/bridge/openssl-config.js'

const dir = mkdtempSync(join(tmpdir(), 'keyedge-osslcnf-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))
const base = { socketPath: join(dir, 'keyd.sock'), clientName: 'proxy', secretFile: join(dir, 'proxy.secret'), timeoutMs: 1000 }

t.test('a config with breaker settings loads the bridge in the openssl tool', async t => {
  const file = join(dir, 'with-breaker.cnf')
  writeOpensslConfig({ ...base, file, breakerMinMs: 100, breakerMaxMs: 2000 })
  const text = readFileSync(file, 'utf8')
  t.match(text, /^breaker_min_ms = 100$/m)
  t.match(text, /^breaker_max_ms = 2000$/m)
  t.equal(statSync(file).mode & 0o777, 0o600, 'mode 0600')
  const out = await new Promise<string>(resolve => {
    execFile('openssl', ['list', '-providers'], { encoding: 'utf8', env: { ...process.env, OPENSSL_CONF: file }, timeout: 10000 },
      (_err, stdout, stderr) => resolve(stdout + stderr))
  })
  t.match(out, /keyedge keyd bridge/, 'the provider is active')
})

t.test('without breaker settings none are written (the bridge defaults apply)', async t => {
  const file = join(dir, 'default.cnf')
  writeOpensslConfig({ ...base, file })
  t.notMatch(readFileSync(file, 'utf8'), /breaker_/)
})

t.test('breaker settings out of range are refused', async t => {
  for (const bad of [-1, 1.5, 3600001]) {
    t.throws(() => writeOpensslConfig({ ...base, file: join(dir, 'bad.cnf'), breakerMinMs: bad }), { code: 'KEYD_ERR_CONFIG_INVALID' }, String(bad))
  }
})
