/*
 * bridge.h: what the bridge's files share (internal, not an API). The provider context
 * holds every piece of provider state; the only process-wide state is the fork registry
 * in provider.c, because a fork concerns every provider instance at once.
 */
#ifndef KEYEDGE_BRIDGE_H
#define KEYEDGE_BRIDGE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/core.h>
#include <openssl/core_dispatch.h>

#include "keyd_protocol.h"

#define KE_STRUCTURE "keyedge" /* DER structure name of a key reference */
#define KE_MAX_REF 65536       /* biggest key reference PEM or DER read */
#define KE_MAX_PUB 1024        /* biggest RSA modulus (8192 bits) or EC point kept */

/*
 * A dispatch table entry. The ternary makes the compiler check that fn has the type
 * OSSL_FUNC_<name>_fn (a mismatch is a "pointer type mismatch" error under -Werror)
 * before the cast to the generic pointer OSSL_DISPATCH stores.
 */
#define KE_DISPATCH(id, name, fn)                                                                  \
  { id, (void (*)(void))(1 ? (fn) : (OSSL_FUNC_##name##_fn *)NULL) }

/* Reason codes on the OpenSSL error stack (error:408000NN:keyedge::…); never renumbered. */
enum ke_reason {
  KE_R_TIMEOUT = 1,
  KE_R_REFUSED,
  KE_R_NO_SOCKET,
  KE_R_IO,
  KE_R_PROTOCOL,
  KE_R_CONFIG,
  KE_R_SECRET,
  KE_R_BAD_REF,
  KE_R_UNSUPPORTED,
  KE_R_KEY_MISMATCH,
  KE_R_CIRCUIT_OPEN,
  KE_R_KEYD_UNKNOWN, /* an ERROR_CODE this bridge has no name for */
  KE_R_NO_MEMORY,
  KE_R_KEYD = 100 /* KE_R_KEYD + n: keyd answered ERROR_CODE n */
};

/* ---- byte buffers (wire.c) ---- */

typedef struct {
  unsigned char *p;
  size_t len, cap;
} KE_BUF;

int ke_buf_add(KE_BUF *b, const void *data, size_t n); /* data NULL: reserve n bytes */
void ke_buf_free(KE_BUF *b);                           /* wipes, then frees */

/* ---- wire format (wire.c): pure functions over bytes ---- */

void ke_put32(unsigned char *d, uint32_t v);
uint32_t ke_get32(const unsigned char *d);
int ke_item_add(KE_BUF *b, int tag, const void *v, size_t n);
int ke_item_add_u16(KE_BUF *b, int tag, unsigned v);
/* First item with this tag: 1 found, 0 absent, -1 malformed item list. */
int ke_item_find(const unsigned char *p, size_t len, int tag, const unsigned char **val,
                 size_t *vlen);
int ke_item_u32(const unsigned char *p, size_t len, int tag, uint32_t *out);

/* A frame header as read; payload_len is the byte count after the 12-byte header. */
typedef struct {
  uint32_t payload_len;
  int op;
  uint32_t id;
} KE_HEAD;

enum ke_head_status {
  KE_HEAD_OK = 0,
  KE_HEAD_SHORT,
  KE_HEAD_TOO_LARGE,
  KE_HEAD_VERSION,
  KE_HEAD_FLAGS
};

/* Fills h (KEYD_HEADER_SIZE bytes); 0 if the payload cannot fit a frame. */
int ke_frame_head(unsigned char *h, int op, uint32_t id, size_t payload_len);
enum ke_head_status ke_frame_parse(const unsigned char *h, KE_HEAD *out);
const char *ke_head_status_text(enum ke_head_status s);

/* keyd's name and meaning of an ERROR_CODE (keyd_protocol.h), or NULL if this bridge has none. */
const char *ke_keyd_error_name(unsigned code);
const char *ke_keyd_error_meaning(unsigned code);
size_t ke_keyd_error_count(void);
unsigned ke_keyd_error_code_at(size_t i);

/* ---- circuit breaker (breaker.c); each function takes the breaker's own lock ---- */

typedef struct {
  pthread_mutex_t lock;
  int state;            /* KE_BREAKER_* */
  long long open_until; /* monotonic ms */
  long interval_ms;     /* the current open interval; 0 when closed */
  long min_ms, max_ms;  /* min_ms 0: disabled */
  char why[160];        /* the failure that opened it */
} KE_BREAKER;

enum { KE_BREAKER_CLOSED = 0, KE_BREAKER_OPEN, KE_BREAKER_PROBING };

void ke_breaker_init(KE_BREAKER *b, long min_ms, long max_ms);
/* Why a call was rejected: the failure that opened the circuit, and when the next try is. */
typedef struct {
  char why[160];
  long wait_ms, interval_ms;
} KE_BREAKER_STATE;

/* 1 if a call must fail fast now (*st says why); no state change. */
int ke_breaker_rejects(KE_BREAKER *b, long long now, KE_BREAKER_STATE *st);
/* Under the connection lock: 1 admits this call (a probe if the interval has passed), 0 rejects. */
int ke_breaker_admit(KE_BREAKER *b, long long now, KE_BREAKER_STATE *st);
/* The admitted call's outcome: a transport failure opens (or re-opens, longer) the circuit. */
void ke_breaker_record(KE_BREAKER *b, long long now, int failed, const char *why);

/* ---- provider context ---- */

typedef struct ke_conn {
  pthread_mutex_t lock; /* one request at a time on the connection */
  int fd;
  pid_t pid; /* the process that opened fd: a forked child never uses it */
  uint32_t next_id;
} KE_CONN;

#define KE_PUB_CACHE_SIZE 64

struct ke_key;
typedef struct {
  pthread_mutex_t lock;
  struct ke_key *entries[KE_PUB_CACHE_SIZE];
  unsigned next;
} KE_PUB_CACHE;

typedef struct ke_prov {
  const OSSL_CORE_HANDLE *handle;
  OSSL_FUNC_core_new_error_fn *new_error;
  OSSL_FUNC_core_set_error_debug_fn *set_error_debug;
  OSSL_FUNC_core_vset_error_fn *vset_error;
  OSSL_FUNC_BIO_read_ex_fn *bio_read_ex;

  char socket[108], client[256], secret_file[4096];
  int timeout_ms;

  KE_CONN conn;
  KE_BREAKER breaker;
  KE_PUB_CACHE cache;

  /* reason strings: OpenSSL keeps pointers to them for the provider's lifetime */
  OSSL_ITEM *reasons;
  char *reason_text;

  struct ke_prov *next; /* the fork registry (provider.c) */
} KE_PROV;

/* ---- errors (provider.c) ---- */

__attribute__((format(printf, 6, 7))) void ke_raise(const KE_PROV *p, const char *file, int line,
                                                    const char *func, int reason, const char *fmt,
                                                    ...);
#define KE_ERR(p, reason, ...) ke_raise((p), __FILE__, __LINE__, __func__, (reason), __VA_ARGS__)

/* ---- transport (transport.c) ---- */

void ke_conn_init(KE_CONN *c);
void ke_conn_close(KE_CONN *c);
/* One request and its answer, bounded by timeout_ms. 1 with resp filled, or 0 with an error raised.
 */
int ke_keyd_call(KE_PROV *p, int op, const KE_BUF *payload, KE_BUF *resp);
long long ke_now_ms(void);

/* ---- keys (keymgmt.c) ---- */

enum { KE_KT_EC = 1, KE_KT_RSA = 2 };

typedef struct ke_key {
  KE_PROV *prov;
  int refs;
  int kind;
  char name[65], type[16];
  uint32_t version, bits;
  unsigned char *pub; /* EC point (0x04||X||Y) or RSA modulus */
  size_t publen, elen;
  unsigned char e[16];
} KE_KEY;

/* The kind a reference names (KE_KT_*), or 0 if it is not a usable reference. */
int ke_ref_kind(const unsigned char *ref, size_t len);
/* The key a reference names, its public part fetched from keyd (or the cache); NULL with an error.
 */
KE_KEY *ke_key_fetch(KE_PROV *p, const unsigned char *ref, size_t len, int kind);
KE_KEY *ke_key_up_ref(KE_KEY *k);
void ke_key_free(KE_KEY *k);
int ke_key_max_sig(const KE_KEY *k);
int ke_key_items(KE_BUF *b, const KE_KEY *k);
void ke_pub_cache_init(KE_PUB_CACHE *c);
void ke_pub_cache_clear(KE_PUB_CACHE *c);

/* ---- OSSL_PARAM by hand (params.c): the bridge links no libcrypto ---- */

const OSSL_PARAM *ke_param_find(const OSSL_PARAM *p, const char *key);
int ke_param_get_long(const OSSL_PARAM *p, long *out);
int ke_param_get_str(const OSSL_PARAM *p, char *buf, size_t buflen);
int ke_param_set_long(OSSL_PARAM *p, long v);
int ke_param_set_bytes(OSSL_PARAM *p, unsigned int type, const void *v, size_t len);
int ke_param_set_bn(OSSL_PARAM *p, const unsigned char *be, size_t len);

/* ---- dispatch tables of each operation ---- */

extern const OSSL_DISPATCH ke_ec_keymgmt[], ke_rsa_keymgmt[];
extern const OSSL_DISPATCH ke_signature[];
extern const OSSL_DISPATCH ke_pem_decoder[], ke_ec_decoder[], ke_rsa_decoder[];

#endif
