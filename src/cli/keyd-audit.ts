// `keyedge keyd audit export`: the audit log as JSON lines for a log shipper, each entry with its
// chain position and whether the chain verifies up to it; optionally following the live log.
// The log's format is keyd's (keyd/audit/chain.ts); this only reads it, with the chain key.
import { existsSync, statSync, watch, type FSWatcher } from 'node:fs'
import { once } from 'node:events'
import { basename, dirname, join } from 'node:path'
import { AuditChainVerifier, forEachLine, readCheckpoint, type CheckedLine } from '../../keyd/audit/verify.js'
import { auditKey, type AuditCheckpoint } from '../../keyd/audit/chain.js'
import { loadMasterKey, sealKind } from '../../keyd/keystore/master-key.js'
import { errorMessage } from '../../lib/errors.js'

/** A command-line mistake: exit code 2. */
export class AuditUsageError extends Error {}

/** How often --follow looks at the log when no file event came (events can be missed on some file systems). */
const FOLLOW_POLL_MS = 1000
/** At most this many problems are listed in the closing line (all are counted). */
const MAX_LISTED_PROBLEMS = 1000

const AGE = /^(\d+)(s|m|h|d)$/
const UNIT_MS = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const

/**
 * `--since`: an ISO 8601 date or time, or an age such as `15m` (s, m, h, d) before `now`.
 * @returns milliseconds since the epoch
 * @throws AuditUsageError
 */
export function parseSince (text: string, now = Date.now()): number {
  const age = AGE.exec(text)
  if (age !== null) return now - Number(age[1]) * UNIT_MS[age[2] as keyof typeof UNIT_MS]
  const t = /^\d{4}-\d{2}-\d{2}/.test(text) ? Date.parse(text) : NaN
  if (Number.isNaN(t)) throw new AuditUsageError(`--since must be an ISO 8601 time (2026-01-31T12:00:00Z) or an age (90s, 15m, 2h, 7d), not "${text}"`)
  return t
}

export interface AuditExportOptions {
  file: string
  checkpointFile: string
  /** The audit chain key. */
  key: Buffer
  since?: string
  follow: boolean
  out?: NodeJS.WritableStream
  /** Ends --follow (default: SIGINT or SIGTERM). */
  signal?: AbortSignal
}

/** One exported entry line. */
function entryRecord (r: CheckedLine, checkpointed: boolean): string {
  return JSON.stringify({ type: 'audit', seq: r.entry?.seq ?? null, line: r.line, verified: r.verified, checkpointed, problems: r.problems, entry: r.entry }) + '\n'
}

/** Writes `text`, waiting for the stream to drain when it asks to. */
async function write (out: NodeJS.WritableStream, text: string): Promise<void> {
  if (text !== '' && !out.write(text)) await once(out, 'drain')
}

/**
 * Prints the entries (time ≥ since) as JSON lines, then the verification state; with `follow`,
 * keeps printing new entries and checkpoints until the signal. @returns the exit code
 */
export async function auditExport (o: AuditExportOptions): Promise<number> {
  const out = o.out ?? process.stdout
  const since = o.since === undefined ? -Infinity : parseSince(o.since)
  const shown = (r: CheckedLine): boolean => r.entry === null || r.problems.length > 0 || !(Date.parse(r.entry.time) < since)
  let size: number
  try {
    size = statSync(o.file).size
  } catch {
    size = 0
  }
  // The checkpoint before the entries: keyd writes it once the entries it names are on disk.
  const cp = readCheckpoint(o.checkpointFile)
  // First pass: does the checkpoint hold? Then every entry it covers can be printed as checkpointed.
  const first = new AuditChainVerifier(o.key)
  if (cp != null) first.watch(cp.seq)
  if (size > 0) forEachLine(o.file, line => first.push(line), 0, size)
  const cpResult = cp == null ? undefined : first.checkpoint(cp)
  const anchored = cpResult?.state === 'verified' ? cpResult.seq : 0

  const v = new AuditChainVerifier(o.key)
  if (cp != null) v.watch(cp.seq)
  const problems: string[] = []
  let problemCount = 0
  const note = (list: string[]): void => {
    problemCount += list.length
    for (const p of list) if (problems.length < MAX_LISTED_PROBLEMS) problems.push(p)
  }
  // Second pass, printing: the same bytes, so the same verdicts, now known before each line goes out.
  const offset = await eachLineChunk(o.file, 0, size, line => {
    const r = v.push(line)
    note(r.problems)
    if (cp != null && r.entry?.seq === cp.seq) v.checkpoint(cp)
    return shown(r) ? entryRecord(r, r.entry !== null && r.entry.seq <= anchored) : ''
  }, out)
  if (cp === undefined && v.lines > 0) note(['no head checkpoint: truncation of the log cannot be ruled out'])
  else if (cp === null) note(['head checkpoint is not valid JSON'])
  else if (cpResult?.state === 'invalid') note([cpResult.problem])
  else if (cpResult?.state === 'ahead') note([`log truncated: the checkpoint vouches for seq ${cpResult.seq} but the log ends at seq ${v.lastSeq}`])
  await write(out, JSON.stringify({
    type: 'audit-verification',
    ok: problemCount === 0,
    entries: v.lines,
    lastSeq: v.lastSeq,
    checkpointSeq: cp?.seq ?? null,
    checkpoint: cp === undefined ? 'missing' : cpResult?.state ?? 'invalid',
    problemCount,
    problems,
    following: o.follow
  }) + '\n')
  if (!o.follow) return problemCount === 0 ? 0 : 1
  return await follow(o, out, v, offset, shown, cpResult?.state === 'verified' ? cp ?? undefined : undefined)
}

/** Bytes read per step when printing, so the output can drain between steps. */
const STEP_BYTES = 1 << 20

/**
 * Runs `render` on each complete line of `file` between `start` and `end`, writing what it returns
 * to `out` a step at a time (waiting for it to drain). @returns the offset after the last complete line
 */
async function eachLineChunk (file: string, start: number, end: number, render: (line: string) => string, out: NodeJS.WritableStream): Promise<number> {
  let offset = start
  let step = STEP_BYTES
  while (offset < end) {
    let text = ''
    const to = Math.min(end, offset + step)
    const next = forEachLine(file, line => { text += render(line) }, offset, to).offset
    await write(out, text)
    if (next === offset) {
      if (to === end) break // an unfinished last line: keyd is writing it
      step *= 2 // a line longer than a step
    }
    offset = next
  }
  return offset
}

/** --follow: new complete lines as keyd appends them; a checkpoint line each time keyd's advances. */
async function follow (o: AuditExportOptions, out: NodeJS.WritableStream, start: AuditChainVerifier, startOffset: number,
  shown: (r: CheckedLine) => boolean, lastCp: AuditCheckpoint | undefined): Promise<number> {
  let v = start
  let offset = startOffset
  let ino = fileIno(o.file)
  let reported = lastCp === undefined ? '' : JSON.stringify(lastCp)
  const stop = new AbortController()
  const onSignal = (): void => { stop.abort() }
  o.signal?.addEventListener('abort', onSignal)
  if (o.signal === undefined) {
    process.once('SIGINT', onSignal)
    process.once('SIGTERM', onSignal)
  }
  let wake: (() => void) | undefined
  const poke = (): void => { wake?.() }
  let watcher: FSWatcher | undefined
  try {
    watcher = watch(dirname(o.file), (_event, name) => { if (name === null || name === basename(o.file) || name === basename(o.checkpointFile)) poke() })
  } catch {
    watcher = undefined // the directory cannot be watched: polling alone
  }
  stop.signal.addEventListener('abort', poke)
  try {
    while (!stop.signal.aborted) {
      const now = fileIno(o.file)
      let size = 0
      try { size = statSync(o.file).size } catch { size = 0 }
      if (ino === -1 && now !== -1 && offset === 0) ino = now // the log appeared: nothing was read from another one
      if (now !== ino || size < offset) {
        // Moved aside, replaced or cut: a new chain starts from genesis (keyd starts a new log so).
        await write(out, JSON.stringify({ type: 'audit-problem', problem: `the audit log was ${now !== ino ? 'replaced' : 'truncated'} at byte ${size} (had read ${offset}); verifying the new content from its first entry` }) + '\n')
        v = new AuditChainVerifier(o.key)
        offset = 0
        ino = now
        reported = ''
      }
      if (size > offset) {
        offset = await eachLineChunk(o.file, offset, size, line => {
          const r = v.push(line)
          return shown(r) ? entryRecord(r, r.entry !== null && r.entry.seq <= v.anchoredSeq) : ''
        }, out)
      }
      const cp = readCheckpoint(o.checkpointFile)
      if (cp != null && JSON.stringify(cp) !== reported) {
        const r = v.checkpoint(cp)
        if (r.state !== 'ahead') {
          reported = JSON.stringify(cp)
          await write(out, JSON.stringify(r.state === 'verified'
            ? { type: 'audit-checkpoint', seq: cp.seq, time: cp.time, verified: true }
            : { type: 'audit-checkpoint', seq: cp.seq, time: cp.time, verified: false, problem: r.problem }) + '\n')
        }
      }
      if (stop.signal.aborted) break
      await new Promise<void>(resolve => {
        const timer = setTimeout(resolve, FOLLOW_POLL_MS)
        wake = () => { clearTimeout(timer); resolve() }
      })
      wake = undefined
    }
  } finally {
    watcher?.close()
    o.signal?.removeEventListener('abort', onSignal)
    process.removeListener('SIGINT', onSignal)
    process.removeListener('SIGTERM', onSignal)
  }
  return 0
}

function fileIno (file: string): number {
  try { return statSync(file).ino } catch { return -1 }
}

// `keyedge status` (src/cli/status.ts): the chain state of a development home, where the master key is readable.

/**
 * `verified`: every entry up to `lastSeq` chains and the checkpoint holds; `partial`: the entries up
 * to `lastSeq` chain but the time bound ran out before the end; `broken`: `problem` says where;
 * `unchecked`: no master key here.
 */
export interface AuditState {
  state: 'verified' | 'partial' | 'broken' | 'unchecked'
  /** Entries read (null when unchecked). */
  entries: number | null
  lastSeq: number | null
  checkpointSeq: number | null
  /** The first problem found, or why the chain was not checked. */
  problem: string | null
  /** From keyd's /healthz: false once keyd cannot write its log (null: not known). */
  writable: boolean | null
}

/** Stops a verification at its time bound. */
class OutOfTime extends Error {}

/** Verifies `<keydDir>/audit.log` with the development master key, if there is one, for at most `budgetMs`. */
export function auditChainState (keydDir: string, budgetMs = 2000): AuditState {
  const unchecked = (problem: string): AuditState => ({ state: 'unchecked', entries: null, lastSeq: null, checkpointSeq: null, problem, writable: null })
  const file = join(keydDir, 'audit.log')
  let kind: ReturnType<typeof sealKind>
  try { kind = sealKind(keydDir) } catch (err) { return unchecked(errorMessage(err)) }
  if (kind !== 'dev') return unchecked('needs the master key: run "npx keyedge keyd audit verify" with the passphrase')
  if (!existsSync(file)) return unchecked(`no audit log at ${file}`)
  const master = loadMasterKey(keydDir, { kind: 'dev' })
  const key = auditKey(master.key)
  master.key.fill(0)
  try {
    // The checkpoint first: keyd writes it once the entries it names are on disk, so it is never ahead of what is read next.
    const cp = readCheckpoint(join(keydDir, 'audit.head'))
    const v = new AuditChainVerifier(key)
    if (cp != null) v.watch(cp.seq)
    let first: string | null = null
    const deadline = Date.now() + budgetMs
    try {
      forEachLine(file, line => {
        const r = v.push(line)
        if (first === null && r.problems.length > 0) first = r.problems[0] ?? null
        if (first !== null) throw new OutOfTime() // the first break is the answer; no need to read on
        if (v.lines % 1024 === 0 && Date.now() > deadline) throw new OutOfTime()
      }, 0, statSync(file).size)
    } catch (err) {
      if (!(err instanceof OutOfTime)) throw err
      if (first === null) {
        return { state: 'partial', entries: v.lines, lastSeq: v.lastSeq, checkpointSeq: cp?.seq ?? null, problem: `the log is longer than ${budgetMs} ms of checking: verified up to entry ${v.lastSeq} (npx keyedge keyd audit verify checks it all)`, writable: null }
      }
    }
    if (first === null && cp === null) first = 'the head checkpoint is not valid JSON'
    if (first === null && cp != null) {
      const c = v.checkpoint(cp)
      if (c.state === 'invalid') first = c.problem
      else if (c.state === 'ahead') first = `log truncated: the checkpoint vouches for seq ${c.seq} but the log ends at seq ${v.lastSeq}`
    }
    return { state: first === null ? 'verified' : 'broken', entries: v.lines, lastSeq: v.lastSeq, checkpointSeq: cp?.seq ?? null, problem: first, writable: null }
  } finally {
    key.fill(0)
  }
}
