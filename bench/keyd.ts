// `npm run bench -- keyd`: keyd signatures per second and keyd CPU per signature, with the audit log
// off, buffered and fsync'd, side by side in one run (interleaved rounds, medians).
import { parseArgs } from 'node:util'
import { setTimeout as delay } from 'node:timers/promises'
import { execFileSync } from 'node:child_process'
import { writeFileSync, mkdirSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { startKeyd } from '../test/helpers/keyd.js'
import { tempHome } from '../test/helpers/paths.js'
import { tls13Input } from '../test/helpers/tls-inputs.js'
import { processCpuMicros } from './proc-cpu.js'
import { median } from './handshake-report.js'

const USAGE = `usage: node dist/bench/run.js keyd [options]

Signs TLS 1.3 CertificateVerify inputs with an ECDSA P-256 key through keyd's socket, from
--connections pipelined clients (--depth requests in flight each), for --duration-ms per case,
with the audit log off, buffered (default) and fsync, interleaved for --rounds rounds.

options:
  --duration-ms N   per case (default 3000)
  --rounds N        (default 3)
  --connections N   (default 4)
  --depth N         requests in flight per connection (default 8)
  --key TYPE        ec-p256 (default) or rsa-2048
  --modes LIST      audit modes to run, comma-separated (default off,buffered,fsync)
  --cpus LIST       pin keyd (every thread) to these CPUs with taskset -a, e.g. 0 or 0,1
  --pace-ms N       each in-flight request waits N ms after its answer before the next
                    (default 0: back to back). --connections 1 --depth 1 --pace-ms 6 is a
                    proxy's handshake pace: keyd wakes from idle for every signature
  --native LIST     keyd's native SIGN path: on (default), off (keyd serve --no-native-sign), or
                    on,off to run both side by side
  --cpu-prof DIR    run keyd with --cpu-prof, writing its profiles into DIR
  -h, --help
`

type Mode = 'off' | 'buffered' | 'fsync'
const MODES: Mode[] = ['off', 'buffered', 'fsync']

interface Round { mode: Mode, native: boolean, signatures: number, seconds: number, keydCpuMicros: number, threads: Record<string, number> }

/**
 * CPU time of each living thread of `pid` by thread name, in microseconds, from
 * /proc/PID/task/TID/schedstat (nanoseconds, where /proc/PID/stat counts clock ticks of 10 ms): what
 * keyd's JavaScript thread, its signing threads and the rest spend, each finely enough to tell a few
 * µs per signature apart.
 */
function threadCpuMicros (pid: number): Record<string, number> {
  const out: Record<string, number> = {}
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const name = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim()
      const ns = Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0])
      const key = name === 'keyd-sign' || name === 'MainThread' ? name : 'other'
      out[key] = (out[key] ?? 0) + ns / 1000
    } catch { /* the thread ended */ }
  }
  return out
}


interface CaseOptions { durationMs: number, connections: number, depth: number, keyType: string, cpus?: string, cpuProf?: string, paceMs: number }

async function runCase (mode: Mode, native: boolean, o: CaseOptions): Promise<Round> {
  const home = tempHome('keyedge-bench-keyd-')
  const env: Record<string, string> = o.cpuProf === undefined ? {} : { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${o.cpuProf}` }
  const keyd = await startKeyd(home, ['--audit', mode, ...(native ? [] : ['--no-native-sign'])], env)
  try {
    // Pins every thread keyd has now; threads it starts later inherit the mask.
    if (o.cpus !== undefined) execFileSync('taskset', ['-a', '-p', '-c', o.cpus, String(keyd.proc.pid)], { stdio: 'ignore' })
    await keyd.admin.createKey('bench', o.keyType, 'tls-server')
    const alg = o.keyType.startsWith('ec') ? 'ecdsa-sha256' : 'rsa-pss-sha256'
    const clients = Array.from({ length: o.connections }, () => keyd.client('proxy'))
    await Promise.all(clients.map(async c => await c.ping()))
    const pid = keyd.proc.pid as number
    const cpu0 = processCpuMicros(pid)
    const threads0 = threadCpuMicros(pid)
    const t0 = process.hrtime.bigint()
    const deadline = Date.now() + o.durationMs
    let signatures = 0
    const msg = tls13Input()
    await Promise.all(clients.flatMap(c => Array.from({ length: o.depth }, async () => {
      while (Date.now() < deadline) {
        await c.sign('bench', alg, msg)
        signatures++
        if (o.paceMs > 0) await delay(o.paceMs)
      }
    })))
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9
    const keydCpuMicros = processCpuMicros(pid) - cpu0
    const threads = Object.fromEntries(Object.entries(threadCpuMicros(pid)).map(([k, v]) => [k, v - (threads0[k] ?? 0)]))
    for (const c of clients) c.close()
    return { mode, native, signatures, seconds, keydCpuMicros, threads }
  } finally {
    await keyd.stop()
  }
}

export async function main (argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      help: { type: 'boolean', short: 'h' },
      'duration-ms': { type: 'string' },
      rounds: { type: 'string' },
      connections: { type: 'string' },
      depth: { type: 'string' },
      key: { type: 'string' },
      modes: { type: 'string' },
      cpus: { type: 'string' },
      'cpu-prof': { type: 'string' },
      'pace-ms': { type: 'string' },
      native: { type: 'string' }
    }
  })
  if (values.help === true) { process.stdout.write(USAGE); return 0 }
  const o: CaseOptions = {
    durationMs: Number(values['duration-ms'] ?? 3000),
    connections: Number(values.connections ?? 4),
    depth: Number(values.depth ?? 8),
    keyType: values.key ?? 'ec-p256',
    cpus: values.cpus,
    cpuProf: values['cpu-prof'],
    paceMs: Number(values['pace-ms'] ?? 0)
  }
  if (!Number.isFinite(o.paceMs) || o.paceMs < 0) { process.stderr.write('--pace-ms must be a number ≥ 0\n'); return 2 }
  const modes = values.modes === undefined ? MODES : values.modes.split(',').map(m => m.trim())
  const bad = modes.find(m => !(MODES as string[]).includes(m))
  if (bad !== undefined) { process.stderr.write(`unknown audit mode ${bad} (off, buffered, fsync)\n`); return 2 }
  const natives = (values.native ?? 'on').split(',').map(v => v.trim())
  if (natives.some(v => v !== 'on' && v !== 'off')) { process.stderr.write('--native takes on, off or on,off\n'); return 2 }
  const cases = (modes as Mode[]).flatMap(mode => natives.map(n => ({ mode, native: n === 'on' })))
  const label = (c: { mode: Mode, native: boolean }): string => `audit ${c.mode}${natives.length > 1 ? (c.native ? ', native SIGN' : ', JavaScript SIGN') : ''}`
  const rounds = Number(values.rounds ?? 3)
  const runs: Round[] = []
  for (let r = 0; r < rounds; r++) {
    for (const c of cases) {
      const run = await runCase(c.mode, c.native, o)
      runs.push(run)
      const per = Object.entries(run.threads).sort().map(([k, v]) => `${k} ${(v / run.signatures).toFixed(1)}`).join(', ')
      process.stderr.write(`round ${r + 1} ${label(c)}: ${Math.round(run.signatures / run.seconds)} signatures/s, ${(run.keydCpuMicros / run.signatures).toFixed(0)} µs keyd CPU each (by thread, µs: ${per})\n`)
    }
  }
  type Case = (typeof cases)[number]
  const of = (c: Case): Round[] => runs.filter(x => x.mode === c.mode && x.native === c.native)
  const rate = (c: Case): number => median(of(c).map(x => x.signatures / x.seconds))
  const cpu = (c: Case): number => median(of(c).map(x => x.keydCpuMicros / x.signatures))
  const base = cases[0] as Case
  const rows = cases.map(c => `| ${label(c)} | ${Math.round(rate(c)).toLocaleString('en-US')} | ${cpu(c).toFixed(0)} | ${(rate(c) / rate(base)).toFixed(2)} | ${(cpu(c) / cpu(base)).toFixed(2)} |`)
  const table = [
    `keyd ${o.keyType} signatures, ${o.connections} connections × ${o.depth} in flight${o.paceMs > 0 ? `, ${o.paceMs} ms pause after each answer` : ''}, ${rounds} rounds × ${o.durationMs} ms, medians (client in the same machine${o.cpus === undefined ? '' : `, keyd pinned to CPUs ${o.cpus}`}), Node ${process.versions.node}:`,
    '',
    `| case | signatures/s | keyd CPU µs/signature | rate × ${label(base)} | CPU × ${label(base)} |`,
    '| --- | ---: | ---: | ---: | ---: |',
    ...rows
  ].join('\n')
  process.stdout.write(table + '\n')
  const dir = fileURLToPath(new URL('../../bench/results/', import.meta.url))
  mkdirSync(dir, { recursive: true })
  writeFileSync(join(dir, 'keyd-latest.md'), `# keyd signing benchmark — ${new Date().toISOString()}\n\n${table}\n`)
  writeFileSync(join(dir, `keyd-${new Date().toISOString().slice(0, 16).replace(':', '')}.json`), JSON.stringify({ options: o, rounds, runs }, null, 2) + '\n')
  return 0
}
