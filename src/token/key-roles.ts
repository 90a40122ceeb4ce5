// Token key roles derived from keyd key versions alone: the newest version is `next` until verifiers
// have had time to fetch it, then `active`; the one it replaced is `retired` until its tokens expired.
import type { TokenKeyRole } from '../config/token.js'

export interface VersionTimes {
  version: number
  /** When keyd made the version (KEY_VERSIONS), unix ms. */
  createdAtMs: number
}

export interface RoleTiming {
  /** JWKS max-age: how long a verifier may go on using a JWKS without the new key. */
  verifierCacheSeconds: number
  /** The longest token lifetime: how long a retired key's last token can live. */
  maxLifetimeSeconds: number
  /** How late a worker can see a new version (its keyd poll interval). */
  pollIntervalSeconds: number
}

export interface VersionRole {
  version: number
  role: TokenKeyRole
  /** When the version starts (or started) signing. */
  promotedAtMs: number
  /** When it stopped signing (retired only). */
  retiredAtMs?: number
  /** When it leaves the JWKS (retired only): retiredAt + maxLifetime. */
  publishedUntilMs?: number
}

/** A poll lands a little after its interval (the keyd call itself, timer lateness): margin for that. */
export const POLL_SLACK_MS = 1000

/**
 * When `v` starts signing: the first version of a key at once (nothing else can sign), every later
 * one once every worker has published it (created + poll interval + 1 s slack) and every JWKS cached before that
 * has expired (+ verifierCacheSeconds). Only keyd's data counts, so all workers and proxies sharing
 * the keyd agree to the millisecond on which version signs and which ones are published.
 */
export function promotedAtMs (v: VersionTimes, first: boolean, t: RoleTiming): number {
  if (first) return v.createdAtMs
  return v.createdAtMs + (t.pollIntervalSeconds + t.verifierCacheSeconds) * 1000 + POLL_SLACK_MS
}

/**
 * The published versions with their roles at `nowMs`, oldest first: retired ones some unexpired token
 * may carry, the active one (exactly one, if `versions` is not empty), then any next ones.
 */
export function versionRoles (versions: readonly VersionTimes[], t: RoleTiming, nowMs: number): VersionRole[] {
  const sorted = [...versions].sort((a, b) => a.version - b.version)
    .map((v, i) => ({ version: v.version, promotedAtMs: promotedAtMs(v, i === 0, t) }))
  const first = sorted[0]
  if (first === undefined) return []
  // The first version is active from its creation; a later one from its promotion (the newest promoted wins).
  let active = 0
  let current = first
  for (const [i, v] of sorted.entries()) if (i > 0 && v.promotedAtMs <= nowMs) { active = i; current = v }
  const out: VersionRole[] = []
  for (const [i, v] of sorted.slice(0, active).entries()) {
    // It signed until the first later version took over (a clock step back can only keep it longer).
    let retiredAtMs = current.promotedAtMs
    for (const later of sorted.slice(i + 1, active + 1)) if (later.promotedAtMs <= nowMs) retiredAtMs = Math.min(retiredAtMs, later.promotedAtMs)
    const publishedUntilMs = retiredAtMs + t.maxLifetimeSeconds * 1000
    if (publishedUntilMs > nowMs) out.push({ version: v.version, role: 'retired', promotedAtMs: v.promotedAtMs, retiredAtMs, publishedUntilMs })
  }
  out.push({ version: current.version, role: 'active', promotedAtMs: current.promotedAtMs })
  for (const v of sorted.slice(active + 1)) out.push({ version: v.version, role: 'next', promotedAtMs: v.promotedAtMs })
  return out
}
