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
import { whenDone, type KeyInfo, type MaybeAsync } from '../../keystore/keystore.js'
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
export function signOne (ctx: OpContext, req: SignRequest): MaybeAsync<SignResponse> {
  const { info, version } = findKey(ctx, req.name, req.version ?? 0, 'sign')
  const alg = ALGORITHMS.get(req.algorithm)
  if (alg === undefined) throw new Refusal(ErrorCode.BAD_ALGORITHM, `unknown algorithm 0x${req.algorithm.toString(16).padStart(4, '0')}`)
  if (alg.family !== keyFamily(info.type)) throw new Refusal(ErrorCode.BAD_ALGORITHM, `algorithm ${alg.name} does not fit a ${info.type} key`)
  if (info.usage === 'tls-server' && tlsMessageKind(req.message) === null && !isOwnCertificateRequest(ctx, info, version, req.message)) {
    throw new Refusal(ErrorCode.POLICY_DENIED_MESSAGE, `key ${info.name} is a tls-server key: it signs only TLS 1.3 CertificateVerify or TLS 1.2 ServerKeyExchange input`)
  }
  checkSignable(info, version)
  admitSignature(ctx.policy, ctx.client, info, alg.name)
  // A promise for the signatures made on the thread pool (RSA, P-384) or by a PKCS#11 token.
  return whenDone(ctx.keystore.sign(info.name, version, alg, req.message, req.encoding === 1), k => {
    if (k === undefined) throw new Refusal(ErrorCode.KEY_NOT_FOUND, `key ${info.name} version ${version} not found`)
    ctx.stats.signatures++
    return { signature: k.signature, version: k.version }
  })
}

function refused (ctx: OpContext, err: unknown): ErrorResponse {
  if (!(err instanceof Refusal)) throw err
  ctx.stats.refused++
  return { code: err.wire, message: err.message }
}

/** One SIGN_BATCH entry: its signature, or its own refusal (which never fails the other entries). */
function batchEntry (ctx: OpContext, req: SignRequest | Refusal): MaybeAsync<SignResponse | ErrorResponse> {
  if (req instanceof Refusal) return refused(ctx, req)
  try {
    const signed = signOne(ctx, req)
    return signed instanceof Promise ? signed.catch((err: unknown) => refused(ctx, err)) : signed
  } catch (err) {
    return refused(ctx, err)
  }
}

export const signOps: OpEntry[] = [
  {
    op: Op.SIGN,
    right: 'sign',
    handle: (ctx, items) => whenDone(signOne(ctx, decodeSignRequest(items)), encodeSignResponse)
  },
  {
    op: Op.SIGN_BATCH,
    right: 'sign',
    handle: (ctx, items) => {
      const answers = decodeSignBatchRequest(items).map(req => batchEntry(ctx, req))
      // Entries signed off the event loop are awaited together; the order stays the request's.
      return answers.some(a => a instanceof Promise)
        ? Promise.all(answers).then(encodeSignBatchResponse)
        : encodeSignBatchResponse(answers as Array<SignResponse | ErrorResponse>)
    }
  }
]
