/*
 * hostile-keyd.c: the bridge against a keyd that misbehaves, built with AddressSanitizer and
 * UndefinedBehaviorSanitizer by hostile-keyd.test.ts. This program plays the OpenSSL core (it
 * calls OSSL_provider_init with its own core dispatch table and drives the provider only
 * through the tables it returns) and runs a fake keyd on a unix socket in a thread: short and
 * truncated answers, wrong request ids, oversized and near-2^32 lengths, silence, garbage,
 * ERROR frames with every code, closes in the middle of a frame. Every failure must come back
 * as a clean OpenSSL error with the expected reason; the sanitizers report anything else.
 * Output is TAP; argv[1] is a private directory for the socket and the secret file.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/core_object.h>
#include <openssl/params.h>

#include "bridge.h" /* reason codes and wire constants */

/* ------------------------------------------------------------------ TAP */

static int tests, failures;

__attribute__((format(printf, 2, 3))) static int check(int ok, const char *fmt, ...) {
  va_list ap;
  printf("%s %d - ", ok ? "ok" : "not ok", ++tests);
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  printf("\n");
  fflush(stdout);
  if (!ok)
    failures++;
  return ok;
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void pause_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}

/* ------------------------------------------------------------------ fake core */

static struct {
  int count;       /* errors raised since err_reset() */
  uint32_t reason; /* the last one's */
  char data[512];
} err;

static void err_reset(void) {
  err.count = 0;
  err.reason = 0;
  err.data[0] = '\0';
}

static const char *cfg_socket, *cfg_secret, *cfg_timeout = "300", *cfg_bmin = "0", *cfg_bmax = "0";

static int core_get_params(const OSSL_CORE_HANDLE *h, OSSL_PARAM params[]) {
  OSSL_PARAM *p;
  (void)h;
  for (p = params; p->key != NULL; p++) {
    const char *v = strcmp(p->key, "keyd_socket") == 0          ? cfg_socket
                    : strcmp(p->key, "client_name") == 0        ? "proxy"
                    : strcmp(p->key, "client_secret_file") == 0 ? cfg_secret
                    : strcmp(p->key, "timeout_ms") == 0         ? cfg_timeout
                    : strcmp(p->key, "breaker_min_ms") == 0     ? cfg_bmin
                    : strcmp(p->key, "breaker_max_ms") == 0     ? cfg_bmax
                                                                : NULL;
    if (v != NULL && p->data_type == OSSL_PARAM_UTF8_PTR)
      *(const char **)p->data = v;
  }
  return 1;
}

static void core_new_error(const OSSL_CORE_HANDLE *h) {
  (void)h;
  err.count++;
  err.reason = 0;
  err.data[0] = '\0';
}

static void core_set_error_debug(const OSSL_CORE_HANDLE *h, const char *file, int line,
                                 const char *func) {
  (void)h;
  (void)file;
  (void)line;
  (void)func;
}

static void core_vset_error(const OSSL_CORE_HANDLE *h, uint32_t reason, const char *fmt,
                            va_list args) {
  (void)h;
  err.reason = reason;
  vsnprintf(err.data, sizeof(err.data), fmt, args);
}

typedef struct {
  const unsigned char *p;
  size_t len, off;
} MEMBIO;

static int core_bio_read_ex(OSSL_CORE_BIO *bio, void *data, size_t len, size_t *got) {
  MEMBIO *m = (MEMBIO *)bio;
  size_t n = m->len - m->off < len ? m->len - m->off : len;
  memcpy(data, m->p + m->off, n);
  m->off += n;
  *got = n;
  return 1;
}

static const OSSL_DISPATCH core[] = {
    KE_DISPATCH(OSSL_FUNC_CORE_GET_PARAMS, core_get_params, core_get_params),
    KE_DISPATCH(OSSL_FUNC_CORE_NEW_ERROR, core_new_error, core_new_error),
    KE_DISPATCH(OSSL_FUNC_CORE_SET_ERROR_DEBUG, core_set_error_debug, core_set_error_debug),
    KE_DISPATCH(OSSL_FUNC_CORE_VSET_ERROR, core_vset_error, core_vset_error),
    KE_DISPATCH(OSSL_FUNC_BIO_READ_EX, BIO_read_ex, core_bio_read_ex),
    {0, NULL}};

static void (*find_fn(const OSSL_DISPATCH *d, int id))(void) {
  for (; d != NULL && d->function_id != 0; d++)
    if (d->function_id == id)
      return d->function;
  return NULL;
}

/* ------------------------------------------------------------------ fake keyd */

enum scenario {
  S_OK = 0,
  S_SILENT,         /* never answer */
  S_HEADER_ONLY,    /* a header announcing 100 bytes, then nothing */
  S_CLOSE,          /* close without answering */
  S_HALF_HEADER,    /* 6 bytes of a header, then close */
  S_TRUNCATED,      /* header + 10 of 100 payload bytes, then close */
  S_LENGTH,         /* a header with length fk.length, then 64 bytes */
  S_MAX_FRAME,      /* a frame of exactly the maximum size, payload zeros */
  S_WRONG_ID,       /* the right answer with another request id */
  S_BAD_VERSION,    /* version 2 */
  S_FLAGS,          /* non-zero flags */
  S_GARBAGE,        /* 64 pseudo-random bytes */
  S_WRONG_OPCODE,   /* opcode 0x99 */
  S_ERROR,          /* ERROR frame with fk.code */
  S_ERROR_EMPTY,    /* ERROR frame without items */
  S_ERROR_OVERRUN,  /* ERROR frame whose item runs past the end */
  S_ERROR_LONG,     /* ERROR with a 5000-byte message full of control bytes */
  S_NO_SIGNATURE,   /* SIGN answer without SIGNATURE */
  S_HUGE_SIGNATURE, /* a 4096-byte SIGNATURE */
  S_ITEMS_OVERRUN,  /* SIGN answer whose item runs past the end */
  S_PUB_WRONG_TYPE, /* GET_PUBLIC_KEY: another KEY_TYPE */
  S_PUB_BAD_POINT,  /* GET_PUBLIC_KEY: a 64-byte EC point */
  S_PUB_NO_BITS,    /* GET_PUBLIC_KEY: no KEY_BITS */
  S_CLOSE_AFTER     /* answer, then close (keyd restarted while idle) */
};

static struct {
  pthread_mutex_t lock;
  int listen_fd, stop;
  int scenario, target_op, sticky; /* sticky: the scenario stays for every request */
  uint32_t length;                 /* S_LENGTH */
  unsigned code;                   /* S_ERROR */
  int connections, requests;       /* accepted, and target-op requests seen */
  int last_algorithm;
  const char *key_type; /* what GET_PUBLIC_KEY answers */
} fk = {.lock = PTHREAD_MUTEX_INITIALIZER, .listen_fd = -1, .key_type = "ec-p256"};

static void fk_set(int op, int scenario, int sticky) {
  pthread_mutex_lock(&fk.lock);
  fk.target_op = op;
  fk.scenario = scenario;
  fk.sticky = sticky;
  pthread_mutex_unlock(&fk.lock);
}

static int fk_get(int *field) {
  int v;
  pthread_mutex_lock(&fk.lock);
  v = *field;
  pthread_mutex_unlock(&fk.lock);
  return v;
}

static void send_all(int fd, const void *p, size_t n) {
  const unsigned char *b = p;
  while (n > 0) {
    ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
    if (w <= 0)
      return;
    b += w;
    n -= (size_t)w;
  }
}

static void item(KE_BUF *b, int tag, const void *v, size_t n) { ke_item_add(b, tag, v, n); }

static void send_frame(int fd, int op, uint32_t id, const KE_BUF *payload) {
  unsigned char h[KEYD_HEADER_SIZE];
  ke_frame_head(h, op, id, payload->len);
  send_all(fd, h, sizeof(h));
  send_all(fd, payload->p, payload->len);
}

/* the answer a well-behaved keyd would give */
static void good_answer(KE_BUF *b, int op, const char *key_type) {
  if (op == KEYD_OP_HELLO) {
    item(b, KEYD_TAG_SERVER_INFO, "{}", 2);
  } else if (op == KEYD_OP_GET_PUBLIC_KEY) {
    unsigned char bits[4], point[65] = {4}, n[256] = {0xc3}, e[3] = {1, 0, 1};
    int rsa = strncmp(key_type, "rsa", 3) == 0;
    ke_put32(bits, rsa ? 2048 : 256);
    item(b, KEYD_TAG_KEY_TYPE, key_type, strlen(key_type));
    item(b, KEYD_TAG_KEY_BITS, bits, 4);
    if (rsa) {
      item(b, KEYD_TAG_RSA_N, n, sizeof(n));
      item(b, KEYD_TAG_RSA_E, e, sizeof(e));
    } else {
      item(b, KEYD_TAG_EC_POINT, point, sizeof(point));
    }
  } else {
    unsigned char sig[72] = {0x30, 70};
    item(b, KEYD_TAG_SIGNATURE, sig, sizeof(sig));
  }
}

/* Answers one request; returns 0 when the connection is to be closed. */
static int answer(int fd, int op, uint32_t id, const KE_BUF *req) {
  KE_BUF b = {0};
  unsigned char h[KEYD_HEADER_SIZE], junk[5000];
  const unsigned char *v;
  size_t n, i;
  int s = S_OK, keep = 1;
  uint32_t length = 0;
  unsigned code = 0;
  const char *key_type;

  pthread_mutex_lock(&fk.lock);
  if (op == KEYD_OP_SIGN && ke_item_find(req->p, req->len, KEYD_TAG_ALGORITHM, &v, &n) == 1 &&
      n == 2)
    fk.last_algorithm = v[0] << 8 | v[1];
  key_type = fk.key_type;
  if (op == fk.target_op) {
    s = fk.scenario;
    fk.requests++;
    if (!fk.sticky)
      fk.scenario = S_OK;
  }
  length = fk.length;
  code = fk.code;
  pthread_mutex_unlock(&fk.lock);

  for (i = 0; i < sizeof(junk); i++)
    junk[i] = (unsigned char)(i * 7919 + 13);
  switch (s) {
  case S_OK:
  case S_CLOSE_AFTER:
    good_answer(&b, op, key_type);
    send_frame(fd, op | 0x80, id, &b);
    keep = s == S_OK;
    break;
  case S_SILENT:
    break;
  case S_HEADER_ONLY:
    ke_frame_head(h, op | 0x80, id, 100);
    send_all(fd, h, sizeof(h));
    break;
  case S_CLOSE:
    keep = 0;
    break;
  case S_HALF_HEADER:
    ke_frame_head(h, op | 0x80, id, 0);
    send_all(fd, h, 6);
    keep = 0;
    break;
  case S_TRUNCATED:
    ke_frame_head(h, op | 0x80, id, 100);
    send_all(fd, h, sizeof(h));
    send_all(fd, junk, 10);
    keep = 0;
    break;
  case S_LENGTH:
    ke_frame_head(h, op | 0x80, id, 0);
    ke_put32(h, length);
    send_all(fd, h, sizeof(h));
    send_all(fd, junk, 64);
    break;
  case S_MAX_FRAME:
    ke_buf_add(&b, NULL, KEYD_MAX_FRAME - KEYD_HEADER_SIZE);
    memset(b.p, 0, b.len);
    send_frame(fd, op | 0x80, id, &b);
    break;
  case S_WRONG_ID:
    good_answer(&b, op, key_type);
    send_frame(fd, op | 0x80, id + 1, &b);
    break;
  case S_BAD_VERSION:
  case S_FLAGS:
    good_answer(&b, op, key_type);
    ke_frame_head(h, op | 0x80, id, b.len);
    if (s == S_BAD_VERSION)
      h[4] = 2;
    else
      h[7] = 1;
    send_all(fd, h, sizeof(h));
    send_all(fd, b.p, b.len);
    break;
  case S_GARBAGE:
    send_all(fd, junk, 64);
    break;
  case S_WRONG_OPCODE:
    good_answer(&b, op, key_type);
    send_frame(fd, 0x99, id, &b);
    break;
  case S_ERROR:
  case S_ERROR_LONG: {
    char msg[64];
    snprintf(msg, sizeof(msg), "fake keyd refuses with code %u", code);
    ke_item_add_u16(&b, KEYD_TAG_ERROR_CODE, code);
    if (s == S_ERROR)
      item(&b, KEYD_TAG_ERROR_MESSAGE, msg, strlen(msg));
    else
      item(&b, KEYD_TAG_ERROR_MESSAGE, junk, sizeof(junk));
    send_frame(fd, KEYD_OP_ERROR, id, &b);
    break;
  }
  case S_ERROR_EMPTY:
    send_frame(fd, KEYD_OP_ERROR, id, &b);
    break;
  case S_ERROR_OVERRUN:
  case S_ITEMS_OVERRUN: {
    unsigned char it[5] = {s == S_ERROR_OVERRUN ? KEYD_TAG_ERROR_CODE : KEYD_TAG_SIGNATURE};
    ke_put32(it + 1, 0xfffffff0u);
    ke_buf_add(&b, it, 5);
    ke_buf_add(&b, junk, 20);
    send_frame(fd, s == S_ERROR_OVERRUN ? KEYD_OP_ERROR : op | 0x80, id, &b);
    break;
  }
  case S_NO_SIGNATURE:
    item(&b, KEYD_TAG_KEY_VERSION, "\0\0\0\1", 4);
    send_frame(fd, op | 0x80, id, &b);
    break;
  case S_HUGE_SIGNATURE:
    item(&b, KEYD_TAG_SIGNATURE, junk, 4096);
    send_frame(fd, op | 0x80, id, &b);
    break;
  case S_PUB_WRONG_TYPE:
  case S_PUB_BAD_POINT:
  case S_PUB_NO_BITS: {
    unsigned char bits[4], point[65] = {4};
    ke_put32(bits, 256);
    item(&b, KEYD_TAG_KEY_TYPE, s == S_PUB_WRONG_TYPE ? "ec-p384" : "ec-p256", 7);
    if (s != S_PUB_NO_BITS)
      item(&b, KEYD_TAG_KEY_BITS, bits, 4);
    item(&b, KEYD_TAG_EC_POINT, point, s == S_PUB_BAD_POINT ? 64 : 65);
    send_frame(fd, op | 0x80, id, &b);
    break;
  }
  }
  ke_buf_free(&b);
  return keep;
}

#define MAX_CONN 16

typedef struct {
  int fd;
  KE_BUF in;
} CONN;

static void conn_drop(CONN *c) {
  if (c->fd >= 0)
    close(c->fd);
  c->fd = -1;
  ke_buf_free(&c->in);
}

/* Handles every whole frame buffered on c; 0 when the connection is to be closed. */
static int serve(CONN *c) {
  while (c->in.len >= KEYD_HEADER_SIZE) {
    KE_HEAD head;
    KE_BUF req = {0};
    int keep;
    if (ke_frame_parse(c->in.p, &head) != KE_HEAD_OK)
      return 0; /* the bridge sent a bad frame: the test notices by the failure it causes */
    if (c->in.len < KEYD_HEADER_SIZE + head.payload_len)
      return 1;
    ke_buf_add(&req, c->in.p + KEYD_HEADER_SIZE, head.payload_len);
    keep = answer(c->fd, head.op, head.id, &req);
    ke_buf_free(&req);
    memmove(c->in.p, c->in.p + KEYD_HEADER_SIZE + head.payload_len,
            c->in.len - KEYD_HEADER_SIZE - head.payload_len);
    c->in.len -= KEYD_HEADER_SIZE + head.payload_len;
    if (!keep)
      return 0;
  }
  return 1;
}

static void *fake_keyd(void *arg) {
  CONN conns[MAX_CONN];
  int i;
  (void)arg;
  for (i = 0; i < MAX_CONN; i++)
    conns[i] = (CONN){-1, {0}};
  while (!fk_get(&fk.stop)) {
    struct pollfd pfd[MAX_CONN + 1];
    int n = 0, map[MAX_CONN + 1];
    pfd[n] = (struct pollfd){fk.listen_fd, POLLIN, 0};
    map[n++] = -1;
    for (i = 0; i < MAX_CONN; i++)
      if (conns[i].fd >= 0) {
        pfd[n] = (struct pollfd){conns[i].fd, POLLIN, 0};
        map[n++] = i;
      }
    if (poll(pfd, (nfds_t)n, 20) <= 0)
      continue;
    for (i = 0; i < n; i++) {
      if (pfd[i].revents == 0)
        continue;
      if (map[i] < 0) {
        int fd = accept(fk.listen_fd, NULL, NULL), j;
        for (j = 0; fd >= 0 && j < MAX_CONN && conns[j].fd >= 0; j++)
          ;
        if (fd >= 0 && j < MAX_CONN) {
          conns[j].fd = fd;
          pthread_mutex_lock(&fk.lock);
          fk.connections++;
          pthread_mutex_unlock(&fk.lock);
        } else if (fd >= 0) {
          close(fd);
        }
      } else {
        CONN *c = &conns[map[i]];
        unsigned char buf[65536];
        ssize_t r = recv(c->fd, buf, sizeof(buf), 0);
        if (r <= 0 || !ke_buf_add(&c->in, buf, (size_t)r) || !serve(c))
          conn_drop(c);
      }
    }
  }
  for (i = 0; i < MAX_CONN; i++)
    conn_drop(&conns[i]);
  return NULL;
}

/* ------------------------------------------------------------------ driving the provider */

typedef struct {
  const OSSL_DISPATCH *prov;
  void *provctx;
  const OSSL_DISPATCH *ec_keymgmt, *rsa_keymgmt, *sig, *pem_dec, *ec_dec, *rsa_dec;
} PROVIDER;

static const OSSL_DISPATCH *find_alg(const OSSL_ALGORITHM *a, const char *name_prefix) {
  for (; a != NULL && a->algorithm_names != NULL; a++)
    if (strncmp(a->algorithm_names, name_prefix, strlen(name_prefix)) == 0)
      return a->implementation;
  return NULL;
}

static int provider_load(PROVIDER *P) {
  OSSL_FUNC_provider_query_operation_fn *query;
  const OSSL_ALGORITHM *a;
  int no_cache;
  memset(P, 0, sizeof(*P));
  if (!OSSL_provider_init(NULL, core, &P->prov, &P->provctx))
    return 0;
  query =
      (OSSL_FUNC_provider_query_operation_fn *)find_fn(P->prov, OSSL_FUNC_PROVIDER_QUERY_OPERATION);
  a = query(P->provctx, OSSL_OP_KEYMGMT, &no_cache);
  P->ec_keymgmt = find_alg(a, "EC");
  P->rsa_keymgmt = find_alg(a, "RSA");
  P->sig = find_alg(query(P->provctx, OSSL_OP_SIGNATURE, &no_cache), "ECDSA");
  a = query(P->provctx, OSSL_OP_DECODER, &no_cache);
  P->pem_dec = find_alg(a, "DER");
  P->ec_dec = find_alg(a, "EC");
  P->rsa_dec = find_alg(a, "RSA");
  return P->ec_keymgmt && P->rsa_keymgmt && P->sig && P->pem_dec && P->ec_dec && P->rsa_dec;
}

static void provider_unload(PROVIDER *P) {
  ((OSSL_FUNC_provider_teardown_fn *)find_fn(P->prov, OSSL_FUNC_PROVIDER_TEARDOWN))(P->provctx);
}

/* decoder stage results */
typedef struct {
  PROVIDER *P;
  const OSSL_DISPATCH *keymgmt;
  void *key;
  int calls;
} LOADED;

static int on_object(const OSSL_PARAM params[], void *arg) {
  LOADED *l = arg;
  const OSSL_PARAM *ref = NULL;
  l->calls++;
  for (; params->key != NULL; params++)
    if (strcmp(params->key, OSSL_OBJECT_PARAM_REFERENCE) == 0)
      ref = params;
  if (ref == NULL)
    return 1;
  l->key = ((OSSL_FUNC_keymgmt_load_fn *)find_fn(l->keymgmt, OSSL_FUNC_KEYMGMT_LOAD))(
      ref->data, ref->data_size);
  return l->key != NULL;
}

static int run_decoder(PROVIDER *P, const OSSL_DISPATCH *dec, const void *in, size_t len,
                       LOADED *l) {
  OSSL_FUNC_decoder_newctx_fn *newctx =
      (OSSL_FUNC_decoder_newctx_fn *)find_fn(dec, OSSL_FUNC_DECODER_NEWCTX);
  OSSL_FUNC_decoder_decode_fn *decode =
      (OSSL_FUNC_decoder_decode_fn *)find_fn(dec, OSSL_FUNC_DECODER_DECODE);
  OSSL_FUNC_decoder_freectx_fn *freectx =
      (OSSL_FUNC_decoder_freectx_fn *)find_fn(dec, OSSL_FUNC_DECODER_FREECTX);
  MEMBIO bio = {in, len, 0};
  void *ctx = newctx(P->provctx);
  int r = decode(ctx, (OSSL_CORE_BIO *)&bio, OSSL_KEYMGMT_SELECT_ALL, on_object, l, NULL, NULL);
  freectx(ctx);
  return r;
}

/* "KER1" + items: a key reference */
static void make_ref(KE_BUF *b, const char *name, uint32_t version, const char *type) {
  unsigned char v[4];
  ke_put32(v, version);
  ke_buf_add(b, "KER1", 4);
  item(b, KEYD_TAG_KEY_NAME, name, strlen(name));
  item(b, KEYD_TAG_KEY_VERSION, v, 4);
  item(b, KEYD_TAG_KEY_TYPE, type, strlen(type));
}

static void *load_key(PROVIDER *P, const char *name, uint32_t version, const char *type) {
  KE_BUF ref = {0};
  int rsa = strncmp(type, "rsa", 3) == 0;
  LOADED l = {P, rsa ? P->rsa_keymgmt : P->ec_keymgmt, NULL, 0};
  pthread_mutex_lock(&fk.lock);
  fk.key_type = type;
  pthread_mutex_unlock(&fk.lock);
  make_ref(&ref, name, version, type);
  run_decoder(P, rsa ? P->rsa_dec : P->ec_dec, ref.p, ref.len, &l);
  ke_buf_free(&ref);
  return l.key;
}

static void free_key(PROVIDER *P, void *key) {
  ((OSSL_FUNC_keymgmt_free_fn *)find_fn(P->ec_keymgmt, OSSL_FUNC_KEYMGMT_FREE))(key);
}

/* one signature; params may be NULL. Returns the provider's result. */
static int sign_with(PROVIDER *P, void *key, const char *md, const OSSL_PARAM *params,
                     size_t *siglen) {
  OSSL_FUNC_signature_newctx_fn *newctx =
      (OSSL_FUNC_signature_newctx_fn *)find_fn(P->sig, OSSL_FUNC_SIGNATURE_NEWCTX);
  OSSL_FUNC_signature_digest_sign_init_fn *init =
      (OSSL_FUNC_signature_digest_sign_init_fn *)find_fn(P->sig,
                                                         OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT);
  OSSL_FUNC_signature_digest_sign_fn *sign =
      (OSSL_FUNC_signature_digest_sign_fn *)find_fn(P->sig, OSSL_FUNC_SIGNATURE_DIGEST_SIGN);
  OSSL_FUNC_signature_freectx_fn *freectx =
      (OSSL_FUNC_signature_freectx_fn *)find_fn(P->sig, OSSL_FUNC_SIGNATURE_FREECTX);
  unsigned char sig[600], tbs[100] = "the message";
  size_t n = 0;
  void *ctx = newctx(P->provctx, NULL);
  int r = init(ctx, md, key, params) && sign(ctx, sig, &n, sizeof(sig), tbs, sizeof(tbs));
  freectx(ctx);
  if (siglen != NULL)
    *siglen = n;
  return r;
}

static int sign_once(PROVIDER *P, void *key) { return sign_with(P, key, "SHA256", NULL, NULL); }

/* ------------------------------------------------------------------ the tests */

static void test_reason_strings(PROVIDER *P) {
  const OSSL_ITEM *items = ((OSSL_FUNC_provider_get_reason_strings_fn *)find_fn(
      P->prov, OSSL_FUNC_PROVIDER_GET_REASON_STRINGS))(P->provctx);
  int named = 0, total = 0;
#define KE_COUNT(code, name, meaning) total++;
  KEYD_ERRORS(KE_COUNT)
#undef KE_COUNT
#define KE_FIND(code, name, meaning)                                                               \
  {                                                                                                \
    const OSSL_ITEM *it;                                                                           \
    for (it = items; it->ptr != NULL; it++)                                                        \
      if (it->id == KE_R_KEYD + (code) && strcmp(it->ptr, "keyd: " #name ": " meaning) == 0)       \
        named++;                                                                                   \
  }
  KEYD_ERRORS(KE_FIND)
#undef KE_FIND
  check(named == total && total >= 34,
        "every keyd error code has the reason \"keyd: NAME: meaning\" (%d of %d)", named, total);
}

/* A sign that must fail with `reason` and an error whose data holds `want`; then a good one. */
static void expect_sign_failure(PROVIDER *P, void *key, int scenario, int reason, const char *want,
                                const char *what) {
  int r;
  err_reset();
  fk_set(KEYD_OP_SIGN, scenario, 0);
  r = sign_once(P, key);
  check(!r && err.count >= 1 && (int)err.reason == reason && strstr(err.data, want) != NULL,
        "%s: clean error (reason %u, \"%s\")", what, err.reason, err.data);
  fk_set(0, S_OK, 0);
  err_reset();
  r = sign_once(P, key);
  check(r && err.count == 0, "after %s, the next signature works", what);
}

static void test_hostile_answers(PROVIDER *P, void *key) {
  static const struct {
    int scenario, reason;
    const char *want, *what;
  } cases[] = {
      {S_SILENT, KE_R_TIMEOUT, "no answer within 300 ms", "no answer (timeout)"},
      {S_HEADER_ONLY, KE_R_TIMEOUT, "no answer within 300 ms", "a header, then silence"},
      {S_HALF_HEADER, KE_R_IO, "closed in the middle of a frame", "half a header, then close"},
      {S_TRUNCATED, KE_R_IO, "closed in the middle of a frame", "a truncated payload, then close"},
      {S_WRONG_ID, KE_R_PROTOCOL, "request id", "an answer with a wrong request id"},
      {S_BAD_VERSION, KE_R_PROTOCOL, "unsupported protocol version", "a version 2 frame"},
      {S_FLAGS, KE_R_PROTOCOL, "non-zero flags", "non-zero flags"},
      {S_GARBAGE, KE_R_PROTOCOL, "bad answer frame", "garbage"},
      {S_WRONG_OPCODE, KE_R_PROTOCOL, "opcode 0x99", "a wrong opcode"},
      {S_ERROR_EMPTY, KE_R_KEYD_UNKNOWN, "error code 0", "an ERROR frame without items"},
      {S_ERROR_OVERRUN, KE_R_KEYD_UNKNOWN, "error code 0", "an ERROR frame whose item overruns"},
      {S_NO_SIGNATURE, KE_R_PROTOCOL, "without a signature", "an answer without SIGNATURE"},
      {S_HUGE_SIGNATURE, KE_R_PROTOCOL, "without a signature that fits", "a 4096-byte signature"},
      {S_ITEMS_OVERRUN, KE_R_PROTOCOL, "without a signature", "an item running past the frame"},
      {S_MAX_FRAME, KE_R_PROTOCOL, "without a signature", "a frame of exactly the maximum size"},
  };
  size_t i;
  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    long long t0 = now_ms();
    expect_sign_failure(P, key, cases[i].scenario, cases[i].reason, cases[i].want, cases[i].what);
    if (cases[i].reason == KE_R_TIMEOUT)
      check(now_ms() - t0 >= 300, "%s: the call waited out the timeout (300 ms)", cases[i].what);
  }
}

static void test_lengths(PROVIDER *P, void *key) {
  static const uint32_t lengths[] = {
      0,           4,           7,           KEYD_MAX_FRAME - 3, KEYD_MAX_FRAME,
      0x7fffffffu, 0xfffffff8u, 0xfffffffcu, 0xfffffffdu,        0xffffffffu};
  size_t i;
  for (i = 0; i < sizeof(lengths) / sizeof(lengths[0]); i++) {
    char what[64];
    pthread_mutex_lock(&fk.lock);
    fk.length = lengths[i];
    pthread_mutex_unlock(&fk.lock);
    snprintf(what, sizeof(what), "frame length 0x%08x", lengths[i]);
    expect_sign_failure(P, key, S_LENGTH, KE_R_PROTOCOL,
                        lengths[i] < 8 ? "under the header size" : "over the maximum frame size",
                        what);
  }
}

static void test_every_error_code(PROVIDER *P, void *key) {
  static const unsigned unknown[] = {0, 28, 29, 99, 255, 65535};
  int all = 1, n = 0;
  size_t i;
#define KE_TRY(code_, name, meaning)                                                               \
  {                                                                                                \
    pthread_mutex_lock(&fk.lock);                                                                  \
    fk.code = code_;                                                                               \
    pthread_mutex_unlock(&fk.lock);                                                                \
    fk_set(KEYD_OP_SIGN, S_ERROR, 0);                                                              \
    err_reset();                                                                                   \
    if (sign_once(P, key) || err.count != 1 || err.reason != KE_R_KEYD + (code_) ||                \
        strncmp(err.data, "keyd: " #name ": fake keyd refuses", 24 + sizeof(#name)) != 0) {        \
      all = 0;                                                                                     \
      printf("# code %u: reason %u, \"%s\"\n", (unsigned)(code_), err.reason, err.data);           \
    }                                                                                              \
    n++;                                                                                           \
  }
  KEYD_ERRORS(KE_TRY)
#undef KE_TRY
  check(all, "an ERROR frame with each of the %d codes is raised as \"keyd: NAME: <message>\"", n);
  for (i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
    char want[32];
    pthread_mutex_lock(&fk.lock);
    fk.code = unknown[i];
    pthread_mutex_unlock(&fk.lock);
    snprintf(want, sizeof(want), "keyd: error code %u:", unknown[i]);
    fk_set(KEYD_OP_SIGN, S_ERROR, 0);
    err_reset();
    check(!sign_once(P, key) && err.reason == KE_R_KEYD_UNKNOWN && strstr(err.data, want) != NULL,
          "unknown code %u: \"%s\"", unknown[i], err.data);
  }
  pthread_mutex_lock(&fk.lock);
  fk.code = KEYD_ERR_RATE_LIMITED;
  pthread_mutex_unlock(&fk.lock);
  fk_set(KEYD_OP_SIGN, S_ERROR_LONG, 0);
  err_reset();
  {
    int printable = 1, r = sign_once(P, key);
    const char *c;
    check(!r && err.reason == KE_R_KEYD + KEYD_ERR_RATE_LIMITED && strlen(err.data) > 30 &&
              strlen(err.data) < 200,
          "a 5000-byte ERROR_MESSAGE is cut (%zu bytes)", strlen(err.data));
    for (c = err.data; *c != '\0'; c++)
      printable = printable && *c >= 0x20 && *c < 0x7f;
    check(printable, "and its control bytes are made printable");
  }
  check(sign_once(P, key), "and the connection still works");
}

static void test_connection_lifecycle(PROVIDER *P, void *key) {
  int c0;
  err_reset();
  fk_set(KEYD_OP_SIGN, S_CLOSE_AFTER, 0);
  check(sign_once(P, key), "a signature whose connection keyd then closes");
  c0 = fk_get(&fk.connections);
  check(sign_once(P, key) && err.count == 0 && fk_get(&fk.connections) == c0 + 1,
        "the next one reconnects (keyd restarted while idle), without an error");
  c0 = fk_get(&fk.connections);
  fk_set(KEYD_OP_SIGN, S_CLOSE, 0);
  check(sign_once(P, key) && err.count == 0 && fk_get(&fk.connections) == c0 + 1,
        "keyd closing a reused connection on the request: retried once on a new one, no error");
  fk_set(KEYD_OP_SIGN, S_CLOSE, 1);
  err_reset();
  check(!sign_once(P, key) && err.reason == KE_R_IO && strstr(err.data, "closed") != NULL,
        "keyd closing every connection on the request: one retry, then \"%s\"", err.data);
  fk_set(KEYD_OP_HELLO, S_ERROR, 0);
  pthread_mutex_lock(&fk.lock);
  fk.code = KEYD_ERR_UNKNOWN_CLIENT;
  pthread_mutex_unlock(&fk.lock);
  err_reset();
  check(!sign_once(P, key) && err.reason == KE_R_KEYD + KEYD_ERR_UNKNOWN_CLIENT &&
            strstr(err.data, "UNKNOWN_CLIENT") != NULL,
        "HELLO refused: \"%s\"", err.data);
  fk_set(KEYD_OP_HELLO, S_GARBAGE, 0);
  err_reset();
  check(!sign_once(P, key) && err.reason == KE_R_PROTOCOL, "garbage answering HELLO: \"%s\"",
        err.data);
  fk_set(KEYD_OP_HELLO, S_SILENT, 0);
  err_reset();
  check(!sign_once(P, key) && err.reason == KE_R_TIMEOUT, "HELLO unanswered: \"%s\"", err.data);
  fk_set(0, S_OK, 0);
  check(sign_once(P, key), "then signatures work again");
}

static void test_public_keys(PROVIDER *P) {
  static const struct {
    int scenario, reason;
    const char *what;
  } cases[] = {{S_PUB_WRONG_TYPE, KE_R_KEY_MISMATCH, "another key type"},
               {S_PUB_BAD_POINT, KE_R_PROTOCOL, "a 64-byte EC point"},
               {S_PUB_NO_BITS, KE_R_PROTOCOL, "no KEY_BITS"},
               {S_ERROR, KE_R_KEYD + KEYD_ERR_KEY_NOT_FOUND, "KEY_NOT_FOUND"},
               {S_TRUNCATED, KE_R_IO, "a truncated answer"},
               {S_GARBAGE, KE_R_PROTOCOL, "garbage"}};
  size_t i;
  pthread_mutex_lock(&fk.lock);
  fk.code = KEYD_ERR_KEY_NOT_FOUND;
  pthread_mutex_unlock(&fk.lock);
  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    void *k;
    fk_set(KEYD_OP_GET_PUBLIC_KEY, cases[i].scenario, 0);
    err_reset();
    k = load_key(P, "web", 0, "ec-p256");
    check(k == NULL && err.count >= 1 && (int)err.reason == cases[i].reason,
          "GET_PUBLIC_KEY answered with %s: no key, clean error \"%s\"", cases[i].what, err.data);
    if (k != NULL)
      free_key(P, k);
  }
  fk_set(0, S_OK, 0);
}

static void test_decoders(PROVIDER *P) {
  static const char *inputs[] = {
      "",
      "garbage",
      "-----BEGIN KEYEDGE KEY REFERENCE-----\nS0VSMQ",
      "-----BEGIN KEYEDGE KEY REFERENCE-----\n!!!!\n-----END KEYEDGE KEY REFERENCE-----\n",
      "-----BEGIN KEYEDGE KEY REFERENCE-----\nAAAA\n-----END KEYEDGE KEY REFERENCE-----\n",
      "-----BEGIN KEYEDGE KEY REFERENCE-----\n-----END KEYEDGE KEY REFERENCE-----\n",
      "-----END KEYEDGE KEY REFERENCE-----\n-----BEGIN KEYEDGE KEY REFERENCE-----\n",
  };
  static const struct {
    const char *p;
    size_t n;
  } bad_refs[] = {
      {"KER1", 4},
      {"KER", 3},
      {"KER2\x03\0\0\0\x03web\x05\0\0\0\x07"
       "ec-p256",
       24},
      {"KER1\x03\xff\xff\xff\xffweb", 12},
      {"KER1\x03\0\0\0\x03web\x05\0\0\0\x07"
       "ed25519",
       24},
      {"KER1\x03\0\0\0\x03w\0b\x05\0\0\0\x07"
       "ec-p256",
       24},
      {"KER1\x03\0\0\0\x03web\x05\0\0\0\x07"
       "ec-p256",
       23},
      {"KER1\x03\0\0\0\0\x05\0\0\0\x07"
       "ec-p256",
       21},
  };
  unsigned char pem_nul[] = "-----BEGIN KEYEDGE KEY REFERENCE-----\nS0\0VSMQ\n"
                            "-----END KEYEDGE KEY REFERENCE-----\n";
  size_t i;
  int all = 1;
  for (i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
    LOADED l = {P, P->ec_keymgmt, NULL, 0};
    err_reset();
    if (run_decoder(P, P->pem_dec, inputs[i], strlen(inputs[i]), &l) != 1 || l.calls != 0 ||
        err.count != 0)
      all = 0;
  }
  {
    LOADED l = {P, P->ec_keymgmt, NULL, 0};
    if (run_decoder(P, P->pem_dec, pem_nul, sizeof(pem_nul) - 1, &l) != 1 || l.calls != 0)
      all = 0;
  }
  check(all, "the PEM decoder says \"not mine\" to broken or foreign input, without an error");
  all = 1;
  for (i = 0; i < sizeof(bad_refs) / sizeof(bad_refs[0]); i++) {
    LOADED l = {P, P->ec_keymgmt, NULL, 0};
    const OSSL_DISPATCH *decs[2] = {P->ec_dec, P->rsa_dec};
    size_t j;
    for (j = 0; j < 2; j++)
      if (run_decoder(P, decs[j], bad_refs[i].p, bad_refs[i].n, &l) != 1 || l.calls != 0)
        all = 0;
  }
  check(all, "the reference decoders say \"not mine\" to malformed references");
  {
    KE_BUF ref = {0};
    LOADED l = {P, P->rsa_keymgmt, NULL, 0};
    make_ref(&ref, "web", 0, "ec-p256");
    check(run_decoder(P, P->rsa_dec, ref.p, ref.len, &l) == 1 && l.calls == 0,
          "the RSA decoder leaves an EC reference alone");
    ke_buf_free(&ref);
  }
}

static OSSL_PARAM str_param(const char *key, const char *v) {
  return (OSSL_PARAM)OSSL_PARAM_utf8_string(key, (char *)v, strlen(v));
}

static void test_signature_params(PROVIDER *P, void *ec, void *rsa) {
  static const struct {
    const char *md, *salt, *mgf1;
    int ok;
    const char *what;
  } pss[] = {
      {"SHA256", "digest", NULL, 1, "PSS salt \"digest\""},
      {"SHA256", "32", NULL, 1, "PSS salt 32 with SHA-256"},
      {"SHA384", "auto-digestmax", NULL, 1, "PSS salt \"auto-digestmax\" (a 2048-bit key)"},
      {"SHA256", "max", NULL, 0, "PSS salt \"max\""},
      {"SHA256", "auto", NULL, 0, "PSS salt \"auto\""},
      {"SHA256", "20", NULL, 0, "PSS salt 20 with SHA-256"},
      {"SHA256", "-7", NULL, 0, "PSS salt -7"},
      {"SHA256", "12abc", NULL, 0, "PSS salt \"12abc\""},
      {"SHA256", "digest", "SHA384", 0, "PSS with MGF1 SHA-384 under SHA-256"},
      {"SHA224", "digest", NULL, 0, "PSS with SHA-224 (no keyd algorithm)"},
  };
  size_t i, n;
  unsigned alg = 0;
  for (i = 0; i < sizeof(pss) / sizeof(pss[0]); i++) {
    OSSL_PARAM params[4] = {str_param(OSSL_SIGNATURE_PARAM_PAD_MODE, "pss"),
                            str_param(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, pss[i].salt),
                            OSSL_PARAM_END, OSSL_PARAM_END};
    int r;
    if (pss[i].mgf1 != NULL)
      params[2] = str_param(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, pss[i].mgf1);
    err_reset();
    r = sign_with(P, rsa, pss[i].md, params, NULL);
    check(pss[i].ok ? r && err.count == 0 : !r && err.reason == KE_R_UNSUPPORTED, "%s: %s%s",
          pss[i].what, pss[i].ok ? "signed" : "refused: ", pss[i].ok ? "" : err.data);
  }
  {
    int six = 6, max = -3;
    OSSL_PARAM params[] = {OSSL_PARAM_int(OSSL_SIGNATURE_PARAM_PAD_MODE, &six),
                           OSSL_PARAM_int(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, &max), OSSL_PARAM_END};
    err_reset();
    check(!sign_with(P, rsa, "SHA256", params, NULL) && err.reason == KE_R_UNSUPPORTED,
          "PSS salt RSA_PSS_SALTLEN_MAX as an integer is refused too");
  }
  {
    OSSL_PARAM params[] = {str_param(OSSL_SIGNATURE_PARAM_PAD_MODE, "oaep"), OSSL_PARAM_END};
    err_reset();
    check(!sign_with(P, rsa, "SHA256", params, NULL) && err.reason == KE_R_UNSUPPORTED,
          "OAEP padding is refused with an error");
  }
  {
    OSSL_PARAM params[] = {str_param(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, "MD5"), OSSL_PARAM_END};
    err_reset();
    check(!sign_with(P, rsa, "SHA256", params, NULL) && err.reason == KE_R_UNSUPPORTED,
          "an unknown MGF1 digest is refused with an error (it used to fail silently)");
  }
  err_reset();
  check(!sign_with(P, ec, "SHA1", NULL, NULL) && err.reason == KE_R_UNSUPPORTED &&
            strstr(err.data, "SHA1") != NULL,
        "SHA-1 is refused: \"%s\"", err.data);
  {
    static const struct {
      const char *md;
      int rsa;
      unsigned code;
    } codes[] = {{"SHA224", 0, 0x0004},   {"SHA2-256", 0, 0x0001}, {"sha384", 0, 0x0002},
                 {"SHA-512", 0, 0x0003},  {"SHA224", 1, 0x0014},   {"SHA256", 1, 0x0011},
                 {"SHA2-384", 1, 0x0012}, {"SHA512", 1, 0x0013}};
    int all = 1;
    for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
      pthread_mutex_lock(&fk.lock);
      fk.last_algorithm = 0;
      pthread_mutex_unlock(&fk.lock);
      if (!sign_with(P, codes[i].rsa ? rsa : ec, codes[i].md, NULL, &n) ||
          (alg = (unsigned)fk_get(&fk.last_algorithm)) != codes[i].code) {
        all = 0;
        printf("# %s %s: sent 0x%04x\n", codes[i].rsa ? "RSA" : "ECDSA", codes[i].md, alg);
      }
    }
    check(all,
          "ECDSA and RSA PKCS#1 with SHA-224, -256, -384, -512 ask keyd for the right ALGORITHM");
  }
}

static void test_dupctx_and_update(PROVIDER *P) {
  OSSL_FUNC_signature_newctx_fn *newctx =
      (OSSL_FUNC_signature_newctx_fn *)find_fn(P->sig, OSSL_FUNC_SIGNATURE_NEWCTX);
  OSSL_FUNC_signature_digest_sign_init_fn *init =
      (OSSL_FUNC_signature_digest_sign_init_fn *)find_fn(P->sig,
                                                         OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT);
  OSSL_FUNC_signature_dupctx_fn *dupctx =
      (OSSL_FUNC_signature_dupctx_fn *)find_fn(P->sig, OSSL_FUNC_SIGNATURE_DUPCTX);
  OSSL_FUNC_signature_digest_sign_update_fn *update =
      (OSSL_FUNC_signature_digest_sign_update_fn *)find_fn(P->sig,
                                                           OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE);
  OSSL_FUNC_signature_digest_sign_final_fn *final =
      (OSSL_FUNC_signature_digest_sign_final_fn *)find_fn(P->sig,
                                                          OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL);
  OSSL_FUNC_signature_freectx_fn *freectx =
      (OSSL_FUNC_signature_freectx_fn *)find_fn(P->sig, OSSL_FUNC_SIGNATURE_FREECTX);
  unsigned char sig[600], *big;
  size_t n = 0;
  void *key = load_key(P, "dup", 0, "ec-p256"), *ctx, *dup;
  int ok;

  ctx = newctx(P->provctx, NULL);
  ok = key != NULL && init(ctx, "SHA256", key, NULL) && update(ctx, (const unsigned char *)"ab", 2);
  dup = dupctx(ctx);
  free_key(P, key); /* the EVP_PKEY goes; the contexts keep their own references */
  freectx(ctx);
  ok = ok && dup != NULL && update(dup, (const unsigned char *)"c", 1) &&
       final(dup, sig, &n, sizeof(sig)) && n == 72;
  check(ok, "a duplicated context signs after the original context and the key are freed");
  big = calloc(1, KEYD_MAX_FRAME);
  err_reset();
  check(big != NULL && !update(dup, big, KEYD_MAX_FRAME) && err.reason == KE_R_UNSUPPORTED,
        "a message too large for a keyd frame is refused with an error");
  {
    OSSL_FUNC_signature_digest_sign_fn *sign =
        (OSSL_FUNC_signature_digest_sign_fn *)find_fn(P->sig, OSSL_FUNC_SIGNATURE_DIGEST_SIGN);
    err_reset();
    check(big != NULL && !sign(dup, sig, &n, sizeof(sig), big, KEYD_MAX_FRAME) &&
              err.reason == KE_R_UNSUPPORTED && strstr(err.data, "too large") != NULL,
          "so is a one-shot signature over it: \"%s\"", err.data);
  }
  free(big);
  freectx(dup);
}

static void test_fork(PROVIDER *P, void *key) {
  int c0, status = -1;
  pid_t pid;
  check(sign_once(P, key), "a signature before fork");
  c0 = fk_get(&fk.connections);
  fflush(stdout);
  if ((pid = fork()) == 0) {
    int ok = sign_once(P, key);
    _exit(ok ? 0 : 1);
  }
  waitpid(pid, &status, 0);
  check(pid > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
            fk_get(&fk.connections) == c0 + 1,
        "a forked child signs on a connection of its own");
  check(sign_once(P, key) && fk_get(&fk.connections) == c0 + 1,
        "the parent keeps its connection after the fork");
}

/* Fails until the circuit lets a call through (polled, bounded); returns that call's result. */
static int sign_when_admitted(PROVIDER *P, void *key) {
  long long deadline = now_ms() + 5000;
  int r;
  for (;;) {
    err_reset();
    r = sign_once(P, key);
    if (r || err.reason != KE_R_CIRCUIT_OPEN || now_ms() > deadline)
      return r;
    pause_ms(5);
  }
}

static long field(const char *text, const char *name) {
  const char *at = strstr(text, name);
  return at != NULL ? atol(at + strlen(name)) : -1;
}

/* needs cfg_timeout 150, breaker 100..400 */
static void test_breaker(PROVIDER *P, void *key) {
  static const long intervals[] = {200, 400, 400};
  int r0, r;
  size_t i;

  fk_set(KEYD_OP_SIGN, S_SILENT, 1);
  err_reset();
  check(!sign_once(P, key) && err.reason == KE_R_TIMEOUT, "keyd stuck: the first call times out");
  r0 = fk_get(&fk.requests);
  err_reset();
  r = sign_once(P, key);
  check(!r && err.reason == KE_R_CIRCUIT_OPEN && fk_get(&fk.requests) == r0 &&
            strstr(err.data, "no answer within") != NULL && field(err.data, "(interval ") == 100,
        "the next one fails fast without reaching keyd: \"%s\"", err.data);
  for (i = 0; i < sizeof(intervals) / sizeof(intervals[0]); i++) {
    r = sign_when_admitted(P, key);
    check(!r && err.reason == KE_R_TIMEOUT && fk_get(&fk.requests) == r0 + 1 + (int)i,
          "after the interval, one probe reaches keyd (and times out)");
    err_reset();
    r = sign_once(P, key);
    check(!r && err.reason == KE_R_CIRCUIT_OPEN && field(err.data, "(interval ") == intervals[i] &&
              field(err.data, "next try in ") <= intervals[i],
          "the failed probe makes the interval %ld ms: \"%s\"", intervals[i], err.data);
  }
  fk_set(0, S_OK, 0);
  check(sign_when_admitted(P, key), "keyd back: the next probe succeeds and closes the circuit");
  check(sign_once(P, key) && sign_once(P, key), "and calls go through again");
  fk_set(KEYD_OP_SIGN, S_ERROR, 0);
  pthread_mutex_lock(&fk.lock);
  fk.code = KEYD_ERR_RATE_LIMITED;
  pthread_mutex_unlock(&fk.lock);
  err_reset();
  check(!sign_once(P, key) && err.reason == KE_R_KEYD + KEYD_ERR_RATE_LIMITED && sign_once(P, key),
        "a keyd refusal is an answer: it does not open the circuit");
}

static void test_key_params(PROVIDER *P, void *ec) {
  OSSL_FUNC_keymgmt_get_params_fn *get =
      (OSSL_FUNC_keymgmt_get_params_fn *)find_fn(P->ec_keymgmt, OSSL_FUNC_KEYMGMT_GET_PARAMS);
  int bits = 0, max = 0;
  unsigned char pub[65], small[10];
  OSSL_PARAM params[] = {
      OSSL_PARAM_int(OSSL_PKEY_PARAM_BITS, &bits), OSSL_PARAM_int(OSSL_PKEY_PARAM_MAX_SIZE, &max),
      OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof(pub)), OSSL_PARAM_END};
  OSSL_PARAM tiny[] = {OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, small, sizeof(small)),
                       OSSL_PARAM_END};
  check(get(ec, params) && bits == 256 && max == 72 && pub[0] == 4, "EC key parameters");
  err_reset();
  check(!get(ec, tiny) && err.reason == KE_R_UNSUPPORTED,
        "a buffer too small for the public key: an error, no overflow");
}

int main(int argc, char **argv) {
  char sock[108], secret[300];
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  pthread_t thread;
  PROVIDER P, B;
  void *ec, *rsa;
  FILE *f;

  if (argc != 2 || strlen(argv[1]) > 80) {
    fprintf(stderr, "usage: hostile-keyd <private directory, short path>\n");
    return 2;
  }
  alarm(60); /* whatever happens, no hang */
  snprintf(sock, sizeof(sock), "%s/keyd.sock", argv[1]);
  snprintf(secret, sizeof(secret), "%s/proxy.secret", argv[1]);
  if ((f = fopen(secret, "w")) == NULL)
    return 2;
  fputs("not-a-real-secret\n", f);
  fclose(f);
  cfg_socket = sock;
  cfg_secret = secret;
  memcpy(sa.sun_path, sock, strlen(sock));
  unlink(sock); /* left by an earlier run that was killed */
  fk.listen_fd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (bind(fk.listen_fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fk.listen_fd, 16) != 0)
    return 2;
  pthread_create(&thread, NULL, fake_keyd, NULL);

  check(provider_load(&P), "OSSL_provider_init with this program as the core");
  test_reason_strings(&P);
  ec = load_key(&P, "web", 1, "ec-p256");
  rsa = load_key(&P, "web-rsa", 1, "rsa-2048");
  check(ec != NULL && rsa != NULL, "EC and RSA keys load through the decoders and KEYMGMT");
  check(ec != NULL && sign_once(&P, ec), "a signature from the fake keyd");
  if (ec != NULL && rsa != NULL) {
    test_key_params(&P, ec);
    test_hostile_answers(&P, ec);
    test_lengths(&P, ec);
    test_every_error_code(&P, ec);
    test_connection_lifecycle(&P, ec);
    test_public_keys(&P);
    test_decoders(&P);
    test_signature_params(&P, ec, rsa);
    test_dupctx_and_update(&P);
    test_fork(&P, ec);
  }
  free_key(&P, ec);
  free_key(&P, rsa);
  provider_unload(&P);

  /* a second provider instance, with the circuit breaker on */
  cfg_timeout = "150";
  cfg_bmin = "100";
  cfg_bmax = "400";
  check(provider_load(&B), "a provider with the circuit breaker on (100..400 ms)");
  ec = load_key(&B, "web", 0, "ec-p256");
  if (check(ec != NULL, "its key loads"))
    test_breaker(&B, ec);
  free_key(&B, ec);
  provider_unload(&B);

  pthread_mutex_lock(&fk.lock);
  fk.stop = 1;
  pthread_mutex_unlock(&fk.lock);
  pthread_join(thread, NULL);
  close(fk.listen_fd);
  unlink(sock);
  unlink(secret);
  printf("1..%d\n", tests);
  return failures == 0 ? 0 : 1;
}
