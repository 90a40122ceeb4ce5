// Token endpoint: RS256 over mutual TLS, PS256 and EdDSA verified by jose and openssl; a tls-server key
// refused (by keyd, and so the proxy will not start); a burst answered at once with 429 + Retry-After.
import t from 'tap'
import { readFileSync, rmSync } from 'node:fs'
import { createLocalJWKSet, jwtVerify } from 'jose'
import { startStack, startProxy, type TestProxy } from '../helpers/edge.js'
import { KeydRemoteError } from '../../keyd/errors.js'
import { errorCode, errorMessage } from '../../lib/errors.js'
import { askToken, call, clientCertificates, opensslVerify, sha256Hex, type Target } from '../helpers/token.js'

const stack = await startStack()
const home = stack.keyd.paths.home
t.teardown(async () => { await stack.stop(); rmSync(home, { recursive: true, force: true }) })
const admin = stack.keyd.admin
await admin.createKey('jwt-rsa', 'rsa-2048', 'token-sign')
await admin.createKey('jwt-ed', 'ed25519', 'token-sign')
const SECRET = 'algorithms-test-secret-0123456789'
const ISSUER = 'https://tokens.test'

async function tokenProxy (name: string, token: Record<string, unknown>): Promise<{ proxy: TestProxy, port: number }> {
  const proxy = await startProxy(stack, { name, extra: { token: { listen: { host: '127.0.0.1', port: 0 }, issuer: ISSUER, ...token } } })
  t.teardown(() => proxy.stop())
  const ready = await proxy.waitFor(o => o.msg === 'token endpoint listening')
  return { proxy, port: ready.port as number }
}

const caller = { name: 'svc', secretSha256: sha256Hex(SECRET), audiences: ['api'] }

for (const alg of ['PS256', 'EdDSA'] as const) {
  t.test(`${alg}: verifies with jose against the JWKS and with openssl`, async t => {
    const keyName = alg === 'PS256' ? 'jwt-rsa' : 'jwt-ed'
    const { port } = await tokenProxy(`token-${alg}`, { keys: [{ name: keyName, algorithm: alg }], callers: [caller] })
    const target: Target = { port }
    const r = await askToken(target, SECRET, { audience: 'api' })
    t.equal(r.status, 200, r.body)
    const jwks = (await call(target, { path: '/.well-known/jwks.json' })).json()
    const { protectedHeader } = await jwtVerify(r.json().access_token, createLocalJWKSet(jwks), { issuer: ISSUER, audience: 'api', algorithms: [alg] })
    t.equal(protectedHeader.alg, alg)
    t.match(await opensslVerify(admin, keyName, r.json().access_token), alg === 'EdDSA' ? /Signature Verified Successfully/ : /Verified OK/)
  })
}

t.test('RS256 over mutual TLS: a client certificate authenticates the caller', async t => {
  const client = clientCertificates(home)
  const leaf = stack.certs.leaves.find(l => l.keyType === 'ec-p256')!
  const { port } = await tokenProxy('token-mtls', {
    tls: { cert: leaf.certFile, key: leaf.keyRefFile, clientCa: client.caFile },
    keys: [{ name: 'jwt-rsa', algorithm: 'RS256' }],
    callers: [{ name: 'svc-m', clientCertSha256: client.fingerprint, audiences: ['api'], claims: ['scope'] }]
  })
  const ca = readFileSync(stack.caFile, 'utf8')
  const withCert: Target = { port, tls: { ca, cert: client.cert, key: client.key } }
  const r = await askToken(withCert, undefined, { claims: { scope: 'mtls' } })
  t.equal(r.status, 200, r.body)
  const jwks = (await call(withCert, { path: '/.well-known/jwks.json' })).json()
  const { payload } = await jwtVerify(r.json().access_token, createLocalJWKSet(jwks), { issuer: ISSUER, audience: 'api', algorithms: ['RS256'] })
  t.equal(payload.client_id, 'svc-m')
  t.equal(payload.scope, 'mtls')
  t.match(await opensslVerify(admin, 'jwt-rsa', r.json().access_token), /Verified OK/)
  const noCert = await askToken({ port, tls: { ca } }, undefined, {})
  t.equal(noCert.status, 401)
  t.equal(noCert.json().code, 'EDGE_ERR_TOKEN_UNAUTHENTICATED')
})

t.test('a tls-server key is refused: keyd will not sign a JWT with it, and the proxy does not start', async t => {
  const tlsKey = stack.certs.leaves.find(l => l.keyType === 'ec-p256')!.keyName
  const input = Buffer.from('eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0')
  const refused = await admin.sign(tlsKey, 'ecdsa-sha256', input, { ieeeP1363: true }).catch((e: unknown) => e)
  t.ok(refused instanceof KeydRemoteError)
  t.equal(errorCode(refused), 'KEYD_ERR_POLICY_DENIED_MESSAGE')
  const [denied, signed] = await admin.signBatch([{ name: tlsKey, algorithm: 'ecdsa-sha256', message: input }, { name: 'jwt-ed', algorithm: 'ed25519', message: input }])
  t.equal(errorCode(denied), 'KEYD_ERR_POLICY_DENIED_MESSAGE', 'refused inside a batch too')
  t.ok(signed !== undefined && !(signed instanceof KeydRemoteError) && Buffer.isBuffer(signed.signature), 'the other entry is signed')
  const proxy = await startProxy(stack, { name: 'token-tls-key', extra: { token: { issuer: ISSUER, listen: { host: '127.0.0.1', port: 0 }, keys: [{ name: tlsKey }], callers: [caller] } } })
    .catch((e: unknown) => e)
  t.ok(proxy instanceof Error, 'the proxy refused to start')
  t.match(errorMessage(proxy), /EDGE_ERR_TOKEN_KEY/)
  t.match(errorMessage(proxy), /POLICY_DENIED_MESSAGE/)
})

t.test('a burst beyond the limits: 429 with Retry-After at once, never a timeout, and every 200 verifies', async t => {
  const RATE = 20
  const { port } = await tokenProxy('token-burst', {
    keys: [{ name: 'jwt-ed', algorithm: 'EdDSA' }],
    callers: [{ ...caller, claims: ['sub'], ratePerSecond: 1000, burst: 1000 }],
    // A queue deadline far beyond a keyd signature even on a loaded machine: every 429 below must then
    // come from admission (the token bucket), which refuses at once instead of holding the request.
    limits: { ratePerSecond: RATE, burst: RATE, maxQueue: 1000, queueDeadlineMs: 10_000 },
    spike: { cacheWindowMs: 0, coalesce: false }
  })
  const target: Target = { port }
  const started = performance.now()
  const replies = await Promise.all(Array.from({ length: 120 }, async (_, i) => await askToken(target, SECRET, { claims: { sub: `u${i}` } })))
  // Tokens the bucket can have gained while the burst was under way: counted, not assumed to be few.
  const refills = Math.floor((performance.now() - started) * RATE / 1000)
  const ok = replies.filter(r => r.status === 200)
  const limited = replies.filter(r => r.status === 429)
  t.equal(ok.length + limited.length, replies.length, 'only 200 and 429')
  t.ok(ok.length >= RATE && ok.length <= RATE + refills, `${ok.length} issued: the burst, plus at most the ${refills} tokens refilled meanwhile`)
  t.ok(limited.length > 0)
  for (const r of limited) {
    t.equal(r.json().code, 'EDGE_ERR_TOKEN_RATE_LIMITED')
    t.match(r.headers['retry-after'], /^[1-9]\d*$/)
    t.equal(r.headers['x-keyedge-reject-reason'], 'global_rate', 'refused by admission, at once: never queued until a timeout')
  }
  const jwks = createLocalJWKSet((await call(target, { path: '/.well-known/jwks.json' })).json())
  for (const r of ok) await jwtVerify(r.json().access_token, jwks, { audience: 'api' })
})
