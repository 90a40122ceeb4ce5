// `bench peers`: keyedge (key in keyd, and key in process) beside nginx, HAProxy, h2o (keys in its
// neverbleed process) and a minimal Node https/http2 + undici proxy, in one run: the same h2load client,
// the same upstream, the server side pinned to one CPU and the client to the others, server CPU per
// operation from /proc (every process of the server side, key processes included), interleaved
// rounds, medians and spread; memory per idle connection; 2 workers ÷ 1.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { startStack, type Stack } from '../test/helpers/edge.js'
import { makeBenchKeys } from './bench-keys.js'
import { pin, placement } from './proc-tree.js'
import { intOption, listOption, outOption, runBench, runtimeEnv, type BenchContext, type OptionValues } from './runner.js'
import { CASES, isMemory, measureIdle, measureLoad, type CaseDef, type CaseId, type Counts, type MeasureEnv, type Run } from './peers-cases.js'
import { writePeersResult, type PeersEnv, type PeersResult } from './peers-output.js'
import { writeClientConfigs } from './peers-h2load.js'
import { haveBinary, NATIVE_PEERS } from './peers-native.js'
import { KeydSlot, startKeyedge, startNodeProxy } from './peers-node.js'
import type { Instance, InstanceShape, PeerId } from './peers-process.js'
import { probe } from './peers-probe.js'
import { PEER_LABEL, PEER_ORDER, summarize } from './peers-report.js'
import { spawnServer, stopTree, waitOutput } from './peers-process.js'
import { errorMessage } from '../lib/errors.js'

export const USAGE = `usage: node dist/bench/run.js peers [options]   (or: npm run bench -- peers [options])

keyedge (key in keyd, and key in process) beside nginx, HAProxy, h2o and a minimal Node
proxy, in one run: the same h2load client and upstream, the server side pinned to CPU 0 and the
client to the others (≥ 2 CPUs), server CPU per operation from /proc, interleaved rounds, medians
and spread. nginx, HAProxy, h2o and h2load come from Debian
(apt-get install -y nginx haproxy h2o nghttp2-client); a missing peer is skipped.

The minimal Node proxy (peer "node", bench/peers-node-proxy.ts) is the floor a Node proxy
reaches: the key in process, an undici Pool to the upstream, no metrics, logs or SNI dispatch.
HTTP/1.1 cases go to its https.createServer listener; HTTP/2 cases (keepalive-h2) to its
http2.createSecureServer listener on Node's core API ('stream' event, stream.respond(), the
upstream body piped into the stream), the cheapest way Node serves HTTP/2.

options:
  --cases LIST       cases or groups (default all): full (full-13-ec, full-13-rsa, full-12-ec,
                     full-12-rsa), resumed (resumed-13, resumed-12), keepalive (keepalive-h1,
                     keepalive-h2), stream-1mib, memory (idle-memory, idle-memory-pq), workers-2
  --peers LIST       nginx,haproxy,h2o,node,keyedge,keyedge-keyd (default all)
  --rounds N         rounds over all cases, peers interleaved (default 3; --quick 1)
  --handshakes N     requests per full/resumed-handshake case, one per connection (default 3000)
  --requests N       requests per keep-alive case (default 30000)
  --stream N         1 MiB responses per streaming case (default 400)
  --idle N           idle keep-alive connections held for the memory case (default 4000)
  --clients N        h2load concurrent clients (default 8)
  --warmup-pct N     unmeasured warm-up before each case, % of its requests (default 20)
  --quick            smoke run: 1 round, 200 handshakes, 2000 requests, 20 MiB, 200 idle connections
  --no-pin           do not pin the server and the client to CPUs
  --from FILE        measure nothing: write the report and chart again from a results JSON
  --out DIR          results directory (default bench/results)
  -h, --help         this help
`

const CASE_GROUPS: Record<string, CaseId[]> = {
  full: ['full-13-ec', 'full-13-rsa', 'full-12-ec', 'full-12-rsa'],
  resumed: ['resumed-13', 'resumed-12'],
  keepalive: ['keepalive-h1', 'keepalive-h2'],
  memory: ['idle-memory', 'idle-memory-pq'],
  ...Object.fromEntries(CASES.map(c => [c.id, [c.id]]))
}

interface Options { cases: CaseDef[], peers: PeerId[], rounds: number, counts: Counts, warmupShare: number, pin: boolean, quick: boolean, out: string, from: string | undefined }

function parse (v: OptionValues): Options {
  const quick = v.quick === true
  const ids = new Set(listOption('cases', v.cases, CASE_GROUPS).flat())
  // Worker scaling is a ratio to the 1-worker full handshake of the same round.
  if (ids.has('workers-2')) ids.add('full-13-ec')
  return {
    cases: CASES.filter(c => ids.has(c.id)),
    peers: listOption('peers', v.peers, Object.fromEntries(PEER_ORDER.map(p => [p, p])) as Record<string, PeerId>),
    rounds: intOption('rounds', v.rounds, quick ? 1 : 3, 1, 50),
    counts: {
      handshakes: intOption('handshakes', v.handshakes, quick ? 200 : 3000, 10, 1_000_000),
      requests: intOption('requests', v.requests, quick ? 2000 : 30_000, 10, 10_000_000),
      stream: intOption('stream', v.stream, quick ? 20 : 400, 1, 100_000),
      idle: intOption('idle', v.idle, quick ? 200 : 4000, 1, 8000),
      clients: intOption('clients', v.clients, 8, 1, 512)
    },
    warmupShare: intOption('warmup-pct', v['warmup-pct'], quick ? 10 : 20, 0, 100) / 100,
    pin: v['no-pin'] !== true,
    quick,
    out: outOption(v.out),
    from: typeof v.from === 'string' ? v.from : undefined
  }
}

const UPSTREAM_MAIN = fileURLToPath(new URL('./peers-upstream.js', import.meta.url))
const shapeKey = (s: InstanceShape): string => `w${s.workers}-${s.resumption ? 'resume' : 'full'}`

/** Probes every instance's TLS setup; returns the problems found (resumption allowed where it must not be, wrong certificate…). */
async function checkInstance (inst: Instance): Promise<{ checks: Array<Record<string, unknown>>, problems: string[] }> {
  const checks: Array<Record<string, unknown>> = []
  const problems: string[] = []
  const name = `${PEER_LABEL[inst.peer]} (${shapeKey(inst)})`
  for (const version of ['1.3', '1.2'] as const) {
    for (const kind of inst.resumption ? ['ec'] as const : ['ec', 'rsa'] as const) {
      try {
        const r = await probe(inst.port(kind), version, kind)
        checks.push({ peer: inst.peer, shape: shapeKey(inst), version, kind, ...r })
        if (r.protocol !== `TLSv${version}`) problems.push(`${name}: TLS ${version} probe negotiated ${r.protocol}`)
        if (r.keyKind !== kind) problems.push(`${name}: TLS ${version} ${kind} probe got a ${r.keyKind ?? 'unknown'} certificate`)
        if (!r.status.startsWith('HTTP/1.1 200')) problems.push(`${name}: probe answered "${r.status}"`)
        if (r.resumed !== inst.resumption) problems.push(`${name}: TLS ${version} session ${r.resumed ? 'was resumed: full-handshake cases would resume' : 'was not resumed: resumed cases would not resume'}`)
      } catch (err) {
        problems.push(`${name}: TLS ${version} ${kind} probe failed: ${errorMessage(err)}`)
      }
    }
  }
  return { checks, problems }
}

/**
 * A native server takes its port numbers from its config, picked free a moment before: another
 * program may take one meanwhile. Tries three times.
 */
async function startNative (start: () => Promise<Instance>): Promise<Instance> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await start()
    } catch (err) {
      if (attempt === 3 || !/in use|bind\(\)|cannot bind|Address already/i.test(errorMessage(err))) throw err
    }
  }
}

/** `--from`: the report and chart of a saved run, with today's report code (medians recomputed from its runs). */
function rerender (o: Options, ctx: BenchContext): number {
  const saved = JSON.parse(readFileSync(o.from as string, 'utf8')) as PeersResult
  if (saved.benchmark !== 'peers' || !Array.isArray(saved.runs)) throw new Error(`${o.from as string} is not a peers result`)
  const files = writePeersResult(o.out, { ...saved, summaries: summarize(saved.runs) }, false)
  process.stdout.write(`${files.markdown}\n`)
  ctx.say(`written: ${files.md}\n         ${files.svg}`)
  return saved.failures.length > 0 ? 1 : 0
}

async function run (o: Options, ctx: BenchContext): Promise<number> {
  const { say } = ctx
  if (o.from !== undefined) return rerender(o, ctx)
  if (!haveBinary('h2load')) {
    process.stderr.write('bench peers: h2load is not installed. Install it with: apt-get install -y nghttp2-client\n')
    return 2
  }
  const place = placement(o.pin)
  pin([process.pid], place.client)
  say(`placement: ${place.why}`)
  const skipped: string[] = []
  const peers = o.peers.filter(p => {
    const native = NATIVE_PEERS.find(n => n.id === p)
    if (native === undefined || haveBinary(native.binary)) return true
    skipped.push(`${PEER_LABEL[p]}: not installed, skipped (install it with: ${native.install})`)
    say(`SKIP ${skipped[skipped.length - 1]}`)
    return false
  })
  if (peers.length === 0) { say('no peer to run'); return 2 }

  const dir = mkdtempSync(join(tmpdir(), 'keyedge-bench-peers-'))
  ctx.defer(() => rmSync(dir, { recursive: true, force: true }))
  const keys = makeBenchKeys()
  ctx.defer(() => keys.remove())
  const opensslConf = writeClientConfigs(join(dir, 'client'))

  say('setting up: upstream, keys, peers …')
  const upstream = spawnServer(process.execPath, [UPSTREAM_MAIN], place.client)
  ctx.defer(async () => await stopTree(upstream))
  const upstreamPort = Number((await waitOutput(upstream, /\{"port":(\d+)\}/, 'the upstream'))[1])
  const upstreamUrl = `http://127.0.0.1:${upstreamPort}`

  let stack: Stack | undefined
  if (peers.includes('keyedge') || peers.includes('keyedge-keyd')) {
    stack = await startStack()
    ctx.defer(async () => await stack?.stop())
  }
  const keydSlot = stack === undefined ? undefined : new KeydSlot(stack.keyd.paths.home, place.server)
  ctx.defer(async () => await keydSlot?.stop())

  const shapes = [...new Map(o.cases.map(c => [shapeKey(c.shape), c.shape])).values()]
  const instances = new Map<string, Instance>()
  const setupProblems: string[] = []
  const checks: Array<Record<string, unknown>> = []
  const nodeSetup = { ec: keys.ec, rsa: keys.rsa, upstreamUrl, serverCpus: place.server }
  const startInstance = async (peer: PeerId, shape: InstanceShape): Promise<Instance> => {
    const native = NATIVE_PEERS.find(n => n.id === peer)
    const inst = native !== undefined
      ? await startNative(() => native.start({ dir, ec: keys.ec, rsa: keys.rsa, upstreamPort, serverCpus: place.server }, shape))
      : peer === 'node'
        ? await startNodeProxy(nodeSetup, shape)
        : await startKeyedge(stack as Stack, nodeSetup, shape, peer === 'keyedge-keyd' ? keydSlot : undefined)
    let stopped = false
    ctx.defer(async () => { if (!stopped) await inst.stop() })
    return { ...inst, stop: async () => { stopped = true; await inst.stop() } }
  }
  for (const peer of peers) {
    for (const shape of shapes) {
      const inst = await startInstance(peer, shape)
      instances.set(`${peer}/${shapeKey(shape)}`, inst)
      const c = await checkInstance(inst)
      checks.push(...c.checks)
      setupProblems.push(...c.problems)
      say(`  ${PEER_LABEL[peer]} (${shapeKey(shape)}): ${inst.pids().length} processes${c.problems.length > 0 ? `, ${c.problems.length} PROBLEM(S)` : ', TLS checks passed'}`)
    }
  }
  for (const p of setupProblems) say(`FAIL ${p}`)
  // From here keyd runs only during keyd-backed cases, restarted for each so it reports that case's signatures.
  await stack?.keyd.stop()

  const runs: Run[] = []
  const skippedCases = new Set<string>()
  // Instances that have held a memory case's idle connections (the next memory case restarts them).
  const heldIdle = new Set<string>()
  const total = o.rounds * o.cases.length * peers.length
  let done = 0
  for (let round = 0; round < o.rounds; round++) {
    for (const def of o.cases) {
      // Rotate the peer order every round so slow drift of the machine does not favour one peer.
      const order = peers.map((_, i) => {
        const peer = peers[(i + round) % peers.length]
        if (peer === undefined) throw new Error('peer rotation out of range')
        return peer
      })
      for (const peer of order) {
        done++
        const instKey = `${peer}/${shapeKey(def.shape)}`
        let inst = instances.get(instKey) as Instance
        if (isMemory(def) && heldIdle.has(instKey)) {
          // Memory is read in a fresh process every time: one that held idle connections before reuses
          // what those closed connections left in its allocator and heap (7-10 KiB read where a
          // fresh worker grows 43-45 KiB per connection).
          await inst.stop()
          if (peer === 'keyedge-keyd') await keydSlot?.start() // keyedge checks its keys at start
          inst = await startInstance(peer, def.shape)
          if (peer === 'keyedge-keyd') await keydSlot?.stop()
          instances.set(instKey, inst)
        }
        if (isMemory(def)) heldIdle.add(instKey)
        if (def.needsHttp2 === true && !inst.http2) { skippedCases.add(`${def.label}: ${PEER_LABEL[peer]} serves HTTP/1.1 only`); continue }
        const env: MeasureEnv = { clientCpus: place.client, opensslConf, warmupShare: o.warmupShare, settleMs: o.quick ? 300 : 1000, ...(peer === 'keyedge-keyd' && keydSlot !== undefined ? { keyd: keydSlot } : {}) }
        let r: Run
        try {
          r = def.load === undefined ? await measureIdle(def, inst, round, o.counts, env) : await measureLoad(def, inst, round, o.counts, env)
        } catch (err) {
          r = { round, caseId: def.id, peer, ops: 0, value: NaN, keyValue: null, seconds: 0, rate: 0, protocol: '', cipher: '', alpn: '', signaturesPerHandshake: null, counted: null, totalValue: null, problems: [errorMessage(err).split('\n')[0] ?? 'failed'], notes: [] }
        }
        runs.push(r)
        const unit = isMemory(def) ? 'KiB/conn' : 'µs/op'
        const key = r.keyValue !== null ? ` (key process ${r.keyValue.toFixed(0)})` : ''
        const sig = r.signaturesPerHandshake !== null ? `, keyd signatures/handshake ${r.signaturesPerHandshake.toFixed(2)}` : ''
        const counted = r.counted !== null ? `, resumed (server count) ${r.counted.resumed}` : ''
        say(`[${done}/${total}] round ${round + 1} · ${def.id} · ${PEER_LABEL[peer]}: ${r.value.toFixed(isMemory(def) ? 1 : 0)} ${unit}${key}, ${r.ops} ops, ${r.rate.toFixed(0)}/s${sig}${counted}`)
        for (const p of r.problems) say(`  FAIL ${p}`)
        for (const n of r.notes) say(`  NOTE ${n}`)
      }
    }
  }

  const env: PeersEnv = {
    ...runtimeEnv(),
    placement: place.why,
    peers: Object.fromEntries(NATIVE_PEERS.filter(n => peers.includes(n.id)).map(n => [n.id, n.version()])),
    h2load: execFileSync('h2load', ['--version'], { encoding: 'utf8' }).trim()
  }
  const tagged = (r: Run, s: string): string => `round ${r.round + 1} · ${r.caseId} · ${PEER_LABEL[r.peer]}: ${s}`
  const failures = [...setupProblems, ...runs.flatMap(r => r.problems.map(p => tagged(r, p)))]
  const result: PeersResult = {
    benchmark: 'peers',
    startedAt: ctx.startedAt.toISOString(),
    env,
    options: { cases: o.cases.map(c => c.id), peers, rounds: o.rounds, counts: o.counts, warmupShare: o.warmupShare, pin: o.pin, quick: o.quick },
    checks,
    runs,
    summaries: summarize(runs),
    skipped: [...skipped, ...skippedCases],
    failures,
    notes: runs.flatMap(r => r.notes.map(n => tagged(r, n)))
  }
  const files = writePeersResult(o.out, result, true)
  process.stdout.write(`\n${files.markdown}\n`)
  say(`results: ${files.json}\n         ${files.md}\n         ${files.svg}`)
  if (failures.length > 0) { say(`\n${failures.length} FAILURE(S)`); return 1 }
  return 0
}

export async function main (argv: string[]): Promise<number> {
  return await runBench({ name: 'peers', usage: USAGE, options: {
    cases: { type: 'string' },
    peers: { type: 'string' },
    rounds: { type: 'string' },
    handshakes: { type: 'string' },
    requests: { type: 'string' },
    stream: { type: 'string' },
    idle: { type: 'string' },
    clients: { type: 'string' },
    'warmup-pct': { type: 'string' },
    quick: { type: 'boolean' },
    'no-pin': { type: 'boolean' },
    from: { type: 'string' },
    out: { type: 'string' }
  }, parse, run }, argv)
}
