// A file of reserved disk space beside the audit log. When the disk fills, keyd deletes it and writes
// the entries it has already answered into the space it frees, so "answered" never means "not logged";
// keyd then refuses to sign until it can put the reserve back (its recovery probe).
import { open, rm } from 'node:fs/promises'

/** Bytes reserved: room for ~2,000 entries, more than buffered mode ever lets wait unwritten. */
export const RESERVE_BYTES = 512 * 1024

export class SpaceReserve {
  #held = false
  constructor (readonly file: string, readonly bytes = RESERVE_BYTES) {}

  /** Whether the space is held (the file exists with its full size, fsynced). */
  get held (): boolean { return this.#held }

  /**
   * Writes the reserve file in full and fsyncs it: real blocks, not a sparse file. A write that does
   * not fit leaves no partial file. @throws the write's error (ENOSPC while the disk is full)
   */
  async take (): Promise<void> {
    if (this.#held) return
    const fh = await open(this.file, 'w', 0o600)
    try {
      const zeros = Buffer.alloc(64 * 1024)
      for (let off = 0; off < this.bytes;) {
        const { bytesWritten } = await fh.write(zeros, 0, Math.min(zeros.length, this.bytes - off))
        if (bytesWritten === 0) throw new Error('no space for the audit reserve')
        off += bytesWritten
      }
      await fh.sync()
    } catch (err) {
      await fh.close()
      await rm(this.file, { force: true })
      throw err
    }
    await fh.close()
    this.#held = true
  }

  /** Gives the space back to the filesystem (for the audit log to use it). */
  async release (): Promise<void> {
    this.#held = false
    await rm(this.file, { force: true })
  }
}
