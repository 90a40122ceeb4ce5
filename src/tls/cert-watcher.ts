// Watches the directories of the certificate, key and config files and calls back once their
// contents settle after a change, with the files that changed. Watching directories (not files)
// sees atomic renames and the Kubernetes `..data` symlink swap; the debounce lets a certificate and
// its key land together. An event naming a watched file (or a symlink's target) checks that file
// only. An event naming something else that is (still) a directory or a symlink checks the watched
// files of that directory that are symlinks (a `..data` swap moves what they point to; a plain
// file beside it cannot change); a plain file or a name gone (the temp file of an atomic write, a
// log file, another program's temp directory) checks nothing; an unnamed event checks every file.
// A file counts as
// changed when its stat changed and, for sets of up to 2,000 files, its contents too (a SHA-256 of
// each). Beyond that the contents are not hashed (it would cost the primary a read of every file):
// a changed stat is a change, and the workers' reload finds an unchanged file unchanged anyway.

import { createHash } from 'node:crypto'
import { lstatSync, readFileSync, realpathSync, statSync, watch, type FSWatcher, type Stats } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import type { Logger } from 'pino'
import { errorCode } from '../../lib/errors.js'

/** SHA-256 over the contents of `files` (an unreadable file counts by its error code). */
export function filesDigest (files: readonly string[]): string {
  const h = createHash('sha256')
  for (const file of files) {
    h.update(file).update('\0')
    try {
      h.update(readFileSync(file))
    } catch (err) {
      h.update(`error:${errorCode(err) ?? 'unknown'}`)
    }
    h.update('\0')
  }
  return h.digest('hex')
}

/** The directories to watch for `files`: each file's own and, through symlinks, its target's. */
export function watchedDirectories (files: readonly string[]): string[] {
  const dirs = new Set<string>()
  for (const file of files) {
    dirs.add(dirname(file))
    try {
      dirs.add(dirname(realpathSync(file)))
    } catch { /* missing now: its own directory is watched */ }
  }
  return [...dirs]
}

const stamp = (st: Stats): string => `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`

function stampOf (file: string): string | undefined {
  try {
    return stamp(statSync(file))
  } catch {
    return undefined
  }
}

function digestOf (file: string): string {
  try {
    return createHash('sha256').update(readFileSync(file)).digest('base64')
  } catch (err) {
    return `error:${errorCode(err) ?? 'unknown'}`
  }
}

/** Up to this many files, contents are compared (hashed when watching starts); beyond, stats only. */
const HASHED_FILES = 2000

interface Known { stamp: string | undefined, digest?: string }

export class CertFileWatcher {
  #files: string[] = []
  #known = new Map<string, Known>()
  /** Watched files by directory and name in it (a symlink's target under its own directory too). */
  #byName = new Map<string, Map<string, string[]>>()
  #watchers: FSWatcher[] = []
  /** Files to check when the debounce ends; 'all' after an unnamed event. */
  #pending: Set<string> | 'all' = new Set()
  /** Other paths events named: looked at when the debounce ends. */
  #others = new Set<string>()
  /** Watched files that are symlinks, by their directory: what a swap beside them can change. */
  #symlinked = new Map<string, string[]>()
  #timer: NodeJS.Timeout | undefined
  #firstPokeAt = 0
  #log: Logger
  #debounceMs: number
  #onChange: (changed: string[]) => void

  constructor (opts: { log: Logger, debounceMs: number, onChange: (changed: string[]) => void }) {
    this.#log = opts.log
    this.#debounceMs = opts.debounceMs
    this.#onChange = opts.onChange
  }

  /**
   * Watches `files` (their current contents are the baseline); with the same list as before it
   * changes nothing, so a change seen during a reload still leads to the next one.
   */
  watch (files: readonly string[]): void {
    const next = [...new Set(files)]
    if (next.length === this.#files.length && next.every((f, i) => f === this.#files[i])) return
    this.#unwatch()
    this.#files = next
    const hashed = next.length <= HASHED_FILES
    const known = new Map<string, Known>()
    this.#known = known
    this.#byName = new Map()
    this.#symlinked = new Map()
    const add = (path: string, file: string): void => {
      const dir = dirname(path)
      let names = this.#byName.get(dir)
      if (names === undefined) this.#byName.set(dir, names = new Map<string, string[]>())
      const list = names.get(basename(path))
      if (list === undefined) names.set(basename(path), [file])
      else if (!list.includes(file)) list.push(file)
    }
    for (const file of next) {
      add(file, file)
      // One lstat per file: a symlink's target is resolved (and its directory watched), a plain
      // file's lstat is its stat. A symlinked directory needs nothing: it is watched by its path.
      let st: Stats | undefined
      try {
        st = lstatSync(file)
        if (st.isSymbolicLink()) {
          const list = this.#symlinked.get(dirname(file))
          if (list === undefined) this.#symlinked.set(dirname(file), [file])
          else list.push(file)
          add(realpathSync(file), file)
          st = statSync(file)
        }
      } catch { st = undefined }
      const before = this.#known.get(file)
      known.set(file, before !== undefined && (before.digest !== undefined || !hashed)
        ? before
        : { stamp: st === undefined ? undefined : stamp(st), ...(hashed ? { digest: digestOf(file) } : {}) })
    }
    for (const dir of this.#byName.keys()) {
      try {
        const w = watch(dir, { persistent: false }, (_event, name) => this.#poke(dir, name))
        w.on('error', (err: NodeJS.ErrnoException) => this.#log.warn({ dir, code: err.code }, 'certificate directory watch failed; SIGHUP or POST /reload still reload'))
        this.#watchers.push(w)
      } catch (err) {
        this.#log.warn({ dir, code: errorCode(err) }, 'cannot watch certificate directory; SIGHUP or POST /reload still reload')
      }
    }
  }

  close (): void {
    this.#unwatch()
  }

  #poke (dir: string, name: string | Buffer | null): void {
    const files = name === null ? undefined : this.#byName.get(dir)?.get(name.toString())
    if (name === null) this.#pending = 'all'
    else if (files === undefined) this.#others.add(join(dir, name.toString()))
    else if (this.#pending !== 'all') for (const f of files) this.#pending.add(f)
    // Trailing debounce, but a directory that never goes quiet (a log file beside the config)
    // cannot postpone the check for more than a few debounce periods, and names that are not
    // watched files (other programs' files beside them) do not postpone it at all.
    if (this.#timer !== undefined) {
      if (files === undefined && name !== null) return
      if (Date.now() - this.#firstPokeAt >= this.#debounceMs * 5) return
      clearTimeout(this.#timer)
    } else {
      this.#firstPokeAt = Date.now()
    }
    this.#timer = setTimeout(() => {
      this.#timer = undefined
      // A directory or symlink among the other names may be a swap that moved what the watched
      // symlinks beside it point to (Kubernetes' `..data`).
      const pending = this.#pending
      if (pending !== 'all') {
        for (const path of this.#others) {
          let swap: boolean
          try { swap = !lstatSync(path).isFile() } catch { swap = false }
          if (swap) for (const f of this.#symlinked.get(dirname(path)) ?? []) pending.add(f)
        }
      }
      const candidates = pending === 'all' ? this.#files : [...pending]
      this.#pending = new Set()
      this.#others = new Set()
      const changed = candidates.filter(f => this.#changed(f))
      if (changed.length > 0) this.#onChange(changed)
    }, this.#debounceMs)
    this.#timer.unref()
  }

  /** Whether `file` changed since last seen (its stat, then its contents); records what it is now. */
  #changed (file: string): boolean {
    const known = this.#known.get(file)
    if (known === undefined) return false
    const now = stampOf(file)
    if (now !== undefined && now === known.stamp) return false
    known.stamp = now
    if (known.digest === undefined) return true
    const before = known.digest
    known.digest = digestOf(file)
    return before !== known.digest
  }

  #unwatch (): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer)
    this.#timer = undefined
    this.#pending = new Set()
    this.#others = new Set()
    for (const w of this.#watchers) w.close()
    this.#watchers = []
  }
}
