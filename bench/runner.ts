// What every benchmark's `main` shares: strict option parsing with `--help` and a usage message on
// a bad option, cleanup that runs at the end and on SIGINT/SIGTERM, the runtime it ran on, and the
// `<name>-<date>.json` + `<name>-latest.md` result files.
import { mkdirSync, writeFileSync } from 'node:fs'
import { cpus, release } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { ROOT } from '../test/helpers/paths.js'
import { clockTicks } from './proc-cpu.js'
import { errorMessage } from '../lib/errors.js'

/** A benchmark option as `node:util` parseArgs declares it (every value option is a string). */
export type OptionSpec = Record<string, { type: 'string' | 'boolean', short?: string }>

/** Parsed option values, by long name. */
export type OptionValues = Record<string, string | boolean | undefined>

/** What a running benchmark gets from the runner. */
export interface BenchContext {
  name: string
  startedAt: Date
  /** A progress line on stderr (stdout carries only the result table). */
  say: (line: string) => void
  /** Registers `fn` to run when the benchmark ends or is interrupted (last registered runs first). */
  defer: (fn: () => unknown) => void
}

export interface BenchDefinition<O> {
  name: string
  usage: string
  /** Options besides `--help`. */
  options: OptionSpec
  /** The benchmark's options from the parsed values. @throws Error naming the flag when one is invalid. */
  parse: (values: OptionValues) => O
  /** Runs the benchmark; resolves with the exit code. */
  run: (options: O, ctx: BenchContext) => Promise<number>
}

/** The default results directory, bench/results in the repository. */
export const RESULTS_DIR = join(ROOT, 'bench', 'results')

/** `v` as an integer in [min, max], `def` when absent. @throws Error naming `--name` otherwise. */
export function intOption (name: string, v: string | boolean | undefined, def: number, min: number, max: number): number {
  if (v === undefined) return def
  const n = Number(v)
  if (typeof v !== 'string' || !Number.isInteger(n) || n < min || n > max) throw new Error(`--${name} must be an integer from ${min} to ${max}`)
  return n
}

/** A comma-separated list of names from `allowed` (all of them when absent). @throws on an unknown name. */
export function listOption<T> (name: string, v: string | boolean | undefined, allowed: Record<string, T>): T[] {
  const items = (typeof v === 'string' ? v : Object.keys(allowed).join(',')).split(',').map(s => s.trim()).filter(s => s !== '')
  if (items.length === 0) throw new Error(`--${name} needs at least one of ${Object.keys(allowed).join(', ')}`)
  return items.map(s => {
    const value = Object.hasOwn(allowed, s) ? allowed[s] : undefined
    if (value === undefined) throw new Error(`--${name}: unknown "${s}" (use ${Object.keys(allowed).join(', ')})`)
    return value
  })
}

/** `--out` or the default results directory. */
export function outOption (v: string | boolean | undefined): string {
  return typeof v === 'string' && v !== '' ? v : RESULTS_DIR
}

/** The runtime and machine a result was measured on. */
export function runtimeEnv (): { node: string, openssl: string, cpus: number, cpuModel: string, kernel: string, clkTck: number } {
  return { node: process.versions.node, openssl: process.versions.openssl, cpus: cpus().length, cpuModel: cpus()[0]?.model ?? 'unknown', kernel: release(), clkTck: clockTicks() }
}

/** `2026-11-26T1838`: the date and minute a run started, for result file names. */
export function resultStamp (at: Date): string {
  return at.toISOString().slice(0, 16).replace(':', '')
}

/** Writes `<name>-<stamp>.json` (pretty JSON) and `<name>-latest.md` into `dir`; returns their paths. */
export function writeResultFiles (dir: string, name: string, at: Date, json: unknown, markdown: string): { json: string, md: string } {
  mkdirSync(dir, { recursive: true })
  const files = { json: join(dir, `${name}-${resultStamp(at)}.json`), md: join(dir, `${name}-latest.md`) }
  writeFileSync(files.json, JSON.stringify(json, null, 2) + '\n')
  writeFileSync(files.md, markdown.endsWith('\n') ? markdown : `${markdown}\n`)
  return files
}

/**
 * Parses `argv` for `def` and runs it: `--help` prints the usage (exit 0), a bad option prints the
 * problem and the usage (exit 2), an exception is reported (exit 1). Deferred cleanups run in
 * every case, and on SIGINT/SIGTERM before the process exits with 130.
 */
export async function runBench<O> (def: BenchDefinition<O>, argv: string[]): Promise<number> {
  let options: O
  try {
    const { values } = parseArgs({ args: argv, strict: true, allowPositionals: false, options: { ...def.options, help: { type: 'boolean', short: 'h' } } })
    if (values.help === true) { process.stdout.write(def.usage); return 0 }
    options = def.parse(values)
  } catch (err) {
    process.stderr.write(`bench ${def.name}: ${errorMessage(err)}\n\n${def.usage}`)
    return 2
  }
  const cleanups: Array<() => unknown> = []
  let cleaning: Promise<void> | undefined
  const cleanup = async (): Promise<void> => {
    cleaning ??= (async () => {
      for (const fn of cleanups.reverse()) {
        try { await fn() } catch { /* keep cleaning up the rest */ }
      }
    })()
    await cleaning
  }
  const onSignal = (): void => { void cleanup().finally(() => process.exit(130)) }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  const ctx: BenchContext = {
    name: def.name,
    startedAt: new Date(),
    say: line => { process.stderr.write(`${line}\n`) },
    defer: fn => { cleanups.push(fn) }
  }
  try {
    return await def.run(options, ctx)
  } finally {
    await cleanup()
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
}
