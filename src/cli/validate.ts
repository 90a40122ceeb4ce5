// `keyedge validate --config FILE`: checks a proxy config and prints "config OK" or every problem.

import { parseArgs } from 'node:util'
import { errorMessage } from '../../lib/errors.js'
import { checkConfigFiles } from '../config/files.js'
import { loadConfig } from '../config/load.js'
import { formatProblem, sortProblems } from '../config/problems.js'
import { EdgeConfigSchema } from '../config/schema.js'
import type { EdgeConfig } from '../config/types.js'
import { ConfigInvalidError } from '../errors.js'

export const VALIDATE_USAGE = `usage: keyedge validate --config FILE

Checks FILE as the proxy would load it: against the config schema, then its certificate and
key files (readable files, a parsable unexpired certificate in each "cert", a key reference or
private key in each "key", each pair matching; a key reference is compared with the public key
keyd holds for it, using the config's "keyd" section). Prints "config OK", or every problem,
one per line with its field path, and exits 1. What could not be checked (keyd not reachable)
is printed as a "warning:" line and does not fail the check.
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
    process.stderr.write(`${errorMessage(err)}\n\n${VALIDATE_USAGE}`)
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
  let config: EdgeConfig
  try {
    config = loadConfig(values.config)
  } catch (err) {
    if (err instanceof ConfigInvalidError) {
      for (const problem of err.problems) process.stdout.write(`${problem}\n`)
      return 1
    }
    throw err
  }
  const { problems, notes } = await checkConfigFiles(config)
  for (const note of sortProblems(notes, EdgeConfigSchema)) process.stdout.write(`warning: ${formatProblem(note)}\n`)
  for (const problem of sortProblems(problems, EdgeConfigSchema)) process.stdout.write(`${formatProblem(problem)}\n`)
  if (problems.length > 0) return 1
  process.stdout.write('config OK\n')
  return 0
}
