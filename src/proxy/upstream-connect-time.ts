// Upstream connect time per request, for the access log. undici reports no per-request connection
// facts, so: each pool's connect function times the TCP (and TLS) connect and tags the socket
// (tagConnectTime); undici's `undici:client:sendHeaders` diagnostics channel says which socket a
// request's head goes out on, and the head carries the request's `x-request-id`, which names the
// access record waiting for it. The first request on a new connection gets the connect time, a
// request on a reused connection gets 0. Nothing is subscribed while no access log asks for it.

import { subscribe } from 'node:diagnostics_channel'
import type { Socket } from 'node:net'

interface Tag { connectMs: number, used: boolean }

const tags = new WeakMap<Socket, Tag>()
/** Records waiting for their request's head to go out, by request id. */
const waiting = new Map<string, { upstreamConnectMs?: number }>()
let subscribed = false

/** Marks `socket` as new, its connect (and TLS handshake) having taken `connectMs`. */
export function tagConnectTime (socket: Socket, connectMs: number): void {
  tags.set(socket, { connectMs, used: false })
}

const MARK = '\r\nx-request-id: '

function onSendHeaders (message: unknown): void {
  if (waiting.size === 0) return
  const { headers, socket } = message as { headers?: unknown, socket?: Socket }
  if (typeof headers !== 'string' || socket === undefined) return
  const at = headers.indexOf(MARK)
  if (at === -1) return
  const start = at + MARK.length
  const rec = waiting.get(headers.slice(start, headers.indexOf('\r\n', start)))
  if (rec === undefined) return
  const tag = tags.get(socket)
  // An untagged socket was not opened by our pools' connect (cannot happen for proxied requests): unknown.
  if (tag === undefined) return
  rec.upstreamConnectMs = tag.used ? 0 : tag.connectMs
  tag.used = true
}

/**
 * Fills `rec.upstreamConnectMs` when the upstream request with `id` (its `x-request-id`) is sent:
 * the connect time on a new connection, 0 on a reused one (a retry overwrites it). Call the
 * returned function once the exchange is over.
 */
export function watchConnectTime (id: string, rec: { upstreamConnectMs?: number }): () => void {
  if (!subscribed) {
    subscribed = true
    subscribe('undici:client:sendHeaders', onSendHeaders)
  }
  waiting.set(id, rec)
  return () => { if (waiting.get(id) === rec) waiting.delete(id) }
}
