// `npm run generate:config`: rewrites the generated tables of docs/configuration.md from the
// config schema. With `--check`, writes nothing and exits 1 when the file is stale.

import { readFileSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { GENERATE_COMMAND, renderConfigDocs } from './docs.js'

/** docs/configuration.md of this checkout (this file runs from dist/src/config/). */
const CONFIG_DOC = fileURLToPath(new URL('../../../docs/configuration.md', import.meta.url))

function main (argv: string[]): number {
  const current = readFileSync(CONFIG_DOC, 'utf8')
  const next = renderConfigDocs(current)
  if (next === current) {
    process.stdout.write(`${CONFIG_DOC} is up to date\n`)
    return 0
  }
  if (argv.includes('--check')) {
    process.stderr.write(`${CONFIG_DOC} is stale: run \`${GENERATE_COMMAND}\`\n`)
    return 1
  }
  writeFileSync(CONFIG_DOC, next)
  process.stdout.write(`${CONFIG_DOC} rewritten\n`)
  return 0
}

process.exitCode = main(process.argv.slice(2))
