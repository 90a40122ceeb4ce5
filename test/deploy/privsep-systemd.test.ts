// deploy/systemd checked with systemd's own tools: `systemd-analyze verify` (a copy of each unit whose
// ExecStart points at this checkout's node and CLI, since verify wants the binaries to exist),
// `systemd-analyze security --offline` under a threshold, systemd-sysusers into a scratch root, and
// the hardening and the separation this project promises held to, line by line.
import t, { type Test } from 'tap'
import { execFile } from 'node:child_process'
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { CLI, ROOT, tempHome } from '../helpers/paths.js'
import { KEYD_OPTIONS } from '../../src/cli/keyd.js'
import { keydCommandUsage } from '../../src/cli/keyd-help.js'
import { PROXY_OPTIONS } from '../../src/cli/proxy.js'
import { validateConfig } from '../../src/config/validate.js'

const dir = join(ROOT, 'deploy', 'systemd')
const UNITS = ['keyd.service', 'keyedge-proxy.service'] as const
/** Where the units expect things on a real machine (their comments say so). */
const INSTALLED = { node: '/usr/bin/node', cli: '/opt/keyedge/dist/src/cli/main.js' }

async function run (cmd: string, args: string[]): Promise<{ code: number, out: string }> {
  return await new Promise(resolve => {
    execFile(cmd, args, { encoding: 'utf8', timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, out: stdout + stderr })
    })
  })
}

/** A unit's [Service] (and other) settings: every value of each key, in order (systemd keys repeat). */
function settings (text: string): Map<string, string[]> {
  const m = new Map<string, string[]>()
  for (const line of text.split('\n')) {
    const kv = /^([A-Za-z]+)=(.*)$/.exec(line)
    if (kv === null) continue
    m.set(kv[1] as string, [...(m.get(kv[1] as string) ?? []), kv[2] as string])
  }
  return m
}

const units = Object.fromEntries(UNITS.map(u => [u, readFileSync(join(dir, u), 'utf8')])) as Record<typeof UNITS[number], string>
const keyd = settings(units['keyd.service'])
const proxy = settings(units['keyedge-proxy.service'])
const one = (s: Map<string, string[]>, key: string): string | undefined => s.get(key)?.at(-1)

/** The keyedge arguments of an ExecStart line, after checking it runs the installed CLI with node. */
function cliArgs (t: Test, execStart: string | undefined): string[] {
  const argv = (execStart ?? '').split(' ')
  t.equal(argv[0], INSTALLED.node, 'run by node')
  t.equal(argv[1], INSTALLED.cli, 'the built CLI')
  return argv.slice(2)
}

t.test('both units are hardened the same way, and MemoryDenyWriteExecute is left out for V8', async t => {
  for (const [name, s] of [['keyd', keyd], ['proxy', proxy]] as const) {
    for (const [key, value] of Object.entries({
      NoNewPrivileges: 'yes', ProtectSystem: 'strict', ProtectHome: 'yes', PrivateTmp: 'yes', PrivateDevices: 'yes', LockPersonality: 'yes',
      RestrictSUIDSGID: 'yes', RestrictNamespaces: 'yes', RestrictRealtime: 'yes', ProtectKernelTunables: 'yes', ProtectKernelModules: 'yes',
      ProtectControlGroups: 'yes', RestrictAddressFamilies: 'AF_UNIX AF_INET AF_INET6', SystemCallFilter: '@system-service',
      SystemCallArchitectures: 'native', UMask: '0077', LimitCORE: '0', StateDirectoryMode: '0700'
    })) t.equal(one(s, key), value, `${name}: ${key}=${value}`)
    t.notOk(s.has('MemoryDenyWriteExecute'), `${name}: no MemoryDenyWriteExecute (the JIT needs W+X pages)`)
    t.notOk(s.has('PrivateNetwork'), `${name}: no PrivateNetwork (/metrics and the admin listener are on loopback)`)
  }
})

t.test('keyd and the proxy are two users; only the socket group joins them', async t => {
  t.not(one(keyd, 'User'), one(proxy, 'User'), 'different users')
  t.not(one(keyd, 'Group'), one(proxy, 'Group'), 'different primary groups')
  const keydArgs = cliArgs(t, one(keyd, 'ExecStart'))
  const { values: k, positionals } = parseArgs({ args: keydArgs, options: KEYD_OPTIONS, allowPositionals: true, strict: true })
  t.same(positionals, ['keyd', 'serve'])
  const serveHelp = keydCommandUsage('serve') ?? ''
  for (const flag of keydArgs.filter(a => a.startsWith('--'))) t.ok(serveHelp.includes(`  ${flag} `), `keyd serve --help lists ${flag}`)
  const group = k['socket-group']
  t.equal(typeof group, 'string', 'keyd hands its socket to a group')
  t.equal(one(proxy, 'SupplementaryGroups'), group, 'the proxy is in that group')
  t.equal(one(keyd, 'SupplementaryGroups'), group, 'keyd is in it too (to chown the socket to it)')
  t.notOk(k.user, 'no --user: systemd starts keyd as its user')
  const runtime = one(keyd, 'RuntimeDirectory')
  t.equal(k.socket, `/run/${runtime}/keyd.sock`, 'the socket is in keyd\'s RuntimeDirectory')
  t.equal(k['proxy-secret-dir'], `/run/${runtime}`, 'and the proxy secret beside it')
  t.equal(one(keyd, 'RuntimeDirectoryMode'), '0750', 'the socket directory: the group may enter, not list-write')
  t.equal(one(keyd, 'RuntimeDirectoryPreserve'), 'yes', 'kept across keyd restarts (the proxy keeps its secret)')
  t.equal(one(keyd, 'Environment'), `KEYEDGE_HOME=/var/lib/${one(keyd, 'StateDirectory') ?? ''}`, 'keyd\'s home is its StateDirectory')
  t.match(k['passphrase-file'], /^%d\//, 'the passphrase from the credentials directory')
  t.match(one(keyd, 'LoadCredential'), /^passphrase:\/etc\//, 'which LoadCredential= fills from a root-only file')
  t.equal(one(keyd, 'CapabilityBoundingSet'), '', 'keyd: no capability')
  t.equal(one(keyd, 'AmbientCapabilities'), '', 'keyd: none ambient')
  t.equal(one(keyd, 'IPAddressDeny'), 'any', 'keyd: no IP traffic but loopback')

  const proxyArgs = cliArgs(t, one(proxy, 'ExecStart'))
  t.equal(proxyArgs[0], 'proxy')
  const { values: p } = parseArgs({ args: proxyArgs.slice(1), options: PROXY_OPTIONS, strict: true, allowPositionals: false })
  t.notOk(p.user, 'no --user: systemd starts the proxy as its user')
  t.equal(one(proxy, 'CapabilityBoundingSet'), 'CAP_NET_BIND_SERVICE', 'proxy: only the capability to bind 443')
  t.equal(one(proxy, 'AmbientCapabilities'), 'CAP_NET_BIND_SERVICE')
  t.equal(one(proxy, 'KillMode'), 'mixed', 'SIGTERM to the primary alone, which drains its workers')
  t.ok(proxy.get('After')?.some(a => a.split(' ').includes('keyd.service')), 'started after keyd')

  // The example config the proxy unit names: valid, and pointing at keyd's socket, secret and its own StateDirectory.
  t.equal(p.config, '/etc/keyedge/proxy.json')
  const config = validateConfig(JSON.parse(readFileSync(join(dir, 'proxy.json'), 'utf8')), { baseDir: '/etc/keyedge', file: '/etc/keyedge/proxy.json' })
  t.equal(config.keyd?.socket, k.socket)
  t.equal(config.keyd?.secretFile, `${k['proxy-secret-dir'] as string}/proxy.secret`)
  t.equal(config.stateDir, `/var/lib/${one(proxy, 'StateDirectory') ?? ''}`)
  t.ok(config.listen.port < 1024, 'it binds a privileged port: hence CAP_NET_BIND_SERVICE')
})

const analyze = await run('systemd-analyze', ['--version'])
if (analyze.code !== 0) {
  t.pass('skipped: systemd-analyze is not installed (.ci/run installs the systemd package)', { skip: true })
} else {
  const scratch = tempHome('keyedge-systemd-')
  t.teardown(() => rmSync(scratch, { recursive: true, force: true }))
  // verify checks that ExecStart's binary exists: the same units, pointed at this checkout.
  for (const u of UNITS) writeFileSync(join(scratch, u), units[u].replaceAll(INSTALLED.node, process.execPath).replaceAll(INSTALLED.cli, CLI))

  t.test('systemd-analyze verify accepts both units, without a warning', async t => {
    const r = await run('systemd-analyze', ['verify', ...UNITS.map(u => join(scratch, u))])
    t.equal(r.code, 0, r.out)
    t.equal(r.out.trim(), '', 'no warning (an unknown or misspelt key is one)')
  })

  t.test('systemd-analyze security rates each unit OK (exposure 2.5 or less)', async t => {
    for (const u of UNITS) {
      const r = await run('systemd-analyze', ['security', '--offline=yes', '--threshold=25', '--no-pager', join(scratch, u)])
      t.equal(r.code, 0, `${u}: ${r.out.split('\n').filter(l => l.includes('Overall exposure')).join('') || r.out}`)
    }
  })

  t.test('systemd-sysusers makes the two users and the group from keyedge.sysusers.conf', async t => {
    const root = join(scratch, 'root')
    mkdirSync(join(root, 'etc'), { recursive: true })
    const r = await run('systemd-sysusers', [`--root=${root}`, join(dir, 'keyedge.sysusers.conf')])
    t.equal(r.code, 0, r.out)
    const users = readFileSync(join(root, 'etc', 'passwd'), 'utf8').split('\n').map(l => l.split(':'))
    const groups = readFileSync(join(root, 'etc', 'group'), 'utf8').split('\n').map(l => l.split(':'))
    t.ok(users.some(u => u[0] === one(keyd, 'User')), 'keyd\'s user')
    t.ok(users.some(u => u[0] === one(proxy, 'User')), 'the proxy\'s user')
    const socketGroup = groups.find(g => g[0] === one(proxy, 'SupplementaryGroups'))
    t.same(socketGroup?.[3]?.split(',').sort(), [one(keyd, 'User'), one(proxy, 'User')].sort(), 'the socket group holds keyd and the proxy, nobody else')
  })
}
