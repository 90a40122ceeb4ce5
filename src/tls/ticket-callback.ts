// Session tickets through OpenSSL's ticket key callback: the key named by an offered ticket decrypts
// it (any key still held, so one TLS server serves every key), the current key encrypts, and every
// resumption gets a fresh ticket. Node's built-in callback knows one key and never renews, so after
// a TLS 1.3 resumption it sent no NewSessionTicket: a client kept reusing one ticket (linkable) until
// it expired. OpenSSL alone renews after every TLS 1.3 resumption; here TLS 1.2 ones renew too.

import { randomBytes } from 'node:crypto'
import type { Server as TlsServer } from 'node:tls'
import type { Counter } from 'prom-client'

/** A 48-byte ticket key in Node's layout: name (16), HMAC-SHA256 key (16), AES-128-CBC key (16). */
export type TicketKeyBytes = Buffer

/** Where the callback finds keys: the one encrypting now, and the one an offered ticket names. */
export interface TicketKeyLookup {
  current: () => TicketKeyBytes | undefined
  /** The still-valid key of that 16-byte name, and whether it is the current one. */
  byName: (name: Buffer) => { key: TicketKeyBytes, current: boolean } | undefined
}

/**
 * Node's per-context JS ticket key callback: `context.enableTicketKeyCallback()` and
 * `context.onticketkeycallback(name, iv, encrypt)`, answered with `[result, hmacKey, aesKey,
 * name, iv]`. It is not in Node's documentation (Node keeps it for its own test of ticket renewal),
 * so keyedge checks for it at start and its tests exercise it on Node 20 and 24.
 */
interface NativeContext {
  enableTicketKeyCallback?: () => void
  onticketkeycallback?: (name: Buffer, iv: Buffer, encrypt: boolean) => unknown[]
}

/** OpenSSL's answers: 1 use the key, 2 use it and issue a new ticket, 0 the ticket is not ours. */
const USE = 1
const RENEW = 2
const NOT_OURS = 0
// The native side reads both key slots even when it will not decrypt: give it harmless bytes.
const UNUSED = Buffer.alloc(16)

function nativeContext (server: TlsServer): NativeContext | undefined {
  return (server as unknown as { _sharedCreds?: { context?: NativeContext } })._sharedCreds?.context
}

/** Whether this Node exposes the ticket key callback (checked once per process). */
export function ticketCallbackAvailable (server: TlsServer): boolean {
  return typeof nativeContext(server)?.enableTicketKeyCallback === 'function'
}

/**
 * Makes `server` encrypt tickets with `keys.current()` (or `fallback` while there is none) and
 * decrypt those of any key `keys.byName()` still holds, renewing the ticket on every resumption.
 * Counts offered tickets by key (`current`, `previous`, `unknown`). Returns false (and changes
 * nothing) when this Node has no ticket key callback.
 */
export function installTicketCallback (server: TlsServer, keys: TicketKeyLookup, fallback: TicketKeyBytes, offered: Counter<string>): boolean {
  const context = nativeContext(server)
  if (context === undefined || typeof context.enableTicketKeyCallback !== 'function') return false
  context.enableTicketKeyCallback()
  context.onticketkeycallback = (name: Buffer, _iv: Buffer, encrypt: boolean): unknown[] => {
    if (encrypt) {
      const key = keys.current() ?? fallback
      return [USE, key.subarray(16, 32), key.subarray(32, 48), key.subarray(0, 16), randomBytes(16)]
    }
    const found = keys.byName(name) ?? (name.equals(fallback.subarray(0, 16)) ? { key: fallback, current: keys.current() === undefined } : undefined)
    if (found === undefined) {
      offered.inc({ key: 'unknown' })
      return [NOT_OURS, UNUSED, UNUSED]
    }
    offered.inc({ key: found.current ? 'current' : 'previous' })
    return [RENEW, found.key.subarray(16, 32), found.key.subarray(32, 48)]
  }
  return true
}
