// Choosing a target of a route's pool: smooth weighted round-robin (nginx's), least outstanding
// requests by the power of two choices, and consistent hashing on a ring. Pure selection over the
// targets' state; health and ejection (health.ts) only decide which targets are eligible.

import type { IncomingHttpHeaders } from 'node:http'
import type { BalanceConfig, UpstreamTargetConfig } from '../config/types.js'

/** One target of a pool and the state the balancer, health checks and outlier ejection share. */
export class Target {
  readonly url: string
  readonly weight: number
  /** Requests in flight to this target (least-outstanding). */
  outstanding = 0
  /** Set by active health checks; a pool without checks keeps every target healthy. */
  healthy = true
  /** Passive ejection: not eligible before this time (ms since epoch). */
  ejectedUntil = 0
  /** Ejections so far (the next one lasts twice as long). */
  ejections = 0
  consecutiveFailures = 0
  /** Smooth weighted round-robin's running weight. */
  current = 0
  constructor (config: UpstreamTargetConfig) {
    this.url = config.url
    this.weight = config.weight
  }

  /** Healthy and not ejected at `now`. */
  eligible (now: number): boolean {
    return this.healthy && this.ejectedUntil <= now
  }
}

/** Points per unit of weight on the hash ring: enough for an even spread of keys (±~10 % at 160). */
export const RING_POINTS_PER_WEIGHT = 160

/** Most points on one ring (160 000: about 2 MB, built in well under a second). */
export const RING_MAX_POINTS = 160_000

/** 32-bit FNV-1a with murmur3's finalizer (FNV alone spreads short, similar keys poorly). */
export function hash32 (s: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/**
 * A consistent-hash ring over targets: each target owns `weight × RING_POINTS_PER_WEIGHT` points
 * placed by hashing its URL, so a target's points do not depend on the others and adding or
 * removing one of N targets moves only the keys it takes or owned (about 1/N).
 */
export class HashRing {
  readonly #points: Uint32Array
  readonly #owners: Target[]
  constructor (targets: readonly Target[]) {
    const entries: Array<[number, Target]> = []
    // Up to RING_MAX_POINTS the points per weight are fixed (so other targets' points never move);
    // beyond (total weight over 1000) they shrink to bound memory and start-up time.
    const total = targets.reduce((sum, t) => sum + t.weight, 0)
    const perWeight = Math.max(1, Math.min(RING_POINTS_PER_WEIGHT, Math.floor(RING_MAX_POINTS / Math.max(total, 1))))
    for (const t of targets) {
      for (let i = 0; i < t.weight * perWeight; i++) entries.push([hash32(`${t.url}#${i}`), t])
    }
    entries.sort((a, b) => a[0] - b[0])
    this.#points = Uint32Array.from(entries.map(e => e[0]))
    this.#owners = entries.map(e => e[1])
  }

  /** The first target clockwise from `key`'s hash that `accept`s (skipping down or tried ones). */
  lookup (key: string, accept: (t: Target) => boolean): Target | undefined {
    const n = this.#points.length
    if (n === 0) return undefined
    const h = hash32(key)
    let lo = 0
    let hi = n
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      const point = this.#points[mid]
      if (point === undefined) throw new RangeError(`hash ring: point ${mid} of ${n}`) // lo <= mid < hi <= n
      if (point < h) lo = mid + 1
      else hi = mid
    }
    const seen = new Set<Target>()
    for (let i = 0; i < n; i++) {
      const t = this.#owners[(lo + i) % n] // one owner per point
      if (t === undefined || seen.has(t)) continue
      if (accept(t)) return t
      seen.add(t)
      if (seen.size === this.#owners.length) break
    }
    return undefined
  }
}

function cookieValue (header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined
  for (const part of header.split(';')) {
    const eq = part.indexOf('=')
    if (eq !== -1 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim()
  }
  return undefined
}

/** The hash key of a request under `config`, or undefined (no such header/cookie → round-robin). */
export function hashKey (config: BalanceConfig, headers: IncomingHttpHeaders, client: () => string): string | undefined {
  if (config.policy !== 'hash') return undefined
  if (config.hashOn === 'client') return client()
  const name = (config.hashKey ?? '').toLowerCase()
  if (config.hashOn === 'header') {
    const v = headers[name]
    return Array.isArray(v) ? v.join(',') : v
  }
  return cookieValue(headers.cookie, config.hashKey ?? '')
}

/** Picks targets of one pool under one policy. */
export class Balancer {
  readonly targets: readonly Target[]
  readonly #policy: BalanceConfig['policy']
  readonly #ring: HashRing | undefined
  readonly #random: () => number
  constructor (targets: readonly Target[], policy: BalanceConfig['policy'], random: () => number = Math.random) {
    this.targets = targets
    this.#policy = policy
    this.#ring = policy === 'hash' ? new HashRing(targets) : undefined
    this.#random = random
  }

  /** A target for a request with hash `key` (if any) among those `accept`ed, or undefined when none is. */
  pick (accept: (t: Target) => boolean, key?: string): Target | undefined {
    if (this.#ring !== undefined && key !== undefined) return this.#ring.lookup(key, accept)
    if (this.#policy === 'least_outstanding') return this.#leastOutstanding(accept)
    return this.#roundRobin(accept)
  }

  /** Smooth weighted round-robin: spreads a heavy target's turns out instead of sending them in a burst. */
  #roundRobin (accept: (t: Target) => boolean): Target | undefined {
    let best: Target | undefined
    let total = 0
    for (const t of this.targets) {
      if (!accept(t)) continue
      t.current += t.weight
      total += t.weight
      if (best === undefined || t.current > best.current) best = t
    }
    if (best !== undefined) best.current -= total
    return best
  }

  /** Power of two choices: two distinct eligible targets at random, the one with fewer in flight per weight wins. */
  #leastOutstanding (accept: (t: Target) => boolean): Target | undefined {
    const eligible = this.targets.filter(accept)
    if (eligible.length <= 1) return eligible[0]
    const i = Math.floor(this.#random() * eligible.length)
    let j = Math.floor(this.#random() * (eligible.length - 1))
    if (j >= i) j++
    const a = eligible[i]
    const b = eligible[j]
    if (a === undefined || b === undefined) return eligible[0] // i, j < eligible.length
    return b.outstanding * a.weight < a.outstanding * b.weight ? b : a
  }
}
