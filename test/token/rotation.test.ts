// Token key rotation through keyd alone (`token.key`): KEY_ROTATE by the admin client, then the JWKS
// gains the next key, tokens switch kid after the verifier cache time, and the old kid stays until
// its last token expired; no restart, no config edit. Every token verifies against the JWKS of its time.
import t from 'tap'
import { rmSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import { calculateJwkThumbprint, createLocalJWKSet, decodeProtectedHeader, jwtVerify, type JWK } from 'jose'
import { startStack, startProxy } from '../helpers/edge.js'
import { startKeyd, type TestKeyd } from '../helpers/keyd.js'
import { askToken, call, sha256Hex, type Target } from '../helpers/token.js'
import { until } from '../helpers/wait.js'

const stack = await startStack()
let keyd: TestKeyd = stack.keyd
const home = stack.keyd.paths.home
t.teardown(async () => { await keyd.stop(); await stack.stop(); rmSync(home, { recursive: true, force: true }) })

const SECRET = 'secret-for-rotation-0123456789abcdef'
const ISSUER = 'https://tokens.test'
const CACHE_S = 2
const POLL_S = 1
const LIFETIME_S = 5
const kidOf = async (name: string): Promise<string> => await calculateJwkThumbprint((await keyd.admin.getPublicKey(name)).publicKey.export({ format: 'jwk' }))

await keyd.admin.createKey('jwt', 'ec-p256', 'token-sign')
const kid1 = await kidOf('jwt')

const proxy = await startProxy(stack, {
  name: 'token-rotation',
  workers: 2,
  extra: {
    token: {
      listen: { host: '127.0.0.1', port: 0 },
      issuer: ISSUER,
      key: { name: 'jwt', pollIntervalSeconds: POLL_S },
      verifierCacheSeconds: CACHE_S,
      maxLifetimeSeconds: LIFETIME_S,
      defaultLifetimeSeconds: LIFETIME_S,
      callers: [{ name: 'svc', secretSha256: sha256Hex(SECRET), audiences: ['api'] }],
      spike: { cacheWindowMs: 0 }
    }
  }
})
t.teardown(() => proxy.stop())
const ready = await proxy.waitFor(o => o.msg === 'token endpoint listening')
const target: Target = { port: ready.port as number }
const jwks = async (): Promise<{ keys: JWK[] }> => (await call(target, { path: '/.well-known/jwks.json' })).json()
const kids = (set: { keys: JWK[] }): string[] => set.keys.map(k => k.kid as string)

/** A JWKS as fetched: asked at `atMs`, answered by `doneMs` (the proxy's moment lies between). */
interface Snapshot { atMs: number, doneMs: number, set: { keys: JWK[] } }
const snapshot = async (): Promise<Snapshot> => {
  const atMs = Date.now()
  const set = await jwks()
  return { atMs, doneMs: Date.now(), set }
}
interface Issued { atMs: number, token: string, kid: string, exp: number, jwks: Snapshot }

t.test('keyedge keyd key rotate alone: next, then active after the cache time, old kid kept until expiry', async t => {
  const initial = await snapshot()
  t.same(kids(initial.set), [kid1], 'one version: active at once')
  const asked = Date.now()
  const rotated = await keyd.admin.rotateKey('jwt')
  const rotatedAt = Date.now()
  t.equal(rotated.version, 2)
  const createdAtMs = rotated.versions.find(v => v.version === 2)?.createdAtMs ?? NaN
  t.ok(createdAtMs >= asked && createdAtMs <= rotatedAt, 'KEY_VERSIONS reports the creation time (keyd\'s clock while it rotated)')
  const kid2 = await kidOf('jwt')
  t.not(kid2, kid1)

  // The JWKS before the rotation counts: there is always a last one without the new key.
  const snapshots: Snapshot[] = [initial]
  const issued: Issued[] = []
  const deadline = rotatedAt + (POLL_S + CACHE_S + LIFETIME_S + 8) * 1000
  while (Date.now() < deadline) {
    const snap = await snapshot()
    snapshots.push(snap)
    const r = await askToken(target, SECRET, { audience: 'api' })
    t.equal(r.status, 200, r.body)
    const token = r.json().access_token as string
    const body = token.split('.')[1]
    if (body === undefined) throw new Error(`not a compact JWT: ${token}`)
    const payload = JSON.parse(Buffer.from(body, 'base64url').toString()) as { exp: number }
    issued.push({ atMs: Date.now(), token, kid: decodeProtectedHeader(token).kid as string, exp: payload.exp, jwks: snap })
    if (!kids(snap.set).includes(kid1) && issued.some(i => i.kid === kid2)) break
    await sleep(200)
  }

  const firstNext = snapshots.find(s => kids(s.set).includes(kid2))
  t.ok(firstNext, 'the JWKS gains the next key')
  // Within one poll: judged by the JWKS fetches still without it, each asked before the proxy answered,
  // so a slow fetch loop on a loaded machine cannot fail this; only a late poll in the proxy can.
  const lastWithout = snapshots.filter(s => !kids(s.set).includes(kid2)).at(-1)
  t.ok(lastWithout !== undefined && lastWithout.atMs < createdAtMs + (POLL_S + 1) * 1000,
    `the JWKS gains the next key within one poll (last fetch without it asked at +${lastWithout !== undefined ? lastWithout.atMs - createdAtMs : -1} ms)`)
  const firstNew = issued.find(i => i.kid === kid2)
  t.ok(firstNew, 'tokens switch to the new kid without a restart')
  t.ok(firstNew !== undefined && firstNew.atMs >= createdAtMs + CACHE_S * 1000, `not before verifierCacheSeconds (${firstNew !== undefined ? firstNew.atMs - createdAtMs : -1} ms)`)
  t.ok(firstNew !== undefined && lastWithout !== undefined && firstNew.atMs - lastWithout.atMs >= CACHE_S * 1000, 'every JWKS without the new key is older than the cache time when it first signs')
  t.notOk(issued.some(i => i.kid === kid1 && firstNew !== undefined && i.atMs > firstNew.atMs), 'no token with the old kid after the switch')
  const lastOld = issued.filter(i => i.kid === kid1).at(-1)
  t.ok(lastOld, 'tokens with the old kid were issued during the overlap')
  for (const s of snapshots) {
    // Answered before the last old token expired (doneMs < exp): the old kid must be there.
    if (lastOld !== undefined && s.doneMs < lastOld.exp * 1000) t.ok(kids(s.set).includes(kid1), `old kid published at +${s.atMs - rotatedAt} ms, before its last token expired`)
  }
  t.notOk(kids(snapshots.at(-1)?.set ?? { keys: [] }).includes(kid1), 'the old kid leaves the JWKS after its tokens expired')

  for (const i of issued) {
    // The JWKS fetched at issue time, and every later one until the token expires: what a caching verifier holds.
    for (const s of snapshots.filter(s => s.atMs >= i.jwks.atMs && s.doneMs < i.exp * 1000)) {
      await t.resolves(jwtVerify(i.token, createLocalJWKSet(s.set), { issuer: ISSUER, audience: 'api', currentDate: new Date(s.atMs), clockTolerance: 1 }),
        `token of +${i.atMs - rotatedAt} ms (${i.kid === kid1 ? 'old' : 'new'} kid) verifies with the JWKS of +${s.atMs - rotatedAt} ms`)
    }
  }
  // A verifier that fetched the JWKS up to verifierCacheSeconds before the token was issued also verifies it.
  for (const i of issued) {
    const cached = snapshots.filter(s => s.atMs >= i.atMs - (CACHE_S * 1000 - 500) && s.atMs <= i.atMs)
    for (const s of cached) {
      await t.resolves(jwtVerify(i.token, createLocalJWKSet(s.set), { issuer: ISSUER, audience: 'api', currentDate: new Date(i.atMs), clockTolerance: 1 }), 'verifies with a JWKS cached before it')
    }
  }
})

t.test('keyd down: the JWKS keeps serving the versions known; tokens resume when keyd is back', async t => {
  const before = kids(await jwks())
  const mark = proxy.lines.length
  await keyd.stop()
  // Every worker has since polled keyd and failed (its log says so): waited for, not slept.
  const failedPolls = (): boolean => {
    const pids = new Set(proxy.lines.slice(mark).flatMap(l => {
      try { const o = JSON.parse(l); return o.msg === 'token key versions not refreshed; serving with the versions known' ? [o.pid as number] : [] } catch { return [] }
    }))
    const workers = proxy.workerPids()
    return workers.length > 0 && workers.every(pid => pids.has(pid))
  }
  t.ok(await until(failedPolls, 30_000), 'every worker saw keyd unreachable')
  const r = await call(target, { path: '/.well-known/jwks.json' })
  t.equal(r.status, 200)
  t.same(kids(r.json()), before, 'same keys while keyd is unreachable')
  t.equal((await askToken(target, SECRET, { audience: 'api' })).status, 503, 'no signer: 503, never a hang')
  keyd = await startKeyd(home)
  const deadline = Date.now() + 10_000
  let status = 0
  while (Date.now() < deadline && status !== 200) {
    status = (await askToken(target, SECRET, { audience: 'api' })).status
    if (status !== 200) await sleep(200)
  }
  t.equal(status, 200, 'tokens again once keyd is back')
})
