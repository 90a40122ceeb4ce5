// Session resumption for one worker: session tickets under keyd's ticket keys (every key still held
// decrypts, the current one encrypts, each resumption gets a fresh ticket: src/tls/ticket-callback.ts),
// the TLS 1.2 session-ID cache shared by the workers, and the handshake counters.

import { constants, randomBytes } from 'node:crypto'
import type { Server as TlsServer, TLSSocket } from 'node:tls'
import type { Logger } from 'pino'
import { Counter, type Registry } from 'prom-client'
import type { EdgeConfig } from '../config/types.js'
import { KeydClient } from '../../keyd/client/client.js'
import { TicketKeyRing, within } from './ticket-keys.js'
import { sessionStore, type SessionStore } from './session-cache.js'
import { handshakeWindow } from './resumption-ratio.js'
import { installTicketCallback, ticketKeyCallback, type TicketKeyLookup } from './ticket-callback.js'
import { fastCounter, type CounterCell } from '../proxy/request-metrics.js'

/** How a TLS server of one certificate entry is set up for resumption. */
export interface Variant {
  /** `tickets` or `off`, with `+cache` when the server answers TLS 1.2 session-ID lookups. */
  id: string
  /** Options merged into the certificate's secure-context options. */
  options: { secureOptions: number }
  /** Whether this server answers newSession/resumeSession (handshakes that will be TLS 1.2). */
  cache: boolean
}

export interface Resumption {
  /**
   * The variant for a ClientHello that offers TLS 1.3 or not, and a TLS 1.2 ticket or not;
   * `undefined` when the hello was not read (or could not be): such connections never get the
   * session-ID cache unless every handshake is TLS 1.2.
   */
  variantFor: (hello?: { offersTls13: boolean, offersTicket: boolean }) => Variant
  /** Whether the variant depends on the ClientHello, i.e. the listener must read it to choose. */
  readonly needsHello: boolean
  /** Adds the ticket callback, the session-cache listeners (for `cache` variants) and the handshake counter. */
  attach: (server: TlsServer, variant: Variant) => void
  close: () => void
}

function counter (registry: Registry, name: string, help: string, labelNames: string[]): Counter<string> {
  return (registry.getSingleMetric(name) as Counter<string> | undefined) ?? new Counter({ name, help, labelNames, registers: [registry] })
}

/**
 * Client-initiated renegotiation (TLS 1.2) is refused with a no_renegotiation warning alert, as
 * OpenSSL 3's own server and nginx do: each renegotiation costs the server a full handshake (a
 * keyd signature) for a few bytes from the client. Node otherwise allows it.
 * The server's cipher order (`honorCipherOrder`) puts AES-GCM first; a client that lists
 * ChaCha20-Poly1305 first (a phone without AES instructions) still gets it (PrioritizeChaCha),
 * as it would from a server following the client's order (docs/tls-conformance.md).
 */
const BASE_OPTIONS = constants.SSL_OP_NO_RENEGOTIATION | constants.SSL_OP_PRIORITIZE_CHACHA

/**
 * Sets up resumption from `config.tls` (and ticket keys from `config.keyd`, when present). Waits at
 * most `config.keyd.timeoutMs` for the first keys; until keyd answers, tickets use a random key of
 * this worker (they resume on this worker only).
 */
export async function startResumption (opts: { config: EdgeConfig, log: Logger, registry: Registry }): Promise<Resumption> {
  const { config, log, registry } = opts
  const tls = config.tls
  const handshakes = fastCounter(registry, { name: 'edge_tls_handshakes_total', help: 'TLS handshakes completed, by protocol version and whether a session was resumed', labelNames: ['version', 'resumed'] })
  const lookups = counter(registry, 'edge_tls_session_cache_lookups_total', 'TLS 1.2 session-ID cache lookups, by outcome (hit, miss)', ['outcome'])
  const recent = handshakeWindow(registry)
  const offered = fastCounter(registry, { name: 'edge_tls_tickets_offered_total', help: 'Session tickets offered by clients, by the key that made them: current, previous (held, decrypt only), unknown (not held: full handshake)', labelNames: ['key'] })

  if (tls.sessionTickets && tls.ticketPreviousKeys * tls.ticketRotationSeconds < tls.sessionTimeoutSeconds) {
    log.warn({ ticketPreviousKeys: tls.ticketPreviousKeys, ticketRotationSeconds: tls.ticketRotationSeconds, sessionTimeoutSeconds: tls.sessionTimeoutSeconds },
      'tickets can outlive their key: each ticket-key rotation will cost some full handshakes (keep ticketPreviousKeys x ticketRotationSeconds >= sessionTimeoutSeconds)')
  }
  let ring: TicketKeyRing | undefined
  let client: KeydClient | undefined
  if (tls.sessionTickets && config.keyd !== undefined) {
    client = new KeydClient({ socketPath: config.keyd.socket, clientName: config.keyd.clientName, secretFile: config.keyd.secretFile, timeoutMs: config.keyd.timeoutMs })
    ring = new TicketKeyRing({ source: client, rotationSeconds: tls.ticketRotationSeconds, previous: tls.ticketPreviousKeys, log, registry })
    await within(ring.start(), config.keyd.timeoutMs + 100)
  }
  // This worker's own key: encrypts while keyd has given no valid key (never written anywhere).
  const local = randomBytes(48)
  // `current`: only the current key decrypts, as with one key per server (for comparisons).
  const onlyCurrent = process.env.KEYEDGE_TICKET_DISPATCH === 'current'
  const keys: TicketKeyLookup = {
    current: () => ring?.current()?.key,
    byName: name => {
      const k = ring?.byName(name)
      if (k === undefined) return undefined
      const current = k === ring?.current()
      return onlyCurrent && !current ? undefined : { key: k.key, current }
    }
  }
  const ticketCallback = ticketKeyCallback(keys, local, offered)
  let warned = false
  // The handshake counter's cells, two per protocol version seen: a handshake adds to a plain number.
  const handshakeCells = new Map<string, { full: CounterCell, resumed: CounterCell }>()
  const onSecure = (socket: TLSSocket): void => {
    const resumed = socket.isSessionReused()
    const version = socket.getProtocol() ?? 'unknown'
    let cells = handshakeCells.get(version)
    if (cells === undefined) {
      cells = { full: handshakes.cell({ version, resumed: 'false' }), resumed: handshakes.cell({ version, resumed: 'true' }) }
      handshakeCells.set(version, cells)
    }
    cells[resumed ? 'resumed' : 'full'].n++
    recent.record(resumed)
  }

  const cacheOn = tls.sessionCacheSize > 0 && tls.minVersion === 'TLSv1.2'
  const store: SessionStore | undefined = cacheOn ? sessionStore({ maxEntries: tls.sessionCacheSize, ttlSeconds: tls.sessionTimeoutSeconds }) : undefined
  const ticketOptions = tls.sessionTickets ? 0 : constants.SSL_OP_NO_TICKET
  const variant = (cache: boolean): Variant => ({
    id: `${tls.sessionTickets ? 'tickets' : 'off'}${cache ? '+cache' : ''}`,
    options: { secureOptions: BASE_OPTIONS | ticketOptions },
    cache
  })
  // A TLS 1.3 client sends a random legacy session ID: looking it up would cost an IPC round trip
  // on every connection, so only hellos that cannot negotiate TLS 1.3 reach the cache's servers.
  // Nor do TLS 1.2 hellos carrying a ticket: Node looks no session ID up for them (the ticket
  // resumes), and a cache server would still run Node's ClientHello parser and call into
  // JavaScript for each. Should the ticket not decrypt, the full handshake issues a new ticket,
  // which that client resumes with next time.
  const needsHello = cacheOn && tls.maxVersion === 'TLSv1.3'
  // Made once: the front asks for one on every connection.
  const withCache = variant(true)
  const withoutCache = variant(false)
  const variantFor = (hello?: { offersTls13: boolean, offersTicket: boolean }): Variant =>
    cacheOn && (tls.maxVersion === 'TLSv1.2' || (hello !== undefined && !hello.offersTls13 && !hello.offersTicket)) ? withCache : withoutCache

  const attach = (server: TlsServer, v: Variant): void => {
    if (tls.sessionTickets && !installTicketCallback(server, ticketCallback) && !warned) {
      warned = true
      log.warn('this Node has no TLS ticket key callback: tickets use a key of each TLS server, resume on this worker only and are not renewed')
    }
    server.on('secureConnection', onSecure)
    if (!v.cache || store === undefined) return
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

  return {
    variantFor,
    needsHello,
    attach,
    close: () => {
      ring?.stop()
      client?.close()
      store?.close()
      local.fill(0)
    }
  }
}
