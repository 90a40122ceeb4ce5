// A tiny built-in HTTP upstream for demos and tests: a friendly page, /echo, /headers,
// /slow?ms=N and /status/NNN. Plain HTTP, meant for loopback only.

import { once } from 'node:events'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

/** Longest delay /slow accepts, so a stray request cannot hold a socket for long. */
export const DEMO_MAX_SLOW_MS = 60_000

export interface DemoUpstream {
  readonly server: Server
  readonly port: number
  /** `http://host:port` */
  readonly url: string
  close: () => Promise<void>
}

function text (res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body) })
  res.end(body)
}

function handle (req: IncomingMessage, res: ServerResponse, timers: Set<NodeJS.Timeout>): void {
  const url = new URL(req.url ?? '/', 'http://demo.invalid')
  const path = url.pathname
  if (path === '/echo') {
    res.writeHead(200, { 'content-type': req.headers['content-type'] ?? 'application/octet-stream' })
    req.pipe(res)
    return
  }
  if (path === '/headers') {
    const body = JSON.stringify({ method: req.method, url: req.url, httpVersion: req.httpVersion, headers: req.headers })
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
    res.end(body)
    return
  }
  if (path === '/slow') {
    const ms = Math.min(Math.max(Number(url.searchParams.get('ms') ?? '1000') || 0, 0), DEMO_MAX_SLOW_MS)
    const timer = setTimeout(() => {
      timers.delete(timer)
      text(res, 200, `slept ${ms} ms\n`)
    }, ms)
    timers.add(timer)
    res.once('close', () => { clearTimeout(timer); timers.delete(timer) })
    return
  }
  const status = /^\/status\/([1-5]\d\d)$/.exec(path)
  if (status !== null) {
    const code = Number(status[1])
    if (code < 200) text(res, 400, 'informational statuses are not supported\n')
    else if (code === 204 || code === 304) { res.writeHead(code); res.end() } else text(res, code, `status ${code}\n`)
    return
  }
  if (path === '/') {
    req.resume()
    const forwarded = Object.entries(req.headers)
      .filter(([name]) => name.startsWith('x-forwarded-'))
      .map(([name, value]) => `  ${name}: ${String(value)}\n`).join('')
    text(res, 200, 'keyedge demo upstream — the proxy reached me.\n\n' +
      `method: ${req.method ?? ''}\npath: ${req.url ?? ''}\nforwarding headers seen:\n${forwarded === '' ? '  (none)\n' : forwarded}` +
      '\ntry /echo (POST a body), /headers, /slow?ms=500, /status/418\n')
    return
  }
  req.resume()
  text(res, 404, 'not found on the demo upstream\n')
}

/** Starts the demo upstream; port 0 picks a free port. */
export async function startDemoUpstream (opts: { host?: string, port?: number } = {}): Promise<DemoUpstream> {
  const host = opts.host ?? '127.0.0.1'
  const timers = new Set<NodeJS.Timeout>()
  const server = createServer((req, res) => handle(req, res, timers))
  server.listen(opts.port ?? 0, host)
  await once(server, 'listening')
  const port = (server.address() as AddressInfo).port
  const urlHost = host.includes(':') ? `[${host}]` : host
  return {
    server,
    port,
    url: `http://${urlHost}:${port}`,
    close: async () => {
      for (const timer of timers) clearTimeout(timer)
      timers.clear()
      const closed = once(server, 'close')
      server.close()
      server.closeAllConnections()
      await closed
    }
  }
}
