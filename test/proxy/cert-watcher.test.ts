// The certificate file watcher: one callback per settled change, atomic renames and symlink swaps
// seen, unrelated files and unchanged contents ignored. The admin section of the config.
import t from 'tap'
import { defined } from '../helpers/defined.js'
import { mkdirSync, renameSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { pino } from 'pino'
import { CertFileWatcher, filesDigest, watchedDirectories } from '../../src/tls/cert-watcher.js'
import { configDefaults, validateConfig } from '../../src/config/index.js'
import { ConfigInvalidError } from '../../src/errors.js'
import { reloadStatus } from '../../src/admin/admin-server.js'
import { tempHome } from '../helpers/paths.js'
import { until } from '../helpers/wait.js'

const log = pino({ level: 'silent' })

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

/**
 * The callbacks `act` causes: waits for `expected` of them (bounded, so a loaded machine only makes it
 * slower), then two debounce periods more, in which a spurious extra one would show.
 */
async function watching (files: string[], act: () => Promise<void> | void, expected: number, debounceMs = 150): Promise<number> {
  let calls = 0
  const w = new CertFileWatcher({ log, debounceMs, onChange: () => { calls++ } })
  try {
    w.watch(files)
    await act()
    await until(() => calls >= expected, 10_000)
    await sleep(debounceMs * 2)
    return calls
  } finally {
    w.close()
  }
}

t.test('a certificate and its key written one after the other make one reload', async t => {
  const dir = tempHome('keyedge-watch-')
  const crt = join(dir, 'a.crt')
  const key = join(dir, 'a.keyref')
  writeFileSync(crt, 'c1')
  writeFileSync(key, 'k1')
  // 50 ms apart, well inside a 500 ms debounce even if this process is descheduled for a while.
  t.equal(await watching([crt, key], async () => {
    writeFileSync(join(dir, 'a.crt.tmp'), 'c2')
    renameSync(join(dir, 'a.crt.tmp'), crt)
    await sleep(50)
    writeFileSync(key, 'k2')
  }, 1, 500), 1)
})

t.test('unrelated files and rewrites with the same contents are ignored', async t => {
  const dir = tempHome('keyedge-watch-')
  const crt = join(dir, 'a.crt')
  writeFileSync(crt, 'same')
  t.equal(await watching([crt], () => {
    writeFileSync(join(dir, 'other.log'), 'noise')
    writeFileSync(crt, 'same')
  }, 0), 0)
})

t.test('a ..data symlink swap is seen', async t => {
  const dir = tempHome('keyedge-watch-')
  for (const v of ['..v1', '..v2']) {
    mkdirSync(join(dir, v))
    writeFileSync(join(dir, v, 'tls.crt'), v)
  }
  symlinkSync('..v1', join(dir, '..data'))
  symlinkSync('..data/tls.crt', join(dir, 'tls.crt'))
  t.ok(watchedDirectories([join(dir, 'tls.crt')]).includes(join(dir, '..v1')), 'the target directory is watched too')
  const before = filesDigest([join(dir, 'tls.crt')])
  t.equal(await watching([join(dir, 'tls.crt')], () => {
    symlinkSync('..v2', join(dir, '..data_tmp'))
    renameSync(join(dir, '..data_tmp'), join(dir, '..data'))
  }, 1), 1)
  t.not(filesDigest([join(dir, 'tls.crt')]), before)
})

t.test('a file that disappears is a change', async t => {
  const dir = tempHome('keyedge-watch-')
  const crt = join(dir, 'a.crt')
  writeFileSync(crt, 'x')
  t.equal(await watching([crt], () => { renameSync(crt, join(dir, 'b.crt')) }, 1), 1)
})

t.test('admin section: defaults, loopback only, hints', async t => {
  const base = {
    certificates: [{ name: 'a', serverNames: ['a.test'], files: [{ cert: 'a.crt', key: 'a.keyref' }] }],
    routes: [{ upstream: 'http://127.0.0.1:8080' }]
  }
  const plain = validateConfig(base, { baseDir: '/etc/keyedge' })
  t.equal(plain.admin, undefined, 'no admin listener unless asked for')
  t.equal(plain.shutdownGraceMs, configDefaults.shutdownGraceMs)
  t.same(validateConfig({ ...base, admin: {} }, { baseDir: '/' }).admin, { host: '127.0.0.1', port: 9443, drainDelayMs: 5000 })
  t.same(validateConfig({ ...base, admin: { port: 0, drainDelayMs: 0 }, shutdownGraceMs: 100 }, { baseDir: '/' }).admin?.port, 0)
  const problems = (raw: unknown): string[] => {
    try { validateConfig(raw, { baseDir: '/' }); return [] } catch (err) { if (err instanceof ConfigInvalidError) return err.problems; throw err }
  }
  t.match(problems({ ...base, admin: { host: '0.0.0.0' } }), [/admin\.host: .*not a loopback address/])
  t.match(problems({ ...base, admin: { drainDelay: 5 } }), [/admin\.drainDelay: .*drainDelayMs/])
  t.match(problems({ ...base, admin: { port: 70000 } }), [/admin\.port/])
  t.match(problems({ ...base, shutdownGraceMs: -1 }), [/shutdownGraceMs/])
})

t.test('POST /reload status codes', async t => {
  t.equal(reloadStatus({ ok: true, errors: [], results: [{ ok: true }] }), 200)
  t.equal(reloadStatus({ ok: false, errors: [], results: [{ ok: false }] }), 422)
  t.equal(reloadStatus({ ok: false, errors: ['config x is invalid (EDGE_ERR_CONFIG_INVALID)'], results: [] }), 422)
  t.equal(reloadStatus({ ok: false, errors: ['no worker is running'], results: [] }), 503)
  t.equal(reloadStatus({ ok: false, errors: ['worker 7 did not answer within 15000 ms'], results: [] }), 500)
})

t.test('a directory that never goes quiet does not postpone the reload for ever', async t => {
  const dir = tempHome('keyedge-watch-')
  const crt = join(dir, 'a.crt')
  writeFileSync(crt, 'one')
  let calls = 0
  const w = new CertFileWatcher({ log, debounceMs: 100, onChange: () => { calls++ } })
  t.teardown(() => w.close())
  w.watch([crt])
  writeFileSync(crt, 'two')
  // Noise every 20 ms until the reload comes (the deadline only bounds a failing run).
  const deadline = Date.now() + 10_000
  while (Date.now() < deadline && calls === 0) {
    writeFileSync(join(dir, 'busy.log'), String(Date.now()))
    await sleep(20)
  }
  t.equal(calls, 1, 'reloaded while the noise went on')
})

t.test('the callback names the files whose contents changed', async t => {
  const dir = tempHome('keyedge-watch-')
  const files = ['a.crt', 'b.crt', 'c.keyref'].map(f => join(dir, f))
  const b = defined(files[1], 'b.crt')
  const c = defined(files[2], 'c.keyref')
  for (const f of files) writeFileSync(f, f)
  const seen: string[][] = []
  const w = new CertFileWatcher({ log, debounceMs: 150, onChange: changed => { seen.push(changed) } })
  t.teardown(() => w.close())
  w.watch(files)
  writeFileSync(b, 'new contents')
  writeFileSync(c, c)
  t.ok(await until(() => seen.length >= 1, 10_000))
  await sleep(300)
  t.same(seen, [[b]], 'only b.crt: c.keyref was rewritten with the same contents')
})
