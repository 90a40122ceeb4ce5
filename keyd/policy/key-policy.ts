// Per-key and per-client policy beyond usage: which clients and algorithms a key allows, and token-bucket
// rate limits per key and per client. Read from <home>/keyd/policy.json; absent = no extra limits.
import { existsSync, readFileSync } from 'node:fs'
import { KeydConfigError } from '../errors.js'
import { ALGORITHMS_BY_NAME } from '../algorithms.js'

export interface RateLimit { perSecond: number, burst: number }
export interface KeyRule { clients?: string[], algorithms?: string[], rateLimit?: RateLimit }
export interface PolicyFile { keys?: Record<string, KeyRule>, clients?: Record<string, { rateLimit?: RateLimit }> }

/** A token bucket: `burst` tokens, refilled at `perSecond`. */
export class TokenBucket {
  #tokens: number
  #last = performance.now()
  constructor (readonly limit: RateLimit) { this.#tokens = limit.burst }
  take (): boolean {
    const now = performance.now()
    this.#tokens = Math.min(this.limit.burst, this.#tokens + (now - this.#last) * this.limit.perSecond / 1000)
    this.#last = now
    if (this.#tokens < 1) return false
    this.#tokens -= 1
    return true
  }
}

export type PolicyVerdict = { ok: true } | { ok: false, reason: 'client' | 'algorithm' | 'key-rate' | 'client-rate', message: string }

function checkLimit (where: string, r: unknown): RateLimit | undefined {
  if (r === undefined) return undefined
  const l = r as RateLimit
  if (typeof l !== 'object' || l === null || !(l.perSecond > 0) || !(l.burst >= 1)) throw new KeydConfigError(`${where}.rateLimit needs perSecond > 0 and burst >= 1`)
  return { perSecond: l.perSecond, burst: l.burst }
}

export class KeyPolicy {
  readonly #keys = new Map<string, KeyRule>()
  readonly #clientLimits = new Map<string, RateLimit>()
  readonly #buckets = new Map<string, TokenBucket>()

  /** @throws KeydConfigError naming the bad field. */
  constructor (file?: string) {
    if (file === undefined || !existsSync(file)) return
    let raw: PolicyFile
    try { raw = JSON.parse(readFileSync(file, 'utf8')) as PolicyFile } catch { throw new KeydConfigError(`${file}: not valid JSON`) }
    for (const [name, rule] of Object.entries(raw.keys ?? {})) {
      const where = `${file}: keys.${name}`
      if (rule.clients !== undefined && (!Array.isArray(rule.clients) || !rule.clients.every(c => typeof c === 'string'))) throw new KeydConfigError(`${where}.clients must be a list of client names`)
      if (rule.algorithms !== undefined && (!Array.isArray(rule.algorithms) || !rule.algorithms.every(a => ALGORITHMS_BY_NAME.has(a)))) throw new KeydConfigError(`${where}.algorithms must list algorithm names (${[...ALGORITHMS_BY_NAME.keys()].join(', ')})`)
      this.#keys.set(name, { clients: rule.clients, algorithms: rule.algorithms, rateLimit: checkLimit(where, rule.rateLimit) })
    }
    for (const [name, c] of Object.entries(raw.clients ?? {})) {
      const l = checkLimit(`${file}: clients.${name}`, c.rateLimit)
      if (l !== undefined) this.#clientLimits.set(name, l)
    }
  }

  #bucket (id: string, limit: RateLimit): TokenBucket {
    let b = this.#buckets.get(id)
    if (b === undefined) { b = new TokenBucket(limit); this.#buckets.set(id, b) }
    return b
  }

  /** The rule that applies to `key` (its own or the `*` rule), for attestation statements. */
  rule (key: string): KeyRule | undefined {
    return this.#keys.get(key) ?? this.#keys.get('*')
  }

  /** The client's own rate limit, if policy.json sets one (keyd's native SIGN path leaves such clients to JavaScript). */
  clientRateLimit (client: string): RateLimit | undefined {
    return this.#clientLimits.get(client)
  }

  /** Whether `client` may sign with `key` using `algorithm` now (takes a token from each bucket it passes). */
  check (client: string, key: string, algorithm: string): PolicyVerdict {
    const rule = this.#keys.get(key) ?? this.#keys.get('*')
    if (rule?.clients !== undefined && !rule.clients.includes(client)) return { ok: false, reason: 'client', message: `key ${key} does not allow client ${client}` }
    if (rule?.algorithms !== undefined && !rule.algorithms.includes(algorithm)) return { ok: false, reason: 'algorithm', message: `key ${key} does not allow ${algorithm}` }
    const clientLimit = this.#clientLimits.get(client)
    if (clientLimit !== undefined && !this.#bucket(`c:${client}`, clientLimit).take()) return { ok: false, reason: 'client-rate', message: `client ${client} is over its rate limit (${clientLimit.perSecond}/s, burst ${clientLimit.burst})` }
    if (rule?.rateLimit !== undefined && !this.#bucket(`k:${key}`, rule.rateLimit).take()) return { ok: false, reason: 'key-rate', message: `key ${key} is over its rate limit (${rule.rateLimit.perSecond}/s, burst ${rule.rateLimit.burst})` }
    return { ok: true }
  }
}
