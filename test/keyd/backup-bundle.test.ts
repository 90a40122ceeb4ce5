// The bundle format without a keyd: seal/parse/open round trip, every truncation, tampering, wrong keys,
// and crash recovery of a staged restore (rolled forward with the commit marker, rolled back without).
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { mkdirSync, writeFileSync, existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { sealBundle, parseBundle, openBundle, keyMatches, passphraseWrap, passphraseKey, type BundleWrap } from '../../keyd/backup/bundle.js'
import { recoverRestore } from '../../keyd/backup/restore-stage.js'
import { tempHome } from '../helpers/paths.js'
import { errorCode } from '../../lib/errors.js'

const contents = Buffer.from(JSON.stringify({ format: 'keyedge-backup-contents-v1', keys: [], policy: null }))

t.test('round trip under a Shamir-style random key and under a passphrase', async t => {
  const key = randomBytes(32)
  const bundle = sealBundle(contents, key, { kind: 'shamir', shares: 3, threshold: 2 })
  const parsed = parseBundle(bundle)
  t.ok(keyMatches(parsed, key))
  t.notOk(keyMatches(parsed, randomBytes(32)), 'another key does not match')
  t.same(openBundle(parsed, key), contents)
  t.notOk(bundle.includes(Buffer.from('backup-contents-v1')), 'contents encrypted')
  const { wrap, key: pk } = passphraseWrap('a long enough passphrase')
  const pb = parseBundle(sealBundle(contents, pk, wrap))
  t.ok(keyMatches(pb, passphraseKey('a long enough passphrase', pb.header.wrap as BundleWrap & { kind: 'passphrase' })))
  t.notOk(keyMatches(pb, passphraseKey('a long enough passphrasE', pb.header.wrap as BundleWrap & { kind: 'passphrase' })))
  t.throws(() => passphraseWrap('short'), { code: 'KEYD_ERR_BACKUP_BAD_REQUEST' })
})

t.test('every proper prefix is TRUNCATED; other damage is MALFORMED or TAMPERED', async t => {
  const key = randomBytes(32)
  const bundle = sealBundle(contents, key, { kind: 'shamir', shares: 2, threshold: 2 })
  let truncated = 0
  for (let n = 0; n < bundle.length; n++) {
    try { parseBundle(bundle.subarray(0, n)) } catch (err) { if (errorCode(err) === 'KEYD_ERR_BACKUP_TRUNCATED') truncated++ }
  }
  t.equal(truncated, bundle.length, 'each of the prefixes')
  t.throws(() => parseBundle(Buffer.from('PK\x03\x04 a zip file')), { code: 'KEYD_ERR_BACKUP_MALFORMED' })
  const v2 = Buffer.from(bundle); v2.writeUInt16BE(2, 8)
  t.throws(() => parseBundle(v2), { code: 'KEYD_ERR_BACKUP_MALFORMED' }, 'another format version')
  for (let i = 0; i < 20; i++) {
    const at = 14 + bundle.readUInt32BE(10) + Math.floor(Math.random() * (bundle.length - 14 - bundle.readUInt32BE(10)))
    const bad = Buffer.from(bundle); bad.writeUInt8(bad.readUInt8(at) ^ (1 << (i % 8)), at)
    t.throws(() => openBundle(parseBundle(bad), key), { code: 'KEYD_ERR_BACKUP_TAMPERED' })
  }
})

t.test('restore recovery: committed = rolled forward, not committed = rolled back', async t => {
  const setup = (committed: boolean): { keydDir: string, keysDir: string, policyFile: string } => {
    const keydDir = join(tempHome(), 'keyd')
    const p = { keydDir, keysDir: join(keydDir, 'keys'), policyFile: join(keydDir, 'policy.json') }
    mkdirSync(join(keydDir, 'restore', 'keys'), { recursive: true })
    mkdirSync(p.keysDir, { recursive: true })
    writeFileSync(join(keydDir, 'restore', 'keys', 'a.json'), '{}')
    writeFileSync(join(keydDir, 'restore', 'keys', 'b.json'), '{}')
    writeFileSync(join(keydDir, 'restore', 'policy.json'), '{}')
    if (committed) {
      writeFileSync(join(keydDir, 'restore', 'COMMITTED'), '')
      writeFileSync(join(p.keysDir, 'c.json'), '{}') // moved before the crash
    }
    return p
  }
  const fwd = setup(true)
  t.equal(recoverRestore(fwd), 'rolled-forward')
  t.same(readdirSync(fwd.keysDir).sort(), ['a.json', 'b.json', 'c.json'])
  t.equal(readFileSync(fwd.policyFile, 'utf8'), '{}')
  t.notOk(existsSync(join(fwd.keydDir, 'restore')))
  const back = setup(false)
  t.equal(recoverRestore(back), 'rolled-back')
  t.same(readdirSync(back.keysDir), [])
  t.notOk(existsSync(back.policyFile))
  t.notOk(existsSync(join(back.keydDir, 'restore')))
  t.equal(recoverRestore(back), 'none')
})
