// Idle keep-alive connections for the memory case of `bench peers`, run as its own process: opens
// N TLS 1.3 connections (ECDSA, HTTP/1.1, never resumed), `parallel` at a time, makes one GET on
// each, and holds them. Prints {"held","failed",…} once all are held; then, for each line on its
// stdin, {"alive"} (connections still open); when its stdin closes, {"closedEarly"} (connections
// the server closed while they were held), and exits.
import { connect, createSecureContext, type TLSSocket } from 'node:tls'
import { pathToFileURL } from 'node:url'
import { SMALL_BODY } from './peers-upstream.js'

export interface IdleOptions {
  port: number
  connections: number
  parallel: number
  /** Key-exchange groups offered (OpenSSL list); null: Node's defaults (X25519MLKEM768 and X25519 key shares). */
  groups: string | null
}
export interface IdleHeld { held: number, failed: number, errorSamples: string[], ms: number }

const TIMEOUT_MS = 15_000
const BODY_END = SMALL_BODY.subarray(-24).toString()

async function main (o: IdleOptions): Promise<void> {
  const secureContext = createSecureContext({ minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3', sigalgs: 'ecdsa_secp256r1_sha256', ...(o.groups === null ? {} : { ecdhCurve: o.groups }) })
  const sockets: TLSSocket[] = []
  let held = 0
  let failed = 0
  let closedEarly = 0
  let releasing = false
  const errorSamples: string[] = []
  const one = async (): Promise<void> => await new Promise<void>(resolve => {
    let text = ''
    let ok = false
    const s = connect({ host: '127.0.0.1', port: o.port, servername: 'localhost', secureContext, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] })
    const timer = setTimeout(() => fail('timeout'), TIMEOUT_MS)
    function fail (why: string): void {
      clearTimeout(timer)
      if (!ok) {
        failed++
        if (errorSamples.length < 5) errorSamples.push(why.slice(0, 200))
        s.destroy()
        resolve()
      }
    }
    s.once('secureConnect', () => { s.write('GET / HTTP/1.1\r\nHost: localhost\r\n\r\n') })
    s.on('data', (b: Buffer) => {
      if (ok) return
      text += b.toString('latin1')
      if (!text.startsWith('HTTP/1.1 200')) { if (text.length >= 12) fail(`answer: ${text.slice(0, 40)}`); return }
      if (text.includes(BODY_END)) {
        ok = true
        clearTimeout(timer)
        held++
        sockets.push(s)
        resolve()
      }
    })
    s.on('error', (err: NodeJS.ErrnoException) => fail(err.code ?? err.message))
    s.once('close', () => { if (ok && !releasing) closedEarly++; else fail('closed before the answer') })
  })
  const t0 = performance.now()
  let started = 0
  await Promise.all(Array.from({ length: Math.min(o.parallel, o.connections) }, async () => {
    while (started < o.connections) { started++; await one() }
  }))
  const report: IdleHeld = { held, failed, errorSamples, ms: Math.round(performance.now() - t0) }
  process.stdout.write(JSON.stringify(report) + '\n')
  process.stdin.on('data', (b: Buffer) => {
    for (let i = 0; i < b.toString().split('\n').length - 1; i++) process.stdout.write(JSON.stringify({ alive: held - closedEarly }) + '\n')
  })
  process.stdin.once('end', () => {
    releasing = true
    process.stdout.write(JSON.stringify({ closedEarly }) + '\n', () => {
      for (const s of sockets) s.destroy()
      process.exit(0)
    })
  })
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(JSON.parse(process.argv[2] ?? '{}') as IdleOptions).catch((err: unknown) => {
    process.stderr.write(`idle client: ${err instanceof Error ? err.message : String(err)}\n`)
    process.exit(1)
  })
}
