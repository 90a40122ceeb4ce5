// `keyedge keyd …`: run the key daemon, and manage its keys through its socket (never by reading the store).
import { parseArgs } from 'node:util'
import { availableParallelism } from 'node:os'
import { readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { homePaths, ensurePrivateDir } from '../../lib/home.js'
import { loadMasterKey, sealKind, initShamir, shamirParams, unsealShamir, type MasterKeySource } from '../../keyd/keystore/master-key.js'
import { Op, Tag, itemStr, readStr } from '../../keyd/protocol/codec.js'
import { FileKeystore } from '../../keyd/keystore/file-keystore.js'
import { Pkcs11Keystore } from '../../keyd/keystore/pkcs11-keystore.js'
import type { TokenOptions } from '../../keyd/keystore/pkcs11-token.js'
import type { Keystore } from '../../keyd/keystore/keystore.js'
import { ClientRegistry } from '../../keyd/server/clients.js'
import { KeydServer } from '../../keyd/server/server.js'
import { KeydClient } from '../../keyd/client/client.js'
import { KeydError } from '../../keyd/errors.js'
import { createLogger } from '../logger.js'
import { AuditLog } from '../../keyd/audit/audit-log.js'
import { auditKey } from '../../keyd/audit/chain.js'
import { verifyAuditLog } from '../../keyd/audit/verify.js'
import { runSelfTests, SelfTestError } from '../../keyd/server/self-test.js'
import { KeyPolicy } from '../../keyd/policy/key-policy.js'
import { KeydMetrics, measureSignCapacity, startMetricsServer, type KeydHealth } from '../../keyd/server/metrics.js'
import { CustodyKeys } from '../../keyd/keystore/custody-keys.js'
import { KeyUsageError, isOfflineKeyCommand, runOfflineKeyCommand, runKeyCommand } from './keyd-key.js'
import { BackupUsageError, backupExport, backupRestore } from './keyd-backup.js'
import { KEYD_COMMANDS, keydCommandUsage, keydUsage } from './keyd-help.js'
import { AuditUsageError, auditExport } from './keyd-audit.js'
import { BackupService, recoverRestore } from '../../keyd/backup/index.js'
import { PrivilegeError, rootWarning, shareWithGroup } from '../../lib/privileges.js'
import { becomeKeydUser, privilegeOptions, type Separation } from './keyd-privileges.js'

/** Every option of every `keyedge keyd` command (test/cli/help.test.ts checks each one the help names is here). */
export const KEYD_OPTIONS = {
  help: { type: 'boolean', short: 'h' },
  home: { type: 'string' },
  socket: { type: 'string' },
  dev: { type: 'boolean' },
  'passphrase-file': { type: 'string' },
  name: { type: 'string' },
  type: { type: 'string' },
  usage: { type: 'string' },
  version: { type: 'string' },
  audit: { type: 'string' },
  'audit-fail-open': { type: 'boolean' },
  shares: { type: 'string' },
  threshold: { type: 'string' },
  share: { type: 'string', multiple: true },
  'metrics-port': { type: 'string' },
  capacity: { type: 'string' },
  'no-native-sign': { type: 'boolean' },
  'sign-threads': { type: 'string' },
  'pkcs11-module': { type: 'string' },
  'pkcs11-token': { type: 'string' },
  'pkcs11-pin-file': { type: 'string' },
  format: { type: 'string' },
  file: { type: 'string' },
  wrapped: { type: 'string' },
  in: { type: 'string' },
  out: { type: 'string' },
  'wrapping-key': { type: 'string' },
  'attestation-key': { type: 'string' },
  'grace-seconds': { type: 'string' },
  yes: { type: 'boolean' },
  since: { type: 'string' },
  follow: { type: 'boolean' },
  'proxy-secret-dir': { type: 'string' },
  user: { type: 'string' },
  'socket-group': { type: 'string' }
} as const

export async function main (argv: string[]): Promise<number> {
  let parsed
  try {
    parsed = parseArgs({ args: argv, options: KEYD_OPTIONS, allowPositionals: true, strict: true })
  } catch (err) {
    process.stderr.write(`keyedge keyd: ${err instanceof Error ? err.message : String(err)}\n\n${keydUsage()}`)
    return 2
  }
  const { values, positionals } = parsed
  const cmd = positionals.join(' ')
  if (cmd === '') {
    process.stdout.write(keydUsage())
    return values.help === true ? 0 : 2
  }
  const own = keydCommandUsage(cmd)
  if (own === undefined) {
    process.stderr.write(`keyedge keyd: unknown command "${cmd}"\n\n${keydUsage()}`)
    return 2
  }
  if (values.help === true) {
    process.stdout.write(own)
    return 0
  }
  if (KEYD_COMMANDS[cmd] === undefined) {
    process.stderr.write(`keyedge keyd ${cmd}: which command?\n\n${own}`)
    return 2
  }
  const paths = homePaths(values.home)
  const socketPath = values.socket ?? paths.socket
  try {
    switch (cmd) {
      case 'serve': {
        const audit = values.audit ?? 'buffered'
        if (audit !== 'buffered' && audit !== 'fsync' && audit !== 'off') throw new UsageError('--audit must be buffered, fsync or off')
        const metricsPort = values['metrics-port'] === undefined ? undefined : Number(values['metrics-port'])
        if (metricsPort !== undefined && (!Number.isInteger(metricsPort) || metricsPort < 0 || metricsPort > 65535)) throw new UsageError('--metrics-port must be 0-65535')
        const proxySecretDir = values['proxy-secret-dir'] === undefined ? paths.secretsDir : resolve(values['proxy-secret-dir'])
        const capacity = values.capacity === undefined ? undefined : Number(values.capacity)
        if (capacity !== undefined && !(Number.isFinite(capacity) && capacity > 0)) throw new UsageError('--capacity must be a positive number of signatures per second')
        const signThreads = values['sign-threads'] === undefined ? availableParallelism() : Number(values['sign-threads'])
        if (!Number.isInteger(signThreads) || signThreads < 1 || signThreads > 256) throw new UsageError('--sign-threads must be 1-256')
        const nativeSign = values['no-native-sign'] === true || process.env.KEYEDGE_KEYD_NATIVE_SIGN === '0' ? null : { threads: signThreads }
        const separation = privilegeOptions(paths, resolve(socketPath), proxySecretDir, values.user, values['socket-group'])
        // The passphrase and PIN files are read before the drop: they may stay root's alone.
        const pkcs11 = pkcs11Options(values)
        if (separation.runAs !== undefined) {
          if (values['passphrase-file'] !== undefined) separation.passphrase = readPassphrase(values['passphrase-file'])
          becomeKeydUser(paths, resolve(socketPath), proxySecretDir, separation.runAs, separation.socketGroup)
        }
        return await serve(paths, socketPath, values.dev === true, values['passphrase-file'], { mode: audit, failClosed: values['audit-fail-open'] !== true }, metricsPort, pkcs11, proxySecretDir, separation, capacity, nativeSign)
      }
      case 'audit verify': return auditVerify(paths, values.dev === true, values['passphrase-file'])
      case 'audit export': {
        const key = auditChainKey(paths, values.dev === true, values['passphrase-file'], 'audit export')
        try {
          return await auditExport({ ...auditFiles(paths), key, since: values.since, follow: values.follow === true })
        } finally {
          key.fill(0)
        }
      }
      case 'init': {
        const shares = Number(values.shares ?? 5)
        const threshold = Number(values.threshold ?? 3)
        ensurePrivateDir(paths.home)
        ensurePrivateDir(paths.keydDir)
        const list = initShamir(paths.keydDir, shares, threshold)
        process.stdout.write(`keyd master key created and split into ${shares} shares; any ${threshold} unseal it.\n` +
          'Give each share to a different person now: they are shown once and stored nowhere.\n\n' + list.map((s, i) => `share ${i + 1}: ${s}\n`).join(''))
        return 0
      }
      case 'status': return await withAdmin(paths, socketPath, async c => {
        process.stdout.write(readStr(await c.request(Op.STATUS), Tag.JSON) + '\n')
      })
      case 'unseal': return await withAdmin(paths, socketPath, async c => {
        const share = values.share?.[0] ?? (await readLine(process.stdin))
        const st = JSON.parse(readStr(await c.request(Op.UNSEAL, [itemStr(Tag.SHARE, share)]), Tag.JSON) ?? '{}') as { sealed: boolean, shares: number, threshold: number }
        process.stdout.write(st.sealed ? `keyd still sealed: ${st.shares} of ${st.threshold} shares\n` : 'keyd unsealed\n')
      })
      case 'ping': return await withAdmin(paths, socketPath, async c => { await c.ping(); process.stdout.write('keyd OK\n') })
      case 'backup export': return await withAdmin(paths, socketPath, async c => { await backupExport(c, values) })
      case 'backup restore': return await withAdmin(paths, socketPath, async c => { await backupRestore(c, values) })
      case 'key create': return await withAdmin(paths, socketPath, async c => {
        if (values.name === undefined || values.type === undefined) throw new UsageError('key create needs --name and --type')
        const k = await c.createKey(values.name, values.type, values.usage ?? 'tls-server')
        process.stdout.write(`created ${k.name} v${k.version} (${k.type})\n`)
      })
      default:
        if (isOfflineKeyCommand(cmd, values)) return runOfflineKeyCommand(cmd, values)
        if (cmd.startsWith('key ')) {
          let code: number | undefined
          await withAdmin(paths, socketPath, async c => { code = await runKeyCommand(c, cmd, values) })
          if (code !== undefined) return code
        }
        process.stderr.write(`keyedge keyd: unknown command "${cmd}"\n\n${keydUsage()}`)
        return 2
    }
  } catch (err) {
    if (err instanceof UsageError || err instanceof KeyUsageError || err instanceof BackupUsageError || err instanceof AuditUsageError) { process.stderr.write(`keyedge keyd ${cmd}: ${err.message}\n`); return 2 }
    if (err instanceof KeydError || err instanceof PrivilegeError) { process.stderr.write(`keyedge keyd: ${err.message} (${err.code})\n`); return 1 }
    throw err
  }
}

class UsageError extends Error {}

/** One line from a stream (the share, typed or piped), without echoing it anywhere. */
async function readLine (stream: NodeJS.ReadableStream): Promise<string> {
  let text = ''
  for await (const chunk of stream) {
    text += String(chunk)
    if (text.includes('\n')) break
  }
  const end = text.indexOf('\n')
  return (end === -1 ? text : text.slice(0, end)).trim()
}

async function withAdmin (paths: ReturnType<typeof homePaths>, socketPath: string, fn: (c: KeydClient) => Promise<void>): Promise<number> {
  const c = new KeydClient({ socketPath, clientName: 'admin', secretFile: join(paths.secretsDir, 'admin.secret'), timeoutMs: 30000 })
  try {
    await fn(c)
    return 0
  } finally {
    c.close()
  }
}

/** The passphrase in `file`, without its final newline. */
function readPassphrase (file: string): string {
  return readFileSync(file, 'utf8').replace(/\r?\n$/, '')
}

/** The master-key source from the flags: --dev, --passphrase-file, or KEYEDGE_KEYD_PASSPHRASE. */
function masterKeySource (dev: boolean, passphraseFile: string | undefined, alreadyRead?: string): MasterKeySource | undefined {
  if (dev) return { kind: 'dev' }
  const passphrase = alreadyRead ?? (passphraseFile !== undefined ? readPassphrase(passphraseFile) : process.env.KEYEDGE_KEYD_PASSPHRASE)
  return passphrase === undefined ? undefined : { kind: 'passphrase', passphrase }
}

function auditFiles (paths: ReturnType<typeof homePaths>): { file: string, checkpointFile: string } {
  return { file: join(paths.keydDir, 'audit.log'), checkpointFile: join(paths.keydDir, 'audit.head') }
}

/** The audit chain key, derived from the master key the flags give (which is wiped at once). */
function auditChainKey (paths: ReturnType<typeof homePaths>, dev: boolean, passphraseFile: string | undefined, what: string): Buffer {
  const source = masterKeySource(dev, passphraseFile)
  if (source === undefined) throw new UsageError(`${what} needs the master key: --dev, --passphrase-file F or KEYEDGE_KEYD_PASSPHRASE`)
  const master = loadMasterKey(paths.keydDir, source)
  try {
    return auditKey(master.key)
  } finally {
    master.key.fill(0)
  }
}

function auditVerify (paths: ReturnType<typeof homePaths>, dev: boolean, passphraseFile: string | undefined): number {
  const key = auditChainKey(paths, dev, passphraseFile, 'audit verify')
  const { file, checkpointFile } = auditFiles(paths)
  const r = verifyAuditLog(file, checkpointFile, key)
  key.fill(0)
  for (const p of r.problems) process.stdout.write(`PROBLEM: ${p}\n`)
  process.stdout.write(`written: ${r.entries} entries (last seq ${r.lastSeq}), durability ${r.durability ?? 'not recorded'}\n`)
  for (const a of r.acknowledgedNotWritten) process.stdout.write(`acknowledged but not written: ${a}\n`)
  for (const a of r.neverAcknowledged) process.stdout.write(`never acknowledged: ${a}\n`)
  process.stdout.write(`${r.problems.length === 0 ? 'audit log OK' : 'audit log FAILED'}: ${r.entries} entries, last seq ${r.lastSeq}, checkpoint seq ${r.checkpointSeq ?? 'none'}\n`)
  return r.problems.length === 0 ? 0 : 1
}

/** The PKCS#11 flags, all or none; the PIN from --pkcs11-pin-file or KEYEDGE_PKCS11_PIN. */
function pkcs11Options (values: { 'pkcs11-module'?: string, 'pkcs11-token'?: string, 'pkcs11-pin-file'?: string }): TokenOptions | undefined {
  const module = values['pkcs11-module']
  const tokenLabel = values['pkcs11-token']
  if (module === undefined && tokenLabel === undefined && values['pkcs11-pin-file'] === undefined) return undefined
  if (module === undefined || tokenLabel === undefined) throw new UsageError('--pkcs11-module and --pkcs11-token go together')
  const pinFile = values['pkcs11-pin-file']
  const pin = pinFile !== undefined ? readFileSync(pinFile, 'utf8').replace(/\r?\n$/, '') : process.env.KEYEDGE_PKCS11_PIN
  if (pin === undefined) throw new UsageError('a PKCS#11 keystore needs --pkcs11-pin-file F or KEYEDGE_PKCS11_PIN')
  return { module, tokenLabel, pin }
}

async function serve (paths: ReturnType<typeof homePaths>, socketPath: string, dev: boolean, passphraseFile: string | undefined, audit: { mode: 'buffered' | 'fsync' | 'off', failClosed: boolean }, metricsPort?: number, pkcs11?: TokenOptions, proxySecretDir = paths.secretsDir, separation: Separation = {}, capacity?: number, nativeSign: { threads: number } | null = null): Promise<number> {
  const logger = createLogger({ name: 'keyd', level: process.env.KEYEDGE_LOG_LEVEL ?? 'info' })
  const asRoot = rootWarning('keyd', separation.runAs)
  if (asRoot !== undefined) logger.warn(asRoot)
  ensurePrivateDir(paths.home)
  ensurePrivateDir(paths.keydDir)
  let selfTests: ReturnType<typeof runSelfTests>
  try {
    selfTests = runSelfTests()
  } catch (err) {
    if (!(err instanceof SelfTestError)) throw err
    logger.fatal({ code: err.code }, `${err.message}; keyd refuses to serve`)
    return 1
  }
  // A restore that kill -9 interrupted: finished if it had committed, else dropped, before any key is read.
  const restorePaths = { keydDir: paths.keydDir, keysDir: paths.keysDir, policyFile: join(paths.keydDir, 'policy.json') }
  const recovered = recoverRestore(restorePaths)
  if (recovered !== 'none') logger.warn({ restore: recovered }, 'keyd found an interrupted restore: rolled forward if it had committed, else rolled back')
  const shamir = !dev && sealKind(paths.keydDir) === 'shamir'
  const source = shamir ? undefined : masterKeySource(dev, passphraseFile, separation.passphrase)
  if (!shamir && source === undefined) {
    process.stderr.write('keyedge keyd serve: no master key source: pass --dev (development), --passphrase-file F, set KEYEDGE_KEYD_PASSPHRASE, or "npx keyedge keyd init --shares N --threshold M" first\n')
    return 2
  }
  if (dev) {
    logger.warn({ masterKeyFile: join(paths.keydDir, 'master.key') }, '*** keyd is in DEVELOPMENT MODE: the master key is a plain file on disk. Do not use this for production keys. ***')
  }
  /** Opens the keystore and the audit log under `key`, then wipes it. */
  const openStore = async (key: Buffer): Promise<{ keystore: Keystore, audit: AuditLog | null, custody: CustodyKeys }> => {
    try {
      const keystore = pkcs11 === undefined ? new FileKeystore(paths.keysDir, key) : new Pkcs11Keystore({ ...pkcs11, masterKey: key })
      const custody = new CustodyKeys(paths.keydDir, key)
      const auditLog = audit.mode === 'off' ? null : await AuditLog.open({ ...auditFiles(paths), key: auditKey(key), logger, durability: audit.mode, failClosed: audit.failClosed })
      if (auditLog === null) logger.warn('*** keyd audit is OFF: operations are not recorded (benchmarks only) ***')
      for (const e of keystore.loadErrors) logger.error(e, 'keyd could not open a key file; that key is unavailable')
      return { keystore, audit: auditLog, custody }
    } finally {
      key.fill(0)
    }
  }
  const opened = source === undefined ? null : await openStore(loadMasterKey(paths.keydDir, source).key)
  const clients = new ClientRegistry(paths.clientsFile)
  const proxySecret = clients.ensure('proxy', ['sign'], proxySecretDir)
  // The proxy's user reads its secret through the socket group; every other secret stays 0600.
  if (separation.socketGroup !== undefined) {
    shareWithGroup(proxySecretDir, separation.socketGroup, 0o750)
    shareWithGroup(proxySecret, separation.socketGroup, 0o640)
  }
  clients.ensure('admin', ['sign', 'admin'], paths.secretsDir)
  const health: KeydHealth = {
    sealed: () => server.sealed,
    auditWritable: () => server.audit?.writable ?? true,
    auditBacklog: () => server.audit?.backlog ?? 0
  }
  const metrics = metricsPort === undefined ? null : new KeydMetrics(health, { selfTests: selfTests.tests, capacity: capacity ?? measureSignCapacity() })
  const server: KeydServer = new KeydServer({
    metrics,
    nativeSign,
    policy: new KeyPolicy(join(paths.keydDir, 'policy.json')),
    socketPath,
    socketGroup: separation.socketGroup,
    keystore: opened?.keystore ?? null,
    clients,
    logger,
    devMode: dev,
    audit: opened?.audit ?? null,
    custody: opened?.custody ?? null,
    backup: new BackupService(restorePaths, { applyPolicy: p => server.setPolicy(p) }),
    sealed: shamir ? { threshold: shamirParams(paths.keydDir).threshold, unseal: async shares => await openStore(unsealShamir(paths.keydDir, shares)) } : undefined
  })
  await server.listen()
  metrics?.watchSignatures(() => server.signatures)
  metrics?.knownClients(clients.list().map(c => c.name))
  const http = metrics === null ? null : await startMetricsServer(metrics, health, metricsPort as number)
  // `keyCount`, not `keys`: the logger redacts every field named `keys` (src/logger.ts REDACT_PATHS).
  logger.info({ metricsPort: http?.port ?? null, socket: socketPath, uid: process.getuid?.() ?? null, socketGroup: separation.socketGroup ?? null, sealed: server.sealed, keyCount: opened?.keystore.list().length ?? null, keystore: opened?.keystore.kind ?? (pkcs11 === undefined ? 'file' : 'pkcs11'), devMode: dev, audit: audit.mode, auditSeq: opened?.audit?.seq ?? null, selfTests: selfTests.tests, selfTestMs: selfTests.ms, nativeSign: server.nativeSign }, 'keyd ready')
  if (server.sealed) logger.warn({ threshold: shamirParams(paths.keydDir).threshold }, 'keyd is SEALED: every key operation is refused until "npx keyedge keyd unseal" has been given the threshold of shares')
  await new Promise<void>(resolve => {
    const stop = (): void => { resolve() }
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
  })
  logger.info({ signatures: server.signatures, nativeSignatures: server.nativeSignatures }, 'keyd stopping')
  http?.server.close()
  await server.close()
  await server.audit?.close()
  return 0
}
