// keyd backup and restore: the encrypted bundle format, keyd's BACKUP_EXPORT/BACKUP_RESTORE service, crash recovery.
export { BackupService, BACKUP_DEFAULTS, type BackupCapable, type BackupServiceOptions } from './backup-service.js'
export { recoverRestore, type RestorePaths } from './restore-stage.js'
export { parseBundle, BUNDLE_MAGIC, BUNDLE_VERSION, MIN_PASSPHRASE_CHARS, type BundleHeader, type BundleWrap } from './bundle.js'
