// Builds one TLS secure context from a certificate entry: every cert/key pair (e.g. ECDSA + RSA)
// in one context, each certificate checked for validity and against its key first.

import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createSecureContext, type SecureContext, type SecureContextOptions } from 'node:tls'
import type { Logger } from 'pino'
import type { CertificateConfig, TlsConfig } from '../config/types.js'
import { CertKeyMismatchError, CertLoadError, KeyLoadError, SecureContextError } from '../errors.js'

export const KEY_REFERENCE_LABEL = 'KEYEDGE KEY REFERENCE'
const KEY_REFERENCE_BEGIN = `-----BEGIN ${KEY_REFERENCE_LABEL}-----`
const PRIVATE_KEY_BEGIN = /-----BEGIN (RSA |EC |ENCRYPTED )?PRIVATE KEY-----/

/** Where the signing key of a pair lives. */
export type KeyCustody = 'keyd' | 'in-process'

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
function safeReason (err: unknown): string {
  const message = err instanceof Error ? err.message : String(err)
  return message.includes('-----') ? 'unparsable' : message
}

function readText (file: string, onError: (reason: string, cause: unknown) => Error): string {
  try {
    return readFileSync(file, 'utf8')
  } catch (err) {
    throw onError(`cannot read (${(err as NodeJS.ErrnoException).code ?? 'error'})`, err)
  }
}

function loadCert (file: string, now: Date, log: Logger): { pem: string, x509: X509Certificate } {
  const pem = readText(file, (reason, cause) => new CertLoadError(file, reason, { cause }))
  if (!pem.includes('-----BEGIN CERTIFICATE-----')) throw new CertLoadError(file, 'holds no PEM CERTIFICATE block')
  let x509: X509Certificate
  try {
    x509 = new X509Certificate(pem)
  } catch (err) {
    throw new CertLoadError(file, `cannot parse the certificate (${safeReason(err)})`, { cause: err })
  }
  const notAfter = new Date(x509.validTo)
  const notBefore = new Date(x509.validFrom)
  if (notAfter.getTime() <= now.getTime()) {
    throw new CertLoadError(file, `expired on ${notAfter.toISOString()} (subject ${x509.subject.replace(/\n/g, ', ')})`)
  }
  if (notBefore.getTime() > now.getTime()) {
    log.warn({ file, notBefore: notBefore.toISOString() }, 'certificate is not valid yet')
  }
  return { pem, x509 }
}

function loadKey (file: string, log: Logger): { pem: string, key: KeyObject, custody: KeyCustody } {
  const pem = readText(file, (reason, cause) => new KeyLoadError(file, reason, { cause }))
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
  if (!isReference) {
    log.warn({ keyFile: file, custody: 'in-process' },
      'KEY CUSTODY BYPASSED: a plain private key is loaded into the proxy process instead of a keyd key reference; use this only for benchmarks and tests')
  }
  return { pem, key, custody: isReference ? 'keyd' : 'in-process' }
}

/**
 * Loads every cert/key pair of `entry` into one secure context.
 * @throws CertLoadError (EDGE_ERR_CERT_LOAD) for an unreadable, unparsable or expired certificate;
 *   KeyLoadError (EDGE_ERR_KEY_LOAD) for an unreadable or unloadable key;
 *   CertKeyMismatchError (EDGE_ERR_CERT_KEY_MISMATCH) when a certificate does not match its key;
 *   SecureContextError (EDGE_ERR_SECURE_CONTEXT) when Node refuses the resulting context.
 */
export function loadCertificate (
  entry: CertificateConfig,
  tls: Pick<TlsConfig, 'minVersion' | 'maxVersion' | 'ciphers' | 'sessionTimeoutSeconds'>,
  log: Logger,
  now: Date = new Date()
): LoadedCertificate {
  const certs: string[] = []
  const keys: string[] = []
  const pairs: LoadedPair[] = []
  for (const { cert: certFile, key: keyFile } of entry.files) {
    const cert = loadCert(certFile, now, log)
    const key = loadKey(keyFile, log)
    let matches: boolean
    try {
      matches = cert.x509.checkPrivateKey(key.key)
    } catch {
      matches = false
    }
    if (!matches) throw new CertKeyMismatchError(certFile, keyFile)
    certs.push(cert.pem)
    keys.push(key.pem)
    pairs.push({
      certFile,
      keyFile,
      custody: key.custody,
      subject: cert.x509.subject.replace(/\n/g, ', '),
      notAfter: new Date(cert.x509.validTo),
      fingerprint256: cert.x509.fingerprint256
    })
  }
  const options: SecureContextOptions = {
    cert: certs,
    key: keys,
    minVersion: tls.minVersion,
    maxVersion: tls.maxVersion,
    ciphers: tls.ciphers,
    honorCipherOrder: true,
    sessionTimeout: tls.sessionTimeoutSeconds
  }
  let context: SecureContext
  try {
    context = createSecureContext(options)
  } catch (err) {
    throw new SecureContextError(entry.name, `cannot build the TLS context (${safeReason(err)})`, { cause: err })
  }
  return { name: entry.name, context, options, pairs }
}
