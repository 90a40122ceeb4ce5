// `keyedge import`: migrate certificate + key pairs (from an nginx configuration, or named one by
// one) into keyd and print the proxy config entries that use them (docs/migrating.md).
import { parseArgs } from 'node:util'
import { dirname, join, resolve } from 'node:path'
import { homePaths } from '../../lib/home.js'
import { KeydClient } from '../../keyd/client/client.js'
import { KeydError } from '../../keyd/errors.js'
import { ImportError, NginxConfigError } from '../errors.js'
import { loadNginx, nginxTlsSites } from '../migrate/nginx.js'
import { configFragment, importSites, readLeaf, type ImportSite } from '../migrate/import.js'

export const IMPORT_USAGE = `Usage: keyedge import --nginx FILE [--prefix DIR] [--out-dir DIR] [--json] [--dry-run] [options]
       keyedge import --cert F --key F [--cert F --key F] --name N [--server-name NAME …] [options]

Moves existing TLS keys into keyd. For each certificate + private key pair: checks that they
match, imports the key into keyd (origin "imported"; a re-run finds it there and imports nothing),
copies the certificate to <out-dir>/<key>.crt and writes the key's reference to <out-dir>/<key>.keyref.
Then prints the "certificates" entries of a keyedge proxy config naming those files, and the
"shred" command for the PEM files, which still hold the keys. See docs/migrating.md.

--nginx reads every server {} block of FILE (and the files it includes) that serves TLS: its
server_name, "listen … default_server" and ssl_certificate / ssl_certificate_key pairs (an ECDSA
and an RSA pair in one block become one entry with both). Keys are named after the block's first
server name: example.com-ec, example.com-rsa.

Options:
  --nginx FILE         an nginx configuration (nginx.conf, or one file of sites-enabled/)
  --prefix DIR         nginx's configuration directory, against which its relative paths resolve
                       (default: the directory of FILE)
  --cert F             a certificate PEM, leaf first (repeat with --key for a second pair)
  --key F              its private key PEM (unencrypted PKCS#8, PKCS#1 or SEC1)
  --name N             with --cert: the entry's name and key-name prefix (keys N-ec, N-rsa)
  --server-name NAME   with --cert: a server name (repeatable; default: the certificate's names)
  --out-dir DIR        where the certificate copies and key references go (default <home>/certs)
  --json               print only the config entries (JSON) on stdout; the rest goes to stderr
  --dry-run            show what would be imported; touch neither keyd nor any file
  --home DIR           state directory (default $KEYEDGE_HOME or ./.keyedge)
  --socket PATH        keyd socket (default <home>/keyd.sock)
  -h, --help           this help
`

/** The options of `keyedge import` (test/cli/help.test.ts checks the usage against them). */
export const IMPORT_OPTIONS = {
  help: { type: 'boolean', short: 'h' },
  home: { type: 'string' },
  socket: { type: 'string' },
  nginx: { type: 'string' },
  prefix: { type: 'string' },
  cert: { type: 'string', multiple: true },
  key: { type: 'string', multiple: true },
  name: { type: 'string' },
  'server-name': { type: 'string', multiple: true },
  'out-dir': { type: 'string' },
  json: { type: 'boolean' },
  'dry-run': { type: 'boolean' }
} as const

class UsageError extends Error {}

interface Values {
  nginx?: string
  prefix?: string
  cert?: string[]
  key?: string[]
  name?: string
  'server-name'?: string[]
}

/** The sites the flags describe, and what could not be carried over. @throws UsageError, NginxConfigError, ImportError */
function sitesFrom (v: Values): { sites: ImportSite[], warnings: string[] } {
  if (v.nginx !== undefined) {
    if (v.cert !== undefined || v.key !== undefined || v.name !== undefined) throw new UsageError('--nginx goes alone: not with --cert, --key or --name')
    const prefix = resolve(v.prefix ?? dirname(resolve(v.nginx)))
    const { sites, warnings } = nginxTlsSites(loadNginx(v.nginx, prefix), prefix)
    // Blocks serving the same files with the same client-certificate settings (IPv4 and IPv6
    // listeners, a second port) become one entry.
    const byFiles = new Map<string, ImportSite>()
    const used = new Set<string>()
    for (const s of sites) {
      const files = JSON.stringify([s.pairs, s.clientAuth ?? null])
      const same = byFiles.get(files)
      if (same !== undefined) {
        same.serverNames = [...new Set([...same.serverNames, ...s.serverNames])]
        same.defaultServer ||= s.defaultServer
        continue
      }
      let name = s.serverNames[0] ?? readLeaf(s.pairs[0]?.cert ?? '').names[0] ?? 'default'
      for (let i = 2; used.has(name); i++) name = `${s.serverNames[0] ?? 'default'}-${i}`
      used.add(name)
      const site: ImportSite = { name, serverNames: s.serverNames, defaultServer: s.defaultServer, pairs: s.pairs, source: s.at, ...(s.clientAuth === undefined ? {} : { clientAuth: s.clientAuth }) }
      byFiles.set(files, site)
    }
    return { sites: [...byFiles.values()], warnings }
  }
  const certs = v.cert ?? []
  const keys = v.key ?? []
  if (certs.length === 0 || certs.length !== keys.length) throw new UsageError('give --nginx FILE, or --cert F --key F pairs (as many --cert as --key)')
  if (v.name === undefined) throw new UsageError('--cert and --key need --name N (the entry and key-name prefix)')
  const pairs = certs.map((c, i) => {
    const key = keys[i]
    if (key === undefined) throw new UsageError('give --nginx FILE, or --cert F --key F pairs (as many --cert as --key)')
    return { cert: resolve(c), key: resolve(key) }
  })
  return { sites: [{ name: v.name, serverNames: v['server-name'] ?? [], defaultServer: false, pairs, source: pairs.map(p => p.cert).join(', ') }], warnings: [] }
}

export async function main (argv: string[]): Promise<number> {
  let values
  try {
    values = parseArgs({ args: argv, options: IMPORT_OPTIONS, strict: true, allowPositionals: false }).values
  } catch (err) {
    process.stderr.write(`keyedge import: ${err instanceof Error ? err.message : String(err)}\n\n${IMPORT_USAGE}`)
    return 2
  }
  if (values.help === true) { process.stdout.write(IMPORT_USAGE); return 0 }
  const json = values.json === true
  /** Human-readable lines: stdout, or stderr when stdout carries the JSON. */
  const say = (text: string): void => { (json ? process.stderr : process.stdout).write(text) }
  let plan: ReturnType<typeof sitesFrom>
  try {
    plan = sitesFrom(values)
  } catch (err) {
    if (err instanceof UsageError) { process.stderr.write(`keyedge import: ${err.message}\n\n${IMPORT_USAGE}`); return 2 }
    if (err instanceof NginxConfigError || err instanceof ImportError) { process.stderr.write(`keyedge import: ${err.message}\n`); return 1 }
    throw err
  }
  for (const w of plan.warnings) process.stderr.write(`warning: ${w}\n`)
  if (plan.sites.length === 0) { process.stderr.write('keyedge import: no TLS server block with ssl_certificate / ssl_certificate_key found\n'); return 1 }
  if (values['dry-run'] === true) {
    for (const s of plan.sites) {
      say(`entry "${s.name}" (${s.source})${s.defaultServer ? ', default server' : ''}: names ${s.serverNames.join(', ') || '(from the certificates)'}\n`)
      for (const p of s.pairs) say(`  ${p.cert}\n  ${p.key}\n`)
    }
    return 0
  }
  const paths = homePaths(values.home)
  const outDir = resolve(values['out-dir'] ?? paths.certsDir)
  const client = new KeydClient({ socketPath: values.socket ?? paths.socket, clientName: 'admin', secretFile: join(paths.secretsDir, 'admin.secret'), timeoutMs: 30_000 })
  try {
    const done = await importSites(client, plan.sites, outDir, w => process.stderr.write(`warning: ${w}\n`))
    for (const s of done) {
      for (const p of s.pairs) {
        say(`${p.reused ? 'already in keyd' : 'imported'}: ${p.keyName} v${p.version} (${p.type}) from ${p.sourceKey}\n` +
          `  certificate ${p.certFile} (until ${p.notAfter}), key reference ${p.keyRefFile}\n`)
      }
    }
    const fragment = JSON.stringify(configFragment(done), null, 2) + '\n'
    if (json) process.stdout.write(fragment)
    else say(`\nkeyedge proxy config entries (merge them into your config, then "npx keyedge validate --config FILE"):\n${fragment}`)
    const pems = [...new Set(done.flatMap(s => s.pairs.map(p => p.sourceKey)))]
    say('\nThe keys are in keyd now, but the PEM files still hold them. Once the proxy serves with the key\n' +
      'references, destroy every copy (backups and other hosts included):\n' +
      `  shred -u ${pems.join(' ')}\n`)
    return 0
  } catch (err) {
    if (err instanceof ImportError || err instanceof KeydError) {
      process.stderr.write(`keyedge import: ${err.message}${err instanceof KeydError ? ` (${err.code})` : ''}\n` +
        'Pairs imported before this one stay in keyd; running the same command again picks up where it stopped.\n')
      return 1
    }
    throw err
  } finally {
    client.close()
  }
}
