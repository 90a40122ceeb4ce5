// keyd/server's dispatch table: every operation has one entry, the table's rights are the ones
// PROTOCOL.md states, and dispatch alone applies them, the seal state and unknown opcodes. Runs the
// real Dispatcher over a real FileKeystore (no socket: keyd.test.ts covers that).
import t from 'tap'
import { readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import pino from 'pino'
import { Dispatcher, OP_TABLE, type DispatchState } from '../../keyd/server/dispatch.js'
import { Sealer } from '../../keyd/server/sealer.js'
import { KeyPolicy } from '../../keyd/policy/key-policy.js'
import { FileKeystore } from '../../keyd/keystore/file-keystore.js'
import { FrameDecoder, encodeFrame, parseItems, HEADER_SIZE, Op, ErrorCode, type Item } from '../../keyd/protocol/codec.js'
import { OPS, type OpName } from '../../keyd/protocol/spec.js'
import { decodeErrorResponse, encodeSignRequest } from '../../keyd/protocol/messages.js'
import type { Client, Right } from '../../keyd/server/clients.js'
import { tempHome, ROOT } from '../helpers/paths.js'

const logger = pino({ level: 'silent' })
const client = (rights: Right[]): Client => ({ name: 'c', secretSha256: '0'.repeat(64), rights, usages: ['tls-server', 'token-sign'], keys: ['*'] })

function state (sealed = false): DispatchState {
  const keystore = sealed ? null : new FileKeystore(join(tempHome(), 'keys'), Buffer.alloc(32, 3))
  return { keystore, audit: null, custody: null, backup: null, policy: new KeyPolicy(), metrics: null, logger }
}

/** Runs one request; the answer's opcode name, or its wire error code. */
async function run (s: DispatchState, who: Client, opcode: number, items: Item[] = []): Promise<string | number> {
  const sealer = new Sealer(undefined, () => ({ keystore: s.keystore, devMode: true }), () => {}, logger)
  const parsed = parseItems(encodeFrame(opcode, 1, items).subarray(HEADER_SIZE))
  if (parsed === null) throw new Error('unparsable test items')
  const frame = { version: 1, opcode, flags: 0, requestId: 1, payload: new Uint8Array(0) }
  const [ev] = new FrameDecoder().push(await new Dispatcher(s, { signatures: 0, refused: 0 }, sealer).run(who, frame, parsed, performance.now()))
  if (ev?.kind !== 'frame') throw new Error('no answer frame')
  if (ev.frame.opcode !== Op.ERROR) return 'answered'
  const errorItems = parseItems(ev.frame.payload)
  if (errorItems === null) throw new Error('unparsable ERROR frame')
  return decodeErrorResponse(errorItems).code
}

/** The rights PROTOCOL.md states: sign for signing, admin for STATUS, UNSEAL and 0x20 up. */
const EXPECTED_RIGHT: Partial<Record<OpName, Right | null>> = { PING: null, GET_PUBLIC_KEY: null, SIGN: 'sign', SIGN_BATCH: 'sign', GET_TICKET_KEYS: 'sign', STATUS: 'admin', UNSEAL: 'admin' }

t.test('one entry per operation, each with the documented right', async t => {
  const names = (Object.keys(OPS) as OpName[]).filter(n => n !== 'HELLO' && n !== 'ERROR')
  t.same([...OP_TABLE.keys()].sort((a, b) => a - b), names.map(n => OPS[n].value).sort((a, b) => a - b), 'every op but HELLO (the connection) and ERROR (an answer)')
  for (const name of names) {
    const want = name in EXPECTED_RIGHT ? EXPECTED_RIGHT[name] : OPS[name].value >= 0x20 ? 'admin' : undefined
    t.equal(OP_TABLE.get(OPS[name].value)?.right, want, `${name} needs ${String(want)}`)
  }
})

t.test('dispatch refuses a missing right before the handler decodes anything', async t => {
  const s = state()
  for (const [op, entry] of OP_TABLE) {
    if (entry.right === null) continue
    const other: Right[] = entry.right === 'admin' ? ['sign'] : ['admin']
    t.equal(await run(s, client(other), op), ErrorCode.FORBIDDEN, `0x${op.toString(16)} without ${entry.right}`)
  }
})

t.test('no handler checks rights itself: only dispatch.ts calls authorizeRight', async t => {
  const dir = join(ROOT, 'keyd', 'server', 'ops')
  for (const f of readdirSync(dir).filter(f => f.endsWith('.ts'))) {
    t.notMatch(readFileSync(join(dir, f), 'utf8'), /authorizeRight|requireRight/, f)
  }
})

t.test('sealed: only PING, STATUS and UNSEAL are answered; unknown opcodes are refused', async t => {
  const sealed = state(true)
  t.equal(await run(sealed, client(['sign']), Op.PING), 'answered')
  t.equal(await run(sealed, client(['admin']), Op.STATUS), 'answered')
  t.equal(await run(sealed, client(['sign']), Op.SIGN), ErrorCode.SEALED)
  t.equal(await run(sealed, client(['admin']), Op.KEY_LIST), ErrorCode.SEALED)
  t.equal(await run(state(), client(['sign']), 0x55), ErrorCode.UNKNOWN_OPCODE)
})

t.test('SIGN through dispatch: a wrong-size KEY_VERSION is BAD_FRAME, the right size signs', async t => {
  const s = state()
  await s.keystore?.create('k', 'ed25519', 'token-sign')
  const sign = (version: Uint8Array): Item[] => [...encodeSignRequest({ name: 'k', algorithm: 0x30, message: Buffer.from('m') }), { tag: 0x04, value: version }]
  t.equal(await run(s, client(['sign']), Op.SIGN, sign(Uint8Array.of(1))), ErrorCode.BAD_FRAME)
  t.equal(await run(s, client(['sign']), Op.SIGN, sign(Uint8Array.of(0, 1))), ErrorCode.BAD_FRAME)
  t.equal(await run(s, client(['sign']), Op.SIGN, sign(Uint8Array.of(0, 0, 0, 1))), 'answered')
  t.equal(await run(s, { ...client(['sign']), keys: ['other'] }, Op.SIGN, sign(Uint8Array.of(0, 0, 0, 1))), ErrorCode.USAGE_FORBIDDEN, 'a key the client is not granted')
  t.equal(await run(s, { ...client(['sign']), usages: ['tls-server'] }, Op.SIGN, sign(Uint8Array.of(0, 0, 0, 1))), ErrorCode.USAGE_FORBIDDEN, 'a usage the client is not granted')
})
