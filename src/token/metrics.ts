// The token endpoint's Prometheus metrics, registered on the worker's registry (never the global one).
import { Counter, Histogram, type Registry } from 'prom-client'

export interface TokenMetrics {
  issued: Counter<'alg' | 'source'>
  cacheHits: Counter
  coalesced: Counter
  keydSignatures: Counter
  batchSize: Histogram
  rejected: Counter<'reason'>
  requestDuration: Histogram<'outcome'>
  signDuration: Histogram<'phase'>
}

export function tokenMetrics (registry: Registry): TokenMetrics {
  const registers = [registry]
  return {
    issued: new Counter({ name: 'edge_token_issued_total', help: 'Tokens returned to callers, by algorithm and source (signed, cache, coalesced)', labelNames: ['alg', 'source'], registers }),
    cacheHits: new Counter({ name: 'edge_token_cache_hits_total', help: 'Token requests answered from the short-window cache', registers }),
    coalesced: new Counter({ name: 'edge_token_coalesced_total', help: 'Token requests that joined an identical request already being signed', registers }),
    keydSignatures: new Counter({ name: 'edge_token_keyd_signatures_total', help: 'Signatures asked of keyd for tokens', registers }),
    batchSize: new Histogram({ name: 'edge_token_batch_size', help: 'Signatures per keyd call (SIGN_BATCH entries, 1 for SIGN)', buckets: [1, 2, 4, 8, 16, 32, 64], registers }),
    rejected: new Counter({ name: 'edge_token_rejected_total', help: 'Token requests refused, by reason', labelNames: ['reason'], registers }),
    requestDuration: new Histogram({ name: 'edge_token_request_duration_seconds', help: 'POST /token latency, by outcome', labelNames: ['outcome'], buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1], registers }),
    signDuration: new Histogram({ name: 'edge_token_sign_duration_seconds', help: 'Time of a token signature waiting in the queue and in keyd', labelNames: ['phase'], buckets: [0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1], registers })
  }
}
