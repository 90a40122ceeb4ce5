// The one catalog of proxy-side error classes. Callers branch on `code`, never on message text.
// Codes are never reused. No message ever carries a key, a token, a PEM or a secret.
import { CodedError } from '../lib/errors.js'

/** Base class of every proxy error; `code` is stable. */
export class EdgeError extends CodedError {}

/** The configuration failed validation; `problems` lists every problem found, one per entry. */
export class ConfigInvalidError extends EdgeError {
  readonly problems: string[]
  readonly file: string | undefined
  constructor (problems: string[], file?: string) {
    const where = file === undefined ? 'config' : `config ${file}`
    super('EDGE_ERR_CONFIG_INVALID', `${where} is invalid (${problems.length} problem${problems.length === 1 ? '' : 's'}):\n  ${problems.join('\n  ')}`)
    this.problems = problems
    this.file = file
  }
}

/** A certificate file could not be read or parsed, or is not valid now. */
export class CertLoadError extends EdgeError {
  readonly file: string
  constructor (file: string, reason: string, options?: { cause?: unknown }) {
    super('EDGE_ERR_CERT_LOAD', `certificate ${file}: ${reason}`, options)
    this.file = file
  }
}

/** A key (or key reference) file could not be read or loaded. */
export class KeyLoadError extends EdgeError {
  readonly file: string
  constructor (file: string, reason: string, options?: { cause?: unknown }) {
    super('EDGE_ERR_KEY_LOAD', `key ${file}: ${reason}`, options)
    this.file = file
  }
}

/** A certificate's public key does not match the private key (or key reference) paired with it. */
export class CertKeyMismatchError extends EdgeError {
  readonly certFile: string
  readonly keyFile: string
  constructor (certFile: string, keyFile: string) {
    super('EDGE_ERR_CERT_KEY_MISMATCH', `certificate ${certFile} does not match key ${keyFile}`)
    this.certFile = certFile
    this.keyFile = keyFile
  }
}

/** Node refused to build a TLS secure context from an otherwise loadable certificate entry. */
export class SecureContextError extends EdgeError {
  readonly certificate: string
  constructor (certificate: string, reason: string, options?: { cause?: unknown }) {
    super('EDGE_ERR_SECURE_CONTEXT', `certificate entry "${certificate}": ${reason}`, options)
    this.certificate = certificate
  }
}

/** The command line could not be parsed. */
export class UsageError extends EdgeError {
  constructor (message: string) {
    super('EDGE_ERR_USAGE', message)
  }
}

/** A certificate reload was refused as a whole: the certificates served before keep serving. */
export class ReloadRefusedError extends EdgeError {
  /** One line per failed certificate entry or worker, each with its error code. */
  readonly problems: string[]
  constructor (problems: string[]) {
    super('EDGE_ERR_RELOAD_REFUSED', `certificate reload refused, the previous certificates keep serving:\n  ${problems.join('\n  ')}`)
    this.problems = problems
  }
}

/**
 * A token request refused: `status` is the HTTP status (4xx, or 503 when keyd cannot sign), `code`
 * one of the EDGE_ERR_TOKEN_* codes of docs/token.md. The message never holds a token or a secret.
 */
export class TokenRequestError extends EdgeError {
  readonly status: number
  readonly headers: Record<string, string>
  constructor (code: string, status: number, message: string, headers: Record<string, string> = {}) {
    super(code, message)
    this.status = status
    this.headers = headers
  }
}

/** A token key is unusable: keyd refuses it (e.g. a tls-server key), it is missing, or its algorithm does not fit. */
export class TokenKeyError extends EdgeError {
  readonly keyName: string
  constructor (keyName: string, reason: string, options?: { cause?: unknown }) {
    super('EDGE_ERR_TOKEN_KEY', `token key "${keyName}": ${reason}`, options)
    this.keyName = keyName
  }
}

/** `keyedge cert renew` could not renew: missing or unreadable files, or not a key reference. */
export class CertRenewError extends EdgeError {
  constructor (message: string, options?: { cause?: unknown }) {
    super('EDGE_ERR_CERT_RENEW', message, options)
  }
}

/** `keyedge import --nginx`: the nginx configuration does not parse, or an include cannot be read. */
export class NginxConfigError extends EdgeError {
  constructor (message: string) {
    super('EDGE_ERR_NGINX_CONFIG', message)
  }
}

/** `keyedge import`: a pair cannot be imported (unreadable, unparsable, mismatched, a key type keyd does not hold, a name taken). */
export class ImportError extends EdgeError {
  constructor (message: string, options?: { cause?: unknown }) {
    super('EDGE_ERR_IMPORT', message, options)
  }
}
