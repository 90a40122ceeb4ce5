// `keyedge validate --config FILE`: checks a proxy config and prints "config OK" or every problem.

import { parseArgs } from 'node:util'
import { loadConfig } from '../config/load.js'
import { ConfigInvalidError } from '../errors.js'

export const VALIDATE_USAGE = `usage: keyedge validate --config FILE

Checks FILE against the proxy config schema (and that its certificate and key files are
readable); prints "config OK", or every problem, one per line, and exits 1.
`

/** Validates a config file; resolves 0 when valid, 1 when not, 2 on a usage error. */
export async function main (argv: string[]): Promise<number> {
  let values: { config?: string, help?: boolean }
  try {
    values = parseArgs({
      args: argv,
      options: { config: { type: 'string', short: 'c' }, help: { type: 'boolean', short: 'h' } },
      strict: true,
      allowPositionals: false
    }).values
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n\n${VALIDATE_USAGE}`)
    return 2
  }
  if (values.help === true) {
    process.stdout.write(VALIDATE_USAGE)
    return 0
  }
  if (values.config === undefined) {
    process.stderr.write(`missing --config\n\n${VALIDATE_USAGE}`)
    return 2
  }
  try {
    loadConfig(values.config)
  } catch (err) {
    if (err instanceof ConfigInvalidError) {
      for (const problem of err.problems) process.stdout.write(`${problem}\n`)
      return 1
    }
    throw err
  }
  process.stdout.write('config OK\n')
  return 0
}
