// Token load generator, run as its own process: open-loop POST /token at a rate per phase (a spike is
// offered whatever the answers), most requests drawn from a small set of repeated bodies, the rest
// unique; prints one JSON line with every phase's counts and latencies.
import { pathToFileURL } from 'node:url'
import { Pool } from 'undici'
import { errorMessage } from '../lib/errors.js'

export interface LoadPhase { name: string, rps: number, ms: number }
export interface LoadOptions {
  port: number
  secrets: string[]
  phases: LoadPhase[]
  /** Share of requests drawn from `repeatedBodies` distinct bodies (the rest are unique). */
  repeatedShare: number
  repeatedBodies: number
  connections: number
}

export interface PhaseResult {
  name: string
  offered: number
  ok: number
  limited: number
  otherErrors: number
  errorSamples: string[]
  /** 200s by source: signed (one keyd signature each), cache, coalesced. */
  signed: number
  cache: number
  coalesced: number
  elapsedMs: number
  latencyMs: { p50: number, p99: number, max: number }
  limitedLatencyMs: { p50: number, p99: number, max: number }
  startedAt: number
  endedAt: number
}

function pct (sorted: number[], p: number): number {
  if (sorted.length === 0) return 0
  const v = sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]
  if (v === undefined) throw new Error('pct: index out of range')
  return v
}
const stats = (xs: number[]): { p50: number, p99: number, max: number } => {
  const s = [...xs].sort((a, b) => a - b)
  return { p50: pct(s, 0.5), p99: pct(s, 0.99), max: s[s.length - 1] ?? 0 }
}

export async function runLoad (o: LoadOptions): Promise<PhaseResult[]> {
  const pool = new Pool(`http://127.0.0.1:${o.port}`, { connections: o.connections, pipelining: 1, keepAliveTimeout: 30_000 })
  const results: PhaseResult[] = []
  let unique = 0
  const inflight = new Set<Promise<void>>()
  for (const phase of o.phases) {
    const r: PhaseResult = { name: phase.name, offered: 0, ok: 0, limited: 0, otherErrors: 0, errorSamples: [], signed: 0, cache: 0, coalesced: 0, elapsedMs: 0, latencyMs: { p50: 0, p99: 0, max: 0 }, limitedLatencyMs: { p50: 0, p99: 0, max: 0 }, startedAt: Date.now(), endedAt: 0 }
    const okMs: number[] = []
    const limitedMs: number[] = []
    const t0 = performance.now()
    const one = async (): Promise<void> => {
      const repeated = Math.random() < o.repeatedShare
      const n = repeated ? Math.floor(Math.random() * o.repeatedBodies) : unique++
      const secret = o.secrets[n % o.secrets.length]
      const body = JSON.stringify({ claims: { sub: repeated ? `pool-${n}` : `unique-${n}` } })
      const s = performance.now()
      try {
        const res = await pool.request({ path: '/token', method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${secret}` }, body, headersTimeout: 10_000, bodyTimeout: 10_000 })
        const text = await res.body.text()
        const ms = performance.now() - s
        if (res.statusCode === 200) {
          r.ok++
          okMs.push(ms)
          const src = res.headers['x-keyedge-token-source']
          if (src === 'signed') r.signed++; else if (src === 'cache') r.cache++; else if (src === 'coalesced') r.coalesced++
        } else if (res.statusCode === 429 && res.headers['retry-after'] !== undefined) {
          r.limited++
          limitedMs.push(ms)
        } else {
          r.otherErrors++
          if (r.errorSamples.length < 5) r.errorSamples.push(`${res.statusCode}: ${text.slice(0, 160)}`)
        }
      } catch (err) {
        r.otherErrors++
        if (r.errorSamples.length < 5) r.errorSamples.push(errorMessage(err).slice(0, 160))
      }
    }
    while (true) {
      const elapsed = performance.now() - t0
      if (elapsed >= phase.ms) break
      const due = Math.floor(elapsed * phase.rps / 1000)
      while (r.offered < due) {
        r.offered++
        const p = one()
        inflight.add(p)
        void p.finally(() => inflight.delete(p))
      }
      await new Promise(resolve => setTimeout(resolve, 2))
    }
    r.elapsedMs = performance.now() - t0
    r.endedAt = Date.now()
    // Answers still arriving count in the phase they were asked in.
    await Promise.all([...inflight])
    r.latencyMs = stats(okMs)
    r.limitedLatencyMs = stats(limitedMs)
    results.push(r)
  }
  await pool.close()
  return results
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  runLoad(JSON.parse(process.argv[2] ?? '{}') as LoadOptions).then(r => {
    process.stdout.write(JSON.stringify(r) + '\n')
  }, (err: unknown) => {
    process.stderr.write(`token-load: ${err instanceof Error ? err.message : String(err)}\n`)
    process.exitCode = 1
  })
}
