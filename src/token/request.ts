// Parsing a POST /token body against the caller's policy: audiences, custom claims, lifetime.
// Every refusal is a TokenRequestError with a 4xx status; nothing here signs anything.
import type { TokenCallerConfig } from '../config/token.js'
import { TokenRequestError } from '../errors.js'

export interface TokenRequest {
  /** One audience (a string in the token) or several (an array), as asked. */
  aud: string | string[]
  lifetimeSeconds: number
  claims: Record<string, unknown>
}

const KNOWN_FIELDS = ['audience', 'lifetimeSeconds', 'claims']
const RESERVED = new Set(['iss', 'iat', 'nbf', 'exp', 'jti', 'aud', 'client_id'])

const bad = (code: string, message: string, status = 400): TokenRequestError => new TokenRequestError(code, status, message)
const shown = (s: string): string => JSON.stringify(s.slice(0, 64))

/**
 * Parses and checks `body` for `caller`.
 * @throws TokenRequestError: 400 EDGE_ERR_TOKEN_BAD_JSON, EDGE_ERR_TOKEN_BAD_REQUEST, EDGE_ERR_TOKEN_CLAIM_NOT_ALLOWED,
 *   EDGE_ERR_TOKEN_LIFETIME_TOO_LONG; 403 EDGE_ERR_TOKEN_AUDIENCE_NOT_ALLOWED.
 */
export function parseTokenRequest (body: Buffer, caller: TokenCallerConfig, defaultLifetimeSeconds: number): TokenRequest {
  let raw: unknown
  try {
    raw = JSON.parse(body.toString('utf8'))
  } catch {
    throw bad('EDGE_ERR_TOKEN_BAD_JSON', 'the body is not valid JSON')
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw bad('EDGE_ERR_TOKEN_BAD_REQUEST', 'the body must be a JSON object')
  const o = raw as Record<string, unknown>
  for (const k of Object.keys(o)) {
    if (!KNOWN_FIELDS.includes(k)) throw bad('EDGE_ERR_TOKEN_BAD_REQUEST', `unknown field ${shown(k)} (known: ${KNOWN_FIELDS.join(', ')})`)
  }

  let aud: string | string[]
  if (o.audience === undefined) {
    const [only] = caller.audiences
    if (caller.audiences.length !== 1 || only === undefined) throw bad('EDGE_ERR_TOKEN_BAD_REQUEST', '"audience" is required (this caller may ask for several)')
    aud = only
  } else if (typeof o.audience === 'string') {
    aud = o.audience
  } else if (Array.isArray(o.audience) && o.audience.length > 0 && o.audience.every(a => typeof a === 'string')) {
    aud = o.audience
  } else {
    throw bad('EDGE_ERR_TOKEN_BAD_REQUEST', '"audience" must be a string or a non-empty array of strings')
  }
  for (const a of Array.isArray(aud) ? aud : [aud]) {
    if (!caller.audiences.includes(a)) throw bad('EDGE_ERR_TOKEN_AUDIENCE_NOT_ALLOWED', `audience ${shown(a)} is not allowed for this caller`, 403)
  }

  const maxLifetime = caller.maxLifetimeSeconds
  let lifetimeSeconds = Math.min(defaultLifetimeSeconds, maxLifetime)
  if (o.lifetimeSeconds !== undefined) {
    const l = o.lifetimeSeconds
    if (typeof l !== 'number' || !Number.isInteger(l) || l < 1) throw bad('EDGE_ERR_TOKEN_BAD_REQUEST', '"lifetimeSeconds" must be a positive integer')
    if (l > maxLifetime) throw bad('EDGE_ERR_TOKEN_LIFETIME_TOO_LONG', `"lifetimeSeconds" ${l} is over this caller's maximum of ${maxLifetime}`)
    lifetimeSeconds = l
  }

  const claims: Record<string, unknown> = {}
  if (o.claims !== undefined) {
    if (typeof o.claims !== 'object' || o.claims === null || Array.isArray(o.claims)) throw bad('EDGE_ERR_TOKEN_BAD_REQUEST', '"claims" must be a JSON object')
    for (const [name, v] of Object.entries(o.claims as Record<string, unknown>)) {
      if (RESERVED.has(name)) throw bad('EDGE_ERR_TOKEN_CLAIM_NOT_ALLOWED', `claim ${shown(name)} is set by the endpoint, never by a caller`)
      if (!caller.claims.includes(name)) throw bad('EDGE_ERR_TOKEN_CLAIM_NOT_ALLOWED', `claim ${shown(name)} is not allowed for this caller`)
      if (v === null || v === undefined) throw bad('EDGE_ERR_TOKEN_BAD_REQUEST', `claim ${shown(name)} has no value`)
      claims[name] = v
    }
  }
  return { aud, lifetimeSeconds, claims }
}
