// SIGN and SIGN_BATCH: every signature goes through signOne, which checks the key, the algorithm, the
// message shape a tls-server key allows, the key's state and the per-key policy, in that order. A
// SIGN_BATCH entry is refused on its own (an ENTRY holding ERROR_CODE + ERROR_MESSAGE) without
// failing the others.
import { Op, ErrorCode } from '../../protocol/spec.js'
import {
  decodeSignRequest, encodeSignResponse, decodeSignBatchRequest, encodeSignBatchResponse,
  type SignRequest, type SignResponse, type ErrorResponse
} from '../../protocol/messages.js'
import { ALGORITHMS, keyFamily } from '../../algorithms.js'
import { tlsMessageKind } from '../../policy/tls-message.js'
import { csrInfoPublicKey } from '../../policy/csr-message.js'
import type { KeyInfo } from '../../keystore/keystore.js'
import { Refusal } from '../../errors.js'
import { admitSignature } from '../access.js'
import { findKey, checkSignable } from '../keys.js'
import type { OpContext, OpEntry } from '../context.js'

/** An admin asking a tls-server key to sign a PKCS#10 request for that same key (`keyedge cert renew --csr`). */
function isOwnCertificateRequest (ctx: OpContext, info: KeyInfo, version: number, message: Uint8Array): boolean {
  if (!ctx.client.rights.includes('admin')) return false
  const spki = csrInfoPublicKey(message)
  const pub = ctx.keystore.publicKey(info.name, version)
  return spki !== null && pub !== undefined && spki.equals(pub.key.export({ format: 'der', type: 'spki' }))
}

/** Makes one signature. @throws Refusal for every refusal SIGN answers */
export function signOne (ctx: OpContext, req: SignRequest): SignResponse {
  const { info, version } = findKey(ctx, req.name, req.version ?? 0, 'sign')
  const alg = ALGORITHMS.get(req.algorithm)
  if (alg === undefined) throw new Refusal(ErrorCode.BAD_ALGORITHM, `unknown algorithm 0x${req.algorithm.toString(16).padStart(4, '0')}`)
  if (alg.family !== keyFamily(info.type)) throw new Refusal(ErrorCode.BAD_ALGORITHM, `algorithm ${alg.name} does not fit a ${info.type} key`)
  if (info.usage === 'tls-server' && tlsMessageKind(req.message) === null && !isOwnCertificateRequest(ctx, info, version, req.message)) {
    throw new Refusal(ErrorCode.POLICY_DENIED_MESSAGE, `key ${info.name} is a tls-server key: it signs only TLS 1.3 CertificateVerify or TLS 1.2 ServerKeyExchange input`)
  }
  checkSignable(info, version)
  admitSignature(ctx.policy, ctx.client, info, alg.name)
  const k = ctx.keystore.sign(info.name, version, alg, req.message, req.encoding === 1)
  if (k === undefined) throw new Refusal(ErrorCode.KEY_NOT_FOUND, `key ${info.name} version ${version} not found`)
  ctx.stats.signatures++
  return { signature: k.signature, version: k.version }
}

function refused (ctx: OpContext, err: Refusal): ErrorResponse {
  ctx.stats.refused++
  return { code: err.wire, message: err.message }
}

export const signOps: OpEntry[] = [
  {
    op: Op.SIGN,
    right: 'sign',
    handle: (ctx, items) => encodeSignResponse(signOne(ctx, decodeSignRequest(items)))
  },
  {
    op: Op.SIGN_BATCH,
    right: 'sign',
    handle: (ctx, items) => encodeSignBatchResponse(decodeSignBatchRequest(items).map(req => {
      if (req instanceof Refusal) return refused(ctx, req)
      try {
        return signOne(ctx, req)
      } catch (err) {
        if (err instanceof Refusal) return refused(ctx, err)
        throw err
      }
    }))
  }
]
