// Runs the schema with Ajv (defaults applied in place, every error collected) and turns Ajv's
// errors into keyedge's problems: one per field, in the words the tests and docs promise.

import type { TSchema } from '@sinclair/typebox'
import { Ajv, type ErrorObject, type SchemaValidateFunction, type ValidateFunction } from 'ajv'
import { CHECKS, type CheckName } from './checks.js'
import { describe, unknownKeyMessage, type Problem, type Segment } from './problems.js'

/** The `check` keyword: runs a named check of checks.ts on a string. */
const runCheck: SchemaValidateFunction = function check (name: CheckName, data: string): boolean {
  const message = CHECKS[name](data)
  if (message === undefined) return true
  runCheck.errors = [{ keyword: 'check', message, params: { check: name } }]
  return false
}

/**
 * Compiles `schema`; the validator fills in defaults and collects every error. `checkSchema`
 * also validates the schema against the JSON Schema meta-schema: the tests do, while the proxy
 * skips it, with unoptimized code, which halves the compile time every process pays (~110 → ~50 ms of CPU).
 */
export function compileSchema (schema: TSchema, opts: { checkSchema?: boolean } = {}): ValidateFunction {
  const checkSchema = opts.checkSchema === true
  const ajv = new Ajv({
    allErrors: true,
    verbose: true,
    useDefaults: true,
    strict: true,
    allowUnionTypes: true,
    validateSchema: checkSchema,
    code: { optimize: checkSchema }
  })
  ajv.addKeyword({ keyword: 'check', type: 'string', schemaType: 'string', errors: true, validate: runCheck })
  for (const keyword of ['transform', 'renamed', 'docDefault']) ajv.addKeyword(keyword)
  return ajv.compile(schema)
}

/** JSON pointer of an Ajv error → path segments, array indexes as numbers (read off the schema). */
function segments (pointer: string, root: TSchema): Segment[] {
  if (pointer === '') return []
  let node: TSchema | undefined = root
  return pointer.slice(1).split('/').map(raw => {
    const s = raw.replace(/~1/g, '/').replace(/~0/g, '~')
    if (node?.type === 'array') {
      node = node.items as TSchema | undefined
      return Number(s)
    }
    node = (node?.properties as Record<string, TSchema> | undefined)?.[s]
    return s
  })
}

const TYPE_MESSAGES: Record<string, string> = {
  integer: 'must be an integer',
  number: 'must be a number',
  string: 'must be a non-empty string',
  boolean: 'must be true or false',
  object: 'must be an object',
  array: 'must be an array',
  null: 'must be null'
}

/** Lower is said first when one field has several errors; only the first is kept. */
const PRIORITY: Record<string, number> = { type: 0, required: 0, pattern: 1, enum: 2, minimum: 2, maximum: 2, minItems: 2, check: 3 }

function message (e: ErrorObject): { extra?: string, text: string } {
  const parent = e.parentSchema ?? {}
  switch (e.keyword) {
    case 'type': {
      const type: unknown = Array.isArray(parent.type) ? parent.type[0] : parent.type
      const said = typeof type === 'string' ? TYPE_MESSAGES[type] : undefined
      return { text: `${said ?? `must be ${String(type)}`}, got ${describe(e.data)}` }
    }
    case 'pattern': return { text: 'must be a non-empty string, got an empty string' }
    case 'enum': return { text: `must be one of ${(parent.enum as string[]).map(v => `"${v}"`).join(', ')}, got ${JSON.stringify(e.data)}` }
    case 'minimum':
    case 'maximum': return { text: `must be between ${String(parent.minimum)} and ${String(parent.maximum)}, got ${String(e.data)}` }
    case 'minItems': return { text: parent.minItems === 1 ? 'must not be empty' : `must hold at least ${String(parent.minItems)} entries` }
    case 'required': return { extra: e.params.missingProperty as string, text: 'is required' }
    case 'additionalProperties': {
      const key = e.params.additionalProperty as string
      const known = Object.keys((parent.properties ?? {}) as Record<string, unknown>)
      return { extra: key, text: unknownKeyMessage(key, known, parent.renamed as Record<string, string> | undefined) }
    }
    default: return { text: e.message ?? `fails ${e.keyword}` }
  }
}

/** Ajv's errors as problems: one per field (the most basic error of each), each unknown key its own. */
export function problemsFromAjv (errors: readonly ErrorObject[], root: TSchema): Problem[] {
  const byPath = new Map<string, { problem: Problem, priority: number }>()
  for (const e of errors) {
    const { extra, text } = message(e)
    const path = segments(e.instancePath, root)
    if (extra !== undefined) path.push(extra)
    const id = JSON.stringify(path)
    const priority = PRIORITY[e.keyword] ?? 4
    const seen = byPath.get(id)
    if (seen === undefined || priority < seen.priority) byPath.set(id, { problem: { path, message: text }, priority })
  }
  return [...byPath.values()].map(v => v.problem)
}
