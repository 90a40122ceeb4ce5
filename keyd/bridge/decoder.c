/*
 * decoder.c: PEM "KEYEDGE KEY REFERENCE" -> DER structure "keyedge" -> a key object. The
 * second stage builds the key (one GET_PUBLIC_KEY, or the cache) and hands OpenSSL its
 * address as the object reference, which our KEYMGMT's load takes over (keymgmt.c).
 * Input that is not ours is "not mine" (return 1 without a callback): other decoders get
 * their turn, and that raises no error.
 */
#define _GNU_SOURCE /* memmem */
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/core_object.h>
#include <openssl/params.h> /* only the OSSL_PARAM_* initialiser macros */

#include "bridge.h"

static OSSL_FUNC_decoder_newctx_fn dec_newctx;
static OSSL_FUNC_decoder_freectx_fn dec_freectx;
static OSSL_FUNC_decoder_decode_fn pem_decode, ec_decode, rsa_decode;

static const char PEM_BEGIN[] = "-----BEGIN KEYEDGE KEY REFERENCE-----";
static const char PEM_END[] = "-----END KEYEDGE KEY REFERENCE-----";

static void *dec_newctx(void *provctx) { return provctx; }
static void dec_freectx(void *ctx) { (void)ctx; }

/* read everything from a core BIO, at most max bytes; 0 if there is more, or no BIO reader */
static int read_bio(const KE_PROV *p, KE_BUF *b, OSSL_CORE_BIO *cin, size_t max) {
  unsigned char chunk[1024];
  size_t n = 0;
  if (p->bio_read_ex == NULL)
    return 0;
  while (p->bio_read_ex(cin, chunk, sizeof(chunk), &n) && n > 0)
    if (n > max - b->len || !ke_buf_add(b, chunk, n))
      return 0;
  return 1;
}

/* Finds our PEM block in text and base64-decodes its body into out. */
static int pem_body(const KE_BUF *text, KE_BUF *out) {
  static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const char *b, *e, *x;
  uint32_t acc = 0;
  int bits = 0;
  if (text->len == 0 || (b = memmem(text->p, text->len, PEM_BEGIN, sizeof(PEM_BEGIN) - 1)) == NULL)
    return 0;
  b += sizeof(PEM_BEGIN) - 1;
  e = memmem(b, text->len - (size_t)(b - (const char *)text->p), PEM_END, sizeof(PEM_END) - 1);
  if (e == NULL)
    return 0;
  for (; b < e; b++) {
    unsigned char byte;
    if (*b == '=' || *b == ' ' || *b == '\r' || *b == '\n' || *b == '\t')
      continue;
    if (*b == '\0' || (x = strchr(b64, *b)) == NULL)
      return 0;
    acc = acc << 6 | (uint32_t)(x - b64);
    if ((bits += 6) >= 8) {
      bits -= 8;
      byte = (unsigned char)(acc >> bits);
      if (!ke_buf_add(out, &byte, 1))
        return 0;
    }
  }
  return out->len >= 4 && memcmp(out->p, "KER1", 4) == 0;
}

static int pem_decode(void *ctx, OSSL_CORE_BIO *cin, int selection, OSSL_CALLBACK *data_cb,
                      void *data_cbarg, OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg) {
  KE_BUF text = {0}, der = {0};
  int ret = 1;
  (void)selection;
  (void)pw_cb;
  (void)pw_cbarg;
  if (read_bio(ctx, &text, cin, KE_MAX_REF) && pem_body(&text, &der)) {
    OSSL_PARAM out[] = {OSSL_PARAM_octet_string(OSSL_OBJECT_PARAM_DATA, der.p, der.len),
                        OSSL_PARAM_utf8_string(OSSL_OBJECT_PARAM_DATA_STRUCTURE,
                                               (char *)KE_STRUCTURE, sizeof(KE_STRUCTURE) - 1),
                        OSSL_PARAM_END};
    ret = data_cb(out, data_cbarg);
  }
  ke_buf_free(&text);
  ke_buf_free(&der);
  return ret;
}

/*
 * A reference of the decoder's kind becomes a key object; keyd unreachable or refusing is a
 * real failure (return 0, error raised), so OpenSSL stops and reports it.
 */
static int ref_decode(KE_PROV *p, OSSL_CORE_BIO *cin, int kind, OSSL_CALLBACK *data_cb,
                      void *data_cbarg) {
  KE_BUF der = {0};
  KE_KEY *key = NULL;
  int ret = 1, type = OSSL_OBJECT_PKEY;
  if (read_bio(p, &der, cin, KE_MAX_REF) && ke_ref_kind(der.p, der.len) == kind) {
    if ((key = ke_key_fetch(p, der.p, der.len, kind)) == NULL) {
      ret = 0;
    } else {
      const char *dt = kind == KE_KT_EC ? "EC" : "RSA";
      OSSL_PARAM out[] = {
          OSSL_PARAM_int(OSSL_OBJECT_PARAM_TYPE, &type),
          OSSL_PARAM_utf8_string(OSSL_OBJECT_PARAM_DATA_TYPE, (char *)dt, strlen(dt)),
          OSSL_PARAM_octet_string(OSSL_OBJECT_PARAM_REFERENCE, &key, sizeof(key)), OSSL_PARAM_END};
      ret = data_cb(out, data_cbarg);
      ke_key_free(key); /* NULL if our KEYMGMT took it */
    }
  }
  ke_buf_free(&der);
  return ret;
}

static int ec_decode(void *ctx, OSSL_CORE_BIO *cin, int selection, OSSL_CALLBACK *cb, void *cbarg,
                     OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg) {
  (void)selection;
  (void)pw_cb;
  (void)pw_cbarg;
  return ref_decode(ctx, cin, KE_KT_EC, cb, cbarg);
}

static int rsa_decode(void *ctx, OSSL_CORE_BIO *cin, int selection, OSSL_CALLBACK *cb, void *cbarg,
                      OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg) {
  (void)selection;
  (void)pw_cb;
  (void)pw_cbarg;
  return ref_decode(ctx, cin, KE_KT_RSA, cb, cbarg);
}

#define DECODER_TABLE(name, fn)                                                                    \
  const OSSL_DISPATCH name[] = {                                                                   \
      KE_DISPATCH(OSSL_FUNC_DECODER_NEWCTX, decoder_newctx, dec_newctx),                           \
      KE_DISPATCH(OSSL_FUNC_DECODER_FREECTX, decoder_freectx, dec_freectx),                        \
      KE_DISPATCH(OSSL_FUNC_DECODER_DECODE, decoder_decode, fn),                                   \
      {0, NULL}}
DECODER_TABLE(ke_pem_decoder, pem_decode);
DECODER_TABLE(ke_ec_decoder, ec_decode);
DECODER_TABLE(ke_rsa_decoder, rsa_decode);
