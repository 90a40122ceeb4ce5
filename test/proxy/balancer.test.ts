// Pure parts of upstream pools: target choice (weighted round-robin, power of two choices,
// consistent hashing), outlier ejection and the retry budget.
import t from 'tap'
import { Balancer, HashRing, hashKey, Target } from '../../src/proxy/balancer.js'
import { clientAddress } from '../../src/proxy/client-address.js'
import { OutlierDetector } from '../../src/proxy/health.js'
import { replayable, RetryBudget, retriableError } from '../../src/proxy/retry.js'

/** One target per weight, as a tuple as long as the weights (so ts[0] … are typed as present). */
const targets = <W extends number[]>(...weights: W): { [K in keyof W]: Target } =>
  weights.map((weight, i) => new Target({ url: `http://10.0.0.${i + 1}:80`, weight })) as { [K in keyof W]: Target }
const all = (): boolean => true

t.test('weighted round-robin: exact shares, spread out', async t => {
  const ts = targets(5, 1, 1)
  const b = new Balancer(ts, 'round_robin')
  const seq = Array.from({ length: 70 }, () => b.pick(all)?.url)
  const count = (url: string): number => seq.filter(u => u === url).length
  t.same([count(ts[0].url), count(ts[1].url), count(ts[2].url)], [50, 10, 10], 'weights 5:1:1 over 70 picks')
  // Smooth: the heavy target never gets more than 5 turns in a row.
  let run = 0
  let longest = 0
  for (const u of seq) { run = u === ts[0].url ? run + 1 : 0; longest = Math.max(longest, run) }
  t.ok(longest <= 5, `longest run of the heavy target: ${longest}`)
  t.equal(b.pick(t => t !== ts[0]) !== ts[0], true, 'an excluded target is skipped')
  t.equal(b.pick(() => false), undefined, 'no eligible target → undefined')
})

t.test('least outstanding (power of two choices) prefers the idle target, by weight', async t => {
  const ts = targets(1, 1)
  ts[0].outstanding = 10
  const b = new Balancer(ts, 'least_outstanding')
  for (let i = 0; i < 20; i++) t.equal(b.pick(all), ts[1])
  const w = targets(4, 1)
  w[0].outstanding = 3
  w[1].outstanding = 1
  t.equal(new Balancer(w, 'least_outstanding').pick(all), w[0], '3 in flight at weight 4 beats 1 at weight 1')
  t.equal(b.pick(t => t === ts[0]), ts[0], 'one eligible target is the answer')
})

t.test('consistent hashing: stable, spread, ~1/N moved when a target is added or removed', async t => {
  const keys = Array.from({ length: 20_000 }, (_, i) => `client-${i}`)
  const five = targets(1, 1, 1, 1, 1)
  const ring5 = new HashRing(five)
  const owner5 = keys.map(k => ring5.lookup(k, all)?.url)
  t.same(keys.slice(0, 100).map(k => ring5.lookup(k, all)?.url), owner5.slice(0, 100), 'same key, same target')
  for (const target of five) {
    const share = owner5.filter(u => u === target.url).length / keys.length
    t.ok(share > 0.14 && share < 0.26, `share of ${target.url}: ${share.toFixed(3)} (ideal 0.2)`)
  }
  const six = [...five, new Target({ url: 'http://10.0.0.6:80', weight: 1 })]
  const ring6 = new HashRing(six)
  const owner6 = keys.map(k => ring6.lookup(k, all)?.url)
  const moved = owner6.filter((u, i) => u !== owner5[i])
  t.ok(moved.every(u => u === 'http://10.0.0.6:80'), 'adding a target moves keys only to it')
  const addShare = moved.length / keys.length
  t.ok(addShare > 0.1 && addShare < 0.24, `adding 1 to 5 moved ${addShare.toFixed(3)} of the keys (ideal 1/6 = 0.167)`)
  const four = five.slice(1)
  const ring4 = new HashRing(four)
  const owner4 = keys.map(k => ring4.lookup(k, all)?.url)
  const movedOut = owner4.filter((u, i) => u !== owner5[i]).length / keys.length
  const removedShare = owner5.filter(u => u === five[0].url).length / keys.length
  t.equal(movedOut, removedShare, 'removing a target moves exactly the keys it owned')
  t.ok(movedOut > 0.12 && movedOut < 0.28, `removing 1 of 5 moved ${movedOut.toFixed(3)} (ideal 0.2)`)
  const down = ring5.lookup('client-1', all)!
  const next = ring5.lookup('client-1', x => x !== down)
  t.ok(next !== undefined && next !== down, 'a down target\'s keys go to the next target on the ring')
  const heavy = targets(3, 1)
  const ringW = new HashRing(heavy)
  const heavyShare = keys.filter(k => ringW.lookup(k, all) === heavy[0]).length / keys.length
  t.ok(heavyShare > 0.65 && heavyShare < 0.85, `weight 3:1 → share ${heavyShare.toFixed(3)} (ideal 0.75)`)
  const big = targets(1000, 1000, 500)
  const started = performance.now()
  const ringBig = new HashRing(big)
  const builtMs = performance.now() - started
  const bigShare = keys.filter(k => ringBig.lookup(k, all) === big[2]).length / keys.length
  t.ok(bigShare > 0.14 && bigShare < 0.26, `weights 1000:1000:500 (capped ring) → share ${bigShare.toFixed(3)} (ideal 0.2)`)
  t.ok(builtMs < 5000, `a capped ring builds in ${builtMs.toFixed(0)} ms`)
})

t.test('hash keys: client address (trusted X-Forwarded-For), header, cookie', async t => {
  const trusted = (a: string): boolean => a === '10.0.0.1'
  t.equal(clientAddress({ 'x-forwarded-for': '1.2.3.4' }, '192.0.2.9', trusted), '192.0.2.9', 'untrusted peer: its own address')
  t.equal(clientAddress({ 'x-forwarded-for': '9.9.9.9, 1.2.3.4' }, '10.0.0.1', trusted), '1.2.3.4', 'trusted peer: the nearest untrusted hop')
  const cfg = { policy: 'hash' as const, hashOn: 'header' as const, hashKey: 'X-User' }
  t.equal(hashKey(cfg, { 'x-user': 'alice' }, () => 'peer'), 'alice')
  t.equal(hashKey({ ...cfg, hashOn: 'cookie', hashKey: 'sid' }, { cookie: 'a=1; sid=xyz; b=2' }, () => 'peer'), 'xyz')
  t.equal(hashKey({ ...cfg, hashOn: 'cookie', hashKey: 'sid' }, {}, () => 'peer'), undefined, 'no cookie → no key (round-robin)')
  t.equal(hashKey({ ...cfg, hashOn: 'client' }, {}, () => 'peer'), 'peer')
  t.equal(hashKey({ ...cfg, policy: 'round_robin' }, { 'x-user': 'alice' }, () => 'peer'), undefined)
})

t.test('outlier ejection: threshold, doubling backoff, capped share', async t => {
  const ts = targets(1, 1, 1, 1)
  const ejected: number[] = []
  const o = new OutlierDetector(ts, { consecutiveFailures: 3, baseEjectionMs: 1000, maxEjectionMs: 3000, maxEjectedPercent: 50 }, (_, ms) => ejected.push(ms))
  const now = 1_000_000
  const a = ts[0]
  o.failure(a, now); o.failure(a, now)
  o.success(a, now)
  o.failure(a, now); o.failure(a, now)
  t.ok(a.eligible(now), 'a success resets the streak')
  o.failure(a, now)
  t.notOk(a.eligible(now), 'third consecutive failure ejects')
  t.ok(a.eligible(now + 1000), 'back after the base ejection')
  for (let i = 0; i < 3; i++) o.failure(a, now + 1000)
  for (let i = 0; i < 3; i++) o.failure(a, now + 3000)
  t.same(ejected, [1000, 2000, 3000], 'each ejection doubles, up to maxEjectionMs')
  for (const x of ts.slice(1)) for (let i = 0; i < 3; i++) o.failure(x, now + 3000)
  t.equal(ts.filter(x => !x.eligible(now + 3000)).length, 2, 'never more than 50 % of the pool ejected')
  const single = targets(1)
  const o1 = new OutlierDetector(single, { consecutiveFailures: 1, baseEjectionMs: 1000, maxEjectionMs: 1000, maxEjectedPercent: 100 }, () => {})
  o1.failure(single[0], now)
  t.ok(single[0].eligible(now), 'the last eligible target is never ejected')
})

t.test('retry budget: at most budgetPercent extra, minRetries floor, 10 s window', async t => {
  const b = new RetryBudget({ attempts: 1, retryOn: [], budgetPercent: 10, minRetries: 2 })
  const now = 5_000_000
  for (let i = 0; i < 100; i++) b.request(now)
  let granted = 0
  for (let i = 0; i < 50; i++) if (b.tryRetry(now)) granted++
  t.equal(granted, 10, '10 % of 100 requests')
  t.notOk(b.tryRetry(now + 9_000), 'still spent 9 s later')
  t.ok(b.tryRetry(now + 11_000), 'the window moved on: minRetries again')
  const idle = new RetryBudget({ attempts: 1, retryOn: [], budgetPercent: 0, minRetries: 0 })
  t.notOk(idle.tryRetry(now), 'budget 0 and no floor: never')
  t.ok(replayable('GET', false))
  t.notOk(replayable('POST', false), 'POST is not idempotent')
  t.notOk(replayable('PUT', true), 'a body cannot be replayed')
  t.ok(retriableError('ECONNREFUSED'))
  t.notOk(retriableError('UND_ERR_HEADERS_TIMEOUT'), 'a slow answer is not retried (the target may be working on it)')
})

t.test('config: a pool is validated with field paths, in the order of the fields', async t => {
  const { validateConfig } = await import('../../src/config/index.js')
  const { ConfigInvalidError } = await import('../../src/errors.js')
  const base = { certificates: [{ name: 'c', serverNames: ['localhost'], files: [{ cert: 'c.crt', key: 'c.key' }] }] }
  const problemsOf = (routes: unknown[]): string[] => {
    try {
      validateConfig({ ...base, routes }, { baseDir: '/etc/keyedge' })
      return []
    } catch (err) {
      return err instanceof ConfigInvalidError ? err.problems : [String(err)]
    }
  }
  t.same(problemsOf([
    { pathPrefix: '/a' },
    { pathPrefix: '/b', upstream: 'http://127.0.0.1:1', upstreams: [{ url: 'http://127.0.0.1:2' }] },
    { pathPrefix: '/c', upstreams: [{ url: 'http://127.0.0.1:2/' }, { url: 'http://127.0.0.1:2', weight: 0 }], balance: { policy: 'hash', hashOn: 'cookie' } },
    { pathPrefix: '/d', upstreams: [], outlier: { baseEjectionMs: 5000, maxEjectionMs: 1000 }, healthCheck: { intervalMs: 10 }, retry: { retryOn: [404] } }
  ]), [
    'routes[0]: needs "upstream" (one origin) or "upstreams" (a pool)',
    'routes[1].upstreams: give either "upstream" or "upstreams", not both',
    'routes[2].upstreams[1].url: "http://127.0.0.1:2" is already upstreams[0]',
    'routes[2].upstreams[1].weight: must be between 1 and 1000, got 0',
    'routes[2].balance.hashKey: names the cookie to hash: required with hashOn "cookie"',
    'routes[3].upstreams: must not be empty',
    'routes[3].healthCheck.intervalMs: must be between 100 and 3600000, got 10',
    'routes[3].outlier.maxEjectionMs: must not be lower than baseEjectionMs (5000)',
    'routes[3].retry.retryOn[0]: must be between 500 and 599, got 404'
  ])
  const ok = validateConfig({ ...base, routes: [{ upstreams: [{ url: 'http://127.0.0.1:2/' }], healthCheck: {} }] }, { baseDir: '/etc/keyedge' })
  t.same(ok.routes[0]?.upstreams, [{ url: 'http://127.0.0.1:2', weight: 1 }], 'reduced to the origin, weight 1')
  t.same(ok.routes[0]?.healthCheck, { protocol: 'http', path: '/healthz', intervalMs: 5000, timeoutMs: 2000, healthyThreshold: 2, unhealthyThreshold: 2, expectedStatuses: [200] })
})
