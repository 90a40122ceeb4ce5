// Structural check for certificate requests: a tls-server key may sign (for an admin client) a
// PKCS#10 CertificationRequestInfo that carries its own public key, i.e. ask to be certified itself.

/** One DER element at `at`: tag, where its content starts and ends; null if it overruns. */
function element (der: Buffer, at: number): { tag: number, start: number, end: number } | null {
  const tag = der[at]
  let len = der[at + 1]
  if (tag === undefined || len === undefined) return null
  let start = at + 2
  if (len & 0x80) {
    const n = len & 0x7f
    if (n === 0 || n > 4 || start + n > der.length) return null
    len = der.readUIntBE(start, n)
    start += n
  }
  const end = start + len
  return end > der.length ? null : { tag, start, end }
}

/**
 * The SubjectPublicKeyInfo (DER) inside a PKCS#10 CertificationRequestInfo — SEQUENCE { INTEGER 0,
 * Name, SubjectPublicKeyInfo, [0] attributes } filling `msg` exactly — or null if `msg` is not one.
 */
export function csrInfoPublicKey (msg: Uint8Array): Buffer | null {
  const der = Buffer.from(msg.buffer, msg.byteOffset, msg.byteLength)
  const outer = element(der, 0)
  if (outer === null || outer.tag !== 0x30 || outer.end !== der.length) return null
  const version = element(der, outer.start)
  if (version === null || version.tag !== 0x02 || version.end - version.start !== 1 || der[version.start] !== 0) return null
  const subject = element(der, version.end)
  if (subject === null || subject.tag !== 0x30) return null
  const spki = element(der, subject.end)
  if (spki === null || spki.tag !== 0x30) return null
  const attributes = element(der, spki.end)
  if (attributes === null || attributes.tag !== 0xa0 || attributes.end !== outer.end) return null
  return der.subarray(subject.end, spki.end)
}
