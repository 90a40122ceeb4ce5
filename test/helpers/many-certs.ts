// Many leaf certificates, fast, for tests and `bench certs`: a throwaway EC P-256 CA and one shared
// leaf key per type (many certificates may share a key), each certificate's DER assembled here and
// signed with node:crypto (about 50 µs each) instead of one openssl process per certificate (~5 ms).
// Keys are made at run time in a private 0700 directory and never committed.
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

/** DER tag-length-value. */
function tlv (tag: number, content: Buffer): Buffer {
  const n = content.length
  const len = n < 0x80 ? Buffer.from([n]) : n < 0x100 ? Buffer.from([0x81, n]) : n < 0x10000 ? Buffer.from([0x82, n >> 8, n & 0xff]) : Buffer.from([0x83, n >> 16, (n >> 8) & 0xff, n & 0xff])
  return Buffer.concat([Buffer.from([tag]), len, content])
}
const seq = (...parts: Buffer[]): Buffer => tlv(0x30, Buffer.concat(parts))
const set = (...parts: Buffer[]): Buffer => tlv(0x31, Buffer.concat(parts))
function oid (dotted: string): Buffer {
  const [a = 0, b = 0, ...rest] = dotted.split('.').map(Number)
  const bytes = [40 * a + b]
  for (const v of rest) {
    const chunk = [v & 0x7f]
    for (let x = v >>> 7; x > 0; x >>>= 7) chunk.unshift((x & 0x7f) | 0x80)
    bytes.push(...chunk)
  }
  return tlv(0x06, Buffer.from(bytes))
}
const utf8 = (s: string): Buffer => tlv(0x0c, Buffer.from(s, 'utf8'))
const name = (cn: string): Buffer => seq(set(seq(oid('2.5.4.3'), utf8(cn))))
function utcTime (d: Date): Buffer {
  const iso = d.toISOString() // 2026-11-30T12:00:00.000Z → 261130120000Z
  return tlv(0x17, Buffer.from(`${iso.slice(2, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}${iso.slice(11, 13)}${iso.slice(14, 16)}${iso.slice(17, 19)}Z`))
}
const ECDSA_SHA256 = seq(oid('1.2.840.10045.4.3.2'))

function pem (label: string, der: Buffer): string {
  return `-----BEGIN ${label}-----\n${der.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '')}\n-----END ${label}-----\n`
}

/** A DER certificate for `host` over `spki`, issued by `issuer` (CN) and signed with `caKey`. */
export function certificateDer (o: { host: string, spki: Buffer, issuer: string, caKey: KeyObject, notBefore: Date, notAfter: Date, ca?: boolean }): Buffer {
  const serial = randomBytes(16)
  serial[0] = (serial[0] ?? 0) & 0x7f | 0x01
  const extensions = o.ca === true
    ? [
        seq(oid('2.5.29.19'), tlv(0x01, Buffer.from([0xff])), tlv(0x04, seq(tlv(0x01, Buffer.from([0xff]))))),
        seq(oid('2.5.29.15'), tlv(0x01, Buffer.from([0xff])), tlv(0x04, tlv(0x03, Buffer.from([0x01, 0x06]))))
      ]
    : [
        seq(oid('2.5.29.17'), tlv(0x04, seq(tlv(0x82, Buffer.from(o.host, 'ascii'))))),
        seq(oid('2.5.29.19'), tlv(0x01, Buffer.from([0xff])), tlv(0x04, seq())),
        seq(oid('2.5.29.37'), tlv(0x04, seq(oid('1.3.6.1.5.5.7.3.1'))))
      ]
  const tbs = seq(
    tlv(0xa0, tlv(0x02, Buffer.from([2]))),
    tlv(0x02, serial),
    ECDSA_SHA256,
    name(o.issuer),
    seq(utcTime(o.notBefore), utcTime(o.notAfter)),
    name(o.host),
    o.spki,
    tlv(0xa3, seq(...extensions))
  )
  const signature = sign('sha256', tbs, { key: o.caKey, dsaEncoding: 'der' })
  return seq(tbs, ECDSA_SHA256, tlv(0x03, Buffer.concat([Buffer.from([0]), signature])))
}

export type LeafKind = 'ec' | 'rsa'

export interface ManyCerts {
  dir: string
  caFile: string
  /** The shared private key file of each kind (mode 0600). */
  keys: Record<LeafKind, string>
  /** Certificate file of leaf `i` of `kind`, for host `hostOf(i)`. */
  certFile: (kind: LeafKind, i: number) => string
  hostOf: (i: number) => string
  /** How many leaves of each kind exist. */
  count: number
}

export const hostOf = (i: number): string => `h${i}.certs.test`

/**
 * Makes (or finds, when a previous call in the same directory made at least `count`) `count`
 * certificates of each kind in `kinds` under `dir`: `ec/<i>.crt` and `rsa/<i>.crt`, valid 2 days.
 * `spki`: the EC certificates are for this public key (a key held elsewhere, e.g. in keyd: no `ec.key`
 * then). `onProgress` hears every 10,000 certificates.
 */
export function makeManyCerts (dir: string, count: number, kinds: readonly LeafKind[], onProgress: (done: number) => void = () => {}, spki?: Buffer): ManyCerts {
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  const certFile = (kind: LeafKind, i: number): string => join(dir, kind, `${i}.crt`)
  const keys: Record<LeafKind, string> = { ec: join(dir, 'ec.key'), rsa: join(dir, 'rsa.key') }
  const caFile = join(dir, 'ca.crt')
  const marker = join(dir, 'made.json')
  const made = existsSync(marker) ? JSON.parse(readFileSync(marker, 'utf8')) as { count: number, kinds: LeafKind[] } : undefined
  if (made !== undefined && made.count >= count && kinds.every(k => made.kinds.includes(k))) {
    return { dir, caFile, keys, certFile, hostOf, count: made.count }
  }
  const ca = generateKeyPairSync('ec', { namedCurve: 'prime256v1' })
  const caKeyFile = join(dir, 'ca.key')
  writeFileSync(caKeyFile, ca.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 })
  const now = Date.now()
  const notBefore = new Date(now - 3600_000)
  const notAfter = new Date(now + 2 * 86_400_000)
  const issuer = 'keyedge bench many-certs CA'
  const caSpki = ca.publicKey.export({ type: 'spki', format: 'der' })
  writeFileSync(caFile, pem('CERTIFICATE', certificateDer({ host: issuer, spki: caSpki, issuer, caKey: ca.privateKey, notBefore, notAfter, ca: true })))
  let done = 0
  for (const kind of kinds) {
    let leafSpki: Buffer
    if (kind === 'ec' && spki !== undefined) {
      leafSpki = spki
      writeFileSync(join(dir, 'ec.spki'), spki)
    } else {
      const pair = kind === 'ec' ? generateKeyPairSync('ec', { namedCurve: 'prime256v1' }) : generateKeyPairSync('rsa', { modulusLength: 2048 })
      writeFileSync(keys[kind], pair.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 })
      leafSpki = pair.publicKey.export({ type: 'spki', format: 'der' })
    }
    const caKey = createPrivateKey(readFileSync(caKeyFile))
    mkdirSync(join(dir, kind), { recursive: true, mode: 0o700 })
    for (let i = 0; i < count; i++) {
      writeFileSync(certFile(kind, i), pem('CERTIFICATE', certificateDer({ host: hostOf(i), spki: leafSpki, issuer, caKey, notBefore, notAfter })))
      if (++done % 10_000 === 0) onProgress(done)
    }
  }
  writeFileSync(marker, JSON.stringify({ count, kinds }))
  return { dir, caFile, keys, certFile, hostOf, count }
}

/**
 * A new certificate PEM for host `hostOf(i)` from the same CA: over the shared `kind` key (a
 * renewal), or over a fresh key (`otherKey`: a certificate that does not match the entry's key).
 */
export function reissue (m: ManyCerts, kind: LeafKind, i: number, opts: { otherKey?: boolean } = {}): string {
  const caKey = createPrivateKey(readFileSync(join(m.dir, 'ca.key')))
  const held = join(m.dir, `${kind}.spki`)
  const spki = opts.otherKey === true
    ? generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).publicKey.export({ type: 'spki', format: 'der' })
    : existsSync(held) ? readFileSync(held) : createPublicKey(createPrivateKey(readFileSync(m.keys[kind]))).export({ type: 'spki', format: 'der' })
  const now = Date.now()
  return pem('CERTIFICATE', certificateDer({ host: hostOf(i), spki, issuer: 'keyedge bench many-certs CA', caKey, notBefore: new Date(now - 3600_000), notAfter: new Date(now + 2 * 86_400_000) }))
}
