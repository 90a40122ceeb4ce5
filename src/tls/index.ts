// Public surface of the TLS subsystem: secure contexts, SNI selection and the live cert store.

export { CertStore } from './cert-store.js'
export { loadCertificate, KEY_REFERENCE_LABEL } from './secure-context.js'
export type { KeyCustody, LoadedCertificate, LoadedPair } from './secure-context.js'
export { buildSniIndex, selectCertificate, normalizeServerName } from './sni.js'
export type { SniIndex, SniMatch, SniSelection } from './sni.js'
