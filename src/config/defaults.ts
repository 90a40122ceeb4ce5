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
    sessionTimeoutSeconds: 300
  },
  route: {
    host: '*',
    pathPrefix: '/',
    timeoutMs: 30_000,
    connectTimeoutMs: 5_000
  },
  trustedProxies: [] as string[],
  http2: true,
  log: { level: 'info' },
  /** Not configurable: how long a stopping worker lets in-flight requests finish. */
  shutdownGraceMs: 10_000,
  /** Not configurable: undici pool settings per upstream origin, per worker. */
  upstreamPool: { connections: 128, keepAliveTimeoutMs: 4_000, keepAliveMaxTimeoutMs: 600_000 },
  /** Not configurable: backoff when restarting a worker that died, doubled per quick death. */
  workerRestart: { initialDelayMs: 100, maxDelayMs: 10_000, stableAfterMs: 10_000 }
} as const
