// Spawning the real keyedge processes for tests, waiting for their ready line, and ending them by pid.
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { CLI } from './paths.js'

export interface Spawned {
  proc: ChildProcess
  /** Every stdout+stderr line so far. */
  lines: string[]
  /** Resolves with the first JSON log line matching `pred`, rejects after `ms` or if the process exits. */
  waitFor: (pred: (obj: Record<string, unknown>) => boolean, ms?: number) => Promise<Record<string, unknown>>
  stop: (signal?: NodeJS.Signals) => Promise<void>
}

/** Runs `node [execArgv] dist/src/cli/main.js ...args` with `env` added. */
export function spawnCli (args: string[], env: Record<string, string> = {}, node = process.execPath, execArgv: string[] = []): Spawned {
  const proc = spawn(node, [...execArgv, CLI, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  const lines: string[] = []
  const waiters = new Set<() => void>()
  let exited = false
  const onData = (buf: Buffer): void => {
    lines.push(...buf.toString().split('\n').filter(l => l !== ''))
    for (const w of waiters) w()
  }
  proc.stdout?.on('data', onData)
  proc.stderr?.on('data', onData)
  proc.on('exit', () => { exited = true; for (const w of waiters) w() })
  const waitFor = async (pred: (obj: Record<string, unknown>) => boolean, ms = 20000): Promise<Record<string, unknown>> =>
    await new Promise((resolve, reject) => {
      let seen = 0
      const check = (): void => {
        for (; seen < lines.length; seen++) {
          let obj: Record<string, unknown>
          try { obj = JSON.parse(lines[seen]) } catch { continue }
          if (pred(obj)) { done(); resolve(obj); return }
        }
        if (exited) { done(); reject(new Error(`process exited before the expected line; output:\n${lines.join('\n')}`)) }
      }
      const timer = setTimeout(() => { done(); reject(new Error(`no expected line within ${ms} ms; output:\n${lines.join('\n')}`)) }, ms)
      const done = (): void => { clearTimeout(timer); waiters.delete(check) }
      waiters.add(check)
      check()
    })
  const stop = async (signal: NodeJS.Signals = 'SIGTERM'): Promise<void> => {
    if (proc.exitCode !== null || proc.signalCode !== null) return
    const gone = once(proc, 'exit')
    proc.kill(signal)
    const t = setTimeout(() => proc.kill('SIGKILL'), 5000)
    await gone
    clearTimeout(t)
  }
  return { proc, lines, waitFor, stop }
}
