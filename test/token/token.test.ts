// The token endpoint end to end: a real keyd and a real proxy; tokens verified with jose against the
// JWKS and with openssl against keyd's public key; bad input refused; caching, coalescing and batching
// observed as keyd signatures counted by keyd itself.
import t from 'tap'
import { writeFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { createLocalJWKSet, jwtVerify, decodeProtectedHeader, calculateJwkThumbprint, type JWK } from 'jose'
import { startStack, startProxy } from '../helpers/edge.js'
import { startKeyd, type TestKeyd } from '../helpers/keyd.js'
import { askToken, call, opensslVerify, sha256Hex, type HttpReply, type Target } from '../helpers/token.js'

const stack = await startStack()
let keyd: TestKeyd = stack.keyd
const home = stack.keyd.paths.home
t.teardown(async () => { await keyd.stop(); await stack.stop(); rmSync(home, { recursive: true, force: true }) })

await keyd.admin.createKey('jwt-a', 'ec-p256', 'token-sign')
await keyd.admin.createKey('jwt-next', 'ec-p256', 'token-sign')
await keyd.admin.createKey('jwt-old', 'ec-p256', 'token-sign')
await keyd.admin.createKey('jwt-gone', 'ec-p256', 'token-sign')

const SECRET_A = 'secret-for-svc-a-0123456789abcdef'
const SECRET_B = 'secret-for-svc-b-fedcba9876543210'
writeFileSync(join(home, 'svc-b.secret'), SECRET_B + '\n', { mode: 0o600 })
const ISSUER = 'https://tokens.test'
const now = Date.now()

const proxy = await startProxy(stack, {
  name: 'token-main',
  admin: {},
  extra: {
    token: {
      listen: { host: '127.0.0.1', port: 0 },
      issuer: ISSUER,
      keys: [
        { name: 'jwt-a', role: 'active' },
        { name: 'jwt-next', role: 'next' },
        { name: 'jwt-old', role: 'retired', retiredAt: new Date(now - 60_000).toISOString() },
        { name: 'jwt-gone', role: 'retired', retiredAt: new Date(now - 7200_000).toISOString() }
      ],
      maxLifetimeSeconds: 3600,
      callers: [
        { name: 'svc-a', secretSha256: sha256Hex(SECRET_A), audiences: ['api', 'billing'], claims: ['sub', 'scope'], maxLifetimeSeconds: 600 },
        { name: 'svc-b', secretFile: join(home, 'svc-b.secret'), audiences: ['api'] }
      ],
      maxBodyBytes: 1024,
      spike: { cacheWindowMs: 5000, batchWindowMs: 40, batchMaxSize: 16 }
    }
  }
})
t.teardown(() => proxy.stop())
const ready = await proxy.waitFor(o => o.msg === 'token endpoint listening')
const target: Target = { port: ready.port as number }

/** Stops keyd, returns how many signatures it made since it started, and starts a fresh one. */
async function keydSignatures (): Promise<number> {
  await keyd.stop()
  let n = -1
  for (const line of keyd.lines) {
    try { const o = JSON.parse(line); if (o.msg === 'keyd stopping') n = o.signatures } catch { /* not JSON */ }
  }
  keyd = await startKeyd(home)
  return n
}

const jwks = async (): Promise<{ keys: JWK[] }> => (await call(target, { path: '/.well-known/jwks.json' })).json()

t.test('a token verifies with jose against the JWKS and with openssl against keyd\'s public key', async t => {
  const r = await askToken(target, SECRET_A, { audience: 'api', lifetimeSeconds: 120, claims: { sub: 'user-7', scope: 'read' } })
  t.equal(r.status, 200, r.body)
  t.equal(r.headers['cache-control'], 'no-store')
  const { access_token: token, token_type: type, expires_in: expiresIn } = r.json()
  t.equal(type, 'Bearer')
  t.ok(expiresIn > 100 && expiresIn <= 120)
  const set = await jwks()
  const { payload, protectedHeader } = await jwtVerify(token, createLocalJWKSet(set), { issuer: ISSUER, audience: 'api', algorithms: ['ES256'] })
  t.equal(protectedHeader.alg, 'ES256')
  t.equal(protectedHeader.typ, 'JWT')
  const active = set.keys.find(k => k.kid === protectedHeader.kid)
  t.ok(active, 'kid names a JWKS key')
  t.equal(protectedHeader.kid, await calculateJwkThumbprint(active as JWK, 'sha256'), 'kid is the RFC 7638 thumbprint')
  t.equal(payload.sub, 'user-7')
  t.equal(payload.scope, 'read')
  t.equal(payload.client_id, 'svc-a')
  t.equal(payload.exp! - payload.iat!, 120)
  t.equal(payload.nbf, payload.iat)
  t.match(payload.jti, /^[A-Za-z0-9_-]{22}$/)
  t.match(await opensslVerify(keyd.admin, 'jwt-a', token), /Verified OK/)
  const secretFileCaller = await askToken(target, SECRET_B, {})
  t.equal(secretFileCaller.status, 200, 'a caller whose secret is in a file; its one audience is the default')
  t.equal((await jwtVerify(secretFileCaller.json().access_token, createLocalJWKSet(set), { audience: 'api' })).payload.client_id, 'svc-b')
})

t.test('JWKS: active and next published, a retired key until its last token expired; discovery', async t => {
  const r = await call(target, { path: '/.well-known/jwks.json' })
  t.equal(r.status, 200)
  t.match(r.headers['cache-control'], /max-age=300/)
  const kids = new Set(r.json().keys.map((k: JWK) => k.kid))
  const thumb = async (name: string): Promise<string> => await calculateJwkThumbprint((await keyd.admin.getPublicKey(name)).publicKey.export({ format: 'jwk' }), 'sha256')
  t.ok(kids.has(await thumb('jwt-a')), 'active')
  t.ok(kids.has(await thumb('jwt-next')), 'next, before it signs')
  t.ok(kids.has(await thumb('jwt-old')), 'retired a minute ago: tokens it signed may live an hour')
  t.notOk(kids.has(await thumb('jwt-gone')), 'retired two hours ago: every token it signed has expired')
  t.equal(kids.size, 3)
  for (const k of r.json().keys) { t.equal(k.use, 'sig'); t.equal(k.alg, 'ES256'); t.notOk('d' in k, 'no private member') }
  const d = (await call(target, { path: '/.well-known/openid-configuration' })).json()
  t.equal(d.issuer, ISSUER)
  t.equal(d.jwks_uri, `${ISSUER}/.well-known/jwks.json`)
  t.same(d.id_token_signing_alg_values_supported, ['ES256'])
})

t.test('bad input: each a clear 4xx with an error code, and nothing signed', async t => {
  await keydSignatures()
  const cases: Array<[string, () => Promise<HttpReply>, number, string]> = [
    ['no credentials', async () => await askToken(target, undefined, { audience: 'api' }), 401, 'EDGE_ERR_TOKEN_UNAUTHENTICATED'],
    ['wrong secret', async () => await askToken(target, 'not-the-secret', { audience: 'api' }), 401, 'EDGE_ERR_TOKEN_UNAUTHENTICATED'],
    ['malformed Authorization', async () => await askToken(target, undefined, { audience: 'api' }, { authorization: 'Basic abc' }), 401, 'EDGE_ERR_TOKEN_UNAUTHENTICATED'],
    ['malformed JSON', async () => await askToken(target, SECRET_A, '{"audience": "api",'), 400, 'EDGE_ERR_TOKEN_BAD_JSON'],
    ['not an object', async () => await askToken(target, SECRET_A, '[1,2]'), 400, 'EDGE_ERR_TOKEN_BAD_REQUEST'],
    ['unknown field', async () => await askToken(target, SECRET_A, { audience: 'api', admin: true }), 400, 'EDGE_ERR_TOKEN_BAD_REQUEST'],
    ['unknown claim', async () => await askToken(target, SECRET_A, { audience: 'api', claims: { role: 'admin' } }), 400, 'EDGE_ERR_TOKEN_CLAIM_NOT_ALLOWED'],
    ['reserved claim', async () => await askToken(target, SECRET_A, { audience: 'api', claims: { exp: 9999999999 } }), 400, 'EDGE_ERR_TOKEN_CLAIM_NOT_ALLOWED'],
    ['claim of another caller', async () => await askToken(target, SECRET_B, { claims: { sub: 'x' } }), 400, 'EDGE_ERR_TOKEN_CLAIM_NOT_ALLOWED'],
    ['audience not allowed', async () => await askToken(target, SECRET_A, { audience: 'payroll' }), 403, 'EDGE_ERR_TOKEN_AUDIENCE_NOT_ALLOWED'],
    ['lifetime over the maximum', async () => await askToken(target, SECRET_A, { audience: 'api', lifetimeSeconds: 601 }), 400, 'EDGE_ERR_TOKEN_LIFETIME_TOO_LONG'],
    ['lifetime not an integer', async () => await askToken(target, SECRET_A, { audience: 'api', lifetimeSeconds: 'long' }), 400, 'EDGE_ERR_TOKEN_BAD_REQUEST'],
    ['oversize body', async () => await askToken(target, SECRET_A, { audience: 'api', claims: { scope: 'x'.repeat(5000) } }), 413, 'EDGE_ERR_TOKEN_BODY_TOO_LARGE'],
    ['oversize chunked body', async () => await call(target, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${SECRET_A}`, 'transfer-encoding': 'chunked' }, body: JSON.stringify({ audience: 'api', claims: { scope: 'y'.repeat(3000) } }) }), 413, 'EDGE_ERR_TOKEN_BODY_TOO_LARGE'],
    ['not JSON content type', async () => await askToken(target, SECRET_A, 'audience=api', { 'content-type': 'application/x-www-form-urlencoded' }), 415, 'EDGE_ERR_TOKEN_UNSUPPORTED_MEDIA_TYPE'],
    ['GET /token', async () => await call(target, { path: '/token' }), 405, 'EDGE_ERR_TOKEN_METHOD_NOT_ALLOWED'],
    ['unknown path', async () => await call(target, { path: '/admin' }), 404, 'EDGE_ERR_TOKEN_NOT_FOUND']
  ]
  for (const [name, send, status, code] of cases) {
    const r = await send()
    t.equal(r.status, status, `${name}: ${status}`)
    t.equal(r.json().code, code, `${name}: ${code}`)
    t.notMatch(r.body, SECRET_A, `${name}: no secret echoed`)
    t.notMatch(r.body, /eyJ/, `${name}: no token`)
  }
  t.equal(await keydSignatures(), 0, 'keyd signed nothing')
  t.notOk(proxy.lines.some(l => l.includes(SECRET_A) || l.includes(SECRET_B)), 'no secret in any log line')
})

t.test('identical requests within the window share one signature', async t => {
  await keydSignatures()
  const tokens = new Set<string>()
  const sources: string[] = []
  for (let i = 0; i < 20; i++) {
    const r = await askToken(target, SECRET_A, { audience: 'billing', claims: { scope: 'cached' } })
    t.equal(r.status, 200)
    tokens.add(r.json().access_token)
    sources.push(String(r.headers['x-keyedge-token-source']))
  }
  t.equal(tokens.size, 1, 'one token for 20 identical requests')
  t.equal(sources.filter(s => s === 'cache').length, 19)
  t.equal(await keydSignatures(), 1, 'keyd made one signature')
})

t.test('concurrent identical requests coalesce into one keyd call; distinct ones are batched', async t => {
  await keydSignatures()
  const same = await Promise.all(Array.from({ length: 20 }, async () => await askToken(target, SECRET_A, { audience: 'api', claims: { scope: 'together' } })))
  t.ok(same.every(r => r.status === 200))
  t.equal(new Set(same.map(r => r.json().access_token)).size, 1, 'all 20 got the same token')
  // Which of the two depends on when each request arrives (a loaded machine serves some after the first
  // signature landed in the cache); that none but one was signed does not.
  const sources = same.map(r => r.headers['x-keyedge-token-source'])
  t.equal(sources.filter(s => s === 'signed').length, 1, 'one request was signed')
  t.equal(sources.filter(s => s === 'coalesced' || s === 'cache').length, 19, 'the 19 others joined it in flight or took it from the cache')
  t.equal(await keydSignatures(), 1, 'one keyd signature for 20 concurrent identical requests')

  const metricsBefore = await batchCounts()
  const distinct = await Promise.all(Array.from({ length: 12 }, async (_, i) => await askToken(target, SECRET_A, { audience: 'api', claims: { sub: `user-${i}` } })))
  t.ok(distinct.every(r => r.status === 200 && r.headers['x-keyedge-token-source'] === 'signed'))
  const set = createLocalJWKSet(await jwks())
  for (const r of distinct) await jwtVerify(r.json().access_token, set, { audience: 'api', issuer: ISSUER })
  t.equal(await keydSignatures(), 12, 'one keyd signature per distinct request')
  const metricsAfter = await batchCounts()
  if (metricsBefore !== undefined && metricsAfter !== undefined) {
    t.equal(metricsAfter.sum - metricsBefore.sum, 12, 'batch sizes add up to the signatures')
    t.ok(metricsAfter.count - metricsBefore.count <= 3, `12 signatures went out in ${metricsAfter.count - metricsBefore.count} keyd calls`)
  } else {
    t.fail('admin /metrics did not expose edge_token_batch_size')
  }
})

t.test('a cached token is still valid, and the kid of every token is the active key', async t => {
  const r = await askToken(target, SECRET_A, { audience: 'billing', claims: { scope: 'cached' } })
  const h = decodeProtectedHeader(r.json().access_token)
  const active = await calculateJwkThumbprint((await keyd.admin.getPublicKey('jwt-a')).publicKey.export({ format: 'jwk' }), 'sha256')
  t.equal(h.kid, active)
})

async function batchCounts (): Promise<{ sum: number, count: number } | undefined> {
  if (proxy.adminPort === undefined) return undefined
  const r = await call({ port: proxy.adminPort }, { path: '/metrics' })
  const sum = /^edge_token_batch_size_sum(?:\{[^}]*\})? (\d+)/m.exec(r.body)
  const count = /^edge_token_batch_size_count(?:\{[^}]*\})? (\d+)/m.exec(r.body)
  return sum === null || count === null ? undefined : { sum: Number(sum[1]), count: Number(count[1]) }
}
