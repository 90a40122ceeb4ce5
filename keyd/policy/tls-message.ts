// Structural check for tls-server keys: only what a TLS server signs in a handshake passes.

const TLS13_PREFIX = Buffer.concat([Buffer.alloc(64, 0x20), Buffer.from('TLS 1.3, server CertificateVerify', 'ascii'), Buffer.of(0)])
const HASH_SIZES = new Set([32, 48, 64])

/** What kind of TLS signing input a message is, or null if it is none. */
export function tlsMessageKind (msg: Uint8Array): 'tls13-certificate-verify' | 'tls12-server-key-exchange' | null {
  const m = Buffer.from(msg.buffer, msg.byteOffset, msg.byteLength)
  if (m.length > TLS13_PREFIX.length && HASH_SIZES.has(m.length - TLS13_PREFIX.length) &&
      m.subarray(0, TLS13_PREFIX.length).equals(TLS13_PREFIX)) {
    return 'tls13-certificate-verify'
  }
  // client_random(32) server_random(32) curve_type=named_curve(3) named_curve(2) point_len(1) point
  if (m.length >= 64 + 4 + 1 && m[64] === 0x03) {
    const pointLen = m.readUInt8(67)
    if (pointLen > 0 && m.length === 64 + 4 + pointLen) return 'tls12-server-key-exchange'
  }
  return null
}
