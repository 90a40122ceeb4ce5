// GET_TICKET_KEYS: TLS session-ticket keys derived from the master key per time epoch, so every
// keyd sharing one sealed master answers the same keys for the same period with no coordination.
import { ErrorCode, readUint, itemBytes, itemU32, type Item } from '../protocol/codec.js'
import {
  TicketTag, TICKET_KEY_BYTES, TICKET_PREVIOUS_MAX, TICKET_ROTATION_MAX_SECONDS, TICKET_ROTATION_MIN_SECONDS,
  encodeTicketKeySet, epochOf, ticketKeyInfo, ticketKeyTimes, u64, type TicketKey
} from '../protocol/ticket-keys.js'
import type { Keystore } from '../keystore/keystore.js'
import { Refusal, type HandlerContext } from './handlers.js'

/** The key of one epoch: HKDF-SHA256(master, info = label ‖ rotation ‖ epoch), 48 bytes. */
export function deriveTicketKey (keystore: Keystore, rotationSeconds: number, epoch: number, previous: number): TicketKey {
  return {
    epoch,
    ...ticketKeyTimes(epoch, rotationSeconds, previous),
    key: keystore.deriveSecret(ticketKeyInfo(rotationSeconds, epoch), TICKET_KEY_BYTES)
  }
}

/**
 * Answers the `previous` keys before the current epoch (decrypt only), the current one and the
 * next one, oldest first. Needs the `sign` right.
 */
export function getTicketKeys (ctx: HandlerContext, items: Map<number, Uint8Array>, nowMs = Date.now()): Item[] {
  if (!ctx.client.rights.includes('sign')) throw new Refusal(ErrorCode.FORBIDDEN, `client ${ctx.client.name} lacks the sign right`)
  const rotation = readUint(items, TicketTag.ROTATION_SECONDS, 4)
  if (rotation === undefined) throw new Refusal(ErrorCode.MISSING_ITEM, 'missing item TICKET_ROTATION_SECONDS')
  const previous = readUint(items, TicketTag.PREVIOUS, 4) ?? 1
  if (rotation === null || previous === null) throw new Refusal(ErrorCode.BAD_FRAME, 'ticket key items are u32')
  if (rotation < TICKET_ROTATION_MIN_SECONDS || rotation > TICKET_ROTATION_MAX_SECONDS) {
    throw new Refusal(ErrorCode.BAD_FRAME, `TICKET_ROTATION_SECONDS must be ${TICKET_ROTATION_MIN_SECONDS}..${TICKET_ROTATION_MAX_SECONDS}`)
  }
  if (previous > TICKET_PREVIOUS_MAX) throw new Refusal(ErrorCode.BAD_FRAME, `TICKET_PREVIOUS must be 0..${TICKET_PREVIOUS_MAX}`)
  const current = epochOf(nowMs, rotation)
  const keys: TicketKey[] = []
  for (let e = current - previous; e <= current + 1; e++) keys.push(deriveTicketKey(ctx.keystore, rotation, e, previous))
  const set = encodeTicketKeySet(keys)
  for (const k of keys) k.key.fill(0)
  return [
    itemU32(TicketTag.ROTATION_SECONDS, rotation),
    itemU32(TicketTag.PREVIOUS, previous),
    itemBytes(TicketTag.SERVER_TIME, u64(nowMs)),
    itemBytes(TicketTag.KEY_SET, set)
  ]
}
