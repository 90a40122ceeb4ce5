// The token endpoint's own listener (loopback by default, HTTPS with optional mutual TLS): POST /token,
// GET /.well-known/jwks.json and /.well-known/openid-configuration, in every proxy worker.
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import type { Logger } from 'pino'
import type { Registry } from 'prom-client'
import { KeydClient } from '../../keyd/client/client.js'
import { KeydError } from '../../keyd/errors.js'
import { errorCode, errorMessage } from '../../lib/errors.js'
import type { EdgeConfig } from '../config/types.js'
import type { TokenConfig } from '../config/token.js'
import { ConfigInvalidError, TokenRequestError } from '../errors.js'
import { CallerAuth } from './auth.js'
import { TokenIssuer } from './issuer.js'
import { JWS_TO_KEYD } from './jws.js'
import { loadTokenKeys, type TokenKeySet } from './keys.js'
import { tokenMetrics, type TokenMetrics } from './metrics.js'
import { parseTokenRequest } from './request.js'
import { SignQueue } from './sign-queue.js'

export interface TokenServer {
  /** Starts listening on `token.listen`; resolves the port. Call after the proxy's own listener. */
  listen: () => Promise<number>
  close: () => Promise<void>
}

const KEYD_RETRY_MS = 1000

function sendJson (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', ...headers })
  res.end(text)
}

function sendError (res: ServerResponse, err: TokenRequestError): void {
  sendJson(res, err.status, { code: err.code, message: err.message }, err.headers)
}

/** Reads the body up to `max` bytes. @throws TokenRequestError 413 EDGE_ERR_TOKEN_BODY_TOO_LARGE */
async function readBody (req: IncomingMessage, max: number): Promise<Buffer> {
  const tooLarge = (): TokenRequestError => new TokenRequestError('EDGE_ERR_TOKEN_BODY_TOO_LARGE', 413, `the body is over ${max} bytes`, { connection: 'close' })
  const declared = Number(req.headers['content-length'] ?? 0)
  if (declared > max) throw tooLarge()
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length
    if (size > max) throw tooLarge()
    chunks.push(chunk)
  }
  return Buffer.concat(chunks)
}

const LOOPBACK_NAMES = new Set(['localhost', '127.0.0.1', '[::1]'])

/**
 * The issuer of an endpoint that listens on `port` (configured `configuredPort`): when the port
 * was 0 (any free one) and the issuer names this machine by a loopback name without a port
 * (`http://localhost`), the port the endpoint got is added, so `iss`, `jwks_uri` and
 * `token_endpoint` name the endpoint itself. Any other issuer is a public URL (the endpoint may
 * sit behind a proxy or a balancer) and is kept as configured.
 */
export function boundIssuer (issuer: string, configuredPort: number, port: number): string {
  if (configuredPort !== 0) return issuer
  let url: URL
  try { url = new URL(issuer) } catch { return issuer }
  if (url.port !== '' || !LOOPBACK_NAMES.has(url.hostname)) return issuer
  url.port = String(port)
  return `${url.protocol}//${url.host}${url.pathname === '/' ? '' : url.pathname}`
}

/**
 * Prepares the token endpoint of `config.token` (which requires `config.keyd`): loads and checks the
 * keys through keyd before anything listens, so a refused key stops the worker before it serves.
 * @throws TokenKeyError (EDGE_ERR_TOKEN_KEY) when keyd refuses a configured key; ConfigInvalidError for
 *   an unreadable secret or TLS file; listen errors (EADDRINUSE …).
 */
export async function createTokenServer (opts: { config: EdgeConfig, log: Logger, registry: Registry }): Promise<TokenServer> {
  const { log } = opts
  // A copy: listen() may set the issuer's port (boundIssuer); the issuer built meanwhile holds this object.
  const config: TokenConfig = { ...(opts.config.token as TokenConfig) }
  const k = opts.config.keyd
  if (k === undefined) throw new ConfigInvalidError(['token: needs a "keyd" section'])
  const keyd = new KeydClient({ socketPath: k.socket, clientName: k.clientName, secretFile: k.secretFile, timeoutMs: k.timeoutMs })
  const metrics = tokenMetrics(opts.registry)
  const auth = new CallerAuth(config.callers)

  let issuer: TokenIssuer | undefined
  let keys: TokenKeySet | undefined
  let retry: NodeJS.Timeout | undefined
  const ready = (set: TokenKeySet): void => {
    keys = set
    const spec = JWS_TO_KEYD[set.active.config.algorithm]
    const s = config.spike
    const queue = new SignQueue({
      keyd, keyName: set.active.config.name, algorithm: spec.keyd, ieeeP1363: spec.ieeeP1363,
      batch: s.batch, batchMaxSize: s.batchMaxSize, batchWindowMs: s.batchWindowMs, maxInFlight: s.maxInFlight,
      maxQueue: config.limits.maxQueue, metrics
    })
    issuer = new TokenIssuer({ config, keys: set, queue, metrics })
  }
  const load = async (): Promise<void> => {
    try {
      ready(await loadTokenKeys(keyd, config, log))
    } catch (err) {
      if (!(err instanceof KeydError)) throw err
      log.warn({ code: err.code }, 'keyd unavailable for the token keys, retrying')
      retry = setTimeout(() => { load().catch((e: unknown) => log.error({ code: errorCode(e), err: errorMessage(e) }, 'token keys refused')) }, KEYD_RETRY_MS)
      retry.unref()
    }
  }
  await load()

  const unavailable = (): TokenRequestError => new TokenRequestError('EDGE_ERR_TOKEN_SIGNER_UNAVAILABLE', 503, 'the token keys are not loaded yet (keyd unavailable)', { 'retry-after': '1' })

  const onToken = async (req: IncomingMessage, res: ServerResponse, m: TokenMetrics): Promise<void> => {
    const t0 = performance.now()
    let outcome = 'issued'
    try {
      const caller = auth.authenticate(req)
      const type = ((req.headers['content-type'] ?? '').split(';')[0] ?? '').trim().toLowerCase()
      if (type !== 'application/json') throw new TokenRequestError('EDGE_ERR_TOKEN_UNSUPPORTED_MEDIA_TYPE', 415, 'the body must be application/json')
      const body = await readBody(req, config.maxBodyBytes)
      const request = parseTokenRequest(body, caller, config.defaultLifetimeSeconds)
      if (issuer === undefined || keys === undefined) throw unavailable()
      const { issued, source } = await issuer.issue(caller, request)
      m.issued.inc({ alg: keys.active.config.algorithm, source })
      const expiresIn = Math.max(0, issued.expiresAtSeconds - Math.floor(Date.now() / 1000))
      sendJson(res, 200, { access_token: issued.token, token_type: 'Bearer', expires_in: expiresIn }, { 'x-keyedge-token-source': source })
    } catch (err) {
      let e: TokenRequestError
      if (err instanceof TokenRequestError) {
        e = err
      } else {
        log.error({ err: errorMessage(err) }, 'token request failed')
        e = new TokenRequestError('EDGE_ERR_TOKEN_INTERNAL', 500, 'internal error')
      }
      outcome = e.status === 429 ? 'rate_limited' : e.status >= 500 ? 'error' : 'refused'
      m.rejected.inc({ reason: e.headers['x-keyedge-reject-reason'] ?? e.code.replace('EDGE_ERR_TOKEN_', '').toLowerCase() })
      if (!res.headersSent) sendError(res, e)
    } finally {
      m.requestDuration.observe({ outcome }, (performance.now() - t0) / 1000)
    }
  }

  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const path = (req.url ?? '/').split('?')[0] ?? '/'
    const method = req.method ?? 'GET'
    const allow = (methods: string): boolean => {
      if (methods.split(', ').includes(method)) return true
      sendError(res, new TokenRequestError('EDGE_ERR_TOKEN_METHOD_NOT_ALLOWED', 405, `${path} accepts ${methods}`, { allow: methods }))
      return false
    }
    if (path === '/token') {
      if (allow('POST')) void onToken(req, res, metrics)
    } else if (path === '/.well-known/jwks.json') {
      if (!allow('GET, HEAD')) return
      if (keys === undefined) return sendError(res, unavailable())
      sendJson(res, 200, keys.jwks(), { 'cache-control': `public, max-age=${config.verifierCacheSeconds}` })
    } else if (path === '/.well-known/openid-configuration') {
      if (!allow('GET, HEAD')) return
      const algs = [...new Set((keys?.published() ?? []).map(x => x.config.algorithm))]
      sendJson(res, 200, {
        issuer: config.issuer,
        jwks_uri: `${config.issuer}/.well-known/jwks.json`,
        token_endpoint: `${config.issuer}/token`,
        id_token_signing_alg_values_supported: algs
      }, { 'cache-control': `public, max-age=${config.verifierCacheSeconds}` })
    } else {
      sendError(res, new TokenRequestError('EDGE_ERR_TOKEN_NOT_FOUND', 404, 'no such path (POST /token, GET /.well-known/jwks.json, GET /.well-known/openid-configuration)'))
    }
  }

  let server: Server
  if (config.tls !== undefined) {
    const read = (file: string, what: string): string => {
      try { return readFileSync(file, 'utf8') } catch (err) { throw new ConfigInvalidError([`token.tls.${what}: cannot read ${file} (${errorCode(err) ?? 'error'})`]) }
    }
    const mtls = config.tls.clientCa !== undefined
    server = createHttpsServer({
      cert: read(config.tls.cert, 'cert'),
      key: read(config.tls.key, 'key'),
      ...(mtls ? { ca: read(config.tls.clientCa as string, 'clientCa'), requestCert: true, rejectUnauthorized: false } : {}),
      ALPNProtocols: ['http/1.1']
    }, handler)
  } else {
    server = createServer(handler)
  }
  server.headersTimeout = 5_000
  server.requestTimeout = 10_000
  server.keepAliveTimeout = 5_000
  const listen = async (): Promise<number> => {
    server.listen(config.listen.port, config.listen.host)
    await once(server, 'listening')
    const port = (server.address() as AddressInfo).port
    // Before the first request: none is read until the server listens.
    config.issuer = boundIssuer(config.issuer, config.listen.port, port)
    log.info({ port, host: config.listen.host, tls: config.tls !== undefined, issuer: config.issuer }, 'token endpoint listening')
    return port
  }

  return {
    listen,
    close: async () => {
      if (retry !== undefined) clearTimeout(retry)
      keys?.close()
      keyd.close()
      if (!server.listening) return
      const closed = once(server, 'close')
      server.close()
      server.closeIdleConnections()
      setTimeout(() => server.closeAllConnections(), 2_000).unref()
      await closed
    }
  }
}
