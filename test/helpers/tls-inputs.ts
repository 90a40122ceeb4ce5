// Synthetic TLS signing inputs: what a server signs in TLS 1.3 CertificateVerify and TLS 1.2 ServerKeyExchange.
import { randomBytes } from 'node:crypto'

export const tls13Input = (hashLen = 32): Buffer =>
  Buffer.concat([Buffer.alloc(64, 0x20), Buffer.from('TLS 1.3, server CertificateVerify'), Buffer.of(0), randomBytes(hashLen)])

export const tls12Input = (pointLen = 32): Buffer =>
  Buffer.concat([randomBytes(64), Buffer.of(3, 0, 29, pointLen), randomBytes(pointLen)])
