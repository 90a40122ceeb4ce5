// `bench resumption`: full against resumed TLS handshakes (tickets from keyd's ticket keys), TLS 1.3
// and 1.2, side by side in one run: rate, server CPU per handshake, keyd signatures per 1,000.
import { mkdirSync, writeFileSync } from 'node:fs'
import { cpus } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { startStack, type Stack } from '../test/helpers/edge.js'
import { ROOT } from '../test/helpers/paths.js'
import { startBenchProxy, startCaseKeyd, runClientProcess, type BenchProxy, type CaseKeyd } from './bench-stack.js'
import type { TlsVersion } from './handshake-client.js'
import { cpuDelta, snapshot } from './proc-cpu.js'

export const USAGE = `usage: node dist/bench/run.js resumption [options]

Full and resumed TLS handshakes (ECDSA P-256, keys in keyd) against one proxy, interleaved.
A resumed case's client offers the session of its previous connection (tickets).

options:
  --duration-ms N    measured time per case (default 4000)
  --warmup-ms N      unmeasured warm-up before each case (default 500)
  --rounds N         rounds over all cases; the report gives medians (default 3)
  --concurrency N    concurrent connections (default 8)
  --workers N        proxy workers (default 2)
  -h, --help         this help
`

interface Row { round: number, version: TlsVersion, mode: 'full' | 'resumed', handshakes: number, reused: number, errors: number, rate: number, proxyUs: number, keydUs: number, sigsPer1000: number }

const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor((s.length - 1) / 2)] ?? 0 }

export async function main (argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, strict: true, options: {
    'duration-ms': { type: 'string' }, 'warmup-ms': { type: 'string' }, rounds: { type: 'string' },
    concurrency: { type: 'string' }, workers: { type: 'string' }, help: { type: 'boolean', short: 'h' }
  } })
  if (values.help === true) { process.stdout.write(USAGE); return 0 }
  const num = (v: string | undefined, d: number): number => v === undefined ? d : Number(v)
  const o = { durationMs: num(values['duration-ms'], 4000), warmupMs: num(values['warmup-ms'], 500), rounds: num(values.rounds, 3), concurrency: num(values.concurrency, 8), workers: num(values.workers, 2) }
  const say = (s: string): void => { process.stderr.write(`${s}\n`) }
  let stack: Stack | undefined
  let proxy: BenchProxy | undefined
  let caseKeyd: CaseKeyd | undefined
  try {
    say('setting up: keyd, dev certificates, proxy …')
    stack = await startStack()
    const leaf = stack.certs.leaves.find(l => l.keyType === 'ec-p256')
    if (leaf === undefined) throw new Error('no dev ECDSA certificate')
    proxy = await startBenchProxy(stack, { name: 'resumption', workers: o.workers, files: [{ cert: leaf.certFile, key: leaf.keyRefFile }], keyd: true })
    await stack.keyd.stop()
    const rows: Row[] = []
    const failures: string[] = []
    for (let round = 0; round < o.rounds; round++) {
      for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
        const modes = round % 2 === 0 ? ['full', 'resumed'] as const : ['resumed', 'full'] as const
        for (const mode of modes) {
          caseKeyd = await startCaseKeyd(stack.keyd.paths.home)
          const client = { host: '127.0.0.1', port: proxy.port, servername: 'localhost', caFiles: [stack.caFile], version, keyKind: 'ec' as const, concurrency: o.concurrency, durationMs: o.durationMs, resume: mode === 'resumed' }
          const warm = o.warmupMs > 0 ? await runClientProcess({ ...client, durationMs: o.warmupMs }) : undefined
          const keydPid = caseKeyd.keyd.proc.pid as number
          const pids = [...proxy.pids(), keydPid]
          const before = snapshot(pids)
          const res = await runClientProcess(client)
          const after = snapshot(pids)
          const signatures = await caseKeyd.stop() ?? NaN
          caseKeyd = undefined
          const total = res.handshakes + (warm?.handshakes ?? 0)
          const row: Row = {
            round, version, mode, handshakes: res.handshakes, reused: res.reused, errors: res.errors + (warm?.errors ?? 0),
            rate: res.handshakes / (res.elapsedMs / 1000),
            proxyUs: cpuDelta(before, after, pids.filter(p => p !== keydPid)) / Math.max(1, res.handshakes),
            keydUs: cpuDelta(before, after, [keydPid]) / Math.max(1, res.handshakes),
            sigsPer1000: signatures / Math.max(1, total) * 1000
          }
          rows.push(row)
          if (mode === 'full' && row.reused > 0) failures.push(`${version} full: ${row.reused} handshakes resumed`)
          if (mode === 'resumed' && row.reused < row.handshakes - o.concurrency) failures.push(`${version} resumed: only ${row.reused} of ${row.handshakes} resumed`)
          if (row.errors > 0) failures.push(`${version} ${mode}: ${row.errors} errors (${res.errorSamples.slice(0, 2).join('; ')})`)
          say(`[round ${round + 1}] ${version} ${mode}: ${row.handshakes} hs, ${row.rate.toFixed(0)}/s, proxy ${row.proxyUs.toFixed(0)} µs/hs, keyd ${row.keydUs.toFixed(0)} µs/hs, resumed ${row.reused}, keyd signatures ${signatures}/${total}`)
        }
      }
    }
    const lines = ['| handshake (ECDSA P-256, keys in keyd) | rate /s | server CPU/handshake | proxy | keyd | keyd signatures per 1,000 handshakes | resumed |', '|---|---:|---:|---:|---:|---:|---:|']
    for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
      for (const mode of ['full', 'resumed'] as const) {
        const rs = rows.filter(r => r.version === version && r.mode === mode)
        const proxyUs = median(rs.map(r => r.proxyUs))
        const keydUs = median(rs.map(r => r.keydUs))
        const resumed = rs.reduce((a, r) => a + r.reused, 0) / Math.max(1, rs.reduce((a, r) => a + r.handshakes, 0))
        lines.push(`| ${version.replace('TLSv', 'TLS ')} ${mode} | ${median(rs.map(r => r.rate)).toFixed(0)} | ${(proxyUs + keydUs).toFixed(0)} µs | ${proxyUs.toFixed(0)} µs | ${keydUs.toFixed(0)} µs | ${median(rs.map(r => r.sigsPer1000)).toFixed(1)} | ${(resumed * 100).toFixed(1)} % |`)
      }
    }
    const table = lines.join('\n')
    const out = join(ROOT, 'bench', 'results')
    mkdirSync(out, { recursive: true })
    const stamp = new Date().toISOString().slice(0, 16).replace(/[-:]/g, '').replace('T', 'T')
    writeFileSync(join(out, `resumption-${stamp}.json`), JSON.stringify({ options: o, env: { node: process.versions.node, openssl: process.versions.openssl, cpus: cpus().length }, rows, failures }, null, 2))
    writeFileSync(join(out, 'resumption-latest.md'), table + '\n')
    process.stdout.write(`\n${table}\n`)
    if (failures.length > 0) { say(`\n${failures.length} FAILURE(S):\n  ${failures.join('\n  ')}`); return 1 }
    return 0
  } finally {
    if (caseKeyd !== undefined) await caseKeyd.stop().catch(() => null)
    await proxy?.stop().catch(() => {})
    await stack?.stop().catch(() => {})
  }
}
