// A hung PKCS#11 token (its p11-kit server stopped with SIGSTOP) costs the requests that need it
// TOKEN_TIMEOUT within the sign deadline, never keyd's event loop: other requests are answered
// meanwhile, and signing resumes by itself once the token answers again (SIGCONT).
import t from 'tap'
import { readFileSync } from 'node:fs'
import { verify } from 'node:crypto'
import { softhsmSkipReason, startPkcs11Keyd } from '../helpers/softhsm.js'
import { refusal } from '../helpers/keyd.js'

const skip = softhsmSkipReason()
if (skip !== undefined) {
  t.plan(0, skip)
} else {
  await run()
}

/** `pid` and its descendants: p11-kit server runs a `p11-kit remote` child per client connection. */
function processTree (pid: number): number[] {
  let children: number[] = []
  try { children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(s => s !== '').map(Number) } catch { /* the process has exited: no children */ }
  return [pid, ...children.flatMap(processTree)]
}

async function run (): Promise<void> {
  const keyd = await startPkcs11Keyd()
  const serverPid = keyd.hsm.server.pid as number
  const signal = (sig: NodeJS.Signals): void => { for (const p of processTree(serverPid)) { try { process.kill(p, sig) } catch { /* exited meanwhile */ } } }
  t.teardown(async () => { signal('SIGCONT'); await keyd.stop() })
  const message = Buffer.from('a JWT signing input')
  const created = await keyd.admin.createKey('hang-ec', 'ec-p256', 'token-sign')
  t.ok(verify('sha256', message, created.publicKey, (await keyd.admin.sign('hang-ec', 'ecdsa-sha256', message)).signature), 'the token signs')

  t.test('a hung token: TOKEN_TIMEOUT for what needs it, everything else answered meanwhile', async t => {
    signal('SIGSTOP')
    const started = Date.now()
    let refusedAt = 0
    let pingedAt = 0
    const signing = refusal(keyd.admin.sign('hang-ec', 'ecdsa-sha256', message)).finally(() => { refusedAt = performance.now() })
    const pinged = keyd.admin.ping(Buffer.from('loop free')).finally(() => { pingedAt = performance.now() })
    const [err, echo] = await Promise.all([signing, pinged])
    const elapsed = Date.now() - started
    const pingedBeforeTimeout = pingedAt < refusedAt
    t.equal(err.code, 'KEYD_ERR_TOKEN_TIMEOUT', err.message)
    t.ok(elapsed >= 900 && elapsed < 10_000, `after about the 1 s sign deadline (${elapsed} ms)`)
    t.same(echo, Buffer.from('loop free'))
    t.ok(pingedBeforeTimeout, 'a PING sent with it was answered while the token hung')
    t.equal((await keyd.admin.getPublicKey('hang-ec')).version, 1, 'public keys come from keyd\'s mirror, without the token')
    const next = await refusal(keyd.admin.sign('hang-ec', 'ecdsa-sha256', message))
    t.equal(next.code, 'KEYD_ERR_TOKEN_TIMEOUT')
    t.match(next.message, /has not answered/, 'while the token hangs, keyd does not queue more for it')
  })

  t.test('the token answers again: keyd signs again without a restart', async t => {
    signal('SIGCONT')
    let signed: Buffer | undefined
    for (const deadline = Date.now() + 15_000; signed === undefined && Date.now() < deadline;) {
      signed = await keyd.admin.sign('hang-ec', 'ecdsa-sha256', message).then(r => r.signature, () => undefined)
      if (signed === undefined) await new Promise(resolve => setTimeout(resolve, 100))
    }
    t.ok(signed !== undefined && verify('sha256', message, created.publicKey, signed), 'signs and verifies')
    const k = await keyd.admin.createKey('after-hang', 'ec-p256', 'token-sign')
    t.equal(k.version, 1, 'and generates keys')
  })
}
