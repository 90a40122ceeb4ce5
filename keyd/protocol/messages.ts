// Typed codecs of every keyd operation's request and answer, shared by keyd/client and keyd/server:
// `encodeSignRequest(req)` gives the items of a SIGN, `decodeSignRequest(items)` the checked object.
// Decoders throw Refusal (MISSING_ITEM, BAD_FRAME) and never fill in a value that was not sent,
// except the defaults PROTOCOL.md itself states (KEY_VERSION absent = 0, TICKET_PREVIOUS absent = 1 …),
// which callers apply where they use the value.
import { ErrorCode, Tag, TAGS, type OpName } from './spec.js'
import { parseItems, encodeItems, truncateUtf8, type Item, type ItemMap } from './codec.js'
import { message, type MessageCodec, type MessageOf, type MessageSpec } from './schema.js'
import { Refusal } from '../errors.js'

/** Most ENTRY items one SIGN_BATCH frame may carry. */
export const MAX_BATCH_ENTRIES = 64
/** SIGN_GRACE_SECONDS value meaning "older versions sign without a time limit". */
export const GRACE_UNLIMITED = 0xffffffff
/** Most bytes a PING payload may hold. */
export const MAX_PING_PAYLOAD = 1024

const EMPTY = message('empty message', {})
const KEY_NAME_ONLY = { name: { tag: 'KEY_NAME' } } as const
const KEY_AND_JSON = { name: { tag: 'KEY_NAME' }, json: { tag: 'JSON', note: 'the key\'s summary' } } as const

/** The public-key answer of GET_PUBLIC_KEY, KEY_CREATE, KEY_ROTATE and KEY_IMPORT. */
const PUBLIC_KEY_ANSWER = message('public key answer', {
  name: { tag: 'KEY_NAME' },
  version: { tag: 'KEY_VERSION' },
  type: { tag: 'KEY_TYPE' },
  publicKey: { tag: 'PUBLIC_KEY' },
  versions: { tag: 'KEY_VERSIONS', optional: true, note: 'absent from a keyd that predates it' },
  bits: { tag: 'KEY_BITS' },
  ecPoint: { tag: 'EC_POINT', optional: true, note: 'EC keys' },
  rsaN: { tag: 'RSA_N', optional: true, note: 'RSA keys' },
  rsaE: { tag: 'RSA_E', optional: true, note: 'RSA keys' }
})

const SIGN_REQUEST = message('SIGN request', {
  name: { tag: 'KEY_NAME' },
  version: { tag: 'KEY_VERSION', optional: true },
  algorithm: { tag: 'ALGORITHM' },
  message: { tag: 'MESSAGE' },
  encoding: { tag: 'SIG_ENCODING', optional: true }
})
const SIGN_ANSWER = message('SIGN answer', { signature: { tag: 'SIGNATURE' }, version: { tag: 'KEY_VERSION' } })
const ERROR_ANSWER = message('ERROR answer', { code: { tag: 'ERROR_CODE' }, message: { tag: 'ERROR_MESSAGE' } })

/** Any message codec, whatever its fields (what the PROTOCOL.md generator reads). */
export interface AnyMessageCodec { readonly name: string, readonly fields: MessageSpec, readonly encode: (m: never) => Item[], readonly decode: (items: ItemMap) => unknown }

/** The request and answer codecs of one operation (ERROR has no request). */
export interface OpMessages { readonly request: AnyMessageCodec | null, readonly answer: AnyMessageCodec }

function op<R extends AnyMessageCodec | null, A extends AnyMessageCodec> (request: R, answer: A): { readonly request: R, readonly answer: A } {
  return { request, answer }
}

/** Every operation's messages, by opcode name (PROTOCOL.md's opcode table is generated from it). */
export const MESSAGES = {
  HELLO: op(message('HELLO request', { clientName: { tag: 'CLIENT_NAME' }, clientSecret: { tag: 'CLIENT_SECRET' } }),
    message('HELLO answer', { serverInfo: { tag: 'SERVER_INFO' } })),
  PING: op(message('PING request', { payload: { tag: 'PAYLOAD', optional: true, max: MAX_PING_PAYLOAD, note: `≤ ${MAX_PING_PAYLOAD} bytes` } }),
    message('PING answer', { payload: { tag: 'PAYLOAD', note: 'echoed' } })),
  GET_PUBLIC_KEY: op(message('GET_PUBLIC_KEY request', { name: { tag: 'KEY_NAME' }, version: { tag: 'KEY_VERSION', optional: true } }), PUBLIC_KEY_ANSWER),
  SIGN: op(SIGN_REQUEST, SIGN_ANSWER),
  SIGN_BATCH: op(message('SIGN_BATCH request', { entries: { tag: 'ENTRY', repeat: { min: 1, max: MAX_BATCH_ENTRIES }, note: 'each the items of one SIGN' } }),
    message('SIGN_BATCH answer', { entries: { tag: 'ENTRY', repeat: { min: 0, max: MAX_BATCH_ENTRIES }, note: 'one per request ENTRY, in order: SIGNATURE + KEY_VERSION, or ERROR_CODE + ERROR_MESSAGE' } })),
  GET_TICKET_KEYS: op(message('GET_TICKET_KEYS request', { rotationSeconds: { tag: 'TICKET_ROTATION_SECONDS' }, previous: { tag: 'TICKET_PREVIOUS', optional: true } }),
    message('GET_TICKET_KEYS answer', { rotationSeconds: { tag: 'TICKET_ROTATION_SECONDS' }, previous: { tag: 'TICKET_PREVIOUS' }, serverTime: { tag: 'SERVER_TIME' }, keySet: { tag: 'TICKET_KEY_SET' } })),
  KEY_CREATE: op(message('KEY_CREATE request', { name: { tag: 'KEY_NAME' }, type: { tag: 'KEY_TYPE' }, usage: { tag: 'USAGE' } }), PUBLIC_KEY_ANSWER),
  KEY_LIST: op(EMPTY, message('KEY_LIST answer', { json: { tag: 'JSON', note: 'array of key summaries' } })),
  KEY_ROTATE: op(message('KEY_ROTATE request', { name: { tag: 'KEY_NAME' }, signGraceSeconds: { tag: 'SIGN_GRACE_SECONDS', optional: true } }), PUBLIC_KEY_ANSWER),
  KEY_INFO: op(message('KEY_INFO request', KEY_NAME_ONLY), message('KEY_INFO answer', { name: { tag: 'KEY_NAME' }, json: { tag: 'JSON', note: 'the key\'s detail, every version' } })),
  KEY_DISABLE: op(message('KEY_DISABLE request', KEY_NAME_ONLY), message('KEY_DISABLE answer', KEY_AND_JSON)),
  KEY_ENABLE: op(message('KEY_ENABLE request', KEY_NAME_ONLY), message('KEY_ENABLE answer', KEY_AND_JSON)),
  KEY_DESTROY: op(message('KEY_DESTROY request', KEY_NAME_ONLY), message('KEY_DESTROY answer', KEY_AND_JSON)),
  KEY_IMPORT: op(message('KEY_IMPORT request', {
    name: { tag: 'KEY_NAME' },
    usage: { tag: 'USAGE' },
    privateKey: { tag: 'PRIVATE_KEY', optional: true, note: 'plain import' },
    wrappedAesKey: { tag: 'WRAPPED_AES_KEY', optional: true, note: 'wrapped import, with WRAPPED_PRIVATE_KEY' },
    wrappedPrivateKey: { tag: 'WRAPPED_PRIVATE_KEY', optional: true, note: 'wrapped import' }
  }, m => {
    if (m.privateKey === undefined && (m.wrappedAesKey === undefined || m.wrappedPrivateKey === undefined)) {
      throw new Refusal(ErrorCode.MISSING_ITEM, 'missing item PRIVATE_KEY, or WRAPPED_AES_KEY and WRAPPED_PRIVATE_KEY')
    }
  }), PUBLIC_KEY_ANSWER),
  STATUS: op(EMPTY, message('STATUS answer', { json: { tag: 'JSON' } })),
  UNSEAL: op(message('UNSEAL request', { share: { tag: 'SHARE' } }), message('UNSEAL answer', { json: { tag: 'JSON' } })),
  WRAPPING_KEY: op(EMPTY, message('WRAPPING_KEY answer', { publicKey: { tag: 'PUBLIC_KEY', note: 'RSA-3072, SPKI DER' }, bits: { tag: 'KEY_BITS' } })),
  KEY_ATTEST: op(message('KEY_ATTEST request', { name: { tag: 'KEY_NAME' }, version: { tag: 'KEY_VERSION', optional: true } }),
    message('KEY_ATTEST answer', { name: { tag: 'KEY_NAME' }, version: { tag: 'KEY_VERSION' }, statement: { tag: 'STATEMENT' } })),
  ATTESTATION_KEY: op(EMPTY, message('ATTESTATION_KEY answer', { publicKey: { tag: 'PUBLIC_KEY', note: 'Ed25519, SPKI DER' } })),
  BACKUP_EXPORT: op(message('BACKUP_EXPORT request', { json: { tag: 'JSON', note: 'start, or next chunk' } }),
    message('BACKUP_EXPORT answer', { json: { tag: 'JSON' }, payload: { tag: 'PAYLOAD', note: 'one chunk of the encrypted bundle' } })),
  BACKUP_RESTORE: op(message('BACKUP_RESTORE request', { json: { tag: 'JSON', note: 'chunk position, or commit' }, payload: { tag: 'PAYLOAD', optional: true, note: 'a chunk' } }),
    message('BACKUP_RESTORE answer', { json: { tag: 'JSON' } })),
  ERROR: op(null, ERROR_ANSWER)
} as const satisfies Record<OpName, OpMessages>

type Req<N extends Exclude<OpName, 'ERROR'>> = (typeof MESSAGES)[N]['request'] extends MessageCodec<infer S> ? MessageOf<S> : never
type Ans<N extends OpName> = (typeof MESSAGES)[N]['answer'] extends MessageCodec<infer S> ? MessageOf<S> : never

export type HelloRequest = Req<'HELLO'>
export type HelloResponse = Ans<'HELLO'>
export type PingRequest = Req<'PING'>
export type PingResponse = Ans<'PING'>
export type GetPublicKeyRequest = Req<'GET_PUBLIC_KEY'>
/** The answer of GET_PUBLIC_KEY, KEY_CREATE, KEY_ROTATE and KEY_IMPORT. */
export type PublicKeyResponse = Ans<'GET_PUBLIC_KEY'>
export type SignRequest = Req<'SIGN'>
export type SignResponse = Ans<'SIGN'>
export type GetTicketKeysRequest = Req<'GET_TICKET_KEYS'>
export type GetTicketKeysResponse = Ans<'GET_TICKET_KEYS'>
export type KeyCreateRequest = Req<'KEY_CREATE'>
export type KeyListResponse = Ans<'KEY_LIST'>
export type KeyRotateRequest = Req<'KEY_ROTATE'>
/** The request of KEY_INFO, KEY_DISABLE, KEY_ENABLE and KEY_DESTROY. */
export type KeyNameRequest = Req<'KEY_INFO'>
/** The answer of KEY_INFO, KEY_DISABLE, KEY_ENABLE and KEY_DESTROY. */
export type KeyJsonResponse = Ans<'KEY_INFO'>
export type KeyImportRequest = Req<'KEY_IMPORT'>
export type StatusResponse = Ans<'STATUS'>
export type UnsealRequest = Req<'UNSEAL'>
export type UnsealResponse = Ans<'UNSEAL'>
export type WrappingKeyResponse = Ans<'WRAPPING_KEY'>
export type KeyAttestRequest = Req<'KEY_ATTEST'>
export type KeyAttestResponse = Ans<'KEY_ATTEST'>
export type AttestationKeyResponse = Ans<'ATTESTATION_KEY'>
export type BackupExportRequest = Req<'BACKUP_EXPORT'>
export type BackupExportResponse = Ans<'BACKUP_EXPORT'>
export type BackupRestoreRequest = Req<'BACKUP_RESTORE'>
export type BackupRestoreResponse = Ans<'BACKUP_RESTORE'>
/** A wire error: the ERROR frame's items, or a refused SIGN_BATCH entry. */
export type ErrorResponse = Ans<'ERROR'>

/** No items: the request of KEY_LIST, STATUS, WRAPPING_KEY and ATTESTATION_KEY. */
export function encodeEmptyRequest (): Item[] { return [] }

export const { encode: encodeHelloRequest, decode: decodeHelloRequest } = MESSAGES.HELLO.request
export const { encode: encodeHelloResponse, decode: decodeHelloResponse } = MESSAGES.HELLO.answer
export const { encode: encodePingRequest, decode: decodePingRequest } = MESSAGES.PING.request
export const { encode: encodePingResponse, decode: decodePingResponse } = MESSAGES.PING.answer
export const { encode: encodeGetPublicKeyRequest, decode: decodeGetPublicKeyRequest } = MESSAGES.GET_PUBLIC_KEY.request
export const { encode: encodePublicKeyResponse, decode: decodePublicKeyResponse } = PUBLIC_KEY_ANSWER
export const { encode: encodeSignRequest, decode: decodeSignRequest } = SIGN_REQUEST
export const { encode: encodeSignResponse, decode: decodeSignResponse } = SIGN_ANSWER
export const { encode: encodeGetTicketKeysRequest, decode: decodeGetTicketKeysRequest } = MESSAGES.GET_TICKET_KEYS.request
export const { encode: encodeGetTicketKeysResponse, decode: decodeGetTicketKeysResponse } = MESSAGES.GET_TICKET_KEYS.answer
export const { encode: encodeKeyCreateRequest, decode: decodeKeyCreateRequest } = MESSAGES.KEY_CREATE.request
export const { encode: encodeKeyListResponse, decode: decodeKeyListResponse } = MESSAGES.KEY_LIST.answer
export const { encode: encodeKeyRotateRequest, decode: decodeKeyRotateRequest } = MESSAGES.KEY_ROTATE.request
export const { encode: encodeKeyNameRequest, decode: decodeKeyNameRequest } = MESSAGES.KEY_INFO.request
export const { encode: encodeKeyJsonResponse, decode: decodeKeyJsonResponse } = MESSAGES.KEY_INFO.answer
export const { encode: encodeKeyImportRequest, decode: decodeKeyImportRequest } = MESSAGES.KEY_IMPORT.request
export const { encode: encodeStatusResponse, decode: decodeStatusResponse } = MESSAGES.STATUS.answer
export const { encode: encodeUnsealRequest, decode: decodeUnsealRequest } = MESSAGES.UNSEAL.request
export const { encode: encodeUnsealResponse, decode: decodeUnsealResponse } = MESSAGES.UNSEAL.answer
export const { encode: encodeWrappingKeyResponse, decode: decodeWrappingKeyResponse } = MESSAGES.WRAPPING_KEY.answer
export const { encode: encodeKeyAttestRequest, decode: decodeKeyAttestRequest } = MESSAGES.KEY_ATTEST.request
export const { encode: encodeKeyAttestResponse, decode: decodeKeyAttestResponse } = MESSAGES.KEY_ATTEST.answer
export const { encode: encodeAttestationKeyResponse, decode: decodeAttestationKeyResponse } = MESSAGES.ATTESTATION_KEY.answer
export const { encode: encodeBackupExportRequest, decode: decodeBackupExportRequest } = MESSAGES.BACKUP_EXPORT.request
export const { encode: encodeBackupExportResponse, decode: decodeBackupExportResponse } = MESSAGES.BACKUP_EXPORT.answer
export const { encode: encodeBackupRestoreRequest, decode: decodeBackupRestoreRequest } = MESSAGES.BACKUP_RESTORE.request
export const { encode: encodeBackupRestoreResponse, decode: decodeBackupRestoreResponse } = MESSAGES.BACKUP_RESTORE.answer
export const { decode: decodeErrorResponse } = ERROR_ANSWER

/** The items of a wire error (an ERROR frame, a refused SIGN_BATCH entry); the message is cut to its bound. */
export function encodeErrorResponse (e: ErrorResponse): Item[] {
  return ERROR_ANSWER.encode({ code: e.code, message: truncateUtf8(e.message, TAGS.ERROR_MESSAGE.max) })
}

// SIGN_BATCH: its ENTRY values are themselves item lists, each a SIGN request or answer (or an error).

/** The items of a SIGN_BATCH: one ENTRY per SIGN request. */
export function encodeSignBatchRequest (entries: SignRequest[]): Item[] {
  return MESSAGES.SIGN_BATCH.request.encode({ entries: entries.map(e => encodeItems(encodeSignRequest(e))) })
}

/**
 * The entries of a SIGN_BATCH, each decoded on its own: a malformed entry (a missing item, a
 * wrong-size one) is that entry's Refusal, never the whole frame's.
 * @throws Refusal for the frame: MISSING_ITEM (no ENTRY), BAD_FRAME (over MAX_BATCH_ENTRIES, or an ENTRY whose items run past its end)
 */
export function decodeSignBatchRequest (items: ItemMap): Array<SignRequest | Refusal> {
  return nestedEntries(MESSAGES.SIGN_BATCH.request.decode(items).entries).map(entry => {
    try {
      return decodeSignRequest(entry)
    } catch (err) {
      if (err instanceof Refusal) return err
      throw err
    }
  })
}

/** The items of a SIGN_BATCH answer: one ENTRY per result, a signature or a wire error. */
export function encodeSignBatchResponse (results: Array<SignResponse | ErrorResponse>): Item[] {
  return MESSAGES.SIGN_BATCH.answer.encode({
    entries: results.map(r => encodeItems('signature' in r ? encodeSignResponse(r) : encodeErrorResponse(r)))
  })
}

/** The results of a SIGN_BATCH answer, in order. @throws Refusal BAD_FRAME, MISSING_ITEM for a malformed answer */
export function decodeSignBatchResponse (items: ItemMap): Array<SignResponse | ErrorResponse> {
  return nestedEntries(MESSAGES.SIGN_BATCH.answer.decode(items).entries).map(entry =>
    entry.has(Tag.ERROR_CODE) ? decodeErrorResponse(entry) : decodeSignResponse(entry))
}

function nestedEntries (raw: Buffer[]): ItemMap[] {
  return raw.map(v => {
    const inner = parseItems(v)
    if (inner === null) throw new Refusal(ErrorCode.BAD_FRAME, 'an ENTRY holds items that run past its end')
    return inner
  })
}
