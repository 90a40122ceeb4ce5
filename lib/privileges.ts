// Running keyd and the proxy as separate unprivileged users: `--user U[:G]` resolved to numbers, the
// drop itself (setgroups, setgid, setuid, in that order, then checked), and handing a path to a group.
// In lib/ because both sides use it: keyd (`keyd serve --user --socket-group`) and the proxy
// (`proxy --user`, whose workers are forked with the same uid and gid).
import { execFileSync } from 'node:child_process'
import { chmodSync, chownSync, lstatSync, statSync } from 'node:fs'
import { CodedError, errorCode } from './errors.js'

/** `--user` or `--socket-group` names no user or group of this machine, or the drop failed. Code: KEYEDGE_ERR_PRIVILEGES. */
export class PrivilegeError extends CodedError {
  constructor (message: string, options?: { cause?: unknown }) {
    super('KEYEDGE_ERR_PRIVILEGES', message, options)
  }
}

/** Who to become: a uid and the one group the process keeps (no supplementary groups but `extraGroups`). */
export interface RunAs {
  /** As given on the command line, for messages. */
  spec: string
  uid: number
  gid: number
}

const NAME_RE = /^[a-z_][a-z0-9_.-]{0,31}\$?$/i

/** One line of `getent DATABASE KEY`, split on `:`, or undefined when there is no such entry. */
function getent (database: 'passwd' | 'group', key: string): string[] | undefined {
  try {
    // getent asks NSS (files, LDAP, systemd's dynamic users …), which /etc/passwd alone would not.
    return execFileSync('getent', [database, key], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim().split('\n')[0]?.split(':')
  } catch {
    return undefined
  }
}

/** The gid of group `name` (or a number). @throws PrivilegeError if there is no such group */
export function resolveGroup (name: string): number {
  if (/^\d+$/.test(name)) return Number(name)
  if (!NAME_RE.test(name)) throw new PrivilegeError(`${JSON.stringify(name.slice(0, 40))} is not a group name`)
  const g = getent('group', name)
  if (g === undefined || g[2] === undefined) throw new PrivilegeError(`no group named ${name} on this machine`)
  return Number(g[2])
}

/**
 * Resolves `U[:G]`: U a user name or uid; G a group name or gid, by default U's primary group.
 * @throws PrivilegeError for a malformed spec, an unknown user or group, or uid 0 (that is no drop)
 */
export function resolveUser (spec: string): RunAs {
  const [user = '', group, extra] = spec.split(':')
  if (user === '' || group === '' || extra !== undefined) throw new PrivilegeError(`--user ${JSON.stringify(spec.slice(0, 80))}: expected USER or USER:GROUP`)
  let uid: number
  let primary: number | undefined
  if (/^\d+$/.test(user)) {
    uid = Number(user)
    const p = getent('passwd', user)
    primary = p?.[3] === undefined ? undefined : Number(p[3])
  } else {
    if (!NAME_RE.test(user)) throw new PrivilegeError(`--user: ${JSON.stringify(user.slice(0, 40))} is not a user name`)
    const p = getent('passwd', user)
    if (p === undefined || p[2] === undefined || p[3] === undefined) throw new PrivilegeError(`--user: no user named ${user} on this machine`)
    uid = Number(p[2])
    primary = Number(p[3])
  }
  const gid = group !== undefined ? resolveGroup(group) : primary
  if (gid === undefined) throw new PrivilegeError(`--user ${spec}: uid ${uid} has no entry in the user database; name its group (--user ${uid}:GROUP)`)
  if (uid === 0 || gid === 0) throw new PrivilegeError(`--user ${spec}: uid and gid must not be 0 (root); name the unprivileged user to run as`)
  return { spec, uid, gid }
}

/** True when this process runs as root (uid 0). */
export function isRoot (): boolean {
  return process.getuid?.() === 0
}

/**
 * Drops to `to` for good: setgroups([gid, ...extraGroups]) first (a root process keeps root's
 * supplementary groups otherwise), then setgid (impossible once no longer root), then setuid; then
 * checks that none of it can be undone (setuid(0) must fail).
 * @throws PrivilegeError when not root, or when any step fails
 */
export function dropPrivileges (to: RunAs, extraGroups: number[] = []): void {
  if (process.setgroups === undefined || process.setgid === undefined || process.setuid === undefined) throw new PrivilegeError('this platform cannot change users')
  if (!isRoot()) throw new PrivilegeError(`--user ${to.spec} needs to start as root (it is running as uid ${process.getuid?.() ?? '?'}); without root, run it as that user directly`)
  try {
    process.setgroups([...new Set([to.gid, ...extraGroups])])
    process.setgid(to.gid)
    process.setuid(to.uid)
  } catch (err) {
    throw new PrivilegeError(`could not become uid ${to.uid} gid ${to.gid}`, { cause: err })
  }
  let regained = false
  try { process.setuid(0); regained = true } catch { /* EPERM: the drop holds */ }
  if (regained || process.getuid?.() !== to.uid || process.geteuid?.() !== to.uid || process.getgid?.() !== to.gid || process.getegid?.() !== to.gid) {
    throw new PrivilegeError(`privileges were not dropped to uid ${to.uid} gid ${to.gid}`)
  }
}

/**
 * Gives group `gid` access to `path` with `mode`: the group is set before the mode, so the path is
 * never open to the group it had before. The owner stays (the caller owns the path, and must be in
 * `gid` unless root). A symbolic link is refused: it would hand the group whatever it points at.
 * @throws PrivilegeError naming the path
 */
export function shareWithGroup (path: string, gid: number, mode: number): void {
  try {
    if (lstatSync(path).isSymbolicLink()) throw new PrivilegeError(`${path} is a symbolic link; keyd shares only its own files with the socket group`)
    chownSync(path, -1, gid)
    chmodSync(path, mode)
  } catch (err) {
    if (err instanceof PrivilegeError) throw err
    throw new PrivilegeError(`cannot give group ${gid} access to ${path} (${errorCode(err) ?? 'error'}): keyd must own it and be a member of the group`, { cause: err })
  }
}

/** The warning for a service started as root without `--user`, or undefined when there is nothing to warn about. */
export function rootWarning (service: string, runAs: RunAs | undefined): string | undefined {
  if (runAs !== undefined || !isRoot()) return undefined
  return `*** ${service} is running as root: pass --user USER[:GROUP] (docs/deploy.md, "Separate users") so that a compromise of it is not a compromise of the machine ***`
}

/**
 * Hands a root process's state directory to the user it is about to become: `dir` itself when this
 * process just made it (`made`), else `dir` must already be that user's; then the `files` it wrote
 * there. Never recursive, and never a directory someone else owns (a misconfigured /var/lib must not
 * end up the proxy's).
 * @throws PrivilegeError naming the path
 */
export function handOver (dir: string, made: boolean, files: string[], to: RunAs): void {
  const owner = statSync(dir).uid
  if (!made && owner !== to.uid) throw new PrivilegeError(`${dir} belongs to uid ${owner}, not to ${to.spec} (uid ${to.uid}): give the proxy a state directory of its own ("chown ${to.uid}:${to.gid} ${dir}" if it is)`)
  for (const path of made ? [dir, ...files] : files) {
    try {
      if (lstatSync(path).isSymbolicLink()) throw new PrivilegeError(`${path} is a symbolic link; not handing it to ${to.spec}`)
      chownSync(path, to.uid, to.gid)
    } catch (err) {
      if (err instanceof PrivilegeError) throw err
      throw new PrivilegeError(`cannot hand ${path} to ${to.spec} (${errorCode(err) ?? 'error'})`, { cause: err })
    }
  }
}
