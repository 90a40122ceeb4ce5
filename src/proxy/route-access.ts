// A route's client-address lists (`allow`, `deny`; nginx `allow`/`deny`, Envoy RBAC on the remote
// IP): who may use the route at all, checked before its rate limit and before anything goes
// upstream, on every request path and WebSocket upgrade. The client address is the one after
// trusted X-Forwarded-For (client-address.ts), as for the rate limit and the access log.
//
// The most specific entry decides (longest prefix, `deny` on a tie), whatever the order: so
// `allow: ["10.0.0.0/8"], deny: ["10.6.6.0/24"]` refuses that /24, and `deny: ["10.0.0.0/8"],
// allow: ["10.1.2.3"]` lets that one host in. An address no entry covers is refused when `allow` is
// given, let in when only `deny` is.
//
// The lists are compiled once per route object (routes are compiled with their router, at load and
// at each reload): per prefix length present, a Map from the masked network to its verdict, so a
// request costs one address parse (a character loop, no allocation) and one Map lookup per
// distinct prefix length. A route without lists costs two property checks.

import type { RouteConfig } from '../config/types.js'
import type { RouteLimits } from './route-limits.js'

type Lists = Pick<RouteConfig, 'allow' | 'deny'>

/** One IPv4 prefix length: its mask, and the masked networks of that length with whether each is allowed. */
interface Level<N> { mask: N, nets: Map<N, boolean> }

/** A route's compiled lists: true when `address` may use the route. */
export type AccessCheck = (address: string) => boolean

/** `a.b.c.d` (from `from` to `to`) as an unsigned 32-bit number, or -1 when it is not an IPv4 address. */
function v4 (s: string, from = 0, to = s.length): number {
  let n = 0
  let part = -1
  let dots = 0
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i)
    if (c === 0x2e) {
      if (part < 0 || ++dots > 3) return -1
      n = n * 256 + part
      part = -1
    } else if (c >= 0x30 && c <= 0x39) {
      part = part < 0 ? c - 0x30 : part * 10 + c - 0x30
      if (part > 255) return -1
    } else {
      return -1
    }
  }
  return dots === 3 && part >= 0 ? n * 256 + part : -1
}

/** The eight 16-bit groups of the last IPv6 address parsed (one parse at a time: no allocation per request). */
const GROUPS = new Uint16Array(8)

/** Parses an IPv6 address (a `%zone` ignored, an IPv4 tail allowed) into GROUPS; false when it is not one. */
function v6 (s: string): boolean {
  const pct = s.indexOf('%')
  const end = pct === -1 ? s.length : pct
  let count = 0
  // Where `::` stands (the number of groups before it), or -1.
  let gap = -1
  let i = 0
  if (end >= 2 && s.charCodeAt(0) === 0x3a && s.charCodeAt(1) === 0x3a) {
    gap = 0
    i = 2
  }
  while (i < end) {
    let value = 0
    let digits = 0
    let j = i
    for (; j < end; j++) {
      const c = s.charCodeAt(j)
      const d = c >= 0x30 && c <= 0x39 ? c - 0x30 : c >= 0x61 && c <= 0x66 ? c - 0x57 : c >= 0x41 && c <= 0x46 ? c - 0x37 : -1
      if (d < 0) break
      if (++digits > 4) return false
      value = value * 16 + d
    }
    if (j < end && s.charCodeAt(j) === 0x2e) {
      // An IPv4 tail (`::ffff:1.2.3.4`): the last two groups.
      const n = v4(s, i, end)
      if (n < 0 || count > 6) return false
      GROUPS[count++] = Math.floor(n / 65_536)
      GROUPS[count++] = n % 65_536
      break
    }
    if (digits === 0 || count === 8) return false
    GROUPS[count++] = value
    if (j === end) break
    if (s.charCodeAt(j) !== 0x3a || j + 1 === end) return false
    j++
    if (s.charCodeAt(j) === 0x3a) {
      if (gap !== -1) return false
      gap = count
      j++
    }
    i = j
  }
  if (gap === -1) return count === 8
  if (count === 8) return false
  // The groups after the gap move to the end, zeros in between.
  const tail = count - gap
  for (let k = 0; k < tail; k++) GROUPS[7 - k] = GROUPS[count - 1 - k] ?? 0
  for (let k = gap; k < 8 - tail; k++) GROUPS[k] = 0
  return true
}

/** GROUPS' first `len` bits as a Map key (the rest masked off): one UTF-16 unit per group. */
function v6Key (len: number): string {
  const last = ((len + 15) >> 4) - 1
  const bits = len - last * 16
  const mask = (0xffff << (16 - bits)) & 0xffff
  const g = (k: number): number => k < last ? GROUPS[k] ?? 0 : k === last ? (GROUPS[k] ?? 0) & mask : 0
  return String.fromCharCode(g(0), g(1), g(2), g(3), g(4), g(5), g(6), g(7))
}

const V4_MASKS = Array.from({ length: 33 }, (_, len) => len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0)

/** Compiles a route's `allow` and `deny` lists (entries checked at load: addresses or CIDRs). */
export function compileAccess (lists: Lists): AccessCheck {
  const four = new Map<number, Map<number, boolean>>()
  const six = new Map<number, Map<string, boolean>>()
  // `deny` wins a tie: an entry in both lists refuses.
  const put = <K>(levels: Map<number, Map<K, boolean>>, len: number, key: K, allowed: boolean): void => {
    let nets = levels.get(len)
    if (nets === undefined) levels.set(len, nets = new Map<K, boolean>())
    nets.set(key, (nets.get(key) ?? true) && allowed)
  }
  const add = (entry: string, allowed: boolean): void => {
    const [addr = '', prefix] = entry.split('/')
    const ipv4 = v4(addr)
    if (ipv4 >= 0) {
      const len = prefix === undefined ? 32 : Number(prefix)
      put(four, len, (ipv4 & (V4_MASKS[len] ?? 0)) >>> 0, allowed)
      return
    }
    if (!v6(addr)) return // checked at load: never happens
    const len = prefix === undefined ? 128 : Number(prefix)
    // An IPv4-mapped entry (`::ffff:10.0.0.0/104`) covers IPv4 clients: they are seen as IPv4.
    if (len >= 96 && GROUPS[5] === 0xffff && GROUPS.subarray(0, 5).every(g => g === 0)) {
      const mapped = ((GROUPS[6] ?? 0) * 65_536 + (GROUPS[7] ?? 0))
      put(four, len - 96, (mapped & (V4_MASKS[len - 96] ?? 0)) >>> 0, allowed)
      return
    }
    put(six, len, v6Key(len), allowed)
  }
  for (const entry of lists.allow ?? []) add(entry, true)
  for (const entry of lists.deny ?? []) add(entry, false)
  // Longest prefix first: the most specific entry decides.
  const levels4: Array<Level<number>> = [...four].sort((a, b) => b[0] - a[0]).map(([len, nets]) => ({ mask: V4_MASKS[len] ?? 0, nets }))
  const levels6: Array<{ len: number, nets: Map<string, boolean> }> = [...six].sort((a, b) => b[0] - a[0]).map(([len, nets]) => ({ len, nets }))
  const otherwise = lists.allow === undefined
  return address => {
    const ipv4 = v4(address)
    if (ipv4 >= 0) {
      for (const level of levels4) {
        const verdict = level.nets.get((ipv4 & level.mask) >>> 0)
        if (verdict !== undefined) return verdict
      }
      return otherwise
    }
    if (levels6.length === 0 || !v6(address)) return otherwise
    for (const level of levels6) {
      const verdict = level.nets.get(v6Key(level.len))
      if (verdict !== undefined) return verdict
    }
    return otherwise
  }
}

const compiled = new WeakMap<Lists, AccessCheck>()

/** Compiles the lists of `route`, if it has any (the router does it for every route it is built with). */
export function prepareAccess (route: Lists): void {
  if ((route.allow !== undefined || route.deny !== undefined) && !compiled.has(route)) compiled.set(route, compileAccess(route))
}

/**
 * True when `client` may not use `route` (its `allow`/`deny` lists): the refusal is counted in
 * `edge_route_limit_hits_total{limit="address"}`, and the caller answers `403` (ANSWERS.forbidden).
 */
export function addressRefused (route: Lists, client: string, limits: RouteLimits): boolean {
  if (route.allow === undefined && route.deny === undefined) return false
  let check = compiled.get(route)
  if (check === undefined) compiled.set(route, check = compileAccess(route))
  if (check(client)) return false
  limits.hit('address')
  return true
}
