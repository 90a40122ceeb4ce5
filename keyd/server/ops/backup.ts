// BACKUP_EXPORT and BACKUP_RESTORE (admin): the work is keyd/backup's BackupService; a BackupError
// becomes the wire error of the same name.
import { Op, ErrorCode, errorCodeOf } from '../../protocol/spec.js'
import {
  decodeBackupExportRequest, encodeBackupExportResponse, decodeBackupRestoreRequest, encodeBackupRestoreResponse
} from '../../protocol/messages.js'
import type { BackupService } from '../../backup/backup-service.js'
import { BackupError, Refusal } from '../../errors.js'
import type { OpContext, OpEntry } from '../context.js'

function service (ctx: OpContext): BackupService {
  if (ctx.backup === undefined || ctx.backup === null) throw new Refusal(ErrorCode.NOT_SUPPORTED, 'this keyd was started without backup support')
  return ctx.backup
}

/** Runs `f`; a BackupError becomes a Refusal with the wire code its KEYD_ERR_ code names. */
function wireErrors<T> (f: () => T): T {
  try {
    return f()
  } catch (err) {
    if (!(err instanceof BackupError)) throw err
    throw new Refusal(errorCodeOf(err.code.slice('KEYD_ERR_'.length)) ?? ErrorCode.INTERNAL, err.message)
  }
}

/** Whether an export answer hands out the bundle's last byte (backup health: the export is complete). */
function lastChunk (answer: { json: string, payload: Buffer }): boolean {
  const a = JSON.parse(answer.json) as { size?: number, offset?: number }
  return typeof a.size === 'number' && typeof a.offset === 'number' && a.offset + answer.payload.length >= a.size
}

export const backupOps: OpEntry[] = [
  {
    op: Op.BACKUP_EXPORT,
    right: 'admin',
    handle: (ctx, items) => {
      const backup = service(ctx)
      const req = decodeBackupExportRequest(items)
      const answer = wireErrors(() => backup.exportChunk(ctx.keystore, req))
      if (ctx.metrics != null && lastChunk(answer)) ctx.metrics.backupExported()
      return encodeBackupExportResponse(answer)
    }
  },
  {
    op: Op.BACKUP_RESTORE,
    right: 'admin',
    handle: (ctx, items) => {
      const backup = service(ctx)
      const req = decodeBackupRestoreRequest(items)
      const answer = wireErrors(() => backup.restoreChunk(ctx.keystore, req))
      // Only a commit answers with "keys" (a chunk upload answers with "received").
      if (ctx.metrics != null && 'keys' in (JSON.parse(answer.json) as object)) ctx.metrics.backupRestored()
      return encodeBackupRestoreResponse(answer)
    }
  }
]
