// A config problem is a field path plus a message; this module formats paths the way users write
// them (`routes[1].upstream`), orders problems as the fields appear in the schema, and makes the
// "unknown key" message with its migration or did-you-mean hint.

import type { TSchema } from '@sinclair/typebox'

export type Segment = string | number

export interface Problem {
  /** Keys and array indexes from the document root; empty for the root itself. */
  path: Segment[]
  message: string
}

/** `['routes', 1, 'upstream']` → `routes[1].upstream`; the root is `(root)`. */
export function formatPath (path: readonly Segment[]): string {
  if (path.length === 0) return '(root)'
  return path.map((s, i) => typeof s === 'number' ? `[${s}]` : i === 0 ? s : `.${s}`).join('')
}

/** `routes[1].upstream: must be …`. */
export function formatProblem (p: Problem): string {
  return `${formatPath(p.path)}: ${p.message}`
}

/** What describes a wrong value in a message, never the value itself. */
export function describe (value: unknown): string {
  if (value === undefined) return 'nothing'
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  return `${typeof value === 'object' ? 'an' : 'a'} ${typeof value}`
}

/** Edit distance, for "did you mean" hints on unknown keys. */
function distance (a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0] ?? 0
    row[0] = i
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j] ?? 0
      row[j] = Math.min(cur + 1, (row[j - 1] ?? 0) + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1))
      prev = cur
    }
  }
  return row[b.length] ?? 0
}

/**
 * The message for `key`, unknown in an object whose known keys are `known`: the migration hint
 * from `renamed` when there is one, else the closest known spelling, else the list of known keys.
 */
export function unknownKeyMessage (key: string, known: readonly string[], renamed: Record<string, string> = {}): string {
  const hint = Object.hasOwn(renamed, key)
    ? renamed[key]
    : known.map(k => ({ k, d: distance(key.toLowerCase(), k.toLowerCase()) }))
      .filter(({ k, d }) => d <= Math.max(1, Math.floor(k.length / 3)))
      .sort((x, y) => x.d - y.d)
      .map(({ k }) => `did you mean "${k}"?`)[0]
  return `unknown key${hint === undefined ? ` (known keys: ${known.join(', ')})` : `, ${hint}`}`
}

/** The rank of each segment of `path` in `root`'s field order: unknown keys first, then known keys, indexes in order. */
function ranks (path: readonly Segment[], root: TSchema): number[] {
  let node: TSchema | undefined = root
  return path.map(segment => {
    if (typeof segment === 'number') {
      node = node?.items as TSchema | undefined
      return segment
    }
    const properties = node?.properties as Record<string, TSchema> | undefined
    const keys = properties === undefined ? [] : Object.keys(properties)
    node = properties?.[segment]
    return keys.indexOf(segment)
  })
}

/**
 * Problems in the order of the fields they name, as the schema declares them (a field before its
 * own fields, unknown keys of an object before its known ones); problems on one field keep their order.
 */
export function sortProblems (problems: readonly Problem[], root: TSchema): Problem[] {
  const keyed = problems.map(p => ({ p, r: ranks(p.path, root) }))
  keyed.sort((a, b) => {
    for (let i = 0; i < Math.min(a.r.length, b.r.length); i++) {
      const d = (a.r[i] ?? 0) - (b.r[i] ?? 0)
      if (d !== 0) return d
    }
    return a.r.length - b.r.length
  })
  return keyed.map(({ p }) => p)
}
