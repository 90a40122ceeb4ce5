// Pure SNI selection: which certificate entry answers a server name. No sockets, no TLS objects,
// so it is unit-tested directly; the cert store calls it on every handshake.

/** Lookup tables built once from the certificate entries' server names. */
export interface SniIndex {
  /** Exact name → certificate entry name. */
  readonly exact: ReadonlyMap<string, string>
  /** Wildcard parent (`example.com` for `*.example.com`) → certificate entry name. */
  readonly wildcard: ReadonlyMap<string, string>
}

export type SniMatch = 'exact' | 'wildcard' | 'default'

export interface SniSelection {
  /** Name of the certificate entry to serve, or undefined when the handshake must be refused. */
  certificate: string | undefined
  /** How it was chosen; 'unknown' when refused in strict mode. */
  match: SniMatch | 'unknown'
}

/** Lower-cases, drops one trailing dot. */
export function normalizeServerName (name: string): string {
  const lower = name.toLowerCase()
  return lower.endsWith('.') ? lower.slice(0, -1) : lower
}

/** Builds the lookup tables; the first entry to claim a name keeps it. */
export function buildSniIndex (entries: ReadonlyArray<{ name: string, serverNames: readonly string[] }>): SniIndex {
  const exact = new Map<string, string>()
  const wildcard = new Map<string, string>()
  for (const entry of entries) {
    for (const raw of entry.serverNames) {
      const name = normalizeServerName(raw)
      if (name.startsWith('*.')) {
        if (!wildcard.has(name.slice(2))) wildcard.set(name.slice(2), entry.name)
      } else if (!exact.has(name)) {
        exact.set(name, entry.name)
      }
    }
  }
  return { exact, wildcard }
}

/**
 * Chooses the certificate entry for `serverName`: exact name, then a single-label wildcard
 * (`*.example.com` matches `a.example.com`, not `a.b.example.com` nor `example.com`), then
 * `defaultCertificate` — unless `strict`, where an unknown name gets no certificate.
 */
export function selectCertificate (
  index: SniIndex,
  serverName: string,
  opts: { strict: boolean, defaultCertificate: string | undefined }
): SniSelection {
  const name = normalizeServerName(serverName)
  const exact = index.exact.get(name)
  if (exact !== undefined) return { certificate: exact, match: 'exact' }
  const dot = name.indexOf('.')
  if (dot > 0) {
    const parent = name.slice(dot + 1)
    const wild = index.wildcard.get(parent)
    if (wild !== undefined) return { certificate: wild, match: 'wildcard' }
  }
  if (opts.strict || opts.defaultCertificate === undefined) return { certificate: undefined, match: 'unknown' }
  return { certificate: opts.defaultCertificate, match: 'default' }
}
