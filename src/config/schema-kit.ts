// Building blocks of the config schema: plain JSON Schema nodes, typed and marked as TypeBox's
// builder would (same `Kind` and `Optional` symbols), so `Static<>` derives the TypeScript types.
// TypeBox is used for its types only: its builder cost ~85 ms of CPU per process at import
// (every worker loads the config) for what these few functions do.
// A field is declared once, with its type, bounds, default, check, transform and documentation.

import type { TArray, TBoolean, TInteger, TNumber, TObject, TOptional, TProperties, TSchema, TString, TUnsafe } from '@sinclair/typebox'
import type { CheckName, TransformName } from './checks.js'

const Kind = Symbol.for('TypeBox.Kind')
const OptionalKind = Symbol.for('TypeBox.Optional')

/** What keyedge adds to JSON Schema; registered with Ajv as keywords (schema-validator.ts). */
export interface Annotations {
  /** Markdown for the "meaning" column of docs/configuration.md. */
  description?: string
  /** A check of checks.ts run once the value has the right type. */
  check?: CheckName
  /** How the validated value is rewritten (checks.ts TRANSFORMS); `path` resolves against the config file's directory. */
  transform?: TransformName
  /** On an object: an old or commonly confused key → the hint printed when it is used. */
  renamed?: Record<string, string>
  /** How docs/configuration.md shows the default when the value itself would not help. */
  docDefault?: string
}

interface FieldOptions<T> extends Annotations { default?: T }

function node<T> (kind: string, schema: Record<string, unknown>): T {
  const out: Record<string | symbol, unknown> = Object.fromEntries(Object.entries(schema).filter(([, v]) => v !== undefined))
  out[Kind] = kind
  return out as T
}

/** An integer within [min, max]. */
export function int (min: number, max: number, opts: FieldOptions<number> = {}): TInteger {
  return node('Integer', { type: 'integer', minimum: min, maximum: max, ...opts })
}

/** A number (fractions allowed) within [min, max]. */
export function num (min: number, max: number, opts: FieldOptions<number> = {}): TNumber {
  return node('Number', { type: 'number', minimum: min, maximum: max, ...opts })
}

/** A string that is not empty nor only white space. */
export function text (opts: FieldOptions<string> = {}): TString {
  return node('String', { type: 'string', pattern: '\\S', ...opts })
}

/** A file path, resolved against the config file's directory. */
export function path (opts: FieldOptions<string> = {}): TString {
  return text({ transform: 'path', ...opts })
}

export function bool (opts: FieldOptions<boolean> = {}): TBoolean {
  return node('Boolean', { type: 'boolean', ...opts })
}

/** One of `values` (a string enum: one `enum` keyword, hence one clear error). */
export function oneOf<const V extends readonly string[]> (values: V, opts: FieldOptions<V[number]> = {}): TUnsafe<V[number]> {
  return node('Unsafe', { type: 'string', enum: [...values], ...opts })
}

/** A string, or null for "not set" (`default: null`). */
export function nullableText (opts: FieldOptions<null> = {}): TUnsafe<string | null> {
  return node('Unsafe', { type: ['string', 'null'], pattern: '\\S', ...opts })
}

/** A list; `minItems: 1` for "must not be empty". */
export function list<T extends TSchema> (items: T, opts: FieldOptions<unknown[]> & { minItems?: number } = {}): TArray<T> {
  return node('Array', { type: 'array', items, ...opts })
}

/** A field that may be left out, and has no default: its absence means something (e.g. "no admin listener"). */
export function optional<T extends TSchema> (schema: T): TOptional<T> {
  return { ...schema, [OptionalKind]: 'Optional' } as TOptional<T>
}

/**
 * An object that rejects unknown keys; its fields are required unless `optional()` or given a
 * default. Give it `default: {}` when it may be left out and its fields then take their
 * defaults; wrap it in `optional()` when its absence means something.
 */
export function section<P extends TProperties> (properties: P, opts: FieldOptions<Record<string, never>> = {}): TObject<P> {
  const required = Object.keys(properties).filter(k => (properties[k] as unknown as Record<symbol, unknown>)[OptionalKind] !== 'Optional')
  return node('Object', { type: 'object', properties, required, additionalProperties: false, ...opts })
}
