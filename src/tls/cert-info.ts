// What an operator may see of a loaded certificate entry (names, expiry, fingerprint, key reference
// name and version — never key material), and the per-certificate expiry gauge.

import { X509Certificate } from 'node:crypto'
import { Gauge, type Registry } from 'prom-client'
import { decodeKeyReference, type KeyReference } from '../../keyd/protocol/codec.js'
import type { CheckedEntry } from './cert-check.js'
import type { CertStore } from './cert-store.js'
import type { LoadedCertificate } from './secure-context.js'

const DAY_S = 86_400

export interface CertPairInfo {
  subject: string
  /** DNS names and IP addresses of the certificate's subjectAltName. */
  names: string[]
  serialNumber: string
  notBefore: string
  notAfter: string
  daysLeft: number
  /** SHA-256 fingerprint of the leaf, colon-separated hex. */
  fingerprint256: string
  keyType: string
  /** The keyd key this certificate signs with (null: a plain key in the proxy process). */
  keyReference: { name: string, version: number, type: string } | null
  certFile: string
  keyFile: string
}

export interface CertEntryInfo { name: string, pairs: CertPairInfo[] }

function sanNames (x509: X509Certificate): string[] {
  const san = x509.subjectAltName ?? ''
  return san.split(/,\s*/).filter(s => s !== '').map(s => s.replace(/^(DNS|IP Address):/, ''))
}

/** Describes a loaded certificate entry from the PEMs it was built from. */
export function describeCertificate (cert: LoadedCertificate, now = Date.now()): CertEntryInfo {
  const certs = [cert.options.cert].flat() as Array<string | Buffer>
  const keys = [cert.options.key].flat() as Array<string | Buffer>
  return describePairs(cert.name, cert.pairs.map((pair, i) => {
    const keyPem = keys[i]
    const ref = typeof keyPem === 'string' || Buffer.isBuffer(keyPem) ? decodeKeyReference(String(keyPem)) : null
    return { certFile: pair.certFile, keyFile: pair.keyFile, cert: certs[i] ?? '', keyReference: ref }
  }), now)
}

/** Describes a served entry of the certificate store from the bytes it checked (read back from its spool). */
export function describeEntry (store: CertStore, entry: CheckedEntry, now = Date.now()): CertEntryInfo {
  return describePairs(entry.name, store.pems(entry).map(({ pair, cert, keyReference }) => ({
    certFile: pair.certFile,
    keyFile: pair.keyFile,
    cert,
    keyReference: keyReference === null ? null : decodeKeyReference(keyReference.toString('utf8'))
  })), now)
}

function describePairs (name: string, pairs: Array<{ certFile: string, keyFile: string, cert: string | Buffer, keyReference: KeyReference | null }>, now: number): CertEntryInfo {
  return {
    name,
    pairs: pairs.map((p): CertPairInfo => {
      const x509 = new X509Certificate(p.cert)
      const notAfter = new Date(x509.validTo)
      return {
        subject: x509.subject.replace(/\n/g, ', '),
        names: sanNames(x509),
        serialNumber: x509.serialNumber,
        notBefore: new Date(x509.validFrom).toISOString(),
        notAfter: notAfter.toISOString(),
        daysLeft: Math.floor((notAfter.getTime() - now) / 1000 / DAY_S),
        fingerprint256: x509.fingerprint256,
        keyType: x509.publicKey.asymmetricKeyType ?? 'unknown',
        keyReference: p.keyReference === null ? null : { name: p.keyReference.name, version: p.keyReference.version, type: p.keyReference.type },
        certFile: p.certFile,
        keyFile: p.keyFile
      }
    })
  }
}

/**
 * Registers `edge_certificate_expiry_seconds{name}`: seconds until the earliest notAfter of each
 * served certificate entry, computed at scrape time (negative once expired). Workers agree, so
 * the cluster aggregate keeps the smallest value.
 */
export function registerExpiryGauge (registry: Registry, certs: CertStore): void {
  if (registry.getSingleMetric('edge_certificate_expiry_seconds') !== undefined) return
  const gauge: Gauge<string> = new Gauge({
    name: 'edge_certificate_expiry_seconds',
    help: 'Seconds until the earliest certificate of each served certificate entry expires',
    labelNames: ['name'],
    aggregator: 'min',
    registers: [registry],
    collect () {
      gauge.reset()
      const now = Date.now()
      for (const entry of certs.entries()) gauge.set({ name: entry.name }, Math.round((entry.notAfter - now) / 1000))
    }
  })
}
