// A server side as a tree of processes: every descendant of a root pid, their resident memory, and
// pinning them (every thread, and the threads they start later) to a set of CPUs with taskset.
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { cpus } from 'node:os'
import { childPids } from './proc-cpu.js'

/** `root` and all its descendants, root first; processes that vanish while walking are skipped. */
export function processTree (root: number): number[] {
  const out: number[] = []
  const walk = (pid: number): void => {
    out.push(pid)
    let kids: number[]
    try { kids = childPids(pid) } catch { return }
    for (const k of kids) walk(k)
  }
  walk(root)
  return out
}

/** The short command name of `pid` (`/proc/PID/comm`), or '' when it is gone. */
export function commName (pid: number): string {
  try { return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() } catch { return '' }
}

/** Resident set size of `pid` in KiB (VmRSS). @throws if the process does not exist. */
export function rssKiB (pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m === null ? 0 : Number(m[1])
}

/** Where the server side and the client run: one CPU for the server, the others for the client. */
export interface Placement {
  /** taskset CPU list for the server side, or null when not pinned. */
  server: string | null
  client: string | null
  why: string
}

/** Server on CPU 0 and the client (load generator, upstream, this process) on the rest, when there are ≥ 2 CPUs and taskset. */
export function placement (wanted: boolean): Placement {
  const n = cpus().length
  if (!wanted) return { server: null, client: null, why: 'not pinned (--no-pin)' }
  if (n < 2) return { server: null, client: null, why: `not pinned: ${n} CPU` }
  try {
    execFileSync('taskset', ['-V'], { stdio: 'ignore' })
  } catch {
    return { server: null, client: null, why: 'not pinned: taskset (util-linux) is not installed' }
  }
  const client = n === 2 ? '1' : `1-${n - 1}`
  return { server: '0', client, why: `server side on CPU 0, client side on CPU ${client}` }
}

/**
 * Pins every thread of every pid to `cpuList` (threads and processes started later inherit it).
 * Processes that exited meanwhile are skipped. No-op for a null list.
 */
export function pin (pids: number[], cpuList: string | null): void {
  if (cpuList === null) return
  for (const pid of pids) {
    try {
      execFileSync('taskset', ['-a', '-p', '-c', cpuList, String(pid)], { stdio: 'ignore', timeout: 5000 })
    } catch {
      // gone already, or a thread that exited mid-way: nothing to pin
    }
  }
}

/** The command prefix that starts a program on `cpuList` (empty when not pinned). */
export function pinnedCommand (cpuList: string | null): string[] {
  return cpuList === null ? [] : ['taskset', '-c', cpuList]
}
