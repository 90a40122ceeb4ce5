// Test fixtures for the proxy: self-signed certificates made at test time (keys never committed),
// plain upstreams that tag their answers, and a small HTTPS client over node:https.

import { execFileSync } from 'node:child_process'
import { generateKeyPairSync } from 'node:crypto'
import { once } from 'node:events'
import { readFileSync, writeFileSync } from 'node:fs'
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http'
import { request as httpsRequest, type RequestOptions } from 'node:https'
import { isIP, type AddressInfo } from 'node:net'
import { join } from 'node:path'
import { spawnCli, type Spawned } from './processes.js'

export interface CertFiles { cert: string, key: string, certPem: string }

/**
 * Writes a fresh key (mode 0600) and a self-signed certificate for `names` (DNS names or IPs)
 * made with `openssl req -x509`.
 */
export function selfSigned (dir: string, base: string, names: string[], type: 'ec' | 'rsa' = 'ec'): CertFiles {
  const pair = type === 'ec'
    ? generateKeyPairSync('ec', { namedCurve: 'prime256v1' })
    : generateKeyPairSync('rsa', { modulusLength: 2048 })
  const key = join(dir, `${base}.key`)
  const cert = join(dir, `${base}.crt`)
  writeFileSync(key, pair.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 })
  const san = names.map(n => isIP(n) !== 0 ? `IP:${n}` : `DNS:${n}`).join(',')
  execFileSync('openssl', ['req', '-x509', '-new', '-key', key, '-subj', `/CN=${names[0]}`,
    '-addext', `subjectAltName=${san}`, '-days', '2', '-out', cert], { stdio: ['ignore', 'ignore', 'pipe'] })
  return { cert, key, certPem: readFileSync(cert, 'utf8') }
}

export interface Tagged { server: Server, url: string, close: () => Promise<void> }

/** An upstream answering every request with JSON {name, method, url, headers}, plus hop-by-hop response headers. */
export async function taggedUpstream (name: string): Promise<Tagged> {
  const server = createServer((req, res) => {
    req.resume()
    const body = JSON.stringify({ name, method: req.method, url: req.url, headers: req.headers })
    res.writeHead(200, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
      connection: 'x-resp-hop',
      'x-resp-hop': '1',
      'x-resp-keep': '1',
      'proxy-authenticate': 'Basic',
      'keep-alive': 'timeout=9'
    })
    res.end(body)
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return {
    server,
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: async () => {
      const closed = once(server, 'close')
      server.close()
      server.closeAllConnections()
      await closed
    }
  }
}

/** A URL on which nothing listens (a port that was just free). */
export async function refusedUrl (): Promise<string> {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const port = (server.address() as AddressInfo).port
  server.close()
  await once(server, 'close')
  return `http://127.0.0.1:${port}`
}

export interface Reply { status: number, headers: IncomingHttpHeaders, body: Buffer }

/** One HTTPS/1.1 request on a fresh connection; `servername` defaults to the Host's name. */
export async function get (port: number, opts: {
  path?: string
  method?: string
  host?: string
  servername?: string
  headers?: Record<string, string>
  body?: Buffer | string
  ca: string | string[]
  localAddress?: string
}): Promise<Reply> {
  const host = opts.host ?? 'localhost'
  const options: RequestOptions = {
    host: '127.0.0.1',
    port,
    method: opts.method ?? 'GET',
    path: opts.path ?? '/',
    headers: { host, ...opts.headers },
    servername: opts.servername ?? host.replace(/:\d+$/, ''),
    ca: opts.ca,
    agent: false,
    ...(opts.localAddress !== undefined ? { localAddress: opts.localAddress } : {})
  }
  return await new Promise((resolve, reject) => {
    const req = httpsRequest(options, res => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(opts.body)
  })
}

/** A running `keyedge proxy` of the WebSocket tests, with its ports. */
export interface WebSocketProxy { proxy: Spawned, port: number, adminPort: number }

/**
 * Starts `keyedge proxy` (one worker, admin on a free port, 300 ms shutdown grace) in front of
 * `upstreamUrl` for the WebSocket tests: `cert` served for `names`, a route for `routeHost` at `/`
 * and one at `/idle` with a 1 s WebSocket idle timeout. The caller stops `proxy`.
 */
export async function startWebSocketProxy (home: string, cert: CertFiles, names: string[], routeHost: string, upstreamUrl: string): Promise<WebSocketProxy> {
  const file = join(home, 'proxy.json')
  writeFileSync(file, JSON.stringify({
    listen: { host: '127.0.0.1', port: 0 },
    workers: 1,
    certificates: [{ name: 'localhost', serverNames: names, files: [{ cert: cert.cert, key: cert.key }] }],
    routes: [
      { host: routeHost, pathPrefix: '/', upstream: upstreamUrl },
      { host: routeHost, pathPrefix: '/idle', upstream: upstreamUrl, webSocketIdleMs: 1000 }
    ],
    admin: { port: 0, drainDelayMs: 0 },
    shutdownGraceMs: 300,
    log: { level: 'info' }
  }))
  const proxy = spawnCli(['proxy', '--config', file])
  try {
    const port = (await proxy.waitFor(o => o.msg === 'proxy listening', 30_000)).port as number
    const adminPort = (await proxy.waitFor(o => o.msg === 'admin listening', 10_000)).port as number
    return { proxy, port, adminPort }
  } catch (err) {
    await proxy.stop('SIGKILL')
    throw err
  }
}
