// Where keyedge keeps its state: one directory, `$KEYEDGE_HOME` or ./.keyedge, and the paths inside it.
import { mkdirSync, chmodSync } from 'node:fs'
import { resolve, join } from 'node:path'

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
