// The checks that relate several fields, which a schema cannot say: references between fields,
// duplicates, one-of requirements, limits bounded by other limits. All of them live here.
// They run on the document after the schema applied its defaults, also when the schema found
// problems, so they look at every value defensively and skip what is not of the expected type.

import { CHECKS, normalizeName } from './checks.js'
import type { Problem, Segment } from './problems.js'

type Obj = Record<string, unknown>

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v)
const objects = (v: unknown): Array<[number, Obj]> => Array.isArray(v) ? v.flatMap((o, i): Array<[number, Obj]> => isObj(o) ? [[i, o]] : []) : []
const str = (v: unknown): string | undefined => typeof v === 'string' && v.trim() !== '' ? v : undefined
const num = (v: unknown): number | undefined => typeof v === 'number' && Number.isInteger(v) ? v : undefined

type Add = (path: Segment[], message: string) => void

function checkTls (doc: Obj, add: Add): void {
  const tls = isObj(doc.tls) ? doc.tls : {}
  const min = str(tls.minVersion)
  const max = str(tls.maxVersion)
  if (min !== undefined && max !== undefined && min > max) add(['tls', 'maxVersion'], `must not be lower than tls.minVersion ("${min}")`)
  const def = str(tls.defaultCertificate)
  const names = objects(doc.certificates).map(([, c]) => c.name)
  if (def !== undefined && names.length > 0 && !names.includes(def)) {
    add(['tls', 'defaultCertificate'], `"${def}" is not the name of any entry of "certificates"`)
  }
}

function checkCertificates (doc: Obj, add: Add): void {
  const names = new Set<string>()
  const owners = new Map<string, number>()
  for (const [i, cert] of objects(doc.certificates)) {
    const name = str(cert.name)
    if (name !== undefined) {
      if (names.has(name)) add(['certificates', i, 'name'], `"${name}" is used by another certificate entry`)
      names.add(name)
    }
    if (!Array.isArray(cert.serverNames)) continue
    cert.serverNames.forEach((raw, j) => {
      if (typeof raw !== 'string' || CHECKS['server-name'](raw) !== undefined) return
      const norm = normalizeName(raw)
      const owner = owners.get(norm)
      if (owner !== undefined) add(['certificates', i, 'serverNames', j], `"${norm}" is already served by certificates[${owner}]`)
      owners.set(norm, i)
    })
  }
}

function checkRoutes (doc: Obj, add: Add): void {
  const seen = new Map<string, string>()
  for (const [i, route] of objects(doc.routes)) {
    const host = str(route.host)
    const prefix = str(route.pathPrefix)
    if (host === undefined || prefix === undefined) continue
    const key = `${normalizeName(host)} ${prefix}`
    const dup = seen.get(key)
    if (dup !== undefined) add(['routes', i], `same host and pathPrefix as ${dup}`)
    else seen.set(key, `routes[${i}]`)
  }
  for (const [i, route] of objects(doc.routes)) checkPool(route, ['routes', i], add)
}

/** `upstreamProtocol` against the targets' schemes: `h2c` is cleartext (`http://`), `h2` is TLS (`https://`). */
function checkUpstreamProtocol (route: Obj, at: Segment[], add: Add): void {
  const want = route.upstreamProtocol === 'h2c' ? 'http:' : route.upstreamProtocol === 'h2' ? 'https:' : undefined
  if (want === undefined) return
  const check = (url: unknown, path: Segment[]): void => {
    const s = str(url)
    if (s === undefined || !URL.canParse(s) || new URL(s).protocol === want) return
    add(path, `upstreamProtocol "${String(route.upstreamProtocol)}" needs a ${want}// URL (${route.upstreamProtocol === 'h2c' ? 'cleartext HTTP/2 with prior knowledge' : 'HTTP/2 over TLS, ALPN h2'})`)
  }
  check(route.upstream, [...at, 'upstream'])
  for (const [j, target] of objects(route.upstreams)) check(target.url, [...at, 'upstreams', j, 'url'])
}

/** A gRPC health check speaks HTTP/2: only to a pool that does. */
function checkHealthProtocol (route: Obj, at: Segment[], add: Add): void {
  if (!isObj(route.healthCheck) || route.healthCheck.protocol !== 'grpc') return
  if (route.upstreamProtocol !== 'h2c' && route.upstreamProtocol !== 'h2') {
    add([...at, 'healthCheck', 'protocol'], 'a "grpc" health check needs "upstreamProtocol": "h2c" or "h2" (gRPC runs over HTTP/2)')
  }
}

/** A route's pool: `upstream` or `upstreams` (one of them), distinct targets, a hash key when hashing needs one. */
function checkPool (route: Obj, at: Segment[], add: Add): void {
  if (route.upstream === undefined && route.upstreams === undefined) add(at, 'needs "upstream" (one origin) or "upstreams" (a pool)')
  if (route.upstream !== undefined && route.upstreams !== undefined) add([...at, 'upstreams'], 'give either "upstream" or "upstreams", not both')
  const urls = new Map<string, number>()
  for (const [j, target] of objects(route.upstreams)) {
    const url = str(target.url)
    if (url === undefined) continue
    // An unparsable URL is reported by the schema's check; compare it as written.
    const origin = URL.canParse(url) ? new URL(url).origin : url
    const first = urls.get(origin)
    if (first !== undefined) add([...at, 'upstreams', j, 'url'], `"${origin}" is already upstreams[${first}]`)
    else urls.set(origin, j)
  }
  checkUpstreamProtocol(route, at, add)
  checkHealthProtocol(route, at, add)
  const balance = isObj(route.balance) ? route.balance : {}
  if (balance.policy === 'hash' && (balance.hashOn === 'header' || balance.hashOn === 'cookie') && str(balance.hashKey) === undefined) {
    add([...at, 'balance', 'hashKey'], `names the ${String(balance.hashOn)} to hash: required with hashOn "${String(balance.hashOn)}"`)
  }
  const outlier = isObj(route.outlier) ? route.outlier : {}
  const base = num(outlier.baseEjectionMs)
  const max = num(outlier.maxEjectionMs)
  if (base !== undefined && max !== undefined && base > max) add([...at, 'outlier', 'maxEjectionMs'], `must not be lower than baseEjectionMs (${base})`)
}

const WILDCARDS = new Set(['0.0.0.0', '::'])
const isLoopback = (h: string): boolean => h === 'localhost' || h === '::1' || /^127\./.test(h)

/** Two listeners on one port collide when they share the host, one listens on every address, or one is `localhost` and the other a loopback address. */
function overlap (a: string, b: string): boolean {
  return a === b || WILDCARDS.has(a) || WILDCARDS.has(b) || (isLoopback(a) && isLoopback(b) && (a === 'localhost' || b === 'localhost'))
}

/** The proxy's listener, the admin, plain-HTTP redirect and token listeners must not share a port (0 = any free port never does). */
function checkPorts (doc: Obj, add: Add): void {
  const listeners: Array<{ name: string, host?: string, port?: number }> = []
  const listener = (name: string, o: unknown): void => {
    if (isObj(o)) listeners.push({ name, host: str(o.host), port: num(o.port) })
  }
  listener('listen', doc.listen)
  listener('admin', doc.admin)
  listener('httpRedirect', doc.httpRedirect)
  if (isObj(doc.token)) listener('token.listen', doc.token.listen)
  listeners.forEach((l, i) => {
    const other = listeners.slice(0, i).find(o => o.port === l.port && o.host !== undefined && l.host !== undefined && overlap(o.host, l.host))
    if (l.port === undefined || l.port === 0 || other === undefined) return
    add([...l.name.split('.'), 'port'], `${l.port} is also ${other.name}.port: two listeners cannot share a port`)
  })
}

function checkTokenKeys (token: Obj, add: Add): void {
  const hasKey = token.key !== undefined
  if (!hasKey && token.keys === undefined) {
    add(['token'], 'needs "key" (a keyd key whose versions rotate) or "keys" (keys with configured roles)')
    return
  }
  if (!hasKey && Array.isArray(token.keys) && token.keys.length === 0) add(['token', 'keys'], 'must not be empty')
  const keys = objects(token.keys)
  const names = new Set<string>()
  for (const [i, k] of keys) {
    const name = str(k.name)
    if (name !== undefined && names.has(name)) add(['token', 'keys', i, 'name'], `"${name}" is listed twice`)
    if (name !== undefined) names.add(name)
    if (k.role === 'retired' && k.retiredAt === undefined) add(['token', 'keys', i, 'retiredAt'], 'is required')
    if (k.role !== 'retired' && k.retiredAt !== undefined) add(['token', 'keys', i, 'retiredAt'], 'only a key whose role is "retired" has a retiredAt')
    if (hasKey && k.role !== 'retired') add(['token', 'keys', i, 'role'], 'with "token.key" the keyd key signs: other keys may only be "retired"')
  }
  const active = keys.filter(([, k]) => k.role === 'active').length
  if (!hasKey && keys.length > 0 && active !== 1) add(['token', 'keys'], `exactly one key must have the role "active", found ${active}`)
  const keyName = isObj(token.key) ? str(token.key.name) : undefined
  if (keyName !== undefined && names.has(keyName)) add(['token', 'keys'], `"${keyName}" is already "token.key"`)
}

function checkTokenCallers (token: Obj, add: Add): void {
  const maxLifetime = num(token.maxLifetimeSeconds)
  const mtls = isObj(token.tls) && token.tls.clientCa !== undefined
  const names = new Set<string>()
  for (const [i, c] of objects(token.callers)) {
    const at: Segment[] = ['token', 'callers', i]
    const name = str(c.name)
    if (name !== undefined && names.has(name)) add([...at, 'name'], `"${name}" is listed twice`)
    if (name !== undefined) names.add(name)
    if (c.secretSha256 === undefined && c.secretFile === undefined && c.clientCertSha256 === undefined) {
      add(at, 'needs a credential: "secretSha256", "secretFile" or "clientCertSha256"')
    }
    const lifetime = num(c.maxLifetimeSeconds)
    if (lifetime !== undefined && maxLifetime !== undefined && lifetime > maxLifetime) {
      add([...at, 'maxLifetimeSeconds'], `must be between 1 and ${maxLifetime}, got ${lifetime}`)
    }
    if (!mtls && c.clientCertSha256 !== undefined) add([...at, 'clientCertSha256'], 'needs "token.tls.clientCa" (mutual TLS)')
  }
}

function checkToken (doc: Obj, add: Add): void {
  if (!isObj(doc.token)) return
  const token = doc.token
  if (doc.keyd === undefined) add(['token'], 'needs a "keyd" section: tokens are signed by keyd')
  checkTokenKeys(token, add)
  checkTokenCallers(token, add)
  const def = num(token.defaultLifetimeSeconds)
  const max = num(token.maxLifetimeSeconds)
  if (def !== undefined && max !== undefined && def > max) add(['token', 'defaultLifetimeSeconds'], `must not exceed token.maxLifetimeSeconds (${max})`)
}

/** Every cross-field problem of the (defaulted) document `doc`. */
function checkTimeouts (doc: Obj, add: Add): void {
  const timeouts = isObj(doc.timeouts) ? doc.timeouts : {}
  const hello = num(timeouts.clientHelloMs)
  const handshake = num(timeouts.handshakeMs)
  if (hello !== undefined && handshake !== undefined && handshake < hello) {
    add(['timeouts', 'handshakeMs'], `must not be lower than timeouts.clientHelloMs (${hello}): both run from accept`)
  }
}

export function crossCheck (doc: unknown): Problem[] {
  const problems: Problem[] = []
  if (!isObj(doc)) return problems
  const add: Add = (path, message) => { problems.push({ path, message }) }
  checkTls(doc, add)
  checkCertificates(doc, add)
  checkRoutes(doc, add)
  checkPorts(doc, add)
  checkToken(doc, add)
  checkTimeouts(doc, add)
  return problems
}
