// Header rewriting between client and upstream: hop-by-hop headers removed both ways,
// X-Forwarded-For/Proto/Host set, and incoming forwarding headers believed only from trusted peers.
// Client-certificate identity headers are never taken from the client, only set from its handshake.

import type { IncomingHttpHeaders } from 'node:http'
import { clientIdentityHeaders, isClientCertHeader } from '../tls/client-auth.js'

/** Hop-by-hop headers (RFC 9110 §7.6.1, plus legacy ones); any `proxy-*` header is also dropped. */
export const HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'http2-settings'
])

export type HeaderValue = string | string[]
export type OutgoingHeaders = Record<string, HeaderValue>

function headerList (value: HeaderValue | undefined): string[] {
  const out: string[] = []
  if (value === undefined) return out
  for (const v of Array.isArray(value) ? value : [value]) {
    for (const part of v.split(',')) {
      const name = part.trim().toLowerCase()
      if (name !== '') out.push(name)
    }
  }
  return out
}

/** The names a Connection header lists; its two common values (every keep-alive upstream answer carries one) as shared sets. */
const KEEP_ALIVE: ReadonlySet<string> = new Set(['keep-alive'])
const CLOSE: ReadonlySet<string> = new Set(['close'])
function connectionNames (value: HeaderValue): ReadonlySet<string> {
  switch (value) {
    case 'keep-alive': case 'Keep-Alive': return KEEP_ALIVE
    case 'close': case 'Close': return CLOSE
    default: return new Set(headerList(value))
  }
}

/**
 * Copies `headers` without hop-by-hop ones (and those named by Connection) nor HTTP/2 pseudo-headers.
 * Runs twice per proxied request (both ways): a plain loop over the names, no entry arrays, and no
 * Set unless a Connection header names some.
 */
export function withoutHopByHop (headers: Record<string, HeaderValue | undefined>): OutgoingHeaders {
  const named = headers.connection === undefined ? null : connectionNames(headers.connection)
  const out: OutgoingHeaders = {}
  for (const name of Object.keys(headers)) {
    const value = headers[name]
    if (value === undefined) continue
    const lower = name.toLowerCase()
    if (lower.startsWith(':') || HOP_BY_HOP.has(lower) || named?.has(lower) === true || lower.startsWith('proxy-')) continue
    out[lower] = value
  }
  return out
}

function first (value: HeaderValue | undefined): string | undefined {
  return Array.isArray(value) ? value.join(', ') : value
}

/** A route's changes to its requests or responses (`requestHeaders`, `responseHeaders`). */
export interface HeaderRules {
  set: ReadonlyArray<{ name: string, value: string }>
  remove: readonly string[]
}

/** Removes, then sets (replacing), as a route's rules say. */
function applyRules (out: OutgoingHeaders, rules: HeaderRules): void {
  for (const name of rules.remove) delete out[name]
  for (const { name, value } of rules.set) out[name] = value
}

/**
 * Headers to send upstream for a client request. `host` is the client's Host (or :authority),
 * `upstreamHost` the route's choice of Host for the target (`client`, `target`: no Host, or a name),
 * `peer` the client's address, `trusted` whether that peer is a trusted proxy, `socket` the
 * request's TLS socket (`req.socket`), whose client certificate identity is added when its
 * certificate entry has `clientAuth`. Client-certificate headers sent by the client are always
 * removed, even from trusted peers.
 */
export function upstreamRequestHeaders (
  incoming: IncomingHttpHeaders,
  ctx: { host: string, peer: string, trusted: boolean, socket?: object, rules?: HeaderRules, upstreamHost?: string }
): OutgoingHeaders {
  const out = withoutHopByHop(incoming)
  for (const name of Object.keys(out)) if (isClientCertHeader(name)) delete out[name]
  // The route's rules before the verified identity: a configured value never stands in for it.
  if (ctx.rules !== undefined) applyRules(out, ctx.rules)
  Object.assign(out, clientIdentityHeaders(ctx.socket))
  // undici refuses Expect; Node already answered 100-continue to the client.
  delete out.expect
  const prior = {
    for: first(incoming['x-forwarded-for']),
    proto: first(incoming['x-forwarded-proto']),
    host: first(incoming['x-forwarded-host'])
  }
  if (!ctx.trusted) {
    for (const name of Object.keys(out)) {
      if (name.startsWith('x-forwarded-') || name === 'forwarded' || name === 'x-real-ip') delete out[name]
    }
  }
  // The route's `upstreamHost`: the client's Host (default); the target's, by leaving Host out so each
  // connection names its own target (undici's pools, h2-upstream's :authority, the WebSocket paths);
  // or a fixed name. X-Forwarded-Host below keeps the client's either way.
  const wanted = ctx.upstreamHost
  if (wanted === undefined || wanted === 'client') out.host = ctx.host
  else if (wanted === 'target') delete out.host
  else out.host = wanted
  out['x-forwarded-for'] = ctx.trusted && prior.for !== undefined && prior.for.trim() !== ''
    ? `${prior.for}, ${ctx.peer}`
    : ctx.peer
  out['x-forwarded-proto'] = ctx.trusted && prior.proto !== undefined ? prior.proto : 'https'
  out['x-forwarded-host'] = ctx.trusted && prior.host !== undefined ? prior.host : ctx.host
  return out
}

/** The name a route's `upstreamHost` fixes, or undefined for `client` and `target` (what a health check, which has no client, then sends: the target's own). */
export function fixedUpstreamHost (upstreamHost: string): string | undefined {
  return upstreamHost === 'client' || upstreamHost === 'target' ? undefined : upstreamHost
}

/**
 * Headers to send to the client for an upstream response: without hop-by-hop ones, then the route's
 * `responseHeaders` (removed first, then set, replacing the upstream's own of that name).
 */
export function clientResponseHeaders (upstream: Record<string, HeaderValue | undefined>, rules?: HeaderRules): OutgoingHeaders {
  const out = withoutHopByHop(upstream)
  if (rules !== undefined) applyRules(out, rules)
  return out
}

/** The authority a request names, or why it must be refused with 400. */
export type Authority = { ok: true, host: string } | { ok: false, reason: string }

/**
 * The request's authority: `Host` (HTTP/1.1), `:authority` or else `Host` (HTTP/2). Refused: no
 * authority, more than one Host (RFC 9112 §3.2), an HTTP/2 Host that differs from :authority
 * (RFC 9113 §8.3.1). `rawHeaders` is Node's flat name/value list: Node keeps only the first Host.
 */
export function requestAuthority (headers: IncomingHttpHeaders, rawHeaders: readonly string[]): Authority {
  let hosts = 0
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i]?.toLowerCase() === 'host') hosts++
  if (hosts > 1) return { ok: false, reason: 'the request has more than one Host header' }
  const authority = headers[':authority'] as string | undefined
  const host = headers.host
  if (authority !== undefined && host !== undefined && authority.toLowerCase() !== host.toLowerCase()) {
    return { ok: false, reason: 'the Host header differs from :authority' }
  }
  const value = authority ?? host
  if (value === undefined || value === '') return { ok: false, reason: 'the request has no Host' }
  return { ok: true, host: value }
}
