// `npm run generate`: rewrites the files generated from the wire contract (render.ts) in the source
// tree. Run it after changing keyd/protocol/spec.ts or messages.ts, and commit what it writes.
import { readFileSync, writeFileSync, existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { GENERATED_FILES, renderHeader, renderProtocolTables } from './render.js'

/** The repository root: the nearest directory above this file holding package.json (works from dist/ too). */
function repoRoot (from = dirname(fileURLToPath(import.meta.url))): string {
  let dir = from
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir)
    if (up === dir) throw new Error(`no package.json above ${from}`)
    dir = up
  }
  return dir
}

function writeIfChanged (file: string, text: string): boolean {
  if (existsSync(file) && readFileSync(file, 'utf8') === text) return false
  writeFileSync(file, text)
  return true
}

const root = repoRoot()
const protocolFile = join(root, GENERATED_FILES.protocol)
const results = [
  [GENERATED_FILES.header, writeIfChanged(join(root, GENERATED_FILES.header), renderHeader())],
  [GENERATED_FILES.protocol, writeIfChanged(protocolFile, renderProtocolTables(readFileSync(protocolFile, 'utf8')))]
] as const
for (const [file, changed] of results) console.log(`${changed ? 'wrote' : 'unchanged'} ${file}`)
