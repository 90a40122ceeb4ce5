// What an OCSP request for one served certificate is made of, and its round trip to the CA's
// responder. The subject (leaf, issuer, responder URL, CertID) is worked out once per certificate
// entry when its TLS context is built; the request's DER is made then too, so a refresh only sends
// bytes. Requests go out as RFC 5019 GETs (cacheable by the CA's CDN) when they fit in 255 bytes of
// URL, as POSTs otherwise, each bounded by a timeout and a response size.

import { createHash, X509Certificate } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { AsnConvert, OctetString } from '@peculiar/asn1-schema'
import { AlgorithmIdentifier, Certificate } from '@peculiar/asn1-x509'
import { CertID, OCSPRequest, Request, TBSRequest } from '@peculiar/asn1-ocsp'
import { request } from 'undici'
import { errorCode, errorMessage } from '../../lib/errors.js'
import { pemCertificateBlocks } from './x509-der.js'

/** SHA-1, the CertID hash every responder answers (RFC 5019 §2.1.1). */
const SHA1 = '1.3.14.3.2.26'
/** The largest OCSP response read from a responder (a real one is 0.5–3 KB, with a delegated responder certificate). */
export const MAX_RESPONSE_BYTES = 64 * 1024
/** RFC 5019 §5: GET when the encoded request is shorter than this. */
const GET_LIMIT = 255

/** One certificate that can be stapled: who issued it, where to ask, what to ask. */
export interface OcspSubject {
  readonly leaf: X509Certificate
  readonly issuer: X509Certificate
  /** The responder URL from the leaf's Authority Information Access (http only), or the response file's path. */
  readonly url: string
  /** A response file provided by the operator (`files[].ocsp`): read instead of asking a responder. */
  readonly file: string | undefined
  readonly certId: CertID
  /** The issuer's subject name (DER) and public key bits: what a CertID hashes. */
  readonly issuerName: Buffer
  readonly issuerKey: Buffer
  /** The OCSP request's DER. */
  readonly request: Buffer
}

/**
 * The OCSP URL of `leaf`'s Authority Information Access extension (the first `http:` one), from
 * Node's rendering of the extension ("OCSP - URI:http://…", one access description a line).
 */
export function ocspUrlOf (leaf: X509Certificate): string | undefined {
  const info = leaf.infoAccess
  if (info === undefined) return undefined
  for (const line of info.split('\n')) {
    const m = /^OCSP - URI:(\S+)$/.exec(line.trim())
    if (m?.[1] !== undefined && m[1].startsWith('http://')) return m[1]
  }
  return undefined
}

/** The DER of `cert`'s subject name and its public key's bits (the contents of the BIT STRING). */
export function nameAndKey (cert: X509Certificate): { name: Buffer, key: Buffer } {
  const parsed = AsnConvert.parse(cert.raw, Certificate)
  return {
    name: Buffer.from(AsnConvert.serialize(parsed.tbsCertificate.subject)),
    key: Buffer.from(parsed.tbsCertificate.subjectPublicKeyInfo.subjectPublicKey)
  }
}

/** Why a certificate chain cannot be stapled, or its subject. */
export type SubjectOutcome = { subject: OcspSubject } | { skip: 'no_ocsp_url' | 'no_issuer' | 'issuer_mismatch' }

/**
 * The OCSP subject of a certificate chain PEM (leaf first, its issuer next), or why there is none:
 * no OCSP responder URL in the leaf (and no response `file`), no second certificate, or one that
 * did not sign the leaf.
 */
export function ocspSubject (chainPem: Buffer, file?: string): SubjectOutcome {
  const blocks = pemCertificateBlocks(chainPem).slice(0, 2).map(b => Buffer.from(b))
  const [leafDer, issuerDer] = blocks
  if (leafDer === undefined) return { skip: 'no_ocsp_url' }
  const leaf = new X509Certificate(leafDer)
  const url = file ?? ocspUrlOf(leaf)
  if (url === undefined) return { skip: 'no_ocsp_url' }
  if (issuerDer === undefined) return { skip: 'no_issuer' }
  const issuer = new X509Certificate(issuerDer)
  if (!leaf.checkIssued(issuer) || !leaf.verify(issuer.publicKey)) return { skip: 'issuer_mismatch' }
  const { name, key } = nameAndKey(issuer)
  const certId = new CertID({
    hashAlgorithm: new AlgorithmIdentifier({ algorithm: SHA1, parameters: null }),
    issuerNameHash: new OctetString(createHash('sha1').update(name).digest()),
    issuerKeyHash: new OctetString(createHash('sha1').update(key).digest()),
    serialNumber: AsnConvert.parse(leafDer, Certificate).tbsCertificate.serialNumber
  })
  const der = Buffer.from(AsnConvert.serialize(new OCSPRequest({ tbsRequest: new TBSRequest({ requestList: [new Request({ reqCert: certId })] }) })))
  return { subject: { leaf, issuer, url, file, certId, issuerName: name, issuerKey: key, request: der } }
}

/** A responder that did not answer with an OCSP response: `reason` is safe to log. */
export class OcspFetchError extends Error {}

/**
 * `subject`'s response: its file's bytes when it has one, else the responder's answer.
 * @throws OcspFetchError as fetchOcsp, or when the file cannot be read or is over MAX_RESPONSE_BYTES.
 */
export async function obtainOcsp (subject: OcspSubject, timeoutMs: number): Promise<Buffer> {
  if (subject.file === undefined) return await fetchOcsp(subject, timeoutMs)
  let der: Buffer
  try {
    der = await readFile(subject.file)
  } catch (err) {
    throw new OcspFetchError(`cannot read ${subject.file} (${errorCode(err) ?? errorMessage(err)})`)
  }
  if (der.length > MAX_RESPONSE_BYTES) throw new OcspFetchError(`${subject.file} is over ${MAX_RESPONSE_BYTES} bytes`)
  return der
}

/**
 * Sends `subject`'s request to its responder and returns the response body (not yet verified).
 * @throws OcspFetchError on a connection failure, a timeout, a status other than 200, or a body
 *   over MAX_RESPONSE_BYTES.
 */
export async function fetchOcsp (subject: OcspSubject, timeoutMs: number): Promise<Buffer> {
  const encoded = encodeURIComponent(subject.request.toString('base64'))
  const base = subject.url.endsWith('/') ? subject.url : `${subject.url}/`
  const get = base.length + encoded.length <= GET_LIMIT
  const signal = AbortSignal.timeout(timeoutMs)
  let res
  try {
    res = await request(get ? base + encoded : subject.url, {
      method: get ? 'GET' : 'POST',
      headers: get ? {} : { 'content-type': 'application/ocsp-request' },
      ...(get ? {} : { body: subject.request }),
      signal,
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs
    })
  } catch (err) {
    throw new OcspFetchError(signal.aborted ? `no answer within ${timeoutMs} ms` : `cannot reach the responder (${errorCode(err) ?? errorMessage(err)})`)
  }
  if (res.statusCode !== 200) {
    res.body.resume()
    throw new OcspFetchError(`HTTP status ${res.statusCode}`)
  }
  const chunks: Buffer[] = []
  let size = 0
  try {
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      size += chunk.length
      if (size > MAX_RESPONSE_BYTES) {
        res.body.destroy()
        throw new OcspFetchError(`response over ${MAX_RESPONSE_BYTES} bytes`)
      }
      chunks.push(chunk)
    }
  } catch (err) {
    if (err instanceof OcspFetchError) throw err
    throw new OcspFetchError(signal.aborted ? `no answer within ${timeoutMs} ms` : 'the response was cut')
  }
  return Buffer.concat(chunks)
}
