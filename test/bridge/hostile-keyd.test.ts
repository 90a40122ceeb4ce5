// The bridge's C sources under AddressSanitizer + UndefinedBehaviorSanitizer against a hostile fake
// keyd (test/bridge/hostile-keyd.c plays the OpenSSL core and the keyd): every misbehaviour must
// come back as a clean OpenSSL error, with no sanitizer report and no leak.
import t from 'tap'
import { execFile } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { ROOT } from '../helpers/paths.js'

const SOURCES = ['provider', 'transport', 'breaker', 'wire', 'params', 'keymgmt', 'signature', 'decoder']
  .map(f => join(ROOT, 'keyd', 'bridge', `${f}.c`))

/** A directory with Node's OpenSSL headers (what the .so is built against), else the system's. */
function opensslIncludeDir (): string | undefined {
  const candidates = [
    process.env.npm_config_nodedir !== undefined ? join(process.env.npm_config_nodedir, 'include', 'node') : undefined,
    join(dirname(process.execPath), '..', 'include', 'node'),
    '/usr/include/node',
    '/usr/include'
  ]
  return candidates.find((d): d is string => d !== undefined && existsSync(join(d, 'openssl', 'core_dispatch.h')))
}

interface Run { code: number | null, signal: string | null, stdout: string, stderr: string }

async function run (file: string, args: string[], env: Record<string, string> = {}, timeoutMs = 50000): Promise<Run> {
  return await new Promise(resolve => {
    execFile(file, args, { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024, env: { ...process.env, ...env } }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : null, signal: err?.signal ?? null, stdout, stderr })
    })
  })
}

const include = opensslIncludeDir()
t.test('the bridge against a hostile keyd, under ASan and UBSan', async t => {
  if (include === undefined) {
    t.fail('no OpenSSL 3 headers found (Node\'s include/node/openssl or /usr/include/openssl)')
    return
  }
  const dir = mkdtempSync(join(tmpdir(), 'keyedge-asan-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const bin = join(dir, 'hostile-keyd')

  const built = await run('gcc', [
    '-std=gnu11', '-g', '-O1', '-Wall', '-Wextra', '-Werror',
    '-fsanitize=address,undefined', '-fno-sanitize-recover=all', '-fno-omit-frame-pointer',
    '-I', include, '-I', join(ROOT, 'keyd', 'bridge'),
    ...SOURCES, join(ROOT, 'test', 'bridge', 'hostile-keyd.c'), '-o', bin, '-lpthread'
  ], {}, 60000)
  t.equal(built.code, 0, `the bridge and the harness build with -fsanitize=address,undefined -Werror\n${built.stderr}`)
  if (built.code !== 0) return

  const r = await run(bin, [dir], {
    ASAN_OPTIONS: 'detect_leaks=1:halt_on_error=1:abort_on_error=0',
    UBSAN_OPTIONS: 'print_stacktrace=1:halt_on_error=1'
  })
  const lines = r.stdout.split('\n')
  const results = lines.filter(l => /^(not )?ok \d+ - /.test(l))
  for (const line of results) t.ok(line.startsWith('ok '), line.replace(/^(not )?ok \d+ - /, ''))
  const plan = lines.find(l => /^1\.\.\d+$/.test(l))
  t.equal(plan, `1..${results.length}`, 'the harness ran to its end (every check reported)')
  t.ok(results.length >= 100, `${results.length} checks`)
  t.notMatch(r.stderr, /AddressSanitizer|LeakSanitizer|runtime error|UndefinedBehaviorSanitizer/, 'no sanitizer report')
  t.equal(r.signal, null, 'not killed (no hang: the harness bounds itself to 60 s)')
  t.equal(r.code, 0, `harness exit code${r.stderr !== '' ? `; stderr:\n${r.stderr.slice(0, 4000)}` : ''}`)
})
