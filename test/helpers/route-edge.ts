// Test pieces for the route options that change what goes upstream and who may send it
// (`rewritePrefix`, `upstreamHost`, `allow`/`deny`): a recording upstream that speaks HTTP/1.1
// (plain requests and WebSocket upgrades) and one that speaks h2c, each answering with what it got;
// a `keyedge proxy` started from a settings object (reloadable by rewriting its file); and clients
// for HTTP/1.1, HTTP/2, an HTTP/1.1 WebSocket upgrade and an HTTP/2 extended CONNECT.

import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { readFileSync, existsSync, writeFileSync } from 'node:fs'
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server } from 'node:http'
import { connect as h2connect, createServer as createH2cServer, type ClientHttp2Session, type Http2Server } from 'node:http2'
import { request as httpsRequest } from 'node:https'
import type { AddressInfo, Socket } from 'node:net'
import { join } from 'node:path'
import { connect as tlsConnect } from 'node:tls'
import { validateConfig } from '../../src/config/index.js'
import { adminMetrics } from './http-front.js'
import { spawnCli, type Spawned } from './processes.js'
import type { CertFiles } from './proxy-fixtures.js'
import { admin, type AdminReply } from './rotation.js'
import { within } from './wait.js'

/** What an upstream got: request target, headers (`:authority` for h2c), and how (`h1`, `h2c`, `ws`). */
export interface Seen { via: 'h1' | 'h2c' | 'ws', url: string, headers: IncomingHttpHeaders }

export interface Recorder {
  /** `http://127.0.0.1:port` of the HTTP/1.1 upstream (plain requests and WebSocket upgrades). */
  h1: string
  /** `http://127.0.0.1:port` of the h2c upstream. */
  h2c: string
  seen: Seen[]
  close: () => void
}

/**
 * Starts both upstreams: each answers a request with 200 and the JSON of what it got; the HTTP/1.1
 * one also completes a WebSocket handshake (101), then echoes bytes.
 */
export async function recorder (): Promise<Recorder> {
  const seen: Seen[] = []
  const sockets = new Set<Socket>()
  const reply = (via: Seen['via'], url: string, headers: IncomingHttpHeaders): string => {
    const s: Seen = { via, url, headers }
    seen.push(s)
    return JSON.stringify(s)
  }
  const h1: Server = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(reply('h1', req.url ?? '', req.headers))
  })
  h1.on('upgrade', (req: IncomingMessage, socket: Socket) => {
    sockets.add(socket)
    socket.on('error', () => {})
    reply('ws', req.url ?? '', req.headers)
    const accept = createHash('sha1').update(`${String(req.headers['sec-websocket-key'])}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64')
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`)
    socket.pipe(socket)
  })
  const h2c: Http2Server = createH2cServer()
  h2c.on('stream', (stream, headers) => {
    stream.respond({ ':status': 200, 'content-type': 'application/json' })
    stream.end(reply('h2c', String(headers[':path']), headers))
  })
  await Promise.all([new Promise<void>(resolve => h1.listen(0, '127.0.0.1', resolve)), new Promise<void>(resolve => h2c.listen(0, '127.0.0.1', resolve))])
  const url = (s: { address: () => unknown }): string => `http://127.0.0.1:${(s.address() as AddressInfo).port}`
  return {
    h1: url(h1),
    h2c: url(h2c),
    seen,
    close: () => {
      for (const s of sockets) s.destroy()
      h1.closeAllConnections()
      h1.close()
      h2c.close()
    }
  }
}

export interface EdgeProxy {
  proc: Spawned
  port: number
  adminPort: number
  /** Writes `settings` to the config file and reloads (POST /reload). */
  reload: (settings: Record<string, unknown>) => Promise<AdminReply>
  metrics: () => Promise<string>
  /** The access log's lines so far (`accessLog.path` = `accessLogFile`). */
  accessLines: () => Array<Record<string, unknown>>
  accessLogFile: string
  sessions: ClientHttp2Session[]
  stop: () => Promise<void>
}

/** The base settings: one worker, listener and admin on free ports, `cert` for `localhost`, an access log. */
export function baseSettings (home: string, cert: CertFiles, routes: unknown[], extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    listen: { host: '127.0.0.1', port: 0 },
    workers: 1,
    certificates: [{ name: 'localhost', serverNames: ['localhost'], files: [{ cert: cert.cert, key: cert.key }] }],
    routes,
    admin: { port: 0, drainDelayMs: 0 },
    accessLog: { path: join(home, 'access.log'), includeQuery: true },
    shutdownGraceMs: 300,
    ...extra
  }
}

/** The config errors of one route (`route` beside `upstream`) as text, '' when it loads. */
export function routeProblems (home: string, cert: CertFiles, upstream: string, route: Record<string, unknown>): string {
  try {
    validateConfig(baseSettings(home, cert, [{ upstream, ...route }]), { baseDir: home })
    return ''
  } catch (err) {
    return String(err)
  }
}

/** Starts `keyedge proxy` with `settings` (see baseSettings), `env` added to its environment. */
export async function startEdge (home: string, settings: Record<string, unknown>, env: Record<string, string> = {}): Promise<EdgeProxy> {
  const file = join(home, 'proxy.json')
  writeFileSync(file, JSON.stringify(settings))
  const proc = spawnCli(['proxy', '--config', file], env)
  const port = (await proc.waitFor(o => o.msg === 'proxy listening', 30_000)).port as number
  const adminPort = (await proc.waitFor(o => o.msg === 'admin listening', 10_000)).port as number
  const accessLogFile = join(home, 'access.log')
  const sessions: ClientHttp2Session[] = []
  return {
    proc,
    port,
    adminPort,
    sessions,
    accessLogFile,
    reload: async next => {
      writeFileSync(file, JSON.stringify(next))
      return await admin(adminPort, '/reload', 'POST')
    },
    metrics: async () => await adminMetrics(adminPort),
    accessLines: () => existsSync(accessLogFile)
      ? readFileSync(accessLogFile, 'utf8').split('\n').filter(l => l !== '').map(l => JSON.parse(l) as Record<string, unknown>)
      : [],
    stop: async () => {
      for (const s of sessions) s.destroy()
      await proc.stop('SIGKILL')
    }
  }
}

export interface Reply { status: number, headers: Record<string, unknown>, body: string }

/** A request over HTTP/1.1 (TLS, SNI localhost). */
export async function viaH1 (edge: Pick<EdgeProxy, 'port'>, cert: Pick<CertFiles, 'certPem'>, path: string, headers: Record<string, string> = {}): Promise<Reply> {
  const req = httpsRequest({ host: '127.0.0.1', port: edge.port, path, servername: 'localhost', ca: cert.certPem, agent: false, headers: { host: 'localhost', ...headers } })
  req.end()
  const [res] = await within(once(req, 'response'), 10_000, `HTTP/1.1 ${path}`) as [IncomingMessage]
  let body = ''
  res.setEncoding('utf8')
  res.on('data', (c: string) => { body += c })
  await within(once(res, 'end'), 10_000, `HTTP/1.1 ${path} body`)
  return { status: res.statusCode ?? 0, headers: res.headers, body }
}

/** A request over HTTP/2 (a new session each time). */
export async function viaH2 (edge: Pick<EdgeProxy, 'port' | 'sessions'>, cert: Pick<CertFiles, 'certPem'>, path: string, headers: Record<string, string> = {}): Promise<Reply> {
  const s = h2connect(`https://localhost:${edge.port}`, { ca: cert.certPem })
  edge.sessions.push(s)
  s.on('error', () => {})
  const stream = s.request({ ':path': path, ...headers })
  stream.on('error', () => {})
  const [head] = await within(once(stream, 'response'), 10_000, `HTTP/2 ${path}`) as [Record<string, unknown>]
  let body = ''
  stream.setEncoding('utf8')
  stream.on('data', (c: string) => { body += c })
  await within(once(stream, 'end'), 10_000, `HTTP/2 ${path} body`)
  s.close()
  return { status: Number(head[':status']), headers: head, body }
}

/** An HTTP/1.1 WebSocket upgrade: the status of the answer (the socket is closed after it). */
export async function wsH1 (edge: EdgeProxy, cert: CertFiles, path: string, extra = ''): Promise<{ status: number, head: string }> {
  const socket = tlsConnect({ host: '127.0.0.1', port: edge.port, servername: 'localhost', ca: cert.certPem, ALPNProtocols: ['http/1.1'] })
  socket.on('error', () => {})
  await within(once(socket, 'secureConnect'), 10_000, 'TLS connect')
  socket.write(`GET ${path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n${extra}\r\n`)
  let buf = ''
  await within(new Promise<void>(resolve => {
    socket.on('data', (c: Buffer) => { buf += c.toString('latin1'); if (buf.includes('\r\n\r\n')) resolve() })
    socket.once('close', () => resolve())
  }), 10_000, `upgrade ${path}`)
  socket.destroy()
  return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(buf)?.[1] ?? 0), head: buf }
}

/** An HTTP/2 extended CONNECT (RFC 8441): the stream's status (the stream is closed after it). */
export async function wsH2 (edge: EdgeProxy, cert: CertFiles, path: string): Promise<{ status: number, headers: Record<string, unknown> }> {
  const s = h2connect(`https://localhost:${edge.port}`, { ca: cert.certPem })
  edge.sessions.push(s)
  s.on('error', () => {})
  await within(once(s, 'remoteSettings'), 10_000, 'SETTINGS')
  const stream = s.request({ ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': 'https', ':path': path, ':authority': 'localhost', 'sec-websocket-version': '13' }, { endStream: false })
  stream.on('error', () => {})
  const [headers] = await within(once(stream, 'response'), 10_000, `CONNECT ${path}`) as [Record<string, unknown>]
  s.destroy()
  return { status: Number(headers[':status']), headers }
}
