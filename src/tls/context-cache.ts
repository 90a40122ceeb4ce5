// The TLS servers (one OpenSSL context each) of the certificate entries a worker has been asked
// for: built on the first ClientHello that selects an entry, per resumption variant, and kept in a
// least-recently-used set of at most `tls.contextCacheSize` entries. An evicted entry's server keeps
// serving the connections it already has; the next ClientHello for it builds a new one. A commit
// of the certificate store drops the servers of changed and removed entries (all of them when the
// context settings changed); unchanged entries keep theirs across reloads.

import type { Server as TlsServer, TLSSocket, TlsOptions } from 'node:tls'
import type { Logger } from 'pino'
import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import { SecureContextError } from '../errors.js'
import type { CheckedEntry } from './cert-check.js'
import type { CertStore, StoreChange } from './cert-store.js'
import { tagConnection } from './client-auth.js'
import type { OcspStapler } from './ocsp-stapler.js'
import type { Variant } from './resumption.js'
import { safeReason } from './secure-context.js'
import { serverCustody } from './handshake-metrics.js'

function metric<T> (registry: Registry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make()
}

export interface ContextCacheOptions {
  store: CertStore
  /** Entries whose servers are kept (least recently used ones go first). */
  maxEntries: number
  registry: Registry
  log: Logger
  /** Builds the TLS server of an entry for a resumption variant from its options (context, and client certificates). */
  makeServer: (options: TlsOptions, variant: Variant) => TlsServer
  /** Staples OCSP responses on the servers built (fetching starts when an entry is first built; dropped with its servers). */
  stapler?: OcspStapler
}

/** Built TLS servers by certificate entry (checked version) and resumption variant, LRU-bounded. */
export class ContextCache {
  readonly #o: ContextCacheOptions
  /** Servers by entry id; Map order is recency (the first key is the least recently used). */
  readonly #lru = new Map<number, Map<string, TlsServer>>()
  #max: number
  readonly #built: Counter<string>
  readonly #held: Gauge<string>
  readonly #evicted: Counter<string>
  readonly #failed: Counter<string>
  readonly #seconds: Histogram<string>
  readonly #clientCerts: Counter<string>

  constructor (o: ContextCacheOptions) {
    this.#o = o
    this.#max = Math.max(1, o.maxEntries)
    const r = o.registry
    this.#built = metric(r, 'edge_tls_contexts_built_total', () => new Counter({
      name: 'edge_tls_contexts_built_total', help: 'TLS contexts built (one per certificate entry and resumption variant, on the first ClientHello that needs it)', registers: [r]
    }))
    this.#held = metric(r, 'edge_tls_contexts_cached', () => new Gauge({
      name: 'edge_tls_contexts_cached', help: 'TLS contexts held for new connections (at most tls.contextCacheSize entries per worker)', registers: [r]
    }))
    this.#evicted = metric(r, 'edge_tls_context_evictions_total', () => new Counter({
      name: 'edge_tls_context_evictions_total', help: 'Certificate entries whose TLS contexts were dropped, least recently used first, to stay within tls.contextCacheSize', registers: [r]
    }))
    this.#failed = metric(r, 'edge_tls_context_build_failures_total', () => new Counter({
      name: 'edge_tls_context_build_failures_total', help: 'TLS contexts that could not be built on demand (the connection was closed)', registers: [r]
    }))
    this.#seconds = metric(r, 'edge_tls_context_build_seconds', () => new Histogram({
      name: 'edge_tls_context_build_seconds',
      help: 'Time to build a TLS context on demand: what the first ClientHello of a name waits for',
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5],
      registers: [r]
    }))
    this.#clientCerts = metric(r, 'edge_tls_client_certificates_total', () => new Counter({
      name: 'edge_tls_client_certificates_total',
      help: 'Handshakes completed on certificate entries with clientAuth, by client certificate result: success (verified), none (not sent), failed (sent, not verified: request mode). Refusals are in edge_tls_handshake_failures_total{reason="client_certificate"}',
      labelNames: ['result'],
      registers: [r]
    }))
    this.#held.set(0)
    o.store.onCommit(change => this.#forget(change))
  }

  /** TLS contexts held. */
  get size (): number {
    let n = 0
    for (const servers of this.#lru.values()) n += servers.size
    return n
  }

  /** Changes the bound (a reload of `tls.contextCacheSize`); evicts down to it. */
  resize (maxEntries: number): void {
    this.#max = Math.max(1, maxEntries)
    this.#evict()
  }

  /**
   * The TLS server of `entry` for `variant`, built now if needed.
   * @throws SecureContextError (EDGE_ERR_SECURE_CONTEXT) when it cannot be built (a key reference
   *   that no longer loads: keyd unreachable or the key gone).
   */
  serverFor (entry: CheckedEntry, variant: Variant): TlsServer {
    let servers = this.#lru.get(entry.id)
    if (servers !== undefined) {
      const hit = servers.get(variant.id)
      this.#lru.delete(entry.id)
      this.#lru.set(entry.id, servers)
      if (hit !== undefined) return hit
    }
    const t0 = process.hrtime.bigint()
    let server: TlsServer
    try {
      server = this.#o.makeServer(this.#o.store.contextOptions(entry), variant)
    } catch (err) {
      this.#failed.inc()
      throw err instanceof SecureContextError ? err : new SecureContextError(entry.name, `cannot build the TLS context (${safeReason(err)})`, { cause: err })
    }
    this.#seconds.observe(Number(process.hrtime.bigint() - t0) / 1e9)
    const clientAuth = this.#o.store.clientAuth(entry)
    if (clientAuth !== undefined) {
      // Before any request is read: the forwarder finds the identity on the socket.
      server.on('secureConnection', (socket: TLSSocket) => {
        const { verify } = tagConnection(socket, clientAuth.config)
        this.#clientCerts.inc({ result: verify === 'SUCCESS' ? 'success' : verify === 'NONE' ? 'none' : 'failed' })
      })
    }
    this.#o.stapler?.attach(entry, server)
    this.#built.inc()
    serverCustody.set(server, entry.pairs.every(p => p.custody === 'keyd') ? 'keyd' : 'in_process')
    if (servers === undefined) {
      servers = new Map()
      this.#lru.set(entry.id, servers)
    }
    servers.set(variant.id, server)
    this.#held.inc()
    this.#evict()
    return server
  }

  /** Drops every built server (a reload that changes what they are built with, e.g. OCSP stapling turned on). */
  dropAll (): void {
    for (const id of [...this.#lru.keys()]) this.#drop(id)
  }

  #evict (): void {
    for (const id of this.#lru.keys()) {
      if (this.#lru.size <= this.#max) return
      this.#drop(id)
      this.#evicted.inc()
    }
  }

  #drop (id: number): void {
    const servers = this.#lru.get(id)
    if (servers === undefined) return
    this.#lru.delete(id)
    this.#held.dec(servers.size)
    this.#o.stapler?.release(id)
  }

  #forget (change: StoreChange): void {
    if (change.tlsChanged) {
      this.dropAll()
      return
    }
    for (const id of change.dropped) this.#drop(id)
  }
}
