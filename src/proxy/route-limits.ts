// Per-route request limits: the request body's size (413), the request rate per client address
// (a token bucket per route and address, 429 with Retry-After; WebSocket upgrades take a token like
// any request) and the WebSockets a client address holds open on a route (429). Counted per worker,
// like the connection limits; every hit is counted in `edge_route_limit_hits_total{limit}`.

import { Counter, type Registry } from 'prom-client'
import type { RouteConfig } from '../config/types.js'

/** Buckets kept per route at most; past it the full (idle) ones are dropped first, then the oldest. */
export const MAX_BUCKETS_PER_ROUTE = 100_000

export type LimitKind = 'body_size' | 'rate' | 'websockets' | 'address'

interface Bucket { tokens: number, at: number }

/** The verdict on a request's admission: ok, or refused with the seconds to wait. */
export type Admission = { ok: true } | { ok: false, retryAfterSeconds: number }

export interface RouteLimits {
  /** Takes a token of `route`'s bucket for `client`; refused when it is empty. */
  admit: (route: RouteConfig, client: string) => Admission
  /** True when a declared body length is over `route.maxBodyBytes`. */
  tooLarge: (route: RouteConfig, length: number) => boolean
  /**
   * Takes one of `route`'s WebSocket places for `client` (`webSocketsPerClient`): a function that
   * gives it back (call it once, when the WebSocket ends), or undefined when the client holds them all.
   */
  openWebSocket: (route: RouteConfig, client: string) => (() => void) | undefined
  /** Counts one hit of a limit. */
  hit: (kind: LimitKind) => void
}

/**
 * Open WebSockets are counted by the route's host and path prefix, not by its config object: a
 * reload replaces every route object, and a client must not get a fresh allowance from one while
 * its WebSockets of the old config stay open.
 */
function routeKey (route: RouteConfig): string {
  return `${route.host}\0${route.pathPrefix}`
}

/** Builds the limits of one worker; `now` (ms) is for tests. */
export function createRouteLimits (opts: { registry: Registry, now?: () => number }): RouteLimits {
  const now = opts.now ?? (() => performance.now())
  const hits = (opts.registry.getSingleMetric('edge_route_limit_hits_total') as Counter<string> | undefined) ??
    new Counter({ name: 'edge_route_limit_hits_total', help: 'Requests refused by a route limit: body_size (413), rate (429), websockets (429), address (403: the route\'s allow/deny lists)', labelNames: ['limit'], registers: [opts.registry] })
  const buckets = new WeakMap<RouteConfig, Map<string, Bucket>>()
  // Per route key, per client address: WebSockets open now (entries at 0 are removed).
  const openSockets = new Map<string, Map<string, number>>()

  function prune (map: Map<string, Bucket>, rate: number, size: number, t: number): void {
    for (const [key, b] of map) if (b.tokens + (t - b.at) / 1000 * rate >= size) map.delete(key)
    // Still full of busy clients: drop the oldest (Map keeps insertion order).
    for (const key of map.keys()) {
      if (map.size < MAX_BUCKETS_PER_ROUTE) break
      map.delete(key)
    }
  }

  return {
    admit (route, client) {
      const rate = route.requestsPerSecondPerClient
      if (rate === 0) return { ok: true }
      const size = route.requestBurstPerClient > 0 ? route.requestBurstPerClient : Math.max(1, 2 * rate)
      let map = buckets.get(route)
      if (map === undefined) buckets.set(route, map = new Map<string, Bucket>())
      const t = now()
      let b = map.get(client)
      if (b === undefined) {
        if (map.size >= MAX_BUCKETS_PER_ROUTE) prune(map, rate, size, t)
        b = { tokens: size, at: t }
        map.set(client, b)
      } else {
        b.tokens = Math.min(size, b.tokens + (t - b.at) / 1000 * rate)
        b.at = t
      }
      if (b.tokens >= 1) {
        b.tokens -= 1
        return { ok: true }
      }
      hits.inc({ limit: 'rate' })
      return { ok: false, retryAfterSeconds: Math.max(1, Math.ceil((1 - b.tokens) / rate)) }
    },
    tooLarge: (route, length) => route.maxBodyBytes > 0 && length > route.maxBodyBytes,
    openWebSocket (route, client) {
      const max = route.webSocketsPerClient
      if (max === 0) return () => {}
      const key = routeKey(route)
      let clients = openSockets.get(key)
      if (clients === undefined) openSockets.set(key, clients = new Map<string, number>())
      const n = clients.get(client) ?? 0
      if (n >= max) {
        hits.inc({ limit: 'websockets' })
        return undefined
      }
      clients.set(client, n + 1)
      let released = false
      const held = clients
      return () => {
        if (released) return
        released = true
        const left = (held.get(client) ?? 1) - 1
        if (left > 0) held.set(client, left)
        else held.delete(client)
        if (held.size === 0 && openSockets.get(key) === held) openSockets.delete(key)
      }
    },
    hit: kind => hits.inc({ limit: kind })
  }
}

/** A WebSocket upgrade's admission: the release of its place, or why it is refused (always a 429). */
export type WebSocketAdmission =
  | { ok: true, release: () => void }
  | { ok: false, error: 'rate_limited' | 'too_many_websockets', message: string, retryAfterSeconds?: number }

/**
 * The route limits of a WebSocket upgrade, in order, for both ways one arrives (HTTP/1.1 Upgrade,
 * HTTP/2 extended CONNECT): a token of the route's request bucket, then one of its WebSocket places.
 */
export function admitWebSocket (limits: RouteLimits, route: RouteConfig, client: string): WebSocketAdmission {
  const admission = limits.admit(route, client)
  if (!admission.ok) return { ok: false, error: 'rate_limited', message: 'too many requests from this client address', retryAfterSeconds: admission.retryAfterSeconds }
  const release = limits.openWebSocket(route, client)
  if (release === undefined) return { ok: false, error: 'too_many_websockets', message: 'too many WebSockets open from this client address on this route' }
  return { ok: true, release }
}
