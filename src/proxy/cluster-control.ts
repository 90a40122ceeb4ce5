// The primary's control plane: reloads run on every worker in two phases (all prepare, then all
// commit, or all abort), triggered by file changes, SIGHUP or the admin API. A reload swaps in the
// certificates and, when they changed, the routes, pools, trusted proxies and access log; readiness
// and draining; and the certificate view the admin API serves.

import cluster, { type Worker } from 'node:cluster'
import { readFileSync } from 'node:fs'
import { Counter, Gauge, Registry } from 'prom-client'
import type { Logger } from 'pino'
import { configDefaults } from '../config/defaults.js'
import { certificateFileProblems } from '../config/files.js'
import { loadConfig } from '../config/load.js'
import { formatProblem } from '../config/problems.js'
import type { EdgeConfig } from '../config/types.js'
import { ConfigInvalidError } from '../errors.js'
import type { CertEntryInfo } from '../tls/cert-info.js'
import { CertFileWatcher } from '../tls/cert-watcher.js'
import { collectGarbage } from '../tls/heap.js'
import { LIVE_SETTINGS, type EntryResult } from './server.js'
import type { ControlReply, ControlRequest } from './worker-control.js'
import { errorCode, errorMessage } from '../../lib/errors.js'

/** Names of reloaded entries in the `certificates reloaded` log line, at most. */
const LOGGED_NAMES = 100
/** How long a worker may take to load every certificate of a reload. */
const WORKER_REPLY_TIMEOUT_MS = 15_000
/** Settings that a reload cannot change: they need a restart (until then the old values stay). */
const RESTART_ONLY = ['listen', 'workers', 'keyd', 'proxyProtocol', 'http2', 'log', 'admin', 'httpRedirect', 'shutdownGraceMs', 'stateDir'] as const

export interface ReloadReport {
  ok: boolean
  /** What asked for it: `file-change`, `SIGHUP`, `admin`. */
  trigger: string
  at: string
  durationMs: number
  /**
   * Per certificate entry read and checked by this reload (new, or its files changed), and per
   * entry refused; an entry fails if any worker failed to load it.
   */
  results: EntryResult[]
  /** Entries kept as they were: their files did not change. */
  unchanged: number
  /** Problems beyond single entries (invalid config, a worker that did not answer). */
  errors: string[]
  /** Config settings that changed but take effect only at restart: their old values stay until then. */
  restartRequired: string[]
  /** Config settings that changed and were applied live (`routes`, `trustedProxies`, `accessLog`), when ok. */
  applied: string[]
  /** The entries this reload loaded, as served after it (when ok); GET /certs lists them all. */
  certificates?: CertEntryInfo[]
}

/** Files whose changes trigger a reload: the config file and every certificate and key file. */
function watchedFiles (config: EdgeConfig, configFile: string): string[] {
  return [configFile, ...config.certificates.flatMap(c => [...c.files.flatMap(f => [f.cert, f.key]), ...(c.clientAuth !== undefined ? [c.clientAuth.caFile] : [])])]
}

export class ClusterControl {
  /** Metrics of the primary itself (reloads, draining), served beside the workers' aggregate. */
  readonly registry = new Registry()
  #log: Logger
  #configFile: string
  #config: EdgeConfig
  /** The text `#config` was read from (undefined until start()): an unchanged file is not validated again. */
  #configText: string | undefined
  #workers: () => Worker[]
  /** Pending questions by `${worker.id}:${request id}`. */
  #replies = new Map<string, (reply: ControlReply) => void>()
  #nextId = 1
  #running: Promise<ReloadReport> | undefined
  #queued: Promise<ReloadReport> | undefined
  /** What the queued reload looks at: the files changed meanwhile, or every file. */
  #queuedFiles: Set<string> | 'all' = new Set()
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
    this.#watcher = new CertFileWatcher({ log: opts.log, debounceMs: configDefaults.reloadDebounceMs, onChange: changed => { void this.reload('file-change', changed) } })
    cluster.on('message', this.#onMessage)
  }

  /**
   * Starts watching the files. Called once the workers are forked: with many certificates the
   * first look at every file takes a while, and the workers read them well after it is done.
   */
  start (): void {
    try {
      this.#configText = readFileSync(this.#configFile, 'utf8')
    } catch {
      this.#configText = undefined
    }
    const files = watchedFiles(this.#config, this.#configFile)
    this.#watcher.watch(files)
    // The primary loaded the config too: after thousands of entries, one full collection lets V8 return that garbage.
    if (files.length >= 10_000) collectGarbage()
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

  /**
   * Reloads certificates on every worker; one at a time, and requests made meanwhile share one run.
   * `changedFiles` (from the file watcher): only entries naming them are looked at; otherwise every
   * entry's files are. Never rejects.
   */
  async reload (trigger: string, changedFiles?: readonly string[]): Promise<ReloadReport> {
    if (this.#running === undefined) return await this.#start(trigger, changedFiles)
    if (changedFiles === undefined) this.#queuedFiles = 'all'
    else if (this.#queuedFiles !== 'all') for (const f of changedFiles) this.#queuedFiles.add(f)
    this.#queued ??= this.#running.then(async () => {
      this.#queued = undefined
      const files = this.#queuedFiles
      this.#queuedFiles = new Set()
      return await this.#start(trigger, files === 'all' ? undefined : [...files])
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

  async #start (trigger: string, changedFiles?: readonly string[]): Promise<ReloadReport> {
    const run = this.#reloadOnce(trigger, changedFiles).finally(() => { if (this.#running === run) this.#running = undefined })
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

  /**
   * The config to reload: the one served when the file holds the same text (then only the
   * certificate files are checked to be readable: those in `changedFiles`, or all of them), else the
   * file loaded and validated again.
   * @throws ConfigInvalidError (EDGE_ERR_CONFIG_INVALID)
   */
  #nextConfig (changedFiles: readonly string[] | undefined): { config: EdgeConfig, text: string | undefined, same: boolean } {
    let text: string | undefined
    try { text = readFileSync(this.#configFile, 'utf8') } catch { text = undefined }
    if (text === undefined || text !== this.#configText) return { config: loadConfig(this.#configFile), text, same: false }
    const problems = certificateFileProblems(this.#config, changedFiles === undefined ? undefined : new Set(changedFiles))
    if (problems.length > 0) throw new ConfigInvalidError(problems.map(formatProblem), this.#configFile)
    return { config: this.#config, text, same: true }
  }

  async #reloadOnce (trigger: string, changedFiles?: readonly string[]): Promise<ReloadReport> {
    const t0 = Date.now()
    const report: ReloadReport = { ok: false, trigger, at: new Date(t0).toISOString(), durationMs: 0, results: [], unchanged: 0, errors: [], restartRequired: [], applied: [] }
    const finish = (): ReloadReport => {
      report.durationMs = Date.now() - t0
      this.#reloads.inc({ trigger, result: report.ok ? 'ok' : 'refused' })
      if (report.ok) {
        this.#log.info({ trigger, certificates: report.results.slice(0, LOGGED_NAMES).map(r => r.name), loaded: report.results.length, unchanged: report.unchanged, applied: report.applied, durationMs: report.durationMs }, 'certificates reloaded')
        if (report.applied.length > 0) this.#log.info({ trigger, settings: report.applied }, 'config reloaded: new requests use the new settings')
      } else {
        const failed = report.results.filter(r => !r.ok).map(r => ({ certificate: r.name, code: r.code, err: r.error }))
        this.#log.error({ trigger, code: 'EDGE_ERR_RELOAD_REFUSED', failed, errors: report.errors }, 'certificate reload refused, the previous certificates keep serving')
      }
      return report
    }
    let next: { config: EdgeConfig, text: string | undefined, same: boolean }
    try {
      next = this.#nextConfig(changedFiles)
    } catch (err) {
      report.errors.push(`${errorMessage(err)} (${errorCode(err) ?? 'EDGE_ERR_CONFIG_INVALID'})`)
      return finish()
    }
    const { config } = next
    // Workers keep their entry list when it did not change (the IPC message then stays small), and
    // look only at the entries naming a changed file when the watcher said which.
    const sameList = next.same || JSON.stringify(config.certificates) === JSON.stringify(this.#config.certificates)
    report.restartRequired = RESTART_ONLY.filter(k => JSON.stringify(config[k]) !== JSON.stringify(this.#config[k]))
    if (report.restartRequired.length > 0) this.#log.warn({ settings: report.restartRequired }, 'config changes that take effect only at restart: these settings keep their old values until then')
    const applied = LIVE_SETTINGS.filter(k => JSON.stringify(config[k]) !== JSON.stringify(this.#config[k]))
    const workers = this.#workers()
    if (workers.length === 0) {
      report.errors.push('no worker is running')
      return finish()
    }
    const id = this.#nextId++
    const prepare: ControlRequest = {
      type: 'edge:reload-prepare',
      id,
      tls: config.tls,
      ...(sameList ? {} : { certificates: config.certificates }),
      ...(sameList && changedFiles !== undefined ? { changedFiles: [...changedFiles] } : {}),
      ...(applied.length > 0 ? { live: { routes: config.routes, trustedProxies: config.trustedProxies, accessLog: config.accessLog, timeouts: config.timeouts, limits: config.limits } } : {})
    }
    const prepared = await Promise.all(workers.map(async w => await this.#ask(w, prepare)
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
    report.unchanged = Math.min(...prepared.map(r => r.unchanged ?? 0))
    if (!prepared.every(r => r.ok)) {
      for (const w of workers) { try { w.send({ type: 'edge:reload-abort', id }) } catch { /* gone */ } }
      return finish()
    }
    const committed = await Promise.all(workers.map(async w => await this.#ask(w, { type: 'edge:reload-commit', id })
      .catch((err: unknown): ControlReply => ({ type: 'edge:reply', id, ok: false, error: errorMessage(err) }))))
    for (const reply of committed) if (!reply.ok) report.errors.push(reply.error ?? 'a worker did not commit')
    report.ok = report.errors.length === 0
    report.certificates = committed.find(r => r.certificates !== undefined)?.certificates
    // The same entry list names the same files: nothing to watch anew (100,000 entries: 200,000 paths).
    const sameFiles = config.certificates === this.#config.certificates
    // A worker that committed serves the new routes; one that failed to answer may not (reported in errors).
    this.#config = { ...this.#config, certificates: config.certificates, tls: config.tls, routes: config.routes, trustedProxies: config.trustedProxies, accessLog: config.accessLog, timeouts: config.timeouts, limits: config.limits }
    if (report.ok) report.applied = applied
    if (report.ok) this.#configText = next.same || report.restartRequired.length === 0 ? next.text : undefined
    if (!sameFiles) this.#watcher.watch(watchedFiles(config, this.#configFile))
    return finish()
  }
}
