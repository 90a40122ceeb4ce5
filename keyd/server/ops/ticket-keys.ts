// GET_TICKET_KEYS: TLS session-ticket keys derived from the master key per time epoch, so every
// keyd sharing one sealed master answers the same keys for the same period with no coordination.
import { Op } from '../../protocol/spec.js'
import { decodeGetTicketKeysRequest, encodeGetTicketKeysResponse, type GetTicketKeysRequest, type GetTicketKeysResponse } from '../../protocol/messages.js'
import { TICKET_KEY_BYTES, encodeTicketKeySet, epochOf, ticketKeyInfo, ticketKeyTimes, type TicketKey } from '../../protocol/ticket-keys.js'
import type { Keystore } from '../../keystore/keystore.js'
import type { OpEntry } from '../context.js'

/** The key of one epoch: HKDF-SHA256(master, info = label ‖ rotation ‖ epoch), 48 bytes. */
export function deriveTicketKey (keystore: Keystore, rotationSeconds: number, epoch: number, previous: number): TicketKey {
  return {
    epoch,
    ...ticketKeyTimes(epoch, rotationSeconds, previous),
    key: keystore.deriveSecret(ticketKeyInfo(rotationSeconds, epoch), TICKET_KEY_BYTES)
  }
}

/**
 * The `previous` keys before the current epoch (decrypt only; absent = 1), the current one and the
 * next one, oldest first. The request's ranges were checked when it was decoded.
 */
export function ticketKeys (keystore: Keystore, req: GetTicketKeysRequest, nowMs = Date.now()): GetTicketKeysResponse {
  const rotation = req.rotationSeconds
  const previous = req.previous ?? 1
  const current = epochOf(nowMs, rotation)
  const keys: TicketKey[] = []
  for (let e = current - previous; e <= current + 1; e++) keys.push(deriveTicketKey(keystore, rotation, e, previous))
  const keySet = encodeTicketKeySet(keys)
  for (const k of keys) k.key.fill(0)
  return { rotationSeconds: rotation, previous, serverTime: nowMs, keySet }
}

export const ticketKeyOps: OpEntry[] = [{
  op: Op.GET_TICKET_KEYS,
  right: 'sign',
  handle: (ctx, items) => encodeGetTicketKeysResponse(ticketKeys(ctx.keystore, decodeGetTicketKeysRequest(items)))
}]
