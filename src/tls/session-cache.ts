// TLS 1.2 session-ID cache shared by every worker: an LRU (size bound, TTL) held by the cluster
// primary and reached over the cluster IPC channel, every lookup bounded by a timeout. Outside a
// cluster (tests, one process) the same LRU lives in the process itself.

import type { Cluster, Worker } from 'node:cluster'
import { LRUCache } from 'lru-cache'

const MESSAGE = 'keyedge:tls-session'

/** How long a handshake waits for the primary's answer before going on without the session. */
export const SESSION_LOOKUP_TIMEOUT_MS = 100

interface SetMessage { type: typeof MESSAGE, op: 'set', id: string, data: string }
interface GetMessage { type: typeof MESSAGE, op: 'get', id: string, rid: number }
interface GotMessage { type: typeof MESSAGE, op: 'got', rid: number, data: string | null }
type SessionMessage = SetMessage | GetMessage | GotMessage

function isSessionMessage (m: unknown): m is SessionMessage {
  return typeof m === 'object' && m !== null && (m as { type?: unknown }).type === MESSAGE
}

export interface SessionCacheLimits {
  maxEntries: number
  ttlSeconds: number
}

/** Serialised sessions hold master secrets: one bounded LRU, in memory only. */
function newLru (o: SessionCacheLimits): LRUCache<string, string> {
  return new LRUCache<string, string>({ max: o.maxEntries, ttl: o.ttlSeconds * 1000, ttlAutopurge: false })
}

/** In the primary: answers the workers' lookups from one LRU. Returns a function that detaches it. */
export function serveSessionCache (cluster: Cluster, o: SessionCacheLimits): () => void {
  const lru = newLru(o)
  const onMessage = (worker: Worker, m: unknown): void => {
    if (!isSessionMessage(m)) return
    if (m.op === 'set' && typeof m.id === 'string' && typeof m.data === 'string') {
      lru.set(m.id, m.data)
    } else if (m.op === 'get' && typeof m.id === 'string') {
      const reply: GotMessage = { type: MESSAGE, op: 'got', rid: m.rid, data: lru.get(m.id) ?? null }
      if (worker.isConnected()) worker.send(reply)
    }
  }
  cluster.on('message', onMessage)
  return () => { cluster.off('message', onMessage); lru.clear() }
}

/** A worker's view of the shared cache (or a local LRU outside a cluster). */
export interface SessionStore {
  set: (id: Buffer, data: Buffer) => void
  /** The session for `id`, or undefined when unknown, expired, or not answered within the timeout. */
  get: (id: Buffer) => Promise<Buffer | undefined>
  close: () => void
}

export function sessionStore (o: SessionCacheLimits, proc: NodeJS.Process = process): SessionStore {
  if (typeof proc.send !== 'function' || !proc.connected) {
    const lru = newLru(o)
    return {
      set: (id, data) => { lru.set(id.toString('hex'), data.toString('base64')) },
      get: id => { const d = lru.get(id.toString('hex')); return Promise.resolve(d === undefined ? undefined : Buffer.from(d, 'base64')) },
      close: () => lru.clear()
    }
  }
  const waiting = new Map<number, (data: string | null) => void>()
  let nextRid = 1
  const onMessage = (m: unknown): void => {
    if (!isSessionMessage(m) || m.op !== 'got') return
    const resolve = waiting.get(m.rid)
    if (resolve !== undefined) { waiting.delete(m.rid); resolve(m.data) }
  }
  proc.on('message', onMessage)
  const send = (m: SessionMessage): boolean => {
    if (!proc.connected || proc.send === undefined) return false
    proc.send(m)
    return true
  }
  return {
    set: (id, data) => { send({ type: MESSAGE, op: 'set', id: id.toString('hex'), data: data.toString('base64') }) },
    get: async id => await new Promise(resolve => {
      const rid = nextRid++
      const timer = setTimeout(() => { waiting.delete(rid); resolve(undefined) }, SESSION_LOOKUP_TIMEOUT_MS)
      waiting.set(rid, data => { clearTimeout(timer); resolve(data === null ? undefined : Buffer.from(data, 'base64')) })
      if (!send({ type: MESSAGE, op: 'get', id: id.toString('hex'), rid })) { clearTimeout(timer); waiting.delete(rid); resolve(undefined) }
    }),
    close: () => {
      proc.off('message', onMessage)
      for (const resolve of waiting.values()) resolve(null)
      waiting.clear()
    }
  }
}
