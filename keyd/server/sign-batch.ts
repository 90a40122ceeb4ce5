// SIGN_BATCH (PROTOCOL.md): several SIGN requests in one frame, each an ENTRY answered by an ENTRY,
// each checked by the same policy as SIGN and refused on its own without failing the others.
import { ErrorCode, ItemMap, Tag, encodeItems, itemBytes, itemStr, itemU16, parseItems, type Item } from '../protocol/codec.js'
import { Refusal, type HandlerContext } from './handlers.js'
import { whenDone, type MaybeAsync } from '../keystore/keystore.js'

/** Most entries one SIGN_BATCH frame may carry. */
export const MAX_BATCH_ENTRIES = 64

type Items = Map<number, Uint8Array>
type SignOne = (ctx: HandlerContext, items: Items) => MaybeAsync<Item[]>

/**
 * Answers a SIGN_BATCH: one response ENTRY per request ENTRY, in the same order, holding either
 * SIGNATURE + KEY_VERSION or ERROR_CODE + ERROR_MESSAGE.
 * @throws Refusal MISSING_ITEM (no ENTRY), BAD_FRAME (a malformed ENTRY, or more than MAX_BATCH_ENTRIES)
 */
export function signBatch (ctx: HandlerContext, items: Items, signOne: SignOne): MaybeAsync<Item[]> {
  const raw = items instanceof ItemMap ? items.all(Tag.ENTRY) : [items.get(Tag.ENTRY)].filter((v): v is Uint8Array => v !== undefined)
  if (raw.length === 0) throw new Refusal(ErrorCode.MISSING_ITEM, 'missing item ENTRY')
  if (raw.length > MAX_BATCH_ENTRIES) throw new Refusal(ErrorCode.BAD_FRAME, `more than ${MAX_BATCH_ENTRIES} entries in one SIGN_BATCH`)
  const entries: ItemMap[] = []
  for (const v of raw) {
    const inner = parseItems(v)
    if (inner === null) throw new Refusal(ErrorCode.BAD_FRAME, 'an ENTRY holds items that run past its end')
    entries.push(inner)
  }
  const refused = (err: unknown): Item => {
    if (!(err instanceof Refusal)) throw err
    ctx.stats.refused++
    return itemBytes(Tag.ENTRY, encodeItems([itemU16(Tag.ERROR_CODE, err.wire), itemStr(Tag.ERROR_MESSAGE, err.message)]))
  }
  const answers = entries.map(entry => {
    try {
      const signed = whenDone(signOne(ctx, entry), items => itemBytes(Tag.ENTRY, encodeItems(items)))
      return signed instanceof Promise ? signed.catch(refused) : signed
    } catch (err) {
      return refused(err)
    }
  })
  // Entries a slow key signs off the event loop are awaited together; the order stays the request's.
  return answers.some(a => a instanceof Promise) ? Promise.all(answers) : answers as Item[]
}

