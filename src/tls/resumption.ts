// Session resumption for one worker: which TLS server variant a ClientHello goes to (the one holding
// the key its ticket names, else the current key), the shared TLS 1.2 session-ID cache, and the
// handshake counters. Node holds one ticket key per server, so each live key gets its own servers.

import { constants } from 'node:crypto'
import type { Server as TlsServer, TLSSocket } from 'node:tls'
import type { Logger } from 'pino'
import { Counter, type Registry } from 'prom-client'
import type { EdgeConfig } from '../config/types.js'
import { KeydClient } from '../../keyd/client/client.js'
import { TicketKeyRing, within } from './ticket-keys.js'
import { sessionStore, type SessionStore } from './session-cache.js'
import { handshakeWindow } from './resumption-ratio.js'

/** How a TLS server of one certificate entry is set up for resumption. */
export interface Variant {
  /** Stable id: the ticket key name (hex), `off` (no tickets) or `node` (Node's own random key); `+cache` with the session-ID cache. */
  id: string
  /** Ticket options merged into the certificate's secure-context options. */
  options: { ticketKeys?: Buffer, secureOptions?: number }
  /** Whether this server answers newSession/resumeSession (handshakes that will be TLS 1.2). */
  cache: boolean
}

export interface Resumption {
  /** The variant for a ClientHello (its ticket's key name, whether it offers TLS 1.3). */
  variantFor: (hello: { ticketKeyName?: Buffer, offersTls13?: boolean }) => Variant
  /** The variant of a ClientHello that offers no ticket and TLS 1.3 (servers built ahead of traffic). */
  defaultVariant: () => Variant
  /** Adds the session-cache listeners (for `cache` variants) and the handshake counter to a new server. */
  attach: (server: TlsServer, variant: Variant) => void
  /** Whether servers of this variant may still get new connections (their key is still held). */
  isLive: (id: string) => boolean
  /** Called when ticket keys change, so that servers of expired keys can be dropped. */
  onChange: (fn: () => void) => void
  close: () => void
}

function counter (registry: Registry, name: string, help: string, labelNames: string[]): Counter<string> {
  return (registry.getSingleMetric(name) as Counter<string> | undefined) ?? new Counter({ name, help, labelNames, registers: [registry] })
}

/**
 * Sets up resumption from `config.tls` (and ticket keys from `config.keyd`, when present). Waits at
 * most `config.keyd.timeoutMs` for the first keys; without them tickets use Node's per-server key.
 */
export async function startResumption (opts: { config: EdgeConfig, log: Logger, registry: Registry }): Promise<Resumption> {
  const { config, log, registry } = opts
  const tls = config.tls
  const handshakes = counter(registry, 'edge_tls_handshakes_total', 'TLS handshakes completed, by protocol version and whether a session was resumed', ['version', 'resumed'])
  const lookups = counter(registry, 'edge_tls_session_cache_lookups_total', 'TLS 1.2 session-ID cache lookups, by outcome (hit, miss)', ['outcome'])
  const recent = handshakeWindow(registry)
  const dispatch = counter(registry, 'edge_tls_ticket_dispatch_total', 'ClientHellos by the ticket key their ticket names: current, previous (held, decrypt only), unknown, none', ['key'])
  let listeners: Array<() => void> = []

  if (tls.sessionTickets && tls.ticketPreviousKeys * tls.ticketRotationSeconds < tls.sessionTimeoutSeconds) {
    log.warn({ ticketPreviousKeys: tls.ticketPreviousKeys, ticketRotationSeconds: tls.ticketRotationSeconds, sessionTimeoutSeconds: tls.sessionTimeoutSeconds },
      'tickets can outlive their key: each ticket-key rotation will cost some full handshakes (keep ticketPreviousKeys x ticketRotationSeconds >= sessionTimeoutSeconds)')
  }
  let ring: TicketKeyRing | undefined
  let client: KeydClient | undefined
  if (tls.sessionTickets && config.keyd !== undefined) {
    client = new KeydClient({ socketPath: config.keyd.socket, clientName: config.keyd.clientName, secretFile: config.keyd.secretFile, timeoutMs: config.keyd.timeoutMs })
    ring = new TicketKeyRing({
      source: client,
      rotationSeconds: tls.ticketRotationSeconds,
      previous: tls.ticketPreviousKeys,
      log,
      registry,
      onChange: () => { for (const fn of listeners) fn() }
    })
    await within(ring.start(), config.keyd.timeoutMs + 100)
  }
  // `current`: every ticket goes to the current key's server, as with one key per server (for comparison).
  const byName = (process.env.KEYEDGE_TICKET_DISPATCH ?? 'name') !== 'current'
  const cacheOn = tls.sessionCacheSize > 0 && tls.minVersion === 'TLSv1.2'
  const store: SessionStore | undefined = cacheOn ? sessionStore({ maxEntries: tls.sessionCacheSize, ttlSeconds: tls.sessionTimeoutSeconds }) : undefined

  const variantFor = (hello: { ticketKeyName?: Buffer, offersTls13?: boolean }, count = true): Variant => {
    const cache = store !== undefined && (tls.maxVersion === 'TLSv1.2' || hello.offersTls13 !== true)
    const suffix = cache ? '+cache' : ''
    if (!tls.sessionTickets) return { id: `off${suffix}`, options: { secureOptions: constants.SSL_OP_NO_TICKET }, cache }
    const named = hello.ticketKeyName === undefined || !byName ? undefined : ring?.byName(hello.ticketKeyName)
    const current = ring?.current()
    if (count) dispatch.inc({ key: hello.ticketKeyName === undefined ? 'none' : named === undefined ? 'unknown' : named === current ? 'current' : 'previous' })
    const key = named ?? current
    if (key === undefined) return { id: `node${suffix}`, options: {}, cache }
    // Each server gets its own copy: the ring wipes a key when it expires.
    return { id: key.key.subarray(0, 16).toString('hex') + suffix, options: { ticketKeys: Buffer.from(key.key) }, cache }
  }

  const attach = (server: TlsServer, variant: Variant): void => {
    server.on('secureConnection', (socket: TLSSocket) => {
      const resumed = socket.isSessionReused()
      handshakes.inc({ version: socket.getProtocol() ?? 'unknown', resumed: String(resumed) })
      recent.record(resumed)
    })
    if (!variant.cache || store === undefined) return
    server.on('newSession', (id: Buffer, data: Buffer, done: () => void) => {
      store.set(id, data)
      done()
    })
    server.on('resumeSession', (id: Buffer, done: (err: Error | null, data: Buffer | null) => void) => {
      store.get(id).then(data => {
        lookups.inc({ outcome: data === undefined ? 'miss' : 'hit' })
        done(null, data ?? null)
      }, () => done(null, null))
    })
  }

  const isLive = (id: string): boolean => {
    const base = id.replace(/\+cache$/, '')
    return base === 'off' || base === 'node' || ring === undefined || ring.names().includes(base)
  }

  return {
    variantFor,
    defaultVariant: () => variantFor({ offersTls13: true }, false),
    attach,
    isLive,
    onChange: fn => { listeners.push(fn) },
    close: () => {
      ring?.stop()
      client?.close()
      store?.close()
      listeners = []
    }
  }
}
