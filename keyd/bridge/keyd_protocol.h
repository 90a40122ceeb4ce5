/* keyd_protocol.h: GENERATED from keyd/protocol/spec.ts by `npm run generate`. Do not edit. */
#ifndef KEYD_PROTOCOL_H
#define KEYD_PROTOCOL_H
#define KEYD_PROTOCOL_VERSION 1
#define KEYD_HEADER_SIZE 12
#define KEYD_MAX_FRAME 1048576
/* X(value, NAME, "one-line meaning") */
#define KEYD_OPS(X) \
  X(0x01, HELLO, "authenticate the connection as a named client") \
  X(0x02, PING, "echo a payload back (liveness)") \
  X(0x03, GET_PUBLIC_KEY, "the public key of a key version") \
  X(0x04, SIGN, "sign a whole message with a key version") \
  X(0x05, SIGN_BATCH, "several SIGN requests in one frame, answered entry by entry") \
  X(0x06, GET_TICKET_KEYS, "TLS session-ticket keys derived for the current epochs") \
  X(0x20, KEY_CREATE, "generate a new key") \
  X(0x21, KEY_LIST, "a summary of every key (public data only)") \
  X(0x22, KEY_ROTATE, "generate a new current version of a key") \
  X(0x23, KEY_INFO, "one key with every version (public data only)") \
  X(0x24, KEY_DISABLE, "stop a key from signing") \
  X(0x25, KEY_ENABLE, "let a disabled key sign again") \
  X(0x26, KEY_DESTROY, "delete a key's private keys for good, keeping a tombstone") \
  X(0x27, KEY_IMPORT, "store an existing private key as version 1 of a new key") \
  X(0x28, STATUS, "whether keyd is sealed, and how many shares and keys it has") \
  X(0x29, UNSEAL, "hand keyd one Shamir share of the master key") \
  X(0x2A, WRAPPING_KEY, "keyd's RSA-3072 wrapping public key, for wrapped imports") \
  X(0x2B, KEY_ATTEST, "a statement about one key version, signed by keyd's attestation key") \
  X(0x2C, ATTESTATION_KEY, "keyd's Ed25519 attestation public key") \
  X(0x2E, BACKUP_EXPORT, "start a backup, or fetch its next chunk of encrypted bundle") \
  X(0x2F, BACKUP_RESTORE, "upload a chunk of a backup bundle, or commit the restore") \
  X(0xFF, ERROR, "the answer to a failed request")
#define KEYD_TAGS(X) \
  X(0x01, CLIENT_NAME, "client identity, in HELLO") \
  X(0x02, CLIENT_SECRET, "client secret, in HELLO") \
  X(0x03, KEY_NAME, "key name") \
  X(0x04, KEY_VERSION, "key version (1, 2, ...); absent or 0 = the current version") \
  X(0x05, KEY_TYPE, "key type") \
  X(0x06, ALGORITHM, "signature algorithm") \
  X(0x07, MESSAGE, "the whole message to sign (never a pre-computed digest)") \
  X(0x08, SIGNATURE, "the signature") \
  X(0x09, PUBLIC_KEY, "SubjectPublicKeyInfo, DER") \
  X(0x0A, EC_POINT, "EC public point, uncompressed (0x04 || X || Y)") \
  X(0x0B, RSA_N, "RSA modulus, big-endian, no leading zero") \
  X(0x0C, RSA_E, "RSA public exponent, big-endian") \
  X(0x0D, KEY_BITS, "key size in bits") \
  X(0x0E, ERROR_CODE, "wire error code") \
  X(0x0F, ERROR_MESSAGE, "human-readable error, never holding a secret") \
  X(0x10, PAYLOAD, "opaque data (PING echo, backup chunk)") \
  X(0x11, SIG_ENCODING, "ECDSA output: 0 = DER (default, TLS), 1 = IEEE P1363 r || s (JWS)") \
  X(0x12, USAGE, "key usage: tls-server, token-sign or cert-sign") \
  X(0x13, SERVER_INFO, "JSON object { name, version, devMode }, in the HELLO answer") \
  X(0x14, JSON, "a JSON document (admin operations)") \
  X(0x15, ENTRY, "one nested item list inside SIGN_BATCH (a SIGN request or its answer)") \
  X(0x16, TICKET_ROTATION_SECONDS, "seconds per ticket-key epoch, in GET_TICKET_KEYS") \
  X(0x17, TICKET_PREVIOUS, "keys before the current one still answered, decrypt only (absent = 1)") \
  X(0x18, TICKET_KEY_SET, "the ticket key records, oldest first") \
  X(0x19, SERVER_TIME, "keyd's clock when it answered, unix milliseconds") \
  X(0x20, SHARE, "one Shamir share of the master key, in UNSEAL") \
  X(0x21, SIGN_GRACE_SECONDS, "seconds older versions may still sign after a rotation; 0xFFFFFFFF = no limit") \
  X(0x22, PRIVATE_KEY, "KEY_IMPORT: a PKCS#8 private key, DER") \
  X(0x23, WRAPPED_AES_KEY, "KEY_IMPORT: RSA-OAEP ciphertext of a 32-byte AES-256 key under the wrapping key") \
  X(0x24, WRAPPED_PRIVATE_KEY, "KEY_IMPORT: the PKCS#8 DER private key under AES key wrap with padding") \
  X(0x25, STATEMENT, "KEY_ATTEST answer: the signed attestation document, JSON") \
  X(0xFF, KEY_VERSIONS, "every version of the key, oldest first: u32 version || u64 creation time (unix ms)")
#define KEYD_ERRORS(X) \
  X(1, BAD_FRAME, "the payload did not parse, flags are non-zero, or an item has the wrong size") \
  X(2, UNSUPPORTED_VERSION, "the frame version is not 1") \
  X(3, FRAME_TOO_LARGE, "the frame is over the maximum size; the connection is closed") \
  X(4, UNKNOWN_OPCODE, "the opcode is not defined") \
  X(5, NOT_AUTHENTICATED, "a request came before a successful HELLO") \
  X(6, UNKNOWN_CLIENT, "HELLO with an unknown name or a wrong secret; the connection is closed") \
  X(7, FORBIDDEN, "the client lacks the right for this operation") \
  X(8, MISSING_ITEM, "a required item is absent") \
  X(9, KEY_NOT_FOUND, "no such key or version") \
  X(10, KEY_EXISTS, "a key of that name exists") \
  X(11, BAD_ALGORITHM, "the algorithm is unknown or does not fit the key type") \
  X(12, POLICY_DENIED_MESSAGE, "the message shape is not allowed by the key's usage") \
  X(13, BAD_KEY_NAME, "the key name does not match the allowed pattern") \
  X(14, BAD_KEY_TYPE, "unknown key type or usage") \
  X(15, INTERNAL, "keyd failed; the message says why (never a secret)") \
  X(16, OVERLOADED, "too many requests in flight, or too many unanswered bytes, on this connection or in keyd as a whole (a partial frame past the bound: sent with request id 0, then the connection is closed)") \
  X(17, AUDIT_UNAVAILABLE, "the audit log cannot be written and keyd is fail-closed: nothing is signed") \
  X(18, SEALED, "keyd is sealed: only HELLO, PING, STATUS and UNSEAL are answered") \
  X(19, BAD_SHARE, "an UNSEAL share is malformed, mistyped, or does not rebuild the master key") \
  X(20, RATE_LIMITED, "the key's or the client's rate limit is exhausted; retry later") \
  X(21, KEY_DISABLED, "the key is disabled (KEY_ENABLE to sign again)") \
  X(22, KEY_DESTROYED, "the key was destroyed: its private keys are gone and its name is not reused") \
  X(23, KEY_VERSION_RETIRED, "an older version past the key's rotation grace; it still verifies") \
  X(24, BAD_KEY_MATERIAL, "KEY_IMPORT: not a usable private key, or a wrapped key that does not unwrap") \
  X(25, NOT_SUPPORTED, "the keystore backend (or this keyd) does not offer the operation") \
  X(26, USAGE_FORBIDDEN, "the client's rights do not include this key or usage (keyd/clients.json `usages`, `keys`); audited and counted as an access violation") \
  X(27, TOKEN_TIMEOUT, "the PKCS#11 token did not answer within its deadline (SIGN: no signature is returned; a key operation may still complete in the token later: KEY_LIST / KEY_INFO tell)") \
  X(30, BACKUP_MALFORMED, "not a keyedge backup bundle, or its contents are not a backup") \
  X(31, BACKUP_TRUNCATED, "the bundle ends before the length its header declares") \
  X(32, BACKUP_WRONG_PASSPHRASE, "the passphrase does not give this bundle's key") \
  X(33, BACKUP_BAD_SHARES, "a backup share is malformed, or the shares do not rebuild the bundle's key") \
  X(34, BACKUP_TAMPERED, "the key is right but authentication fails: the bundle was modified") \
  X(35, RESTORE_NOT_EMPTY, "BACKUP_RESTORE into a keyd that holds keys") \
  X(36, BACKUP_BAD_REQUEST, "bad BACKUP_* parameters")
enum keyd_op { KEYD_OP_HELLO = 0x01, KEYD_OP_PING = 0x02, KEYD_OP_GET_PUBLIC_KEY = 0x03, KEYD_OP_SIGN = 0x04, KEYD_OP_SIGN_BATCH = 0x05, KEYD_OP_GET_TICKET_KEYS = 0x06, KEYD_OP_KEY_CREATE = 0x20, KEYD_OP_KEY_LIST = 0x21, KEYD_OP_KEY_ROTATE = 0x22, KEYD_OP_KEY_INFO = 0x23, KEYD_OP_KEY_DISABLE = 0x24, KEYD_OP_KEY_ENABLE = 0x25, KEYD_OP_KEY_DESTROY = 0x26, KEYD_OP_KEY_IMPORT = 0x27, KEYD_OP_STATUS = 0x28, KEYD_OP_UNSEAL = 0x29, KEYD_OP_WRAPPING_KEY = 0x2A, KEYD_OP_KEY_ATTEST = 0x2B, KEYD_OP_ATTESTATION_KEY = 0x2C, KEYD_OP_BACKUP_EXPORT = 0x2E, KEYD_OP_BACKUP_RESTORE = 0x2F, KEYD_OP_ERROR = 0xFF };
enum keyd_tag { KEYD_TAG_CLIENT_NAME = 0x01, KEYD_TAG_CLIENT_SECRET = 0x02, KEYD_TAG_KEY_NAME = 0x03, KEYD_TAG_KEY_VERSION = 0x04, KEYD_TAG_KEY_TYPE = 0x05, KEYD_TAG_ALGORITHM = 0x06, KEYD_TAG_MESSAGE = 0x07, KEYD_TAG_SIGNATURE = 0x08, KEYD_TAG_PUBLIC_KEY = 0x09, KEYD_TAG_EC_POINT = 0x0A, KEYD_TAG_RSA_N = 0x0B, KEYD_TAG_RSA_E = 0x0C, KEYD_TAG_KEY_BITS = 0x0D, KEYD_TAG_ERROR_CODE = 0x0E, KEYD_TAG_ERROR_MESSAGE = 0x0F, KEYD_TAG_PAYLOAD = 0x10, KEYD_TAG_SIG_ENCODING = 0x11, KEYD_TAG_USAGE = 0x12, KEYD_TAG_SERVER_INFO = 0x13, KEYD_TAG_JSON = 0x14, KEYD_TAG_ENTRY = 0x15, KEYD_TAG_TICKET_ROTATION_SECONDS = 0x16, KEYD_TAG_TICKET_PREVIOUS = 0x17, KEYD_TAG_TICKET_KEY_SET = 0x18, KEYD_TAG_SERVER_TIME = 0x19, KEYD_TAG_SHARE = 0x20, KEYD_TAG_SIGN_GRACE_SECONDS = 0x21, KEYD_TAG_PRIVATE_KEY = 0x22, KEYD_TAG_WRAPPED_AES_KEY = 0x23, KEYD_TAG_WRAPPED_PRIVATE_KEY = 0x24, KEYD_TAG_STATEMENT = 0x25, KEYD_TAG_KEY_VERSIONS = 0xFF };
enum keyd_err { KEYD_ERR_BAD_FRAME = 1, KEYD_ERR_UNSUPPORTED_VERSION = 2, KEYD_ERR_FRAME_TOO_LARGE = 3, KEYD_ERR_UNKNOWN_OPCODE = 4, KEYD_ERR_NOT_AUTHENTICATED = 5, KEYD_ERR_UNKNOWN_CLIENT = 6, KEYD_ERR_FORBIDDEN = 7, KEYD_ERR_MISSING_ITEM = 8, KEYD_ERR_KEY_NOT_FOUND = 9, KEYD_ERR_KEY_EXISTS = 10, KEYD_ERR_BAD_ALGORITHM = 11, KEYD_ERR_POLICY_DENIED_MESSAGE = 12, KEYD_ERR_BAD_KEY_NAME = 13, KEYD_ERR_BAD_KEY_TYPE = 14, KEYD_ERR_INTERNAL = 15, KEYD_ERR_OVERLOADED = 16, KEYD_ERR_AUDIT_UNAVAILABLE = 17, KEYD_ERR_SEALED = 18, KEYD_ERR_BAD_SHARE = 19, KEYD_ERR_RATE_LIMITED = 20, KEYD_ERR_KEY_DISABLED = 21, KEYD_ERR_KEY_DESTROYED = 22, KEYD_ERR_KEY_VERSION_RETIRED = 23, KEYD_ERR_BAD_KEY_MATERIAL = 24, KEYD_ERR_NOT_SUPPORTED = 25, KEYD_ERR_USAGE_FORBIDDEN = 26, KEYD_ERR_TOKEN_TIMEOUT = 27, KEYD_ERR_BACKUP_MALFORMED = 30, KEYD_ERR_BACKUP_TRUNCATED = 31, KEYD_ERR_BACKUP_WRONG_PASSPHRASE = 32, KEYD_ERR_BACKUP_BAD_SHARES = 33, KEYD_ERR_BACKUP_TAMPERED = 34, KEYD_ERR_RESTORE_NOT_EMPTY = 35, KEYD_ERR_BACKUP_BAD_REQUEST = 36 };
#endif
