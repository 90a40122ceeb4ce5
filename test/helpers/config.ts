// Config validation as the tests see it: the problems a raw config has, with their field paths.
import { validateConfig } from '../../src/config/index.js'
import { ConfigInvalidError } from '../../src/errors.js'

/** The problems `validateConfig` reports for `raw` (paths resolved against /etc/keyedge); [] when valid. Other errors are thrown. */
export function problemsOf (raw: unknown): string[] {
  try {
    validateConfig(raw, { baseDir: '/etc/keyedge' })
  } catch (err) {
    if (err instanceof ConfigInvalidError) return err.problems
    throw err
  }
  return []
}
