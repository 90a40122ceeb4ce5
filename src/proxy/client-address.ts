// The client address of a request: the peer's, or, when the peer is a trusted proxy, the nearest
// address in its X-Forwarded-For that is not itself a trusted proxy (the rightmost untrusted hop;
// anything left of it was written by the client and cannot be believed).

import type { IncomingHttpHeaders } from 'node:http'
import { isIP } from 'node:net'
import { normalizeAddress } from './trusted-proxies.js'

/** The address used for the access log and per-client limits. `peer` is already normalized. */
export function clientAddress (headers: IncomingHttpHeaders, peer: string, isTrusted: (address: string) => boolean): string {
  if (!isTrusted(peer)) return peer
  const raw = headers['x-forwarded-for']
  if (raw === undefined) return peer
  const hops = (Array.isArray(raw) ? raw.join(',') : raw).split(',').map(h => normalizeAddress(h.trim()))
  for (let i = hops.length - 1; i >= 0; i--) {
    const hop = hops[i]
    if (hop === undefined || isIP(hop) === 0) return peer
    if (!isTrusted(hop)) return hop
  }
  return hops[0] ?? peer
}
