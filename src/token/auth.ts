// Who is asking for a token: a caller proven by its bearer secret (compared by SHA-256 in constant
// time) or by a client certificate that the listener's client CA verified (matched by fingerprint).
import { createHash, timingSafeEqual } from 'node:crypto'
import { readFileSync } from 'node:fs'
import type { IncomingMessage } from 'node:http'
import type { TLSSocket } from 'node:tls'
import { secretBytes } from '../../lib/secret-file.js'
import { errorCode } from '../../lib/errors.js'
import type { TokenCallerConfig } from '../config/token.js'
import { ConfigInvalidError, TokenRequestError } from '../errors.js'

const CHALLENGE = { 'www-authenticate': 'Bearer realm="keyedge-token"' }

function sha256 (b: Uint8Array): Buffer {
  return createHash('sha256').update(b).digest()
}

interface Known { caller: TokenCallerConfig, secretSha256?: Buffer, certSha256?: string }

export class CallerAuth {
  readonly #known: Known[]

  /** Reads each `secretFile` once and keeps only its hash. @throws ConfigInvalidError if a file cannot be read. */
  constructor (callers: TokenCallerConfig[]) {
    this.#known = callers.map((caller, i) => {
      let secretSha256: Buffer | undefined
      if (caller.secretSha256 !== undefined) secretSha256 = Buffer.from(caller.secretSha256, 'hex')
      else if (caller.secretFile !== undefined) {
        try {
          secretSha256 = sha256(secretBytes(readFileSync(caller.secretFile)))
        } catch (err) {
          throw new ConfigInvalidError([`token.callers[${i}].secretFile: cannot read ${caller.secretFile} (${errorCode(err) ?? 'error'})`])
        }
      }
      return { caller, ...(secretSha256 !== undefined ? { secretSha256 } : {}), ...(caller.clientCertSha256 !== undefined ? { certSha256: caller.clientCertSha256 } : {}) }
    })
  }

  /**
   * The caller of `req`. A bearer secret, when sent, must match; otherwise a verified client certificate.
   * @throws TokenRequestError 401 EDGE_ERR_TOKEN_UNAUTHENTICATED
   */
  authenticate (req: IncomingMessage): TokenCallerConfig {
    const header = req.headers.authorization
    if (header !== undefined) {
      const secret = /^Bearer ([\x21-\x7e]{1,512})$/i.exec(header)?.[1]
      if (secret === undefined) throw new TokenRequestError('EDGE_ERR_TOKEN_UNAUTHENTICATED', 401, 'the Authorization header must be "Bearer <secret>"', CHALLENGE)
      const h = sha256(Buffer.from(secret))
      let found: TokenCallerConfig | undefined
      for (const k of this.#known) {
        // Every configured hash is compared, so the time does not depend on which caller matched.
        if (k.secretSha256 !== undefined && timingSafeEqual(h, k.secretSha256) && found === undefined) found = k.caller
      }
      if (found === undefined) throw new TokenRequestError('EDGE_ERR_TOKEN_UNAUTHENTICATED', 401, 'unknown bearer secret', CHALLENGE)
      return found
    }
    const socket = req.socket as Partial<TLSSocket>
    if (typeof socket.getPeerCertificate === 'function' && socket.authorized === true) {
      const fp = socket.getPeerCertificate(false)?.fingerprint256?.replace(/:/g, '').toLowerCase()
      const k = this.#known.find(x => x.certSha256 !== undefined && x.certSha256 === fp)
      if (k !== undefined) return k.caller
      throw new TokenRequestError('EDGE_ERR_TOKEN_UNAUTHENTICATED', 401, 'the client certificate belongs to no caller', CHALLENGE)
    }
    throw new TokenRequestError('EDGE_ERR_TOKEN_UNAUTHENTICATED', 401, 'no credentials: send "Authorization: Bearer <secret>" or a client certificate', CHALLENGE)
  }
}
