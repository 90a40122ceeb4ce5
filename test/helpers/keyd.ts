// Starts a real keyd (development mode) in a temporary home for a test, with an admin client.
import { join } from 'node:path'
import { homePaths, type HomePaths } from '../../keyd/home.js'
import { KeydClient } from '../../keyd/client/client.js'
import { spawnCli, type Spawned } from './processes.js'
import { tempHome } from './paths.js'

export interface TestKeyd extends Spawned {
  paths: HomePaths
  admin: KeydClient
  client: (name: 'admin' | 'proxy') => KeydClient
}

export async function startKeyd (home = tempHome(), extraArgs: string[] = [], env: Record<string, string> = {}): Promise<TestKeyd> {
  const paths = homePaths(home)
  const s = spawnCli(['keyd', 'serve', '--dev', ...extraArgs], { KEYEDGE_HOME: home, ...env })
  await s.waitFor(o => o.msg === 'keyd ready')
  const client = (name: 'admin' | 'proxy'): KeydClient => new KeydClient({ socketPath: paths.socket, clientName: name, secretFile: join(paths.secretsDir, `${name}.secret`), timeoutMs: 10000 })
  const admin = client('admin')
  const stop = async (signal?: NodeJS.Signals): Promise<void> => { admin.close(); await s.stop(signal) }
  return { ...s, stop, paths, admin, client }
}
