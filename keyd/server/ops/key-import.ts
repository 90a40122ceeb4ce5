// KEY_IMPORT (plain PKCS#8, or wrapped under keyd's RSA-OAEP wrapping key) and WRAPPING_KEY (admin).
// Key material is zeroed once used and never appears in a message, a log or the audit.
import { Op, ErrorCode } from '../../protocol/spec.js'
import { decodeKeyImportRequest, encodePublicKeyResponse, encodeWrappingKeyResponse } from '../../protocol/messages.js'
import type { ItemMap, Item } from '../../protocol/codec.js'
import { KEY_NAME_RE, isUsage } from '../../algorithms.js'
import { WRAPPING_KEY_BITS } from '../../keystore/custody-keys.js'
import { parseImportedKey, unwrapImport } from '../../keystore/key-import.js'
import { KeyMaterialError, Refusal } from '../../errors.js'
import { refuseTakenName, supported, currentPublicKey, custodyKeys } from '../keys.js'
import { BAD_KEY_NAME_MESSAGE } from './key-admin.js'
import type { OpContext, OpEntry } from '../context.js'

/** KEY_IMPORT: PRIVATE_KEY (PKCS#8 DER), or WRAPPED_AES_KEY + WRAPPED_PRIVATE_KEY under the wrapping key. */
function keyImport (ctx: OpContext, items: ItemMap): Item[] {
  const req = decodeKeyImportRequest(items)
  if (!KEY_NAME_RE.test(req.name)) throw new Refusal(ErrorCode.BAD_KEY_NAME, BAD_KEY_NAME_MESSAGE)
  if (!isUsage(req.usage)) throw new Refusal(ErrorCode.BAD_KEY_TYPE, `unknown usage ${JSON.stringify(req.usage.slice(0, 32))}`)
  refuseTakenName(ctx.keystore, req.name)
  const importKey = supported(ctx.keystore, 'importKey')
  let der: Buffer | undefined
  try {
    const { privateKey, wrappedAesKey, wrappedPrivateKey } = req
    if (privateKey !== undefined) der = privateKey
    else if (wrappedAesKey !== undefined && wrappedPrivateKey !== undefined) der = unwrapImport(custodyKeys(ctx).get('wrapping').privateKey, { wrappedAesKey, wrappedPrivateKey })
    else throw new Refusal(ErrorCode.MISSING_ITEM, 'missing item PRIVATE_KEY, or WRAPPED_AES_KEY and WRAPPED_PRIVATE_KEY')
    const { key, type } = parseImportedKey(der)
    const info = importKey(req.name, type, req.usage, key)
    return encodePublicKeyResponse(currentPublicKey(ctx.keystore, info, 0, 'imported'))
  } catch (err) {
    if (err instanceof KeyMaterialError) throw new Refusal(ErrorCode.BAD_KEY_MATERIAL, err.message)
    throw err
  } finally {
    der?.fill(0)
  }
}

export const keyImportOps: OpEntry[] = [
  { op: Op.KEY_IMPORT, right: 'admin', handle: keyImport },
  {
    op: Op.WRAPPING_KEY,
    right: 'admin',
    handle: ctx => {
      const k = custodyKeys(ctx).get('wrapping')
      return encodeWrappingKeyResponse({ publicKey: k.publicKey.export({ format: 'der', type: 'spki' }), bits: WRAPPING_KEY_BITS })
    }
  }
]
