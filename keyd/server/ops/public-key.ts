// GET_PUBLIC_KEY: a key version's public key, for any client the key is granted to.
import { Op, ErrorCode } from '../../protocol/spec.js'
import { decodeGetPublicKeyRequest, encodePublicKeyResponse } from '../../protocol/messages.js'
import { Refusal } from '../../errors.js'
import { findKey, publicKeyAnswer } from '../keys.js'
import type { OpEntry } from '../context.js'

export const publicKeyOps: OpEntry[] = [{
  op: Op.GET_PUBLIC_KEY,
  right: null,
  handle: (ctx, items) => {
    const req = decodeGetPublicKeyRequest(items)
    const { info, version } = findKey(ctx, req.name, req.version ?? 0, 'read')
    const pub = ctx.keystore.publicKey(info.name, version)
    if (pub === undefined) throw new Refusal(ErrorCode.KEY_NOT_FOUND, `key ${info.name} version ${version} not found`)
    return encodePublicKeyResponse(publicKeyAnswer(info, pub.version, pub.key))
  }
}]
