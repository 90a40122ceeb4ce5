// The token keys (config roles, or one keyd key's versions): JWKs and kids, which key signs, and which
// the JWKS publishes (next before it signs, retired until every token it signed has expired).
import type { Logger } from 'pino'
import type { KeydClient } from '../../keyd/client/client.js'
import { KeydRemoteError } from '../../keyd/errors.js'
import type { TokenConfig, TokenKeyConfig } from '../config/token.js'
import { TokenKeyError } from '../errors.js'
import { JWS_TO_KEYD, jwkThumbprint, publicJwk, type PublicJwk } from './jws.js'
import { KeydKeySource } from './keyd-key-source.js'

export interface TokenKey {
  config: TokenKeyConfig
  kid: string
  jwk: PublicJwk
  keyType: string
  /** The key version the kid belongs to: tokens are signed with exactly this version. */
  version: number
}

/** What a verifier must keep: tokens live up to maxLifetime; a retired key outlives its last token by that. */
export function retiredKeyExpiresAtMs (key: TokenKeyConfig, maxLifetimeSeconds: number): number {
  return (key.retiredAtMs ?? 0) + maxLifetimeSeconds * 1000
}

async function checkSigns (keyd: KeydClient, name: string, algorithm: TokenKeyConfig['algorithm'], version = 0): Promise<void> {
  const spec = JWS_TO_KEYD[algorithm]
  try {
    await keyd.sign(name, spec.keyd, Buffer.from('keyedge token key check'), { version, ieeeP1363: spec.ieeeP1363 })
  } catch (err) {
    if (err instanceof KeydRemoteError) throw new TokenKeyError(name, `keyd refuses to sign tokens with it (${err.code}); a token key needs the usage token-sign`, { cause: err })
    throw err
  }
}

/**
 * Fetches every configured key's public key from keyd and checks that keyd signs with the active and
 * next keys (a `tls-server` key is refused by keyd with POLICY_DENIED_MESSAGE). With `token.key`, also
 * loads that key's versions and starts polling keyd for new ones.
 * @throws TokenKeyError (EDGE_ERR_TOKEN_KEY) when keyd refuses a key; KeydUnavailableError/KeydTimeoutError when keyd is down.
 */
export async function loadTokenKeys (keyd: KeydClient, config: TokenConfig, log: Logger): Promise<TokenKeySet> {
  const keys: TokenKey[] = []
  for (const k of config.keys) {
    const spec = JWS_TO_KEYD[k.algorithm]
    let info
    try {
      info = await keyd.getPublicKey(k.name)
    } catch (err) {
      if (err instanceof KeydRemoteError) throw new TokenKeyError(k.name, `keyd refused it (${err.code})`, { cause: err })
      throw err
    }
    if (!spec.keyTypes.includes(info.type)) throw new TokenKeyError(k.name, `${k.algorithm} needs a ${spec.keyTypes.join(' or ')} key, keyd holds a ${info.type} key`)
    const jwk = publicJwk(info.publicKey)
    keys.push({ config: k, kid: jwkThumbprint(jwk), jwk, keyType: info.type, version: info.version })
    if (k.role !== 'retired') await checkSigns(keyd, k.name, k.algorithm, info.version)
  }
  let source: KeydKeySource | undefined
  if (config.key !== undefined) {
    source = new KeydKeySource({ keyd, key: config.key, verifierCacheSeconds: config.verifierCacheSeconds, maxLifetimeSeconds: config.maxLifetimeSeconds, log })
    await source.refresh()
    // Usage is per key, not per version: one signature shows keyd lets this client sign tokens with it.
    await checkSigns(keyd, config.key.name, config.key.algorithm)
    source.start()
  }
  log.info({ keys: keys.map(k => ({ name: k.config.name, role: k.config.role, alg: k.config.algorithm, kid: k.kid })), keydKey: config.key?.name }, 'token keys loaded')
  return new TokenKeySet(keys, config.maxLifetimeSeconds, source)
}

export class TokenKeySet {
  readonly #keys: TokenKey[]
  readonly #maxLifetimeSeconds: number
  readonly #source: KeydKeySource | undefined
  readonly #static: TokenKey | undefined

  /** @throws TokenKeyError when neither a static key nor `source` can sign. */
  constructor (keys: TokenKey[], maxLifetimeSeconds: number, source?: KeydKeySource) {
    this.#keys = keys
    this.#maxLifetimeSeconds = maxLifetimeSeconds
    this.#source = source
    this.#static = keys.find(k => k.config.role === 'active')
    if (this.#static === undefined && source === undefined) throw new TokenKeyError('(none)', 'no key has the role "active"')
  }

  /** The key that signs now: with `token.key`, its active version (roles move with time and polls). */
  get active (): TokenKey {
    const active = this.#source?.keys().find(k => k.config.role === 'active') ?? this.#static
    if (active === undefined) throw new TokenKeyError('(none)', 'no key version is active')
    return active
  }

  /** The keys a verifier needs now: next, active, and retired keys some unexpired token may carry. */
  published (nowMs = Date.now()): TokenKey[] {
    const fixed = this.#keys.filter(k => k.config.role !== 'retired' || retiredKeyExpiresAtMs(k.config, this.#maxLifetimeSeconds) > nowMs)
    return [...fixed, ...(this.#source?.keys(nowMs) ?? [])]
  }

  /** RFC 7517 JWK Set of the published keys. */
  jwks (nowMs = Date.now()): { keys: Array<PublicJwk & { kid: string, use: string, alg: string }> } {
    return { keys: this.published(nowMs).map(k => ({ ...k.jwk, kid: k.kid, use: 'sig', alg: k.config.algorithm })) }
  }

  /** Stops polling keyd. */
  close (): void {
    this.#source?.stop()
  }
}
