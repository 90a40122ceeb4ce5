// Watches the directories of the certificate, key and config files and calls back once their
// contents settle after a change. Watching directories (not files) sees atomic renames and the
// Kubernetes `..data` symlink swap; the debounce lets a certificate and its key land together.

import { createHash } from 'node:crypto'
import { readFileSync, realpathSync, watch, type FSWatcher } from 'node:fs'
import { dirname } from 'node:path'
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

export class CertFileWatcher {
  #files: string[] = []
  #watchers: FSWatcher[] = []
  #digest = ''
  #timer: NodeJS.Timeout | undefined
  #firstPokeAt = 0
  #log: Logger
  #debounceMs: number
  #onChange: () => void

  constructor (opts: { log: Logger, debounceMs: number, onChange: () => void }) {
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
    for (const w of this.#watchers) w.close()
    this.#watchers = []
    this.#files = next
    this.#digest = filesDigest(this.#files)
    for (const dir of watchedDirectories(this.#files)) {
      try {
        const w = watch(dir, { persistent: false }, () => this.#poke())
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

  #poke (): void {
    // Trailing debounce, but a directory that never goes quiet (a log file beside the config)
    // cannot postpone the check for more than a few debounce periods.
    if (this.#timer !== undefined) {
      if (Date.now() - this.#firstPokeAt >= this.#debounceMs * 5) return
      clearTimeout(this.#timer)
    } else {
      this.#firstPokeAt = Date.now()
    }
    this.#timer = setTimeout(() => {
      this.#timer = undefined
      const digest = filesDigest(this.#files)
      if (digest === this.#digest) return
      this.#digest = digest
      this.#onChange()
    }, this.#debounceMs)
    this.#timer.unref()
  }

  #unwatch (): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer)
    this.#timer = undefined
    for (const w of this.#watchers) w.close()
    this.#watchers = []
  }
}
