// Public surface of the token endpoint: JWTs signed by keyd, with spike absorption in front of it.
export { createTokenServer, type TokenServer } from './server.js'
export { jwkThumbprint, publicJwk, canonicalJson, JWS_TO_KEYD } from './jws.js'
export { TokenBucket, Admission } from './admission.js'
export { retiredKeyExpiresAtMs } from './keys.js'
