// Who may talk to keyd: named clients, each proven by a secret whose SHA-256 keyd keeps, with rights.
import { existsSync, mkdirSync, readFileSync, chmodSync } from 'node:fs'
import { join } from 'node:path'
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import { writeFileAtomic } from '../../lib/atomic-file.js'
import { secretBytes } from '../../lib/secret-file.js'
import { KeydConfigError } from '../errors.js'

export type Right = 'sign' | 'admin'
export interface Client { name: string, secretSha256: string, rights: Right[], keys: string[] }

const CLIENT_NAME_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/

function sha256 (b: Uint8Array): Buffer {
  return createHash('sha256').update(b).digest()
}

export class ClientRegistry {
  readonly #file: string
  #clients = new Map<string, Client>()

  constructor (file: string) {
    this.#file = file
    this.reload()
  }

  /** Re-reads the clients file. @throws KeydConfigError if it is malformed. */
  reload (): void {
    if (!existsSync(this.#file)) { this.#clients = new Map(); return }
    let raw: { clients?: Client[] }
    try {
      raw = JSON.parse(readFileSync(this.#file, 'utf8'))
    } catch {
      throw new KeydConfigError(`${this.#file}: not valid JSON`)
    }
    const next = new Map<string, Client>()
    for (const [i, c] of (raw.clients ?? []).entries()) {
      if (typeof c?.name !== 'string' || !CLIENT_NAME_RE.test(c.name)) throw new KeydConfigError(`${this.#file}: clients[${i}].name is not a valid client name`)
      if (typeof c.secretSha256 !== 'string' || !/^[0-9a-f]{64}$/.test(c.secretSha256)) throw new KeydConfigError(`${this.#file}: clients[${i}].secretSha256 must be 64 hex characters`)
      if (!Array.isArray(c.rights) || !c.rights.every(r => r === 'sign' || r === 'admin')) throw new KeydConfigError(`${this.#file}: clients[${i}].rights must list "sign" and/or "admin"`)
      next.set(c.name, { name: c.name, secretSha256: c.secretSha256, rights: c.rights, keys: Array.isArray(c.keys) ? c.keys : ['*'] })
    }
    this.#clients = next
  }

  /** The client whose name and secret match, or undefined. Constant-time on the secret. */
  authenticate (name: string, secret: Uint8Array): Client | undefined {
    const c = this.#clients.get(name)
    const want = Buffer.from(c?.secretSha256 ?? '0'.repeat(64), 'hex')
    const ok = timingSafeEqual(sha256(secret), want)
    return c !== undefined && ok ? c : undefined
  }

  /**
   * Makes sure client `name` exists, creating its secret file (0600) under `secretsDir` if needed.
   * Returns the secret file's path.
   */
  ensure (name: string, rights: Right[], secretsDir: string): string {
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
    this.#clients.set(name, { name, secretSha256: sha256(Buffer.from(secret)).toString('hex'), rights, keys: ['*'] })
    writeFileAtomic(this.#file, JSON.stringify({ clients: [...this.#clients.values()] }, null, 2) + '\n')
    return secretFile
  }
}
