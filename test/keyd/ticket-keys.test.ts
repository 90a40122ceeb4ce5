// GET_TICKET_KEYS: keys derived from the master key per epoch, the same on every keyd sharing the
// master, different for another master; the key-set codec; refusals; the client over a real socket.
import t from 'tap'
import { join } from 'node:path'
import { FileKeystore } from '../../keyd/keystore/file-keystore.js'
import { getTicketKeys } from '../../keyd/server/ticket-keys.js'
import { Refusal, type HandlerContext } from '../../keyd/server/handlers.js'
import { itemU32, parseItems, encodeFrame, HEADER_SIZE, type Item } from '../../keyd/protocol/codec.js'
import { TicketTag, decodeTicketKeySet, encodeTicketKeySet, TICKET_RECORD_BYTES } from '../../keyd/protocol/ticket-keys.js'
import type { Right } from '../../keyd/server/clients.js'
import { startKeyd } from '../helpers/keyd.js'
import { tempHome } from '../helpers/paths.js'

const master = Buffer.alloc(32, 7)
const ctx = (dir: string, key = master, rights: Right[] = ['sign']): HandlerContext => ({
  keystore: new FileKeystore(join(tempHome(), dir), key),
  client: { name: 'proxy', secretSha256: '0'.repeat(64), rights, usages: ['tls-server'], keys: ['*'] },
  stats: { signatures: 0, refused: 0 }
})
const items = (...list: Item[]): Map<number, Uint8Array> => parseItems(encodeFrame(0x06, 1, list).subarray(HEADER_SIZE)) ?? new Map()
const answer = (c: HandlerContext, rotation: number, previous: number, nowMs: number): ReturnType<typeof decodeTicketKeySet> => {
  const out = getTicketKeys(c, items(itemU32(TicketTag.ROTATION_SECONDS, rotation), itemU32(TicketTag.PREVIOUS, previous)), nowMs)
  return decodeTicketKeySet(out.find(i => i.tag === TicketTag.KEY_SET)?.value ?? new Uint8Array(0))
}

t.test('previous, current and next keys with their validity; the same on two keyds sharing the master', async t => {
  const now = 1_800_000_123_000
  const a = answer(ctx('a'), 3600, 2, now) ?? []
  const b = answer(ctx('b'), 3600, 2, now) ?? []
  const epoch = Math.floor(now / 1000 / 3600)
  t.same(a.map(k => k.epoch), [epoch - 2, epoch - 1, epoch, epoch + 1], 'oldest first: 2 previous, current, next')
  t.same(a.map(k => k.key.toString('hex')), b.map(k => k.key.toString('hex')), 'another keyd with the same master derives the same keys')
  t.equal(new Set(a.map(k => k.key.subarray(0, 16).toString('hex'))).size, 4, 'every epoch has its own key name')
  const cur = a[2]
  t.equal(cur.key.length, 48)
  t.same([cur.encryptFrom, cur.encryptUntil, cur.decryptUntil], [epoch * 3600, (epoch + 1) * 3600, (epoch + 3) * 3600])
  const later = answer(ctx('c'), 3600, 2, now + 3600_000) ?? []
  t.equal(later[1].key.toString('hex'), cur.key.toString('hex'), 'an hour later, the same epoch has the same key')
  const other = answer(ctx('d', Buffer.alloc(32, 8)), 3600, 2, now) ?? []
  t.not(other[2].key.toString('hex'), cur.key.toString('hex'), 'another master, other keys')
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

t.test('refusals: no sign right, missing or out-of-range items', async t => {
  const refused = (c: HandlerContext, list: Item[]): string => {
    try { getTicketKeys(c, items(...list)); return 'answered' } catch (err) { return err instanceof Refusal ? String(err.wire) : 'threw' }
  }
  t.equal(refused(ctx('f', master, ['admin']), [itemU32(TicketTag.ROTATION_SECONDS, 3600)]), '7', 'FORBIDDEN')
  t.equal(refused(ctx('g'), []), '8', 'MISSING_ITEM')
  t.equal(refused(ctx('h'), [itemU32(TicketTag.ROTATION_SECONDS, 1)]), '1', 'rotation too short')
  t.equal(refused(ctx('i'), [itemU32(TicketTag.ROTATION_SECONDS, 3600), itemU32(TicketTag.PREVIOUS, 49)]), '1', 'too many previous keys')
})

t.test('the TypeScript client over a real keyd', async t => {
  const keyd = await startKeyd()
  t.teardown(() => keyd.stop())
  const proxy = keyd.client('proxy')
  t.teardown(() => proxy.close())
  const { keys, serverTimeMs } = await proxy.getTicketKeys(600, 1)
  t.equal(keys.length, 3)
  t.ok(Math.abs(serverTimeMs - Date.now()) < 5000)
  const again = await proxy.getTicketKeys(600, 1)
  t.ok(again.keys[1].key.equals(keys[1].key) || again.keys[0].key.equals(keys[1].key), 'stable across requests')
})
