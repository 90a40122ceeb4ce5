// The PROXY protocol reader in process, on byte-exact headers: v1 and v2 accepted (TLVs skipped),
// every malformed case refused with its reason, the forbidden mode (untrusted peers), and the bytes
// after the header handed on exactly, however the stream is cut into segments.
import t from 'tap'
import { validateConfig } from '../../src/config/index.js'
import { ConfigInvalidError } from '../../src/errors.js'
import { ProxyHeaderReader, V1_MAX, V2_MAX_LENGTH, type ProxyVerdict } from '../../src/tls/proxy-protocol.js'
import { fixtures } from '../helpers/proxy-protocol.js'

/** Feeds `chunks` in order; returns the verdict and every byte the reader let through after it. */
function feed (mode: 'required' | 'forbidden', chunks: Buffer[]): { verdict: ProxyVerdict, after: Buffer } {
  const reader = new ProxyHeaderReader(mode)
  for (let i = 0; i < chunks.length; i++) {
    const verdict = reader.push(chunks[i] ?? Buffer.alloc(0))
    if (verdict.status === 'partial') continue
    const after = verdict.status === 'done' ? Buffer.concat([verdict.rest, ...chunks.slice(i + 1)]) : Buffer.alloc(0)
    return { verdict, after }
  }
  return { verdict: { status: 'partial' }, after: Buffer.alloc(0) }
}

const hello = Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x00, 0x05]), Buffer.from('hello')])
const one = (b: Buffer): ProxyVerdict => feed('required', [b]).verdict

t.test('v1: TCP4, TCP6 (made canonical), UNKNOWN', async t => {
  t.match(one(fixtures.v1Tcp4), { status: 'done', source: { version: 1, command: 'proxy', address: '192.0.2.10', port: 51234 } })
  t.match(one(Buffer.from('PROXY TCP6 2001:DB8:0:0:0:0:0:1 2001:db8::2 1 443\r\n')), { status: 'done', source: { address: '2001:db8::1', port: 1 } })
  t.match(one(Buffer.from('PROXY TCP6 ::ffff:192.0.2.1 ::1 65535 0\r\n')), { status: 'done', source: { address: '::ffff:192.0.2.1', port: 65535 } })
  const unknown = one(Buffer.from('PROXY UNKNOWN\r\n'))
  t.match(unknown, { status: 'done', source: { version: 1, command: 'proxy' } })
  t.equal(unknown.status === 'done' ? unknown.source?.address : 'x', undefined, 'UNKNOWN carries no address: the real peer applies')
  const longest = Buffer.from(`PROXY UNKNOWN ${'x'.repeat(V1_MAX - 16)}\r\n`)
  t.equal(longest.length, V1_MAX)
  t.match(one(longest), { status: 'done' }, 'a 107-byte line is accepted')
})

t.test('v1 malformed: each refused with its reason', async t => {
  const cases: Array<[string, string, string]> = [
    [`PROXY UNKNOWN ${'x'.repeat(V1_MAX - 15)}\r\n`, 'too_long', '108 bytes with the CRLF'],
    [`PROXY TCP4 1.2.3.4 5.6.7.8 1 2${' '.repeat(200)}`, 'too_long', 'no CRLF at all'],
    ['PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n', 'malformed', 'LF without CR'],
    ['PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n', 'malformed', 'two spaces'],
    ['PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n', 'malformed', 'a port missing'],
    ['PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n', 'malformed', 'a field too many'],
    ['PROXY TCP4 ::1 ::1 1 2\r\n', 'malformed', 'IPv6 under TCP4'],
    ['PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n', 'malformed', 'IPv4 under TCP6'],
    ['PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n', 'malformed', 'a leading zero in an address'],
    ['PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n', 'malformed', 'a port over 65535'],
    ['PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n', 'malformed', 'a port with a leading zero'],
    ['PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n', 'malformed', 'a signed port'],
    ['PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n', 'malformed', 'an unknown protocol'],
    ['PROXY UNKNOWNX\r\n', 'malformed', 'UNKNOWN glued to more'],
    ['proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n', 'missing', 'lower case: not a PROXY header'],
    ['PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n', 'missing', 'no space after PROXY']
  ]
  for (const [line, reason, what] of cases) t.match(one(Buffer.from(line, 'latin1')), { status: 'refused', reason }, what)
})

t.test('v2: PROXY over TCP4 and TCP6 with TLVs, LOCAL, UNSPEC and UNIX', async t => {
  t.match(one(fixtures.v2Tcp4Tlvs), { status: 'done', source: { version: 2, command: 'proxy', address: '192.0.2.10', port: 51234 } })
  t.match(one(fixtures.v2Tcp6), { status: 'done', source: { version: 2, command: 'proxy', address: '2001:db8::1', port: 443 } })
  t.match(one(fixtures.v2Local), { status: 'done', source: { version: 2, command: 'local' } })
  const spec = fixtures.v2({ command: 0, family: 1, transport: 1, body: Buffer.alloc(12, 7) })
  t.match(one(spec), { status: 'done', source: { command: 'local' } }, 'LOCAL with an address block: the block is discarded')
  for (const [family, body] of [[0, Buffer.alloc(0)], [3, Buffer.alloc(216)]] as const) {
    const v = one(fixtures.v2({ command: 1, family, transport: family === 0 ? 0 : 1, body }))
    t.match(v, { status: 'done', source: { version: 2, command: 'proxy' } }, `family ${family}`)
    t.equal(v.status === 'done' ? v.source?.address : 'x', undefined, `family ${family} carries no IP address: the real peer applies`)
  }
  const longest = fixtures.v2({ command: 1, family: 1, transport: 1, body: Buffer.concat([fixtures.inet4, Buffer.from([0x04]), u16(V2_MAX_LENGTH - 15), Buffer.alloc(V2_MAX_LENGTH - 15)]) })
  t.match(one(longest), { status: 'done', source: { address: '192.0.2.10' } }, `a ${V2_MAX_LENGTH}-byte block is accepted`)
})

t.test('v2 malformed: each refused with its reason', async t => {
  const sig = fixtures.v2Tcp4Tlvs
  const flip = (at: number, value: number): Buffer => { const b = Buffer.from(sig); b[at] = value; return b }
  const cases: Array<[Buffer, string, string]> = [
    [flip(11, 0x0b), 'missing', 'bad signature (last byte)'],
    [flip(4, 0x01), 'missing', 'bad signature (the NUL)'],
    [flip(12, 0x11), 'unsupported', 'version 1 in a v2 header'],
    [flip(12, 0x31), 'unsupported', 'version 3'],
    [flip(12, 0x22), 'unsupported', 'command 2'],
    [flip(13, 0x41), 'unsupported', 'family 4'],
    [flip(13, 0x12), 'unsupported', 'DGRAM over TCP4'],
    [flip(13, 0x10), 'unsupported', 'TCP4 family with an unspecified transport'],
    [fixtures.v2({ command: 1, family: 1, transport: 1, body: Buffer.alloc(V2_MAX_LENGTH + 1) }), 'too_long', 'a block over the limit'],
    [Buffer.concat([sig.subarray(0, 14), u16(0xffff)]), 'too_long', 'length 65535'],
    [fixtures.v2({ command: 1, family: 1, transport: 1, body: Buffer.alloc(8) }), 'malformed', 'a TCP4 block of 8 bytes'],
    [fixtures.v2({ command: 1, family: 2, transport: 1, body: Buffer.alloc(35) }), 'malformed', 'a TCP6 block of 35 bytes'],
    [fixtures.v2({ command: 1, family: 3, transport: 1, body: Buffer.alloc(200) }), 'malformed', 'a UNIX block of 200 bytes'],
    [fixtures.v2({ command: 1, family: 1, transport: 1, body: Buffer.concat([fixtures.inet4, Buffer.from([0x01]), u16(10), Buffer.from('h2')]) }), 'malformed', 'a TLV longer than the block'],
    [fixtures.v2({ command: 1, family: 1, transport: 1, body: Buffer.concat([fixtures.inet4, Buffer.from([0x01, 0x00])]) }), 'malformed', 'a TLV header cut short']
  ]
  for (const [bytes, reason, what] of cases) t.match(one(bytes), { status: 'refused', reason }, what)
  t.match(feed('required', [sig.subarray(0, sig.length - 1)]).verdict, { status: 'partial' }, 'truncated: still waiting (the front then times out or sees EOF)')
  t.match(feed('required', [sig.subarray(0, 15)]).verdict, { status: 'partial' }, 'truncated inside the fixed header')
})

t.test('forbidden mode (untrusted peers): TLS goes on untouched, a PROXY header is refused', async t => {
  const reader = new ProxyHeaderReader('forbidden')
  const v = reader.push(hello)
  t.ok(v.status === 'done' && v.rest === hello, 'a TLS record: its chunk handed on as it is, after one byte')
  t.match(feed('forbidden', [fixtures.v1Tcp4]).verdict, { status: 'refused', reason: 'untrusted_peer' })
  t.match(feed('forbidden', [fixtures.v2Tcp4Tlvs]).verdict, { status: 'refused', reason: 'untrusted_peer' })
  t.match(feed('forbidden', [fixtures.v2Tcp4Tlvs.subarray(0, 12)]).verdict, { status: 'refused', reason: 'untrusted_peer' }, 'decided at the 12-byte signature')
  t.match(feed('forbidden', [Buffer.from('PROXY ')]).verdict, { status: 'refused', reason: 'untrusted_peer' }, 'decided at "PROXY "')
  const garbage = Buffer.from('PROXZ and more')
  const g = feed('forbidden', [garbage.subarray(0, 3), garbage.subarray(3, 5), garbage.subarray(5)])
  t.match(g.verdict, { status: 'done' })
  t.same(g.after, garbage, 'a prefix that turns out not to be a header: every byte handed on, in order')
  t.match(feed('required', [hello]).verdict, { status: 'refused', reason: 'missing' }, 'the same TLS from a trusted peer: refused')
})

t.test('segmentation: the bytes after the header come out exactly, however the stream is cut', async t => {
  const headers = [fixtures.v1Tcp4, fixtures.v2Tcp4Tlvs, fixtures.v2Tcp6, fixtures.v2Local, Buffer.from('PROXY UNKNOWN ffff\r\n')]
  for (const header of headers) {
    const stream = Buffer.concat([header, hello])
    const whole = feed('required', [stream])
    t.same(whole.after, hello)
    let ok = true
    for (let cut = 1; cut < stream.length; cut++) {
      const r = feed('required', [stream.subarray(0, cut), stream.subarray(cut)])
      if (r.verdict.status !== 'done' || !r.after.equals(hello)) ok = false
    }
    t.ok(ok, `every two-segment cut of a ${header.length}-byte header gives the same bytes after it`)
    const bytes = feed('required', Array.from(stream, b => Buffer.from([b])))
    t.same(bytes.after, hello, 'one byte per segment')
    t.same(bytes.verdict.status === 'done' ? bytes.verdict.source : undefined, whole.verdict.status === 'done' ? whole.verdict.source : undefined, 'same source either way')
  }
  const untrusted = feed('forbidden', Array.from(hello, b => Buffer.from([b])))
  t.same(untrusted.after, hello, 'forbidden mode, one byte per segment')
})

t.test('bounded: the reader never holds more than the largest header, whatever it is fed', async t => {
  // A 1 MB chunk after a v1 header: only the header is copied, the rest is a view of the chunk.
  const big = Buffer.concat([fixtures.v1Tcp4, Buffer.alloc(1 << 20, 0x16)])
  const v = one(big)
  t.ok(v.status === 'done' && v.rest.buffer === big.buffer && v.rest.length === big.length - fixtures.v1Tcp4.length, 'the rest is not copied')
  const reader = new ProxyHeaderReader('required')
  let pushes = 0
  let verdict: ProxyVerdict
  do {
    verdict = reader.push(Buffer.from(pushes < 6 ? 'PROXY '.charAt(pushes) : 'x'))
    pushes++
  } while (verdict.status === 'partial' && pushes < 10_000)
  t.match(verdict, { status: 'refused', reason: 'too_long' })
  t.equal(pushes, V1_MAX, 'a v1 line without LF is refused at its 107th byte')
})

t.test('config: proxyProtocol.trustedCidrs checked with field paths, renamed keys hinted', async t => {
  const base = { certificates: [{ name: 'x', serverNames: ['x.test'], files: [{ cert: 'x', key: 'x' }] }], routes: [{ upstream: 'http://127.0.0.1:1' }] }
  const problems = (raw: unknown): string[] => {
    try {
      validateConfig(raw, { baseDir: '/' })
    } catch (err) {
      if (err instanceof ConfigInvalidError) return err.problems
      throw err
    }
    return []
  }
  t.equal(validateConfig(base, { baseDir: '/' }).proxyProtocol, undefined, 'absent: off')
  t.same(validateConfig({ ...base, proxyProtocol: { trustedCidrs: ['10.0.0.0/8', '::1', '192.0.2.7'] } }, { baseDir: '/' }).proxyProtocol,
    { trustedCidrs: ['10.0.0.0/8', '::1', '192.0.2.7'] })
  t.same(problems({ ...base, proxyProtocol: { trustedCidrs: ['10.0.0.0/8', 'lb.internal', '10.0.0.0/33'] } }), [
    'proxyProtocol.trustedCidrs[1]: "lb.internal" is not an IP address or CIDR (e.g. "10.0.0.0/8", "::1")',
    'proxyProtocol.trustedCidrs[2]: "10.0.0.0/33" is not an IP address or CIDR (e.g. "10.0.0.0/8", "::1")'
  ])
  t.match(problems({ ...base, proxyProtocol: { trustedCidrs: [] } }), [/^proxyProtocol\.trustedCidrs: /])
  t.match(problems({ ...base, proxyProtocol: {} }), [/^proxyProtocol\.trustedCidrs: is required/])
  t.same(problems({ ...base, proxyProtocol: { trustedCidrs: ['10.0.0.1'], trusted: ['10.0.0.1'] } }), ['proxyProtocol.trusted: unknown key, use "trustedCidrs" (a list of addresses or CIDRs)'])
  t.same(problems({ ...base, acceptProxy: true }), ['acceptProxy: unknown key, use "proxyProtocol": { "trustedCidrs": [...] }'])
})

function u16 (n: number): Buffer {
  const b = Buffer.alloc(2)
  b.writeUInt16BE(n)
  return b
}
