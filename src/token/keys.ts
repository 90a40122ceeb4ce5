// The token keys: public keys fetched from keyd, their JWKs and kids, which key signs, and which keys
// the JWKS publishes (next before it signs, retired until every token it signed has expired).
import type { Logger } from 'pino'
import type { KeydClient } from '../../keyd/client/client.js'
import { KeydRemoteError } from '../../keyd/errors.js'
import type { TokenConfig, TokenKeyConfig } from '../config/token.js'
import { TokenKeyError } from '../errors.js'
import { JWS_TO_KEYD, jwkThumbprint, publicJwk, type PublicJwk } from './jws.js'

export interface TokenKey {
  config: TokenKeyConfig
  kid: string
  jwk: PublicJwk
  keyType: string
  /** The key version keyd reported (tokens are signed by the current version). */
  version: number
}

/** What a verifier must keep: tokens live up to maxLifetime; a retired key outlives its last token by that. */
export function retiredKeyExpiresAtMs (key: TokenKeyConfig, maxLifetimeSeconds: number): number {
  return (key.retiredAtMs ?? 0) + maxLifetimeSeconds * 1000
}

/**
 * Fetches every configured key's public key from keyd and checks that keyd signs with the active and
 * next keys (a `tls-server` key is refused by keyd with POLICY_DENIED_MESSAGE).
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
    if (k.role !== 'retired') {
      try {
        await keyd.sign(k.name, spec.keyd, Buffer.from('keyedge token key check'), { ieeeP1363: spec.ieeeP1363 })
      } catch (err) {
        if (err instanceof KeydRemoteError) throw new TokenKeyError(k.name, `keyd refuses to sign tokens with it (${err.code}); a token key needs the usage token-sign`, { cause: err })
        throw err
      }
    }
  }
  log.info({ keys: keys.map(k => ({ name: k.config.name, role: k.config.role, alg: k.config.algorithm, kid: k.kid })) }, 'token keys loaded')
  return new TokenKeySet(keys, config.maxLifetimeSeconds)
}

export class TokenKeySet {
  readonly #keys: TokenKey[]
  readonly #maxLifetimeSeconds: number
  readonly active: TokenKey

  constructor (keys: TokenKey[], maxLifetimeSeconds: number) {
    this.#keys = keys
    this.#maxLifetimeSeconds = maxLifetimeSeconds
    const active = keys.find(k => k.config.role === 'active')
    if (active === undefined) throw new TokenKeyError('(none)', 'no key has the role "active"')
    this.active = active
  }

  /** The keys a verifier needs now: next, active, and retired keys some unexpired token may carry. */
  published (nowMs = Date.now()): TokenKey[] {
    return this.#keys.filter(k => k.config.role !== 'retired' || retiredKeyExpiresAtMs(k.config, this.#maxLifetimeSeconds) > nowMs)
  }

  /** RFC 7517 JWK Set of the published keys. */
  jwks (nowMs = Date.now()): { keys: Array<PublicJwk & { kid: string, use: string, alg: string }> } {
    return { keys: this.published(nowMs).map(k => ({ ...k.jwk, kid: k.kid, use: 'sig', alg: k.config.algorithm })) }
  }
}
