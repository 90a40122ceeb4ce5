// The servers of `bench certs`, each holding N certificate entries (one name each, the keys in
// process, one shared key file): keyedge (this build, or another build given with --baseline) and
// nginx with N server blocks. Each is started pinned to the server CPU; what the bench reads of
// it: when it listens, its processes, and how to make it take one changed certificate.
import { writeFileSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { errorMessage } from '../lib/errors.js'
import { hostOf, type ManyCerts } from '../test/helpers/many-certs.js'
import { spawnLogged, type Spawned } from '../test/helpers/processes.js'
import { pinnedCommand, processTree } from './proc-tree.js'
import { freePort, spawnServer, stopTree, waitReady, type ServerProcess } from './peers-process.js'
import { nginxConfHead } from './nginx.js'

export interface CertsServer {
  label: string
  /** Milliseconds from spawn to accepting TLS connections (every worker started). */
  listenMs: number
  port: number
  /** The primary (master) process, then its workers. */
  pids: () => number[]
  workerPids: () => number[]
  /**
   * Makes the server take the certificate file of entry `i` as it is now on disk, the way an
   * operator would: nothing for keyedge (it watches the files), `nginx -s reload` for nginx.
   */
  notifyChanged: (i: number) => void
  /** POST /reload on the admin listener (keyedge): the wall time and the report's durationMs. */
  adminReload?: () => Promise<{ wallMs: number, durationMs: number, loaded: number, unchanged: number | undefined }>
  /** The mean time of the TLS contexts built on demand so far (keyedge's edge_tls_context_build_seconds), ms. */
  contextBuildMs?: () => Promise<number | null>
  stop: () => Promise<void>
}

export interface ServerSetup {
  dir: string
  certs: ManyCerts
  /** The key file every entry names: a plain private key, or a key reference (with `keyd`). */
  keyFile: string
  /** keyd's socket and the proxy client's secret file, for key references. */
  keyd?: { socket: string, secretFile: string }
  n: number
  cpus: string | null
  /** How long a start may take before it counts as failed. */
  startTimeoutMs: number
}

const entryConfig = (s: ServerSetup): unknown[] =>
  Array.from({ length: s.n }, (_, i) => ({ name: `e${i}`, serverNames: [hostOf(i)], files: [{ cert: s.certs.certFile('ec', i), key: s.keyFile }] }))

/** `keyedge proxy` (of the build whose CLI is `cli`) with N entries, 1 worker, an admin listener. */
export async function startKeyedgeCerts (s: ServerSetup, label: string, cli: string): Promise<CertsServer> {
  const file = join(s.dir, `keyedge-${label.replace(/\W+/g, '-')}-${s.n}.json`)
  writeFileSync(file, JSON.stringify({
    listen: { host: '127.0.0.1', port: 0 },
    workers: 1,
    ...(s.keyd !== undefined ? { keyd: { socket: s.keyd.socket, clientName: 'proxy', secretFile: s.keyd.secretFile, timeoutMs: 1000 } } : {}),
    tls: { defaultCertificate: 'e0', sessionTickets: false, sessionCacheSize: 0 },
    certificates: entryConfig(s),
    routes: [{ upstream: 'http://127.0.0.1:9' }],
    admin: { host: '127.0.0.1', port: 0, drainDelayMs: 0 },
    log: { level: 'info' }
  }))
  const t0 = Date.now()
  const [cmd, ...pre] = [...pinnedCommand(s.cpus), process.execPath]
  const proc: Spawned = spawnLogged(cmd, [...pre, cli, 'proxy', '--config', file])
  let port: number
  let adminPort: number
  try {
    port = (await proc.waitFor(o => o.msg === 'proxy listening', s.startTimeoutMs)).port as number
  } catch (err) {
    await proc.stop('SIGKILL')
    throw new Error(`keyedge (${label}) did not listen within ${s.startTimeoutMs} ms: ${errorMessage(err).split('\n')[0] ?? ''}`, { cause: err })
  }
  const listenMs = Date.now() - t0
  try {
    adminPort = (await proc.waitFor(o => o.msg === 'admin listening', 5000)).port as number
  } catch (err) { await proc.stop('SIGKILL'); throw err }
  const primary = proc.proc.pid as number
  return {
    label: `keyedge (${label})`,
    listenMs,
    port,
    pids: () => processTree(primary),
    workerPids: () => processTree(primary).slice(1),
    notifyChanged: () => {},
    adminReload: async () => {
      const w0 = Date.now()
      const res = await fetch(`http://127.0.0.1:${adminPort}/reload`, { method: 'POST', signal: AbortSignal.timeout(120_000) })
      const report = await res.json() as { durationMs: number, results: unknown[], unchanged?: number }
      return { wallMs: Date.now() - w0, durationMs: report.durationMs, loaded: report.results.length, unchanged: report.unchanged }
    },
    contextBuildMs: async () => {
      const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`, { signal: AbortSignal.timeout(30_000) })).text()
      const sum = /^edge_tls_context_build_seconds_sum(?:\{[^}]*\})? (\S+)/m.exec(text)?.[1]
      const count = /^edge_tls_context_build_seconds_count(?:\{[^}]*\})? (\S+)/m.exec(text)?.[1]
      return sum === undefined || count === undefined || Number(count) === 0 ? null : 1000 * Number(sum) / Number(count)
    },
    stop: async () => {
      const tree = processTree(primary)
      await proc.stop('SIGINT')
      for (const pid of tree.slice(1)) { try { process.kill(pid, 'SIGKILL') } catch { /* gone */ } }
    }
  }
}

/** nginx with N `server` blocks (one certificate each, key in process), 1 worker. */
export async function startNginxCerts (s: ServerSetup): Promise<CertsServer> {
  const dir = join(s.dir, `nginx-${s.n}`)
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  const port = await freePort()
  const servers = Array.from({ length: s.n }, (_, i) => `  server { listen 127.0.0.1:${port} ssl${i === 0 ? ' default_server' : ''}; server_name ${hostOf(i)}; ssl_certificate ${s.certs.certFile('ec', i)}; ssl_certificate_key ${s.keyFile}; return 200 "ok\\n"; }`)
  const conf = join(dir, 'nginx.conf')
  writeFileSync(conf, `${nginxConfHead(dir, { workers: 1, workerConnections: 1024 })}  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_session_tickets off;
  ssl_session_cache off;
  server_names_hash_max_size ${Math.max(512, 2 * s.n)};
  server_names_hash_bucket_size 64;
${servers.join('\n')}
}
`)
  const t0 = Date.now()
  const sp: ServerProcess = spawnServer('nginx', ['-p', dir, '-e', join(dir, 'error.log'), '-c', conf], s.cpus)
  const workers = (): number[] => processTree(sp.pid).slice(1)
  try {
    await waitReady(sp, [port], 'nginx', () => workers().length >= 1, s.startTimeoutMs)
  } catch (err) { await stopTree(sp); throw err }
  const listenMs = Date.now() - t0
  return {
    label: 'nginx',
    listenMs,
    port,
    pids: () => processTree(sp.pid),
    workerPids: workers,
    notifyChanged: () => { process.kill(sp.pid, 'SIGHUP') },
    stop: async () => await stopTree(sp)
  }
}
