// Validates a parsed config document against the schema by hand, collecting every problem,
// applying defaults and resolving relative paths against the config file's directory.

import { isIP } from 'node:net'
import { resolve } from 'node:path'
import { createSecureContext } from 'node:tls'
import { ConfigInvalidError } from '../errors.js'
import { Checker, type Obj } from './checks.js'
import { configDefaults as D } from './defaults.js'
import { validateToken } from './token.js'
import type {
  AdminConfig, CertificateConfig, CertificateFilesConfig, EdgeConfig, KeydConfig, LimitsConfig, LogLevel, RouteConfig, TimeoutsConfig,
  TlsConfig, TlsVersion
} from './types.js'

const TLS_VERSIONS: readonly TlsVersion[] = ['TLSv1.2', 'TLSv1.3']
const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']
const LABEL = '[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?'
const HOSTNAME = new RegExp(`^(\\*\\.)?${LABEL}(\\.${LABEL})*$`)

const RENAMED = {
  top: {
    port: 'moved to "listen.port"',
    host: 'moved to "listen.host"',
    upstream: 'each route has its own "upstream": see "routes"',
    upstreams: 'each route has its own "upstream": see "routes"',
    certs: 'use "certificates"',
    logLevel: 'use "log": { "level": ... }',
    h2: 'use "http2"',
    trustProxy: 'use "trustedProxies" (a list of addresses or CIDRs)',
    cluster: 'use "workers"',
    shutdownGrace: 'use "shutdownGraceMs" (milliseconds)',
    gracePeriodMs: 'use "shutdownGraceMs" (milliseconds)'
  },
  admin: {
    address: 'use "host"',
    listen: 'use "host" and "port"',
    drainDelay: 'use "drainDelayMs" (milliseconds)'
  },
  keyd: {
    socketPath: 'use "socket"',
    path: 'use "socket"',
    timeout: 'use "timeoutMs" (milliseconds)',
    secret: 'use "secretFile" (a path: never put the secret itself in the config)',
    client: 'use "clientName"',
    name: 'use "clientName"'
  },
  tls: {
    sni: 'use "strictSni"',
    strict: 'use "strictSni"',
    sessionTimeout: 'use "sessionTimeoutSeconds"',
    tickets: 'use "sessionTickets"',
    ticketKeyRotation: 'use "ticketRotationSeconds"',
    sessionCache: 'use "sessionCacheSize" (sessions; 0 turns the cache off)',
    default: 'use "defaultCertificate"',
    cipherSuites: 'use "ciphers" (TLS 1.2 and 1.3 names in one list)'
  },
  certificate: {
    cert: 'put certificate/key pairs in "files": [{ "cert": ..., "key": ... }]',
    key: 'put certificate/key pairs in "files": [{ "cert": ..., "key": ... }]',
    names: 'use "serverNames"',
    hosts: 'use "serverNames"',
    domains: 'use "serverNames"'
  },
  files: { certificate: 'use "cert"', privateKey: 'use "key"', keyref: 'use "key"' },
  timeouts: {
    headers: 'use "requestHeadersMs" (milliseconds)',
    headersMs: 'use "requestHeadersMs" (milliseconds)',
    requestHeaders: 'use "requestHeadersMs" (milliseconds)',
    keepAlive: 'use "keepAliveIdleMs" (milliseconds)',
    keepAliveMs: 'use "keepAliveIdleMs" (milliseconds)',
    keepAliveTimeoutMs: 'use "keepAliveIdleMs" (milliseconds)',
    idleMs: 'use "keepAliveIdleMs" (HTTP/1.1) or "http2IdleMs" (HTTP/2)',
    body: 'use "requestBodyIdleMs" (milliseconds)',
    bodyMs: 'use "requestBodyIdleMs" (milliseconds)'
  },
  limits: {
    maxConcurrentStreams: 'use "http2MaxConcurrentStreams"',
    http2MaxStreams: 'use "http2MaxConcurrentStreams"',
    maxResetsPerSecond: 'use "http2MaxResetsPerSecond"',
    http2ResetRate: 'use "http2MaxResetsPerSecond"'
  },
  route: {
    timeout: 'use "timeoutMs" (milliseconds)',
    connectTimeout: 'use "connectTimeoutMs" (milliseconds)',
    path: 'use "pathPrefix"',
    prefix: 'use "pathPrefix"',
    target: 'use "upstream"',
    url: 'use "upstream"',
    backend: 'use "upstream"',
    hosts: 'use "host" (one route per host pattern)',
    hostname: 'use "host"'
  }
} satisfies Record<string, Record<string, string>>

/** True for an address or CIDR (`10.0.0.0/8`, `::1`, `fd00::/8`). */
export function isAddressOrCidr (value: string): boolean {
  const [addr, prefix, extra] = value.split('/')
  const family = isIP(addr)
  if (family === 0 || extra !== undefined) return false
  if (prefix === undefined) return true
  const bits = Number(prefix)
  return /^\d{1,3}$/.test(prefix) && bits <= (family === 4 ? 32 : 128)
}

function isServerName (name: string): boolean {
  return isIP(name) !== 0 || HOSTNAME.test(name)
}

/** Lower-cases a host name and drops one trailing dot. */
export function normalizeName (name: string): string {
  const lower = name.toLowerCase()
  return lower.endsWith('.') ? lower.slice(0, -1) : lower
}

function value<T> (obj: Obj | undefined, key: string, fallback: T): unknown {
  return obj !== undefined && key in obj ? obj[key] : fallback
}

function validateKeyd (c: Checker, raw: unknown, baseDir: string): KeydConfig | undefined {
  if (raw === undefined) return undefined
  const o = c.object(raw, 'keyd')
  if (o === undefined) return undefined
  c.keys(o, 'keyd', Object.keys(D.keyd), RENAMED.keyd)
  const socket = c.string(value(o, 'socket', D.keyd.socket), 'keyd.socket')
  const clientName = c.string(value(o, 'clientName', D.keyd.clientName), 'keyd.clientName')
  const secretFile = c.string(value(o, 'secretFile', D.keyd.secretFile), 'keyd.secretFile')
  const timeoutMs = c.integer(value(o, 'timeoutMs', D.keyd.timeoutMs), 'keyd.timeoutMs', 1, 60_000)
  return {
    socket: resolve(baseDir, socket ?? D.keyd.socket),
    clientName: clientName ?? D.keyd.clientName,
    secretFile: resolve(baseDir, secretFile ?? D.keyd.secretFile),
    timeoutMs: timeoutMs ?? D.keyd.timeoutMs
  }
}

function validateAdmin (c: Checker, raw: unknown): AdminConfig | undefined {
  if (raw === undefined) return undefined
  const o = c.object(raw, 'admin')
  if (o === undefined) return undefined
  c.keys(o, 'admin', Object.keys(D.admin), RENAMED.admin)
  const host = c.string(value(o, 'host', D.admin.host), 'admin.host')
  if (host !== undefined && !['127.0.0.1', '::1', 'localhost'].includes(host) && !/^127\./.test(host)) {
    c.add('admin.host', `"${host}" is not a loopback address: the admin listener has no authentication`)
  }
  const port = c.integer(value(o, 'port', D.admin.port), 'admin.port', 0, 65_535)
  const drainDelayMs = c.integer(value(o, 'drainDelayMs', D.admin.drainDelayMs), 'admin.drainDelayMs', 0, 600_000)
  return {
    host: host ?? D.admin.host,
    port: port ?? D.admin.port,
    drainDelayMs: drainDelayMs ?? D.admin.drainDelayMs
  }
}

function validateTls (c: Checker, raw: unknown): Omit<TlsConfig, 'defaultCertificate'> & { defaultCertificate: string | null } {
  const o = raw === undefined ? {} : c.object(raw, 'tls')
  if (o !== undefined) c.keys(o, 'tls', Object.keys(D.tls), RENAMED.tls)
  const minVersion = c.string(value(o, 'minVersion', D.tls.minVersion), 'tls.minVersion', { oneOf: TLS_VERSIONS }) as TlsVersion | undefined
  const maxVersion = c.string(value(o, 'maxVersion', D.tls.maxVersion), 'tls.maxVersion', { oneOf: TLS_VERSIONS }) as TlsVersion | undefined
  if (minVersion !== undefined && maxVersion !== undefined && minVersion > maxVersion) {
    c.add('tls.maxVersion', `must not be lower than tls.minVersion ("${minVersion}")`)
  }
  const ciphers = c.string(value(o, 'ciphers', D.tls.ciphers), 'tls.ciphers')
  if (ciphers !== undefined) {
    try {
      createSecureContext({ ciphers })
    } catch {
      c.add('tls.ciphers', 'OpenSSL accepts none of these cipher names')
    }
  }
  const strictSni = c.boolean(value(o, 'strictSni', D.tls.strictSni), 'tls.strictSni')
  const rawDefault = value(o, 'defaultCertificate', D.tls.defaultCertificate)
  const defaultCertificate = rawDefault === null ? null : c.string(rawDefault, 'tls.defaultCertificate')
  const sessionTimeoutSeconds = c.integer(value(o, 'sessionTimeoutSeconds', D.tls.sessionTimeoutSeconds), 'tls.sessionTimeoutSeconds', 1, 86_400)
  const sessionTickets = c.boolean(value(o, 'sessionTickets', D.tls.sessionTickets), 'tls.sessionTickets')
  const ticketRotationSeconds = c.integer(value(o, 'ticketRotationSeconds', D.tls.ticketRotationSeconds), 'tls.ticketRotationSeconds', 10, 604_800)
  const ticketPreviousKeys = c.integer(value(o, 'ticketPreviousKeys', D.tls.ticketPreviousKeys), 'tls.ticketPreviousKeys', 0, 48)
  const sessionCacheSize = c.integer(value(o, 'sessionCacheSize', D.tls.sessionCacheSize), 'tls.sessionCacheSize', 0, 10_000_000)
  return {
    minVersion: minVersion ?? D.tls.minVersion,
    maxVersion: maxVersion ?? D.tls.maxVersion,
    ciphers: ciphers ?? D.tls.ciphers,
    strictSni: strictSni ?? D.tls.strictSni,
    defaultCertificate: defaultCertificate ?? null,
    sessionTimeoutSeconds: sessionTimeoutSeconds ?? D.tls.sessionTimeoutSeconds,
    sessionTickets: sessionTickets ?? D.tls.sessionTickets,
    ticketRotationSeconds: ticketRotationSeconds ?? D.tls.ticketRotationSeconds,
    ticketPreviousKeys: ticketPreviousKeys ?? D.tls.ticketPreviousKeys,
    sessionCacheSize: sessionCacheSize ?? D.tls.sessionCacheSize
  }
}

function validateTimeouts (c: Checker, raw: unknown): TimeoutsConfig {
  const o = raw === undefined ? {} : c.object(raw, 'timeouts')
  if (o !== undefined) c.keys(o, 'timeouts', Object.keys(D.timeouts), RENAMED.timeouts)
  const ms = (key: keyof TimeoutsConfig): number =>
    c.integer(value(o, key, D.timeouts[key]), `timeouts.${key}`, 1, 3_600_000) ?? D.timeouts[key]
  return {
    requestHeadersMs: ms('requestHeadersMs'),
    keepAliveIdleMs: ms('keepAliveIdleMs'),
    http2IdleMs: ms('http2IdleMs'),
    requestBodyIdleMs: ms('requestBodyIdleMs')
  }
}

function validateLimits (c: Checker, raw: unknown): LimitsConfig {
  const o = raw === undefined ? {} : c.object(raw, 'limits')
  if (o !== undefined) c.keys(o, 'limits', Object.keys(D.limits), RENAMED.limits)
  const streams = c.integer(value(o, 'http2MaxConcurrentStreams', D.limits.http2MaxConcurrentStreams), 'limits.http2MaxConcurrentStreams', 1, 10_000)
  const resets = c.integer(value(o, 'http2MaxResetsPerSecond', D.limits.http2MaxResetsPerSecond), 'limits.http2MaxResetsPerSecond', 1, 100_000)
  return {
    http2MaxConcurrentStreams: streams ?? D.limits.http2MaxConcurrentStreams,
    http2MaxResetsPerSecond: resets ?? D.limits.http2MaxResetsPerSecond
  }
}

function validateFiles (c: Checker, raw: unknown, path: string, baseDir: string): CertificateFilesConfig[] {
  const list = c.array(raw, path, { nonEmpty: true }) ?? []
  const out: CertificateFilesConfig[] = []
  list.forEach((item, i) => {
    const at = `${path}[${i}]`
    const o = c.object(item, at)
    if (o === undefined) return
    c.keys(o, at, ['cert', 'key'], RENAMED.files)
    const cert = c.string(o.cert, `${at}.cert`)
    const key = c.string(o.key, `${at}.key`)
    if (cert !== undefined && key !== undefined) out.push({ cert: resolve(baseDir, cert), key: resolve(baseDir, key) })
  })
  return out
}

function validateCertificates (c: Checker, raw: unknown, baseDir: string): CertificateConfig[] {
  const list = c.array(raw, 'certificates', { nonEmpty: true }) ?? []
  const out: CertificateConfig[] = []
  const names = new Set<string>()
  const owners = new Map<string, string>()
  list.forEach((item, i) => {
    const at = `certificates[${i}]`
    const o = c.object(item, at)
    if (o === undefined) return
    c.keys(o, at, ['name', 'serverNames', 'files'], RENAMED.certificate)
    const name = c.string(o.name, `${at}.name`)
    if (name !== undefined) {
      if (names.has(name)) c.add(`${at}.name`, `"${name}" is used by another certificate entry`)
      names.add(name)
    }
    const serverNames: string[] = []
    const rawNames = c.array(o.serverNames, `${at}.serverNames`, { nonEmpty: true }) ?? []
    rawNames.forEach((n, j) => {
      const s = c.string(n, `${at}.serverNames[${j}]`)
      if (s === undefined) return
      const norm = normalizeName(s)
      if (!isServerName(norm)) {
        c.add(`${at}.serverNames[${j}]`, `"${s}" is not a host name, a "*." wildcard or an IP address`)
        return
      }
      const owner = owners.get(norm)
      if (owner !== undefined) c.add(`${at}.serverNames[${j}]`, `"${norm}" is already served by ${owner}`)
      owners.set(norm, at)
      serverNames.push(norm)
    })
    const files = validateFiles(c, o.files, `${at}.files`, baseDir)
    if (name !== undefined) out.push({ name, serverNames, files })
  })
  return out
}

function validateUpstream (c: Checker, raw: unknown, path: string): string | undefined {
  const s = c.string(raw, path)
  if (s === undefined) return undefined
  let url: URL
  try {
    url = new URL(s)
  } catch {
    c.add(path, 'must be an http:// or https:// URL')
    return undefined
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    c.add(path, 'must be an http:// or https:// URL')
    return undefined
  }
  if (url.pathname !== '/' || url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '') {
    c.add(path, 'must be an origin only (scheme://host[:port]), without path, query or credentials')
    return undefined
  }
  return url.origin
}

function validateRoutes (c: Checker, raw: unknown): RouteConfig[] {
  const list = c.array(raw, 'routes', { nonEmpty: true }) ?? []
  const out: RouteConfig[] = []
  const seen = new Map<string, string>()
  list.forEach((item, i) => {
    const at = `routes[${i}]`
    const o = c.object(item, at)
    if (o === undefined) return
    c.keys(o, at, ['host', 'pathPrefix', 'upstream', 'timeoutMs', 'connectTimeoutMs'], RENAMED.route)
    let host = c.string(value(o, 'host', D.route.host), `${at}.host`)
    if (host !== undefined) {
      host = normalizeName(host)
      if (host !== '*' && !isServerName(host)) {
        c.add(`${at}.host`, `"${host}" must be a host name, "*.domain" or "*"`)
        host = undefined
      }
    }
    let pathPrefix = c.string(value(o, 'pathPrefix', D.route.pathPrefix), `${at}.pathPrefix`)
    if (pathPrefix !== undefined && (!pathPrefix.startsWith('/') || /[?#\s]/.test(pathPrefix))) {
      c.add(`${at}.pathPrefix`, 'must start with "/" and hold no "?", "#" or spaces')
      pathPrefix = undefined
    }
    const upstream = validateUpstream(c, o.upstream, `${at}.upstream`)
    const timeoutMs = c.integer(value(o, 'timeoutMs', D.route.timeoutMs), `${at}.timeoutMs`, 1, 3_600_000)
    const connectTimeoutMs = c.integer(value(o, 'connectTimeoutMs', D.route.connectTimeoutMs), `${at}.connectTimeoutMs`, 1, 600_000)
    if (host === undefined || pathPrefix === undefined || upstream === undefined ||
      timeoutMs === undefined || connectTimeoutMs === undefined) return
    const key = `${host} ${pathPrefix}`
    const dup = seen.get(key)
    if (dup !== undefined) c.add(at, `same host and pathPrefix as ${dup}`)
    seen.set(key, at)
    out.push({ host, pathPrefix, upstream, timeoutMs, connectTimeoutMs })
  })
  return out
}

/**
 * Validates a parsed config document, applies defaults and resolves relative paths against `baseDir`.
 * @throws ConfigInvalidError (EDGE_ERR_CONFIG_INVALID) listing every problem found.
 */
export function validateConfig (raw: unknown, opts: { baseDir: string, file?: string }): EdgeConfig {
  const c = new Checker()
  const root = c.object(raw, '(root)')
  if (root === undefined) throw new ConfigInvalidError(c.problems, opts.file)
  c.keys(root, '', ['listen', 'workers', 'keyd', 'tls', 'certificates', 'routes', 'trustedProxies', 'http2', 'timeouts', 'limits', 'log', 'admin', 'shutdownGraceMs', 'token'], RENAMED.top)

  const listenObj = root.listen === undefined ? {} : c.object(root.listen, 'listen')
  if (listenObj !== undefined) c.keys(listenObj, 'listen', ['host', 'port'])
  const host = c.string(value(listenObj, 'host', D.listen.host), 'listen.host')
  if (host !== undefined && isIP(host) === 0 && !HOSTNAME.test(host.toLowerCase())) c.add('listen.host', `"${host}" is not an address or host name`)
  const port = c.integer(value(listenObj, 'port', D.listen.port), 'listen.port', 0, 65_535)
  const workers = c.integer(value(root, 'workers', D.workers), 'workers', 0, 1024)
  const keyd = validateKeyd(c, root.keyd, opts.baseDir)
  const tls = validateTls(c, root.tls)
  const certificates = validateCertificates(c, root.certificates, opts.baseDir)
  const routes = validateRoutes(c, root.routes)
  const admin = validateAdmin(c, root.admin)
  const token = validateToken(c, root.token, opts.baseDir, keyd !== undefined)
  const shutdownGraceMs = c.integer(value(root, 'shutdownGraceMs', D.shutdownGraceMs), 'shutdownGraceMs', 0, 3_600_000)

  const trustedProxies: string[] = []
  const rawTrusted = c.array(value(root, 'trustedProxies', D.trustedProxies), 'trustedProxies') ?? []
  rawTrusted.forEach((t, i) => {
    const s = c.string(t, `trustedProxies[${i}]`)
    if (s === undefined) return
    if (isAddressOrCidr(s)) trustedProxies.push(s)
    else c.add(`trustedProxies[${i}]`, `"${s}" is not an IP address or CIDR (e.g. "10.0.0.0/8", "::1")`)
  })
  const http2 = c.boolean(value(root, 'http2', D.http2), 'http2')
  const timeouts = validateTimeouts(c, root.timeouts)
  const limits = validateLimits(c, root.limits)
  const logObj = root.log === undefined ? {} : c.object(root.log, 'log')
  if (logObj !== undefined) c.keys(logObj, 'log', ['level'])
  const level = c.string(value(logObj, 'level', D.log.level), 'log.level', { oneOf: LOG_LEVELS }) as LogLevel | undefined

  let defaultCertificate: string | undefined = tls.defaultCertificate ?? certificates[0]?.name
  if (tls.defaultCertificate !== null && certificates.length > 0 &&
    !certificates.some(cert => cert.name === tls.defaultCertificate)) {
    c.add('tls.defaultCertificate', `"${tls.defaultCertificate}" is not the name of any entry of "certificates"`)
    defaultCertificate = undefined
  }

  if (c.problems.length > 0 || defaultCertificate === undefined) throw new ConfigInvalidError(c.problems, opts.file)
  return {
    ...(opts.file !== undefined ? { file: opts.file } : {}),
    listen: { host: host ?? D.listen.host, port: port ?? D.listen.port },
    workers: workers ?? D.workers,
    ...(keyd !== undefined ? { keyd } : {}),
    tls: { ...tls, defaultCertificate },
    certificates,
    routes,
    trustedProxies,
    http2: http2 ?? D.http2,
    timeouts,
    limits,
    log: { level: level ?? (D.log.level as LogLevel) },
    ...(admin !== undefined ? { admin } : {}),
    ...(token !== undefined ? { token } : {}),
    shutdownGraceMs: shutdownGraceMs ?? D.shutdownGraceMs
  }
}
