// keyd's Prometheus metrics and its loopback HTTP endpoint (/metrics, /healthz).
import { createServer, type Server } from 'node:http'
import { once } from 'node:events'
import { randomBytes, generateKeyPairSync, sign } from 'node:crypto'
import { Registry, Counter, Histogram, Gauge, collectDefaultMetrics } from 'prom-client'
import { ErrorCode } from '../protocol/spec.js'

export interface KeydHealth { sealed: () => boolean, auditWritable: () => boolean, auditBacklog: () => number }

/** 50 µs to 1 s: a local signature takes ~0.1–2 ms, a PKCS#11 token or an overloaded keyd up to the 200 ms SLO and beyond. */
export const BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1]

/** What keyd knows at start that its metrics report as constants. */
export interface KeydStartInfo {
  /** Start-up self-tests passed (keyd does not serve when one fails). */
  selfTests: number
  /** Signatures per second this keyd is sized for (--capacity, or measured at start); null = unknown. */
  capacity: number | null
}

/** keyd_disconnects_total's reasons (connection.ts DisconnectReason), created at 0. */
const DISCONNECT_REASONS = ['hello-timeout', 'frame-too-large', 'pre-hello-buffer', 'memory', 'stalled', 'unknown-client', 'revoked']

/**
 * Native signatures (keyd/native) counted in C since the last fold: `count` in all, per key name
 * (`keys`: [name, n] pairs, flat), and keyd_operation_duration_seconds's queue, exec and total phases
 * (`buckets`: per phase, the count per BUCKETS bound then one above them all, flat; `sums` per phase).
 */
export interface NativeCounts { count: number, keys: Array<string | number>, buckets: number[], sums: number[] }

/** A histogram series as prom-client 15 keeps it (its `hashMap` values). */
interface HistogramSeries { labels: Record<string, string>, bucketValues: Record<number, number>, sum: number, count: number }

/**
 * Adds `counts` observations (one count per BUCKETS bound, then above them all) summing to `sum` to
 * the series of `labels` at once: prom-client has no bulk observe, so this adds to the series it
 * keeps (prom-client 15's `hashMap`). Should that shape ever differ, each observation is observed
 * at its bucket's bound instead (above the last: twice it): buckets and count stay exact, the sum
 * does not.
 */
function addObservations (h: Histogram<'op' | 'phase'>, labels: { op: string, phase: string }, counts: number[], sum: number): void {
  const total = counts.reduce((a, b) => a + b, 0)
  if (total === 0) return
  const find = (): HistogramSeries | undefined => Object.values((h as unknown as { hashMap?: Record<string, HistogramSeries> }).hashMap ?? {})
    .find(v => v.labels?.op === labels.op && v.labels?.phase === labels.phase)
  let series = find()
  if (series === undefined) { h.zero(labels); series = find() }
  const s = series
  if (s !== undefined && typeof s.sum === 'number' && typeof s.count === 'number' && BUCKETS.every(b => typeof s.bucketValues?.[b] === 'number')) {
    BUCKETS.forEach((bound, i) => { s.bucketValues[bound] = (s.bucketValues[bound] ?? 0) + (counts[i] ?? 0) })
    s.sum += sum
    s.count += total
    return
  }
  const last = BUCKETS[BUCKETS.length - 1] as number
  counts.forEach((n, i) => { for (let k = 0; k < n; k++) h.observe(labels, BUCKETS[i] ?? 2 * last) })
}

export class KeydMetrics {
  readonly registry = new Registry()
  readonly #ops: Counter<'op' | 'key' | 'result'>
  readonly #duration: Histogram<'op' | 'phase'>
  readonly #refused: Counter<'reason'>
  readonly #violations: Counter<'client'>
  readonly #disconnects: Counter<'reason'>
  readonly #audited: Counter<'op'>
  readonly #backup: Gauge<'kind'>
  #lastRandom = Buffer.alloc(0)
  #pausedConnections = 0
  #load: () => { connections: number, heldBytes: number, sharedBytes: number } = () => ({ connections: 0, heldBytes: 0, sharedBytes: 0 })

  constructor (health: KeydHealth, start: KeydStartInfo = { selfTests: 0, capacity: null }) {
    collectDefaultMetrics({ register: this.registry, prefix: 'keyd_' })
    this.#ops = new Counter({ name: 'keyd_operations_total', help: 'keyd operations by opcode, key and result', labelNames: ['op', 'key', 'result'], registers: [this.registry] })
    this.#duration = new Histogram({ name: 'keyd_operation_duration_seconds', help: 'time a request waited in keyd (phase=queue), took to execute (phase=exec), and both (phase=total: the latency SLI)', labelNames: ['op', 'phase'], buckets: BUCKETS, registers: [this.registry] })
    this.#refused = new Counter({ name: 'keyd_refused_total', help: 'requests refused, by reason (wire error name)', labelNames: ['reason'], registers: [this.registry] })
    this.#gauge('keyd_sealed', '1 while keyd is sealed', () => health.sealed() ? 1 : 0)
    this.#gauge('keyd_audit_writable', '0 once the audit log cannot be written', () => health.auditWritable() ? 1 : 0)
    this.#gauge('keyd_audit_backlog', 'audit entries recorded but not yet on disk', () => health.auditBacklog())
    this.#violations = new Counter({ name: 'keyd_access_violations_total', help: 'requests refused with USAGE_FORBIDDEN (a key or usage outside the client\'s rights), by authenticated client', labelNames: ['client'], registers: [this.registry] })
    this.#disconnects = new Counter({ name: 'keyd_disconnects_total', help: 'connections keyd closed, by reason (hello-timeout, frame-too-large, pre-hello-buffer, memory, stalled, unknown-client, revoked)', labelNames: ['reason'], registers: [this.registry] })
    // Every reason starts at 0: Prometheus's rate() and increase() miss a series' first value, so a
    // first refusal (an intruder's one attempt) would otherwise never show in a rate or an alert.
    for (const reason of Object.keys(ErrorCode)) this.#refused.inc({ reason }, 0)
    for (const reason of DISCONNECT_REASONS) this.#disconnects.inc({ reason }, 0)
    this.#gauge('keyd_connections', 'open client connections', () => this.#load().connections)
    this.#gauge('keyd_connection_held_bytes', 'bytes held for clients: partial frames, unanswered requests, unread answers', () => this.#load().heldBytes)
    this.#gauge('keyd_connection_shared_bytes', 'bytes drawn from the shared memory budget (beyond each connection\'s free allowance)', () => this.#load().sharedBytes)
    this.#gauge('keyd_connections_paused', 'connections keyd stopped reading because their client leaves answers unread', () => this.#pausedConnections)
    this.#audited = new Counter({ name: 'keyd_audited_operations_total', help: 'operations whose audit entries the audit log accepted (next to keyd_operations_total: PING, STATUS and UNSEAL are never audited)', labelNames: ['op'], registers: [this.registry] })
    // Labelled so that it is absent until the first success: a 0 would read as "last backup in 1970"
    // after every restart. Prometheus keeps the value across keyd restarts (max_over_time in the rules).
    this.#backup = new Gauge({ name: 'keyd_backup_last_success_timestamp_seconds', help: 'unix time of the last backup export whose last chunk was handed out (kind=export), of the last committed restore (kind=restore); absent until the first since start', labelNames: ['kind'], registers: [this.registry] })
    new Gauge({ name: 'keyd_self_tests_passed', help: 'start-up self-tests (known answers, pairwise sign/verify) passed; keyd does not serve when one fails', registers: [this.registry] }).set(start.selfTests)
    this.#gauge('keyd_rng_healthy', '1 while the continuous RNG test passes (at each scrape: 32 random bytes, neither constant nor equal to the previous draw)', () => this.#rngCheck())
    if (start.capacity !== null) {
      new Gauge({ name: 'keyd_capacity_signatures_per_second', help: 'signatures per second this keyd is sized for (--capacity, or a start-up measurement of ECDSA P-256 signing on one core)', registers: [this.registry] }).set(start.capacity)
    }
  }

  /** Where keyd_signatures_total reads from: signatures made (a SIGN_BATCH counts each of its entries). */
  watchSignatures (read: () => number): void {
    const counter: Counter = new Counter({ name: 'keyd_signatures_total', help: 'signatures made (each SIGN_BATCH entry counts one): the throughput compared with keyd_capacity_signatures_per_second', registers: [this.registry], collect () { counter.reset(); counter.inc(read()) } })
  }

  /** A continuous RNG test (FIPS 140-2 4.9.2 style): a fresh draw must differ from the previous one and not be one repeated byte. */
  #rngCheck (): number {
    const draw = randomBytes(32)
    const ok = !draw.equals(this.#lastRandom) && draw.some(b => b !== draw[0])
    this.#lastRandom = draw
    return ok ? 1 : 0
  }

  /** An operation whose audit entries were accepted by the audit log. */
  audited (op: string): void {
    this.#audited.inc({ op })
  }

  /** A backup export handed out its last chunk (the operator holds the whole bundle). */
  backupExported (): void {
    this.#backup.set({ kind: 'export' }, Date.now() / 1000)
  }

  /** A restore was committed. */
  backupRestored (): void {
    this.#backup.set({ kind: 'restore' }, Date.now() / 1000)
  }

  /** A gauge in this registry that reads its value when scraped. */
  #gauge (name: string, help: string, read: () => number): void {
    const gauge: Gauge = new Gauge({ name, help, registers: [this.registry], collect () { gauge.set(read()) } })
  }

  #beforeScrape: Array<() => void> = []
  /** Runs `f` before each scrape: keyd's native SIGN path hands over the counts it gathered since its last drain. */
  beforeScrape (f: () => void): void { this.#beforeScrape.push(f) }
  /** Brings every count up to date (before a scrape). */
  settle (): void { for (const f of this.#beforeScrape) f() }

  /** Where the connection gauges read from (the server registers itself). */
  watchConnections (load: () => { connections: number, heldBytes: number, sharedBytes: number }): void {
    this.#load = load
  }

  /** `count` requests (SIGN_BATCH entries count one each) outside `client`'s rights. */
  accessViolation (client: string, count = 1): void {
    this.#violations.inc({ client }, count)
  }

  /** Creates each client's access-violation series at 0 (see the refusal reasons in the constructor). */
  knownClients (names: readonly string[]): void {
    for (const client of names) this.#violations.inc({ client }, 0)
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
    this.#duration.observe({ op, phase: 'total' }, queueSec + execSec)
    if (result !== 'ok') this.#refused.inc({ reason: result })
  }

  /** Native signatures (all `ok`, each audited) counted in C: see NativeCounts. */
  nativeSigned (c: NativeCounts): void {
    if (c.count === 0) return
    for (let i = 0; i + 1 < c.keys.length; i += 2) this.#ops.inc({ op: 'SIGN', key: String(c.keys[i]), result: 'ok' }, Number(c.keys[i + 1]))
    this.#audited.inc({ op: 'SIGN' }, c.count)
    const n = BUCKETS.length + 1
    ;(['queue', 'exec', 'total'] as const).forEach((phase, p) => {
      addObservations(this.#duration, { op: 'SIGN', phase }, c.buckets.slice(p * n, (p + 1) * n), c.sums[p] ?? 0)
    })
  }

  /** A request refused before it ran (framing, authentication, sealed, overload). */
  refused (reason: string): void {
    this.#refused.inc({ reason })
  }
}

/**
 * Signatures per second of ECDSA P-256 (the dev and default TLS key) on keyd's one thread, measured
 * for about `ms`: the capacity keyd reports when --capacity is not given. keyd signs on its event
 * loop, so this bounds what it can answer; RSA keys sign several times slower (docs/metrics.md).
 */
export function measureSignCapacity (ms = 100): number {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const msg = Buffer.alloc(64, 1)
  sign('sha256', msg, privateKey) // warm-up
  const t0 = performance.now()
  let n = 0
  while (performance.now() - t0 < ms) { sign('sha256', msg, privateKey); n++ }
  return Math.round(n / ((performance.now() - t0) / 1000))
}

/**
 * Serves /metrics and /healthz (200 when unsealed and the audit log is writable, else 503) on
 * `host:port` (loopback by default). Returns the server and its port.
 */
export async function startMetricsServer (metrics: KeydMetrics, health: KeydHealth, port: number, host = '127.0.0.1'): Promise<{ server: Server, port: number }> {
  const server = createServer((req, res) => {
    if (req.method !== 'GET') { res.writeHead(405).end(); return }
    if (req.url === '/metrics') {
      metrics.settle()
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
