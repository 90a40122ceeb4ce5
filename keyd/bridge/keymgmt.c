/*
 * keymgmt.c: keys held by keyd. A key object is the reference (name, version, type) plus the
 * public part, fetched once with GET_PUBLIC_KEY; the private part never leaves keyd. Key
 * objects are immutable once built and reference-counted, so a signature context or the
 * cache can hold one safely.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/params.h> /* only the OSSL_PARAM_* initialiser macros */

#include "bridge.h"

static OSSL_FUNC_keymgmt_load_fn ec_load, rsa_load;
static OSSL_FUNC_keymgmt_free_fn key_free;
static OSSL_FUNC_keymgmt_has_fn key_has;
static OSSL_FUNC_keymgmt_get_params_fn key_get_params;
static OSSL_FUNC_keymgmt_gettable_params_fn ec_gettable_params, rsa_gettable_params;
static OSSL_FUNC_keymgmt_export_fn key_export;
static OSSL_FUNC_keymgmt_export_types_fn ec_export_types, rsa_export_types;
static OSSL_FUNC_keymgmt_query_operation_name_fn ec_operation_name, rsa_operation_name;

KE_KEY *ke_key_up_ref(KE_KEY *k) {
  if (k != NULL)
    __atomic_add_fetch(&k->refs, 1, __ATOMIC_RELAXED);
  return k;
}

void ke_key_free(KE_KEY *k) {
  if (k == NULL || __atomic_sub_fetch(&k->refs, 1, __ATOMIC_ACQ_REL) > 0)
    return;
  free(k->pub);
  free(k);
}

/* "KER1" + KEY_NAME, KEY_VERSION, KEY_TYPE items (PROTOCOL.md "Key reference") */
static int parse_ref(const unsigned char *p, size_t len, KE_KEY *k) {
  const unsigned char *v;
  size_t n;
  memset(k, 0, sizeof(*k));
  if (len < 4 || memcmp(p, "KER1", 4) != 0)
    return 0;
  p += 4;
  len -= 4;
  if (ke_item_find(p, len, KEYD_TAG_KEY_NAME, &v, &n) != 1 || n == 0 || n >= sizeof(k->name) ||
      memchr(v, '\0', n) != NULL)
    return 0;
  memcpy(k->name, v, n);
  if (ke_item_find(p, len, KEYD_TAG_KEY_TYPE, &v, &n) != 1 || n == 0 || n >= sizeof(k->type) ||
      memchr(v, '\0', n) != NULL)
    return 0;
  memcpy(k->type, v, n);
  if (!ke_item_u32(p, len, KEYD_TAG_KEY_VERSION, &k->version))
    k->version = 0;
  if (strcmp(k->type, "ec-p256") == 0 || strcmp(k->type, "ec-p384") == 0)
    k->kind = KE_KT_EC;
  else if (strncmp(k->type, "rsa-", 4) == 0)
    k->kind = KE_KT_RSA;
  return k->kind != 0;
}

int ke_ref_kind(const unsigned char *ref, size_t len) {
  KE_KEY k;
  return parse_ref(ref, len, &k) ? k.kind : 0;
}

int ke_key_items(KE_BUF *b, const KE_KEY *k) {
  unsigned char ver[4];
  ke_put32(ver, k->version);
  return ke_item_add(b, KEYD_TAG_KEY_NAME, k->name, strlen(k->name)) &&
         (k->version == 0 || ke_item_add(b, KEYD_TAG_KEY_VERSION, ver, 4));
}

/*
 * A pinned version's public key never changes: the cache keeps it, so loading a reference
 * again (a reload, another TLS context for a new ticket key) needs no keyd round trip and
 * works while keyd is down.
 */
void ke_pub_cache_init(KE_PUB_CACHE *c) {
  pthread_mutex_init(&c->lock, NULL);
  memset(c->entries, 0, sizeof(c->entries));
  c->next = 0;
}

void ke_pub_cache_clear(KE_PUB_CACHE *c) {
  unsigned i;
  for (i = 0; i < KE_PUB_CACHE_SIZE; i++) {
    ke_key_free(c->entries[i]);
    c->entries[i] = NULL;
  }
}

static KE_KEY *cache_get(KE_PUB_CACHE *c, const KE_KEY *want) {
  KE_KEY *hit = NULL;
  unsigned i;
  pthread_mutex_lock(&c->lock);
  for (i = 0; i < KE_PUB_CACHE_SIZE && hit == NULL; i++) {
    KE_KEY *e = c->entries[i];
    if (e != NULL && e->version == want->version && strcmp(e->name, want->name) == 0 &&
        strcmp(e->type, want->type) == 0)
      hit = ke_key_up_ref(e);
  }
  pthread_mutex_unlock(&c->lock);
  return hit;
}

static void cache_put(KE_PUB_CACHE *c, KE_KEY *k) {
  KE_KEY *old;
  pthread_mutex_lock(&c->lock);
  old = c->entries[c->next % KE_PUB_CACHE_SIZE];
  c->entries[c->next++ % KE_PUB_CACHE_SIZE] = ke_key_up_ref(k);
  pthread_mutex_unlock(&c->lock);
  ke_key_free(old);
}

/* Checks GET_PUBLIC_KEY's answer and keeps the public part in k; 0 with an error raised. */
static int take_public(KE_PROV *p, KE_KEY *k, const KE_BUF *resp) {
  const unsigned char *v = NULL, *e = NULL;
  size_t n = 0, elen = 0;
  int ok;
  if (ke_item_find(resp->p, resp->len, KEYD_TAG_KEY_TYPE, &v, &n) != 1 || n != strlen(k->type) ||
      memcmp(v, k->type, n) != 0) {
    KE_ERR(p, KE_R_KEY_MISMATCH, "keyd: key %s is not of type %s", k->name, k->type);
    return 0;
  }
  if (!ke_item_u32(resp->p, resp->len, KEYD_TAG_KEY_BITS, &k->bits))
    k->bits = 0;
  if (k->kind == KE_KT_EC)
    ok = k->bits == (strcmp(k->type, "ec-p256") == 0 ? 256u : 384u) &&
         ke_item_find(resp->p, resp->len, KEYD_TAG_EC_POINT, &v, &n) == 1 &&
         n == 1 + 2 * k->bits / 8 && v[0] == 4;
  else
    ok = k->bits >= 1024 && k->bits <= 8 * KE_MAX_PUB &&
         ke_item_find(resp->p, resp->len, KEYD_TAG_RSA_E, &e, &elen) == 1 && elen > 0 &&
         elen <= sizeof(k->e) && ke_item_find(resp->p, resp->len, KEYD_TAG_RSA_N, &v, &n) == 1 &&
         n == (k->bits + 7) / 8;
  if (!ok) {
    KE_ERR(p, KE_R_PROTOCOL, "keyd: malformed public key for %s in answer to GET_PUBLIC_KEY",
           k->name);
    return 0;
  }
  if ((k->pub = malloc(n)) == NULL) {
    KE_ERR(p, KE_R_NO_MEMORY, "keyedge: out of memory");
    return 0;
  }
  memcpy(k->pub, v, k->publen = n);
  if (e != NULL)
    memcpy(k->e, e, k->elen = elen);
  return 1;
}

KE_KEY *ke_key_fetch(KE_PROV *p, const unsigned char *ref, size_t len, int kind) {
  KE_KEY *k = calloc(1, sizeof(*k)), *hit;
  KE_BUF req = {0}, resp = {0};
  int ok = 0;

  if (k == NULL) {
    KE_ERR(p, KE_R_NO_MEMORY, "keyedge: out of memory");
    return NULL;
  }
  if (!parse_ref(ref, len, k) || k->kind != kind) {
    KE_ERR(p, KE_R_BAD_REF, "keyedge: not a usable key reference");
    free(k);
    return NULL;
  }
  k->prov = p;
  k->refs = 1;
  if (k->version != 0 && (hit = cache_get(&p->cache, k)) != NULL) {
    free(k);
    return hit;
  }
  if (!ke_key_items(&req, k))
    KE_ERR(p, KE_R_NO_MEMORY, "keyedge: out of memory");
  else if (ke_keyd_call(p, KEYD_OP_GET_PUBLIC_KEY, &req, &resp) && take_public(p, k, &resp))
    ok = 1;
  ke_buf_free(&req);
  ke_buf_free(&resp);
  if (!ok) {
    ke_key_free(k);
    return NULL;
  }
  if (k->version != 0)
    cache_put(&p->cache, k);
  return k;
}

/*
 * The reference our decoder hands over is the address of a key it built (decoder.c), as
 * OpenSSL's own providers do; OpenSSL passes it only to a KEYMGMT of the same provider.
 * Taking it clears the decoder's pointer, which then has nothing left to free. (A reference
 * that is not one, or was taken already, has no provider context to raise an error with.)
 */
static void *take_reference(const void *ref, size_t ref_sz, int kind) {
  KE_KEY *k;
  if (ref == NULL || ref_sz != sizeof(k) || (k = *(KE_KEY *const *)ref) == NULL)
    return NULL;
  if (k->kind != kind) {
    KE_ERR(k->prov, KE_R_KEY_MISMATCH, "keyedge: key %s is not of type %s", k->name,
           kind == KE_KT_EC ? "EC" : "RSA");
    return NULL;
  }
  *(KE_KEY **)ref = NULL;
  return k;
}

static void *ec_load(const void *ref, size_t sz) { return take_reference(ref, sz, KE_KT_EC); }
static void *rsa_load(const void *ref, size_t sz) { return take_reference(ref, sz, KE_KT_RSA); }
static void key_free(void *k) { ke_key_free(k); }

/* public part here, private part in keyd, domain parameters implied by the type */
static int key_has(const void *k, int selection) {
  (void)selection;
  return k != NULL;
}

static int key_security_bits(const KE_KEY *k) {
  if (k->kind == KE_KT_EC)
    return (int)k->bits / 2;
  return k->bits >= 15360  ? 256
         : k->bits >= 7680 ? 192
         : k->bits >= 4096 ? 152
         : k->bits >= 3072 ? 128
         : k->bits >= 2048 ? 112
                           : 80;
}

int ke_key_max_sig(const KE_KEY *k) {
  int content = 2 * (3 + (int)(k->bits + 7) / 8); /* DER SEQUENCE of two INTEGERs */
  if (k->kind == KE_KT_EC)
    return content + (content < 128 ? 2 : 3);
  return (int)(k->bits + 7) / 8;
}

static const char *ec_group(const KE_KEY *k) { return k->bits == 256 ? "prime256v1" : "secp384r1"; }

static int key_get_params(void *vk, OSSL_PARAM params[]) {
  KE_KEY *k = vk;
  OSSL_PARAM *p;
  int ec = k->kind == KE_KT_EC, ok = 1;
  for (p = params; p != NULL && p->key != NULL; p++) {
    const char *s = p->key;
    if (strcmp(s, OSSL_PKEY_PARAM_BITS) == 0)
      ok = ke_param_set_long(p, k->bits);
    else if (strcmp(s, OSSL_PKEY_PARAM_SECURITY_BITS) == 0)
      ok = ke_param_set_long(p, key_security_bits(k));
    else if (strcmp(s, OSSL_PKEY_PARAM_MAX_SIZE) == 0)
      ok = ke_param_set_long(p, ke_key_max_sig(k));
    else if (strcmp(s, OSSL_PKEY_PARAM_DEFAULT_DIGEST) == 0)
      ok = ke_param_set_bytes(p, OSSL_PARAM_UTF8_STRING, "SHA256", 6);
    else if (ec && strcmp(s, OSSL_PKEY_PARAM_GROUP_NAME) == 0)
      ok = ke_param_set_bytes(p, OSSL_PARAM_UTF8_STRING, ec_group(k), strlen(ec_group(k)));
    else if (ec && strcmp(s, OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT) == 0)
      ok = ke_param_set_bytes(p, OSSL_PARAM_UTF8_STRING, "uncompressed", 12);
    else if (ec && (strcmp(s, OSSL_PKEY_PARAM_PUB_KEY) == 0 ||
                    strcmp(s, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY) == 0))
      ok = ke_param_set_bytes(p, OSSL_PARAM_OCTET_STRING, k->pub, k->publen);
    else if (!ec && strcmp(s, OSSL_PKEY_PARAM_RSA_N) == 0)
      ok = ke_param_set_bn(p, k->pub, k->publen);
    else if (!ec && strcmp(s, OSSL_PKEY_PARAM_RSA_E) == 0)
      ok = ke_param_set_bn(p, k->e, k->elen);
    if (!ok) {
      KE_ERR(k->prov, KE_R_UNSUPPORTED, "keyedge: key parameter %s: wrong type or buffer too small",
             p->key);
      return 0;
    }
  }
  return 1;
}

#define COMMON_GETTABLE                                                                            \
  OSSL_PARAM_int(OSSL_PKEY_PARAM_BITS, NULL), OSSL_PARAM_int(OSSL_PKEY_PARAM_SECURITY_BITS, NULL), \
      OSSL_PARAM_int(OSSL_PKEY_PARAM_MAX_SIZE, NULL),                                              \
      OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_DEFAULT_DIGEST, NULL, 0)
#define EC_PUBLIC                                                                                  \
  OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0),                                     \
      OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0)
#define RSA_PUBLIC                                                                                 \
  OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, NULL, 0), OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, NULL, 0)

static const OSSL_PARAM ec_gettable[] = {
    COMMON_GETTABLE, EC_PUBLIC,
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, NULL, 0),
    OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, NULL, 0), OSSL_PARAM_END};
static const OSSL_PARAM rsa_gettable[] = {COMMON_GETTABLE, RSA_PUBLIC, OSSL_PARAM_END};
static const OSSL_PARAM ec_exportable[] = {EC_PUBLIC, OSSL_PARAM_END};
static const OSSL_PARAM rsa_exportable[] = {RSA_PUBLIC, OSSL_PARAM_END};

static const OSSL_PARAM *ec_gettable_params(void *provctx) {
  (void)provctx;
  return ec_gettable;
}
static const OSSL_PARAM *rsa_gettable_params(void *provctx) {
  (void)provctx;
  return rsa_gettable;
}
static const OSSL_PARAM *ec_export_types(int sel) {
  return (sel & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) ? NULL : ec_exportable;
}
static const OSSL_PARAM *rsa_export_types(int sel) {
  return (sel & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) ? NULL : rsa_exportable;
}

/*
 * Export the public part only. Refusing a selection with the private key matters: to sign,
 * libcrypto first tries to move the key into the default provider, and must fail there to
 * fall back to our SIGNATURE. That refusal is expected, so it raises no error.
 */
static int key_export(void *vk, int selection, OSSL_CALLBACK *cb, void *cbarg) {
  KE_KEY *k = vk;
  OSSL_PARAM out[3] = {OSSL_PARAM_END, OSSL_PARAM_END, OSSL_PARAM_END};
  unsigned char n_le[KE_MAX_PUB], e_le[16];
  int i = 0;

  if (k == NULL || (selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0)
    return 0;
  if (k->kind == KE_KT_EC) {
    if (selection & OSSL_KEYMGMT_SELECT_DOMAIN_PARAMETERS)
      out[i++] = (OSSL_PARAM)OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)ec_group(k),
                                                    strlen(ec_group(k)));
    if (selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY)
      out[i++] = (OSSL_PARAM)OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, k->pub, k->publen);
  } else if (selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) {
    out[0] = (OSSL_PARAM)OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, n_le, k->publen);
    out[1] = (OSSL_PARAM)OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, e_le, k->elen);
    if (!ke_param_set_bn(&out[0], k->pub, k->publen) || !ke_param_set_bn(&out[1], k->e, k->elen))
      return 0;
  }
  return cb(out, cbarg);
}

static const char *ec_operation_name(int op) { return op == OSSL_OP_SIGNATURE ? "ECDSA" : NULL; }
static const char *rsa_operation_name(int op) { return op == OSSL_OP_SIGNATURE ? "RSA" : NULL; }

#define KEYMGMT_TABLE(pfx)                                                                         \
  const OSSL_DISPATCH ke_##pfx##_keymgmt[] = {                                                     \
      KE_DISPATCH(OSSL_FUNC_KEYMGMT_LOAD, keymgmt_load, pfx##_load),                               \
      KE_DISPATCH(OSSL_FUNC_KEYMGMT_FREE, keymgmt_free, key_free),                                 \
      KE_DISPATCH(OSSL_FUNC_KEYMGMT_HAS, keymgmt_has, key_has),                                    \
      KE_DISPATCH(OSSL_FUNC_KEYMGMT_GET_PARAMS, keymgmt_get_params, key_get_params),               \
      KE_DISPATCH(OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, keymgmt_gettable_params,                      \
                  pfx##_gettable_params),                                                          \
      KE_DISPATCH(OSSL_FUNC_KEYMGMT_EXPORT, keymgmt_export, key_export),                           \
      KE_DISPATCH(OSSL_FUNC_KEYMGMT_EXPORT_TYPES, keymgmt_export_types, pfx##_export_types),       \
      KE_DISPATCH(OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, keymgmt_query_operation_name,            \
                  pfx##_operation_name),                                                           \
      {0, NULL}}
KEYMGMT_TABLE(ec);
KEYMGMT_TABLE(rsa);
