// The processes a handshake benchmark measures: keyd (restartable, so each case gets its own
// signature count), proxies in keyd custody or with plain keys, and the load-generator process.
import { spawn } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { startKeyd, type TestKeyd } from '../test/helpers/keyd.js'
import { spawnCli, type Spawned } from '../test/helpers/processes.js'
import type { Stack } from '../test/helpers/edge.js'
import { childPids } from './proc-cpu.js'
import type { ClientOptions, ClientResult } from './handshake-client.js'

const CLIENT_MAIN = fileURLToPath(new URL('./handshake-client.js', import.meta.url))

export interface BenchProxy {
  name: string
  proc: Spawned
  port: number
  /** The primary and its workers. */
  pids: () => number[]
  stop: () => Promise<void>
}

export interface ProxySpec {
  name: string
  workers: number
  /** Cert/key pairs; keys are key references (custody in keyd) or plain PEMs (in process). */
  files: Array<{ cert: string, key: string }>
  /** Whether to configure the keyd bridge (only key references need it). */
  keyd: boolean
  env?: Record<string, string>
  /** The upstream origin of the catch-all route (default: the stack's demo upstream). */
  upstream?: string
}

/** Writes a config for `spec` next to the stack's keyd and starts `keyedge proxy`. */
export async function startBenchProxy (stack: Stack, spec: ProxySpec): Promise<BenchProxy> {
  const paths = stack.keyd.paths
  const config = {
    listen: { host: '127.0.0.1', port: 0 },
    workers: spec.workers,
    ...(spec.keyd ? { keyd: { socket: paths.socket, clientName: 'proxy', secretFile: join(paths.secretsDir, 'proxy.secret'), timeoutMs: 1000 } } : {}),
    tls: { defaultCertificate: 'localhost' },
    certificates: [{ name: 'localhost', serverNames: ['localhost', '127.0.0.1'], files: spec.files }],
    routes: [{ host: '*', pathPrefix: '/', upstream: spec.upstream ?? stack.upstream.url }],
    log: { level: 'info' }
  }
  const file = join(paths.home, `bench-${spec.name}.json`)
  writeFileSync(file, JSON.stringify(config, null, 2))
  const proc = spawnCli(['proxy', '--config', file], { KEYEDGE_HOME: paths.home, ...spec.env })
  let ready: Record<string, unknown>
  try {
    ready = await proc.waitFor(o => o.msg === 'proxy listening', 30_000)
  } catch (err) {
    await proc.stop('SIGKILL')
    throw err
  }
  const primary = proc.proc.pid as number
  const pids = (): number[] => [primary, ...childPids(primary)]
  const stop = async (): Promise<void> => {
    const workers = (() => { try { return childPids(primary) } catch { return [] } })()
    await proc.stop()
    for (const pid of workers) {
      try { process.kill(pid, 'SIGKILL') } catch { /* already gone */ }
    }
  }
  return { name: spec.name, proc, port: ready.port as number, pids, stop }
}

/** A keyd started for one case; `stop()` resolves the signatures it made (null if it did not say). */
export interface CaseKeyd { keyd: TestKeyd, stop: () => Promise<number | null> }

export async function startCaseKeyd (home: string): Promise<CaseKeyd> {
  const keyd = await startKeyd(home)
  const stop = async (): Promise<number | null> => {
    await keyd.stop()
    for (const line of keyd.lines) {
      try {
        const o = JSON.parse(line) as { msg?: string, signatures?: number }
        if (o.msg === 'keyd stopping' && typeof o.signatures === 'number') return o.signatures
      } catch { /* not JSON */ }
    }
    return null
  }
  return { keyd, stop }
}

/** Runs the load generator in its own process; rejects if it fails or overruns by 30 s. */
export async function runClientProcess (opts: ClientOptions): Promise<ClientResult> {
  const child = spawn(process.execPath, [CLIENT_MAIN, JSON.stringify(opts)], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  child.stdout.on('data', (b: Buffer) => { out += b.toString() })
  child.stderr.on('data', (b: Buffer) => { err += b.toString() })
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.durationMs + 30_000)
  const code = await new Promise<number | null>(resolve => child.once('exit', c => resolve(c)))
  clearTimeout(timer)
  const last = out.trim().split('\n').pop() ?? ''
  if (code !== 0 || last === '') throw new Error(`handshake client exited with ${String(code)}: ${err.slice(0, 500)}`)
  return JSON.parse(last) as ClientResult
}
