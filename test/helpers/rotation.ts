// Helpers for certificate rotation tests: the serial a client is served, admin API calls, polling.
import { X509Certificate } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { request } from 'node:http'
import { sClient } from './edge.js'

export { until } from './wait.js'

/** Client options choosing the ECDSA or the RSA certificate of an entry. */
export const SIGALGS = { ec: ['-sigalgs', 'ecdsa_secp256r1_sha256'], rsa: ['-sigalgs', 'rsa_pss_rsae_sha256'] } as const

/** The serial number of the leaf certificate `openssl s_client` is served (TLS 1.3), or undefined. */
export async function servedSerial (port: number, caFile: string, opts: { servername?: string, key?: 'ec' | 'rsa' } = {}): Promise<string | undefined> {
  const out = await sClient(port, ['-servername', opts.servername ?? 'localhost', '-tls1_3', ...SIGALGS[opts.key ?? 'ec']], caFile)
  const pem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(out)?.[0]
  return pem === undefined ? undefined : new X509Certificate(pem).serialNumber
}

/** Serial number of the first certificate in a PEM file. */
export function fileSerial (file: string): string {
  return new X509Certificate(readFileSync(file)).serialNumber
}

export interface AdminReply { status: number, body: string, json: () => any }

/** One request to the admin listener on loopback. */
export async function admin (port: number, path: string, method = 'GET'): Promise<AdminReply> {
  return await new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method, agent: false }, res => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { body += c })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, json: () => JSON.parse(body) }))
    })
    req.on('error', reject)
    req.end()
  })
}
