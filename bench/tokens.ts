// `bench tokens`: the token endpoint under a load spike (steady, 10× for ten seconds, back), with
// caching, coalescing and batching on and then off, and TLS full-handshake latency during the spike.
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { createHash } from 'node:crypto'
import { startStack, startProxy, type TestProxy } from '../test/helpers/edge.js'
import { startCaseKeyd, type CaseKeyd } from './bench-stack.js'
import type { LoadOptions, PhaseResult } from './token-load.js'
import type { ProbeOptions, ProbeResult } from './handshake-probe.js'
import { intOption, outOption, runBench, runtimeEnv, writeResultFiles, type BenchContext, type OptionValues } from './runner.js'

export const USAGE = `usage: node dist/bench/run.js tokens [options]

POST /token at a steady rate, then ten times that rate, then back (open loop), against a proxy with
caching, coalescing and batching on (the defaults) and one with them off; one TLS full handshake
every 20 ms throughout, against the same keyd.

options:
  --rate N          steady requests per second (default 100)
  --factor N        spike multiplier (default 10)
  --phase-ms N      length of the steady and the after phases (default 10000)
  --spike-ms N      length of the spike (default 10000)
  --workers N       proxy workers (default 2)
  --out DIR         results directory (default bench/results)
  -h, --help        this help
`

const LOAD_MAIN = fileURLToPath(new URL('./token-load.js', import.meta.url))
const PROBE_MAIN = fileURLToPath(new URL('./handshake-probe.js', import.meta.url))

async function runChild<T> (main: string, opts: unknown, limitMs: number): Promise<T> {
  const child = spawn(process.execPath, [main, JSON.stringify(opts)], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  child.stdout.on('data', (b: Buffer) => { out += b.toString() })
  child.stderr.on('data', (b: Buffer) => { err += b.toString() })
  const timer = setTimeout(() => child.kill('SIGKILL'), limitMs)
  const code = await new Promise<number | null>(resolve => child.once('exit', c => resolve(c)))
  clearTimeout(timer)
  const last = out.trim().split('\n').pop() ?? ''
  if (code !== 0 || last === '') throw new Error(`${main} exited with ${String(code)}: ${err.slice(0, 500)}`)
  return JSON.parse(last) as T
}

interface VariantResult { variant: string, phases: PhaseResult[], handshakes: Array<{ phase: string, count: number, p50: number, p99: number }>, probeErrors: number, probeReused: number, keydSignatures: number | null, probeHandshakes: number }

function pct (xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b)
  if (s.length === 0) return 0
  const v = s[Math.min(s.length - 1, Math.floor(s.length * p))]
  if (v === undefined) throw new Error('pct: index out of range')
  return v
}

interface Options { rate: number, factor: number, phaseMs: number, spikeMs: number, workers: number, out: string }

function parseOptions (v: OptionValues): Options {
  return {
    rate: intOption('rate', v.rate, 100, 1, 100_000),
    factor: intOption('factor', v.factor, 10, 1, 1000),
    phaseMs: intOption('phase-ms', v['phase-ms'], 10_000, 1, 3_600_000),
    spikeMs: intOption('spike-ms', v['spike-ms'], 10_000, 1, 3_600_000),
    workers: intOption('workers', v.workers, 2, 1, 64),
    out: outOption(v.out)
  }
}

export async function main (argv: string[]): Promise<number> {
  return await runBench({
    name: 'tokens',
    usage: USAGE,
    options: { rate: { type: 'string' }, factor: { type: 'string' }, 'phase-ms': { type: 'string' }, 'spike-ms': { type: 'string' }, workers: { type: 'string' }, out: { type: 'string' } },
    parse: parseOptions,
    run
  }, argv)
}

async function run (o: Options, ctx: BenchContext): Promise<number> {
  const { say, startedAt } = ctx
  let caseKeyd: CaseKeyd | undefined
  const proxies: TestProxy[] = []
  say('setting up: keyd, dev certificates, a token-sign key, two proxies (spike absorption on / off) …')
  const stack = await startStack()
  ctx.defer(async () => { await stack.stop().catch(() => {}) })
  ctx.defer(async () => {
    if (caseKeyd !== undefined) await caseKeyd.stop().catch(() => null)
    for (const p of proxies) await p.stop().catch(() => {})
  })
  await stack.keyd.admin.createKey('bench-jwt', 'ec-p256', 'token-sign')
  const secrets = ['a', 'b', 'c', 'd'].map(n => `bench-secret-${n}-${'x'.repeat(24)}`)
  const callers = secrets.map((s, i) => ({ name: `svc-${i}`, secretSha256: createHash('sha256').update(s).digest('hex'), audiences: ['api'], claims: ['sub'] }))
  const variants: Array<{ name: string, spike: Record<string, unknown> }> = [
    { name: 'on', spike: {} },
    { name: 'off', spike: { cacheWindowMs: 0, coalesce: false, batch: false } }
  ]
  const ports = new Map<string, number>()
  for (const variant of variants) {
    const p = await startProxy(stack, { name: `bench-tokens-${variant.name}`, workers: o.workers, extra: { token: { listen: { host: '127.0.0.1', port: 0 }, issuer: 'https://bench.test', keys: [{ name: 'bench-jwt' }], callers, spike: variant.spike } } })
    proxies.push(p)
    ports.set(variant.name, p.port)
    ports.set(`${variant.name}-token`, (await p.waitFor(x => x.msg === 'token endpoint listening')).port as number)
  }
  await stack.keyd.stop()
  const phases = [
    { name: 'steady', rps: o.rate, ms: o.phaseMs },
    { name: 'spike', rps: o.rate * o.factor, ms: o.spikeMs },
    { name: 'after', rps: o.rate, ms: o.phaseMs }
  ]
  const total = phases.reduce((s, p) => s + p.ms, 0)
  const results: VariantResult[] = []
  for (const variant of variants) {
    caseKeyd = await startCaseKeyd(stack.keyd.paths.home)
    say(`variant ${variant.name}: ${phases.map(p => `${p.name} ${p.rps}/s × ${p.ms / 1000}s`).join(', ')} …`)
    const load: LoadOptions = { port: ports.get(`${variant.name}-token`) as number, secrets, phases, repeatedShare: 0.8, repeatedBodies: 100, connections: 128 }
    const probe: ProbeOptions = { port: ports.get(variant.name) as number, caFile: stack.caFile, durationMs: total, intervalMs: 20 }
    const [phaseResults, probeResult] = await Promise.all([
      runChild<PhaseResult[]>(LOAD_MAIN, load, total + 60_000),
      runChild<ProbeResult>(PROBE_MAIN, probe, total + 60_000)
    ])
    const keydSignatures = await caseKeyd.stop()
    caseKeyd = undefined
    const handshakes = phaseResults.map(p => {
      const xs = probeResult.samples.filter(([at]) => at >= p.startedAt && at < p.endedAt).map(([, ms]) => ms)
      return { phase: p.name, count: xs.length, p50: pct(xs, 0.5), p99: pct(xs, 0.99) }
    })
    results.push({ variant: variant.name, phases: phaseResults, handshakes, probeErrors: probeResult.errors, probeReused: probeResult.reused, keydSignatures, probeHandshakes: probeResult.samples.length })
    for (const p of phaseResults) say(`  ${p.name}: ${p.ok} tokens (${(p.ok / (p.elapsedMs / 1000)).toFixed(0)}/s), p50 ${p.latencyMs.p50.toFixed(1)} ms, p99 ${p.latencyMs.p99.toFixed(1)} ms, 429 ${p.limited}, other errors ${p.otherErrors}${p.errorSamples.length > 0 ? ` (${p.errorSamples.join('; ')})` : ''}, signed ${p.signed}`)
  }
  const table = markdown(results)
  const env = runtimeEnv()
  const files = writeResultFiles(o.out, 'tokens', startedAt, { startedAt, env, options: { ...o, out: undefined }, results }, table)
  process.stdout.write(`\n${table}\n`)
  say(`results: ${files.json}`)
  const failures = results.flatMap(r => [
    ...r.phases.filter(p => p.otherErrors > 0).map(p => `${r.variant}/${p.name}: ${p.otherErrors} errors other than 429`),
    ...(r.probeErrors > 0 ? [`${r.variant}: ${r.probeErrors} handshake errors`] : []),
    ...(r.probeReused > 0 ? [`${r.variant}: ${r.probeReused} handshakes resumed`] : [])
  ])
  for (const f of failures) say(`FAIL ${f}`)
  return failures.length > 0 ? 1 : 0
}

function markdown (results: VariantResult[]): string {
  const rows = ['| spike absorption | phase | offered/s | tokens/s | p50 ms | p99 ms | 429s (p99 ms) | other errors | keyd signatures/token | cache hits | coalesced | TLS full handshake p50 / p99 ms |', '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |']
  for (const r of results) {
    r.phases.forEach((p, i) => {
      const s = p.elapsedMs / 1000
      const h = r.handshakes[i]
      if (h === undefined) throw new Error(`no handshake figures for phase ${p.name}`)
      rows.push(`| ${r.variant} | ${p.name} | ${(p.offered / s).toFixed(0)} | ${(p.ok / s).toFixed(0)} | ${p.latencyMs.p50.toFixed(1)} | ${p.latencyMs.p99.toFixed(1)} | ${p.limited}${p.limited > 0 ? ` (${p.limitedLatencyMs.p99.toFixed(0)})` : ''} | ${p.otherErrors} | ${(p.signed / Math.max(1, p.ok)).toFixed(3)} | ${p.cache} | ${p.coalesced} | ${h.p50.toFixed(2)} / ${h.p99.toFixed(2)} (${h.count}) |`)
    })
  }
  const check = results.map(r => {
    const signed = r.phases.reduce((a, p) => a + p.signed, 0)
    return `${r.variant}: keyd counted ${r.keydSignatures ?? '?'} signatures = ${r.probeHandshakes} handshakes + ${(r.keydSignatures ?? 0) - r.probeHandshakes} token signatures (endpoint reported ${signed})`
  })
  return `${rows.join('\n')}\n\n${check.join('\n')}`
}
