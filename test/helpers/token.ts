// Helpers for token endpoint tests: POST /token over http(s), fetching JSON, and checking a JWT
// signature with the openssl CLI against the public key keyd reports (independent of the JWKS).
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { request as httpRequest, type IncomingHttpHeaders, type IncomingMessage } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { KeydClient } from '../../keyd/client/client.js'

export interface HttpReply { status: number, headers: IncomingHttpHeaders, body: string, json: () => any }

export interface Target { port: number, tls?: { ca: string, cert?: string, key?: string } }

export const sha256Hex = (s: string): string => createHash('sha256').update(s).digest('hex')

/** One request on a fresh connection (plain HTTP, or HTTPS with `tls`). Never follows redirects. */
export async function call (t: Target, opts: { method?: string, path?: string, headers?: Record<string, string>, body?: string | Buffer }): Promise<HttpReply> {
  const base = { host: '127.0.0.1', port: t.port, method: opts.method ?? 'GET', path: opts.path ?? '/token', headers: opts.headers ?? {}, agent: false as const }
  return await new Promise((resolve, reject) => {
    const onRes = (res: IncomingMessage): void => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { body += c })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body, json: () => JSON.parse(body) }))
    }
    const req = t.tls === undefined
      ? httpRequest(base, onRes)
      : httpsRequest({ ...base, servername: 'localhost', ca: t.tls.ca, ...(t.tls.cert !== undefined ? { cert: t.tls.cert, key: t.tls.key } : {}) }, onRes)
    req.on('error', reject)
    req.end(opts.body)
  })
}

/** POST /token with a bearer secret (or none) and a JSON body. */
export async function askToken (t: Target, secret: string | undefined, body: unknown, headers: Record<string, string> = {}): Promise<HttpReply> {
  return await call(t, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(secret !== undefined ? { authorization: `Bearer ${secret}` } : {}), ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body)
  })
}

/** An IEEE P1363 r‖s ECDSA signature as DER (what openssl reads). */
export function p1363ToDer (sig: Buffer): Buffer {
  const half = sig.length / 2
  const int = (b: Buffer): Buffer => {
    let i = 0
    while (i < b.length - 1 && b[i] === 0) i++
    const v = b.subarray(i)
    // A set top bit would read as negative: DER then needs a leading zero byte.
    const pad = (v[0] ?? 0) >= 0x80
    return Buffer.concat([Buffer.of(0x02), Buffer.of(pad ? v.length + 1 : v.length), pad ? Buffer.of(0) : Buffer.alloc(0), v])
  }
  const body = Buffer.concat([int(sig.subarray(0, half)), int(sig.subarray(half))])
  return Buffer.concat([Buffer.of(0x30, body.length), body])
}

/** Verifies the JWT's signature with `openssl` and keyd's public key of `keyName`; returns openssl's output. */
export async function opensslVerify (admin: KeydClient, keyName: string, jwt: string): Promise<string> {
  const [h, p, s] = jwt.split('.')
  if (h === undefined || p === undefined || s === undefined) throw new Error(`not a compact JWT: ${jwt}`)
  const alg = JSON.parse(Buffer.from(h, 'base64url').toString()).alg as string
  const dir = mkdtempSync(join(tmpdir(), 'keyedge-jwt-'))
  try {
    const pub = (await admin.getPublicKey(keyName)).publicKey.export({ format: 'pem', type: 'spki' }).toString()
    writeFileSync(join(dir, 'pub.pem'), pub)
    writeFileSync(join(dir, 'input'), `${h}.${p}`)
    const sig = Buffer.from(s, 'base64url')
    writeFileSync(join(dir, 'sig'), alg === 'ES256' ? p1363ToDer(sig) : sig)
    const args = alg === 'EdDSA'
      ? ['pkeyutl', '-verify', '-pubin', '-inkey', 'pub.pem', '-rawin', '-in', 'input', '-sigfile', 'sig']
      : ['dgst', '-sha256', '-verify', 'pub.pem', '-signature', 'sig',
          ...(alg === 'PS256' ? ['-sigopt', 'rsa_padding_mode:pss', '-sigopt', 'rsa_pss_saltlen:32'] : []), 'input']
    return execFileSync('openssl', args, { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

/** Client CA and a client certificate made with the openssl CLI in `dir` (keys never committed). */
export function clientCertificates (dir: string): { caFile: string, cert: string, key: string, fingerprint: string } {
  const run = (args: string[]): void => { execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] }) }
  run(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'client-ca.key', '-subj', '/CN=test client CA', '-days', '2', '-out', 'client-ca.crt'])
  run(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'client.key', '-subj', '/CN=svc-m', '-out', 'client.csr'])
  run(['x509', '-req', '-in', 'client.csr', '-CA', 'client-ca.crt', '-CAkey', 'client-ca.key', '-CAcreateserial', '-days', '2', '-out', 'client.crt'])
  const fp = execFileSync('openssl', ['x509', '-in', 'client.crt', '-noout', '-fingerprint', '-sha256'], { cwd: dir, encoding: 'utf8' })
  const hex = fp.split('=')[1]
  if (hex === undefined) throw new Error(`openssl printed no fingerprint: ${fp}`)
  return {
    caFile: join(dir, 'client-ca.crt'),
    cert: readFileSync(join(dir, 'client.crt'), 'utf8'),
    key: readFileSync(join(dir, 'client.key'), 'utf8'),
    fingerprint: hex.trim().replace(/:/g, '').toLowerCase()
  }
}
