// Decides whether a peer address belongs to a trusted proxy (addresses or CIDRs, IPv4 and IPv6),
// i.e. whether the X-Forwarded-* headers it sends may be believed.

import { BlockList, isIP } from 'node:net'

/** `::ffff:10.0.0.1` → `10.0.0.1`; other addresses unchanged; undefined → ''. */
export function normalizeAddress (address: string | undefined): string {
  if (address === undefined) return ''
  const lower = address.toLowerCase()
  if (lower.startsWith('::ffff:') && isIP(lower.slice(7)) === 4) return lower.slice(7)
  return lower
}

/** A predicate over peer addresses, true for addresses inside any of `entries`. */
export function createTrustMatcher (entries: readonly string[]): (address: string | undefined) => boolean {
  if (entries.length === 0) return () => false
  const list = new BlockList()
  for (const entry of entries) {
    const [addr = '', prefix] = entry.split('/') // split gives at least one part
    const family = isIP(addr) === 6 ? 'ipv6' : 'ipv4'
    if (prefix === undefined) list.addAddress(addr, family)
    else list.addSubnet(addr, Number(prefix), family)
  }
  return (address) => {
    const addr = normalizeAddress(address)
    const family = isIP(addr)
    if (family === 0) return false
    return list.check(addr, family === 6 ? 'ipv6' : 'ipv4')
  }
}
