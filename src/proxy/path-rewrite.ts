// A route's `rewritePrefix`: the matched `pathPrefix` replaced by another prefix before the request
// goes upstream (nginx `proxy_pass http://up/new/;` inside `location /old/`, Envoy `prefix_rewrite`).
// Used by every way a request leaves the proxy (h1-direct/forward.ts, h2-direct.ts, the
// compatibility and gRPC path, WebSocket upgrades over HTTP/1.1 and HTTP/2); the access log keeps
// the client's own path.

import type { RouteConfig } from '../config/types.js'

/**
 * The path to send upstream for `path` (origin form, query included), which `route` matched:
 * unchanged without `rewritePrefix` (one property check).
 */
export function upstreamPath (route: Pick<RouteConfig, 'pathPrefix' | 'rewritePrefix'>, path: string): string {
  const to = route.rewritePrefix
  return to === undefined ? path : rewritePath(route.pathPrefix, to, path)
}

/**
 * `prefix` replaced by `to` at the start of `path`. The slash after the prefix is a boundary, kept
 * whether or not either prefix ends with one, so the join never creates `//` nor glues two
 * segments: with `/api/` → `/v2` (or `/v2/`), `/api/users?x=1` goes up as `/v2/users?x=1`. The exact
 * prefix (`/api` of `/api`, query kept) becomes `to` as written: `/api?x=1` → `/?x=1` with `to`
 * `/`. `to` starts with `/` (checked at load), so the result always does.
 */
export function rewritePath (prefix: string, to: string, path: string): string {
  // The matched prefix without its trailing slash: what follows it is '', a query, or '/…'.
  const from = prefix.endsWith('/') ? prefix.slice(0, -1) : prefix
  // The router matched this prefix; anything else (never seen) goes on as it came.
  if (!path.startsWith(from)) return path
  const rest = path.slice(from.length)
  if (rest.charCodeAt(0) !== 0x2f) return to + rest
  return (to.endsWith('/') ? to.slice(0, -1) : to) + rest
}
