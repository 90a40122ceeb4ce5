// A whole keyedge stack for end-to-end tests: keyd, dev certificates, the demo upstream, and a proxy process.
import { writeFileSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { execFile } from 'node:child_process'
import { startKeyd, type TestKeyd } from './keyd.js'
import { spawnCli, type Spawned } from './processes.js'
import { startDemoUpstream, type DemoUpstream } from '../../src/proxy/demo-upstream.js'
import { issueDevCertificates, type DevCertificates } from '../../src/cli/cert.js'
import { ensureDevCa, issueLeaf, type IssuedLeaf } from '../../certs/dev-ca.js'

export interface Stack {
  keyd: TestKeyd
  upstream: DemoUpstream
  certs: DevCertificates
  /** An extra certificate for `other.test` and `*.wild.test` (ECDSA). */
  other: IssuedLeaf
  caFile: string
  /** Closes the upstream, stops keyd (even if the close fails) and removes the temporary home. */
  stop: () => Promise<void>
}

/** `keyd` starts another keyd, e.g. one backed by SoftHSM2 (test/helpers/softhsm.ts). */
export async function startStack (opts: { keyd?: () => Promise<TestKeyd> } = {}): Promise<Stack> {
  const keyd = await (opts.keyd?.() ?? startKeyd())
  const certs = await issueDevCertificates(keyd.admin, keyd.paths.certsDir)
  const ca = await ensureDevCa(keyd.admin, keyd.paths.certsDir)
  const other = await issueLeaf(keyd.admin, keyd.paths.certsDir, ca, { keyName: 'other-ec', keyType: 'ec-p256', serverNames: ['other.test', '*.wild.test'] })
  const upstream = await startDemoUpstream({ host: '127.0.0.1', port: 0 })
  const stop = async (): Promise<void> => {
    try {
      await upstream.close()
    } finally {
      await keyd.stop()
      rmSync(keyd.paths.home, { recursive: true, force: true })
    }
  }
  return { keyd, upstream, certs, other, caFile: certs.caFile, stop }
}

export interface TestProxy extends Spawned {
  port: number
  /** The admin listener's port, when started with `admin`. */
  adminPort?: number
  /** The config file written for this proxy (rewrite it to test config reloads). */
  configFile: string
  workerPids: () => number[]
}

/** Writes a proxy config for `stack` (with `overrides` merged into `tls`) and runs `keyedge proxy`. */
export async function startProxy (stack: Stack, opts: {
  workers?: number
  tls?: Record<string, unknown>
  node?: string
  name?: string
  /** An admin section (port 0 and no drain delay unless given). */
  admin?: Record<string, unknown>
  /** Top-level settings merged into the config, e.g. `certificates` or `shutdownGraceMs`. */
  extra?: Record<string, unknown>
} = {}): Promise<TestProxy> {
  const config = {
    listen: { host: '127.0.0.1', port: 0 },
    workers: opts.workers ?? 1,
    keyd: { socket: stack.keyd.paths.socket, clientName: 'proxy', secretFile: join(stack.keyd.paths.secretsDir, 'proxy.secret'), timeoutMs: 1000 },
    tls: { defaultCertificate: 'localhost', ...opts.tls },
    certificates: [
      { name: 'localhost', serverNames: ['localhost', '127.0.0.1'], files: stack.certs.leaves.map(l => ({ cert: l.certFile, key: l.keyRefFile })) },
      { name: 'other', serverNames: ['other.test', '*.wild.test'], files: [{ cert: stack.other.certFile, key: stack.other.keyRefFile }] }
    ],
    routes: [{ host: '*', pathPrefix: '/', upstream: stack.upstream.url }],
    trustedProxies: [],
    ...(opts.admin !== undefined ? { admin: { port: 0, drainDelayMs: 0, ...opts.admin } } : {}),
    ...opts.extra
  }
  const file = join(stack.keyd.paths.home, `${opts.name ?? 'proxy'}.json`)
  writeFileSync(file, JSON.stringify(config, null, 2))
  const p = spawnCli(['proxy', '--config', file], { KEYEDGE_HOME: stack.keyd.paths.home }, opts.node)
  const ready = await p.waitFor(o => o.msg === 'proxy listening', 30000)
  const admin = opts.admin !== undefined ? await p.waitFor(o => o.msg === 'admin listening', 5000) : undefined
  const workerPids = (): number[] => {
    const out = readFileSync(`/proc/${p.proc.pid as number}/task/${p.proc.pid as number}/children`, 'utf8').trim()
    return out === '' ? [] : out.split(/\s+/).map(Number)
  }
  return { ...p, port: ready.port as number, ...(admin !== undefined ? { adminPort: admin.port as number } : {}), configFile: file, workerPids }
}

export interface CurlResult { code: number, stdout: string, stderr: string, ms: number }

/** Runs curl (bounded by --max-time) and never throws. Async: the demo upstream lives in the test process. */
export async function curl (args: string[], maxSeconds = 10): Promise<CurlResult> {
  const t0 = Date.now()
  return await new Promise(resolve => {
    execFile('curl', ['-sS', '--max-time', String(maxSeconds), ...args], { encoding: 'utf8' }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr, ms: Date.now() - t0 })
    })
  })
}

/** `openssl s_client` one handshake; returns its combined output (bounded to 10 s). */
export async function sClient (port: number, args: string[], caFile: string): Promise<string> {
  return await new Promise(resolve => {
    const c = execFile('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-CAfile', caFile, ...args], { encoding: 'utf8', timeout: 10000 }, (_err, stdout, stderr) => {
      resolve(`${stdout}${stderr}`)
    })
    c.stdin?.end()
  })
}
