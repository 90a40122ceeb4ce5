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
// request costs one address parse and one Map lookup per distinct prefix length. A route without
// lists costs two property checks.

import { isIP } from 'node:net'
import type { RouteConfig } from '../config/types.js'
import type { RouteLimits } from './route-limits.js'

type Lists = Pick<RouteConfig, 'allow' | 'deny'>

/** One prefix length of one family: the masked networks of that length and whether each is allowed. */
interface Level<N> { mask: N, nets: Map<N, boolean> }

/** A route's compiled lists: true when `address` may use the route. */
export type AccessCheck = (address: string) => boolean

/** `a.b.c.d` as an unsigned 32-bit number (the caller checked it is an IPv4 address). */
function v4 (s: string): number {
  let n = 0
  let part = 0
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c === 0x2e) {
      n = n * 256 + part
      part = 0
    } else {
      part = part * 10 + c - 0x30
    }
  }
  return n * 256 + part
}

/** An IPv6 address (the caller checked it is one; a `%zone` is dropped) as a 128-bit number. */
function v6 (address: string): bigint {
  const pct = address.indexOf('%')
  const s = pct === -1 ? address : address.slice(0, pct)
  const gap = s.indexOf('::')
  const groups = (part: string): number[] => part === ''
    ? []
    : part.split(':').flatMap(g => {
      if (!g.includes('.')) return [parseInt(g, 16)]
      const n = v4(g)
      return [Math.floor(n / 65_536), n % 65_536]
    })
  const head = groups(gap === -1 ? s : s.slice(0, gap))
  const tail = gap === -1 ? [] : groups(s.slice(gap + 2))
  const all = [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail]
  let n = 0n
  for (const g of all) n = (n << 16n) | BigInt(g)
  return n
}

const V4_MASKS = Array.from({ length: 33 }, (_, len) => len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0)
const ALL128 = (1n << 128n) - 1n
const v6Mask = (len: number): bigint => ALL128 ^ ((1n << BigInt(128 - len)) - 1n)
const MAPPED = 0xffffn << 32n

function lookup<N> (levels: Array<Level<N>>, and: (n: N, mask: N) => N, n: N): boolean | undefined {
  for (const level of levels) {
    const verdict = level.nets.get(and(n, level.mask))
    if (verdict !== undefined) return verdict
  }
  return undefined
}

/** Compiles a route's `allow` and `deny` lists (entries checked at load: addresses or CIDRs). */
export function compileAccess (lists: Lists): AccessCheck {
  const four = new Map<number, Map<number, boolean>>()
  const six = new Map<number, Map<bigint, boolean>>()
  const add = (entry: string, allowed: boolean): void => {
    const [addr = '', prefix] = entry.split('/')
    let family = isIP(addr)
    let len = prefix === undefined ? (family === 4 ? 32 : 128) : Number(prefix)
    let net6 = family === 6 ? v6(addr) : 0n
    // An IPv4-mapped IPv6 entry (`::ffff:10.0.0.0/104`) covers IPv4 clients: they are seen as IPv4.
    if (family === 6 && len >= 96 && (net6 >> 32n) === 0xffffn) {
      family = 4
      len -= 96
      net6 -= MAPPED
    }
    if (family === 4) {
      const mask = V4_MASKS[len] ?? 0
      const net = ((addr.includes(':') ? Number(net6) : v4(addr)) & mask) >>> 0
      let nets = four.get(len)
      if (nets === undefined) four.set(len, nets = new Map<number, boolean>())
      // `deny` wins a tie: an entry in both lists refuses.
      nets.set(net, (nets.get(net) ?? true) && allowed)
    } else {
      const net = net6 & v6Mask(len)
      let nets = six.get(len)
      if (nets === undefined) six.set(len, nets = new Map<bigint, boolean>())
      nets.set(net, (nets.get(net) ?? true) && allowed)
    }
  }
  for (const entry of lists.allow ?? []) add(entry, true)
  for (const entry of lists.deny ?? []) add(entry, false)
  // Longest prefix first: the most specific entry decides.
  const levels4: Array<Level<number>> = [...four].sort((a, b) => b[0] - a[0]).map(([len, nets]) => ({ mask: V4_MASKS[len] ?? 0, nets }))
  const levels6: Array<Level<bigint>> = [...six].sort((a, b) => b[0] - a[0]).map(([len, nets]) => ({ mask: v6Mask(len), nets }))
  const otherwise = lists.allow === undefined
  const and4 = (n: number, mask: number): number => (n & mask) >>> 0
  const and6 = (n: bigint, mask: bigint): bigint => n & mask
  return address => {
    const family = isIP(address)
    const verdict = family === 4
      ? (levels4.length === 0 ? undefined : lookup(levels4, and4, v4(address)))
      : family === 6 && levels6.length > 0 ? lookup(levels6, and6, v6(address)) : undefined
    return verdict ?? otherwise
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
