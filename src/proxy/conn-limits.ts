// Per-client-address limits on the listener, checked before a byte is read: how many connections
// one client address may hold open, and how fast it may open new ones (a token bucket). Counted per
// worker: each worker accepts on its own (the shared socket, or its own with reuseport), so across N workers a client may hold up to
// N times the limit. A client address is an IPv4 address, or an IPv6 /64 (one subscriber's prefix).

import { isIPv6 } from 'node:net'
import { LRUCache } from 'lru-cache'
import { Counter, type Registry } from 'prom-client'

export interface ConnectionLimitsConfig {
  /** Open connections per client address; 0: no limit. */
  maxConnectionsPerClient: number
  /** New connections per second per client address (token refill rate); 0: no limit. */
  newConnectionsPerSecondPerClient: number
  /** Bucket size: new connections a client may open at once after a quiet period. */
  newConnectionBurstPerClient: number
}

export type Admission = 'ok' | 'connections' | 'rate'

/** Most client addresses whose token bucket is remembered; beyond, the least recent start full again. */
const MAX_BUCKETS = 100_000

/** The key limits count under: IPv4 (also IPv4-mapped IPv6) as is, IPv6 by its /64 prefix. */
export function clientKey (address: string): string {
  if (address.startsWith('::ffff:') && address.includes('.')) return address.slice(7)
  if (!isIPv6(address)) return address
  const [head = '', tail = ''] = address.split('::')
  const left = head === '' ? [] : head.split(':')
  const right = tail === '' ? [] : tail.split(':')
  const groups = [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right]
  return groups.slice(0, 4).map(g => parseInt(g, 16).toString(16)).join(':') + '::/64'
}

/**
 * `edge_connections_refused_total{limit}`, one per registry: the per-client limits and the
 * worker's cap (conn-cap.ts) count in it.
 */
export function refusedCounter (registry: Registry): Counter<string> {
  return (registry.getSingleMetric('edge_connections_refused_total') as Counter<string> | undefined) ?? new Counter({
    name: 'edge_connections_refused_total',
    help: 'New connections closed at accept by a limit: connections_per_client (too many open), new_connections_per_client (opened too fast), max_connections (the worker\'s cap, every connection busy)',
    labelNames: ['limit'],
    registers: [registry]
  })
}

interface Bucket { tokens: number, atMs: number }

/** The listener's per-client limits; `admit` at accept, `release` when that connection closes. */
export class ConnectionLimits {
  #o: ConnectionLimitsConfig
  readonly #open = new Map<string, number>()
  readonly #buckets = new LRUCache<string, Bucket>({ max: MAX_BUCKETS })
  readonly #refused: Counter<string>
  readonly #now: () => number

  constructor (o: ConnectionLimitsConfig & { registry: Registry, now?: () => number }) {
    this.#o = o
    this.#now = o.now ?? (() => performance.now())
    this.#refused = refusedCounter(o.registry)
  }

  /**
   * New limits (a config reload) for the connections accepted from now on. Connections open now
   * stay counted (a lower `maxConnectionsPerClient` refuses new ones until enough have closed) and
   * buckets keep their tokens, capped at the new burst when next refilled.
   */
  update (o: ConnectionLimitsConfig): void {
    this.#o = { maxConnectionsPerClient: o.maxConnectionsPerClient, newConnectionsPerSecondPerClient: o.newConnectionsPerSecondPerClient, newConnectionBurstPerClient: o.newConnectionBurstPerClient }
  }

  /** Whether any limit is on (else admit/release need not be called). */
  get enabled (): boolean {
    return this.#o.maxConnectionsPerClient > 0 || this.#o.newConnectionsPerSecondPerClient > 0
  }

  /**
   * Admits a new connection from `key` (see clientKey) or says which limit refuses it (and counts
   * it). An admitted connection must be released once, when it closes.
   */
  admit (key: string): Admission {
    const open = this.#open.get(key) ?? 0
    const max = this.#o.maxConnectionsPerClient
    if (max > 0 && open >= max) {
      this.#refused.inc({ limit: 'connections_per_client' })
      return 'connections'
    }
    const rate = this.#o.newConnectionsPerSecondPerClient
    if (rate > 0) {
      // 0 = twice the rate (at least 1), the schema's default.
      const burst = this.#o.newConnectionBurstPerClient > 0 ? this.#o.newConnectionBurstPerClient : Math.max(1, 2 * rate)
      const now = this.#now()
      const b = this.#buckets.get(key) ?? { tokens: burst, atMs: now }
      b.tokens = Math.min(burst, b.tokens + (now - b.atMs) * rate / 1000)
      b.atMs = now
      if (b.tokens < 1) {
        this.#buckets.set(key, b)
        this.#refused.inc({ limit: 'new_connections_per_client' })
        return 'rate'
      }
      b.tokens -= 1
      this.#buckets.set(key, b)
    }
    this.#open.set(key, open + 1)
    return 'ok'
  }

  release (key: string): void {
    const open = this.#open.get(key) ?? 0
    if (open <= 1) this.#open.delete(key)
    else this.#open.set(key, open - 1)
  }

  /** Open connections counted for `key` (tests, admin views). */
  openConnections (key: string): number {
    return this.#open.get(key) ?? 0
  }
}
