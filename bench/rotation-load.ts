// Certificate rotations under load: autocannon on keep-alive connections plus a loop of new TLS
// connections, while `cert renew` replaces the served certificate N times. Counts failed requests
// and checks that clients see each new certificate. Used by `bench rotation` and its tap test.
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { request, type Agent } from 'node:https'
import type { TLSSocket } from 'node:tls'
import { renewCertificate } from '../certs/renew.js'
import type { Stack, TestProxy } from '../test/helpers/edge.js'
import { fileSerial, servedSerial } from '../test/helpers/rotation.js'
import { errorMessage } from '../lib/errors.js'

interface AutocannonResult {
  requests: { total: number }
  errors: number
  timeouts: number
  non2xx: number
  resets: number
  '2xx': number
}
interface AutocannonInstance extends PromiseLike<AutocannonResult> { stop: () => void }
type Autocannon = (opts: Record<string, unknown>) => AutocannonInstance
const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon

export interface RotationOptions {
  rotations: number
  /** Keep-alive connections of autocannon. */
  connections: number
  /** Concurrent loops each opening one new TLS connection per request. */
  newConnections: number
  /** Pause between a rotation being seen and the next one. */
  pauseMs: number
  /** Longest wait for a rotation to be served before it counts as not seen. */
  rotationTimeoutMs: number
}

export interface RotationResult {
  rotations: number
  /** Rotations whose new serial the probe saw (openssl s_client, new connection). */
  rotationsSeen: number
  /** From the renewed files being in place to the new certificate served: p50 and max, ms. */
  swapMs: { p50: number, max: number }
  keepAlive: { requests: number, ok: number, errors: number, timeouts: number, non2xx: number, resets: number }
  newConnections: { requests: number, ok: number, failed: number, firstErrors: string[] }
  /** New connections started after a rotation was committed on every worker that got an older certificate. */
  staleAfterSwap: number
  durationMs: number
}

const quantile = (xs: number[], q: number): number => {
  if (xs.length === 0) return 0
  const s = [...xs].sort((a, b) => a - b)
  const v = s[Math.min(s.length - 1, Math.floor(q * s.length))]
  if (v === undefined) throw new Error('quantile: index out of range')
  return v
}

/** One GET on a new TLS connection, verified against the dev CA; resolves the served serial. */
async function newConnectionGet (port: number, ca: Buffer): Promise<string> {
  return await new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, servername: 'localhost', path: '/', ca, agent: false as unknown as Agent, sigalgs: 'ecdsa_secp256r1_sha256', timeout: 10_000 }, res => {
      const serial = (res.socket as TLSSocket).getPeerCertificate().serialNumber
      res.resume()
      res.on('end', () => res.statusCode === 200 ? resolve(serial) : reject(new Error(`status ${res.statusCode ?? 0}`)))
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error('timeout')))
    req.on('error', reject)
    req.end()
  })
}

/** Runs the load, rotates `localhost-ec` `rotations` times, stops the load and counts. */
export async function runRotationLoad (stack: Stack, proxy: TestProxy, o: RotationOptions, say: (s: string) => void = () => {}): Promise<RotationResult> {
  const t0 = Date.now()
  const ca = readFileSync(stack.caFile)
  const certsDir = stack.keyd.paths.certsDir
  const certFile = `${certsDir}/localhost-ec.crt`
  const keepAlive = autocannon({
    url: `https://127.0.0.1:${proxy.port}/`,
    servername: 'localhost',
    connections: o.connections,
    duration: 3600,
    tlsOptions: { ca, sigalgs: 'ecdsa_secp256r1_sha256' }
  })
  // Serials of the new-connection load, with when each connection started.
  const seen: Array<{ at: number, serial: string }> = []
  const nc = { requests: 0, ok: 0, failed: 0, firstErrors: [] as string[] }
  let loading = true
  const loops = Array.from({ length: o.newConnections }, async () => {
    while (loading) {
      const at = Date.now()
      nc.requests++
      try {
        seen.push({ at, serial: await newConnectionGet(proxy.port, ca) })
        nc.ok++
      } catch (err) {
        nc.failed++
        if (nc.firstErrors.length < 5) nc.firstErrors.push(errorMessage(err))
      }
    }
  })

  const swaps: Array<{ committedAt: number, serial: string }> = []
  const swapMs: number[] = []
  let rotationsSeen = 0
  const reloadedLines = (): number => proxy.lines.filter(l => l.includes('"msg":"certificates reloaded"')).length
  try {
    await new Promise(resolve => setTimeout(resolve, 500))
    for (let i = 1; i <= o.rotations; i++) {
      const before = reloadedLines()
      const r = await renewCertificate(stack.keyd.admin, { name: 'localhost-ec', certsDir })
      const writtenAt = Date.now()
      const serial = r.serialNumber ?? fileSerial(certFile)
      const deadline = writtenAt + o.rotationTimeoutMs
      let ok = false
      while (Date.now() < deadline) {
        if (reloadedLines() > before && await servedSerial(proxy.port, stack.caFile) === serial) { ok = true; break }
        await new Promise(resolve => setTimeout(resolve, 20))
      }
      if (ok) {
        rotationsSeen++
        swapMs.push(Date.now() - writtenAt)
        swaps.push({ committedAt: Date.now(), serial })
      }
      say(`rotation ${i}/${o.rotations}: ${ok ? `served after ${Date.now() - writtenAt} ms` : 'NOT SEEN'}`)
      await new Promise(resolve => setTimeout(resolve, o.pauseMs))
    }
  } finally {
    loading = false
    keepAlive.stop()
  }
  const ka = await keepAlive
  await Promise.all(loops)
  // A connection started after rotation k was seen everywhere must get serial k or a later one.
  const order = new Map(swaps.map((s, i) => [s.serial, i]))
  let stale = 0
  for (const s of seen) {
    let k = -1
    for (const [i, w] of swaps.entries()) {
      if (w.committedAt > s.at) break
      k = i
    }
    if (k >= 0 && (order.get(s.serial) ?? -1) < k) stale++
  }
  return {
    rotations: o.rotations,
    rotationsSeen,
    swapMs: { p50: quantile(swapMs, 0.5), max: Math.max(0, ...swapMs) },
    keepAlive: { requests: ka.requests.total, ok: ka['2xx'], errors: ka.errors, timeouts: ka.timeouts, non2xx: ka.non2xx, resets: ka.resets },
    newConnections: nc,
    staleAfterSwap: stale,
    durationMs: Date.now() - t0
  }
}
