// The worker's TLS ticket keys, fetched from keyd (never written to disk): the current key encrypts,
// older ones only decrypt until they expire. Fetched at start and once per epoch ahead of the boundary;
// when keyd is unreachable the keys held keep working until they expire.

import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from 'pino'
import { Counter, Gauge, type Registry } from 'prom-client'
import type { TicketKey } from '../../keyd/protocol/ticket-keys.js'
import { errorCode, errorMessage } from '../../lib/errors.js'

/** What the ring needs from a keyd client (keyd/client/client.ts `getTicketKeys`). */
export interface TicketKeySource {
  getTicketKeys: (rotationSeconds: number, previous: number) => Promise<{ keys: TicketKey[], serverTimeMs: number }>
}

export interface TicketKeyRingOptions {
  source: TicketKeySource
  rotationSeconds: number
  /** Keys before the current one that still decrypt. */
  previous: number
  log: Logger
  registry: Registry
  /** Called whenever the encrypting key or the set of usable keys changes. */
  onChange?: () => void
  now?: () => number
}

function metric<T> (registry: Registry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make()
}

/** Ticket keys by name; `current()` encrypts, `byName()` finds the key of an offered ticket. */
export class TicketKeyRing {
  readonly #o: TicketKeyRingOptions
  #keys = new Map<string, TicketKey>()
  #currentName: string | undefined
  #timer: NodeJS.Timeout | undefined
  #boundaryTimer: NodeJS.Timeout | undefined
  #stopped = false
  #failures = 0
  readonly #fetches: Counter<string>
  readonly #held: Gauge<string>

  constructor (o: TicketKeyRingOptions) {
    this.#o = o
    this.#fetches = metric(o.registry, 'edge_tls_ticket_key_fetches_total', () => new Counter({
      name: 'edge_tls_ticket_key_fetches_total', help: 'Ticket key fetches from keyd, by outcome', labelNames: ['outcome'], registers: [o.registry]
    }))
    this.#held = metric(o.registry, 'edge_tls_ticket_keys', () => new Gauge({
      name: 'edge_tls_ticket_keys', help: 'Ticket keys held by this worker (decrypting; one of them encrypts)', registers: [o.registry]
    }))
  }

  #now (): number { return (this.#o.now ?? Date.now)() }

  /** Fetches the keys once (resolving false if keyd did not answer), then keeps them fresh. */
  async start (): Promise<boolean> {
    const ok = await this.refresh()
    this.#schedule()
    return ok
  }

  stop (): void {
    this.#stopped = true
    clearTimeout(this.#timer)
    clearTimeout(this.#boundaryTimer)
  }

  /** One fetch from keyd; on failure the keys held stay. */
  async refresh (): Promise<boolean> {
    try {
      const { keys } = await this.#o.source.getTicketKeys(this.#o.rotationSeconds, this.#o.previous)
      const next = new Map<string, TicketKey>()
      for (const k of keys) next.set(k.key.subarray(0, 16).toString('hex'), k)
      this.#keys = next
      this.#failures = 0
      this.#fetches.inc({ outcome: 'ok' })
      this.#update()
      return true
    } catch (err) {
      this.#failures++
      this.#fetches.inc({ outcome: 'error' })
      this.#o.log.warn({ code: errorCode(err), reason: errorMessage(err).slice(0, 200), held: this.#keys.size },
        'cannot fetch TLS ticket keys from keyd; keeping the keys held until they expire')
      this.#update()
      return false
    }
  }

  /** Drops expired keys, picks the encrypting one, and arms a timer for the next epoch boundary. */
  #update (): void {
    const nowS = this.#now() / 1000
    let changed = false
    for (const [name, k] of this.#keys) {
      if (k.decryptUntil <= nowS) { k.key.fill(0); this.#keys.delete(name); changed = true }
    }
    const current = [...this.#keys].find(([, k]) => k.encryptFrom <= nowS && nowS < k.encryptUntil)?.[0]
    if (current !== this.#currentName) {
      this.#currentName = current
      changed = true
      const k = current === undefined ? undefined : this.#keys.get(current)
      this.#o.log.info({ epoch: k?.epoch, held: this.#keys.size }, current === undefined ? 'no TLS ticket key from keyd is valid now' : 'TLS ticket key epoch')
    }
    this.#held.set(this.#keys.size)
    clearTimeout(this.#boundaryTimer)
    const boundaries = [...this.#keys.values()].flatMap(k => [k.encryptFrom, k.encryptUntil, k.decryptUntil]).filter(t => t > nowS)
    if (boundaries.length > 0 && !this.#stopped) {
      this.#boundaryTimer = setTimeout(() => this.#update(), Math.max(1, Math.min(...boundaries) * 1000 - this.#now() + 5))
      this.#boundaryTimer.unref()
    }
    if (changed) this.#o.onChange?.()
  }

  /**
   * Next fetch: a random moment in the first half of each epoch (the next key is already held, so the
   * boundary itself needs no keyd); after a failure, back off from 1 s up to 30 s.
   */
  #schedule (): void {
    if (this.#stopped) return
    const r = this.#o.rotationSeconds * 1000
    const now = this.#now()
    const delay = this.#failures > 0
      ? Math.min(30_000, 1000 * 2 ** Math.min(this.#failures - 1, 5))
      : (Math.floor(now / r) + 1) * r - now + Math.random() * r / 2
    this.#timer = setTimeout(() => {
      void this.refresh().then(() => this.#schedule())
    }, delay)
    this.#timer.unref()
  }

  /** The key that encrypts new tickets now, if any. */
  current (): TicketKey | undefined {
    return this.#currentName === undefined ? undefined : this.#keys.get(this.#currentName)
  }

  /** The still-valid key named by the first 16 bytes of an offered ticket. */
  byName (name: Buffer): TicketKey | undefined {
    const k = this.#keys.get(name.toString('hex'))
    return k !== undefined && k.decryptUntil > this.#now() / 1000 ? k : undefined
  }

  /** Hex names of every key held. */
  names (): string[] {
    return [...this.#keys.keys()]
  }
}

/** Waits up to `ms` for `p`; resolves undefined on timeout. */
export async function within<T> (p: Promise<T>, ms: number): Promise<T | undefined> {
  const ac = new AbortController()
  try {
    return await Promise.race([p, sleep(ms, undefined, { signal: ac.signal, ref: false }).catch(() => undefined)])
  } finally {
    ac.abort()
  }
}
