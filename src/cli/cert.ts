// `keyedge cert dev`: a development CA and leaf certificates whose keys live in keyd.
import { parseArgs } from 'node:util'
import { join } from 'node:path'
import { homePaths } from '../../keyd/home.js'
import { KeydClient } from '../../keyd/client/client.js'
import { KeydError } from '../../keyd/errors.js'
import { ensureDevCa, issueLeaf, type IssuedLeaf } from '../../certs/dev-ca.js'

const USAGE = `Usage: keyedge cert dev [options]

Issues (or re-uses while valid) a development CA and, for the given names, an ECDSA P-256 and an
RSA-2048 leaf certificate. Every key is generated inside keyd; certificates are signed by keyd.
Files land in <home>/certs: ca.crt, <key>.crt and <key>.keyref (a key reference, no secret).

Options:
  --home DIR       state directory (default $KEYEDGE_HOME or ./.keyedge)
  --socket PATH    keyd socket (default <home>/keyd.sock)
  --name N         certificate name and key-name prefix (default localhost)
  --san NAME       a server name (repeatable; default localhost, *.localhost, 127.0.0.1, ::1)
  -h, --help       this help
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
      options: { help: { type: 'boolean', short: 'h' }, home: { type: 'string' }, socket: { type: 'string' }, name: { type: 'string' }, san: { type: 'string', multiple: true } }
    })
  } catch (err) {
    process.stderr.write(`keyedge cert: ${(err as Error).message}\n\n${USAGE}`)
    return 2
  }
  const { values, positionals } = parsed
  if (values.help === true) { process.stdout.write(USAGE); return 0 }
  if (positionals.join(' ') !== 'dev') { process.stderr.write(USAGE); return 2 }
  const paths = homePaths(values.home)
  const client = new KeydClient({ socketPath: values.socket ?? paths.socket, clientName: 'admin', secretFile: join(paths.secretsDir, 'admin.secret'), timeoutMs: 30000 })
  try {
    const r = await issueDevCertificates(client, paths.certsDir, values.name, values.san ?? DEV_SERVER_NAMES)
    process.stdout.write(`CA: ${r.caFile}\n`)
    for (const l of r.leaves) process.stdout.write(`${l.keyType}: ${l.certFile} (key ${l.keyName} in keyd, reference ${l.keyRefFile})\n`)
    return 0
  } catch (err) {
    if (err instanceof KeydError) { process.stderr.write(`keyedge cert: ${err.message} (${err.code})\n`); return 1 }
    throw err
  } finally {
    client.close()
  }
}
