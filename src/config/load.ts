// Reads a JSON config file, validates it and checks that every certificate and key file is readable.

import { accessSync, constants, readFileSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { ConfigInvalidError } from '../errors.js'
import type { EdgeConfig } from './types.js'
import { validateConfig } from './validate.js'

function readable (file: string): string | undefined {
  try {
    accessSync(file, constants.R_OK)
    return undefined
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? 'unreadable'
  }
}

/**
 * Loads and validates the config file `file`; relative paths in it resolve against its directory.
 * @throws ConfigInvalidError (EDGE_ERR_CONFIG_INVALID) listing every problem, including unreadable
 *   certificate or key files.
 */
export function loadConfig (file: string): EdgeConfig {
  const abs = resolve(file)
  let text: string
  try {
    text = readFileSync(abs, 'utf8')
  } catch (err) {
    throw new ConfigInvalidError([`cannot read the file (${(err as NodeJS.ErrnoException).code ?? 'error'})`], abs)
  }
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch (err) {
    throw new ConfigInvalidError([`not valid JSON: ${(err as Error).message}`], abs)
  }
  const config = validateConfig(raw, { baseDir: dirname(abs), file: abs })
  const problems: string[] = []
  config.certificates.forEach((cert, i) => {
    cert.files.forEach((pair, j) => {
      for (const which of ['cert', 'key'] as const) {
        const code = readable(pair[which])
        if (code !== undefined) problems.push(`certificates[${i}].files[${j}].${which}: cannot read ${pair[which]} (${code})`)
      }
    })
  })
  if (problems.length > 0) throw new ConfigInvalidError(problems, abs)
  return config
}
