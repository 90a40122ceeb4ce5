// What an operation handler gets (OpContext) and how an operation declares itself (OpEntry): the
// contract between keyd/server/dispatch.ts and the modules of keyd/server/ops/.
import type { Logger } from 'pino'
import type { Item, ItemMap } from '../protocol/codec.js'
import type { Keystore } from '../keystore/keystore.js'
import type { KeyPolicy } from '../policy/key-policy.js'
import type { CustodyKeys } from '../keystore/custody-keys.js'
import type { BackupService } from '../backup/backup-service.js'
import type { Client, Right } from './clients.js'
import type { Sealer } from './sealer.js'
import type { KeydMetrics } from './metrics.js'

export interface SignStats { signatures: number, refused: number }

export interface OpContext {
  /** The authenticated client making the request. */
  readonly client: Client
  /** The open keystore. Reading it while keyd is sealed throws Refusal SEALED (only `whileSealed` operations run then). */
  readonly keystore: Keystore
  readonly stats: SignStats
  /** Per-key clients/algorithms and rate limits (keyd/policy.json); absent = none. */
  readonly policy?: KeyPolicy
  /** keyd's attestation and wrapping keys; null = KEY_ATTEST, WRAPPING_KEY and wrapped imports answer NOT_SUPPORTED. */
  readonly custody?: CustodyKeys | null
  /** Backup and restore (keyd/backup); null = BACKUP_EXPORT and BACKUP_RESTORE answer NOT_SUPPORTED. */
  readonly backup?: BackupService | null
  /** Seal state and unsealing (STATUS, UNSEAL); absent outside a running server. */
  readonly sealer?: Sealer
  readonly logger?: Logger
  /** For events only a handler sees (a backup's last chunk, a committed restore); null = metrics off. */
  readonly metrics?: KeydMetrics | null
}

/** Answer items, or a promise of them for the few operations that wait (UNSEAL). */
export type OpResult = Item[] | Promise<Item[]>

/**
 * One operation as the dispatch table holds it. The handler decodes its request with the typed
 * codecs of keyd/protocol/messages.ts and throws Refusal for every expected failure; it never checks
 * the client's right (dispatch does, from `right`), the seal state or the audit log.
 */
export interface OpEntry {
  readonly op: number
  /** The right the client needs; null = any authenticated client. */
  readonly right: Right | null
  readonly handle: (ctx: OpContext, items: ItemMap) => OpResult
  /** Answered while keyd is sealed (PING, STATUS, UNSEAL); any other operation is refused with SEALED then. */
  readonly whileSealed?: true
  /** Left out of the audit log, and answered while the log is unwritable (PING, STATUS, UNSEAL). */
  readonly unaudited?: true
}
