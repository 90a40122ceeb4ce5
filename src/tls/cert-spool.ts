// The bytes of the certificate files a worker validated, kept outside its heap. Contexts are built
// on a name's first ClientHello, possibly long after the files were read: they must be built from
// the bytes that were checked and committed, not from whatever is on disk by then (a file being
// rewritten, or one a refused reload left behind). Keeping every PEM in memory would cost about
// 1 KB per entry; this file costs that much of page cache instead. It is opened in a private
// directory and unlinked at once, so it disappears with the process, even after kill -9.
// Where no temporary file can be written (a read-only root filesystem without a writable TMPDIR,
// a full disk) the bytes stay in memory instead: it still works, at ~1 KB per entry.
// Only certificates and key references go here, never a private key.

import { closeSync, mkdtempSync, openSync, readSync, rmSync, unlinkSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { errorCode } from '../../lib/errors.js'

/** Where a record is in the spool. */
export interface SpoolRef { offset: number, length: number }

/** Bytes written at a time, and the size of the in-memory pages in front of the file. */
const PAGE = 1 << 20

/** An append-only, unlinked temp file of byte records (or memory, when there is no file), with pages in front. */
export class CertSpool {
  /** The file, or undefined when the records stay in memory. */
  #fd: number | undefined
  /** Whether new records may still go to the file. */
  #writable: boolean
  /** Bytes written to the file: [0, #flushed). */
  #flushed = 0
  /** Bytes [#flushed, #flushed + #used) are in these pages (all full but the last). */
  #pages: Buffer[] = []
  #used = 0
  readonly #onFallback: (reason: string) => void

  /** `onFallback` hears why records stay in memory from now on (no temp file, or a write failed). */
  constructor (opts: { dir?: string, onFallback?: (reason: string) => void } = {}) {
    this.#onFallback = opts.onFallback ?? (() => {})
    try {
      const private_ = mkdtempSync(join(opts.dir ?? tmpdir(), 'keyedge-certs-'))
      const file = join(private_, 'spool')
      try {
        this.#fd = openSync(file, 'w+', 0o600)
      } finally {
        try { unlinkSync(file) } catch { /* not created */ }
        rmSync(private_, { recursive: true, force: true })
      }
    } catch (err) {
      this.#fd = undefined
      this.#onFallback(`cannot create a temporary file (${errorCode(err) ?? 'error'})`)
    }
    this.#writable = this.#fd !== undefined
  }

  /** Bytes held, live or not. */
  get size (): number { return this.#flushed + this.#used }

  /** Appends a copy of `bytes` (the caller may reuse its buffer); returns where they are. */
  append (bytes: Uint8Array): SpoolRef {
    const ref = { offset: this.size, length: bytes.length }
    let done = 0
    while (done < bytes.length) {
      const at = this.#used % PAGE
      if (at === 0 && this.#used === this.#pages.length * PAGE) this.#pages.push(Buffer.allocUnsafe(PAGE))
      const page = this.#pages[this.#pages.length - 1]
      if (page === undefined) throw new Error('certificate spool: no page')
      const n = Math.min(PAGE - at, bytes.length - done)
      page.set(bytes.subarray(done, done + n), at)
      done += n
      this.#used += n
    }
    if (this.#used >= PAGE) this.flush()
    return ref
  }

  /** Writes the full pages (all of them, the last too) to the file; on a write error, keeps them in memory from now on. */
  flush (): void {
    if (!this.#writable || this.#fd === undefined) return
    while (this.#pages.length > 0) {
      const page = this.#pages[0]
      if (page === undefined) break
      const bytes = Math.min(PAGE, this.#used)
      try {
        let done = 0
        while (done < bytes) done += writeSync(this.#fd, page, done, bytes - done, this.#flushed + done)
      } catch (err) {
        this.#writable = false
        this.#onFallback(`cannot write the temporary file (${errorCode(err) ?? 'error'})`)
        return
      }
      this.#flushed += bytes
      this.#used -= bytes
      this.#pages.shift()
    }
  }

  /** The bytes of `ref`. @throws Error when the spool is shorter than `ref` says (never expected). */
  read (ref: SpoolRef): Buffer {
    const out = Buffer.allocUnsafe(ref.length)
    let done = 0
    // The part written to the file …
    while (done < ref.length && ref.offset + done < this.#flushed && this.#fd !== undefined) {
      const n = readSync(this.#fd, out, done, Math.min(ref.length, this.#flushed - ref.offset) - done, ref.offset + done)
      if (n === 0) throw new Error(`certificate spool: short read at ${ref.offset + done}`)
      done += n
    }
    // … then the part still in pages.
    while (done < ref.length) {
      const at = ref.offset + done - this.#flushed
      const page = this.#pages[Math.floor(at / PAGE)]
      if (page === undefined || at >= this.#used) throw new Error(`certificate spool: nothing at ${ref.offset + done}`)
      const from = at % PAGE
      const n = Math.min(PAGE - from, ref.length - done)
      page.copy(out, done, from, from + n)
      done += n
    }
    return out
  }

  /**
   * Copies the records of `refs` into a new spool (dropping every other byte) and returns it with
   * the new place of each record, in order; this spool is closed.
   */
  compact (refs: readonly SpoolRef[]): { spool: CertSpool, refs: SpoolRef[] } {
    const next = new CertSpool({ onFallback: this.#onFallback })
    const moved = refs.map(ref => next.append(this.read(ref)))
    next.flush()
    this.close()
    return { spool: next, refs: moved }
  }

  close (): void {
    if (this.#fd !== undefined) closeSync(this.#fd)
    this.#fd = undefined
    this.#writable = false
    this.#pages = []
    this.#used = 0
  }
}
