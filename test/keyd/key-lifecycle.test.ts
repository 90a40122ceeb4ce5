// Key lifecycle against a real keyd: list/show/public, rotation with a sign grace, disable/enable,
// destroy (no sealed private key left, a tombstone that survives a restart), each refusal's own code.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { verify, createPublicKey } from 'node:crypto'
import { startKeyd, keydCli, refusal } from '../helpers/keyd.js'
import { tempHome } from '../helpers/paths.js'
import { KeydRemoteError } from '../../keyd/errors.js'
import { ErrorCode } from '../../keyd/protocol/codec.js'
import { defined } from '../helpers/defined.js'

const home = tempHome()
let keyd = await startKeyd(home)
t.teardown(async () => await keyd.stop())

const cli = async (args: string[]): Promise<{ code: number | null, out: string }> => await keydCli(home, args)

t.test('list, show and public describe keys without any secret', async t => {
  const k = await keyd.admin.createKey('lc-list', 'ec-p256', 'token-sign')
  const fp = (await import('node:crypto')).createHash('sha256').update(k.spki).digest('hex')
  const listed = (await keyd.admin.listKeys()).find(x => x.name === 'lc-list')
  t.match(listed, { type: 'ec-p256', usage: 'token-sign', state: 'enabled', origin: 'generated', currentVersion: 1, fingerprint: fp, exportable: false })
  const shown = await keyd.admin.keyInfo('lc-list')
  t.equal(shown.versions.length, 1)
  t.match(shown.versions[0], { version: 1, current: true, spkiSha256: fp, canSign: true, signsUntil: null })
  const list = await cli(['key', 'list'])
  t.equal(list.code, 0, list.out)
  t.match(list.out, new RegExp(`lc-list\\tec-p256\\t1 \\(current v1\\)\\ttoken-sign\\tenabled\\tgenerated\\t.*\\t${fp}`))
  const jwk = await cli(['key', 'public', '--name', 'lc-list', '--format', 'jwk'])
  t.equal(jwk.code, 0, jwk.out)
  const parsed = JSON.parse(jwk.out) as { kty: string, crv: string, d?: string, kid: string }
  t.match(parsed, { kty: 'EC', crv: 'P-256', kid: 'lc-list-v1' })
  t.notOk('d' in parsed, 'no private part')
  t.same(createPublicKey({ key: parsed, format: 'jwk' }).export({ format: 'der', type: 'spki' }), k.spki)
  const pem = await cli(['key', 'public', '--name', 'lc-list'])
  t.match(pem.out, /BEGIN PUBLIC KEY/)
  const show = await cli(['key', 'show', '--name', 'lc-list'])
  t.notMatch(show.out, /privateKey|"ct"|BEGIN PRIVATE/, 'show has no key material')
  t.equal((await refusal(keyd.client('proxy').keyInfo('lc-list'))).code, 'KEYD_ERR_FORBIDDEN', 'admin only')
})

t.test('rotation: old versions verify; they sign within the grace and are refused after it', async t => {
  const v1 = await keyd.admin.createKey('lc-rot', 'ec-p256', 'token-sign')
  await keyd.admin.rotateKey('lc-rot', { signGraceSeconds: 2 })
  const rotatedAt = Date.parse(defined((await keyd.admin.keyInfo('lc-rot')).versions[1], 'version 2').createdAt)
  const msg = Buffer.from('within grace')
  const old = await keyd.admin.sign('lc-rot', 'ecdsa-sha256', msg, { version: 1 })
  t.equal(old.version, 1)
  t.ok(verify('sha256', msg, (await keyd.admin.getPublicKey('lc-rot', 1)).publicKey, old.signature), 'v1 signs within the grace')
  t.same((await keyd.admin.getPublicKey('lc-rot', 1)).spki, v1.spki, 'v1 still published for verification')
  let err: KeydRemoteError | undefined
  const deadline = Date.now() + 15000
  while (err === undefined && Date.now() < deadline) {
    err = await keyd.admin.sign('lc-rot', 'ecdsa-sha256', msg, { version: 1 }).then(() => undefined, (e: unknown) => { if (e instanceof KeydRemoteError) return e; throw e })
    if (err === undefined) await new Promise(resolve => setTimeout(resolve, 100))
  }
  t.equal(err?.code, 'KEYD_ERR_KEY_VERSION_RETIRED')
  t.equal(err?.wire, ErrorCode.KEY_VERSION_RETIRED)
  t.ok(Date.now() - rotatedAt >= 2000, 'not before the grace ended')
  t.equal((await keyd.admin.getPublicKey('lc-rot', 1)).version, 1, 'a retired version still verifies')
  t.equal((await keyd.admin.sign('lc-rot', 'ecdsa-sha256', msg)).version, 2, 'the current version signs')
  t.equal((await keyd.admin.keyInfo('lc-rot')).versions[0]?.canSign, false)

  await keyd.admin.createKey('lc-rot0', 'ed25519', 'token-sign')
  await keyd.admin.rotateKey('lc-rot0', { signGraceSeconds: 0 })
  t.equal((await refusal(keyd.admin.sign('lc-rot0', 'ed25519', msg, { version: 1 }))).code, 'KEYD_ERR_KEY_VERSION_RETIRED', 'grace 0: refused at once')
  await keyd.admin.rotateKey('lc-rot0', { signGraceSeconds: null })
  t.equal((await keyd.admin.sign('lc-rot0', 'ed25519', msg, { version: 1 })).version, 1, 'unlimited grace: older versions sign again')
  await keyd.admin.createKey('lc-rot-default', 'ed25519', 'token-sign')
  await keyd.admin.rotateKey('lc-rot-default')
  t.equal((await keyd.admin.sign('lc-rot-default', 'ed25519', msg, { version: 1 })).version, 1, 'no grace set: older versions keep signing (pinned key references)')
  const bad = await cli(['key', 'rotate', '--name', 'lc-rot', '--grace-seconds', 'soon'])
  t.equal(bad.code, 2, 'a malformed --grace-seconds is a usage error')
})

t.test('disable refuses SIGN with its own code, persisted; enable restores it', async t => {
  const k = await keyd.admin.createKey('lc-dis', 'ec-p256', 'tls-server')
  const proxy = keyd.client('proxy')
  t.teardown(() => proxy.close())
  const { tls13Input } = await import('../helpers/tls-inputs.js')
  const off = await cli(['key', 'disable', '--name', 'lc-dis'])
  t.equal(off.code, 0, off.out)
  const err = await refusal(proxy.sign('lc-dis', 'ecdsa-sha256', tls13Input()))
  t.equal(err.code, 'KEYD_ERR_KEY_DISABLED')
  t.equal(err.wire, ErrorCode.KEY_DISABLED)
  const batch = await proxy.signBatch([{ name: 'lc-dis', algorithm: 'ecdsa-sha256', message: tls13Input() }])
  t.equal((batch[0] as KeydRemoteError).code, 'KEYD_ERR_KEY_DISABLED', 'refused in a batch too')
  t.same((await proxy.getPublicKey('lc-dis')).spki, k.spki, 'a disabled key still verifies')
  const file = JSON.parse(readFileSync(join(keyd.paths.keysDir, 'lc-dis.json'), 'utf8')) as { state: string }
  t.equal(file.state, 'disabled', 'state persisted in the key file')
  await keyd.admin.setKeyState('lc-dis', 'enable')
  t.equal((await proxy.sign('lc-dis', 'ecdsa-sha256', tls13Input())).version, 1, 'signs again once enabled')
  t.equal((await refusal(keyd.admin.setKeyState('lc-nothing', 'disable'))).code, 'KEYD_ERR_KEY_NOT_FOUND')
  t.equal((await refusal(proxy.setKeyState('lc-dis', 'disable'))).code, 'KEYD_ERR_FORBIDDEN')
})

t.test('destroy: no sealed private key remains, the tombstone holds the name, across a restart', async t => {
  await keyd.admin.createKey('lc-gone', 'rsa-2048', 'token-sign')
  await keyd.admin.rotateKey('lc-gone')
  const file = join(keyd.paths.keysDir, 'lc-gone.json')
  const before = JSON.parse(readFileSync(file, 'utf8')) as { versions: Array<{ privateKey: { ct: string } }> }
  const blobs = before.versions.map(v => v.privateKey.ct)
  t.equal(blobs.length, 2)
  const refused = await cli(['key', 'destroy', '--name', 'lc-gone'])
  t.equal(refused.code, 2, 'destroy wants --yes')
  const done = await cli(['key', 'destroy', '--name', 'lc-gone', '--yes'])
  t.equal(done.code, 0, done.out)
  const text = readFileSync(file, 'utf8')
  for (const ct of blobs) t.notOk(text.includes(ct), 'the sealed blob is gone from the key file')
  t.notOk(text.includes('privateKey'), 'no private key field at all')
  t.equal((JSON.parse(text) as { state: string }).state, 'destroyed')

  const msg = Buffer.from('x')
  const check = async (what: string): Promise<void> => {
    const e = await refusal(keyd.admin.sign('lc-gone', 'rsa-pss-sha256', msg))
    t.equal(e.code, 'KEYD_ERR_KEY_DESTROYED', `${what}: SIGN`)
    t.equal(e.wire, ErrorCode.KEY_DESTROYED)
    t.equal((await refusal(keyd.admin.getPublicKey('lc-gone'))).code, 'KEYD_ERR_KEY_DESTROYED', `${what}: GET_PUBLIC_KEY`)
    t.equal((await refusal(keyd.admin.rotateKey('lc-gone'))).code, 'KEYD_ERR_KEY_DESTROYED', `${what}: KEY_ROTATE`)
    t.equal((await refusal(keyd.admin.setKeyState('lc-gone', 'enable'))).code, 'KEYD_ERR_KEY_DESTROYED', `${what}: KEY_ENABLE`)
    t.equal((await refusal(keyd.admin.setKeyState('lc-gone', 'destroy'))).code, 'KEYD_ERR_KEY_DESTROYED', `${what}: KEY_DESTROY again`)
    t.equal((await refusal(keyd.admin.attestKey('lc-gone'))).code, 'KEYD_ERR_KEY_DESTROYED', `${what}: KEY_ATTEST`)
    t.equal((await refusal(keyd.admin.createKey('lc-gone', 'ec-p256', 'token-sign'))).code, 'KEYD_ERR_KEY_DESTROYED', `${what}: the name is not reused`)
    const shown = await keyd.admin.keyInfo('lc-gone')
    t.match(shown, { state: 'destroyed', currentVersion: 2 }, `${what}: the tombstone is shown`)
    t.equal(typeof shown.destroyedAt, 'string')
    t.ok(shown.versions.every(v => v.canSign === false))
  }
  await check('live')
  await keyd.stop()
  keyd = await startKeyd(home)
  t.notOk(keyd.lines.some(l => l.includes('could not open a key file')), 'the tombstone opens cleanly')
  await check('after a restart')
  t.equal((await keyd.admin.keyInfo('lc-dis')).state, 'enabled', 'other keys keep their state')
})
