// The token keys of `token.key`: one keyd key whose versions are polled (bounded, with backoff), their
// roles derived from creation times (key-roles.ts), so `keyedge keyd key rotate` alone rotates tokens.
import type { KeyObject } from 'node:crypto'
import type { Logger } from 'pino'
import type { KeydClient } from '../../keyd/client/client.js'
import { KeydError, KeydRemoteError } from '../../keyd/errors.js'
import type { TokenKeydKeyConfig } from '../config/token.js'
import { TokenKeyError } from '../errors.js'
import { JWS_TO_KEYD, jwkThumbprint, publicJwk, type PublicJwk } from './jws.js'
import { versionRoles, type RoleTiming, type VersionRole, type VersionTimes } from './key-roles.js'
import type { TokenKey } from './keys.js'

/** Backoff after failed polls: 1 s, 2 s, 4 s … at most this. */
const MAX_BACKOFF_MS = 30_000

interface PublicPart { kid: string, jwk: PublicJwk, keyType: string }

export class KeydKeySource {
  readonly #keyd: KeydClient
  readonly #key: TokenKeydKeyConfig
  readonly #timing: RoleTiming
  readonly #log: Logger
  #versions: VersionTimes[] = []
  #public = new Map<number, PublicPart>()
  #timer: NodeJS.Timeout | undefined
  #failures = 0
  #stopped = false
  #logged = ''

  constructor (opts: { keyd: KeydClient, key: TokenKeydKeyConfig, verifierCacheSeconds: number, maxLifetimeSeconds: number, log: Logger }) {
    this.#keyd = opts.keyd
    this.#key = opts.key
    this.#timing = { verifierCacheSeconds: opts.verifierCacheSeconds, maxLifetimeSeconds: opts.maxLifetimeSeconds, pollIntervalSeconds: opts.key.pollIntervalSeconds }
    this.#log = opts.log
  }

  /**
   * Asks keyd for the key's versions and the public keys of those now published; the new state is
   * taken only when all of it arrived, so a failure leaves the previous one serving.
   * @throws TokenKeyError (EDGE_ERR_TOKEN_KEY) when keyd refuses the key or its type does not fit the
   *   algorithm; KeydUnavailableError/KeydTimeoutError when keyd is down.
   */
  async refresh (): Promise<void> {
    const name = this.#key.name
    const spec = JWS_TO_KEYD[this.#key.algorithm]
    const initial = this.#versions.length === 0
    const current = await this.#get(0)
    if (!spec.keyTypes.includes(current.type)) throw new TokenKeyError(name, `${this.#key.algorithm} needs a ${spec.keyTypes.join(' or ')} key, keyd holds a ${current.type} key`)
    // A keyd without KEY_VERSIONS: only its current version is known, and it signs at once.
    const reported = current.versions.length > 0 ? current.versions : [{ version: current.version, createdAtMs: 0 }]
    const now = Date.now()
    const versions = reported.map(v => ({ version: v.version, createdAtMs: v.createdAtMs }))
    const known = new Set(this.#versions.map(v => v.version))
    for (const v of versions) {
      // Seen after it started signing: verifiers holding this worker's older JWKS may refuse its tokens for a while.
      if (!initial && !known.has(v.version) && versionRoles(versions, this.#timing, now).find(r => r.version === v.version)?.role === 'active') {
        this.#log.warn({ key: name, version: v.version }, 'token key version seen only after it became active (keyd was unreachable): it was not published beforehand')
      }
    }
    const pub = new Map<number, PublicPart>([[current.version, part(current.publicKey, current.type)]])
    // Every version published now needs its public key (kept from the last poll when known).
    for (const r of versionRoles(versions, this.#timing, now)) {
      const have = pub.get(r.version) ?? this.#public.get(r.version)
      if (have !== undefined) { pub.set(r.version, have); continue }
      const info = await this.#get(r.version)
      pub.set(r.version, part(info.publicKey, info.type))
    }
    this.#versions = versions
    this.#public = pub
    this.#logRoles(now)
  }

  async #get (version: number): Promise<{ version: number, type: string, publicKey: KeyObject, versions: VersionTimes[] }> {
    try {
      return await this.#keyd.getPublicKey(this.#key.name, version)
    } catch (err) {
      if (err instanceof KeydRemoteError) throw new TokenKeyError(this.#key.name, `keyd refused it (${err.code})`, { cause: err })
      throw err
    }
  }

  /** Polls every pollIntervalSeconds; after a failure sooner, then less and less often (1 s … 30 s). */
  start (): void {
    const schedule = (ms: number): void => {
      if (this.#stopped) return
      this.#timer = setTimeout(() => {
        this.refresh().then(() => {
          this.#failures = 0
          schedule(this.#timing.pollIntervalSeconds * 1000)
        }, (err: unknown) => {
          this.#failures++
          const code = err instanceof KeydError || err instanceof TokenKeyError ? err.code : 'unknown'
          const retryMs = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** (this.#failures - 1))
          this.#log.warn({ key: this.#key.name, code, retryMs }, 'token key versions not refreshed; serving with the versions known')
          schedule(retryMs)
        })
      }, ms)
      this.#timer.unref()
    }
    schedule(this.#timing.pollIntervalSeconds * 1000)
  }

  stop (): void {
    this.#stopped = true
    if (this.#timer !== undefined) clearTimeout(this.#timer)
  }

  /** The published versions at `nowMs` as token keys (a version whose public key is not held is left out). */
  keys (nowMs = Date.now()): TokenKey[] {
    return versionRoles(this.#versions, this.#timing, nowMs).flatMap(r => {
      const p = this.#public.get(r.version)
      if (p === undefined) return []
      return [{ ...p, version: r.version, config: { name: this.#key.name, role: r.role, algorithm: this.#key.algorithm, ...(r.retiredAtMs !== undefined ? { retiredAtMs: r.retiredAtMs } : {}) } }]
    })
  }

  /** The roles as computed now, for logs and tests. */
  roles (nowMs = Date.now()): VersionRole[] {
    return versionRoles(this.#versions, this.#timing, nowMs)
  }

  #logRoles (nowMs: number): void {
    const keys = this.keys(nowMs).map(k => ({ version: k.version, role: k.config.role, kid: k.kid }))
    const text = JSON.stringify(keys)
    if (text === this.#logged) return
    this.#logged = text
    this.#log.info({ key: this.#key.name, versions: keys }, 'token key versions')
  }
}

function part (key: KeyObject, keyType: string): PublicPart {
  const jwk = publicJwk(key)
  return { kid: jwkThumbprint(jwk), jwk, keyType }
}
