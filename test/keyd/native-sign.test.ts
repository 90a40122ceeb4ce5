// keyd's native SIGN path (keyd/native, keyd/server/native-sign.ts), on a real keyd: signatures made by
// its C threads verify with the public key, each has its audit entry (and `audit verify` passes), every
// refusal is today's code (answered by JavaScript), a key change reaches the next SIGN at once, hostile
// bytes after HELLO get today's answers without hurting keyd, native and JavaScript entries make one
// chain (every line byte for byte as JavaScript writes it), and a kill -9 under load leaves a log that
// verifies and holds every answered signature. The count of native signatures comes from keyd's own
// "keyd stopping" line.
import t from 'tap'
import { execFile, execFileSync } from 'node:child_process'
import { verify, constants, type KeyObject } from 'node:crypto'
import { readFileSync, writeFileSync, rmSync, statSync } from 'node:fs'
import { createHash } from 'node:crypto'
import { join } from 'node:path'
import type { Socket } from 'node:net'
import { startKeyd, refusal, type TestKeyd } from '../helpers/keyd.js'
import { tempHome, CLI } from '../helpers/paths.js'
import { canonical, lineOf, type AuditEntry } from '../../keyd/audit/chain.js'
import { tls13Input, tls12Input } from '../helpers/tls-inputs.js'
import { helloFrame, openSocket } from '../helpers/keyd-abuse.js'
import { FrameDecoder, Op, Tag, ErrorCode, encodeFrame, itemStr, itemBytes, itemU16, readUint, parseItems, type Frame } from '../../keyd/protocol/codec.js'

async function auditVerify (home: string): Promise<{ code: number, out: string }> {
  return await new Promise(resolve => {
    execFile(process.execPath, [CLI, 'keyd', 'audit', 'verify', '--dev'], { env: { ...process.env, KEYEDGE_HOME: home } }, (err, stdout) => {
      resolve({ code: err === null ? 0 : (err.code as number), out: stdout })
    })
  })
}

interface Entry { seq: number, op: string, key: string | null, version: number | null, result: string, msgSha256: string | null, client: string }
const entries = (home: string): Entry[] => readFileSync(join(home, 'keyd', 'audit.log'), 'utf8').trim().split('\n').filter(l => l !== '').map(l => JSON.parse(l) as Entry)
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex')
/** The message hashes of the log's whole lines (a kill may leave a partial last line: it was never answered). */
const loggedHashes = (home: string): Set<string | null> => new Set(readFileSync(join(home, 'keyd', 'audit.log'), 'utf8').split('\n').slice(0, -1).map(l => (JSON.parse(l) as Entry).msgSha256))
const codeOf = async (p: Promise<unknown>): Promise<string> => (await refusal(p)).code

/** Stops keyd and returns how many signatures its native path made (from its "keyd stopping" line). */
async function stopCounting (keyd: TestKeyd): Promise<number> {
  await keyd.stop()
  const line = keyd.lines.map(l => { try { return JSON.parse(l) as Record<string, unknown> } catch { return {} } }).find(o => o.msg === 'keyd stopping')
  return typeof line?.nativeSignatures === 'number' ? line.nativeSignatures : -1
}

const spki = async (keyd: TestKeyd, name: string): Promise<KeyObject> => (await keyd.admin.getPublicKey(name)).publicKey

t.test('native signatures verify, and each is audited', async t => {
  const home = tempHome()
  t.teardown(() => rmSync(home, { recursive: true, force: true }))
  const keyd = await startKeyd(home)
  t.ok(keyd.lines.some(l => l.includes('keyd native SIGN path on')), 'the native path is on by default')
  await keyd.admin.createKey('ns-ec', 'ec-p256', 'tls-server')
  await keyd.admin.createKey('ns-rsa', 'rsa-2048', 'tls-server')
  await keyd.admin.createKey('ns-ed', 'ed25519', 'token-sign')
  const [ec, rsa, ed] = [await spki(keyd, 'ns-ec'), await spki(keyd, 'ns-rsa'), await spki(keyd, 'ns-ed')]
  const proxy = keyd.client('proxy')
  t.teardown(() => proxy.close())
  await proxy.ping()
  const signed: Buffer[] = []
  const m1 = tls13Input()
  const der = await proxy.sign('ns-ec', 'ecdsa-sha256', m1)
  t.ok(verify('sha256', m1, ec, der.signature), 'ECDSA P-256, DER')
  t.equal(der.version, 1, 'answers the version it used')
  const m2 = tls13Input(48)
  const p1363 = await proxy.sign('ns-ec', 'ecdsa-sha384', m2, { ieeeP1363: true })
  t.equal(p1363.signature.length, 64, 'P1363 r||s is 64 bytes')
  t.ok(verify('sha384', m2, { key: ec, dsaEncoding: 'ieee-p1363' }, p1363.signature), 'ECDSA P-256 SHA-384, IEEE P1363')
  const m3 = tls12Input()
  const v1 = await proxy.sign('ns-ec', 'ecdsa-sha256', m3, { version: 1 })
  t.ok(verify('sha256', m3, ec, v1.signature), 'TLS 1.2 ServerKeyExchange input, explicit version 1')
  const m4 = tls13Input()
  const pss = await proxy.sign('ns-rsa', 'rsa-pss-sha256', m4)
  t.ok(verify('sha256', m4, { key: rsa, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }, pss.signature), 'RSA-PSS SHA-256, salt = digest length')
  const m5 = tls13Input()
  const pkcs1 = await proxy.sign('ns-rsa', 'rsa-pkcs1-sha256', m5)
  t.ok(verify('sha256', m5, { key: rsa, padding: constants.RSA_PKCS1_PADDING }, pkcs1.signature), 'RSA PKCS#1 v1.5 SHA-256')
  const m6 = Buffer.from('header.payload')
  const eds = await proxy.sign('ns-ed', 'ed25519', m6)
  t.ok(verify(null, m6, ed, eds.signature), 'Ed25519')
  signed.push(m1, m2, m3, m4, m5, m6)
  // Pipelined from several connections at once.
  const clients = Array.from({ length: 4 }, () => keyd.client('proxy'))
  t.teardown(() => { for (const c of clients) c.close() })
  const many = Array.from({ length: 200 }, () => tls13Input())
  const answers = await Promise.all(many.map(async (m, i) => await (clients[i % 4] as typeof proxy).sign('ns-ec', 'ecdsa-sha256', m)))
  t.ok(answers.every((a, i) => verify('sha256', many[i] as Buffer, ec, a.signature)), '200 pipelined signatures from 4 connections verify')
  signed.push(...many)
  const native = await stopCounting(keyd)
  t.equal(native, signed.length, `every signature was made by the native path (${native})`)
  const signs = entries(home).filter(e => e.op === 'SIGN')
  t.equal(signs.length, signed.length, 'one SIGN entry per signature')
  t.ok(signs.every(e => e.result === 'ok' && e.client === 'proxy'), 'each ok, by the proxy')
  t.same(new Set(signs.map(e => e.msgSha256)), new Set(signed.map(sha256)), 'each with the hash of its message')
  // The client sends KEY_VERSION 0 for "current": the entry holds the requested version as sent, as auditRecordFor reads it.
  t.same(signs.filter(e => e.version !== 0).map(e => e.version), [1], 'the requested version as sent')
  const v = await auditVerify(home)
  t.equal(v.code, 0, v.out.trim())
  t.match(v.out, new RegExp(`written: ${entries(home).length} entries`))
})

t.test('native and JavaScript entries make one chain: interleaved under load, each line as JavaScript writes it, audit verify passes', async t => {
  const home = tempHome()
  t.teardown(() => rmSync(home, { recursive: true, force: true }))
  const keyd = await startKeyd(home)
  await keyd.admin.createKey('mx-ec', 'ec-p256', 'tls-server')
  const ec = await spki(keyd, 'mx-ec')
  const signers = Array.from({ length: 3 }, () => keyd.client('proxy'))
  const other = keyd.client('proxy')
  t.teardown(() => { for (const c of [...signers, other]) c.close() })
  // Native signatures from three connections while a fourth sends what JavaScript answers and audits
  // (a refused SIGN, a SIGN_BATCH) and the admin client creates keys: all of it into one log at once.
  const signed: Buffer[] = []
  let stop = false
  const natives = Promise.all(signers.map(async c => {
    while (!stop) {
      const m = tls13Input()
      const r = await c.sign('mx-ec', 'ecdsa-sha256', m)
      if (!verify('sha256', m, ec, r.signature)) throw new Error('a native signature does not verify')
      signed.push(m)
    }
  }))
  let jsOps = 0
  for (let i = 0; i < 30; i++) {
    t.equal(await codeOf(other.sign('mx-none', 'ecdsa-sha256', tls13Input())), 'KEYD_ERR_KEY_NOT_FOUND')
    const batch = await other.signBatch([{ name: 'mx-ec', algorithm: 'ecdsa-sha256', message: tls13Input() }, { name: 'mx-ec', algorithm: 'ecdsa-sha256', message: tls13Input() }])
    t.equal(batch.length, 2)
    jsOps += 3
    if (i % 10 === 0) { await keyd.admin.createKey(`mx-k${i}`, 'ec-p256', 'tls-server'); jsOps++ }
  }
  stop = true
  await natives
  const native = await stopCounting(keyd)
  t.ok(native >= signed.length && signed.length > 0, `native signatures (${native}) alongside ${jsOps} JavaScript operations`)
  const lines = readFileSync(join(home, 'keyd', 'audit.log'), 'utf8').split('\n').filter(l => l !== '')
  const all = lines.map(l => JSON.parse(l) as AuditEntry)
  t.same(all.map(e => e.seq), all.map((_, i) => i + 1), 'seq runs 1..n without a gap or a repeat')
  t.ok(lines.every((l, i) => lineOf((all[i] as AuditEntry).chain, canonical(all[i] as AuditEntry)) === l + '\n'), 'every line, native or not, is byte for byte what JavaScript\'s writer makes of its record')
  t.ok(all.every(e => /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/.test(e.time)), 'every time in toISOString form')
  const nativeSeqs = all.filter(e => e.op === 'SIGN' && e.key === 'mx-ec' && e.result === 'ok').map(e => e.seq)
  const jsSeqs = all.filter(e => e.op === 'SIGN_BATCH' || e.result === 'KEY_NOT_FOUND').map(e => e.seq)
  t.equal(jsSeqs.length, 90, 'every refused SIGN and batch entry is there')
  const first = nativeSeqs[0] ?? 0
  const last = nativeSeqs.at(-1) ?? 0
  t.ok(jsSeqs.some(s => s > first && s < last), 'JavaScript entries fall between native ones (one chain, one order)')
  const logged = new Set(all.map(e => e.msgSha256))
  t.ok(signed.every(m => logged.has(sha256(m))), `each of the ${signed.length} native signatures has its entry`)
  const v = await auditVerify(home)
  t.equal(v.code, 0, v.out.trim())
})

t.test('refusals are today\'s codes, and a key change reaches the very next SIGN', async t => {
  const home = tempHome()
  t.teardown(() => rmSync(home, { recursive: true, force: true }))
  // A rate limit on one key: that key stays on the JavaScript path, which refuses past the burst.
  const keyd0 = await startKeyd(home)
  await keyd0.stop()
  writeFileSync(join(home, 'keyd', 'policy.json'), JSON.stringify({ keys: { 'rl-ec': { rateLimit: { perSecond: 0.001, burst: 2 } }, 'alg-ec': { algorithms: ['ecdsa-sha384'] } } }))
  const keyd = await startKeyd(home)
  await keyd.admin.createKey('rf-ec', 'ec-p256', 'tls-server')
  await keyd.admin.createKey('rl-ec', 'ec-p256', 'tls-server')
  await keyd.admin.createKey('alg-ec', 'ec-p256', 'tls-server')
  await keyd.admin.createKey('rf-rsa', 'rsa-2048', 'tls-server')
  const proxy = keyd.client('proxy')
  t.teardown(() => proxy.close())
  let natives = 0
  await proxy.sign('rf-ec', 'ecdsa-sha256', tls13Input()); natives++
  const code = async (p: Promise<unknown>): Promise<string> => (await refusal(p)).code
  t.equal(await code(proxy.sign('no-such-key', 'ecdsa-sha256', tls13Input())), 'KEYD_ERR_KEY_NOT_FOUND', 'unknown key')
  t.equal(await code(proxy.sign('rf-ec', 'ecdsa-sha256', tls13Input(), { version: 7 })), 'KEYD_ERR_KEY_NOT_FOUND', 'unknown version')
  t.equal(await code(proxy.sign('rf-ec', 'rsa-pss-sha256', tls13Input())), 'KEYD_ERR_BAD_ALGORITHM', 'algorithm of another family')
  t.equal(await code(proxy.sign('rf-ec', 'ecdsa-sha256', Buffer.from('not a handshake'))), 'KEYD_ERR_POLICY_DENIED_MESSAGE', 'a non-TLS message for a tls-server key')
  t.equal(await code(proxy.sign('alg-ec', 'ecdsa-sha256', tls13Input())), 'KEYD_ERR_FORBIDDEN', 'an algorithm the key\'s policy does not allow')
  await proxy.sign('alg-ec', 'ecdsa-sha384', tls13Input()); natives++
  await proxy.sign('rl-ec', 'ecdsa-sha256', tls13Input())
  await proxy.sign('rl-ec', 'ecdsa-sha256', tls13Input())
  t.equal(await code(proxy.sign('rl-ec', 'ecdsa-sha256', tls13Input())), 'KEYD_ERR_RATE_LIMITED', 'a rate-limited key past its burst')

  await keyd.admin.setKeyState('rf-ec', 'disable')
  t.equal(await code(proxy.sign('rf-ec', 'ecdsa-sha256', tls13Input())), 'KEYD_ERR_KEY_DISABLED', 'disabled: the very next SIGN is refused')
  await keyd.admin.setKeyState('rf-ec', 'enable')
  await proxy.sign('rf-ec', 'ecdsa-sha256', tls13Input()); natives++
  t.pass('enabled: signs again at once')
  const rotated = await keyd.admin.rotateKey('rf-ec', { signGraceSeconds: 0 })
  const after = await proxy.sign('rf-ec', 'ecdsa-sha256', tls13Input()); natives++
  t.equal(after.version, rotated.version, 'rotated: the next SIGN uses the new version')
  const retired = await refusal(proxy.sign('rf-ec', 'ecdsa-sha256', tls13Input(), { version: 1 }))
  t.equal(retired.code, 'KEYD_ERR_KEY_VERSION_RETIRED', 'the old version past its grace (0 s) is refused')
  await keyd.admin.setKeyState('rf-rsa', 'destroy')
  t.equal(await code(proxy.sign('rf-rsa', 'rsa-pss-sha256', tls13Input())), 'KEYD_ERR_KEY_DESTROYED', 'destroyed')
  const native = await stopCounting(keyd)
  t.equal(native, natives, `only the successes were native (${native})`)
  const v = await auditVerify(home)
  t.equal(v.code, 0, v.out.trim())
  const signs = entries(home).filter(e => e.op === 'SIGN')
  t.equal(signs.filter(e => e.result === 'ok').length, natives + 2, 'every signature audited (native and JavaScript)')
  t.ok(signs.some(e => e.result === 'KEY_DISABLED') && signs.some(e => e.result === 'RATE_LIMITED'), 'refusals audited as before')
})

/** Reads frames from `s` into a list; resolves `closed` when keyd closes. */
function reader (s: Socket): { frames: Frame[], closed: Promise<void> } {
  const frames: Frame[] = []
  const d = new FrameDecoder()
  s.on('data', (b: Buffer) => { for (const ev of d.push(b)) if (ev.kind === 'frame') frames.push(ev.frame) })
  return { frames, closed: new Promise(resolve => s.once('close', () => resolve())) }
}

async function until (p: () => boolean, ms = 10_000): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end;) {
    if (p()) return true
    await new Promise(resolve => setTimeout(resolve, 10))
  }
  return p()
}

const signFrame = (id: number, key: string): Buffer => encodeFrame(Op.SIGN, id, [itemStr(Tag.KEY_NAME, key), itemU16(Tag.ALGORITHM, 1), itemBytes(Tag.MESSAGE, tls13Input())])

t.test('hostile bytes after HELLO on a native connection get today\'s answers, and keyd stays up', async t => {
  const home = tempHome()
  t.teardown(() => rmSync(home, { recursive: true, force: true }))
  const keyd = await startKeyd(home)
  t.teardown(() => keyd.stop())
  await keyd.admin.createKey('hb-ec', 'ec-p256', 'tls-server')
  const secret = join(keyd.paths.secretsDir, 'proxy.secret')
  const session = async (): Promise<{ s: Socket, r: ReturnType<typeof reader> }> => {
    const s = await openSocket(keyd.paths.socket)
    const r = reader(s)
    s.write(helloFrame('proxy', secret))
    await until(() => r.frames.length >= 1)
    s.write(signFrame(2, 'hb-ec'))
    await until(() => r.frames.length >= 2)
    return { s, r }
  }
  const errorOf = (f: Frame | undefined): number | undefined => {
    const items = f === undefined ? null : parseItems(f.payload)
    const c = items === null ? undefined : readUint(items, Tag.ERROR_CODE, 2)
    return typeof c === 'number' ? c : undefined
  }

  // A frame over the size limit: FRAME_TOO_LARGE, then the connection closes.
  const a = await session()
  t.equal(a.r.frames[1]?.opcode, Op.SIGN | 0x80, 'a SIGN answered on the native connection')
  const big = Buffer.alloc(12)
  big.writeUInt32BE(64 * 1024 * 1024, 0)
  big[4] = 1; big[5] = Op.PING; big.writeUInt32BE(77, 8)
  a.s.write(big)
  await a.r.closed
  t.equal(errorOf(a.r.frames[2]), ErrorCode.FRAME_TOO_LARGE, 'oversized frame: FRAME_TOO_LARGE')
  t.equal(a.r.frames[2]?.requestId, 77, 'with its request id')

  // Items that do not parse, a wrong version, non-zero flags, an unknown opcode: each its own error, the connection stays.
  const b = await session()
  const badItems = Buffer.concat([encodeFrame(Op.SIGN, 3, []).subarray(0, 12), Buffer.from([3, 0, 0, 0, 9, 0x61])])
  badItems.writeUInt32BE(badItems.length - 4, 0)
  const badVersion = signFrame(4, 'hb-ec'); badVersion[4] = 2
  const badFlags = signFrame(5, 'hb-ec'); badFlags[7] = 1
  b.s.write(Buffer.concat([badItems, badVersion, badFlags, encodeFrame(0x77, 6, []), signFrame(7, 'hb-ec')]))
  await until(() => b.r.frames.length >= 7)
  const byId = new Map(b.r.frames.map(f => [f.requestId, f]))
  t.equal(errorOf(byId.get(3)), ErrorCode.BAD_FRAME, 'items past the end: BAD_FRAME')
  t.equal(errorOf(byId.get(4)), ErrorCode.UNSUPPORTED_VERSION, 'version 2: UNSUPPORTED_VERSION')
  t.equal(errorOf(byId.get(5)), ErrorCode.BAD_FRAME, 'flags: BAD_FRAME')
  t.equal(errorOf(byId.get(6)), ErrorCode.UNKNOWN_OPCODE, 'unknown opcode: UNKNOWN_OPCODE')
  t.equal(byId.get(7)?.opcode, Op.SIGN | 0x80, 'and the next good SIGN is signed')
  b.s.destroy()

  // Garbage, a truncated frame, then the client closes.
  const c = await session()
  c.s.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'))
  await c.r.closed
  t.equal(errorOf(c.r.frames[2]), ErrorCode.FRAME_TOO_LARGE, 'garbage (an absurd length): FRAME_TOO_LARGE and closed')
  const d = await session()
  d.s.end(signFrame(8, 'hb-ec').subarray(0, 30))
  await d.r.closed
  t.equal(d.r.frames.length, 2, 'a truncated frame then close: nothing more answered')

  const proxy = keyd.client('proxy')
  t.teardown(() => proxy.close())
  const m = tls13Input()
  const ok = await proxy.sign('hb-ec', 'ecdsa-sha256', m)
  t.ok(verify('sha256', m, await spki(keyd, 'hb-ec'), ok.signature), 'keyd still signs for a well-behaved client')
  t.equal(keyd.proc.exitCode, null, 'keyd is running')
})

t.test('kill -9 under native signing load: the audit log verifies after the restart', async t => {
  const home = tempHome()
  t.teardown(() => rmSync(home, { recursive: true, force: true }))
  for (let round = 0; round < 3; round++) {
    const keyd = await startKeyd(home)
    if (round === 0) await keyd.admin.createKey('k9-ec', 'ec-p256', 'tls-server')
    const clients = Array.from({ length: 4 }, () => keyd.client('proxy'))
    const answered: Buffer[] = []
    const load = Promise.all(clients.map(async c => {
      for (;;) { const m = tls13Input(); await c.sign('k9-ec', 'ecdsa-sha256', m); answered.push(m) }
    })).catch(() => {})
    await until(() => answered.length >= 200 + round * 100)
    await keyd.stop('SIGKILL')
    await load
    for (const c of clients) c.close()
    const v = await auditVerify(home)
    t.equal(v.code, 0, `round ${round}: ${answered.length} answered before the kill; ${v.out.trim()}`)
    // The native path writes each entry before its answer: a kill loses none of the answered ones.
    const logged = loggedHashes(home)
    t.equal(answered.filter(m => !logged.has(sha256(m))).length, 0, `round ${round}: every answered signature is in the log`)
  }
  const keyd = await startKeyd(home)
  t.teardown(() => keyd.stop())
  const proxy = keyd.client('proxy')
  t.teardown(() => proxy.close())
  await proxy.sign('k9-ec', 'ecdsa-sha256', tls13Input())
  t.pass('signs after the restarts')
})

t.test('an audit write that fails on the native path fails closed, leaves no partial entry, and keyd serves natively again once it can write', async t => {
  // A file size limit on keyd (prlimit; the native path ignores SIGXFSZ, so the write fails with EFBIG
  // part-way): the same failure as a full disk, without root.
  try { execFileSync('prlimit', ['--version'], { stdio: 'pipe' }) } catch { t.comment('prlimit (util-linux) not installed: skipped'); t.pass('skipped'); return }
  const home = tempHome()
  t.teardown(() => rmSync(home, { recursive: true, force: true }))
  const keyd = await startKeyd(home, ['--metrics-port', '0'])
  t.teardown(() => keyd.stop())
  const ready = await keyd.waitFor(o => o.msg === 'keyd ready')
  const health = async (): Promise<number> => (await fetch(`http://127.0.0.1:${ready.metricsPort as number}/healthz`)).status
  await keyd.admin.createKey('fz-ec', 'ec-p256', 'tls-server')
  const proxy = keyd.client('proxy')
  t.teardown(() => proxy.close())
  const answered: Buffer[] = []
  for (let i = 0; i < 5; i++) { const m = tls13Input(); await proxy.sign('fz-ec', 'ecdsa-sha256', m); answered.push(m) }
  const log = join(home, 'keyd', 'audit.log')
  const size = statSync(log).size
  const pid = String(keyd.proc.pid)
  // Room for part of one more entry, not a whole one.
  execFileSync('prlimit', ['--pid', pid, `--fsize=${size + 60}:unlimited`])
  t.teardown(() => { try { execFileSync('prlimit', ['--pid', pid, '--fsize=unlimited:unlimited'], { stdio: 'pipe' }) } catch { /* keyd is gone */ } })
  t.equal(await codeOf(proxy.sign('fz-ec', 'ecdsa-sha256', tls13Input())), 'KEYD_ERR_AUDIT_UNAVAILABLE', 'the SIGN whose entry could not be written is refused (keyd ignores SIGXFSZ: the write fails with EFBIG)')
  await keyd.waitFor(o => o.msg === 'audit log write failed on the native SIGN path: nothing was answered for it; the chain is back in JavaScript')
  t.equal(statSync(log).size, size, 'the part written was cut back: the log ends with its last whole entry')
  t.equal(await codeOf(proxy.sign('fz-ec', 'ecdsa-sha256', tls13Input())), 'KEYD_ERR_AUDIT_UNAVAILABLE', 'fail-closed: nothing is signed meanwhile')
  t.equal(await health(), 503, '/healthz 503')
  execFileSync('prlimit', ['--pid', pid, '--fsize=unlimited:unlimited'])
  let back: Buffer | undefined
  for (const deadline = Date.now() + 15_000; back === undefined && Date.now() < deadline;) {
    const m = tls13Input()
    back = await proxy.sign('fz-ec', 'ecdsa-sha256', m).then(r => { answered.push(m); return r.signature }, () => undefined)
    if (back === undefined) await new Promise(resolve => setTimeout(resolve, 100))
  }
  t.ok(back !== undefined, 'keyd signs again by itself once it can write')
  for (let i = 0; i < 5; i++) { const m = tls13Input(); await proxy.sign('fz-ec', 'ecdsa-sha256', m); answered.push(m) }
  t.equal(await health(), 200, '/healthz 200 again')
  const native = await stopCounting(keyd)
  t.equal(native, answered.length, `every answered signature was native, after the recovery too (${native}): the chain went back to C`)
  const logged = loggedHashes(home)
  t.ok(answered.every(m => logged.has(sha256(m))), 'every answered signature is in the log')
  t.ok(readFileSync(log, 'utf8').endsWith('\n'), 'no partial entry')
  const v = await auditVerify(home)
  t.equal(v.code, 0, v.out.trim())
})

t.test('--no-native-sign, --audit fsync: every signature is made in JavaScript', async t => {
  for (const args of [['--no-native-sign'], ['--audit', 'fsync']]) {
    const home = tempHome()
    t.teardown(() => rmSync(home, { recursive: true, force: true }))
    const keyd = await startKeyd(home, args)
    await keyd.admin.createKey('js-ec', 'ec-p256', 'tls-server')
    const proxy = keyd.client('proxy')
    const m = tls13Input()
    const { signature } = await proxy.sign('js-ec', 'ecdsa-sha256', m)
    t.ok(verify('sha256', m, await spki(keyd, 'js-ec'), signature), `${args.join(' ')}: signs`)
    proxy.close()
    const native = await stopCounting(keyd)
    t.equal(native, 0, `${args.join(' ')}: no native signature`)
    t.equal(entries(home).filter(e => e.op === 'SIGN' && e.result === 'ok').length, 1, `${args.join(' ')}: audited`)
  }
})

t.test('a flood of SIGNs the native side passes to JavaScript is read no faster than JavaScript takes it, and every one is answered', async t => {
  const home = tempHome()
  t.teardown(() => rmSync(home, { recursive: true, force: true }))
  const keyd = await startKeyd(home)
  t.teardown(() => keyd.stop())
  await keyd.admin.createKey('fl-ec', 'ec-p256', 'tls-server')
  const s = await openSocket(keyd.paths.socket)
  t.teardown(() => s.destroy())
  const r = reader(s)
  s.write(helloFrame('proxy', join(keyd.paths.secretsDir, 'proxy.secret')))
  await until(() => r.frames.length >= 1)
  s.write(signFrame(2, 'fl-ec'))
  await until(() => r.frames.length >= 2)
  // ~3.5 MB of requests keyd refuses (no such key): past the 1 MiB the threads may queue for JavaScript.
  const N = 20_000
  const flood = Buffer.concat(Array.from({ length: N }, (_, i) => signFrame(1000 + i, 'no-such-key')))
  s.write(flood)
  t.ok(await until(() => r.frames.length >= N + 2, 60_000), `every request answered (${r.frames.length - 2} of ${N})`)
  const codes = new Set(r.frames.slice(2).map(f => { const items = parseItems(f.payload); return items === null ? -1 : readUint(items, Tag.ERROR_CODE, 2) }))
  // As on the JavaScript path: refusals are audited too, and past what the audit reserve covers they wait
  // for the log's write, so a flood also meets the 256-in-flight bound (OVERLOADED).
  t.ok(codes.has(ErrorCode.KEY_NOT_FOUND) && [...codes].every(c => c === ErrorCode.KEY_NOT_FOUND || c === ErrorCode.OVERLOADED), `each KEY_NOT_FOUND or OVERLOADED, from JavaScript (${[...codes].join(', ')})`)
  s.write(signFrame(3, 'fl-ec'))
  t.ok(await until(() => r.frames.some(f => f.requestId === 3 && f.opcode === (Op.SIGN | 0x80))), 'and the connection signs again natively')
})
