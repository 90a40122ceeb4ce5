// One undici keep-alive Pool per upstream origin (and connect timeout), created on first use.

import type { Socket } from 'node:net'
import { buildConnector, Pool, type Dispatcher } from 'undici'
import { configDefaults } from '../config/defaults.js'
import type { RouteConfig } from '../config/types.js'
import { tagConnectTime } from './upstream-connect-time.js'

/** Largest chunk undici's HTTP/1 parser gets from one upstream socket read. */
export const UPSTREAM_READ_CHUNK_BYTES = 64 * 1024

/**
 * Caps what `socket.read()` returns. When a response body is paused (the client reads slowly),
 * undici's parser resumes with `socket.read()`, which hands over the socket's whole buffer, parses a
 * little, and unshifts the rest; emptying the buffer also restarts reading from the kernel. A duplex
 * exchange (an upload echoed back) then grew the buffer without bound and copied it on every resume:
 * a 50 MB echo took 19 s and 400 MB. With reads capped, the buffer stays at its high-water mark.
 */
export function capReads (socket: Socket, max: number = UPSTREAM_READ_CHUNK_BYTES): void {
  const read = socket.read.bind(socket)
  socket.read = (size?: number): unknown => read(size === undefined && socket.readableLength > max ? max : size)
}

/**
 * An https target is verified against its own name, as nginx's `proxy_ssl_name` ($proxy_host)
 * does. undici would otherwise take the TLS server name, and so the name the target's certificate
 * is checked against, from each request's `Host`, which the client chooses: a certificate for any
 * name the client sent would then pass, and requests with different hosts would reconnect. So
 * every request carries the target's host name (constant per pool: no reconnection), and the
 * connect derives SNI and the identity check from the target URL alone (no SNI for an address,
 * checked against its IP SANs).
 */
function withTargetName (pool: Pool, origin: string): Dispatcher {
  const servername = new URL(origin).hostname
  // `servername` is a request option undici reads (core/request.js) but leaves out of its types.
  return pool.compose(dispatch => (options, handler) => dispatch({ ...options, servername } as Dispatcher.DispatchOptions, handler))
}

/** Upstream connection pools of one worker. */
export class UpstreamPools {
  #pools = new Map<string, Dispatcher>()
  #closed = false

  /** The key of the pool serving `route`'s upstream: its origin and connect timeout. */
  static keyOf (route: { upstream: string, connectTimeoutMs: RouteConfig['connectTimeoutMs'] }): string {
    return `${route.upstream} ${route.connectTimeoutMs}`
  }

  /** The pool serving `route`'s upstream. */
  get (route: { upstream: string, connectTimeoutMs: RouteConfig['connectTimeoutMs'] }): Dispatcher {
    const key = UpstreamPools.keyOf(route)
    let pool = this.#pools.get(key)
    if (pool === undefined) {
      if (this.#closed) throw new Error('upstream pools are closed')
      const { connections, keepAliveTimeoutMs, keepAliveMaxTimeoutMs } = configDefaults.upstreamPool
      const connect = buildConnector({ timeout: route.connectTimeoutMs })
      const https = route.upstream.startsWith('https:')
      const undiciPool = new Pool(route.upstream, {
        connections,
        pipelining: 1,
        keepAliveTimeout: keepAliveTimeoutMs,
        keepAliveMaxTimeout: keepAliveMaxTimeoutMs,
        connect: (options, callback) => {
          const started = performance.now()
          connect(https ? { ...options, servername: undefined } : options, (...args) => {
            // On failure undici passes the error alone: no socket, not even null.
            if (args[0] === null) {
              capReads(args[1])
              // TCP connect and, for https targets, the TLS handshake (the access log's upstreamConnectMs).
              tagConnectTime(args[1], performance.now() - started)
            }
            callback(...args)
          })
        }
      })
      pool = https ? withTargetName(undiciPool, route.upstream) : undiciPool
      this.#pools.set(key, pool)
    }
    return pool
  }

  /**
   * Closes the pools whose key is not in `keep` (after a config reload: origins no route uses any
   * more); each finishes the requests it has in flight first. Kept ones keep their connections.
   */
  closeUnused (keep: ReadonlySet<string>): void {
    for (const [key, pool] of this.#pools) {
      if (keep.has(key)) continue
      this.#pools.delete(key)
      pool.close().catch(() => {})
    }
  }

  /** Closes every pool, letting queued requests finish. */
  async close (): Promise<void> {
    this.#closed = true
    const pools = [...this.#pools.values()]
    this.#pools.clear()
    await Promise.all(pools.map(async pool => await pool.close()))
  }

  /** Destroys every pool at once, failing what is in flight. */
  async destroy (): Promise<void> {
    this.#closed = true
    const pools = [...this.#pools.values()]
    this.#pools.clear()
    await Promise.all(pools.map(async pool => await pool.destroy()))
  }
}
