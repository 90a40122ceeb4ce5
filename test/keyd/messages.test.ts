// Byte-fixture tests of the typed per-operation codecs (keyd/protocol/messages.ts) against
// PROTOCOL.md's examples, and of their refusals: a missing required item is MISSING_ITEM, an item of
// the wrong size or out of range BAD_FRAME, never a default.
import t from 'tap'
import {
  encodeFrame, encodeItems, parseItems, FrameDecoder, Op, Tag, ErrorCode, HEADER_SIZE, type Item, type ItemMap
} from '../../keyd/protocol/codec.js'
import {
  MESSAGES, encodeSignRequest, decodeSignRequest, encodeSignResponse, decodeSignResponse, encodeSignBatchRequest,
  decodeSignBatchRequest, encodeSignBatchResponse, decodeSignBatchResponse, encodePingRequest, decodePingRequest,
  decodeErrorResponse, encodeErrorResponse, decodeGetTicketKeysRequest, decodeKeyImportRequest, decodePublicKeyResponse,
  encodeHelloRequest, decodeHelloRequest, MAX_BATCH_ENTRIES, type AnyMessageCodec, type SignRequest
} from '../../keyd/protocol/messages.js'
import { TAGS, type TagName } from '../../keyd/protocol/spec.js'
import { decodeKeyVersions } from '../../keyd/protocol/key-versions.js'
import { Refusal } from '../../keyd/errors.js'

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex')
const items = (payload: Uint8Array): ItemMap => {
  const m = parseItems(payload)
  if (m === null) throw new Error('test payload does not parse')
  return m
}
const frameItems = (list: Item[]): ItemMap => items(encodeFrame(0, 0, list).subarray(HEADER_SIZE))
/** The wire code a decode refuses with, or 'decoded'. */
const refusal = (f: () => unknown): number | string => {
  try { f(); return 'decoded' } catch (err) { return err instanceof Refusal ? err.wire : `threw ${String(err)}` }
}

// PROTOCOL.md, "SIGN_BATCH": request id 3, entries signing "a" and "b" with key jwt, ECDSA SHA-256, P1363.
const ENTRY_A = hex('03 00 00 00 03 6a 77 74  06 00 00 00 02 00 01  07 00 00 00 01 61  11 00 00 00 01 01')
const BATCH_REQUEST = hex(`00 00 00 48  01 05 00 00  00 00 00 03
  15 00 00 00 1b  03 00 00 00 03 6a 77 74  06 00 00 00 02 00 01  07 00 00 00 01 61  11 00 00 00 01 01
  15 00 00 00 1b  03 00 00 00 03 6a 77 74  06 00 00 00 02 00 01  07 00 00 00 01 62  11 00 00 00 01 01`)
const BATCH_ANSWER = hex(`00 00 00 30  01 85 00 00  00 00 00 03
  15 00 00 00 10  08 00 00 00 02 01 02  04 00 00 00 04 00 00 00 01
  15 00 00 00 0e  0e 00 00 00 02 00 09  0f 00 00 00 02 6e 6f`)
const jwtSign = (msg: string): SignRequest => ({ name: 'jwt', algorithm: 1, message: Buffer.from(msg), encoding: 1 })

t.test('SIGN request and answer: bytes of the PROTOCOL.md fixture, and back', async t => {
  t.same(encodeItems(encodeSignRequest(jwtSign('a'))), ENTRY_A)
  t.same(decodeSignRequest(items(ENTRY_A)), jwtSign('a'))
  const answer = hex('08 00 00 00 02 01 02  04 00 00 00 04 00 00 00 01')
  t.same(encodeItems(encodeSignResponse({ signature: Buffer.of(1, 2), version: 1 })), answer)
  t.same(decodeSignResponse(items(answer)), { signature: Buffer.of(1, 2), version: 1 })
})

t.test('SIGN refusals: missing items, wrong-size and out-of-range items', async t => {
  const noMessage = hex('03 00 00 00 03 6a 77 74  06 00 00 00 02 00 01')
  t.equal(refusal(() => decodeSignRequest(items(noMessage))), ErrorCode.MISSING_ITEM, 'no MESSAGE')
  t.equal(refusal(() => decodeSignRequest(items(hex('06 00 00 00 02 00 01  07 00 00 00 01 61')))), ErrorCode.MISSING_ITEM, 'no KEY_NAME')
  for (const bytes of ['01', '00 01', '00 00 00 00 01']) {
    const withVersion = Buffer.concat([ENTRY_A, hex(`04 ${(hex(bytes).length).toString(16).padStart(8, '0')} ${bytes}`)])
    t.equal(refusal(() => decodeSignRequest(items(withVersion))), ErrorCode.BAD_FRAME, `a ${hex(bytes).length}-byte KEY_VERSION`)
  }
  t.equal(refusal(() => decodeSignRequest(items(hex('03 00 00 00 01 6b  06 00 00 00 01 01  07 00 00 00 00')))), ErrorCode.BAD_FRAME, 'a 1-byte ALGORITHM')
  t.equal(refusal(() => decodeSignRequest(frameItems(encodeSignRequest({ ...jwtSign('a'), encoding: 2 })))), ErrorCode.BAD_FRAME, 'SIG_ENCODING 2')
  t.equal(refusal(() => decodeSignRequest(frameItems(encodeSignRequest({ ...jwtSign('a'), name: 'k'.repeat(65) })))), ErrorCode.BAD_FRAME, 'a 65-byte KEY_NAME')
  t.same(decodeSignRequest(frameItems(encodeSignRequest({ ...jwtSign('a'), name: 'k'.repeat(64) }))).name, 'k'.repeat(64), '64 bytes is allowed')
  const decoded = decodeSignRequest(items(hex('03 00 00 00 01 6b  06 00 00 00 02 00 01  07 00 00 00 00')))
  t.equal(decoded.version, undefined, 'an absent optional item stays absent (KEY_VERSION absent = current, applied by the caller)')
  t.equal(decoded.encoding, undefined)
})

t.test('SIGN_BATCH: the fixture both ways; a bad entry is refused on its own', async t => {
  t.same(encodeFrame(Op.SIGN_BATCH, 3, encodeSignBatchRequest([jwtSign('a'), jwtSign('b')])), BATCH_REQUEST)
  const [ev] = new FrameDecoder().push(BATCH_REQUEST)
  if (ev?.kind !== 'frame') return t.fail('no frame')
  t.same(decodeSignBatchRequest(items(ev.frame.payload)), [jwtSign('a'), jwtSign('b')])
  t.same(encodeFrame(Op.SIGN_BATCH | 0x80, 3, encodeSignBatchResponse([{ signature: Buffer.of(1, 2), version: 1 }, { code: ErrorCode.KEY_NOT_FOUND, message: 'no' }])), BATCH_ANSWER)
  t.same(decodeSignBatchResponse(items(BATCH_ANSWER.subarray(HEADER_SIZE))), [{ signature: Buffer.of(1, 2), version: 1 }, { code: 9, message: 'no' }])

  const shortVersion = encodeItems([...encodeSignRequest(jwtSign('c')).filter(i => i.tag !== Tag.KEY_VERSION), { tag: Tag.KEY_VERSION, value: Buffer.of(0, 1) }])
  const mixed = decodeSignBatchRequest(frameItems([{ tag: Tag.ENTRY, value: ENTRY_A }, { tag: Tag.ENTRY, value: shortVersion }, { tag: Tag.ENTRY, value: hex('03 00 00 00 01 6b') }]))
  t.same(mixed[0], jwtSign('a'), 'the good entry decodes')
  t.ok(mixed[1] instanceof Refusal && mixed[1].wire === ErrorCode.BAD_FRAME, 'a 2-byte KEY_VERSION is that entry\'s BAD_FRAME')
  t.ok(mixed[2] instanceof Refusal && mixed[2].wire === ErrorCode.MISSING_ITEM, 'an entry without ALGORITHM is that entry\'s MISSING_ITEM')

  t.equal(refusal(() => decodeSignBatchRequest(frameItems([]))), ErrorCode.MISSING_ITEM, 'no ENTRY')
  const many = Array.from({ length: MAX_BATCH_ENTRIES + 1 }, () => ({ tag: Tag.ENTRY, value: ENTRY_A }))
  t.equal(refusal(() => decodeSignBatchRequest(frameItems(many))), ErrorCode.BAD_FRAME, 'over 64 entries')
  t.equal(refusal(() => decodeSignBatchRequest(frameItems([{ tag: Tag.ENTRY, value: hex('03 00 00 00 09 61') }]))), ErrorCode.BAD_FRAME, 'an ENTRY whose items run past its end')
})

t.test('ERROR, PING and HELLO against the PROTOCOL.md fixtures', async t => {
  const error = hex('00 00 00 1a  01 ff 00 00  00 00 00 09  0e 00 00 00 02 00 09  0f 00 00 00 06 6e 6f 20 6b 65 79')
  t.same(decodeErrorResponse(items(error.subarray(HEADER_SIZE))), { code: 9, message: 'no key' })
  t.same(encodeFrame(Op.ERROR, 9, encodeErrorResponse({ code: 9, message: 'no key' })), error)
  t.equal(refusal(() => decodeErrorResponse(items(hex('0f 00 00 00 02 6e 6f')))), ErrorCode.MISSING_ITEM, 'an ERROR without ERROR_CODE')
  t.same(encodeFrame(Op.PING, 7, encodePingRequest({ payload: Buffer.from('hi') })), hex('00 00 00 0f  01 02 00 00  00 00 00 07  10 00 00 00 02 68 69'))
  t.same(decodePingRequest(frameItems([])), {}, 'PING without PAYLOAD')
  t.equal(refusal(() => decodePingRequest(frameItems(encodePingRequest({ payload: Buffer.alloc(1025) })))), ErrorCode.BAD_FRAME, 'a PING payload over 1 KiB')
  t.same(decodeHelloRequest(frameItems(encodeHelloRequest({ clientName: 'proxy', clientSecret: Buffer.from('s') }))), { clientName: 'proxy', clientSecret: Buffer.from('s') })
  t.equal(refusal(() => decodeHelloRequest(frameItems([{ tag: Tag.CLIENT_NAME, value: Buffer.from('proxy') }]))), ErrorCode.MISSING_ITEM, 'HELLO without a secret')
})

t.test('GET_TICKET_KEYS ranges, KEY_IMPORT material, KEY_VERSIONS records', async t => {
  const u32 = (tag: number, n: number): Item => { const b = Buffer.alloc(4); b.writeUInt32BE(n); return { tag, value: b } }
  t.same(decodeGetTicketKeysRequest(frameItems([u32(Tag.TICKET_ROTATION_SECONDS, 3600)])), { rotationSeconds: 3600 })
  t.equal(refusal(() => decodeGetTicketKeysRequest(frameItems([]))), ErrorCode.MISSING_ITEM)
  t.equal(refusal(() => decodeGetTicketKeysRequest(frameItems([u32(Tag.TICKET_ROTATION_SECONDS, 9)]))), ErrorCode.BAD_FRAME, 'rotation under 10 s')
  t.equal(refusal(() => decodeGetTicketKeysRequest(frameItems([u32(Tag.TICKET_ROTATION_SECONDS, 604801)]))), ErrorCode.BAD_FRAME, 'rotation over a week')
  t.equal(refusal(() => decodeGetTicketKeysRequest(frameItems([u32(Tag.TICKET_ROTATION_SECONDS, 60), u32(Tag.TICKET_PREVIOUS, 49)]))), ErrorCode.BAD_FRAME, '49 previous keys')

  const name = [{ tag: Tag.KEY_NAME, value: Buffer.from('k') }, { tag: Tag.USAGE, value: Buffer.from('token-sign') }]
  t.equal(refusal(() => decodeKeyImportRequest(frameItems(name))), ErrorCode.MISSING_ITEM, 'no key material')
  t.equal(refusal(() => decodeKeyImportRequest(frameItems([...name, { tag: Tag.WRAPPED_AES_KEY, value: Buffer.alloc(384) }]))), ErrorCode.MISSING_ITEM, 'half a wrapped key')
  t.equal(decodeKeyImportRequest(frameItems([...name, { tag: Tag.PRIVATE_KEY, value: Buffer.of(1) }])).privateKey?.length, 1)

  // PROTOCOL.md: a key of 3 versions created at unix ms 1000, 2000, 3000.
  const versions = hex('00 00 00 01 00 00 00 00 00 00 03 e8  00 00 00 02 00 00 00 00 00 00 07 d0  00 00 00 03 00 00 00 00 00 00 0b b8')
  const answer = (v: Buffer): Item[] => [
    { tag: Tag.KEY_NAME, value: Buffer.from('k') }, { tag: Tag.KEY_VERSION, value: hex('00 00 00 03') }, { tag: Tag.KEY_TYPE, value: Buffer.from('ed25519') },
    { tag: Tag.PUBLIC_KEY, value: Buffer.of(0x30) }, { tag: Tag.KEY_VERSIONS, value: v }, { tag: Tag.KEY_BITS, value: hex('00 00 01 00') }
  ]
  const pub = decodePublicKeyResponse(frameItems(answer(versions)))
  t.same(decodeKeyVersions(pub.versions ?? Buffer.alloc(0)), [{ version: 1, createdAtMs: 1000 }, { version: 2, createdAtMs: 2000 }, { version: 3, createdAtMs: 3000 }])
  t.equal(refusal(() => decodePublicKeyResponse(frameItems(answer(versions.subarray(1))))), ErrorCode.BAD_FRAME, 'KEY_VERSIONS not a whole number of 12-byte records')
  t.equal(refusal(() => decodePublicKeyResponse(frameItems(answer(versions).filter(i => i.tag !== Tag.PUBLIC_KEY)))), ErrorCode.MISSING_ITEM, 'an answer without PUBLIC_KEY')
})

/** A value that satisfies `tag`'s size rule, for the round trip below. */
function sample (tag: TagName): unknown {
  const s = TAGS[tag] as { kind: string, record?: number, range?: readonly [number, number] }
  if (s.kind === 'str') return 'x'
  if (s.kind === 'bytes') return Buffer.alloc(s.record ?? 3, 7)
  return s.range?.[0] ?? 1
}

t.test('every operation\'s request and answer decode back to what was encoded', async t => {
  for (const [op, m] of Object.entries(MESSAGES)) {
    for (const codec of [m.request, m.answer] as Array<AnyMessageCodec | null>) {
      if (codec === null) continue
      const value = Object.fromEntries(Object.entries(codec.fields).map(([k, f]) => [k, f.repeat === undefined ? sample(f.tag) : [sample(f.tag), sample(f.tag)]]))
      const encoded = (codec.encode as (v: unknown) => Item[])(value)
      t.same(codec.decode(frameItems(encoded)), value, `${op}: ${codec.name}`)
    }
  }
})

t.test('an error message is cut to the ERROR_MESSAGE bound, on a character boundary', async t => {
  const long = 'é'.repeat(3000) // 6000 bytes of UTF-8
  const [, message] = encodeErrorResponse({ code: ErrorCode.INTERNAL, message: long })
  t.ok(message !== undefined && message.value.length <= TAGS.ERROR_MESSAGE.max && message.value.length >= TAGS.ERROR_MESSAGE.max - 1)
  t.equal(decodeErrorResponse(frameItems(encodeErrorResponse({ code: 15, message: long }))).message, 'é'.repeat(2048), 'decodes, no split character')
})
