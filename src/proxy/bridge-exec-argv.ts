// Decides the extra node flags proxy workers start with: the OpenSSL config that loads the keyd
// bridge provider, written next to keyd's socket. One small function so it is easy to adjust.

import { dirname, join } from 'node:path'
import type { Logger } from 'pino'
import type { EdgeConfig } from '../config/types.js'

interface OpensslConfigModule {
  writeOpensslConfig: (opts: { file: string, providerPath?: string, socketPath: string, clientName: string, secretFile: string, timeoutMs: number }) => void
  opensslExecArgv: (file: string) => string[]
}

/** Where keyd/bridge/openssl-config.js lands relative to this file once compiled (dist/src/proxy → dist/keyd/bridge). */
const OPENSSL_CONFIG_MODULE = new URL('../../keyd/bridge/openssl-config.js', import.meta.url).href

/**
 * Writes `<dir of keyd socket>/openssl-proxy.cnf` and returns the node flags that load it, when
 * the config has a `keyd` section and the bridge's config writer is available; otherwise [].
 */
export async function bridgeExecArgv (config: EdgeConfig, log: Logger): Promise<string[]> {
  if (config.keyd === undefined) return []
  let mod: OpensslConfigModule
  try {
    mod = await import(OPENSSL_CONFIG_MODULE) as OpensslConfigModule
  } catch (err) {
    log.warn({ code: (err as NodeJS.ErrnoException).code }, 'keyd bridge config writer not available: workers start without the bridge, key references will not load')
    return []
  }
  const file = join(dirname(config.keyd.socket), 'openssl-proxy.cnf')
  mod.writeOpensslConfig({
    file,
    socketPath: config.keyd.socket,
    clientName: config.keyd.clientName,
    secretFile: config.keyd.secretFile,
    timeoutMs: config.keyd.timeoutMs
  })
  log.info({ opensslConfig: file }, 'workers will load the keyd bridge')
  return mod.opensslExecArgv(file)
}
