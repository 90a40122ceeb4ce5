// Checks on the files a validated config names: readable regular files (at every load), and for
// `keyedge validate` what the proxy would refuse when it loads them — a certificate that is not
// one, a key that is not one, a pair whose halves do not match (for a key reference: compared
// with the public key keyd holds for it, when keyd can be reached).

import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto'
import { accessSync, constants, readFileSync, statSync, type Stats } from 'node:fs'
import { KeydClient } from '../../keyd/client/client.js'
import { KeydRemoteError } from '../../keyd/errors.js'
import { errorCode } from '../../lib/errors.js'
import { decodeKeyReference, KEY_REF_LABEL, type KeyReference } from '../../keyd/protocol/codec.js'
import type { Problem, Segment } from './problems.js'
import type { EdgeConfig } from './types.js'
import { caBundleProblem } from '../tls/client-auth.js'

const CERTIFICATE_BEGIN = '-----BEGIN CERTIFICATE-----'
const KEY_REFERENCE_BEGIN = `-----BEGIN ${KEY_REF_LABEL}-----`
const PRIVATE_KEY_BEGIN = /-----BEGIN (RSA |EC |ENCRYPTED )?PRIVATE KEY-----/

/** Why `file` cannot be read as a file, or undefined. */
export function unreadable (file: string): string | undefined {
  try {
    const st = statSync(file)
    if (st.isDirectory()) return `${file} is a directory, not a file`
    // The mode bits answer for most files without a second system call; access(2) has the last
    // word whenever they say no (root, ACLs, capabilities).
    if (readableByMode(st)) return undefined
    accessSync(file, constants.R_OK)
    return undefined
  } catch (err) {
    return `cannot read ${file} (${errorCode(err) ?? 'unreadable'})`
  }
}

const uid = process.getuid?.()
const gids = new Set([process.getgid?.(), ...(process.getgroups?.() ?? [])])

function readableByMode (st: Stats): boolean {
  if (uid === undefined) return false
  if (st.uid === uid) return (st.mode & 0o400) !== 0
  if (gids.has(st.gid)) return (st.mode & 0o040) !== 0
  return (st.mode & 0o004) !== 0
}

/**
 * Every certificate and key file of `certificates` that is not a readable file (the proxy reads
 * them at load); each path looked at once however many entries name it, and only the paths in
 * `only` when given (the files a watcher saw change).
 */
export function certificateFileProblems (config: EdgeConfig, only?: ReadonlySet<string>): Problem[] {
  const problems: Problem[] = []
  const verdicts = new Map<string, string | undefined>()
  config.certificates.forEach((cert, i) => {
    cert.files.forEach((pair, j) => {
      for (const which of ['cert', 'key'] as const) {
        const file = pair[which]
        if (only !== undefined && !only.has(file)) continue
        let reason = verdicts.get(file)
        if (reason === undefined && !verdicts.has(file)) verdicts.set(file, reason = unreadable(file))
        if (reason !== undefined) problems.push({ path: ['certificates', i, 'files', j, which], message: reason })
      }
    })
    const caFile = cert.clientAuth?.caFile
    if (caFile !== undefined && (only === undefined || only.has(caFile))) {
      const reason = unreadable(caFile) ?? clientCaProblem(caFile)
      if (reason !== undefined) problems.push({ path: ['certificates', i, 'clientAuth', 'caFile'], message: reason })
    }
  })
  return problems
}

/** Why the client CA bundle `file` (readable) is not usable, or undefined. */
function clientCaProblem (file: string): string | undefined {
  const problem = caBundleProblem(readFileSync(file, 'latin1'))
  return problem === undefined ? undefined : `${file} ${problem}`
}

/** An OpenSSL reason without anything that could be key material. */
function safeReason (err: unknown): string {
  const message = err instanceof Error ? err.message : String(err)
  return message.includes('-----') ? 'unparsable' : message
}

interface Pair { at: Segment[], cert: string, key: string }

/** The certificate (or why the file is not a usable one). */
function readCertificate (file: string, now: Date): X509Certificate | string {
  const pem = readFileSync(file, 'utf8')
  if (!pem.includes(CERTIFICATE_BEGIN)) {
    if (pem.includes(KEY_REFERENCE_BEGIN)) return `${file} holds a key reference, not a certificate ("cert" and "key" swapped?)`
    if (PRIVATE_KEY_BEGIN.test(pem)) return `${file} holds a private key, not a certificate ("cert" and "key" swapped?)`
    return `${file} holds no PEM CERTIFICATE block`
  }
  let x509: X509Certificate
  try {
    x509 = new X509Certificate(pem)
  } catch (err) {
    return `cannot parse the certificate in ${file} (${safeReason(err)})`
  }
  const notAfter = new Date(x509.validTo)
  if (notAfter.getTime() <= now.getTime()) return `${file} expired on ${notAfter.toISOString()} (subject ${x509.subject.replace(/\n/g, ', ')})`
  return x509
}

/** The key reference or private key (or why the file is not a usable key). */
function readKey (file: string): { ref: KeyReference } | { key: KeyObject } | string {
  const pem = readFileSync(file, 'utf8')
  if (pem.includes(KEY_REFERENCE_BEGIN)) {
    const ref = decodeKeyReference(pem)
    return ref === null ? `${file} holds a damaged ${KEY_REF_LABEL}` : { ref }
  }
  if (PRIVATE_KEY_BEGIN.test(pem)) {
    try {
      return { key: createPrivateKey(pem) }
    } catch (err) {
      return `cannot load the private key in ${file} (${safeReason(err)})`
    }
  }
  if (pem.includes(CERTIFICATE_BEGIN)) return `${file} holds a certificate, not a key ("cert" and "key" swapped?)`
  return `${file} holds neither a ${KEY_REF_LABEL} nor a PRIVATE KEY PEM block`
}

function pairsOf (config: EdgeConfig): Pair[] {
  const pairs: Pair[] = config.certificates.flatMap((c, i) => c.files.map((f, j) => ({ at: ['certificates', i, 'files', j], ...f })))
  if (config.token?.tls !== undefined) pairs.push({ at: ['token', 'tls'], cert: config.token.tls.cert, key: config.token.tls.key })
  return pairs
}

/** What `keyedge validate` found: `problems` the proxy would refuse; `notes` what could not be checked. */
export interface FileCheckResult { problems: Problem[], notes: Problem[] }

/**
 * Checks what the proxy checks when it loads the config's certificates and keys: every file
 * readable, each certificate parsable and not expired, each key a key reference or a private
 * key, each pair matching. A key reference is compared with the public key keyd returns for it
 * (with the config's keyd credentials); when keyd cannot be reached, that comparison is a note.
 */
export async function checkConfigFiles (config: EdgeConfig, now = new Date()): Promise<FileCheckResult> {
  const problems: Problem[] = []
  const notes: Problem[] = []
  const add = (path: Segment[], message: string): void => { problems.push({ path, message }) }
  const extra: Array<[Segment[], string]> = [
    ...(config.token?.tls?.clientCa !== undefined ? [[['token', 'tls', 'clientCa'], config.token.tls.clientCa]] as Array<[Segment[], string]> : []),
    ...(config.token?.callers ?? []).flatMap((c, i): Array<[Segment[], string]> => c.secretFile !== undefined ? [[['token', 'callers', i, 'secretFile'], c.secretFile]] : [])
  ]
  for (const [path, file] of extra) {
    const reason = unreadable(file)
    if (reason !== undefined) add(path, reason)
  }
  const lookups: Array<{ at: Segment[], ref: KeyReference, certFile: string, spki: Buffer }> = []
  for (const { at, cert, key } of pairsOf(config)) {
    const certReason = unreadable(cert)
    const keyReason = unreadable(key)
    if (certReason !== undefined) add([...at, 'cert'], certReason)
    if (keyReason !== undefined) add([...at, 'key'], keyReason)
    const x509 = certReason === undefined ? readCertificate(cert, now) : undefined
    const loaded = keyReason === undefined ? readKey(key) : undefined
    if (typeof x509 === 'string') add([...at, 'cert'], x509)
    if (typeof loaded === 'string') add([...at, 'key'], loaded)
    if (typeof x509 !== 'object' || typeof loaded !== 'object') continue
    if ('key' in loaded) {
      let matches: boolean
      try { matches = x509.checkPrivateKey(loaded.key) } catch { matches = false }
      if (!matches) add([...at, 'key'], `${key} does not match the certificate ${cert}`)
    } else if (config.keyd === undefined) {
      add([...at, 'key'], `${key} is a key reference, which needs the "keyd" section`)
    } else {
      lookups.push({ at: [...at, 'key'], ref: loaded.ref, certFile: cert, spki: x509.publicKey.export({ type: 'spki', format: 'der' }) })
    }
  }
  if (lookups.length > 0 && config.keyd !== undefined) {
    const client = new KeydClient({ socketPath: config.keyd.socket, clientName: config.keyd.clientName, secretFile: config.keyd.secretFile, timeoutMs: config.keyd.timeoutMs })
    let unavailable: string | undefined
    try {
      for (const { at, ref, certFile, spki } of lookups) {
        const what = `key reference "${ref.name}" version ${ref.version}`
        if (unavailable !== undefined) { notes.push({ path: at, message: `${what} could not be checked against the certificate: ${unavailable}` }); continue }
        try {
          const info = await client.getPublicKey(ref.name, ref.version)
          if (!info.spki.equals(spki)) add(at, `${what} does not match the certificate ${certFile}: keyd holds another public key for it`)
        } catch (err) {
          if (err instanceof KeydRemoteError) add(at, `keyd refuses ${what}: ${err.message} (${err.code})`)
          else {
            unavailable = err instanceof Error ? err.message : String(err)
            notes.push({ path: at, message: `${what} could not be checked against the certificate: ${unavailable}` })
          }
        }
      }
    } finally {
      client.close()
    }
  }
  return { problems, notes }
}
