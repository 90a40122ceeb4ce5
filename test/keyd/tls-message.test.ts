// The tls-server structural policy: what passes and what is refused.
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { tls13Input, tls12Input } from '../helpers/tls-inputs.js'
import { tlsMessageKind } from '../../keyd/policy/tls-message.js'

t.test('accepts TLS 1.3 CertificateVerify and TLS 1.2 ServerKeyExchange input', async t => {
  for (const n of [32, 48, 64]) t.equal(tlsMessageKind(tls13Input(n)), 'tls13-certificate-verify')
  t.equal(tlsMessageKind(tls12Input(32)), 'tls12-server-key-exchange')
  t.equal(tlsMessageKind(tls12Input(65)), 'tls12-server-key-exchange')
})

t.test('refuses everything else', async t => {
  t.equal(tlsMessageKind(Buffer.from('eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0')), null, 'a JWT signing input')
  t.equal(tlsMessageKind(tls13Input(20)), null, 'wrong hash size')
  const client = Buffer.concat([Buffer.alloc(64, 0x20), Buffer.from('TLS 1.3, client CertificateVerify'), Buffer.of(0), randomBytes(32)])
  t.equal(tlsMessageKind(client), null, 'client CertificateVerify')
  const t12 = tls12Input(32)
  t.equal(tlsMessageKind(Buffer.concat([t12, Buffer.of(0)])), null, 'trailing byte')
  t12[64] = 1
  t.equal(tlsMessageKind(t12), null, 'explicit curve')
  t.equal(tlsMessageKind(Buffer.alloc(0)), null)
})
