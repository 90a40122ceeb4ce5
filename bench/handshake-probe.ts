// TLS full-handshake latency probe, run as its own process: one handshake at a time, every
// `intervalMs`, never resuming; prints one JSON line of [start epoch ms, latency ms] pairs.
import { readFileSync } from 'node:fs'
import { connect, createSecureContext } from 'node:tls'
import { pathToFileURL } from 'node:url'

export interface ProbeOptions { port: number, caFile: string, durationMs: number, intervalMs: number }
export interface ProbeResult { samples: Array<[number, number]>, errors: number, reused: number }

export async function runProbe (o: ProbeOptions): Promise<ProbeResult> {
  const secureContext = createSecureContext({ ca: readFileSync(o.caFile, 'utf8'), minVersion: 'TLSv1.3', sigalgs: 'ecdsa_secp256r1_sha256' })
  const out: ProbeResult = { samples: [], errors: 0, reused: 0 }
  const end = Date.now() + o.durationMs
  while (Date.now() < end) {
    const at = Date.now()
    const t0 = performance.now()
    await new Promise<void>(resolve => {
      const s = connect({ host: '127.0.0.1', port: o.port, servername: 'localhost', secureContext, ALPNProtocols: ['http/1.1'] })
      const timer = setTimeout(() => { out.errors++; s.destroy(); resolve() }, 5000)
      s.once('secureConnect', () => {
        out.samples.push([at, performance.now() - t0])
        if (s.isSessionReused()) out.reused++
        clearTimeout(timer)
        s.end()
        resolve()
      })
      s.once('error', () => { clearTimeout(timer); out.errors++; s.destroy(); resolve() })
    })
    const wait = at + o.intervalMs - Date.now()
    if (wait > 0) await new Promise(resolve => setTimeout(resolve, wait))
  }
  return out
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  runProbe(JSON.parse(process.argv[2] ?? '{}') as ProbeOptions).then(r => {
    process.stdout.write(JSON.stringify(r) + '\n')
  }, (err: unknown) => {
    process.stderr.write(`handshake-probe: ${err instanceof Error ? err.message : String(err)}\n`)
    process.exitCode = 1
  })
}
