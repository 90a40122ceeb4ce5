// Every default of the proxy configuration: the configurable ones are read from the schema's
// `default`s (schema.ts, the one place they are written), plus the few settings that are not
// configurable. Units are in the names.

import type { Static, TSchema } from '@sinclair/typebox'
import { EdgeConfigSchema } from './schema.js'

export { DEFAULT_CIPHERS } from './schema.js'

/** The value a node takes when the document leaves it out: its default, with its fields' defaults filled in. */
export function defaultsOf (schema: TSchema): unknown {
  const value: unknown = structuredClone(schema.default)
  const properties = schema.properties as Record<string, TSchema> | undefined
  if (properties === undefined || typeof value !== 'object' || value === null) return value
  const out = value as Record<string, unknown>
  for (const [key, prop] of Object.entries(properties)) {
    if (out[key] !== undefined) continue
    const d = defaultsOf(prop)
    if (d !== undefined) out[key] = d
  }
  return out
}

type Defaulted = Static<typeof EdgeConfigSchema>

/**
 * The defaults of every top-level field and section that has them. Sections that are absent
 * unless written (`keyd`, `admin`, `token`) are absent here too: their fields' defaults are in
 * EdgeConfigSchema.properties.<section>.
 */
const schemaDefaults = defaultsOf({ ...EdgeConfigSchema, default: {} }) as Omit<Defaulted, 'certificates' | 'routes'>

/** Defaults applied to any field the config file leaves out, and the fixed settings. */
export const configDefaults = {
  ...schemaDefaults,
  /** Not configurable: how long certificate file changes settle before a reload. */
  reloadDebounceMs: 200,
  /** Not configurable: undici pool settings per upstream origin, per worker. */
  upstreamPool: { connections: 128, keepAliveTimeoutMs: 4_000, keepAliveMaxTimeoutMs: 600_000 },
  /** Not configurable: backoff when restarting a worker that died, doubled per quick death. */
  workerRestart: { initialDelayMs: 100, maxDelayMs: 10_000, stableAfterMs: 10_000 }
} as const
