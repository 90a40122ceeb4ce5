// Starts a real keyd (development mode) in a temporary home for a test, with an admin client.
import { join, dirname } from 'node:path'
import { existsSync, mkdirSync } from 'node:fs'
import { homePaths, type HomePaths } from '../../lib/home.js'
import { KeydClient } from '../../keyd/client/client.js'
import { spawnCli, spawnLogged, type Spawned } from './processes.js'
import { KeydRemoteError } from '../../keyd/errors.js'
import { tempHome } from './paths.js'
import { ClientRegistry } from '../../keyd/server/clients.js'

export interface TestKeyd extends Spawned {
  paths: HomePaths
  admin: KeydClient
  client: (name: 'admin' | 'proxy') => KeydClient
}

/**
 * Most tests use `proxy` as a general signing client, so on a fresh home it is created before keyd
 * starts with the tls-server and token-sign usages (what a proxy with a token endpoint is granted);
 * `keydDefaults: true` leaves the clients to keyd's own defaults (the proxy: tls-server only); `cli`
 * runs another build's `main.js` instead of this one's.
 */
export async function startKeyd (home = tempHome(), extraArgs: string[] = [], env: Record<string, string> = {}, opts: { keydDefaults?: boolean, cli?: string } = {}): Promise<TestKeyd> {
  const paths = homePaths(home)
  if (opts.keydDefaults !== true && !existsSync(paths.clientsFile)) {
    mkdirSync(dirname(paths.clientsFile), { recursive: true, mode: 0o700 })
    new ClientRegistry(paths.clientsFile).ensure('proxy', ['sign'], paths.secretsDir, { usages: ['tls-server', 'token-sign'], keys: ['*'] })
  }
  const args = ['keyd', 'serve', '--dev', ...extraArgs]
  const s = opts.cli === undefined ? spawnCli(args, { KEYEDGE_HOME: home, ...env }) : spawnLogged(process.execPath, [opts.cli, ...args], { KEYEDGE_HOME: home, ...env })
  await s.waitFor(o => o.msg === 'keyd ready')
  const client = (name: 'admin' | 'proxy'): KeydClient => new KeydClient({ socketPath: paths.socket, clientName: name, secretFile: join(paths.secretsDir, `${name}.secret`), timeoutMs: 10000 })
  const admin = client('admin')
  const stop = async (signal?: NodeJS.Signals): Promise<void> => { admin.close(); await s.stop(signal) }
  return { ...s, stop, paths, admin, client }
}

/** Runs `keyedge keyd …` with KEYEDGE_HOME=`home`; resolves with its exit code and output. */
export async function keydCli (home: string, args: string[]): Promise<{ code: number | null, out: string }> {
  const run = spawnCli(['keyd', ...args], { KEYEDGE_HOME: home })
  const { code } = await run.exited
  return { code, out: run.lines.join('\n') }
}

/** Resolves with the keyd refusal `p` rejects with; throws if it resolves or fails otherwise. */
export async function refusal (p: Promise<unknown>): Promise<KeydRemoteError> {
  const err = await p.then(() => undefined, (e: unknown) => e)
  if (!(err instanceof KeydRemoteError)) throw new Error(`expected a keyd refusal, got ${String(err)}`)
  return err
}
