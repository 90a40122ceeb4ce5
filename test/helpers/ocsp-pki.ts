// A small PKI for the OCSP stapling tests, made at test time with openssl (no key is committed): a
// CA, a delegated OCSP responder certificate (id-kp-OCSPSigning) it signed, leaves whose Authority
// Information Access names a responder URL, and real `openssl ocsp` responders on free ports
// (`-port 0`, the port read from its ACCEPT line), optionally under libfaketime (a responder whose
// clock runs behind hands out responses that expire within seconds).

import { execFileSync } from 'node:child_process'
import { generateKeyPairSync } from 'node:crypto'
import { existsSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { spawnLogged, type Spawned } from './processes.js'

export interface OcspPki {
  dir: string
  caFile: string
  /** The index file the responders read (serial, status). */
  indexFile: string
}

export interface OcspLeaf {
  /** The leaf then the CA certificate, as a certificate entry's `cert` file. */
  chainFile: string
  /** The leaf alone. */
  certFile: string
  keyFile: string
  serial: string
}

const quiet = { stdio: ['ignore', 'ignore', 'pipe'] as Array<'ignore' | 'pipe'> }

function writeKey (file: string): void {
  const pair = generateKeyPairSync('ec', { namedCurve: 'prime256v1' })
  writeFileSync(file, pair.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 })
}

/** An OpenSSL CA-database time (YYMMDDHHMMSSZ) `ms` from now. */
function caTime (ms: number): string {
  return new Date(Date.now() + ms).toISOString().replace(/[-:T]/g, '').slice(2, 14) + 'Z'
}

/**
 * Makes the CA and the responder certificate in `dir`, and an index file with `good` and `revoked`
 * serials (hex) for leaves issued later with `issueLeaf`.
 */
export function makeOcspPki (dir: string, serials: { good: string[], revoked: string[] }): OcspPki {
  const caKey = join(dir, 'ca.key')
  const caFile = join(dir, 'ca.crt')
  writeKey(caKey)
  execFileSync('openssl', ['req', '-x509', '-new', '-key', caKey, '-subj', '/CN=keyedge OCSP test CA', '-days', '2', '-out', caFile,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], quiet)
  const ext = join(dir, 'ext.cnf')
  writeFileSync(ext, '[ocsp_ext]\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=critical,OCSPSigning\n')
  const rKey = join(dir, 'ocsp.key')
  writeKey(rKey)
  execFileSync('openssl', ['req', '-new', '-key', rKey, '-subj', '/CN=keyedge OCSP test responder', '-out', join(dir, 'ocsp.csr')], quiet)
  execFileSync('openssl', ['x509', '-req', '-in', join(dir, 'ocsp.csr'), '-CA', caFile, '-CAkey', caKey, '-set_serial', '0x7001', '-days', '2',
    '-extfile', ext, '-extensions', 'ocsp_ext', '-out', join(dir, 'ocsp.crt')], quiet)
  const expiry = caTime(2 * 86_400_000)
  const lines = [
    ...serials.good.map(s => `V\t${expiry}\t\t${s}\tunknown\t/CN=${s}`),
    ...serials.revoked.map(s => `R\t${expiry}\t${caTime(-3_600_000)},keyCompromise\t${s}\tunknown\t/CN=${s}`)
  ]
  const indexFile = join(dir, 'index.txt')
  writeFileSync(indexFile, lines.join('\n') + '\n')
  return { dir, caFile, indexFile }
}

/** Issues a leaf for `name` with serial `serial` (hex) and, unless `ocspUrl` is undefined, that OCSP URL in its AIA. */
export function issueLeaf (pki: OcspPki, name: string, serial: string, ocspUrl: string | undefined): OcspLeaf {
  const base = join(pki.dir, name)
  const keyFile = `${base}.key`
  writeKey(keyFile)
  execFileSync('openssl', ['req', '-new', '-key', keyFile, '-subj', `/CN=${name}`, '-out', `${base}.csr`], quiet)
  const ext = `${base}.cnf`
  writeFileSync(ext, `[leaf]\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:${name}\n` +
    (ocspUrl !== undefined ? `authorityInfoAccess=OCSP;URI:${ocspUrl}\n` : ''))
  execFileSync('openssl', ['x509', '-req', '-in', `${base}.csr`, '-CA', pki.caFile, '-CAkey', join(pki.dir, 'ca.key'), '-set_serial', `0x${serial}`,
    '-days', '2', '-extfile', ext, '-extensions', 'leaf', '-out', `${base}.crt`], quiet)
  const chainFile = `${base}.chain.pem`
  execFileSync('sh', ['-c', 'cat "$1" "$2" > "$3"', 'sh', `${base}.crt`, pki.caFile, chainFile])
  return { chainFile, certFile: `${base}.crt`, keyFile, serial }
}

/** libfaketime's library (Debian package `faketime`). @throws Error when it is not installed. */
export function fakeTimeLibrary (): string {
  const found = ['/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1', '/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1', '/usr/lib/faketime/libfaketime.so.1'].find(f => existsSync(f))
  if (found === undefined) throw new Error('libfaketime is not installed (apt-get install faketime)')
  return found
}

export interface Responder { url: string, proc: Spawned, stop: () => Promise<void> }

/**
 * Starts `openssl ocsp` for `pki` (signing with the delegated responder certificate, responses valid
 * for `-nmin 1`) on a free port; `signer` replaces that certificate and key. `behindSeconds`: its clock runs that far behind (libfaketime), so
 * its responses expire `60 - behindSeconds` seconds from now.
 */
export async function startResponder (pki: OcspPki, behindSeconds = 0, signer = { cert: join(pki.dir, 'ocsp.crt'), key: join(pki.dir, 'ocsp.key') }): Promise<Responder> {
  const args = ['ocsp', '-index', pki.indexFile, '-CA', pki.caFile, '-rsigner', signer.cert, '-rkey', signer.key, '-port', '0', '-nmin', '1']
  // libfaketime preloaded into openssl itself (the faketime wrapper would fork: its pid is not the responder's).
  const proc = spawnLogged('openssl', args, behindSeconds > 0 ? { LD_PRELOAD: fakeTimeLibrary(), FAKETIME: `-${behindSeconds}s`, DONT_FAKE_MONOTONIC: '1' } : {})
  const deadline = Date.now() + 10_000
  let port: number | undefined
  while (port === undefined) {
    for (const line of proc.lines) {
      const m = /^ACCEPT .*:(\d+)/.exec(line)
      if (m?.[1] !== undefined) port = Number(m[1])
    }
    if (port !== undefined) break
    if (Date.now() > deadline || proc.proc.exitCode !== null) {
      await proc.stop('SIGKILL')
      throw new Error(`openssl ocsp did not start: ${proc.lines.join('\n')}`)
    }
    await new Promise(resolve => setTimeout(resolve, 20))
  }
  return { url: `http://127.0.0.1:${port}`, proc, stop: async () => { await proc.stop('SIGKILL') } }
}

/** Asks `url` about `leaf` with `openssl ocsp` and writes the DER response to `out` (a `files[].ocsp` file). */
export function saveResponse (pki: OcspPki, leaf: OcspLeaf, url: string, out: string): void {
  execFileSync('openssl', ['ocsp', '-issuer', pki.caFile, '-cert', leaf.certFile, '-url', url, '-respout', out, '-noverify'], quiet)
}
