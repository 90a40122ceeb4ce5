// keyd's seal state: a Shamir-sealed keyd starts without its keystore and collects UNSEAL shares
// until `threshold` distinct ones rebuild the master key; then `onOpen` hands the opened keystore,
// audit log and custody keys to the server. Shares are zeroed once used, whatever the outcome.
import type { Logger } from 'pino'
import { ErrorCode } from '../protocol/spec.js'
import { decodeShare, type Share } from '../keystore/shamir.js'
import type { Keystore } from '../keystore/keystore.js'
import type { AuditLog } from '../audit/audit-log.js'
import type { CustodyKeys } from '../keystore/custody-keys.js'
import { KeydError, Refusal } from '../errors.js'
import { errorMessage } from '../../lib/errors.js'

/** What unsealing opens. */
export interface Opened { keystore: Keystore, audit: AuditLog | null, custody?: CustodyKeys | null }

/** How a sealed keyd opens: the share threshold, and what to do once that many are in. */
export interface SealOptions { threshold: number, unseal: (shares: Share[]) => Promise<Opened> }

/** STATUS's JSON (and UNSEAL's). */
export interface SealStatus { sealed: boolean, shares: number, threshold: number, keys: number | null, devMode: boolean }

export class Sealer {
  readonly #opts: SealOptions | undefined
  readonly #state: () => { keystore: Keystore | null, devMode: boolean }
  readonly #onOpen: (opened: Opened) => void
  readonly #logger: Logger
  #shares: Share[] = []
  #unsealing = false

  /**
   * @param opts absent for a keyd that is never sealed
   * @param state the server's live keystore (null while sealed) and mode
   * @param onOpen installs what unsealing opened
   */
  constructor (opts: SealOptions | undefined, state: () => { keystore: Keystore | null, devMode: boolean }, onOpen: (opened: Opened) => void, logger: Logger) {
    this.#opts = opts
    this.#state = state
    this.#onOpen = onOpen
    this.#logger = logger
  }

  get sealed (): boolean { return this.#state().keystore === null }

  status (): SealStatus {
    const { keystore, devMode } = this.#state()
    return { sealed: keystore === null, shares: this.#shares.length, threshold: this.#opts?.threshold ?? 0, keys: keystore?.list().length ?? null, devMode }
  }

  /**
   * Takes one share in text form; unseals once `threshold` distinct shares are in. A keyd that is
   * not sealed just answers its status.
   * @throws Refusal BAD_SHARE (a malformed share, or shares that do not rebuild the master key: all are discarded), OVERLOADED (an unseal is running), INTERNAL
   */
  async addShare (text: string): Promise<SealStatus> {
    if (!this.sealed) return this.status()
    const seal = this.#opts
    if (seal === undefined) throw new Refusal(ErrorCode.INTERNAL, 'sealed without an unseal method')
    if (this.#unsealing) throw new Refusal(ErrorCode.OVERLOADED, 'an unseal is in progress')
    let share: Share
    try {
      share = decodeShare(text)
    } catch (err) {
      throw new Refusal(ErrorCode.BAD_SHARE, errorMessage(err))
    }
    if (!this.#shares.some(s => s.x === share.x)) this.#shares.push(share)
    if (this.#shares.length < seal.threshold) return this.status()
    this.#unsealing = true
    try {
      const opened = await seal.unseal(this.#shares)
      this.#onOpen(opened)
      this.#logger.info({ keys: opened.keystore.list().length }, 'keyd unsealed')
      return this.status()
    } catch (err) {
      const badShare = err instanceof KeydError && err.code === 'KEYD_ERR_BAD_SHARE'
      this.#logger.warn({ code: err instanceof KeydError ? err.code : undefined }, 'keyd unseal failed; shares discarded')
      throw new Refusal(badShare ? ErrorCode.BAD_SHARE : ErrorCode.INTERNAL, errorMessage(err))
    } finally {
      for (const s of this.#shares) s.y.fill(0)
      this.#shares = []
      this.#unsealing = false
    }
  }
}
