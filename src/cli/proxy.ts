// `keyedge proxy --config FILE [--workers N]`: validates the config, prepares the keyd bridge
// flags and runs the cluster primary until SIGINT/SIGTERM.

import { parseArgs } from 'node:util'
import { errorMessage } from '../../lib/errors.js'
import { loadConfig } from '../config/load.js'
import { ConfigInvalidError } from '../errors.js'
import { createLogger } from '../logger.js'
import { bridgeExecArgv, OPENSSL_CONFIG_NAME } from '../proxy/bridge-exec-argv.js'
import { join } from 'node:path'
import { runPrimary, workerCount } from '../proxy/cluster.js'
import { existsSync } from 'node:fs'
import { PrivilegeError, handOver, isRoot, resolveUser, rootWarning, type RunAs } from '../../lib/privileges.js'

export const PROXY_USAGE = `usage: keyedge proxy --config FILE [--workers N] [--user U[:G]]

Terminates TLS and forwards requests to the upstreams of FILE (see docs/configuration.md).

options:
  -c, --config FILE   the proxy config (JSON)
  -w, --workers N     number of worker processes (overrides "workers"; 0 = one per CPU)
  --user U[:G]        started as root: workers run as user U, group G (default U's primary group;
                      G must be keyd's socket group), and the primary drops to U:G once they listen
                      (a port below 1024 is bound before that)
  -h, --help          show this help
`

/** The options of `keyedge proxy` (deployment files are checked against them: test/deploy). */
export const PROXY_OPTIONS = {
  config: { type: 'string', short: 'c' },
  workers: { type: 'string', short: 'w' },
  user: { type: 'string' },
  help: { type: 'boolean', short: 'h' }
} as const

/** Runs the proxy; resolves the process exit code (0 after a graceful stop). */
export async function main (argv: string[]): Promise<number> {
  let values: { config?: string, workers?: string, user?: string, help?: boolean }
  try {
    values = parseArgs({
      args: argv,
      options: PROXY_OPTIONS,
      strict: true,
      allowPositionals: false
    }).values
  } catch (err) {
    process.stderr.write(`${errorMessage(err)}\n\n${PROXY_USAGE}`)
    return 2
  }
  if (values.help === true) {
    process.stdout.write(PROXY_USAGE)
    return 0
  }
  if (values.config === undefined) {
    process.stderr.write(`missing --config\n\n${PROXY_USAGE}`)
    return 2
  }
  let workersOverride: number | undefined
  if (values.workers !== undefined) {
    workersOverride = Number(values.workers)
    if (!/^\d+$/.test(values.workers) || workersOverride > 1024) {
      process.stderr.write(`--workers must be an integer between 0 and 1024\n`)
      return 2
    }
  }
  let runAs: RunAs | undefined
  try {
    runAs = values.user === undefined ? undefined : resolveUser(values.user)
    if (runAs !== undefined && !isRoot()) throw new PrivilegeError(`--user ${runAs.spec} needs the proxy to start as root; without root, start it as that user directly (and leave out --user)`)
  } catch (err) {
    if (!(err instanceof PrivilegeError)) throw err
    process.stderr.write(`${err.message} (${err.code})\n`)
    return 1
  }
  let config
  try {
    config = loadConfig(values.config)
  } catch (err) {
    if (err instanceof ConfigInvalidError) {
      process.stderr.write(`${err.message}\n`)
      return 1
    }
    throw err
  }
  const log = createLogger({ level: config.log.level, name: 'keyedge-proxy' }).child({ role: 'primary' })
  const asRoot = rootWarning('the proxy', runAs)
  if (asRoot !== undefined) log.warn(asRoot)
  let execArgv: string[]
  try {
    const made = !existsSync(config.stateDir)
    execArgv = await bridgeExecArgv(config, log)
    // Written as root: the workers, as runAs, read the OpenSSL config there.
    if (runAs !== undefined && execArgv.length > 0) handOver(config.stateDir, made, [join(config.stateDir, OPENSSL_CONFIG_NAME)], runAs)
  } catch (err) {
    if (err instanceof ConfigInvalidError || err instanceof PrivilegeError) {
      process.stderr.write(`${err.message}${err instanceof PrivilegeError ? ` (${err.code})` : ''}\n`)
      return 1
    }
    throw err
  }
  return await runPrimary({
    config,
    configFile: config.file ?? values.config,
    workers: workerCount(config, workersOverride),
    log,
    execArgv,
    runAs
  })
}
