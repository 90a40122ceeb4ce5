// The minimal Node proxy of `bench peers`: the key in process and an undici `Pool` to the upstream,
// nothing else (no SNI dispatch, no metrics, no logs). It is the floor a Node reverse proxy can
// reach. Two listeners on the same pool: `https.createServer` for HTTP/1.1 (as in every earlier
// run, so its figures stay comparable), and `http2.createSecureServer` for HTTP/2 on Node's core
// API — the server's 'stream' event, `stream.respond()` and the body piped into the stream — the
// cheapest way Node serves HTTP/2 (the compatibility API's request and response objects cost more
// per request; `allowHTTP1` on one listener would put them on every HTTP/2 stream as soon as a
// 'request' listener serves HTTP/1.1). Run as its own process with a JSON argument; with `workers`
// > 1 it forks node:cluster workers that accept on the shared sockets (SCHED_NONE). Prints
// {"port":N,"h2Port":M} once every worker listens.
import cluster from 'node:cluster'
import { constants } from 'node:crypto'
import { readFileSync } from 'node:fs'
import type { IncomingHttpHeaders } from 'node:http'
import { createSecureServer, type IncomingHttpHeaders as H2Headers, type ServerHttp2Stream } from 'node:http2'
import { createServer as createHttpsServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import { pipeline } from 'node:stream'
import { pathToFileURL } from 'node:url'
import { Pool } from 'undici'

export interface NodeProxyOptions {
  pairs: Array<{ cert: string, key: string }>
  upstream: string
  workers: number
  /** Session tickets on (TLS 1.3 and 1.2 resumption); off, nothing resumes. */
  resumption: boolean
}

/** Hop-by-hop headers a proxy must not forward (RFC 9110 §7.6.1), in either direction. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade'])

function endToEnd (headers: IncomingHttpHeaders | Record<string, string | string[] | undefined>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {}
  for (const [k, v] of Object.entries(headers)) if (v !== undefined && !HOP_BY_HOP.has(k)) out[k] = v
  return out
}

/** An HTTP/2 request's headers for an HTTP/1.1 upstream: no pseudo-headers (`:authority` becomes `host`), no hop-by-hop ones. */
function h2ToH1 (headers: H2Headers): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {}
  for (const [k, v] of Object.entries(headers)) if (v !== undefined && k.charCodeAt(0) !== 58 && !HOP_BY_HOP.has(k)) out[k] = v
  const authority = headers[':authority']
  if (out.host === undefined && authority !== undefined) out.host = authority
  return out
}

/** One HTTP/2 stream proxied: the upstream's head with `respond()`, its body piped into the stream. */
function proxyStream (pool: Pool, stream: ServerHttp2Stream, headers: H2Headers): void {
  const method = headers[':method'] ?? 'GET'
  const hasBody = method !== 'GET' && method !== 'HEAD'
  stream.on('error', () => {})
  pool.request({ path: headers[':path'] ?? '/', method: method, headers: h2ToH1(headers), body: hasBody ? stream : null }).then(up => {
    if (stream.destroyed) { up.body.destroy(); return }
    stream.respond({ ...endToEnd(up.headers), ':status': up.statusCode })
    pipeline(up.body, stream, () => {})
  }, () => {
    if (stream.destroyed) return
    if (!stream.headersSent) stream.respond({ ':status': 502, 'content-type': 'text/plain' })
    stream.end('bad gateway\n')
  })
}

function serve (o: NodeProxyOptions): { h1: ReturnType<typeof createHttpsServer>, h2: ReturnType<typeof createSecureServer> } {
  const pool = new Pool(o.upstream, { connections: 128, keepAliveTimeout: 60_000 })
  const tls = {
    cert: o.pairs.map(p => readFileSync(p.cert)),
    key: o.pairs.map(p => readFileSync(p.key)),
    minVersion: 'TLSv1.2' as const,
    // Without tickets Node has no server-side session store of its own (no resume events handled): nothing resumes.
    secureOptions: o.resumption ? 0 : constants.SSL_OP_NO_TICKET
  }
  const server = createHttpsServer(tls, (req, res) => {
    const hasBody = req.method !== 'GET' && req.method !== 'HEAD'
    pool.request({ path: req.url ?? '/', method: req.method as 'GET', headers: endToEnd(req.headers), body: hasBody ? req : null }).then(up => {
      res.writeHead(up.statusCode, endToEnd(up.headers))
      pipeline(up.body, res, () => {})
    }, () => {
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' })
      res.end('bad gateway\n')
    })
  })
  server.keepAliveTimeout = 600_000
  server.headersTimeout = 60_000
  server.requestTimeout = 0
  server.listen(0, '127.0.0.1')
  // HTTP/2 only (no allowHTTP1): Node's defaults otherwise, as a minimal proxy would leave them.
  const h2 = createSecureServer(tls)
  h2.on('stream', (stream, headers) => { proxyStream(pool, stream, headers) })
  h2.listen(0, '127.0.0.1')
  return { h1: server, h2 }
}

/** Resolves with both ports once both listeners listen. */
async function ports (s: ReturnType<typeof serve>): Promise<{ port: number, h2Port: number }> {
  const port = async (server: { listening: boolean, once: (e: 'listening', f: () => void) => unknown, address: () => AddressInfo | string | null }): Promise<number> => {
    if (!server.listening) await new Promise<void>(resolve => { server.once('listening', resolve) })
    return (server.address() as AddressInfo).port
  }
  return { port: await port(s.h1), h2Port: await port(s.h2) }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const o = JSON.parse(process.argv[2] ?? '{}') as NodeProxyOptions
  // Ends with the benchmark: it closes our stdin when done (or when it dies).
  if (cluster.isPrimary) { process.stdin.resume(); process.stdin.on('end', () => process.exit(0)) }
  if (o.workers <= 1) {
    void ports(serve(o)).then(p => { process.stdout.write(JSON.stringify(p) + '\n') })
  } else if (cluster.isPrimary) {
    cluster.schedulingPolicy = cluster.SCHED_NONE
    let listening = 0
    // Every worker reports its ports once both listen (the same two shared sockets in each).
    cluster.on('message', (_w, p: { port: number, h2Port: number }) => {
      if (++listening === o.workers) process.stdout.write(JSON.stringify(p) + '\n')
    })
    for (let i = 0; i < o.workers; i++) cluster.fork()
  } else {
    void ports(serve(o)).then(p => { process.send?.(p) })
  }
}
