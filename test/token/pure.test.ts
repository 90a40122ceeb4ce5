// In-process tests of the token endpoint's pure parts: buckets, thumbprints, canonical requests,
// request policy, the issuer of an endpoint on port 0 and the `token` config section.
import t from 'tap'
import { generateKeyPairSync } from 'node:crypto'
import { calculateJwkThumbprint, type JWK } from 'jose'
import { TokenBucket, Admission } from '../../src/token/admission.js'
import { jwkThumbprint, publicJwk, canonicalJson } from '../../src/token/jws.js'
import { parseTokenRequest } from '../../src/token/request.js'
import { retiredKeyExpiresAtMs } from '../../src/token/keys.js'
import { boundIssuer } from '../../src/token/server.js'
import { validateConfig } from '../../src/config/validate.js'
import { ConfigInvalidError } from '../../src/errors.js'
import { errorCode } from '../../lib/errors.js'
import type { TokenCallerConfig } from '../../src/config/token.js'

t.test('token bucket: burst, then one token per 1/rate, with the wait reported', async t => {
  const b = new TokenBucket(10, 3, 0)
  t.equal(b.take(0), 0); t.equal(b.take(0), 0); t.equal(b.take(0), 0)
  t.equal(b.take(0), 100, 'empty: 100 ms until the next token at 10/s')
  t.equal(b.take(100), 0)
  t.ok(b.take(100) > 0)
  const a = new Admission({ ratePerSecond: 1, burst: 1 }, [{ name: 'c', ratePerSecond: 100, burst: 5 }])
  t.same(a.admit('c'), { ok: true })
  const second = a.admit('c')
  t.equal(second.ok, false)
  t.equal(!second.ok && second.reason, 'global_rate')
})

t.test('RFC 7638 thumbprints agree with jose for EC, RSA and OKP keys', async t => {
  const keys = [
    generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey,
    generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey,
    generateKeyPairSync('ed25519').publicKey
  ]
  for (const k of keys) {
    const jwk = publicJwk(k)
    t.equal(jwkThumbprint(jwk), await calculateJwkThumbprint(k.export({ format: 'jwk' }) as JWK, 'sha256'))
  }
  // RFC 7638 section 3.1 example.
  const n = '0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw'
  t.equal(jwkThumbprint({ kty: 'RSA', n, e: 'AQAB' }), 'NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs')
})

t.test('canonical JSON ignores key order, keeps array order', async t => {
  t.equal(canonicalJson({ b: 1, a: { d: [2, 1], c: 'x' } }), canonicalJson({ a: { c: 'x', d: [2, 1] }, b: 1 }))
  t.not(canonicalJson({ a: [1, 2] }), canonicalJson({ a: [2, 1] }))
})

t.test('request policy: defaults, audiences, claims, lifetime', async t => {
  const caller: TokenCallerConfig = { name: 'c', audiences: ['api'], claims: ['sub'], maxLifetimeSeconds: 60, ratePerSecond: 1, burst: 1 }
  const ok = parseTokenRequest(Buffer.from('{}'), caller, 300)
  t.same(ok, { aud: 'api', lifetimeSeconds: 60, claims: {} }, 'one audience is the default; lifetime capped to the caller maximum')
  const codeOf = (body: string): string | undefined => { try { parseTokenRequest(Buffer.from(body), caller, 30); return undefined } catch (e) { return errorCode(e) } }
  t.equal(codeOf('{"audience":["api","x"]}'), 'EDGE_ERR_TOKEN_AUDIENCE_NOT_ALLOWED')
  t.equal(codeOf('{"claims":{"client_id":"other"}}'), 'EDGE_ERR_TOKEN_CLAIM_NOT_ALLOWED')
  t.equal(codeOf('{"claims":{"sub":null}}'), 'EDGE_ERR_TOKEN_BAD_REQUEST')
  t.equal(codeOf('{"lifetimeSeconds":0}'), 'EDGE_ERR_TOKEN_BAD_REQUEST')
  t.equal(codeOf('{"lifetimeSeconds":61}'), 'EDGE_ERR_TOKEN_LIFETIME_TOO_LONG')
  t.equal(codeOf('nope'), 'EDGE_ERR_TOKEN_BAD_JSON')
})

t.test('a retired key is published for max token lifetime after it stopped signing', async t => {
  t.equal(retiredKeyExpiresAtMs({ name: 'k', role: 'retired', algorithm: 'ES256', retiredAtMs: 1000 }, 3600), 1000 + 3_600_000)
})

t.test('config: the token section is validated with exact field paths', async t => {
  const base = {
    keyd: {},
    certificates: [{ name: 'a', serverNames: ['a.test'], files: [{ cert: 'a.crt', key: 'a.key' }] }],
    routes: [{ upstream: 'http://127.0.0.1:1' }]
  }
  const good = validateConfig({ ...base, token: { issuer: 'https://t.test/', keys: [{ name: 'k' }], callers: [{ name: 'c', secretSha256: 'ab'.repeat(32), audiences: ['api'] }] } }, { baseDir: '/etc/keyedge' })
  t.equal(good.token?.issuer, 'https://t.test')
  t.same(good.token?.listen, { host: '127.0.0.1', port: 8444 })
  t.equal(good.token?.keys[0]?.algorithm, 'ES256')
  t.equal(good.token?.spike.batchMaxSize, 16)
  const problems = (token: unknown, extra: Record<string, unknown> = {}): string[] => {
    try {
      validateConfig({ ...base, ...extra, token }, { baseDir: '/' })
      return []
    } catch (e) {
      if (e instanceof ConfigInvalidError) return e.problems
      throw e
    }
  }
  t.match(problems({ issuer: 'ftp://x', keys: [{ name: 'k', algorithm: 'HS256' }], callers: [{ name: 'c', secret: 's', audiences: [] }] }).join('\n'),
    /token.issuer[\s\S]*token.keys\[0\].algorithm[\s\S]*token.callers\[0\].secret: unknown key, never put a secret[\s\S]*audiences: must not be empty/)
  t.match(problems({ issuer: 'https://x', keys: [{ name: 'a', role: 'next' }], callers: [{ name: 'c', secretSha256: 'zz', audiences: ['x'], claims: ['exp'] }] }).join('\n'),
    /exactly one key must have the role "active"[\s\S]*secretSha256: must be 64 hex[\s\S]*"exp" is set by the endpoint/)
  t.match(problems({ issuer: 'https://x', keys: [{ name: 'a' }], callers: [{ name: 'c', clientCertSha256: 'ab'.repeat(32), audiences: ['x'] }] }, { keyd: undefined }).join('\n'),
    /token: needs a "keyd" section[\s\S]*clientCertSha256: needs "token.tls.clientCa"/)
})

t.test('an endpoint on port 0 adds the port it got to a loopback issuer without one, and only there', async t => {
  t.equal(boundIssuer('http://localhost', 0, 41234), 'http://localhost:41234')
  t.equal(boundIssuer('http://127.0.0.1/auth', 0, 41234), 'http://127.0.0.1:41234/auth', 'a path is kept')
  t.equal(boundIssuer('http://[::1]', 0, 41234), 'http://[::1]:41234')
  t.equal(boundIssuer('http://localhost:8444', 0, 41234), 'http://localhost:8444', 'a port the issuer names is kept')
  t.equal(boundIssuer('https://tokens.example', 0, 41234), 'https://tokens.example', 'a public issuer is kept (the endpoint may sit behind a proxy)')
  t.equal(boundIssuer('http://localhost', 8444, 8444), 'http://localhost', 'a configured port changes nothing')
})
