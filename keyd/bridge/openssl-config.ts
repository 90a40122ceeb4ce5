// Locates the bridge provider and writes the OpenSSL config that makes Node (and any
// OpenSSL 3 program) load it, so key references in `key:` are signed by keyd.
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { BridgeMissingError, KeydConfigError } from '../errors.js'
import { writeFileAtomic } from '../../lib/atomic-file.js'

const SO_RELATIVE = path.join('keyd', 'bridge', 'build', 'Release', 'keyedge_provider.so')

/** Options of {@link writeOpensslConfig}. */
export interface OpensslConfigOptions {
  /** Where to write the config (replaced atomically, mode 0600). */
  file: string
  /** Absolute path of the provider; default {@link bridgeProviderPath}(). */
  providerPath?: string
  /** keyd's unix socket. */
  socketPath: string
  /** Client name sent in HELLO. */
  clientName: string
  /** File holding the client secret (its bytes, trailing whitespace trimmed, are sent). */
  secretFile: string
  /** Bound on each keyd round trip, connect included, in milliseconds. */
  timeoutMs: number
  /**
   * Circuit breaker: how long calls fail at once after keyd timed out or was unreachable, first
   * (default 250 ms; 0 turns the breaker off) and at most (default 5000 ms) as failed probes double it.
   */
  breakerMinMs?: number
  breakerMaxMs?: number
}

/**
 * Absolute path of the built provider. Works from the source tree (keyd/bridge/) and
 * from the compiled tree (dist/keyd/bridge/).
 * @throws BridgeMissingError (KEYD_ERR_BRIDGE_MISSING) when it has not been built.
 */
export function bridgeProviderPath (): string {
  const here = path.dirname(fileURLToPath(import.meta.url))
  const candidates: [string, string] = [
    path.resolve(here, '..', '..', '..', SO_RELATIVE), // dist/keyd/bridge -> repo root
    path.resolve(here, '..', '..', SO_RELATIVE) // keyd/bridge -> repo root
  ]
  for (const candidate of candidates) {
    if (fs.existsSync(candidate)) return candidate
  }
  throw new BridgeMissingError(candidates[0])
}

/** OpenSSL config values: `\`, `$`, `#` and quotes are special, line breaks impossible. */
function confValue (name: string, value: string): string {
  if (value === '' || /[\r\n\0]/.test(value)) {
    throw new KeydConfigError(`openssl config: ${name} must be a non-empty single line`)
  }
  return value.replace(/[\\$#"']/g, (c) => '\\' + c)
}

/**
 * Writes an OpenSSL config activating the `default` provider and the keyd bridge, with
 * `default` preferred for every algorithm the bridge does not own. Node reads the
 * `nodejs_conf` section, the `openssl` tool `openssl_conf`: both point at it.
 * @throws BridgeMissingError (KEYD_ERR_BRIDGE_MISSING) when providerPath is absent and the bridge is not built.
 * @throws KeydConfigError (KEYD_ERR_CONFIG_INVALID) for a value the config cannot hold.
 */
export function writeOpensslConfig (opts: OpensslConfigOptions): void {
  if (!Number.isInteger(opts.timeoutMs) || opts.timeoutMs <= 0) {
    throw new KeydConfigError('openssl config: timeoutMs must be a positive integer')
  }
  for (const [name, v] of [['breakerMinMs', opts.breakerMinMs], ['breakerMaxMs', opts.breakerMaxMs]] as const) {
    if (v !== undefined && (!Number.isInteger(v) || v < 0 || v > 3600000)) {
      throw new KeydConfigError(`openssl config: ${name} must be an integer from 0 to 3600000`)
    }
  }
  const socketPath = path.resolve(opts.socketPath)
  if (Buffer.byteLength(socketPath) > 107) {
    throw new KeydConfigError(`openssl config: socketPath is longer than the 107 bytes a unix socket path allows: ${socketPath}`)
  }
  const providerPath = opts.providerPath ?? bridgeProviderPath()
  const text = [
    '# Written by keyedge: loads the keyd bridge provider. Holds no secret.',
    'nodejs_conf = keyedge_init',
    'openssl_conf = keyedge_init',
    '',
    '[keyedge_init]',
    'providers = keyedge_providers',
    'alg_section = keyedge_algorithms',
    '',
    '[keyedge_providers]',
    'default = keyedge_default_provider',
    'keyedge = keyedge_bridge_provider',
    '',
    '[keyedge_default_provider]',
    'activate = 1',
    '',
    '[keyedge_bridge_provider]',
    `module = ${confValue('providerPath', path.resolve(providerPath))}`,
    `keyd_socket = ${confValue('socketPath', socketPath)}`,
    `client_name = ${confValue('clientName', opts.clientName)}`,
    `client_secret_file = ${confValue('secretFile', path.resolve(opts.secretFile))}`,
    `timeout_ms = ${opts.timeoutMs}`,
    ...(opts.breakerMinMs !== undefined ? [`breaker_min_ms = ${opts.breakerMinMs}`] : []),
    ...(opts.breakerMaxMs !== undefined ? [`breaker_max_ms = ${opts.breakerMaxMs}`] : []),
    'activate = 1',
    '',
    '[keyedge_algorithms]',
    'default_properties = ?provider=default',
    ''
  ].join('\n')
  writeFileAtomic(opts.file, text, 0o600)
}

/** Node flags that make a (worker) process read the config written above. */
export function opensslExecArgv (file: string): string[] {
  return ['--openssl-config=' + file]
}
