// Types of a validated proxy configuration, derived from the schema: every default applied,
// every path absolute, host names lower-case, upstreams reduced to their origin.
import type { Static } from '@sinclair/typebox'
import type {
  AccessLogSchema, AdminSchema, HttpRedirectSchema, ProxyProtocolSchema, BalanceSchema, HealthCheckSchema, OutlierSchema, RetrySchema, UpstreamTargetSchema, CertificateFilesSchema, CertificateSchema, ClientAuthSchema, KeydSchema, LimitsSchema, ListenSchema, LOG_LEVELS, RouteSchema, TimeoutsSchema, TLS_VERSIONS, TlsSchema, EdgeConfigSchema
} from './schema.js'
import type { TokenConfig } from './token.js'

export type TlsVersion = typeof TLS_VERSIONS[number]
export type LogLevel = typeof LOG_LEVELS[number]

export type ListenConfig = Static<typeof ListenSchema>

/** keyd's socket and this client's secret file, both absolute. */
export type KeydConfig = Static<typeof KeydSchema>

/** `defaultCertificate` is always the name of an entry of `certificates`. */
export type TlsConfig = Omit<Static<typeof TlsSchema>, 'defaultCertificate'> & { defaultCertificate: string }

/** Absolute paths of a PEM certificate (leaf first, then its chain) and of its key reference (or private key) PEM. */
export type CertificateFilesConfig = Static<typeof CertificateFilesSchema>

/** `serverNames` lower-case, exact or `*.` single-label wildcards, without trailing dot. */
export type CertificateConfig = Static<typeof CertificateSchema>

/** An entry's client-certificate settings: `caFile` absolute, header names lower-case. */
export type ClientAuthConfig = Static<typeof ClientAuthSchema>

/** `host` lower-case (an exact host, `*.example.com`, or `*`); `upstream` an origin such as `http://127.0.0.1:8080`. */
export type RouteConfig = Static<typeof RouteSchema>

/** One target of a route's pool; `url` an origin. */
export type UpstreamTargetConfig = Static<typeof UpstreamTargetSchema>
export type BalanceConfig = Static<typeof BalanceSchema>
export type HealthCheckConfig = Static<typeof HealthCheckSchema>
export type OutlierConfig = Static<typeof OutlierSchema>
export type RetryConfig = Static<typeof RetrySchema>

/** The access log: `path` absolute, or absent for standard output. */
export type AccessLogConfig = Static<typeof AccessLogSchema>

/** PROXY protocol on the TLS listener: the balancers that must send a header (addresses or CIDRs). */
export type ProxyProtocolConfig = Static<typeof ProxyProtocolSchema>

/** The admin listener on a loopback address (health, readiness, metrics, certificates, reload). */
export type AdminConfig = Static<typeof AdminSchema>

/** The plain-HTTP listener that redirects routed hosts to HTTPS. */
export type HttpRedirectConfig = Static<typeof HttpRedirectSchema>

/** Timeouts of the listener: TLS front (ClientHello, handshake) and HTTP. */
export type TimeoutsConfig = Static<typeof TimeoutsSchema>

/** Per-client-address limits on the listener, per worker; 0 turns a limit off. */
export type LimitsConfig = Static<typeof LimitsSchema>

/**
 * A validated proxy config. `keyd`, `admin` and `token` are present only when the file has
 * that section; `file` is the absolute path of the file it was loaded from, if any.
 */
export type EdgeConfig = Omit<Static<typeof EdgeConfigSchema>, 'tls' | 'token'> & {
  file?: string
  tls: TlsConfig
  token?: TokenConfig
}
