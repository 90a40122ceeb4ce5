// The cases of `bench peers` and how one case is measured on one peer: h2load against the peer's
// instance of the right shape, server CPU (utime+stime of every process of the server side, key
// process included) read from /proc around it; or, for memory, idle connections held while the
// workers' resident memory is read.
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { KeyKind } from './handshake-client.js'
import { cpuDelta, snapshot } from './proc-cpu.js'
import { pinnedCommand, rssKiB } from './proc-tree.js'
import type { IdleHeld, IdleOptions } from './peers-idle-client.js'
import { runH2load, type LoadResult, type LoadSpec, type TlsVer } from './peers-h2load.js'
import type { Instance, InstanceShape, PeerId } from './peers-process.js'
import { LARGE_PATH } from './peers-upstream.js'

export type CaseId = 'full-13-ec' | 'full-13-rsa' | 'full-12-ec' | 'full-12-rsa' | 'resumed-13' | 'resumed-12' | 'keepalive-h1' | 'keepalive-h2' | 'stream-1mib' | 'idle-memory' | 'idle-memory-pq' | 'workers-2'

/** How many operations each kind of case makes (h2load `-n`, idle connections) and with how many clients. */
export interface Counts { handshakes: number, requests: number, stream: number, idle: number, clients: number }

export interface CaseDef {
  id: CaseId
  label: string
  /** What one operation is, for the table. */
  op: string
  shape: InstanceShape
  /** h2load's load; absent for the memory case. */
  load?: (c: Counts) => Omit<LoadSpec, 'port'>
  /** Whether handshakes must be resumed (true), must not be (false), or either (keep-alive: only the first one per client). */
  resumed: boolean | null
  /** Peers that cannot run it (no HTTP/2). */
  needsHttp2?: boolean
  /** A memory case: the key-exchange groups its idle client offers (null: the client's defaults). */
  idle?: { groups: string | null }
}

/** Whether a case reads memory per idle connection (KiB) rather than CPU per operation. */
export const isMemory = (d: CaseDef): boolean => d.idle !== undefined

const ONE: InstanceShape = { workers: 1, resumption: false }
const full = (v: TlsVer, k: KeyKind, c: Counts): Omit<LoadSpec, 'port'> =>
  ({ path: '/', proto: 'h1', connectionClose: true, clients: c.clients, streams: 1, requests: c.handshakes, version: v, keyKind: k })

export const CASES: CaseDef[] = [
  { id: 'full-13-ec', label: 'TLS 1.3 ECDSA P-256: full handshake + 1 proxied GET', op: 'connection', shape: ONE, resumed: false, load: c => full('1.3', 'ec', c) },
  { id: 'full-13-rsa', label: 'TLS 1.3 RSA-2048: full handshake + 1 proxied GET', op: 'connection', shape: ONE, resumed: false, load: c => full('1.3', 'rsa', c) },
  { id: 'full-12-ec', label: 'TLS 1.2 ECDSA P-256: full handshake + 1 proxied GET', op: 'connection', shape: ONE, resumed: false, load: c => full('1.2', 'ec', c) },
  { id: 'full-12-rsa', label: 'TLS 1.2 RSA-2048: full handshake + 1 proxied GET', op: 'connection', shape: ONE, resumed: false, load: c => full('1.2', 'rsa', c) },
  { id: 'resumed-13', label: 'TLS 1.3 resumed handshake + 1 proxied GET', op: 'connection', shape: { workers: 1, resumption: true }, resumed: true, load: c => full('1.3', 'ec', c) },
  { id: 'resumed-12', label: 'TLS 1.2 resumed handshake + 1 proxied GET', op: 'connection', shape: { workers: 1, resumption: true }, resumed: true, load: c => full('1.2', 'ec', c) },
  { id: 'keepalive-h1', label: 'keep-alive HTTP/1.1 proxied GET', op: 'request', shape: ONE, resumed: null, load: c => ({ path: '/', proto: 'h1', connectionClose: false, clients: c.clients, streams: 1, requests: c.requests, version: '1.3', keyKind: 'ec' }) },
  { id: 'keepalive-h2', label: 'keep-alive HTTP/2 proxied GET (8 streams)', op: 'request', shape: ONE, resumed: null, needsHttp2: true, load: c => ({ path: '/', proto: 'h2', connectionClose: false, clients: c.clients, streams: 8, requests: c.requests, version: '1.3', keyKind: 'ec' }) },
  { id: 'stream-1mib', label: '1 MiB response streamed (HTTP/1.1 keep-alive)', op: 'MiB', shape: ONE, resumed: null, load: c => ({ path: LARGE_PATH, proto: 'h1', connectionClose: false, clients: Math.max(1, c.clients >> 1), streams: 1, requests: c.stream, version: '1.3', keyKind: 'ec' }) },
  { id: 'idle-memory', label: 'memory per idle keep-alive TLS connection', op: 'connection', shape: ONE, resumed: null, idle: { groups: 'X25519:P-256' } },
  // Node 24's own defaults, like current browsers and curl: an X25519MLKEM768 key share makes a ClientHello of ~1.5 KiB.
  { id: 'idle-memory-pq', label: 'memory per idle keep-alive TLS connection, client offering X25519MLKEM768', op: 'connection', shape: ONE, resumed: null, idle: { groups: null } },
  { id: 'workers-2', label: 'TLS 1.3 ECDSA full handshake + GET, 2 workers', op: 'connection', shape: { workers: 2, resumption: false }, resumed: false, load: c => full('1.3', 'ec', c) }
]

/** One measured case on one peer in one round. */
export interface Run {
  round: number
  caseId: CaseId
  peer: PeerId
  /** Successful operations measured (requests; held connections for memory). */
  ops: number
  /** Server CPU µs per operation (every process of the server side), or KiB per connection for memory. */
  value: number
  /** The key process's part of `value` (keyd, neverbleed); null when the key is in process. */
  keyValue: number | null
  seconds: number
  rate: number
  protocol: string
  cipher: string
  alpn: string
  /** keyd signatures per handshake (warm-up included), keyedge with keyd only. */
  signaturesPerHandshake: number | null
  /** The server's own handshake counters over the measured part, where it has them. */
  counted: { full: number, resumed: number } | null
  /** For memory: the whole server side's growth per connection, KiB (keyd included). */
  totalValue: number | null
  /** What makes the run fail: wrong answers, versions, certificates, resumption. */
  problems: string[]
  /** What a reader must know about the figure but does not make it wrong. */
  notes: string[]
}

export interface MeasureEnv {
  clientCpus: string | null
  opensslConf: (v: TlsVer, k: KeyKind) => string
  /** Warm-up requests before a measured load, as a share of it. */
  warmupShare: number
  /** Seconds to let memory settle once the idle connections are held. */
  settleMs: number
  /** Called around every load on a keyd-backed peer: start keyd before, stop it after (signatures made). */
  keyd?: { start: () => Promise<void>, stop: () => Promise<number | null> }
}

const limitFor = (spec: Omit<LoadSpec, 'port'>): number => 60_000 + spec.requests * (spec.path === LARGE_PATH ? 50 : 5)

function checkLoad (spec: Omit<LoadSpec, 'port'>, r: LoadResult): string[] {
  const p: string[] = []
  if (r.succeeded !== spec.requests || r.status2xx !== spec.requests) p.push(`${spec.requests - r.status2xx} of ${spec.requests} requests failed (${r.failed} failed, ${r.errored} errored, ${r.timeout} timed out)`)
  if (r.protocol !== `TLSv${spec.version}`) p.push(`negotiated ${r.protocol || 'nothing'}, not TLS ${spec.version}`)
  const wantAlpn = spec.proto === 'h2' ? 'h2' : 'http/1.1'
  if (r.alpn !== wantAlpn) p.push(`ALPN ${r.alpn || 'none'}, not ${wantAlpn}`)
  if (spec.version === '1.2' && !r.cipher.includes(spec.keyKind === 'ec' ? 'ECDSA' : 'RSA')) p.push(`cipher ${r.cipher} does not match a ${spec.keyKind} certificate`)
  if (spec.path === LARGE_PATH && !(r.bodyBytes >= spec.requests * 1024 * 1024)) p.push(`received ${r.bodyBytes} body bytes, fewer than ${spec.requests} MiB`)
  return p
}

/** Runs one load case on `inst`: warm-up, then the measured h2load run with /proc CPU read around it. */
export async function measureLoad (def: CaseDef, inst: Instance, round: number, counts: Counts, env: MeasureEnv): Promise<Run> {
  const base = (def.load as (c: Counts) => Omit<LoadSpec, 'port'>)(counts)
  const spec: LoadSpec = { ...base, port: inst.port(base.keyKind, base.proto) }
  const conf = env.opensslConf(spec.version, spec.keyKind)
  await env.keyd?.start()
  let signatures: number | null = null
  let r: LoadResult
  let warm: LoadResult | undefined
  let cpu: number
  let keyCpu: number
  let counted: { full: number, resumed: number } | null = null
  let hasKeyProcess: boolean
  try {
    // Each worker warms up as much as a lone worker does (code is compiled, pools filled per process):
    // else the 2-workers ÷ 1 ratio measures the second worker's warm-up too.
    const warmN = Math.round(spec.requests * env.warmupShare) * def.shape.workers
    if (warmN > 0) warm = await runH2load({ ...spec, requests: Math.max(warmN, Math.min(spec.clients, spec.requests)) }, conf, env.clientCpus, limitFor(spec))
    const c0 = await inst.handshakes?.()
    const pids = inst.pids()
    const keyPids = inst.keyPids()
    hasKeyProcess = keyPids.length > 0
    const before = snapshot(pids)
    r = await runH2load(spec, conf, env.clientCpus, limitFor(spec))
    const after = snapshot(pids)
    const c1 = await inst.handshakes?.()
    cpu = cpuDelta(before, after, pids)
    keyCpu = keyPids.length === 0 ? 0 : cpuDelta(before, after, keyPids)
    if (c0 !== undefined && c1 !== undefined) counted = { full: c1.full - c0.full, resumed: c1.resumed - c0.resumed }
  } finally {
    if (env.keyd !== undefined) signatures = await env.keyd.stop()
  }
  const problems = checkLoad(spec, r)
  const handshakes = spec.connectionClose ? r.succeeded : Math.min(spec.clients, spec.requests)
  if (counted !== null && def.resumed === false && counted.resumed > 0) problems.push(`${counted.resumed} handshakes resumed (the server's counter)`)
  if (counted !== null && def.resumed === true && counted.resumed < handshakes - 2 * spec.clients) problems.push(`only ${counted.resumed} of ${handshakes} handshakes resumed (the server's counter)`)
  const allHandshakes = handshakes + (warm === undefined ? 0 : spec.connectionClose ? warm.succeeded : Math.min(spec.clients, warm.requests))
  const ops = Math.max(1, r.succeeded)
  return {
    round,
    caseId: def.id,
    peer: inst.peer,
    ops: r.succeeded,
    value: cpu / ops,
    keyValue: hasKeyProcess ? keyCpu / ops : null,
    seconds: r.seconds,
    rate: r.succeeded / Math.max(r.seconds, 1e-6),
    protocol: r.protocol,
    cipher: r.cipher,
    alpn: r.alpn,
    signaturesPerHandshake: signatures === null ? null : signatures / Math.max(1, allHandshakes),
    counted,
    totalValue: null,
    problems,
    notes: []
  }
}

const IDLE_MAIN = fileURLToPath(new URL('./peers-idle-client.js', import.meta.url))
const sum = (pids: number[]): number => pids.reduce((a, p) => a + rssKiB(p), 0)

/** Reads one JSON line from the idle client's stdout; rejects on exit or after `ms`. */
async function nextLine<T> (lines: string[], child: ReturnType<typeof spawn>, ms: number): Promise<T> {
  const deadline = Date.now() + ms
  while (lines.length === 0) {
    if (child.exitCode !== null) throw new Error(`idle client exited with ${child.exitCode}`)
    if (Date.now() > deadline) throw new Error(`idle client gave no answer within ${ms} ms`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  return JSON.parse(lines.shift() as string) as T
}

/** Holds `counts.idle` keep-alive connections on `inst` and reads how much the server side's memory grew per connection. */
export async function measureIdle (def: CaseDef, inst: Instance, round: number, counts: Counts, env: MeasureEnv): Promise<Run> {
  await env.keyd?.start()
  let signatures: number | null = null
  const problems: string[] = []
  const notes: string[] = []
  let held: IdleHeld
  let warmHandshakes: number
  let alive: number
  let worker0: number; let worker1: number; let total0: number; let total1: number
  try {
    // Warm the server up (first connections allocate pools and compile code), then take the baseline.
    const spec: LoadSpec = { path: '/', proto: 'h1', connectionClose: true, clients: counts.clients, streams: 1, requests: Math.max(counts.clients * 4, Math.round(counts.idle * env.warmupShare)), version: '1.3', keyKind: 'ec', port: inst.port('ec') }
    warmHandshakes = (await runH2load(spec, env.opensslConf('1.3', 'ec'), env.clientCpus, limitFor(spec))).succeeded
    // Let what the warm-up left behind settle (garbage collection, freed buffers) before the baseline.
    await new Promise(resolve => setTimeout(resolve, env.settleMs))
    worker0 = sum(inst.workerPids()); total0 = sum(inst.pids())
    const opts: IdleOptions = { port: inst.port('ec'), connections: counts.idle, parallel: 32, groups: def.idle?.groups ?? null }
    const [file, ...args] = [...pinnedCommand(env.clientCpus), process.execPath, IDLE_MAIN, JSON.stringify(opts)]
    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'inherit'] })
    const lines: string[] = []
    let buf = ''
    child.stdout.on('data', (b: Buffer) => { buf += b.toString(); const parts = buf.split('\n'); buf = parts.pop() ?? ''; lines.push(...parts.filter(l => l !== '')) })
    try {
      held = await nextLine<IdleHeld>(lines, child, 60_000 + counts.idle * 20)
      await new Promise(resolve => setTimeout(resolve, env.settleMs))
      worker1 = sum(inst.workerPids()); total1 = sum(inst.pids())
      child.stdin.write('alive?\n')
      alive = (await nextLine<{ alive: number }>(lines, child, 30_000)).alive
      child.stdin.end()
      await nextLine<{ closedEarly: number }>(lines, child, 30_000)
    } finally {
      child.stdin.destroy()
      if (child.exitCode === null) child.kill('SIGKILL')
    }
  } finally {
    if (env.keyd !== undefined) signatures = await env.keyd.stop()
  }
  if (held.failed > 0) problems.push(`${held.failed} of ${counts.idle} idle connections failed (${held.errorSamples.join('; ')})`)
  if (alive < held.held) notes.push(`the server closed ${held.held - alive} of ${held.held} idle keep-alive connections before the memory was read (its keep-alive timeout is shorter than the ${(held.ms / 1000).toFixed(1)} s it took to open them): the figure is per connection still open`)
  // Memory per connection open when it was read (the server may have closed the first ones already).
  const n = Math.max(1, alive)
  return {
    round,
    caseId: def.id,
    peer: inst.peer,
    ops: held.held,
    value: (worker1 - worker0) / n,
    keyValue: null,
    seconds: held.ms / 1000,
    rate: held.held / Math.max(held.ms / 1000, 1e-6),
    protocol: 'TLSv1.3',
    cipher: '',
    alpn: 'http/1.1',
    signaturesPerHandshake: signatures === null ? null : signatures / Math.max(1, held.held + held.failed + warmHandshakes),
    counted: null,
    totalValue: (total1 - total0) / n,
    problems,
    notes
  }
}
