// `bench pool`: the per-request CPU of the edge data plane's extras. Two `keyedge proxy` processes
// (one worker each) on 127.0.0.1: `plain` sends every request to one upstream with no health check
// and no access log; `pool` balances over three upstream processes with active health checks and
// writes the access log to a file. h2load sends the same keep-alive HTTP/1.1 GETs to each, in
// interleaved rounds (the order alternates), and the proxy's CPU (primary + worker, from /proc)
// during a round divided by its requests is that case's µs per request. The result is the ratio
// pool / plain (issue 12's target: ≤ 1.15×) with the spread of the per-round ratios.
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { CLI } from '../test/helpers/paths.js'
import { selfSigned } from '../test/helpers/proxy-fixtures.js'
import { cpuDelta, snapshot } from './proc-cpu.js'
import { processTree } from './proc-tree.js'
import { freePort, spawnServer, stopTree, waitReady, type ServerProcess } from './peers-process.js'
import { intOption, listOption, outOption, runBench, runtimeEnv, writeResultFiles, type BenchContext } from './runner.js'

const UPSTREAM_MAIN = fileURLToPath(new URL('./peers-upstream.js', import.meta.url))

const USAGE = `usage: node dist/bench/run.js pool [options]

Per-request server CPU of keep-alive proxied GETs: a route with a pool of 3 targets, active health
checks and the access log on, against the plain single-upstream route (no checks, no log).

  --requests N   requests per case per round (default 20000)
  --clients N    h2load connections (default 8)
  --rounds N     interleaved rounds (default 5)
  --cases LIST   comma-separated, default plain,pool; also pool-nolog (the pool and its checks
                 without the access log) and plain-log (one upstream with the access log), which
                 split the pool's extra cost between balancing and logging
  --out DIR      results directory (default bench/results)
`

type CaseId = 'plain' | 'pool' | 'pool-nolog' | 'plain-log'
const CASE_IDS: Record<CaseId, CaseId> = { plain: 'plain', pool: 'pool', 'pool-nolog': 'pool-nolog', 'plain-log': 'plain-log' }
const LABELS: Record<CaseId, string> = {
  plain: 'plain: one upstream, no health check, no access log',
  pool: 'pool: 3 targets, active health checks (1 s), access log to a file',
  'pool-nolog': 'pool without the access log',
  'plain-log': 'one upstream with the access log'
}

interface Options { requests: number, clients: number, rounds: number, cases: CaseId[], out: string }

interface Round { round: number, case: CaseId, requests: number, cpuMicros: number, usPerRequest: number, seconds: number }

function median (xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const mid = s.length >> 1
  return s.length === 0 ? NaN : s.length % 2 === 1 ? (s[mid] ?? NaN) : ((s[mid - 1] ?? 0) + (s[mid] ?? 0)) / 2
}

async function startUpstream (ctx: BenchContext): Promise<string> {
  const child: ChildProcess = spawn(process.execPath, [UPSTREAM_MAIN], { stdio: ['pipe', 'pipe', 'inherit'] })
  ctx.defer(() => { child.stdin?.end(); child.kill() })
  let text = ''
  for await (const chunk of child.stdout ?? []) {
    text += String(chunk)
    const m = /\{"port":(\d+)\}/.exec(text)
    if (m !== null) return `http://127.0.0.1:${m[1] ?? ''}`
  }
  throw new Error('the bench upstream did not start')
}

/** Runs h2load; resolves the requests that succeeded and the wall time. @throws unless every request succeeded. */
async function h2load (port: number, requests: number, clients: number): Promise<{ succeeded: number, seconds: number }> {
  const args = ['--h1', '-n', String(requests), '-c', String(clients), '-t', '1', `https://127.0.0.1:${port}/`]
  const out = await new Promise<string>((resolve, reject) => {
    execFile('h2load', args, { timeout: 300_000, maxBuffer: 1 << 20 }, (err, stdout) => { if (err !== null) reject(new Error(`h2load failed: ${err.message}`)); else resolve(stdout) })
  })
  const m = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded/.exec(out)
  const t = /finished in ([\d.]+)(ms|s)/.exec(out)
  if (m === null || t === null) throw new Error(`h2load printed no summary:\n${out.slice(-1500)}`)
  const succeeded = Number(m[4])
  if (succeeded !== requests) throw new Error(`h2load: ${succeeded} of ${requests} requests succeeded:\n${out.slice(-1500)}`)
  return { succeeded, seconds: Number(t[1]) / (t[2] === 'ms' ? 1000 : 1) }
}

async function run (o: Options, ctx: BenchContext): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'keyedge-bench-pool-'))
  ctx.defer(() => rmSync(dir, { recursive: true, force: true }))
  const cert = selfSigned(dir, 'localhost', ['localhost', '127.0.0.1'])
  const upstreams = await Promise.all([startUpstream(ctx), startUpstream(ctx), startUpstream(ctx)])
  const accessLog = join(dir, 'access.log')
  const poolRoute = { pathPrefix: '/', upstreams: upstreams.map(url => ({ url })), healthCheck: { path: '/healthz', intervalMs: 1000, timeoutMs: 500 } }
  const plainRoute = { pathPrefix: '/', upstream: upstreams[0] }
  const configs: Record<CaseId, Record<string, unknown>> = {
    plain: { routes: [plainRoute] },
    pool: { routes: [poolRoute], accessLog: { path: accessLog } },
    'pool-nolog': { routes: [poolRoute] },
    'plain-log': { routes: [plainRoute], accessLog: { path: join(dir, 'access-plain.log') } }
  }
  const cases = [...new Set<CaseId>(['plain', 'pool', ...o.cases])].filter(id => o.cases.includes(id))
  if (!cases.includes('plain') || !cases.includes('pool')) throw new Error('--cases must include plain and pool')
  const servers = new Map<CaseId, { sp: ServerProcess, port: number }>()
  for (const id of cases) {
    const port = await freePort()
    const file = join(dir, `${id}.json`)
    writeFileSync(file, JSON.stringify({
      listen: { host: '127.0.0.1', port },
      workers: 1,
      certificates: [{ name: 'localhost', serverNames: ['localhost', '127.0.0.1'], files: [{ cert: cert.cert, key: cert.key }] }],
      log: { level: 'warn' },
      ...configs[id]
    }))
    const sp = spawnServer(process.execPath, [CLI, 'proxy', '--config', file], null)
    ctx.defer(async () => await stopTree(sp))
    await waitReady(sp, [port], `keyedge (${id})`, () => true, 60_000)
    servers.set(id, { sp, port })
  }
  ctx.say(`warming up (${o.requests >> 2} requests each)`)
  for (const { port } of servers.values()) await h2load(port, o.requests >> 2, o.clients)

  const rounds: Round[] = []
  for (let r = 1; r <= o.rounds; r++) {
    const order: CaseId[] = r % 2 === 1 ? cases : [...cases].reverse()
    for (const id of order) {
      const server = servers.get(id)
      if (server === undefined) continue
      const pids = processTree(server.sp.pid)
      const before = snapshot(pids)
      const { succeeded, seconds } = await h2load(server.port, o.requests, o.clients)
      const cpuMicros = cpuDelta(before, snapshot(pids), pids)
      const row: Round = { round: r, case: id, requests: succeeded, cpuMicros, usPerRequest: cpuMicros / succeeded, seconds }
      rounds.push(row)
      ctx.say(`round ${r} ${id.padEnd(10)}: ${row.usPerRequest.toFixed(1)} µs/request, ${(succeeded / seconds).toFixed(0)} req/s`)
    }
  }
  const of = (id: CaseId): number[] => rounds.filter(x => x.case === id).map(x => x.usPerRequest)
  const plain = median(of('plain'))
  const pool = median(of('pool'))
  const perRound = Array.from({ length: o.rounds }, (_, i) => {
    const p = rounds.find(x => x.round === i + 1 && x.case === 'pool')?.usPerRequest ?? NaN
    const q = rounds.find(x => x.round === i + 1 && x.case === 'plain')?.usPerRequest ?? NaN
    return p / q
  })
  const ratio = pool / plain
  const logBytes = ((): number => { try { return statSync(accessLog).size } catch { return 0 } })()
  const lines = [
    `# bench pool (${ctx.startedAt.toISOString()})`,
    '',
    `Keep-alive HTTP/1.1 GETs proxied by one worker, ${o.requests} requests per case per round, ${o.clients} h2load connections, ${o.rounds} interleaved rounds.`,
    '',
    '| case | µs CPU per request (median) | per round |',
    '|---|---|---|',
    ...cases.map(id => `| ${LABELS[id]} | ${median(of(id)).toFixed(1)} | ${of(id).map(x => x.toFixed(1)).join(', ')} |`),
    '',
    `pool / plain: **${ratio.toFixed(3)}×** (ratio of medians; per-round ratios ${perRound.map(x => x.toFixed(3)).join(', ')}; min ${Math.min(...perRound).toFixed(3)}, max ${Math.max(...perRound).toFixed(3)}). Target ≤ 1.15×. Access log written: ${(logBytes / 1e6).toFixed(1)} MB.`,
    ...cases.filter(id => id !== 'plain' && id !== 'pool').map(id => `${id} / plain: ${(median(of(id)) / plain).toFixed(3)}×`)
  ]
  const md = lines.join('\n') + '\n'
  const files = writeResultFiles(o.out, 'pool', ctx.startedAt, { env: runtimeEnv(), options: o, rounds, medians: { plain, pool }, ratio, perRoundRatios: perRound, accessLogBytes: logBytes }, md)
  process.stdout.write(md)
  ctx.say(`results: ${files.json}, ${files.md}`)
  for (const { sp } of servers.values()) await stopTree(sp)
  return 0
}

export async function main (argv: string[]): Promise<number> {
  return await runBench<Options>({
    name: 'pool',
    usage: USAGE,
    options: { requests: { type: 'string' }, clients: { type: 'string' }, rounds: { type: 'string' }, cases: { type: 'string' }, out: { type: 'string' } },
    parse: v => ({
      requests: intOption('requests', v.requests, 20_000, 100, 1_000_000),
      clients: intOption('clients', v.clients, 8, 1, 256),
      rounds: intOption('rounds', v.rounds, 5, 1, 50),
      cases: listOption('cases', typeof v.cases === 'string' ? v.cases : 'plain,pool', CASE_IDS),
      out: outOption(v.out)
    }),
    run
  }, argv)
}
