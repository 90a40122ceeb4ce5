// Privilege separation, for real (needs root: CI runs as root): keyd as one system user, the proxy as
// another in keyd's socket group. The proxy serves TLS signed by keyd, yet its user cannot read a
// single file of keyd's state, a user outside the group cannot even connect, and no worker's memory
// holds a private key. The users and the group are made for this test and deleted after it.
import t from 'tap'
import { execFile, execFileSync } from 'node:child_process'
import { chmodSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { spawnCli } from '../helpers/processes.js'
import { ROOT, tempHome } from '../helpers/paths.js'
import { curl } from '../helpers/edge.js'
import { privateNeedles, scanMemory } from '../helpers/memory.js'
import { until } from '../helpers/wait.js'
import { KeydClient } from '../../keyd/client/client.js'
import { startDemoUpstream } from '../../src/proxy/demo-upstream.js'
import { issueDevCertificates } from '../../src/cli/cert.js'

if (process.getuid?.() !== 0) {
  t.plan(0, 'privilege separation needs root to create users and start keyd and the proxy as them (CI runs as root)')
} else {
  await run()
}

interface Account { name: string, uid: number, gid: number }

/** uid and primary gid of a user the test created. */
function account (name: string): Account {
  const [uid, gid] = ['-u', '-g'].map(f => Number(execFileSync('id', [f, name], { encoding: 'utf8' }).trim()))
  return { name, uid: uid as number, gid: gid as number }
}

/** Runs `node -e script` as uid/gid (no supplementary groups, as the proxy's workers) and parses its one JSON line. */
async function asUser (who: { uid: number, gid: number }, script: string, args: string[] = []): Promise<unknown> {
  return await new Promise((resolve, reject) => {
    execFile(process.execPath, ['-e', script, '--', ...args], { uid: who.uid, gid: who.gid, timeout: 20_000, cwd: '/' }, (err, stdout, stderr) => {
      if (err !== null) { reject(new Error(`${err.message}\n${stderr}`)); return }
      resolve(JSON.parse(stdout))
    })
  })
}

/** The errno code of each attempt to read a path (or list a directory); 'ok' where it worked. */
const READ_EACH = `const fs = require('node:fs'); const out = {}
for (const p of process.argv.slice(1)) { try { fs.statSync(p).isDirectory() ? fs.readdirSync(p) : fs.readFileSync(p); out[p] = 'ok' } catch (e) { out[p] = e.code } }
console.log(JSON.stringify(out))`

/** Connects to the unix socket argv[1]: 'ok' or the errno code. */
const CONNECT = `const s = require('node:net').connect(process.argv[1])
s.on('connect', () => { console.log(JSON.stringify('ok')); s.destroy() }); s.on('error', e => console.log(JSON.stringify(e.code)))`

/** Real uid, gid and supplementary groups of a live process, from /proc. */
function credentials (pid: number): { uid: number, gid: number, groups: number[] } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const field = (name: string): number[] => (new RegExp(`^${name}:[ \\t]*(.*)$`, 'm').exec(status)?.[1] ?? '').trim().split(/\s+/).filter(Boolean).map(Number)
  return { uid: field('Uid')[0] as number, gid: field('Gid')[0] as number, groups: field('Groups') }
}

async function run (): Promise<void> {
  const tag = `${process.pid.toString(36)}${Date.now().toString(36).slice(-3)}`
  const names = { keyd: `kek${tag}`, proxy: `kep${tag}`, outsider: `kex${tag}`, group: `keg${tag}` }
  const made: string[] = []
  // One teardown, last step first: the processes end (by pid) before their users are deleted.
  const cleanups: Array<() => unknown> = [() => {
    for (const u of made) execFileSync('userdel', [u])
    try { execFileSync('groupdel', [names.group]) } catch { /* never made */ }
  }]
  t.teardown(async () => { for (const c of cleanups.reverse()) await c() })
  execFileSync('groupadd', ['--system', names.group])
  for (const [u, extra] of [[names.keyd, []], [names.proxy, ['-G', names.group]], [names.outsider, []]] as const) {
    execFileSync('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', '--user-group', ...extra, u])
    made.push(u)
  }
  const keydUser = account(names.keyd)
  const proxyUser = account(names.proxy)
  const outsider = account(names.outsider)
  const group = Number(execFileSync('getent', ['group', names.group], { encoding: 'utf8' }).split(':')[2])

  // The test's tree is traversable by everyone (as /var/lib and /run are); each service's own directories are not.
  const root = tempHome('keyedge-privsep-')
  chmodSync(root, 0o755)
  const home = join(root, 'keyd-home')
  const run = join(root, 'run')
  const socket = join(run, 'keyd.sock')
  const proxyDir = join(root, 'proxy')
  mkdirSync(join(proxyDir, 'certs'), { recursive: true, mode: 0o755 })
  const upstream = await startDemoUpstream({ host: '127.0.0.1', port: 0 })
  const keyd = spawnCli(['keyd', 'serve', '--dev', '--user', names.keyd, '--socket-group', names.group, '--socket', socket, '--proxy-secret-dir', run], { KEYEDGE_HOME: home })
  cleanups.push(() => rmSync(root, { recursive: true, force: true }), async () => await upstream.close(), async () => await keyd.stop())
  const ready = await keyd.waitFor(o => o.msg === 'keyd ready', 30_000)
  t.equal(ready.uid, keydUser.uid, 'keyd says it runs as its user')

  t.test('keyd runs as its user; its home is its own, the socket and the proxy secret its group\'s', async t => {
    t.same(credentials(keyd.proc.pid as number), { uid: keydUser.uid, gid: keydUser.gid, groups: [...new Set([keydUser.gid, group])].sort((a, b) => a - b) })
    const mode = (p: string): { uid: number, gid: number, mode: number } => { const s = statSync(p); return { uid: s.uid, gid: s.gid, mode: s.mode & 0o7777 } }
    t.same(mode(home), { uid: keydUser.uid, gid: keydUser.gid, mode: 0o700 }, 'home 0700')
    t.same(mode(join(home, 'keyd')), { uid: keydUser.uid, gid: keydUser.gid, mode: 0o700 }, 'home/keyd 0700')
    t.same(mode(join(home, 'keyd', 'master.key')), { uid: keydUser.uid, gid: keydUser.gid, mode: 0o600 }, 'master key 0600')
    t.same(mode(join(home, 'clients', 'admin.secret')), { uid: keydUser.uid, gid: keydUser.gid, mode: 0o600 }, 'admin secret 0600')
    t.same(mode(run), { uid: keydUser.uid, gid: group, mode: 0o750 }, 'socket directory 0750, socket group')
    t.same(mode(socket), { uid: keydUser.uid, gid: group, mode: 0o660 }, 'socket 0660, socket group')
    t.same(mode(join(run, 'proxy.secret')), { uid: keydUser.uid, gid: group, mode: 0o640 }, 'proxy secret 0640, socket group')
    t.same(readdirSync(run).sort(), ['keyd.sock', 'proxy.secret'])
  })

  // Shared by the subtests below, which tap runs in order.
  let certs: Awaited<ReturnType<typeof issueDevCertificates>>
  let proxy: ReturnType<typeof spawnCli>
  let listening: Record<string, unknown>
  let workers: number[] = []

  t.test('the proxy serves TLS through keyd, every process of it as the proxy user in the socket group', async t => {
    // Certificates and key references (no key) for the proxy, issued through keyd as root would as an operator.
    const admin = new KeydClient({ socketPath: socket, clientName: 'admin', secretFile: join(home, 'clients', 'admin.secret'), timeoutMs: 10_000 })
    certs = await issueDevCertificates(admin, join(proxyDir, 'certs'))
    admin.close()
    for (const f of readdirSync(join(proxyDir, 'certs'))) chmodSync(join(proxyDir, 'certs', f), 0o644)
    const configFile = join(proxyDir, 'proxy.json')
    writeFileSync(configFile, JSON.stringify({
      listen: { host: '127.0.0.1', port: 0 },
      workers: 2,
      keyd: { socket, secretFile: join(run, 'proxy.secret') },
      stateDir: join(proxyDir, 'state'),
      certificates: [{ name: 'localhost', serverNames: ['localhost'], files: certs.leaves.map(l => ({ cert: l.certFile, key: l.keyRefFile })) }],
      routes: [{ upstream: upstream.url }]
    }), { mode: 0o644 })
    proxy = spawnCli(['proxy', '--config', configFile, '--user', `${names.proxy}:${names.group}`])
    cleanups.push(async () => await proxy.stop())
    listening = await proxy.waitFor(o => o.msg === 'proxy listening', 30_000)
    workers = readFileSync(`/proc/${proxy.proc.pid as number}/task/${proxy.proc.pid as number}/children`, 'utf8').trim().split(/\s+/).map(Number)
    for (const v of [['--tlsv1.3'], ['--tlsv1.2', '--tls-max', '1.2']]) {
      const r = await curl(['--cacert', certs.caFile, ...v, '-o', '/dev/null', '-w', '%{http_code}', `https://localhost:${listening.port as number}/`])
      t.equal(r.code, 0, `${v.join(' ')}: ${r.stderr}`)
      t.equal(r.stdout, '200', `${v.join(' ')}: 200 through keyd's signatures`)
    }
    t.equal(workers.length, 2, 'two workers')
    for (const pid of workers) t.same(credentials(pid), { uid: proxyUser.uid, gid: group, groups: [] }, `worker ${pid}: proxy user, socket group, no other group`)
    t.same(credentials(proxy.proc.pid as number), { uid: proxyUser.uid, gid: group, groups: [group] }, 'the primary dropped to the same once the workers listened')
    t.ok(proxy.lines.some(l => l.includes('primary dropped privileges')))
    t.same(readdirSync(join(proxyDir, 'state')), ['openssl-proxy.cnf'])
    t.equal(statSync(join(proxyDir, 'state', 'openssl-proxy.cnf')).uid, proxyUser.uid, 'its state is its own')
  })

  t.test('a worker restarted after the primary dropped privileges runs as the proxy user too, and serves', async t => {
    const killed = workers[0] as number
    process.kill(killed, 'SIGKILL')
    const children = (): number[] => readFileSync(`/proc/${proxy.proc.pid as number}/task/${proxy.proc.pid as number}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number)
    t.ok(await until(() => children().length === 2 && !children().includes(killed), 30_000), 'a new worker replaced the killed one')
    const fresh = children().find(pid => !workers.includes(pid)) as number
    // Forked by the unprivileged primary: libuv's setgroups(0) is refused then, so it keeps the primary's one group (G itself).
    t.same(credentials(fresh), { uid: proxyUser.uid, gid: group, groups: [group] }, `worker ${fresh}: proxy user, socket group, no other group`)
    // Each curl lands on either worker: enough of them answer 200 to have reached the new one too.
    let ok = 0
    for (let i = 0; i < 10; i++) {
      const r = await curl(['--cacert', certs.caFile, '-o', '/dev/null', '-w', '%{http_code}', `https://localhost:${listening.port as number}/`])
      if (r.stdout === '200') ok++
    }
    t.equal(ok, 10, 'every request answered 200 after the restart')
    workers = children()
  })

  t.test('the proxy\'s user reads not a single file of keyd\'s state', async t => {
    const keydFiles = [home, join(home, 'keyd'), join(home, 'keyd', 'master.key'), join(home, 'keyd', 'clients.json'), join(home, 'keyd', 'audit.log'),
      join(home, 'keyd', 'keys'), join(home, 'keyd', 'keys', 'localhost-ec.json'), join(home, 'clients', 'admin.secret')]
    const asProxy = await asUser({ uid: proxyUser.uid, gid: group }, READ_EACH, [...keydFiles, join(run, 'proxy.secret')]) as Record<string, string>
    for (const f of keydFiles) t.equal(asProxy[f], 'EACCES', `${f}: EACCES`)
    // The same child can read what it is given: the EACCES above is keyd's doing, not a broken probe.
    t.equal(asProxy[join(run, 'proxy.secret')], 'ok', 'its own client secret is readable')
    t.equal(await asUser({ uid: proxyUser.uid, gid: group }, CONNECT, [socket]), 'ok', 'and it can connect to keyd')
  })

  t.test('a user outside the socket group can neither connect nor read the proxy secret', async t => {
    t.equal(await asUser(outsider, CONNECT, [socket]), 'EACCES', 'connect: EACCES')
    const r = await asUser(outsider, READ_EACH, [join(run, 'proxy.secret'), join(home, 'keyd', 'master.key')]) as Record<string, string>
    t.same(Object.values(r), ['EACCES', 'EACCES'])
  })

  t.test('no worker of the proxy holds a private key byte', async t => {
    const needles = [...privateNeedles(home, 'localhost-ec'), ...privateNeedles(home, 'localhost-rsa')]
    for (const pid of [proxy.proc.pid as number, ...workers]) t.same(scanMemory(pid, needles), needles.map(() => false), `pid ${pid}: no private key bytes`)
  })

  t.test('keyd refuses, with KEYEDGE_ERR_PRIVILEGES and exit 1, what would not separate', async t => {
    const refused = async (args: string[], env: Record<string, string>, why: RegExp, what: string): Promise<void> => {
      const p = spawnCli(['keyd', 'serve', '--dev', ...args], env)
      const exit = await p.exited
      t.equal(exit.code, 1, `${what}: exit 1`)
      t.match(p.lines.join('\n'), why, what)
    }
    const other = join(root, 'other')
    await refused(['--user', `nosuch${tag}`], { KEYEDGE_HOME: other }, /no user named nosuch.*KEYEDGE_ERR_PRIVILEGES/, 'an unknown user')
    await refused(['--user', names.keyd, '--socket-group', names.group], { KEYEDGE_HOME: other }, /in keyd's home/, 'a socket group on a socket inside keyd\'s home')
    await refused(['--user', 'root'], { KEYEDGE_HOME: other }, /must not be 0/, 'root as the user to become')
    mkdirSync(other, { mode: 0o700 })
    chmodSync(other, 0o700)
    await refused(['--user', names.keyd], { KEYEDGE_HOME: other }, /belongs to uid 0.*chown -R/, 'a home that belongs to someone else')
    t.equal(statSync(other).uid, 0, 'and it is left as it was')
    // Not root: --user cannot be honoured, and keyd says so rather than running as whoever started it.
    const notRoot = await new Promise<{ code: number | null, err: string }>(resolve => {
      execFile(process.execPath, [join(ROOT, 'dist', 'src', 'cli', 'main.js'), 'keyd', 'serve', '--dev', '--user', names.keyd], { uid: outsider.uid, gid: outsider.gid, env: { ...process.env, KEYEDGE_HOME: join(root, 'outsider') }, cwd: '/' }, (err, _out, stderr) => {
        resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : null, err: stderr })
      })
    })
    t.equal(notRoot.code, 1, 'not root: exit 1')
    t.match(notRoot.err, /needs keyd to start as root/)
  })

  t.test('the proxy refuses a state directory that is not its user\'s; keyd as root without --user warns', async t => {
    const rootState = join(root, 'root-state')
    mkdirSync(rootState, { mode: 0o755 })
    const config = { ...JSON.parse(readFileSync(join(proxyDir, 'proxy.json'), 'utf8')), stateDir: rootState }
    writeFileSync(join(proxyDir, 'root-state.json'), JSON.stringify(config), { mode: 0o644 })
    const p = spawnCli(['proxy', '--config', join(proxyDir, 'root-state.json'), '--user', `${names.proxy}:${names.group}`])
    t.equal((await p.exited).code, 1, 'exit 1')
    t.match(p.lines.join('\n'), /root-state belongs to uid 0.*KEYEDGE_ERR_PRIVILEGES/, 'names the directory and its owner')
    t.equal(statSync(rootState).uid, 0, 'and leaves it root\'s')

    t.notOk(keyd.lines.some(l => l.includes('is running as root')), 'keyd with --user: no warning')
    const asRoot = spawnCli(['keyd', 'serve', '--dev', '--socket', join(root, 'as-root', 'keyd.sock')], { KEYEDGE_HOME: join(root, 'as-root') })
    try {
      await asRoot.waitFor(o => o.msg === 'keyd ready', 30_000)
      t.ok(asRoot.lines.some(l => { const o = JSON.parse(l) as { level?: number, msg?: string }; return o.level === 40 && /keyd is running as root: pass --user/.test(o.msg ?? '') }), 'keyd as root without --user warns')
    } finally {
      await asRoot.stop()
    }
  })
}
