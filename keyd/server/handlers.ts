// keyd request handlers: one function per opcode, from parsed items to a response frame.
import type { KeyObject } from 'node:crypto'
import {
  Op, Tag, ErrorCode, encodeFrame, readStr, readUint,
  itemStr, itemU32, itemBytes, type Item
} from '../protocol/codec.js'
import { ALGORITHMS, KEY_NAME_RE, keyFamily, isKeyType, isUsage } from '../algorithms.js'
import { tlsMessageKind } from '../policy/tls-message.js'
import { csrInfoPublicKey } from '../policy/csr-message.js'
import { whenDone, type Keystore, type KeyInfo, type MaybeAsync } from '../keystore/keystore.js'
import type { Client, Right } from './clients.js'
import type { KeyPolicy } from '../policy/key-policy.js'
import { getTicketKeys } from './ticket-keys.js'
import { signBatch } from './sign-batch.js'
import type { CustodyKeys } from '../keystore/custody-keys.js'
import {
  checkSignable, keyDetail, keyInfo, keyDisable, keyEnable, keyDestroy, keyImport, keyAttest, wrappingKey, attestationKey, GRACE_UNLIMITED
} from './lifecycle.js'
import { encodeKeyVersions } from '../protocol/key-versions.js'
import type { BackupService } from '../backup/backup-service.js'
import { backupOp } from './backup-ops.js'
import { keyDenied, signDenied } from '../policy/access.js'

/** A refusal that becomes an ERROR frame. */
export class Refusal extends Error {
  constructor (readonly wire: number, message: string) { super(message) }
}

export interface SignStats { signatures: number, refused: number }

export interface HandlerContext {
  keystore: Keystore
  client: Client
  stats: SignStats
  /** Per-key clients/algorithms and rate limits (keyd/policy.json); absent = none. */
  policy?: KeyPolicy
  /** keyd's attestation and wrapping keys; absent = KEY_ATTEST, WRAPPING_KEY and wrapped imports answer NOT_SUPPORTED. */
  custody?: CustodyKeys | null
  /** Backup and restore (keyd/backup); absent = BACKUP_EXPORT and BACKUP_RESTORE answer NOT_SUPPORTED. */
  backup?: BackupService | null
}

type Items = Map<number, Uint8Array>

export function need<T> (v: T | undefined | null, tag: string): T {
  if (v === undefined) throw new Refusal(ErrorCode.MISSING_ITEM, `missing item ${tag}`)
  if (v === null) throw new Refusal(ErrorCode.BAD_FRAME, `item ${tag} has the wrong size`)
  return v
}

export function requireRight (client: Client, right: Right): void {
  if (!client.rights.includes(right)) throw new Refusal(ErrorCode.FORBIDDEN, `client ${client.name} lacks the ${right} right`)
}

/** The key and version a request names; a destroyed key is refused with KEY_DESTROYED. @throws Refusal */
export function findKey (ctx: HandlerContext, items: Items): { info: KeyInfo, version: number } {
  const name = need(readStr(items, Tag.KEY_NAME), 'KEY_NAME')
  const version = readUint(items, Tag.KEY_VERSION, 4) ?? 0
  if (version === null) throw new Refusal(ErrorCode.BAD_FRAME, 'item KEY_VERSION has the wrong size')
  const info = ctx.keystore.get(name)
  if (info === undefined) throw new Refusal(ErrorCode.KEY_NOT_FOUND, `no key named ${JSON.stringify(name.slice(0, 64))}`)
  const notGranted = keyDenied(ctx.client, name); if (notGranted !== null) throw new Refusal(ErrorCode.USAGE_FORBIDDEN, notGranted)
  if (info.state === 'destroyed') throw new Refusal(ErrorCode.KEY_DESTROYED, `key ${name} was destroyed at ${info.destroyedAt ?? '?'}`)
  if (version !== 0 && !info.versions.some(v => v.version === version)) {
    throw new Refusal(ErrorCode.KEY_NOT_FOUND, `key ${name} has no version ${version}`)
  }
  return { info, version }
}

/** The public-key items of GET_PUBLIC_KEY and KEY_CREATE answers. */
export function publicKeyItems (info: KeyInfo, version: number, key: KeyObject): Item[] {
  const jwk = key.export({ format: 'jwk' })
  const items: Item[] = [
    itemStr(Tag.KEY_NAME, info.name),
    itemU32(Tag.KEY_VERSION, version),
    itemStr(Tag.KEY_TYPE, info.type),
    itemBytes(Tag.PUBLIC_KEY, key.export({ format: 'der', type: 'spki' })),
    itemBytes(Tag.KEY_VERSIONS, encodeKeyVersions(info.versions.map(v => ({ version: v.version, createdAtMs: Date.parse(v.createdAt) }))))
  ]
  const b64 = (s: string | undefined): Buffer => Buffer.from(s ?? '', 'base64url')
  if (info.type.startsWith('ec-')) {
    items.push(itemU32(Tag.KEY_BITS, info.type === 'ec-p256' ? 256 : 384))
    items.push(itemBytes(Tag.EC_POINT, Buffer.concat([Buffer.of(4), b64(jwk.x), b64(jwk.y)])))
  } else if (info.type.startsWith('rsa-')) {
    items.push(itemU32(Tag.KEY_BITS, Number(info.type.slice(4))))
    items.push(itemBytes(Tag.RSA_N, b64(jwk.n)), itemBytes(Tag.RSA_E, b64(jwk.e)))
  } else {
    items.push(itemU32(Tag.KEY_BITS, 256))
  }
  return items
}

function ping (_ctx: HandlerContext, items: Items): Item[] {
  const payload = items.get(Tag.PAYLOAD) ?? new Uint8Array(0)
  if (payload.length > 1024) throw new Refusal(ErrorCode.BAD_FRAME, 'PING payload over 1 KiB')
  return [itemBytes(Tag.PAYLOAD, payload)]
}

function getPublicKey (ctx: HandlerContext, items: Items): Item[] {
  const { info, version } = findKey(ctx, items)
  const pub = ctx.keystore.publicKey(info.name, version)
  if (pub === undefined) throw new Refusal(ErrorCode.KEY_NOT_FOUND, `key ${info.name} version ${version} not found`)
  return publicKeyItems(info, pub.version, pub.key)
}

/** An admin asking a tls-server key to sign a PKCS#10 request for that same key (`keyedge cert renew --csr`). */
function isOwnCertificateRequest (ctx: HandlerContext, info: KeyInfo, version: number, message: Uint8Array): boolean {
  if (!ctx.client.rights.includes('admin')) return false
  const spki = csrInfoPublicKey(message)
  const pub = ctx.keystore.publicKey(info.name, version)
  return spki !== null && pub !== undefined && spki.equals(pub.key.export({ format: 'der', type: 'spki' }))
}

function sign (ctx: HandlerContext, items: Items): MaybeAsync<Item[]> {
  requireRight(ctx.client, 'sign')
  const { info, version } = findKey(ctx, items)
  const denied = signDenied(ctx.client, info); if (denied !== null) throw new Refusal(ErrorCode.USAGE_FORBIDDEN, denied)
  const code = need(readUint(items, Tag.ALGORITHM, 2), 'ALGORITHM')
  const message = need(items.get(Tag.MESSAGE), 'MESSAGE')
  const encoding = readUint(items, Tag.SIG_ENCODING, 1) ?? 0
  const alg = ALGORITHMS.get(code)
  if (alg === undefined) throw new Refusal(ErrorCode.BAD_ALGORITHM, `unknown algorithm 0x${code.toString(16).padStart(4, '0')}`)
  if (alg.family !== keyFamily(info.type)) throw new Refusal(ErrorCode.BAD_ALGORITHM, `algorithm ${alg.name} does not fit a ${info.type} key`)
  if (encoding !== 0 && encoding !== 1) throw new Refusal(ErrorCode.BAD_FRAME, 'SIG_ENCODING must be 0 or 1')
  if (info.usage === 'tls-server' && tlsMessageKind(message) === null && !isOwnCertificateRequest(ctx, info, version, message)) {
    throw new Refusal(ErrorCode.POLICY_DENIED_MESSAGE, `key ${info.name} is a tls-server key: it signs only TLS 1.3 CertificateVerify or TLS 1.2 ServerKeyExchange input`)
  }
  checkSignable(info, version)
  const verdict = ctx.policy?.check(ctx.client.name, info.name, alg.name)
  if (verdict !== undefined && !verdict.ok) {
    throw new Refusal(verdict.reason.endsWith('rate') ? ErrorCode.RATE_LIMITED : ErrorCode.FORBIDDEN, verdict.message)
  }
  return whenDone(ctx.keystore.sign(info.name, version, alg, message, encoding === 1), k => {
    if (k === undefined) throw new Refusal(ErrorCode.KEY_NOT_FOUND, `key ${info.name} version ${version} not found`)
    ctx.stats.signatures++
    return [itemBytes(Tag.SIGNATURE, k.signature), itemU32(Tag.KEY_VERSION, k.version)]
  })
}

function keyCreate (ctx: HandlerContext, items: Items): MaybeAsync<Item[]> {
  requireRight(ctx.client, 'admin')
  const name = need(readStr(items, Tag.KEY_NAME), 'KEY_NAME')
  const type = need(readStr(items, Tag.KEY_TYPE), 'KEY_TYPE')
  const usage = need(readStr(items, Tag.USAGE), 'USAGE')
  if (!KEY_NAME_RE.test(name)) throw new Refusal(ErrorCode.BAD_KEY_NAME, 'key names are 1-64 characters of a-z 0-9 . _ - starting with a letter or digit')
  if (!isKeyType(type)) throw new Refusal(ErrorCode.BAD_KEY_TYPE, `unknown key type ${JSON.stringify(type.slice(0, 32))}`)
  if (ctx.keystore.supportsType?.(type) === false) throw new Refusal(ErrorCode.BAD_KEY_TYPE, `the ${ctx.keystore.kind} keystore cannot generate ${type} keys`)
  if (!isUsage(usage)) throw new Refusal(ErrorCode.BAD_KEY_TYPE, `unknown usage ${JSON.stringify(usage.slice(0, 32))}`)
  if (ctx.keystore.get(name)?.state === 'destroyed') throw new Refusal(ErrorCode.KEY_DESTROYED, `the name ${name} belongs to a destroyed key and is not reused`)
  if (ctx.keystore.get(name) !== undefined) throw new Refusal(ErrorCode.KEY_EXISTS, `a key named ${name} exists`)
  return whenDone(ctx.keystore.create(name, type, usage), info => {
    const pub = ctx.keystore.publicKey(name, 0)
    if (pub === undefined) throw new Refusal(ErrorCode.INTERNAL, 'created key not found')
    return publicKeyItems(info, pub.version, pub.key)
  })
}

function keyRotate (ctx: HandlerContext, items: Items): MaybeAsync<Item[]> {
  requireRight(ctx.client, 'admin')
  const name = need(readStr(items, Tag.KEY_NAME), 'KEY_NAME')
  const existing = ctx.keystore.get(name)
  if (existing === undefined) throw new Refusal(ErrorCode.KEY_NOT_FOUND, `no key named ${JSON.stringify(name.slice(0, 64))}`)
  if (existing.state === 'destroyed') throw new Refusal(ErrorCode.KEY_DESTROYED, `key ${name} was destroyed at ${existing.destroyedAt ?? '?'}`)
  const grace = readUint(items, Tag.SIGN_GRACE_SECONDS, 4)
  if (grace === null) throw new Refusal(ErrorCode.BAD_FRAME, 'item SIGN_GRACE_SECONDS has the wrong size')
  return whenDone(ctx.keystore.rotate(name, grace === undefined ? {} : { signGraceSeconds: grace === GRACE_UNLIMITED ? null : grace }), info => {
    const pub = ctx.keystore.publicKey(name, info.currentVersion)
    if (pub === undefined) throw new Refusal(ErrorCode.INTERNAL, 'rotated key version not found')
    return publicKeyItems(info, pub.version, pub.key)
  })
}

function keyList (ctx: HandlerContext): Item[] {
  requireRight(ctx.client, 'admin')
  return [itemStr(Tag.JSON, JSON.stringify(ctx.keystore.list().map(k => keyDetail(ctx.keystore, k, false))))]
}

const handlers = new Map<number, (ctx: HandlerContext, items: Items) => MaybeAsync<Item[]>>([
  [Op.PING, ping],
  [Op.GET_PUBLIC_KEY, getPublicKey],
  [Op.SIGN, sign],
  [Op.SIGN_BATCH, (ctx, items) => signBatch(ctx, items, sign)],
  [Op.GET_TICKET_KEYS, getTicketKeys],
  [Op.KEY_CREATE, keyCreate],
  [Op.KEY_LIST, keyList],
  [Op.KEY_ROTATE, keyRotate],
  [Op.KEY_INFO, keyInfo],
  [Op.KEY_DISABLE, keyDisable],
  [Op.KEY_ENABLE, keyEnable],
  [Op.KEY_DESTROY, keyDestroy],
  [Op.KEY_IMPORT, keyImport],
  [Op.WRAPPING_KEY, wrappingKey],
  [Op.KEY_ATTEST, keyAttest],
  [Op.ATTESTATION_KEY, attestationKey],
  [Op.BACKUP_EXPORT, (ctx, items) => backupOp('export', ctx, items)],
  [Op.BACKUP_RESTORE, (ctx, items) => backupOp('restore', ctx, items)]
])

/** Runs one authenticated request; a promise when the keystore works off the event loop. @throws Refusal for every expected failure (or rejects with it). */
export function handle (ctx: HandlerContext, opcode: number, requestId: number, items: Items): MaybeAsync<Buffer> {
  const h = handlers.get(opcode)
  if (h === undefined) throw new Refusal(ErrorCode.UNKNOWN_OPCODE, `unknown opcode 0x${opcode.toString(16)}`)
  return whenDone(h(ctx, items), answer => encodeFrame(opcode | 0x80, requestId, answer))
}
