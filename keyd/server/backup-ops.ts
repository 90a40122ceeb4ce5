// BACKUP_EXPORT and BACKUP_RESTORE handlers: admin only; the work is keyd/backup's BackupService.
import { Tag, ErrorCode, type Item, type ErrorCodeName } from '../protocol/codec.js'
import { BackupError } from '../errors.js'
import { Refusal, requireRight, type HandlerContext } from './handlers.js'

/** Runs one backup operation; a BackupError becomes the wire error of the same name. @throws Refusal */
export function backupOp (op: 'export' | 'restore', ctx: HandlerContext, items: Map<number, Uint8Array>): Item[] {
  requireRight(ctx.client, 'admin')
  if (ctx.backup === undefined || ctx.backup === null) throw new Refusal(ErrorCode.NOT_SUPPORTED, 'this keyd was started without backup support')
  if (!items.has(Tag.JSON)) throw new Refusal(ErrorCode.MISSING_ITEM, 'missing item JSON')
  try {
    return ctx.backup.handle(op, ctx.keystore, items)
  } catch (err) {
    if (!(err instanceof BackupError)) throw err
    const wire = ErrorCode[err.code.slice('KEYD_ERR_'.length) as ErrorCodeName] ?? ErrorCode.INTERNAL
    throw new Refusal(wire, err.message)
  }
}
