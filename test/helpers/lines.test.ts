// The test harness's own line handling: output chunks cut anywhere still give whole lines, so
// `waitFor` sees a JSON log line that arrived in two chunks, and `lines` is complete after exit.
import t from 'tap'
import { once } from 'node:events'
import { LineSplitter } from './lines.js'
import { spawnLogged } from './processes.js'

t.test('a line cut across chunks is returned once, whole', async t => {
  const s = new LineSplitter()
  const line = JSON.stringify({ level: 30, msg: 'proxy listening', port: 4433 })
  t.same(s.push(Buffer.from(line.slice(0, 17))), [], 'nothing before the newline')
  t.same(s.push(Buffer.from(line.slice(17) + '\n{"msg":"ne')), [line], 'the whole line once it ends')
  t.same(s.push(Buffer.from('xt"}\n\n')), ['{"msg":"next"}'], 'the next one too; empty lines dropped')
  t.same(s.end(), [], 'nothing held at the end')
})

t.test('a multi-byte character cut across chunks, CRLF, and a last line without a newline', async t => {
  const s = new LineSplitter()
  const bytes = Buffer.from('clé\r\nfin')
  const cut = bytes.indexOf(0xa9) // inside the two bytes of é
  t.same(s.push(bytes.subarray(0, cut)), [])
  t.same(s.push(bytes.subarray(cut)), ['clé'])
  t.same(s.end(), ['fin'], 'the last line is given at the end of the stream')
})

// The child writes half a JSON line, waits until the test has received that chunk, then writes the rest.
const child = `
process.on('SIGUSR2', () => process.stdout.write('ready", "n": 1}\\nlast line without newline', () => process.exit(0)))
process.stdout.write('{"msg": "almost ')
setInterval(() => {}, 1000)
`

t.test('waitFor sees a JSON line written in two chunks; lines is complete after exit', async t => {
  const p = spawnLogged(process.execPath, ['-e', child])
  t.teardown(() => p.stop('SIGKILL'))
  await once(p.proc.stdout as NodeJS.ReadableStream, 'data')
  t.same(p.lines, [], 'the first chunk is held, not taken for a line')
  const found = p.waitFor(o => o.msg === 'almost ready', 10_000)
  p.proc.kill('SIGUSR2')
  t.same(await found, { msg: 'almost ready', n: 1 })
  t.same(await p.exited, { code: 0, signal: null })
  t.same(p.lines, ['{"msg": "almost ready", "n": 1}', 'last line without newline'])
})

t.test('waitFor rejects once the process has exited without the line', async t => {
  const p = spawnLogged(process.execPath, ['-e', 'console.log(JSON.stringify({ msg: "other" })); process.exit(3)'])
  await t.rejects(p.waitFor(o => o.msg === 'never', 10_000), /process exited before the expected line[\s\S]*"other"/)
  t.same(await p.exited, { code: 3, signal: null })
})
