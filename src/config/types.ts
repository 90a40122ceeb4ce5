// Types of a validated proxy configuration: every default applied, every path absolute.
import type { TokenConfig } from './token.js'

export type TlsVersion = 'TLSv1.2' | 'TLSv1.3'
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'

export interface ListenConfig { host: string, port: number }

export interface KeydConfig {
  /** Absolute path of keyd's unix socket. */
  socket: string
  clientName: string
  /** Absolute path of the file holding this client's secret (read by the bridge and, for ticket keys, by each worker's keyd client). */
  secretFile: string
  timeoutMs: number
}

export interface TlsConfig {
  minVersion: TlsVersion
  maxVersion: TlsVersion
  ciphers: string
  strictSni: boolean
  /** Name of the certificate entry served when no name matches (or no SNI is sent). */
  defaultCertificate: string
  sessionTimeoutSeconds: number
  sessionTickets: boolean
  ticketRotationSeconds: number
  ticketPreviousKeys: number
  sessionCacheSize: number
}

export interface CertificateFilesConfig {
  /** Absolute path of a PEM certificate (leaf first, then its chain). */
  cert: string
  /** Absolute path of a key reference PEM (or, bypassing custody, a private key PEM). */
  key: string
}

export interface CertificateConfig {
  name: string
  /** Lower-case names, exact or `*.` single-label wildcards, without trailing dot. */
  serverNames: string[]
  files: CertificateFilesConfig[]
}

export interface RouteConfig {
  /** Lower-case: an exact host, `*.example.com`, or `*`. */
  host: string
  pathPrefix: string
  /** Origin of the upstream, e.g. `http://127.0.0.1:8080` (no path). */
  upstream: string
  timeoutMs: number
  connectTimeoutMs: number
}

export interface AdminConfig {
  /** Loopback address of the admin listener (health, readiness, metrics, certificates, reload). */
  host: string
  port: number
  /** How long /ready answers 503 on SIGTERM before the proxy stops accepting connections. */
  drainDelayMs: number
}

/** Client-side timeouts of the HTTP front (docs/configuration.md#timeouts); all in milliseconds. */
export interface TimeoutsConfig {
  /** From the end of the TLS handshake (or the first byte of a later request) to a complete request head. */
  requestHeadersMs: number
  /** How long an HTTP/1.1 connection may wait, idle, for its next request. */
  keepAliveIdleMs: number
  /** How long an HTTP/2 session may stay without an open stream before GOAWAY and close. */
  http2IdleMs: number
  /** Longest pause between two pieces of a request body the proxy is ready to read. */
  requestBodyIdleMs: number
}

/** Limits of the HTTP front (docs/configuration.md#limits). */
export interface LimitsConfig {
  /** SETTINGS_MAX_CONCURRENT_STREAMS announced to every HTTP/2 client. */
  http2MaxConcurrentStreams: number
  /** Rapid-reset threshold: streams a session may see reset per second (burst: twice that) before GOAWAY ENHANCE_YOUR_CALM. */
  http2MaxResetsPerSecond: number
}

export interface EdgeConfig {
  /** Absolute path of the file this config was loaded from, when loaded from a file. */
  file?: string
  listen: ListenConfig
  workers: number
  /** Present only when the config file has a `keyd` section. */
  keyd?: KeydConfig
  tls: TlsConfig
  certificates: CertificateConfig[]
  routes: RouteConfig[]
  trustedProxies: string[]
  http2: boolean
  timeouts: TimeoutsConfig
  limits: LimitsConfig
  log: { level: LogLevel }
  /** Present only when the config file has a `token` section: the JWT endpoint (docs/token.md). */
  token?: TokenConfig
  /** Present only when the config file has an `admin` section. */
  admin?: AdminConfig
  /** How long a stopping worker lets in-flight requests finish before cutting them. */
  shutdownGraceMs: number
}
