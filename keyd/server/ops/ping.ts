// PING: liveness. Answered to any authenticated client, sealed or not, and never audited.
import { Op } from '../../protocol/spec.js'
import { decodePingRequest, encodePingResponse } from '../../protocol/messages.js'
import type { OpEntry } from '../context.js'

export const pingOps: OpEntry[] = [{
  op: Op.PING,
  right: null,
  whileSealed: true,
  unaudited: true,
  handle: (_ctx, items) => encodePingResponse({ payload: decodePingRequest(items).payload ?? Buffer.alloc(0) })
}]
