// The token endpoint of `keyedge start`: a keyd key for JWTs, the proxy's grant to sign with it, and
// one development caller whose bearer secret is generated on the first run (0600, printed once).
import { existsSync, readFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import type { HomePaths } from '../../lib/home.js'
import { ensurePrivateDir } from '../../lib/home.js'
import { writeFileAtomic } from '../../lib/atomic-file.js'
import { errorMessage } from '../../lib/errors.js'
import { KeydClient } from '../../keyd/client/client.js'
import { JWS_TO_KEYD } from '../token/jws.js'

/** The keyd key whose versions sign the development tokens (`keyedge keyd key rotate --name dev-token`). */
export const DEV_TOKEN_KEY = 'dev-token'
/** The development caller: its name (the tokens' `client_id`) and its one audience. */
export const DEV_CALLER = 'dev'
export const DEV_AUDIENCE = 'dev'

/** Where the token endpoint's development files live: `<home>/token/dev.secret`. */
export function devTokenPaths (paths: HomePaths): { dir: string, secretFile: string } {
  const dir = join(paths.home, 'token')
  return { dir, secretFile: join(dir, `${DEV_CALLER}.secret`) }
}

export interface DevToken {
  secretFile: string
  /** The caller's secret, only on the run that created it (so it is printed exactly once). */
  newSecret?: string
}

/**
 * Makes sure the token key exists in keyd, that keyd's `proxy` client may sign with it (the
 * `token-sign` usage added to its entry of clients.json), and that the development caller has a
 * secret. When it had to grant, waits for `reloaded(since)` (keyd rereads clients.json within a
 * second and logs it), then checks with one signature, so the proxy's start-up check of the token
 * key cannot race the grant (nor count as an access violation). @throws when keyd refuses past `deadlineMs`
 */
export async function ensureDevToken (admin: KeydClient, paths: HomePaths, reloaded: (since: number) => Promise<unknown>, deadlineMs = 10_000): Promise<DevToken> {
  if (!(await admin.listKeys()).some(k => k.name === DEV_TOKEN_KEY)) await admin.createKey(DEV_TOKEN_KEY, 'ec-p256', 'token-sign')
  const since = Date.now()
  if (grantTokenSign(paths.clientsFile, 'proxy', DEV_TOKEN_KEY)) await reloaded(since)
  const proxy = new KeydClient({ socketPath: paths.socket, clientName: 'proxy', secretFile: join(paths.secretsDir, 'proxy.secret'), timeoutMs: 2000 })
  const deadline = Date.now() + deadlineMs
  try {
    for (;;) {
      try {
        await proxy.sign(DEV_TOKEN_KEY, JWS_TO_KEYD.ES256.keyd, Buffer.from('keyedge start: token grant check'), { ieeeP1363: true })
        break
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`keyd does not let the proxy sign with ${DEV_TOKEN_KEY}: ${errorMessage(err)}`, { cause: err })
        proxy.close() // rights may be bound to a connection: the next try opens a new one
        await new Promise(resolve => setTimeout(resolve, 200))
      }
    }
  } finally {
    proxy.close()
  }
  const { dir, secretFile } = devTokenPaths(paths)
  ensurePrivateDir(dir)
  if (existsSync(secretFile)) return { secretFile }
  const secret = randomBytes(32).toString('base64url')
  writeFileAtomic(secretFile, secret + '\n', 0o600)
  return { secretFile, newSecret: secret }
}

/** Adds usage `token-sign` (and `key`, unless it may use every key) to client `name` in keyd's clients file; false if it had them. */
function grantTokenSign (clientsFile: string, name: string, key: string): boolean {
  const doc = JSON.parse(readFileSync(clientsFile, 'utf8')) as { clients: Array<{ name: string, usages?: string[], keys?: string[] }> }
  const entry = doc.clients.find(c => c.name === name)
  if (entry === undefined) throw new Error(`${clientsFile}: no client "${name}"`)
  const usages = entry.usages ?? ['tls-server']
  const keys = entry.keys ?? ['*']
  if (usages.includes('token-sign') && (keys.includes('*') || keys.includes(key))) return false
  entry.usages = usages.includes('token-sign') ? usages : [...usages, 'token-sign']
  entry.keys = keys.includes('*') || keys.includes(key) ? keys : [...keys, key]
  writeFileAtomic(clientsFile, JSON.stringify(doc, null, 2) + '\n', 0o600)
  return true
}

/** The `token` section of the development proxy config. */
export function devTokenConfig (secretFile: string, port: number): object {
  return {
    listen: { host: '127.0.0.1', port },
    // With port 0 (tests) the endpoint adds the port it got (boundIssuer in src/token/server.ts).
    issuer: port === 0 ? 'http://localhost' : `http://localhost:${port}`,
    key: { name: DEV_TOKEN_KEY, algorithm: 'ES256' },
    callers: [{ name: DEV_CALLER, secretFile, audiences: [DEV_AUDIENCE], claims: ['sub', 'scope'] }]
  }
}

/** The shell command that gets a token: with the secret itself, or reading it from its file. */
export function tokenCurl (url: string, token: DevToken): string {
  const bearer = token.newSecret !== undefined ? `'authorization: Bearer ${token.newSecret}'` : `"authorization: Bearer $(cat '${token.secretFile}')"`
  return `curl -s ${url}/token -H ${bearer} -H 'content-type: application/json' -d '{"audience":"${DEV_AUDIENCE}","claims":{"sub":"me"}}'`
}
