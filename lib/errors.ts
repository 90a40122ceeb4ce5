// The one error root of keyedge: every error the product throws on purpose carries a stable `code`
// that callers branch on (never the message text). The proxy's EdgeError and keyd's KeydError both
// extend CodedError, so code that handles either (logs, CLI exit paths) needs one check.

/** An error with a stable machine-readable `code` (`EDGE_ERR_…`, `KEYD_ERR_…`). Messages never hold a secret. */
export class CodedError extends Error {
  readonly code: string
  constructor (code: string, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.code = code
    this.name = new.target.name
  }
}

/** The message of anything thrown: an Error's message, or the thrown value as text. */
export function errorMessage (err: unknown): string {
  if (err instanceof Error) return err.message
  if (typeof err === 'string') return err
  try {
    return String(err)
  } catch {
    return 'unprintable error'
  }
}

/**
 * The `code` of anything thrown, when it has a string one: a CodedError's code, or a Node system
 * error's (`ENOENT`, `ECONNREFUSED` …). undefined otherwise.
 */
export function errorCode (err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null || !('code' in err)) return undefined
  const code = err.code
  return typeof code === 'string' ? code : undefined
}
