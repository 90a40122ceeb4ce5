// Issues tokens and absorbs spikes: identical requests within the cache window share one token,
// concurrent identical requests share one signature, and only the rest pass admission control and
// queue for keyd. Which path served a token is returned, so it can be counted.
import { randomBytes } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import type { TokenCallerConfig, TokenConfig } from '../config/token.js'
import { TokenRequestError } from '../errors.js'
import { Admission, retryAfterSeconds } from './admission.js'
import { b64url, canonicalJson, signingInput } from './jws.js'
import type { TokenKeySet } from './keys.js'
import type { TokenMetrics } from './metrics.js'
import type { SignQueue } from './sign-queue.js'
import type { TokenRequest } from './request.js'

export type TokenSource = 'signed' | 'cache' | 'coalesced'

export interface IssuedToken { token: string, expiresAtSeconds: number }

export class TokenIssuer {
  readonly #config: TokenConfig
  readonly #keys: TokenKeySet
  readonly #queue: SignQueue
  readonly #metrics: TokenMetrics
  readonly #admission: Admission
  readonly #cache: LRUCache<string, IssuedToken> | undefined
  readonly #inflight = new Map<string, Promise<IssuedToken>>()

  constructor (opts: { config: TokenConfig, keys: TokenKeySet, queue: SignQueue, metrics: TokenMetrics }) {
    this.#config = opts.config
    this.#keys = opts.keys
    this.#queue = opts.queue
    this.#metrics = opts.metrics
    this.#admission = new Admission(opts.config.limits, opts.config.callers)
    const { cacheWindowMs, cacheEntries } = opts.config.spike
    this.#cache = cacheWindowMs > 0 ? new LRUCache({ max: cacheEntries, ttl: cacheWindowMs, ttlAutopurge: false }) : undefined
  }

  /**
   * A token for `caller` asking `req`.
   * @throws TokenRequestError 429 EDGE_ERR_TOKEN_RATE_LIMITED (with Retry-After), 503 EDGE_ERR_TOKEN_SIGNER_UNAVAILABLE
   */
  async issue (caller: TokenCallerConfig, req: TokenRequest): Promise<{ issued: IssuedToken, source: TokenSource }> {
    const key = canonicalJson({ c: caller.name, k: this.#keys.active.kid, a: req.aud, l: req.lifetimeSeconds, x: req.claims })
    const cached = this.#cache?.get(key)
    if (cached !== undefined) {
      this.#metrics.cacheHits.inc()
      return { issued: cached, source: 'cache' }
    }
    if (this.#config.spike.coalesce) {
      const pending = this.#inflight.get(key)
      if (pending !== undefined) {
        this.#metrics.coalesced.inc()
        return { issued: await pending, source: 'coalesced' }
      }
    }
    const admitted = this.#admission.admit(caller.name)
    if (!admitted.ok) {
      throw new TokenRequestError('EDGE_ERR_TOKEN_RATE_LIMITED', 429, admitted.reason === 'caller_rate'
        ? 'this caller is over its token rate; retry later'
        : 'the endpoint is over its token rate; retry later', { 'retry-after': String(retryAfterSeconds(admitted.retryAfterMs)), 'x-keyedge-reject-reason': admitted.reason })
    }
    const p = this.#sign(caller, req)
    if (this.#config.spike.coalesce) {
      this.#inflight.set(key, p)
      p.then(() => this.#inflight.delete(key), () => this.#inflight.delete(key))
    }
    const issued = await p
    this.#cache?.set(key, issued)
    return { issued, source: 'signed' }
  }

  async #sign (caller: TokenCallerConfig, req: TokenRequest): Promise<IssuedToken> {
    const active = this.#keys.active
    const iat = Math.floor(Date.now() / 1000)
    const payload = {
      iss: this.#config.issuer,
      aud: req.aud,
      iat,
      nbf: iat,
      exp: iat + req.lifetimeSeconds,
      jti: randomBytes(16).toString('base64url'),
      client_id: caller.name,
      ...req.claims
    }
    const input = signingInput({ alg: active.config.algorithm, typ: 'JWT', kid: active.kid }, payload)
    // Signed with the version the kid names: a rotation in keyd never gives a token a kid that does not verify it.
    const signature = await this.#queue.sign(Buffer.from(input), this.#config.limits.queueDeadlineMs, active.version)
    return { token: `${input}.${b64url(signature)}`, expiresAtSeconds: payload.exp }
  }
}
