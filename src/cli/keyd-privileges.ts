// `keyd serve --user U[:G] --socket-group G`: keyd as its own user, reachable by the proxy's group.
// Started as root, keyd makes (or checks) its directories for U, then drops to U before it reads a
// key; the socket group gets the socket's directory and the proxy's secret, nothing of keyd's home.
import { chownSync, mkdirSync, statSync } from 'node:fs'
import { dirname, relative, isAbsolute } from 'node:path'
import type { HomePaths } from '../../lib/home.js'
import { PrivilegeError, dropPrivileges, isRoot, resolveGroup, resolveUser, type RunAs } from '../../lib/privileges.js'
import { errorCode } from '../../lib/errors.js'

/** Who keyd runs as, and which group may connect to it; both optional. */
export interface Separation {
  runAs?: RunAs
  socketGroup?: number
  /** `--passphrase-file`, read as root before the drop (the file may stay root's alone). */
  passphrase?: string
}

/** True when `path` is `dir` or inside it. */
function within (dir: string, path: string): boolean {
  const r = relative(dir, path)
  return r === '' || (!r.startsWith('..') && !isAbsolute(r))
}

/**
 * Checks `--user` and `--socket-group` against the layout: a socket group sees the socket's
 * directory and the proxy secret's, so neither may be keyd's home or inside it.
 * @throws PrivilegeError for an unknown user or group, or a directory the group must not see
 */
export function privilegeOptions (paths: HomePaths, socketPath: string, proxySecretDir: string, user: string | undefined, socketGroup: string | undefined): Separation {
  const runAs = user === undefined ? undefined : resolveUser(user)
  if (socketGroup === undefined) return { runAs }
  const gid = resolveGroup(socketGroup)
  if (gid === 0) throw new PrivilegeError('--socket-group must not be root\'s group')
  for (const [what, dir] of [['--socket', dirname(socketPath)], ['--proxy-secret-dir', proxySecretDir]] as const) {
    if (within(paths.home, dir)) throw new PrivilegeError(`--socket-group gives group ${socketGroup} the ${what} directory ${dir}, which is in keyd's home ${paths.home}: put the socket and the proxy secret in a directory of their own (e.g. /run/keyedge)`)
  }
  return { runAs, socketGroup: gid }
}

/** Makes `dir` (its parent must exist) owned by `to`, or checks that it already is. */
function ownDir (dir: string, to: RunAs): void {
  try {
    mkdirSync(dir, { mode: 0o700 })
    chownSync(dir, to.uid, to.gid)
    return
  } catch (err) {
    if (errorCode(err) !== 'EEXIST') throw new PrivilegeError(`cannot create ${dir} for ${to.spec} (${errorCode(err) ?? 'error'})`, { cause: err })
  }
  const st = statSync(dir)
  if (!st.isDirectory()) throw new PrivilegeError(`${dir} is not a directory`)
  // Not a recursive chown: whatever is inside a directory keyd did not make is the operator's to hand over.
  if (st.uid !== to.uid) throw new PrivilegeError(`${dir} belongs to uid ${st.uid}, not to ${to.spec} (uid ${to.uid}): "chown -R ${to.uid}:${to.gid} ${dir}" if it is keyd's, or choose another directory`)
}

/**
 * As root: keyd's home, the socket's directory and the proxy secret's directory made for (or
 * checked to belong to) `runAs`, then setgroups([gid, socketGroup]), setgid, setuid. Everything
 * after this (keys, audit log, the socket itself) is opened as that user.
 * @throws PrivilegeError when not root, or a directory belongs to someone else
 */
export function becomeKeydUser (paths: HomePaths, socketPath: string, proxySecretDir: string, runAs: RunAs, socketGroup?: number): void {
  if (!isRoot()) throw new PrivilegeError(`--user ${runAs.spec} needs keyd to start as root; without root, start it as that user directly (and leave out --user)`)
  for (const dir of new Set([paths.home, dirname(socketPath), proxySecretDir])) ownDir(dir, runAs)
  // keyd joins the socket group so it can hand its socket to that group (chown needs membership).
  dropPrivileges(runAs, socketGroup === undefined ? [] : [socketGroup])
}
