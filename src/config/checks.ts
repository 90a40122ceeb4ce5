// Value checks that JSON Schema cannot say well: each looks at one string and returns the problem
// (without the field path) or undefined. The schema names them with its `check` annotation.

import { isIP } from 'node:net'
import { createSecureContext } from 'node:tls'

const LABEL = '[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?'
const HOSTNAME = new RegExp(`^(\\*\\.)?${LABEL}(\\.${LABEL})*$`)
const RESERVED_CLAIMS = ['iss', 'iat', 'nbf', 'exp', 'jti', 'aud', 'client_id']
const CLAIM_NAME = /^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$/

/** True for an address or CIDR (`10.0.0.0/8`, `::1`, `fd00::/8`). */
export function isAddressOrCidr (value: string): boolean {
  const [addr, prefix, extra] = value.split('/')
  const family = isIP(addr ?? '')
  if (family === 0 || extra !== undefined) return false
  if (prefix === undefined) return true
  const bits = Number(prefix)
  return /^\d{1,3}$/.test(prefix) && bits <= (family === 4 ? 32 : 128)
}

/** Lower-cases a host name and drops one trailing dot. */
export function normalizeName (name: string): string {
  const lower = name.toLowerCase()
  return lower.endsWith('.') ? lower.slice(0, -1) : lower
}

function isServerName (name: string): boolean {
  return isIP(name) !== 0 || HOSTNAME.test(name)
}

/** `name`, `name:port`, an IPv4 address (with a port) or a bracketed IPv6 one (`[::1]:8080`): what a Host header may name. */
export function isHostAndPort (value: string): boolean {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+))(?::(\d{1,5}))?$/.exec(value.toLowerCase())
  if (m === null) return false
  const [, v6, name, port] = m
  if (port !== undefined && (Number(port) < 1 || Number(port) > 65_535)) return false
  if (v6 !== undefined) return isIP(v6) === 6
  return name !== undefined && (isIP(name) === 4 || (HOSTNAME.test(name) && !name.startsWith('*')))
}

/** A URL's problem as an upstream origin, or undefined. */
function upstreamProblem (s: string): string | undefined {
  let url: URL
  try {
    url = new URL(s)
  } catch {
    return 'must be an http:// or https:// URL'
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return 'must be an http:// or https:// URL'
  if (url.pathname !== '/' || url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '') {
    return 'must be an origin only (scheme://host[:port]), without path, query or credentials'
  }
  return undefined
}

/** Every named check; the schema refers to them by name (`check: 'upstream'`). */
export const CHECKS = {
  'listen-host': (s: string) => isIP(s) !== 0 || HOSTNAME.test(s.toLowerCase()) ? undefined : `"${s}" is not an address or host name`,
  loopback: (s: string) => ['127.0.0.1', '::1', 'localhost'].includes(s) || /^127\./.test(s)
    ? undefined
    : `"${s}" is not a loopback address: the admin listener has no authentication`,
  'ip-or-localhost': (s: string) => isIP(s) !== 0 || s === 'localhost' ? undefined : `"${s}" must be an IP address or "localhost"`,
  ciphers: (s: string) => {
    try {
      createSecureContext({ ciphers: s })
      return undefined
    } catch {
      return 'OpenSSL accepts none of these cipher names'
    }
  },
  groups: (s: string) => {
    try {
      createSecureContext({ ecdhCurve: s })
      return undefined
    } catch {
      return `OpenSSL refuses the group list "${s}" (names are separated by ":", e.g. "X25519MLKEM768:X25519:P-256")`
    }
  },
  'server-name': (s: string) => isServerName(normalizeName(s)) ? undefined : `"${s}" is not a host name, a "*." wildcard or an IP address`,
  'route-host': (s: string) => {
    const host = normalizeName(s)
    return host === '*' || isServerName(host) ? undefined : `"${host}" must be a host name, "*.domain" or "*"`
  },
  'path-prefix': (s: string) => s.startsWith('/') && !/[?#\s]/.test(s) ? undefined : 'must start with "/" and hold no "?", "#" or spaces',
  upstream: upstreamProblem,
  'upstream-host': (s: string) => ['client', 'target'].includes(s.toLowerCase()) || isHostAndPort(s)
    ? undefined
    : `"${s}" is not "client", "target" nor a host name with an optional port (e.g. "bucket.s3.example.com", "api.example.com:8443")`,
  'address-or-cidr': (s: string) => isAddressOrCidr(s) ? undefined : `"${s}" is not an IP address or CIDR (e.g. "10.0.0.0/8", "::1")`,
  issuer: (s: string) => /^https:\/\/[^\s?#]+$/.test(s) || /^http:\/\/(localhost|127\.0\.0\.1)(:\d+)?(\/[^\s?#]*)?$/.test(s)
    ? undefined
    : 'must be an https:// URL without query or fragment (http:// only for localhost)',
  'sha256-hex': (s: string) => /^[0-9a-f]{64}$/.test(s.replace(/:/g, '').toLowerCase()) ? undefined : 'must be 64 hex characters (a SHA-256)',
  'claim-name': (s: string) => RESERVED_CLAIMS.includes(s)
    ? `"${s}" is set by the endpoint, never by a caller`
    : CLAIM_NAME.test(s) ? undefined : `"${s}" is not a claim name`,
  'iso-date': (s: string) => Number.isNaN(Date.parse(s)) ? 'must be an ISO 8601 date, e.g. "2026-11-30T12:00:00Z"' : undefined,
  'header-value': (s: string) => /^[\t\x20-\x7e\x80-\xff]*$/.test(s) && s.trim() === s
    ? undefined
    : 'must be printable text without line breaks, and without leading or trailing spaces',
  'header-name': (s: string) => !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(s)
    ? `"${s}" is not an HTTP header name`
    : /^(host|connection|content-length|transfer-encoding|upgrade|te|trailer|keep-alive|x-forwarded-.*|forwarded|proxy-.*)$/i.test(s)
      ? `"${s}" is a header the proxy sets or removes itself`
      : undefined
} satisfies Record<string, (value: string) => string | undefined>

export type CheckName = keyof typeof CHECKS

/** What each check accepts, as the "values" column of docs/configuration.md says it. */
export const CHECK_DOCS: Record<CheckName, string> = {
  'listen-host': 'address or host name',
  loopback: 'loopback address',
  'ip-or-localhost': 'IP address or `localhost`',
  ciphers: 'OpenSSL cipher list',
  groups: 'OpenSSL group list, or `auto`',
  'server-name': 'host name, `*.` wildcard or IP address',
  'route-host': 'host name, `*.` wildcard or `*`',
  'path-prefix': 'path starting with `/`',
  upstream: '`http://` or `https://` origin',
  'upstream-host': '`"client"`, `"target"` or host name[:port]',
  'address-or-cidr': 'IP address or CIDR',
  issuer: 'URL',
  'sha256-hex': 'SHA-256, 64 hex digits',
  'claim-name': 'claim name',
  'header-value': 'header value',
  'iso-date': 'ISO 8601 date',
  'header-name': 'HTTP header name'
}

/** How a validated value is rewritten (schema annotation `transform`). */
export const TRANSFORMS = {
  /** Resolved against the config file's directory (done by the caller, which knows it). */
  path: (s: string) => s,
  /** A host name lower-cased, without trailing dot. */
  host: normalizeName,
  /** An URL reduced to its origin. */
  origin: (s: string) => new URL(s).origin,
  /** Hex without colons, lower-case. */
  hex: (s: string) => s.replace(/:/g, '').toLowerCase(),
  /** Without trailing slashes. */
  'trim-slash': (s: string) => s.replace(/\/+$/, ''),
  /** Lower-cased (header names). */
  lower: (s: string) => s.toLowerCase()
} satisfies Record<string, (value: string) => string>

export type TransformName = keyof typeof TRANSFORMS
