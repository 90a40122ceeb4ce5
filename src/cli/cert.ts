// `keyedge cert dev`: a development CA and leaf certificates whose keys live in keyd;
// `keyedge cert renew`: a new key version and certificate (or CSR), swapped in live.
import { parseArgs } from 'node:util'
import { join } from 'node:path'
import { homePaths } from '../../lib/home.js'
import { KeydClient } from '../../keyd/client/client.js'
import { KeydError } from '../../keyd/errors.js'
import { ensureDevCa, issueLeaf, type IssuedLeaf } from '../../certs/dev-ca.js'
import { renewCertificate } from '../../certs/renew.js'
import { CertRenewError } from '../errors.js'
import { errorMessage } from '../../lib/errors.js'

const COMMON = `Options:
  --home DIR       state directory (default $KEYEDGE_HOME or ./.keyedge)
  --socket PATH    keyd socket (default <home>/keyd.sock)
  -h, --help       this help`

const DEV_USAGE = `Usage: keyedge cert dev [--name N] [--san NAME …] [options]

Issues (or re-uses while valid) a development CA and, for the given names, an ECDSA P-256 and an
RSA-2048 leaf certificate. Every key is generated inside keyd; certificates are signed by keyd.
Files land in <home>/certs: ca.crt, <key>.crt and <key>.keyref (a key reference, no secret).

  --name N         key-name prefix: keys N-ec and N-rsa (default localhost)
  --san NAME       a server name (repeatable; default localhost, *.localhost, 127.0.0.1, ::1)
${COMMON}
`

const RENEW_USAGE = `Usage: keyedge cert renew --name N [--csr FILE] [--san NAME …] [--days N] [options]

Rotates the keyd key of <home>/certs/N.keyref to a new version and issues a new dev-CA
certificate for the same names (or --san), then replaces N.keyref and N.crt by atomic renames: a
running proxy watching them serves the new certificate to new connections without a restart.
With --csr FILE it writes instead a PKCS#10 request signed in keyd by the new key version to FILE,
and its key reference to FILE.keyref; install the CA's certificate as N.crt together with that
reference as N.keyref. The previous key version keeps signing until no certificate uses it.

  --name N         the certificate: <home>/certs/N.crt and N.keyref
  --san NAME       a server name (repeatable; default: the names of the current certificate)
  --days N         validity of the new certificate in days (default 365)
  --csr FILE       write a CSR for an external CA instead of issuing a certificate
${COMMON}
`

const USAGE = `Usage: keyedge cert dev [options]
       keyedge cert renew --name N [--csr FILE] [options]

Run "keyedge cert dev --help" or "keyedge cert renew --help" for each one's options.
`

export const DEV_SERVER_NAMES = ['localhost', '*.localhost', '127.0.0.1', '::1']

export interface DevCertificates { caFile: string, leaves: IssuedLeaf[] }

/** Issues the dev CA and one ECDSA + one RSA leaf for `serverNames`, keys named `<name>-ec` and `<name>-rsa`. */
export async function issueDevCertificates (client: KeydClient, certsDir: string, name = 'localhost', serverNames = DEV_SERVER_NAMES): Promise<DevCertificates> {
  const ca = await ensureDevCa(client, certsDir)
  const leaves = [
    await issueLeaf(client, certsDir, ca, { keyName: `${name}-ec`, keyType: 'ec-p256', serverNames }),
    await issueLeaf(client, certsDir, ca, { keyName: `${name}-rsa`, keyType: 'rsa-2048', serverNames })
  ]
  return { caFile: join(certsDir, 'ca.crt'), leaves }
}

export async function main (argv: string[]): Promise<number> {
  let parsed
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: { help: { type: 'boolean', short: 'h' }, home: { type: 'string' }, socket: { type: 'string' }, name: { type: 'string' }, san: { type: 'string', multiple: true }, days: { type: 'string' }, csr: { type: 'string' } }
    })
  } catch (err) {
    process.stderr.write(`keyedge cert: ${errorMessage(err)}\n\n${USAGE}`)
    return 2
  }
  const { values, positionals } = parsed
  const command = positionals.join(' ')
  if (values.help === true) { process.stdout.write(command === 'dev' ? DEV_USAGE : command === 'renew' ? RENEW_USAGE : USAGE); return 0 }
  if (command !== 'dev' && command !== 'renew') { process.stderr.write(USAGE); return 2 }
  if (command === 'renew' && values.name === undefined) { process.stderr.write(`keyedge cert renew: missing --name\n\n${RENEW_USAGE}`); return 2 }
  const days = values.days === undefined ? undefined : Number(values.days)
  if (days !== undefined && !(Number.isInteger(days) && days > 0 && days <= 3650)) { process.stderr.write('keyedge cert: --days must be an integer from 1 to 3650\n'); return 2 }
  const paths = homePaths(values.home)
  const client = new KeydClient({ socketPath: values.socket ?? paths.socket, clientName: 'admin', secretFile: join(paths.secretsDir, 'admin.secret'), timeoutMs: 30000 })
  try {
    if (command === 'renew') {
      const r = await renewCertificate(client, { name: values.name as string, certsDir: paths.certsDir, serverNames: values.san, days, csrFile: values.csr })
      process.stdout.write(`key ${r.keyName} in keyd: new version ${r.version}\n`)
      if (r.csrFile !== undefined) {
        process.stdout.write(`CSR for ${r.serverNames.join(', ')}: ${r.csrFile}\nkey reference for the CA's certificate: ${r.csrKeyRefFile ?? ''}\n`)
      } else {
        process.stdout.write(`certificate ${r.certFile} (serial ${r.serialNumber ?? ''}, until ${r.notAfter?.toISOString() ?? ''}) and ${r.keyRefFile} replaced\n`)
      }
      return 0
    }
    const r = await issueDevCertificates(client, paths.certsDir, values.name, values.san ?? DEV_SERVER_NAMES)
    process.stdout.write(`CA: ${r.caFile}\n`)
    for (const l of r.leaves) process.stdout.write(`${l.keyType}: ${l.certFile} (key ${l.keyName} in keyd, reference ${l.keyRefFile})\n`)
    return 0
  } catch (err) {
    if (err instanceof KeydError || err instanceof CertRenewError) { process.stderr.write(`keyedge cert: ${err.message} (${err.code})\n`); return 1 }
    throw err
  } finally {
    client.close()
  }
}
