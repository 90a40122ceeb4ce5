// The `token` section of the proxy config: the JWT endpoint's listener, keys, callers and spike
// absorption. Validated here with the shared checker; its defaults live in defaults.ts (`token`).
import { isIP } from 'node:net'
import { resolve } from 'node:path'
import { Checker, type Obj } from './checks.js'
import { configDefaults as D } from './defaults.js'

export type JwsAlgorithm = 'ES256' | 'RS256' | 'PS256' | 'EdDSA'
export const JWS_ALGORITHMS: readonly JwsAlgorithm[] = ['ES256', 'RS256', 'PS256', 'EdDSA']
export type TokenKeyRole = 'next' | 'active' | 'retired'

export interface TokenKeyConfig {
  /** keyd key name; its usage must be `token-sign`. */
  name: string
  role: TokenKeyRole
  algorithm: JwsAlgorithm
  /** When a retired key stopped signing (epoch ms); it stays in the JWKS until every token it signed expired. */
  retiredAtMs?: number
}

/** `token.key`: one keyd key whose versions give the roles (next → active → retired) by themselves. */
export interface TokenKeydKeyConfig {
  name: string
  algorithm: JwsAlgorithm
  /** How often each worker asks keyd for the key's versions; also the bound on how late a worker sees one. */
  pollIntervalSeconds: number
}

export interface TokenCallerConfig {
  name: string
  /** SHA-256 (hex) of the caller's bearer secret. */
  secretSha256?: string
  /** Absolute path of a file holding the bearer secret; only its hash is kept in memory. */
  secretFile?: string
  /** SHA-256 fingerprint (hex, no colons, lower-case) of the caller's client certificate. */
  clientCertSha256?: string
  audiences: string[]
  /** Custom claims the caller may ask for (never iss, aud, iat, nbf, exp, jti, client_id: the endpoint sets those). */
  claims: string[]
  maxLifetimeSeconds: number
  ratePerSecond: number
  burst: number
}

export interface TokenConfig {
  listen: { host: string, port: number }
  issuer: string
  /** HTTPS on the token listener (key reference or PEM); with `clientCa`, callers may use mutual TLS. */
  tls?: { cert: string, key: string, clientCa?: string }
  defaultLifetimeSeconds: number
  maxLifetimeSeconds: number
  verifierCacheSeconds: number
  maxBodyBytes: number
  /** Keys with configured roles; with `key`, only `retired` ones (a migration from the static form). */
  keys: TokenKeyConfig[]
  /** A keyd key whose versions are the token keys, roles derived from their creation times. */
  key?: TokenKeydKeyConfig
  callers: TokenCallerConfig[]
  limits: { ratePerSecond: number, burst: number, maxQueue: number, queueDeadlineMs: number }
  spike: {
    cacheWindowMs: number
    cacheEntries: number
    coalesce: boolean
    batch: boolean
    batchMaxSize: number
    batchWindowMs: number
    maxInFlight: number
  }
}

const T = D.token
const RESERVED_CLAIMS = ['iss', 'iat', 'nbf', 'exp', 'jti', 'aud', 'client_id']
const CLAIM_NAME = /^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$/

function value (obj: Obj | undefined, key: string, fallback: unknown): unknown {
  return obj !== undefined && key in obj ? obj[key] : fallback
}

function section (c: Checker, raw: unknown, path: string, known: readonly string[]): Obj | undefined {
  const o = raw === undefined ? {} : c.object(raw, path)
  if (o !== undefined) c.keys(o, path, known)
  return o
}

function validateKeydKey (c: Checker, raw: unknown): TokenKeydKeyConfig | undefined {
  if (raw === undefined) return undefined
  const o = c.object(raw, 'token.key')
  if (o === undefined) return undefined
  c.keys(o, 'token.key', ['name', 'algorithm', 'pollIntervalSeconds'], { alg: 'use "algorithm"', role: 'roles follow from the keyd key versions: rotate with "keyedge keyd key rotate"', poll: 'use "pollIntervalSeconds"' })
  const name = c.string(o.name, 'token.key.name')
  const algorithm = c.string(value(o, 'algorithm', T.algorithm), 'token.key.algorithm', { oneOf: JWS_ALGORITHMS }) as JwsAlgorithm | undefined
  const pollIntervalSeconds = c.integer(value(o, 'pollIntervalSeconds', T.keyPollIntervalSeconds), 'token.key.pollIntervalSeconds', 1, 3600)
  if (name === undefined || algorithm === undefined || pollIntervalSeconds === undefined) return undefined
  return { name, algorithm, pollIntervalSeconds }
}

function validateKeys (c: Checker, raw: unknown, hasKeydKey: boolean): TokenKeyConfig[] {
  if (raw === undefined && hasKeydKey) return []
  const list = c.array(raw, 'token.keys', { nonEmpty: !hasKeydKey }) ?? []
  const out: TokenKeyConfig[] = []
  list.forEach((item, i) => {
    const at = `token.keys[${i}]`
    const o = c.object(item, at)
    if (o === undefined) return
    c.keys(o, at, ['name', 'role', 'algorithm', 'retiredAt'], { alg: 'use "algorithm"', status: 'use "role"', key: 'use "name"' })
    const name = c.string(o.name, `${at}.name`)
    const role = c.string(value(o, 'role', 'active'), `${at}.role`, { oneOf: ['next', 'active', 'retired'] }) as TokenKeyRole | undefined
    const algorithm = c.string(value(o, 'algorithm', T.algorithm), `${at}.algorithm`, { oneOf: JWS_ALGORITHMS }) as JwsAlgorithm | undefined
    let retiredAtMs: number | undefined
    if (role === 'retired') {
      const s = c.string(o.retiredAt, `${at}.retiredAt`)
      retiredAtMs = s === undefined ? undefined : Date.parse(s)
      if (s !== undefined && Number.isNaN(retiredAtMs)) c.add(`${at}.retiredAt`, 'must be an ISO 8601 date, e.g. "2026-11-30T12:00:00Z"')
    } else if (o.retiredAt !== undefined) {
      c.add(`${at}.retiredAt`, 'only a key whose role is "retired" has a retiredAt')
    }
    if (out.some(k => k.name === name)) c.add(`${at}.name`, `"${name ?? ''}" is listed twice`)
    if (name !== undefined && role !== undefined && algorithm !== undefined) {
      out.push({ name, role, algorithm, ...(retiredAtMs !== undefined && !Number.isNaN(retiredAtMs) ? { retiredAtMs } : {}) })
    }
  })
  const active = out.filter(k => k.role === 'active').length
  if (hasKeydKey) {
    out.forEach((k, i) => { if (k.role !== 'retired') c.add(`token.keys[${i}].role`, 'with "token.key" the keyd key signs: other keys may only be "retired"') })
  } else if (list.length > 0 && active !== 1) c.add('token.keys', `exactly one key must have the role "active", found ${active}`)
  return out
}

function validateCallers (c: Checker, raw: unknown, baseDir: string, maxLifetime: number): TokenCallerConfig[] {
  const list = c.array(raw, 'token.callers', { nonEmpty: true }) ?? []
  const out: TokenCallerConfig[] = []
  list.forEach((item, i) => {
    const at = `token.callers[${i}]`
    const o = c.object(item, at)
    if (o === undefined) return
    c.keys(o, at, ['name', 'secretSha256', 'secretFile', 'clientCertSha256', 'audiences', 'claims', 'maxLifetimeSeconds', 'ratePerSecond', 'burst'], {
      secret: 'never put a secret in the config: use "secretSha256" (its SHA-256, hex) or "secretFile" (a path)',
      token: 'use "secretSha256" or "secretFile"',
      audience: 'use "audiences" (a list)',
      allowedClaims: 'use "claims"'
    })
    const name = c.string(o.name, `${at}.name`)
    if (name !== undefined && out.some(k => k.name === name)) c.add(`${at}.name`, `"${name}" is listed twice`)
    const hex = (v: unknown, p: string): string | undefined => {
      if (v === undefined) return undefined
      const s = c.string(v, p)
      if (s === undefined) return undefined
      const norm = s.replace(/:/g, '').toLowerCase()
      if (!/^[0-9a-f]{64}$/.test(norm)) { c.add(p, 'must be 64 hex characters (a SHA-256)'); return undefined }
      return norm
    }
    const secretSha256 = hex(o.secretSha256, `${at}.secretSha256`)
    const clientCertSha256 = hex(o.clientCertSha256, `${at}.clientCertSha256`)
    const secretFile = o.secretFile === undefined ? undefined : c.string(o.secretFile, `${at}.secretFile`)
    if (o.secretSha256 === undefined && o.secretFile === undefined && o.clientCertSha256 === undefined) {
      c.add(at, 'needs a credential: "secretSha256", "secretFile" or "clientCertSha256"')
    }
    const audiences = (c.array(o.audiences, `${at}.audiences`, { nonEmpty: true }) ?? [])
      .map((a, j) => c.string(a, `${at}.audiences[${j}]`)).filter((a): a is string => a !== undefined)
    const claims = (c.array(value(o, 'claims', []), `${at}.claims`) ?? []).map((a, j) => {
      const s = c.string(a, `${at}.claims[${j}]`)
      if (s === undefined) return undefined
      if (RESERVED_CLAIMS.includes(s)) { c.add(`${at}.claims[${j}]`, `"${s}" is set by the endpoint, never by a caller`); return undefined }
      if (!CLAIM_NAME.test(s)) { c.add(`${at}.claims[${j}]`, `"${s}" is not a claim name`); return undefined }
      return s
    }).filter((a): a is string => a !== undefined)
    const maxLifetimeSeconds = c.integer(value(o, 'maxLifetimeSeconds', maxLifetime), `${at}.maxLifetimeSeconds`, 1, maxLifetime)
    const ratePerSecond = c.integer(value(o, 'ratePerSecond', T.caller.ratePerSecond), `${at}.ratePerSecond`, 1, 1_000_000)
    const burst = c.integer(value(o, 'burst', T.caller.burst), `${at}.burst`, 1, 1_000_000)
    if (name === undefined || maxLifetimeSeconds === undefined || ratePerSecond === undefined || burst === undefined) return
    out.push({
      name,
      ...(secretSha256 !== undefined ? { secretSha256 } : {}),
      ...(secretFile !== undefined ? { secretFile: resolve(baseDir, secretFile) } : {}),
      ...(clientCertSha256 !== undefined ? { clientCertSha256 } : {}),
      audiences,
      claims,
      maxLifetimeSeconds,
      ratePerSecond,
      burst
    })
  })
  return out
}

/** Validates the `token` section (undefined when absent); records every problem in `c`. */
export function validateToken (c: Checker, raw: unknown, baseDir: string, hasKeyd: boolean): TokenConfig | undefined {
  if (raw === undefined) return undefined
  const o = c.object(raw, 'token')
  if (o === undefined) return undefined
  c.keys(o, 'token', ['listen', 'issuer', 'tls', 'defaultLifetimeSeconds', 'maxLifetimeSeconds', 'verifierCacheSeconds', 'maxBodyBytes', 'keys', 'key', 'callers', 'limits', 'spike'], {
    port: 'moved to "token.listen.port"', host: 'moved to "token.listen.host"', iss: 'use "issuer"', clients: 'use "callers"'
  })
  if (!hasKeyd) c.add('token', 'needs a "keyd" section: tokens are signed by keyd')
  const listen = section(c, o.listen, 'token.listen', ['host', 'port'])
  const host = c.string(value(listen, 'host', T.listen.host), 'token.listen.host')
  if (host !== undefined && isIP(host) === 0 && host !== 'localhost') c.add('token.listen.host', `"${host}" must be an IP address or "localhost"`)
  const port = c.integer(value(listen, 'port', T.listen.port), 'token.listen.port', 0, 65_535)
  const issuer = c.string(o.issuer, 'token.issuer')
  if (issuer !== undefined && !/^https:\/\/[^\s?#]+$/.test(issuer) && !/^http:\/\/(localhost|127\.0\.0\.1)(:\d+)?(\/[^\s?#]*)?$/.test(issuer)) {
    c.add('token.issuer', 'must be an https:// URL without query or fragment (http:// only for localhost)')
  }
  let tls: TokenConfig['tls']
  if (o.tls !== undefined) {
    const t = c.object(o.tls, 'token.tls')
    if (t !== undefined) {
      c.keys(t, 'token.tls', ['cert', 'key', 'clientCa'])
      const cert = c.string(t.cert, 'token.tls.cert')
      const key = c.string(t.key, 'token.tls.key')
      const clientCa = t.clientCa === undefined ? undefined : c.string(t.clientCa, 'token.tls.clientCa')
      if (cert !== undefined && key !== undefined) tls = { cert: resolve(baseDir, cert), key: resolve(baseDir, key), ...(clientCa !== undefined ? { clientCa: resolve(baseDir, clientCa) } : {}) }
    }
  }
  const maxLifetimeSeconds = c.integer(value(o, 'maxLifetimeSeconds', T.maxLifetimeSeconds), 'token.maxLifetimeSeconds', 1, 86_400) ?? T.maxLifetimeSeconds
  const defaultLifetimeSeconds = c.integer(value(o, 'defaultLifetimeSeconds', T.defaultLifetimeSeconds), 'token.defaultLifetimeSeconds', 1, 86_400)
  const verifierCacheSeconds = c.integer(value(o, 'verifierCacheSeconds', T.verifierCacheSeconds), 'token.verifierCacheSeconds', 0, 86_400)
  const maxBodyBytes = c.integer(value(o, 'maxBodyBytes', T.maxBodyBytes), 'token.maxBodyBytes', 64, 1_048_576)
  if (o.key === undefined && o.keys === undefined) c.add('token', 'needs "key" (a keyd key whose versions rotate) or "keys" (keys with configured roles)')
  const key = validateKeydKey(c, o.key)
  const keys = o.key === undefined && o.keys === undefined ? [] : validateKeys(c, o.keys, o.key !== undefined)
  if (key !== undefined && keys.some(k => k.name === key.name)) c.add('token.keys', `"${key.name}" is already "token.key"`)
  const callers = validateCallers(c, o.callers, baseDir, maxLifetimeSeconds)
  if (tls?.clientCa === undefined) {
    callers.forEach((k, i) => { if (k.clientCertSha256 !== undefined) c.add(`token.callers[${i}].clientCertSha256`, 'needs "token.tls.clientCa" (mutual TLS)') })
  }
  const L = section(c, o.limits, 'token.limits', Object.keys(T.limits))
  const limits = {
    ratePerSecond: c.integer(value(L, 'ratePerSecond', T.limits.ratePerSecond), 'token.limits.ratePerSecond', 1, 1_000_000),
    burst: c.integer(value(L, 'burst', T.limits.burst), 'token.limits.burst', 1, 1_000_000),
    maxQueue: c.integer(value(L, 'maxQueue', T.limits.maxQueue), 'token.limits.maxQueue', 0, 100_000),
    queueDeadlineMs: c.integer(value(L, 'queueDeadlineMs', T.limits.queueDeadlineMs), 'token.limits.queueDeadlineMs', 1, 60_000)
  }
  const S = section(c, o.spike, 'token.spike', Object.keys(T.spike))
  const spike = {
    cacheWindowMs: c.integer(value(S, 'cacheWindowMs', T.spike.cacheWindowMs), 'token.spike.cacheWindowMs', 0, 60_000),
    cacheEntries: c.integer(value(S, 'cacheEntries', T.spike.cacheEntries), 'token.spike.cacheEntries', 1, 10_000_000),
    coalesce: c.boolean(value(S, 'coalesce', T.spike.coalesce), 'token.spike.coalesce'),
    batch: c.boolean(value(S, 'batch', T.spike.batch), 'token.spike.batch'),
    batchMaxSize: c.integer(value(S, 'batchMaxSize', T.spike.batchMaxSize), 'token.spike.batchMaxSize', 1, 64),
    batchWindowMs: c.integer(value(S, 'batchWindowMs', T.spike.batchWindowMs), 'token.spike.batchWindowMs', 0, 1000),
    maxInFlight: c.integer(value(S, 'maxInFlight', T.spike.maxInFlight), 'token.spike.maxInFlight', 1, 256)
  }
  if (issuer === undefined || defaultLifetimeSeconds === undefined || verifierCacheSeconds === undefined || maxBodyBytes === undefined) return undefined
  if (defaultLifetimeSeconds > maxLifetimeSeconds) c.add('token.defaultLifetimeSeconds', `must not exceed token.maxLifetimeSeconds (${maxLifetimeSeconds})`)
  if (Object.values(limits).some(v => v === undefined) || Object.values(spike).some(v => v === undefined)) return undefined
  return {
    listen: { host: host ?? T.listen.host, port: port ?? T.listen.port },
    issuer: issuer.replace(/\/+$/, ''),
    ...(tls !== undefined ? { tls } : {}),
    defaultLifetimeSeconds,
    maxLifetimeSeconds,
    verifierCacheSeconds,
    maxBodyBytes,
    keys,
    ...(key !== undefined ? { key } : {}),
    callers,
    limits: limits as TokenConfig['limits'],
    spike: spike as TokenConfig['spike']
  }
}
