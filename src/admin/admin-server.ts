// The admin listener (loopback, its own port): health, readiness, cluster-wide metrics, the served
// certificates and POST /reload. It serves views; the primary's control plane does the work.

import { once } from 'node:events'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Logger } from 'pino'
import type { CertEntryInfo } from '../tls/cert-info.js'
import { errorMessage } from '../../lib/errors.js'

export interface AdminReload {
  ok: boolean
  errors: string[]
  results: Array<{ ok: boolean }>
}

/** What the admin listener asks of the process it belongs to. */
export interface AdminBackend {
  /** Null when ready, else why not (`draining`, `starting`, `no_workers`, `keyd_unreachable`, `keyd_sealed`). */
  notReady: () => string | null
  /** More about readiness for the /ready body (keyd's state). */
  readiness?: () => Record<string, unknown>
  workers: () => number
  metrics: () => Promise<{ contentType: string, body: string }>
  certificates: () => Promise<CertEntryInfo[]>
  reload: () => Promise<AdminReload>
}

export interface AdminServer {
  readonly port: number
  close: () => Promise<void>
}

function json (res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body, null, 2) + '\n'
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' })
  res.end(text)
}

/** HTTP status of a reload: 200 done; 422 refused for a certificate; 503 nothing could run it; 500 otherwise. */
export function reloadStatus (r: AdminReload): number {
  if (r.ok) return 200
  if (r.results.some(x => !x.ok)) return 422
  if (r.errors.some(e => /EDGE_ERR_CONFIG_INVALID/.test(e))) return 422
  if (r.errors.some(e => /no worker is running/.test(e))) return 503
  return 500
}

async function route (backend: AdminBackend, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const path = (req.url ?? '/').split('?')[0]
  const method = req.method ?? 'GET'
  const allow = (methods: string[]): boolean => {
    if (methods.includes(method)) return true
    res.setHeader('allow', methods.join(', '))
    json(res, 405, { error: 'method_not_allowed' })
    return false
  }
  switch (path) {
    case '/healthz':
      if (allow(['GET', 'HEAD'])) json(res, 200, { status: 'ok', workers: backend.workers() })
      return
    case '/ready': {
      if (!allow(['GET', 'HEAD'])) return
      const reason = backend.notReady()
      json(res, reason === null ? 200 : 503, { status: reason ?? 'ready', workers: backend.workers(), ...backend.readiness?.() })
      return
    }
    case '/metrics': {
      if (!allow(['GET'])) return
      const m = await backend.metrics()
      res.writeHead(200, { 'content-type': m.contentType, 'content-length': Buffer.byteLength(m.body) })
      res.end(m.body)
      return
    }
    case '/certs':
      if (allow(['GET'])) json(res, 200, { certificates: await backend.certificates() })
      return
    case '/reload': {
      if (!allow(['POST'])) return
      req.resume()
      const report = await backend.reload()
      json(res, reloadStatus(report), report)
      return
    }
    default:
      json(res, 404, { error: 'not_found', paths: ['/healthz', '/ready', '/metrics', '/certs', 'POST /reload'] })
  }
}

/** Starts the admin listener on `host:port` (port 0 picks one). @throws listen errors (EADDRINUSE …). */
export async function startAdminServer (opts: { host: string, port: number, backend: AdminBackend, log: Logger }): Promise<AdminServer> {
  const { backend, log } = opts
  const server: Server = createServer((req, res) => {
    route(backend, req, res).catch((err: unknown) => {
      log.error({ path: req.url, err: errorMessage(err) }, 'admin request failed')
      if (!res.headersSent) json(res, 500, { error: 'internal', message: errorMessage(err) })
      else res.destroy()
    })
  })
  server.keepAliveTimeout = 5_000
  server.listen(opts.port, opts.host)
  await Promise.race([once(server, 'listening'), once(server, 'error').then(([err]) => { throw err })])
  const port = (server.address() as AddressInfo).port
  return {
    port,
    close: async () => {
      const closed = once(server, 'close')
      server.close()
      server.closeAllConnections()
      await closed
    }
  }
}
