// keyd as a real process: operations, refusals, malformed input on its socket, and storage at rest.
import t from 'tap'
import { connect, type Socket } from 'node:net'
import { once } from 'node:events'
import { readFileSync, statSync, readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { verify, constants } from 'node:crypto'
import { startKeyd } from '../helpers/keyd.js'
import { tls13Input, tls12Input } from '../helpers/tls-inputs.js'
import { KeydClient } from '../../keyd/client/client.js'
import { FrameDecoder, encodeFrame, parseItems, readUint, Op, Tag, itemStr, itemBytes, itemU16, ErrorCode, type Frame } from '../../keyd/protocol/codec.js'
import { secretBytes } from '../../lib/secret-file.js'

const keyd = await startKeyd()
t.teardown(() => keyd.stop())
const proxy = keyd.client('proxy')
t.teardown(() => proxy.close())

/** A raw socket speaking frames by hand, for malformed-input tests. */
async function raw (): Promise<{ s: Socket, closed: Promise<unknown>, next: () => Promise<Frame>, hello: () => Promise<Frame> }> {
  const s = connect(keyd.paths.socket)
  const closed = once(s, 'close')
  await once(s, 'connect')
  const d = new FrameDecoder()
  const queue: Frame[] = []
  let wake: (() => void) | null = null
  s.on('data', c => { for (const e of d.push(c)) if (e.kind === 'frame') queue.push(e.frame); wake?.() })
  const next = async (): Promise<Frame> => {
    const deadline = Date.now() + 5000
    while (queue.length === 0) {
      if (Date.now() > deadline) throw new Error('no frame from keyd')
      await new Promise<void>(resolve => { wake = resolve; setTimeout(resolve, 100) })
    }
    return queue.shift() as Frame
  }
  const secret = secretBytes(readFileSync(join(keyd.paths.secretsDir, 'proxy.secret')))
  const hello = async (): Promise<Frame> => {
    s.write(encodeFrame(Op.HELLO, 1, [itemStr(Tag.CLIENT_NAME, 'proxy'), itemBytes(Tag.CLIENT_SECRET, secret)]))
    return await next()
  }
  return { s, closed, next, hello }
}

function errCode (f: Frame): number | undefined | null {
  return readUint(parseItems(f.payload) ?? new Map(), Tag.ERROR_CODE, 2)
}

t.test('create keys of every type and sign with each algorithm', async t => {
  const cases: Array<[string, string, string[]]> = [
    ['t-ec256', 'ec-p256', ['ecdsa-sha256', 'ecdsa-sha384']],
    ['t-ec384', 'ec-p384', ['ecdsa-sha384']],
    ['t-rsa2048', 'rsa-2048', ['rsa-pkcs1-sha256', 'rsa-pss-sha256', 'rsa-pss-sha384']],
    ['t-rsa3072', 'rsa-3072', ['rsa-pkcs1-sha384']],
    ['t-ed', 'ed25519', ['ed25519']]
  ]
  for (const [name, type, algs] of cases) {
    const created = await keyd.admin.createKey(name, type, 'token-sign')
    t.equal(created.version, 1)
    t.equal(created.type, type)
    for (const alg of algs) {
      const msg = Buffer.from(`message for ${alg}`)
      const { signature } = await proxy.sign(name, alg, msg)
      const hash = alg === 'ed25519' ? null : `sha${alg.slice(-3)}`
      const opts = alg.includes('pss') ? { padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: Number(alg.slice(-3)) / 8 } : alg.includes('pkcs1') ? { padding: constants.RSA_PKCS1_PADDING } : {}
      t.ok(verify(hash, msg, { key: created.publicKey, ...opts }, signature), `${type} ${alg} verifies`)
    }
  }
  const p1363 = await proxy.sign('t-ec256', 'ecdsa-sha256', Buffer.from('jws'), { ieeeP1363: true })
  t.equal(p1363.signature.length, 64, 'IEEE P1363 ES256 signature is 64 bytes')
  const list = await keyd.admin.listKeys()
  t.ok(list.some(k => k.name === 't-rsa3072' && k.usage === 'token-sign'))
})

t.test('tls-server keys sign only TLS handshake input', async t => {
  const k = await keyd.admin.createKey('t-tls', 'ec-p256', 'tls-server')
  for (const msg of [tls13Input(32), tls13Input(48), tls12Input(32), tls12Input(65)]) {
    const { signature } = await proxy.sign('t-tls', 'ecdsa-sha256', msg)
    t.ok(verify('sha256', msg, k.publicKey, signature))
  }
  await t.rejects(proxy.sign('t-tls', 'ecdsa-sha256', Buffer.from('eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0')), { code: 'KEYD_ERR_POLICY_DENIED_MESSAGE' })
  await t.rejects(proxy.sign('t-tls', 'rsa-pss-sha256', tls13Input()), { code: 'KEYD_ERR_BAD_ALGORITHM' })
})

t.test('refusals have distinct codes', async t => {
  await t.rejects(proxy.sign('nope', 'ecdsa-sha256', Buffer.from('x')), { code: 'KEYD_ERR_KEY_NOT_FOUND' })
  await t.rejects(proxy.getPublicKey('t-ec256', 9), { code: 'KEYD_ERR_KEY_NOT_FOUND' })
  await t.rejects(proxy.createKey('by-proxy', 'ec-p256', 'tls-server'), { code: 'KEYD_ERR_FORBIDDEN' }, 'proxy client has no admin right')
  await t.rejects(keyd.admin.createKey('t-ec256', 'ec-p256', 'tls-server'), { code: 'KEYD_ERR_KEY_EXISTS' })
  await t.rejects(keyd.admin.createKey('Bad Name', 'ec-p256', 'tls-server'), { code: 'KEYD_ERR_BAD_KEY_NAME' })
  await t.rejects(keyd.admin.createKey('t-x', 'dsa-1024', 'tls-server'), { code: 'KEYD_ERR_BAD_KEY_TYPE' })
  await t.rejects(keyd.admin.createKey('t-x', 'ec-p256', 'anything'), { code: 'KEYD_ERR_BAD_KEY_TYPE' })
  const wrong = join(keyd.paths.home, 'wrong.secret')
  writeFileSync(wrong, 'not-the-secret\n', { mode: 0o600 })
  const intruder = new KeydClient({ socketPath: keyd.paths.socket, clientName: 'proxy', secretFile: wrong, timeoutMs: 5000 })
  await t.rejects(intruder.ping(), { code: 'KEYD_ERR_UNKNOWN_CLIENT' })
  intruder.close()
})

t.test('pipelined requests on one connection are all answered by id', async t => {
  const msgs = Array.from({ length: 50 }, (_, i) => Buffer.from(`m${i}`))
  const sigs = await Promise.all(msgs.map(async m => await proxy.sign('t-ed', 'ed25519', m)))
  const pub = (await proxy.getPublicKey('t-ed')).publicKey
  t.ok(sigs.every((s, i) => { const m = msgs[i]; return m !== undefined && verify(null, m, pub, s.signature) }))
})

t.test('garbage and malformed frames get errors and keyd keeps serving', async t => {
  const r = await raw()
  r.s.write(encodeFrame(Op.PING, 2))
  t.equal(errCode(await r.next()), ErrorCode.NOT_AUTHENTICATED, 'request before HELLO')
  t.equal((await r.hello()).opcode, Op.HELLO | 0x80)
  const bad = encodeFrame(Op.PING, 3); bad[4] = 9
  r.s.write(bad)
  t.equal(errCode(await r.next()), ErrorCode.UNSUPPORTED_VERSION)
  const flags = encodeFrame(Op.PING, 4); flags[7] = 1
  r.s.write(flags)
  t.equal(errCode(await r.next()), ErrorCode.BAD_FRAME)
  const trunc = encodeFrame(Op.SIGN, 5, [itemStr(Tag.KEY_NAME, 't-ed')])
  trunc.writeUInt32BE(999, 13)
  r.s.write(trunc)
  t.equal(errCode(await r.next()), ErrorCode.BAD_FRAME, 'item running past the frame')
  r.s.write(encodeFrame(0x55, 6))
  t.equal(errCode(await r.next()), ErrorCode.UNKNOWN_OPCODE)
  r.s.write(encodeFrame(Op.SIGN, 7, [itemStr(Tag.KEY_NAME, 't-ed')]))
  t.equal(errCode(await r.next()), ErrorCode.MISSING_ITEM)
  const sign = (version: Uint8Array): Buffer => encodeFrame(Op.SIGN, 7, [
    itemStr(Tag.KEY_NAME, 't-ed'), itemBytes(Tag.KEY_VERSION, version), itemU16(Tag.ALGORITHM, 0x30), itemBytes(Tag.MESSAGE, Buffer.from('m'))
  ])
  for (const version of [Uint8Array.of(1), Uint8Array.of(0, 1)]) {
    r.s.write(sign(version))
    t.equal(errCode(await r.next()), ErrorCode.BAD_FRAME, `a ${version.length}-byte KEY_VERSION is refused, not read as the current version`)
  }
  r.s.write(sign(Uint8Array.of(0, 0, 0, 1)))
  t.equal((await r.next()).opcode, Op.SIGN | 0x80, 'a 4-byte KEY_VERSION signs')
  r.s.write(encodeFrame(Op.PING, 8, [itemBytes(Tag.PAYLOAD, Buffer.from('still here'))]))
  const pong = await r.next()
  t.equal(pong.requestId, 8)
  r.s.destroy()

  const big = await raw()
  await big.hello()
  big.s.write(Buffer.from('ffffffff0102000000000009', 'hex'))
  const f = await big.next()
  t.equal(errCode(f), ErrorCode.FRAME_TOO_LARGE)
  await big.closed

  const junk = await raw()
  junk.s.end(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'))
  await junk.closed

  const noSecret = await raw()
  noSecret.s.write(encodeFrame(Op.HELLO, 1, [itemStr(Tag.CLIENT_NAME, 'proxy')]))
  t.equal(errCode(await noSecret.next()), ErrorCode.MISSING_ITEM, 'a HELLO without CLIENT_SECRET is MISSING_ITEM, not an empty secret')
  await noSecret.closed
  t.same(await proxy.ping(Buffer.from('ok')), Buffer.from('ok'), 'keyd still serves after garbage')
})

t.test('storage at rest: private files 0600 in 0700 dirs, no key material in clear, socket not world-accessible', async t => {
  t.equal(statSync(keyd.paths.socket).mode & 0o777, 0o600)
  t.equal(statSync(keyd.paths.home).mode & 0o777, 0o700)
  t.equal(statSync(keyd.paths.keysDir).mode & 0o777, 0o700)
  for (const f of readdirSync(keyd.paths.keysDir)) {
    t.equal(statSync(join(keyd.paths.keysDir, f)).mode & 0o777, 0o600, `${f} is 0600`)
    const text = readFileSync(join(keyd.paths.keysDir, f), 'utf8')
    t.notMatch(text, /PRIVATE KEY|"d":/, `${f} holds no clear key`)
  }
  t.equal(statSync(join(keyd.paths.secretsDir, 'proxy.secret')).mode & 0o777, 0o600)
})

t.test('a truncated key file is reported and the other keys keep working after restart', async t => {
  const file = join(keyd.paths.keysDir, 't-ec384.json')
  writeFileSync(file, readFileSync(file).subarray(0, 100))
  await keyd.stop()
  const again = await startKeyd(keyd.paths.home)
  t.teardown(() => again.stop())
  t.ok(again.lines.some(l => l.includes('t-ec384.json') && l.includes('truncated or corrupt')), 'keyd names the bad file')
  const c = again.client('proxy')
  t.teardown(() => c.close())
  await t.rejects(c.sign('t-ec384', 'ecdsa-sha384', Buffer.from('x')), { code: 'KEYD_ERR_KEY_NOT_FOUND' })
  t.ok((await c.sign('t-ed', 'ed25519', Buffer.from('x'))).signature.length === 64, 'other keys still sign after restart')
})
