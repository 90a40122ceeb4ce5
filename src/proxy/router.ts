// Route matching: by host (exact, then `*.domain` single-label wildcard, then `*`), then by the
// longest path prefix; a host level without a matching prefix falls through to the next level.

import type { RouteConfig } from '../config/types.js'
import { prepareAccess } from './route-access.js'

export interface Router {
  /** The route for a request, or undefined (→ 404). `host` may carry a port; `path` a query. */
  match: (host: string, path: string) => RouteConfig | undefined
}

/** `Example.COM.:8443` → `example.com`; `[::1]:8443` → `[::1]`. */
export function normalizeHost (host: string): string {
  let h = host.trim().toLowerCase()
  if (h.startsWith('[')) {
    const end = h.indexOf(']')
    return end === -1 ? h : h.slice(0, end + 1)
  }
  const colon = h.indexOf(':')
  if (colon !== -1) h = h.slice(0, colon)
  return h.endsWith('.') ? h.slice(0, -1) : h
}

/** `/api` matches `/api`, `/api/x`, not `/apix`; `/api/` matches `/api/x`; `/` matches all. */
export function pathMatches (prefix: string, path: string): boolean {
  if (prefix === '/' || prefix.endsWith('/')) return path.startsWith(prefix)
  return path === prefix || path.startsWith(`${prefix}/`)
}

function longestFirst (routes: RouteConfig[]): RouteConfig[] {
  return routes.sort((a, b) => b.pathPrefix.length - a.pathPrefix.length)
}

function push (map: Map<string, RouteConfig[]>, key: string, route: RouteConfig): void {
  const list = map.get(key)
  if (list === undefined) map.set(key, [route])
  else list.push(route)
}

/** Builds a router over `routes`; configuration order breaks no ties (host and prefix are unique). */
export function createRouter (routes: readonly RouteConfig[]): Router {
  const exact = new Map<string, RouteConfig[]>()
  const wildcard = new Map<string, RouteConfig[]>()
  const any: RouteConfig[] = []
  for (const route of routes) {
    // The route's allow/deny lists, compiled once per config (route-access.ts).
    prepareAccess(route)
    if (route.host === '*') any.push(route)
    else if (route.host.startsWith('*.')) push(wildcard, route.host.slice(2), route)
    else push(exact, route.host, route)
  }
  for (const list of [...exact.values(), ...wildcard.values(), any]) longestFirst(list)

  const pick = (list: RouteConfig[] | undefined, path: string): RouteConfig | undefined =>
    list?.find(route => pathMatches(route.pathPrefix, path))

  return {
    match (host, rawPath) {
      const name = normalizeHost(host)
      const q = rawPath.search(/[?#]/)
      const path = q === -1 ? rawPath : rawPath.slice(0, q)
      const dot = name.indexOf('.')
      return pick(exact.get(name), path) ??
        (dot > 0 ? pick(wildcard.get(name.slice(dot + 1)), path) : undefined) ??
        pick(any, path)
    }
  }
}
