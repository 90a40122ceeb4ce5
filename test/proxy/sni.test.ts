// SNI selection as a pure function: exact, single-label wildcard, default, strict refusal.
import t from 'tap'
import { buildSniIndex, selectCertificate } from '../../src/tls/sni.js'

const index = buildSniIndex([
  { name: 'site', serverNames: ['example.com', '*.example.com'] },
  { name: 'api', serverNames: ['api.example.com'] },
  { name: 'local', serverNames: ['localhost', '127.0.0.1', 'Upper.Example.ORG.'] }
])
const lenient = { strict: false, defaultCertificate: 'local' }
const strict = { strict: true, defaultCertificate: 'local' }

t.test('an exact name wins over a wildcard', async t => {
  t.same(selectCertificate(index, 'api.example.com', lenient), { certificate: 'api', match: 'exact' })
  t.same(selectCertificate(index, 'example.com', lenient), { certificate: 'site', match: 'exact' })
})

t.test('a wildcard matches exactly one label', async t => {
  t.same(selectCertificate(index, 'www.example.com', lenient), { certificate: 'site', match: 'wildcard' })
  t.same(selectCertificate(index, 'a.b.example.com', lenient), { certificate: 'local', match: 'default' })
  t.same(selectCertificate(index, 'a.b.example.com', strict), { certificate: undefined, match: 'unknown' })
  t.same(selectCertificate(buildSniIndex([{ name: 'w', serverNames: ['*.example.com'] }]), 'example.com', strict),
    { certificate: undefined, match: 'unknown' }, 'the bare parent is not matched by its wildcard')
})

t.test('names are case-insensitive and a trailing dot is ignored', async t => {
  t.equal(selectCertificate(index, 'WWW.Example.Com.', strict).certificate, 'site')
  t.equal(selectCertificate(index, 'upper.example.org', strict).certificate, 'local')
  t.equal(selectCertificate(index, 'LOCALHOST', strict).certificate, 'local')
})

t.test('unknown names get the default, or nothing in strict mode', async t => {
  t.same(selectCertificate(index, 'unknown.test', lenient), { certificate: 'local', match: 'default' })
  t.same(selectCertificate(index, 'unknown.test', strict), { certificate: undefined, match: 'unknown' })
  t.same(selectCertificate(index, 'unknown.test', { strict: false, defaultCertificate: undefined }),
    { certificate: undefined, match: 'unknown' })
})

t.test('the first entry to claim a name keeps it', async t => {
  const dup = buildSniIndex([{ name: 'a', serverNames: ['x.test'] }, { name: 'b', serverNames: ['X.test'] }])
  t.equal(selectCertificate(dup, 'x.test', strict).certificate, 'a')
})
