// `keyedge validate` refuses what the proxy would refuse when it loads a config's files: a pair
// whose key does not match its certificate (a private key directly; a key reference against the
// public key keyd holds), a key path that is a directory, a key (reference) in the cert slot,
// a certificate in the key slot. Keys and certificates are made at test time.
import { once } from 'node:events'
import { mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { issueDevCertificates } from '../../src/cli/cert.js'
import { checkConfigFiles } from '../../src/config/files.js'
import { loadConfig, validateConfig, type EdgeConfig } from '../../src/config/index.js'
import { formatProblem } from '../../src/config/problems.js'
import { encodeKeyReference } from '../../keyd/protocol/codec.js'
import { startKeyd } from '../helpers/keyd.js'
import { tempHome } from '../helpers/paths.js'
import { spawnCli } from '../helpers/processes.js'
import { selfSigned } from '../helpers/proxy-fixtures.js'

type Files = Array<{ cert: string, key: string }>

function configOf (dir: string, files: Files, extra: Record<string, unknown> = {}): EdgeConfig {
  return validateConfig({
    certificates: [{ name: 'a', serverNames: ['a.test'], files }],
    routes: [{ upstream: 'http://127.0.0.1:1' }],
    ...extra
  }, { baseDir: dir })
}

async function check (config: EdgeConfig, now?: Date): Promise<{ problems: string[], notes: string[] }> {
  const r = await checkConfigFiles(config, now)
  return { problems: r.problems.map(formatProblem), notes: r.notes.map(formatProblem) }
}

async function validateCli (file: string): Promise<{ code: number, lines: string[] }> {
  const run = spawnCli(['validate', '--config', file])
  const [code] = await once(run.proc, 'close') as [number]
  return { code, lines: run.lines }
}

t.test('plain keys and misplaced files, without keyd', async t => {
  const dir = tempHome()
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const a = selfSigned(dir, 'a', ['a.test'])
  const b = selfSigned(dir, 'b', ['a.test'], 'rsa')
  const ref = join(dir, 'k.keyref')
  writeFileSync(ref, encodeKeyReference({ name: 'k', version: 1, type: 'ec-p256' }))
  const at = 'certificates[0].files[0]'

  t.same(await check(configOf(dir, [{ cert: a.cert, key: a.key }, { cert: b.cert, key: b.key }])), { problems: [], notes: [] }, 'matching pairs pass')
  t.same((await check(configOf(dir, [{ cert: a.cert, key: b.key }]))).problems,
    [`${at}.key: ${b.key} does not match the certificate ${a.cert}`])
  t.same((await check(configOf(dir, [{ cert: ref, key: a.key }]))).problems,
    [`${at}.cert: ${ref} holds a key reference, not a certificate ("cert" and "key" swapped?)`])
  t.same((await check(configOf(dir, [{ cert: a.key, key: a.key }]))).problems,
    [`${at}.cert: ${a.key} holds a private key, not a certificate ("cert" and "key" swapped?)`])
  t.same((await check(configOf(dir, [{ cert: a.cert, key: a.cert }]))).problems,
    [`${at}.key: ${a.cert} holds a certificate, not a key ("cert" and "key" swapped?)`])
  t.same((await check(configOf(dir, [{ cert: a.cert, key: ref }]))).problems,
    [`${at}.key: ${ref} is a key reference, which needs the "keyd" section`])
  t.same((await check(configOf(dir, [{ cert: a.cert, key: dir }]))).problems, [`${at}.key: ${dir} is a directory, not a file`])
  const later = new Date(Date.now() + 3 * 86_400_000)
  t.match((await check(configOf(dir, [{ cert: a.cert, key: a.key }]), later)).problems, [new RegExp(`^${at.replace(/[[\]]/g, '\\$&')}\\.cert: .* expired on `)])

  // The same through `keyedge validate`: one problem per line with its field path, exit 1.
  const file = join(dir, 'proxy.json')
  writeFileSync(file, JSON.stringify({ certificates: [{ name: 'a', serverNames: ['a.test'], files: [{ cert: 'a.crt', key: 'b.key' }, { cert: 'a.key', key: '.' }] }], routes: [{ upstream: 'http://127.0.0.1:1' }] }))
  t.same(await validateCli(file), { code: 1, lines: [`certificates[0].files[1].key: ${dir} is a directory, not a file`] }, 'a directory is refused at load, as the proxy does')
  t.throws(() => loadConfig(file), { code: 'EDGE_ERR_CONFIG_INVALID' })
  writeFileSync(file, JSON.stringify({ certificates: [{ name: 'a', serverNames: ['a.test'], files: [{ cert: 'a.crt', key: 'b.key' }, { cert: 'a.key', key: 'a.key' }] }], routes: [{ upstream: 'http://127.0.0.1:1' }] }))
  t.same(await validateCli(file), {
    code: 1,
    lines: [
      `${at}.key: ${b.key} does not match the certificate ${a.cert}`,
      `certificates[0].files[1].cert: ${a.key} holds a private key, not a certificate ("cert" and "key" swapped?)`
    ]
  })
})

t.test('key references are compared with the public key keyd holds, when keyd is reachable', async t => {
  const keyd = await startKeyd()
  t.teardown(async () => { await keyd.stop(); rmSync(keyd.paths.home, { recursive: true, force: true }) })
  const { leaves: [ec, rsa] } = await issueDevCertificates(keyd.admin, keyd.paths.certsDir)
  if (ec === undefined || rsa === undefined) throw new Error('cert dev issued no ECDSA and RSA leaves')
  const dir = join(keyd.paths.home, 'etc')
  mkdirSync(dir)
  const keydSection = { socket: keyd.paths.socket, clientName: 'proxy', secretFile: join(keyd.paths.secretsDir, 'proxy.secret'), timeoutMs: 10_000 }
  const at = 'certificates[0].files[0].key'

  t.same(await check(configOf(dir, [{ cert: ec.certFile, key: ec.keyRefFile }, { cert: rsa.certFile, key: rsa.keyRefFile }], { keyd: keydSection })),
    { problems: [], notes: [] }, 'the dev certificates match their keyd keys')
  t.same(await check(configOf(dir, [{ cert: ec.certFile, key: rsa.keyRefFile }], { keyd: keydSection })), {
    problems: [`${at}: key reference "localhost-rsa" version 1 does not match the certificate ${ec.certFile}: keyd holds another public key for it`],
    notes: []
  })
  const unknown = join(dir, 'unknown.keyref')
  writeFileSync(unknown, encodeKeyReference({ name: 'no-such-key', version: 1, type: 'ec-p256' }))
  const refused = await check(configOf(dir, [{ cert: ec.certFile, key: unknown }], { keyd: keydSection }))
  t.match(refused, { problems: [new RegExp(`^certificates\\[0\\]\\.files\\[0\\]\\.key: keyd refuses key reference "no-such-key" version 1: .*\\(KEYD_ERR_[A-Z_]+\\)$`)], notes: [] })

  const down = { ...keydSection, socket: join(dir, 'nothing.sock') }
  const unchecked = await check(configOf(dir, [{ cert: ec.certFile, key: rsa.keyRefFile }, { cert: rsa.certFile, key: rsa.keyRefFile }], { keyd: down }))
  t.same(unchecked.problems, [], 'what cannot be checked is no problem')
  t.match(unchecked.notes, [
    /^certificates\[0\]\.files\[0\]\.key: key reference "localhost-rsa" version 1 could not be checked against the certificate: keyd is not reachable at .*nothing\.sock/,
    /^certificates\[0\]\.files\[1\]\.key: key reference "localhost-rsa" version 1 could not be checked against the certificate: keyd is not reachable/
  ])

  const file = join(dir, 'proxy.json')
  const doc = (files: Files, keydConfig: unknown): string => JSON.stringify({ keyd: keydConfig, certificates: [{ name: 'a', serverNames: ['localhost'], files }], routes: [{ upstream: 'http://127.0.0.1:1' }] })
  writeFileSync(file, doc([{ cert: ec.certFile, key: rsa.keyRefFile }], keydSection))
  t.same(await validateCli(file), { code: 1, lines: [`${at}: key reference "localhost-rsa" version 1 does not match the certificate ${ec.certFile}: keyd holds another public key for it`] })
  writeFileSync(file, doc([{ cert: ec.certFile, key: ec.keyRefFile }], keydSection))
  t.same(await validateCli(file), { code: 0, lines: ['config OK'] })
  writeFileSync(file, doc([{ cert: ec.certFile, key: ec.keyRefFile }], down))
  const warned = await validateCli(file)
  t.equal(warned.code, 0)
  t.match(warned.lines, [/^warning: certificates\[0\]\.files\[0\]\.key: key reference "localhost-ec" version 1 could not be checked against the certificate: keyd is not reachable/, 'config OK'])
})
