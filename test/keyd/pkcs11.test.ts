// keyd with its keys in a SoftHSM2 token behind p11-kit server: generation, signing, custody attributes, restart.
import t from 'tap'
import { verify, constants } from 'node:crypto'
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { softhsmSkipReason, startPkcs11Keyd, p11KitClientModule, softhsmModule } from '../helpers/softhsm.js'
import { spawnCli } from '../helpers/processes.js'
import { tempHome } from '../helpers/paths.js'
import { Pkcs11Token } from '../../keyd/keystore/pkcs11-token.js'

const skip = softhsmSkipReason()
if (skip !== undefined) {
  t.plan(0, skip)
} else {
  await run()
}

async function run (): Promise<void> {
  const keyd = await startPkcs11Keyd()
  t.teardown(() => keyd.stop())
  const message = Buffer.from('a JWT signing input, hashed whole by keyd')
  const pss = (saltLength: number) => ({ padding: constants.RSA_PKCS1_PSS_PADDING, saltLength })
  let startedAgain: Awaited<ReturnType<typeof startPkcs11Keyd>> | undefined
  t.teardown(async () => await startedAgain?.stop())

  t.test('keyd reports the pkcs11 keystore', async t => {
    t.ok(keyd.lines.some(l => l.includes('"keystore":"pkcs11"')), 'ready line names the keystore')
  })

  t.test('ECDSA P-256 and P-384 generated in the token sign and verify (DER and P1363)', async t => {
    for (const [name, type, alg, hash] of [['hsm-ec', 'ec-p256', 'ecdsa-sha256', 'sha256'], ['hsm-ec384', 'ec-p384', 'ecdsa-sha384', 'sha384']] as const) {
      const created = await keyd.admin.createKey(name, type, 'token-sign')
      t.equal(created.version, 1)
      const der = await keyd.admin.sign(name, alg, message)
      t.ok(verify(hash, message, created.publicKey, der.signature), `${type} DER verifies`)
      const p1363 = await keyd.admin.sign(name, alg, message, { ieeeP1363: true })
      t.equal(p1363.signature.length, type === 'ec-p256' ? 64 : 96)
      t.ok(verify(hash, message, { key: created.publicKey, dsaEncoding: 'ieee-p1363' }, p1363.signature), `${type} P1363 verifies`)
      t.notOk(verify(hash, Buffer.from('other'), created.publicKey, der.signature), 'not another message')
    }
  })

  t.test('RSA-2048 PKCS#1 v1.5 and PSS (padding computed in keyd, raw RSA in the token)', async t => {
    const created = await keyd.admin.createKey('hsm-rsa', 'rsa-2048', 'token-sign')
    for (const hash of ['sha256', 'sha384', 'sha512'] as const) {
      const v15 = await keyd.admin.sign('hsm-rsa', `rsa-pkcs1-${hash}`, message)
      t.ok(verify(hash, message, { key: created.publicKey, padding: constants.RSA_PKCS1_PADDING }, v15.signature), `PKCS#1 v1.5 ${hash}`)
      const p = await keyd.admin.sign('hsm-rsa', `rsa-pss-${hash}`, message)
      t.ok(verify(hash, message, { key: created.publicKey, ...pss({ sha256: 32, sha384: 48, sha512: 64 }[hash]) }, p.signature), `PSS ${hash}, salt = digest length`)
    }
  })

  t.test('Ed25519 is refused with BAD_KEY_TYPE: the token has no EdDSA', async t => {
    await t.rejects(keyd.admin.createKey('hsm-ed', 'ed25519', 'token-sign'), { code: 'KEYD_ERR_BAD_KEY_TYPE' })
  })

  t.test('rotation: a new version in the token, the old one still signs', async t => {
    const v2 = await keyd.admin.rotateKey('hsm-ec')
    t.equal(v2.version, 2)
    const s2 = await keyd.admin.sign('hsm-ec', 'ecdsa-sha256', message)
    t.equal(s2.version, 2)
    t.ok(verify('sha256', message, v2.publicKey, s2.signature))
    const s1 = await keyd.admin.sign('hsm-ec', 'ecdsa-sha256', message, { version: 1 })
    t.ok(verify('sha256', message, (await keyd.admin.getPublicKey('hsm-ec', 1)).publicKey, s1.signature))
  })

  t.test('private keys are sensitive, never extractable, and CKA_VALUE cannot be read', async t => {
    process.env.P11_KIT_SERVER_ADDRESS = keyd.hsm.address // read by p11-kit-client.so at C_Initialize
    const token = new Pkcs11Token({ module: p11KitClientModule as string, tokenLabel: keyd.hsm.tokenLabel, pin: readFileSync(keyd.hsm.pinFile, 'utf8').trim() })
    t.teardown(() => token.close())
    const p = token.p11
    const keys = token.find([{ type: p.CKA_CLASS, value: p.CKO_PRIVATE_KEY }])
    t.equal(keys.length, 4, 'ec v1, ec v2, ec384, rsa: one private key object per version')
    for (const h of keys) {
      const label = token.attribute(h, p.CKA_LABEL).toString()
      t.match(label, /^keyedge\/hsm-[a-z0-9]+\/v\d+$/)
      for (const [attr, want] of [[p.CKA_SENSITIVE, 1], [p.CKA_ALWAYS_SENSITIVE, 1], [p.CKA_EXTRACTABLE, 0], [p.CKA_NEVER_EXTRACTABLE, 1], [p.CKA_TOKEN, 1], [p.CKA_PRIVATE, 1], [p.CKA_DECRYPT, 0]] as const) {
        t.equal(token.attribute(h, attr)[0], want, `${label} attribute 0x${attr.toString(16)}`)
      }
      const secret = token.attribute(h, p.CKA_KEY_TYPE)[0] === p.CKK_RSA ? p.CKA_PRIVATE_EXPONENT : p.CKA_VALUE
      t.throws(() => token.attribute(h, secret), { code: 'KEYD_ERR_PKCS11', message: /CKR_ATTRIBUTE_SENSITIVE/ }, `${label}: the private value cannot be read`)
    }
  })

  t.test('pkcs11-tool sees the same: private objects are sensitive and never extractable', async t => {
    const out = await new Promise<string>(resolve => {
      execFile('pkcs11-tool', ['--module', p11KitClientModule as string, '--token-label', keyd.hsm.tokenLabel, '--login', '--pin', readFileSync(keyd.hsm.pinFile, 'utf8').trim(), '--list-objects', '--type', 'privkey'],
        { env: { ...process.env, P11_KIT_SERVER_ADDRESS: keyd.hsm.address }, encoding: 'utf8' }, (_err, stdout, stderr) => resolve(stdout + stderr))
    })
    const blocks = out.split(/(?=Private Key Object)/).filter(b => b.startsWith('Private Key Object'))
    t.equal(blocks.length, 4, out)
    for (const b of blocks) t.match(b, /Access:\s+sensitive, always sensitive, never extractable/, b.split('\n')[1] ?? 'a private key object')
  })

  t.test('keys persist in the token across a keyd restart', async t => {
    const before = await keyd.admin.getPublicKey('hsm-rsa')
    await keyd.stop()
    const again = await startPkcs11Keyd(keyd.paths.home)
    startedAgain = again
    const after = await again.admin.getPublicKey('hsm-rsa')
    t.ok(after.publicKey.equals(before.publicKey), 'same public key')
    const s = await again.admin.sign('hsm-rsa', 'rsa-pss-sha256', message)
    t.ok(verify('sha256', message, { key: after.publicKey, ...pss(32) }, s.signature))
    t.same((await again.admin.listKeys()).map(k => k.name).sort(), ['hsm-ec', 'hsm-ec384', 'hsm-rsa'])
  })

  t.test('disable, enable and destroy on the token', async t => {
    const k = startedAgain as Awaited<ReturnType<typeof startPkcs11Keyd>>
    await k.admin.createKey('hsm-gone', 'ec-p256', 'token-sign')
    await k.admin.setKeyState('hsm-gone', 'disable')
    await t.rejects(k.admin.sign('hsm-gone', 'ecdsa-sha256', message), { code: 'KEYD_ERR_KEY_DISABLED' })
    await k.admin.setKeyState('hsm-gone', 'enable')
    t.ok((await k.admin.sign('hsm-gone', 'ecdsa-sha256', message)).signature.length > 0, 'signs again once enabled')
    await k.admin.setKeyState('hsm-gone', 'destroy')
    await t.rejects(k.admin.sign('hsm-gone', 'ecdsa-sha256', message), { code: 'KEYD_ERR_KEY_DESTROYED' })
    process.env.P11_KIT_SERVER_ADDRESS = k.hsm.address
    const token = new Pkcs11Token({ module: p11KitClientModule as string, tokenLabel: k.hsm.tokenLabel, pin: readFileSync(k.hsm.pinFile, 'utf8').trim() })
    t.teardown(() => token.close())
    t.same(token.find([{ type: token.p11.CKA_LABEL, value: 'keyedge/hsm-gone/v1' }, { type: token.p11.CKA_CLASS, value: token.p11.CKO_PRIVATE_KEY }]), [], 'the private key object is gone from the token')
    t.equal(token.find([{ type: token.p11.CKA_LABEL, value: 'keyedge/hsm-gone' }]).length, 1, 'one record (the tombstone) remains')
  })

  t.test('keyd refuses a module linked to libcrypto, a wrong PIN and an unknown token, with codes', async t => {
    const cases: Array<[string[], RegExp]> = [
      [['--pkcs11-module', softhsmModule as string, '--pkcs11-token', 'keyedge', '--pkcs11-pin-file', keyd.hsm.pinFile], /KEYD_ERR_PKCS11_MODULE_UNSAFE/],
      [['--pkcs11-module', p11KitClientModule as string, '--pkcs11-token', 'nope', '--pkcs11-pin-file', keyd.hsm.pinFile], /KEYD_ERR_PKCS11_TOKEN_NOT_FOUND/],
      [['--pkcs11-module', p11KitClientModule as string, '--pkcs11-token', 'keyedge'], /KEYD_ERR_PKCS11_LOGIN/]
    ]
    await startedAgain?.stop()
    const again = await startPkcs11Keyd(keyd.paths.home) // a running p11-kit server for the cases to reach
    t.teardown(() => again.stop())
    for (const [args, code] of cases) {
      const home = tempHome()
      const env: Record<string, string> = { KEYEDGE_HOME: home, P11_KIT_SERVER_ADDRESS: again.hsm.address, KEYEDGE_PKCS11_PIN: 'wrong-pin' }
      const s = spawnCli(['keyd', 'serve', '--dev', '--socket', `${home}/k.sock`, ...args], env)
      const [exit] = await new Promise<[number | null]>(resolve => s.proc.once('exit', c => resolve([c])))
      t.equal(exit, 1, `exits 1: ${args[1]} ${args[3]}`)
      t.match(s.lines.join('\n'), code)
      t.notMatch(s.lines.join('\n'), /wrong-pin/, 'the PIN is never printed')
    }
  })
}
