// Checks of a peer's TLS setup before it is measured: which version and certificate type a client
// pinned like h2load gets, and whether the server lets it resume. h2load resumes silently when
// the server allows it, so a "full handshake" case is only honest against a server that refuses:
// the probe makes one connection (one GET, reading the answer so TLS 1.3 tickets arrive), then
// offers that session on a second one and reports whether it was resumed.
import { connect, createSecureContext, type TLSSocket } from 'node:tls'
import type { KeyKind } from './handshake-client.js'
import type { TlsVer } from './peers-h2load.js'

export interface ProbeResult {
  protocol: string
  keyKind: KeyKind | undefined
  /** Whether the second connection resumed the first one's session. */
  resumed: boolean
  status: string
}

const SIGALGS: Record<KeyKind, string> = { ec: 'ecdsa_secp256r1_sha256', rsa: 'rsa_pss_rsae_sha256:rsa_pkcs1_sha256' }

async function once (port: number, version: TlsVer, keyKind: KeyKind, session?: Buffer): Promise<{ s: TLSSocket, session: Buffer | undefined, status: string, reused: boolean, protocol: string, kind: KeyKind | undefined }> {
  const v = version === '1.3' ? 'TLSv1.3' : 'TLSv1.2'
  const secureContext = createSecureContext({ minVersion: v, maxVersion: v, sigalgs: SIGALGS[keyKind], ecdhCurve: 'X25519:P-256' })
  return await new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, servername: 'localhost', secureContext, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'], ...(session !== undefined ? { session } : {}) })
    let got: Buffer | undefined
    let text = ''
    let info = { reused: false, protocol: '', kind: undefined as KeyKind | undefined }
    const timer = setTimeout(() => { s.destroy(); reject(new Error(`probe of port ${port}: no answer within 10 s`)) }, 10_000)
    s.on('session', (b: Buffer) => { got = b })
    s.once('secureConnect', () => {
      const cert = s.getPeerCertificate(false) as { asn1Curve?: string, bits?: number, modulus?: string }
      info = { reused: s.isSessionReused(), protocol: s.getProtocol() ?? '', kind: cert.asn1Curve === 'prime256v1' ? 'ec' : cert.modulus !== undefined ? 'rsa' : undefined }
      s.write('GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n')
    })
    s.on('data', (b: Buffer) => { text += b.toString('latin1') })
    s.on('error', (err: Error) => { clearTimeout(timer); reject(err) })
    s.once('close', () => {
      clearTimeout(timer)
      resolve({ s, session: got, status: text.split('\r\n')[0] ?? '', ...info })
    })
  })
}

/** Two connections to `port`: the certificate, version and status of the first; whether the second resumed. */
export async function probe (port: number, version: TlsVer, keyKind: KeyKind): Promise<ProbeResult> {
  const first = await once(port, version, keyKind)
  const second = first.session === undefined ? undefined : await once(port, version, keyKind, first.session)
  return { protocol: first.protocol, keyKind: first.kind, resumed: second?.reused ?? false, status: first.status }
}
