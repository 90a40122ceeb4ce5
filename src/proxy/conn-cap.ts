// The worker's cap on open client connections (`limits.maxConnections`), as nginx's
// worker_connections and HAProxy's maxconn: the per-client limits cannot bound a flood from many
// addresses, and past the worker's open-file limit every new socket fails, the upstream
// connections of the clients already served included (their requests would get 502s).
//
// At the cap a new connection first takes the place of an idle one (no request in flight: an
// HTTP/1.1 keep-alive connection, or an HTTP/2 session without open streams, oldest first), as
// nginx reuses its idle keep-alive connections when it runs out; only when every connection is
// busy (or still in its handshake) is the new one closed at accept, before a byte is read.

import { readFileSync } from 'node:fs'
import type { Logger } from 'pino'
import { Counter, Gauge, type Registry } from 'prom-client'
import { refusedCounter } from './conn-limits.js'

/**
 * File descriptors kept out of the automatic cap before halving: the listeners, the access log,
 * the keyd socket, health checks and the like.
 */
const RESERVED_FDS = 256

/**
 * The soft "Max open files" limit in a /proc/PID/limits text (Node raises it to the hard limit at
 * start); undefined when it is absent or unlimited.
 */
export function openFileLimit (limitsText: string): number | undefined {
  const m = /^Max open files\s+(\d+|unlimited)\s/m.exec(limitsText)
  if (m === null || m[1] === 'unlimited') return undefined
  return Number(m[1])
}

/**
 * The cap that `maxConnections: 0` stands for: half the open-file limit left after a reserve, since
 * every proxied connection may hold an upstream socket besides its own (HAProxy sizes maxconn the
 * same way). Undefined (no cap) when the limit is unknown (no /proc).
 */
export function automaticCap (fdLimit: number | undefined): number | undefined {
  if (fdLimit === undefined) return undefined
  return Math.max(1, Math.floor((fdLimit - RESERVED_FDS) / 2))
}

function ownOpenFileLimit (): number | undefined {
  try {
    return openFileLimit(readFileSync('/proc/self/limits', 'utf8'))
  } catch {
    return undefined
  }
}

export interface ConnectionCapOptions {
  /** `limits.maxConnections`: 0 for the automatic cap. */
  maxConnections: number
  registry: Registry
  log: Logger
  /** Closes one idle connection to make room; false when none is idle. */
  reclaimIdle: () => boolean
  /** The worker's open-file limit (default: read from /proc/self/limits). */
  fdLimit?: number
}

/** Refusals are warned about at most this often (the rest are counted). */
const WARN_EVERY_MS = 10_000

/** Counts a worker's open client connections against its cap; `admit` at accept, `release` at close. */
export class ConnectionCap {
  #open = 0
  #max: number | undefined
  readonly #fdLimit: number | undefined
  readonly #o: ConnectionCapOptions
  readonly #refused: Counter<string>
  readonly #reclaimed: Counter
  #lastWarn = -Infinity
  #refusedSinceWarn = 0

  constructor (o: ConnectionCapOptions) {
    this.#o = o
    this.#fdLimit = o.fdLimit ?? ownOpenFileLimit()
    this.#max = this.#resolve(o.maxConnections)
    this.#refused = refusedCounter(o.registry)
    this.#reclaimed = new Counter({
      name: 'edge_connections_reclaimed_total',
      help: 'Idle client connections (no request in flight) closed to make room for a new one at limits.maxConnections',
      registers: [o.registry]
    })
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const cap = this
    new Gauge({
      name: 'edge_connections_open',
      help: 'Client connections open in this worker, from accept to close (handshakes in progress included)',
      registers: [o.registry],
      collect () { this.set(cap.#open) }
    })
    new Gauge({
      name: 'edge_connections_max',
      help: 'The cap on open client connections in force in this worker (limits.maxConnections, or the automatic cap); 0: none',
      registers: [o.registry],
      collect () { this.set(cap.#max ?? 0) }
    })
  }

  #resolve (configured: number): number | undefined {
    return configured > 0 ? configured : automaticCap(this.#fdLimit)
  }

  /** A new `limits.maxConnections` (a config reload), for the connections accepted from now on. */
  update (maxConnections: number): void {
    this.#max = this.#resolve(maxConnections)
  }

  /** The cap in force; undefined: none. */
  get max (): number | undefined {
    return this.#max
  }

  /** Connections admitted and not yet released. */
  get open (): number {
    return this.#open
  }

  /**
   * Admits a new connection, closing an idle one first when at the cap; false (counted, warned at
   * most every 10 s) when every connection is busy. An admitted connection is released once, when
   * it closes.
   */
  admit (): boolean {
    const max = this.#max
    if (max !== undefined && this.#open >= max) {
      if (!this.#o.reclaimIdle()) {
        this.#refuse(max)
        return false
      }
      this.#reclaimed.inc()
    }
    this.#open++
    return true
  }

  release (): void {
    this.#open--
  }

  #refuse (max: number): void {
    this.#refused.inc({ limit: 'max_connections' })
    this.#refusedSinceWarn++
    const now = performance.now()
    if (now - this.#lastWarn < WARN_EVERY_MS) return
    this.#o.log.warn({ maxConnections: max, refused: this.#refusedSinceWarn }, 'at limits.maxConnections with no idle connection to close: new connections refused')
    this.#lastWarn = now
    this.#refusedSinceWarn = 0
  }
}
