// Renders the generated copies of the wire contract from spec.ts and messages.ts: the C header the
// bridge includes (keyd/bridge/keyd_protocol.h) and the opcode, tag and error tables of PROTOCOL.md.
// Pure functions (text in, text out): generate.ts writes the files, a test compares them.
import {
  OPS, TAGS, ERRORS, RESERVED_TAGS, RESERVED_ERRORS, PROTOCOL_VERSION, HEADER_SIZE, DEFAULT_MAX_FRAME,
  type OpName, type TagSpec
} from './spec.js'
import { MESSAGES, type AnyMessageCodec } from './messages.js'
import { sizeRule } from './schema.js'

/** The command that rewrites every generated file (named in the stale-file test's message). */
export const GENERATE_COMMAND = 'npm run generate'

/** Repository-relative paths of the generated files. */
export const GENERATED_FILES = { header: 'keyd/bridge/keyd_protocol.h', protocol: 'keyd/protocol/PROTOCOL.md' } as const

/** A one-line ASCII meaning as a C string literal. @throws Error if it is not one printable ASCII line */
export function cString (s: string): string {
  if (!/^[\x20-\x7e]*$/.test(s)) throw new Error(`a meaning must be one line of printable ASCII (it becomes a C string): ${JSON.stringify(s)}`)
  return `"${s.replace(/[\\"]/g, c => '\\' + c)}"`
}

const hex = (n: number): string => `0x${n.toString(16).toUpperCase().padStart(2, '0')}`

function xList (macro: string, rows: Array<[string, string, string]>): string[] {
  return [`#define ${macro}(X) \\`, ...rows.map(([v, name, meaning], i) => `  X(${v}, ${name}, ${cString(meaning)})${i === rows.length - 1 ? '' : ' \\'}`)]
}

function cEnum (name: string, prefix: string, rows: Array<[string, string, string]>): string {
  return `enum ${name} { ${rows.map(([v, n]) => `${prefix}${n} = ${v}`).join(', ')} };`
}

/** keyd/bridge/keyd_protocol.h: the constants and X-macro lists the C bridge builds its tables from. */
export function renderHeader (): string {
  const ops = Object.entries(OPS).map(([name, s]): [string, string, string] => [hex(s.value), name, s.meaning])
  const tags = Object.entries(TAGS).map(([name, s]): [string, string, string] => [hex(s.value), name, s.meaning])
  const errors = Object.entries(ERRORS).map(([name, s]): [string, string, string] => [String(s.value), name, s.meaning])
  return [
    `/* keyd_protocol.h: GENERATED from keyd/protocol/spec.ts by \`${GENERATE_COMMAND}\`. Do not edit. */`,
    '#ifndef KEYD_PROTOCOL_H',
    '#define KEYD_PROTOCOL_H',
    `#define KEYD_PROTOCOL_VERSION ${PROTOCOL_VERSION}`,
    `#define KEYD_HEADER_SIZE ${HEADER_SIZE}`,
    `#define KEYD_MAX_FRAME ${DEFAULT_MAX_FRAME}`,
    '/* X(value, NAME, "one-line meaning") */',
    ...xList('KEYD_OPS', ops),
    ...xList('KEYD_TAGS', tags),
    ...xList('KEYD_ERRORS', errors),
    cEnum('keyd_op', 'KEYD_OP_', ops),
    cEnum('keyd_tag', 'KEYD_TAG_', tags),
    cEnum('keyd_err', 'KEYD_ERR_', errors),
    '#endif',
    ''
  ].join('\n')
}

/** A table cell: pipes escaped, and the one-line meaning followed by the Markdown detail, if any. */
function cell (meaning: string, detail?: string): string {
  return (detail === undefined ? meaning : `${meaning}; ${detail}`).replace(/\|/g, '\\|')
}

function itemsCell (codec: AnyMessageCodec | null, seen: Map<AnyMessageCodec, string>): string {
  if (codec === null || Object.keys(codec.fields).length === 0) return '—'
  const first = seen.get(codec)
  if (first !== undefined) return `as ${first}`
  const parts = Object.values(codec.fields).map(f => {
    const count = f.repeat === undefined ? '' : ` × ${f.repeat.min}..${f.repeat.max}`
    const notes = [f.optional === true ? 'optional' : undefined, f.note].filter(x => x !== undefined)
    return `${f.tag}${count}${notes.length > 0 ? ` (${notes.join(', ')})` : ''}`
  })
  return parts.length === 0 ? '—' : cell(parts.join(', '))
}

function opsTable (): string[] {
  const seen = new Map<AnyMessageCodec, string>()
  const rows = Object.entries(OPS).map(([name, s]) => {
    const m = MESSAGES[name as OpName]
    const row = `| ${hex(s.value)} | ${name} | ${itemsCell(m.request, seen)} | ${itemsCell(m.answer, seen)} | ${cell(s.meaning, 'detail' in s ? s.detail : undefined)} |`
    if (!seen.has(m.answer)) seen.set(m.answer, name)
    return row
  })
  return ['| code | op | request items | answer items | meaning |', '|------|----|---------------|--------------|---------|', ...rows]
}

function tagsTable (): string[] {
  const rows: Array<[number, string]> = Object.entries(TAGS).map(([name, spec]) => {
    const s: TagSpec = spec
    const extra = [s.repeatable === true ? 'repeatable' : undefined, s.secret === true ? 'secret' : undefined].filter(x => x !== undefined)
    return [s.value, `| ${hex(s.value)} | ${name} | ${sizeRule(s)} | ${cell(s.meaning, s.detail)}${extra.length > 0 ? ` (${extra.join(', ')})` : ''} |`]
  })
  for (const r of RESERVED_TAGS) rows.push([r.from, `| ${hex(r.from)}–${hex(r.to)} | — | | ${r.meaning} |`])
  rows.sort((a, b) => a[0] - b[0])
  return ['| tag | name | size | meaning |', '|-----|------|------|---------|', ...rows.map(r => r[1])]
}

function errorsTable (): string[] {
  const rows: Array<[number, string]> = Object.entries(ERRORS).map(([name, s]) => [s.value, `| ${s.value} | ${name} | ${cell(s.meaning, 'detail' in s ? s.detail : undefined)} |`])
  for (const r of RESERVED_ERRORS) rows.push([r.from, `| ${r.from}–${r.to} | — | ${r.meaning} |`])
  rows.sort((a, b) => a[0] - b[0])
  return ['| code | name | meaning |', '|------|------|---------|', ...rows.map(r => r[1])]
}

const TABLES = { ops: opsTable, tags: tagsTable, errors: errorsTable }

/**
 * `md` with the text between each `<!-- generated:NAME -->` and `<!-- /generated:NAME -->` pair
 * (NAME = ops, tags, errors) replaced by the table rendered from the spec.
 * @throws Error if a marker pair is missing
 */
export function renderProtocolTables (md: string): string {
  let out = md
  for (const [name, table] of Object.entries(TABLES)) {
    const open = `<!-- generated:${name} -->`
    const close = `<!-- /generated:${name} -->`
    const start = out.indexOf(open)
    const end = out.indexOf(close)
    if (start < 0 || end < start) throw new Error(`${GENERATED_FILES.protocol}: missing the ${open} … ${close} markers`)
    out = out.slice(0, start + open.length) + '\n' + table().join('\n') + '\n' + out.slice(end)
  }
  return out
}
