// keyd key lifecycle handlers (admin): show, disable/enable, destroy, import (plain and wrapped),
// attestation, and the sign-grace rule for older versions after a rotation.
import { Tag, ErrorCode, readStr, itemStr, itemBytes, itemU32, type Item } from '../protocol/codec.js'
import { ALGORITHMS, KEY_NAME_RE, isUsage, keyFamily } from '../algorithms.js'
import { whenDone, type KeyInfo, type Keystore, type MaybeAsync } from '../keystore/keystore.js'
import { WRAPPING_KEY_BITS, type CustodyKeys } from '../keystore/custody-keys.js'
import { parseImportedKey, unwrapImport } from '../keystore/key-import.js'
import { KeyMaterialError } from '../errors.js'
import { signStatement, spkiFingerprint, type AttestationStatement } from './attestation.js'
import { Refusal, need, requireRight, findKey, publicKeyItems, type HandlerContext } from './handlers.js'

type Items = Map<number, Uint8Array>

/** SIGN_GRACE_SECONDS value meaning "older versions sign without a time limit". */
export const GRACE_UNLIMITED = 0xffffffff

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

/** Refuses a SIGN that the key's state or the rotation grace no longer allows. @throws Refusal */
export function checkSignable (info: KeyInfo, version: number, now = Date.now()): void {
  if (info.state === 'disabled') throw new Refusal(ErrorCode.KEY_DISABLED, `key ${info.name} is disabled: "keyedge keyd key enable --name ${info.name}" to sign again`)
  const until = signableUntil(info, version === 0 ? info.currentVersion : version)
  if (until !== null && now > until) {
    throw new Refusal(ErrorCode.KEY_VERSION_RETIRED, `key ${info.name} version ${version} was superseded and its sign grace of ${info.signGraceSeconds ?? 0} s has ended; it still verifies`)
  }
}

/** The key `KEY_NAME` names, refused with KEY_DESTROYED if it is a tombstone (unless `tombstoneOk`). */
function existing (ctx: HandlerContext, items: Items, tombstoneOk = false): KeyInfo {
  requireRight(ctx.client, 'admin')
  const name = need(readStr(items, Tag.KEY_NAME), 'KEY_NAME')
  const info = ctx.keystore.get(name)
  if (info === undefined) throw new Refusal(ErrorCode.KEY_NOT_FOUND, `no key named ${JSON.stringify(name.slice(0, 64))}`)
  if (!tombstoneOk && info.state === 'destroyed') throw new Refusal(ErrorCode.KEY_DESTROYED, `key ${name} was destroyed at ${info.destroyedAt ?? '?'}`)
  return info
}

function supported<K extends 'setState' | 'destroy' | 'importKey'> (ks: Keystore, method: K): NonNullable<Keystore[K]> {
  const f = ks[method]
  if (typeof f !== 'function') throw new Refusal(ErrorCode.NOT_SUPPORTED, `the ${ks.kind} keystore does not support ${method}`)
  return f.bind(ks) as NonNullable<Keystore[K]>
}

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

export function keyInfo (ctx: HandlerContext, items: Items): Item[] {
  const info = existing(ctx, items, true)
  return [itemStr(Tag.KEY_NAME, info.name), itemStr(Tag.JSON, JSON.stringify(keyDetail(ctx.keystore, info, true)))]
}

function setState (ctx: HandlerContext, items: Items, state: 'enabled' | 'disabled'): MaybeAsync<Item[]> {
  const info = existing(ctx, items)
  return whenDone(supported(ctx.keystore, 'setState')(info.name, state), updated =>
    [itemStr(Tag.KEY_NAME, info.name), itemStr(Tag.JSON, JSON.stringify(keyDetail(ctx.keystore, updated, false)))])
}

// Function declarations, not consts: handlers.ts registers these while this module may still be loading.
export function keyDisable (ctx: HandlerContext, items: Items): MaybeAsync<Item[]> { return setState(ctx, items, 'disabled') }
export function keyEnable (ctx: HandlerContext, items: Items): MaybeAsync<Item[]> { return setState(ctx, items, 'enabled') }

export function keyDestroy (ctx: HandlerContext, items: Items): MaybeAsync<Item[]> {
  const info = existing(ctx, items)
  return whenDone(supported(ctx.keystore, 'destroy')(info.name), updated =>
    [itemStr(Tag.KEY_NAME, info.name), itemStr(Tag.JSON, JSON.stringify(keyDetail(ctx.keystore, updated, false)))])
}

function custody (ctx: HandlerContext): CustodyKeys {
  if (ctx.custody === undefined || ctx.custody === null) throw new Refusal(ErrorCode.NOT_SUPPORTED, 'this keyd has no custody keys (attestation, wrapping)')
  return ctx.custody
}

/** KEY_IMPORT: PRIVATE_KEY (PKCS#8 DER), or WRAPPED_AES_KEY + WRAPPED_PRIVATE_KEY under the wrapping key. */
export function keyImport (ctx: HandlerContext, items: Items): Item[] {
  requireRight(ctx.client, 'admin')
  const name = need(readStr(items, Tag.KEY_NAME), 'KEY_NAME')
  const usage = need(readStr(items, Tag.USAGE), 'USAGE')
  if (!KEY_NAME_RE.test(name)) throw new Refusal(ErrorCode.BAD_KEY_NAME, 'key names are 1-64 characters of a-z 0-9 . _ - starting with a letter or digit')
  if (!isUsage(usage)) throw new Refusal(ErrorCode.BAD_KEY_TYPE, `unknown usage ${JSON.stringify(usage.slice(0, 32))}`)
  const taken = ctx.keystore.get(name)
  if (taken?.state === 'destroyed') throw new Refusal(ErrorCode.KEY_DESTROYED, `the name ${name} belongs to a destroyed key and is not reused`)
  if (taken !== undefined) throw new Refusal(ErrorCode.KEY_EXISTS, `a key named ${name} exists`)
  const plain = items.get(Tag.PRIVATE_KEY)
  const wrappedAesKey = items.get(Tag.WRAPPED_AES_KEY)
  const wrappedPrivateKey = items.get(Tag.WRAPPED_PRIVATE_KEY)
  if (plain === undefined && (wrappedAesKey === undefined || wrappedPrivateKey === undefined)) {
    throw new Refusal(ErrorCode.MISSING_ITEM, 'missing item PRIVATE_KEY, or WRAPPED_AES_KEY and WRAPPED_PRIVATE_KEY')
  }
  const importKey = supported(ctx.keystore, 'importKey')
  let der: Buffer | Uint8Array | undefined
  try {
    der = plain ?? unwrapImport(custody(ctx).get('wrapping').privateKey, { wrappedAesKey: Buffer.from(wrappedAesKey as Uint8Array), wrappedPrivateKey: Buffer.from(wrappedPrivateKey as Uint8Array) })
    const { key, type } = parseImportedKey(der)
    const info = importKey(name, type, usage, key)
    const pub = ctx.keystore.publicKey(name, 0)
    if (pub === undefined) throw new Refusal(ErrorCode.INTERNAL, 'imported key not found')
    return publicKeyItems(info, pub.version, pub.key)
  } catch (err) {
    if (err instanceof KeyMaterialError) throw new Refusal(ErrorCode.BAD_KEY_MATERIAL, err.message)
    throw err
  } finally {
    der?.fill(0)
  }
}

export function wrappingKey (ctx: HandlerContext): Item[] {
  requireRight(ctx.client, 'admin')
  const k = custody(ctx).get('wrapping')
  return [itemBytes(Tag.PUBLIC_KEY, k.publicKey.export({ format: 'der', type: 'spki' })), itemU32(Tag.KEY_BITS, WRAPPING_KEY_BITS)]
}

export function attestationKey (ctx: HandlerContext): Item[] {
  requireRight(ctx.client, 'admin')
  return [itemBytes(Tag.PUBLIC_KEY, custody(ctx).get('attestation').publicKey.export({ format: 'der', type: 'spki' }))]
}

/** KEY_ATTEST: a statement about one key version, signed by keyd's attestation key. */
export function keyAttest (ctx: HandlerContext, items: Items): Item[] {
  requireRight(ctx.client, 'admin')
  const { info, version } = findKey(ctx, items)
  const att = custody(ctx).get('attestation')
  const pub = ctx.keystore.publicKey(info.name, version)
  if (pub === undefined) throw new Refusal(ErrorCode.KEY_NOT_FOUND, `key ${info.name} version ${version} not found`)
  const rule = ctx.policy?.rule(info.name)
  const family = keyFamily(info.type)
  const statement: AttestationStatement = {
    format: 'keyedge-attestation-v1',
    keyId: info.name,
    version: pub.version,
    type: info.type,
    spki: pub.key.export({ format: 'der', type: 'spki' }).toString('base64'),
    spkiSha256: spkiFingerprint(pub.key),
    origin: info.origin,
    exportable: false,
    usage: info.usage,
    state: info.state ?? 'enabled',
    policy: {
      usage: info.usage,
      tlsMessageStructure: info.usage === 'tls-server',
      clients: rule?.clients ?? ['*'],
      algorithms: rule?.algorithms ?? [...ALGORITHMS.values()].filter(a => a.family === family).map(a => a.name),
      rateLimit: rule?.rateLimit ?? null,
      signGraceSeconds: info.signGraceSeconds ?? null
    },
    keyCreatedAt: info.createdAt,
    versionCreatedAt: info.versions.find(v => v.version === pub.version)?.createdAt ?? info.createdAt,
    keystore: ctx.keystore.kind,
    attestationKeySha256: spkiFingerprint(att.publicKey),
    issuedAt: new Date().toISOString()
  }
  const doc = signStatement(statement, att.privateKey)
  return [itemStr(Tag.KEY_NAME, info.name), itemU32(Tag.KEY_VERSION, pub.version), itemStr(Tag.STATEMENT, JSON.stringify(doc))]
}
