// Runs testssl.sh (Debian's `testssl`) against a port on 127.0.0.1 and reads its findings from the
// flat JSON file, by id. The run is bounded: past its deadline the whole process group (testssl and
// the openssl processes it starts) is killed by its pid, and whatever findings were written by then
// are kept, marked as cut short.
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'

export const TESTSSL_MISSING = 'testssl.sh not found: install it with `apt-get install -y testssl.sh` (Debian/Ubuntu; the command it installs is `testssl`)'

/** testssl's severities, least to most severe; WARN marks a check that could not run, not a weakness. */
export const SEVERITIES = ['DEBUG', 'INFO', 'OK', 'LOW', 'MEDIUM', 'HIGH', 'CRITICAL', 'WARN'] as const
export type Severity = typeof SEVERITIES[number]

/** One line of testssl's flat JSON. */
export interface Finding { id: string, severity: Severity, finding: string, cve?: string }

export interface ScanResult {
  port: number
  /** The command-line groups and checks, e.g. `-p`, `-U`. */
  checks: string[]
  findings: Finding[]
  ms: number
  /** The deadline passed and the run was killed: `findings` is what it wrote until then. */
  timedOut: boolean
  exitCode: number | null
  /** What testssl printed on stderr (its last 2 KB), for a run that produced nothing. */
  stderr: string
}

/** The testssl command on PATH (`testssl` from Debian's package, `testssl.sh` from a checkout), or undefined. */
export function testsslCommand (): string | undefined {
  for (const cmd of ['testssl', 'testssl.sh']) {
    const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' })
    if (r.status === 0 && r.stdout.trim() !== '') return r.stdout.trim()
  }
  return undefined
}

/** `3.0.8` from the banner of `testssl --version`. */
export function testsslVersion (cmd: string): string {
  const r = spawnSync(cmd, ['--version'], { encoding: 'utf8', timeout: 20_000 })
  // eslint-disable-next-line no-control-regex -- the banner is printed with ANSI bold
  const banner = `${r.stdout}${r.stderr}`.replace(/\x1b\[[0-9;]*m/g, '')
  return /testssl(?:\.sh)?\s+(\d+\.\d+\S*)/.exec(banner)?.[1] ?? 'unknown'
}

/** The findings of a flat JSON file, also of one a killed run left without its closing `]`. */
export function readFindings (file: string): Finding[] {
  if (!existsSync(file)) return []
  let text = readFileSync(file, 'utf8').trim()
  if (text === '') return []
  if (!text.endsWith(']')) text = `${text.replace(/,\s*$/, '')}]`
  let raw: unknown
  try { raw = JSON.parse(text) } catch { return [] }
  const rows = Array.isArray(raw) ? raw : (raw as { scanResult?: unknown[] }).scanResult ?? []
  return rows.flatMap(r => {
    const o = r as Record<string, unknown>
    if (typeof o.id !== 'string' || typeof o.severity !== 'string') return []
    const severity = (SEVERITIES as readonly string[]).includes(o.severity) ? o.severity as Severity : 'WARN'
    return [{ id: o.id, severity, finding: typeof o.finding === 'string' ? o.finding : JSON.stringify(o.finding ?? ''), ...(typeof o.cve === 'string' && o.cve !== '' ? { cve: o.cve } : {}) }]
  })
}

/**
 * Scans 127.0.0.1:`port` with the check groups `checks` (testssl options such as `-p`, `-U`, `-R`),
 * trusting `caFile`, and resolves with the findings; never rejects for a scan that fails (the
 * result then has no findings and the stderr says why). `dir` receives the JSON file.
 */
export async function runTestssl (opts: { cmd: string, port: number, checks: string[], caFile?: string, timeoutMs: number, dir: string, name: string }): Promise<ScanResult> {
  const jsonFile = join(opts.dir, `${opts.name}.json`)
  rmSync(jsonFile, { force: true })
  const args = [
    '--quiet', '--color', '0', '--warnings', 'off', '--nodns', 'none',
    // A hung openssl or connect costs 10 s, not the whole deadline.
    '--openssl-timeout', '10', '--connect-timeout', '10',
    ...(opts.caFile !== undefined ? ['--add-ca', opts.caFile] : []),
    '--jsonfile', jsonFile,
    ...opts.checks,
    `127.0.0.1:${opts.port}`
  ]
  const t0 = Date.now()
  // Its own process group, so that the deadline ends testssl and every openssl it started.
  const child = spawn(opts.cmd, args, { detached: true, stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (b: Buffer) => { stderr = (stderr + b.toString()).slice(-2048) })
  let timedOut = false
  const killGroup = (): void => {
    if (child.pid === undefined) return
    try { process.kill(-child.pid, 'SIGKILL') } catch { /* already gone */ }
  }
  const timer = setTimeout(() => { timedOut = true; killGroup() }, opts.timeoutMs)
  const exitCode = await new Promise<number | null>(resolve => {
    child.once('error', err => { stderr += err.message; resolve(null) })
    child.once('close', code => resolve(code))
  })
  clearTimeout(timer)
  // Its openssl children may outlive a testssl that exited on its own error.
  killGroup()
  return { port: opts.port, checks: opts.checks, findings: readFindings(jsonFile), ms: Date.now() - t0, timedOut, exitCode, stderr }
}

/** The findings by id (the first of each id; testssl repeats none within one scan but `<cert#N>` ids). */
export function byId (findings: Finding[]): Map<string, Finding> {
  const m = new Map<string, Finding>()
  for (const f of findings) if (!m.has(f.id)) m.set(f.id, f)
  return m
}
