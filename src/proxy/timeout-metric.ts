// The counter of connections and requests cut by a timeout. The TLS front and the HTTP front both
// count into it, each getting or creating it on the worker's registry, whichever comes first.

import { Counter, type Registry } from 'prom-client'

export const TIMEOUTS_METRIC = 'edge_timeouts_total'

/**
 * What timed out: `request_headers` (a request head not complete in `timeouts.requestHeadersMs`),
 * `keepalive_idle` (HTTP/1.1 connection idle between requests), `http2_idle` (HTTP/2 session without
 * a stream), `request_body` (a request body stalled); the TLS front adds its own kinds.
 */
export type TimeoutKind = 'request_headers' | 'keepalive_idle' | 'http2_idle' | 'request_body' | (string & {})

/** `edge_timeouts_total{kind}` on `registry`, created on first use. */
export function timeoutCounter (registry: Registry): Counter<'kind'> {
  return (registry.getSingleMetric(TIMEOUTS_METRIC) as Counter<'kind'> | undefined) ??
    new Counter({
      name: TIMEOUTS_METRIC,
      help: 'Connections or requests closed by a timeout, by kind (docs/configuration.md#timeouts)',
      labelNames: ['kind'],
      registers: [registry]
    })
}
