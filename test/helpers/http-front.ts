// The HTTP front under abuse, for tests: a real `keyedge proxy` (plain test-time keys, one worker, an
// admin listener for metrics) in front of an upstream that counts what reaches it, plus raw TLS and
// HTTP/2 clients and a sampler of the worker's memory.

import { once } from 'node:events'
import { readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { connect as h2connect, type ClientHttp2Session } from 'node:http2'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import { tempHome } from './paths.js'
import { spawnCli, type Spawned } from './processes.js'
import { selfSigned } from './proxy-fixtures.js'

/** An upstream that counts arrivals by path and can hold, sink, generate or refuse bodies. */
export interface CountingUpstream {
  url: string
  /** Requests received, by path (without query). */
  seen: Map<string, number>
  /** Requests to /hold waiting for `release()`; `closed` resolves when the exchange is over (answered or cut). */
  held: Array<{ req: IncomingMessage, res: ServerResponse, closed: Promise<void> }>
  /** Highest number of /hold requests held at once since the start or `resetMaxHeld()`. */
  maxHeld: () => number
  resetMaxHeld: () => void
  /** Answers every held request. */
  release: () => void
  close: () => Promise<void>
}

/**
 * Paths: `/hold` (waits for release), `/sink` (reads the body, answers its byte count), `/bytes?n=N`
 * (N bytes, streamed with backpressure), `/echo`, `/early` (413 at once, body never read), `/stall`
 * (does not read the body for `?ms=`, then sinks it), `/delay?ms=` (answers `ok` that much later);
 * anything else: `ok`.
 */
export async function countingUpstream (): Promise<CountingUpstream> {
  const seen = new Map<string, number>()
  const held: CountingUpstream['held'] = []
  let holding = 0
  let maxHeld = 0
  const chunk = Buffer.alloc(64 * 1024, 0x61)
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://upstream.invalid')
    seen.set(url.pathname, (seen.get(url.pathname) ?? 0) + 1)
    switch (url.pathname) {
      case '/hold': {
        holding++
        maxHeld = Math.max(maxHeld, holding)
        const closed = once(res, 'close').then(() => { holding-- })
        held.push({ req, res, closed })
        req.resume()
        return
      }
      case '/sink':
      case '/stall': {
        let n = 0
        const sink = (): void => {
          req.on('data', (c: Buffer) => { n += c.length })
          req.on('end', () => res.end(String(n)))
        }
        if (url.pathname === '/sink') sink()
        else setTimeout(sink, Number(url.searchParams.get('ms') ?? '1000'))
        return
      }
      case '/bytes': {
        const total = Number(url.searchParams.get('n') ?? '0')
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': total })
        let sent = 0
        const pump = (): void => {
          while (sent < total) {
            const part = total - sent >= chunk.length ? chunk : chunk.subarray(0, total - sent)
            sent += part.length
            if (!res.write(part)) { res.once('drain', pump); return }
          }
          res.end()
        }
        pump()
        return
      }
      case '/delay': {
        req.resume()
        const timer = setTimeout(() => res.end('ok'), Number(url.searchParams.get('ms') ?? '1000'))
        res.once('close', () => clearTimeout(timer))
        return
      }
      case '/echo':
        res.writeHead(200, { 'content-type': 'application/octet-stream' })
        req.pipe(res)
        return
      case '/early':
        res.writeHead(413, { 'content-type': 'text/plain' })
        res.end('too large\n')
        return
      default:
        req.resume()
        res.end('ok')
    }
  })
  server.keepAliveTimeout = 60_000
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    held,
    maxHeld: () => maxHeld,
    resetMaxHeld: () => { maxHeld = holding },
    release: () => {
      for (const { res } of held.splice(0)) if (!res.writableEnded) res.end('released')
    },
    close: async () => {
      const closed = once(server, 'close')
      server.close()
      server.closeAllConnections()
      await closed
    }
  }
}

export interface Front {
  port: number
  adminPort: number
  ca: string
  proc: Spawned
  /** The pid of the (only) worker. */
  workerPid: () => number
  /** The cluster's metrics text. */
  metrics: () => Promise<string>
  stop: () => Promise<void>
}

/** Starts `keyedge proxy` (one worker, admin on port 0) with `timeouts` and `limits`, routing everything to `upstream`. */
export async function startFront (opts: {
  upstream: string
  timeouts?: Record<string, number>
  limits?: Record<string, number>
  http2?: boolean
  /** Added to the proxy's environment (its workers inherit it). */
  env?: Record<string, string>
}): Promise<Front> {
  const home = tempHome('keyedge-front-')
  const cert = selfSigned(home, 'localhost', ['localhost', '127.0.0.1'])
  const file = join(home, 'proxy.json')
  writeFileSync(file, JSON.stringify({
    listen: { host: '127.0.0.1', port: 0 },
    workers: 1,
    certificates: [{ name: 'localhost', serverNames: ['localhost', '127.0.0.1'], files: [{ cert: cert.cert, key: cert.key }] }],
    routes: [{ host: '*', pathPrefix: '/', upstream: opts.upstream }],
    ...(opts.http2 !== undefined ? { http2: opts.http2 } : {}),
    ...(opts.timeouts !== undefined ? { timeouts: opts.timeouts } : {}),
    ...(opts.limits !== undefined ? { limits: opts.limits } : {}),
    admin: { port: 0, drainDelayMs: 0 },
    log: { level: 'info' }
  }))
  const proc = spawnCli(['proxy', '--config', file], opts.env)
  try {
    const ready = await proc.waitFor(o => o.msg === 'proxy listening', 30_000)
    const admin = await proc.waitFor(o => o.msg === 'admin listening', 10_000)
    const pid = proc.proc.pid as number
    const workerPid = (): number => Number(readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/)[0])
    const adminPort = admin.port as number
    return {
      port: ready.port as number,
      adminPort,
      ca: cert.certPem,
      proc,
      workerPid,
      metrics: async () => await httpText(adminPort, '/metrics'),
      stop: async () => {
        await proc.stop('SIGKILL')
        rmSync(home, { recursive: true, force: true })
      }
    }
  } catch (err) {
    await proc.stop('SIGKILL')
    rmSync(home, { recursive: true, force: true })
    throw err
  }
}

/** GET `path` on 127.0.0.1:`port` as text, through Node's http client without a keep-alive pool. */
async function httpText (port: number, path: string): Promise<string> {
  return await new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, agent: false }, res => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { text += c })
      res.on('end', () => resolve(text))
    })
    req.on('error', reject)
    req.end()
  })
}

/** The admin listener's /metrics text (port `adminPort` on 127.0.0.1), through Node's http client (no keep-alive pool). */
export async function adminMetrics (adminPort: number): Promise<string> {
  return await httpText(adminPort, '/metrics')
}

/** The value of `name{labels}` in a Prometheus text exposition (0 when absent). */
export function metric (text: string, name: string, labels: Record<string, string> = {}): number {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`)
  let total = 0
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? (\S+)$/.exec(line)
    if (m === null || m[1] !== name) continue
    const have = (m[3] ?? '').split(',')
    if (want.every(w => have.includes(w))) total += Number(m[4])
  }
  return total
}

/** A TLS connection to the front, handshake done. */
export async function tlsOpen (port: number, ca: string, alpn: string[] = ['http/1.1']): Promise<TLSSocket> {
  const socket = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ca, ALPNProtocols: alpn })
  await once(socket, 'secureConnect')
  return socket
}

/** Collects what `socket` receives until it closes or `ms` pass; `closed` says which, `afterMs` when. */
export async function untilClosed (socket: TLSSocket, ms: number): Promise<{ closed: boolean, data: string, afterMs: number }> {
  const started = Date.now()
  let data = ''
  socket.on('data', (c: Buffer) => { data += c.toString('latin1') })
  socket.on('error', () => {})
  if (socket.destroyed) return { closed: true, data, afterMs: 0 }
  return await new Promise(resolve => {
    const timer = setTimeout(() => { socket.off('close', onClose); resolve({ closed: false, data, afterMs: Date.now() - started }) }, ms)
    const onClose = (): void => { clearTimeout(timer); resolve({ closed: true, data, afterMs: Date.now() - started }) }
    socket.once('close', onClose)
  })
}

/** An HTTP/2 session to the front, connected. */
export async function h2Open (port: number, ca: string): Promise<ClientHttp2Session> {
  const session = h2connect(`https://localhost:${port}`, {
    createConnection: () => tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ca, ALPNProtocols: ['h2'] })
  })
  session.on('error', () => {})
  await once(session, 'connect')
  return session
}

/** One HTTP/2 request: status and body. */
export async function h2Request (session: ClientHttp2Session, headers: Record<string, string>, body?: Buffer): Promise<{ status: number, body: Buffer }> {
  const stream = session.request(headers, { endStream: body === undefined })
  if (body !== undefined) stream.end(body)
  const [h] = await once(stream, 'response') as [Record<string, string | number>]
  const chunks: Buffer[] = []
  stream.on('data', (c: Buffer) => chunks.push(c))
  await once(stream, 'end')
  return { status: h[':status'] as number, body: Buffer.concat(chunks) }
}

/** Samples the RSS (MiB) of `pid` every 50 ms until `stop()`, which returns the peak. */
export function rssSampler (pid: number): { peak: () => number, stop: () => number } {
  let peak = 0
  const sample = (): void => {
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
      if (m !== null) peak = Math.max(peak, Number(m[1]) / 1024)
    } catch { /* gone */ }
  }
  sample()
  const timer = setInterval(sample, 50)
  return { peak: () => peak, stop: () => { clearInterval(timer); sample(); return peak } }
}

/** The RSS of `pid` now, in MiB. */
export function rssMiB (pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m === null ? 0 : Number(m[1]) / 1024
}
