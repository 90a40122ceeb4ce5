// Decides the extra node flags proxy workers start with: the OpenSSL config that loads the keyd
// bridge provider, written in the proxy's own state directory (`stateDir`), never in keyd's socket
// directory: that one belongs to keyd (another user, once the two are separated). One small
// function so it is easy to adjust.

import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import type { Logger } from 'pino'
import type { EdgeConfig } from '../config/types.js'
import { ConfigInvalidError } from '../errors.js'

interface OpensslConfigModule {
  writeOpensslConfig: (opts: { file: string, providerPath?: string, socketPath: string, clientName: string, secretFile: string, timeoutMs: number }) => void
  opensslExecArgv: (file: string) => string[]
}

/** Where keyd/bridge/openssl-config.js lands relative to this file once compiled (dist/src/proxy → dist/keyd/bridge). */
const OPENSSL_CONFIG_MODULE = new URL('../../keyd/bridge/openssl-config.js', import.meta.url).href

/** The file name of the bridge's OpenSSL config inside `stateDir`. */
export const OPENSSL_CONFIG_NAME = 'openssl-proxy.cnf'

/**
 * Writes `<stateDir>/openssl-proxy.cnf` and returns the node flags that load it, when the config
 * has a `keyd` section and the bridge's config writer is available; otherwise [].
 * @throws ConfigInvalidError (EDGE_ERR_CONFIG_INVALID) when `stateDir` cannot be created or written.
 */
export async function bridgeExecArgv (config: EdgeConfig, log: Logger): Promise<string[]> {
  if (config.keyd === undefined) return []
  let mod: OpensslConfigModule
  try {
    mod = await import(OPENSSL_CONFIG_MODULE) as OpensslConfigModule
  } catch (err) {
    log.warn({ code: err instanceof Error && 'code' in err ? err.code : undefined }, 'keyd bridge config writer not available: workers start without the bridge, key references will not load')
    return []
  }
  const file = join(config.stateDir, OPENSSL_CONFIG_NAME)
  try {
    mkdirSync(config.stateDir, { recursive: true, mode: 0o700 })
    mod.writeOpensslConfig({
      file,
      socketPath: config.keyd.socket,
      clientName: config.keyd.clientName,
      secretFile: config.keyd.secretFile,
      timeoutMs: config.keyd.timeoutMs
    })
  } catch (err) {
    // A file-system refusal (EACCES, EROFS, ENOTDIR…) is the operator's to fix; anything else is not ours to rename.
    if (!(err instanceof Error) || !('syscall' in err) || !('code' in err) || typeof err.code !== 'string') throw err
    throw new ConfigInvalidError([`stateDir: cannot write ${file} (${err.code}): the proxy writes the OpenSSL config that loads the keyd bridge there; point "stateDir" at a directory the proxy may write`], config.file)
  }
  log.info({ opensslConfig: file }, 'workers will load the keyd bridge')
  return mod.opensslExecArgv(file)
}
