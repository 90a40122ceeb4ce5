// The one description of the proxy config: every field's type, bounds, default, check, path
// resolution, renamed-key hints and documentation. Types (types.ts), defaults (defaults.ts),
// validation (validate.ts) and the reference tables of docs/configuration.md all derive from it.
//
// Adding a section: declare it below with `section({...})` — `{ default: {} }` when its fields
// apply even if it is left out, `optional(...)` when its absence means "off" — list it in
// EdgeConfigSchema, export its Static type from types.ts, and run `npm run generate:config`.

import { bool, int, list, nullableText, num, oneOf, optional, path, section, text } from './schema-kit.js'
import { TokenSchema } from './token.js'

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

export const TLS_VERSIONS = ['TLSv1.2', 'TLSv1.3'] as const
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const

export const ListenSchema = section({
  host: text({ default: '0.0.0.0', check: 'listen-host', description: 'address to listen on' }),
  port: int(0, 65_535, { default: 8443, description: 'TCP port; `0` picks a free one (all workers share it; the primary logs `{"msg":"proxy listening","port":N,"workers":W}`)' })
}, { default: {} })

export const KeydSchema = section({
  socket: path({ default: 'keyd.sock', description: 'keyd\'s unix socket' }),
  clientName: text({ default: 'proxy', description: 'the client name the bridge presents to keyd' }),
  secretFile: path({ default: 'clients/proxy.secret', description: 'file holding that client\'s secret (read by the bridge, and by each worker to fetch TLS ticket keys; never put the secret itself in the config)' }),
  timeoutMs: int(1, 60_000, { default: 1000, description: 'how long the bridge waits for one keyd signature' })
}, {
  description: 'the key daemon the workers\' OpenSSL bridge talks to',
  renamed: {
    socketPath: 'use "socket"',
    path: 'use "socket"',
    timeout: 'use "timeoutMs" (milliseconds)',
    secret: 'use "secretFile" (a path: never put the secret itself in the config)',
    client: 'use "clientName"',
    name: 'use "clientName"'
  }
})

export const TlsSchema = section({
  minVersion: oneOf(TLS_VERSIONS, { default: 'TLSv1.2', description: 'lowest TLS version offered' }),
  maxVersion: oneOf(TLS_VERSIONS, { default: 'TLSv1.3', description: 'highest TLS version offered; not lower than `minVersion`' }),
  ciphers: text({
    default: DEFAULT_CIPHERS,
    check: 'ciphers',
    docDefault: 'Mozilla *intermediate*, ECDHE only, plus the TLS 1.3 suites (`DEFAULT_CIPHERS`)',
    description: 'OpenSSL cipher list; TLS 1.3 (`TLS_…`) and TLS 1.2 names in one string'
  }),
  groups: text({
    default: 'auto',
    check: 'groups',
    docDefault: '`auto` = OpenSSL 3.5\'s defaults: X25519MLKEM768 (post-quantum hybrid), X25519, P-256, X448, P-384, P-521, ffdhe2048, ffdhe3072',
    description: 'key-exchange groups the server accepts, in its order of preference, as an OpenSSL group list (nginx `ssl_ecdh_curve`, Envoy `ecdh_curves`), e.g. `X25519MLKEM768:X25519:P-256`. A client sharing none of them is refused (TLS alert `handshake_failure`). Leaving out `X25519MLKEM768` gives up post-quantum protection; it saves the ML-KEM encapsulation on each full handshake and the memory OpenSSL keeps for that exchange (7 KiB per idle connection in one measurement, see [benchmarks.md](benchmarks.md))'
  }),
  strictSni: bool({ default: false, description: 'when `true`, a server name that matches no certificate is refused (fatal `unrecognized_name` alert, counted in `edge_tls_sni_refused_total`); when `false` it gets the default certificate' }),
  defaultCertificate: nullableText({ default: null, docDefault: '`null` = the first entry of `certificates`', description: 'name of the entry served to unknown names (non-strict) and to clients that send no SNI (always)' }),
  sessionTimeoutSeconds: int(1, 86_400, { default: 300, description: 'TLS session lifetime; a resumed session keeps its original start, so a client does a full handshake at least this often' }),
  sessionTickets: bool({ default: true, description: 'TLS 1.2 and 1.3 session tickets. With a `keyd` section the ticket keys come from keyd (shared by every worker and every proxy using the same keyd master); without one each worker uses a random key of its own (no resumption across workers). Every resumption gets a fresh ticket. `false` turns tickets off: TLS 1.3 then never resumes, TLS 1.2 resumes by session ID' }),
  ticketRotationSeconds: int(10, 604_800, { default: 3600, description: 'a new ticket key encrypts every epoch of this length; keyd derives it from its master key and the epoch, see [resumption.md](resumption.md)' }),
  ticketPreviousKeys: int(0, 48, { default: 1, description: 'keys before the current one that still decrypt. Keep `ticketPreviousKeys × ticketRotationSeconds ≥ sessionTimeoutSeconds` (the proxy warns otherwise): then a rotation costs no full handshake' }),
  sessionCacheSize: int(0, 10_000_000, { default: 20_000, description: 'TLS 1.2 session-ID cache shared by the workers (held by the primary, LRU, entries expire after `sessionTimeoutSeconds`), in sessions; `0` turns it off. Used by clients without tickets (or with `sessionTickets: false`)' }),
  contextCacheSize: int(1, 10_000_000, { default: 1000, description: 'certificate entries whose TLS contexts a worker keeps built. Every entry is checked at load, but its TLS context (about 50 KB) is built on the first ClientHello that selects it, and the least recently used ones are dropped beyond this many (their open connections keep working; the next ClientHello rebuilds, ~1–3 ms). See [tls-front.md](tls-front.md#many-certificates)' }),
  ocspStapling: bool({ default: true, description: 'OCSP stapling (nginx `ssl_stapling` + `ssl_stapling_verify`; on by default as in Caddy): for a certificate entry whose certificate names an OCSP responder (Authority Information Access) and whose file holds its issuer next, each worker fetches an OCSP response once the entry is in use, verifies it, and sends it to clients that ask (status_request), refreshed at half its validity. This makes outbound HTTP requests to the CA\'s responder; `false` makes none. Entries with two certificates (ECDSA and RSA) are not stapled. See [ocsp-stapling.md](ocsp-stapling.md)' }),
  ocspResponderTimeoutMs: int(100, 60_000, { default: 5000, description: 'how long a worker waits for an OCSP responder (connection and answer) before retrying later' })
}, {
  default: {},
  description: 'TLS settings shared by every certificate',
  renamed: {
    sni: 'use "strictSni"',
    strict: 'use "strictSni"',
    sessionTimeout: 'use "sessionTimeoutSeconds"',
    tickets: 'use "sessionTickets"',
    ticketKeyRotation: 'use "ticketRotationSeconds"',
    sessionCache: 'use "sessionCacheSize" (sessions; 0 turns the cache off)',
    default: 'use "defaultCertificate"',
    cipherSuites: 'use "ciphers" (TLS 1.2 and 1.3 names in one list)',
    ecdhCurve: 'use "groups" (an OpenSSL group list)',
    curves: 'use "groups" (an OpenSSL group list)',
    contextCache: 'use "contextCacheSize" (certificate entries)',
    stapling: 'use "ocspStapling"',
    sslStapling: 'use "ocspStapling" (always verified)',
    ocspTimeoutMs: 'use "ocspResponderTimeoutMs"'
  }
})

export const CertificateFilesSchema = section({
  cert: path({ description: 'PEM certificate, leaf first, then its chain. Refused if unparsable or expired' }),
  key: path({ description: 'normally a **key reference** (`-----BEGIN KEYEDGE KEY REFERENCE-----`), which needs the `keyd` section. A plain private key PEM also works but puts the key in the proxy process: the proxy logs `KEY CUSTODY BYPASSED` (meant for benchmark baselines)' }),
  ocsp: optional(path({ description: 'a DER OCSP response for `cert` provided by the operator, stapled instead of asking the responder (nginx `ssl_stapling_file`; needs `tls.ocspStapling`). Verified like a fetched one (issuer next in `cert`); read when the entry is first used, again at half its validity and on a reload, and never stapled once expired. See [ocsp-stapling.md](ocsp-stapling.md#a-response-file)' }))
}, { renamed: { certificate: 'use "cert"', privateKey: 'use "key"', keyref: 'use "key"' } })

export const CLIENT_AUTH_MODES = ['require', 'request'] as const

export const ClientAuthSchema = section({
  mode: oneOf(CLIENT_AUTH_MODES, { default: 'require', description: '`require`: a client without a certificate is refused by the handshake (TLS alert `certificate_required` in TLS 1.3, `handshake_failure` in TLS 1.2) and one whose certificate does not chain to `caFile` is closed before any request (nginx `ssl_verify_client on`); `request`: a certificate is asked for and verified when given, but the connection goes on without one or with one that failed (nginx `optional`): only a verified one is passed upstream' }),
  caFile: path({ description: 'PEM bundle of the CA certificates client certificates must chain to (relative to the config). Also the CA names the CertificateRequest lists. Refused if unreadable, empty, or holding a certificate that is not a CA. Reloaded with the certificates' }),
  subjectHeader: text({ default: 'x-client-cert-subject', check: 'header-name', transform: 'lower', description: 'request header carrying the verified client certificate\'s subject upstream (RFC 4514, e.g. `CN=client one,O=Acme`; bytes outside printable ASCII as `\\XX`)' }),
  fingerprintHeader: text({ default: 'x-client-cert-sha256', check: 'header-name', transform: 'lower', description: 'request header carrying the SHA-256 of the verified client certificate (DER), 64 lower-case hex digits' }),
  verifyHeader: text({ default: 'x-client-cert-verify', check: 'header-name', transform: 'lower', description: 'request header carrying the verification result, as nginx\'s `$ssl_client_verify`: `SUCCESS`, `NONE` (no certificate) or `FAILED:<reason>` (`request` mode only, e.g. `FAILED:UNABLE_TO_VERIFY_LEAF_SIGNATURE`)' })
}, {
  description: 'client certificates (mutual TLS) for this entry; absent: no certificate is asked for (no CertificateRequest, so browsers never prompt). See [client-certificates.md](client-certificates.md). The three header names, and their defaults, are removed from every incoming request on every route, so a client cannot forge them',
  renamed: {
    verify: 'use "mode" ("require" or "request")',
    verifyClient: 'use "mode" ("require" or "request")',
    required: 'use "mode": "require" (or "request")',
    optional: 'use "mode": "request"',
    ca: 'use "caFile" (a path to a PEM bundle)',
    caBundle: 'use "caFile"',
    clientCa: 'use "caFile"',
    clientCertificate: 'use "caFile"',
    trustedCa: 'use "caFile"',
    subject: 'use "subjectHeader"',
    fingerprint: 'use "fingerprintHeader"',
    fingerprintSha256Header: 'use "fingerprintHeader"',
    header: 'use "subjectHeader", "fingerprintHeader" and "verifyHeader"',
    headers: 'use "subjectHeader", "fingerprintHeader" and "verifyHeader"'
  }
})

export const CertificateSchema = section({
  name: text({ description: 'unique name of the entry (used by `tls.defaultCertificate`, logs, metrics)' }),
  serverNames: list(text({ check: 'server-name', transform: 'host' }), {
    minItems: 1,
    description: 'names this entry answers: exact names, single-label wildcards (`*.example.com` matches `a.example.com`, not `a.b.example.com` nor `example.com`) or IP addresses. Case-insensitive, a trailing dot is ignored; a name may belong to one entry only'
  }),
  files: list(CertificateFilesSchema, { minItems: 1, description: 'one or more `{ "cert", "key" }` pairs for the same names, e.g. an ECDSA and an RSA certificate: all go into one TLS context and each client gets the one it supports' }),
  clientAuth: optional(ClientAuthSchema)
}, {
  renamed: {
    mtls: 'use "clientAuth": { "mode": ..., "caFile": ... }',
    mTLS: 'use "clientAuth": { "mode": ..., "caFile": ... }',
    clientCertificates: 'use "clientAuth": { "mode": ..., "caFile": ... }',
    clientCert: 'use "clientAuth": { "mode": ..., "caFile": ... }',
    verifyClient: 'use "clientAuth": { "mode": "require" | "request", "caFile": ... }',
    clientCa: 'use "clientAuth": { "caFile": ... }',
    cert: 'put certificate/key pairs in "files": [{ "cert": ..., "key": ... }]',
    key: 'put certificate/key pairs in "files": [{ "cert": ..., "key": ... }]',
    names: 'use "serverNames"',
    hosts: 'use "serverNames"',
    domains: 'use "serverNames"'
  }
})

export const UpstreamTargetSchema = section({
  url: text({ check: 'upstream', transform: 'origin', description: 'origin only, `http://` or `https://`' }),
  weight: int(1, 1000, { default: 1, description: 'share of the traffic relative to the other targets (round-robin and hashing); least-outstanding divides a target\'s in-flight count by it' })
}, { renamed: { upstream: 'use "url"', target: 'use "url"', address: 'use "url"' } })

export const BALANCE_POLICIES = ['round_robin', 'least_outstanding', 'hash'] as const
export const HASH_SOURCES = ['client', 'header', 'cookie'] as const

export const BalanceSchema = section({
  policy: oneOf(BALANCE_POLICIES, { default: 'round_robin', description: '`round_robin`: smooth weighted round-robin; `least_outstanding`: of two targets drawn at random, the one with fewer requests in flight per weight (power of two choices); `hash`: consistent hashing (a ring), so the same key keeps its target and adding or removing one of N targets moves about 1/N of the keys' }),
  hashOn: oneOf(HASH_SOURCES, { default: 'client', description: 'what `hash` hashes: the client address (after trusted `X-Forwarded-For`), a request header or a cookie (named by `hashKey`); a request without that header or cookie gets round-robin' }),
  hashKey: nullableText({ default: null, description: 'the header or cookie name for `hashOn: "header"` / `"cookie"`' })
}, { default: {}, description: 'how a target of the pool is chosen', renamed: { algorithm: 'use "policy"', lb: 'use "policy"', key: 'use "hashKey"' } })

export const HealthCheckSchema = section({
  protocol: oneOf(['http', 'grpc'] as const, { default: 'http', description: '`http`: a `GET` of `path` that passes on one of `expectedStatuses`; `grpc`: the gRPC health checking protocol (`grpc.health.v1.Health/Check` for `grpcService`), which passes when the target answers `SERVING` — for pools with `upstreamProtocol` `h2c` or `h2` only (see [upstreams.md](upstreams.md#http2-and-grpc-upstreams))' }),
  path: text({ default: '/healthz', check: 'path-prefix', description: 'path requested with `GET` from every target (`protocol` `http`)' }),
  grpcService: optional(text({ description: 'the service whose health a `grpc` check asks for; absent: the server as a whole (the empty service name)' })),
  intervalMs: int(100, 3_600_000, { default: 5_000, description: 'time between two checks of one target' }),
  timeoutMs: int(1, 600_000, { default: 2_000, description: 'a check without a response this soon fails' }),
  healthyThreshold: int(1, 100, { default: 2, description: 'consecutive passed checks that bring a down target back' }),
  unhealthyThreshold: int(1, 100, { default: 2, description: 'consecutive failed checks that mark a target down' }),
  expectedStatuses: list(int(100, 599), { default: [200], minItems: 1, description: 'statuses that pass (`protocol` `http`)' })
}, { description: 'active health checks, run by every worker; absent = none (targets are then only ejected passively)', renamed: { interval: 'use "intervalMs"', timeout: 'use "timeoutMs"' } })

export const OutlierSchema = section({
  consecutiveFailures: int(0, 1000, { default: 5, docDefault: '`5` (`0` = off)', description: 'consecutive `5xx` responses, failed connections or timeouts that eject a target' }),
  baseEjectionMs: int(1, 3_600_000, { default: 10_000, description: 'first ejection\'s length; each further ejection of the same target doubles it' }),
  maxEjectionMs: int(1, 86_400_000, { default: 300_000, description: 'ejections never last longer' }),
  maxEjectedPercent: int(0, 100, { default: 50, description: 'never eject more than this share of the pool (at least one target always stays eligible)' })
}, { default: {}, description: 'passive outlier ejection, from the traffic itself' })

export const RetrySchema = section({
  attempts: int(0, 5, { default: 1, docDefault: '`1` (`0` = off)', description: 'extra tries of an idempotent request without a body (`GET`, `HEAD`, `OPTIONS`, `PUT`, `DELETE`, `TRACE`), each on another target, after a refused or failed connection or a `retryOn` status' }),
  retryOn: list(int(500, 599), { default: [502, 503], description: 'upstream statuses retried (the response is discarded); connection failures are always retried' }),
  budgetPercent: int(0, 100, { default: 20, description: 'retries within 10 s may add at most this share of the route\'s requests in that window, so retries cannot amplify an outage' }),
  minRetries: int(0, 10_000, { default: 3, description: 'retries allowed per 10 s whatever the budget (for routes with little traffic)' })
}, { default: {}, description: 'retries' })

export const UPSTREAM_PROTOCOLS = ['http1', 'h2c', 'h2'] as const

export const HeaderSetSchema = section({
  name: text({ check: 'header-name', transform: 'lower', description: 'header name' }),
  value: text({ check: 'header-value', description: 'its value (no line breaks; e.g. `max-age=31536000; includeSubDomains`)' })
})

const HEADER_RULES_RENAMED = { add: 'use "set" (a list of { "name", "value" })', hide: 'use "remove"', delete: 'use "remove"' }

export const ResponseHeadersSchema = section({
  set: list(HeaderSetSchema, { default: [], description: 'headers every upstream response of the route carries, replacing the upstream\'s own of that name (e.g. `{ "name": "strict-transport-security", "value": "max-age=31536000" }`)' }),
  remove: list(text({ check: 'header-name', transform: 'lower' }), { default: [], description: 'headers removed from every upstream response of the route (e.g. `server`, `x-powered-by`)' })
}, {
  default: {},
  description: 'headers changed on the route\'s upstream responses, on HTTP/1.1 and HTTP/2 (nginx `add_header` and `proxy_hide_header`, Envoy `response_headers_to_add`/`_remove`): `remove` first, then `set`. The proxy\'s own answers (`404`, `429`, `502`…) are left as they are',
  renamed: HEADER_RULES_RENAMED
})

export const RequestHeadersSchema = section({
  set: list(HeaderSetSchema, { default: [], description: 'headers every request of the route carries upstream, replacing the client\'s own of that name (e.g. an API key the target expects)' }),
  remove: list(text({ check: 'header-name', transform: 'lower' }), { default: [], description: 'headers of the client\'s request not passed upstream (e.g. `cookie` for a static target)' })
}, {
  default: {},
  description: 'headers changed on the route\'s requests before they go upstream, WebSocket upgrades included (nginx `proxy_set_header`, Envoy `request_headers_to_add`/`_remove`): `remove` first, then `set`. The forwarding headers, `Host` and the verified client-certificate headers are the proxy\'s and cannot be named',
  renamed: HEADER_RULES_RENAMED
})

export const RouteSchema = section({
  host: text({ default: '*', check: 'route-host', transform: 'host', description: 'exact host, `*.example.com` or `*` (port and case ignored)' }),
  pathPrefix: text({ default: '/', check: 'path-prefix', description: 'starts with `/`; `/api` matches `/api` and `/api/x`, not `/apix`; `/api/` matches `/api/x` only' }),
  rewritePrefix: optional(text({ check: 'path-prefix', description: 'replaces the matched `pathPrefix` before the request goes upstream (nginx `proxy_pass http://up/new/;` in `location /old/`, Envoy `prefix_rewrite`), WebSocket upgrades and gRPC included; the query is kept. The slash after the prefix is kept as a boundary, so the join never makes `//` nor glues segments: `pathPrefix` `/api/` (or `/api`) with `rewritePrefix` `/` sends `/api/users?x=1` as `/users?x=1`, with `/v2` (or `/v2/`) as `/v2/users?x=1`; the prefix itself (`/api`, `/api?x=1`) becomes `rewritePrefix` as written (`/`, `/?x=1`). Absent: the path is passed unchanged. The access log keeps the client\'s path' })),
  upstream: optional(text({ check: 'upstream', transform: 'origin', description: 'origin only, `http://` or `https://` (`http://127.0.0.1:8080`); the request path is passed unchanged (unless `rewritePrefix`). A pool of one target; give either this or `upstreams`' })),
  timeoutMs: int(1, 3_600_000, { default: 30_000, description: 'time allowed for the upstream\'s response headers, and between body chunks; exceeded → `504`. A gRPC call that carries a `grpc-timeout` gets its deadline instead' }),
  connectTimeoutMs: int(1, 600_000, { default: 5_000, description: 'time allowed to connect to the upstream; exceeded → `504`; refused or failed → `502`' }),
  // ---- Upstream pools: targets, balancing, health checks, outlier ejection, retries (docs/upstreams.md) ----
  upstreams: optional(list(UpstreamTargetSchema, { minItems: 1, description: 'a pool of targets (instead of `upstream`); see [upstreams.md](upstreams.md)' })),
  balance: BalanceSchema,
  healthCheck: optional(HealthCheckSchema),
  outlier: OutlierSchema,
  retry: RetrySchema,
  // HTTP/2 and gRPC upstreams (src/proxy/h2-upstream.ts, grpc.ts; docs/upstreams.md).
  upstreamProtocol: oneOf(UPSTREAM_PROTOCOLS, { default: 'http1', description: 'what the pool speaks to its targets: `http1` (HTTP/1.1, keep-alive); `h2c` (HTTP/2 in cleartext with prior knowledge, `http://` targets only); `h2` (HTTP/2 over TLS, ALPN `h2`, `https://` targets only). gRPC needs `h2c` or `h2`; see [upstreams.md](upstreams.md#http2-and-grpc-upstreams)' }),
  upstreamHost: text({ default: 'client', check: 'upstream-host', transform: 'lower', description: 'the `Host` (HTTP/2 `:authority`) the targets receive: `"client"`, the client\'s own; `"target"`, the chosen target\'s `host[:port]` as its URL names it (Envoy `auto_host_rewrite`, nginx `proxy_set_header Host $proxy_host`), e.g. for virtual-hosted origins; or a fixed `name[:port]` (Envoy `host_rewrite_literal`, nginx `proxy_set_header Host name`). `X-Forwarded-Host` keeps carrying the client\'s host. Health checks carry the fixed name, else the target\'s own. The TLS server name sent to an `https://` target is always the target URL\'s host, whatever this says. WebSocket upgrades included; see [Forwarding behaviour](#forwarding-behaviour-not-configurable)' }),
  // Edge HTTP features of the route (access log switch, limits): docs/access-log.md, docs/configuration.md.
  accessLog: bool({ default: true, description: 'when `false`, requests of this route are left out of the access log (see the top-level `accessLog`)' }),
  maxBodyBytes: int(0, 1_099_511_627_776, { default: 0, docDefault: '`0` (off)', description: 'largest request body accepted, in bytes. A declared `Content-Length` above it gets `413` before anything goes upstream; a body of unknown length (chunked, HTTP/2 without `content-length`) that grows past it is cut: the upstream request is aborted (it never sees a complete body) and the client gets `413` unless its response had started. Counted in `edge_route_limit_hits_total{limit="body_size"}`' }),
  allow: optional(list(text({ check: 'address-or-cidr' }), { minItems: 1, description: 'client addresses or CIDRs (IPv4 and IPv6, e.g. `"10.0.0.0/8"`, `"2001:db8::/32"`) that may use this route (nginx `allow`, Envoy RBAC on the remote IP); any other address gets `403` `{"error":"forbidden",…}`. With `deny` too, the most specific entry decides (longest prefix; `deny` on a tie), whatever the order. The client address is the one after trusted `X-Forwarded-For` (see `trustedProxies`). Checked before the rate limit and before anything goes upstream, WebSocket upgrades included; counted in `edge_route_limit_hits_total{limit="address"}` and `edge_proxy_requests_total{outcome="forbidden"}`. Absent: every address' })),
  deny: optional(list(text({ check: 'address-or-cidr' }), { minItems: 1, description: 'client addresses or CIDRs refused with `403` (nginx `deny`); without `allow`, every other address may use the route. See `allow` for how the two combine' })),
  requestsPerSecondPerClient: int(0, 10_000_000, { default: 0, docDefault: '`0` (off)', description: 'requests per second per client address on this route, per worker: the refill rate of a token bucket. A request without a token gets `429` with `Retry-After`, counted in `edge_route_limit_hits_total{limit="rate"}`. The client address is the one after trusted `X-Forwarded-For` (see `trustedProxies`)' }),
  requestBurstPerClient: int(0, 10_000_000, { default: 0, docDefault: '`0` = twice the rate (at least 1)', description: 'the bucket\'s size: how many requests a client may send at once after a quiet period' }),
  webSocketsPerClient: int(0, 10_000_000, { default: 0, docDefault: '`0` (off)', description: 'WebSockets one client address may hold open on this route at once, per worker (as nginx\'s `limit_conn` in a location): one more upgrade gets `429`, counted in `edge_route_limit_hits_total{limit="websockets"}`. Over HTTP/2 one connection carries any number of WebSockets, so the listener\'s `maxConnectionsPerClient` does not bound them. An upgrade also takes a token of `requestsPerSecondPerClient` like any request. See [WebSockets](#websockets)' }),
  requestHeaders: RequestHeadersSchema,
  responseHeaders: ResponseHeadersSchema,
  webSocketIdleMs: int(1, 86_400_000, { default: 300_000, description: 'a proxied WebSocket (HTTP/1.1 `Upgrade: websocket`, or an HTTP/2 extended CONNECT) with no byte in either direction this long is closed, counted in `edge_websocket_total{event="idle_timeout"}`' })
}, {
  renamed: {
    timeout: 'use "timeoutMs" (milliseconds)',
    connectTimeout: 'use "connectTimeoutMs" (milliseconds)',
    path: 'use "pathPrefix"',
    prefix: 'use "pathPrefix"',
    target: 'use "upstream"',
    url: 'use "upstream"',
    backend: 'use "upstream"',
    pool: 'use "upstreams": [{ "url": ..., "weight": ... }]',
    targets: 'use "upstreams": [{ "url": ..., "weight": ... }]',
    backends: 'use "upstreams": [{ "url": ..., "weight": ... }]',
    servers: 'use "upstreams": [{ "url": ..., "weight": ... }]',
    loadBalancing: 'use "balance": { "policy": ... }',
    healthcheck: 'use "healthCheck"',
    health: 'use "healthCheck"',
    retries: 'use "retry"',
    protocol: 'use "upstreamProtocol": "http1", "h2c" or "h2"',
    http2: 'use "upstreamProtocol": "h2c" (cleartext) or "h2" (TLS)',
    h2: 'use "upstreamProtocol": "h2c" (cleartext) or "h2" (TLS)',
    h2c: 'use "upstreamProtocol": "h2c"',
    grpc: 'use "upstreamProtocol": "h2c" or "h2" (gRPC needs HTTP/2 to the targets)',
    upstreamHttp2: 'use "upstreamProtocol": "h2c" (cleartext) or "h2" (TLS)',
    hosts: 'use "host" (one route per host pattern)',
    hostname: 'use "host"',
    rewrite: 'use "rewritePrefix" (the path prefix that replaces "pathPrefix")',
    prefixRewrite: 'use "rewritePrefix"',
    stripPrefix: 'use "rewritePrefix": "/"',
    hostHeader: 'use "upstreamHost": "client", "target" or a host name',
    hostRewrite: 'use "upstreamHost": "target" or a host name',
    autoHostRewrite: 'use "upstreamHost": "target"',
    hostRewriteLiteral: 'use "upstreamHost": "<name>"',
    preserveHost: 'use "upstreamHost": "client" (the default) or "target"',
    allowFrom: 'use "allow" (a list of addresses or CIDRs)',
    allowedCidrs: 'use "allow" (a list of addresses or CIDRs)',
    denyFrom: 'use "deny" (a list of addresses or CIDRs)',
    deniedCidrs: 'use "deny" (a list of addresses or CIDRs)',
    ipAllowList: 'use "allow" (a list of addresses or CIDRs)',
    ipDenyList: 'use "deny" (a list of addresses or CIDRs)'
  }
})

export const AccessLogSchema = section({
  path: optional(path({ description: 'file the lines are appended to (relative to the config file; every worker appends to it). Left out: standard output' })),
  sampleRate: num(0, 1, { default: 1, description: 'share of requests logged, drawn at random per request: `1` logs all, `0.01` one in a hundred, `0` none' }),
  includeQuery: bool({ default: false, description: 'log the query string with the path; `false` strips it (queries often carry tokens or personal data)' }),
  bufferBytes: int(4096, 1_073_741_824, { default: 4 * 1024 * 1024, description: 'lines waiting for the disk, per worker, at most this many bytes: past it (a full or slow disk) lines are dropped, counted in `edge_access_log_dropped_total` and warned once; traffic never waits for the log' })
}, {
  description: 'one JSON line per request (docs/access-log.md), written asynchronously; absent: no access log',
  renamed: { file: 'use "path"', sample: 'use "sampleRate" (0 to 1)', sampling: 'use "sampleRate" (0 to 1)', query: 'use "includeQuery"' }
})

export const ProxyProtocolSchema = section({
  trustedCidrs: list(text({ check: 'address-or-cidr' }), { minItems: 1, description: 'balancers (addresses or CIDRs, IPv4 and IPv6, e.g. `"10.0.0.0/16"`) that must open every connection with a PROXY protocol v1 or v2 header; their connections without a valid one are closed. A PROXY header from any other peer is refused. See [proxy-protocol.md](proxy-protocol.md)' })
}, {
  description: 'PROXY protocol (HAProxy\'s, v1 and v2) on the TLS listener: the client address it carries is the one used for `X-Forwarded-For`, the access log, per-client limits and hashing ([proxy-protocol.md](proxy-protocol.md)); absent: a PROXY header is refused from anyone',
  renamed: {
    trusted: 'use "trustedCidrs" (a list of addresses or CIDRs)',
    trustedProxies: 'use "trustedCidrs" (a list of addresses or CIDRs)',
    trustedPeers: 'use "trustedCidrs" (a list of addresses or CIDRs)',
    cidrs: 'use "trustedCidrs"',
    allow: 'use "trustedCidrs"',
    from: 'use "trustedCidrs"',
    sources: 'use "trustedCidrs"',
    enabled: 'the section\'s presence turns it on: list the balancers in "trustedCidrs"',
    version: 'versions 1 and 2 are both accepted: list the balancers in "trustedCidrs"'
  }
})

export const HttpRedirectSchema = section({
  host: text({ default: '0.0.0.0', check: 'listen-host', description: 'address of the plain-HTTP listener' }),
  port: int(0, 65_535, { default: 80, description: 'its TCP port; `0` picks a free one (logged: `{"msg":"http redirect listening","port":N}`). Must differ from the other listeners\' ports' }),
  httpsPort: int(0, 65_535, { default: 0, docDefault: '`0` = `listen.port`', description: 'the port the `Location` names: the one clients reach the TLS listener on (`443` behind a port mapping); `443` is left out of the URL' }),
  permanent: bool({ default: true, description: '`true`: `308 Permanent Redirect` (browsers remember it); `false`: `307 Temporary Redirect`. Both keep the method and body, unlike 301/302' })
}, {
  description: 'a plain-HTTP listener (port 80) that sends every request for a routed host to the same URL over HTTPS (nginx `return 301 https://$host$request_uri`, Caddy\'s automatic redirects); a host no route serves gets `404`. It reads only the request head, answers and closes. Absent: no plain-HTTP listener',
  renamed: { status: 'use "permanent" (true: 308, false: 307)', redirectPort: 'use "httpsPort"', tlsPort: 'use "httpsPort"', listen: 'use "host" and "port"' }
})

export const AdminSchema = section({
  host: text({ default: '127.0.0.1', check: 'loopback', description: 'a loopback address (`127.0.0.0/8`, `::1` or `localhost`); anything else is refused' }),
  port: int(0, 65_535, { default: 9443, description: 'TCP port; `0` picks a free one (see the log line). Must differ from `listen.port`' }),
  drainDelayMs: int(0, 600_000, { default: 5_000, description: 'on SIGTERM, how long `/ready` answers 503 while the proxy still accepts, so load balancers stop sending first. SIGINT skips it' })
}, {
  description: 'the admin listener (health, readiness, metrics, certificates, reload)',
  renamed: { address: 'use "host"', listen: 'use "host" and "port"', drainDelay: 'use "drainDelayMs" (milliseconds)' }
})

export const TimeoutsSchema = section({
  clientHelloMs: int(100, 600_000, { default: 10_000, description: 'until the whole ClientHello has arrived: a connection that sends nothing, or trickles its hello, is closed. When the front does not need the hello (one certificate entry, …) it hands the connection over at its first byte, and this bounds the wait for that byte' }),
  handshakeMs: int(100, 600_000, { default: 15_000, description: 'until the handshake\'s Finished (not below `clientHelloMs`): a client that sends a ClientHello and then nothing (after costing a keyd signature) is closed. Node\'s own TLS handshake timeout, which restarts with every byte, is set to the same value (after a reload, for the TLS servers a worker builds from then on: one already built keeps the old value for that second clock until it is rebuilt, see [Reloading the config](admin.md#reloading-certificates))' }),
  requestHeadersMs: int(1, 3_600_000, { default: 10_000, description: 'a new connection (HTTP/1.1 or HTTP/2) must deliver a complete request head this soon after its TLS handshake, and an HTTP/1.1 request this soon after its first byte (keep-alive): a head sent one byte at a time (slowloris) is cut, with `408` if it had started, silently if nothing came' }),
  keepAliveIdleMs: int(1, 3_600_000, { default: 60_000, description: 'an HTTP/1.1 connection with no request in flight is closed after this long' }),
  http2IdleMs: int(1, 3_600_000, { default: 120_000, description: 'an HTTP/2 session without an open stream this long gets GOAWAY (NO_ERROR) and is closed (longer than HTTP/1.1: one session replaces several connections)' }),
  requestBodyIdleMs: int(1, 3_600_000, { default: 30_000, description: 'a request body that brings nothing for this long while the proxy waits for it: `408` (then HTTP/1.1 closes the connection, HTTP/2 resets the stream), or the connection/stream is cut if the response had started. Time the proxy itself is not reading (a slow upstream holding the body back) does not count' })
}, {
  default: {},
  description: 'timeouts of the listener: TLS front (docs/tls-front.md) and HTTP',
  renamed: {
    headers: 'use "requestHeadersMs" (milliseconds)',
    headersMs: 'use "requestHeadersMs" (milliseconds)',
    requestHeaders: 'use "requestHeadersMs" (milliseconds)',
    keepAlive: 'use "keepAliveIdleMs" (milliseconds)',
    keepAliveMs: 'use "keepAliveIdleMs" (milliseconds)',
    keepAliveTimeoutMs: 'use "keepAliveIdleMs" (milliseconds)',
    idleMs: 'use "keepAliveIdleMs" (HTTP/1.1) or "http2IdleMs" (HTTP/2)',
    body: 'use "requestBodyIdleMs" (milliseconds)',
    bodyMs: 'use "requestBodyIdleMs" (milliseconds)'
  }
})

export const LimitsSchema = section({
  maxConnections: int(0, 10_000_000, { default: 0, docDefault: '`0` = automatic: half the worker\'s open-file limit, after 256 kept for listeners and files', description: 'open client connections per worker, handshakes in progress included (nginx `worker_connections`, HAProxy `maxconn`): every client connection may need an upstream socket too, hence half the file limit. At the cap a new connection takes the place of the oldest idle one (an HTTP/1.1 connection without a request in flight is closed, an HTTP/2 session without an open stream gets GOAWAY), counted in `edge_connections_reclaimed_total`; when none is idle the new one is closed at accept, counted in `edge_connections_refused_total{limit="max_connections"}`. `edge_connections_open` and `edge_connections_max` show how close a worker is. About 33 KiB per idle TLS connection: set it to bound memory too' }),
  maxConnectionsPerClient: int(0, 10_000_000, { default: 0, docDefault: '`0` (off)', description: 'open connections per client address, per worker' }),
  newConnectionsPerSecondPerClient: int(0, 10_000_000, { default: 0, docDefault: '`0` (off)', description: 'new connections per second per client address, per worker: the refill rate of a token bucket' }),
  newConnectionBurstPerClient: int(0, 10_000_000, { default: 0, docDefault: '`0` = twice the rate (at least 1)', description: 'the bucket\'s size: how many connections a client may open at once after a quiet period' }),
  http2MaxConcurrentStreams: int(1, 10_000, { default: 128, description: '`SETTINGS_MAX_CONCURRENT_STREAMS` sent to every HTTP/2 client, as nginx\'s `http2_max_concurrent_streams`; a client keeps its other requests queued until a stream ends. After a reload, sessions opened from then on get the new value (a second SETTINGS frame where the TLS server was built before); open sessions keep theirs' }),
  http2MaxResetsPerSecond: int(1, 100_000, { default: 100, description: 'the rapid-reset threshold: streams a session may have reset per second (by the client\'s RST_STREAM, or for the client\'s protocol errors) before the proxy ends it with GOAWAY `ENHANCE_YOUR_CALM` and cancels every request it has in flight upstream. A token bucket per session refilled at this rate, holding `max(2 × rate, http2MaxConcurrentStreams)`, so a browser that cancels every open stream at once (navigating away) stays within it' })
}, {
  default: {},
  description: 'the worker\'s cap on open connections, per-client-address limits on the listener (counted per worker; refusals in `edge_connections_refused_total{limit}`) and HTTP/2 session limits',
  renamed: {
    maxConcurrentStreams: 'use "http2MaxConcurrentStreams"',
    http2MaxStreams: 'use "http2MaxConcurrentStreams"',
    maxResetsPerSecond: 'use "http2MaxResetsPerSecond"',
    http2ResetRate: 'use "http2MaxResetsPerSecond"'
  }
})

export const EdgeConfigSchema = section({
  listen: ListenSchema,
  workers: int(0, 1024, { default: 0, description: 'worker processes; `0` = one per CPU (`os.availableParallelism()`). `--workers N` overrides it' }),
  keyd: optional(KeydSchema),
  tls: TlsSchema,
  certificates: list(CertificateSchema, { minItems: 1, description: 'certificate entries' }),
  routes: list(RouteSchema, { minItems: 1, description: 'routes' }),
  trustedProxies: list(text({ check: 'address-or-cidr' }), { default: [], description: 'peers (addresses or CIDRs, IPv4 and IPv6, e.g. `"10.0.0.0/8"`, `"::1"`) whose `X-Forwarded-*` headers are believed. Behind a PROXY protocol balancer (`proxyProtocol`) the peer is the client address its header carries' }),
  http2: bool({ default: true, description: 'offer HTTP/2 by ALPN (`h2`, then `http/1.1`); `false` serves HTTP/1.1 only' }),
  log: section({ level: oneOf(LOG_LEVELS, { default: 'info', description: 'the lowest level logged' }) }, { default: {} }),
  accessLog: optional(AccessLogSchema),
  proxyProtocol: optional(ProxyProtocolSchema),
  admin: optional(AdminSchema),
  httpRedirect: optional(HttpRedirectSchema),
  shutdownGraceMs: int(0, 3_600_000, { default: 10_000, description: 'on SIGTERM/SIGINT, how long in-flight requests may take to finish once the proxy stopped accepting; then the rest are cut' }),
  token: optional(TokenSchema),
  timeouts: TimeoutsSchema,
  limits: LimitsSchema,
  stateDir: path({
    default: '.',
    docDefault: 'the config file\'s directory',
    description: 'a directory the proxy may write (created 0700 if missing): it writes `openssl-proxy.cnf` there, the OpenSSL config that makes its workers load the keyd bridge (no secret in it). Never keyd\'s socket directory, which belongs to keyd; point it at a writable volume when the config file is mounted read-only'
  })
}, {
  renamed: {
    port: 'moved to "listen.port"',
    host: 'moved to "listen.host"',
    upstream: 'each route has its own "upstream": see "routes"',
    upstreams: 'each route has its own "upstream": see "routes"',
    certs: 'use "certificates"',
    logLevel: 'use "log": { "level": ... }',
    h2: 'use "http2"',
    trustProxy: 'use "trustedProxies" (a list of addresses or CIDRs)',
    proxy_protocol: 'use "proxyProtocol": { "trustedCidrs": [...] }',
    acceptProxy: 'use "proxyProtocol": { "trustedCidrs": [...] }',
    acceptProxyProtocol: 'use "proxyProtocol": { "trustedCidrs": [...] }',
    proxyProtocolTrustedCidrs: 'use "proxyProtocol": { "trustedCidrs": [...] }',
    cluster: 'use "workers"',
    shutdownGrace: 'use "shutdownGraceMs" (milliseconds)',
    gracePeriodMs: 'use "shutdownGraceMs" (milliseconds)',
    stateDirectory: 'use "stateDir"',
    dataDir: 'use "stateDir"'
  }
})
