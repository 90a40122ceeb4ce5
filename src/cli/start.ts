// `keyedge start` (what `npm start` runs): keyd, development certificates, a demo upstream and the proxy, supervised together.
import { parseArgs } from 'node:util'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { homePaths, ensurePrivateDir, type HomePaths } from '../../lib/home.js'
import { KeydClient } from '../../keyd/client/client.js'
import { writeFileAtomic } from '../../lib/atomic-file.js'
import { startDemoUpstream } from '../proxy/demo-upstream.js'
import { issueDevCertificates, type DevCertificates } from './cert.js'
import { pipePretty, wantsPretty } from './pretty-log.js'
import { errorMessage } from '../../lib/errors.js'

const USAGE = `Usage: keyedge start [options]

Development quick start. Runs, supervised together:
  keyd        the key daemon (development mode: master key in a 0600 file)
  certs       a dev CA and ECDSA + RSA certificates for localhost, keys generated inside keyd
  upstream    the built-in demo upstream on a free loopback port
  proxy       TLS 1.2/1.3, HTTP/1.1 and HTTP/2 on https://localhost:<port>/, its admin listener
              on http://127.0.0.1:$KEYEDGE_ADMIN_PORT (default 9443: /certs, /metrics, POST /reload)
Ctrl-C stops everything. State lives in $KEYEDGE_HOME (default ./.keyedge). On a terminal the
logs are printed for a person (KEYEDGE_LOG_FORMAT=json keeps the services' JSON lines; =pretty
forces the readable form). To run the pieces as separate processes: docs/running.md.

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
export function devProxyConfig (paths: HomePaths, certs: DevCertificates, opts: { host: string, port: number, upstream: string, workers: number, adminPort?: number }): object {
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
    ...(opts.adminPort !== undefined ? { admin: { host: '127.0.0.1', port: opts.adminPort, drainDelayMs: 0 } } : {})
  }
}

function child (args: string[], env: NodeJS.ProcessEnv): ChildProcess {
  if (!wantsPretty()) return spawn(process.execPath, [CLI, ...args], { env, stdio: ['ignore', 'inherit', 'inherit'] })
  // On a terminal: the children still log JSON; their lines are rewritten for a person here.
  const c = spawn(process.execPath, [CLI, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  const color = process.stdout.isTTY === true
  if (c.stdout !== null) pipePretty(c.stdout, process.stdout, color)
  if (c.stderr !== null) pipePretty(c.stderr, process.stderr, color)
  return c
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

export async function main (argv: string[]): Promise<number> {
  let values
  try {
    values = parseArgs({ args: argv, options: { help: { type: 'boolean', short: 'h' }, home: { type: 'string' }, port: { type: 'string' }, host: { type: 'string' }, workers: { type: 'string' } } }).values
  } catch (err) {
    process.stderr.write(`keyedge start: ${errorMessage(err)}\n\n${USAGE}`)
    return 2
  }
  if (values.help === true) { process.stdout.write(USAGE); return 0 }
  const port = Number(values.port ?? process.env.KEYEDGE_PORT ?? 8443)
  const workers = Number(values.workers ?? 0)
  if (!Number.isInteger(port) || port < 0 || port > 65535) { process.stderr.write('keyedge start: --port must be 0-65535\n'); return 2 }
  const adminPort = Number(process.env.KEYEDGE_ADMIN_PORT ?? 9443)
  if (!Number.isInteger(adminPort) || adminPort < 0 || adminPort > 65535) { process.stderr.write('keyedge start: KEYEDGE_ADMIN_PORT must be 0-65535\n'); return 2 }
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
  try {
    keyd = child(['keyd', 'serve', '--dev'], env)
    const admin = new KeydClient({ socketPath: paths.socket, clientName: 'admin', secretFile: join(paths.secretsDir, 'admin.secret'), timeoutMs: 30_000 })
    await waitForKeyd(keyd, admin)
    const certs = await issueDevCertificates(admin, paths.certsDir)
    admin.close()
    upstream = await startDemoUpstream({ host: '127.0.0.1', port: 0 })
    const config = devProxyConfig(paths, certs, { host: values.host ?? '127.0.0.1', port, upstream: upstream.url, workers, adminPort })
    writeFileAtomic(paths.proxyConfig, JSON.stringify(config, null, 2) + '\n', 0o600)
    proxy = child(['proxy', '--config', paths.proxyConfig], env)
    process.stdout.write(`\nkeyedge: serving https://localhost:${port}/ (demo upstream ${upstream.url})\n` +
      `  try:  curl --cacert ${certs.caFile} https://localhost:${port}/\n` +
      `  admin: curl http://127.0.0.1:${adminPort}/certs   renew live: npx keyedge cert renew --name localhost-ec\n` +
      '  Ctrl-C stops keyd, the proxy and the upstream.\n\n')
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
