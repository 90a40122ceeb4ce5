// One undici keep-alive Pool per upstream origin (and connect timeout), created on first use.

import { Pool } from 'undici'
import { configDefaults } from '../config/defaults.js'
import type { RouteConfig } from '../config/types.js'

/** Upstream connection pools of one worker. */
export class UpstreamPools {
  #pools = new Map<string, Pool>()
  #closed = false

  /** The pool serving `route`'s upstream. */
  get (route: Pick<RouteConfig, 'upstream' | 'connectTimeoutMs'>): Pool {
    const key = `${route.upstream} ${route.connectTimeoutMs}`
    let pool = this.#pools.get(key)
    if (pool === undefined) {
      if (this.#closed) throw new Error('upstream pools are closed')
      const { connections, keepAliveTimeoutMs, keepAliveMaxTimeoutMs } = configDefaults.upstreamPool
      pool = new Pool(route.upstream, {
        connections,
        pipelining: 1,
        keepAliveTimeout: keepAliveTimeoutMs,
        keepAliveMaxTimeout: keepAliveMaxTimeoutMs,
        connect: { timeout: route.connectTimeoutMs }
      })
      this.#pools.set(key, pool)
    }
    return pool
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
