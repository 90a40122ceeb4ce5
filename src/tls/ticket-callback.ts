// Session tickets through OpenSSL's ticket key callback: the key named by an offered ticket decrypts
// it (any key still held, so one TLS server serves every key), the current key encrypts, and every
// resumption gets a fresh ticket. Node's built-in callback knows one key and never renews, so after
// a TLS 1.3 resumption it sent no NewSessionTicket: a client kept reusing one ticket (linkable) until
// it expired. OpenSSL alone renews after every TLS 1.3 resumption; here TLS 1.2 ones renew too.

import { randomFillSync } from 'node:crypto'
import type { Server as TlsServer } from 'node:tls'
import type { FastCounter } from '../proxy/request-metrics.js'

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
const NOT_OURS_ANSWER = [NOT_OURS, UNUSED, UNUSED]

/** Random bytes for the tickets' IVs, drawn in blocks: one call into OpenSSL's RNG per 256 tickets. */
const IV_LENGTH = 16
const IV_POOL_BYTES = 256 * IV_LENGTH

/** A key's slices and answers, made once per key (not per ticket). */
interface PreparedKey {
  name: Buffer
  hmac: Buffer
  aes: Buffer
  /** The answer to a ticket this key decrypts: use it, and issue a fresh ticket. */
  renew: unknown[]
}

function nativeContext (server: TlsServer): NativeContext | undefined {
  return (server as unknown as { _sharedCreds?: { context?: NativeContext } })._sharedCreds?.context
}

/** Whether this Node exposes the ticket key callback (checked once per process). */
export function ticketCallbackAvailable (server: TlsServer): boolean {
  return typeof nativeContext(server)?.enableTicketKeyCallback === 'function'
}

/**
 * The callback itself, shared by every TLS server of a worker: encrypts with `keys.current()` (or
 * `fallback` while there is none), decrypts with any key `keys.byName()` still holds and asks for a
 * fresh ticket on every resumption, counting offered tickets by key (`current`, `previous`, `unknown`).
 * Node copies every byte of an answer before the callback returns, so the answers and the IV pool
 * are reused.
 */
export function ticketKeyCallback (keys: TicketKeyLookup, fallback: TicketKeyBytes, offered: FastCounter): (name: Buffer, iv: Buffer, encrypt: boolean) => unknown[] {
  const prepared = new WeakMap<TicketKeyBytes, PreparedKey>()
  const prepare = (key: TicketKeyBytes): PreparedKey => {
    let p = prepared.get(key)
    if (p === undefined) {
      const hmac = key.subarray(16, 32)
      const aes = key.subarray(32, 48)
      p = { name: key.subarray(0, 16), hmac, aes, renew: [RENEW, hmac, aes] }
      prepared.set(key, p)
    }
    return p
  }
  const counts = { current: offered.cell({ key: 'current' }), previous: offered.cell({ key: 'previous' }), unknown: offered.cell({ key: 'unknown' }) }
  const ivPool = Buffer.alloc(IV_POOL_BYTES)
  let ivAt = IV_POOL_BYTES
  const encryptAnswer: unknown[] = [USE, UNUSED, UNUSED, UNUSED, UNUSED]
  const fallbackName = fallback.subarray(0, 16)
  return (name: Buffer, _iv: Buffer, encrypt: boolean): unknown[] => {
    if (encrypt) {
      const p = prepare(keys.current() ?? fallback)
      if (ivAt === IV_POOL_BYTES) { randomFillSync(ivPool); ivAt = 0 }
      encryptAnswer[1] = p.hmac
      encryptAnswer[2] = p.aes
      encryptAnswer[3] = p.name
      encryptAnswer[4] = ivPool.subarray(ivAt, ivAt + IV_LENGTH)
      ivAt += IV_LENGTH
      return encryptAnswer
    }
    const found = keys.byName(name) ?? (name.equals(fallbackName) ? { key: fallback, current: keys.current() === undefined } : undefined)
    if (found === undefined) {
      counts.unknown.n++
      return NOT_OURS_ANSWER
    }
    if (found.current) counts.current.n++
    else counts.previous.n++
    return prepare(found.key).renew
  }
}

/**
 * Makes `server` use `callback` (see ticketKeyCallback) for its session tickets. Returns false (and
 * changes nothing) when this Node has no ticket key callback.
 */
export function installTicketCallback (server: TlsServer, callback: (name: Buffer, iv: Buffer, encrypt: boolean) => unknown[]): boolean {
  const context = nativeContext(server)
  if (context === undefined || typeof context.enableTicketKeyCallback !== 'function') return false
  context.enableTicketKeyCallback()
  context.onticketkeycallback = callback
  return true
}
