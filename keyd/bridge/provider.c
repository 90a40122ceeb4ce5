/*
 * provider.c: the keyedge bridge as an OpenSSL 3 provider whose keys live in keyd. Entry point,
 * configuration, the operation tables, reason strings, errors, and fork safety.
 *
 * It links no libcrypto: parameters are walked by hand (params.c) and everything the core
 * offers comes from the dispatch table handed to OSSL_provider_init.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/params.h> /* only the OSSL_PARAM_* initialiser macros */

#include "bridge.h"

static OSSL_FUNC_provider_teardown_fn prov_teardown;
static OSSL_FUNC_provider_query_operation_fn prov_query;
static OSSL_FUNC_provider_get_params_fn prov_get_params;
static OSSL_FUNC_provider_gettable_params_fn prov_gettable_params;
static OSSL_FUNC_provider_get_reason_strings_fn prov_reasons;

/* ---- errors ---- */

void ke_raise(const KE_PROV *p, const char *file, int line, const char *func, int reason,
              const char *fmt, ...) {
  va_list ap;
  if (p == NULL || p->new_error == NULL || p->vset_error == NULL)
    return;
  p->new_error(p->handle);
  if (p->set_error_debug != NULL)
    p->set_error_debug(p->handle, file, line, func);
  va_start(ap, fmt);
  p->vset_error(p->handle, (uint32_t)reason, fmt, ap);
  va_end(ap);
  if (getenv("KEYEDGE_BRIDGE_DEBUG") != NULL) { /* a failure Node would only show by its reason */
    fprintf(stderr, "keyedge bridge: %s:%d %s: reason %d: ", file, line, func, reason);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
  }
}

/*
 * Reason strings, as Node shows them (err.message carries only the reason string, never the
 * error data): the transport ones carry the configured values, each keyd error its name.
 */
static int build_reasons(KE_PROV *p) {
  static const struct {
    int reason;
    const char *text;
  } fixed[] = {{KE_R_IO, "keyd: connection failed"},
               {KE_R_PROTOCOL, "keyd: protocol error"},
               {KE_R_CONFIG, "keyedge: provider not configured"},
               {KE_R_SECRET, "keyedge: cannot read client secret file"},
               {KE_R_BAD_REF, "keyedge: bad key reference"},
               {KE_R_UNSUPPORTED, "keyedge: unsupported signature parameters"},
               {KE_R_KEY_MISMATCH, "keyedge: key type differs from the reference"},
               {KE_R_CIRCUIT_OPEN, "keyd: circuit open, failing fast after keyd failed"},
               {KE_R_KEYD_UNKNOWN, "keyd: error code unknown to this bridge"},
               {KE_R_NO_MEMORY, "keyedge: out of memory"}};
  size_t nfixed = sizeof(fixed) / sizeof(fixed[0]), nkeyd = ke_keyd_error_count();
  size_t count = 3 + nfixed + nkeyd, each = 256, i, n = 0;
  char *t;

  p->reasons = calloc(count + 1, sizeof(OSSL_ITEM));
  p->reason_text = calloc(count, each);
  if (p->reasons == NULL || p->reason_text == NULL)
    return 0;
  t = p->reason_text;
  snprintf(t, each, "keyd: no answer within %d ms", p->timeout_ms);
  p->reasons[n++] = (OSSL_ITEM){KE_R_TIMEOUT, t};
  snprintf(t += each, each, "keyd: connection refused at %s", p->socket);
  p->reasons[n++] = (OSSL_ITEM){KE_R_REFUSED, t};
  snprintf(t += each, each, "keyd: no socket at %s", p->socket);
  p->reasons[n++] = (OSSL_ITEM){KE_R_NO_SOCKET, t};
  for (i = 0; i < nfixed; i++)
    p->reasons[n++] = (OSSL_ITEM){(unsigned)fixed[i].reason, (void *)fixed[i].text};
  for (i = 0; i < nkeyd; i++) {
    unsigned code = ke_keyd_error_code_at(i);
    snprintf(t += each, each, "keyd: %s: %s", ke_keyd_error_name(code),
             ke_keyd_error_meaning(code));
    p->reasons[n++] = (OSSL_ITEM){(unsigned)KE_R_KEYD + code, t};
  }
  p->reasons[n] = (OSSL_ITEM){0, NULL};
  return 1;
}

static const OSSL_ITEM *prov_reasons(void *provctx) { return ((KE_PROV *)provctx)->reasons; }

/* ---- fork: a child must not talk on its parent's connection ---- */

/*
 * Process-wide by nature: fork() concerns every provider instance of the process at once, and
 * pthread_atfork handlers take no argument. prepare takes every lock so that no other thread
 * holds one across the fork (the child would inherit it locked forever); the child then
 * closes its copy of each connection (the parent keeps using its own) and opens its own on its
 * first request. glibc drops the handlers when the module is unloaded.
 */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static KE_PROV *registry;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void fork_prepare(void) {
  KE_PROV *p;
  pthread_mutex_lock(&registry_lock);
  for (p = registry; p != NULL; p = p->next) {
    pthread_mutex_lock(&p->conn.lock);
    pthread_mutex_lock(&p->breaker.lock);
    pthread_mutex_lock(&p->cache.lock);
  }
}

static void fork_parent(void) {
  KE_PROV *p;
  for (p = registry; p != NULL; p = p->next) {
    pthread_mutex_unlock(&p->cache.lock);
    pthread_mutex_unlock(&p->breaker.lock);
    pthread_mutex_unlock(&p->conn.lock);
  }
  pthread_mutex_unlock(&registry_lock);
}

static void fork_child(void) {
  KE_PROV *p;
  for (p = registry; p != NULL; p = p->next) {
    ke_conn_close(&p->conn);
    p->conn.pid = 0;
    pthread_mutex_unlock(&p->cache.lock);
    pthread_mutex_unlock(&p->breaker.lock);
    pthread_mutex_unlock(&p->conn.lock);
  }
  pthread_mutex_unlock(&registry_lock);
}

static void register_atfork(void) { pthread_atfork(fork_prepare, fork_parent, fork_child); }

static void registry_add(KE_PROV *p) {
  pthread_once(&atfork_once, register_atfork);
  pthread_mutex_lock(&registry_lock);
  p->next = registry;
  registry = p;
  pthread_mutex_unlock(&registry_lock);
}

static void registry_remove(KE_PROV *p) {
  KE_PROV **pp;
  pthread_mutex_lock(&registry_lock);
  for (pp = &registry; *pp != NULL; pp = &(*pp)->next)
    if (*pp == p) {
      *pp = p->next;
      break;
    }
  pthread_mutex_unlock(&registry_lock);
}

/* ---- operations ---- */

#define EC_NAMES "EC:id-ecPublicKey:1.2.840.10045.2.1"
#define RSA_NAMES "RSA:rsaEncryption:1.2.840.113549.1.1.1"
#define REF_INPUT "provider=keyedge,input=der,structure=" KE_STRUCTURE

static const OSSL_ALGORITHM decoders[] = {
    {"DER", "provider=keyedge,input=pem", ke_pem_decoder, "keyedge key reference PEM"},
    {EC_NAMES, REF_INPUT, ke_ec_decoder, "keyedge key reference to an EC key"},
    {RSA_NAMES, REF_INPUT, ke_rsa_decoder, "keyedge key reference to an RSA key"},
    {NULL, NULL, NULL, NULL}};
static const OSSL_ALGORITHM keymgmts[] = {
    {EC_NAMES, "provider=keyedge", ke_ec_keymgmt, "EC key held by keyd"},
    {RSA_NAMES, "provider=keyedge", ke_rsa_keymgmt, "RSA key held by keyd"},
    {NULL, NULL, NULL, NULL}};
static const OSSL_ALGORITHM signatures[] = {
    {"ECDSA", "provider=keyedge", ke_signature, "ECDSA by keyd"},
    {RSA_NAMES, "provider=keyedge", ke_signature, "RSA by keyd"},
    {NULL, NULL, NULL, NULL}};

static const OSSL_ALGORITHM *prov_query(void *provctx, int op, int *no_cache) {
  (void)provctx;
  *no_cache = 0;
  return op == OSSL_OP_DECODER     ? decoders
         : op == OSSL_OP_KEYMGMT   ? keymgmts
         : op == OSSL_OP_SIGNATURE ? signatures
                                   : NULL;
}

static int prov_get_params(void *provctx, OSSL_PARAM params[]) {
  OSSL_PARAM *p;
  (void)provctx;
  for (p = params; p != NULL && p->key != NULL; p++)
    if (strcmp(p->key, OSSL_PROV_PARAM_NAME) == 0 && p->data_type == OSSL_PARAM_UTF8_PTR) {
      *(const char **)p->data = "keyedge keyd bridge";
      p->return_size = 19;
    } else if (strcmp(p->key, OSSL_PROV_PARAM_STATUS) == 0) {
      ke_param_set_long(p, 1);
    }
  return 1;
}

static const OSSL_PARAM prov_gettable[] = {OSSL_PARAM_utf8_ptr(OSSL_PROV_PARAM_NAME, NULL, 0),
                                           OSSL_PARAM_int(OSSL_PROV_PARAM_STATUS, NULL),
                                           OSSL_PARAM_END};
static const OSSL_PARAM *prov_gettable_params(void *provctx) {
  (void)provctx;
  return prov_gettable;
}

static void prov_free(KE_PROV *p) {
  ke_pub_cache_clear(&p->cache);
  pthread_mutex_destroy(&p->cache.lock);
  pthread_mutex_destroy(&p->breaker.lock);
  pthread_mutex_destroy(&p->conn.lock);
  free(p->reasons);
  free(p->reason_text);
  free(p);
}

static void prov_teardown(void *provctx) {
  KE_PROV *p = provctx;
  registry_remove(p);
  pthread_mutex_lock(&p->conn.lock);
  if (p->conn.pid == getpid())
    ke_conn_close(&p->conn);
  pthread_mutex_unlock(&p->conn.lock);
  prov_free(p);
}

static const OSSL_DISPATCH prov_functions[] = {
    KE_DISPATCH(OSSL_FUNC_PROVIDER_TEARDOWN, provider_teardown, prov_teardown),
    KE_DISPATCH(OSSL_FUNC_PROVIDER_QUERY_OPERATION, provider_query_operation, prov_query),
    KE_DISPATCH(OSSL_FUNC_PROVIDER_GET_PARAMS, provider_get_params, prov_get_params),
    KE_DISPATCH(OSSL_FUNC_PROVIDER_GETTABLE_PARAMS, provider_gettable_params, prov_gettable_params),
    KE_DISPATCH(OSSL_FUNC_PROVIDER_GET_REASON_STRINGS, provider_get_reason_strings, prov_reasons),
    {0, NULL}};

/* ---- configuration ---- */

/* the environment variable wins over the config value */
static const char *setting(const char *cfg, const char *env) {
  const char *v = getenv(env);
  return v != NULL && v[0] != '\0' ? v : cfg;
}

static void set_str(char *dst, size_t cap, const char *v) {
  if (v != NULL && strlen(v) < cap)
    memcpy(dst, v, strlen(v) + 1);
}

/* a whole number of milliseconds in [lo, hi], else def */
static long set_ms(const char *v, long lo, long hi, long def) {
  char *end;
  long n;
  if (v == NULL || v[0] == '\0')
    return def;
  n = strtol(v, &end, 10);
  return *end == '\0' && n >= lo && n <= hi ? n : def;
}

__attribute__((visibility("default"))) OSSL_provider_init_fn OSSL_provider_init;

int OSSL_provider_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
                       const OSSL_DISPATCH **out, void **provctx) {
  OSSL_FUNC_core_get_params_fn *get_params = NULL;
  char *sock = NULL, *client = NULL, *secret = NULL, *timeout = NULL, *bmin = NULL, *bmax = NULL;
  OSSL_PARAM req[] = {OSSL_PARAM_utf8_ptr("keyd_socket", &sock, 0),
                      OSSL_PARAM_utf8_ptr("client_name", &client, 0),
                      OSSL_PARAM_utf8_ptr("client_secret_file", &secret, 0),
                      OSSL_PARAM_utf8_ptr("timeout_ms", &timeout, 0),
                      OSSL_PARAM_utf8_ptr("breaker_min_ms", &bmin, 0),
                      OSSL_PARAM_utf8_ptr("breaker_max_ms", &bmax, 0),
                      OSSL_PARAM_END};
  KE_PROV *p = calloc(1, sizeof(*p));
  long min_ms, max_ms;

  if (p == NULL)
    return 0;
  p->handle = handle;
  for (; in != NULL && in->function_id != 0; in++) {
    switch (in->function_id) {
    case OSSL_FUNC_CORE_GET_PARAMS:
      get_params = OSSL_FUNC_core_get_params(in);
      break;
    case OSSL_FUNC_CORE_NEW_ERROR:
      p->new_error = OSSL_FUNC_core_new_error(in);
      break;
    case OSSL_FUNC_CORE_SET_ERROR_DEBUG:
      p->set_error_debug = OSSL_FUNC_core_set_error_debug(in);
      break;
    case OSSL_FUNC_CORE_VSET_ERROR:
      p->vset_error = OSSL_FUNC_core_vset_error(in);
      break;
    case OSSL_FUNC_BIO_READ_EX:
      p->bio_read_ex = OSSL_FUNC_BIO_read_ex(in);
      break;
    default:
      break;
    }
  }
  if (get_params == NULL || !get_params(handle, req))
    sock = client = secret = timeout = bmin = bmax = NULL;
  set_str(p->socket, sizeof(p->socket), setting(sock, "KEYEDGE_KEYD_SOCKET"));
  set_str(p->client, sizeof(p->client), setting(client, "KEYEDGE_KEYD_CLIENT"));
  set_str(p->secret_file, sizeof(p->secret_file), setting(secret, "KEYEDGE_KEYD_SECRET_FILE"));
  p->timeout_ms = (int)set_ms(setting(timeout, "KEYEDGE_KEYD_TIMEOUT_MS"), 1, 600000, 1000);
  min_ms = set_ms(setting(bmin, "KEYEDGE_KEYD_BREAKER_MIN_MS"), 0, 3600000, 250);
  max_ms = set_ms(setting(bmax, "KEYEDGE_KEYD_BREAKER_MAX_MS"), 0, 3600000, 5000);
  ke_conn_init(&p->conn);
  ke_breaker_init(&p->breaker, min_ms, max_ms);
  ke_pub_cache_init(&p->cache);
  if (!build_reasons(p)) {
    prov_free(p);
    return 0;
  }
  registry_add(p);
  *out = prov_functions;
  *provctx = p;
  return 1;
}
