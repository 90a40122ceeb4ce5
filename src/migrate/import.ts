// Moving existing certificate + private key pairs into keyedge: each key into keyd (origin
// "imported"), a copy of the certificate and the key's reference into one directory, and the
// proxy config entries that name them. The private key passes through this process once, as
// `keyedge keyd key import --file` does, and is wiped from its buffers after.
import { X509Certificate, createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto'
import { mkdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { KeydClient } from '../../keyd/client/client.js'
import { KeydRemoteError } from '../../keyd/errors.js'
import { writeFileAtomic } from '../../lib/atomic-file.js'
import { encodeKeyReference } from '../../keyd/protocol/codec.js'
import { CHECKS, normalizeName } from '../config/checks.js'
import { ImportError } from '../errors.js'


/** One site to import: a future certificate entry of the proxy config. */
export interface ImportSite {
  /** The entry's name; keys are named `<name>-ec`, `<name>-rsa`, `<name>-ed25519`. */
  name: string
  /** Server names; empty: taken from the certificates' subjectAltName. */
  serverNames: string[]
  defaultServer: boolean
  pairs: Array<{ cert: string, key: string }>
  /** Client-certificate settings carried over (nginx `ssl_verify_client`), CA file absolute. */
  clientAuth?: { mode: 'require' | 'request', caFile: string }
  /** Where it came from (`file:line`, or the files), for messages. */
  source: string
}

/** What was done for one pair. */
export interface ImportedPair {
  keyName: string
  version: number
  type: string
  /** True when keyd already held this very key under that name (a re-run): nothing imported. */
  reused: boolean
  certFile: string
  keyRefFile: string
  sourceCert: string
  sourceKey: string
  notAfter: string
}

export interface ImportedSite { name: string, serverNames: string[], defaultServer: boolean, pairs: ImportedPair[], clientAuth?: ImportSite['clientAuth'] }

/** The keyedge config fragment for the imported sites. */
export interface ConfigFragment {
  certificates: Array<{ name: string, serverNames: string[], files: Array<{ cert: string, key: string }>, clientAuth?: ImportSite['clientAuth'] }>
  tls?: { defaultCertificate: string }
}

/** A keyd key name from a server name: `*.example.com` → `wildcard.example.com`, within keyd's name rule. */
export function keyNameFor (serverName: string): string {
  const base = serverName.toLowerCase().replace(/^\*\./, 'wildcard.').replace(/[^a-z0-9._-]/g, '-').replace(/^[^a-z0-9]+/, '')
  return (base === '' ? 'site' : base).slice(0, 52)
}

function readPem (file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8')
  } catch (err) {
    const code = err instanceof Error && 'code' in err ? String(err.code) : 'error'
    throw new ImportError(`${what} ${file}: cannot read (${code})`)
  }
}

function spki (key: KeyObject): Buffer {
  return key.export({ format: 'der', type: 'spki' })
}

/** The leaf certificate (first of the file) and its DNS / IP names. @throws ImportError */
export function readLeaf (file: string): { cert: X509Certificate, names: string[] } {
  let cert: X509Certificate
  try {
    cert = new X509Certificate(readPem(file, 'certificate'))
  } catch (err) {
    if (err instanceof ImportError) throw err
    throw new ImportError(`certificate ${file}: not a PEM certificate`)
  }
  const names = (cert.subjectAltName ?? '').split(', ').flatMap(n => {
    if (n.startsWith('DNS:')) return [normalizeName(n.slice(4))]
    if (n.startsWith('IP Address:')) return [n.slice(11).toLowerCase()]
    return []
  })
  return { cert, names }
}

/**
 * Imports one pair: checks that the key matches the certificate, brings the key into keyd as
 * `keyName` (or finds it there already), writes `<outDir>/<keyName>.crt` and `.keyref`.
 * @throws ImportError, KeydError
 */
export async function importPair (client: KeydClient, pair: { cert: string, key: string }, keyName: string, outDir: string, usage = 'tls-server'): Promise<ImportedPair> {
  const { cert } = readLeaf(pair.cert)
  let key: KeyObject
  try {
    key = createPrivateKey(readPem(pair.key, 'key'))
  } catch (err) {
    if (err instanceof ImportError) throw err
    throw new ImportError(`key ${pair.key}: not an unencrypted private key PEM (an encrypted one: decrypt it first with "openssl pkey -in F -out F.plain", then shred both)`)
  }
  const want = spki(createPublicKey(key))
  if (!spki(cert.publicKey).equals(want)) throw new ImportError(`certificate ${pair.cert} does not match key ${pair.key}`)
  // keyd judges the key (type, size, curve, a sign/verify check) and says BAD_KEY_MATERIAL if it holds none such.
  let held: { version: number, type: string }
  let reused = false
  const pkcs8 = key.export({ format: 'der', type: 'pkcs8' })
  try {
    held = await client.importKey(keyName, usage, { pkcs8 })
  } catch (err) {
    if (!(err instanceof KeydRemoteError) || err.code !== 'KEYD_ERR_KEY_EXISTS') throw err
    const same = await matchingVersion(client, keyName, want)
    if (same === undefined) throw new ImportError(`keyd already holds a different key named ${keyName}: give another --name (or destroy that key if it is a leftover)`)
    held = same
    reused = true
  } finally {
    pkcs8.fill(0)
  }
  const { version, type } = held
  mkdirSync(outDir, { recursive: true })
  const certFile = join(outDir, `${keyName}.crt`)
  const keyRefFile = join(outDir, `${keyName}.keyref`)
  writeFileAtomic(certFile, readPem(pair.cert, 'certificate'), 0o644)
  writeFileAtomic(keyRefFile, encodeKeyReference({ name: keyName, version, type }), 0o644)
  return { keyName, version, type, reused, certFile, keyRefFile, sourceCert: pair.cert, sourceKey: pair.key, notAfter: new Date(cert.validTo).toISOString() }
}

/** The version (and type) of keyd key `name` whose public key is `spkiDer`, if any. */
async function matchingVersion (client: KeydClient, name: string, spkiDer: Buffer): Promise<{ version: number, type: string } | undefined> {
  const current = await client.getPublicKey(name)
  if (current.spki.equals(spkiDer)) return current
  for (const v of current.versions) {
    if (v.version === current.version) continue
    const k = await client.getPublicKey(name, v.version)
    if (k.spki.equals(spkiDer)) return k
  }
  return undefined
}

/** True if a certificate for `san` answers `name`: the same name, or a `*.` wildcard one label up. */
function covers (san: string[], name: string): boolean {
  if (san.includes(name)) return true
  const dot = name.indexOf('.')
  return !name.startsWith('*.') && dot > 0 && san.includes(`*${name.slice(dot)}`)
}

/**
 * Imports every pair of every site. Key names: `<site>-ec` / `-rsa` / `-ed25519` (`-2`, `-3`…
 * for a second key of a kind). A site without names takes its certificates' subjectAltNames; a
 * name already claimed by an earlier site is dropped from the later one, with a warning.
 */
export async function importSites (client: KeydClient, sites: ImportSite[], outDir: string, warn: (text: string) => void, usage = 'tls-server'): Promise<ImportedSite[]> {
  const done: ImportedSite[] = []
  const claimed = new Map<string, string>()
  const keyNames = new Set<string>()
  for (const site of sites) {
    const pairs: ImportedPair[] = []
    let names = site.serverNames
    for (const p of site.pairs) {
      const { cert, names: san } = readLeaf(p.cert)
      if (names.length === 0) names = san
      for (const n of names.filter(n => !covers(san, n))) {
        warn(`${site.source}: ${n} is not among the names of certificate ${p.cert} (${san.join(', ') || cert.subject}): clients asking for it will see a name mismatch`)
      }
      const family = cert.publicKey.asymmetricKeyType ?? 'key'
      let keyName = `${keyNameFor(site.name)}-${family}`
      for (let i = 2; keyNames.has(keyName); i++) keyName = `${keyNameFor(site.name)}-${family}-${i}`
      keyNames.add(keyName)
      pairs.push(await importPair(client, p, keyName, outDir, usage))
    }
    const usable: string[] = []
    for (const n of names) {
      const problem = CHECKS['server-name'](n)
      if (problem !== undefined) { warn(`${site.source}: ${problem}; left out`); continue }
      const owner = claimed.get(n)
      if (owner !== undefined) { warn(`${site.source}: ${n} is already served by entry "${owner}"; left out of "${site.name}"`); continue }
      claimed.set(n, site.name)
      usable.push(n)
    }
    if (usable.length === 0) warn(`${site.source}: no server name left for entry "${site.name}": add "serverNames" by hand`)
    done.push({ name: site.name, serverNames: usable, defaultServer: site.defaultServer, pairs, ...(site.clientAuth === undefined ? {} : { clientAuth: site.clientAuth }) })
  }
  return done
}

/** The proxy config fragment naming the imported files; the first default server becomes `tls.defaultCertificate`. */
export function configFragment (sites: ImportedSite[]): ConfigFragment {
  const certificates = sites.map(s => ({ name: s.name, serverNames: s.serverNames, files: s.pairs.map(p => ({ cert: p.certFile, key: p.keyRefFile })), ...(s.clientAuth === undefined ? {} : { clientAuth: s.clientAuth }) }))
  const def = sites.find(s => s.defaultServer)
  return def === undefined ? { certificates } : { certificates, tls: { defaultCertificate: def.name } }
}
