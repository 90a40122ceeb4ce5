// Least privilege: which keys and key usages a client's rights (keyd/clients.json) let it use.
// Checked on every SIGN and SIGN_BATCH entry before anything about the message, so a stolen proxy
// secret cannot reach a key outside the proxy's grant — above all not a cert-sign key (the dev CA).
import type { Usage } from '../algorithms.js'
import type { KeyInfo } from '../keystore/keystore.js'

/** The part of a client that access decisions read (keyd/server/clients.ts `Client`). */
export interface Grant {
  name: string
  rights: readonly string[]
  usages: readonly Usage[]
  keys: readonly string[]
}

/** Rights that may hold the `cert-sign` usage: a cert-sign key makes certificates others trust. */
export const ISSUER_RIGHTS: readonly string[] = ['admin', 'issue']

/** Whether `rights` allow the cert-sign usage at all (the clients file is refused otherwise). */
export function mayIssue (rights: readonly string[]): boolean {
  return rights.some(r => ISSUER_RIGHTS.includes(r))
}

/** Null if `client` may use the key named `name`, else why not (the USAGE_FORBIDDEN message). */
export function keyDenied (client: Grant, name: string): string | null {
  if (client.keys.includes('*') || client.keys.includes(name)) return null
  return `client ${client.name} may not use key ${name} (its keys in clients.json: ${client.keys.join(', ') || 'none'})`
}

/**
 * Null if `client` may sign with `key`, else why not: the key must be granted by name (or `*`) and
 * its usage must be one of the client's usages; a cert-sign key also needs the admin or issue right,
 * whatever the clients file says.
 */
export function signDenied (client: Grant, key: Pick<KeyInfo, 'name' | 'usage'>): string | null {
  const byName = keyDenied(client, key.name)
  if (byName !== null) return byName
  if (!client.usages.includes(key.usage)) {
    return `client ${client.name} may not use ${key.usage} keys such as ${key.name} (its usages in clients.json: ${client.usages.join(', ') || 'none'})`
  }
  if (key.usage === 'cert-sign' && !mayIssue(client.rights)) {
    return `client ${client.name} may not use cert-sign key ${key.name}: that needs the issue or admin right`
  }
  return null
}
