// Who may talk to keyd: named clients, each proven by a secret whose SHA-256 keyd keeps, with rights:
// operations (`sign`, `admin`, `issue`), the key usages it may sign with, and the keys it may use.
import { existsSync, mkdirSync, readFileSync, chmodSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import type { Logger } from 'pino'
import { writeFileAtomic } from '../../lib/atomic-file.js'
import { secretBytes } from '../../lib/secret-file.js'
import { KeydConfigError } from '../errors.js'
import { USAGES, isUsage, type Usage } from '../algorithms.js'
import { mayIssue } from '../policy/access.js'
import { errorMessage } from '../../lib/errors.js'

/** `sign`: SIGN, SIGN_BATCH, GET_TICKET_KEYS. `admin`: key management. `issue`: may hold the cert-sign usage without being admin. */
export type Right = 'sign' | 'admin' | 'issue'
const RIGHTS: readonly Right[] = ['sign', 'admin', 'issue']

export interface Client {
  name: string
  secretSha256: string
  rights: Right[]
  /** Key usages this client may sign with. */
  usages: Usage[]
  /** Key names it may use, or `*` for every key of its usages. */
  keys: string[]
  /** True when clients.json gave no `usages` (a file from before usages existed): the migration default applies. */
  legacy?: boolean
}

/** What a client may use when created by keyd itself (`keyd serve` on a fresh home, `npm start`). */
export interface ClientGrant { usages: Usage[], keys: string[] }

/**
 * The defaults keyd writes for a new client: an admin is the issuer (`keyedge cert dev|renew` use it)
 * and may use every usage; any other client (the proxy) only tls-server keys. Token keys are granted
 * by adding `token-sign` and their names to that client's entry (docs/keyd.md, "Clients and rights").
 */
export function defaultGrant (rights: readonly Right[]): ClientGrant {
  return rights.includes('admin') ? { usages: [...USAGES], keys: ['*'] } : { usages: ['tls-server'], keys: ['*'] }
}

/**
 * The usages of a client whose entry has no `usages` (written before they existed): what such a
 * client needed then — tls-server and token-sign — but never cert-sign unless it is admin (the
 * issuer the old `keyedge cert` used). keyd logs a warning for each such client.
 */
export function legacyUsages (rights: readonly Right[]): Usage[] {
  return rights.includes('admin') ? [...USAGES] : ['tls-server', 'token-sign']
}

const CLIENT_NAME_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/
/** How often the clients file is checked for changes (an operator granting or revoking). */
const RELOAD_CHECK_MS = 1000

function sha256 (b: Uint8Array): Buffer {
  return createHash('sha256').update(b).digest()
}

function isStringList (v: unknown): v is string[] {
  return Array.isArray(v) && v.every(x => typeof x === 'string')
}

/** Parses and checks the clients file's text. @throws KeydConfigError naming the field */
export function parseClients (file: string, text: string): Map<string, Client> {
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch {
    throw new KeydConfigError(`${file}: not valid JSON`)
  }
  const clients = typeof raw === 'object' && raw !== null && 'clients' in raw ? raw.clients : undefined
  if (raw === null || typeof raw !== 'object' || (clients !== undefined && !Array.isArray(clients))) throw new KeydConfigError(`${file}: "clients" must be a list`)
  const next = new Map<string, Client>()
  for (const [i, c] of ((clients ?? []) as Array<Partial<Record<keyof Client, unknown>>>).entries()) {
    const at = `${file}: clients[${i}]`
    if (typeof c?.name !== 'string' || !CLIENT_NAME_RE.test(c.name)) throw new KeydConfigError(`${at}.name is not a valid client name`)
    if (next.has(c.name)) throw new KeydConfigError(`${at}.name: client ${c.name} is listed twice`)
    if (typeof c.secretSha256 !== 'string' || !/^[0-9a-f]{64}$/.test(c.secretSha256)) throw new KeydConfigError(`${at}.secretSha256 must be 64 hex characters`)
    if (!isStringList(c.rights) || !c.rights.every(r => (RIGHTS as string[]).includes(r))) throw new KeydConfigError(`${at}.rights must list ${RIGHTS.map(r => `"${r}"`).join(', ')}`)
    const rights = c.rights as Right[]
    if (c.keys !== undefined && !isStringList(c.keys)) throw new KeydConfigError(`${at}.keys must be a list of key names (or "*")`)
    if (c.usages !== undefined && (!isStringList(c.usages) || !c.usages.every(isUsage))) throw new KeydConfigError(`${at}.usages must list key usages (${USAGES.join(', ')})`)
    const usages = c.usages ?? legacyUsages(rights)
    if (usages.includes('cert-sign') && !mayIssue(rights)) {
      throw new KeydConfigError(`${at}.usages: cert-sign needs the "issue" or "admin" right (a cert-sign key makes certificates others trust)`)
    }
    next.set(c.name, { name: c.name, secretSha256: c.secretSha256, rights, usages, keys: c.keys ?? ['*'], ...(c.usages === undefined ? { legacy: true } : {}) })
  }
  return next
}

export class ClientRegistry {
  readonly #file: string
  #clients = new Map<string, Client>()
  #mtimeMs = -1
  #checkedAt = 0
  #logger: Logger | undefined

  /** @throws KeydConfigError if the file is malformed */
  constructor (file: string) {
    this.#file = file
    this.reload()
  }

  /**
   * Logs, from now on, each client on the migration default and each failed reload; logs the
   * current migrated clients at once.
   */
  useLogger (logger: Logger): void {
    this.#logger = logger
    this.#warnLegacy()
  }

  #warnLegacy (): void {
    for (const c of this.#clients.values()) {
      if (c.legacy !== true) continue
      this.#logger?.warn({ client: c.name, usages: c.usages, file: this.#file },
        'keyd client has no "usages" in clients.json (written by an older keyd): it gets the migration default, never cert-sign unless admin; write its usages explicitly')
    }
  }

  /** Re-reads the clients file. @throws KeydConfigError if it is malformed (the previous clients stay). */
  reload (): void {
    if (!existsSync(this.#file)) { this.#clients = new Map(); this.#mtimeMs = -1; return }
    const mtimeMs = statSync(this.#file).mtimeMs
    this.#clients = parseClients(this.#file, readFileSync(this.#file, 'utf8'))
    this.#mtimeMs = mtimeMs
  }

  /**
   * Re-reads the file if it changed since the last look (at most once a second), so a grant or a
   * revocation applies without restarting keyd. A malformed edit is logged and the previous clients kept.
   */
  refresh (now = Date.now()): void {
    if (now - this.#checkedAt < RELOAD_CHECK_MS) return
    this.#checkedAt = now
    let mtimeMs = -1
    try { mtimeMs = statSync(this.#file).mtimeMs } catch { /* no file (yet): -1 differs from any mtime */ }
    if (mtimeMs === this.#mtimeMs) return
    try {
      this.reload()
      this.#logger?.info({ file: this.#file, clients: this.#clients.size }, 'keyd clients file reloaded')
      this.#warnLegacy()
    } catch (err) {
      this.#mtimeMs = mtimeMs // do not retry the same broken file every second
      this.#logger?.error({ file: this.#file, err: errorMessage(err) }, 'keyd clients file is invalid; the previous clients stay in force')
    }
  }

  /** The client's current entry, or undefined once it was removed. */
  get (name: string): Client | undefined {
    return this.#clients.get(name)
  }

  list (): Client[] {
    return [...this.#clients.values()]
  }

  /** The client whose name and secret match, or undefined. Constant-time on the secret. */
  authenticate (name: string, secret: Uint8Array): Client | undefined {
    this.refresh()
    const c = this.#clients.get(name)
    const want = Buffer.from(c?.secretSha256 ?? '0'.repeat(64), 'hex')
    const ok = timingSafeEqual(sha256(secret), want)
    return c !== undefined && ok ? c : undefined
  }

  /**
   * Makes sure client `name` exists, creating its secret file (0600) under `secretsDir` if needed,
   * with `grant` (default: `defaultGrant(rights)`). An existing client keeps its entry as written.
   * Returns the secret file's path.
   */
  ensure (name: string, rights: Right[], secretsDir: string, grant: ClientGrant = defaultGrant(rights)): string {
    mkdirSync(secretsDir, { recursive: true, mode: 0o700 })
    chmodSync(secretsDir, 0o700)
    const secretFile = join(secretsDir, `${name}.secret`)
    const known = this.#clients.get(name)
    if (known !== undefined && existsSync(secretFile)) {
      const s = secretBytes(readFileSync(secretFile))
      if (sha256(s).toString('hex') === known.secretSha256) return secretFile
    }
    const secret = randomBytes(32).toString('base64url')
    writeFileAtomic(secretFile, secret + '\n')
    this.#clients.set(name, { name, secretSha256: sha256(Buffer.from(secret)).toString('hex'), rights, usages: [...grant.usages], keys: [...grant.keys] })
    this.#write()
    return secretFile
  }

  #write (): void {
    // Entries keep the shape they were read in: a legacy entry is not silently given usages.
    const entries = [...this.#clients.values()].map(({ legacy, usages, ...c }) => legacy === true ? c : { ...c, usages })
    writeFileAtomic(this.#file, JSON.stringify({ clients: entries }, null, 2) + '\n')
    try { this.#mtimeMs = statSync(this.#file).mtimeMs } catch { /* gone already: the next refresh rereads */ }
  }
}
