// A server side of `bench peers` as the benchmark sees it (an Instance), and how one is started
// from a command line: pinned from its first instruction, output kept for error messages, ready
// once its ports accept connections, stopped by pid (the whole process tree).
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { connect, createServer, type AddressInfo } from 'node:net'
import type { KeyKind } from './handshake-client.js'
import { pin, pinnedCommand, processTree } from './proc-tree.js'

export type PeerId = 'nginx' | 'haproxy' | 'h2o' | 'node' | 'keyedge' | 'keyedge-keyd'

/** How an instance is configured: its worker count and whether it lets a client resume a session. */
export interface InstanceShape { workers: number, resumption: boolean }

/** One running server side, listening on 127.0.0.1. */
export interface Instance extends InstanceShape {
  peer: PeerId
  /**
   * The port serving certificates of `kind` (the same port when one listener holds both) for a
   * client speaking `proto` (the same port when one listener serves both; HTTP/1.1 when not given).
   */
  port: (kind: KeyKind, proto?: 'h1' | 'h2') => number
  /** Every process of the server side right now, key process included. */
  pids: () => number[]
  /** The processes that sign for the server in another process (keyd, h2o's neverbleed); [] when the key is in process. */
  keyPids: () => number[]
  /** The processes whose memory grows with connections (workers; the only process of a single-process server). */
  workerPids: () => number[]
  /** Whether it offers HTTP/2 by ALPN. */
  http2: boolean
  /** The server's own count of completed handshakes, full and resumed, where it keeps one. */
  handshakes?: () => Promise<{ full: number, resumed: number }>
  stop: () => Promise<void>
}

/** A spawned server process with its recent output. */
export interface ServerProcess {
  proc: ChildProcess
  pid: number
  /** The last 16 KiB of stdout+stderr. */
  output: () => string
  exited: () => boolean
}

/** Spawns `cmd args` pinned to `cpus` (taskset execs it, so the pid is the server's). */
export function spawnServer (cmd: string, args: string[], cpus: string | null, env: Record<string, string> = {}): ServerProcess {
  const pre = pinnedCommand(cpus)
  const [file, ...rest] = pre.length > 0 ? [...pre, cmd, ...args] : [cmd, ...args]
  if (file === undefined) throw new Error(`no command line for ${cmd}`)
  const proc = spawn(file, rest, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...env } })
  let out = ''
  const keep = (b: Buffer): void => { out = (out + b.toString()).slice(-16_384) }
  proc.stdout?.on('data', keep)
  proc.stderr?.on('data', keep)
  let gone = false
  proc.once('exit', () => { gone = true })
  proc.once('error', err => { gone = true; out += `\n${err.message}` })
  if (proc.pid === undefined) throw new Error(`could not start ${cmd}`)
  return { proc, pid: proc.pid, output: () => out, exited: () => gone }
}

/** A TCP port that was free a moment ago on 127.0.0.1 (for servers that need a number in their config). */
export async function freePort (): Promise<number> {
  const s = createServer()
  s.listen(0, '127.0.0.1')
  await once(s, 'listening')
  const port = (s.address() as AddressInfo).port
  await new Promise(resolve => s.close(resolve))
  return port
}

async function accepts (port: number): Promise<boolean> {
  return await new Promise(resolve => {
    const c = connect({ host: '127.0.0.1', port })
    const done = (ok: boolean): void => { c.destroy(); resolve(ok) }
    c.once('connect', () => done(true))
    c.once('error', () => done(false))
    c.setTimeout(1000, () => done(false))
  })
}

/**
 * Resolves once every port accepts a TCP connection and `ready()` holds (polled every 50 ms);
 * rejects with the server's output if it exits first or `ms` pass.
 */
export async function waitReady (sp: ServerProcess, ports: number[], what: string, ready: () => boolean = () => true, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms
  for (;;) {
    if (sp.exited()) throw new Error(`${what} exited during start:\n${sp.output().slice(-2000)}`)
    const up = (await Promise.all(ports.map(accepts))).every(Boolean)
    if (up && ready()) return
    if (Date.now() > deadline) throw new Error(`${what} not ready within ${ms} ms:\n${sp.output().slice(-2000)}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

/** Resolves with the first match of `re` in the server's output; rejects if it exits first or `ms` pass. */
export async function waitOutput (sp: ServerProcess, re: RegExp, what: string, ms = 20_000): Promise<RegExpExecArray> {
  const deadline = Date.now() + ms
  for (;;) {
    const m = re.exec(sp.output())
    if (m !== null) return m
    if (sp.exited()) throw new Error(`${what} exited during start:\n${sp.output().slice(-2000)}`)
    if (Date.now() > deadline) throw new Error(`${what} did not start within ${ms} ms:\n${sp.output().slice(-2000)}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

/** SIGTERM to `root`, then SIGKILL to whatever of its tree (as it was) is left after `graceMs`. */
export async function stopTree (sp: ServerProcess, graceMs = 5000): Promise<void> {
  const tree = processTree(sp.pid)
  if (!sp.exited()) {
    const exited = once(sp.proc, 'exit')
    sp.proc.kill('SIGTERM')
    const timer = setTimeout(() => sp.proc.kill('SIGKILL'), graceMs)
    await exited
    clearTimeout(timer)
  }
  for (const pid of tree.slice(1)) {
    try { process.kill(pid, 'SIGKILL') } catch { /* already gone */ }
  }
  sp.proc.stdin?.destroy()
}

/** Pins the whole tree of `root` again (catches processes and threads started since). */
export function pinTree (root: number, cpus: string | null): void {
  pin(processTree(root), cpus)
}

/** The hard limit on open files of this process (what a server started from it may raise itself to). */
export function openFilesHardLimit (): number {
  const m = /^Max open files\s+\S+\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))
  const n = m === null ? NaN : Number(m[1])
  return Number.isFinite(n) ? n : 1_048_576
}
