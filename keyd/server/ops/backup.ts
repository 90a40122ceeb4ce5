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

export const backupOps: OpEntry[] = [
  {
    op: Op.BACKUP_EXPORT,
    right: 'admin',
    handle: (ctx, items) => {
      const backup = service(ctx)
      const req = decodeBackupExportRequest(items)
      const answer = wireErrors(() => backup.exportChunk(ctx.keystore, req))
      // The service says whether this chunk completes the export: its JSON is not parsed back.
      if (ctx.metrics != null && answer.last) ctx.metrics.backupExported()
      return encodeBackupExportResponse({ json: answer.json, payload: answer.payload })
    }
  },
  {
    op: Op.BACKUP_RESTORE,
    right: 'admin',
    handle: (ctx, items) => {
      const backup = service(ctx)
      const req = decodeBackupRestoreRequest(items)
      const answer = wireErrors(() => backup.restoreChunk(ctx.keystore, req))
      if (ctx.metrics != null && answer.committed) ctx.metrics.backupRestored()
      return encodeBackupRestoreResponse({ json: answer.json })
    }
  }
]
