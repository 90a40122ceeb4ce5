// Byte-fixture tests of the pure keyd codec against PROTOCOL.md's examples.
import t from 'tap'
import {
  encodeFrame, encodeError, parseItems, FrameDecoder, Op, Tag, itemBytes, readUint, readStr,
  encodeKeyReference, decodeKeyReference, errorCodeName
} from '../../keyd/protocol/codec.js'

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex')

t.test('PING frame matches the PROTOCOL.md fixture', async t => {
  const f = encodeFrame(Op.PING, 7, [itemBytes(Tag.PAYLOAD, Buffer.from('hi'))])
  t.same(f, hex('00 00 00 0f  01 02 00 00  00 00 00 07  10 00 00 00 02 68 69'))
  const ans = encodeFrame(Op.PING | 0x80, 7, [itemBytes(Tag.PAYLOAD, Buffer.from('hi'))])
  t.same(ans, hex('00 00 00 0f  01 82 00 00  00 00 00 07  10 00 00 00 02 68 69'))
})

t.test('ERROR frame matches the fixture and decodes', async t => {
  const f = encodeError(9, 9, 'no key')
  t.same(f, hex('00 00 00 1a  01 ff 00 00  00 00 00 09  0e 00 00 00 02 00 09  0f 00 00 00 06 6e 6f 20 6b 65 79'))
  const [ev] = new FrameDecoder().push(f)
  t.equal(ev?.kind, 'frame')
  if (ev?.kind !== 'frame') return
  t.equal(ev.frame.opcode, Op.ERROR)
  t.equal(ev.frame.requestId, 9)
  const items = parseItems(ev.frame.payload)
  t.ok(items)
  t.equal(readUint(items!, Tag.ERROR_CODE, 2), 9)
  t.equal(errorCodeName(9), 'KEY_NOT_FOUND')
  t.equal(readStr(items!, Tag.ERROR_MESSAGE), 'no key')
})

t.test('decoder reassembles frames split at every byte and several in one chunk', async t => {
  const a = encodeFrame(Op.PING, 1, [itemBytes(Tag.PAYLOAD, Buffer.from('abc'))])
  const b = encodeFrame(Op.PING, 2)
  const all = Buffer.concat([a, b, a])
  const d = new FrameDecoder()
  const ids: number[] = []
  for (const byte of all) for (const ev of d.push(Uint8Array.of(byte))) if (ev.kind === 'frame') ids.push(ev.frame.requestId)
  t.same(ids, [1, 2, 1])
  t.equal(d.pending, 0)
  t.same(new FrameDecoder().push(all).map(e => e.kind === 'frame' ? e.frame.requestId : -1), [1, 2, 1])
})

t.test('decoder refuses oversize and undersize lengths once, then stays dead', async t => {
  const d = new FrameDecoder(64)
  const evs = d.push(hex('00 00 01 00  01 02 00 00  00 00 00 05'))
  t.same(evs, [{ kind: 'too-large', length: 256, requestId: 5 }])
  t.same(d.push(encodeFrame(Op.PING, 1)), [])
  t.same(new FrameDecoder().push(hex('00 00 00 02 01 02')), [{ kind: 'too-large', length: 2, requestId: null }])
})

t.test('items: first occurrence wins, truncated items are rejected, unknown tags kept', async t => {
  const p = hex('03 00 00 00 01 61  03 00 00 00 01 62  7f 00 00 00 00')
  const items = parseItems(p)
  t.equal(readStr(items!, Tag.KEY_NAME), 'a')
  t.ok(items!.has(0x7f))
  t.equal(parseItems(hex('03 00 00 00 05 61')), null)
  t.equal(parseItems(hex('03 00 00')), null)
  t.equal(readUint(parseItems(hex('04 00 00 00 02 00 01'))!, Tag.KEY_VERSION, 4), null, 'wrong-size integer is null')
})

t.test('key reference round-trips and matches the PROTOCOL.md example', async t => {
  const pem = encodeKeyReference({ name: 'web', version: 1, type: 'ec-p256' })
  t.match(pem, /S0VSMQMAAAADd2ViBAAAAAQAAAABBQAAAAdlYy1wMjU2/)
  t.same(decodeKeyReference(pem), { name: 'web', version: 1, type: 'ec-p256' })
  const notRef = ['BEGIN', 'END'].map(w => `-----${w} PRIVATE KEY-----`) // a PEM of another label (no key in it)
  t.equal(decodeKeyReference(`${notRef[0]}\nAAAA\n${notRef[1]}`), null)
  t.equal(decodeKeyReference(pem.replace('S0VSMQ', 'S0VSMg')), null, 'bad magic')
})
