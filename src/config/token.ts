// The `token` section of the proxy config (the JWT endpoint: listener, keys, callers, spike
// absorption): its schema and the types of its validated form. Every limit is per worker.

import type { Static } from '@sinclair/typebox'
import { bool, int, list, oneOf, optional, path, section, text } from './schema-kit.js'

export const JWS_ALGORITHMS = ['ES256', 'RS256', 'PS256', 'EdDSA'] as const
export type JwsAlgorithm = typeof JWS_ALGORITHMS[number]
export const TOKEN_KEY_ROLES = ['next', 'active', 'retired'] as const
export type TokenKeyRole = typeof TOKEN_KEY_ROLES[number]

const algorithm = oneOf(JWS_ALGORITHMS, { default: 'ES256', description: 'JWS algorithm of the key' })

export const TokenKeySchema = section({
  name: text({ description: 'keyd key name (usage `token-sign`)' }),
  role: oneOf(TOKEN_KEY_ROLES, { default: 'active', description: 'exactly one key is `active` (unless `token.key` is set: then all are `retired`); a `next` key is published before it signs' }),
  algorithm,
  retiredAt: optional(text({ check: 'iso-date', description: 'retired keys only (and required for them): when the key stopped signing (ISO 8601); it stays in the JWKS until every token it signed expired' }))
}, { renamed: { alg: 'use "algorithm"', status: 'use "role"', key: 'use "name"' } })

export const TokenKeydKeySchema = section({
  name: text({ description: 'keyd key name (usage `token-sign`)' }),
  algorithm,
  pollIntervalSeconds: int(1, 3600, { default: 10, description: 'how often each worker asks keyd for the key\'s versions; also the bound on how late a worker sees a new one' })
}, {
  description: '**one keyd key whose versions are the token keys**: roles follow from the versions\' creation times and `keyedge keyd key rotate` rotates (token.md#key-rotation-next--active--retired). `token.key` or `token.keys` is required',
  renamed: { alg: 'use "algorithm"', role: 'roles follow from the keyd key versions: rotate with "keyedge keyd key rotate"', poll: 'use "pollIntervalSeconds"' } })

export const TokenCallerSchema = section({
  name: text({ description: 'the caller\'s name, also the `client_id` claim of its tokens' }),
  secretSha256: optional(text({ check: 'sha256-hex', transform: 'hex', description: 'SHA-256 (hex) of its bearer secret (`Authorization: Bearer <secret>`); never the secret itself (`secret` is rejected)' })),
  secretFile: optional(path({ description: 'or a file holding the secret (trailing whitespace trimmed); only its hash is kept in memory' })),
  clientCertSha256: optional(text({ check: 'sha256-hex', transform: 'hex', description: 'or the SHA-256 fingerprint of its client certificate (needs `token.tls.clientCa`)' })),
  audiences: list(text(), { minItems: 1, description: 'the `aud` values it may ask for; with one, it is the default' }),
  claims: list(text({ check: 'claim-name' }), { default: [], description: 'custom claims it may set (never `iss`, `aud`, `iat`, `nbf`, `exp`, `jti`, `client_id`: the endpoint sets those)' }),
  maxLifetimeSeconds: optional(int(1, 86_400, { docDefault: '`token.maxLifetimeSeconds`', description: 'its longest token lifetime (at most `token.maxLifetimeSeconds`)' })),
  ratePerSecond: int(1, 1_000_000, { default: 100, description: 'its own token bucket, counting keyd signatures: refill rate' }),
  burst: int(1, 1_000_000, { default: 200, description: 'its own token bucket: size' })
}, {
  renamed: {
    secret: 'never put a secret in the config: use "secretSha256" (its SHA-256, hex) or "secretFile" (a path)',
    token: 'use "secretSha256" or "secretFile"',
    audience: 'use "audiences" (a list)',
    allowedClaims: 'use "claims"'
  }
})

export const TokenSchema = section({
  listen: section({
    host: text({ default: '127.0.0.1', check: 'ip-or-localhost', description: 'address of the token listener (an IP or `localhost`)' }),
    port: int(0, 65_535, { default: 8444, description: 'its port (0 = any free port, shared by all workers)' })
  }, { default: {} }),
  issuer: text({ check: 'issuer', transform: 'trim-slash', description: '`iss` of every token, an `https://` URL (`http://` only for localhost); discovery and JWKS URLs derive from it. With `listen.port` `0`, an issuer naming a loopback host without a port (`http://localhost`) gets the port the endpoint was given' }),
  tls: optional(section({
    cert: path({ description: 'serve the endpoint over HTTPS with this certificate (PEM)' }),
    key: path({ description: 'and this key: a key reference (signed by keyd) or a private key PEM' }),
    clientCa: optional(path({ description: 'CA file that verifies client certificates: enables mutual TLS callers (`clientCertSha256`)' }))
  }, { description: 'HTTPS on the token listener; absent: plain HTTP' })),
  defaultLifetimeSeconds: int(1, 86_400, { default: 300, description: 'token lifetime when the request names none (capped by the caller\'s maximum; at most `maxLifetimeSeconds`)' }),
  maxLifetimeSeconds: int(1, 86_400, { default: 3600, description: 'the longest lifetime any caller may get; also how long a retired key stays in the JWKS' }),
  verifierCacheSeconds: int(0, 86_400, { default: 300, description: '`max-age` of the JWKS and discovery documents; how long a `next` key must be published before it becomes `active` (with `token.key`: waited for automatically)' }),
  maxBodyBytes: int(64, 1_048_576, { default: 8192, description: 'larger request bodies: 413 `EDGE_ERR_TOKEN_BODY_TOO_LARGE`' }),
  keys: optional(list(TokenKeySchema, { description: 'keys with configured roles; required without `token.key`, with it only `retired` keys (kept published while moving from this form)' })),
  key: optional(TokenKeydKeySchema),
  callers: list(TokenCallerSchema, { minItems: 1, description: 'one entry per caller' }),
  limits: section({
    ratePerSecond: int(1, 1_000_000, { default: 1000, description: 'token bucket over all callers, counting keyd signatures (cache hits and coalesced requests are free): refill rate' }),
    burst: int(1, 1_000_000, { default: 2000, description: 'that bucket\'s size' }),
    maxQueue: int(0, 100_000, { default: 256, description: 'signatures waiting for keyd; more: 429 `queue_full`' }),
    queueDeadlineMs: int(1, 60_000, { default: 250, description: 'a signature that cannot start within this is refused with 429 `queue_deadline` (at once if the estimate exceeds it)' })
  }, { default: {} }),
  spike: section({
    cacheWindowMs: int(0, 60_000, { default: 1000, description: 'identical requests within this window get the same token (0 = no cache)' }),
    cacheEntries: int(1, 10_000_000, { default: 10_000, description: 'most tokens the cache holds (LRU)' }),
    coalesce: bool({ default: true, description: 'concurrent identical requests share one keyd signature' }),
    batch: bool({ default: true, description: 'distinct signatures go to keyd together in SIGN_BATCH frames (false: one SIGN each)' }),
    batchMaxSize: int(1, 64, { default: 16, description: 'most signatures per SIGN_BATCH (keyd accepts up to 64)' }),
    batchWindowMs: int(0, 1000, { default: 2, description: 'how long the first signature of a batch waits for company' }),
    maxInFlight: int(1, 256, { default: 1, description: 'keyd calls for tokens in flight per worker: what keeps TLS handshakes ahead of a token burst in keyd' })
  }, { default: {} })
}, {
  description: 'the JWT endpoint (docs/token.md); needs the `keyd` section',
  renamed: { port: 'moved to "token.listen.port"', host: 'moved to "token.listen.host"', iss: 'use "issuer"', clients: 'use "callers"' }
})

/** `token.keys[]` validated: `retiredAt` became `retiredAtMs` (epoch ms, retired keys only). */
export type TokenKeyConfig = Omit<Static<typeof TokenKeySchema>, 'retiredAt'> & {
  /** When a retired key stopped signing (epoch ms); it stays in the JWKS until every token it signed expired. */
  retiredAtMs?: number
}

/** `token.key`: one keyd key whose versions give the roles (next → active → retired) by themselves. */
export type TokenKeydKeyConfig = Static<typeof TokenKeydKeySchema>

/** `token.callers[]` validated: hashes lower-case hex, `secretFile` absolute, `maxLifetimeSeconds` always set. */
export type TokenCallerConfig = Omit<Static<typeof TokenCallerSchema>, 'maxLifetimeSeconds'> & { maxLifetimeSeconds: number }

/** The validated `token` section: `keys` always present (empty with `token.key`), paths absolute, issuer without trailing slash. */
export type TokenConfig = Omit<Static<typeof TokenSchema>, 'keys' | 'callers'> & {
  keys: TokenKeyConfig[]
  callers: TokenCallerConfig[]
}
