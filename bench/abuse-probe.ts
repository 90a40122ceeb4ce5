// The normal client of `bench abuse`: at a steady pace, one GET on a new TLS connection (accept,
// handshake, proxying) and one on a kept-alive connection, timing each from start to last byte.
import { Agent, request } from 'node:https'

export interface ProbeSamples {
  /** Milliseconds per GET on a fresh connection; a failed probe counts as `timeoutMs`. */
  fresh: number[]
  /** Milliseconds per GET on the kept-alive connection (re-opened if the server closed it). */
  kept: number[]
  failures: number
}

export interface Prober { stop: () => Promise<ProbeSamples> }

/** Starts probing 127.0.0.1:`port` every `intervalMs` (each probe abandoned after `timeoutMs`). */
export function startProber (opts: { port: number, ca: string[], intervalMs: number, timeoutMs: number }): Prober {
  const samples: ProbeSamples = { fresh: [], kept: [], failures: 0 }
  const keepAlive = new Agent({ keepAlive: true, maxSockets: 1 })
  const pending = new Set<Promise<void>>()
  const probe = (agent: Agent | false, into: number[]): void => {
    const started = performance.now()
    const done = new Promise<void>(resolve => {
      let settled = false
      const finish = (ok: boolean): void => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        if (!ok) samples.failures++
        into.push(ok ? performance.now() - started : opts.timeoutMs)
        resolve()
      }
      const req = request({
        host: '127.0.0.1', port: opts.port, path: '/probe', servername: 'localhost', ca: opts.ca, agent,
        headers: { host: 'localhost', ...(agent === false ? { connection: 'close' } : {}) }
      }, res => {
        res.resume()
        res.once('end', () => finish(res.statusCode === 200))
        res.once('error', () => finish(false))
      })
      const timer = setTimeout(() => { req.destroy(); finish(false) }, opts.timeoutMs)
      req.once('error', () => finish(false))
      req.end()
    })
    pending.add(done)
    void done.then(() => pending.delete(done))
  }
  const timer = setInterval(() => {
    probe(false, samples.fresh)
    probe(keepAlive, samples.kept)
  }, opts.intervalMs)
  return {
    stop: async () => {
      clearInterval(timer)
      await Promise.all([...pending])
      keepAlive.destroy()
      return samples
    }
  }
}

/** One GET on a new connection: its milliseconds, or undefined if it failed or took over `timeoutMs`. */
export async function probeOnce (opts: { port: number, ca: string[], timeoutMs: number }): Promise<number | undefined> {
  const started = performance.now()
  return await new Promise(resolve => {
    const req = request({ host: '127.0.0.1', port: opts.port, path: '/probe', servername: 'localhost', ca: opts.ca, agent: false, headers: { host: 'localhost', connection: 'close' } }, res => {
      res.resume()
      res.once('end', () => { clearTimeout(timer); resolve(res.statusCode === 200 ? performance.now() - started : undefined) })
    })
    const timer = setTimeout(() => { req.destroy(); resolve(undefined) }, opts.timeoutMs)
    req.once('error', () => { clearTimeout(timer); resolve(undefined) })
    req.end()
  })
}

/** The `p`-th percentile (nearest rank) of `values`, or NaN when empty. */
export function percentile (values: number[], p: number): number {
  if (values.length === 0) return NaN
  const sorted = [...values].sort((a, b) => a - b)
  const v = sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p / 100 * sorted.length) - 1))]
  if (v === undefined) throw new Error('percentile: index out of range')
  return v
}
