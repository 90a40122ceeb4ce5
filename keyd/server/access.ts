// Who may do what, decided in one place: the operation's right, which keys a client reaches, and the
// per-key policy (allowed clients and algorithms, rate limits) of every signature. dispatch.ts calls
// authorizeRight for every request; key lookups call authorizeKey; each signature (a SIGN, or one
// SIGN_BATCH entry, refused on its own) calls admitSignature.
import { ErrorCode } from '../protocol/spec.js'
import { Refusal } from '../errors.js'
import type { KeyInfo } from '../keystore/keystore.js'
import type { KeyPolicy } from '../policy/key-policy.js'
import type { Client, Right } from './clients.js'
import { keyDenied, signDenied } from '../policy/access.js'

/** What a client wants a key for: `sign` (SIGN, SIGN_BATCH entries) or `read` (GET_PUBLIC_KEY, KEY_ATTEST). */
export type KeyUse = 'sign' | 'read'

/** The client holds `right` (null: any authenticated client may). @throws Refusal FORBIDDEN */
export function authorizeRight (client: Client, right: Right | null): void {
  if (right !== null && !client.rights.includes(right)) throw new Refusal(ErrorCode.FORBIDDEN, `client ${client.name} lacks the ${right} right`)
}

/**
 * The client may use `key` for `use`, by its grants in clients.json (keyd/policy/access.ts): the key by
 * name (`keys`, `*` = all) for any use, and for `sign` also the key's usage (`usages`; cert-sign only
 * with the admin or issue right). The one check of a key against a client's grants.
 * @throws Refusal USAGE_FORBIDDEN (audited and counted as an access violation by dispatch)
 */
export function authorizeKey (client: Client, key: KeyInfo, use: KeyUse): void {
  const denied = use === 'sign' ? signDenied(client, key) : keyDenied(client, key.name)
  if (denied !== null) throw new Refusal(ErrorCode.USAGE_FORBIDDEN, denied)
}

/**
 * keyd/policy.json admits this signature: the key allows the client and the algorithm, and neither
 * the key's nor the client's rate bucket is empty (taking a token from each).
 * @throws Refusal FORBIDDEN, RATE_LIMITED
 */
export function admitSignature (policy: KeyPolicy | undefined, client: Client, key: KeyInfo, algorithm: string): void {
  const verdict = policy?.check(client.name, key.name, algorithm)
  if (verdict !== undefined && !verdict.ok) {
    throw new Refusal(verdict.reason.endsWith('rate') ? ErrorCode.RATE_LIMITED : ErrorCode.FORBIDDEN, verdict.message)
  }
}
