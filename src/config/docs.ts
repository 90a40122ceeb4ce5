// Writes the reference tables of docs/configuration.md from the schema. Each table sits between
// two marker comments naming the schema node it documents (`(root)`, `tls`, `routes[]` …); the
// prose around them is written by hand. A field whose own section has a table gets one row
// pointing there; other nested fields are flattened (`listen.port`, `files[].cert`).

import type { TSchema } from '@sinclair/typebox'
import { CHECK_DOCS, type CheckName } from './checks.js'
import { EdgeConfigSchema } from './schema.js'

export const GENERATE_COMMAND = 'npm run generate:config'
const BEGIN = /<!-- BEGIN GENERATED config table (\S+) -->\n[\s\S]*?<!-- END GENERATED config table \1 -->/g

type Node = TSchema & Record<string, unknown>

function properties (node: Node): Record<string, Node> | undefined {
  return node.properties as Record<string, Node> | undefined
}

/** The node at a marker's path: `token`, `token.callers[]`, `(root)`. */
export function nodeAt (path: string, root: Node = EdgeConfigSchema): Node {
  if (path === '(root)') return root
  let node = root
  for (const part of path.split('.')) {
    const [key, array] = part.endsWith('[]') ? [part.slice(0, -2), true] : [part, false]
    const next = properties(node)?.[key]
    if (next === undefined) throw new Error(`docs/configuration.md: no config field "${path}"`)
    node = array ? next.items as Node : next
  }
  return node
}

const code = (v: unknown): string => `\`${JSON.stringify(v)}\``

function values (node: Node): string {
  if (Array.isArray(node.enum)) return (node.enum as string[]).map(code).join(', ')
  const type = Array.isArray(node.type) ? node.type[0] as string : node.type as string
  switch (type) {
    case 'integer': return `integer ${String(node.minimum)}–${String(node.maximum)}`
    case 'number': return `number ${String(node.minimum)}–${String(node.maximum)}`
    case 'boolean': return '`true`, `false`'
    case 'object': return 'object'
    case 'array': return `list of ${(node.items as Node).type === 'object' ? 'entries' : values(node.items as Node)}${node.minItems === 1 ? ', not empty' : ''}`
    case 'string': {
      const what = node.check !== undefined ? CHECK_DOCS[node.check as CheckName] : node.transform === 'path' ? 'file path' : 'string'
      return Array.isArray(node.type) ? `${what} or \`null\`` : what
    }
    default: return type
  }
}

/** `within`: the optional section a required field belongs to (required only when that section is there). */
function defaultOf (node: Node, required: boolean, within = ''): string {
  if (typeof node.docDefault === 'string') return node.docDefault
  if (node.default !== undefined) return code(node.default)
  if (!required) return 'absent'
  return within === '' ? '**required**' : `**required** with \`${within}\``
}

const cell = (s: string): string => s.replace(/\|/g, '\\|').replace(/\n/g, ' ')

/** The rows of the table for `path`: fields of other tables (`tables`) get one row pointing below. */
function rows (node: Node, prefix: string, shown: string, tables: ReadonlySet<string>, within = ''): string[][] {
  const out: string[][] = []
  const props = properties(node) ?? {}
  const required = new Set((node.required as string[] | undefined) ?? [])
  for (const [key, prop] of Object.entries(props)) {
    const full = prefix === '' ? key : `${prefix}.${key}`
    const name = shown === '' ? key : `${shown}.${key}`
    const items = prop.items as Node | undefined
    const ownTable = tables.has(full) || (items !== undefined && tables.has(`${full}[]`))
    const isRequired = required.has(key) && prop.default === undefined
    const optionalSection = !required.has(key) && prop.default === undefined ? name : within
    if (ownTable) {
      out.push([`\`${name}\``, values(prop), defaultOf(prop, isRequired, within), cell(`${String(prop.description ?? '')}; see below`)])
    } else if (properties(prop) !== undefined) {
      if (prop.description !== undefined) out.push([`\`${name}\``, values(prop), defaultOf(prop, isRequired, within), cell(String(prop.description))])
      out.push(...rows(prop, full, name, tables, optionalSection))
    } else if (items !== undefined && properties(items) !== undefined) {
      out.push(...rows(items, `${full}[]`, `${name}[]`, tables, optionalSection))
    } else {
      out.push([`\`${name}\``, values(prop), defaultOf(prop, isRequired, within), cell(String(prop.description ?? ''))])
    }
  }
  return out
}

/** The markdown table for the schema node at `path`; an object section shows full paths, a list entry its own fields. */
export function renderTable (path: string, tables: ReadonlySet<string>): string {
  const node = nodeAt(path)
  const prefix = path === '(root)' ? '' : path
  const shown = path === '(root)' || path.endsWith('[]') ? '' : path
  const lines = ['| option | values | default | meaning |', '|---|---|---|---|']
  for (const row of rows(node, prefix, shown, tables)) lines.push(`| ${row.join(' | ')} |`)
  return lines.join('\n')
}

/** `markdown` with every generated table rewritten from the schema. */
export function renderConfigDocs (markdown: string): string {
  const tables = new Set([...markdown.matchAll(BEGIN)].map(m => m[1] ?? ''))
  return markdown.replace(BEGIN, (_, path: string) =>
    `<!-- BEGIN GENERATED config table ${path} -->\n${renderTable(path, tables)}\n<!-- END GENERATED config table ${path} -->`)
}
