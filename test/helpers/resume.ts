// TLS clients that keep and offer sessions, for resumption tests: one connection per call, the
// session it ended with, whether it resumed, and which proxy worker process accepted it (from ss).
import { execFile } from 'node:child_process'
import { connect } from 'node:tls'
import type { TestProxy } from './edge.js'
import { until } from './wait.js'

export type Version = 'TLSv1.2' | 'TLSv1.3'

export interface Visit { reused: boolean, session: Buffer | undefined, workerPid: number | undefined, error?: string }

/** The pid of the process holding the server side of the connection from local port `local` to `port`. */
async function ownerPid (port: number, local: number): Promise<number | undefined> {
  return await new Promise(resolve => {
    execFile('ss', ['-Htnp', 'state', 'established', `( sport = :${port} and dport = :${local} )`], { encoding: 'utf8', timeout: 5000 }, (_err, out) => {
      const m = /pid=(\d+)/.exec(out ?? '')
      resolve(m === null ? undefined : Number(m[1]))
    })
  })
}

/** One HTTP/1.1 request on a new TLS connection offering `session`; never throws. */
export async function visit (port: number, ca: Buffer, version: Version, session?: Buffer, opts: { findWorker?: boolean, noTicket?: boolean } = {}): Promise<Visit> {
  return await new Promise(resolve => {
    let next: Buffer | undefined
    let reused = false
    let pid: Promise<number | undefined> = Promise.resolve(undefined)
    const s = connect({
      host: '127.0.0.1',
      port,
      servername: 'localhost',
      ca,
      minVersion: version,
      maxVersion: version,
      ALPNProtocols: ['http/1.1'],
      ...(session !== undefined ? { session } : {}),
      ...(opts.noTicket === true ? { secureOptions: 0x4000 /* SSL_OP_NO_TICKET */ } : {})
    })
    const timer = setTimeout(() => s.destroy(new Error('timeout')), 10_000)
    let error: string | undefined
    s.on('session', (b: Buffer) => { next = b })
    s.once('secureConnect', () => {
      reused = s.isSessionReused()
      if (opts.findWorker === true) pid = ownerPid(port, s.localPort ?? 0)
      void pid.then(() => s.write('GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n'))
    })
    s.on('data', () => {})
    s.on('error', (err: NodeJS.ErrnoException) => { error = err.code ?? err.message })
    s.on('close', () => {
      clearTimeout(timer)
      void pid.then(workerPid => resolve({ reused, session: next ?? session, workerPid, ...(error !== undefined ? { error } : {}) }))
    })
  })
}

/**
 * Resolves once every worker of `proxy` logged that it encrypts new tickets with the key of an epoch
 * after `before` (so a ticket issued before is now one of a previous key); throws after `ms`.
 */
export async function workersPastEpoch (proxy: Pick<TestProxy, 'lines' | 'workerPids'>, before: number, ms = 60_000): Promise<void> {
  const switched = (): boolean => {
    const pids = new Set<number>()
    for (const line of proxy.lines) {
      let o: { msg?: unknown, epoch?: unknown, pid?: unknown }
      try { o = JSON.parse(line) } catch { continue }
      if (o.msg === 'TLS ticket key epoch' && typeof o.epoch === 'number' && o.epoch > before && typeof o.pid === 'number') pids.add(o.pid)
    }
    const workers = proxy.workerPids()
    return workers.length > 0 && workers.every(pid => pids.has(pid))
  }
  if (!await until(switched, ms)) throw new Error(`not every worker moved past ticket-key epoch ${before} within ${ms} ms`)
}
