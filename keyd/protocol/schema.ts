// Declarative message schemas: a message is a list of named fields, each one item tag, required or
// optional. From one declaration come a typed encoder (object -> items) and a typed decoder
// (items -> object) that checks every value against its tag's size rule in spec.ts. A decoder never
// invents a value: a missing required item is MISSING_ITEM, a value of the wrong size BAD_FRAME.
import { TAGS, INT_SIZE, ErrorCode, type TagName, type TagSpec } from './spec.js'
import type { ItemMap, Item } from './codec.js'
import { Refusal } from '../errors.js'

type KindOf<N extends TagName> = (typeof TAGS)[N]['kind']

/** The decoded type of one item: integers are numbers, `str` a string, `bytes` a Buffer (a view, not a copy). */
export type ValueOf<N extends TagName> = KindOf<N> extends 'str' ? string : KindOf<N> extends 'bytes' ? Buffer : number

export interface FieldSpec {
  readonly tag: TagName
  /** Absent is allowed (the decoded field is undefined). */
  readonly optional?: true
  /** A tighter bound than the tag's for this message (bytes / str), e.g. PING's 1 KiB. */
  readonly max?: number
  /** A repeatable tag: the field is an array of min..max occurrences. */
  readonly repeat?: { readonly min: number, readonly max: number }
  /** Markdown for PROTOCOL.md's opcode table. */
  readonly note?: string
}

export type MessageSpec = Readonly<Record<string, FieldSpec>>

type FieldValue<F extends FieldSpec> = F extends { repeat: object } ? Array<ValueOf<F['tag']>> : ValueOf<F['tag']>
type RequiredKeys<S extends MessageSpec> = { [K in keyof S]: S[K] extends { optional: true } ? never : K }[keyof S]
type OptionalKeys<S extends MessageSpec> = Exclude<keyof S, RequiredKeys<S>>

/** The object a message schema describes. */
export type MessageOf<S extends MessageSpec> = { -readonly [K in RequiredKeys<S>]: FieldValue<S[K]> } & { -readonly [K in OptionalKeys<S>]?: FieldValue<S[K]> }

export interface MessageCodec<S extends MessageSpec> {
  /** e.g. "SIGN request": names the message in error messages. */
  readonly name: string
  readonly fields: S
  /** The items of `m`, in the order the fields are declared; optional fields left undefined are left out. */
  readonly encode: (m: MessageOf<S>) => Item[]
  /** @throws Refusal MISSING_ITEM (a required item is absent), BAD_FRAME (an item of the wrong size or count) */
  readonly decode: (items: ItemMap) => MessageOf<S>
}

const MAX_U = { u8: 0xff, u16: 0xffff, u32: 0xffffffff, u64: Number.MAX_SAFE_INTEGER } as const

/** The size rule of `tag` as PROTOCOL.md states it, e.g. `u32`, `str ≤ 64`, `bytes, n × 80`. */
export function sizeRule (spec: TagSpec): string {
  if (spec.kind !== 'str' && spec.kind !== 'bytes') return spec.range === undefined ? spec.kind : `${spec.kind}, ${spec.range[0]}–${spec.range[1]}`
  if (spec.record !== undefined) return `${spec.kind}, n × ${spec.record}`
  return spec.max !== undefined ? `${spec.kind} ≤ ${spec.max}` : spec.kind
}

/**
 * Checks one raw value against `name`'s size rule (and a field's tighter `max`) and decodes it.
 * @throws Refusal BAD_FRAME
 */
export function decodeValue<N extends TagName> (name: N, raw: Uint8Array, max?: number): ValueOf<N> {
  const spec: TagSpec = TAGS[name]
  const b = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength)
  if (spec.kind === 'str' || spec.kind === 'bytes') {
    const limit = max ?? spec.max
    if (limit !== undefined && b.length > limit) throw new Refusal(ErrorCode.BAD_FRAME, `item ${name} is over ${limit} bytes`)
    if (spec.record !== undefined && (b.length === 0 || b.length % spec.record !== 0)) {
      throw new Refusal(ErrorCode.BAD_FRAME, `item ${name} is not a whole number of ${spec.record}-byte records`)
    }
    return (spec.kind === 'str' ? b.toString('utf8') : b) as ValueOf<N>
  }
  const size = INT_SIZE[spec.kind]
  if (b.length !== size) throw new Refusal(ErrorCode.BAD_FRAME, `item ${name} has the wrong size: ${b.length} bytes, not ${size}`)
  const n = spec.kind === 'u8' ? b.readUInt8(0) : spec.kind === 'u16' ? b.readUInt16BE(0) : spec.kind === 'u32' ? b.readUInt32BE(0) : Number(b.readBigUInt64BE(0))
  if (spec.range !== undefined && (n < spec.range[0] || n > spec.range[1])) {
    throw new Refusal(ErrorCode.BAD_FRAME, `item ${name} must be ${spec.range[0]}..${spec.range[1]}`)
  }
  return n as ValueOf<N>
}

/** Encodes one value as an item of `name`. @throws RangeError for an integer its kind cannot hold */
export function encodeValue<N extends TagName> (name: N, value: ValueOf<N>): Item {
  const spec: TagSpec = TAGS[name]
  if (spec.kind === 'str') return { tag: spec.value, value: Buffer.from(value as string, 'utf8') }
  if (spec.kind === 'bytes') return { tag: spec.value, value: value as Buffer }
  const n = value as number
  if (!Number.isInteger(n) || n < 0 || n > MAX_U[spec.kind]) throw new RangeError(`item ${name}: ${n} is not a ${spec.kind}`)
  const b = Buffer.alloc(INT_SIZE[spec.kind])
  if (spec.kind === 'u8') b.writeUInt8(n)
  else if (spec.kind === 'u16') b.writeUInt16BE(n)
  else if (spec.kind === 'u32') b.writeUInt32BE(n)
  else b.writeBigUInt64BE(BigInt(n))
  return { tag: spec.value, value: b }
}

/**
 * Declares a message: `fields` maps each property of the decoded object to its item. `check` adds a
 * rule across fields (e.g. "this item or those two"); it throws a Refusal.
 */
export function message<const S extends MessageSpec> (name: string, fields: S, check?: (m: MessageOf<S>) => void): MessageCodec<S> {
  const entries = Object.entries(fields)
  const encode = (m: MessageOf<S>): Item[] => {
    const items: Item[] = []
    const values = m as Record<string, unknown>
    for (const [key, f] of entries) {
      const v = values[key]
      if (v === undefined) continue
      if (f.repeat !== undefined) {
        for (const one of v as Array<ValueOf<TagName>>) items.push(encodeValue(f.tag, one))
      } else {
        items.push(encodeValue(f.tag, v as ValueOf<TagName>))
      }
    }
    return items
  }
  const decode = (items: ItemMap): MessageOf<S> => {
    const out: Record<string, unknown> = {}
    for (const [key, f] of entries) {
      const tag = TAGS[f.tag].value
      if (f.repeat !== undefined) {
        const all = items.all(tag)
        if (all.length < f.repeat.min) throw new Refusal(all.length === 0 ? ErrorCode.MISSING_ITEM : ErrorCode.BAD_FRAME, all.length === 0 ? `missing item ${f.tag}` : `fewer than ${f.repeat.min} ${f.tag} items in a ${name}`)
        if (all.length > f.repeat.max) throw new Refusal(ErrorCode.BAD_FRAME, `more than ${f.repeat.max} ${f.tag} items in a ${name}`)
        out[key] = all.map(raw => decodeValue(f.tag, raw, f.max))
        continue
      }
      const raw = items.get(tag)
      if (raw === undefined) {
        if (f.optional !== true) throw new Refusal(ErrorCode.MISSING_ITEM, `missing item ${f.tag}`)
        continue
      }
      out[key] = decodeValue(f.tag, raw, f.max)
    }
    const m = out as MessageOf<S>
    check?.(m)
    return m
  }
  return { name, fields, encode, decode }
}
