// The two servers `bench testssl` and test/proxy/testssl.test.ts scan: keyedge as `npm start` runs
// it (keys in keyd, an ECDSA and an RSA certificate behind one name, the demo upstream behind it)
// and nginx with the very same certificates and Mozilla-intermediate-like settings, proxying to the
// same upstream. The keys are made here and imported into keyd, so that nginx, which needs them in
// a file, can serve the same certificates; keyedge only ever gets their key references.
import { generateKeyPairSync } from 'node:crypto'
import { mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { ensureDevCa, signLeafCertificate } from '../certs/dev-ca.js'
import { encodeKeyReference } from '../keyd/protocol/codec.js'
import { errorMessage } from '../lib/errors.js'
import { startDemoUpstream, type DemoUpstream } from '../src/proxy/demo-upstream.js'
import { startKeyd, type TestKeyd } from '../test/helpers/keyd.js'
import { tempHome } from '../test/helpers/paths.js'
import { spawnCli } from '../test/helpers/processes.js'
import { nginxConfHead, nginxVersion } from './nginx.js'
import { freePort, spawnServer, stopTree, waitReady } from './peers-process.js'
import { processTree } from './proc-tree.js'

/** The names both certificates carry; testssl connects to 127.0.0.1 without SNI. */
export const SCAN_NAMES = ['localhost', '127.0.0.1']

/**
 * The TLS 1.2 suites of Mozilla's intermediate profile without the DHE ones (keyedge offers no
 * finite-field DH in TLS 1.2), i.e. the TLS 1.2 half of keyedge's DEFAULT_CIPHERS, so that the
 * scan compares how the servers treat the same suites.
 */
export const INTERMEDIATE_TLS12 = 'ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305'

export interface Leaf { certFile: string, keyRefFile: string, keyFile: string }

/** keyd, the dev CA, an ECDSA and an RSA leaf (plain keys for nginx, references for keyedge), the demo upstream. */
export interface ScanMaterials {
  dir: string
  keyd: TestKeyd
  caFile: string
  ec: Leaf
  rsa: Leaf
  upstream: DemoUpstream
  stop: () => Promise<void>
}

/** A server being scanned. */
export interface ScanTarget {
  label: string
  version: string
  port: number
  stop: () => Promise<void>
}

async function leaf (m: { keyd: TestKeyd, dir: string }, ca: Awaited<ReturnType<typeof ensureDevCa>>, type: 'ec' | 'rsa'): Promise<Leaf> {
  const pair = type === 'ec'
    ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
    : generateKeyPairSync('rsa', { modulusLength: 2048 })
  const keyType = type === 'ec' ? 'ec-p256' : 'rsa-2048'
  const pkcs8 = pair.privateKey.export({ type: 'pkcs8', format: 'der' })
  const name = `scan-${type}`
  const info = await m.keyd.admin.importKey(name, 'tls-server', { pkcs8 })
  pkcs8.fill(0)
  const cert = await signLeafCertificate(m.keyd.admin, ca, { spki: info.spki, keyType, serverNames: SCAN_NAMES })
  const files = { certFile: join(m.dir, `${name}.crt`), keyRefFile: join(m.dir, `${name}.keyref`), keyFile: join(m.dir, 'nginx', `${name}.key`) }
  writeFileSync(files.certFile, cert.toString('pem') + '\n')
  writeFileSync(files.keyRefFile, encodeKeyReference({ name, version: info.version, type: keyType }))
  writeFileSync(files.keyFile, pair.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 })
  return files
}

/** Starts keyd in a temporary home and makes everything both servers need. */
export async function prepareScan (): Promise<ScanMaterials> {
  const keyd = await startKeyd(tempHome('keyedge-testssl-'))
  const dir = keyd.paths.home
  let upstream: DemoUpstream | undefined
  const stop = async (): Promise<void> => {
    try { await upstream?.close() } finally {
      await keyd.stop()
      rmSync(dir, { recursive: true, force: true })
    }
  }
  try {
    mkdirSync(join(dir, 'nginx'), { recursive: true, mode: 0o700 })
    const ca = await ensureDevCa(keyd.admin, keyd.paths.certsDir)
    const ec = await leaf({ keyd, dir }, ca, 'ec')
    const rsa = await leaf({ keyd, dir }, ca, 'rsa')
    upstream = await startDemoUpstream({ host: '127.0.0.1', port: 0 })
    return { dir, keyd, caFile: join(keyd.paths.certsDir, 'ca.crt'), ec, rsa, upstream, stop }
  } catch (err) {
    await stop()
    throw err
  }
}

/**
 * `keyedge proxy` as `npm start` configures it (every TLS setting at its default, keys in keyd),
 * on 127.0.0.1 port 0, one worker; `tls` overrides settings (for a check of one of them).
 */
export async function startKeyedgeScan (m: ScanMaterials, tls: Record<string, unknown> = {}): Promise<ScanTarget> {
  const file = join(m.dir, 'keyedge.json')
  writeFileSync(file, JSON.stringify({
    listen: { host: '127.0.0.1', port: 0 },
    workers: 1,
    keyd: { socket: m.keyd.paths.socket, clientName: 'proxy', secretFile: join(m.keyd.paths.secretsDir, 'proxy.secret') },
    tls: { defaultCertificate: 'localhost', ...tls },
    certificates: [{ name: 'localhost', serverNames: SCAN_NAMES, files: [m.ec, m.rsa].map(l => ({ cert: l.certFile, key: l.keyRefFile })) }],
    routes: [{ upstream: m.upstream.url }]
  }, null, 2))
  const p = spawnCli(['proxy', '--config', file], { KEYEDGE_HOME: m.dir })
  let port: number
  try {
    port = (await p.waitFor(o => o.msg === 'proxy listening', 30_000)).port as number
  } catch (err) {
    await p.stop('SIGKILL')
    throw new Error(`keyedge did not listen: ${errorMessage(err).split('\n')[0] ?? ''}`, { cause: err })
  }
  const primary = p.proc.pid as number
  return {
    label: 'keyedge',
    version: `keyedge (Node ${process.versions.node}, OpenSSL ${process.versions.openssl})`,
    port,
    stop: async () => {
      const tree = processTree(primary)
      await p.stop('SIGINT')
      for (const pid of tree.slice(1)) { try { process.kill(pid, 'SIGKILL') } catch { /* gone */ } }
    }
  }
}

/**
 * nginx with the same two certificates and Mozilla's intermediate settings (TLS 1.2 and 1.3, the
 * ECDHE suites, client cipher preference, X25519:prime256v1:secp384r1, a shared session cache, no
 * tickets), HTTP/2, proxying to the demo upstream; undefined when nginx is not installed.
 */
export async function startNginxScan (m: ScanMaterials): Promise<ScanTarget | undefined> {
  const version = nginxVersion()
  if (version === undefined) return undefined
  const dir = join(m.dir, 'nginx')
  const port = await freePort()
  const conf = join(dir, 'nginx.conf')
  writeFileSync(conf, `${nginxConfHead(dir, { workers: 1, workerConnections: 1024 })}  server {
    listen 127.0.0.1:${port} ssl http2;
    ssl_certificate ${m.ec.certFile};
    ssl_certificate_key ${m.ec.keyFile};
    ssl_certificate ${m.rsa.certFile};
    ssl_certificate_key ${m.rsa.keyFile};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers ${INTERMEDIATE_TLS12};
    ssl_ecdh_curve X25519:prime256v1:secp384r1;
    ssl_prefer_server_ciphers off;
    ssl_session_timeout 1d;
    ssl_session_cache shared:MozSSL:10m;
    ssl_session_tickets off;
    location / {
      proxy_pass ${m.upstream.url};
      proxy_http_version 1.1;
      proxy_set_header Host $host;
    }
  }
}
`)
  const sp = spawnServer('nginx', ['-p', dir, '-e', join(dir, 'error.log'), '-c', conf], null)
  try {
    await waitReady(sp, [port], 'nginx', () => processTree(sp.pid).length >= 2, 20_000)
  } catch (err) { await stopTree(sp); throw err }
  return { label: 'nginx', version: `nginx ${version}`, port, stop: async () => await stopTree(sp) }
}
