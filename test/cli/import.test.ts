// Migrating from nginx: `keyedge import --nginx` moves an ECDSA and an RSA key (made at test time,
// as an nginx site would hold them) into a real keyd; the printed config entries run a real proxy
// whose handshakes keyd signs with the imported keys, and no proxy process holds them.
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { createPrivateKey } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { startKeyd } from '../helpers/keyd.js'
import { spawnCli } from '../helpers/processes.js'
import { tempHome } from '../helpers/paths.js'
import { curl, sClient } from '../helpers/edge.js'
import { jwkNeedles, scanMemory } from '../helpers/memory.js'
import { until } from '../helpers/wait.js'
import { startDemoUpstream } from '../../src/proxy/demo-upstream.js'
import { decodeKeyReference } from '../../keyd/protocol/codec.js'

const dir = tempHome('keyedge-import-')
const nginxDir = join(dir, 'nginx')
mkdirSync(join(nginxDir, 'ssl'), { recursive: true })
const openssl = (args: string[]): void => { execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] }) }

/** A CA, and a leaf for `names` with a fresh key of `keyArgs`, signed by it; the key file is 0600 as nginx keeps it. */
function leaf (base: string, keyArgs: string[], names: string[]): void {
  const key = join(nginxDir, 'ssl', `${base}.key`)
  openssl(['genpkey', ...keyArgs, '-out', key])
  openssl(['req', '-new', '-key', key, '-subj', `/CN=${names[0]}`, '-out', join(dir, `${base}.csr`)])
  writeFileSync(join(dir, `${base}.ext`), `subjectAltName=${names.map(n => `DNS:${n}`).join(',')}\nextendedKeyUsage=serverAuth\n`)
  openssl(['x509', '-req', '-in', join(dir, `${base}.csr`), '-CA', join(dir, 'ca.crt'), '-CAkey', join(dir, 'ca.key'), '-CAcreateserial',
    '-days', '3', '-extfile', join(dir, `${base}.ext`), '-out', join(nginxDir, 'ssl', `${base}.crt`)])
}
openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(dir, 'ca.key'), '-subj', '/CN=import test CA', '-days', '3', '-out', join(dir, 'ca.crt')])
leaf('shop-ecdsa', ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'], ['shop.test', 'www.shop.test'])
leaf('shop-rsa', ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048'], ['shop.test', 'www.shop.test'])
leaf('other', ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'], ['other.test'])
// What an nginx site looks like: http {} including a sites file, comments, quotes, a plain-HTTP
// redirect block, an IPv6 twin, a site using the http context's certificate.
writeFileSync(join(nginxDir, 'nginx.conf'), `# nginx.conf
events { worker_connections 1024; }
http {
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_certificate     ssl/other.crt;   # inherited by servers without their own
  ssl_certificate_key ssl/other.key;
  include sites-enabled/*.conf;
  server { listen 443 ssl; server_name other.test; location / { proxy_pass http://127.0.0.1:8080; } }
}
`)
mkdirSync(join(nginxDir, 'sites-enabled'))
writeFileSync(join(nginxDir, 'sites-enabled', 'shop.conf'), `server {
  listen 80;
  server_name shop.test www.shop.test;
  return 301 https://$host$request_uri;
}
server {
  listen 443 ssl default_server;
  server_name shop.test "www.shop.test";
  ssl_certificate     ssl/shop-ecdsa.crt;   # ECDSA first
  ssl_certificate_key ssl/shop-ecdsa.key;
  ssl_certificate     'ssl/shop-rsa.crt';
  ssl_certificate_key ssl/shop-rsa.key;
  location / { proxy_pass http://app; }
}
server {
  listen [::]:443 ssl;
  server_name www.shop.test;
  ssl_certificate     ssl/shop-ecdsa.crt;
  ssl_certificate_key ssl/shop-ecdsa.key;
  ssl_certificate     ssl/shop-rsa.crt;
  ssl_certificate_key ssl/shop-rsa.key;
}
`)

const keyd = await startKeyd()
const upstream = await startDemoUpstream({ host: '127.0.0.1', port: 0 })
t.teardown(async () => {
  await upstream.close()
  await keyd.stop()
  rmSync(keyd.paths.home, { recursive: true, force: true })
  rmSync(dir, { recursive: true, force: true })
})
const env = { KEYEDGE_HOME: keyd.paths.home }
const certsOut = join(dir, 'keyedge-certs')

async function cli (args: string[]): Promise<{ code: number | null, out: string, lines: string[] }> {
  const p = spawnCli(args, env)
  const { code } = await p.exited
  return { code, out: p.lines.join('\n'), lines: p.lines }
}

interface Fragment { certificates: Array<{ name: string, serverNames: string[], files: Array<{ cert: string, key: string }> }>, tls?: { defaultCertificate: string } }
let fragment: Fragment | undefined

t.test('import --nginx: every TLS site, its keys into keyd, references and config entries out', async t => {
  const dry = await cli(['import', '--nginx', join(nginxDir, 'nginx.conf'), '--dry-run'])
  t.equal(dry.code, 0, dry.out)
  t.equal((await keyd.admin.listKeys()).length, 0, 'a dry run imports nothing')
  const p = spawnCli(['import', '--nginx', join(nginxDir, 'nginx.conf'), '--out-dir', certsOut, '--json'], env)
  const { code } = await p.exited
  const all = p.lines.join('\n')
  t.equal(code, 0, all)
  const jsonStart = p.lines.findIndex(l => l === '{')
  fragment = JSON.parse(p.lines.slice(jsonStart, p.lines.lastIndexOf('}') + 1).join('\n')) as Fragment
  t.same(fragment.certificates.map(c => c.name).sort(), ['other.test', 'shop.test'])
  const shop = fragment.certificates.find(c => c.name === 'shop.test')
  t.same(shop?.serverNames, ['shop.test', 'www.shop.test'], 'the IPv6 twin block merged into one entry')
  t.equal(shop?.files.length, 2, 'ECDSA and RSA pairs in one entry')
  t.same(fragment.tls, { defaultCertificate: 'shop.test' }, 'listen … default_server')
  t.match(all, /shred -u .*shop-ecdsa\.key/, 'reminds to shred the PEMs')
  const keys = await keyd.admin.listKeys()
  t.same(keys.map(k => [k.name, k.type, k.origin]).sort(), [['other.test-ec', 'ec-p256', 'imported'], ['shop.test-ec', 'ec-p256', 'imported'], ['shop.test-rsa', 'rsa-2048', 'imported']])
  const ref = decodeKeyReference(readFileSync(join(certsOut, 'shop.test-rsa.keyref'), 'utf8'))
  t.same(ref, { name: 'shop.test-rsa', version: 1, type: 'rsa-2048' })
  t.notMatch(all, /PRIVATE KEY/, 'no key material printed')
})

t.test('key ref writes the same reference for any keyd key', async t => {
  const out = join(dir, 'again.keyref')
  const r = await cli(['keyd', 'key', 'ref', '--name', 'shop.test-ec', '--out', out])
  t.equal(r.code, 0, r.out)
  t.equal(readFileSync(out, 'utf8'), readFileSync(join(certsOut, 'shop.test-ec.keyref'), 'utf8'))
  await keyd.admin.rotateKey('other.test-ec')
  const v1 = await cli(['keyd', 'key', 'ref', '--name', 'other.test-ec', '--version', '1'])
  t.same(decodeKeyReference(v1.out), { name: 'other.test-ec', version: 1, type: 'ec-p256' }, 'a pinned version')
  const current = await cli(['keyd', 'key', 'ref', '--name', 'other.test-ec'])
  t.same(decodeKeyReference(current.out), { name: 'other.test-ec', version: 2, type: 'ec-p256' }, 'the current version, by number')
  const missing = await cli(['keyd', 'key', 'ref', '--name', 'nope'])
  t.equal(missing.code, 1)
  t.match(missing.out, /KEYD_ERR_KEY_NOT_FOUND/)
})

t.test('a re-run imports nothing twice; a mismatched pair is refused, nothing imported', async t => {
  const again = await cli(['import', '--nginx', join(nginxDir, 'nginx.conf'), '--out-dir', certsOut])
  t.equal(again.code, 0, again.out)
  t.match(again.out, /already in keyd: shop\.test-ec v1/)
  t.equal((await keyd.admin.listKeys()).length, 3)
  const bad = await cli(['import', '--cert', join(nginxDir, 'ssl', 'shop-ecdsa.crt'), '--key', join(nginxDir, 'ssl', 'shop-rsa.key'), '--name', 'mixed'])
  t.equal(bad.code, 1)
  t.match(bad.out, /certificate .*shop-ecdsa\.crt does not match key .*shop-rsa\.key/)
  t.equal((await keyd.admin.listKeys()).length, 3)
  const broken = join(dir, 'broken.conf')
  writeFileSync(broken, 'http { server { listen 443 ssl; ssl_certificate "a.crt; }\n')
  const r = await cli(['import', '--nginx', broken])
  t.equal(r.code, 1)
  t.match(r.out, /broken\.conf:1: unterminated "quoted string"/)
})

t.test('the imported keys sign real handshakes through the proxy; no proxy process holds them', async t => {
  if (fragment === undefined) { t.fail('no config fragment'); return }
  const confDir = join(dir, 'proxy-conf')
  mkdirSync(confDir)
  const configFile = join(confDir, 'proxy.json')
  writeFileSync(configFile, JSON.stringify({
    listen: { host: '127.0.0.1', port: 0 },
    workers: 1,
    keyd: { socket: keyd.paths.socket, secretFile: join(keyd.paths.secretsDir, 'proxy.secret') },
    ...fragment,
    routes: [{ host: '*', pathPrefix: '/', upstream: upstream.url }]
  }, null, 2))
  const proxy = spawnCli(['proxy', '--config', configFile], env)
  t.teardown(() => proxy.stop())
  const ready = await proxy.waitFor(o => o.msg === 'proxy listening', 30_000)
  const port = ready.port as number
  t.ok(existsSync(join(confDir, 'openssl-proxy.cnf')), 'the OpenSSL config is in the proxy\'s stateDir (its config directory)')
  t.notOk(existsSync(join(keyd.paths.home, 'openssl-proxy.cnf')), 'nothing written into keyd\'s socket directory')
  const caFile = join(dir, 'ca.crt')
  const ec = await sClient(port, ['-servername', 'shop.test', '-sigalgs', 'ECDSA+SHA256', '-verify_return_error'], caFile)
  t.match(ec, /Peer signature type: ECDSA/)
  t.match(ec, /Verification: OK/)
  const rsa = await sClient(port, ['-servername', 'www.shop.test', '-sigalgs', 'rsa_pss_rsae_sha256', '-verify_return_error'], caFile)
  t.match(rsa, /Peer signature type: RSA-PSS/)
  t.match(rsa, /Verification: OK/)
  const rsa12 = await sClient(port, ['-servername', 'shop.test', '-tls1_2', '-sigalgs', 'RSA+SHA256', '-verify_return_error'], caFile)
  t.match(rsa12, /Peer signature type: RSA\b/)
  const other = await curl(['--cacert', caFile, '--resolve', `other.test:${port}:127.0.0.1`, `https://other.test:${port}/`])
  t.equal(other.code, 0, other.stderr)
  const audit = join(keyd.paths.keydDir, 'audit.log')
  const signedBy = (key: string): boolean => readFileSync(audit, 'utf8').split('\n').some(l => l.includes('"op":"SIGN"') && l.includes(`"key":"${key}"`) && l.includes('"client":"proxy"') && l.includes('"result":"ok"'))
  t.ok(await until(() => ['shop.test-ec', 'shop.test-rsa', 'other.test-ec'].every(signedBy)), 'keyd signed with each imported key for the proxy')
  const workers = readFileSync(`/proc/${proxy.proc.pid as number}/task/${proxy.proc.pid as number}/children`, 'utf8').trim().split(/\s+/).map(Number)
  const needles = ['shop-ecdsa', 'shop-rsa'].flatMap(b => jwkNeedles(createPrivateKey(readFileSync(join(nginxDir, 'ssl', `${b}.key`))).export({ format: 'jwk' })))
  for (const pid of [proxy.proc.pid as number, ...workers]) t.same(scanMemory(pid, needles), needles.map(() => false), `pid ${pid}: no byte of the imported keys`)
})

t.test('a stateDir the proxy cannot write stops it at start with a clear error', async t => {
  if (fragment === undefined) { t.fail('no config fragment'); return }
  const configFile = join(dir, 'unwritable.json')
  writeFileSync(configFile, JSON.stringify({
    listen: { host: '127.0.0.1', port: 0 },
    keyd: { socket: keyd.paths.socket, secretFile: join(keyd.paths.secretsDir, 'proxy.secret') },
    certificates: fragment.certificates,
    routes: [{ upstream: upstream.url }],
    stateDir: join(dir, 'ca.crt', 'state')
  }))
  const r = await cli(['proxy', '--config', configFile])
  t.equal(r.code, 1)
  t.match(r.out, /stateDir: cannot write .*openssl-proxy\.cnf \(ENOTDIR\)/)
})
