// The pure C of keyd's native SIGN path (keyd/native/frame.c: SIGN frame parser, tls-server message
// check, eligibility table; keyd/native/chain.c: the audit entry's format, chain and write, including
// writes that fail part-way) under AddressSanitizer + UndefinedBehaviorSanitizer, driven with hostile
// input by test/keyd/native-hostile.c: every check must pass with no sanitizer report and no leak.
import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ROOT } from '../helpers/paths.js'

interface Run { code: number | null, signal: string | null, stdout: string, stderr: string }

async function run (file: string, args: string[], env: Record<string, string> = {}, timeoutMs = 90_000): Promise<Run> {
  return await new Promise(resolve => {
    execFile(file, args, { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024, env: { ...process.env, ...env } }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : null, signal: err?.signal ?? null, stdout, stderr })
    })
  })
}

t.test('the native SIGN path\'s parser, table and audit chain against hostile input and failing writes, under ASan and UBSan', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'keyedge-native-asan-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const bin = join(dir, 'native-hostile')
  const built = await run('gcc', [
    '-std=gnu11', '-g', '-O1', '-Wall', '-Wextra', '-Werror',
    '-fsanitize=address,undefined', '-fno-sanitize-recover=all', '-fno-omit-frame-pointer',
    '-I', join(ROOT, 'keyd', 'native'),
    join(ROOT, 'keyd', 'native', 'frame.c'), join(ROOT, 'keyd', 'native', 'chain.c'), join(ROOT, 'test', 'keyd', 'native-hostile.c'), '-o', bin
  ])
  t.equal(built.code, 0, `frame.c and the harness build with -fsanitize=address,undefined -Werror\n${built.stderr}`)
  if (built.code !== 0) return
  const r = await run(bin, [], {
    ASAN_OPTIONS: 'detect_leaks=1:halt_on_error=1:abort_on_error=0',
    UBSAN_OPTIONS: 'print_stacktrace=1:halt_on_error=1'
  })
  const lines = r.stdout.split('\n')
  const results = lines.filter(l => /^(not )?ok \d+ - /.test(l))
  for (const line of results) t.ok(line.startsWith('ok '), line.replace(/^(not )?ok \d+ - /, ''))
  t.equal(lines.find(l => /^1\.\.\d+$/.test(l)), `1..${results.length}`, 'the harness ran to its end (every check reported)')
  t.ok(results.length >= 50, `${results.length} checks`)
  t.notMatch(r.stderr, /AddressSanitizer|LeakSanitizer|runtime error|UndefinedBehaviorSanitizer/, 'no sanitizer report')
  t.equal(r.signal, null, 'not killed (no hang)')
  t.equal(r.code, 0, `harness exit code${r.stderr !== '' ? `; stderr:\n${r.stderr.slice(0, 4000)}` : ''}`)
})
