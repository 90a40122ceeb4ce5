// Verifying an OCSP response before it is stapled (nginx `ssl_stapling_verify`, always on): a
// successful basic response, signed by the issuer or by a responder certificate the issuer signed
// for OCSP signing (id-kp-OCSPSigning), naming our certificate's CertID, current (thisUpdate not in
// the future beyond a small skew, nextUpdate not past), and `good`. A client that gets a staple
// checks it the same way; stapling one that fails would cost it a handshake, or worse.

import { createHash, verify as verifySignature, X509Certificate, type KeyObject } from 'node:crypto'
import { AsnConvert } from '@peculiar/asn1-schema'
import { BasicOCSPResponse, id_kp_OCSPSigning, id_pkix_ocsp_basic, OCSPResponse, OCSPResponseStatus, type CertID } from '@peculiar/asn1-ocsp'
import { nameAndKey, type OcspSubject } from './ocsp-request.js'

/** How far a responder's clock may run ahead of ours (thisUpdate). */
export const CLOCK_SKEW_MS = 5 * 60_000

/** Why a response is not stapled: `result` labels the metric, `reason` is safe to log. */
export class OcspResponseError extends Error {
  readonly result: 'revoked' | 'unknown' | 'invalid'
  constructor (result: 'revoked' | 'unknown' | 'invalid', reason: string) {
    super(reason)
    this.result = result
  }
}

/** A verified `good` response. */
export interface VerifiedOcsp {
  thisUpdate: number
  /** Epoch ms; undefined when the responder gave none (fresh information always available). */
  nextUpdate: number | undefined
}

const HASHES: Record<string, string> = {
  '1.3.14.3.2.26': 'sha1',
  '2.16.840.1.101.3.4.2.1': 'sha256',
  '2.16.840.1.101.3.4.2.2': 'sha384',
  '2.16.840.1.101.3.4.2.3': 'sha512'
}

/** Signature algorithms: the digest crypto.verify takes (null: the key's own, Ed25519/Ed448). */
const SIGNATURES: Record<string, string | null> = {
  '1.2.840.113549.1.1.5': 'sha1',
  '1.2.840.113549.1.1.11': 'sha256',
  '1.2.840.113549.1.1.12': 'sha384',
  '1.2.840.113549.1.1.13': 'sha512',
  '1.2.840.10045.4.1': 'sha1',
  '1.2.840.10045.4.3.2': 'sha256',
  '1.2.840.10045.4.3.3': 'sha384',
  '1.2.840.10045.4.3.4': 'sha512',
  '1.3.101.112': null,
  '1.3.101.113': null
}

const invalid = (reason: string): never => { throw new OcspResponseError('invalid', reason) }

/** Big-endian unsigned bytes without leading zeros (an INTEGER's content may carry one). */
function unsigned (bytes: ArrayBuffer): Buffer {
  const b = Buffer.from(bytes)
  let i = 0
  while (i < b.length - 1 && b[i] === 0) i++
  return b.subarray(i)
}

/** Whether `id` names our certificate (hashed with whatever algorithm the responder used). */
function sameCertId (id: CertID, subject: OcspSubject): boolean {
  const hash = HASHES[id.hashAlgorithm.algorithm]
  if (hash === undefined) return false
  return unsigned(id.serialNumber).equals(unsigned(subject.certId.serialNumber)) &&
    Buffer.from(id.issuerNameHash.buffer).equals(createHash(hash).update(subject.issuerName).digest()) &&
    Buffer.from(id.issuerKeyHash.buffer).equals(createHash(hash).update(subject.issuerKey).digest())
}

/** Whether `cert` is the one `responderId` names (by subject name, or by the SHA-1 of its key bits). */
function isResponder (basic: BasicOCSPResponse, cert: X509Certificate): boolean {
  const id = basic.tbsResponseData.responderID
  const { name, key } = nameAndKey(cert)
  if (id.byKey !== undefined) return Buffer.from(id.byKey.buffer).equals(createHash('sha1').update(key).digest())
  if (id.byName !== undefined) return Buffer.from(AsnConvert.serialize(id.byName)).equals(name)
  return false
}

/**
 * The key that signed `basic`: the issuer's, or a delegated responder certificate's (shipped in the
 * response, signed by the issuer, valid now, with id-kp-OCSPSigning).
 */
function signerKey (basic: BasicOCSPResponse, subject: OcspSubject, now: number): KeyObject {
  if (isResponder(basic, subject.issuer)) return subject.issuer.publicKey
  for (const c of basic.certs ?? []) {
    const cert = new X509Certificate(Buffer.from(AsnConvert.serialize(c)))
    if (!isResponder(basic, cert)) continue
    if (!cert.checkIssued(subject.issuer) || !cert.verify(subject.issuer.publicKey)) invalid('the responder certificate was not issued by the certificate\'s issuer')
    if (!(cert.keyUsage ?? []).includes(id_kp_OCSPSigning)) invalid('the responder certificate is not for OCSP signing (no id-kp-OCSPSigning)')
    if (!(cert.validFromDate.getTime() <= now && now <= cert.validToDate.getTime())) invalid('the responder certificate is not valid now')
    return cert.publicKey
  }
  return invalid('signed by neither the issuer nor a responder certificate in the response')
}

/**
 * Verifies the DER OCSP response `der` for `subject` at `now` (epoch ms).
 * @throws OcspResponseError: `revoked`, `unknown` (the responder does not know the certificate), or
 *   `invalid` (malformed, unsuccessful, badly signed, for another certificate, not current).
 */
export function verifyOcspResponse (der: Buffer, subject: OcspSubject, now: number): VerifiedOcsp {
  let basic: BasicOCSPResponse
  try {
    const response = AsnConvert.parse(der, OCSPResponse)
    if (response.responseStatus !== OCSPResponseStatus.successful) {
      return invalid(`the responder answered ${OCSPResponseStatus[response.responseStatus] ?? String(response.responseStatus)}`)
    }
    if (response.responseBytes?.responseType !== id_pkix_ocsp_basic) return invalid('not a basic OCSP response')
    basic = AsnConvert.parse(response.responseBytes.response.buffer, BasicOCSPResponse)
  } catch (err) {
    if (err instanceof OcspResponseError) throw err
    return invalid('not a DER OCSP response')
  }
  const tbs = basic.tbsResponseDataRaw
  if (tbs === undefined) return invalid('not a DER OCSP response')
  const alg = basic.signatureAlgorithm.algorithm
  const digest = SIGNATURES[alg]
  if (digest === undefined) return invalid(`unsupported signature algorithm ${alg}`)
  const key = signerKey(basic, subject, now)
  let good: boolean
  try {
    good = verifySignature(digest, Buffer.from(tbs), key, Buffer.from(basic.signature))
  } catch {
    good = false
  }
  if (!good) invalid('bad signature')
  const single = basic.tbsResponseData.responses.find(r => sameCertId(r.certID, subject))
  if (single === undefined) return invalid('no answer for this certificate (CertID)')
  const thisUpdate = single.thisUpdate.getTime()
  const nextUpdate = single.nextUpdate?.getTime()
  if (thisUpdate > now + CLOCK_SKEW_MS) invalid(`thisUpdate ${single.thisUpdate.toISOString()} is in the future`)
  if (nextUpdate !== undefined && nextUpdate <= now) invalid(`expired (nextUpdate ${new Date(nextUpdate).toISOString()})`)
  if (nextUpdate !== undefined && nextUpdate < thisUpdate) invalid('nextUpdate before thisUpdate')
  const status = single.certStatus
  if (status.revoked !== undefined) {
    const reason = status.revoked.revocationReason
    throw new OcspResponseError('revoked', `revoked on ${status.revoked.revocationTime.toISOString()}${reason !== undefined ? ` (reason ${String(reason)})` : ''}`)
  }
  if (status.good === undefined) throw new OcspResponseError('unknown', 'the responder does not know this certificate (status unknown)')
  return { thisUpdate, nextUpdate }
}
