// The generated copies of the wire contract (the C header the bridge includes, the tables of
// PROTOCOL.md) must equal what keyd/protocol/spec.ts and messages.ts produce today.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { renderHeader, renderProtocolTables, cString, GENERATED_FILES, GENERATE_COMMAND } from '../../keyd/protocol/render.js'
import { OPS, TAGS, ERRORS, ErrorCode } from '../../keyd/protocol/spec.js'
import { ROOT } from '../helpers/paths.js'

t.test('keyd_protocol.h is what the generator writes', async t => {
  const committed = readFileSync(join(ROOT, GENERATED_FILES.header), 'utf8')
  t.equal(committed, renderHeader(), `${GENERATED_FILES.header} is stale: run \`${GENERATE_COMMAND}\` and commit the result`)
})

t.test('the PROTOCOL.md tables are what the generator writes', async t => {
  const committed = readFileSync(join(ROOT, GENERATED_FILES.protocol), 'utf8')
  t.equal(committed, renderProtocolTables(committed), `${GENERATED_FILES.protocol} tables are stale: run \`${GENERATE_COMMAND}\` and commit the result`)
  t.throws(() => renderProtocolTables('# no markers\n'), /generated:ops/, 'a file without the markers is an error, not silently left alone')
})

t.test('the header lists every opcode, tag and error code with a C-safe meaning', async t => {
  const h = renderHeader()
  for (const [name, s] of Object.entries(OPS)) t.match(h, `X(0x${s.value.toString(16).toUpperCase().padStart(2, '0')}, ${name}, "`, `op ${name}`)
  for (const [name, s] of Object.entries(TAGS)) t.match(h, `KEYD_TAG_${name} = 0x${s.value.toString(16).toUpperCase().padStart(2, '0')}`, `tag ${name}`)
  for (const [name, s] of Object.entries(ERRORS)) t.match(h, `KEYD_ERR_${name} = ${s.value}`, `error ${name}`)
  const lists = h.split('\n').filter(l => l.startsWith('  X('))
  t.equal(lists.length, Object.keys(OPS).length + Object.keys(TAGS).length + Object.keys(ERRORS).length)
  for (const macro of ['KEYD_OPS', 'KEYD_TAGS', 'KEYD_ERRORS']) {
    const body = h.slice(h.indexOf(`#define ${macro}(X)`)).split('\n').slice(1)
    const last = body.findIndex(l => !l.endsWith('\\'))
    t.ok(body.slice(0, last).every(l => l.startsWith('  X(')) && body[last]?.startsWith('  X('), `${macro}: only the last line has no backslash`)
  }
  t.equal(cString('say "hi" \\ there'), '"say \\"hi\\" \\\\ there"')
  t.throws(() => cString('two\nlines'))
  t.throws(() => cString('not ascii ‖'))
})

t.test('error codes reserved for the custody operations', async t => {
  t.equal(ErrorCode.USAGE_FORBIDDEN, 26)
  t.equal(ErrorCode.TOKEN_TIMEOUT, 27)
  t.match(ERRORS.USAGE_FORBIDDEN.meaning, /^the client's rights do not include this key or usage/)
  t.match(ERRORS.TOKEN_TIMEOUT.meaning, /^the PKCS#11 token did not answer within its deadline/)
  const values = Object.values(ERRORS).map(e => e.value)
  t.equal(new Set(values).size, values.length, 'no error code used twice')
  const tags = Object.values(TAGS).map(e => e.value)
  t.equal(new Set(tags).size, tags.length, 'no tag used twice')
  const ops = Object.values(OPS).map(e => e.value)
  t.equal(new Set(ops).size, ops.length, 'no opcode used twice')
})
