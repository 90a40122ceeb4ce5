// Handshake load generator, run as its own process: N concurrent TLS connections in a loop, each a
// full handshake (no session is ever offered), closed right after secureConnect; prints one JSON line.
import { readFileSync } from 'node:fs'
import { connect, createSecureContext, type TLSSocket } from 'node:tls'
import { pathToFileURL } from 'node:url'

export type KeyKind = 'ec' | 'rsa'
export type TlsVersion = 'TLSv1.2' | 'TLSv1.3'

export interface ClientOptions {
  host: string
  port: number
  servername: string
  caFiles: string[]
  version: TlsVersion
  /** The certificate type to get, pinned by the signature algorithms offered. */
  keyKind: KeyKind
  concurrency: number
  durationMs: number
  /** Stop after this many handshakes started, if it comes before the duration. */
  maxHandshakes?: number
  /** Each connection loop offers the session of its previous connection (resumption benchmark). */
  resume?: boolean
}

export interface ClientResult {
  handshakes: number
  errors: number
  /** Handshakes with isSessionReused() true: must stay 0. */
  reused: number
  wrongProtocol: number
  wrongKeyKind: number
  certsChecked: number
  elapsedMs: number
  /** The client's own CPU (user+system) over the run. */
  clientCpuMicros: number
  cipher: string | undefined
  errorSamples: string[]
}

/** Signature algorithms that leave the server one choice of certificate. */
export const SIGALGS: Record<KeyKind, string> = {
  ec: 'ecdsa_secp256r1_sha256',
  rsa: 'rsa_pss_rsae_sha256:rsa_pkcs1_sha256'
}

const HANDSHAKE_TIMEOUT_MS = 10_000

/** Every certificate for the first few handshakes, then one in 100 (reading it costs client CPU). */
const shouldCheckCert = (n: number): boolean => n <= 20 || n % 100 === 0

export async function runClient (o: ClientOptions): Promise<ClientResult> {
  // One context for every connection: passing `ca` to tls.connect would build a new one (parse the
  // CAs, new X509 store) per connection, which triples the client's CPU. A client context keeps no
  // sessions, and no `session` is ever passed, so nothing can resume.
  const secureContext = createSecureContext({
    ca: o.caFiles.map(f => readFileSync(f, 'utf8')),
    minVersion: o.version,
    maxVersion: o.version,
    sigalgs: SIGALGS[o.keyKind],
    // X25519 for the key exchange; P-256 must be listed too, or a TLS 1.2 server may not use a P-256 certificate.
    ecdhCurve: 'X25519:P-256'
  })
  const r: ClientResult = { handshakes: 0, errors: 0, reused: 0, wrongProtocol: 0, wrongKeyKind: 0, certsChecked: 0, elapsedMs: 0, clientCpuMicros: 0, cipher: undefined, errorSamples: [] }
  const fail = (what: string): void => {
    r.errors++
    if (r.errorSamples.length < 5) r.errorSamples.push(what.slice(0, 200))
  }
  const check = (s: TLSSocket): void => {
    if (s.isSessionReused()) r.reused++
    if (s.getProtocol() !== o.version) r.wrongProtocol++
    if (shouldCheckCert(r.handshakes)) {
      r.certsChecked++
      const cert = s.getPeerCertificate(false) as { asn1Curve?: string, bits?: number, modulus?: string }
      const kind: KeyKind | undefined = cert.asn1Curve === 'prime256v1' ? 'ec' : cert.modulus !== undefined && cert.bits === 2048 ? 'rsa' : undefined
      if (kind !== o.keyKind) r.wrongKeyKind++
    }
    r.cipher ??= s.getCipher().name
  }

  const one = async (session?: Buffer): Promise<Buffer | undefined> => await new Promise<Buffer | undefined>(resolve => {
    let secured = false
    let settled = false
    let next: Buffer | undefined
    const s = connect({
      host: o.host,
      port: o.port,
      servername: o.servername,
      secureContext,
      rejectUnauthorized: true,
      ALPNProtocols: ['http/1.1'],
      ...(session !== undefined ? { session } : {})
    })
    if (o.resume === true) s.on('session', (b: Buffer) => { next = b })
    const finish = (): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      resolve(next ?? session)
    }
    const timer = setTimeout(() => { if (!secured) fail('handshake timeout'); s.destroy(); finish() }, HANDSHAKE_TIMEOUT_MS)
    s.once('secureConnect', () => {
      secured = true
      r.handshakes++
      check(s)
      s.end()
    })
    s.on('error', (err: NodeJS.ErrnoException) => {
      if (!secured) fail(`${err.code ?? 'error'}: ${err.message}`)
      s.destroy()
    })
    s.once('close', finish)
  })

  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  const deadline = t0 + o.durationMs
  let started = 0
  const loop = async (): Promise<void> => {
    let session: Buffer | undefined
    while (performance.now() < deadline && (o.maxHandshakes === undefined || started < o.maxHandshakes)) {
      started++
      const next = await one(session)
      if (o.resume === true) session = next
    }
  }
  await Promise.all(Array.from({ length: o.concurrency }, loop))
  r.elapsedMs = performance.now() - t0
  const cpu = process.cpuUsage(cpu0)
  r.clientCpuMicros = cpu.user + cpu.system
  return r
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const opts = JSON.parse(process.argv[2] ?? '{}') as ClientOptions
  runClient(opts).then(r => {
    process.stdout.write(JSON.stringify(r) + '\n')
  }, (err: unknown) => {
    process.stderr.write(`handshake-client: ${err instanceof Error ? err.message : String(err)}\n`)
    process.exitCode = 1
  })
}
