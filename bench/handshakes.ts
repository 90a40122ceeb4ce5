// `bench handshakes`: server CPU per full TLS handshake with keys in keyd (through the bridge)
// against keys in the proxy process, ECDSA P-256 and RSA-2048, TLS 1.3 and 1.2, cases interleaved.
import { startStack } from '../test/helpers/edge.js'
import { makeBenchKeys } from './bench-keys.js'
import { startBenchProxy, startCaseKeyd, runClientProcess, type BenchProxy, type CaseKeyd } from './bench-stack.js'
import type { ClientOptions, KeyKind, TlsVersion } from './handshake-client.js'
import { cpuDelta, snapshot } from './proc-cpu.js'
import { intOption, listOption, outOption, runBench, runtimeEnv, type BenchContext, type OptionValues } from './runner.js'
import { markdownTable, summarize, writeResults, VARIANT_LABEL, type Run, type VariantId } from './handshake-report.js'

export const USAGE = `usage: node dist/bench/run.js handshakes [options]

Full TLS handshakes against the proxy, keys in keyd (A) and in process (B), side by side.
Every proxy runs with 2 workers by default; cases are interleaved over several rounds.

options:
  --duration-ms N    measured time per case (default 5000)
  --warmup-ms N      unmeasured warm-up before each case (default 1000)
  --rounds N         rounds over all cases; the report gives medians (default 3)
  --concurrency N    concurrent connections of the load generator (default 8)
  --workers N        proxy workers (default 2)
  --keys LIST        ec,rsa (default both)
  --versions LIST    1.3,1.2 (default both)
  --no-rr            skip the round-robin (SCHED_RR) keyd case
  --out DIR          results directory (default bench/results)
  -h, --help         this help
`

interface Options {
  durationMs: number
  warmupMs: number
  rounds: number
  concurrency: number
  workers: number
  keys: KeyKind[]
  versions: TlsVersion[]
  rr: boolean
  out: string
}

/** The options from the parsed values. @throws on an invalid option. */
function parseOptions (values: OptionValues): Options {
  return {
    durationMs: intOption('duration-ms', values['duration-ms'], 5000, 200, 600_000),
    warmupMs: intOption('warmup-ms', values['warmup-ms'], 1000, 0, 60_000),
    rounds: intOption('rounds', values.rounds, 3, 1, 50),
    concurrency: intOption('concurrency', values.concurrency, 8, 1, 1000),
    workers: intOption('workers', values.workers, 2, 1, 64),
    keys: listOption<KeyKind>('keys', values.keys, { ec: 'ec', rsa: 'rsa' }),
    versions: listOption<TlsVersion>('versions', values.versions, { 1.3: 'TLSv1.3', 1.2: 'TLSv1.2' }),
    rr: values['no-rr'] !== true,
    out: outOption(values.out)
  }
}

interface Variant { id: VariantId, proxy: BenchProxy, usesKeyd: boolean }
interface Group { name: string, keyKind: KeyKind, version: TlsVersion }

const KEY_LABEL: Record<KeyKind, string> = { ec: 'ECDSA P-256', rsa: 'RSA-2048' }

export async function main (argv: string[]): Promise<number> {
  return await runBench({
    name: 'handshakes',
    usage: USAGE,
    options: {
      'duration-ms': { type: 'string' },
      'warmup-ms': { type: 'string' },
      rounds: { type: 'string' },
      concurrency: { type: 'string' },
      workers: { type: 'string' },
      keys: { type: 'string' },
      versions: { type: 'string' },
      'no-rr': { type: 'boolean' },
      out: { type: 'string' }
    },
    parse: parseOptions,
    run
  }, argv)
}

async function run (o: Options, ctx: BenchContext): Promise<number> {
  const { say, startedAt } = ctx
  let caseKeyd: CaseKeyd | undefined
  const proxies: BenchProxy[] = []

  say('setting up: keyd, dev certificates (keys in keyd), fresh in-process keys, proxies …')
  const stack = await startStack()
  ctx.defer(async () => { await stack.stop().catch(() => {}) })
  const keys = makeBenchKeys()
  ctx.defer(() => { keys.remove() })
  ctx.defer(async () => {
    if (caseKeyd !== undefined) await caseKeyd.stop().catch(() => null)
    for (const p of proxies) await p.stop().catch(() => {})
  })
  const leaf = (kind: KeyKind): { cert: string, key: string } => {
    const l = stack.certs.leaves.find(x => x.keyType === (kind === 'ec' ? 'ec-p256' : 'rsa-2048'))
    if (l === undefined) throw new Error(`no dev ${kind} certificate`)
    return { cert: l.certFile, key: l.keyRefFile }
  }
  const refFiles = [leaf('ec'), leaf('rsa')]
  const variants: Variant[] = []
  const add = async (id: VariantId, files: Array<{ cert: string, key: string }>, usesKeyd: boolean, sched: 'none' | 'rr'): Promise<void> => {
    const proxy = await startBenchProxy(stack, { name: id, workers: o.workers, files, keyd: usesKeyd, env: { KEYEDGE_CLUSTER_SCHED: sched } })
    proxies.push(proxy)
    variants.push({ id, proxy, usesKeyd })
  }
  await add('keyd', refFiles, true, 'none')
  await add('in-process', [keys.ec, keys.rsa], false, 'none')
  if (o.rr) await add('keyd-rr', refFiles, true, 'rr')
  // From here keyd runs only during keyd cases, restarted for each so it reports that case's signatures.
  await stack.keyd.stop()

  const groups: Group[] = o.versions.flatMap(version => o.keys.map(keyKind => ({ name: `${version.replace('TLSv', 'TLS ')} ${KEY_LABEL[keyKind]}`, keyKind, version })))
  const caFiles = [stack.caFile, keys.caFile]
  const runs: Run[] = []
  const failures: string[] = []
  const total = o.rounds * groups.length * variants.length
  for (let round = 0; round < o.rounds; round++) {
    for (const group of groups) {
      const order = round % 2 === 0 ? variants : [...variants].reverse()
      for (const v of order) {
        const client: ClientOptions = { host: '127.0.0.1', port: v.proxy.port, servername: 'localhost', caFiles, version: group.version, keyKind: group.keyKind, concurrency: o.concurrency, durationMs: o.durationMs }
        if (v.usesKeyd) caseKeyd = await startCaseKeyd(stack.keyd.paths.home)
        const warm = o.warmupMs > 0 ? await runClientProcess({ ...client, durationMs: o.warmupMs }) : undefined
        const pids = [...v.proxy.pids(), ...(caseKeyd === undefined ? [] : [caseKeyd.keyd.proc.pid as number])]
        const before = snapshot(pids)
        const res = await runClientProcess(client)
        const after = snapshot(pids)
        const proxyPids = pids.filter(p => p !== caseKeyd?.keyd.proc.pid)
        const keydMicros = caseKeyd === undefined ? null : cpuDelta(before, after, [caseKeyd.keyd.proc.pid as number])
        const samePids = v.proxy.pids().join(',') === proxyPids.join(',')
        const signatures = caseKeyd === undefined ? null : await caseKeyd.stop()
        caseKeyd = undefined
        const run: Run = {
          round,
          group: group.name,
          variant: v.id,
          handshakes: res.handshakes,
          warmupHandshakes: warm?.handshakes ?? 0,
          errors: res.errors + (warm?.errors ?? 0),
          reused: res.reused + (warm?.reused ?? 0),
          elapsedMs: res.elapsedMs,
          rate: res.handshakes / (res.elapsedMs / 1000),
          proxyMicros: cpuDelta(before, after, proxyPids),
          primaryMicros: cpuDelta(before, after, [v.proxy.proc.proc.pid as number]),
          keydMicros,
          clientMicros: res.clientCpuMicros,
          signatures,
          cipher: res.cipher
        }
        runs.push(run)
        const name = `round ${round + 1}, ${group.name}, ${VARIANT_LABEL[v.id]}`
        const problems = [
          run.reused > 0 ? `${run.reused} handshakes RESUMED a session (a full-handshake benchmark must never resume)` : '',
          res.wrongProtocol + (warm?.wrongProtocol ?? 0) > 0 ? 'negotiated another TLS version than pinned' : '',
          res.wrongKeyKind + (warm?.wrongKeyKind ?? 0) > 0 ? `served another certificate type than ${KEY_LABEL[group.keyKind]}` : '',
          run.errors > Math.max(0, run.handshakes * 0.005) ? `${run.errors} handshake errors (${[...res.errorSamples, ...(warm?.errorSamples ?? [])].slice(0, 3).join('; ')})` : '',
          run.handshakes === 0 ? 'no handshake completed' : '',
          samePids ? '' : 'a proxy process was replaced during the case'
        ].filter(p => p !== '')
        for (const p of problems) { failures.push(`${name}: ${p}`); say(`FAIL ${name}: ${p}`) }
        const us = (m: number | null): string => m === null ? '–' : (m / Math.max(run.handshakes, 1)).toFixed(0)
        say(`[${runs.length}/${total}] ${name}: ${run.handshakes} hs, ${run.rate.toFixed(0)}/s, proxy ${us(run.proxyMicros)} µs/hs, keyd ${us(keydMicros)} µs/hs, sigs ${signatures ?? '–'}/${run.handshakes + run.warmupHandshakes}, errors ${run.errors}, resumed ${run.reused}`)
      }
    }
  }

  const summaries = summarize(runs)
  const env = runtimeEnv()
  const files = writeResults(o.out, { startedAt, env, options: { ...o, out: undefined }, runs, summaries, failures })
  process.stdout.write(`\n${markdownTable(summaries)}\n`)
  say(`results: ${files.json}\n         ${files.md}`)
  if (failures.length > 0) {
    say(`\n${failures.length} FAILURE(S):\n  ${failures.join('\n  ')}`)
    return 1
  }
  return 0
}
