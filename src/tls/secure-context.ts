// The checks every certificate/key pair passes (certificate parsable and not expired, key loadable,
// the two matching) and the TLS context options built from the checked PEMs. loadCertificate does
// both at once for one entry; the certificate store (cert-store.ts) checks every entry at load and
// builds a context only on the first ClientHello that needs it.

import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createSecureContext, type SecureContext, type SecureContextOptions } from 'node:tls'
import type { Logger } from 'pino'
import { errorCode } from '../../lib/errors.js'
import type { CertificateConfig, TlsConfig } from '../config/types.js'
import { CertKeyMismatchError, CertLoadError, KeyLoadError, SecureContextError } from '../errors.js'

export const KEY_REFERENCE_LABEL = 'KEYEDGE KEY REFERENCE'
const KEY_REFERENCE_BEGIN = `-----BEGIN ${KEY_REFERENCE_LABEL}-----`
const PRIVATE_KEY_BEGIN = /-----BEGIN (RSA |EC |ENCRYPTED )?PRIVATE KEY-----/
const CERTIFICATE_BLOCK = /-----BEGIN CERTIFICATE-----[^-]*-----END CERTIFICATE-----/g

/** Where the signing key of a pair lives. */
export type KeyCustody = 'keyd' | 'in-process'

/** The TLS settings a context is built with. */
export type ContextTls = Pick<TlsConfig, 'minVersion' | 'maxVersion' | 'ciphers' | 'groups' | 'sessionTimeoutSeconds'>

export interface LoadedPair {
  certFile: string
  keyFile: string
  custody: KeyCustody
  subject: string
  notAfter: Date
  fingerprint256: string
}

export interface LoadedCertificate {
  name: string
  context: SecureContext
  /**
   * What `context` was built from (certificate and key-reference PEMs, TLS settings). A tls.Server
   * ignores a `secureContext` option for clients that send no SNI, so its default context must be
   * given as these options (or through server.setSecureContext).
   */
  options: SecureContextOptions
  pairs: LoadedPair[]
}

/** An OpenSSL reason without anything that could be key material. */
export function safeReason (err: unknown): string {
  const message = err instanceof Error ? err.message : String(err)
  return message.includes('-----') ? 'unparsable' : message
}

/** The reason a read failed, as the errors say it. */
export function readFailure (err: unknown): string {
  return `cannot read (${errorCode(err) ?? 'error'})`
}

function readText (file: string, onError: (reason: string, cause: unknown) => Error): string {
  try {
    return readFileSync(file, 'utf8')
  } catch (err) {
    throw onError(readFailure(err), err)
  }
}

/** A certificate file's leaf, parsed and checked, and how many certificates the file holds. */
export interface ParsedCertificate {
  x509: X509Certificate
  /** notAfter of the leaf, epoch ms. */
  notAfter: number
  /** The signature algorithm of every certificate of the file, leaf first (what a TLS context checks besides the key). */
  signatures: string
}

/** The signature algorithm of a certificate: its OID (X509Certificate.signatureAlgorithmOid, Node ≥ 23), else the DER AlgorithmIdentifier in hex. */
export function signatureOf (x509: X509Certificate): string {
  const oid = (x509 as { signatureAlgorithmOid?: string }).signatureAlgorithmOid
  if (typeof oid === 'string') return oid
  // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }: skip the outer
  // header and the TBS; the algorithm identifier's bytes name it well enough for a comparison.
  const der = x509.raw
  const skipHeader = (at: number): number => { const l = der[at + 1] ?? 0; return at + 2 + (l & 0x80 ? l & 0x7f : 0) }
  const length = (at: number): number => {
    const l = der[at + 1] ?? 0
    if ((l & 0x80) === 0) return 2 + l
    let n = 0
    for (let i = 0; i < (l & 0x7f); i++) n = n * 256 + (der[at + 2 + i] ?? 0)
    return 2 + (l & 0x7f) + n
  }
  const tbs = skipHeader(0)
  const alg = tbs + length(tbs)
  return der.subarray(alg, alg + length(alg)).toString('hex')
}

const BEGIN_CERTIFICATE = '-----BEGIN CERTIFICATE-----'

/** The CERTIFICATE blocks of a PEM file (the whole file when it holds one: X509Certificate reads PEM itself). */
function certificateBlocks (pem: Buffer): Buffer[] {
  const second = pem.indexOf(BEGIN_CERTIFICATE, pem.indexOf(BEGIN_CERTIFICATE) + 1)
  if (second < 0) return [pem]
  return (pem.toString('latin1').match(CERTIFICATE_BLOCK) ?? []).map(b => Buffer.from(b, 'latin1'))
}

/**
 * Parses the PEM of certificate file `file`: every CERTIFICATE block must parse (OpenSSL loads the
 * whole chain into a context), the leaf must not be expired; a leaf not valid yet is logged.
 * @throws CertLoadError (EDGE_ERR_CERT_LOAD)
 */
export function parseCertificate (file: string, pem: Buffer | string, now: number, log: Logger): ParsedCertificate {
  const bytes = typeof pem === 'string' ? Buffer.from(pem) : pem
  if (!bytes.includes(BEGIN_CERTIFICATE)) throw new CertLoadError(file, 'holds no PEM CERTIFICATE block')
  let leaf: X509Certificate | undefined
  const signatures: string[] = []
  for (const block of certificateBlocks(bytes)) {
    let x509: X509Certificate
    try {
      x509 = new X509Certificate(block)
    } catch (err) {
      throw new CertLoadError(file, `cannot parse the certificate (${safeReason(err)})`, { cause: err })
    }
    leaf ??= x509
    signatures.push(signatureOf(x509))
  }
  const x509 = leaf as X509Certificate
  const notAfter = Date.parse(x509.validTo)
  if (notAfter <= now) {
    throw new CertLoadError(file, `expired on ${new Date(notAfter).toISOString()} (subject ${x509.subject.replace(/\n/g, ', ')})`)
  }
  const notBefore = Date.parse(x509.validFrom)
  if (notBefore > now) log.warn({ file, notBefore: new Date(notBefore).toISOString() }, 'certificate is not valid yet')
  return { x509, notAfter, signatures: signatures.join(',') }
}

/**
 * Loads the key reference or private key PEM of key file `file` (a key reference through the keyd
 * bridge, which asks keyd for its public key).
 * @throws KeyLoadError (EDGE_ERR_KEY_LOAD)
 */
export function parseKey (file: string, pem: string): { key: KeyObject, custody: KeyCustody } {
  const isReference = pem.includes(KEY_REFERENCE_BEGIN)
  if (!isReference && !PRIVATE_KEY_BEGIN.test(pem)) {
    throw new KeyLoadError(file, `holds neither a ${KEY_REFERENCE_LABEL} nor a PRIVATE KEY PEM block`)
  }
  let key: KeyObject
  try {
    key = createPrivateKey(pem)
  } catch (err) {
    const hint = isReference
      ? ' — a key reference needs the keyd bridge: the process must be started with the OpenSSL config written for it (config section "keyd"), and keyd must be reachable'
      : ''
    throw new KeyLoadError(file, `cannot load the ${isReference ? 'key reference' : 'private key'} (${safeReason(err)})${hint}`, { cause: err })
  }
  return { key, custody: isReference ? 'keyd' : 'in-process' }
}

/** @throws CertKeyMismatchError (EDGE_ERR_CERT_KEY_MISMATCH) unless the certificate is that key's. */
export function checkPair (certFile: string, keyFile: string, x509: X509Certificate, key: KeyObject): void {
  let matches: boolean
  try {
    matches = x509.checkPrivateKey(key)
  } catch {
    matches = false
  }
  if (!matches) throw new CertKeyMismatchError(certFile, keyFile)
}

/** The options of a TLS context (and of a tls.Server) for these certificate chains and keys. */
export function contextOptions (certs: Array<string | Buffer>, keys: Array<string | Buffer>, tls: ContextTls): SecureContextOptions {
  return {
    cert: certs,
    key: keys,
    minVersion: tls.minVersion,
    maxVersion: tls.maxVersion,
    ciphers: tls.ciphers,
    ecdhCurve: tls.groups,
    honorCipherOrder: true,
    sessionTimeout: tls.sessionTimeoutSeconds
  }
}

/**
 * Builds (and drops) a context from `options`, for the checks OpenSSL makes only there (key size and
 * signature algorithms against its security level).
 * @throws SecureContextError (EDGE_ERR_SECURE_CONTEXT)
 */
export function tryContext (name: string, options: SecureContextOptions): SecureContext {
  try {
    return createSecureContext(options)
  } catch (err) {
    throw new SecureContextError(name, `cannot build the TLS context (${safeReason(err)})`, { cause: err })
  }
}

/** Logs, once, that `pairs` certificate pairs hold a plain private key in this process. */
export function warnCustodyBypassed (log: Logger, pairs: number, example: string): void {
  if (pairs === 0) return
  log.warn({ custody: 'in-process', pairs, keyFile: example },
    `KEY CUSTODY BYPASSED: ${pairs} certificate pair(s) load a plain private key into the proxy process instead of a keyd key reference; use this only for benchmarks and tests`)
}

/**
 * Loads every cert/key pair of `entry` into one secure context.
 * @throws CertLoadError (EDGE_ERR_CERT_LOAD) for an unreadable, unparsable or expired certificate;
 *   KeyLoadError (EDGE_ERR_KEY_LOAD) for an unreadable or unloadable key;
 *   CertKeyMismatchError (EDGE_ERR_CERT_KEY_MISMATCH) when a certificate does not match its key;
 *   SecureContextError (EDGE_ERR_SECURE_CONTEXT) when Node refuses the resulting context.
 */
export function loadCertificate (entry: CertificateConfig, tls: ContextTls, log: Logger, now: Date = new Date()): LoadedCertificate {
  const certs: string[] = []
  const keys: string[] = []
  const pairs: LoadedPair[] = []
  let bypassed = 0
  for (const { cert: certFile, key: keyFile } of entry.files) {
    const certPem = readText(certFile, (reason, cause) => new CertLoadError(certFile, reason, { cause }))
    const cert = parseCertificate(certFile, certPem, now.getTime(), log)
    const keyPem = readText(keyFile, (reason, cause) => new KeyLoadError(keyFile, reason, { cause }))
    const key = parseKey(keyFile, keyPem)
    checkPair(certFile, keyFile, cert.x509, key.key)
    if (key.custody === 'in-process') bypassed++
    certs.push(certPem)
    keys.push(keyPem)
    pairs.push({
      certFile,
      keyFile,
      custody: key.custody,
      subject: cert.x509.subject.replace(/\n/g, ', '),
      notAfter: new Date(cert.notAfter),
      fingerprint256: cert.x509.fingerprint256
    })
  }
  warnCustodyBypassed(log, bypassed, entry.files[0]?.key ?? '')
  const options = contextOptions(certs, keys, tls)
  return { name: entry.name, context: tryContext(entry.name, options), options, pairs }
}
