/* keyd_protocol.h: GENERATED from keyd/protocol/spec.ts by `npm run generate`. Do not edit. */
#ifndef KEYD_PROTOCOL_H
#define KEYD_PROTOCOL_H
#define KEYD_PROTOCOL_VERSION 1
#define KEYD_HEADER_SIZE 12
#define KEYD_MAX_FRAME 1048576
/* X(value, NAME, "one-line meaning") */
#define KEYD_OPS(X) \
  X(0x01, HELLO, "authenticate: CLIENT_NAME and CLIENT_SECRET") \
  X(0x02, PING, "echo PAYLOAD") \
  X(0x03, GET_PUBLIC_KEY, "public part of a key version") \
  X(0x04, SIGN, "sign MESSAGE with a key under ALGORITHM") \
  X(0x05, SIGN_BATCH, "up to 64 SIGN requests in one frame") \
  X(0x06, GET_TICKET_KEYS, "the TLS session ticket keys of the current epochs") \
  X(0x20, KEY_CREATE, "generate a key") \
  X(0x21, KEY_LIST, "summaries of every key") \
  X(0x22, KEY_ROTATE, "new version of a key") \
  X(0x23, KEY_INFO, "detail of a key, every version") \
  X(0x24, KEY_DISABLE, "stop a key from signing") \
  X(0x25, KEY_ENABLE, "let a disabled key sign again") \
  X(0x26, KEY_DESTROY, "destroy a key's private keys for good") \
  X(0x27, KEY_IMPORT, "import a PKCS#8 key, plain or wrapped") \
  X(0x28, STATUS, "sealed state and key count") \
  X(0x29, UNSEAL, "one Shamir share of the master key") \
  X(0x2a, WRAPPING_KEY, "keyd's RSA-3072 key wrapping public key") \
  X(0x2b, KEY_ATTEST, "signed attestation statement for a key version") \
  X(0x2c, ATTESTATION_KEY, "keyd's Ed25519 attestation public key") \
  X(0x2e, BACKUP_EXPORT, "one chunk of an encrypted backup bundle") \
  X(0x2f, BACKUP_RESTORE, "one chunk of a backup bundle to restore, or commit") \
  X(0xff, ERROR, "the request failed: ERROR_CODE and ERROR_MESSAGE")
#define KEYD_TAGS(X) \
  X(0x01, CLIENT_NAME, "str: client identity, in HELLO") \
  X(0x02, CLIENT_SECRET, "bytes: client secret, in HELLO") \
  X(0x03, KEY_NAME, "str: key name") \
  X(0x04, KEY_VERSION, "u32: key version; absent or 0 = current") \
  X(0x05, KEY_TYPE, "str: ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096, ed25519") \
  X(0x06, ALGORITHM, "u16: signature algorithm") \
  X(0x07, MESSAGE, "bytes: the whole message to sign") \
  X(0x08, SIGNATURE, "bytes: the signature") \
  X(0x09, PUBLIC_KEY, "bytes: SubjectPublicKeyInfo, DER") \
  X(0x0a, EC_POINT, "bytes: EC public point, uncompressed") \
  X(0x0b, RSA_N, "bytes: RSA modulus, big-endian") \
  X(0x0c, RSA_E, "bytes: RSA public exponent, big-endian") \
  X(0x0d, KEY_BITS, "u32: key size in bits") \
  X(0x0e, ERROR_CODE, "u16: error code") \
  X(0x0f, ERROR_MESSAGE, "str: human-readable error, never a secret") \
  X(0x10, PAYLOAD, "bytes: opaque data") \
  X(0x11, SIG_ENCODING, "u8: ECDSA output, 0 = DER, 1 = IEEE P1363") \
  X(0x12, USAGE, "str: tls-server, token-sign, cert-sign") \
  X(0x13, SERVER_INFO, "str: JSON name, version, devMode") \
  X(0x14, JSON, "str: a JSON document") \
  X(0x15, ENTRY, "bytes: one nested item list; repeatable") \
  X(0x16, TICKET_ROTATION_SECONDS, "u32: seconds per ticket-key epoch") \
  X(0x17, TICKET_PREVIOUS, "u32: ticket keys before the current one still answered") \
  X(0x18, TICKET_KEY_SET, "bytes: the ticket key records; secret") \
  X(0x19, SERVER_TIME, "bytes: u64 keyd's clock, unix milliseconds") \
  X(0x20, SHARE, "str: one Shamir share of the master key") \
  X(0x21, SIGN_GRACE_SECONDS, "u32: seconds older versions may still sign after a rotation") \
  X(0x22, PRIVATE_KEY, "bytes: PKCS#8 private key, DER; secret") \
  X(0x23, WRAPPED_AES_KEY, "bytes: RSA-OAEP ciphertext of an AES-256 key") \
  X(0x24, WRAPPED_PRIVATE_KEY, "bytes: PKCS#8 key under AES key wrap with padding") \
  X(0x25, STATEMENT, "str: attestation statement, JSON") \
  X(0xff, KEY_VERSIONS, "bytes: every version of the key with its creation time")
#define KEYD_ERRORS(X) \
  X(1, BAD_FRAME, "payload did not parse, flags non-zero, or an item has the wrong size") \
  X(2, UNSUPPORTED_VERSION, "frame version is not 1") \
  X(3, FRAME_TOO_LARGE, "frame over the maximum; connection closed") \
  X(4, UNKNOWN_OPCODE, "opcode not defined") \
  X(5, NOT_AUTHENTICATED, "request before a successful HELLO") \
  X(6, UNKNOWN_CLIENT, "HELLO with an unknown name or a wrong secret") \
  X(7, FORBIDDEN, "the client lacks the right for this operation") \
  X(8, MISSING_ITEM, "a required item is absent") \
  X(9, KEY_NOT_FOUND, "no such key or version") \
  X(10, KEY_EXISTS, "KEY_CREATE with a name in use") \
  X(11, BAD_ALGORITHM, "algorithm unknown or not valid for the key type") \
  X(12, POLICY_DENIED_MESSAGE, "message shape not allowed by the key's usage") \
  X(13, BAD_KEY_NAME, "key name does not match the allowed pattern") \
  X(14, BAD_KEY_TYPE, "unknown key type or usage") \
  X(15, INTERNAL, "keyd failed") \
  X(16, OVERLOADED, "too many requests in flight on this connection") \
  X(17, AUDIT_UNAVAILABLE, "the audit log cannot be written: nothing is signed") \
  X(18, SEALED, "keyd is sealed") \
  X(19, BAD_SHARE, "an UNSEAL share is malformed or does not fit") \
  X(20, RATE_LIMITED, "the key's or the client's rate limit is exhausted; retry later") \
  X(21, KEY_DISABLED, "the key is disabled") \
  X(22, KEY_DESTROYED, "the key was destroyed") \
  X(23, KEY_VERSION_RETIRED, "this key version no longer signs") \
  X(24, BAD_KEY_MATERIAL, "KEY_IMPORT: not a key keyd can hold") \
  X(25, NOT_SUPPORTED, "the keystore does not offer the operation") \
  X(26, USAGE_FORBIDDEN, "the client may not use keys of this usage") \
  X(27, TOKEN_TIMEOUT, "the key token did not answer in time") \
  X(30, BACKUP_MALFORMED, "not a keyedge backup bundle of this format") \
  X(31, BACKUP_TRUNCATED, "the bundle ends before its declared length") \
  X(32, BACKUP_WRONG_PASSPHRASE, "the passphrase does not open this bundle") \
  X(33, BACKUP_BAD_SHARES, "the shares do not rebuild this bundle's key") \
  X(34, BACKUP_TAMPERED, "the bundle was modified") \
  X(35, RESTORE_NOT_EMPTY, "BACKUP_RESTORE into a keyd that holds keys") \
  X(36, BACKUP_BAD_REQUEST, "bad BACKUP_* parameters")
enum keyd_op {
  KEYD_OP_HELLO = 0x01,
  KEYD_OP_PING = 0x02,
  KEYD_OP_GET_PUBLIC_KEY = 0x03,
  KEYD_OP_SIGN = 0x04,
  KEYD_OP_SIGN_BATCH = 0x05,
  KEYD_OP_GET_TICKET_KEYS = 0x06,
  KEYD_OP_KEY_CREATE = 0x20,
  KEYD_OP_KEY_LIST = 0x21,
  KEYD_OP_KEY_ROTATE = 0x22,
  KEYD_OP_KEY_INFO = 0x23,
  KEYD_OP_KEY_DISABLE = 0x24,
  KEYD_OP_KEY_ENABLE = 0x25,
  KEYD_OP_KEY_DESTROY = 0x26,
  KEYD_OP_KEY_IMPORT = 0x27,
  KEYD_OP_STATUS = 0x28,
  KEYD_OP_UNSEAL = 0x29,
  KEYD_OP_WRAPPING_KEY = 0x2a,
  KEYD_OP_KEY_ATTEST = 0x2b,
  KEYD_OP_ATTESTATION_KEY = 0x2c,
  KEYD_OP_BACKUP_EXPORT = 0x2e,
  KEYD_OP_BACKUP_RESTORE = 0x2f,
  KEYD_OP_ERROR = 0xff
};
enum keyd_tag {
  KEYD_TAG_CLIENT_NAME = 0x01,
  KEYD_TAG_CLIENT_SECRET = 0x02,
  KEYD_TAG_KEY_NAME = 0x03,
  KEYD_TAG_KEY_VERSION = 0x04,
  KEYD_TAG_KEY_TYPE = 0x05,
  KEYD_TAG_ALGORITHM = 0x06,
  KEYD_TAG_MESSAGE = 0x07,
  KEYD_TAG_SIGNATURE = 0x08,
  KEYD_TAG_PUBLIC_KEY = 0x09,
  KEYD_TAG_EC_POINT = 0x0a,
  KEYD_TAG_RSA_N = 0x0b,
  KEYD_TAG_RSA_E = 0x0c,
  KEYD_TAG_KEY_BITS = 0x0d,
  KEYD_TAG_ERROR_CODE = 0x0e,
  KEYD_TAG_ERROR_MESSAGE = 0x0f,
  KEYD_TAG_PAYLOAD = 0x10,
  KEYD_TAG_SIG_ENCODING = 0x11,
  KEYD_TAG_USAGE = 0x12,
  KEYD_TAG_SERVER_INFO = 0x13,
  KEYD_TAG_JSON = 0x14,
  KEYD_TAG_ENTRY = 0x15,
  KEYD_TAG_TICKET_ROTATION_SECONDS = 0x16,
  KEYD_TAG_TICKET_PREVIOUS = 0x17,
  KEYD_TAG_TICKET_KEY_SET = 0x18,
  KEYD_TAG_SERVER_TIME = 0x19,
  KEYD_TAG_SHARE = 0x20,
  KEYD_TAG_SIGN_GRACE_SECONDS = 0x21,
  KEYD_TAG_PRIVATE_KEY = 0x22,
  KEYD_TAG_WRAPPED_AES_KEY = 0x23,
  KEYD_TAG_WRAPPED_PRIVATE_KEY = 0x24,
  KEYD_TAG_STATEMENT = 0x25,
  KEYD_TAG_KEY_VERSIONS = 0xff
};
enum keyd_err {
  KEYD_ERR_BAD_FRAME = 1,
  KEYD_ERR_UNSUPPORTED_VERSION = 2,
  KEYD_ERR_FRAME_TOO_LARGE = 3,
  KEYD_ERR_UNKNOWN_OPCODE = 4,
  KEYD_ERR_NOT_AUTHENTICATED = 5,
  KEYD_ERR_UNKNOWN_CLIENT = 6,
  KEYD_ERR_FORBIDDEN = 7,
  KEYD_ERR_MISSING_ITEM = 8,
  KEYD_ERR_KEY_NOT_FOUND = 9,
  KEYD_ERR_KEY_EXISTS = 10,
  KEYD_ERR_BAD_ALGORITHM = 11,
  KEYD_ERR_POLICY_DENIED_MESSAGE = 12,
  KEYD_ERR_BAD_KEY_NAME = 13,
  KEYD_ERR_BAD_KEY_TYPE = 14,
  KEYD_ERR_INTERNAL = 15,
  KEYD_ERR_OVERLOADED = 16,
  KEYD_ERR_AUDIT_UNAVAILABLE = 17,
  KEYD_ERR_SEALED = 18,
  KEYD_ERR_BAD_SHARE = 19,
  KEYD_ERR_RATE_LIMITED = 20,
  KEYD_ERR_KEY_DISABLED = 21,
  KEYD_ERR_KEY_DESTROYED = 22,
  KEYD_ERR_KEY_VERSION_RETIRED = 23,
  KEYD_ERR_BAD_KEY_MATERIAL = 24,
  KEYD_ERR_NOT_SUPPORTED = 25,
  KEYD_ERR_USAGE_FORBIDDEN = 26,
  KEYD_ERR_TOKEN_TIMEOUT = 27,
  KEYD_ERR_BACKUP_MALFORMED = 30,
  KEYD_ERR_BACKUP_TRUNCATED = 31,
  KEYD_ERR_BACKUP_WRONG_PASSPHRASE = 32,
  KEYD_ERR_BACKUP_BAD_SHARES = 33,
  KEYD_ERR_BACKUP_TAMPERED = 34,
  KEYD_ERR_RESTORE_NOT_EMPTY = 35,
  KEYD_ERR_BACKUP_BAD_REQUEST = 36
};
#endif
