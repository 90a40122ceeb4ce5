/*
 * signature.c: ECDSA and RSA signatures made by keyd. The whole message goes to keyd (it
 * never signs a bare digest); digest and padding pick keyd's ALGORITHM code. The digests are
 * every one OpenSSL's default provider negotiates in TLS for these keys: SHA-224 (TLS 1.2
 * only), SHA-256, SHA-384, SHA-512. SHA-1 is refused (keyd never offers it).
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/core_names.h>
#include <openssl/params.h> /* only the OSSL_PARAM_* initialiser macros */

#include "bridge.h"

static OSSL_FUNC_signature_newctx_fn sig_newctx;
static OSSL_FUNC_signature_freectx_fn sig_freectx;
static OSSL_FUNC_signature_dupctx_fn sig_dupctx;
static OSSL_FUNC_signature_digest_sign_init_fn sig_init;
static OSSL_FUNC_signature_digest_sign_update_fn sig_update;
static OSSL_FUNC_signature_digest_sign_final_fn sig_final;
static OSSL_FUNC_signature_digest_sign_fn sig_sign;
static OSSL_FUNC_signature_set_ctx_params_fn sig_set_ctx_params;
static OSSL_FUNC_signature_settable_ctx_params_fn sig_settable_ctx_params;

/* keyd's ALGORITHM codes per digest (PROTOCOL.md "Signature algorithms"); 0: keyd has none */
typedef struct {
  const char *names[4]; /* OpenSSL's names and the OID */
  int size;             /* bytes */
  unsigned ecdsa, pkcs1, pss;
} DIGEST;

static const DIGEST digests[] = {
    {{"SHA2-224", "SHA-224", "SHA224", "2.16.840.1.101.3.4.2.4"}, 28, 0x0004, 0x0014, 0},
    {{"SHA2-256", "SHA-256", "SHA256", "2.16.840.1.101.3.4.2.1"}, 32, 0x0001, 0x0011, 0x0021},
    {{"SHA2-384", "SHA-384", "SHA384", "2.16.840.1.101.3.4.2.2"}, 48, 0x0002, 0x0012, 0x0022},
    {{"SHA2-512", "SHA-512", "SHA512", "2.16.840.1.101.3.4.2.3"}, 64, 0x0003, 0x0013, 0x0023},
};
#define DEFAULT_DIGEST (&digests[1])

static const DIGEST *find_digest(const char *name) {
  size_t i, j;
  for (i = 0; name != NULL && i < sizeof(digests) / sizeof(digests[0]); i++)
    for (j = 0; j < 4; j++)
      if (strcasecmp(name, digests[i].names[j]) == 0)
        return &digests[i];
  return NULL;
}

/* room for the other items of a SIGN request in one frame */
#define MAX_MESSAGE (KEYD_MAX_FRAME - 4096)

enum { PAD_PKCS1 = 1, PAD_PSS = 6 }; /* RSA_PKCS1_PADDING, RSA_PKCS1_PSS_PADDING */
/* OpenSSL's RSA_PSS_SALTLEN_*: what "digest", "auto", "max", "auto-digestmax" stand for */
enum { SALT_DIGEST = -1, SALT_AUTO = -2, SALT_MAX = -3, SALT_AUTO_DIGESTMAX = -4 };

typedef struct {
  KE_PROV *prov;
  KE_KEY *key;             /* one reference held */
  const DIGEST *md, *mgf1; /* mgf1 NULL: the message digest */
  int pad;
  long saltlen;
  KE_BUF msg;
} SIGCTX;

static void *sig_newctx(void *provctx, const char *propq) {
  SIGCTX *c = calloc(1, sizeof(*c));
  (void)propq;
  if (c == NULL) {
    KE_ERR(provctx, KE_R_NO_MEMORY, "keyedge: out of memory");
    return NULL;
  }
  c->prov = provctx;
  return c;
}

static void sig_freectx(void *vctx) {
  SIGCTX *c = vctx;
  if (c == NULL)
    return;
  ke_key_free(c->key);
  ke_buf_free(&c->msg);
  free(c);
}

/* The copy holds its own reference to the key: freeing either context leaves the other whole. */
static void *sig_dupctx(void *vctx) {
  SIGCTX *c = vctx, *d = malloc(sizeof(*d));
  if (d == NULL) {
    KE_ERR(c->prov, KE_R_NO_MEMORY, "keyedge: out of memory");
    return NULL;
  }
  *d = *c;
  memset(&d->msg, 0, sizeof(d->msg));
  if (!ke_buf_add(&d->msg, c->msg.p, c->msg.len)) {
    KE_ERR(c->prov, KE_R_NO_MEMORY, "keyedge: out of memory");
    free(d);
    return NULL;
  }
  ke_key_up_ref(d->key);
  return d;
}

static int set_digest(SIGCTX *c, const DIGEST **slot, const OSSL_PARAM *p, const char *what) {
  char name[64];
  const DIGEST *md;
  if (!ke_param_get_str(p, name, sizeof(name))) {
    KE_ERR(c->prov, KE_R_UNSUPPORTED, "keyedge: %s must be a digest name", what);
    return 0;
  }
  if ((md = find_digest(name)) == NULL) {
    KE_ERR(c->prov, KE_R_UNSUPPORTED,
           "keyedge: %s %s not supported (keyd signs with SHA-224, -256, -384, -512)", what, name);
    return 0;
  }
  *slot = md;
  return 1;
}

static int set_pad(SIGCTX *c, const OSSL_PARAM *p) {
  char s[32];
  long v;
  if (ke_param_get_str(p, s, sizeof(s)))
    v = strcmp(s, OSSL_PKEY_RSA_PAD_MODE_PKCSV15) == 0 ? PAD_PKCS1
        : strcmp(s, OSSL_PKEY_RSA_PAD_MODE_PSS) == 0   ? PAD_PSS
                                                       : 0;
  else if (!ke_param_get_long(p, &v))
    v = 0;
  if (v != PAD_PKCS1 && v != PAD_PSS) {
    KE_ERR(c->prov, KE_R_UNSUPPORTED, "keyedge: only PKCS#1 v1.5 and PSS padding are supported");
    return 0;
  }
  c->pad = (int)v;
  return 1;
}

/* "digest", "max", "auto", "auto-digestmax", a number, or the same as an integer */
static int set_saltlen(SIGCTX *c, const OSSL_PARAM *p) {
  static const struct {
    const char *name;
    long v;
  } named[] = {{OSSL_PKEY_RSA_PSS_SALT_LEN_DIGEST, SALT_DIGEST},
               {OSSL_PKEY_RSA_PSS_SALT_LEN_MAX, SALT_MAX},
               {OSSL_PKEY_RSA_PSS_SALT_LEN_AUTO, SALT_AUTO},
               {"auto-digestmax", SALT_AUTO_DIGESTMAX}};
  char s[32], *end;
  size_t i;
  long v;
  if (ke_param_get_str(p, s, sizeof(s))) {
    for (i = 0; i < sizeof(named) / sizeof(named[0]); i++)
      if (strcmp(s, named[i].name) == 0)
        break;
    if (i < sizeof(named) / sizeof(named[0]))
      v = named[i].v;
    else if ((v = strtol(s, &end, 10)) < 0 || end == s || *end != '\0')
      v = -100;
  } else if (!ke_param_get_long(p, &v)) {
    v = -100;
  }
  if (v < SALT_AUTO_DIGESTMAX || v > 65536) {
    KE_ERR(c->prov, KE_R_UNSUPPORTED, "keyedge: bad PSS salt length");
    return 0;
  }
  c->saltlen = v;
  return 1;
}

/* padding and salt length arrive as integers or as strings, depending on the caller */
static int sig_set_ctx_params(void *vctx, const OSSL_PARAM params[]) {
  SIGCTX *c = vctx;
  const OSSL_PARAM *p;
  if ((p = ke_param_find(params, OSSL_SIGNATURE_PARAM_DIGEST)) != NULL &&
      !set_digest(c, &c->md, p, "digest"))
    return 0;
  if ((p = ke_param_find(params, OSSL_SIGNATURE_PARAM_MGF1_DIGEST)) != NULL &&
      !set_digest(c, &c->mgf1, p, "MGF1 digest"))
    return 0;
  if ((p = ke_param_find(params, OSSL_SIGNATURE_PARAM_PAD_MODE)) != NULL && !set_pad(c, p))
    return 0;
  if ((p = ke_param_find(params, OSSL_SIGNATURE_PARAM_PSS_SALTLEN)) != NULL && !set_saltlen(c, p))
    return 0;
  return 1;
}

static const OSSL_PARAM sig_settable[] = {
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PROPERTIES, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, NULL, 0),
    OSSL_PARAM_END};

static const OSSL_PARAM *sig_settable_ctx_params(void *vctx, void *provctx) {
  (void)vctx;
  (void)provctx;
  return sig_settable;
}

static int sig_init(void *vctx, const char *mdname, void *provkey, const OSSL_PARAM params[]) {
  SIGCTX *c = vctx;
  if (provkey != NULL) {
    ke_key_free(c->key);
    c->key = ke_key_up_ref(provkey);
  }
  if (c->key == NULL) {
    KE_ERR(c->prov, KE_R_BAD_REF, "keyedge: no key to sign with");
    return 0;
  }
  c->md = DEFAULT_DIGEST;
  c->mgf1 = NULL;
  c->pad = c->key->kind == KE_KT_RSA ? PAD_PKCS1 : 0;
  c->saltlen = SALT_DIGEST; /* this provider's default: the only salt keyd uses */
  c->msg.len = 0;
  if (mdname != NULL && mdname[0] != '\0') {
    const DIGEST *md = find_digest(mdname);
    if (md == NULL) {
      KE_ERR(c->prov, KE_R_UNSUPPORTED,
             "keyedge: digest %.64s not supported (keyd signs with SHA-224, -256, -384, -512)",
             mdname);
      return 0;
    }
    c->md = md;
  }
  return sig_set_ctx_params(c, params);
}

/*
 * keyd's ALGORITHM code for this context, or 0 with an error raised. keyd's PSS is MGF1 with
 * the message digest and a salt as long as the digest: "max" and "auto" (a salt as long as the
 * key allows) would give another signature, so they are refused rather than quietly changed.
 */
static unsigned sig_algorithm(const SIGCTX *c) {
  const DIGEST *md = c->md;
  int em = (int)(c->key->bits + 6) / 8; /* EMSA-PSS encoded message length */
  unsigned code;
  if (c->key->kind == KE_KT_EC)
    code = md->ecdsa;
  else if (c->pad == PAD_PKCS1)
    code = md->pkcs1;
  else
    code = md->pss;
  if (code == 0) {
    KE_ERR(c->prov, KE_R_UNSUPPORTED, "keyedge: keyd has no %s signature with %s",
           c->key->kind == KE_KT_EC ? "ECDSA"
           : c->pad == PAD_PKCS1    ? "RSA PKCS#1"
                                    : "RSA-PSS",
           md->names[1]);
    return 0;
  }
  if (c->key->kind == KE_KT_EC || c->pad == PAD_PKCS1)
    return code;
  if (c->mgf1 != NULL && c->mgf1 != md) {
    KE_ERR(c->prov, KE_R_UNSUPPORTED, "keyedge: keyd signs RSA-PSS only with MGF1 of %s",
           md->names[1]);
    return 0;
  }
  /* auto-digestmax is the digest length whenever the key leaves room for it, as ours do */
  if (c->saltlen == SALT_DIGEST || c->saltlen == md->size ||
      (c->saltlen == SALT_AUTO_DIGESTMAX && em >= 2 * md->size + 2))
    return code;
  KE_ERR(c->prov, KE_R_UNSUPPORTED,
         "keyedge: keyd signs RSA-PSS with a salt of the digest length (%d bytes), not %s%ld",
         md->size, c->saltlen == SALT_MAX || c->saltlen == SALT_AUTO ? "the maximum, " : "",
         c->saltlen == SALT_MAX || c->saltlen == SALT_AUTO ? (long)(em - md->size - 2)
                                                           : c->saltlen);
  return 0;
}

static int sig_sign(void *vctx, unsigned char *sig, size_t *siglen, size_t sigsize,
                    const unsigned char *tbs, size_t tbslen) {
  SIGCTX *c = vctx;
  KE_BUF req = {0}, resp = {0};
  const unsigned char *v;
  size_t n;
  unsigned alg;
  int ok = 0;

  if (c->key == NULL) {
    KE_ERR(c->prov, KE_R_BAD_REF, "keyedge: no key to sign with");
    return 0;
  }
  if (sig == NULL) { /* size query: no keyd call */
    *siglen = (size_t)ke_key_max_sig(c->key);
    return 1;
  }
  if ((alg = sig_algorithm(c)) == 0)
    return 0;
  if (tbslen > MAX_MESSAGE) {
    KE_ERR(c->prov, KE_R_UNSUPPORTED, "keyedge: message over %d bytes, too large for keyd",
           MAX_MESSAGE);
    return 0;
  }
  if (!ke_key_items(&req, c->key) || !ke_item_add_u16(&req, KEYD_TAG_ALGORITHM, alg) ||
      !ke_item_add(&req, KEYD_TAG_MESSAGE, tbs, tbslen)) {
    KE_ERR(c->prov, KE_R_NO_MEMORY, "keyedge: out of memory");
  } else if (ke_keyd_call(c->prov, KEYD_OP_SIGN, &req, &resp)) {
    if (ke_item_find(resp.p, resp.len, KEYD_TAG_SIGNATURE, &v, &n) != 1 || n == 0 || n > sigsize) {
      KE_ERR(c->prov, KE_R_PROTOCOL, "keyd: answer to SIGN without a signature that fits %zu bytes",
             sigsize);
    } else {
      memcpy(sig, v, n);
      *siglen = n;
      ok = 1;
    }
  }
  ke_buf_free(&req);
  ke_buf_free(&resp);
  return ok;
}

static int sig_update(void *vctx, const unsigned char *data, size_t len) {
  SIGCTX *c = vctx;
  if (len > MAX_MESSAGE - c->msg.len) {
    KE_ERR(c->prov, KE_R_UNSUPPORTED, "keyedge: message over %d bytes, too large for keyd",
           MAX_MESSAGE);
    return 0;
  }
  if (!ke_buf_add(&c->msg, data, len)) {
    KE_ERR(c->prov, KE_R_NO_MEMORY, "keyedge: out of memory");
    return 0;
  }
  return 1;
}

static int sig_final(void *vctx, unsigned char *sig, size_t *siglen, size_t sigsize) {
  SIGCTX *c = vctx;
  return sig_sign(c, sig, siglen, sigsize, c->msg.p, c->msg.len);
}

const OSSL_DISPATCH ke_signature[] = {
    KE_DISPATCH(OSSL_FUNC_SIGNATURE_NEWCTX, signature_newctx, sig_newctx),
    KE_DISPATCH(OSSL_FUNC_SIGNATURE_FREECTX, signature_freectx, sig_freectx),
    KE_DISPATCH(OSSL_FUNC_SIGNATURE_DUPCTX, signature_dupctx, sig_dupctx),
    KE_DISPATCH(OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, signature_digest_sign_init, sig_init),
    KE_DISPATCH(OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE, signature_digest_sign_update, sig_update),
    KE_DISPATCH(OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL, signature_digest_sign_final, sig_final),
    KE_DISPATCH(OSSL_FUNC_SIGNATURE_DIGEST_SIGN, signature_digest_sign, sig_sign),
    KE_DISPATCH(OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS, signature_set_ctx_params, sig_set_ctx_params),
    KE_DISPATCH(OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, signature_settable_ctx_params,
                sig_settable_ctx_params),
    {0, NULL}};
