// The one catalog of keyd-side error classes. Callers branch on `code`, never on message text.
// Codes are never reused. No message ever carries a key, a secret or a message to sign.
import { CodedError } from '../lib/errors.js'
import { errorCodeName } from './protocol/spec.js'

/** Base class of every keyd error; `code` is stable. */
export class KeydError extends CodedError {}

/**
 * keyd refuses a request (server side), or a frame does not decode (either side): becomes an ERROR
 * frame with wire error code `wire` (PROTOCOL.md); `code` is `KEYD_ERR_<wire name>`, the same code
 * the client's KeydRemoteError carries for it.
 */
export class Refusal extends KeydError {
  readonly wire: number
  constructor (wire: number, message: string) {
    super(`KEYD_ERR_${errorCodeName(wire)}`, message)
    this.wire = wire
  }
}

/** keyd answered a request with an ERROR frame (client side). `code` is `KEYD_ERR_<NAME>`. */
export class KeydRemoteError extends KeydError {
  readonly wire: number
  constructor (wireName: string, wire: number, message: string) {
    super(`KEYD_ERR_${wireName}`, message)
    this.wire = wire
  }
}

/** The socket could not be reached, closed mid-request, or keyd did not answer in time. */
export class KeydUnavailableError extends KeydError {
  constructor (message: string, options?: { cause?: unknown }) {
    super('KEYD_ERR_UNAVAILABLE', message, options)
  }
}

export class KeydTimeoutError extends KeydError {
  constructor (ms: number) {
    super('KEYD_ERR_TIMEOUT', `keyd did not answer within ${ms} ms`)
  }
}

/** The keystore on disk cannot be opened: wrong passphrase, corrupt or truncated file. */
export class KeystoreError extends KeydError {
  constructor (code: 'KEYD_ERR_KEYSTORE_CORRUPT' | 'KEYD_ERR_WRONG_PASSPHRASE' | 'KEYD_ERR_NO_MASTER_KEY' | 'KEYD_ERR_KEYSTORE_IO' | 'KEYD_ERR_BAD_SHARE' | 'KEYD_ERR_SEALED', message: string, options?: { cause?: unknown }) {
    super(code, message, options)
  }
}

/** keyd configuration (clients file, flags) is invalid. */
export class KeydConfigError extends KeydError {
  constructor (message: string) {
    super('KEYD_ERR_CONFIG_INVALID', message)
  }
}

/** The bridge provider (keyd/bridge/build/Release/keyedge_provider.so) was not built. */
export class BridgeMissingError extends KeydError {
  constructor (path: string) {
    super('KEYD_ERR_BRIDGE_MISSING', `keyd bridge provider not found at ${path}: run npm install (node-gyp rebuild -C keyd/bridge)`)
  }
}

/**
 * The PKCS#11 keystore failed: the module cannot be loaded or is unsafe to load into Node
 * (links libcrypto), the token or PIN is wrong, or the token refused an operation.
 * `detail` is the PKCS#11 return value name (CKR_…) when there is one.
 */
export class Pkcs11Error extends KeydError {
  constructor (code: 'KEYD_ERR_PKCS11' | 'KEYD_ERR_PKCS11_MODULE_UNSAFE' | 'KEYD_ERR_PKCS11_TOKEN_NOT_FOUND' | 'KEYD_ERR_PKCS11_LOGIN' | 'KEYD_ERR_PKCS11_UNSUPPORTED', message: string, options?: { cause?: unknown }) {
    super(code, message, options)
  }
}

/** A PKCS#11 token did not answer within its deadline (wire TOKEN_TIMEOUT); keyd's event loop never waits for it. */
export class TokenTimeoutError extends KeydError {
  constructor (message: string) {
    super('KEYD_ERR_TOKEN_TIMEOUT', message)
  }
}

/** Key material given to KEY_IMPORT (plain or wrapped) does not parse, unwrap or fit a key type. Never holds the material. */
export class KeyMaterialError extends KeydError {
  constructor (message: string) {
    super('KEYD_ERR_BAD_KEY_MATERIAL', message)
  }
}

/** Codes of backup and restore failures; each is also a wire error name (PROTOCOL.md, BACKUP_EXPORT/RESTORE). */
export type BackupErrorCode =
  | 'KEYD_ERR_BACKUP_MALFORMED' | 'KEYD_ERR_BACKUP_TRUNCATED' | 'KEYD_ERR_BACKUP_WRONG_PASSPHRASE'
  | 'KEYD_ERR_BACKUP_BAD_SHARES' | 'KEYD_ERR_BACKUP_TAMPERED' | 'KEYD_ERR_RESTORE_NOT_EMPTY'
  | 'KEYD_ERR_BACKUP_BAD_REQUEST' | 'KEYD_ERR_NOT_SUPPORTED'

/** A backup bundle could not be built, read or restored. The message never holds a passphrase, share or key. */
export class BackupError extends KeydError {
  constructor (code: BackupErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options)
  }
}
