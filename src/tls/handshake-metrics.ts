// Handshake duration, the latency keyedge adds to a new connection: from the connection's first
// byte (the ClientHello's start) to the TLS server's `secureConnection`, split by whether the
// session was resumed (no keyd signature) and by the custody of the certificate's key (keyd, or a
// PEM key loaded in process). Failed handshakes are counted by handshake-failures.ts instead.

import type { Socket } from 'node:net'
import type { Server as TlsServer, TLSSocket } from 'node:tls'
import { Histogram, type Registry } from 'prom-client'

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
  readonly #histogram: Histogram<'resumed' | 'custody'>
  /** performance.now() of each raw connection's first byte; weak: a connection that never finishes leaves nothing behind. */
  readonly #firstByte = new WeakMap<Socket, number>()

  constructor (registry: Registry) {
    this.#histogram = (registry.getSingleMetric('edge_tls_handshake_duration_seconds') as Histogram<'resumed' | 'custody'> | undefined) ?? new Histogram({
      name: 'edge_tls_handshake_duration_seconds',
      help: 'Successful TLS handshakes, from the first byte of the connection to the handshake\'s end, by resumed (full, resumed) and key custody (keyd, in_process)',
      labelNames: ['resumed', 'custody'],
      buckets: HANDSHAKE_BUCKETS,
      registers: [registry]
    })
  }

  /** The connection's first bytes arrived (call once, from the front's first `data`). */
  firstByte (socket: Socket): void {
    this.#firstByte.set(socket, performance.now())
  }

  /** `tls` (handed over from a raw socket the front timed) finished its handshake on `server`. */
  secure (server: TlsServer, tls: TLSSocket): void {
    // Node keeps the accepted socket as `_parent` of the TLS socket built on it.
    const parent = (tls as unknown as { _parent?: Socket })._parent
    const t0 = parent === undefined ? undefined : this.#firstByte.get(parent)
    if (t0 === undefined) return
    this.#firstByte.delete(parent as Socket) // an idle connection keeps nothing of the handshake
    this.#histogram.observe({ resumed: tls.isSessionReused() ? 'resumed' : 'full', custody: serverCustody.get(server) ?? 'keyd' }, (performance.now() - t0) / 1000)
  }
}
