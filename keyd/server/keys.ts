// Finding the key a request names and describing it: the lookups every key operation shares (with
// their refusals), the rotation-grace rule for older versions, and the public-key answer.
import type { KeyObject } from 'node:crypto'
import { ErrorCode } from '../protocol/spec.js'
import { encodeKeyVersions } from '../protocol/key-versions.js'
import type { PublicKeyResponse } from '../protocol/messages.js'
import { Refusal } from '../errors.js'
import type { KeyInfo, Keystore } from '../keystore/keystore.js'
import type { CustodyKeys } from '../keystore/custody-keys.js'
import { authorizeKey, type KeyUse } from './access.js'
import type { OpContext } from './context.js'

const quoted = (name: string): string => JSON.stringify(name.slice(0, 64))

/**
 * The key `name` and version `version` (0 = current) that a client uses for `use`; a destroyed key
 * is refused with KEY_DESTROYED.
 * @throws Refusal KEY_NOT_FOUND, USAGE_FORBIDDEN, KEY_DESTROYED
 */
export function findKey (ctx: OpContext, name: string, version: number, use: KeyUse): { info: KeyInfo, version: number } {
  const info = ctx.keystore.get(name)
  if (info === undefined) throw new Refusal(ErrorCode.KEY_NOT_FOUND, `no key named ${quoted(name)}`)
  authorizeKey(ctx.client, info, use)
  if (info.state === 'destroyed') throw new Refusal(ErrorCode.KEY_DESTROYED, `key ${name} was destroyed at ${info.destroyedAt ?? '?'}`)
  if (version !== 0 && !info.versions.some(v => v.version === version)) {
    throw new Refusal(ErrorCode.KEY_NOT_FOUND, `key ${name} has no version ${version}`)
  }
  return { info, version }
}

/** The key `name` an admin operation names; a tombstone is refused with KEY_DESTROYED unless `tombstoneOk`. @throws Refusal */
export function existingKey (ks: Keystore, name: string, tombstoneOk = false): KeyInfo {
  const info = ks.get(name)
  if (info === undefined) throw new Refusal(ErrorCode.KEY_NOT_FOUND, `no key named ${quoted(name)}`)
  if (!tombstoneOk && info.state === 'destroyed') throw new Refusal(ErrorCode.KEY_DESTROYED, `key ${name} was destroyed at ${info.destroyedAt ?? '?'}`)
  return info
}

/** Refuses a name that KEY_CREATE or KEY_IMPORT may not take: in use, or a destroyed key's. @throws Refusal KEY_DESTROYED, KEY_EXISTS */
export function refuseTakenName (ks: Keystore, name: string): void {
  const taken = ks.get(name)
  if (taken?.state === 'destroyed') throw new Refusal(ErrorCode.KEY_DESTROYED, `the name ${name} belongs to a destroyed key and is not reused`)
  if (taken !== undefined) throw new Refusal(ErrorCode.KEY_EXISTS, `a key named ${name} exists`)
}

/** An optional keystore method, bound; NOT_SUPPORTED when the backend lacks it. @throws Refusal */
export function supported<K extends 'setState' | 'destroy' | 'importKey'> (ks: Keystore, method: K): NonNullable<Keystore[K]> {
  const f = ks[method]
  if (typeof f !== 'function') throw new Refusal(ErrorCode.NOT_SUPPORTED, `the ${ks.kind} keystore does not support ${method}`)
  return f.bind(ks) as NonNullable<Keystore[K]>
}

/**
 * Until when (unix ms) `version` of `info` may sign: null = without limit (the current version, or a
 * key with no grace set). An older version may sign for `signGraceSeconds` after the version that
 * superseded it was created.
 */
export function signableUntil (info: KeyInfo, version: number): number | null {
  const grace = info.signGraceSeconds
  if (version === info.currentVersion || grace === null || grace === undefined) return null
  const next = info.versions.filter(v => v.version > version).map(v => Date.parse(v.createdAt))
  return next.length === 0 ? null : Math.min(...next) + grace * 1000
}

/** Refuses a SIGN that the key's state or the rotation grace no longer allows. @throws Refusal KEY_DISABLED, KEY_VERSION_RETIRED */
export function checkSignable (info: KeyInfo, version: number, now = Date.now()): void {
  if (info.state === 'disabled') throw new Refusal(ErrorCode.KEY_DISABLED, `key ${info.name} is disabled: "keyedge keyd key enable --name ${info.name}" to sign again`)
  const until = signableUntil(info, version === 0 ? info.currentVersion : version)
  if (until !== null && now > until) {
    throw new Refusal(ErrorCode.KEY_VERSION_RETIRED, `key ${info.name} version ${version} was superseded and its sign grace of ${info.signGraceSeconds ?? 0} s has ended; it still verifies`)
  }
}

/** The answer of GET_PUBLIC_KEY, KEY_CREATE, KEY_ROTATE and KEY_IMPORT for one version's public key. */
export function publicKeyAnswer (info: KeyInfo, version: number, key: KeyObject): PublicKeyResponse {
  const jwk = key.export({ format: 'jwk' })
  const b64 = (s: string | undefined): Buffer => Buffer.from(s ?? '', 'base64url')
  const answer: PublicKeyResponse = {
    name: info.name,
    version,
    type: info.type,
    publicKey: key.export({ format: 'der', type: 'spki' }),
    versions: encodeKeyVersions(info.versions.map(v => ({ version: v.version, createdAtMs: Date.parse(v.createdAt) }))),
    bits: 256
  }
  if (info.type.startsWith('ec-')) {
    answer.bits = info.type === 'ec-p256' ? 256 : 384
    answer.ecPoint = Buffer.concat([Buffer.of(4), b64(jwk.x), b64(jwk.y)])
  } else if (info.type.startsWith('rsa-')) {
    answer.bits = Number(info.type.slice(4))
    answer.rsaN = b64(jwk.n)
    answer.rsaE = b64(jwk.e)
  }
  return answer
}

/** The public-key answer of the version a key operation just made or named. @throws Refusal INTERNAL if the keystore lost it */
export function currentPublicKey (ks: Keystore, info: KeyInfo, version: number, what: string): PublicKeyResponse {
  const pub = ks.publicKey(info.name, version)
  if (pub === undefined) throw new Refusal(ErrorCode.INTERNAL, `${what} key not found`)
  return publicKeyAnswer(info, pub.version, pub.key)
}

/** keyd's custody keys (attestation, wrapping). @throws Refusal NOT_SUPPORTED when this keyd has none */
export function custodyKeys (ctx: OpContext): CustodyKeys {
  if (ctx.custody === undefined || ctx.custody === null) throw new Refusal(ErrorCode.NOT_SUPPORTED, 'this keyd has no custody keys (attestation, wrapping)')
  return ctx.custody
}
