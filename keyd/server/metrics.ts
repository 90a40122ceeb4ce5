// keyd's Prometheus metrics and its loopback HTTP endpoint (/metrics, /healthz).
import { createServer, type Server } from 'node:http'
import { once } from 'node:events'
import { Registry, Counter, Histogram, Gauge, collectDefaultMetrics } from 'prom-client'

export interface KeydHealth { sealed: () => boolean, auditWritable: () => boolean, auditBacklog: () => number }

const BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1]

export class KeydMetrics {
  readonly registry = new Registry()
  readonly #ops: Counter<'op' | 'key' | 'result'>
  readonly #duration: Histogram<'op' | 'phase'>
  readonly #refused: Counter<'reason'>
  readonly #violations: Counter<'client'>
  readonly #disconnects: Counter<'reason'>
  #pausedConnections = 0
  #load: () => { connections: number, heldBytes: number, sharedBytes: number } = () => ({ connections: 0, heldBytes: 0, sharedBytes: 0 })

  constructor (health: KeydHealth) {
    collectDefaultMetrics({ register: this.registry, prefix: 'keyd_' })
    this.#ops = new Counter({ name: 'keyd_operations_total', help: 'keyd operations by opcode, key and result', labelNames: ['op', 'key', 'result'], registers: [this.registry] })
    this.#duration = new Histogram({ name: 'keyd_operation_duration_seconds', help: 'time a request waited in keyd (phase=queue) and took to execute (phase=exec)', labelNames: ['op', 'phase'], buckets: BUCKETS, registers: [this.registry] })
    this.#refused = new Counter({ name: 'keyd_refused_total', help: 'requests refused, by reason (wire error name)', labelNames: ['reason'], registers: [this.registry] })
    this.#gauge('keyd_sealed', '1 while keyd is sealed', () => health.sealed() ? 1 : 0)
    this.#gauge('keyd_audit_writable', '0 once the audit log cannot be written', () => health.auditWritable() ? 1 : 0)
    this.#gauge('keyd_audit_backlog', 'audit entries recorded but not yet on disk', () => health.auditBacklog())
    this.#violations = new Counter({ name: 'keyd_access_violations_total', help: 'requests refused with USAGE_FORBIDDEN (a key or usage outside the client\'s rights), by authenticated client', labelNames: ['client'], registers: [this.registry] })
    this.#disconnects = new Counter({ name: 'keyd_disconnects_total', help: 'connections keyd closed, by reason (hello-timeout, frame-too-large, pre-hello-buffer, memory, stalled, unknown-client, revoked)', labelNames: ['reason'], registers: [this.registry] })
    this.#gauge('keyd_connections', 'open client connections', () => this.#load().connections)
    this.#gauge('keyd_connection_held_bytes', 'bytes held for clients: partial frames, unanswered requests, unread answers', () => this.#load().heldBytes)
    this.#gauge('keyd_connection_shared_bytes', 'bytes drawn from the shared memory budget (beyond each connection\'s free allowance)', () => this.#load().sharedBytes)
    this.#gauge('keyd_connections_paused', 'connections keyd stopped reading because their client leaves answers unread', () => this.#pausedConnections)
  }

  /** A gauge in this registry that reads its value when scraped. */
  #gauge (name: string, help: string, read: () => number): void {
    const gauge: Gauge = new Gauge({ name, help, registers: [this.registry], collect () { gauge.set(read()) } })
  }

  /** Where the connection gauges read from (the server registers itself). */
  watchConnections (load: () => { connections: number, heldBytes: number, sharedBytes: number }): void {
    this.#load = load
  }

  /** `count` requests (SIGN_BATCH entries count one each) outside `client`'s rights. */
  accessViolation (client: string, count = 1): void {
    this.#violations.inc({ client }, count)
  }

  disconnected (reason: string): void {
    this.#disconnects.inc({ reason })
  }

  /** A connection was paused (+1) or resumed or closed while paused (-1). */
  paused (delta: 1 | -1): void {
    this.#pausedConnections += delta
  }

  /** One finished request: `queueSec` from its arrival to its start, `execSec` running it. */
  observe (op: string, key: string | null, result: string, queueSec: number, execSec: number): void {
    this.#ops.inc({ op, key: key ?? '', result })
    this.#duration.observe({ op, phase: 'queue' }, queueSec)
    this.#duration.observe({ op, phase: 'exec' }, execSec)
    if (result !== 'ok') this.#refused.inc({ reason: result })
  }

  /** A request refused before it ran (framing, authentication, sealed, overload). */
  refused (reason: string): void {
    this.#refused.inc({ reason })
  }
}

/**
 * Serves /metrics and /healthz (200 when unsealed and the audit log is writable, else 503) on
 * `host:port` (loopback by default). Returns the server and its port.
 */
export async function startMetricsServer (metrics: KeydMetrics, health: KeydHealth, port: number, host = '127.0.0.1'): Promise<{ server: Server, port: number }> {
  const server = createServer((req, res) => {
    if (req.method !== 'GET') { res.writeHead(405).end(); return }
    if (req.url === '/metrics') {
      metrics.registry.metrics().then(text => {
        res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text)
      }, () => res.writeHead(500).end())
      return
    }
    if (req.url === '/healthz') {
      const ok = !health.sealed() && health.auditWritable()
      res.writeHead(ok ? 200 : 503, { 'content-type': 'application/json' })
        .end(JSON.stringify({ ok, sealed: health.sealed(), auditWritable: health.auditWritable(), auditBacklog: health.auditBacklog() }) + '\n')
      return
    }
    res.writeHead(404).end()
  })
  server.listen(port, host)
  await once(server, 'listening')
  const addr = server.address()
  return { server, port: typeof addr === 'object' && addr !== null ? addr.port : port }
}
