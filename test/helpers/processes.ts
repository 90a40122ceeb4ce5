// Spawning the real keyedge processes for tests, waiting for their log lines, and ending them by pid.
import { spawn, type ChildProcess } from 'node:child_process'
import type { Readable } from 'node:stream'
import { CLI } from './paths.js'
import { LineSplitter } from './lines.js'

/**
 * How long to keep reading a process's output after it exited. Its pipes normally close with it;
 * a grandchild that inherited them (and outlives it) must not hold a test up for longer.
 */
const OUTPUT_AFTER_EXIT_MS = 5000

export interface Exit { code: number | null, signal: NodeJS.Signals | null }

export interface Spawned {
  proc: ChildProcess
  /** Every complete stdout+stderr line so far (a line cut across two chunks is added once whole). */
  lines: string[]
  /**
   * Resolves with the first JSON log line matching `pred`; rejects after `ms`, or once the process
   * exited and its output was read to the end without such a line.
   */
  waitFor: (pred: (obj: Record<string, unknown>) => boolean, ms?: number) => Promise<Record<string, unknown>>
  /** Resolves once the process exited and its output was read to the end (so `lines` is complete). */
  exited: Promise<Exit>
  /** Sends `signal` (SIGKILL after 5 s) unless already gone; resolves as `exited` does. */
  stop: (signal?: NodeJS.Signals) => Promise<void>
}

/**
 * Children still running. A test file that dies before its teardown (a top-level await that throws,
 * tap's timeout) would otherwise leave them running; they are killed when this process exits, by
 * pid (a keyedge primary's workers leave with it: their IPC channel closes).
 */
const running = new Set<ChildProcess>()
const killRunning = (): void => {
  for (const child of running) {
    try { child.kill('SIGKILL') } catch { /* already gone */ }
  }
}
process.once('exit', killRunning)
// tap ends a test file that runs past its timeout with SIGTERM, which skips 'exit' handlers. A
// process with SIGTERM handlers of its own (the bench runner's cleanup) is left to end itself.
process.once('SIGTERM', () => {
  killRunning()
  if (process.listenerCount('SIGTERM') === 0) process.exit(143)
})

/** Runs `command args` with `env` added to the environment, collecting its output lines. */
export function spawnLogged (command: string, args: string[], env: Record<string, string> = {}): Spawned {
  const proc = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  running.add(proc)
  proc.once('exit', () => running.delete(proc))
  const lines: string[] = []
  const waiters = new Set<() => void>()
  let finished = false
  const notify = (): void => { for (const w of waiters) w() }
  const add = (complete: string[]): void => {
    if (complete.length === 0) return
    lines.push(...complete)
    notify()
  }
  // One splitter per stream: stdout and stderr interleave whole lines, never halves of each other's.
  const read = async (stream: Readable | null): Promise<void> => {
    if (stream === null) return
    const split = new LineSplitter()
    stream.on('data', (b: Buffer) => add(split.push(b)))
    await new Promise<void>(resolve => stream.once('close', () => { add(split.end()); resolve() }))
  }
  const outputRead = Promise.all([read(proc.stdout), read(proc.stderr)])
  const exit = new Promise<Exit>(resolve => {
    proc.once('exit', (code, signal) => resolve({ code, signal }))
    proc.once('error', err => { lines.push(`spawn failed: ${err.message}`); resolve({ code: null, signal: null }) })
  })
  const exited = exit.then(async result => {
    let timer: NodeJS.Timeout | undefined
    await Promise.race([outputRead, new Promise(resolve => { timer = setTimeout(resolve, OUTPUT_AFTER_EXIT_MS) })])
    clearTimeout(timer)
    finished = true
    notify()
    return result
  })

  const waitFor = async (pred: (obj: Record<string, unknown>) => boolean, ms = 20000): Promise<Record<string, unknown>> =>
    await new Promise((resolve, reject) => {
      let seen = 0
      const check = (): void => {
        for (const line of lines.slice(seen)) {
          seen++
          let obj: Record<string, unknown>
          try { obj = JSON.parse(line) } catch { continue }
          if (pred(obj)) { done(); resolve(obj); return }
        }
        if (finished) { done(); reject(new Error(`process exited before the expected line; output:\n${lines.join('\n')}`)) }
      }
      const timer = setTimeout(() => { done(); reject(new Error(`no expected line within ${ms} ms; output:\n${lines.join('\n')}`)) }, ms)
      const done = (): void => { clearTimeout(timer); waiters.delete(check) }
      waiters.add(check)
      check()
    })

  const stop = async (signal: NodeJS.Signals = 'SIGTERM'): Promise<void> => {
    let killer: NodeJS.Timeout | undefined
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill(signal)
      killer = setTimeout(() => proc.kill('SIGKILL'), 5000)
    }
    await exited
    clearTimeout(killer)
  }
  return { proc, lines, waitFor, exited, stop }
}

/** Runs `node [execArgv] dist/src/cli/main.js ...args` with `env` added. */
export function spawnCli (args: string[], env: Record<string, string> = {}, node = process.execPath, execArgv: string[] = []): Spawned {
  return spawnLogged(node, [...execArgv, CLI, ...args], env)
}
