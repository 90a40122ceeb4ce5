// `keyedge start` (what `npm start` runs): keyd, development certificates, a demo upstream and the proxy, supervised together.
import { parseArgs } from 'node:util'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Readable, Writable } from 'node:stream'
import { homePaths, ensurePrivateDir, type HomePaths } from '../../lib/home.js'
import { KeydClient } from '../../keyd/client/client.js'
import { writeFileAtomic } from '../../lib/atomic-file.js'
import { startDemoUpstream } from '../proxy/demo-upstream.js'
import { issueDevCertificates, type DevCertificates } from './cert.js'
import { prettyLogLine, wantsPretty } from './pretty-log.js'
import { errorMessage } from '../../lib/errors.js'
import { DEV_CALLER, devTokenConfig, ensureDevToken, tokenCurl, type DevToken } from './start-token.js'

const USAGE = `Usage: keyedge start [options]

Development quick start. Runs, supervised together:
  keyd        the key daemon (development mode: master key in a 0600 file), its metrics on
              http://127.0.0.1:$KEYEDGE_KEYD_METRICS_PORT (default 9464: /metrics, /healthz)
  certs       a dev CA and ECDSA + RSA certificates for localhost, keys generated inside keyd
  upstream    the built-in demo upstream on a free loopback port
  proxy       TLS 1.2/1.3, HTTP/1.1 and HTTP/2 on https://localhost:<port>/, its admin listener
              on http://127.0.0.1:$KEYEDGE_ADMIN_PORT (default 9443: /healthz, /ready, /metrics,
              /certs, POST /reload) and the token endpoint on http://127.0.0.1:$KEYEDGE_TOKEN_PORT
              (default 8444: POST /token, /.well-known/jwks.json), signing with keyd key dev-token
Once everything listens it prints where each part is, and a curl command that gets a token for
the development caller "dev": its secret is generated on the first run into <home>/token/dev.secret
(0600) and shown in the command only then; later runs show a command that reads the file.
Ctrl-C stops everything. State lives in $KEYEDGE_HOME (default ./.keyedge). On a terminal the
logs are printed for a person (KEYEDGE_LOG_FORMAT=json keeps the services' JSON lines and prints
the summary as one JSON line, without the secret; =pretty forces the readable form).
"npx keyedge status" shows the state of the running stack. To run the pieces as separate
processes: docs/running.md.

Options:
  --home DIR       state directory (default $KEYEDGE_HOME or ./.keyedge)
  --port N         TLS port (default $KEYEDGE_PORT or 8443)
  --host H         TLS listen address (default 127.0.0.1)
  --workers N      proxy workers (default: CPU count)
  -h, --help       this help
`

const CLI = fileURLToPath(new URL('./main.js', import.meta.url))
const READY_TIMEOUT_MS = 30_000

/** The generated development proxy config (rewritten at each start: the upstream port changes). */
export function devProxyConfig (paths: HomePaths, certs: DevCertificates, opts: { host: string, port: number, upstream: string, workers: number, adminPort?: number, token?: object }): object {
  return {
    listen: { host: opts.host, port: opts.port },
    workers: opts.workers,
    keyd: { socket: paths.socket, clientName: 'proxy', secretFile: join(paths.secretsDir, 'proxy.secret'), timeoutMs: 1000 },
    tls: { defaultCertificate: 'localhost' },
    certificates: [{ name: 'localhost', serverNames: ['localhost', '*.localhost', '127.0.0.1', '::1'], files: certs.leaves.map(l => ({ cert: l.certFile, key: l.keyRefFile })) }],
    routes: [{ host: '*', pathPrefix: '/', upstream: opts.upstream }],
    trustedProxies: [],
    // The proxy's own files (its OpenSSL config) stay out of keyd's directories.
    stateDir: join(paths.home, 'proxy'),
    // Ctrl-C and `keyedge start` stopping need no readiness drain.
    ...(opts.adminPort !== undefined ? { admin: { host: '127.0.0.1', port: opts.adminPort, drainDelayMs: 0 } } : {}),
    ...(opts.token !== undefined ? { token: opts.token } : {})
  }
}

/** A JSON log line of a child (undefined for anything else). */
function logObject (line: string): Record<string, unknown> | undefined {
  if (!line.startsWith('{')) return undefined
  try {
    const o = JSON.parse(line) as unknown
    return typeof o === 'object' && o !== null ? o as Record<string, unknown> : undefined
  } catch {
    return undefined
  }
}

/** Copies a child's output line by line (rewritten for a person when `pretty`), showing each JSON line to `waiter` while it watches. */
function relay (from: Readable, to: Writable, pretty: boolean, color: boolean, waiter: LineWaiter): void {
  let partial = ''
  const emit = (lines: string[]): void => {
    if (lines.length === 0) return
    to.write(lines.map(l => pretty ? prettyLogLine(l, color) : l).join('\n') + '\n')
    if (!waiter.watching) return // after start-up the lines only pass through
    for (const l of lines) {
      const o = logObject(l)
      if (o !== undefined) waiter.watch(o)
    }
  }
  from.setEncoding('utf8')
  from.on('data', (chunk: string) => {
    const lines = (partial + chunk).split('\n')
    partial = lines.pop() ?? ''
    emit(lines)
  })
  from.on('end', () => { if (partial !== '') emit([partial]) })
}

/** Runs `keyedge <args>`; its JSON log lines go to `lines` on their way to the terminal, until it stops watching. */
function child (args: string[], env: NodeJS.ProcessEnv, lines: LineWaiter): ChildProcess {
  // The children always log JSON; on a terminal their lines are rewritten for a person here.
  const pretty = wantsPretty()
  const color = process.stdout.isTTY === true
  const c = spawn(process.execPath, [CLI, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  if (c.stdout !== null) relay(c.stdout, process.stdout, pretty, color, lines)
  if (c.stderr !== null) relay(c.stderr, process.stderr, pretty, color, lines)
  return c
}

/** Resolves with the first log line `pred` accepts among those `watch` sees; rejects past `ms` or when `proc` exits. */
class LineWaiter {
  readonly #seen: Array<Record<string, unknown>> = []
  readonly #waiters = new Set<() => void>()
  #stopped = false

  get watching (): boolean { return !this.#stopped }

  readonly watch = (o: Record<string, unknown>): void => {
    if (this.#stopped) return
    this.#seen.push(o)
    for (const w of this.#waiters) w()
  }

  /** Forgets the lines seen and keeps no more: the services log for as long as they run. */
  stop (): void {
    this.#stopped = true
    this.#seen.length = 0
  }

  async wait (what: string, proc: ChildProcess, pred: (o: Record<string, unknown>) => boolean, ms = READY_TIMEOUT_MS): Promise<Record<string, unknown>> {
    return await new Promise((resolve, reject) => {
      const check = (): void => {
        const o = this.#seen.find(pred)
        if (o !== undefined) { done(); resolve(o) }
      }
      const onExit = (code: number | null, sig: string | null): void => { done(); reject(new Error(`${what}: the process exited (${sig ?? code}) before it was ready`)) }
      const timer = setTimeout(() => { done(); reject(new Error(`${what} not ready within ${ms} ms`)) }, ms)
      const done = (): void => { clearTimeout(timer); this.#waiters.delete(check); proc.off('exit', onExit) }
      this.#waiters.add(check)
      proc.once('exit', onExit)
      check()
    })
  }
}

async function stopChild (c: ChildProcess | undefined): Promise<void> {
  if (c === undefined || c.exitCode !== null || c.signalCode !== null) return
  const gone = once(c, 'exit')
  c.kill('SIGTERM')
  const t = setTimeout(() => c.kill('SIGKILL'), 10_000)
  await gone
  clearTimeout(t)
}

/** Polls keyd with the admin client until it answers, or fails after READY_TIMEOUT_MS or if keyd exits. */
async function waitForKeyd (keyd: ChildProcess, client: KeydClient): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS
  for (;;) {
    if (keyd.exitCode !== null) throw new Error(`keyd exited with code ${keyd.exitCode} during start-up`)
    try { await client.ping(); return } catch (err) {
      if (Date.now() > deadline) throw new Error(`keyd did not answer within ${READY_TIMEOUT_MS} ms: ${errorMessage(err)}`, { cause: err })
    }
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

/** Where each part of a running `keyedge start` listens (also written to <home>/endpoints.json for `keyedge status`). */
export interface StartEndpoints {
  https: string
  admin: string
  keydSocket: string
  keydMetrics: string
  token: string
  caFile: string
  proxyConfig: string
}

/** The file `keyedge start` writes its endpoints to (no secret in it). */
export function endpointsFile (paths: HomePaths): string {
  return join(paths.home, 'endpoints.json')
}

function port (n: string | undefined, fallback: number, name: string): number {
  const v = Number(n ?? fallback)
  if (!Number.isInteger(v) || v < 0 || v > 65535) throw new RangeError(`${name} must be 0-65535`)
  return v
}

/** The summary a person reads once everything listens. */
export function summaryText (e: StartEndpoints, token: DevToken, home: string): string {
  const row = (k: string, v: string, more = ''): string => `  ${k.padEnd(9)} ${v.padEnd(34)} ${more}`.trimEnd() + '\n'
  return `\nkeyedge is running (state in ${home})\n` +
    row('https', e.https, `try: curl --cacert ${e.caFile} ${e.https}`) +
    row('admin', e.admin, '/healthz /ready /metrics /certs, POST /reload') +
    row('keyd', e.keydSocket, `metrics: ${e.keydMetrics}/metrics`) +
    row('token', `${e.token}/token`, `JWKS: ${e.token}/.well-known/jwks.json`) +
    (token.newSecret !== undefined
      ? `  a token for caller "${DEV_CALLER}" (its secret is shown only this once; it is kept in ${token.secretFile}, 0600):\n`
      : `  a token for caller "${DEV_CALLER}" (secret in ${token.secretFile}):\n`) +
    `    ${tokenCurl(e.token, token)}\n` +
    row('status', 'npx keyedge status', '(--json for scripts)') +
    row('renew', 'npx keyedge cert renew --name localhost-ec', '(swapped in live)') +
    '  Ctrl-C stops keyd, the proxy and the upstream.\n\n'
}

export async function main (argv: string[]): Promise<number> {
  let values
  try {
    values = parseArgs({ args: argv, options: { help: { type: 'boolean', short: 'h' }, home: { type: 'string' }, port: { type: 'string' }, host: { type: 'string' }, workers: { type: 'string' } } }).values
  } catch (err) {
    process.stderr.write(`keyedge start: ${errorMessage(err)}\n\n${USAGE}`)
    return 2
  }
  if (values.help === true) { process.stdout.write(USAGE); return 0 }
  let tlsPort: number, adminPort: number, tokenPort: number, keydMetricsPort: number
  try {
    tlsPort = port(values.port ?? process.env.KEYEDGE_PORT, 8443, '--port')
    adminPort = port(process.env.KEYEDGE_ADMIN_PORT, 9443, 'KEYEDGE_ADMIN_PORT')
    tokenPort = port(process.env.KEYEDGE_TOKEN_PORT, 8444, 'KEYEDGE_TOKEN_PORT')
    keydMetricsPort = port(process.env.KEYEDGE_KEYD_METRICS_PORT, 9464, 'KEYEDGE_KEYD_METRICS_PORT')
  } catch (err) {
    process.stderr.write(`keyedge start: ${errorMessage(err)}\n`)
    return 2
  }
  const workers = Number(values.workers ?? 0)
  if (!Number.isInteger(workers) || workers < 0) { process.stderr.write('keyedge start: --workers must be a whole number\n'); return 2 }
  const paths = homePaths(values.home)
  ensurePrivateDir(paths.home)
  const env = { ...process.env, KEYEDGE_HOME: paths.home }

  let keyd: ChildProcess | undefined
  let proxy: ChildProcess | undefined
  let upstream: Awaited<ReturnType<typeof startDemoUpstream>> | undefined
  let stopping = false
  const stopAll = async (): Promise<void> => {
    stopping = true
    await stopChild(proxy)
    await stopChild(keyd)
    await upstream?.close()
  }
  const signalled = new Promise<number>(resolve => {
    const onSignal = (): void => { resolve(0) }
    process.once('SIGINT', onSignal)
    process.once('SIGTERM', onSignal)
  })
  const keydLines = new LineWaiter()
  const proxyLines = new LineWaiter()
  try {
    keyd = child(['keyd', 'serve', '--dev', '--metrics-port', String(keydMetricsPort)], env, keydLines)
    const admin = new KeydClient({ socketPath: paths.socket, clientName: 'admin', secretFile: join(paths.secretsDir, 'admin.secret'), timeoutMs: 30_000 })
    await waitForKeyd(keyd, admin)
    const keydReady = await keydLines.wait('keyd', keyd, o => o.msg === 'keyd ready')
    let certs: DevCertificates
    let token: DevToken
    try {
      certs = await issueDevCertificates(admin, paths.certsDir)
      token = await ensureDevToken(admin, paths, async since => await keydLines.wait('keyd (rereading its clients file)', keyd as ChildProcess, o => o.msg === 'keyd clients file reloaded' && typeof o.time === 'number' && o.time >= since - 5, 10_000))
    } finally {
      admin.close()
    }
    upstream = await startDemoUpstream({ host: '127.0.0.1', port: 0 })
    const config = devProxyConfig(paths, certs, { host: values.host ?? '127.0.0.1', port: tlsPort, upstream: upstream.url, workers, adminPort, token: devTokenConfig(token.secretFile, tokenPort) })
    writeFileAtomic(paths.proxyConfig, JSON.stringify(config, null, 2) + '\n', 0o600)
    proxy = child(['proxy', '--config', paths.proxyConfig], env, proxyLines)
    // The real ports (any may be 0 = picked by the system) come from the services' own log lines.
    const [listening, adminListening, tokenListening] = await Promise.all([
      proxyLines.wait('proxy', proxy, o => o.msg === 'proxy listening'),
      proxyLines.wait('proxy admin listener', proxy, o => o.msg === 'admin listening'),
      proxyLines.wait('token endpoint', proxy, o => o.msg === 'token endpoint listening')
    ])
    const endpoints: StartEndpoints = {
      https: `https://localhost:${String(listening.port)}/`,
      admin: `http://127.0.0.1:${String(adminListening.port)}`,
      keydSocket: paths.socket,
      keydMetrics: `http://127.0.0.1:${String(keydReady.metricsPort)}`,
      token: `http://127.0.0.1:${String(tokenListening.port)}`,
      caFile: certs.caFile,
      proxyConfig: paths.proxyConfig
    }
    writeFileAtomic(endpointsFile(paths), JSON.stringify(endpoints, null, 2) + '\n', 0o600)
    keydLines.stop()
    proxyLines.stop()
    if (wantsPretty()) {
      process.stdout.write(summaryText(endpoints, token, paths.home))
    } else {
      // For logs: one JSON line like the services' own, never holding the caller's secret.
      process.stdout.write(JSON.stringify({
        level: 30, time: Date.now(), pid: process.pid, name: 'keyedge-start', msg: 'keyedge running', home: paths.home, ...endpoints,
        tokenCaller: DEV_CALLER, tokenSecretFile: token.secretFile, tokenCurl: tokenCurl(endpoints.token, { secretFile: token.secretFile })
      }) + '\n')
    }
  } catch (err) {
    process.stderr.write(`keyedge start: ${errorMessage(err)}\n`)
    await stopAll()
    return 1
  }
  const died = (name: string, c: ChildProcess): Promise<number> => new Promise(resolve => c.once('exit', (code, sig) => {
    if (!stopping) process.stderr.write(`keyedge start: ${name} exited (${sig ?? code}); stopping everything\n`)
    resolve(1)
  }))
  const code = await Promise.race([signalled, died('keyd', keyd), died('proxy', proxy)])
  await stopAll()
  return code
}
