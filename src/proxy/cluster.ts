// The proxy's primary process: forks workers with node:cluster (on Linux each worker accepts on its own
// SO_REUSEPORT socket that the primary binds and keeps, src/proxy/slot-sockets.ts), restarts dead ones
// with backoff, reloads certificates (file changes, SIGHUP, admin API), runs the admin listener, and
// drains then stops the workers on SIGTERM (SIGINT: at once).

import cluster, { type Worker } from 'node:cluster'
import { availableParallelism } from 'node:os'
import { fileURLToPath } from 'node:url'
import type { Logger } from 'pino'
import { AggregatorRegistry } from 'prom-client'
import { startAdminServer, type AdminServer } from '../admin/admin-server.js'
import { startKeydProbe, type KeydProbe } from '../admin/keyd-probe.js'
import { configDefaults } from '../config/defaults.js'
import type { EdgeConfig } from '../config/types.js'
import { ConfigInvalidError } from '../errors.js'
import { ClusterControl } from './cluster-control.js'
import { bindSlotSockets, canBindSlotSockets, SOCKET_REQUEST, WORKER_LISTENING, type SlotSockets } from './slot-sockets.js'
import { workerHeapArgv } from './worker-heap.js'
import { ratioFromExposition, ratioGauge } from '../tls/resumption-ratio.js'
import { serveSessionCache } from '../tls/session-cache.js'
import { errorCode, errorMessage } from '../../lib/errors.js'
import { dropPrivileges, type RunAs } from '../../lib/privileges.js'

const WORKER_MAIN = fileURLToPath(new URL('./worker-main.js', import.meta.url))

interface Slot {
  index: number
  worker?: Worker
  startedAt: number
  delayMs: number
  restartTimer?: NodeJS.Timeout
}

export type SchedulingPolicy = 'reuseport' | 'none' | 'rr'

/**
 * The cluster scheduling from `KEYEDGE_CLUSTER_SCHED`: `none` (the default: every worker accepts from
 * one shared socket, so a busy worker simply accepts less), `reuseport` (Linux with Node ≥ 24.19: one
 * SO_REUSEPORT socket per worker, the kernel picks the worker by a hash — no accept herd, and
 * connections queued on a crashed worker's socket survive, but a stuck worker keeps getting its
 * share; side by side it saved no CPU per handshake on 2 workers) or `rr` (the primary accepts and
 * hands connections round-robin, for benchmarks).
 * @throws ConfigInvalidError (EDGE_ERR_CONFIG_INVALID) for any other value.
 */
export function schedulingPolicy (env: NodeJS.ProcessEnv = process.env, boundSockets = canBindSlotSockets): SchedulingPolicy {
  const v = env.KEYEDGE_CLUSTER_SCHED ?? ''
  if (v === '') return 'none'
  if (v === 'reuseport' && !boundSockets) throw new ConfigInvalidError(['KEYEDGE_CLUSTER_SCHED: "reuseport" needs Node.js 24.19 or later (net.BoundSocket); use "none" on this runtime'])
  if (v === 'reuseport' || v === 'none' || v === 'rr') return v
  throw new ConfigInvalidError([`KEYEDGE_CLUSTER_SCHED: must be "reuseport", "none" or "rr", got ${JSON.stringify(v.slice(0, 16))}`])
}

/** Number of workers to run: `override` (from --workers) or config.workers; 0 means one per CPU. */
export function workerCount (config: EdgeConfig, override?: number): number {
  const n = override ?? config.workers
  return n > 0 ? n : availableParallelism()
}

/**
 * Runs the primary until SIGINT/SIGTERM (resolves 0 once every worker stopped) or until a worker
 * fails before all of them listened (resolves 1). Logs `{"msg":"proxy listening","port","workers"}`
 * once every worker listens.
 */
export async function runPrimary (opts: {
  config: EdgeConfig
  configFile: string
  workers: number
  log: Logger
  /** Extra node flags for workers, e.g. the bridge's `--openssl-config=…`. */
  execArgv: string[]
  /** `proxy --user`: workers are forked as this uid/gid; the primary drops to it once they all listen. */
  runAs?: RunAs
}): Promise<number> {
  const { log, workers } = opts
  const { initialDelayMs, maxDelayMs, stableAfterMs } = configDefaults.workerRestart
  let policy: SchedulingPolicy
  try {
    policy = schedulingPolicy()
  } catch (err) {
    log.fatal({ code: errorCode(err) }, errorMessage(err))
    return 1
  }
  // `reuseport`: bound here, before any worker exists, as root under --user (a port below 1024).
  let sockets: SlotSockets | undefined
  if (policy === 'reuseport') {
    try {
      sockets = await bindSlotSockets(opts.config.listen.host, opts.config.listen.port, workers)
    } catch (err) {
      log.fatal({ code: errorCode(err), host: opts.config.listen.host, port: opts.config.listen.port }, `cannot listen: ${errorMessage(err)}`)
      return 1
    }
  }
  // The token listener (and, unless `reuseport`, the proxy's) is node:cluster's shared socket.
  cluster.schedulingPolicy = policy === 'rr' ? cluster.SCHED_RR : cluster.SCHED_NONE
  cluster.setupPrimary({
    exec: WORKER_MAIN,
    args: [opts.configFile],
    // The young-generation size first (worker-heap.ts): an operator's own flag, later, wins.
    execArgv: [...workerHeapArgv(process.execArgv), ...process.execArgv.filter(a => !a.startsWith('--openssl-config')), ...opts.execArgv],
    // Never root in a worker: libuv sets gid then uid in the child (and clears its supplementary groups while the primary is root).
    ...(opts.runAs === undefined ? {} : { uid: opts.runAs.uid, gid: opts.runAs.gid })
  })
  // The TLS 1.2 session-ID cache every worker shares (src/tls/session-cache.ts).
  const stopSessionCache = serveSessionCache(cluster, { maxEntries: Math.max(1, opts.config.tls.sessionCacheSize), ttlSeconds: opts.config.tls.sessionTimeoutSeconds })

  const slots: Slot[] = Array.from({ length: workers }, (_, index) => ({ index, startedAt: 0, delayMs: initialDelayMs }))
  const bySlot = new Map<Worker, Slot>()
  const listening = new Set<Slot>()
  let announced = false
  let stopping = false
  let finish: (code: number) => void = () => {}
  const finished = new Promise<number>(resolve => { finish = resolve })
  let exitCode = 0

  const fork = (slot: Slot): void => {
    slot.restartTimer = undefined
    slot.startedAt = Date.now()
    const worker = cluster.fork({ KEYEDGE_WORKER_SLOT: String(slot.index), ...(sockets === undefined ? {} : { KEYEDGE_WORKER_LISTEN: 'primary' }) })
    slot.worker = worker
    bySlot.set(worker, slot)
  }

  const alive = (): Worker[] => slots.flatMap(s => s.worker === undefined ? [] : [s.worker])
  const ready = (): Worker[] => [...listening].flatMap(s => s.worker === undefined ? [] : [s.worker])
  const graceMs = opts.config.shutdownGraceMs ?? configDefaults.shutdownGraceMs
  const control = new ClusterControl({ config: opts.config, configFile: opts.configFile, log, workers: ready })
  const aggregator = new AggregatorRegistry()
  // Derived from the workers' summed handshake windows at each scrape: a ratio cannot be summed or averaged.
  const resumptionRatio = ratioGauge(control.registry)
  let admin: AdminServer | undefined
  // keyd's health makes /ready (a keyd that cannot sign fails every new full handshake).
  let keydProbe: KeydProbe | undefined
  if (opts.config.admin !== undefined && opts.config.keyd !== undefined) {
    keydProbe = startKeydProbe({ keyd: opts.config.keyd, certificates: opts.config.certificates, log, registry: control.registry })
  }
  if (opts.config.admin !== undefined) {
    try {
      admin = await startAdminServer({
        host: opts.config.admin.host,
        port: opts.config.admin.port,
        log,
        backend: {
          notReady: () => control.draining ? 'draining' : !announced ? 'starting' : listening.size === 0 ? 'no_workers' : keydProbe?.health().problem ?? null,
          readiness: () => keydProbe === undefined ? {} : { keyd: keydProbe.health() },
          workers: () => listening.size,
          metrics: async () => {
            const workers = await aggregator.clusterMetrics()
            resumptionRatio.set(ratioFromExposition(workers))
            return { contentType: aggregator.contentType, body: workers + (await control.registry.metrics()) }
          },
          certificates: async () => await control.certificates(),
          reload: async () => await control.reload('admin')
        }
      })
    } catch (err) {
      log.fatal({ code: errorCode(err), host: opts.config.admin.host, port: opts.config.admin.port }, 'admin listener failed to start')
      keydProbe?.close()
      control.close()
      return 1
    }
    log.info({ port: admin.port, host: opts.config.admin.host }, 'admin listening')
  }

  const stop = (code: number): void => {
    if (stopping) return
    stopping = true
    exitCode = code
    for (const slot of slots) if (slot.restartTimer !== undefined) clearTimeout(slot.restartTimer)
    const workersLeft = alive()
    log.info({ workers: workersLeft.length }, 'stopping workers')
    if (workersLeft.length === 0) {
      finish(exitCode)
      return
    }
    for (const worker of workersLeft) {
      try {
        worker.send({ type: 'shutdown' })
      } catch {
        worker.process.kill('SIGTERM')
      }
    }
    // The workers close their listeners; the primary's duplicates would keep queueing connections.
    sockets?.close()
    const killer = setTimeout(() => {
      for (const worker of alive()) {
        log.warn({ workerPid: worker.process.pid }, 'worker did not stop in time, killing it')
        worker.process.kill('SIGKILL')
      }
    }, graceMs + 2_000)
    killer.unref()
  }

  const onListening = (worker: Worker, address: { port: number }): void => {
    const slot = bySlot.get(worker)
    if (slot === undefined || stopping) return
    listening.add(slot)
    if (!announced && listening.size === slots.length) {
      announced = true
      // The primary bound the workers' port (its slot sockets, or node:cluster's shared one): root is no longer needed.
      if (opts.runAs !== undefined) {
        try {
          dropPrivileges(opts.runAs)
        } catch (err) {
          log.fatal({ code: errorCode(err) }, errorMessage(err))
          stop(1)
          return
        }
        log.info({ uid: opts.runAs.uid, gid: opts.runAs.gid }, 'primary dropped privileges')
      }
      log.info({ port: address.port, workers: slots.length }, 'proxy listening')
    }
  }

  const onExit = (worker: Worker, code: number | null, signal: string | null): void => {
    const slot = bySlot.get(worker)
    if (slot === undefined) return
    bySlot.delete(worker)
    slot.worker = undefined
    listening.delete(slot)
    if (stopping) {
      if (alive().length === 0) {
        log.info({ exitCode }, 'proxy stopped')
        finish(exitCode)
      }
      return
    }
    if (!announced) {
      log.fatal({ workerPid: worker.process.pid, code, signal }, 'a worker failed to start, stopping the proxy')
      stop(1)
      return
    }
    slot.delayMs = Date.now() - slot.startedAt > stableAfterMs ? initialDelayMs : Math.min(slot.delayMs * 2, maxDelayMs)
    log.warn({ workerPid: worker.process.pid, code, signal, restartInMs: slot.delayMs }, 'worker died, restarting it')
    slot.restartTimer = setTimeout(() => fork(slot), slot.delayMs)
  }

  // Workers ask for their slot's socket (reuseport), and say when they serve (every listener open).
  const onMessage = (worker: Worker, msg: unknown, handle: unknown): void => {
    const type = (msg as { type?: unknown } | null)?.type
    const slot = bySlot.get(worker)
    if (slot === undefined) return
    if (type === SOCKET_REQUEST) {
      if (stopping) worker.process.kill('SIGTERM')
      else if (sockets === undefined || !sockets.give(slot.index, worker)) {
        log.error({ workerPid: worker.process.pid, slot: slot.index }, 'no listening socket for this worker; stopping it (it is restarted with backoff)')
        worker.process.kill('SIGTERM')
      }
    } else if (type === WORKER_LISTENING) {
      if (handle !== undefined && handle !== null) sockets?.keep(slot.index, handle)
      onListening(worker, { port: Number((msg as { port?: unknown }).port) })
    }
  }

  let drainTimer: NodeJS.Timeout | undefined
  const onSignal = (signal: NodeJS.Signals): void => {
    log.info({ signal }, 'signal received')
    control.drain()
    // SIGTERM: readiness fails first, so load balancers stop sending before the listener closes.
    const delayMs = signal === 'SIGTERM' && opts.config.admin !== undefined && announced && !stopping ? opts.config.admin.drainDelayMs : 0
    if (delayMs === 0) {
      stop(0)
      return
    }
    if (drainTimer !== undefined) return
    log.info({ drainDelayMs: delayMs, shutdownGraceMs: graceMs }, 'draining: readiness fails, still accepting')
    drainTimer = setTimeout(() => stop(0), delayMs)
  }
  const onHangup = (): void => {
    log.info({ signal: 'SIGHUP' }, 'signal received, reloading certificates')
    void control.reload('SIGHUP')
  }

  cluster.on('message', onMessage)
  cluster.on('exit', onExit)
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  process.on('SIGHUP', onHangup)
  log.info({ workers, schedulingPolicy: policy, execArgv: opts.execArgv }, 'starting workers')
  for (const slot of slots) fork(slot)
  control.start()

  try {
    return await finished
  } finally {
    cluster.off('message', onMessage)
    cluster.off('exit', onExit)
    sockets?.close()
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    process.off('SIGHUP', onHangup)
    stopSessionCache()
    if (drainTimer !== undefined) clearTimeout(drainTimer)
    keydProbe?.close()
    control.close()
    await admin?.close()
  }
}
