// The bridge's circuit breaker end to end: with keyd stuck (SIGSTOP), back-to-back full handshakes
// on one worker cost one bridge timeout per breaker interval instead of one each, keep-alive
// requests keep being served, and after SIGCONT handshakes succeed again once the interval is over.
import t from 'tap'
import { connect } from 'node:tls'
import { Agent, request } from 'node:https'
import { readFileSync } from 'node:fs'
import { startStack, startProxy } from '../helpers/edge.js'

const TIMEOUT_MS = 1000 // the proxy's keyd.timeoutMs (test/helpers/edge.ts)
const BREAKER_MIN_MS = 250 // the bridge's default first interval
const N = 20

const stack = await startStack()
t.teardown(() => stack.stop())
const proxy = await startProxy(stack, { workers: 1, name: 'breaker', extra: { log: { level: 'debug' } } })
t.teardown(() => proxy.stop())
const ca = readFileSync(stack.caFile)

/** One full TLS handshake from this process; resolves with its outcome and duration. */
async function handshake (): Promise<{ ok: boolean, ms: number, error?: string }> {
  const t0 = performance.now()
  return await new Promise(resolve => {
    const s = connect({ host: '127.0.0.1', port: proxy.port, servername: 'localhost', ca, timeout: 10000 })
    const done = (ok: boolean, error?: string): void => {
      s.destroy()
      resolve({ ok, ms: performance.now() - t0, ...(error !== undefined ? { error } : {}) })
    }
    s.once('secureConnect', () => done(true))
    s.once('error', (e: Error) => done(false, e.message))
    s.once('timeout', () => done(false, 'client timeout'))
  })
}

/** GET / on the keep-alive agent's one connection; resolves with the status and the local port. */
async function keepAliveGet (agent: Agent): Promise<{ status: number, localPort: number }> {
  return await new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: proxy.port, servername: 'localhost', path: '/', ca, agent, timeout: 10000 }, res => {
      res.resume()
      res.on('end', () => resolve({ status: res.statusCode ?? 0, localPort: req.socket?.localPort ?? 0 }))
    })
    req.on('error', reject)
    req.on('timeout', () => req.destroy(new Error('keep-alive request timed out')))
    req.end()
  })
}

/** Handshake failures the worker logged (debug) since line `from`, by the error code Node derives from the bridge's reason. */
function failures (from: number): { timeouts: number, open: number } {
  const codes = proxy.lines.slice(from).map(line => {
    try {
      const code = (JSON.parse(line) as { code?: unknown }).code
      return typeof code === 'string' ? code : ''
    } catch { return '' }
  })
  return {
    timeouts: codes.filter(c => /KEYD:_NO_ANSWER_WITHIN/.test(c)).length,
    open: codes.filter(c => /KEYD:_CIRCUIT_OPEN/.test(c)).length
  }
}

t.test('keyd stuck: handshakes fail fast between probes, keep-alive keeps flowing, SIGCONT recovers', async t => {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  t.teardown(() => agent.destroy())
  t.ok((await handshake()).ok, 'a handshake works while keyd runs')
  const first = await keepAliveGet(agent)
  t.equal(first.status, 200, 'a keep-alive connection is open')

  const from = proxy.lines.length
  stack.keyd.proc.kill('SIGSTOP')
  t.teardown(() => { stack.keyd.proc.kill('SIGCONT') })
  const t0 = performance.now()
  const results = []
  const kept = []
  for (let i = 0; i < N; i++) {
    results.push(await handshake())
    kept.push(await keepAliveGet(agent))
  }
  const elapsed = performance.now() - t0
  t.equal(results.filter(r => r.ok).length, 0, 'every handshake fails while keyd is stuck')
  const slow = results.filter(r => r.ms >= TIMEOUT_MS).length
  t.comment(`${N} handshakes in ${Math.round(elapsed)} ms, ${slow} waited out the ${TIMEOUT_MS} ms timeout; durations: ${results.map(r => Math.round(r.ms)).join(' ')}`)
  t.ok(elapsed < N * TIMEOUT_MS / 2, `${N} handshakes took ${Math.round(elapsed)} ms, far less than ${N} x ${TIMEOUT_MS} ms`)
  t.ok(kept.every(k => k.status === 200 && k.localPort === first.localPort), 'every keep-alive request on the open connection was served')

  // The worker's own account (debug log): at most one timeout per breaker interval. Between two
  // timeouts lie at least one timeout and one interval, so over `elapsed` there can be no more
  // than 1 + elapsed / (timeout + first interval) of them; the other handshakes met the open circuit.
  const seen = failures(from)
  t.ok(seen.timeouts >= 1 && seen.timeouts <= 1 + Math.floor(elapsed / (TIMEOUT_MS + BREAKER_MIN_MS)),
    `${seen.timeouts} handshakes waited for keyd, over ${Math.round(elapsed)} ms`)
  t.ok(seen.open >= N - seen.timeouts - 1, `${seen.open} handshakes failed at once with "keyd: circuit open"`)

  stack.keyd.proc.kill('SIGCONT')
  // The circuit lets the next call through once its interval (at most 5 s) is over.
  const resumed = performance.now()
  let again = await handshake()
  while (!again.ok && performance.now() - resumed < 5000 + 2 * TIMEOUT_MS + 5000) again = await handshake()
  t.ok(again.ok, `handshakes succeed again ${Math.round(performance.now() - resumed)} ms after SIGCONT`)
  t.ok((await handshake()).ok, 'and the next one too')
  t.equal(proxy.workerPids().length, 1, 'the worker stayed up')
})
