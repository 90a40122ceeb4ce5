// STATUS and UNSEAL (admin): answered sealed or not, and never audited (a sealed keyd has no audit
// log open yet). The state lives in keyd/server/sealer.ts.
import { Op, ErrorCode } from '../../protocol/spec.js'
import { decodeUnsealRequest, encodeUnsealResponse, encodeStatusResponse } from '../../protocol/messages.js'
import { Refusal } from '../../errors.js'
import type { Sealer } from '../sealer.js'
import type { OpContext, OpEntry } from '../context.js'

function sealer (ctx: OpContext): Sealer {
  if (ctx.sealer === undefined) throw new Refusal(ErrorCode.NOT_SUPPORTED, 'this keyd has no seal state')
  return ctx.sealer
}

export const sealOps: OpEntry[] = [
  {
    op: Op.STATUS,
    right: 'admin',
    whileSealed: true,
    unaudited: true,
    handle: ctx => encodeStatusResponse({ json: JSON.stringify(sealer(ctx).status()) })
  },
  {
    op: Op.UNSEAL,
    right: 'admin',
    whileSealed: true,
    unaudited: true,
    handle: async (ctx, items) => {
      const { share } = decodeUnsealRequest(items)
      return encodeUnsealResponse({ json: JSON.stringify(await sealer(ctx).addShare(share)) })
    }
  }
]
