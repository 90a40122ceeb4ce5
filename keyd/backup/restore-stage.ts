// Crash-safe restore on disk: stage every file in keyd/restore/, commit with one marker, then move the files
// into place. A keyd killed at any point comes back with either no restored key or all of them.
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, chmodSync } from 'node:fs'
import { join } from 'node:path'
import { writeFileAtomic, fsyncDir } from '../keystore/atomic-file.js'

/** Where a restore stages its files, inside keyd's state directory. */
export interface RestorePaths { keydDir: string, keysDir: string, policyFile: string }

const STAGE = 'restore'
const COMMITTED = 'COMMITTED'

function stageDir (p: RestorePaths): string { return join(p.keydDir, STAGE) }

/** The key files in `dir` (what FileKeystore loads): names ending in .json, not temp files. */
export function keyFileNames (dir: string): string[] {
  if (!existsSync(dir)) return []
  return readdirSync(dir).filter(f => f.endsWith('.json') && !f.startsWith('.'))
}

/**
 * Writes `files` (key name → key file text) and the policy text into a fresh staging directory, each file
 * fsync'd, then commits with the COMMITTED marker and moves them into place. A crash before the marker
 * leaves nothing; after it, `recoverRestore` at the next start finishes the move. `checkPolicy` may refuse
 * the staged policy file by throwing, before the commit.
 * @throws Error on an I/O failure or a refused policy before the commit (the staging directory is removed)
 */
export function stageAndCommit (p: RestorePaths, files: Map<string, string>, policy: string | null, checkPolicy?: (stagedFile: string) => unknown): void {
  const dir = stageDir(p)
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(join(dir, 'keys'), { recursive: true, mode: 0o700 })
  chmodSync(dir, 0o700)
  fsyncDir(p.keydDir)
  try {
    for (const [name, text] of files) writeFileAtomic(join(dir, 'keys', `${name}.json`), text)
    if (policy !== null) {
      writeFileAtomic(join(dir, 'policy.json'), policy)
      checkPolicy?.(join(dir, 'policy.json'))
    }
    fsyncDir(dir)
  } catch (err) {
    rmSync(dir, { recursive: true, force: true })
    throw err
  }
  writeFileAtomic(join(dir, COMMITTED), `${files.size} keys${policy !== null ? ' and policy.json' : ''}\n`)
  finish(p)
}

/** Moves every staged file into place (each rename atomic, each step repeatable), then drops the staging directory. */
function finish (p: RestorePaths): void {
  const dir = stageDir(p)
  mkdirSync(p.keysDir, { recursive: true, mode: 0o700 })
  for (const f of keyFileNames(join(dir, 'keys'))) renameSync(join(dir, 'keys', f), join(p.keysDir, f))
  fsyncDir(p.keysDir)
  if (existsSync(join(dir, 'policy.json'))) renameSync(join(dir, 'policy.json'), p.policyFile)
  fsyncDir(p.keydDir)
  rmSync(join(dir, COMMITTED), { force: true })
  rmSync(dir, { recursive: true, force: true })
  fsyncDir(p.keydDir)
}

/**
 * At start, before the keystore opens: finishes a committed restore, or drops one that never committed.
 * Returns what it did, for the log.
 */
export function recoverRestore (p: RestorePaths): 'none' | 'rolled-forward' | 'rolled-back' {
  const dir = stageDir(p)
  if (!existsSync(dir)) return 'none'
  if (existsSync(join(dir, COMMITTED))) {
    finish(p)
    return 'rolled-forward'
  }
  rmSync(dir, { recursive: true, force: true })
  fsyncDir(p.keydDir)
  return 'rolled-back'
}
