// keyd without its native addon (keyd/native/build missing: an install whose build step failed, or
// a copy of dist/ without it): it says so once, at start, and every signature is made in
// JavaScript, verified and audited as before. The build under test is copied to a temporary tree
// that has dist/ and node_modules but no keyd/native/build.
import { cpSync, mkdirSync, readFileSync, rmSync, symlinkSync, copyFileSync } from 'node:fs'
import { verify } from 'node:crypto'
import { join } from 'node:path'
import t from 'tap'
import { startKeyd } from '../helpers/keyd.js'
import { ROOT, tempHome } from '../helpers/paths.js'
import { tls13Input } from '../helpers/tls-inputs.js'

const tree = tempHome('keyedge-no-addon-')
const home = join(tree, 'home')
t.teardown(() => rmSync(tree, { recursive: true, force: true }))
for (const dir of ['src', 'keyd', 'lib']) cpSync(join(ROOT, 'dist', dir), join(tree, 'dist', dir), { recursive: true })
symlinkSync(join(ROOT, 'node_modules'), join(tree, 'node_modules'))
copyFileSync(join(ROOT, 'package.json'), join(tree, 'package.json'))
mkdirSync(home, { mode: 0o700 })

t.test('without the addon keyd starts, warns once, and signs in JavaScript, audited', async t => {
  const keyd = await startKeyd(home, [], {}, { cli: join(tree, 'dist', 'src', 'cli', 'main.js') })
  t.teardown(() => keyd.stop())
  const logs = keyd.lines.map(l => { try { return JSON.parse(l) as Record<string, unknown> } catch { return {} } })
  const warnings = logs.filter(o => o.msg === 'keyd native SIGN path unavailable: every signature is made in JavaScript')
  t.equal(warnings.length, 1, 'one warning')
  t.match(String(warnings[0]?.err), /keyd_native\.node is missing \(npm install builds it/, 'it says what is missing and how to build it')
  t.equal(logs.find(o => o.msg === 'keyd ready')?.nativeSign, false, 'ready, with the native path off')
  await keyd.admin.createKey('nm-ec', 'ec-p256', 'tls-server')
  const proxy = keyd.client('proxy')
  t.teardown(() => proxy.close())
  const m = tls13Input()
  for (let i = 0; i < 3; i++) {
    const { signature } = await proxy.sign('nm-ec', 'ecdsa-sha256', m)
    t.ok(verify('sha256', m, (await keyd.admin.getPublicKey('nm-ec')).publicKey, signature), `signature ${i + 1} verifies`)
  }
  proxy.close()
  await keyd.stop()
  const stopping = keyd.lines.map(l => { try { return JSON.parse(l) as Record<string, unknown> } catch { return {} } }).find(o => o.msg === 'keyd stopping')
  t.match(stopping, { signatures: 3, nativeSignatures: 0 }, 'three signatures, none native')
  const audited = readFileSync(join(keyd.paths.keydDir, 'audit.log'), 'utf8').trim().split('\n')
    .map(l => JSON.parse(l) as { op: string, result: string }).filter(e => e.op === 'SIGN' && e.result === 'ok')
  t.equal(audited.length, 3, 'each one audited')
})
