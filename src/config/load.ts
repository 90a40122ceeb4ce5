// Reads a JSON config file, validates it and checks that every certificate and key file is a readable file.

import { readFileSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { errorCode, errorMessage } from '../../lib/errors.js'
import { ConfigInvalidError } from '../errors.js'
import { certificateFileProblems } from './files.js'
import { formatProblem } from './problems.js'
import type { EdgeConfig } from './types.js'
import { validateConfig } from './validate.js'

/**
 * Loads and validates the config file `file`; relative paths in it resolve against its directory.
 * `checkFiles: false` leaves out the look at every certificate and key file (a proxy worker, which
 * reads and checks each of them when it loads its certificates, after the primary looked).
 * @throws ConfigInvalidError (EDGE_ERR_CONFIG_INVALID) listing every problem, including certificate
 *   or key files that are missing, unreadable or directories.
 */
export function loadConfig (file: string, opts: { checkFiles?: boolean } = {}): EdgeConfig {
  const abs = resolve(file)
  let text: string
  try {
    text = readFileSync(abs, 'utf8')
  } catch (err) {
    throw new ConfigInvalidError([`cannot read the file (${errorCode(err) ?? 'error'})`], abs)
  }
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch (err) {
    throw new ConfigInvalidError([`not valid JSON: ${errorMessage(err)}`], abs)
  }
  const config = validateConfig(raw, { baseDir: dirname(abs), file: abs, owned: true })
  const problems = opts.checkFiles === false ? [] : certificateFileProblems(config)
  if (problems.length > 0) throw new ConfigInvalidError(problems.map(formatProblem), abs)
  return config
}
