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
  if (sorted.length === 0) return []
  const promoted = sorted.map((v, i) => promotedAtMs(v, i === 0, t))
  let active = 0
  for (let i = 1; i < sorted.length; i++) if (promoted[i] <= nowMs) active = i
  const out: VersionRole[] = []
  for (let i = 0; i < active; i++) {
    // It signed until the first later version took over (a clock step back can only keep it longer).
    let retiredAtMs = promoted[active]
    for (let j = i + 1; j <= active; j++) if (promoted[j] <= nowMs) retiredAtMs = Math.min(retiredAtMs, promoted[j])
    const publishedUntilMs = retiredAtMs + t.maxLifetimeSeconds * 1000
    if (publishedUntilMs > nowMs) out.push({ version: sorted[i].version, role: 'retired', promotedAtMs: promoted[i], retiredAtMs, publishedUntilMs })
  }
  out.push({ version: sorted[active].version, role: 'active', promotedAtMs: promoted[active] })
  for (let i = active + 1; i < sorted.length; i++) out.push({ version: sorted[i].version, role: 'next', promotedAtMs: promoted[i] })
  return out
}
