// Byte-fixture tests of SIGN_BATCH and the repeatable ENTRY item against PROTOCOL.md's examples.
import t from 'tap'
import {
  encodeFrame, encodeItems, parseItems, parseRepeated, FrameDecoder, ItemMap, Op, Tag,
  itemBytes, itemStr, itemU16, itemU32, itemU8, readStr, readUint
} from '../../keyd/protocol/codec.js'
import { defined } from '../helpers/defined.js'

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex')

const REQUEST = hex(`00 00 00 48  01 05 00 00  00 00 00 03
  15 00 00 00 1b  03 00 00 00 03 6a 77 74  06 00 00 00 02 00 01  07 00 00 00 01 61  11 00 00 00 01 01
  15 00 00 00 1b  03 00 00 00 03 6a 77 74  06 00 00 00 02 00 01  07 00 00 00 01 62  11 00 00 00 01 01`)
const ANSWER = hex(`00 00 00 30  01 85 00 00  00 00 00 03
  15 00 00 00 10  08 00 00 00 02 01 02  04 00 00 00 04 00 00 00 01
  15 00 00 00 0e  0e 00 00 00 02 00 09  0f 00 00 00 02 6e 6f`)

const entry = (msg: string): Buffer => encodeItems([
  itemStr(Tag.KEY_NAME, 'jwt'), itemU16(Tag.ALGORITHM, 1), itemBytes(Tag.MESSAGE, Buffer.from(msg)), itemU8(Tag.SIG_ENCODING, 1)
])

t.test('SIGN_BATCH request matches the PROTOCOL.md fixture', async t => {
  t.equal(Op.SIGN_BATCH, 0x05)
  t.equal(Tag.ENTRY, 0x15)
  const f = encodeFrame(Op.SIGN_BATCH, 3, [itemBytes(Tag.ENTRY, entry('a')), itemBytes(Tag.ENTRY, entry('b'))])
  t.same(f, REQUEST)
})

t.test('SIGN_BATCH answer matches the fixture and decodes entry by entry', async t => {
  const f = encodeFrame(Op.SIGN_BATCH | 0x80, 3, [
    itemBytes(Tag.ENTRY, encodeItems([itemBytes(Tag.SIGNATURE, Uint8Array.of(1, 2)), itemU32(Tag.KEY_VERSION, 1)])),
    itemBytes(Tag.ENTRY, encodeItems([itemU16(Tag.ERROR_CODE, 9), itemStr(Tag.ERROR_MESSAGE, 'no')]))
  ])
  t.same(f, ANSWER)
  const [ev] = new FrameDecoder().push(ANSWER)
  if (ev?.kind !== 'frame') return t.fail('not a frame')
  const entries = parseRepeated(ev.frame.payload, Tag.ENTRY)
  t.ok(entries)
  t.equal(entries?.length, 2)
  const signed = defined(entries?.[0], 'entry 1')
  const refused = defined(entries?.[1], 'entry 2')
  t.same(Buffer.from(defined(signed.get(Tag.SIGNATURE), 'a SIGNATURE item')), Buffer.of(1, 2))
  t.equal(readUint(signed, Tag.KEY_VERSION, 4), 1)
  t.equal(readUint(refused, Tag.ERROR_CODE, 2), 9)
  t.equal(readStr(refused, Tag.ERROR_MESSAGE), 'no')
})

t.test('ENTRY is repeatable: all() keeps every occurrence in order, get() still the first', async t => {
  const [ev] = new FrameDecoder().push(REQUEST)
  if (ev?.kind !== 'frame') return t.fail('not a frame')
  const items = parseItems(ev.frame.payload)
  t.ok(items instanceof ItemMap)
  t.equal(items!.all(Tag.ENTRY).length, 2)
  t.same(Buffer.from(items!.get(Tag.ENTRY)!), entry('a'), 'first occurrence wins for get()')
  t.same(items!.all(Tag.ENTRY).map(v => readStr(parseItems(v)!, Tag.MESSAGE)), ['a', 'b'])
  t.same(items!.all(0x7e), [], 'absent tag: no occurrence')
  const three = parseItems(hex('15 00 00 00 00  15 00 00 00 01 aa  15 00 00 00 00'))
  t.equal(three!.all(Tag.ENTRY).length, 3, 'empty entries count too')
})

t.test('parseRepeated refuses a malformed nested list or a truncated outer one', async t => {
  t.equal(parseRepeated(hex('15 00 00 00 03  03 00 00'), Tag.ENTRY), null, 'entry items run past the entry')
  t.equal(parseRepeated(hex('15 00 00 00 09  03 00'), Tag.ENTRY), null, 'entry runs past the frame')
  t.same(parseRepeated(hex('03 00 00 00 01 61'), Tag.ENTRY), [], 'no entry at all')
})
