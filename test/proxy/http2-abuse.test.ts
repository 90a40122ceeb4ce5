// HTTP/2 abuse, end to end with node:http2 clients: rapid reset (HEADERS then RST_STREAM, as fast as
// the client can) against a normal client alongside, a reset that must cancel its upstream request at
// once, and the bound on concurrent streams.
import { once } from 'node:events'
import { constants } from 'node:http2'
import t from 'tap'
import { rapidReset } from '../helpers/h2-rapid-reset.js'
import { countingUpstream, h2Open, h2Request, metric, startFront } from '../helpers/http-front.js'
import { defined } from '../helpers/defined.js'
import { until } from '../helpers/wait.js'

const limits = { http2MaxConcurrentStreams: 16, http2MaxResetsPerSecond: 20 }
const upstream = await countingUpstream()
const front = await startFront({ upstream: upstream.url, limits })
t.teardown(async () => {
  upstream.release()
  await front.stop()
  await upstream.close()
})

async function waitFor (what: string, pred: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}

t.test('rapid reset: GOAWAY ENHANCE_YOUR_CALM, the upstream sees (almost) none, a normal client is served', async t => {
  const before = await front.metrics()
  const normal = await h2Open(front.port, front.ca)
  t.teardown(() => normal.destroy())

  // The normal client asks every 50 ms for as long as the attack runs, and a little after: at least
  // 500 ms and until it asked 5 times (a loaded machine answers it slowly; the count is what is judged).
  const latencies: number[] = []
  let failures = 0
  let attacking = true
  const normalLoop = (async () => {
    while (attacking) {
      const started = performance.now()
      try {
        const res = await h2Request(normal, { ':path': '/normal' })
        if (res.status === 200) latencies.push(performance.now() - started)
        else failures++
      } catch {
        failures++
      }
      await new Promise(resolve => setTimeout(resolve, 50))
    }
  })()
  await new Promise(resolve => setTimeout(resolve, 200))
  const attack = await rapidReset({ port: front.port, ca: front.ca, path: '/hold', batch: 50, maxStreams: 20_000, durationMs: 10_000, paced: true })
  const afterBy = Date.now() + 500
  await until(() => Date.now() >= afterBy && latencies.length + failures >= 5, 20_000)
  attacking = false
  await normalLoop

  t.equal(attack.goaway, constants.NGHTTP2_ENHANCE_YOUR_CALM, `GOAWAY ENHANCE_YOUR_CALM after ${attack.sent} streams sent (goaway ${String(attack.goaway)}, closed ${String(attack.closed)})`)
  const after = await front.metrics()
  const delta = (name: string, labels: Record<string, string> = {}): number => metric(after, name, labels) - metric(before, name, labels)
  const aborted = delta('edge_proxy_requests_total', { outcome: 'aborted' })
  const reached = upstream.seen.get('/hold') ?? 0
  t.ok(aborted >= 2 * limits.http2MaxResetsPerSecond, `${aborted} reset streams were counted aborted`)
  t.ok(reached <= Math.max(2, aborted * 0.05), `${reached} of them reached the upstream`)
  t.equal(delta('edge_proxy_requests_total', { outcome: 'forwarded' }), latencies.length, 'only the normal client\'s requests are counted forwarded')
  t.ok(delta('edge_http2_rapid_reset_total') >= 1, 'counted in edge_http2_rapid_reset_total')
  t.ok(delta('edge_http2_stream_resets_total') >= 2 * limits.http2MaxResetsPerSecond, 'resets counted in edge_http2_stream_resets_total')
  t.equal(failures, 0, 'the normal client got every answer')
  t.ok(latencies.length >= 5, `${latencies.length} normal requests`)
  const worst = Math.max(...latencies)
  t.ok(worst < 2000, `the normal client's slowest answer took ${Math.round(worst)} ms`)
})

t.test('a stream reset by the client cancels its upstream request at once', async t => {
  const before = await front.metrics()
  const session = await h2Open(front.port, front.ca)
  t.teardown(() => session.destroy())
  const stream = session.request({ ':path': '/hold' })
  stream.on('error', () => {})
  const held = upstream.held.length
  await waitFor('the upstream to receive the request', () => upstream.held.length > held)
  const started = Date.now()
  stream.close(constants.NGHTTP2_CANCEL)
  await defined(upstream.held.at(-1), 'a held upstream request').closed
  t.ok(Date.now() - started < 1000, `the upstream request was cut ${Date.now() - started} ms after the reset`)
  const after = await front.metrics()
  t.equal(metric(after, 'edge_proxy_requests_total', { outcome: 'aborted' }) - metric(before, 'edge_proxy_requests_total', { outcome: 'aborted' }), 1, 'counted aborted')
  t.equal(metric(after, 'edge_proxy_requests_total', { outcome: 'forwarded' }) - metric(before, 'edge_proxy_requests_total', { outcome: 'forwarded' }), 0, 'not forwarded')
  t.equal(metric(after, 'edge_http2_rapid_reset_total'), metric(before, 'edge_http2_rapid_reset_total'), 'one reset is no attack')
})

t.test('concurrent streams per session are bounded by limits.http2MaxConcurrentStreams', async t => {
  upstream.release()
  const session = await h2Open(front.port, front.ca)
  t.teardown(() => session.destroy())
  upstream.resetMaxHeld()
  if (session.remoteSettings.maxConcurrentStreams !== limits.http2MaxConcurrentStreams) await once(session, 'remoteSettings')
  t.equal(session.remoteSettings.maxConcurrentStreams, limits.http2MaxConcurrentStreams, 'announced in SETTINGS')
  const base = upstream.held.length
  const answers = Array.from({ length: 3 * limits.http2MaxConcurrentStreams }, async () => await h2Request(session, { ':path': '/hold' }))
  await waitFor('the first streams to reach the upstream', () => upstream.held.length - base >= limits.http2MaxConcurrentStreams)
  // Give the rest every chance to arrive if the bound did not hold.
  await new Promise(resolve => setTimeout(resolve, 300))
  t.equal(upstream.held.length - base, limits.http2MaxConcurrentStreams, 'no more streams than the bound at once')
  const deadline = Date.now() + 10_000
  let settled = false
  const all = Promise.all(answers).finally(() => { settled = true })
  while (!settled && Date.now() < deadline) {
    upstream.release()
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  const results = await all
  t.ok(results.every(r => r.status === 200), 'every queued stream was served in turn')
  t.equal(upstream.maxHeld(), limits.http2MaxConcurrentStreams, 'never more than the bound at the upstream')
})
