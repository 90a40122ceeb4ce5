// Handshake duration, the latency keyedge adds to a new connection: from the connection's first
// byte (the ClientHello's start) to the TLS server's `secureConnection`, split by whether the
// session was resumed (no keyd signature) and by the custody of the certificate's key (keyd, or a
// PEM key loaded in process). Failed handshakes are counted by handshake-failures.ts instead.

import type { Server as TlsServer, TLSSocket } from 'node:tls'
import type { Registry } from 'prom-client'
import { fastHistogram, observe, type HistogramCell } from '../proxy/request-metrics.js'

/** `custody` label values: the proxy's own names (metric label values use underscores). */
export type CustodyLabel = 'keyd' | 'in_process'

/**
 * The custody of each TLS server's certificate entry, set once when the server is built
 * (src/tls/context-cache.ts). An entry with any in-process key counts as in_process.
 */
export const serverCustody = new WeakMap<TlsServer, CustodyLabel>()

/** Buckets: a resumed handshake takes ~0.3 ms on loopback, a full one 1–5 ms, a loaded keyd up to the second. */
export const HANDSHAKE_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]

/** Times handshakes; one instance per TLS front (per worker). */
export class HandshakeTimer {
  /**
   * The four label sets' cells, resolved once: a handshake adds to plain numbers, which
   * prom-client sees when /metrics is scraped (src/proxy/request-metrics.ts).
   */
  readonly #cells: Record<'full' | 'resumed', Record<CustodyLabel, HistogramCell>>

  constructor (registry: Registry) {
    const histogram = fastHistogram(registry, {
      name: 'edge_tls_handshake_duration_seconds',
      help: 'Successful TLS handshakes, from the first byte of the connection to the handshake\'s end, by resumed (full, resumed) and key custody (keyd, in_process)',
      buckets: HANDSHAKE_BUCKETS
    })
    const cells = (resumed: 'full' | 'resumed'): Record<CustodyLabel, HistogramCell> => ({
      keyd: histogram.cell({ resumed, custody: 'keyd' }),
      in_process: histogram.cell({ resumed, custody: 'in_process' })
    })
    this.#cells = { full: cells('full'), resumed: cells('resumed') }
  }

  /** `tls` finished its handshake on `server`; its raw connection's first byte came at `firstByteAt` (performance.now()). */
  observe (server: TlsServer, tls: TLSSocket, firstByteAt: number): void {
    observe(this.#cells[tls.isSessionReused() ? 'resumed' : 'full'][serverCustody.get(server) ?? 'keyd'], (performance.now() - firstByteAt) / 1000)
  }
}
