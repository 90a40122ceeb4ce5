// The bytes of the certificate files a worker validated, kept outside its heap. Contexts are built
// on a name's first ClientHello, possibly long after the files were read: they must be built from
// the bytes that were checked and committed, not from whatever is on disk by then (a file being
// rewritten, or one a refused reload left behind). Keeping every PEM in memory would cost about
// 1 KB per entry; this file costs that much of page cache instead. It is opened in a private
// directory and unlinked at once, so it disappears with the process, even after kill -9.
// Only certificates and key references go here, never a private key.

import { closeSync, fstatSync, mkdtempSync, openSync, readSync, rmSync, unlinkSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/** Where a record is in the spool. */
export interface SpoolRef { offset: number, length: number }

const BUFFER_BYTES = 1 << 20

/** An append-only, unlinked temp file of byte records, with a write buffer in front. */
export class CertSpool {
  #fd: number
  /** Bytes already written to the file. */
  #flushed = 0
  /** Records not written yet: [0, #used) of #buffer, which starts at file offset #flushed. */
  #buffer = Buffer.allocUnsafe(BUFFER_BYTES)
  #used = 0

  constructor (dir: string = tmpdir()) {
    const private_ = mkdtempSync(join(dir, 'keyedge-certs-'))
    const file = join(private_, 'spool')
    try {
      this.#fd = openSync(file, 'w+', 0o600)
    } finally {
      try { unlinkSync(file) } catch { /* not created */ }
      rmSync(private_, { recursive: true, force: true })
    }
  }

  /** Bytes held, live or not. */
  get size (): number { return this.#flushed + this.#used }

  /** Appends a copy of `bytes` (the caller may reuse its buffer); returns where they are. */
  append (bytes: Uint8Array): SpoolRef {
    const ref = { offset: this.size, length: bytes.length }
    if (this.#used + bytes.length > this.#buffer.length) this.flush()
    if (bytes.length > this.#buffer.length) {
      this.#write(bytes)
    } else {
      this.#buffer.set(bytes, this.#used)
      this.#used += bytes.length
    }
    return ref
  }

  #write (bytes: Uint8Array): void {
    let done = 0
    while (done < bytes.length) done += writeSync(this.#fd, bytes, done, bytes.length - done, this.#flushed + done)
    this.#flushed += bytes.length
  }

  /** Writes the buffered records to the file. */
  flush (): void {
    if (this.#used === 0) return
    const used = this.#used
    this.#used = 0
    this.#write(this.#buffer.subarray(0, used))
  }

  /** The bytes of `ref`. @throws Error when the spool is shorter than `ref` says (never expected). */
  read (ref: SpoolRef): Buffer {
    const out = Buffer.allocUnsafe(ref.length)
    if (ref.offset >= this.#flushed) {
      this.#buffer.copy(out, 0, ref.offset - this.#flushed, ref.offset - this.#flushed + ref.length)
      return out
    }
    let done = 0
    while (done < ref.length) {
      const n = readSync(this.#fd, out, done, ref.length - done, ref.offset + done)
      if (n === 0) throw new Error(`certificate spool: short read at ${ref.offset + done} of ${fstatSync(this.#fd).size}`)
      done += n
    }
    return out
  }

  /**
   * Copies the records of `refs` into a new spool (dropping every other byte) and returns it with
   * the new place of each record, in order; this spool is closed.
   */
  compact (refs: readonly SpoolRef[]): { spool: CertSpool, refs: SpoolRef[] } {
    const next = new CertSpool()
    const moved = refs.map(ref => next.append(this.read(ref)))
    next.flush()
    this.close()
    return { spool: next, refs: moved }
  }

  close (): void {
    if (this.#fd < 0) return
    closeSync(this.#fd)
    this.#fd = -1
    this.#used = 0
  }
}
