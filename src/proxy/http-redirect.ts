// The plain-HTTP listener (`httpRedirect`, usually port 80): every request for a host some route
// serves is answered with a redirect to the same URL over HTTPS, and nothing else is served on it.
// A host no route serves gets 404, so the listener does not redirect arbitrary Host headers; a
// request without a usable Host gets 400. Only the request head is read: the answer closes the
// connection, so a body the client started sending is never waited for, and the listener holds no
// keep-alive connections. The head must arrive within `timeouts.requestHeadersMs` (slowloris), and
// the answers are counted in `edge_http_redirects_total{outcome}`.

import { once } from 'node:events'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import type { Logger } from 'pino'
import { Counter, type Registry } from 'prom-client'
import type { HttpRedirectConfig, RouteConfig, TimeoutsConfig } from '../config/types.js'
import { requestAuthority } from './forward-headers.js'
import { createRouter, normalizeHost, type Router } from './router.js'

// A host name or IPv4 address (letters, digits, dots, hyphens), or an IPv6 literal in brackets: what a Location may carry.
const HOST = /^(?:[a-z0-9-]+(?:\.[a-z0-9-]+)*|\[[0-9a-f:.]+\])$/

export interface HttpRedirect {
  /** Starts listening; resolves the port. */
  listen: () => Promise<number>
  /** Routes of a config reload: the hosts redirected from then on. */
  setRoutes: (routes: readonly RouteConfig[]) => void
  /** Stops listening and closes every connection (none is kept alive). */
  close: () => Promise<void>
}

export type RedirectOutcome = 'redirected' | 'unknown_host' | 'bad_request'

/** `https://host[:port]path`: the port is left out when it is 443. `host` is normalized (IPv6 in brackets). */
export function httpsLocation (host: string, port: number, path: string): string {
  return `https://${host}${port === 443 ? '' : `:${port}`}${path.startsWith('/') ? path : `/${path}`}`
}

/** Builds the listener; `httpsPort` 0 in `config` means `tlsPort`, the TLS listener's own. */
export function createHttpRedirect (opts: { config: HttpRedirectConfig, tlsPort: number, routes: readonly RouteConfig[], timeouts: TimeoutsConfig, registry: Registry, log: Logger }): HttpRedirect {
  const { config, log } = opts
  const port = config.httpsPort === 0 ? opts.tlsPort : config.httpsPort
  const status = config.permanent ? 308 : 307
  let router: Router = createRouter(opts.routes)
  const answers = new Counter({
    name: 'edge_http_redirects_total',
    help: 'Requests on the plain-HTTP listener, by outcome (redirected, unknown_host, bad_request)',
    labelNames: ['outcome'],
    registers: [opts.registry]
  })
  const answer = (res: ServerResponse, code: number, outcome: RedirectOutcome, body: string, location?: string): void => {
    answers.inc({ outcome })
    res.shouldKeepAlive = false
    res.writeHead(code, {
      'content-type': 'text/plain; charset=utf-8',
      'content-length': Buffer.byteLength(body),
      connection: 'close',
      ...(location === undefined ? {} : { location })
    })
    res.end(body)
  }
  const server: Server = createServer({
    requestTimeout: opts.timeouts.requestHeadersMs,
    headersTimeout: opts.timeouts.requestHeadersMs,
    keepAliveTimeout: 1,
    maxHeaderSize: 16 * 1024
  }, (req: IncomingMessage, res: ServerResponse) => {
    const authority = requestAuthority(req.headers, req.rawHeaders)
    const target = req.url ?? '/'
    const host = authority.ok ? normalizeHost(authority.host) : ''
    if (!authority.ok || !HOST.test(host) || !target.startsWith('/')) {
      answer(res, 400, 'bad_request', `${!authority.ok ? authority.reason : !target.startsWith('/') ? 'the request target must be a path' : 'the Host is not a host name or address'}\n`)
      return
    }
    if (router.match(host, target) === undefined) {
      answer(res, 404, 'unknown_host', 'no route serves this host\n')
      return
    }
    const location = httpsLocation(host, port, target)
    answer(res, status, 'redirected', `${location}\n`, location)
  })
  // Every connection lives requestHeadersMs at most: its one answer closes it well before. Node's own
  // headersTimeout is checked only every connectionsCheckingInterval (30 s), and a socket idle
  // timeout restarts with every byte a slowloris sends.
  server.on('connection', (socket: Socket) => {
    const timer = setTimeout(() => socket.destroy(), opts.timeouts.requestHeadersMs)
    timer.unref()
    socket.once('close', () => clearTimeout(timer))
  })
  // A malformed head gets Node's 400 and the socket closed; nothing to log per client.
  server.on('clientError', (_err, socket) => { if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n'); else socket.destroy() })
  return {
    async listen () {
      server.listen(config.port, config.host)
      await once(server, 'listening')
      const bound = (server.address() as AddressInfo).port
      log.info({ port: bound, host: config.host, httpsPort: port, status }, 'http redirect listening')
      return bound
    },
    setRoutes (routes) { router = createRouter(routes) },
    async close () {
      if (!server.listening) return
      const closed = once(server, 'close')
      server.close()
      server.closeAllConnections()
      await closed
    }
  }
}
