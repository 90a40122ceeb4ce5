// Server CPU from /proc: utime+stime of a set of processes, in microseconds, so a benchmark can
// charge each operation the CPU the server side spent on it (whatever core it ran on).
import { execFileSync } from 'node:child_process'
import { readFileSync, readdirSync } from 'node:fs'

let ticksPerSecond: number | undefined

/** The kernel's clock tick rate (`getconf CLK_TCK`, nearly always 100). */
export function clockTicks (): number {
  if (ticksPerSecond === undefined) {
    const n = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim())
    ticksPerSecond = Number.isInteger(n) && n > 0 ? n : 100
  }
  return ticksPerSecond
}

/**
 * utime+stime of `pid` (every thread, living or gone) in microseconds.
 * @throws if the process does not exist.
 */
export function processCpuMicros (pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  // The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const utime = Number(fields[11])
  const stime = Number(fields[12])
  return (utime + stime) * 1e6 / clockTicks()
}

/** Direct children of `pid`, from every thread's `children` list. */
export function childPids (pid: number): number[] {
  const out = new Set<number>()
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    let text: string
    try { text = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8') } catch { continue }
    for (const p of text.trim().split(/\s+/)) if (p !== '') out.add(Number(p))
  }
  return [...out].sort((a, b) => a - b)
}

/** CPU microseconds per pid at one instant. */
export type CpuSnapshot = Map<number, number>

export function snapshot (pids: number[]): CpuSnapshot {
  return new Map(pids.map(pid => [pid, processCpuMicros(pid)]))
}

/**
 * CPU spent by `pids` between two snapshots.
 * @throws if a pid is missing from either snapshot (a process died or was replaced mid-run).
 */
export function cpuDelta (before: CpuSnapshot, after: CpuSnapshot, pids: number[]): number {
  let sum = 0
  for (const pid of pids) {
    const a = before.get(pid)
    const b = after.get(pid)
    if (a === undefined || b === undefined) throw new Error(`process ${pid} was not measured at both ends of the run`)
    sum += b - a
  }
  return sum
}
