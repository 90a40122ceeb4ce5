// Every command and subcommand answers its own --help: exit 0, a usage line naming that very
// command, and every option its help lists accepted by its parser (given all at once, with --help).
// Every `keyedge …` line of the docs' shell blocks names such a command and only options its help lists.
import t from 'tap'
import { readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { spawnCli } from '../helpers/processes.js'
import { ROOT } from '../helpers/paths.js'
import { defined } from '../helpers/defined.js'

async function run (args: string[]): Promise<{ code: number | null, out: string }> {
  const p = spawnCli(args)
  const { code } = await p.exited
  return { code, out: p.lines.join('\n') }
}

/** The lines of the indented list after the `Commands:` heading. */
function commandList (help: string): string[] {
  const lines = help.split('\n')
  const from = lines.indexOf('Commands:')
  const out: string[] = []
  for (const l of lines.slice(from + 1)) {
    const m = /^ {2}(\S+(?: [a-z][a-z-]*)?) {2,}/.exec(l)
    if (m === null) break
    out.push(defined(m[1], 'a command name'))
  }
  return out
}

/**
 * The options a help text lists: each indented line that starts with a flag, up to the column of
 * its description; `--flag VALUE` takes a value. Several flags may share a line (`--shares N --threshold M`).
 */
function listedOptions (help: string): Array<{ flag: string, value: boolean }> {
  const found = new Map<string, boolean>()
  for (const line of help.split('\n')) {
    const m = /^ +(?:-\w, )?(--[a-z].*?)(?: {2,}|$)/.exec(line)
    if (m === null) continue
    for (const f of defined(m[1], 'the flags').matchAll(/(--[a-z][a-z0-9-]*)(?: ([^\s-]\S*))?/g)) found.set(defined(f[1], 'a flag'), f[2] !== undefined)
  }
  return [...found].map(([flag, value]) => ({ flag, value }))
}

const top = await run(['--help'])
t.equal(top.code, 0)
const commands = commandList(top.out)
const keydHelp = await run(['keyd', '--help'])
const keydCommands = commandList(keydHelp.out)
const certHelp = await run(['cert', '--help'])
const certCommands = [...certHelp.out.matchAll(/keyedge cert ([a-z]+)/g)].map(m => defined(m[1], 'a cert command'))

const paths: string[][] = [
  ...commands.map(c => [c]),
  ...keydCommands.map(c => ['keyd', ...c.split(' ')]),
  ...['key', 'audit', 'backup'].map(g => ['keyd', g]),
  ...[...new Set(certCommands)].map(c => ['cert', c])
]

t.test('the lists hold the commands this issue is about', async t => {
  for (const c of ['start', 'proxy', 'validate', 'keyd', 'cert', 'import', 'upstream']) t.ok(commands.includes(c), c)
  for (const c of ['serve', 'key import', 'key ref', 'audit verify', 'audit export', 'backup restore', 'unseal']) t.ok(keydCommands.includes(c), `keyd ${c}`)
  t.same([...new Set(certCommands)].sort(), ['dev', 'renew'])
  t.match(top.out, /npx keyedge/, 'the top help says how to run it from a checkout')
})

// Every path's help, then the same with all the options it lists (a few at a time: each is a Node start-up).
type Run = Awaited<ReturnType<typeof run>>
const results = new Map<string, { plain: Run, flagged?: Run, options: Array<{ flag: string, value: boolean }> }>()
const queue = [...paths]
await Promise.all([0, 1, 2, 3].map(async () => {
  for (let p = queue.shift(); p !== undefined; p = queue.shift()) {
    const plain = await run([...p, '--help'])
    const options = listedOptions(plain.out).filter(o => o.flag !== '--help')
    const args = options.flatMap(o => o.value ? [o.flag, 'x'] : [o.flag])
    const flagged = options.length > 0 ? await run([...p, ...args, '--help']) : undefined
    results.set(p.join(' '), { plain, flagged, options })
  }
}))

t.test('each one prints its own usage and accepts every option it lists', async t => {
  const generic = new Map([['keyd', keydHelp.out], ['cert', certHelp.out]])
  for (const p of paths) {
    const name = p.join(' ')
    const r = results.get(name)
    if (r === undefined) { t.fail(name); continue }
    t.equal(r.plain.code, 0, `${name} --help exits 0`)
    t.match(defined(r.plain.out.split('\n')[0], 'a usage line'), new RegExp(`^usage: keyedge ${name}( |$)`, 'i'), `${name} --help names "${name}" in its usage line`)
    if (p.length > 1) t.not(r.plain.out, generic.get(defined(p[0], 'a parent command')), `${name} --help is not its parent's help`)
    if (r.flagged !== undefined) {
      const given = r.options.map(o => o.flag).join(' ')
      t.equal(r.flagged.code, 0, `${name}: every listed option is accepted (${given})`)
      if (r.flagged.out !== r.plain.out) t.fail(`${name} ${given} --help printed something else:\n${r.flagged.out}`)
    }
  }
  t.ok(results.get('keyd key import')?.options.some(o => o.flag === '--file'), 'keyd key import lists --file')
  t.ok(results.get('keyd serve')?.options.some(o => o.flag === '--proxy-secret-dir' && o.value), 'keyd serve lists --proxy-secret-dir DIR')
})

/** The docs' shell blocks: README, docs/, docs/runbooks/. */
function docShellLines (): Array<{ at: string, line: string }> {
  const files = ['README.md', ...readdirSync(join(ROOT, 'docs')).filter(f => f.endsWith('.md')).map(f => `docs/${f}`),
    ...readdirSync(join(ROOT, 'docs', 'runbooks')).map(f => `docs/runbooks/${f}`)]
  return files.flatMap(f => {
    const out: Array<{ at: string, line: string }> = []
    let fenced = false
    readFileSync(join(ROOT, f), 'utf8').split('\n').forEach((line, i) => {
      if (line.trimStart().startsWith('```')) { fenced = !fenced; return }
      if (fenced) out.push({ at: `${f}:${i + 1}`, line })
    })
    return out
  })
}

t.test('every keyedge command line in the docs names a real command and only options it has', async t => {
  const known = [...results.keys()].sort((a, b) => b.length - a.length)
  let checked = 0
  for (const { at, line } of docShellLines()) {
    for (const m of line.matchAll(/(?:^|[\s;&|(])(?:npx )?keyedge ([^#|;&>)]*)/g)) {
      const words = defined(m[1], 'a command line').trim().split(/\s+/)
      const path = known.find(k => words.slice(0, k.split(' ').length).join(' ') === k)
      if (path === undefined) {
        const first = words[0] ?? ''
        if (/^[a-z]/.test(first) && !['is', 'and', 'the'].includes(first)) t.fail(`${at}: "keyedge ${words.join(' ')}" is no command`)
        continue
      }
      const rest = words.slice(path.split(' ').length)
      const group = known.some(k => k.startsWith(`${path} `))
      if (group && rest[0] !== undefined && !rest[0].startsWith('-')) { t.fail(`${at}: "keyedge ${path} ${rest[0]}" is no command`); continue }
      const help = results.get(path)?.plain.out ?? ''
      for (const w of rest.filter(x => x.startsWith('--'))) {
        const flag = w.split('=')[0]
        t.ok(new RegExp(`(^|\\s|, )${flag}( |$)`, 'm').test(help), `${at}: keyedge ${path} has ${flag}`)
      }
      checked++
    }
  }
  t.ok(checked > 50, `${checked} documented command lines checked`)
})

t.test('an unknown subcommand is refused with the list, a group without a command asks which', async t => {
  const unknown = await run(['keyd', 'key', 'frobnicate'])
  t.equal(unknown.code, 2)
  t.match(unknown.out, /unknown command "key frobnicate"/)
  const group = await run(['keyd', 'audit'])
  t.equal(group.code, 2)
  t.match(group.out, /keyedge keyd audit: which command\?/)
  t.match(group.out, /keyedge keyd audit export/)
})
