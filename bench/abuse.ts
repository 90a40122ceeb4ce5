// `bench abuse`: replays the worst cases a hostile client can throw at the front (slowloris, idle
// connections, HTTP/2 rapid reset, huge uploads and downloads, ClientHellos in 1-byte records,
// hellos then silence) against keyedge and, side by side in the same run, nginx, and reports the
// latency a normal client sees meanwhile. Traffic goes to 127.0.0.1 only, bounded in count and time.
import { fork, spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { cpus, release } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { startStack, type Stack } from '../test/helpers/edge.js'
import { ROOT } from '../test/helpers/paths.js'
import type { AttackKind, AttackOptions, AttackResult } from './abuse-attack.js'
import { percentile, probeOnce, startProber, type ProbeSamples } from './abuse-probe.js'
import { makeBenchKeys, type BenchKeys } from './bench-keys.js'
import { startBenchProxy, type BenchProxy } from './bench-stack.js'
import { NGINX_MISSING, startNginx, type Nginx } from './nginx.js'
import { intOption } from './runner.js'

const ATTACK_MAIN = fileURLToPath(new URL('./abuse-attack.js', import.meta.url))
const UPSTREAM_MAIN = fileURLToPath(new URL('./abuse-upstream.js', import.meta.url))
// tiny-records last: a server it stalls may not recover within the wait, and would spoil the next case.
const CASES: Array<AttackKind | 'none'> = ['none', 'slowloris', 'idle', 'rapid-reset', 'uploads', 'downloads', 'hello-silence', 'tiny-records']

export const USAGE = `usage: node dist/bench/run.js abuse [options]

Each case runs one attack against keyedge (keys in keyd, default timeouts and limits) and then
against nginx (if installed), while a normal client makes one GET on a new connection and one on a
kept-alive connection every --interval-ms; the report gives that client's p50/p99 per case, and
how long after the attack a new connection was served within 1 s again (the next case waits).

cases: ${CASES.join(', ')}

options:
  --cases LIST        cases to run (default all)
  --duration-ms N     attack time per case (default 12000)
  --connections N     slowloris and idle: connections held (default 200)
  --transfer-mib N    uploads and downloads: MiB per transfer, 2 at once (default 500)
  --tiny-rate N       tiny-records: new connections per second (default 2)
  --hello-rate N      hello-silence: new connections per second (default 20)
  --interval-ms N     normal client pace (default 100)
  --workers N         keyedge workers and nginx worker processes (default 2)
  --no-nginx          keyedge only
  --out DIR           results directory (default bench/results)
  -h, --help          this help
`

interface Options {
  cases: Array<AttackKind | 'none'>
  durationMs: number
  connections: number
  transferMiB: number
  tinyRate: number
  helloRate: number
  intervalMs: number
  workers: number
  nginx: boolean
  out: string
}

function parseOptions (argv: string[]): Options | undefined {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      cases: { type: 'string' },
      'duration-ms': { type: 'string' },
      connections: { type: 'string' },
      'transfer-mib': { type: 'string' },
      'tiny-rate': { type: 'string' },
      'hello-rate': { type: 'string' },
      'interval-ms': { type: 'string' },
      workers: { type: 'string' },
      'no-nginx': { type: 'boolean' },
      out: { type: 'string' },
      help: { type: 'boolean', short: 'h' }
    }
  })
  if (values.help === true) return undefined
  const cases = (values.cases ?? CASES.join(',')).split(',').map(c => c.trim()) as Array<AttackKind | 'none'>
  for (const c of cases) if (!CASES.includes(c)) throw new Error(`--cases: unknown "${c}" (use ${CASES.join(', ')})`)
  return {
    cases,
    durationMs: intOption('duration-ms', values['duration-ms'], 12_000, 1000, 120_000),
    connections: intOption('connections', values.connections, 200, 1, 5000),
    transferMiB: intOption('transfer-mib', values['transfer-mib'], 500, 1, 4096),
    tinyRate: intOption('tiny-rate', values['tiny-rate'], 2, 1, 100),
    helloRate: intOption('hello-rate', values['hello-rate'], 20, 1, 500),
    intervalMs: intOption('interval-ms', values['interval-ms'], 100, 10, 10_000),
    workers: intOption('workers', values.workers, 2, 1, 64),
    nginx: values['no-nginx'] !== true,
    out: values.out ?? join(ROOT, 'bench', 'results')
  }
}

interface Target { name: string, port: number, pids: () => number[] }

export interface CaseRun {
  kind: AttackKind | 'none'
  target: string
  attack: AttackResult | undefined
  probes: { fresh: { n: number, p50: number, p99: number }, kept: { n: number, p50: number, p99: number }, failures: number }
  /** Requests the upstream received during the case, by path. */
  upstream: Record<string, number>
  rssPeakMiB: number
  /** After the attack, how long until a new connection got its answer within 1 s again (null: not within 60 s). */
  recoveryMs: number | null
  /** The server's processes at the end differ from those at the start (a worker died). */
  replaced: boolean
}

/** Probes every 250 ms until one answers within 1 s; the time that took, or null after `maxMs`. */
async function recovery (port: number, ca: string[], maxMs: number): Promise<number | null> {
  const started = Date.now()
  while (Date.now() - started < maxMs) {
    const ms = await probeOnce({ port, ca, timeoutMs: 1000 })
    if (ms !== undefined) return Math.max(0, Date.now() - started - Math.round(ms))
    await new Promise(resolve => setTimeout(resolve, 250))
  }
  return null
}

function rssMiB (pids: number[]): number {
  let kb = 0
  for (const pid of pids) {
    try { kb += Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) } catch { /* gone */ }
  }
  return kb / 1024
}

async function runAttack (o: AttackOptions): Promise<AttackResult> {
  const child = spawn(process.execPath, [ATTACK_MAIN, JSON.stringify(o)], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  child.stdout.on('data', (b: Buffer) => { out += b.toString() })
  child.stderr.on('data', (b: Buffer) => { err += b.toString() })
  const timer = setTimeout(() => child.kill('SIGKILL'), o.durationMs + 240_000)
  const [code] = await once(child, 'exit') as [number | null]
  clearTimeout(timer)
  const last = out.trim().split('\n').pop() ?? ''
  if (code !== 0 || last === '') throw new Error(`attack ${o.kind} exited with ${String(code)}: ${err.slice(0, 500)}`)
  return JSON.parse(last) as AttackResult
}

async function upstreamSeen (upstream: ChildProcess): Promise<Record<string, number>> {
  upstream.send({ type: 'seen' })
  while (true) {
    const [msg] = await once(upstream, 'message') as [{ type: string, seen: Record<string, number> }]
    if (msg.type === 'seen') return msg.seen
  }
}

const summarize = (values: number[]): { n: number, p50: number, p99: number } => ({ n: values.length, p50: percentile(values, 50), p99: percentile(values, 99) })

async function runCase (kind: AttackKind | 'none', target: Target, o: Options, ca: string[], upstream: ChildProcess): Promise<CaseRun> {
  const pidsBefore = target.pids().join(',')
  const seenBefore = await upstreamSeen(upstream)
  let peak = 0
  const sampler = setInterval(() => { peak = Math.max(peak, rssMiB(target.pids())) }, 100)
  const prober = startProber({ port: target.port, ca, intervalMs: o.intervalMs, timeoutMs: 5000 })
  let attack: AttackResult | undefined
  if (kind === 'none') {
    await new Promise(resolve => setTimeout(resolve, o.durationMs))
  } else {
    attack = await runAttack({ kind, port: target.port, durationMs: o.durationMs, connections: o.connections, transferMiB: o.transferMiB, ratePerSecond: kind === 'tiny-records' ? o.tinyRate : o.helloRate })
  }
  const samples: ProbeSamples = await prober.stop()
  clearInterval(sampler)
  const recoveryMs = await recovery(target.port, ca, 60_000)
  const seenAfter = await upstreamSeen(upstream)
  const delta: Record<string, number> = {}
  for (const [path, n] of Object.entries(seenAfter)) if (n - (seenBefore[path] ?? 0) > 0 && path !== '/probe') delta[path] = n - (seenBefore[path] ?? 0)
  return {
    kind,
    target: target.name,
    attack,
    probes: { fresh: summarize(samples.fresh), kept: summarize(samples.kept), failures: samples.failures },
    upstream: delta,
    rssPeakMiB: Math.round(peak),
    recoveryMs,
    replaced: target.pids().join(',') !== pidsBefore
  }
}

/** The report: one row per case and server. */
export function markdownTable (runs: CaseRun[]): string {
  const ms = (v: number): string => Number.isNaN(v) ? '–' : v >= 100 ? v.toFixed(0) : v.toFixed(1)
  const rows = runs.map(r => [
    r.kind,
    r.target,
    r.attack?.summary ?? 'no attack',
    `${ms(r.probes.fresh.p50)} / ${ms(r.probes.fresh.p99)}`,
    `${ms(r.probes.kept.p50)} / ${ms(r.probes.kept.p99)}`,
    `${r.probes.failures} of ${r.probes.fresh.n + r.probes.kept.n}`,
    r.recoveryMs === null ? 'not in 60 s' : r.recoveryMs < 250 ? 'at once' : `${(r.recoveryMs / 1000).toFixed(1)} s`,
    Object.entries(r.upstream).map(([p, n]) => `${p} ${n}`).join(', ') || '–',
    `${r.rssPeakMiB}${r.replaced ? ' (a process died)' : ''}`
  ])
  const head = ['case', 'server', 'attack, and what the server did', 'new-conn GET p50 / p99 ms', 'kept-alive GET p50 / p99 ms', 'failed probes', 'served again', 'upstream saw', 'server RSS peak MiB']
  return [`| ${head.join(' | ')} |`, `| ${head.map((_, i) => i >= 3 ? '---:' : '---').join(' | ')} |`, ...rows.map(r => `| ${r.join(' | ')} |`)].join('\n')
}

export async function main (argv: string[]): Promise<number> {
  let o: Options
  try {
    const parsed = parseOptions(argv)
    if (parsed === undefined) { process.stdout.write(USAGE); return 0 }
    o = parsed
  } catch (err) {
    process.stderr.write(`bench abuse: ${err instanceof Error ? err.message : String(err)}\n\n${USAGE}`)
    return 2
  }
  const say = (s: string): void => { process.stderr.write(`${s}\n`) }
  const startedAt = new Date()
  let stack: Stack | undefined
  let keys: BenchKeys | undefined
  let proxy: BenchProxy | undefined
  let nginx: Nginx | undefined
  let upstream: ChildProcess | undefined
  const cleanup = async (): Promise<void> => {
    await proxy?.stop().catch(() => {})
    await nginx?.stop().catch(() => {})
    if (upstream !== undefined && upstream.exitCode === null) { upstream.kill(); await once(upstream, 'exit').catch(() => {}) }
    await stack?.stop().catch(() => {})
    keys?.remove()
  }
  const onSignal = (): void => { void cleanup().finally(() => process.exit(130)) }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  try {
    say('setting up: keyd and dev certificates, the upstream, keyedge, nginx …')
    stack = await startStack()
    upstream = fork(UPSTREAM_MAIN, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    const [ready] = await once(upstream, 'message') as [{ url: string }]
    const files = stack.certs.leaves.map(l => ({ cert: l.certFile, key: l.keyRefFile }))
    proxy = await startBenchProxy(stack, { name: 'abuse', workers: o.workers, files, keyd: true, upstream: ready.url })
    const targets: Target[] = [{ name: 'keyedge', port: proxy.port, pids: proxy.pids }]
    keys = makeBenchKeys()
    if (o.nginx) {
      nginx = await startNginx({ upstream: ready.url, cert: keys.ec.cert, key: keys.ec.key, workers: o.workers })
      if (nginx === undefined) say(NGINX_MISSING)
      else targets.push({ name: `nginx ${nginx.version}`, port: nginx.port, pids: nginx.pids })
    }
    const ca = [readFileSync(stack.caFile, 'utf8'), readFileSync(keys.caFile, 'utf8')]
    const runs: CaseRun[] = []
    for (const [i, kind] of o.cases.entries()) {
      // Alternate which server goes first, so slow drift of the machine hits both.
      for (const target of i % 2 === 0 ? targets : [...targets].reverse()) {
        const run = await runCase(kind, target, o, ca, upstream)
        runs.push(run)
        say(`${kind} · ${target.name}: ${run.attack?.summary ?? 'no attack'}; fresh p50/p99 ${run.probes.fresh.p50.toFixed(1)}/${run.probes.fresh.p99.toFixed(1)} ms, kept ${run.probes.kept.p50.toFixed(1)}/${run.probes.kept.p99.toFixed(1)} ms, ${run.probes.failures} failed, served again after ${run.recoveryMs ?? 'more than 60000'} ms, RSS ${run.rssPeakMiB} MiB`)
        // Let the attack's sockets close before the next case.
        await new Promise(resolve => setTimeout(resolve, 1000))
      }
    }
    const table = markdownTable(runs)
    const env = { node: process.versions.node, openssl: process.versions.openssl, cpus: cpus().length, cpuModel: cpus()[0]?.model ?? 'unknown', kernel: release(), nginx: nginx?.version ?? null }
    mkdirSync(o.out, { recursive: true })
    const stamp = startedAt.toISOString().slice(0, 16).replace(/[-:]/g, '').replace('T', 'T')
    const json = join(o.out, `abuse-${stamp}.json`)
    const md = join(o.out, 'abuse-latest.md')
    writeFileSync(json, JSON.stringify({ startedAt, env, options: { ...o, out: undefined }, runs }, null, 2))
    writeFileSync(md, `# bench abuse, ${startedAt.toISOString()}\n\nNode ${env.node}, OpenSSL ${env.openssl}, ${env.cpus} × ${env.cpuModel}, nginx ${env.nginx ?? 'not run'}\n\n${table}\n`)
    process.stdout.write(`\n${table}\n`)
    say(`results: ${json}\n         ${md}`)
    return runs.some(r => r.replaced && r.target === 'keyedge') ? 1 : 0
  } finally {
    await cleanup()
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
}
