// One logged-in session on a PKCS#11 token, through the pkcs11js binding: module loading with the
// libcrypto guard, token lookup by label, login, object search, and CKR_* errors as Pkcs11Error.
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import type * as P11 from 'pkcs11js'
import { Pkcs11Error } from '../errors.js'
import { errorMessage } from '../../lib/errors.js'

type Binding = typeof P11

/** Loaded lazily: a keyd on the file store never loads the native addon. */
function binding (): Binding {
  return createRequire(import.meta.url)('pkcs11js') as Binding
}

export interface TokenOptions {
  /** Path of the PKCS#11 module keyd loads: p11-kit-client.so, never a module linked to libcrypto. */
  module: string
  /** CKA token label (trailing blanks ignored). */
  tokenLabel: string
  pin: string
}

/**
 * True if the ELF file names libcrypto/libssl among its strings (its DT_NEEDED entries live in .dynstr).
 * Such a module would bind to Node's own OpenSSL symbols (Node exports its bundled libcrypto) and crash
 * keyd: seen with SoftHSM under Node 26. PKCS#11 modules are hosted in `p11-kit server` instead.
 */
export function linksLibcrypto (file: string): boolean {
  const bytes = readFileSync(file)
  return bytes.includes('libcrypto.so') || bytes.includes('libssl.so')
}

function ckr (err: unknown): string {
  const m = /CKR_[A-Z_]+/.exec(errorMessage(err))
  return m === null ? 'unknown error' : m[0]
}

export class Pkcs11Token {
  readonly p11: Binding
  readonly #lib: P11.PKCS11
  readonly #opts: TokenOptions
  #slot: P11.Handle | undefined
  #session: P11.Handle | undefined

  /**
   * Loads the module, finds the token and logs in as the user.
   * @throws Pkcs11Error KEYD_ERR_PKCS11_MODULE_UNSAFE, KEYD_ERR_PKCS11 (module or RPC), KEYD_ERR_PKCS11_TOKEN_NOT_FOUND, KEYD_ERR_PKCS11_LOGIN
   */
  constructor (opts: TokenOptions) {
    this.#opts = opts
    let unsafe: boolean
    try {
      unsafe = linksLibcrypto(opts.module)
    } catch (err) {
      throw new Pkcs11Error('KEYD_ERR_PKCS11', `cannot read the PKCS#11 module ${opts.module}: ${errorMessage(err)}`)
    }
    if (unsafe) {
      throw new Pkcs11Error('KEYD_ERR_PKCS11_MODULE_UNSAFE', `${opts.module} links libcrypto and would crash inside Node: host it in "p11-kit server --provider ${opts.module}" and give keyd p11-kit-client.so`)
    }
    this.p11 = binding()
    this.#lib = new this.p11.PKCS11()
    try {
      this.#lib.load(opts.module)
    } catch (err) {
      throw new Pkcs11Error('KEYD_ERR_PKCS11', `cannot load the PKCS#11 module ${opts.module}: ${errorMessage(err)}`)
    }
    this.#open()
  }

  #open (): void {
    const p = this.p11
    this.call('C_Initialize', () => this.#lib.C_Initialize({ flags: p.CKF_OS_LOCKING_OK }))
    const slots = this.call('C_GetSlotList', () => this.#lib.C_GetSlotList(true))
    const labels = slots.map(s => this.#lib.C_GetTokenInfo(s).label.trimEnd())
    const slot = slots[labels.indexOf(this.#opts.tokenLabel)]
    if (slot === undefined) {
      this.#lib.C_Finalize()
      throw new Pkcs11Error('KEYD_ERR_PKCS11_TOKEN_NOT_FOUND', `no PKCS#11 token labelled ${JSON.stringify(this.#opts.tokenLabel)} (tokens present: ${labels.map(l => JSON.stringify(l)).join(', ') || 'none'}); is P11_KIT_SERVER_ADDRESS set?`)
    }
    this.#slot = slot
    this.#session = this.call('C_OpenSession', () => this.#lib.C_OpenSession(slot, p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION))
    try {
      this.#lib.C_Login(this.#session, p.CKU_USER, this.#opts.pin)
    } catch (err) {
      if (ckr(err) !== 'CKR_USER_ALREADY_LOGGED_IN') {
        this.#lib.C_Finalize()
        throw new Pkcs11Error('KEYD_ERR_PKCS11_LOGIN', `login to token ${JSON.stringify(this.#opts.tokenLabel)} failed: ${ckr(err)}`)
      }
    }
  }

  /** Drops the connection and logs in again (after p11-kit server restarted, for instance). */
  reopen (): void {
    try { this.#lib.C_Finalize() } catch { /* not initialized, or the connection is already gone: nothing to release */ }
    this.#open()
  }

  get session (): P11.Handle {
    if (this.#session === undefined) throw new Pkcs11Error('KEYD_ERR_PKCS11', 'PKCS#11 session is closed')
    return this.#session
  }

  get lib (): P11.PKCS11 { return this.#lib }

  /** Mechanisms the token offers, as CKM_* numbers. */
  mechanisms (): number[] {
    return this.call('C_GetMechanismList', () => this.#lib.C_GetMechanismList(this.#slot as P11.Handle))
  }

  /** Runs one PKCS#11 call; a CKR_* failure becomes Pkcs11Error KEYD_ERR_PKCS11 (no data in the message). */
  call<T> (what: string, fn: () => T): T {
    try {
      return fn()
    } catch (err) {
      throw new Pkcs11Error('KEYD_ERR_PKCS11', `PKCS#11 ${what} failed: ${ckr(err)}`, { cause: err })
    }
  }

  /** Every object matching `template`. */
  find (template: P11.Template): P11.Handle[] {
    const s = this.session
    return this.call('C_FindObjects', () => {
      this.#lib.C_FindObjectsInit(s, template)
      try {
        const out: P11.Handle[] = []
        for (let batch = this.#lib.C_FindObjects(s, 64); batch.length > 0; batch = this.#lib.C_FindObjects(s, 64)) out.push(...batch)
        return out
      } finally {
        this.#lib.C_FindObjectsFinal(s)
      }
    })
  }

  /** One attribute's raw value. */
  attribute (handle: P11.Handle, type: number): Buffer {
    const [attr] = this.call('C_GetAttributeValue', () => this.#lib.C_GetAttributeValue(this.session, handle, [{ type }]))
    if (attr === undefined) throw new Pkcs11Error('KEYD_ERR_PKCS11', `PKCS#11 C_GetAttributeValue returned no value for attribute ${type}`)
    return attr.value
  }

  close (): void {
    try { this.#lib.C_Finalize() } catch { /* not initialized, or the connection is already gone: nothing to release */ }
    this.#session = undefined
  }
}

/** True for the failures after which a fresh connection may succeed (the RPC peer went away). */
export function isConnectionLoss (err: unknown): boolean {
  const code = ckr(err instanceof Error && err.cause !== undefined ? err.cause : err)
  return ['CKR_DEVICE_ERROR', 'CKR_DEVICE_REMOVED', 'CKR_SESSION_HANDLE_INVALID', 'CKR_SESSION_CLOSED', 'CKR_TOKEN_NOT_PRESENT', 'CKR_CRYPTOKI_NOT_INITIALIZED', 'CKR_USER_NOT_LOGGED_IN'].includes(code)
}
