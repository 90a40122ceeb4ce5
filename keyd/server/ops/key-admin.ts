// Key management (admin): create, list, rotate, show, disable/enable and destroy keys. Answers carry
// public data only.
import { Op, ErrorCode } from '../../protocol/spec.js'
import {
  decodeKeyCreateRequest, decodeKeyRotateRequest, decodeKeyNameRequest, encodePublicKeyResponse, encodeKeyListResponse,
  encodeKeyJsonResponse, GRACE_UNLIMITED
} from '../../protocol/messages.js'
import { spkiFingerprint } from '../../protocol/attestation.js'
import { KEY_NAME_RE, isKeyType, isUsage } from '../../algorithms.js'
import { whenDone, type KeyInfo, type Keystore, type MaybeAsync } from '../../keystore/keystore.js'
import { Refusal } from '../../errors.js'
import { existingKey, refuseTakenName, supported, signableUntil, currentPublicKey } from '../keys.js'
import type { OpContext, OpEntry, OpResult } from '../context.js'
import type { ItemMap } from '../../protocol/codec.js'

/** The refusal of a name KEY_CREATE and KEY_IMPORT do not accept. */
export const BAD_KEY_NAME_MESSAGE = 'key names are 1-64 characters of a-z 0-9 . _ - starting with a letter or digit'

/** One key's summary or detail, as KEY_LIST and KEY_INFO answer it (public data only). */
export function keyDetail (ks: Keystore, info: KeyInfo, withVersions: boolean): Record<string, unknown> {
  const fp = (v: number): string | null => { const p = ks.publicKey(info.name, v); return p === undefined ? null : spkiFingerprint(p.key) }
  const out: Record<string, unknown> = {
    ...info,
    state: info.state ?? 'enabled',
    signGraceSeconds: info.signGraceSeconds ?? null,
    exportable: false,
    fingerprint: fp(info.currentVersion)
  }
  if (withVersions) {
    out.versions = info.versions.map(v => {
      const until = signableUntil(info, v.version)
      return {
        ...v,
        current: v.version === info.currentVersion,
        spkiSha256: fp(v.version),
        signsUntil: until === null ? null : new Date(until).toISOString(),
        canSign: info.state !== 'destroyed' && info.state !== 'disabled' && (until === null || Date.now() <= until)
      }
    })
  }
  return out
}

function keyCreate (ctx: OpContext, items: ItemMap): OpResult {
  const { name, type, usage } = decodeKeyCreateRequest(items)
  if (!KEY_NAME_RE.test(name)) throw new Refusal(ErrorCode.BAD_KEY_NAME, BAD_KEY_NAME_MESSAGE)
  if (!isKeyType(type)) throw new Refusal(ErrorCode.BAD_KEY_TYPE, `unknown key type ${JSON.stringify(type.slice(0, 32))}`)
  if (ctx.keystore.supportsType?.(type) === false) throw new Refusal(ErrorCode.BAD_KEY_TYPE, `the ${ctx.keystore.kind} keystore cannot generate ${type} keys`)
  if (!isUsage(usage)) throw new Refusal(ErrorCode.BAD_KEY_TYPE, `unknown usage ${JSON.stringify(usage.slice(0, 32))}`)
  refuseTakenName(ctx.keystore, name)
  // A promise when the keystore generates off the event loop (the file keystore, a PKCS#11 token).
  return whenDone(ctx.keystore.create(name, type, usage), info => encodePublicKeyResponse(currentPublicKey(ctx.keystore, info, 0, 'created')))
}

function keyRotate (ctx: OpContext, items: ItemMap): OpResult {
  const req = decodeKeyRotateRequest(items)
  existingKey(ctx.keystore, req.name)
  const grace = req.signGraceSeconds
  return whenDone(ctx.keystore.rotate(req.name, grace === undefined ? {} : { signGraceSeconds: grace === GRACE_UNLIMITED ? null : grace }),
    info => encodePublicKeyResponse(currentPublicKey(ctx.keystore, info, info.currentVersion, 'rotated')))
}

/** KEY_DISABLE, KEY_ENABLE, KEY_DESTROY: the key's summary after the change. */
function keyChange (change: (ks: Keystore, name: string) => MaybeAsync<KeyInfo>) {
  return (ctx: OpContext, items: ItemMap): OpResult => {
    const info = existingKey(ctx.keystore, decodeKeyNameRequest(items).name)
    return whenDone(change(ctx.keystore, info.name), updated =>
      encodeKeyJsonResponse({ name: info.name, json: JSON.stringify(keyDetail(ctx.keystore, updated, false)) }))
  }
}

export const keyAdminOps: OpEntry[] = [
  { op: Op.KEY_CREATE, right: 'admin', handle: keyCreate },
  {
    op: Op.KEY_LIST,
    right: 'admin',
    handle: ctx => encodeKeyListResponse({ json: JSON.stringify(ctx.keystore.list().map(k => keyDetail(ctx.keystore, k, false))) })
  },
  { op: Op.KEY_ROTATE, right: 'admin', handle: keyRotate },
  {
    op: Op.KEY_INFO,
    right: 'admin',
    handle: (ctx, items) => {
      const info = existingKey(ctx.keystore, decodeKeyNameRequest(items).name, true)
      return encodeKeyJsonResponse({ name: info.name, json: JSON.stringify(keyDetail(ctx.keystore, info, true)) })
    }
  },
  { op: Op.KEY_DISABLE, right: 'admin', handle: keyChange((ks, name) => supported(ks, 'setState')(name, 'disabled')) },
  { op: Op.KEY_ENABLE, right: 'admin', handle: keyChange((ks, name) => supported(ks, 'setState')(name, 'enabled')) },
  { op: Op.KEY_DESTROY, right: 'admin', handle: keyChange((ks, name) => supported(ks, 'destroy')(name)) }
]
