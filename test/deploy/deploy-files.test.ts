// deploy/compose.yaml and deploy/kubernetes/ checked without a container engine: parsed, and held
// to what matters — keyd and the proxy run as different unprivileged users joined only by keyd's
// socket group, share only the socket volume, keyd's passphrase comes from a secret file, probes hit
// the right ports and paths, and every command line is one the image's entrypoint and the CLI really
// accept. As root (CI), both layouts are also built on this machine with the manifests' uids, gids
// and modes, keyd started with the manifests' flags: the proxy's uid, with the group it is given,
// connects and reads its secret but gets EACCES on keyd's home; without the group it cannot connect.
import t, { type Test } from 'tap'
import { execFile, execFileSync } from 'node:child_process'
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { dirname, join, posix } from 'node:path'
import { parseArgs } from 'node:util'
import { Script } from 'node:vm'
import { parse, parseAllDocuments } from 'yaml'
import { CLI, ROOT, tempHome } from '../helpers/paths.js'
import { spawnLogged } from '../helpers/processes.js'
import { KEYD_OPTIONS } from '../../src/cli/keyd.js'
import { keydCommandUsage } from '../../src/cli/keyd-help.js'
import { PROXY_OPTIONS } from '../../src/cli/proxy.js'
import { validateConfig } from '../../src/config/validate.js'
import type { EdgeConfig } from '../../src/config/types.js'
import { defined } from '../helpers/defined.js'

type Doc = Record<string, any>

const deploy = join(ROOT, 'deploy')
const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8')

/** What a keyedge command line given to the image means: the command and its options. */
function command (args: string[]): { cmd: string, values: Record<string, string | boolean | string[] | undefined> } {
  if (args[0] === 'keyd') {
    const { values, positionals } = parseArgs({ args: args.slice(1), options: KEYD_OPTIONS, allowPositionals: true, strict: true })
    const cmd = positionals.join(' ')
    const help = keydCommandUsage(cmd)
    if (help === undefined) throw new Error(`keyd ${cmd} is not a keyd command`)
    for (const flag of args.filter(a => a.startsWith('--'))) {
      if (!help.includes(`  ${flag} `)) throw new Error(`keyd ${cmd} --help does not list ${flag}`)
    }
    return { cmd: `keyd ${cmd}`, values }
  }
  if (args[0] === 'proxy') return { cmd: 'proxy', values: parseArgs({ args: args.slice(1), options: PROXY_OPTIONS, strict: true, allowPositionals: false }).values }
  throw new Error(`not a keyedge command: ${args.join(' ')}`)
}

/** The URL a `node -e "fetch(…)"` probe asks, after checking the script compiles. */
function probeUrl (argv: string[]): string {
  t.equal(argv[0], 'node')
  t.equal(argv[1], '-e')
  const code = defined(argv[2], 'the probe script')
  t.doesNotThrow(() => new Script(code), 'the probe script compiles')
  return /fetch\('([^']+)'\)/.exec(code)?.[1] ?? ''
}

function loadProxyConfig (text: string): EdgeConfig {
  return validateConfig(JSON.parse(text), { baseDir: '/etc/keyedge', file: '/etc/keyedge/proxy.json' })
}

/** Kubernetes quantities in bytes or millicores. */
function quantity (q: string | number): number {
  const s = String(q)
  const units: Record<string, number> = { m: 1e-3, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30 }
  const [, num, unit] = /^([\d.]+)(m|Ki|Mi|Gi)?$/.exec(s) ?? []
  if (num === undefined) throw new Error(`not a quantity: ${s}`)
  return Number(num) * (unit === undefined ? 1 : defined(units[unit], `the unit ${unit}`))
}

/** The users and groups the Dockerfile makes: name → uid, gid and supplementary group names; group name → gid. */
function imageAccounts (): { users: Map<string, { uid: number, gid: number, groups: string[] }>, groups: Map<string, number> } {
  const users = new Map<string, { uid: number, gid: number, groups: string[] }>()
  for (const m of dockerfile.matchAll(/useradd --system --uid (\d+) --gid (\d+)(?: --groups (\S+))? .*?(\S+) \\?$/gm)) {
    users.set(defined(m[4], 'user name'), { uid: Number(m[1]), gid: Number(m[2]), groups: m[3]?.split(',') ?? [] })
  }
  const groups = new Map([...dockerfile.matchAll(/groupadd --system --gid (\d+) (\S+)/g)].map(m => [defined(m[2], 'group name'), Number(m[1])]))
  return { users, groups }
}

/** The directories the Dockerfile makes with `install -d`: path → owner, group, mode. */
function imageDirs (): Map<string, { uid: number, gid: number, mode: string }> {
  return new Map([...dockerfile.matchAll(/install -d -o (\d+) -g (\d+) -m (\d+) (\S+)/g)].map(m => [defined(m[4], 'path'), { uid: Number(m[1]), gid: Number(m[2]), mode: defined(m[3], 'mode') }]))
}

/** `"U:G"` of a compose `user:` as numbers; a name would depend on the image's /etc/passwd. */
function uidGid (user: unknown): { uid: number, gid: number } {
  const m = /^(\d+):(\d+)$/.exec(String(user))
  if (m === null) throw new Error(`user ${String(user)} is not numeric uid:gid`)
  return { uid: Number(m[1]), gid: Number(m[2]) }
}

/** The mount (path) of `volume` in a container's list, or undefined. */
function under (path: string, mountPath: string | undefined): string | undefined {
  if (mountPath === undefined || !path.startsWith(mountPath + '/')) return undefined
  return posix.relative(mountPath, path)
}

t.test('the image: entrypoint runs the CLI as the unprivileged user the manifests name', async t => {
  const entry = /^ENTRYPOINT (\[.*\])$/m.exec(dockerfile)?.[1]
  t.same(JSON.parse(entry ?? '[]'), ['/usr/bin/tini', '--', 'node', 'dist/src/cli/main.js'])
  t.ok(existsSync(join(ROOT, 'dist', 'src', 'cli', 'main.js')), 'the entrypoint script is what the build makes')
  t.match(dockerfile, /^USER 10001:10001$/m)
  const { users, groups } = imageAccounts()
  const keyd = defined(users.get('keyd'), 'the keyd user')
  const proxy = defined(users.get('keyedge-proxy'), 'the proxy user')
  t.same(keyd, { uid: 10001, gid: 10001, groups: ['keyedge'] })
  t.same(proxy, { uid: 10002, gid: 10002, groups: ['keyedge'] })
  t.equal(groups.get('keyd'), 10001)
  t.equal(groups.get('keyedge-proxy'), 10002)
  t.equal(groups.get('keyedge'), 10003, 'the socket group, the only one they share')
  // What a fresh named volume copies: keyd's home only keyd's, the socket directory keyd's and the
  // socket group's (0750), the proxy's state only the proxy's.
  const dirs = imageDirs()
  t.same(dirs.get('/var/lib/keyedge'), { uid: 10001, gid: 10001, mode: '0700' })
  t.same(dirs.get('/run/keyedge'), { uid: 10001, gid: 10003, mode: '0750' })
  t.same(dirs.get('/var/lib/keyedge-proxy'), { uid: 10002, gid: 10002, mode: '0700' })
})

t.test('compose.yaml: keyd and the proxy as two users, joined only by the socket group', async t => {
  const c = parse(readFileSync(join(deploy, 'compose.yaml'), 'utf8')) as Doc
  const keyd = c.services.keyd as Doc
  const proxy = c.services.proxy as Doc
  const k = command(keyd.command)
  const ku = uidGid(keyd.user)
  const pu = uidGid(proxy.user)
  const { users, groups } = imageAccounts()
  t.same(ku, { uid: users.get('keyd')?.uid, gid: users.get('keyd')?.gid }, 'keyd runs as the image\'s keyd user')
  t.same(pu, { uid: users.get('keyedge-proxy')?.uid, gid: users.get('keyedge-proxy')?.gid }, 'the proxy as the image\'s proxy user')
  t.not(ku.uid, pu.uid, 'different uids')
  t.not(ku.gid, pu.gid, 'different primary groups')
  for (const [name, u] of [['keyd', ku], ['proxy', pu]] as const) {
    t.ok(u.uid !== 0 && u.gid !== 0, `${name} is not root`)
  }
  const socketGroup = Number(k.values['socket-group'])
  t.equal(socketGroup, groups.get('keyedge'), 'keyd hands its socket to the image\'s keyedge group (--socket-group)')
  t.not(socketGroup, ku.gid, 'the socket group is not keyd\'s own group')
  t.same(keyd.group_add, [String(socketGroup)], 'keyd is in the socket group (to chgrp its socket), nothing else')
  t.same(proxy.group_add, [String(socketGroup)], 'the proxy\'s only extra group is the socket group')
  for (const [name, s] of [['keyd', keyd], ['proxy', proxy]] as const) {
    t.notOk(s.privileged, `${name} is not privileged`)
    t.same(s.cap_drop, ['ALL'], `${name} drops every capability`)
    t.equal(s.cap_add, undefined, `${name} adds none`)
    t.ok((s.security_opt as string[]).includes('no-new-privileges:true'), `${name}: no-new-privileges`)
    t.equal(s.read_only, true, `${name}: read-only root file system`)
    t.equal(s.pid, undefined, `${name} shares no process namespace`)
  }
  // The passphrase file readable by keyd's uid (where the engine applies it) and by no one else.
  const secret = (keyd.secrets as Doc[])[0] as Doc
  t.equal(secret.uid, String(ku.uid))
  t.equal(secret.mode, 0o400)

  // Volumes: the socket volume is the only one both mount, keyd's state only keyd mounts, and the
  // image made each mount point for the user who uses it.
  const mounts = (s: Doc): Map<string, string> => new Map((s.volumes as string[]).map(v => v.split(':') as [string, string]))
  const km = mounts(keyd)
  const pm = mounts(proxy)
  const stateUsers = Object.entries(c.services as Record<string, Doc>).filter(([, s]) => mounts(s).has('keyd-state')).map(([name]) => name)
  t.same(stateUsers, ['keyd'], 'keyd\'s state volume is mounted in keyd only')
  const dirs = imageDirs()
  t.same(dirs.get(defined(km.get('keyd-state'), 'keyd-state')), { uid: ku.uid, gid: ku.gid, mode: '0700' }, 'keyd\'s state: 0700 keyd\'s')
  t.same(dirs.get(defined(km.get('keyd-socket'), 'keyd-socket')), { uid: ku.uid, gid: socketGroup, mode: '0750' }, 'the socket directory: keyd\'s, the socket group may enter')
  t.equal(pm.get('keyd-socket'), km.get('keyd-socket'))
  t.same(dirs.get(defined(pm.get('proxy-state'), 'proxy-state')), { uid: pu.uid, gid: pu.gid, mode: '0700' }, 'the proxy\'s state: 0700 the proxy\'s')
  t.equal(dirname(k.values.socket as string), km.get('keyd-socket'), 'keyd\'s socket directory is the volume keyd owns (it sets its group and mode)')

  // A writable /tmp for the proxy's certificate spool.
  t.ok((proxy.tmpfs as string[]).some(x => /^\/tmp(:|$)/.test(x)), 'the proxy has a tmpfs /tmp')
  t.notOk(pm.has('/tmp') || [...pm.values()].includes('/tmp'))
})

t.test('compose.yaml: two services sharing only the socket volume', async t => {
  const c = parse(readFileSync(join(deploy, 'compose.yaml'), 'utf8')) as Doc
  t.same(Object.keys(c.services).sort(), ['keyd', 'proxy'])
  const keyd = c.services.keyd as Doc
  const proxy = c.services.proxy as Doc
  const named = new Set(Object.keys(c.volumes))
  const mounts = (s: Doc): Map<string, string> => new Map((s.volumes as string[]).map(v => v.split(':') as [string, string]).map(([src, dst]) => [src, dst]))
  const km = mounts(keyd)
  const pm = mounts(proxy)
  const shared = [...km.keys()].filter(v => pm.has(v))
  t.same(shared, ['keyd-socket'], 'the only volume both mount')
  t.ok(named.has('keyd-socket'))
  t.notOk(pm.has('keyd-state'), 'the proxy never mounts keyd\'s state')
  t.equal(km.get('keyd-state'), keyd.environment.KEYEDGE_HOME, 'keyd\'s home is its own volume')
  t.equal(keyd.network_mode, 'none', 'keyd has no network')

  t.equal(keyd.image, proxy.image)
  t.equal(keyd.build.context, '..')
  t.ok(existsSync(join(deploy, keyd.build.context, keyd.build.dockerfile)), 'built from the repository\'s Dockerfile')
  const k = command(keyd.command)
  t.equal(k.cmd, 'keyd serve')
  t.notOk(k.values.dev, 'not development mode')
  const p = command(proxy.command)
  t.equal(p.cmd, 'proxy')

  // The passphrase: a secret file, never a value in the file.
  const secretName = defined((keyd.secrets as Doc[])[0]?.source as string | undefined, 'a keyd secret')
  t.equal((keyd.secrets as Doc[])[0]?.target, secretName)
  t.equal(k.values['passphrase-file'], `/run/secrets/${secretName}`)
  t.ok(c.secrets[secretName].file !== undefined && c.secrets[secretName].environment === undefined, 'a secret read from a file')
  t.match(readFileSync(join(deploy, '.gitignore'), 'utf8'), /^secrets\/$/m, 'the passphrase file is never committed')
  t.ok(c.secrets[secretName].file.startsWith('./secrets/'))
  for (const s of [keyd, proxy]) {
    for (const [name, value] of Object.entries((s.environment ?? {}) as Record<string, string>)) {
      t.notMatch(name, /PASSPHRASE|PIN|SECRET/, `no secret in the environment (${name}=${value})`)
    }
  }

  // Socket and proxy secret: where keyd puts them is where the proxy config looks, through the shared volume.
  const configFile = [...pm.entries()].find(([, dst]) => dst === (p.values.config as string))?.[0] as string
  const config = loadProxyConfig(readFileSync(join(deploy, configFile), 'utf8'))
  const keydSide = km.get('keyd-socket')
  const proxySide = pm.get('keyd-socket')
  t.ok(under(k.values.socket as string, keydSide) !== undefined, 'keyd\'s socket is on the shared volume')
  t.equal(under(config.keyd?.socket ?? '', proxySide), under(k.values.socket as string, keydSide), 'the proxy looks for it there')
  t.equal(under(config.keyd?.secretFile ?? '', proxySide), posix.join(under(`${k.values['proxy-secret-dir'] as string}/x`, keydSide) ?? '', '..', 'proxy.secret').replace(/^\.\.\//, ''), 'the proxy reads the secret keyd writes for it')
  t.ok(under(config.stateDir + '/x', pm.get('proxy-state')) !== undefined, 'the proxy writes its own files on its own volume')

  // Health checks on the endpoints that say so.
  t.equal(probeUrl((keyd.healthcheck.test as string[]).slice(1)), `http://127.0.0.1:${k.values['metrics-port'] as string}/healthz`)
  t.equal(keyd.healthcheck.test[0], 'CMD')
  t.equal(probeUrl((proxy.healthcheck.test as string[]).slice(1)), `http://127.0.0.1:${config.admin?.port ?? -1}/ready`)
  t.same(proxy.depends_on.keyd, { condition: 'service_healthy' })
  t.equal((proxy.ports as string[])[0]?.split(':')[1], String(config.listen.port), 'the published port is the one the proxy listens on')
  const grace = Number(/^(\d+)s$/.exec(proxy.stop_grace_period)?.[1])
  t.ok(grace * 1000 >= (config.admin?.drainDelayMs ?? 0) + config.shutdownGraceMs, 'stop_grace_period covers the drain and the grace')
})

t.test('kubernetes/: keyd sidecar, shared emptyDir only, probes, drain, budget, resources', async t => {
  const dir = join(deploy, 'kubernetes')
  const docs: Doc[] = readdirSync(dir).filter(f => f.endsWith('.yaml')).flatMap(f => parseAllDocuments(readFileSync(join(dir, f), 'utf8')).map(d => {
    t.same(d.errors, [], `${f} parses`)
    return d.toJS() as Doc
  }))
  const kust = docs.find(d => d.kind === 'Kustomization')
  t.same([...(kust?.resources as string[])].sort(), readdirSync(dir).filter(f => f.endsWith('.yaml') && f !== 'kustomization.yaml').sort(), 'kustomization lists every manifest')
  t.notOk(docs.some(d => d.kind === 'Secret'), 'no Secret in the repository: created with kubectl from files')

  const sts = docs.find(d => d.kind === 'StatefulSet') as Doc
  const pod = sts.spec.template.spec as Doc
  const keyd = (pod.initContainers as Doc[]).find(c => c.name === 'keyd') as Doc
  const proxy = (pod.containers as Doc[]).find(c => c.name === 'proxy') as Doc
  t.equal(keyd.restartPolicy, 'Always', 'keyd is a native sidecar: up before the proxy, down after it')
  t.equal(keyd.image, proxy.image)
  const volumes = new Map((pod.volumes as Doc[]).map(v => [v.name as string, v]))
  const mountsOf = (c: Doc): Map<string, string> => new Map((c.volumeMounts as Doc[]).map(m => [m.name as string, m.mountPath as string]))
  const km = mountsOf(keyd)
  const pm = mountsOf(proxy)
  t.same([...km.keys()].filter(v => pm.has(v)), ['keyd-socket'], 'the only volume both containers mount')
  t.ok(volumes.get('keyd-socket')?.emptyDir !== undefined, 'an emptyDir')
  t.ok((sts.spec.volumeClaimTemplates as Doc[]).some(v => v.metadata.name === 'keyd-state'), 'keyd\'s state on the pod\'s own claim')
  t.notOk(pm.has('keyd-state') || pm.has('keyd-passphrase'))

  const k = command(keyd.args)
  t.equal(k.cmd, 'keyd serve')
  t.notOk(k.values.dev)
  const p = command(proxy.args)
  t.equal(p.cmd, 'proxy')
  const env = new Map((keyd.env as Doc[]).map(e => [e.name as string, e]))
  for (const c of [keyd, proxy]) {
    for (const e of (c.env ?? []) as Doc[]) t.notMatch(e.name, /PASSPHRASE|PIN|SECRET/, `no secret in ${c.name as string}'s environment`)
  }
  const passphraseDir = under(k.values['passphrase-file'] as string, km.get('keyd-passphrase'))
  t.ok(passphraseDir !== undefined && volumes.get('keyd-passphrase')?.secret?.secretName !== undefined, 'the passphrase is a file of a Secret volume')
  t.ok(under(`${env.get('KEYEDGE_HOME')?.value as string}/x`, km.get('keyd-state')) !== undefined, 'keyd\'s home on its claim')

  const cm = docs.find(d => d.kind === 'ConfigMap' && d.metadata.name === volumes.get('config')?.configMap?.name) as Doc
  const config = loadProxyConfig(cm.data['proxy.json'])
  t.equal(posix.join(pm.get('config') ?? '', 'proxy.json'), p.values.config, 'the proxy reads the ConfigMap\'s file')
  t.equal(under(config.keyd?.socket ?? '', pm.get('keyd-socket')), under(k.values.socket as string, km.get('keyd-socket')), 'one socket, seen from both sides')
  t.equal(posix.dirname(under(config.keyd?.secretFile ?? '', pm.get('keyd-socket')) ?? ''), under(`${k.values['proxy-secret-dir'] as string}/x`, km.get('keyd-socket'))?.replace(/\/x$/, ''), 'the proxy secret where keyd writes it')
  t.ok(under(config.stateDir + '/x', pm.get('proxy-state')) !== undefined, 'the proxy\'s own files on its own volume')
  for (const f of config.certificates.flatMap(c => c.files)) {
    t.ok(under(f.cert, pm.get('tls')) !== undefined && under(f.key, pm.get('tls')) !== undefined, `${f.cert} from the tls Secret`)
  }

  // Probes: readiness on /ready (proxy) and /healthz (keyd), on the ports the config and flags give.
  t.equal(probeUrl(proxy.readinessProbe.exec.command), `http://127.0.0.1:${config.admin?.port ?? -1}/ready`)
  t.equal(probeUrl(proxy.livenessProbe.exec.command), `http://127.0.0.1:${config.admin?.port ?? -1}/healthz`)
  for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
    t.equal(probeUrl(keyd[probe].exec.command), `http://127.0.0.1:${k.values['metrics-port'] as string}/healthz`, `keyd ${probe}`)
  }
  const https = (proxy.ports as Doc[]).find(x => x.name === 'https')
  t.equal(https?.containerPort, config.listen.port)

  // Drain: preStop, then the proxy's own drain and grace, all within the termination grace period.
  const preStop = proxy.lifecycle.preStop.exec.command as string[]
  t.equal(preStop[0], 'sleep')
  const needed = Number(preStop[1]) + ((config.admin?.drainDelayMs ?? 0) + config.shutdownGraceMs) / 1000
  t.ok(pod.terminationGracePeriodSeconds > needed, `terminationGracePeriodSeconds ${pod.terminationGracePeriodSeconds as number} > ${needed}`)

  const labels = sts.spec.template.metadata.labels as Record<string, string>
  const selects = (sel: Record<string, string>): boolean => Object.entries(sel).every(([k2, v]) => labels[k2] === v)
  const pdb = docs.find(d => d.kind === 'PodDisruptionBudget') as Doc
  t.ok(pdb.spec.maxUnavailable !== undefined || pdb.spec.minAvailable !== undefined)
  t.ok(selects(pdb.spec.selector.matchLabels), 'the budget covers the pods')
  for (const s of docs.filter(d => d.kind === 'Service')) {
    t.ok(selects(s.spec.selector), `${s.metadata.name as string} selects the pods`)
    t.ok((s.spec.ports as Doc[]).every(x => x.targetPort === 'https'))
  }
  t.ok(sts.spec.replicas >= 2, 'more than one pod, or the budget means nothing')

  // Resources: requested, and a memory limit above the request.
  for (const c of [keyd, proxy]) {
    const r = c.resources as Doc
    t.ok(quantity(r.requests.cpu) > 0 && quantity(r.requests.memory) > 0, `${c.name as string} requests CPU and memory`)
    t.ok(quantity(r.limits.memory) >= quantity(r.requests.memory), `${c.name as string}: limit ≥ request`)
    t.equal(c.securityContext.readOnlyRootFilesystem, true)
    t.equal(c.securityContext.allowPrivilegeEscalation, false)
  }
  t.equal(pod.securityContext.runAsNonRoot, true)
})

t.test('kubernetes/: keyd and the proxy as two users; fsGroup is the socket group, not keyd\'s', async t => {
  const docs = readdirSync(join(deploy, 'kubernetes')).filter(f => f.endsWith('.yaml')).flatMap(f => parseAllDocuments(readFileSync(join(deploy, 'kubernetes', f), 'utf8')).map(d => d.toJS() as Doc))
  const pod = (docs.find(d => d.kind === 'StatefulSet') as Doc).spec.template.spec as Doc
  const all = [...(pod.initContainers ?? []) as Doc[], ...pod.containers as Doc[]]
  const keyd = all.find(c => c.name === 'keyd') as Doc
  const proxy = all.find(c => c.name === 'proxy') as Doc
  const { users, groups } = imageAccounts()
  const ps = pod.securityContext as Doc
  t.equal(ps.runAsNonRoot, true)
  t.equal(ps.runAsUser, undefined, 'no pod-wide uid: each container names its own')
  t.equal(ps.seccompProfile?.type, 'RuntimeDefault')
  t.equal(pod.shareProcessNamespace ?? false, false, 'keyd\'s processes are not visible to the proxy')
  t.equal(pod.hostPID ?? false, false)
  for (const c of all) {
    const sc = c.securityContext as Doc
    t.ok(Number.isInteger(sc.runAsUser) && sc.runAsUser !== 0, `${c.name as string}: its own non-root uid`)
    t.ok(Number.isInteger(sc.runAsGroup) && sc.runAsGroup !== 0, `${c.name as string}: its own non-root gid`)
    t.equal(sc.runAsNonRoot, true, `${c.name as string}: runAsNonRoot`)
    t.notOk(sc.privileged, `${c.name as string} is not privileged`)
    t.equal(sc.allowPrivilegeEscalation, false, `${c.name as string}: allowPrivilegeEscalation false`)
    t.equal(sc.readOnlyRootFilesystem, true, `${c.name as string}: readOnlyRootFilesystem`)
    t.same(sc.capabilities, { drop: ['ALL'] }, `${c.name as string}: every capability dropped, none added`)
    t.equal((sc.seccompProfile ?? ps.seccompProfile)?.type, 'RuntimeDefault', `${c.name as string}: seccomp RuntimeDefault`)
  }
  const ku = keyd.securityContext as Doc
  const pu = proxy.securityContext as Doc
  t.same([ku.runAsUser, ku.runAsGroup], [users.get('keyd')?.uid, users.get('keyd')?.gid], 'keyd as the image\'s keyd user')
  t.same([pu.runAsUser, pu.runAsGroup], [users.get('keyedge-proxy')?.uid, users.get('keyedge-proxy')?.gid], 'the proxy as the image\'s proxy user')
  t.not(ku.runAsUser, pu.runAsUser, 'different uids')
  t.not(ku.runAsGroup, pu.runAsGroup, 'different primary groups')

  // fsGroup is a supplementary group of every container, the proxy's too: it must be the socket
  // group, never keyd's own; and it must not be re-applied over keyd's files on every mount.
  const k = command(keyd.args)
  const socketGroup = Number(k.values['socket-group'])
  t.equal(socketGroup, groups.get('keyedge'), 'keyd --socket-group is the image\'s keyedge group')
  t.equal(ps.fsGroup, socketGroup, 'fsGroup is the socket group')
  t.not(ps.fsGroup, ku.runAsGroup, 'fsGroup is not keyd\'s group')
  t.equal(ps.fsGroupChangePolicy, 'OnRootMismatch', 'ownership changed once, not on every mount over keyd\'s key files')
  t.notOk(((ps.supplementalGroups ?? []) as number[]).includes(ku.runAsGroup), 'the proxy is never in keyd\'s group')

  // Volumes: only the socket emptyDir is shared; keyd's state is keyd's alone; the volume roots
  // (group-writable through fsGroup) hold keyd's own subdirectories, which keyd keeps private.
  const volumes = new Map((pod.volumes as Doc[]).map(v => [v.name as string, v]))
  const mountsOf = (c: Doc): Map<string, Doc> => new Map((c.volumeMounts as Doc[]).map(m => [m.name as string, m]))
  const km = mountsOf(keyd)
  const pm = mountsOf(proxy)
  const shared = [...km.keys()].filter(v => pm.has(v))
  t.same(shared, ['keyd-socket'], 'the socket volume is the only one keyd and the proxy share')
  t.ok(volumes.get('keyd-socket')?.emptyDir !== undefined)
  t.same(all.filter(c => mountsOf(c).has('keyd-state')).map(c => c.name), ['keyd'], 'keyd\'s state is mounted in keyd only')
  t.same(all.filter(c => mountsOf(c).has('keyd-passphrase')).map(c => c.name), ['keyd'], 'the passphrase is mounted in keyd only')
  const home = (keyd.env as Doc[]).find(e => e.name === 'KEYEDGE_HOME')?.value as string
  const stateRoot = km.get('keyd-state')?.mountPath as string
  t.ok(under(home, stateRoot) !== undefined && under(home, stateRoot) !== '', 'keyd\'s home is a directory keyd makes (0700) inside the claim, not its group-writable root')
  const socketRoot = km.get('keyd-socket')?.mountPath as string
  const socketDir = posix.dirname(k.values.socket as string)
  t.ok(under(socketDir, socketRoot) !== undefined, 'keyd\'s socket directory is one keyd makes (0750, the socket group) inside the emptyDir')
  t.equal(k.values['proxy-secret-dir'], socketDir, 'the proxy secret beside the socket, in the group\'s directory')

  // A writable /tmp for the proxy's certificate spool (the root file system is read-only).
  const tmp = [...pm.values()].find(m => m.mountPath === '/tmp')
  t.ok(tmp !== undefined && tmp.readOnly !== true, 'the proxy has a writable /tmp')
  t.ok(volumes.get(tmp?.name)?.emptyDir !== undefined, '/tmp is an emptyDir')
  t.notOk(km.has(tmp?.name), 'not shared with keyd')
})

// ---- The layouts for real (root only): the manifests' uids and modes, without a container engine ----

interface Who { uid: number, gid: number, groups: number[] }

/** `node -e script -- args` as `who` (setpriv: uid, gid and exactly `groups`); its one JSON line. */
async function runAs (who: Who, script: string, args: string[]): Promise<unknown> {
  const ids = ['--reuid', String(who.uid), '--regid', String(who.gid), who.groups.length === 0 ? '--clear-groups' : `--groups=${who.groups.join(',')}`]
  return await new Promise((resolve, reject) => {
    execFile('setpriv', [...ids, '--', process.execPath, '-e', script, '--', ...args], { timeout: 20_000, cwd: '/' }, (err, stdout, stderr) => {
      if (err !== null) { reject(new Error(`${err.message}\n${stderr}`)); return }
      resolve(JSON.parse(stdout))
    })
  })
}

/** What `who` gets: the proxy secret read, the socket connected, keyd's home listed ('ok' or the errno code). */
const ACCESS = `const fs = require('node:fs'); const [secret, socket, home] = process.argv.slice(1); const out = {}
try { fs.readFileSync(secret); out.secret = 'ok' } catch (e) { out.secret = e.code }
try { fs.readdirSync(home); out.home = 'ok' } catch (e) { out.home = e.code }
const s = require('node:net').connect(socket)
s.on('connect', () => { out.connect = 'ok'; s.destroy(); console.log(JSON.stringify(out)) })
s.on('error', e => { out.connect = e.code; console.log(JSON.stringify(out)) })`

/** uid, gid and supplementary groups of a live process, from /proc. */
function credentials (pid: number): Who {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const field = (name: string): number[] => (new RegExp(`^${name}:[ \\t]*(.*)$`, 'm').exec(status)?.[1] ?? '').trim().split(/\s+/).filter(Boolean).map(Number)
  return { uid: field('Uid')[0] as number, gid: field('Gid')[0] as number, groups: field('Groups') }
}

function mode (p: string): { uid: number, gid: number, mode: number } {
  const st = statSync(p)
  return { uid: st.uid, gid: st.gid, mode: st.mode & 0o7777 }
}

/** Makes `dir` as the image or the kubelet would: owner, group, mode. */
function makeDir (dir: string, uid: number, gid: number, m: number): void {
  mkdirSync(dir, { recursive: true })
  chownSync(dir, uid, gid)
  chmodSync(dir, m)
}

/** A layout: where keyd and the proxy are, who they are, and keyd's command line under `root`. */
interface Layout { keyd: Who, proxy: Who, socketGroup: number, args: string[], home: string }

/** Starts keyd as `layout.keyd` with the manifest's flags (paths under `root`, metrics on port 0). */
function startKeyd (t: Test, root: string, layout: Layout): ReturnType<typeof spawnLogged> {
  const args = layout.args.map((a, i) => layout.args[i - 1] === '--metrics-port' ? '0' : a.startsWith('/') ? join(root, a) : a)
  const k = layout.keyd
  const keyd = spawnLogged('setpriv', ['--reuid', String(k.uid), '--regid', String(k.gid), `--groups=${k.groups.join(',')}`, '--', process.execPath, CLI, ...args], { KEYEDGE_HOME: join(root, layout.home) })
  t.teardown(async () => await keyd.stop())
  return keyd
}

/** The checks both layouts must pass once keyd is up. */
async function checkSeparation (t: Test, root: string, layout: Layout, keyd: ReturnType<typeof spawnLogged>): Promise<void> {
  const { values } = command(layout.args)
  const socket = join(root, values.socket as string)
  const secret = join(root, values['proxy-secret-dir'] as string, 'proxy.secret')
  const home = join(root, layout.home)
  const creds = credentials(keyd.proc.pid as number)
  t.same([creds.uid, creds.gid], [layout.keyd.uid, layout.keyd.gid], 'keyd runs as its uid and gid')
  t.ok(creds.groups.includes(layout.socketGroup), 'keyd is in the socket group')
  t.same(mode(dirname(socket)), { uid: layout.keyd.uid, gid: layout.socketGroup, mode: 0o750 }, 'socket directory 0750, socket group')
  t.same(mode(socket), { uid: layout.keyd.uid, gid: layout.socketGroup, mode: 0o660 }, 'socket 0660, socket group')
  t.same(mode(secret), { uid: layout.keyd.uid, gid: layout.socketGroup, mode: 0o640 }, 'proxy.secret 0640, socket group')
  t.equal(mode(home).mode, 0o700, 'keyd\'s home 0700')
  t.equal(mode(home).uid, layout.keyd.uid)
  t.same(await runAs(layout.proxy, ACCESS, [secret, socket, home]), { secret: 'ok', home: 'EACCES', connect: 'ok' }, 'the proxy\'s uid reaches keyd and its secret, not keyd\'s home')
  t.same(await runAs({ ...layout.proxy, groups: [] }, ACCESS, [secret, socket, home]), { secret: 'EACCES', home: 'EACCES', connect: 'EACCES' }, 'without the socket group: nothing')
}

const canRunAs = process.getuid?.() === 0 && (() => { try { execFileSync('setpriv', ['--version'], { stdio: 'ignore' }); return true } catch { return false } })()

t.test('compose layout, built and run as its uids (root only)', { skip: canRunAs ? false : 'needs root and setpriv (CI runs as root)' }, async t => {
  const c = parse(readFileSync(join(deploy, 'compose.yaml'), 'utf8')) as Doc
  const keyd = c.services.keyd as Doc
  const proxy = c.services.proxy as Doc
  const ku = uidGid(keyd.user)
  const pu = uidGid(proxy.user)
  const socketGroup = Number(command(keyd.command).values['socket-group'])
  const layout: Layout = {
    keyd: { ...ku, groups: [ku.gid, ...(keyd.group_add as string[]).map(Number)] },
    proxy: { ...pu, groups: [pu.gid, ...(proxy.group_add as string[]).map(Number)] },
    socketGroup,
    args: keyd.command as string[],
    home: keyd.environment.KEYEDGE_HOME as string
  }
  const root = tempHome('keyedge-compose-')
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  chmodSync(root, 0o755)
  // Fresh named volumes start as the image made their mount points.
  const mounts = new Map((keyd.volumes as string[]).map(v => v.split(':') as [string, string]))
  for (const [volume, path] of mounts) {
    const d = defined(imageDirs().get(path), `the image makes ${path} for ${volume}`)
    makeDir(join(root, path), d.uid, d.gid, parseInt(d.mode, 8))
  }
  // The passphrase file as the docs tell to make it: 0600, chowned to keyd's uid.
  const pass = join(root, `/run/secrets/${(keyd.secrets as Doc[])[0]?.target as string}`)
  makeDir(dirname(pass), 0, 0, 0o755)
  writeFileSync(pass, 'compose layout test passphrase\n', { mode: 0o600 })
  chownSync(pass, ku.uid, ku.gid)
  const k = startKeyd(t, root, layout)
  await k.waitFor(o => o.msg === 'keyd ready', 30_000)
  await checkSeparation(t, root, layout, k)
})

t.test('kubernetes layout, fsGroup and all, built and run as its uids (root only)', { skip: canRunAs ? false : 'needs root and setpriv (CI runs as root)' }, async t => {
  const docs = readdirSync(join(deploy, 'kubernetes')).filter(f => f.endsWith('.yaml')).flatMap(f => parseAllDocuments(readFileSync(join(deploy, 'kubernetes', f), 'utf8')).map(d => d.toJS() as Doc))
  const pod = (docs.find(d => d.kind === 'StatefulSet') as Doc).spec.template.spec as Doc
  const keyd = (pod.initContainers as Doc[]).find(c => c.name === 'keyd') as Doc
  const proxy = (pod.containers as Doc[]).find(c => c.name === 'proxy') as Doc
  const fsGroup = pod.securityContext.fsGroup as number
  const extra = [fsGroup, ...((pod.securityContext.supplementalGroups ?? []) as number[])]
  const who = (c: Doc): Who => ({ uid: c.securityContext.runAsUser, gid: c.securityContext.runAsGroup, groups: [...new Set([c.securityContext.runAsGroup as number, ...extra])] })
  const layout: Layout = {
    keyd: who(keyd),
    proxy: who(proxy),
    socketGroup: Number(command(keyd.args).values['socket-group']),
    args: keyd.args as string[],
    home: (keyd.env as Doc[]).find(e => e.name === 'KEYEDGE_HOME')?.value as string
  }
  const root = tempHome('keyedge-k8s-')
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  chmodSync(root, 0o755)
  // What the kubelet makes with fsGroup: volume roots root:fsGroup, setgid, group-writable (an
  // emptyDir world-writable too); a Secret's files root:fsGroup with group read added.
  const volumes = new Map((pod.volumes as Doc[]).map(v => [v.name as string, v]))
  for (const m of keyd.volumeMounts as Doc[]) {
    const dir = join(root, m.mountPath as string)
    const secret = volumes.get(m.name)?.secret as Doc | undefined
    if (secret !== undefined) {
      makeDir(dir, 0, fsGroup, 0o2755)
      const file = join(dir, 'passphrase')
      writeFileSync(file, 'kubernetes layout test passphrase\n')
      chownSync(file, 0, fsGroup)
      chmodSync(file, (secret.defaultMode as number) | 0o440)
    } else {
      makeDir(dir, 0, fsGroup, volumes.get(m.name)?.emptyDir !== undefined ? 0o2777 : 0o2775)
    }
  }
  const k = startKeyd(t, root, layout)
  await k.waitFor(o => o.msg === 'keyd ready', 30_000)
  await checkSeparation(t, root, layout, k)
  await k.stop()

  // Were the kubelet ever to re-apply fsGroup over the claim (every file g+rw, every directory
  // g+rwx and setgid), keyd's next start closes its home again before anything is read.
  const walk = (p: string): void => {
    const st = statSync(p)
    chownSync(p, st.uid, fsGroup)
    chmodSync(p, (st.mode & 0o7777) | (st.isDirectory() ? 0o2070 : 0o060))
    if (st.isDirectory()) for (const e of readdirSync(p)) walk(join(p, e))
  }
  const claim = join(root, (keyd.volumeMounts as Doc[]).find(m => m.name === 'keyd-state')?.mountPath as string)
  walk(claim)
  t.equal(mode(join(root, layout.home)).mode & 0o070, 0o070, 'the walk opened keyd\'s home to the group')
  const again = startKeyd(t, root, layout)
  await again.waitFor(o => o.msg === 'keyd ready', 30_000)
  await checkSeparation(t, root, layout, again)
})
