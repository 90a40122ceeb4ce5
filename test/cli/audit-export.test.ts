// `keyedge keyd audit export`: the audit log as JSON lines with chain position and verification
// state, from a time on; a tampered entry and everything after it unverified; --follow prints
// entries and checkpoints as a live keyd writes them.
import t from 'tap'
import { cpSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { startKeyd } from '../helpers/keyd.js'
import { spawnCli } from '../helpers/processes.js'
import { tempHome } from '../helpers/paths.js'
import { tls13Input } from '../helpers/tls-inputs.js'
import { defined } from '../helpers/defined.js'

interface Line { type: string, seq?: number | null, line?: number, verified?: boolean, checkpointed?: boolean, problems?: string[], entry?: { seq: number, time: string, op: string, key: string | null } | null, ok?: boolean, checkpoint?: string, following?: boolean, entries?: number }

async function exportLog (home: string, args: string[] = []): Promise<{ code: number | null, lines: Line[], raw: string }> {
  const p = spawnCli(['keyd', 'audit', 'export', '--dev', ...args], { KEYEDGE_HOME: home })
  const { code } = await p.exited
  const json = p.lines.filter(l => l.startsWith('{')).map(l => JSON.parse(l) as Line)
  return { code, lines: json, raw: p.lines.join('\n') }
}

const keyd = await startKeyd()
t.teardown(async () => { await keyd.stop(); rmSync(keyd.paths.home, { recursive: true, force: true }) })
await keyd.admin.createKey('web', 'ec-p256', 'tls-server')
const proxy = keyd.client('proxy')
for (let i = 0; i < 5; i++) await proxy.sign('web', 'ecdsa-sha256', tls13Input())
proxy.close()

t.test('--follow prints new entries and checkpoints as keyd writes them', async t => {
  const f = spawnCli(['keyd', 'audit', 'export', '--dev', '--follow'], { KEYEDGE_HOME: keyd.paths.home })
  t.teardown(() => f.stop())
  const summary = await f.waitFor(o => o.type === 'audit-verification')
  t.equal(summary.ok, true)
  t.equal(summary.following, true)
  await keyd.admin.createKey('later', 'ec-p256', 'tls-server')
  const created = await f.waitFor(o => o.type === 'audit' && (o.entry as { op?: string, key?: string } | null)?.op === 'KEY_CREATE' && (o.entry as { key?: string }).key === 'later')
  t.equal(created.verified, true)
  const seq = created.seq as number
  const cp = await f.waitFor(o => o.type === 'audit-checkpoint' && (o.seq as number) >= seq)
  t.equal(cp.verified, true, 'keyd\'s next checkpoint vouches for it')
  await f.stop('SIGTERM')
  t.equal(f.proc.exitCode, 0, 'SIGTERM ends it cleanly')
})

t.test('every entry as a JSON line, verified and checkpointed, then the state of the whole log', async t => {
  await keyd.stop()
  const r = await exportLog(keyd.paths.home)
  t.equal(r.code, 0, r.raw)
  const entries = r.lines.filter(l => l.type === 'audit')
  const last = r.lines[r.lines.length - 1]
  t.equal(last?.type, 'audit-verification')
  t.equal(last?.ok, true)
  t.equal(last?.checkpoint, 'verified')
  t.same(entries.map(e => e.seq), entries.map((_, i) => i + 1), 'chain positions in order')
  t.ok(entries.every(e => e.verified === true && e.checkpointed === true && e.problems?.length === 0), 'all verified, all under the checkpoint keyd wrote at stop')
  t.equal(entries.filter(e => e.entry?.op === 'SIGN').length, 5)
  t.same(entries.map(e => e.entry?.seq), entries.map(e => e.seq))
  t.notMatch(r.raw, /PRIVATE|secret/i)

  const from = entries[4]?.entry?.time as string
  const since = await exportLog(keyd.paths.home, ['--since', from])
  const shown = since.lines.filter(l => l.type === 'audit')
  t.ok(shown.length > 0 && shown.length < entries.length, 'fewer entries from a later time')
  t.ok(shown.every(e => (e.entry?.time as string) >= from), 'none older than --since')
  t.equal(since.lines[since.lines.length - 1]?.entries, entries.length, 'the whole log is still verified')

  const bad = await exportLog(keyd.paths.home, ['--since', 'last tuesday'])
  t.equal(bad.code, 2)
  t.match(bad.raw, /--since must be an ISO 8601 time/)
})

t.test('an edited entry: it and every later one unverified, the state says where', async t => {
  const copy = tempHome('keyedge-audit-export-')
  t.teardown(() => rmSync(copy, { recursive: true, force: true }))
  cpSync(keyd.paths.home, copy, { recursive: true })
  const file = join(copy, 'keyd', 'audit.log')
  const lines = readFileSync(file, 'utf8').trim().split('\n')
  lines[3] = defined(lines[3], 'a 4th audit line').replace('"result":"ok"', '"result":"no"')
  writeFileSync(file, lines.map(l => l + '\n').join(''))
  const r = await exportLog(copy)
  t.equal(r.code, 1)
  const entries = r.lines.filter(l => l.type === 'audit')
  t.same(entries.slice(0, 3).map(e => e.verified), [true, true, true], 'before the edit: verified')
  t.match(entries[3]?.problems?.[0], /line 4 \(seq 4\): chain value does not match: the entry was edited/)
  t.ok(entries.slice(3).every(e => e.verified === false), 'from the edit on: not verified')
  const last = r.lines[r.lines.length - 1]
  t.equal(last?.ok, false)
  t.match(last?.problems?.join('\n'), /edited/)
})

t.test('--follow across a log moved aside: says so, then verifies the new log from its first entry', async t => {
  const first = await startKeyd()
  const home = first.paths.home
  t.teardown(() => rmSync(home, { recursive: true, force: true }))
  await first.admin.createKey('one', 'ec-p256', 'tls-server')
  const f = spawnCli(['keyd', 'audit', 'export', '--dev', '--follow'], { KEYEDGE_HOME: home })
  t.teardown(() => f.stop())
  await f.waitFor(o => o.type === 'audit-verification')
  await first.stop()
  renameSync(join(first.paths.keydDir, 'audit.log'), join(first.paths.keydDir, 'audit.log.old'))
  renameSync(join(first.paths.keydDir, 'audit.head'), join(first.paths.keydDir, 'audit.head.old'))
  const second = await startKeyd(home)
  t.teardown(() => second.stop())
  const problem = await f.waitFor(o => o.type === 'audit-problem')
  t.match(problem.problem, /the audit log was replaced/)
  await second.admin.createKey('two', 'ec-p256', 'tls-server')
  const created = await f.waitFor(o => o.type === 'audit' && (o.entry as { key?: string } | null)?.key === 'two')
  t.equal(created.verified, true, 'the new chain verifies from its own genesis')
  t.ok((created.seq as number) < 5, 'and counts from 1 again')
})
