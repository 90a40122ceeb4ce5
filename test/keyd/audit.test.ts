// The audit log: every operation recorded without secrets, and offline verification catching edits,
// deletions, reordering and truncation; crash leftovers dropped; fail-closed when it cannot be written.
import t from 'tap'
import { readFileSync, writeFileSync, appendFileSync, cpSync, symlinkSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { execFile } from 'node:child_process'
import { startKeyd } from '../helpers/keyd.js'
import { tempHome, CLI } from '../helpers/paths.js'
import { tls13Input } from '../helpers/tls-inputs.js'
import { defined } from '../helpers/defined.js'

async function verify (home: string): Promise<{ code: number, out: string }> {
  return await new Promise(resolve => {
    execFile(process.execPath, [CLI, 'keyd', 'audit', 'verify', '--dev'], { env: { ...process.env, KEYEDGE_HOME: home } }, (err, stdout) => {
      resolve({ code: err === null ? 0 : (err.code as number), out: stdout })
    })
  })
}

const keyd = await startKeyd()
const proxy = keyd.client('proxy')
await keyd.admin.createKey('a-tls', 'ec-p256', 'tls-server')
const secretMessage = Buffer.from('a JWT payload that must never reach the log')
for (let i = 0; i < 20; i++) await proxy.sign('a-tls', 'ecdsa-sha256', tls13Input())
await t.rejects(proxy.sign('a-tls', 'ecdsa-sha256', secretMessage), { code: 'KEYD_ERR_POLICY_DENIED_MESSAGE' })
proxy.close()
await keyd.stop()
const home = keyd.paths.home
const logFile = join(keyd.paths.keydDir, 'audit.log')
const lines = readFileSync(logFile, 'utf8').trim().split('\n')

t.test('every operation is recorded, with a message hash and no message', async t => {
  const entries = lines.map(l => JSON.parse(l))
  t.equal(entries.filter(e => e.op === 'SIGN' && e.result === 'ok').length, 20)
  const refused = entries.find(e => e.result === 'POLICY_DENIED_MESSAGE')
  t.ok(refused, 'the refusal is recorded')
  t.match(refused.msgSha256, /^[0-9a-f]{64}$/)
  t.ok(entries.some(e => e.op === 'KEY_CREATE' && e.client === 'admin' && e.key === 'a-tls'), 'admin action recorded')
  t.notMatch(readFileSync(logFile, 'utf8'), /JWT payload/)
  t.same(entries.map(e => e.seq), entries.map((_, i) => i + 1))
  const r = await verify(home)
  t.equal(r.code, 0, r.out)
  t.match(r.out, /audit log OK: \d+ entries/)
})

/** A copy of the home with the log rewritten by `mutate`. */
function tampered (mutate: (lines: string[]) => string[]): string {
  const h = tempHome('keyedge-audit-')
  cpSync(home, h, { recursive: true })
  writeFileSync(join(h, 'keyd', 'audit.log'), mutate([...lines]).map(l => l + '\n').join(''))
  return h
}

t.test('offline verification reports each kind of tampering', async t => {
  const edited = await verify(tampered(ls => { ls[3] = defined(ls[3], 'line 4').replace('"result":"ok"', '"result":"no"'); return ls }))
  t.equal(edited.code, 1)
  t.match(edited.out, /line 4 \(seq 4\): chain value does not match: the entry was edited/)
  const deleted = await verify(tampered(ls => { ls.splice(5, 1); return ls }))
  t.match(deleted.out, /seq 7 after 5: 1 entries deleted/)
  const reordered = await verify(tampered(ls => { [ls[6], ls[7]] = [defined(ls[7], 'line 8'), defined(ls[6], 'line 7')]; return ls }))
  t.match(reordered.out, /reordered/)
  const truncated = await verify(tampered(ls => ls.slice(0, ls.length - 3)))
  t.match(truncated.out, /log truncated: the checkpoint vouches for seq \d+ but the log ends at seq \d+/)
})

t.test('a partial entry left by a crash is dropped and the chain goes on', async t => {
  appendFileSync(logFile, '{"seq":999,"time":"2026')
  const again = await startKeyd(home)
  t.ok(again.lines.some(l => l.includes('partial entry')), 'keyd says it dropped the partial entry')
  const c = again.client('proxy')
  await c.sign('a-tls', 'ecdsa-sha256', tls13Input())
  c.close()
  await again.stop()
  const r = await verify(home)
  t.equal(r.code, 0, r.out)
})

t.test('fail-closed: nothing is signed when the log cannot be written', async t => {
  const h = tempHome()
  const first = await startKeyd(h)
  await first.admin.createKey('b-tls', 'ec-p256', 'tls-server')
  await first.stop()
  rmSync(join(h, 'keyd', 'audit.log'))
  symlinkSync('/dev/full', join(h, 'keyd', 'audit.log'))
  const k = await startKeyd(h, ['--audit', 'fsync'])
  t.teardown(() => k.stop())
  const c = k.client('proxy')
  t.teardown(() => c.close())
  await t.rejects(c.sign('b-tls', 'ecdsa-sha256', tls13Input()), { code: 'KEYD_ERR_AUDIT_UNAVAILABLE' })
  await t.rejects(c.sign('b-tls', 'ecdsa-sha256', tls13Input()), { code: 'KEYD_ERR_AUDIT_UNAVAILABLE' }, 'and stays refused')
})
