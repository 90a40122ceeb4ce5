// A bounded-time fuzz of keyd's socket: for a few seconds, connections send random bytes and mutated
// valid frames (before and after HELLO), while a well-behaved client signs alongside and checks every
// signature. keyd must stay up, answer the fuzzers only with well-formed frames (never INTERNAL), and
// serve the well-behaved client correctly throughout. The seed is printed (FUZZ_SEED=… replays it).
import t from 'tap'
import { connect } from 'node:net'
import { verify } from 'node:crypto'
import { join } from 'node:path'
import { startKeyd } from '../helpers/keyd.js'
import { helloFrame } from '../helpers/keyd-abuse.js'
import { tls13Input } from '../helpers/tls-inputs.js'
import { FrameDecoder, Op, Tag, ErrorCode, encodeFrame, encodeItems, itemStr, itemBytes, itemU16, itemU32, itemU8, readUint, parseItems, errorCodeName } from '../../keyd/protocol/codec.js'
import { defined } from '../helpers/defined.js'
import { errorMessage } from '../../lib/errors.js'

const FUZZ_MS = 4000
const FUZZERS = 4
const seed = Number(process.env.FUZZ_SEED ?? Date.now() % 1_000_000)
t.comment(`fuzz seed ${seed}`)

/** mulberry32: a small seeded PRNG, so a failing run can be replayed. */
function prng (s: number): () => number {
  return () => {
    s = (s + 0x6d2b79f5) | 0
    let x = Math.imul(s ^ (s >>> 15), 1 | s)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

const keyd = await startKeyd()
t.teardown(() => keyd.stop())
const tlsKey = await keyd.admin.createKey('fz-tls', 'ec-p256', 'tls-server')
await keyd.admin.createKey('fz-jwt', 'ed25519', 'token-sign')
const proxySecret = join(keyd.paths.secretsDir, 'proxy.secret')

/** Valid request frames to start mutating from. */
function templates (id: number): Buffer[] {
  const sign = [itemStr(Tag.KEY_NAME, 'fz-tls'), itemU16(Tag.ALGORITHM, 0x0001), itemBytes(Tag.MESSAGE, tls13Input())]
  return [
    encodeFrame(Op.PING, id, [itemBytes(Tag.PAYLOAD, Buffer.from('ping'))]),
    encodeFrame(Op.SIGN, id, sign),
    encodeFrame(Op.SIGN, id, [itemStr(Tag.KEY_NAME, 'fz-jwt'), itemU32(Tag.KEY_VERSION, 1), itemU16(Tag.ALGORITHM, 0x0030), itemBytes(Tag.MESSAGE, Buffer.from('jwt')), itemU8(Tag.SIG_ENCODING, 1)]),
    encodeFrame(Op.SIGN_BATCH, id, [itemBytes(Tag.ENTRY, encodeItems(sign)), itemBytes(Tag.ENTRY, encodeItems(sign))]),
    encodeFrame(Op.GET_PUBLIC_KEY, id, [itemStr(Tag.KEY_NAME, 'fz-tls')]),
    encodeFrame(Op.GET_TICKET_KEYS, id, [itemU32(0x16, 3600), itemU32(0x17, 1)]),
    encodeFrame(Op.KEY_LIST, id, []),
    encodeFrame(Op.STATUS, id, [])
  ]
}

/** One fuzz input: random bytes, or a valid frame with a few mutations. */
function input (rand: () => number, id: number): Buffer {
  const pick = <T>(xs: T[]): T => defined(xs[Math.floor(rand() * xs.length)], 'a template')
  if (rand() < 0.2) return Buffer.from(Array.from({ length: Math.floor(rand() * 300) }, () => Math.floor(rand() * 256)))
  const f = Buffer.from(pick(templates(id)))
  const mutations = 1 + Math.floor(rand() * 3)
  let out = f
  for (let m = 0; m < mutations; m++) {
    const kind = rand()
    if (out.length < 17) break // truncated below the first item: nothing more to mutate
    if (kind < 0.3) out[Math.floor(rand() * out.length)] = Math.floor(rand() * 256) // a random byte
    else if (kind < 0.45) { const at = 4 + Math.floor(rand() * 8); out.writeUInt8(out.readUInt8(at) ^ (1 << Math.floor(rand() * 8)), at) } // a header bit
    else if (kind < 0.55) out = out.subarray(0, Math.floor(rand() * out.length)) // truncated
    else if (kind < 0.65) out.writeUInt32BE(Math.floor(rand() * 2 ** 32), 13) // an item length (first item)
    else if (kind < 0.75) out = Buffer.concat([out, Buffer.from([Math.floor(rand() * 256), 0, 0, 0, Math.floor(rand() * 5)]), Buffer.alloc(4, 7)]) // a trailing odd item
    else if (kind < 0.85) out.writeUInt32BE(Math.max(0, out.readUInt32BE(0) + Math.floor(rand() * 9) - 4), 0) // frame length off by a few
    else out = Buffer.concat([out, out.subarray(12)]) // every item twice
  }
  // Keep the frame length consistent half of the time, so the payload (not only the framing) is reached.
  if (out.length >= 4 && rand() < 0.5) out.writeUInt32BE(out.length - 4, 0)
  return out
}

interface FuzzStats { connections: number, frames: number, answers: number, internal: string[], malformed: number }

/** One fuzzing connection loop until the deadline. */
async function fuzzer (n: number, until: number, stats: FuzzStats): Promise<void> {
  const rand = prng(seed * 31 + n)
  while (Date.now() < until) {
    stats.connections++
    await new Promise<void>(resolve => {
      const s = connect(keyd.paths.socket)
      const decoder = new FrameDecoder()
      s.on('data', chunk => {
        for (const ev of decoder.push(chunk)) {
          if (ev.kind !== 'frame' || (ev.frame.opcode & 0x80) === 0) { stats.malformed++; continue }
          stats.answers++
          if (ev.frame.opcode === Op.ERROR) {
            const items = parseItems(ev.frame.payload)
            const code = items === null ? undefined : readUint(items, Tag.ERROR_CODE, 2)
            if (typeof code !== 'number') stats.malformed++
            else if (code === ErrorCode.INTERNAL) stats.internal.push(`${errorCodeName(code)}: ${String(items?.get(Tag.ERROR_MESSAGE) !== undefined ? Buffer.from(items.get(Tag.ERROR_MESSAGE) as Uint8Array).toString() : '')}`)
          }
        }
      })
      s.on('error', () => {})
      s.on('close', () => resolve())
      s.on('connect', () => {
        if (rand() < 0.7) s.write(helloFrame('proxy', proxySecret))
        const count = 1 + Math.floor(rand() * 40)
        for (let i = 0; i < count && !s.destroyed; i++) { s.write(input(rand, i + 2)); stats.frames++ }
        // Leave the connection open a little (answers arrive), then close it; keyd may close it first.
        setTimeout(() => s.destroy(), 20 + Math.floor(rand() * 100))
      })
    })
  }
}

t.test(`${FUZZ_MS / 1000} s of random and mutated frames: keyd stays up and correct`, async t => {
  const until = Date.now() + FUZZ_MS
  const stats: FuzzStats = { connections: 0, frames: 0, answers: 0, internal: [], malformed: 0 }
  const good = keyd.client('proxy')
  t.teardown(() => good.close())
  let goodOk = 0
  const goodErrors: string[] = []
  const wellBehaved = (async () => {
    while (Date.now() < until) {
      const message = tls13Input()
      try {
        const { signature } = await good.sign('fz-tls', 'ecdsa-sha256', message)
        if (verify('sha256', message, tlsKey.publicKey, signature)) goodOk++
        else goodErrors.push('a signature did not verify')
      } catch (err) {
        goodErrors.push(errorMessage(err))
      }
    }
  })()
  await Promise.all([wellBehaved, ...Array.from({ length: FUZZERS }, async (_, n) => await fuzzer(n, until, stats))])
  t.comment(JSON.stringify({ ...stats, internal: stats.internal.length, goodSignatures: goodOk }))
  t.equal(keyd.proc.exitCode, null, 'keyd is still running')
  t.ok(stats.frames > 200 && stats.answers > 100, `the fuzzers reached keyd (${stats.frames} inputs, ${stats.answers} answers)`)
  t.same(stats.internal.slice(0, 5), [], 'keyd never answered INTERNAL: every bad input got its own error')
  t.equal(stats.malformed, 0, 'every answer was a well-formed response frame')
  t.same(goodErrors.slice(0, 5), [], 'the well-behaved client never failed')
  t.ok(goodOk > 20, `and kept signing correctly (${goodOk} verified signatures)`)
  t.same(await keyd.admin.ping(Buffer.from('after')), Buffer.from('after'), 'keyd answers after the fuzz')
})
