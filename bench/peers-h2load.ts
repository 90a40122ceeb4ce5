// The load of `bench peers`: h2load (nghttp2), bounded by a request count, pinned to the client's
// CPUs, killed if it overruns. The TLS version and the certificate type are pinned through an
// OpenSSL config of its own (h2load has no flags for them): `Protocol` leaves one version and
// `SignatureAlgorithms` leaves the server one certificate to choose. Cipher suites and the key
// exchange (X25519) are the same for every peer.
import { spawn } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { KeyKind } from './handshake-client.js'
import { pinnedCommand } from './proc-tree.js'

export type TlsVer = '1.3' | '1.2'

export interface LoadSpec {
  port: number
  path: string
  /** HTTP/1.1 (`--h1`) or HTTP/2 (ALPN h2). */
  proto: 'h1' | 'h2'
  /** Send `Connection: close`: one request per connection, every request a new TLS handshake. */
  connectionClose: boolean
  /** Concurrent clients (`-c`). */
  clients: number
  /** Requests in flight per client (`-m`; HTTP/2 streams). */
  streams: number
  /** Requests in all (`-n`). */
  requests: number
  version: TlsVer
  keyKind: KeyKind
}

export interface LoadResult {
  requests: number
  succeeded: number
  failed: number
  errored: number
  timeout: number
  status2xx: number
  seconds: number
  protocol: string
  cipher: string
  alpn: string
  /** Response body bytes received. */
  bodyBytes: number
}

const SIGALGS: Record<KeyKind, string> = { ec: 'ECDSA+SHA256', rsa: 'rsa_pss_rsae_sha256:RSA+SHA256' }
const TLS12_CIPHER: Record<KeyKind, string> = { ec: 'ECDHE-ECDSA-AES128-GCM-SHA256', rsa: 'ECDHE-RSA-AES128-GCM-SHA256' }
const TLS13_CIPHER = 'TLS_AES_128_GCM_SHA256'

/** Writes the OpenSSL configs h2load runs with into `dir`; returns the path for a version and key type. */
export function writeClientConfigs (dir: string): (v: TlsVer, k: KeyKind) => string {
  mkdirSync(dir, { recursive: true })
  const path = (v: TlsVer, k: KeyKind): string => join(dir, `h2load-tls${v}-${k}.cnf`)
  for (const v of ['1.3', '1.2'] as const) {
    for (const k of ['ec', 'rsa'] as const) {
      writeFileSync(path(v, k), [
        'openssl_conf = openssl_init',
        '[openssl_init]',
        'ssl_conf = ssl_sect',
        '[ssl_sect]',
        'system_default = system_default_sect',
        '[system_default_sect]',
        `Protocol = ALL, -SSLv3, -TLSv1, -TLSv1.1, ${v === '1.3' ? '-TLSv1.2' : '-TLSv1.3'}`,
        `SignatureAlgorithms = ${SIGALGS[k]}`,
        ''
      ].join('\n'))
    }
  }
  return path
}

/** The h2load command line for `spec` (without the pinning prefix). */
export function h2loadArgs (spec: LoadSpec): string[] {
  return [
    '-n', String(spec.requests),
    '-c', String(Math.min(spec.clients, spec.requests)),
    '-m', String(spec.streams),
    '-N', '15s',
    // X25519 for the key exchange; P-256 listed too, or a TLS 1.2 server will not use a P-256 certificate.
    '--groups', 'X25519:P-256',
    '--tls13-ciphers', TLS13_CIPHER,
    '--ciphers', TLS12_CIPHER[spec.keyKind],
    ...(spec.proto === 'h1' ? ['--h1'] : []),
    ...(spec.connectionClose ? ['-H', 'Connection: close'] : []),
    `https://localhost:${spec.port}${spec.path}`
  ]
}

const num = (re: RegExp, text: string): number => Number(re.exec(text)?.[1] ?? NaN)

/** h2load's summary as numbers. @throws if the summary is missing. */
export function parseH2load (text: string): LoadResult {
  const req = /requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(text)
  const fin = /finished in ([\d.]+)(ms|s),/.exec(text)
  if (req === null || fin === null) throw new Error(`h2load printed no summary:\n${text.slice(-1500)}`)
  return {
    requests: Number(req[1]),
    succeeded: Number(req[2]),
    failed: Number(req[3]),
    errored: Number(req[4]),
    timeout: Number(req[5]),
    status2xx: num(/status codes: (\d+) 2xx/, text),
    seconds: Number(fin[1]) / (fin[2] === 'ms' ? 1000 : 1),
    protocol: /TLS Protocol: (\S+)/.exec(text)?.[1] ?? '',
    cipher: /Cipher: (\S+)/.exec(text)?.[1] ?? '',
    alpn: /Application protocol: (\S+)/.exec(text)?.[1] ?? '',
    bodyBytes: num(/traffic: .*?, [\d.]+\w* \(\d+\) headers .*?, [\d.]+\w* \((\d+)\) data/, text)
  }
}

/** Runs h2load once; rejects if it cannot start, exits abnormally or outlives `limitMs` (then it is killed). */
export async function runH2load (spec: LoadSpec, opensslConf: string, clientCpus: string | null, limitMs: number): Promise<LoadResult> {
  const pre = pinnedCommand(clientCpus)
  const [file, ...args] = [...pre, 'h2load', ...h2loadArgs(spec)]
  if (file === undefined) throw new Error('no h2load command line')
  const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, OPENSSL_CONF: opensslConf } })
  let out = ''
  child.stdout.on('data', (b: Buffer) => { out += b.toString() })
  child.stderr.on('data', (b: Buffer) => { out += b.toString() })
  let killed = false
  const timer = setTimeout(() => { killed = true; child.kill('SIGKILL') }, limitMs)
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject)
    child.once('exit', c => resolve(c))
  }).finally(() => clearTimeout(timer))
  if (killed) throw new Error(`h2load overran ${limitMs} ms and was killed (h2load ${h2loadArgs(spec).join(' ')})`)
  if (code !== 0) throw new Error(`h2load exited with ${String(code)}:\n${out.slice(-1500)}`)
  return parseH2load(out)
}
