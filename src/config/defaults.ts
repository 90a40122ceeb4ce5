// Every default of the proxy configuration, in one place; units are in the names.
// docs/configuration.md documents each of these; keep the two in step.

/** Mozilla "intermediate" suites restricted to ECDHE key exchange, plus the TLS 1.3 suites. */
export const DEFAULT_CIPHERS = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305'
].join(':')

/** Defaults applied to any field the config file leaves out. */
export const configDefaults = {
  listen: { host: '0.0.0.0', port: 8443 },
  /** 0 means one worker per available CPU. */
  workers: 0,
  /** Applied field by field when the config has a `keyd` section; paths are relative to the config file. */
  keyd: {
    socket: 'keyd.sock',
    clientName: 'proxy',
    secretFile: 'clients/proxy.secret',
    timeoutMs: 1000
  },
  tls: {
    minVersion: 'TLSv1.2',
    maxVersion: 'TLSv1.3',
    ciphers: DEFAULT_CIPHERS,
    strictSni: false,
    /** null means the first entry of `certificates`. */
    defaultCertificate: null,
    sessionTimeoutSeconds: 300,
    /** TLS session tickets (TLS 1.2 and 1.3), keys from keyd shared by every worker. */
    sessionTickets: true,
    /** A new ticket key encrypts every epoch of this length (keyd derives it from its master key). */
    ticketRotationSeconds: 3600,
    /** Keys before the current one that still decrypt (resume) tickets. */
    ticketPreviousKeys: 1,
    /** TLS 1.2 session-ID cache shared by the workers, in sessions; 0 turns it off. */
    sessionCacheSize: 20_000
  },
  route: {
    host: '*',
    pathPrefix: '/',
    timeoutMs: 30_000,
    connectTimeoutMs: 5_000
  },
  trustedProxies: [] as string[],
  http2: true,
  /** Client-side timeouts of the HTTP front, in the spirit of nginx's client_header_timeout, keepalive_timeout and client_body_timeout. */
  timeouts: {
    /** A new connection must deliver a complete request head within this; so must a later request once its first byte arrives. */
    requestHeadersMs: 10_000,
    /** An HTTP/1.1 connection without a request in flight is closed after this long. */
    keepAliveIdleMs: 60_000,
    /** An HTTP/2 session without an open stream gets GOAWAY and is closed after this long. */
    http2IdleMs: 120_000,
    /** A request body that stalls this long while the proxy waits for it: 408 (or the stream is reset). */
    requestBodyIdleMs: 30_000
  },
  limits: {
    /** As nginx's http2_max_concurrent_streams. */
    http2MaxConcurrentStreams: 128,
    /** Rapid-reset guard: a token bucket per session of this rate, burst twice that. */
    http2MaxResetsPerSecond: 100
  },
  log: { level: 'info' },
  /** Applied field by field when the config has a `token` section (docs/token.md). Limits are per worker. */
  token: {
    listen: { host: '127.0.0.1', port: 8444 },
    algorithm: 'ES256',
    defaultLifetimeSeconds: 300,
    maxLifetimeSeconds: 3600,
    verifierCacheSeconds: 300,
    /** `token.key`: how often each worker asks keyd for the key's versions (roles are derived from them). */
    keyPollIntervalSeconds: 10,
    maxBodyBytes: 8192,
    caller: { ratePerSecond: 100, burst: 200 },
    limits: { ratePerSecond: 1000, burst: 2000, maxQueue: 256, queueDeadlineMs: 250 },
    spike: { cacheWindowMs: 1000, cacheEntries: 10_000, coalesce: true, batch: true, batchMaxSize: 16, batchWindowMs: 2, maxInFlight: 1 }
  },
  /** Applied field by field when the config has an `admin` section. */
  admin: { host: '127.0.0.1', port: 9443, drainDelayMs: 5_000 },
  /** How long a stopping worker lets in-flight requests finish. */
  shutdownGraceMs: 10_000,
  /** Not configurable: how long certificate file changes settle before a reload. */
  reloadDebounceMs: 200,
  /** Not configurable: undici pool settings per upstream origin, per worker. */
  upstreamPool: { connections: 128, keepAliveTimeoutMs: 4_000, keepAliveMaxTimeoutMs: 600_000 },
  /** Not configurable: backoff when restarting a worker that died, doubled per quick death. */
  workerRestart: { initialDelayMs: 100, maxDelayMs: 10_000, stableAfterMs: 10_000 }
} as const
