// Bounded time: keyd's event loop never waits for a key generation or a slow signature. Full TLS
// handshakes run through keyd (the bridge gives keyd 1 s per signature) while an RSA-4096 key is
// created and rotated and RSA-4096 signatures are made: not one handshake may fail. Before, the
// synchronous RSA-4096 generation (1.4-2.7 s) failed every handshake meanwhile.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { connect, createSecureContext } from 'node:tls'
import { verify, constants } from 'node:crypto'
import { startStack, startProxy } from '../helpers/edge.js'

const stack = await startStack()
t.teardown(() => stack.stop())
const proxy = await startProxy(stack, { workers: 1 })
t.teardown(() => proxy.stop())
const context = createSecureContext({ ca: readFileSync(stack.caFile, 'utf8'), minVersion: 'TLSv1.3', sigalgs: 'ecdsa_secp256r1_sha256' })

/** Full handshakes (no session offered) on `concurrency` loops until `running()` is false. */
async function handshakes (concurrency: number, running: () => boolean): Promise<{ ok: number, failed: string[], slowestMs: number }> {
  let ok = 0
  let slowestMs = 0
  const failed: string[] = []
  const one = async (): Promise<void> => await new Promise(resolve => {
    const started = performance.now()
    const s = connect({ host: '127.0.0.1', port: proxy.port, servername: 'localhost', secureContext: context })
    const timer = setTimeout(() => { failed.push('no handshake within 5 s'); s.destroy(); resolve() }, 5000)
    s.once('secureConnect', () => { clearTimeout(timer); ok++; slowestMs = Math.max(slowestMs, performance.now() - started); s.destroy(); resolve() })
    s.once('error', err => { clearTimeout(timer); failed.push(err.message); resolve() })
  })
  await Promise.all(Array.from({ length: concurrency }, async () => { while (running()) await one() }))
  return { ok, failed, slowestMs }
}

t.test('an RSA-4096 key is created and rotated, and signs, while handshakes run: none fails', async t => {
  let busy = true
  const load = handshakes(4, () => busy)
  await new Promise(resolve => setTimeout(resolve, 300)) // the load is under way
  const message = Buffer.from('a JWT signing input')
  const started = performance.now()
  const created = await stack.keyd.admin.createKey('slow-4096', 'rsa-4096', 'token-sign')
  const createdMs = performance.now() - started
  const rotated = await stack.keyd.admin.rotateKey('slow-4096')
  const totalMs = performance.now() - started
  const sigs = await Promise.all(Array.from({ length: 8 }, async () => await stack.keyd.admin.sign('slow-4096', 'rsa-pss-sha256', message)))
  busy = false
  const r = await load
  t.comment(`RSA-4096: created in ${createdMs.toFixed(0)} ms, created + rotated in ${totalMs.toFixed(0)} ms; ${r.ok} handshakes meanwhile, slowest ${r.slowestMs.toFixed(0)} ms`)
  t.equal(created.bits, 4096)
  t.equal(rotated.version, 2)
  const pss = { key: rotated.publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }
  t.ok(sigs.every(s => s.version === 2 && verify('sha256', message, pss, s.signature)), 'RSA-4096 signatures verify')
  t.same(r.failed, [], 'no handshake failed')
  t.ok(r.ok >= 20, `handshakes kept completing (${r.ok})`)
})

t.test('keyd made its wrapping key at start, off the event loop: WRAPPING_KEY answers at once', async t => {
  const started = performance.now()
  const w = await stack.keyd.admin.getWrappingKey()
  t.equal(w.bits, 3072)
  t.comment(`WRAPPING_KEY answered in ${(performance.now() - started).toFixed(1)} ms`)
  t.ok(stack.keyd.lines.every(l => !l.includes('still being generated')), 'no request found it missing')
})
