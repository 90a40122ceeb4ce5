// A strict reader of the X.509 certificate grammar (RFC 5280 §4.1) over DER, in JavaScript: what a
// load needs from each of thousands of certificates (validity, public key, signature algorithm)
// without an OpenSSL object per certificate. Each X509Certificate holds native memory until the
// garbage collector finds its small JS wrapper: 100,000 of them in a row left ~130 MB of allocator
// high-water behind, and took 4× longer. This reader checks every tag and length of the fields the
// grammar names, walks every nested TLV, and allocates only two views per certificate. OpenSSL
// still parses each certificate in full when its TLS context is built.

/** What a load reads from a certificate. */
export interface CertificateFields {
  /** Validity, epoch ms. */
  notBefore: number
  notAfter: number
  /** The DER SubjectPublicKeyInfo (a view of the input). */
  spki: Buffer
  /** The DER AlgorithmIdentifier of the signature (a view of the input). */
  signature: Buffer
  /** The DER AlgorithmIdentifier of the public key (a view of the input: for EC it names the curve). */
  keyAlgorithm: Buffer
  /** Bytes of the public key's BIT STRING (with the key algorithm: its type and size). */
  keyBytes: number
}

const SEQUENCE = 0x30
const SET = 0x31
const INTEGER = 0x02
const BIT_STRING = 0x03
const OCTET_STRING = 0x04
const OID = 0x06
const BOOLEAN = 0x01
const UTC_TIME = 0x17
const GENERALIZED_TIME = 0x18

class DerError extends Error {}

function fail (what: string): never {
  throw new DerError(what)
}

// Bytes are read with readUInt8 (bounds checked: a read past the end throws, and the caller's
// catch hands the certificate to OpenSSL), not by index.
// The TLV last read by `tlv` (one reader at a time: no object per TLV).
let tag = 0
let start = 0
let end = 0
/** `tag`, read through a call so that the compiler does not keep a narrowing across `tlv` calls. */
const tagNow = (): number => tag

/** Reads the TLV at `at` within [.., limit) into tag/start/end; returns where the next one starts. */
function tlv (der: Buffer, at: number, limit: number): number {
  if (at + 2 > limit) fail('truncated')
  tag = der.readUInt8(at)
  if ((tag & 0x1f) === 0x1f) fail('multi-byte tag')
  let len = der.readUInt8(at + 1)
  start = at + 2
  if ((len & 0x80) !== 0) {
    const n = len & 0x7f
    if (n === 0 || n > 4 || start + n > limit) fail('bad length')
    len = 0
    for (let i = 0; i < n; i++) len = len * 256 + der.readUInt8(start + i)
    if (len < 0x80 || der.readUInt8(start) === 0) fail('length not in DER form')
    start += n
  }
  end = start + len
  if (end > limit) fail('truncated')
  return end
}

/** Reads the TLV at `at`, which must have tag `want`; returns where the next one starts. */
function expect (der: Buffer, at: number, limit: number, want: number, what: string): number {
  const next = tlv(der, at, limit)
  if (tag !== want) fail(`${what}: unexpected tag 0x${tag.toString(16)}`)
  return next
}

/**
 * Checks every TLV nested in [from, to), constructed ones recursively, with the DER rules of the
 * universal types that OpenSSL enforces wherever they appear: only SEQUENCE and SET constructed,
 * BOOLEAN one byte, NULL empty, INTEGER not empty, OBJECT IDENTIFIER and BIT STRING well formed.
 */
function walk (der: Buffer, from: number, to: number, depth: number): void {
  if (depth > 32) fail('nested too deep')
  for (let at = from; at < to;) {
    const next = tlv(der, at, to)
    if ((tag & 0xc0) === 0) universal(der)
    if ((tag & 0x20) !== 0) walk(der, start, end, depth + 1)
    at = next
  }
}

function universal (der: Buffer): void {
  const constructed = (tag & 0x20) !== 0
  const type = tag & 0x1f
  if (constructed !== (type === 0x10 || type === 0x11)) fail(`tag 0x${tag.toString(16)}: not in DER form`)
  const len = end - start
  if ((type === 0x01 && len !== 1) || (type === 0x05 && len !== 0) || (type === 0x02 && len === 0)) fail(`tag 0x${tag.toString(16)}: bad length`)
  // An INTEGER in its shortest form: no leading 0x00 before a byte < 0x80, nor 0xff before one ≥ 0x80.
  if (type === 0x02 && len > 1) {
    const a = der.readUInt8(start)
    const b = der.readUInt8(start + 1)
    if ((a === 0 && b < 0x80) || (a === 0xff && b >= 0x80)) fail('INTEGER not in DER form')
  }
  if (type === 0x06) oid(der, 'object identifier')
  if (type === 0x03) bitString(der, 'bit string')
  if ((type === 0x1c && len % 4 !== 0) || (type === 0x1e && len % 2 !== 0)) fail(`tag 0x${tag.toString(16)}: bad length`)
}

/** An OBJECT IDENTIFIER at [start, end): not empty, each sub-identifier minimal and ended. */
function oid (der: Buffer, what: string): void {
  if (end === start || (der.readUInt8(end - 1) & 0x80) !== 0) fail(`${what}: bad object identifier`)
  for (let i = start; i < end; i++) {
    if (der.readUInt8(i) === 0x80 && (i === start || (der.readUInt8(i - 1) & 0x80) === 0)) fail(`${what}: bad object identifier`)
  }
}

/** PrintableString's characters: A-Z a-z 0-9 space ' ( ) + , - . / : = ? */
function printable (c: number): boolean {
  return (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x3a) || c === 0x20 || c === 0x27 ||
    c === 0x28 || c === 0x29 || c === 0x2b || c === 0x2c || c === 0x2d || c === 0x2e || c === 0x2f || c === 0x3d || c === 0x3f
}

/** Whether [from, to) is well-formed UTF-8 (shortest forms, no surrogates, at most U+10FFFF). */
function utf8 (der: Buffer, from: number, to: number): boolean {
  for (let i = from; i < to;) {
    const c = der.readUInt8(i)
    if (c < 0x80) { i++; continue }
    const n = c >= 0xf0 && c <= 0xf4 ? 3 : c >= 0xe0 ? (c <= 0xef ? 2 : 0) : c >= 0xc2 ? 1 : 0
    if (n === 0 || i + n >= to) return false
    let cp = c & (0x3f >> n)
    for (let k = 1; k <= n; k++) {
      const cc = der.readUInt8(i + k)
      if ((cc & 0xc0) !== 0x80) return false
      cp = cp * 64 + (cc & 0x3f)
    }
    if ((n === 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (n === 3 && (cp < 0x10000 || cp > 0x10ffff))) return false
    i += n + 1
  }
  return true
}

/**
 * The string types of a name's attribute value that OpenSSL can decode (it converts every one to
 * UTF-8 when it reads a name): UTF8, Numeric, Printable, T61, IA5, Visible, Universal, BMP.
 */
const STRING_TAGS = new Set([0x0c, 0x12, 0x13, 0x14, 0x16, 0x1a, 0x1c, 0x1e])

/** A directory string at [start, end) with tag `tag`: a string type, its characters valid for it. */
function directoryString (der: Buffer, what: string): void {
  if (!STRING_TAGS.has(tag)) fail(`${what}: not a string`)
  if (tag === 0x0c && !utf8(der, start, end)) fail(`${what}: bad UTF8String`)
  if (tag === 0x13) for (let i = start; i < end; i++) if (!printable(der.readUInt8(i))) fail(`${what}: bad PrintableString`)
  if (tag === 0x16) for (let i = start; i < end; i++) if (der.readUInt8(i) > 0x7f) fail(`${what}: bad IA5String`)
  if (tag === 0x1c) for (let i = start; i < end; i += 4) if (der.readUInt32BE(i) > 0x10ffff) fail(`${what}: bad UniversalString`)
}

/** Name ::= SEQUENCE OF SET OF SEQUENCE { OID, DirectoryString }; [from, to) is the Name's content. */
function name (der: Buffer, from: number, to: number, what: string): void {
  for (let at = from; at < to;) {
    const nextRdn = expect(der, at, to, SET, what)
    const rdnEnd = end
    for (let a = start; a < rdnEnd;) {
      const nextAtv = expect(der, a, rdnEnd, SEQUENCE, what)
      const atvEnd = end
      const afterType = expect(der, start, atvEnd, OID, what)
      oid(der, what)
      if (tlv(der, afterType, atvEnd) !== atvEnd) fail(`${what}: trailing bytes`)
      directoryString(der, what)
      a = nextAtv
    }
    at = nextRdn
  }
}

/** AlgorithmIdentifier ::= SEQUENCE { OID, ANY OPTIONAL }; [from, to) is its content. */
function algorithm (der: Buffer, from: number, to: number, what: string): void {
  const afterOid = expect(der, from, to, OID, what)
  oid(der, what)
  if (afterOid === to) return
  if (tlv(der, afterOid, to) !== to) fail(`${what}: trailing bytes`)
  if (tag === OID) oid(der, what) // a named curve
}

/** A BIT STRING at [start, end): its unused-bits count byte first, 0 to 7. */
function bitString (der: Buffer, what: string): void {
  if (end === start || der.readUInt8(start) > 7 || (end - start === 1 && der.readUInt8(start) !== 0)) fail(`${what}: bad BIT STRING`)
}

function digitsAt (der: Buffer, at: number, n: number): number {
  let v = 0
  for (let i = 0; i < n; i++) {
    const d = der.readUInt8(at + i) - 0x30
    if (d < 0 || d > 9) fail('bad validity time')
    v = v * 10 + d
  }
  return v
}

/** The Time at [start, end) with tag `t`: UTCTime YYMMDDHHMM[SS]Z or GeneralizedTime YYYYMMDDHHMMSS[.f]Z, epoch ms. */
function time (der: Buffer, t: number, from: number, to: number): number {
  let at = from
  let year: number
  if (t === UTC_TIME) {
    year = digitsAt(der, at, 2)
    year += year < 50 ? 2000 : 1900
    at += 2
  } else if (t === GENERALIZED_TIME) {
    year = digitsAt(der, at, 4)
    at += 4
  } else {
    return fail('bad validity time')
  }
  if (to - at < 9 || der.readUInt8(to - 1) !== 0x5a) fail('bad validity time') // 'Z'
  const month = digitsAt(der, at, 2)
  const day = digitsAt(der, at + 2, 2)
  const hour = digitsAt(der, at + 4, 2)
  const minute = digitsAt(der, at + 6, 2)
  at += 8
  let second = 0
  if (to - 1 - at >= 2) { second = digitsAt(der, at, 2); at += 2 }
  if (t === GENERALIZED_TIME && at < to - 1) {
    if (der.readUInt8(at) !== 0x2e) fail('bad validity time') // '.'
    digitsAt(der, at + 1, to - 1 - at - 1)
    at = to - 1
  }
  if (at !== to - 1 || month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60) fail('bad validity time')
  return Date.UTC(year, month - 1, day, hour, minute, second)
}

/**
 * Reads a DER certificate.
 * @throws Error with the reason (no certificate bytes in it) when it is not one.
 */
export function readCertificateDer (der: Buffer): CertificateFields {
  if (expect(der, 0, der.length, SEQUENCE, 'certificate') !== der.length) fail('trailing bytes after the certificate')
  const certStart = start
  const certEnd = end
  walk(der, certStart, certEnd, 0)
  const afterTbs = expect(der, certStart, certEnd, SEQUENCE, 'tbsCertificate')
  const tbsStart = start
  const tbsEnd = end
  const afterSigAlg = expect(der, afterTbs, certEnd, SEQUENCE, 'signatureAlgorithm')
  algorithm(der, start, end, 'signatureAlgorithm')
  if (expect(der, afterSigAlg, certEnd, BIT_STRING, 'signatureValue') !== certEnd) fail('trailing bytes in the certificate')
  bitString(der, 'signatureValue')

  let at = tbsStart
  let next = tlv(der, at, tbsEnd)
  if (tag === 0xa0) {
    const versionEnd = end
    if (expect(der, start, versionEnd, INTEGER, 'version') !== versionEnd || end === start) fail('bad version')
    at = next
  }
  at = expect(der, at, tbsEnd, INTEGER, 'serialNumber')
  if (end === start) fail('empty serialNumber')
  at = expect(der, at, tbsEnd, SEQUENCE, 'signature')
  algorithm(der, start, end, 'signature')
  at = expect(der, at, tbsEnd, SEQUENCE, 'issuer')
  name(der, start, end, 'issuer')
  at = expect(der, at, tbsEnd, SEQUENCE, 'validity')
  const validityEnd = end
  const afterNotBefore = tlv(der, start, validityEnd)
  const notBefore = time(der, tag, start, end)
  if (tlv(der, afterNotBefore, validityEnd) !== validityEnd) fail('validity: trailing bytes')
  const notAfter = time(der, tag, start, end)
  at = expect(der, at, tbsEnd, SEQUENCE, 'subject')
  name(der, start, end, 'subject')
  const spkiAt = at
  at = expect(der, at, tbsEnd, SEQUENCE, 'subjectPublicKeyInfo')
  const spkiEnd = end
  const keyAlgAt = start
  const afterKeyAlg = expect(der, start, spkiEnd, SEQUENCE, 'subjectPublicKeyInfo')
  algorithm(der, start, end, 'subjectPublicKeyInfo algorithm')
  if (expect(der, afterKeyAlg, spkiEnd, BIT_STRING, 'subjectPublicKey') !== spkiEnd) fail('bad subjectPublicKey')
  bitString(der, 'subjectPublicKey')
  const keyBytes = end - start
  while (at < tbsEnd) {
    next = tlv(der, at, tbsEnd)
    if (tag === 0xa3) {
      const extsEnd = end
      if (expect(der, start, extsEnd, SEQUENCE, 'extensions') !== extsEnd) fail('extensions: trailing bytes')
      const listEnd = end
      for (let e = start; e < listEnd;) {
        const nextExt = expect(der, e, listEnd, SEQUENCE, 'extension')
        const extEnd = end
        let v = expect(der, start, extEnd, OID, 'extension')
        oid(der, 'extension')
        v = tlv(der, v, extEnd)
        if (tagNow() === BOOLEAN) v = tlv(der, v, extEnd)
        if (tagNow() !== OCTET_STRING || v !== extEnd) fail('bad extension')
        e = nextExt
      }
    } else if (tag === 0x81 || tag === 0x82) {
      bitString(der, 'unique identifier')
    } else {
      fail(`tbsCertificate: unexpected tag 0x${tag.toString(16)}`)
    }
    at = next
  }
  // Whole TLVs: the SubjectPublicKeyInfo from its header on, the signature algorithm where the TBS ends.
  return { notBefore, notAfter, spki: der.subarray(spkiAt, spkiEnd), signature: der.subarray(afterTbs, afterSigAlg), keyAlgorithm: der.subarray(keyAlgAt, afterKeyAlg), keyBytes }
}

const BEGIN = Buffer.from('-----BEGIN CERTIFICATE-----')
const END = Buffer.from('-----END CERTIFICATE-----')

/** base64 character → its 6 bits; 64 for whitespace (skipped), 65 for '=', 255 for anything else. */
const BASE64 = new Uint8Array(256).fill(255)
for (let i = 0; i < 64; i++) BASE64['ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'.charCodeAt(i)] = i
for (const c of [0x20, 0x09, 0x0a, 0x0d]) BASE64[c] = 64
BASE64[0x3d] = 65

/** Where blocks are decoded: reused from call to call, so that a load decodes without allocating. */
let decoded = Buffer.allocUnsafe(16 << 10)

/** Decodes the base64 in [from, to) of `pem` into `out` at `at`; returns the end, or -1 when it is not base64. */
function decodeBase64 (pem: Buffer, from: number, to: number, out: Buffer, at: number): number {
  let bits = 0
  let n = 0
  let pad = 0
  for (let i = from; i < to; i++) {
    const v = BASE64[pem.readUInt8(i)] ?? 255
    if (v === 64) continue
    if (v === 65) { pad++; continue }
    if (v === 255 || pad > 0) return -1
    bits = (bits << 6) | v
    if (++n === 4) {
      out[at++] = bits >> 16
      out[at++] = (bits >> 8) & 0xff
      out[at++] = bits & 0xff
      bits = 0
      n = 0
    }
  }
  if (n === 1 || pad > 2 || (n === 0 && pad > 0) || (n > 0 && pad !== 0 && n + pad !== 4)) return -1
  if (n === 2) out[at++] = bits >> 4
  if (n === 3) { out[at++] = bits >> 10; out[at++] = (bits >> 2) & 0xff }
  return at
}

/**
 * The DER of every CERTIFICATE block of a PEM file, in order (text outside the blocks is ignored,
 * as OpenSSL ignores it). The buffers are views of one decoding area, valid until the next call.
 * @throws Error when a block is not closed or its body is not base64.
 */
export function pemCertificateBlocks (pem: Buffer): Buffer[] {
  if (decoded.length < pem.length) decoded = Buffer.allocUnsafe(pem.length)
  const out: Buffer[] = []
  let used = 0
  for (let at = pem.indexOf(BEGIN); at >= 0; at = pem.indexOf(BEGIN, at)) {
    const bodyStart = at + BEGIN.length
    const bodyEnd = pem.indexOf(END, bodyStart)
    if (bodyEnd < 0) fail('a CERTIFICATE block is not closed')
    const blockEnd = decodeBase64(pem, bodyStart, bodyEnd, decoded, used)
    if (blockEnd < 0) fail('a CERTIFICATE block is not base64')
    out.push(decoded.subarray(used, blockEnd))
    used = blockEnd
    at = bodyEnd + END.length
  }
  return out
}
