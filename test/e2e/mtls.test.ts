// Client certificates (mTLS) per certificate entry, against a real proxy (keyd, 1 worker) with real
// clients (curl, openssl s_client, Node's TLS client) and a client CA made at test time:
//   localhost   clientAuth "require"     a.wild.test   clientAuth "request"     other.test   none
//   b.wild.test clientAuth "require" with another CA
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { readFileSync, renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { connect as tlsConnect } from 'node:tls'
import { startStack, startProxy, curl, sClient } from '../helpers/edge.js'
import { admin } from '../helpers/rotation.js'
import { until } from '../helpers/wait.js'
import { validateConfig } from '../../src/config/index.js'
import { ConfigInvalidError } from '../../src/errors.js'
import { rfc4514Subject } from '../../src/tls/client-auth.js'

const stack = await startStack()
t.teardown(() => stack.stop())
const dir = stack.keyd.paths.home
const serverCa = readFileSync(stack.caFile)

// Two client CAs and a client certificate under each, made now (nothing committed).
function openssl (args: string[]): string {
  return execFileSync('openssl', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
}
function makeCa (name: string): void {
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(dir, `${name}.key`),
    '-out', join(dir, `${name}.crt`), '-subj', `/CN=${name}`, '-days', '2', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign'])
}
function makeClient (name: string, ca: string, subject: string): void {
  openssl(['req', '-utf8', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(dir, `${name}.key`), '-out', join(dir, `${name}.csr`), '-subj', subject])
  writeFileSync(join(dir, `${name}.ext`), 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n')
  openssl(['x509', '-req', '-in', join(dir, `${name}.csr`), '-CA', join(dir, `${ca}.crt`), '-CAkey', join(dir, `${ca}.key`), '-CAcreateserial',
    '-out', join(dir, `${name}.crt`), '-days', '1', '-extfile', join(dir, `${name}.ext`)])
}
makeCa('client-ca')
makeCa('rogue-ca')
makeClient('alice', 'client-ca', '/O=Acme, Inc./CN=alicé')
makeClient('mallory', 'rogue-ca', '/O=Acme, Inc./CN=alicé')
const caFile = join(dir, 'client-bundle.pem')
writeFileSync(caFile, readFileSync(join(dir, 'client-ca.crt')))
const alice = { cert: join(dir, 'alice.crt'), key: join(dir, 'alice.key') }
const mallory = { cert: join(dir, 'mallory.crt'), key: join(dir, 'mallory.key') }
const aliceFingerprint = openssl(['x509', '-in', alice.cert, '-noout', '-fingerprint', '-sha256']).trim().split('=')[1]?.replace(/:/g, '').toLowerCase()
// What nginx's $ssl_client_s_dn would say: OpenSSL's RFC 2253 form.
const aliceSubject = openssl(['x509', '-in', alice.cert, '-noout', '-subject', '-nameopt', 'RFC2253']).trim().replace(/^subject=/, '')

const other = [{ cert: stack.other.certFile, key: stack.other.keyRefFile }]
const accessLog = join(dir, 'access.log')
const proxy = await startProxy(stack, {
  admin: {},
  extra: {
    accessLog: { path: accessLog },
    certificates: [
      { name: 'localhost', serverNames: ['localhost', '127.0.0.1'], files: stack.certs.leaves.map(l => ({ cert: l.certFile, key: l.keyRefFile })), clientAuth: { mode: 'require', caFile } },
      { name: 'optional', serverNames: ['a.wild.test'], files: other, clientAuth: { mode: 'request', caFile, subjectHeader: 'X-Peer-Subject' } },
      { name: 'plain', serverNames: ['other.test'], files: other },
      { name: 'partner', serverNames: ['b.wild.test'], files: other, clientAuth: { mode: 'require', caFile: join(dir, 'rogue-ca.crt') } }
    ]
  }
})
t.teardown(() => proxy.stop())
const port = proxy.port

/** curl to `host` with `args`; the upstream's view of the request headers (or undefined). */
async function upstreamHeaders (host: string, args: string[]): Promise<{ code: number, stderr: string, headers?: Record<string, string> }> {
  const r = await curl(['--cacert', stack.caFile, '--resolve', `${host}:${port}:127.0.0.1`, ...args, `https://${host}:${port}/headers`])
  if (r.code !== 0) return { code: r.code, stderr: r.stderr }
  return { code: 0, stderr: r.stderr, headers: (JSON.parse(r.stdout) as { headers: Record<string, string> }).headers }
}
const withCert = (c: { cert: string, key: string }): string[] => ['--cert', c.cert, '--key', c.key]
const forged = ['-H', 'x-client-cert-subject: CN=admin', '-H', 'x-client-cert-sha256: 00', '-H', 'X-Client-Cert-Verify: SUCCESS', '-H', 'x-peer-subject: CN=admin']

t.test('the subject is RFC 4514, as OpenSSL prints it', async t => {
  t.equal(aliceSubject, 'CN=alic\\C3\\A9,O=Acme\\, Inc.')
  t.equal(rfc4514Subject(new X509Certificate(readFileSync(alice.cert)).subject), aliceSubject)
  // A multi-valued RDN and every special, against OpenSSL's own RFC 2253 output for the same certificate.
  openssl(['req', '-x509', '-utf8', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(dir, 'odd.key'), '-out', join(dir, 'odd.crt'),
    '-days', '1', '-subj', '/O=Acme, Inc.+OU=x/CN= lead#=é"<;>/'])
  const odd = readFileSync(join(dir, 'odd.crt'))
  const expected = openssl(['x509', '-in', join(dir, 'odd.crt'), '-noout', '-subject', '-nameopt', 'RFC2253']).trim().replace(/^subject=/, '')
  t.equal(expected, 'CN=\\ lead#=\\C3\\A9\\"\\<\\;\\>,O=Acme\\, Inc.+OU=x')
  t.equal(rfc4514Subject(new X509Certificate(odd).subject), expected)
})

t.test('require + a certificate from the CA: 200, the upstream gets subject, fingerprint and SUCCESS (HTTP/1.1 and HTTP/2), forged ones replaced', async t => {
  for (const version of ['--http1.1', '--http2']) {
    const r = await upstreamHeaders('localhost', [version, ...withCert(alice), ...forged])
    t.equal(r.code, 0, `${version}: ${r.stderr}`)
    t.equal(r.headers?.['x-client-cert-subject'], aliceSubject, version)
    t.equal(r.headers?.['x-client-cert-sha256'], aliceFingerprint, version)
    t.equal(r.headers?.['x-client-cert-verify'], 'SUCCESS', version)
    t.equal(r.headers?.['x-peer-subject'], undefined, `${version}: another entry's header name is removed too`)
  }
})

t.test('require + no certificate: OpenSSL\'s alert, certificate_required (TLS 1.3) / handshake_failure (TLS 1.2)', async t => {
  // TLS 1.3: the client's handshake is over before the server's alert comes; -ign_eof waits for it.
  const v13 = await sClient(port, ['-servername', 'localhost', '-tls1_3', '-ign_eof'], stack.caFile)
  t.match(v13, /alert certificate required[\s\S]*SSL alert number 116/)
  const v12 = await sClient(port, ['-servername', 'localhost', '-tls1_2'], stack.caFile)
  t.match(v12, /alert handshake failure[\s\S]*SSL alert number 40/)
  t.match(v12, /Acceptable client certificate CA names\n\/?CN ?= ?client-ca/, 'the CertificateRequest names the client CA')
  const r = await curl(['--cacert', stack.caFile, `https://localhost:${port}/headers`])
  t.not(r.code, 0, 'curl without a certificate gets no response')
})

t.test('require + a certificate from another CA: closed before any request, counted as client_certificate', async t => {
  for (const version of ['--tlsv1.3', '--tlsv1.2']) {
    const r = await upstreamHeaders('localhost', [version, ...(version === '--tlsv1.2' ? ['--tls-max', '1.2'] : []), ...withCert(mallory)])
    t.not(r.code, 0, `${version}: no response (curl: ${r.stderr.trim()})`)
  }
  t.ok(await until(async () => /edge_tls_handshake_failures_total\{reason="client_certificate"\} ([4-9]|\d\d)/.test((await admin(proxy.adminPort as number, '/metrics')).body), 10_000),
    '2 missing + 2 unverified certificates (and curl\'s) counted')
})

t.test('the access log records the client certificate of entries with clientAuth, and only of those', async t => {
  t.equal((await upstreamHeaders('localhost', ['-H', 'x-request-id: ignored', ...withCert(alice)])).code, 0)
  t.equal((await upstreamHeaders('a.wild.test', [])).code, 0)
  t.equal((await upstreamHeaders('other.test', [])).code, 0)
  type Line = { sni?: string, clientCert?: { verify: string, subject?: string, fingerprint?: string } }
  let lines: Line[] = []
  const bySni = (sni: string): Line[] => lines.filter(l => l.sni === sni)
  // Lines reach the file in batches (at most a second later).
  await until(() => {
    try { lines = readFileSync(accessLog, 'utf8').split('\n').filter(l => l !== '').map(l => JSON.parse(l) as Line) } catch { return false }
    return bySni('localhost').length > 0 && bySni('a.wild.test').length > 0 && bySni('other.test').length > 0
  }, 10_000)
  t.same(bySni('localhost').at(-1)?.clientCert, { verify: 'SUCCESS', subject: aliceSubject, fingerprint: aliceFingerprint }, 'verified: subject and fingerprint')
  t.same(bySni('a.wild.test').at(-1)?.clientCert, { verify: 'NONE' }, 'asked for, none given')
  t.equal(bySni('other.test').at(-1)?.clientCert, undefined, 'an entry without clientAuth: no field')
})

t.test('request: no certificate → 200 and NONE; another CA → 200 and FAILED, no identity; the CA\'s → SUCCESS', async t => {
  const none = await upstreamHeaders('a.wild.test', [...forged])
  t.equal(none.code, 0, none.stderr)
  t.equal(none.headers?.['x-client-cert-verify'], 'NONE')
  t.equal(none.headers?.['x-peer-subject'], undefined)
  t.equal(none.headers?.['x-client-cert-subject'], undefined, 'the default name is removed too')
  t.equal(none.headers?.['x-client-cert-sha256'], undefined)
  const failed = await upstreamHeaders('a.wild.test', ['--http2', ...withCert(mallory), ...forged])
  t.equal(failed.code, 0, failed.stderr)
  t.match(failed.headers?.['x-client-cert-verify'], /^FAILED:[A-Z_]+$/)
  t.equal(failed.headers?.['x-peer-subject'], undefined, 'an unverified subject is never passed')
  t.equal(failed.headers?.['x-client-cert-sha256'], undefined)
  const ok = await upstreamHeaders('a.wild.test', withCert(alice))
  t.equal(ok.headers?.['x-client-cert-verify'], 'SUCCESS')
  t.equal(ok.headers?.['x-peer-subject'], aliceSubject, 'the entry\'s own header name')
  t.equal(ok.headers?.['x-client-cert-sha256'], aliceFingerprint)
})

t.test('an entry without clientAuth sends no CertificateRequest and removes forged identity headers', async t => {
  for (const v of ['-tls1_3', '-tls1_2']) {
    const out = await sClient(port, ['-servername', 'other.test', v, '-msg'], stack.caFile)
    t.match(out, /ServerHello/, v)
    t.notMatch(out, /CertificateRequest/, `${v}: no CertificateRequest`)
    t.match(out, /No client certificate CA names sent/, v)
  }
  const control = await sClient(port, ['-servername', 'localhost', '-tls1_3', '-msg'], stack.caFile)
  t.match(control, /CertificateRequest/, 'the require entry does send one (the check above can fail)')
  for (const version of ['--http1.1', '--http2']) {
    const r = await upstreamHeaders('other.test', [version, ...withCert(alice), ...forged])
    t.equal(r.code, 0, r.stderr)
    for (const h of ['x-client-cert-subject', 'x-client-cert-sha256', 'x-client-cert-verify', 'x-peer-subject']) t.equal(r.headers?.[h], undefined, `${version}: ${h}`)
  }
})

interface Visit { reused: boolean, session?: Buffer, body: string, error?: string }

/**
 * One request on a new TLS connection (Node's client: OpenSSL), offering `session`. The server's
 * chain is verified, not its name: a session offered to another entry must be judged by the proxy,
 * not refused by the client because the resumed session's certificate names another host.
 */
async function visit (servername: string, version: 'TLSv1.2' | 'TLSv1.3', opts: { cert?: { cert: string, key: string }, session?: Buffer }): Promise<Visit> {
  return await new Promise(resolve => {
    let session: Buffer | undefined
    let reused = false
    let body = ''
    let error: string | undefined
    const s = tlsConnect({
      host: '127.0.0.1', port, servername, ca: serverCa, minVersion: version, maxVersion: version, ALPNProtocols: ['http/1.1'], checkServerIdentity: () => undefined,
      ...(opts.cert !== undefined ? { cert: readFileSync(opts.cert.cert), key: readFileSync(opts.cert.key) } : {}),
      ...(opts.session !== undefined ? { session: opts.session } : {})
    })
    const timer = setTimeout(() => s.destroy(new Error('timeout')), 10_000)
    s.on('session', (b: Buffer) => { session = b })
    s.once('secureConnect', () => {
      reused = s.isSessionReused()
      s.write(`GET /headers HTTP/1.1\r\nhost: ${servername}\r\nconnection: close\r\n\r\n`)
    })
    s.on('data', (c: Buffer) => { body += c.toString() })
    s.on('error', (err: NodeJS.ErrnoException) => { error = err.code ?? err.message })
    s.on('close', () => {
      clearTimeout(timer)
      resolve({ reused, body, ...(session !== undefined ? { session } : {}), ...(error !== undefined ? { error } : {}) })
    })
  })
}
const seen = (v: Visit): Record<string, string> => {
  const json = v.body.slice(v.body.indexOf('\r\n\r\n') + 4)
  try { return (JSON.parse(json) as { headers: Record<string, string> }).headers } catch { return {} }
}

t.test('resumption keeps the client identity; a session of an entry that asked for nothing does not resume where one is required', async t => {
  for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
    const first = await visit('localhost', version, { cert: alice })
    t.equal(seen(first)['x-client-cert-subject'], aliceSubject, `${version}: full handshake`)
    t.ok(first.session, `${version}: a session`)
    const again = await visit('localhost', version, { cert: alice, ...(first.session !== undefined ? { session: first.session } : {}) })
    t.ok(again.reused, `${version}: resumed`)
    t.equal(seen(again)['x-client-cert-subject'], aliceSubject, `${version}: the identity survives resumption`)
    t.equal(seen(again)['x-client-cert-sha256'], aliceFingerprint, version)

    const plain = await visit('other.test', version, {})
    t.ok(plain.session, `${version}: a session from the entry without clientAuth`)
    const crossed = await visit('localhost', version, plain.session !== undefined ? { session: plain.session } : {})
    t.notOk(crossed.reused, `${version}: not resumed onto the require entry`)
    t.equal(seen(crossed)['x-client-cert-verify'], undefined, `${version}: no request served without a certificate`)
    t.ok(crossed.error, `${version}: refused (${crossed.error ?? ''})`)

    // Another entry that requires a certificate of another CA: alice's session is not accepted there
    // (OpenSSL also refuses a session whose server name differs; the reload test below has the same name).
    const partner = await visit('b.wild.test', version, again.session !== undefined ? { session: again.session } : {})
    t.notOk(partner.reused, `${version}: a session verified against one entry's CA does not resume on an entry trusting another`)
    t.equal(seen(partner)['x-client-cert-subject'], undefined, version)
    t.ok(partner.error, `${version}: refused there (${partner.error ?? ''})`)

    // request mode: a session made without a certificate resumes as NONE (Node calls a resumed TLS 1.3 session "authorized").
    const anon = await visit('a.wild.test', version, {})
    const anonAgain = await visit('a.wild.test', version, anon.session !== undefined ? { session: anon.session } : {})
    t.ok(anonAgain.reused, `${version}: anonymous session resumed`)
    t.equal(seen(anonAgain)['x-client-cert-verify'], 'NONE', version)
    t.equal(seen(anonAgain)['x-peer-subject'], undefined, version)
  }
})

t.test('the CA bundle reloads with the certificates (file watcher); sessions verified under the old bundle no longer resume', async t => {
  const sessions = new Map<string, Buffer | undefined>()
  for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
    const v = await visit('localhost', version, { cert: alice })
    t.equal(seen(v)['x-client-cert-verify'], 'SUCCESS', `${version}: before the reload`)
    sessions.set(version, v.session)
  }
  const tmp = `${caFile}.tmp`
  writeFileSync(tmp, readFileSync(join(dir, 'rogue-ca.crt')))
  renameSync(tmp, caFile)
  t.ok(await until(async () => (await upstreamHeaders('localhost', withCert(mallory))).headers?.['x-client-cert-verify'] === 'SUCCESS', 20_000),
    'a certificate of the new CA is accepted')
  const old = await upstreamHeaders('localhost', withCert(alice))
  t.not(old.code, 0, 'one of the CA no longer in the bundle is refused')
  for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
    const session = sessions.get(version)
    const v = await visit('localhost', version, session !== undefined ? { session } : {})
    t.notOk(v.reused, `${version}: a session verified under the old bundle does not resume (the session id context changed with it)`)
    t.equal(seen(v)['x-client-cert-subject'], undefined, `${version}: nothing served`)
  }
  const metrics = (await admin(proxy.adminPort as number, '/metrics')).body
  t.match(metrics, /edge_tls_client_certificates_total\{result="success"\} [1-9]/)
  t.match(metrics, /edge_tls_client_certificates_total\{result="none"\} [1-9]/)
  t.match(metrics, /edge_tls_client_certificates_total\{result="failed"\} [1-9]/)
})

t.test('clientAuth added to an entry by a config reload: that entry asks from then on', async t => {
  const config = JSON.parse(readFileSync(proxy.configFile, 'utf8')) as { certificates: Array<Record<string, unknown>> }
  const plain = config.certificates.find(c => c.name === 'plain')
  if (plain === undefined) throw new Error('no plain entry')
  plain.clientAuth = { mode: 'require', caFile }
  writeFileSync(`${proxy.configFile}.tmp`, JSON.stringify(config, null, 2))
  renameSync(`${proxy.configFile}.tmp`, proxy.configFile)
  t.ok(await until(async () => (await upstreamHeaders('other.test', [])).code !== 0, 20_000), 'other.test refuses a client without a certificate')
  const ok = await upstreamHeaders('other.test', withCert(mallory))
  t.equal(ok.headers?.['x-client-cert-verify'], 'SUCCESS', 'and takes one from the bundle (now the second CA)')
  const out = await sClient(port, ['-servername', 'other.test', '-tls1_2', '-msg'], stack.caFile)
  t.match(out, /CertificateRequest/)
})

t.test('config: the CA bundle is checked with its field path, renamed keys get hints', async t => {
  const base = (clientAuth: unknown): unknown => ({
    certificates: [{ name: 'a', serverNames: ['a.test'], files: [{ cert: 'a.crt', key: 'a.key' }], clientAuth }],
    routes: [{ upstream: 'http://127.0.0.1:1' }]
  })
  const problems = (clientAuth: unknown): string => {
    try {
      validateConfig(base(clientAuth), { baseDir: dir })
      return ''
    } catch (err) {
      return err instanceof ConfigInvalidError ? err.problems.join('\n') : String(err)
    }
  }
  t.match(problems({ ca: 'x.pem' }), /certificates\[0\]\.clientAuth\.ca.*use "caFile"/)
  t.match(problems({ caFile: 'x.pem', mode: 'optional' }), /certificates\[0\]\.clientAuth\.mode/)
  t.match(problems({ caFile: 'x.pem', subjectHeader: 'bad header' }), /subjectHeader.*not an HTTP header name/)
  t.match(problems({ caFile: 'x.pem', verifyHeader: 'X-Forwarded-User' }), /verifyHeader.*sets or removes itself/)
  const ok = validateConfig(base({ caFile: 'x.pem', subjectHeader: 'X-Peer' }), { baseDir: dir }) as { certificates: Array<{ clientAuth: { caFile: string, mode: string, subjectHeader: string } }> }
  t.same(ok.certificates[0]?.clientAuth, { caFile: join(dir, 'x.pem'), mode: 'require', subjectHeader: 'x-peer', fingerprintHeader: 'x-client-cert-sha256', verifyHeader: 'x-client-cert-verify' })
  t.match(((): string => { try { validateConfig({ ...(base(undefined) as object), certificates: [{ name: 'a', serverNames: ['a.test'], files: [{ cert: 'a.crt', key: 'a.key' }], mtls: {} }] }, { baseDir: dir }); return '' } catch (err) { return String(err) } })(), /use "clientAuth"/)

  // The files: checked where the proxy loads the config (keyedge proxy / validate).
  const { certificateFileProblems } = await import('../../src/config/files.js')
  const fileProblems = (file: string): string[] => certificateFileProblems({ certificates: [{ name: 'a', serverNames: ['a.test'], files: [], clientAuth: { caFile: file, mode: 'require', subjectHeader: 's', fingerprintHeader: 'f', verifyHeader: 'v' } }] } as never)
    .map(p => `${p.path.join('.')}: ${p.message}`)
  writeFileSync(join(dir, 'empty.pem'), '')
  t.match(fileProblems(join(dir, 'missing.pem')), [/certificates\.0\.clientAuth\.caFile: cannot read .*ENOENT/])
  t.match(fileProblems(join(dir, 'empty.pem')), [/clientAuth\.caFile: .*holds no PEM CERTIFICATE block/])
  t.match(fileProblems(alice.cert), [/clientAuth\.caFile: .*is not a CA/])
  t.same(fileProblems(join(dir, 'client-ca.crt')), [])
})
