// The Node peers of `bench peers`: the minimal `https` + undici proxy (bench/peers-node-proxy.ts,
// key in process) and keyedge itself, with the key in process (plain PEMs, no bridge) and with the
// key in keyd. keyd is started for each case (so its signature count is that case's) and counted
// as part of the server side, like h2o's key process.
import { fileURLToPath } from 'node:url'
import type { Stack } from '../test/helpers/edge.js'
import { startBenchProxy, startCaseKeyd, type CaseKeyd } from './bench-stack.js'
import { pin, processTree } from './proc-tree.js'
import { pinTree, spawnServer, stopTree, waitOutput, type Instance, type InstanceShape } from './peers-process.js'

const NODE_PROXY_MAIN = fileURLToPath(new URL('./peers-node-proxy.js', import.meta.url))

export interface NodeSetup {
  ec: { cert: string, key: string }
  rsa: { cert: string, key: string }
  upstreamUrl: string
  serverCpus: string | null
}

/** Starts the minimal Node proxy (both certificates on each listener: one for HTTP/1.1, one for HTTP/2). */
export async function startNodeProxy (setup: NodeSetup, shape: InstanceShape): Promise<Instance> {
  const opts = { pairs: [setup.ec, setup.rsa], upstream: setup.upstreamUrl, workers: shape.workers, resumption: shape.resumption }
  const sp = spawnServer(process.execPath, [NODE_PROXY_MAIN, JSON.stringify(opts)], setup.serverCpus)
  let port: number
  let h2Port: number
  try {
    const m = await waitOutput(sp, /\{"port":(\d+),"h2Port":(\d+)\}/, 'the minimal Node proxy')
    port = Number(m[1])
    h2Port = Number(m[2])
  } catch (err) { await stopTree(sp); throw err }
  pinTree(sp.pid, setup.serverCpus)
  const workers = (): number[] => shape.workers > 1 ? processTree(sp.pid).slice(1) : [sp.pid]
  return { peer: 'node', ...shape, http2: true, port: (_kind, proto) => proto === 'h2' ? h2Port : port, pids: () => processTree(sp.pid), keyPids: () => [], workerPids: workers, stop: async () => await stopTree(sp) }
}

/** keyd for the keyedge-in-keyd cases: started before a case and stopped after it, pinned with the server side. */
export class KeydSlot {
  #current: CaseKeyd | undefined
  readonly #home: string
  readonly #cpus: string | null

  constructor (home: string, cpus: string | null) {
    this.#home = home
    this.#cpus = cpus
  }

  pid (): number | undefined { return this.#current?.keyd.proc.pid }

  async start (): Promise<void> {
    if (this.#current !== undefined) return
    this.#current = await startCaseKeyd(this.#home)
    pin([this.#current.keyd.proc.pid as number], this.#cpus)
  }

  /** Stops keyd; resolves with the signatures it made since it started (null if it did not say). */
  async stop (): Promise<number | null> {
    const k = this.#current
    this.#current = undefined
    return k === undefined ? null : await k.stop()
  }
}

/** Completed handshakes, full and resumed, from the proxy's admin /metrics (every worker's counters). */
async function handshakeCounters (adminPort: number): Promise<{ full: number, resumed: number }> {
  const res = await fetch(`http://127.0.0.1:${adminPort}/metrics`, { signal: AbortSignal.timeout(5000) })
  const text = await res.text()
  const out = { full: 0, resumed: 0 }
  for (const m of text.matchAll(/^edge_tls_handshakes_total\{([^}]*)\} (\d+)/gm)) {
    const labels = m[1]
    if (labels === undefined) throw new Error('unexpected /metrics line')
    if (/resumed="true"/.test(labels)) out.resumed += Number(m[2])
    else out.full += Number(m[2])
  }
  return out
}

/**
 * Starts `keyedge proxy` with one certificate entry holding an ECDSA and an RSA pair: key
 * references into keyd (`keyd` given) or plain PEMs. An admin listener gives the handshake counters.
 * keyd must be running while it starts (each certificate is checked against its key).
 */
export async function startKeyedge (stack: Stack, setup: NodeSetup, shape: InstanceShape, keyd: KeydSlot | undefined): Promise<Instance> {
  const leaf = (type: string): { cert: string, key: string } => {
    const l = stack.certs.leaves.find(x => x.keyType === type)
    if (l === undefined) throw new Error(`no dev ${type} certificate`)
    return { cert: l.certFile, key: l.keyRefFile }
  }
  const files = keyd !== undefined ? [leaf('ec-p256'), leaf('rsa-2048')] : [setup.ec, setup.rsa]
  const name = `peers-keyedge${keyd !== undefined ? '-keyd' : ''}-w${shape.workers}-${shape.resumption ? 'resume' : 'full'}`
  const proxy = await startBenchProxy(stack, {
    name,
    workers: shape.workers,
    files,
    keyd: keyd !== undefined,
    upstream: setup.upstreamUrl,
    tls: shape.resumption ? {} : { sessionTickets: false, sessionCacheSize: 0 },
    // Idle connections are kept 10 minutes, as every peer here is configured (the idle-memory case
    // opens 4,000 of them, which takes longer than the default 60 s keep-alive on a loaded machine).
    extra: { admin: { port: 0, drainDelayMs: 0 }, timeouts: { keepAliveIdleMs: 600_000, http2IdleMs: 600_000 } }
  })
  const primary = proxy.proc.proc.pid as number
  let adminPort: number
  try {
    adminPort = (await proxy.proc.waitFor(o => o.msg === 'admin listening', 10_000)).port as number
  } catch (err) { await proxy.stop(); throw err }
  pinTree(primary, setup.serverCpus)
  const keyPids = (): number[] => { const p = keyd?.pid(); return p === undefined ? [] : [p] }
  return {
    peer: keyd !== undefined ? 'keyedge-keyd' : 'keyedge',
    ...shape,
    http2: true,
    port: () => proxy.port,
    pids: () => [...processTree(primary), ...keyPids()],
    keyPids,
    workerPids: () => processTree(primary).slice(1),
    handshakes: async () => await handshakeCounters(adminPort),
    stop: async () => await proxy.stop()
  }
}
