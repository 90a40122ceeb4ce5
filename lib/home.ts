// Where keyedge keeps its state: one directory, `$KEYEDGE_HOME` or ./.keyedge, and the paths inside it.
// In lib/ because both sides read the layout: keyd's commands (its socket, keys, clients) and the
// proxy's (`start`, `cert`, `import`: the same socket, the certs directory, proxy.json).
import { mkdirSync, chmodSync } from 'node:fs'
import { resolve, join } from 'node:path'

/** The files and directories under one keyedge home. */
export interface HomePaths {
  home: string
  socket: string
  keydDir: string
  keysDir: string
  clientsFile: string
  secretsDir: string
  certsDir: string
  proxyConfig: string
}

/** The paths under `home` (default `$KEYEDGE_HOME`, else ./.keyedge), resolved to absolute paths. */
export function homePaths (home = process.env.KEYEDGE_HOME ?? '.keyedge'): HomePaths {
  const h = resolve(home)
  return {
    home: h,
    socket: join(h, 'keyd.sock'),
    keydDir: join(h, 'keyd'),
    keysDir: join(h, 'keyd', 'keys'),
    clientsFile: join(h, 'keyd', 'clients.json'),
    secretsDir: join(h, 'clients'),
    certsDir: join(h, 'certs'),
    proxyConfig: join(h, 'proxy.json')
  }
}

/** Creates a private (0700) directory, tightening it if it exists. */
export function ensurePrivateDir (dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  chmodSync(dir, 0o700)
}
