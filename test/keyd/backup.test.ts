// Backup and restore against real keyd processes: a full round trip (every key type, rotated versions,
// policy), the Shamir variant, and every bad input refused with its own code while keyd keeps serving.
import t from 'tap'
import { readFileSync, writeFileSync, statSync, existsSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { startKeyd, type TestKeyd } from '../helpers/keyd.js'
import { tempHome } from '../helpers/paths.js'
import { until } from '../helpers/wait.js'
import { runCli, signsFor, devPrivateKeys, printedShares, wireRestore } from '../helpers/backup.js'
import { Op, Tag, itemStr, readStr, ErrorCode } from '../../keyd/protocol/codec.js'
import { KeydRemoteError } from '../../keyd/errors.js'
import { defined } from '../helpers/defined.js'

const KEYS = [
  { name: 'web-ec', type: 'ec-p256', usage: 'tls-server', rotations: 2 },
  { name: 'jwt-384', type: 'ec-p384', usage: 'token-sign', rotations: 0 },
  { name: 'ca-rsa', type: 'rsa-2048', usage: 'cert-sign', rotations: 1 },
  { name: 'tok-ed', type: 'ed25519', usage: 'token-sign', rotations: 1 }
]
// The restored keyd must enforce this at once: proxy may not sign with jwt-384 (ca-rsa it may not use anyway: cert-sign).
const POLICY = JSON.stringify({ keys: { 'jwt-384': { clients: ['admin'] } } }, null, 2) + '\n'

const srcHome = tempHome()
mkdirSync(join(srcHome, 'keyd'), { recursive: true, mode: 0o700 })
writeFileSync(join(srcHome, 'keyd', 'policy.json'), POLICY)
const work = tempHome('keyedge-backup-files-')
const passFile = join(work, 'pass')
writeFileSync(passFile, 'correct horse battery staple\n')
const wrongPassFile = join(work, 'wrong')
writeFileSync(wrongPassFile, 'incorrect horse battery staple\n')

const a = await startKeyd(srcHome, ['--metrics-port', '0'])
t.teardown(() => a.stop())

/** keyd's /metrics (its port from the 'keyd ready' line). */
async function keydMetrics (k: TestKeyd): Promise<string> {
  const ready = k.lines.map(l => { try { return JSON.parse(l) as { msg?: string, metricsPort?: number } } catch { return {} } }).find(o => o.msg === 'keyd ready')
  return await (await fetch(`http://127.0.0.1:${String(ready?.metricsPort)}/metrics`)).text()
}
for (const k of KEYS) {
  await a.admin.createKey(k.name, k.type, k.usage)
  for (let i = 0; i < k.rotations; i++) await a.admin.rotateKey(k.name)
}
const env = (home: string): Record<string, string> => ({ KEYEDGE_HOME: home })

/** Every key's every version: public key DER (base64) as keyd A answers it. */
async function publicKeys (k: TestKeyd): Promise<Map<string, string>> {
  const out = new Map<string, string>()
  for (const key of KEYS) {
    for (let v = 1; v <= key.rotations + 1; v++) out.set(`${key.name}@${v}`, (await k.admin.getPublicKey(key.name, v)).spki.toString('base64'))
  }
  return out
}
const originals = await publicKeys(a)

/** An export straight over the protocol (one chunk suffices here): the answer's JSON. */
async function wireExport (k: TestKeyd, req: Record<string, unknown>): Promise<{ shares: string[] }> {
  return JSON.parse(readStr(await k.admin.request(Op.BACKUP_EXPORT, [itemStr(Tag.JSON, JSON.stringify(req))]), Tag.JSON) ?? '{}')
}

t.test('passphrase bundle: full round trip into a new keyd', async t => {
  const bundle = join(work, 'pass.bundle')
  const exp = await runCli(['keyd', 'backup', 'export', '--out', bundle, '--passphrase-file', passFile], env(srcHome))
  t.equal(exp.code, 0, exp.err)
  t.match(exp.out, /4 keys, 8 versions, policy.json included/)
  t.equal(statSync(bundle).mode & 0o777, 0o600, 'bundle is 0600')
  t.match(await keydMetrics(a), /keyd_backup_last_success_timestamp_seconds\{kind="export"\} \d/, 'the export\'s last chunk is recorded')
  t.notMatch(await keydMetrics(a), /kind="restore"/, 'no restore yet')
  const bytes = readFileSync(bundle)
  const privates = devPrivateKeys(srcHome)
  t.equal(privates.length, 8)
  for (const der of privates) {
    for (const form of [der, Buffer.from(der.toString('base64')), Buffer.from(der.toString('hex')), Buffer.from(der.toString('base64url')), der.subarray(der.length - 32)]) {
      if (bytes.includes(form)) t.fail('the bundle holds a private key in the clear')
    }
  }
  for (const s of ['PRIVATE KEY', 'pkcs8', 'web-ec', 'ca-rsa', '"clients"']) t.notOk(bytes.includes(Buffer.from(s)), `no cleartext ${s}`)

  const b = await startKeyd(tempHome(), ['--metrics-port', '0'])
  t.teardown(() => b.stop())
  const res = await runCli(['keyd', 'backup', 'restore', '--in', bundle, '--passphrase-file', passFile], env(b.paths.home))
  t.equal(res.code, 0, res.err)
  t.match(await keydMetrics(b), /keyd_backup_last_success_timestamp_seconds\{kind="restore"\} \d/, 'the committed restore is recorded')
  t.match(res.out, /restored 4 keys \(8 versions\).*policy.json: restored/)
  t.same(await publicKeys(b), originals, 'every version has the same public key')
  const listA = await a.admin.listKeys()
  const listB = await b.admin.listKeys()
  const meta = (l: typeof listA): unknown => l.map(k => ({ name: k.name, type: k.type, usage: k.usage, origin: k.origin, state: k.state, createdAt: k.createdAt, currentVersion: k.currentVersion, versions: k.versions })).sort((x, y) => x.name.localeCompare(y.name))
  t.same(meta(listB), meta(listA), 'metadata restored: usage, origin, state, created, versions')
  const proxyB = b.client('proxy')
  t.teardown(() => proxyB.close())
  for (const key of KEYS) {
    for (let v = 1; v <= key.rotations + 1; v++) {
      const original = (await a.admin.getPublicKey(key.name, v)).publicKey
      const signer = key.name === 'ca-rsa' || key.name === 'jwt-384' ? b.admin : proxyB
      t.ok(await signsFor(signer, key.name, v, key.type, key.usage, original), `${key.name} v${v}: restored keyd's signature verifies with the original public key`)
    }
  }
  t.equal(readFileSync(join(b.paths.keydDir, 'policy.json'), 'utf8'), POLICY, 'policy.json restored')
  await t.rejects(proxyB.sign('jwt-384', 'ecdsa-sha384', Buffer.from('x')), { code: 'KEYD_ERR_FORBIDDEN' }, 'restored policy applies without a restart')
  t.notOk(existsSync(join(b.paths.keydDir, 'restore')), 'no staging directory left')

  await t.rejects(wireRestore(b.admin, bytes, { passphrase: 'correct horse battery staple' }), { code: 'KEYD_ERR_RESTORE_NOT_EMPTY' }, 'a keyd with keys refuses a restore')

  // Restored key files are sealed under B's own master key: a restart opens them all.
  await b.stop()
  const b2 = await startKeyd(b.paths.home)
  t.teardown(() => b2.stop())
  t.notOk(b2.lines.some(l => l.includes('could not open a key file')), 'every restored key file opens after a restart')
  t.same(await publicKeys(b2), originals)
  t.notSame(readFileSync(join(b2.paths.keysDir, 'web-ec.json'), 'utf8'), readFileSync(join(a.paths.keysDir, 'web-ec.json'), 'utf8'), 're-sealed, not copied')
})

t.test('Shamir bundle: shares printed once, any threshold restores, fewer or foreign ones do not', async t => {
  const bundle = join(work, 'shares.bundle')
  const exp = await runCli(['keyd', 'backup', 'export', '--out', bundle, '--shares', '3', '--threshold', '2'], env(srcHome))
  t.equal(exp.code, 0, exp.err)
  const shares = printedShares(exp.out)
  t.equal(shares.length, 3)
  const share = (i: number): string => defined(shares[i], `share ${i + 1}`)
  const bytes = readFileSync(bundle)
  const foreignShares = (await wireExport(a, { wrap: 'shamir', shares: 2, threshold: 2 })).shares

  const c = await startKeyd(tempHome())
  t.teardown(() => c.stop())
  const one = await runCli(['keyd', 'backup', 'restore', '--in', bundle, '--share', share(0)], env(c.paths.home))
  t.equal(one.code, 1)
  t.match(one.err, /needs 2 distinct shares, got 1.*KEYD_ERR_BACKUP_BAD_SHARES/, 'too few shares (CLI)')
  const refused = async (creds: Record<string, unknown>): Promise<string> => {
    const err = await wireRestore(c.admin, bytes, creds).then(() => null, (e: unknown) => { if (e instanceof KeydRemoteError) return e; throw e })
    return err === null ? 'accepted' : `${err.code}: ${err.message}`
  }
  t.match(await refused({ shares: [share(0), share(0)] }), /KEYD_ERR_BACKUP_BAD_SHARES: too few/, 'the same share twice counts once')
  t.match(await refused({ shares: foreignShares }), /KEYD_ERR_BACKUP_BAD_SHARES: .*wrong or foreign/, 'shares of another bundle')
  const typo = share(1).slice(0, 10) + (share(1)[10] === 'a' ? 'b' : 'a') + share(1).slice(11)
  t.match(await refused({ shares: [share(0), typo] }), /KEYD_ERR_BACKUP_BAD_SHARES: share 2: .*checksum/, 'a mistyped share')
  t.match(await refused({ shares: ['hello', share(1)] }), /KEYD_ERR_BACKUP_BAD_SHARES: share 1: not a keyedge share/, 'not a share')
  t.match(await refused({ passphrase: 'correct horse battery staple' }), /KEYD_ERR_BACKUP_BAD_SHARES/, 'a passphrase for a shares bundle')
  t.same(await c.admin.listKeys(), [], 'every refusal left the keyd empty')
  const ok = await runCli(['keyd', 'backup', 'restore', '--in', bundle], env(c.paths.home), `${share(2)}\n${share(0)}\n`)
  t.equal(ok.code, 0, ok.err + ok.out)
  t.same(await publicKeys(c), originals, 'shares 3 and 1, typed on stdin, restore every version')
})

t.test('bad input: each a clear error with its own code; keyd keeps serving and stays empty', async t => {
  const bundle = join(work, 'pass.bundle')
  const good = readFileSync(bundle)
  const d = await startKeyd(tempHome())
  t.teardown(() => d.stop())
  const pass = { passphrase: 'correct horse battery staple' }
  const attempt = async (bytes: Buffer, creds: Record<string, unknown> = pass): Promise<string> => {
    const err = await wireRestore(d.admin, bytes, creds).then(() => null, (e: unknown) => { if (e instanceof KeydRemoteError) return e; throw e })
    t.equal(Buffer.from(await d.admin.ping(Buffer.from('alive'))).toString(), 'alive', 'keyd still answers')
    return err === null ? 'accepted' : err.code
  }
  const headerLength = good.readUInt32BE(10)
  for (const cut of [0, 5, 12, 20 + Math.floor(headerLength / 2), 14 + headerLength + 100, good.length - 1]) {
    t.equal(await attempt(good.subarray(0, cut)), 'KEYD_ERR_BACKUP_TRUNCATED', `truncated to ${cut} bytes`)
  }
  t.equal(await attempt(Buffer.concat([good, Buffer.of(0)])), 'KEYD_ERR_BACKUP_MALFORMED', 'trailing bytes')
  t.equal(await attempt(Buffer.from('not a bundle at all, just text\n')), 'KEYD_ERR_BACKUP_MALFORMED', 'not a bundle')
  t.equal(await attempt(good, { passphrase: 'incorrect horse battery staple' }), 'KEYD_ERR_BACKUP_WRONG_PASSPHRASE', 'wrong passphrase')
  t.equal(await attempt(good, { shares: [] }), 'KEYD_ERR_BACKUP_BAD_REQUEST', 'shares for a passphrase bundle')
  const body = Buffer.from(good)
  body.writeUInt8(body.readUInt8(14 + headerLength + 40) ^ 0x01, 14 + headerLength + 40)
  t.equal(await attempt(body), 'KEYD_ERR_BACKUP_TAMPERED', 'a flipped ciphertext bit')
  const tag = Buffer.from(good)
  tag.writeUInt8(tag.readUInt8(tag.length - 3) ^ 0x80, tag.length - 3)
  t.equal(await attempt(tag), 'KEYD_ERR_BACKUP_TAMPERED', 'a flipped tag bit')
  const header = Buffer.from(good)
  const at = header.indexOf('"createdAt":"') + 13
  header[at + 3] = header[at + 3] === 0x30 ? 0x31 : 0x30
  t.equal(await attempt(header), 'KEYD_ERR_BACKUP_TAMPERED', 'an edited header (bound as associated data)')
  t.same(await d.admin.listKeys(), [], 'still empty')

  // The CLI says the same, with the code.
  const cut = join(work, 'cut.bundle')
  writeFileSync(cut, good.subarray(0, 100))
  const cliCut = await runCli(['keyd', 'backup', 'restore', '--in', cut, '--passphrase-file', passFile], env(d.paths.home))
  t.equal(cliCut.code, 1)
  t.match(cliCut.err, /truncated.*\(KEYD_ERR_BACKUP_TRUNCATED\)/)
  const cliWrong = await runCli(['keyd', 'backup', 'restore', '--in', bundle, '--passphrase-file', wrongPassFile], env(d.paths.home))
  t.match(cliWrong.err, /wrong passphrase.*\(KEYD_ERR_BACKUP_WRONG_PASSPHRASE\)/)

  // The protocol directly: missing JSON, unknown transfer, chunk out of order, a client without the admin right.
  const wire = async (op: number, json?: string, client = d.admin): Promise<KeydRemoteError> => {
    try {
      await client.request(op, json === undefined ? [] : [itemStr(Tag.JSON, json)])
    } catch (err) {
      if (err instanceof KeydRemoteError) return err
      throw err
    }
    throw new Error('expected a refusal')
  }
  t.equal((await wire(Op.BACKUP_RESTORE)).wire, ErrorCode.MISSING_ITEM)
  t.equal((await wire(Op.BACKUP_RESTORE, '[1]')).wire, ErrorCode.BACKUP_BAD_REQUEST)
  t.equal((await wire(Op.BACKUP_RESTORE, JSON.stringify({ transfer: 'nope', offset: 0 }))).wire, ErrorCode.BACKUP_BAD_REQUEST)
  const opened = JSON.parse(readStr(await d.admin.request(Op.BACKUP_RESTORE, [itemStr(Tag.JSON, JSON.stringify({ offset: 0, size: 10 }))]), Tag.JSON) ?? '{}')
  t.equal((await wire(Op.BACKUP_RESTORE, JSON.stringify({ transfer: opened.transfer, offset: 5 }))).wire, ErrorCode.BACKUP_BAD_REQUEST, 'chunk out of order')
  t.equal((await wire(Op.BACKUP_RESTORE, JSON.stringify({ transfer: opened.transfer, commit: true, ...pass }))).wire, ErrorCode.BACKUP_BAD_REQUEST, 'commit before the upload is complete')
  t.equal((await wire(Op.BACKUP_EXPORT, JSON.stringify({ transfer: 'nope', offset: 0 }))).wire, ErrorCode.BACKUP_BAD_REQUEST)
  t.equal((await wire(Op.BACKUP_EXPORT, JSON.stringify({ wrap: 'passphrase', passphrase: 'short' }))).wire, ErrorCode.BACKUP_BAD_REQUEST, 'a passphrase under 12 characters')
  t.equal((await wire(Op.BACKUP_EXPORT, JSON.stringify({ wrap: 'shamir', shares: 1, threshold: 3 }))).wire, ErrorCode.BACKUP_BAD_REQUEST)
  const proxy = d.client('proxy')
  t.teardown(() => proxy.close())
  t.equal((await wire(Op.BACKUP_EXPORT, JSON.stringify({ wrap: 'shamir', shares: 3, threshold: 2 }), proxy)).wire, ErrorCode.FORBIDDEN, 'export needs the admin right')
  t.equal((await wire(Op.BACKUP_RESTORE, JSON.stringify({ offset: 0, size: 1 }), proxy)).wire, ErrorCode.FORBIDDEN, 'restore needs the admin right')

  t.same(await wireRestore(d.admin, good, pass), { keys: 4, versions: 8, policy: 'restored' }, 'after every refusal, the good bundle restores: nothing was left behind')
  t.equal(await attempt(good), 'KEYD_ERR_RESTORE_NOT_EMPTY', 'and a second restore is refused')
})

t.test('no passphrase or share in keyd\'s log or audit log', async t => {
  // Audit appends are buffered for a few ms: poll for the export's entry (bounded) instead of sleeping.
  const auditFile = join(a.paths.keydDir, 'audit.log')
  t.ok(await until(() => existsSync(auditFile) && readFileSync(auditFile, 'utf8').includes('BACKUP_EXPORT')), 'exports are audited')
  const audit = readFileSync(auditFile, 'utf8')
  for (const text of [audit, a.lines.join('\n')]) {
    t.notOk(text.includes('horse battery'), 'no passphrase')
    t.notOk(/ks1-\d+-[0-9a-f]{64}/.test(text), 'no share')
  }
})
