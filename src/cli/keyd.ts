// `keyedge keyd …`: run the key daemon, and manage its keys through its socket (never by reading the store).
import { parseArgs } from 'node:util'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { homePaths, ensurePrivateDir } from '../../keyd/home.js'
import { loadMasterKey, type MasterKeySource } from '../../keyd/keystore/master-key.js'
import { FileKeystore } from '../../keyd/keystore/file-keystore.js'
import { ClientRegistry } from '../../keyd/server/clients.js'
import { KeydServer } from '../../keyd/server/server.js'
import { KeydClient } from '../../keyd/client/client.js'
import { KEY_TYPES, USAGES } from '../../keyd/algorithms.js'
import { KeydError } from '../../keyd/errors.js'
import { createLogger } from '../logger.js'

const USAGE = `Usage: keyedge keyd <command> [options]

Commands:
  serve                 run the key daemon on $KEYEDGE_HOME/keyd.sock
  ping                  check that keyd answers
  key create            generate a key inside keyd
  key list              list keys (name, type, usage, versions)
  key public            print a key's public key (PEM)

Common options:
  --home DIR            state directory (default $KEYEDGE_HOME or ./.keyedge)
  --socket PATH         keyd socket (default <home>/keyd.sock)
  -h, --help            this help

serve options:
  --dev                 development mode: the master key is a generated 0600 file (not for production)
  --passphrase-file F   unseal the keystore with the passphrase in F (or set KEYEDGE_KEYD_PASSPHRASE)

key create options:
  --name N              key name ([a-z0-9][a-z0-9._-]{0,63})
  --type T              ${KEY_TYPES.join(' | ')}
  --usage U             ${USAGES.join(' | ')} (default tls-server)

key public options:
  --name N  [--version V]
`

const options = {
  help: { type: 'boolean', short: 'h' },
  home: { type: 'string' },
  socket: { type: 'string' },
  dev: { type: 'boolean' },
  'passphrase-file': { type: 'string' },
  name: { type: 'string' },
  type: { type: 'string' },
  usage: { type: 'string' },
  version: { type: 'string' }
} as const

export async function main (argv: string[]): Promise<number> {
  let parsed
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true })
  } catch (err) {
    process.stderr.write(`keyedge keyd: ${(err as Error).message}\n\n${USAGE}`)
    return 2
  }
  const { values, positionals } = parsed
  const cmd = positionals.join(' ')
  if (values.help === true || cmd === '') {
    process.stdout.write(USAGE)
    return cmd === '' && values.help !== true ? 2 : 0
  }
  const paths = homePaths(values.home)
  const socketPath = values.socket ?? paths.socket
  try {
    switch (cmd) {
      case 'serve': return await serve(paths, socketPath, values.dev === true, values['passphrase-file'])
      case 'ping': return await withAdmin(paths, socketPath, async c => { await c.ping(); process.stdout.write('keyd OK\n') })
      case 'key create': return await withAdmin(paths, socketPath, async c => {
        if (values.name === undefined || values.type === undefined) throw new UsageError('key create needs --name and --type')
        const k = await c.createKey(values.name, values.type, values.usage ?? 'tls-server')
        process.stdout.write(`created ${k.name} v${k.version} (${k.type})\n`)
      })
      case 'key list': return await withAdmin(paths, socketPath, async c => {
        for (const k of await c.listKeys()) process.stdout.write(`${k.name}\t${k.type}\t${k.usage}\tv${k.currentVersion}\t${k.createdAt}\n`)
      })
      case 'key public': return await withAdmin(paths, socketPath, async c => {
        if (values.name === undefined) throw new UsageError('key public needs --name')
        const k = await c.getPublicKey(values.name, Number(values.version ?? 0))
        process.stdout.write(k.publicKey.export({ format: 'pem', type: 'spki' }).toString())
      })
      default:
        process.stderr.write(`keyedge keyd: unknown command "${cmd}"\n\n${USAGE}`)
        return 2
    }
  } catch (err) {
    if (err instanceof UsageError) { process.stderr.write(`keyedge keyd: ${err.message}\n`); return 2 }
    if (err instanceof KeydError) { process.stderr.write(`keyedge keyd: ${err.message} (${err.code})\n`); return 1 }
    throw err
  }
}

class UsageError extends Error {}

async function withAdmin (paths: ReturnType<typeof homePaths>, socketPath: string, fn: (c: KeydClient) => Promise<void>): Promise<number> {
  const c = new KeydClient({ socketPath, clientName: 'admin', secretFile: join(paths.secretsDir, 'admin.secret'), timeoutMs: 30000 })
  try {
    await fn(c)
    return 0
  } finally {
    c.close()
  }
}

async function serve (paths: ReturnType<typeof homePaths>, socketPath: string, dev: boolean, passphraseFile: string | undefined): Promise<number> {
  const logger = createLogger({ name: 'keyd', level: process.env.KEYEDGE_LOG_LEVEL ?? 'info' })
  ensurePrivateDir(paths.home)
  ensurePrivateDir(paths.keydDir)
  let source: MasterKeySource
  if (dev) {
    source = { kind: 'dev' }
  } else {
    const passphrase = passphraseFile !== undefined ? readFileSync(passphraseFile, 'utf8').replace(/\r?\n$/, '') : process.env.KEYEDGE_KEYD_PASSPHRASE
    if (passphrase === undefined) {
      process.stderr.write('keyedge keyd serve: no master key source: pass --dev (development), --passphrase-file F, or set KEYEDGE_KEYD_PASSPHRASE\n')
      return 2
    }
    source = { kind: 'passphrase', passphrase }
  }
  const master = loadMasterKey(paths.keydDir, source)
  if (dev) {
    logger.warn({ masterKeyFile: join(paths.keydDir, 'master.key') }, '*** keyd is in DEVELOPMENT MODE: the master key is a plain file on disk. Do not use this for production keys. ***')
  }
  const keystore = new FileKeystore(paths.keysDir, master.key)
  master.key.fill(0)
  for (const e of keystore.loadErrors) logger.error(e, 'keyd could not open a key file; that key is unavailable')
  const clients = new ClientRegistry(paths.clientsFile)
  clients.ensure('proxy', ['sign'], paths.secretsDir)
  clients.ensure('admin', ['sign', 'admin'], paths.secretsDir)
  const server = new KeydServer({ socketPath, keystore, clients, logger, devMode: dev })
  await server.listen()
  logger.info({ socket: socketPath, keys: keystore.list().length, devMode: dev }, 'keyd ready')
  await new Promise<void>(resolve => {
    const stop = (): void => { resolve() }
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
  })
  logger.info({ signatures: server.stats.signatures }, 'keyd stopping')
  await server.close()
  return 0
}
