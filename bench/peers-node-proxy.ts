// The minimal Node proxy of `bench peers`: `https.createServer` with the key in process and an
// undici `Pool` to the upstream, nothing else (no SNI dispatch, no HTTP/2, no metrics, no logs).
// It is the floor a Node reverse proxy can reach. Run as its own process with a JSON argument;
// with `workers` > 1 it forks node:cluster workers that accept on the shared socket (SCHED_NONE).
// Prints {"port":N} once every worker listens.
import cluster from 'node:cluster'
import { constants } from 'node:crypto'
import { readFileSync } from 'node:fs'
import type { IncomingHttpHeaders } from 'node:http'
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

function serve (o: NodeProxyOptions): ReturnType<typeof createHttpsServer> {
  const pool = new Pool(o.upstream, { connections: 128, keepAliveTimeout: 60_000 })
  const server = createHttpsServer({
    cert: o.pairs.map(p => readFileSync(p.cert)),
    key: o.pairs.map(p => readFileSync(p.key)),
    minVersion: 'TLSv1.2',
    // Without tickets Node has no server-side session store of its own (no resume events handled): nothing resumes.
    secureOptions: o.resumption ? 0 : constants.SSL_OP_NO_TICKET
  }, (req, res) => {
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
  return server
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const o = JSON.parse(process.argv[2] ?? '{}') as NodeProxyOptions
  // Ends with the benchmark: it closes our stdin when done (or when it dies).
  if (cluster.isPrimary) { process.stdin.resume(); process.stdin.on('end', () => process.exit(0)) }
  if (o.workers <= 1) {
    const server = serve(o)
    server.once('listening', () => { process.stdout.write(JSON.stringify({ port: (server.address() as AddressInfo).port }) + '\n') })
  } else if (cluster.isPrimary) {
    cluster.schedulingPolicy = cluster.SCHED_NONE
    let listening = 0
    cluster.on('listening', (_w, address) => {
      if (++listening === o.workers) process.stdout.write(JSON.stringify({ port: address.port }) + '\n')
    })
    for (let i = 0; i < o.workers; i++) cluster.fork()
  } else {
    serve(o)
  }
}
