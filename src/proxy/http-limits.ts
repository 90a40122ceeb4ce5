// Connection timeouts of HTTP/1.1 clients, after the TLS handshake: a request head must arrive
// complete within `requestHeadersMs` (slowloris), and a connection with no request in flight is closed
// after `keepAliveIdleMs`. Node's own headersTimeout only runs on servers that listen themselves, and
// ours never do (the TLS front hands them sockets), so the proxy keeps these clocks itself.

import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { Logger } from 'pino'
import type { Registry } from 'prom-client'
import type { TimeoutsConfig } from '../config/types.js'
import { timeoutCounter } from './timeout-metric.js'

/** After we end a connection, how long the peer gets to take our last bytes before it is destroyed. */
export const CLOSE_LINGER_MS = 1_000

/** Sent when a started request head does not complete in time (as Node's own headersTimeout does). */
const REQUEST_TIMEOUT_RESPONSE = 'HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n'

/** Ends `socket` (TLS close_notify, then FIN) with `last` as its final bytes, and destroys it soon after. */
export function endConnection (socket: Socket, last?: string): void {
  if (socket.destroyed) return
  if (last !== undefined && socket.writable) socket.end(last)
  else socket.end()
  setTimeout(() => socket.destroy(), CLOSE_LINGER_MS).unref()
}

/**
 * `headers`: waiting for a complete request head (from the handshake, or from the first byte of a
 * later request); `busy`: requests in flight; `idle`: keep-alive, waiting for the next request.
 */
type Phase = 'headers' | 'busy' | 'idle'

interface Connection {
  phase: Phase
  inflight: number
  /** Bytes arrived since the `headers` phase began (a 408 is only owed to a client that started a request). */
  started: boolean
  timer: NodeJS.Timeout | undefined
}

export interface Http1Limits {
  /** Starts the clocks of a new HTTP/1.1 connection; call once its TLS handshake is done. */
  connection: (socket: Socket) => void
  /** Call for every HTTP/1.1 request, before anything else handles it. */
  request: (req: IncomingMessage, res: ServerResponse) => void
  /** The connection left HTTP (a WebSocket upgrade): its HTTP clocks stop for good. */
  upgraded: (socket: Socket) => void
  /** New timeouts (a config reload): every clock started from now on runs with them. */
  update: (timeouts: TimeoutsConfig) => void
}

/** The HTTP/1.1 connection timeouts of one worker, counted in `edge_timeouts_total{kind}`. */
export function createHttp1Limits (opts: { timeouts: TimeoutsConfig, registry: Registry, log: Logger }): Http1Limits {
  // Read each time a clock starts: a reload's values apply to the next phase of every connection.
  let { requestHeadersMs, keepAliveIdleMs } = opts.timeouts
  const timeouts = timeoutCounter(opts.registry)
  const connections = new WeakMap<Socket, Connection>()

  const expire = (socket: Socket, conn: Connection): void => {
    conn.timer = undefined
    if (socket.destroyed) return
    if (conn.phase === 'headers') {
      timeouts.inc({ kind: 'request_headers' })
      opts.log.debug({ started: conn.started }, 'request head not received in time, connection closed')
      endConnection(socket, conn.started ? REQUEST_TIMEOUT_RESPONSE : undefined)
    } else if (conn.phase === 'idle') {
      timeouts.inc({ kind: 'keepalive_idle' })
      endConnection(socket)
    }
  }

  const enter = (socket: Socket, conn: Connection, phase: Phase): void => {
    clearTimeout(conn.timer)
    conn.timer = undefined
    conn.phase = phase
    if (phase === 'busy') return
    conn.started = false
    conn.timer = setTimeout(expire, phase === 'headers' ? requestHeadersMs : keepAliveIdleMs, socket, conn)
    conn.timer.unref()
  }

  /** A request begins (its first byte arrived): the head's clock runs from now. */
  const started = (socket: Socket, conn: Connection): void => {
    if (conn.phase === 'idle') enter(socket, conn, 'headers')
    if (conn.phase === 'headers') conn.started = true
  }
  // Called by the HTTP parser (`this`) at the first byte of each request on any connection it serves.
  function onMessageBegin (this: { socket?: Socket | null }): void {
    const socket = this.socket
    const conn = socket == null ? undefined : connections.get(socket)
    if (socket != null && conn !== undefined) started(socket, conn)
  }

  // One listener for every connection: a closure per connection would be kept as long as it is open.
  function onClose (this: Socket): void {
    clearTimeout(connections.get(this)?.timer)
  }

  return {
    connection (socket) {
      const conn: Connection = { phase: 'headers', inflight: 0, started: false, timer: undefined }
      connections.set(socket, conn)
      enter(socket, conn, 'headers')
      // The parser says when a request begins; a 'data' listener (which costs the parser its C++ feed) only where it cannot.
      if (!watchMessageBegin(socket, onMessageBegin)) socket.on('data', () => { started(socket, conn) })
      socket.once('close', onClose)
    },
    request (req, res) {
      const socket = req.socket
      const conn = connections.get(socket)
      if (conn === undefined) return
      conn.inflight++
      enter(socket, conn, 'busy')
      res.once('close', () => {
        conn.inflight--
        if (conn.inflight === 0 && !socket.destroyed) enter(socket, conn, 'idle')
      })
    },
    update (timeouts) {
      ({ requestHeadersMs, keepAliveIdleMs } = timeouts)
    },
    upgraded (socket) {
      const conn = connections.get(socket)
      if (conn === undefined) return
      connections.delete(socket)
      // 'busy' for good: the data listener above never restarts a clock.
      enter(socket, conn, 'busy')
    }
  }
}

/**
 * Has the HTTP parser of `socket` call `hook` at the first byte of every request; false where it
 * cannot (no parser on the socket, or a Node whose parser has no such callback). A 'data' listener
 * sees the same moment, but adding one makes Node's HTTP server stop feeding its parser straight
 * from the TLS stream in C++ ("consume") and read every chunk through JavaScript stream events
 * instead: in cpu-prof of a worker under keep-alive load that was ~10 µs per request (socketOnData,
 * stream push, emit and their garbage). The parser calls this callback as `parser.socket`'s parser;
 * parsers are pooled, so the hook looks the connection up by that socket each time.
 */
function watchMessageBegin (socket: Socket, hook: (this: { socket?: Socket | null }) => void): boolean {
  const parser = (socket as unknown as { parser?: Record<number, unknown> & { constructor: { kOnMessageBegin?: unknown } } | null }).parser
  const k = parser?.constructor.kOnMessageBegin
  if (parser == null || typeof k !== 'number') return false
  parser[k] = hook
  return true
}
