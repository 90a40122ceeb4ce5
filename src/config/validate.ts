// Validates a parsed config document against the schema (schema.ts), then the cross-field checks
// (cross-checks.ts), and returns the validated config: defaults applied, values normalized as the
// schema's `transform`s say, relative paths resolved against the config file's directory.

import type { Static, TSchema } from '@sinclair/typebox'
import type { ValidateFunction } from 'ajv'
import { isAbsolute, resolve } from 'node:path'
import { ConfigInvalidError } from '../errors.js'
import { TRANSFORMS, type TransformName } from './checks.js'
import { crossCheck } from './cross-checks.js'
import { formatProblem, sortProblems } from './problems.js'
import { EdgeConfigSchema } from './schema.js'
import { compileSchema, problemsFromAjv } from './schema-validator.js'
import type { EdgeConfig } from './types.js'
import type { TokenConfig, TokenSchema } from './token.js'

export { isAddressOrCidr, normalizeName } from './checks.js'

let compiled: ValidateFunction | undefined

/**
 * Rewrites `value` in place (and returns it) as the `transform` annotations of `schema` and its
 * fields say. Equal paths resolve to one string (`paths`): with thousands of certificate entries
 * sharing a key file, one copy of its path instead of thousands.
 */
function applyTransforms (schema: TSchema, value: unknown, baseDir: string, paths: Map<string, string> = new Map()): unknown {
  const transform = schema.transform as TransformName | undefined
  if (transform !== undefined && typeof value === 'string') {
    if (transform !== 'path') return TRANSFORMS[transform](value)
    // An absolute, normalized path is kept as it is (no new string per certificate file).
    if (isAbsolute(value) && !UNNORMALIZED.test(value)) return value
    let resolved = paths.get(value)
    if (resolved === undefined) paths.set(value, resolved = resolve(baseDir, value))
    return resolved
  }
  if (Array.isArray(value) && schema.items !== undefined) {
    for (let i = 0; i < value.length; i++) value[i] = applyTransforms(schema.items as TSchema, value[i], baseDir, paths)
    return value
  }
  const properties = propertiesOf(schema)
  if (properties !== undefined && typeof value === 'object' && value !== null) {
    const obj = value as Record<string, unknown>
    for (const [key, prop] of properties) {
      if (obj[key] !== undefined) obj[key] = applyTransforms(prop, obj[key], baseDir, paths)
    }
  }
  return value
}

/** What `resolve` would change in an absolute path: `//`, `/./`, `/../`, a trailing `/`, `/.` or `/..`. */
const UNNORMALIZED = /\/\/|\/\.\.?(\/|$)|.\/$/

/** A schema's properties as entries, listed once per schema (not once per config object: 100,000 certificate entries). */
const propertyLists = new WeakMap<TSchema, Array<[string, TSchema]> | undefined>()
function propertiesOf (schema: TSchema): Array<[string, TSchema]> | undefined {
  if (!propertyLists.has(schema)) {
    const properties = schema.properties as Record<string, TSchema> | undefined
    propertyLists.set(schema, properties === undefined ? undefined : Object.entries(properties))
  }
  return propertyLists.get(schema)
}

type Document = Static<typeof EdgeConfigSchema>

/** `token` as the endpoint uses it: `keys` always a list, `retiredAt` as epoch ms, every caller's lifetime set. */
function finishToken (token: Static<typeof TokenSchema>): TokenConfig {
  return {
    ...token,
    keys: (token.keys ?? []).map(({ retiredAt, ...k }) => retiredAt === undefined ? k : { ...k, retiredAtMs: Date.parse(retiredAt) }),
    callers: token.callers.map(c => ({ ...c, maxLifetimeSeconds: c.maxLifetimeSeconds ?? token.maxLifetimeSeconds }))
  }
}

/** The few shape changes from document to validated config that are not a per-value transform. */
function finish (doc: Document, file: string | undefined): EdgeConfig {
  const { token, ...rest } = doc
  return {
    ...(file !== undefined ? { file } : {}),
    ...rest,
    // The schema requires one certificate entry at least.
    tls: { ...doc.tls, defaultCertificate: doc.tls.defaultCertificate ?? doc.certificates[0]?.name ?? '' },
    ...(token !== undefined ? { token: finishToken(token) } : {})
  }
}

/**
 * Validates a parsed config document, applies defaults and resolves relative paths against
 * `baseDir`. The document itself is left unchanged unless `owned`.
 * @throws ConfigInvalidError (EDGE_ERR_CONFIG_INVALID) listing every problem found, one per
 *   field, each as `path: message`, in the order of the schema's fields.
 */
export function validateConfig (raw: unknown, opts: { baseDir: string, file?: string, /** `raw` may be changed (a document parsed for this call): not copied first. */ owned?: boolean }): EdgeConfig {
  compiled ??= compileSchema(EdgeConfigSchema)
  const doc: unknown = opts.owned === true ? raw : structuredClone(raw)
  const problems = compiled(doc) ? [] : problemsFromAjv(compiled.errors ?? [], EdgeConfigSchema)
  problems.push(...crossCheck(doc))
  if (problems.length > 0) {
    throw new ConfigInvalidError(sortProblems(problems, EdgeConfigSchema).map(formatProblem), opts.file)
  }
  return finish(applyTransforms(EdgeConfigSchema, doc, opts.baseDir) as Document, opts.file)
}
