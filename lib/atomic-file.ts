// Crash-safe file writes: temp file, fsync, rename, fsync of the directory. Survives kill -9 at any
// point: the file holds either its old or its new content, never a mix or nothing.
import { openSync, writeSync, fsyncSync, closeSync, renameSync, unlinkSync } from 'node:fs'
import { dirname, basename, join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { open, rename, unlink } from 'node:fs/promises'

/**
 * Atomically replaces `file` with `data`, created with `mode` (default 0600: files that matter here
 * usually hold secrets). The temp file is written next to `file` so the rename stays on one filesystem.
 */
export function writeFileAtomic (file: string, data: string | Uint8Array, mode = 0o600): void {
  const dir = dirname(file)
  const tmp = join(dir, `.${basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`)
  const fd = openSync(tmp, 'wx', mode)
  try {
    const buf = typeof data === 'string' ? Buffer.from(data) : data
    let off = 0
    while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off)
    fsyncSync(fd)
  } catch (err) {
    closeSync(fd)
    // The write's error is the one to report; a temp file that cannot be removed changes nothing.
    try { unlinkSync(tmp) } catch { /* ignored: see above */ }
    throw err
  }
  closeSync(fd)
  renameSync(tmp, file)
  fsyncDir(dir)
}

/** Flushes a directory's entries (a rename or a new file in it) to disk. */
export function fsyncDir (dir: string): void {
  const fd = openSync(dir, 'r')
  try { fsyncSync(fd) } finally { closeSync(fd) }
}

/**
 * `writeFileAtomic` without blocking the event loop (temp file, fsync, rename, fsync of the
 * directory, each on the thread pool). A failed write leaves no temp file behind.
 */
export async function writeFileAtomicAsync (file: string, data: string | Uint8Array, mode = 0o600): Promise<void> {
  const dir = dirname(file)
  const tmp = join(dir, `.${basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`)
  const fh = await open(tmp, 'wx', mode)
  try {
    await fh.writeFile(data)
    await fh.sync()
  } catch (err) {
    await fh.close()
    await unlink(tmp).catch(() => {})
    throw err
  }
  await fh.close()
  await rename(tmp, file)
  const d = await open(dir, 'r')
  try { await d.sync() } finally { await d.close() }
}
