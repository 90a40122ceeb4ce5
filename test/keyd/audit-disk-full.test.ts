// Audit honesty under a full disk: keyd's directory is a small tmpfs (mounted here; needs root). Filled
// up while signatures are pipelined in buffered durability, every signature keyd answered has its entry
// in the log (the space reserve holds them), the rest is refused with AUDIT_UNAVAILABLE and /healthz
// says 503; once space is freed keyd serves again by itself, without a restart, and the log verifies.
// The proxy signs on keyd's native path, whose audit writes (in C, before each answer) are the ones
// that fail here.
// Then: a partial last entry is reported truthfully by durability at restart and by `audit verify`.
import t from 'tap'
import { execFileSync, execFile } from 'node:child_process'
import { appendFileSync, mkdirSync, openSync, writeSync, closeSync, rmSync, readFileSync, truncateSync } from 'node:fs'
import { createHash } from 'node:crypto'
import { join } from 'node:path'
import { startKeyd, refusal } from '../helpers/keyd.js'
import { tempHome, CLI } from '../helpers/paths.js'
import { tls13Input } from '../helpers/tls-inputs.js'
import { defined } from '../helpers/defined.js'
import { errorCode, errorMessage } from '../../lib/errors.js'

async function verify (home: string): Promise<{ code: number, out: string }> {
  return await new Promise(resolve => {
    execFile(process.execPath, [CLI, 'keyd', 'audit', 'verify', '--dev'], { env: { ...process.env, KEYEDGE_HOME: home } }, (err, stdout) => {
      resolve({ code: err === null ? 0 : (err.code as number), out: stdout })
    })
  })
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex')
const okEntries = (home: string): Set<string> => new Set(readFileSync(join(home, 'keyd', 'audit.log'), 'utf8').trim().split('\n')
  .map(l => JSON.parse(l) as { op: string, result: string, msgSha256: string | null })
  .filter(e => e.op === 'SIGN' && e.result === 'ok').map(e => e.msgSha256 ?? ''))

/** Fills the filesystem holding `file` until it refuses another byte. */
function fill (file: string): number {
  const fd = openSync(file, 'w')
  let total = 0
  try {
    for (let chunk = 64 * 1024; chunk >= 1;) {
      try { total += writeSync(fd, Buffer.alloc(chunk, 0x5a)) } catch { chunk = Math.floor(chunk / 2) }
    }
  } finally {
    closeSync(fd)
  }
  return total
}

async function mountTmpfs (dir: string): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'audit disk-full test skipped: mounting a tmpfs needs root'
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m,mode=0700', 'tmpfs', dir], { stdio: 'pipe' })
    return undefined
  } catch (err) {
    return `audit disk-full test skipped: cannot mount a tmpfs here (${errorMessage(err).split('\n')[0] ?? ''})`
  }
}

t.test('disk full: answered means logged, refusal meanwhile, recovery without a restart', async t => {
  const home = tempHome()
  const keydDir = join(home, 'keyd')
  mkdirSync(keydDir, { recursive: true, mode: 0o700 })
  const skip = await mountTmpfs(keydDir)
  if (skip !== undefined) { t.comment(skip); t.pass('skipped'); return }
  t.teardown(() => { try { execFileSync('umount', [keydDir]) } catch { /* already unmounted */ } rmSync(home, { recursive: true, force: true }) })
  const keyd = await startKeyd(home, ['--metrics-port', '0'])
  t.teardown(() => keyd.stop())
  const ready = await keyd.waitFor(o => o.msg === 'keyd ready')
  const health = async (): Promise<number> => (await fetch(`http://127.0.0.1:${ready.metricsPort as number}/healthz`)).status
  await keyd.admin.createKey('df-tls', 'ec-p256', 'tls-server')
  const proxy = keyd.client('proxy')
  t.teardown(() => proxy.close())
  for (let i = 0; i < 5; i++) await proxy.sign('df-tls', 'ecdsa-sha256', tls13Input())

  const filled = fill(join(keydDir, 'filler'))
  t.comment(`filled the tmpfs with ${filled} bytes`)
  // More than the 512 KiB reserve holds (~250 bytes an entry): some are answered at once, some held, some refused.
  const clients = Array.from({ length: 4 }, () => keyd.client('proxy'))
  t.teardown(() => { for (const c of clients) c.close() })
  const messages = Array.from({ length: 3000 }, () => tls13Input())
  const results = await Promise.allSettled(messages.map(async (m, i) => await defined(clients[i % 4], 'a client').sign('df-tls', 'ecdsa-sha256', m)))
  const answered = messages.filter((_, i) => results[i]?.status === 'fulfilled')
  const refused = results.filter(r => r.status === 'rejected').map(r => errorCode(r.reason) ?? '?')
  const codes = new Map<string, number>()
  for (const code of refused) codes.set(code, (codes.get(code) ?? 0) + 1)
  t.comment(`${answered.length} signatures answered, refused: ${JSON.stringify(Object.fromEntries(codes))}`)
  t.ok((codes.get('KEYD_ERR_AUDIT_UNAVAILABLE') ?? 0) > 0, 'the rest refused with AUDIT_UNAVAILABLE')
  t.same([...codes.keys()].filter(c => c !== 'KEYD_ERR_AUDIT_UNAVAILABLE' && c !== 'KEYD_ERR_OVERLOADED'), [], '(or OVERLOADED: more than 256 requests waiting for the log on one connection)')
  await keyd.waitFor(o => typeof o.msg === 'string' && o.msg.startsWith('audit log cannot be written'))
  t.equal(await health(), 503, '/healthz 503 while the log cannot be written')
  t.equal((await refusal(proxy.sign('df-tls', 'ecdsa-sha256', tls13Input()))).code, 'KEYD_ERR_AUDIT_UNAVAILABLE', 'nothing is signed meanwhile')
  // The recovery probe runs every 0.5 s: while the disk stays full it must not declare the log writable
  // (the native path kept the reserve; taking a freed reserve back would prove nothing).
  const seen = new Set<number>()
  for (const deadline = Date.now() + 1600; Date.now() < deadline;) {
    seen.add(await health())
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  t.same([...seen], [503], '/healthz stays 503 over three probes while the disk is full')
  const logged = okEntries(home)
  const missing = answered.filter(m => !logged.has(sha256(m)))
  t.equal(missing.length, 0, `every answered signature is in the log (${answered.length} answered)`)
  // The proxy's connection signs on keyd's native path, which writes each entry itself before it answers:
  // the failed write was its own, and it handed the chain back to JavaScript, which failed closed.
  t.ok(keyd.lines.some(l => l.includes('audit log write failed on the native SIGN path')), 'the native path\'s write failed, and the log took its chain back')

  rmSync(join(keydDir, 'filler'))
  let back: Buffer | undefined
  for (const deadline = Date.now() + 15_000; back === undefined && Date.now() < deadline;) {
    back = await proxy.sign('df-tls', 'ecdsa-sha256', tls13Input()).then(r => r.signature, () => undefined)
    if (back === undefined) await new Promise(resolve => setTimeout(resolve, 100))
  }
  t.ok(back !== undefined, 'keyd signs again by itself once space is freed (no restart)')
  t.ok(keyd.lines.some(l => l.includes('audit log writable again')), 'and says so')
  t.equal(await health(), 200, '/healthz 200 again')
  await keyd.stop()
  const stopping = keyd.lines.map(l => { try { return JSON.parse(l) as Record<string, unknown> } catch { return {} } }).find(o => o.msg === 'keyd stopping')
  t.ok(typeof stopping?.nativeSignatures === 'number' && stopping.nativeSignatures >= 5, `signatures made on the native path (${String(stopping?.nativeSignatures)})`)
  const r = await verify(home)
  t.equal(r.code, 0, r.out)
  t.match(r.out, /written: \d+ entries/)
  t.notMatch(r.out, /acknowledged but not written/)
})

t.test('no space reserve, no native signing: the chain stays in JavaScript, which refuses, until the reserve can be taken', async t => {
  const home = tempHome()
  const keydDir = join(home, 'keyd')
  mkdirSync(keydDir, { recursive: true, mode: 0o700 })
  const skip = await mountTmpfs(keydDir)
  if (skip !== undefined) { t.comment(skip); t.pass('skipped'); return }
  t.teardown(() => { try { execFileSync('umount', [keydDir]) } catch { /* already unmounted */ } rmSync(home, { recursive: true, force: true }) })
  const first = await startKeyd(home)
  await first.admin.createKey('nr-tls', 'ec-p256', 'tls-server')
  await first.stop()
  // The reserve gone and the disk nearly full: room for small writes (the checkpoint), not for 512 KiB.
  rmSync(join(keydDir, '.audit.log.reserve'))
  const filler = join(keydDir, 'filler')
  const filled = fill(filler)
  truncateSync(filler, filled - 128 * 1024)
  const keyd = await startKeyd(home, ['--metrics-port', '0'])
  t.teardown(() => keyd.stop())
  await keyd.waitFor(o => typeof o.msg === 'string' && o.msg.startsWith('audit log cannot be written'))
  const proxy = keyd.client('proxy')
  t.teardown(() => proxy.close())
  for (let i = 0; i < 3; i++) t.equal((await refusal(proxy.sign('nr-tls', 'ecdsa-sha256', tls13Input()))).code, 'KEYD_ERR_AUDIT_UNAVAILABLE', 'refused: no reserve, so no chain in C and a fail-closed log')
  rmSync(filler)
  const answered: Buffer[] = []
  for (const deadline = Date.now() + 15_000; answered.length === 0 && Date.now() < deadline;) {
    const m = tls13Input()
    if (await proxy.sign('nr-tls', 'ecdsa-sha256', m).then(() => true, () => false)) answered.push(m)
    else await new Promise(resolve => setTimeout(resolve, 100))
  }
  t.equal(answered.length, 1, 'keyd signs once the reserve can be taken')
  for (let i = 0; i < 5; i++) { const m = tls13Input(); await proxy.sign('nr-tls', 'ecdsa-sha256', m); answered.push(m) }
  await keyd.stop()
  const stopping = keyd.lines.map(l => { try { return JSON.parse(l) as Record<string, unknown> } catch { return {} } }).find(o => o.msg === 'keyd stopping')
  t.equal(stopping?.nativeSignatures, answered.length, 'no native signature before the reserve was held; every one after it native')
  const logged = okEntries(home)
  t.ok(answered.every(m => logged.has(sha256(m))), 'every answered signature is in the log')
  const r = await verify(home)
  t.equal(r.code, 0, r.out)
})

t.test('a partial last entry is told apart by durability: acknowledged but not written, or never acknowledged', async t => {
  for (const [mode, restartSays, verifySays] of [
    ['buffered', /in buffered durability its operation had been answered: acknowledged but not written/, /acknowledged but not written: line \d+: a partial entry written in buffered durability/],
    ['fsync', /in fsync durability it was never acknowledged/, /never acknowledged: line \d+: a partial entry/]
  ] as const) {
    const home = tempHome()
    t.teardown(() => rmSync(home, { recursive: true, force: true }))
    const k = await startKeyd(home, ['--audit', mode])
    await k.admin.createKey('pe-tls', 'ec-p256', 'tls-server')
    await k.stop('SIGKILL') // the checkpoint at start already says which durability writes this log
    appendFileSync(join(home, 'keyd', 'audit.log'), '{"seq":99,"time":"2026-01-01T00:00:0')
    const v = await verify(home)
    t.match(v.out, verifySays, `${mode}: audit verify`)
    t.equal(v.code, mode === 'fsync' ? 0 : 1, `${mode}: ${mode === 'fsync' ? 'no gap in the record' : 'a gap in the record'}`)
    const again = await startKeyd(home, ['--audit', mode])
    t.ok(again.lines.some(l => restartSays.test(l)), `${mode}: the restart log says so`)
    await again.stop()
  }
})
