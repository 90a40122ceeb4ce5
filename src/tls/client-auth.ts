// Client certificates (mutual TLS) of a certificate entry: its CA bundle read and checked, the
// options of the entry's TLS server that ask for a certificate, the identity of a connection once
// its handshake is done, and the request headers that carry it upstream.
//
// Asking is per entry, not per context: Node's `requestCert`/`rejectUnauthorized` are options of a
// TLS server, and every entry has TLS servers of its own (context-cache.ts), so an entry without
// `clientAuth` never sends a CertificateRequest. Node's verify callback accepts every chain and
// leaves the verdict to after the handshake: OpenSSL itself refuses a missing certificate (with
// `require`), a chain that does not verify is refused by Node closing the connection before any
// request is read (no TLS alert), and in `request` mode it goes on marked FAILED.

import { createHash, X509Certificate } from 'node:crypto'
import type { TLSSocket, TlsOptions } from 'node:tls'
import type { ClientAuthConfig } from '../config/types.js'
import { CertLoadError } from '../errors.js'
import { readStamped, type FileStamp } from './cert-check.js'
import { readFailure, safeReason } from './secure-context.js'

const CERTIFICATE_BLOCK = /-----BEGIN CERTIFICATE-----[^-]*-----END CERTIFICATE-----/g

/** The default header names: removed from incoming requests even where no entry uses them. */
export const DEFAULT_CLIENT_CERT_HEADERS = ['x-client-cert-subject', 'x-client-cert-sha256', 'x-client-cert-verify'] as const

/**
 * Header names no client may send: the defaults and every name a loaded entry configured (it only
 * grows, so a name dropped by a reload is still removed from requests on connections it served).
 */
const stripped = new Set<string>(DEFAULT_CLIENT_CERT_HEADERS)

/** Whether incoming header `name` (lower-case) is one the proxy alone may set. */
export function isClientCertHeader (name: string): boolean {
  return stripped.has(name)
}

/** A checked CA bundle of one entry, with what its TLS servers are built from. */
export interface LoadedClientAuth {
  readonly config: ClientAuthConfig
  /** The bundle's CERTIFICATE blocks, as read. */
  readonly ca: string
  readonly stamp: FileStamp
  /** SHA-256 of the bundle (hex): part of the session id context. */
  readonly caDigest: string
}

/**
 * Why `pem` (the bytes of `file`) is not a usable CA bundle, or undefined. Every CERTIFICATE block
 * must parse and be a CA (basicConstraints CA:TRUE); at least one block.
 */
export function caBundleProblem (pem: string): string | undefined {
  const blocks = pem.match(CERTIFICATE_BLOCK) ?? []
  if (blocks.length === 0) return 'holds no PEM CERTIFICATE block (an empty CA bundle would refuse every client)'
  for (let i = 0; i < blocks.length; i++) {
    let x509: X509Certificate
    try {
      x509 = new X509Certificate(blocks[i] as string)
    } catch (err) {
      return `certificate ${i + 1} of the bundle does not parse (${safeReason(err)})`
    }
    if (!x509.ca) return `certificate ${i + 1} of the bundle (subject ${x509.subject.replace(/\n/g, ', ')}) is not a CA (no basicConstraints CA:TRUE): put the issuing CA here, not a client certificate`
    if (Date.parse(x509.validTo) <= Date.now()) return `certificate ${i + 1} of the bundle (subject ${x509.subject.replace(/\n/g, ', ')}) expired on ${new Date(Date.parse(x509.validTo)).toISOString()}`
  }
  return undefined
}

/**
 * Reads and checks the CA bundle of `config`, and notes its header names as never accepted from clients.
 * @throws CertLoadError (EDGE_ERR_CERT_LOAD) for an unreadable, empty or non-CA bundle.
 */
export function loadClientAuth (config: ClientAuthConfig): LoadedClientAuth {
  let read
  try {
    read = readStamped(config.caFile)
  } catch (err) {
    throw new CertLoadError(config.caFile, `client CA bundle: ${readFailure(err)}`, { cause: err })
  }
  const pem = read.bytes.toString('latin1')
  const problem = caBundleProblem(pem)
  if (problem !== undefined) throw new CertLoadError(config.caFile, `client CA bundle ${problem}`)
  noteClientCertHeaders(config)
  const ca = (pem.match(CERTIFICATE_BLOCK) ?? []).join('\n')
  return { config, ca, stamp: read.stamp, caDigest: createHash('sha256').update(ca).digest('hex') }
}

/** Adds `config`'s header names to those removed from every incoming request. */
export function noteClientCertHeaders (config: Pick<ClientAuthConfig, 'subjectHeader' | 'fingerprintHeader' | 'verifyHeader'>): void {
  stripped.add(config.subjectHeader.toLowerCase())
  stripped.add(config.fingerprintHeader.toLowerCase())
  stripped.add(config.verifyHeader.toLowerCase())
}

/** Whether `loaded` still stands for `config` and its CA file (`stamp`: the file's stamp now). */
export function sameClientAuth (config: ClientAuthConfig | undefined, loaded: LoadedClientAuth | undefined, stamp: (file: string) => FileStamp | undefined): boolean {
  if (config === undefined || loaded === undefined) return config === loaded
  const c = loaded.config
  return c.mode === config.mode && c.caFile === config.caFile && c.subjectHeader === config.subjectHeader &&
    c.fingerprintHeader === config.fingerprintHeader && c.verifyHeader === config.verifyHeader && stamp(c.caFile) === loaded.stamp
}

/**
 * The options of an entry's TLS server that ask for a client certificate. The session id context
 * is the entry's own and changes with the mode and the bundle: OpenSSL resumes a session (ticket or
 * cache) only within the context that made it, so a session from an entry that asked for nothing
 * (or trusted another CA) never resumes here without a certificate being asked for.
 */
export function clientAuthServerOptions (entryName: string, loaded: LoadedClientAuth): Pick<TlsOptions, 'requestCert' | 'rejectUnauthorized' | 'ca' | 'sessionIdContext'> {
  return {
    requestCert: true,
    rejectUnauthorized: loaded.config.mode === 'require',
    ca: loaded.ca,
    // OpenSSL holds at most 32 bytes of session id context.
    sessionIdContext: createHash('sha256').update(`client-auth\0${entryName}\0${loaded.config.mode}\0${loaded.caDigest}`).digest('hex').slice(0, 32)
  }
}

/** What a connection's handshake established about its client, as it goes upstream. */
export interface ClientIdentity {
  /** `SUCCESS`, `NONE` or `FAILED:<reason>` (nginx's `$ssl_client_verify`). */
  verify: string
  /** RFC 4514 subject of a verified certificate. */
  subject?: string
  /** SHA-256 of a verified certificate's DER, lower-case hex. */
  fingerprint?: string
}

/** The identity of a connection and the header names of its entry. */
interface Tagged { identity: ClientIdentity, config: ClientAuthConfig }

/** Set on the TLS socket; a symbol property reads through the HTTP/2 socket proxies too. */
const IDENTITY = Symbol('keyedge.clientIdentity')

/**
 * RFC 4514 string of an X509Certificate subject, as `openssl x509 -nameopt RFC2253` prints it (and
 * nginx's `$ssl_client_s_dn`): least significant RDN first. Node gives one RDN per line, most
 * significant first, the RFC 2253 specials already escaped and a multi-valued RDN joined by " + ";
 * what is left to do is the order (of the RDNs and within one), the "+" and the bytes outside printable ASCII, which go as \XX
 * of their UTF-8 bytes (a header value is bytes).
 */
export function rfc4514Subject (subject: string): string {
  return subject.split('\n').filter(l => l !== '').reverse()
    // OpenSSL's RFC 2253 output reverses the attributes of a multi-valued RDN too.
    .map(rdn => rdn.split(' + ').reverse().join('+'))
    .join(',')
    .replace(/[^\x20-\x7e]/gu, c => [...Buffer.from(c, 'utf8')].map(b => `\\${b.toString(16).toUpperCase().padStart(2, '0')}`).join(''))
}

/**
 * The identity of `socket` once secure. A certificate counts only if the client sent one and it
 * verified: a TLS 1.3 session resumed without a certificate is `authorized` in Node's eyes.
 */
export function identityOf (socket: TLSSocket): ClientIdentity {
  const peer = socket.getPeerX509Certificate()
  if (peer === undefined) return { verify: 'NONE' }
  if (!socket.authorized) return { verify: `FAILED:${String(socket.authorizationError ?? 'unverified')}` }
  return {
    verify: 'SUCCESS',
    subject: rfc4514Subject(peer.subject),
    fingerprint: peer.fingerprint256.replace(/:/g, '').toLowerCase()
  }
}

/** Records the identity of a secure `socket` of an entry with client certificates; returns it. */
export function tagConnection (socket: TLSSocket, config: ClientAuthConfig): ClientIdentity {
  const identity = identityOf(socket)
  const tagged: Tagged = { identity, config }
  Object.defineProperty(socket, IDENTITY, { value: tagged, enumerable: false })
  return identity
}

/** The client-certificate identity of `socket` (or the proxy HTTP/2 gives for it); undefined when its entry has no `clientAuth`. */
export function clientIdentity (socket: object | undefined): ClientIdentity | undefined {
  return (socket as { [IDENTITY]?: Tagged } | undefined)?.[IDENTITY]?.identity
}

/**
 * The identity headers for a request on `socket` (an HTTP/1.1 TLS socket, or the proxy HTTP/2 gives
 * for one): empty when its entry has no client certificates. Only a verified certificate's subject
 * and fingerprint are given.
 */
export function clientIdentityHeaders (socket: object | undefined): Record<string, string> {
  const tagged = (socket as { [IDENTITY]?: Tagged } | undefined)?.[IDENTITY]
  if (tagged === undefined) return {}
  const { identity, config } = tagged
  const out: Record<string, string> = { [config.verifyHeader]: identity.verify }
  if (identity.subject !== undefined) out[config.subjectHeader] = identity.subject
  if (identity.fingerprint !== undefined) out[config.fingerprintHeader] = identity.fingerprint
  return out
}
