// Small hand-written checks used by the config validator: each records a problem
// naming the exact field path and returns a usable value (or undefined) so validation goes on.

export type Obj = Record<string, unknown>

export function isObject (value: unknown): value is Obj {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

export function describe (value: unknown): string {
  if (value === undefined) return 'nothing'
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  if (typeof value === 'string') return `a string`
  return `${typeof value === 'object' ? 'an' : 'a'} ${typeof value}`
}

/** Edit distance, for "did you mean" hints on unknown keys. */
function distance (a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]
    row[0] = i
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j]
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1))
      prev = cur
    }
  }
  return row[b.length]
}

/** Collects problems while walking a parsed JSON document. */
export class Checker {
  readonly problems: string[] = []

  add (path: string, message: string): void {
    this.problems.push(path === '' ? message : `${path}: ${message}`)
  }

  /** Records "is required" for a missing value; true when it was missing. */
  #missing (value: unknown, path: string): boolean {
    if (value !== undefined) return false
    this.add(path, 'is required')
    return true
  }

  /**
   * Rejects keys outside `known`. `renamed` maps old or commonly confused keys to a hint;
   * otherwise a close spelling of a known key is suggested.
   */
  keys (obj: Obj, path: string, known: readonly string[], renamed: Record<string, string> = {}): void {
    for (const key of Object.keys(obj)) {
      if (known.includes(key)) continue
      const at = path === '' ? key : `${path}.${key}`
      const hint = renamed[key] ??
        known.map(k => ({ k, d: distance(key.toLowerCase(), k.toLowerCase()) }))
          .filter(({ k, d }) => d <= Math.max(1, Math.floor(k.length / 3)))
          .sort((x, y) => x.d - y.d)
          .map(({ k }) => `did you mean "${k}"?`)[0]
      this.add(at, `unknown key${hint === undefined ? ` (known keys: ${known.join(', ')})` : `, ${hint}`}`)
    }
  }

  object (value: unknown, path: string): Obj | undefined {
    if (this.#missing(value, path)) return undefined
    if (isObject(value)) return value
    this.add(path, `must be an object, got ${describe(value)}`)
    return undefined
  }

  array (value: unknown, path: string, opts: { nonEmpty?: boolean } = {}): unknown[] | undefined {
    if (this.#missing(value, path)) return undefined
    if (!Array.isArray(value)) {
      this.add(path, `must be an array, got ${describe(value)}`)
      return undefined
    }
    if (opts.nonEmpty === true && value.length === 0) {
      this.add(path, 'must not be empty')
      return undefined
    }
    return value
  }

  string (value: unknown, path: string, opts: { oneOf?: readonly string[] } = {}): string | undefined {
    if (this.#missing(value, path)) return undefined
    if (typeof value !== 'string' || value.trim() === '') {
      this.add(path, `must be a non-empty string, got ${typeof value === 'string' ? 'an empty string' : describe(value)}`)
      return undefined
    }
    if (opts.oneOf !== undefined && !opts.oneOf.includes(value)) {
      this.add(path, `must be one of ${opts.oneOf.map(v => `"${v}"`).join(', ')}, got "${value}"`)
      return undefined
    }
    return value
  }

  boolean (value: unknown, path: string): boolean | undefined {
    if (this.#missing(value, path)) return undefined
    if (typeof value === 'boolean') return value
    this.add(path, `must be true or false, got ${describe(value)}`)
    return undefined
  }

  integer (value: unknown, path: string, min: number, max: number): number | undefined {
    if (this.#missing(value, path)) return undefined
    if (typeof value !== 'number' || !Number.isInteger(value)) {
      this.add(path, `must be an integer, got ${describe(value)}`)
      return undefined
    }
    if (value < min || value > max) {
      this.add(path, `must be between ${min} and ${max}, got ${value}`)
      return undefined
    }
    return value
  }
}
