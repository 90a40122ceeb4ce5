// Public surface of the TLS subsystem: certificate checks and secure contexts, SNI selection, the live
// cert store and its on-demand context cache, and the TCP front.

export { CertStore } from './cert-store.js'
export type { EntryResult, PreparedLoad, PrepareOptions, StoreChange } from './cert-store.js'
export { CheckPass } from './cert-check.js'
export type { CheckedEntry, CheckedPair } from './cert-check.js'
export { ContextCache } from './context-cache.js'
export type { ContextCacheOptions } from './context-cache.js'
export { loadCertificate, KEY_REFERENCE_LABEL } from './secure-context.js'
export type { KeyCustody, LoadedCertificate, LoadedPair } from './secure-context.js'
export { buildSniIndex, selectCertificate, normalizeServerName } from './sni.js'
export type { SniIndex, SniMatch, SniSelection } from './sni.js'
export { ClientHelloReader, readClientHello, MAX_CLIENT_HELLO_BODY } from './client-hello.js'
export type { HelloVerdict } from './client-hello.js'
export { TlsFront } from './front.js'
export type { FrontOptions, FrontTimeouts, RoutedHello } from './front.js'
export { FAILURE_REASONS, failureReason, HandshakeFailures } from './handshake-failures.js'
export type { FailureReason } from './handshake-failures.js'
