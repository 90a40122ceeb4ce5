// The primary's control plane: certificate reloads run on every worker in two phases (all prepare,
// then all commit, or all abort), triggered by file changes, SIGHUP or the admin API; readiness
// and draining; and the certificate view the admin API serves.

import cluster, { type Worker } from 'node:cluster'
import { Counter, Gauge, Registry } from 'prom-client'
import type { Logger } from 'pino'
import { configDefaults } from '../config/defaults.js'
import { loadConfig } from '../config/load.js'
import type { EdgeConfig } from '../config/types.js'
import type { CertEntryInfo } from '../tls/cert-info.js'
import { CertFileWatcher } from '../tls/cert-watcher.js'
import type { EntryResult } from './server.js'
import type { ControlReply, ControlRequest } from './worker-control.js'
import { errorCode, errorMessage } from '../../lib/errors.js'

/** How long a worker may take to load every certificate of a reload. */
const WORKER_REPLY_TIMEOUT_MS = 15_000
/** Settings that a reload cannot change: they need a restart. */
const RESTART_ONLY = ['listen', 'workers', 'keyd', 'routes', 'trustedProxies', 'http2', 'log', 'admin', 'shutdownGraceMs', 'timeouts', 'limits', 'stateDir'] as const

export interface ReloadReport {
  ok: boolean
  /** What asked for it: `file-change`, `SIGHUP`, `admin`. */
  trigger: string
  at: string
  durationMs: number
  /** Per certificate entry; an entry fails if any worker failed to load it. */
  results: EntryResult[]
  /** Problems beyond single entries (invalid config, a worker that did not answer). */
  errors: string[]
  /** Config settings that changed but take effect only at restart. */
  restartRequired: string[]
  /** What is served after this reload (when ok). */
  certificates?: CertEntryInfo[]
}

/** Files whose changes trigger a reload: the config file and every certificate and key file. */
function watchedFiles (config: EdgeConfig, configFile: string): string[] {
  return [configFile, ...config.certificates.flatMap(c => c.files.flatMap(f => [f.cert, f.key]))]
}

export class ClusterControl {
  /** Metrics of the primary itself (reloads, draining), served beside the workers' aggregate. */
  readonly registry = new Registry()
  #log: Logger
  #configFile: string
  #config: EdgeConfig
  #workers: () => Worker[]
  /** Pending questions by `${worker.id}:${request id}`. */
  #replies = new Map<string, (reply: ControlReply) => void>()
  #nextId = 1
  #running: Promise<ReloadReport> | undefined
  #queued: Promise<ReloadReport> | undefined
  #watcher: CertFileWatcher
  #draining = false
  #reloads: Counter<string>
  #drainingGauge: Gauge<string>
  #onMessage = (worker: Worker, msg: unknown): void => {
    const reply = msg as ControlReply
    if (reply?.type !== 'edge:reply') return
    const resolve = this.#replies.get(`${worker.id}:${reply.id}`)
    resolve?.(reply)
  }

  constructor (opts: { config: EdgeConfig, configFile: string, log: Logger, workers: () => Worker[] }) {
    this.#log = opts.log
    this.#config = opts.config
    this.#configFile = opts.configFile
    this.#workers = opts.workers
    this.#reloads = new Counter({ name: 'edge_certificate_reloads_total', help: 'Certificate reloads by trigger and result', labelNames: ['trigger', 'result'], registers: [this.registry] })
    this.#drainingGauge = new Gauge({ name: 'edge_draining', help: '1 while the proxy drains before stopping', registers: [this.registry] })
    this.#drainingGauge.set(0)
    this.#watcher = new CertFileWatcher({ log: opts.log, debounceMs: configDefaults.reloadDebounceMs, onChange: () => { void this.reload('file-change') } })
    this.#watcher.watch(watchedFiles(opts.config, opts.configFile))
    cluster.on('message', this.#onMessage)
  }

  get draining (): boolean { return this.#draining }

  /** Readiness fails from now on (SIGTERM: load balancers stop sending before we stop accepting). */
  drain (): void {
    this.#draining = true
    this.#drainingGauge.set(1)
  }

  close (): void {
    this.#watcher.close()
    cluster.off('message', this.#onMessage)
  }

  /** Reloads certificates on every worker; one at a time, and requests made meanwhile share one run. Never rejects. */
  async reload (trigger: string): Promise<ReloadReport> {
    if (this.#queued !== undefined) return await this.#queued
    if (this.#running === undefined) return await this.#start(trigger)
    this.#queued = this.#running.then(async () => {
      this.#queued = undefined
      return await this.#start(trigger)
    })
    return await this.#queued
  }

  /** What every worker serves, as the first worker describes it. */
  async certificates (): Promise<CertEntryInfo[]> {
    const worker = this.#workers()[0]
    if (worker === undefined) return []
    const reply = await this.#ask(worker, { type: 'edge:certs', id: this.#nextId++ })
    return reply.certificates ?? []
  }

  async #start (trigger: string): Promise<ReloadReport> {
    const run = this.#reloadOnce(trigger).finally(() => { if (this.#running === run) this.#running = undefined })
    this.#running = run
    return await run
  }

  async #ask (worker: Worker, msg: ControlRequest): Promise<ControlReply> {
    return await new Promise((resolve, reject) => {
      const key = `${worker.id}:${msg.id}`
      const timer = setTimeout(() => {
        this.#replies.delete(key)
        reject(new Error(`worker ${worker.process.pid ?? '?'} did not answer within ${WORKER_REPLY_TIMEOUT_MS} ms`))
      }, WORKER_REPLY_TIMEOUT_MS)
      this.#replies.set(key, reply => { clearTimeout(timer); this.#replies.delete(key); resolve(reply) })
      try {
        worker.send(msg)
      } catch (err) {
        clearTimeout(timer)
        this.#replies.delete(key)
        reject(err instanceof Error ? err : new Error(errorMessage(err)))
      }
    })
  }

  async #reloadOnce (trigger: string): Promise<ReloadReport> {
    const t0 = Date.now()
    const report: ReloadReport = { ok: false, trigger, at: new Date(t0).toISOString(), durationMs: 0, results: [], errors: [], restartRequired: [] }
    const finish = (): ReloadReport => {
      report.durationMs = Date.now() - t0
      this.#reloads.inc({ trigger, result: report.ok ? 'ok' : 'refused' })
      if (report.ok) {
        this.#log.info({ trigger, certificates: report.results.map(r => r.name), durationMs: report.durationMs }, 'certificates reloaded')
      } else {
        const failed = report.results.filter(r => !r.ok).map(r => ({ certificate: r.name, code: r.code, err: r.error }))
        this.#log.error({ trigger, code: 'EDGE_ERR_RELOAD_REFUSED', failed, errors: report.errors }, 'certificate reload refused, the previous certificates keep serving')
      }
      return report
    }
    let config: EdgeConfig
    try {
      config = loadConfig(this.#configFile)
    } catch (err) {
      report.errors.push(`${errorMessage(err)} (${errorCode(err) ?? 'EDGE_ERR_CONFIG_INVALID'})`)
      return finish()
    }
    report.restartRequired = RESTART_ONLY.filter(k => JSON.stringify(config[k]) !== JSON.stringify(this.#config[k]))
    if (report.restartRequired.length > 0) this.#log.warn({ settings: report.restartRequired }, 'config changes that take effect only at restart')
    const workers = this.#workers()
    if (workers.length === 0) {
      report.errors.push('no worker is running')
      return finish()
    }
    const id = this.#nextId++
    const prepared = await Promise.all(workers.map(async w => await this.#ask(w, { type: 'edge:reload-prepare', id, certificates: config.certificates, tls: config.tls })
      .catch((err: unknown): ControlReply => ({ type: 'edge:reply', id, ok: false, error: errorMessage(err) }))))
    const byName = new Map<string, EntryResult>()
    for (const reply of prepared) {
      if (reply.error !== undefined) report.errors.push(reply.error)
      for (const r of reply.results ?? []) {
        const known = byName.get(r.name)
        if (known === undefined || (known.ok && !r.ok)) byName.set(r.name, r)
      }
    }
    report.results = [...byName.values()]
    if (!prepared.every(r => r.ok)) {
      for (const w of workers) { try { w.send({ type: 'edge:reload-abort', id }) } catch { /* gone */ } }
      return finish()
    }
    const committed = await Promise.all(workers.map(async w => await this.#ask(w, { type: 'edge:reload-commit', id })
      .catch((err: unknown): ControlReply => ({ type: 'edge:reply', id, ok: false, error: errorMessage(err) }))))
    for (const reply of committed) if (!reply.ok) report.errors.push(reply.error ?? 'a worker did not commit')
    report.ok = report.errors.length === 0
    report.certificates = committed.find(r => r.certificates !== undefined)?.certificates
    this.#config = { ...this.#config, certificates: config.certificates, tls: config.tls }
    this.#watcher.watch(watchedFiles(config, this.#configFile))
    return finish()
  }
}
