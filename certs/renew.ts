// Certificate renewal with the key kept in keyd: a new key version (KEY_ROTATE), then either a new
// certificate from the dev CA or a PKCS#10 request signed in keyd for an external CA. Served files
// are replaced by atomic renames, so a running proxy that watches them swaps them in live.

import { readFileSync } from 'node:fs'
import { webcrypto } from 'node:crypto'
import { isIP } from 'node:net'
import { join } from 'node:path'
import 'reflect-metadata'
import * as x509 from '@peculiar/x509'
import type { KeydClient } from '../keyd/client/client.js'
import { writeFileAtomic } from '../lib/atomic-file.js'
import { errorCode } from '../lib/errors.js'
import { decodeKeyReference, encodeKeyReference, type KeyReference } from '../keyd/protocol/codec.js'
import { CertRenewError } from '../src/errors.js'
import { ensureDevCa, signLeafCertificate } from './dev-ca.js'
import { keydCryptoKey, keydWebCrypto } from './keyd-crypto.js'

export interface RenewOptions {
  /** The leaf's base name: `<certsDir>/<name>.crt` and `<certsDir>/<name>.keyref`. */
  name: string
  certsDir: string
  /** Names for the new certificate (default: those of the current one). */
  serverNames?: string[]
  /** Validity of a dev-CA certificate, in days (default 365). */
  days?: number
  /** Write a CSR here (and its key reference at `<csrFile>.keyref`) instead of replacing the served files. */
  csrFile?: string
}

export interface Renewed {
  keyName: string
  version: number
  serverNames: string[]
  certFile: string
  keyRefFile: string
  /** Set when a new certificate was issued and swapped in (serial in upper-case hex, as openssl prints it). */
  serialNumber?: string
  notAfter?: Date
  /** Set with `csrFile`: the request and the key reference to install with the CA's answer. */
  csrFile?: string
  csrKeyRefFile?: string
}

function readText (file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8')
  } catch (err) {
    throw new CertRenewError(`cannot read the ${what} ${file} (${errorCode(err) ?? 'error'})`, { cause: err })
  }
}

function currentNames (certFile: string): string[] {
  let cert: x509.X509Certificate
  try {
    cert = new x509.X509Certificate(readText(certFile, 'certificate'))
  } catch (err) {
    if (err instanceof CertRenewError) throw err
    throw new CertRenewError(`cannot parse the certificate ${certFile}; give the names with --san`, { cause: err })
  }
  return cert.getExtension(x509.SubjectAlternativeNameExtension)?.names.items.map(n => n.value) ?? []
}

/** A PKCS#10 request for key `ref` (whose public key is `spki`), signed by that key inside keyd. */
export async function keydCertificateRequest (client: KeydClient, ref: KeyReference, spki: Buffer, serverNames: string[]): Promise<x509.Pkcs10CertificateRequest> {
  const ec = ref.type.startsWith('ec-')
  const importAlg = ec ? { name: 'ECDSA', namedCurve: ref.type === 'ec-p384' ? 'P-384' : 'P-256' } : { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }
  const publicKey = await webcrypto.subtle.importKey('spki', spki, importAlg, true, ['verify'])
  const crypto = keydWebCrypto(client)
  return await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${serverNames[0]}`,
    keys: { privateKey: keydCryptoKey(ref.name, ref.type, ref.version) as never, publicKey },
    signingAlgorithm: ec ? { name: 'ECDSA', hash: 'SHA-256' } : { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
    extensions: [
      new x509.SubjectAlternativeNameExtension(serverNames.map(n => ({ type: isIP(n) !== 0 ? 'ip' as const : 'dns' as const, value: n }))),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth])
    ]
  }, crypto)
}

/**
 * Renews leaf `name`: rotates its keyd key to a new version, then issues a dev-CA certificate and
 * replaces `<name>.keyref` and `<name>.crt` (in that order, each by an atomic rename), or writes a CSR.
 * @throws CertRenewError (EDGE_ERR_CERT_RENEW) for missing or unusable files; keyd errors as they come.
 */
export async function renewCertificate (client: KeydClient, opts: RenewOptions): Promise<Renewed> {
  const certFile = join(opts.certsDir, `${opts.name}.crt`)
  const keyRefFile = join(opts.certsDir, `${opts.name}.keyref`)
  const ref = decodeKeyReference(readText(keyRefFile, 'key reference'))
  if (ref === null) throw new CertRenewError(`${keyRefFile} holds no KEYEDGE KEY REFERENCE: only keys held in keyd can be renewed this way`)
  const serverNames = opts.serverNames ?? currentNames(certFile)
  if (serverNames.length === 0) throw new CertRenewError(`no server names: ${certFile} has no subjectAltName; give them with --san`)
  const rotated = await client.rotateKey(ref.name)
  const next: KeyReference = { name: ref.name, version: rotated.version, type: ref.type }
  const base: Renewed = { keyName: ref.name, version: rotated.version, serverNames, certFile, keyRefFile }
  if (opts.csrFile !== undefined) {
    const csr = await keydCertificateRequest(client, next, rotated.spki, serverNames)
    writeFileAtomic(opts.csrFile, csr.toString('pem') + '\n', 0o644)
    writeFileAtomic(`${opts.csrFile}.keyref`, encodeKeyReference(next), 0o644)
    return { ...base, csrFile: opts.csrFile, csrKeyRefFile: `${opts.csrFile}.keyref` }
  }
  const ca = await ensureDevCa(client, opts.certsDir)
  const cert = await signLeafCertificate(client, ca, { spki: rotated.spki, keyType: ref.type, serverNames, days: opts.days })
  writeFileAtomic(keyRefFile, encodeKeyReference(next), 0o644)
  writeFileAtomic(certFile, cert.toString('pem') + '\n', 0o644)
  return { ...base, serialNumber: cert.serialNumber.toUpperCase(), notAfter: cert.notAfter }
}
