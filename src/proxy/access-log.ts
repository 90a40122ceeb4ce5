// The access log: one JSON line per request and per WebSocket (built by hand, the fields pino used to write), written by an async
// sonic-boom destination so the worker never waits for the disk. Lines waiting for the disk are
// bounded (`accessLog.bufferBytes`): past it — a full, slow or unwritable disk — lines are dropped,
// counted in `edge_access_log_dropped_total` and warned once; traffic goes on. A write or open
// error (disk full, directory missing) drops what was buffered and every line until the file is
// reopened, REOPEN_AFTER_MS later, so the log resumes by itself when space comes back.

import { randomUUID } from 'node:crypto'
import type { IncomingHttpHeaders, Http2ServerRequest } from 'node:http2'
import type { TLSSocket } from 'node:tls'
import { pino, type Logger } from 'pino'
import { Counter, type Registry } from 'prom-client'
import type { AccessLogConfig, RouteConfig } from '../config/types.js'
import { clientIdentity, type ClientIdentity } from '../tls/client-auth.js'
import type { ClientRequest, ClientResponse } from './forward.js'

/** What one request's access-log line is built from, filled in as the request goes. */
export interface AccessRecord {
  /** The request id: the trusted peer's `x-request-id`, or a new one (sent upstream and back). */
  readonly id: string
  route?: RouteConfig
  /** The client address after trusted X-Forwarded-For. */
  client?: string
  upstream?: string
  /** Request body bytes passed on. */
  bytesIn: number
  /** Response body bytes from the upstream. */
  bytesOut: number
  /** ms from the start of the request until the upstream request was sent / its headers came / its body ended. */
  upstreamStartMs?: number
  upstreamHeadersMs?: number
  upstreamEndMs?: number
  /** ms the upstream connection took to open (TCP + TLS) when this request opened it; 0 on a reused connection. */
  upstreamConnectMs?: number
}

/** The record of a request served on an HTTP/2 stream without the compatibility layer (h2-direct.ts). */
export interface StreamRecord extends AccessRecord {
  /**
   * Writes the line (set only when the log writes this request's line): call once, when the stream
   * closes, with the status sent (200 when none was), the `content-length` of a response the proxy
   * answered itself, and whether the response was sent whole.
   */
  end?: (status: number, declaredLength: number, complete: boolean) => void
}

/**
 * What one WebSocket's line is built from (websocket.ts, websocket-h2.ts): the fields of a request's
 * line, its status being the one the client got (101 over HTTP/1.1, 200 over HTTP/2, or a refusal's)
 * and its bytes the WebSocket's own, each way, after the handshake.
 */
export interface WebSocketRecord extends AccessRecord {
  method: string
  host: string | undefined
  /** The request target (path and query). */
  url: string
  status: number
  /** False when the proxy cut the WebSocket (idle timeout, shutdown, an error) or the client left before the upstream answered. */
  complete: boolean
  /** performance.now() when the upgrade request came. */
  readonly start: number
  /** The client's TLS connection, taken when the upgrade came (an HTTP/2 stream forgets its session once it closes). */
  readonly tls: TLSSocket | undefined
}

export interface AccessLog {
  /** Starts the record of a request; the line is written when the exchange ends (if sampled in). */
  begin: (req: ClientRequest, res: ClientResponse, trusted: boolean) => AccessRecord
  /** Starts the record of a request on an HTTP/2 stream (`tls`: its session's socket); the caller ends it. */
  beginStream: (headers: IncomingHttpHeaders, tls: TLSSocket | undefined, trusted: boolean) => StreamRecord
  /** Writes the line of a WebSocket that has ended, or was refused (if sampled in). */
  webSocket: (rec: WebSocketRecord) => void
  /** Flushes what is buffered (best effort) and closes the file. */
  close: () => Promise<void>
}

/**
 * The destination in sonic-boom's buffer mode: each line goes in as its own Buffer, and a batch is
 * one Buffer.concat when it is written. In its default string mode every line was appended to the
 * batch's string and the whole batch measured with Buffer.byteLength, which flattens it: each line
 * copied the batch so far (kilobytes) once more. (Its types only name strings.)
 */
type BufferDestination = Omit<ReturnType<typeof pino.destination>, 'write'> & { write: (data: Buffer) => boolean }

/** After a write or open failure, the file is opened again this much later (space may be back). */
export const REOPEN_AFTER_MS = 5_000

/**
 * Lines go to the file in batches of at least this many bytes, or every FLUSH_EVERY_MS: one
 * fs.write per line cost a thread-pool round trip per request (~9 % of a busy worker's CPU samples
 * on Node 24). (64 KiB batches were tried: no difference in the worker's CPU.)
 */
const BATCH_BYTES = 8192
/** The longest a line waits in memory before it is written. */
export const FLUSH_EVERY_MS = 1000

/** Destroys a destination; one that never opened may throw, and is gone either way. */
function destroyQuietly (d: { destroy: () => void }): void {
  try {
    d.destroy()
  } catch {
    // Nothing left to release.
  }
}

function countLines (data: string | Buffer): number {
  let lines = 0
  for (let i = data.indexOf('\n'); i !== -1; i = data.indexOf('\n', i + 1)) lines++
  return Math.max(1, lines)
}

const REQUEST_ID = /^[\x21-\x7e]{1,200}$/

/** The TLS socket under a request (HTTP/2: the session's). */
function tlsSocket (req: ClientRequest): TLSSocket | undefined {
  const socket = req.httpVersionMajor >= 2 ? (req as Http2ServerRequest).stream?.session?.socket : req.socket
  return socket as TLSSocket | undefined
}

/** What the access log says of a TLS connection: the same for every request on it. */
export interface ConnectionFacts {
  sni: string | null | undefined
  tlsVersion: string | undefined
  cipher: string | undefined
  tlsResumed: boolean | undefined
  alpn: string | null | undefined
  clientCert: ClientIdentity | undefined
  /** The facts' part of a line (`,"sni":…` to `,"clientCert":…`): built by the connection's first line, reused by the rest. */
  fragment?: string
}
/** Read once per connection: a keep-alive connection's requests would otherwise make three native calls and a cipher object each. */
const connectionFacts = new WeakMap<TLSSocket, ConnectionFacts>()
function factsOf (tls: TLSSocket | undefined): ConnectionFacts | undefined {
  if (tls === undefined) return undefined
  let facts = connectionFacts.get(tls)
  if (facts === undefined) {
    facts = {
      sni: tls.servername === false ? undefined : tls.servername,
      tlsVersion: tls.getProtocol?.() ?? undefined,
      cipher: tls.getCipher?.()?.name,
      tlsResumed: tls.isSessionReused?.(),
      alpn: tls.alpnProtocol === false ? undefined : tls.alpnProtocol,
      clientCert: clientIdentity(tls)
    }
    connectionFacts.set(tls, facts)
  }
  return facts
}

/**
 * ISO time of the last line, reused within the same millisecond (a busy worker writes several per
 * ms); a new millisecond appends its digits to the second's prefix (`YYYY-MM-DDTHH:MM:SS.`), built
 * once per second, instead of a Date and its toISOString per line. The same text as toISOString.
 */
let lastTimeMs = 0
let lastTime = new Date(0).toISOString()
let secondMs = -1
let secondPrefix = ''
function isoNow (): string {
  const now = Date.now()
  if (now !== lastTimeMs) {
    lastTimeMs = now
    const millis = now % 1000
    if (now - millis !== secondMs) {
      secondMs = now - millis
      secondPrefix = new Date(secondMs).toISOString().slice(0, 20)
    }
    lastTime = secondPrefix + (millis < 10 ? '00' : millis < 100 ? '0' : '') + String(millis) + 'Z'
  }
  return lastTime
}

/** Milliseconds rounded to the microsecond. */
function ms (v: number | undefined): number | undefined {
  return v === undefined ? undefined : Math.round(v * 1000) / 1000
}

/**
 * `,"key":value` for a field of the line, or '' when the value is undefined: the same bytes
 * pino wrote for it (numbers that are not finite as null, strings and objects as JSON).
 */
function field (key: string, value: string | number | boolean | object | null | undefined): string {
  switch (typeof value) {
    case 'undefined': return ''
    case 'number': return key + (Number.isFinite(value) ? String(value) : 'null')
    case 'boolean': return key + String(value)
    default: return key + JSON.stringify(value)
  }
}

/** The fields a connection's lines share: the same for every request on it. */
function factsFragment (facts: ConnectionFacts): string {
  return field(',"sni":', facts.sni) +
    field(',"tlsVersion":', facts.tlsVersion) +
    field(',"cipher":', facts.cipher) +
    field(',"tlsResumed":', facts.tlsResumed) +
    field(',"alpn":', facts.alpn) +
    field(',"clientCert":', facts.clientCert)
}

/** `,"time":…` of the last line, reused while the time is the same (several lines per millisecond). */
let lastTimeOfField = ''
let lastTimeField = field(',"time":', '')
function timeField (time: string): string {
  if (time !== lastTimeOfField) {
    lastTimeOfField = time
    lastTimeField = field(',"time":', time)
  }
  return lastTimeField
}

/**
 * One access-log line, written by hand with fixed keys in a fixed order: what the pino logger
 * it replaces wrote (`{"level":30,` then the fields, undefined ones left out, then a newline),
 * without pino's per-line key loop over a record object, serializer lookups and escaping passes.
 * Exported for the test that holds it to pino's bytes.
 */
export function accessLine (
  time: string, requestId: string, client: string | undefined, facts: ConnectionFacts | undefined, method: string | undefined,
  host: string | undefined, path: string, status: number, complete: boolean, bytesIn: number, bytesOut: number,
  upstream: string | undefined, upstreamConnectMs: number | undefined, upstreamFirstByteMs: number | undefined,
  upstreamTotalMs: number | undefined, totalMs: number | undefined
): string {
  return '{"level":30' +
    timeField(time) +
    field(',"requestId":', requestId) +
    field(',"client":', client) +
    (facts === undefined ? '' : facts.fragment ??= factsFragment(facts)) +
    field(',"method":', method) +
    field(',"host":', host) +
    field(',"path":', path) +
    field(',"status":', status) +
    field(',"complete":', complete) +
    field(',"bytesIn":', bytesIn) +
    field(',"bytesOut":', bytesOut) +
    field(',"upstream":', upstream) +
    field(',"upstreamConnectMs":', upstreamConnectMs) +
    field(',"upstreamFirstByteMs":', upstreamFirstByteMs) +
    field(',"upstreamTotalMs":', upstreamTotalMs) +
    field(',"totalMs":', totalMs) +
    '}\n'
}

/** The request id of a request: a trusted peer's `x-request-id` (1–200 visible ASCII characters), else a new UUID. */
export function requestIdOf (given: string | string[] | undefined, trusted: boolean): string {
  return trusted && typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID()
}

/**
 * A request's record, every field there from the start (undefined until set): filled in as the
 * request goes, it keeps its first shape, and never grows a separate property store per request.
 * Without an access log it writes nothing; request ids still flow.
 */
function idOnly (headers: IncomingHttpHeaders, trusted: boolean): StreamRecord {
  return {
    id: requestIdOf(headers['x-request-id'], trusted),
    route: undefined,
    client: undefined,
    upstream: undefined,
    bytesIn: 0,
    bytesOut: 0,
    upstreamStartMs: undefined,
    upstreamHeadersMs: undefined,
    upstreamEndMs: undefined,
    upstreamConnectMs: undefined,
    end: undefined
  }
}

/** A response's line waiting for its end (`begin`): held on the response, ended by shared listeners (no closures per request). */
interface PendingLine {
  end: (line: PendingLine, res: ClientResponse, complete: boolean) => void
  req: ClientRequest
  rec: AccessRecord
  tls: TLSSocket | undefined
  start: number
}
const LINE = Symbol('keyedge.accessLine')
type LineResponse = ClientResponse & { [LINE]?: PendingLine }

// The first of 'finish' and 'close' writes the line (each is emitted once per response).
function onLineFinish (this: LineResponse): void { takeLine(this, true) }
function onLineClose (this: LineResponse): void { takeLine(this, this.writableFinished) }
function takeLine (res: LineResponse, complete: boolean): void {
  const line = res[LINE]
  if (line === undefined) return
  res[LINE] = undefined
  line.end(line, res, complete)
}

/** An access log writing nothing, for configs without an `accessLog` section. */
export const NO_ACCESS_LOG: AccessLog = {
  begin: (req, _res, trusted) => idOnly(req.headers, trusted),
  beginStream: (headers, _tls, trusted) => idOnly(headers, trusted),
  webSocket: () => {},
  close: async () => {}
}

/** Opens the access log of `config` (asynchronously: an unopenable file only drops lines). */
export function createAccessLog (opts: { config: AccessLogConfig | undefined, log: Logger, registry: Registry, random?: () => number }): AccessLog {
  const { config, log, registry } = opts
  if (config === undefined) return NO_ACCESS_LOG
  const random = opts.random ?? Math.random
  const dropped = (registry.getSingleMetric('edge_access_log_dropped_total') as Counter<string> | undefined) ??
    new Counter({ name: 'edge_access_log_dropped_total', help: 'Access log lines dropped because the disk could not keep up or failed (full, unwritable)', registers: [registry] })
  const errors = (registry.getSingleMetric('edge_access_log_errors_total') as Counter<string> | undefined) ??
    new Counter({ name: 'edge_access_log_errors_total', help: 'Access log write or open failures (each one drops what was buffered, then the file is reopened after a pause)', registers: [registry] })
  let warned = false
  const warnOnce = (why: Record<string, unknown>): void => {
    if (warned) return
    warned = true
    log.warn({ accessLog: config.path ?? 'stdout', ...why }, 'access log lines are being dropped; traffic continues')
  }
  // The current destination, or undefined while a failed one waits to be reopened. A failed one is
  // destroyed at once: sonic-boom retries a failed write forever in its exit-time flushSync (a full
  // disk would hang the worker's exit), and skips destroyed streams there.
  let dest: BufferDestination | undefined
  let destOpen = false
  let reopen: NodeJS.Timeout | undefined
  let closed = false
  const open = (): void => {
    const d = pino.destination({ dest: config.path ?? 1, sync: false, mkdir: false, maxLength: config.bufferBytes, minLength: Math.min(BATCH_BYTES, config.bufferBytes >> 1), contentMode: 'buffer' }) as unknown as BufferDestination
    let opened = false
    d.once('ready', () => {
      opened = true
      if (dest === d) destOpen = true
    })
    d.on('error', (err: NodeJS.ErrnoException) => {
      if (dest !== d) return
      errors.inc()
      warnOnce({ code: err.code })
      dest = undefined
      destOpen = false
      destroyQuietly(d)
      // One whose open failed is not destroyed (sonic-boom waits for a 'ready' that never comes): its
      // 'close' takes it off pino's exit-time flushSync, which would throw "not ready yet" as the worker exits.
      if (!opened) d.emit('close')
      if (!closed) {
        reopen = setTimeout(open, REOPEN_AFTER_MS)
        reopen.unref()
      }
    })
    d.on('drop', (data: Buffer) => {
      dropped.inc(countLines(data))
      warnOnce({ reason: 'buffer full' })
    })
    dest = d
    destOpen = false
  }
  open()
  // The batches' flush timer is this one, not sonic-boom's periodicFlush: sonic-boom's keeps running
  // on a destination whose open failed and writes to fd -1, which throws in a timer and ends the worker.
  const flusher = setInterval(() => { if (dest !== undefined && destOpen) dest.flush() }, FLUSH_EVERY_MS)
  flusher.unref()
  const sink = {
    write (line: string): void {
      if (dest === undefined) {
        dropped.inc()
        return
      }
      dest.write(Buffer.from(line))
    }
  }

  const failed = (err: unknown): void => {
    dropped.inc()
    warnOnce({ code: err instanceof Error && 'code' in err ? err.code : err instanceof Error ? err.message : 'unknown' })
  }

  function write (headers: IncomingHttpHeaders, method: string | undefined, url: string, status: number, declared: number, rec: AccessRecord, tls: TLSSocket | undefined, start: number, complete: boolean): void {
    const q = config?.includeQuery === true ? -1 : url.indexOf('?')
    const upstreamFirstByteMs = rec.upstreamHeadersMs !== undefined && rec.upstreamStartMs !== undefined ? rec.upstreamHeadersMs - rec.upstreamStartMs : undefined
    const upstreamTotalMs = rec.upstreamEndMs !== undefined && rec.upstreamStartMs !== undefined ? rec.upstreamEndMs - rec.upstreamStartMs : undefined
    const facts = factsOf(tls)
    sink.write(accessLine(
      isoNow(), rec.id, rec.client, facts, method, headers[':authority'] ?? headers.host,
      q === -1 ? url : url.slice(0, q), status, complete, rec.bytesIn,
      rec.upstreamHeadersMs === undefined && Number.isFinite(declared) ? declared : rec.bytesOut,
      rec.upstream, ms(rec.upstreamConnectMs), ms(upstreamFirstByteMs), ms(upstreamTotalMs), ms(performance.now() - start)
    ))
  }

  /** Writes the line of a response that finished (`complete`) or closed. */
  function endLine (line: PendingLine, res: ClientResponse, complete: boolean): void {
    const { req, rec } = line
    if (rec.route?.accessLog === false) return
    try {
      write(req.headers, req.method, req.url ?? '/', res.statusCode, Number(res.getHeader('content-length')), rec, line.tls, line.start, complete)
    } catch (err) {
      failed(err)
    }
  }

  /** The line of a WebSocket: a request's fields, the upstream's times measured to the WebSocket's end. */
  function writeWebSocket (rec: WebSocketRecord): void {
    const q = config?.includeQuery === true ? -1 : rec.url.indexOf('?')
    const now = performance.now()
    const started = rec.upstreamStartMs
    sink.write(accessLine(
      isoNow(), rec.id, rec.client, factsOf(rec.tls), rec.method, rec.host, q === -1 ? rec.url : rec.url.slice(0, q),
      rec.status, rec.complete, rec.bytesIn, rec.bytesOut, rec.upstream, ms(rec.upstreamConnectMs),
      ms(rec.upstreamHeadersMs !== undefined && started !== undefined ? rec.upstreamHeadersMs - started : undefined),
      ms(started === undefined ? undefined : now - started), ms(now - rec.start)
    ))
  }

  return {
    webSocket (rec) {
      if (rec.route?.accessLog === false) return
      if (config.sampleRate < 1 && random() >= config.sampleRate) return
      try {
        writeWebSocket(rec)
      } catch (err) {
        dropped.inc()
        warnOnce({ code: err instanceof Error && 'code' in err ? err.code : err instanceof Error ? err.message : 'unknown' })
      }
    },
    begin (req, res, trusted) {
      const rec = idOnly(req.headers, trusted)
      const start = performance.now()
      const sampled = config.sampleRate >= 1 || random() < config.sampleRate
      if (sampled) {
        // The TLS socket is taken now: an HTTP/2 stream forgets its session once it closes.
        const line: PendingLine = { end: endLine, req, rec, tls: tlsSocket(req), start }
        const r = res as LineResponse
        r[LINE] = line
        r.on('finish', onLineFinish)
        r.on('close', onLineClose)
      }
      return rec
    },
    beginStream (headers, tls, trusted) {
      const rec = idOnly(headers, trusted)
      if (config.sampleRate < 1 && random() >= config.sampleRate) return rec
      const start = performance.now()
      rec.end = (status, declared, complete) => {
        rec.end = undefined
        if (rec.route?.accessLog === false) return
        try {
          write(headers, headers[':method'], headers[':path'] ?? '/', status, declared, rec, tls, start, complete)
        } catch (err) {
          failed(err)
        }
      }
      return rec
    },
    close: async () => {
      closed = true
      clearTimeout(reopen)
      clearInterval(flusher)
      const d = dest
      if (d === undefined) return
      // Bounded: a disk that never drains must not hold up shutdown.
      await new Promise<void>(resolve => {
        const timer = setTimeout(() => { destroyQuietly(d); resolve() }, 2000)
        timer.unref()
        const done = (): void => { clearTimeout(timer); resolve() }
        d.once('close', done)
        d.once('error', done)
        try { d.end() } catch { done() }
      })
    }
  }
}
