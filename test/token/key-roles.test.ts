// In-process tests of token key roles derived from keyd versions, the KEY_VERSIONS codec, and the
// `token.key` config form.
import t from 'tap'
import { versionRoles, promotedAtMs } from '../../src/token/key-roles.js'
import { encodeKeyVersions, decodeKeyVersions } from '../../keyd/protocol/key-versions.js'
import { validateConfig } from '../../src/config/validate.js'
import { ConfigInvalidError } from '../../src/errors.js'

const timing = { verifierCacheSeconds: 300, maxLifetimeSeconds: 3600, pollIntervalSeconds: 10 }
const S = 1000
const roles = (versions: Array<{ version: number, createdAtMs: number }>, now: number): string[] =>
  versionRoles(versions, timing, now).map(r => `${r.version}:${r.role}`)

t.test('one version is active at once; a rotation is next, then active, and the old one retired until its tokens expired', async t => {
  const v1 = { version: 1, createdAtMs: 0 }
  t.same(roles([v1], 0), ['1:active'])
  const v2 = { version: 2, createdAtMs: 1000 * S }
  const promoted = (1000 + 10 + 300 + 1) * S
  t.equal(promotedAtMs(v2, false, timing), promoted, 'created + poll interval (+ 1 s slack) + verifier cache')
  t.same(roles([v1, v2], 1000 * S), ['1:active', '2:next'], 'published before it signs')
  t.same(roles([v1, v2], promoted - 1), ['1:active', '2:next'])
  t.same(roles([v1, v2], promoted), ['1:retired', '2:active'])
  const r = versionRoles([v1, v2], timing, promoted)[0]
  t.equal(r?.retiredAtMs, promoted)
  t.equal(r?.publishedUntilMs, promoted + 3600 * S, 'retired until promotedAt + maxLifetime')
  t.same(roles([v1, v2], promoted + 3600 * S - 1), ['1:retired', '2:active'])
  t.same(roles([v2, v1], promoted + 3600 * S), ['2:active'], 'gone once every token it signed expired (order of input irrelevant)')
})

t.test('rotations closer than maxLifetime: each retired version stays until its successor took over + maxLifetime', async t => {
  const vs = [{ version: 1, createdAtMs: 0 }, { version: 2, createdAtMs: 1000 * S }, { version: 3, createdAtMs: 2000 * S }]
  const p2 = 1311 * S
  const p3 = 2311 * S
  t.same(roles(vs, 2000 * S), ['1:retired', '2:active', '3:next'])
  t.same(roles(vs, p3), ['1:retired', '2:retired', '3:active'])
  const r = versionRoles(vs, timing, p3)
  t.equal(r[0]?.publishedUntilMs, p2 + 3600 * S)
  t.equal(r[1]?.publishedUntilMs, p3 + 3600 * S)
  t.same(roles(vs, p2 + 3600 * S), ['2:retired', '3:active'])
})

t.test('KEY_VERSIONS codec: PROTOCOL.md fixture, round trip, bad length', async t => {
  const enc = encodeKeyVersions([{ version: 3, createdAtMs: 3000 }, { version: 1, createdAtMs: 1000 }, { version: 2, createdAtMs: 2000 }])
  t.equal(enc.toString('hex'), '00000001' + '00000000000003e8' + '00000002' + '00000000000007d0' + '00000003' + '0000000000000bb8')
  t.same(decodeKeyVersions(enc), [{ version: 1, createdAtMs: 1000 }, { version: 2, createdAtMs: 2000 }, { version: 3, createdAtMs: 3000 }])
  t.same(decodeKeyVersions(new Uint8Array(0)), [])
  t.equal(decodeKeyVersions(new Uint8Array(11)), null)
})

t.test('token.key config: alone, with retired static keys, and refused mixes', async t => {
  const base = {
    keyd: {},
    certificates: [{ name: 'a', serverNames: ['a.test'], files: [{ cert: 'a.crt', key: 'a.key' }] }],
    routes: [{ upstream: 'http://127.0.0.1:1' }]
  }
  const callers = [{ name: 'c', secretSha256: 'ab'.repeat(32), audiences: ['api'] }]
  const good = validateConfig({ ...base, token: { issuer: 'https://t.test', key: { name: 'jwt' }, callers } }, { baseDir: '/' })
  t.same(good.token?.key, { name: 'jwt', algorithm: 'ES256', pollIntervalSeconds: 10 })
  t.same(good.token?.keys, [])
  const mixed = validateConfig({ ...base, token: { issuer: 'https://t.test', key: { name: 'jwt', pollIntervalSeconds: 2 }, keys: [{ name: 'old', role: 'retired', retiredAt: '2026-01-01T00:00:00Z' }], callers } }, { baseDir: '/' })
  t.equal(mixed.token?.keys[0]?.role, 'retired')
  const problems = (token: unknown): string => {
    try {
      validateConfig({ ...base, token }, { baseDir: '/' })
      return ''
    } catch (e) {
      if (e instanceof ConfigInvalidError) return e.problems.join('\n')
      throw e
    }
  }
  t.match(problems({ issuer: 'https://t.test', key: { name: 'jwt' }, keys: [{ name: 'old', role: 'active' }], callers }), /token.keys\[0\].role: with "token.key" the keyd key signs/)
  t.match(problems({ issuer: 'https://t.test', key: { name: 'jwt', role: 'active' }, callers }), /token.key.role: .*rotate with "keyedge keyd key rotate"/)
  t.match(problems({ issuer: 'https://t.test', key: { name: 'jwt', pollIntervalSeconds: 0 }, callers }), /token.key.pollIntervalSeconds/)
  t.match(problems({ issuer: 'https://t.test', callers }), /needs "key" .* or "keys"/)
})
