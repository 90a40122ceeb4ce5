// GET_TICKET_KEYS: keys derived from the master key per epoch, the same on every keyd sharing the
// master, different for another master; the key-set codec; refusals; the client over a real socket.
import t from 'tap'
import { join } from 'node:path'
import { FileKeystore } from '../../keyd/keystore/file-keystore.js'
import pino from 'pino'
import { ticketKeys } from '../../keyd/server/ops/ticket-keys.js'
import { Dispatcher } from '../../keyd/server/dispatch.js'
import { KeyPolicy } from '../../keyd/policy/key-policy.js'
import { itemU32, parseItems, encodeFrame, FrameDecoder, Op, ErrorCode, HEADER_SIZE, type Item, type ItemMap } from '../../keyd/protocol/codec.js'
import { decodeGetTicketKeysRequest, decodeErrorResponse } from '../../keyd/protocol/messages.js'
import { TicketTag, decodeTicketKeySet, encodeTicketKeySet, TICKET_RECORD_BYTES } from '../../keyd/protocol/ticket-keys.js'
import type { Keystore } from '../../keyd/keystore/keystore.js'
import type { Right } from '../../keyd/server/clients.js'
import { startKeyd } from '../helpers/keyd.js'
import { tempHome } from '../helpers/paths.js'
import { defined } from '../helpers/defined.js'

const master = Buffer.alloc(32, 7)
const ctx = (dir: string, key = master): Keystore => new FileKeystore(join(tempHome(), dir), key)
const items = (...list: Item[]): ItemMap => {
  const parsed = parseItems(encodeFrame(Op.GET_TICKET_KEYS, 1, list).subarray(HEADER_SIZE))
  if (parsed === null) throw new Error('unparsable test items')
  return parsed
}
const answer = (ks: Keystore, rotation: number, previous: number, nowMs: number): ReturnType<typeof decodeTicketKeySet> =>
  decodeTicketKeySet(ticketKeys(ks, decodeGetTicketKeysRequest(items(itemU32(TicketTag.ROTATION_SECONDS, rotation), itemU32(TicketTag.PREVIOUS, previous))), nowMs).keySet)

t.test('previous, current and next keys with their validity; the same on two keyds sharing the master', async t => {
  const now = 1_800_000_123_000
  const a = answer(ctx('a'), 3600, 2, now) ?? []
  const b = answer(ctx('b'), 3600, 2, now) ?? []
  const epoch = Math.floor(now / 1000 / 3600)
  t.same(a.map(k => k.epoch), [epoch - 2, epoch - 1, epoch, epoch + 1], 'oldest first: 2 previous, current, next')
  t.same(a.map(k => k.key.toString('hex')), b.map(k => k.key.toString('hex')), 'another keyd with the same master derives the same keys')
  t.equal(new Set(a.map(k => k.key.subarray(0, 16).toString('hex'))).size, 4, 'every epoch has its own key name')
  const cur = defined(a[2], 'the current epoch key')
  t.equal(cur.key.length, 48)
  t.same([cur.encryptFrom, cur.encryptUntil, cur.decryptUntil], [epoch * 3600, (epoch + 1) * 3600, (epoch + 3) * 3600])
  const later = answer(ctx('c'), 3600, 2, now + 3600_000) ?? []
  t.equal(defined(later[1], 'the previous epoch key').key.toString('hex'), cur.key.toString('hex'), 'an hour later, the same epoch has the same key')
  const other = answer(ctx('d', Buffer.alloc(32, 8)), 3600, 2, now) ?? []
  t.not(defined(other[2], 'the current epoch key').key.toString('hex'), cur.key.toString('hex'), 'another master, other keys')
  const otherPeriod = answer(ctx('e'), 1800, 2, now) ?? []
  t.notOk(otherPeriod.some(k => a.some(x => x.key.equals(k.key))), 'another rotation period, other keys')
})

t.test('key-set codec round trip and malformed sizes', async t => {
  const keys = [{ epoch: 5, encryptFrom: 50, encryptUntil: 60, decryptUntil: 70, key: Buffer.alloc(48, 1) }]
  const enc = encodeTicketKeySet(keys)
  t.equal(enc.length, TICKET_RECORD_BYTES)
  t.same(decodeTicketKeySet(enc), keys)
  t.equal(decodeTicketKeySet(enc.subarray(1)), null)
  t.equal(decodeTicketKeySet(Buffer.alloc(0)), null)
})

t.test('refusals through the dispatch table: no sign right, missing or out-of-range items', async t => {
  const state = { keystore: ctx('f'), audit: null, custody: null, backup: null, policy: new KeyPolicy(), metrics: null, logger: pino({ level: 'silent' }) }
  const refused = (rights: Right[], list: Item[]): number | string => {
    const client = { name: 'proxy', secretSha256: '0'.repeat(64), rights, usages: ['tls-server' as const], keys: ['*'] }
    const frame = { version: 1, opcode: Op.GET_TICKET_KEYS, flags: 0, requestId: 1, payload: new Uint8Array(0) }
    const out = new Dispatcher(state, { signatures: 0, refused: 0 }).run(client, frame, items(...list), performance.now())
    if (out instanceof Promise) return 'async'
    const [ev] = new FrameDecoder().push(out)
    if (ev?.kind !== 'frame') return 'no frame'
    if (ev.frame.opcode !== Op.ERROR) return 'answered'
    const errorItems = parseItems(ev.frame.payload)
    return errorItems === null ? 'unparsable' : decodeErrorResponse(errorItems).code
  }
  t.equal(refused(['admin'], [itemU32(TicketTag.ROTATION_SECONDS, 3600)]), ErrorCode.FORBIDDEN, 'FORBIDDEN without the sign right')
  t.equal(refused(['sign'], [itemU32(TicketTag.ROTATION_SECONDS, 3600)]), 'answered')
  t.equal(refused(['sign'], []), ErrorCode.MISSING_ITEM, 'MISSING_ITEM')
  t.equal(refused(['sign'], [itemU32(TicketTag.ROTATION_SECONDS, 1)]), ErrorCode.BAD_FRAME, 'rotation too short')
  t.equal(refused(['sign'], [itemU32(TicketTag.ROTATION_SECONDS, 3600), itemU32(TicketTag.PREVIOUS, 49)]), ErrorCode.BAD_FRAME, 'too many previous keys')
  t.equal(refused(['sign'], [{ tag: TicketTag.ROTATION_SECONDS, value: Buffer.from([0, 1]) }]), ErrorCode.BAD_FRAME, 'a u32 of 2 bytes')
})

t.test('the TypeScript client over a real keyd', async t => {
  const keyd = await startKeyd()
  t.teardown(() => keyd.stop())
  const proxy = keyd.client('proxy')
  t.teardown(() => proxy.close())
  const asked = Date.now()
  const { keys, serverTimeMs } = await proxy.getTicketKeys(600, 1)
  const answered = Date.now()
  t.equal(keys.length, 3)
  t.ok(serverTimeMs >= asked && serverTimeMs <= answered, `keyd's clock when it answered (${serverTimeMs - asked} ms after asking)`)
  const again = await proxy.getTicketKeys(600, 1)
  const current = defined(keys[1], 'the current key')
  t.ok(again.keys.slice(0, 2).some(k => k.key.equals(current.key)), 'stable across requests')
})
