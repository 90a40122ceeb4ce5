// Development certificates: a dev CA and leaf certificates whose keys are created in keyd and signed by keyd.
import { existsSync, readFileSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { isIP } from 'node:net'
import 'reflect-metadata'
import * as x509 from '@peculiar/x509'
import type { KeydClient } from '../keyd/client/client.js'
import { KeydRemoteError } from '../keyd/errors.js'
import { encodeKeyReference } from '../keyd/protocol/codec.js'
import { keydCryptoKey, keydWebCrypto } from './keyd-crypto.js'
import { writeFileAtomic } from '../lib/atomic-file.js'

const DAY_MS = 86_400_000

export interface IssuedLeaf { certFile: string, keyRefFile: string, keyName: string, keyType: string }

/** Creates the key in keyd unless it exists with the same type and usage; returns its current public key. */
export async function ensureKey (client: KeydClient, name: string, type: string, usage: string): Promise<{ version: number, spki: Buffer }> {
  try {
    const k = await client.createKey(name, type, usage)
    return { version: k.version, spki: k.spki }
  } catch (err) {
    if (!(err instanceof KeydRemoteError) || err.code !== 'KEYD_ERR_KEY_EXISTS') throw err
    const k = await client.getPublicKey(name)
    if (k.type !== type) throw new Error(`keyd key ${name} exists with type ${k.type}, not ${type}`, { cause: err })
    return { version: k.version, spki: k.spki }
  }
}

function sanEntries (names: string[]): Array<{ type: 'dns' | 'ip', value: string }> {
  return names.map(n => isIP(n) !== 0 ? { type: 'ip' as const, value: n } : { type: 'dns' as const, value: n })
}

/**
 * Makes sure a dev CA exists: key `caKeyName` (ec-p256, usage cert-sign) in keyd and `ca.crt` in `dir`.
 * Returns the CA certificate.
 */
export async function ensureDevCa (client: KeydClient, dir: string, caKeyName = 'dev-ca'): Promise<x509.X509Certificate> {
  mkdirSync(dir, { recursive: true })
  const caFile = join(dir, 'ca.crt')
  const { version, spki } = await ensureKey(client, caKeyName, 'ec-p256', 'cert-sign')
  if (existsSync(caFile)) {
    const cert = new x509.X509Certificate(readFileSync(caFile, 'utf8'))
    if (Buffer.from(cert.publicKey.rawData).equals(spki) && cert.notAfter.getTime() > Date.now() + 30 * DAY_MS) return cert
  }
  const crypto = keydWebCrypto(client)
  const now = Date.now()
  const name = `CN=keyedge development CA ${new Date(now).toISOString().slice(0, 10)}, O=keyedge (development only)`
  const cert = await x509.X509CertificateGenerator.create({
    subject: name,
    issuer: name,
    notBefore: new Date(now - DAY_MS),
    notAfter: new Date(now + 3650 * DAY_MS),
    publicKey: spki,
    signingKey: keydCryptoKey(caKeyName, 'ec-p256', version) as never,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(spki, false, crypto)
    ]
  }, crypto)
  writeFileAtomic(caFile, cert.toString('pem') + '\n', 0o644)
  return cert
}

/**
 * Issues (or re-uses, if still valid for these names and this key) a leaf certificate for
 * `serverNames`, with key `keyName` of `keyType` created in keyd (usage tls-server), signed by the dev CA.
 * Writes `<keyName>.crt` and `<keyName>.keyref` (a key reference: no secret) in `dir`.
 */
export async function issueLeaf (client: KeydClient, dir: string, ca: x509.X509Certificate, opts: { keyName: string, keyType: string, serverNames: string[], caKeyName?: string, days?: number }): Promise<IssuedLeaf> {
  const certFile = join(dir, `${opts.keyName}.crt`)
  const keyRefFile = join(dir, `${opts.keyName}.keyref`)
  const { version, spki } = await ensureKey(client, opts.keyName, opts.keyType, 'tls-server')
  if (existsSync(certFile) && existsSync(keyRefFile)) {
    const old = new x509.X509Certificate(readFileSync(certFile, 'utf8'))
    const san = old.getExtension(x509.SubjectAlternativeNameExtension)
    const oldNames = san?.names.items.map(n => n.value) ?? []
    if (Buffer.from(old.publicKey.rawData).equals(spki) && old.issuer === ca.subject &&
        old.notAfter.getTime() > Date.now() + 7 * DAY_MS && opts.serverNames.every(n => oldNames.includes(n))) {
      return { certFile, keyRefFile, keyName: opts.keyName, keyType: opts.keyType }
    }
  }
  const cert = await signLeafCertificate(client, ca, { spki, keyType: opts.keyType, serverNames: opts.serverNames, caKeyName: opts.caKeyName, days: opts.days })
  writeFileAtomic(certFile, cert.toString('pem') + '\n', 0o644)
  writeFileAtomic(keyRefFile, encodeKeyReference({ name: opts.keyName, version, type: opts.keyType }), 0o644)
  return { certFile, keyRefFile, keyName: opts.keyName, keyType: opts.keyType }
}

/** A leaf certificate (serverAuth) for public key `spki`, signed in keyd by the dev CA key; a fresh random serial each time. */
export async function signLeafCertificate (client: KeydClient, ca: x509.X509Certificate, opts: { spki: Buffer, keyType: string, serverNames: string[], caKeyName?: string, days?: number }): Promise<x509.X509Certificate> {
  const crypto = keydWebCrypto(client)
  const caKeyName = opts.caKeyName ?? 'dev-ca'
  const caKey = await client.getPublicKey(caKeyName)
  const now = Date.now()
  return await x509.X509CertificateGenerator.create({
    subject: `CN=${opts.serverNames[0]}`,
    issuer: ca.subject,
    notBefore: new Date(now - DAY_MS),
    notAfter: new Date(now + (opts.days ?? 365) * DAY_MS),
    publicKey: opts.spki,
    signingKey: keydCryptoKey(caKeyName, caKey.type, caKey.version) as never,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | (opts.keyType.startsWith('rsa') ? x509.KeyUsageFlags.keyEncipherment : 0), true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(sanEntries(opts.serverNames)),
      await x509.SubjectKeyIdentifierExtension.create(opts.spki, false, crypto),
      await x509.AuthorityKeyIdentifierExtension.create(caKey.spki, false, crypto)
    ]
  }, crypto)
}

/** Writes `text` only if the file is absent (used for sample configs). */
export function writeIfAbsent (file: string, text: string): boolean {
  if (existsSync(file)) return false
  writeFileSync(file, text, { mode: 0o644 })
  return true
}
