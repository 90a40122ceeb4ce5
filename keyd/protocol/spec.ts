// The keyd wire contract, declared once: every opcode, item tag and wire error code with its number,
// its one-line meaning and, for tags, the size rule a receiver checks before using the value.
// codec.ts derives Op/Tag/ErrorCode from here; `npm run generate` writes keyd/bridge/keyd_protocol.h
// and the tables of PROTOCOL.md from here, and test/keyd/protocol-generated.test.ts fails when either
// is stale. Numbers are never reused or renumbered. `meaning` is one line of ASCII (it becomes a C
// string literal and an OpenSSL error reason); `detail` is Markdown for PROTOCOL.md only.

export const PROTOCOL_VERSION = 1
/** Bytes before the payload: length (4), version (1), opcode (1), flags (2), request id (4). */
export const HEADER_SIZE = 12
/** Largest frame (length field + 4) a receiver accepts by default. */
export const DEFAULT_MAX_FRAME = 1024 * 1024
/** A successful answer's opcode is the request's opcode with this bit set. */
export const RESPONSE_BIT = 0x80

export interface OpSpec {
  readonly value: number
  readonly meaning: string
  readonly detail?: string
}

/** How an item's value is laid out: integers have an exact size, strings and byte strings a bound. */
export type ItemKind = 'u8' | 'u16' | 'u32' | 'u64' | 'str' | 'bytes'

export interface TagSpec {
  readonly value: number
  readonly kind: ItemKind
  /** str / bytes: most bytes the value may hold; absent = bounded only by the frame size. */
  readonly max?: number
  /** Integers: the smallest and largest value allowed; outside it the item is BAD_FRAME. */
  readonly range?: readonly [min: number, max: number]
  /** bytes: the value is a whole number (at least one) of records of this many bytes. */
  readonly record?: number
  /** Every occurrence counts, in order (otherwise the first one wins). */
  readonly repeatable?: boolean
  /** The value is a secret: never logged, audited or put in an error message. */
  readonly secret?: boolean
  readonly meaning: string
  readonly detail?: string
}

export interface ErrorSpec {
  readonly value: number
  readonly meaning: string
  readonly detail?: string
}

/** Exact byte size of each integer kind (big-endian, unsigned). */
export const INT_SIZE = { u8: 1, u16: 2, u32: 4, u64: 8 } as const

export const OPS = {
  HELLO: { value: 0x01, meaning: 'authenticate the connection as a named client' },
  PING: { value: 0x02, meaning: 'echo a payload back (liveness)' },
  GET_PUBLIC_KEY: { value: 0x03, meaning: 'the public key of a key version' },
  SIGN: { value: 0x04, meaning: 'sign a whole message with a key version' },
  SIGN_BATCH: { value: 0x05, meaning: 'several SIGN requests in one frame, answered entry by entry', detail: 'see "SIGN_BATCH"' },
  GET_TICKET_KEYS: { value: 0x06, meaning: 'TLS session-ticket keys derived for the current epochs', detail: 'see "GET_TICKET_KEYS"' },
  KEY_CREATE: { value: 0x20, meaning: 'generate a new key' },
  KEY_LIST: { value: 0x21, meaning: 'a summary of every key (public data only)' },
  KEY_ROTATE: { value: 0x22, meaning: 'generate a new current version of a key' },
  KEY_INFO: { value: 0x23, meaning: 'one key with every version (public data only)', detail: 'answers for a destroyed key\'s tombstone too' },
  KEY_DISABLE: { value: 0x24, meaning: 'stop a key from signing' },
  KEY_ENABLE: { value: 0x25, meaning: 'let a disabled key sign again' },
  KEY_DESTROY: { value: 0x26, meaning: 'delete a key\'s private keys for good, keeping a tombstone' },
  KEY_IMPORT: { value: 0x27, meaning: 'store an existing private key as version 1 of a new key' },
  STATUS: { value: 0x28, meaning: 'whether keyd is sealed, and how many shares and keys it has', detail: 'JSON `{ sealed, shares, threshold, keys, devMode }`' },
  UNSEAL: { value: 0x29, meaning: 'hand keyd one Shamir share of the master key', detail: 'SHARE in text form `ks1-<x>-<hex>-<checksum>`; answers JSON as STATUS; keyd unseals when `threshold` distinct shares are in' },
  WRAPPING_KEY: { value: 0x2a, meaning: 'keyd\'s RSA-3072 wrapping public key, for wrapped imports' },
  KEY_ATTEST: { value: 0x2b, meaning: 'a statement about one key version, signed by keyd\'s attestation key' },
  ATTESTATION_KEY: { value: 0x2c, meaning: 'keyd\'s Ed25519 attestation public key' },
  BACKUP_EXPORT: { value: 0x2e, meaning: 'start a backup, or fetch its next chunk of encrypted bundle', detail: 'see "Backup and restore"' },
  BACKUP_RESTORE: { value: 0x2f, meaning: 'upload a chunk of a backup bundle, or commit the restore', detail: 'see "Backup and restore"' },
  ERROR: { value: 0xff, meaning: 'the answer to a failed request' }
} as const satisfies Record<string, OpSpec>

export const TAGS = {
  CLIENT_NAME: { value: 0x01, kind: 'str', max: 64, meaning: 'client identity, in HELLO' },
  CLIENT_SECRET: { value: 0x02, kind: 'bytes', max: 1024, secret: true, meaning: 'client secret, in HELLO', detail: 'the raw bytes of the client\'s secret file, trimmed of trailing whitespace' },
  KEY_NAME: { value: 0x03, kind: 'str', max: 64, meaning: 'key name', detail: '`[a-z0-9][a-z0-9._-]{0,63}`' },
  KEY_VERSION: { value: 0x04, kind: 'u32', meaning: 'key version (1, 2, ...); absent or 0 = the current version' },
  KEY_TYPE: { value: 0x05, kind: 'str', max: 32, meaning: 'key type', detail: '`ec-p256`, `ec-p384`, `rsa-2048`, `rsa-3072`, `rsa-4096`, `ed25519`' },
  ALGORITHM: { value: 0x06, kind: 'u16', meaning: 'signature algorithm', detail: 'table "Signature algorithms"' },
  MESSAGE: { value: 0x07, kind: 'bytes', meaning: 'the whole message to sign (never a pre-computed digest)' },
  SIGNATURE: { value: 0x08, kind: 'bytes', max: 1024, meaning: 'the signature' },
  PUBLIC_KEY: { value: 0x09, kind: 'bytes', max: 4096, meaning: 'SubjectPublicKeyInfo, DER' },
  EC_POINT: { value: 0x0a, kind: 'bytes', max: 133, meaning: 'EC public point, uncompressed (0x04 || X || Y)' },
  RSA_N: { value: 0x0b, kind: 'bytes', max: 1024, meaning: 'RSA modulus, big-endian, no leading zero' },
  RSA_E: { value: 0x0c, kind: 'bytes', max: 16, meaning: 'RSA public exponent, big-endian' },
  KEY_BITS: { value: 0x0d, kind: 'u32', meaning: 'key size in bits' },
  ERROR_CODE: { value: 0x0e, kind: 'u16', meaning: 'wire error code', detail: 'table "Error codes"' },
  ERROR_MESSAGE: { value: 0x0f, kind: 'str', max: 4096, meaning: 'human-readable error, never holding a secret' },
  PAYLOAD: { value: 0x10, kind: 'bytes', meaning: 'opaque data (PING echo, backup chunk)' },
  SIG_ENCODING: { value: 0x11, kind: 'u8', range: [0, 1], meaning: 'ECDSA output: 0 = DER (default, TLS), 1 = IEEE P1363 r || s (JWS)' },
  USAGE: { value: 0x12, kind: 'str', max: 32, meaning: 'key usage: tls-server, token-sign or cert-sign', detail: 'one usage per key' },
  SERVER_INFO: { value: 0x13, kind: 'str', max: 1024, meaning: 'JSON object { name, version, devMode }, in the HELLO answer' },
  JSON: { value: 0x14, kind: 'str', meaning: 'a JSON document (admin operations)' },
  ENTRY: { value: 0x15, kind: 'bytes', repeatable: true, meaning: 'one nested item list inside SIGN_BATCH (a SIGN request or its answer)' },
  TICKET_ROTATION_SECONDS: { value: 0x16, kind: 'u32', range: [10, 604800], meaning: 'seconds per ticket-key epoch, in GET_TICKET_KEYS' },
  TICKET_PREVIOUS: { value: 0x17, kind: 'u32', range: [0, 48], meaning: 'keys before the current one still answered, decrypt only (absent = 1)' },
  TICKET_KEY_SET: { value: 0x18, kind: 'bytes', record: 80, secret: true, meaning: 'the ticket key records, oldest first', detail: 'see "GET_TICKET_KEYS"' },
  SERVER_TIME: { value: 0x19, kind: 'u64', meaning: 'keyd\'s clock when it answered, unix milliseconds' },
  SHARE: { value: 0x20, kind: 'str', max: 1024, secret: true, meaning: 'one Shamir share of the master key, in UNSEAL' },
  SIGN_GRACE_SECONDS: { value: 0x21, kind: 'u32', meaning: 'seconds older versions may still sign after a rotation; 0xFFFFFFFF = no limit', detail: 'KEY_ROTATE; absent = keep the key\'s setting' },
  PRIVATE_KEY: { value: 0x22, kind: 'bytes', max: 16384, secret: true, meaning: 'KEY_IMPORT: a PKCS#8 private key, DER', detail: 'never logged or audited' },
  WRAPPED_AES_KEY: { value: 0x23, kind: 'bytes', max: 1024, meaning: 'KEY_IMPORT: RSA-OAEP ciphertext of a 32-byte AES-256 key under the wrapping key', detail: 'RSA-OAEP with SHA-256, MGF1 SHA-256, no label' },
  WRAPPED_PRIVATE_KEY: { value: 0x24, kind: 'bytes', max: 16392, meaning: 'KEY_IMPORT: the PKCS#8 DER private key under AES key wrap with padding', detail: 'RFC 5649, with the AES key of WRAPPED_AES_KEY' },
  STATEMENT: { value: 0x25, kind: 'str', max: 65536, meaning: 'KEY_ATTEST answer: the signed attestation document, JSON', detail: 'see "Key lifecycle"' },
  KEY_VERSIONS: { value: 0xff, kind: 'bytes', record: 12, meaning: 'every version of the key, oldest first: u32 version || u64 creation time (unix ms)', detail: 'in GET_PUBLIC_KEY, KEY_CREATE, KEY_ROTATE and KEY_IMPORT answers (see below)' }
} as const satisfies Record<string, TagSpec>

/** Tag ranges held back for future use (documented in PROTOCOL.md, absent from the C header). */
export const RESERVED_TAGS = [
  { from: 0x1a, to: 0x1f, meaning: 'reserved for ticket keys' },
  { from: 0x26, to: 0x2f, meaning: 'reserved for keyd custody operations' }
] as const

export const ERRORS = {
  BAD_FRAME: { value: 1, meaning: 'the payload did not parse, flags are non-zero, or an item has the wrong size' },
  UNSUPPORTED_VERSION: { value: 2, meaning: 'the frame version is not 1' },
  FRAME_TOO_LARGE: { value: 3, meaning: 'the frame is over the maximum size; the connection is closed' },
  UNKNOWN_OPCODE: { value: 4, meaning: 'the opcode is not defined' },
  NOT_AUTHENTICATED: { value: 5, meaning: 'a request came before a successful HELLO' },
  UNKNOWN_CLIENT: { value: 6, meaning: 'HELLO with an unknown name or a wrong secret; the connection is closed' },
  FORBIDDEN: { value: 7, meaning: 'the client lacks the right for this operation' },
  MISSING_ITEM: { value: 8, meaning: 'a required item is absent' },
  KEY_NOT_FOUND: { value: 9, meaning: 'no such key or version' },
  KEY_EXISTS: { value: 10, meaning: 'a key of that name exists' },
  BAD_ALGORITHM: { value: 11, meaning: 'the algorithm is unknown or does not fit the key type' },
  POLICY_DENIED_MESSAGE: { value: 12, meaning: 'the message shape is not allowed by the key\'s usage' },
  BAD_KEY_NAME: { value: 13, meaning: 'the key name does not match the allowed pattern' },
  BAD_KEY_TYPE: { value: 14, meaning: 'unknown key type or usage' },
  INTERNAL: { value: 15, meaning: 'keyd failed; the message says why (never a secret)' },
  OVERLOADED: { value: 16, meaning: 'too many requests in flight, or too many unanswered bytes, on this connection or in keyd as a whole (a partial frame past the bound: sent with request id 0, then the connection is closed)' },
  AUDIT_UNAVAILABLE: { value: 17, meaning: 'the audit log cannot be written and keyd is fail-closed: nothing is signed' },
  SEALED: { value: 18, meaning: 'keyd is sealed: only HELLO, PING, STATUS and UNSEAL are answered' },
  BAD_SHARE: { value: 19, meaning: 'an UNSEAL share is malformed, mistyped, or does not rebuild the master key', detail: 'all shares received so far are discarded' },
  RATE_LIMITED: { value: 20, meaning: 'the key\'s or the client\'s rate limit is exhausted; retry later', detail: 'token buckets of keyd/policy.json' },
  KEY_DISABLED: { value: 21, meaning: 'the key is disabled (KEY_ENABLE to sign again)' },
  KEY_DESTROYED: { value: 22, meaning: 'the key was destroyed: its private keys are gone and its name is not reused' },
  KEY_VERSION_RETIRED: { value: 23, meaning: 'an older version past the key\'s rotation grace; it still verifies' },
  BAD_KEY_MATERIAL: { value: 24, meaning: 'KEY_IMPORT: not a usable private key, or a wrapped key that does not unwrap', detail: 'not PKCS#8, a key type keyd does not hold, or a failed sign/verify check' },
  NOT_SUPPORTED: { value: 25, meaning: 'the keystore backend (or this keyd) does not offer the operation' },
  USAGE_FORBIDDEN: { value: 26, meaning: 'the client\'s rights do not include this key or usage (keyd/clients.json `usages`, `keys`); audited and counted as an access violation' },
  TOKEN_TIMEOUT: { value: 27, meaning: 'the PKCS#11 token did not answer within its deadline (SIGN: no signature is returned; a key operation may still complete in the token later: KEY_LIST / KEY_INFO tell)' },
  BACKUP_MALFORMED: { value: 30, meaning: 'not a keyedge backup bundle, or its contents are not a backup', detail: 'another format version, a bad header field, trailing bytes, or contents that decrypt but hold a bad key entry or policy' },
  BACKUP_TRUNCATED: { value: 31, meaning: 'the bundle ends before the length its header declares' },
  BACKUP_WRONG_PASSPHRASE: { value: 32, meaning: 'the passphrase does not give this bundle\'s key', detail: 'checked against the header\'s key check value' },
  BACKUP_BAD_SHARES: { value: 33, meaning: 'a backup share is malformed, or the shares do not rebuild the bundle\'s key', detail: 'a mistyped share (checksum), fewer distinct shares than the threshold, or shares of another bundle' },
  BACKUP_TAMPERED: { value: 34, meaning: 'the key is right but authentication fails: the bundle was modified', detail: 'AES-GCM authentication of the header or the body' },
  RESTORE_NOT_EMPTY: { value: 35, meaning: 'BACKUP_RESTORE into a keyd that holds keys' },
  BACKUP_BAD_REQUEST: { value: 36, meaning: 'bad BACKUP_* parameters', detail: 'unknown or expired transfer, chunk out of order or past the size, too many transfers, passphrase under 12 characters, bad share counts' }
} as const satisfies Record<string, ErrorSpec>

/** Error code ranges held back for future use. */
export const RESERVED_ERRORS = [
  { from: 28, to: 29, meaning: 'reserved for the custody operations' }
] as const

export type OpName = keyof typeof OPS
export type TagName = keyof typeof TAGS
export type ErrorName = keyof typeof ERRORS

type Values<S extends Record<string, { readonly value: number }>> = { readonly [K in keyof S]: S[K]['value'] }

function values<S extends Record<string, { readonly value: number }>> (spec: S): Values<S> {
  return Object.freeze(Object.fromEntries(Object.entries(spec).map(([name, s]) => [name, s.value]))) as Values<S>
}

/** Opcode numbers by name. */
export const Op = values(OPS)
/** Item tag numbers by name. */
export const Tag = values(TAGS)
/** Wire error code numbers by name. */
export const ErrorCode = values(ERRORS)

function byValue<S extends Record<string, { readonly value: number }>> (spec: S): Map<number, keyof S & string> {
  return new Map(Object.entries(spec).map(([name, s]) => [s.value, name as keyof S & string]))
}
const opNames = byValue(OPS)
const tagNames = byValue(TAGS)
const errorNames = byValue(ERRORS)

/** Name of an opcode, or its hex value. */
export function opName (opcode: number): string {
  return opNames.get(opcode) ?? `0x${opcode.toString(16)}`
}

/** Name of an item tag, or its hex value. */
export function tagName (tag: number): string {
  return tagNames.get(tag) ?? `0x${tag.toString(16).padStart(2, '0')}`
}

/** Name of a wire error code, or `UNKNOWN_<n>`. */
export function errorCodeName (code: number): string {
  return errorNames.get(code) ?? `UNKNOWN_${code}`
}

const errorValues = new Map<string, number>(Object.entries(ERRORS).map(([name, s]) => [name, s.value]))

/** The wire error code named `name` (e.g. `BACKUP_TAMPERED`), or undefined. */
export function errorCodeOf (name: string): number | undefined {
  return errorValues.get(name)
}

/** The spec of a known tag by number. */
export function tagSpec (tag: number): (TagSpec & { name: TagName }) | undefined {
  const name = tagNames.get(tag)
  return name === undefined ? undefined : { name, ...TAGS[name] }
}
