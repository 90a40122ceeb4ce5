// Every signature scheme OpenSSL negotiates with an in-process key, the proxy negotiates with keys in
// keyd: openssl s_client offering one scheme at a time, TLS 1.2 and 1.3, ECDSA P-256 and P-384, RSA
// PKCS#1 and PSS, against the proxy and against a plain Node TLS server, under the Node the suite runs
// on (24) and the machine's second runtime (e.g. Node 20).
import t from 'tap'
import { execFile, execFileSync, spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { startStack, startProxy, type Stack } from '../helpers/edge.js'
import { secondNode } from '../helpers/paths.js'
import { ensureDevCa, issueLeaf } from '../../certs/dev-ca.js'
import { DEFAULT_CIPHERS } from '../../src/config/index.js'

const REFERENCE = fileURLToPath(new URL('./reference-tls-server.js', import.meta.url))

interface Case { version: '-tls1_2' | '-tls1_3', name: string, sigalgs: string }
const cases: Case[] = []
for (const sigalgs of ['ECDSA+SHA1', 'ECDSA+SHA224', 'ECDSA+SHA256', 'ECDSA+SHA384', 'ECDSA+SHA512',
  'RSA+SHA1', 'RSA+SHA224', 'RSA+SHA256', 'RSA+SHA384', 'RSA+SHA512',
  'rsa_pss_rsae_sha256', 'rsa_pss_rsae_sha384', 'rsa_pss_rsae_sha512']) {
  cases.push({ version: '-tls1_2', name: 'localhost', sigalgs })
}
for (const sigalgs of ['ECDSA+SHA224', 'ECDSA+SHA256', 'ECDSA+SHA384', 'ECDSA+SHA512']) {
  cases.push({ version: '-tls1_2', name: 'p384.test', sigalgs })
}
for (const sigalgs of ['ecdsa_secp256r1_sha256', 'ecdsa_secp384r1_sha384', 'rsa_pss_rsae_sha256',
  'rsa_pss_rsae_sha384', 'rsa_pss_rsae_sha512', 'rsa_pkcs1_sha256']) {
  cases.push({ version: '-tls1_3', name: 'localhost', sigalgs })
}
for (const sigalgs of ['ecdsa_secp384r1_sha384', 'ecdsa_secp256r1_sha256']) {
  cases.push({ version: '-tls1_3', name: 'p384.test', sigalgs })
}
/** Schemes OpenSSL serves with in-process keys that the bridge refused before SHA-224 was added. */
const MUST_WORK = ['-tls1_2 localhost ECDSA+SHA224', '-tls1_2 localhost RSA+SHA224', '-tls1_2 p384.test ECDSA+SHA224']

/** One handshake offering only `c.sigalgs`: "ECDSA SHA224" (signature type and digest), or "failed". */
async function negotiate (port: number, c: Case, caFile?: string): Promise<{ outcome: string, verified: boolean }> {
  const args = ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', c.name, c.version, '-sigalgs', c.sigalgs,
    // SECLEVEL=0 lets the client offer SHA-1; whether the server accepts it is what is compared
    ...(c.version === '-tls1_2' ? ['-cipher', 'DEFAULT@SECLEVEL=0'] : []),
    ...(caFile !== undefined ? ['-CAfile', caFile] : [])]
  const out = await new Promise<string>(resolve => {
    const p = execFile('openssl', args, { encoding: 'utf8', timeout: 10000 }, (_err, stdout, stderr) => resolve(`${stdout}${stderr}`))
    p.stdin?.end()
  })
  const type = /Peer signature type: (\S+)/.exec(out)?.[1]
  const digest = /Peer signing digest: (\S+)/.exec(out)?.[1]
  return { outcome: type === undefined ? 'failed' : `${type} ${digest ?? '?'}`, verified: /Verification: OK|Verify return code: 0 \(ok\)/.test(out) }
}

async function startReference (node: string, dir: string): Promise<{ port: number, stop: () => Promise<void> }> {
  // self-signed, of the same types as the proxy's keys; generated now, removed with `dir`
  const gen = async (name: string, keyArgs: string[], cn: string): Promise<{ key: string, cert: string }> => {
    const key = join(dir, `${name}.key`)
    const cert = join(dir, `${name}.crt`)
    await new Promise<void>((resolve, reject) => execFile('openssl', ['req', '-x509', '-nodes', '-days', '1', '-subj', `/CN=${cn}`,
      ...keyArgs, '-keyout', key, '-out', cert], err => { if (err instanceof Error) reject(err); else resolve() }))
    return { key, cert }
  }
  const config = {
    ciphers: DEFAULT_CIPHERS,
    default: [await gen('ec', ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'], 'localhost'), await gen('rsa', ['-newkey', 'rsa:2048'], 'localhost')],
    sni: { 'p384.test': [await gen('p384', ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-384'], 'p384.test')] }
  }
  const file = join(dir, 'reference.json')
  writeFileSync(file, JSON.stringify(config))
  const child = spawn(node, [REFERENCE, file], { stdio: ['ignore', 'pipe', 'inherit'] })
  const [line] = await once(child.stdout, 'data') as [Buffer]
  const { port } = JSON.parse(line.toString()) as { port: number }
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return
    const gone = once(child, 'exit')
    child.kill('SIGTERM')
    await gone
  }
  return { port, stop }
}

async function proxyWithP384 (stack: Stack, node?: string): Promise<Awaited<ReturnType<typeof startProxy>>> {
  const ca = await ensureDevCa(stack.keyd.admin, stack.keyd.paths.certsDir)
  const p384 = await issueLeaf(stack.keyd.admin, stack.keyd.paths.certsDir, ca, { keyName: 'p384', keyType: 'ec-p384', serverNames: ['p384.test'] })
  return await startProxy(stack, {
    workers: 1,
    ...(node !== undefined ? { node, name: 'sigalgs-second-runtime' } : { name: 'sigalgs' }),
    extra: {
      certificates: [
        { name: 'localhost', serverNames: ['localhost'], files: stack.certs.leaves.map(l => ({ cert: l.certFile, key: l.keyRefFile })) },
        { name: 'p384', serverNames: ['p384.test'], files: [{ cert: p384.certFile, key: p384.keyRefFile }] }
      ]
    }
  })
}

const stack = await startStack()
t.teardown(() => stack.stop())
const dir = mkdtempSync(join(tmpdir(), 'keyedge-sigalgs-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

const runtimes: Array<[string, string | undefined]> = [[`Node ${process.versions.node} (OpenSSL ${process.versions.openssl})`, undefined]]
const second = secondNode()
if (second !== undefined) {
  const [node, openssl] = execFileSync(second, ['-p', 'process.versions.node + " " + process.versions.openssl'], { encoding: 'utf8' }).trim().split(' ')
  runtimes.push([`Node ${node} (OpenSSL ${openssl}), the second runtime`, second])
}

for (const [label, node] of runtimes) {
  t.test(`${label}: the proxy with keys in keyd negotiates what OpenSSL negotiates with keys in process`, async t => {
    const proxy = await proxyWithP384(stack, node)
    t.teardown(() => proxy.stop())
    const reference = await startReference(node ?? process.execPath, mkdtempSync(join(dir, 'ref-')))
    t.teardown(() => reference.stop())
    for (const c of cases) {
      const what = `${c.version} ${c.name} ${c.sigalgs}`
      const want = await negotiate(reference.port, c)
      const got = await negotiate(proxy.port, c, stack.caFile)
      t.equal(got.outcome, want.outcome, `${what}: ${want.outcome}`)
      if (got.outcome !== 'failed') t.ok(got.verified, `${what}: the certificate chain verifies`)
      if (MUST_WORK.includes(what)) t.not(got.outcome, 'failed', `${what} is served`)
    }
  })
}
