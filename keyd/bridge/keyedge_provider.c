/*
 * keyedge bridge: an OpenSSL 3 provider whose keys live in keyd. It decodes a
 * "KEYEDGE KEY REFERENCE" PEM into a public-only key object and turns every
 * signature on it into a keyd SIGN request (keyd/protocol/PROTOCOL.md).
 *
 * It links no libcrypto: parameters are walked by hand and everything the
 * core offers comes from the dispatch table handed to OSSL_provider_init.
 */
#define _GNU_SOURCE /* memmem */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <openssl/core.h>
#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/core_object.h>
#include <openssl/params.h> /* only the OSSL_PARAM_* initialiser macros */

#define MAX_FRAME (1024 * 1024)
#define MAX_REF 65536
#define STRUCTURE "keyedge"

enum { OP_HELLO = 1, OP_GET_PUBLIC_KEY = 3, OP_SIGN = 4, OP_ERROR = 0xff };
enum {
  T_CLIENT_NAME = 1, T_CLIENT_SECRET, T_KEY_NAME, T_KEY_VERSION, T_KEY_TYPE, T_ALGORITHM,
  T_MESSAGE, T_SIGNATURE, T_PUBLIC_KEY, T_EC_POINT, T_RSA_N, T_RSA_E, T_KEY_BITS,
  T_ERROR_CODE, T_ERROR_MESSAGE
};
/* reason codes on the OpenSSL error stack; R_KEYD + n is keyd's ERROR_CODE n */
enum {
  R_TIMEOUT = 1, R_REFUSED, R_NO_SOCKET, R_IO, R_PROTOCOL, R_CONFIG, R_SECRET, R_BAD_REF,
  R_UNSUPPORTED, R_KEY_MISMATCH, R_KEYD = 100
};
static const char *const keyd_errors[] = {
  NULL, "bad frame", "unsupported version", "frame too large", "unknown opcode",
  "not authenticated", "unknown client", "forbidden", "missing item", "key not found",
  "key exists", "bad algorithm", "policy denied the message", "bad key name",
  "bad key type", "internal error", "overloaded"
};
#define KEYD_ERRORS ((int)(sizeof(keyd_errors) / sizeof(keyd_errors[0])))

/* ---------- core upcalls, configuration, errors ---------- */

static const OSSL_CORE_HANDLE *g_handle;
static OSSL_FUNC_core_get_params_fn *c_get_params;
static OSSL_FUNC_core_new_error_fn *c_new_error;
static OSSL_FUNC_core_set_error_debug_fn *c_set_error_debug;
static OSSL_FUNC_core_vset_error_fn *c_vset_error;
static OSSL_FUNC_BIO_read_ex_fn *c_bio_read_ex;

static char g_socket[108], g_client[256], g_secret_file[4096];
static int g_timeout_ms = 1000;

__attribute__((format(printf, 5, 6)))
static void raise_err(const char *file, int line, const char *func, int reason,
                      const char *fmt, ...) {
  va_list ap;
  if (c_new_error == NULL || c_vset_error == NULL) return;
  c_new_error(g_handle);
  if (c_set_error_debug != NULL)
    c_set_error_debug(g_handle, file, line, func);
  va_start(ap, fmt);
  c_vset_error(g_handle, (uint32_t)reason, fmt, ap);
  va_end(ap);
}
#define ERR(reason, ...) raise_err(__FILE__, __LINE__, __func__, (reason), __VA_ARGS__)

/* ---------- OSSL_PARAM by hand ---------- */

static const OSSL_PARAM *p_find(const OSSL_PARAM *p, const char *key) {
  for (; p != NULL && p->key != NULL; p++)
    if (strcmp(p->key, key) == 0) return p;
  return NULL;
}

static int p_get_long(const OSSL_PARAM *p, long *out) {
  int is_int = p->data_type == OSSL_PARAM_INTEGER;
  if (!is_int && p->data_type != OSSL_PARAM_UNSIGNED_INTEGER) return 0;
  if (p->data_size == 4)
    *out = is_int ? (long)*(const int32_t *)p->data : (long)*(const uint32_t *)p->data;
  else if (p->data_size == 8)
    *out = (long)*(const int64_t *)p->data;
  else
    return 0;
  return 1;
}

static const char *p_get_str(const OSSL_PARAM *p) {
  if (p->data_type == OSSL_PARAM_UTF8_STRING) return p->data;
  if (p->data_type == OSSL_PARAM_UTF8_PTR && p->data != NULL) return *(const char *const *)p->data;
  return NULL;
}

static int p_set_long(OSSL_PARAM *p, long v) {
  if (p->data_type != OSSL_PARAM_INTEGER && p->data_type != OSSL_PARAM_UNSIGNED_INTEGER) return 0;
  p->return_size = p->data == NULL ? sizeof(int) : p->data_size;
  if (p->data == NULL) return 1;
  if (p->data_size == 4)
    *(int32_t *)p->data = (int32_t)v;
  else if (p->data_size == 8)
    *(int64_t *)p->data = v;
  else
    return 0;
  return 1;
}

static int p_set_bytes(OSSL_PARAM *p, unsigned int type, const void *v, size_t len) {
  if (p->data_type != type) return 0;
  p->return_size = len;
  if (p->data == NULL) return 1;
  if (p->data_size < len) return 0;
  memcpy(p->data, v, len);
  if (type == OSSL_PARAM_UTF8_STRING && p->data_size > len)
    ((char *)p->data)[len] = '\0';
  return 1;
}

/* big-endian bytes into an OSSL_PARAM unsigned integer, which is in native byte order */
static int p_set_bn(OSSL_PARAM *p, const unsigned char *be, size_t len) {
  unsigned char *d = p->data;
  size_t i;
  if (p->data_type != OSSL_PARAM_UNSIGNED_INTEGER) return 0;
  p->return_size = len;
  if (d == NULL) return 1;
  if (p->data_size < len) return 0;
  memset(d, 0, p->data_size);
  for (i = 0; i < len; i++)
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    d[i] = be[len - 1 - i];
#else
    d[p->data_size - len + i] = be[i];
#endif
  p->return_size = p->data_size;
  return 1;
}

/* ---------- byte buffers and items ---------- */

typedef struct { unsigned char *p; size_t len, cap; } BUF;

static int buf_add(BUF *b, const void *data, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    unsigned char *np;
    while (cap < b->len + n)
      cap *= 2;
    if ((np = realloc(b->p, cap)) == NULL) return 0;
    b->p = np;
    b->cap = cap;
  }
  if (n && data != NULL) /* data NULL: only reserve */
    memcpy(b->p + b->len, data, n);
  b->len += n;
  return 1;
}

static void buf_wipe(BUF *b) {
  if (b->p != NULL)
    memset(b->p, 0, b->cap);
  free(b->p);
}

/* read everything from a core BIO, at most max bytes */
static int buf_read_bio(BUF *b, OSSL_CORE_BIO *cin, size_t max) {
  unsigned char chunk[1024];
  size_t n;
  while (c_bio_read_ex != NULL && c_bio_read_ex(cin, chunk, sizeof(chunk), &n) && n > 0)
    if (b->len + n > max || !buf_add(b, chunk, n)) return 0;
  return 1;
}

static void put32(unsigned char *d, uint32_t v) {
  d[0] = v >> 24; d[1] = v >> 16; d[2] = v >> 8; d[3] = v;
}

static uint32_t get32(const unsigned char *d) {
  return (uint32_t)d[0] << 24 | (uint32_t)d[1] << 16 | (uint32_t)d[2] << 8 | d[3];
}

static int item_add(BUF *b, int tag, const void *v, size_t n) {
  unsigned char h[5] = { (unsigned char)tag };
  put32(h + 1, (uint32_t)n);
  return buf_add(b, h, 5) && buf_add(b, v, n);
}

/* first item with this tag; 1 found, 0 absent, -1 malformed */
static int item_find(const BUF *b, int tag, const unsigned char **val, size_t *vlen) {
  size_t off = 0;
  while (off < b->len) {
    uint32_t n;
    if (b->len - off < 5 || (n = get32(b->p + off + 1)) > b->len - off - 5) return -1;
    if (b->p[off] == tag) {
      *val = b->p + off + 5;
      *vlen = n;
      return 1;
    }
    off += 5 + (size_t)n;
  }
  return 0;
}

static int item_u32(const BUF *b, int tag, uint32_t *out) {
  const unsigned char *v;
  size_t n;
  if (item_find(b, tag, &v, &n) != 1 || n != 4) return 0;
  *out = get32(v);
  return 1;
}

/* ---------- transport: one connection per process, every wait bounded ---------- */

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_fd = -1;
static pid_t g_pid;
static uint32_t g_next_id = 1;

enum { IO_OK = 0, IO_TIMEOUT, IO_DEAD, IO_FAIL };

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int wait_fd(short events, long long deadline) {
  for (;;) {
    struct pollfd pfd = { g_fd, events, 0 };
    long long left = deadline - now_ms();
    int r = left > 0 ? poll(&pfd, 1, (int)left) : 0;
    if (r > 0) return IO_OK;
    if (r == 0) return IO_TIMEOUT;
    if (errno != EINTR) return IO_FAIL;
  }
}

static void conn_close(void) {
  if (g_fd >= 0)
    close(g_fd);
  g_fd = -1;
}

static int io_write(const unsigned char *p, size_t n, long long deadline) {
  while (n > 0) {
    ssize_t w = send(g_fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    int r;
    if (w > 0) {
      p += w;
      n -= (size_t)w;
    } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if ((r = wait_fd(POLLOUT, deadline)) != IO_OK) return r;
    } else if (w < 0 && errno != EINTR) {
      return (errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN) ? IO_DEAD : IO_FAIL;
    }
  }
  return IO_OK;
}

/* *got counts the bytes read so far: a peer that vanished before answering is IO_DEAD */
static int io_read(unsigned char *p, size_t n, long long deadline, size_t *got) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = recv(g_fd, p + done, n - done, MSG_DONTWAIT);
    int w;
    if (r > 0) {
      done += (size_t)r;
      *got += (size_t)r;
    } else if (r == 0) {
      return *got == 0 ? IO_DEAD : IO_FAIL;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if ((w = wait_fd(POLLIN, deadline)) != IO_OK) return w;
    } else if (errno != EINTR) {
      return errno == ECONNRESET && *got == 0 ? IO_DEAD : IO_FAIL;
    }
  }
  return IO_OK;
}

/* Send one request frame, read the frame answering it: *rop and resp get its opcode and payload. */
static int roundtrip(int op, const BUF *payload, int *rop, BUF *resp, long long deadline) {
  unsigned char h[12] = { 0, 0, 0, 0, 1, (unsigned char)op };
  uint32_t id = g_next_id++;
  size_t got = 0;
  BUF req = { 0 };
  int r;

  put32(h, (uint32_t)(8 + payload->len));
  put32(h + 8, id);
  r = buf_add(&req, h, 12) && buf_add(&req, payload->p, payload->len)
      ? io_write(req.p, req.len, deadline) : IO_FAIL;
  buf_wipe(&req);
  while (r == IO_OK) {
    uint32_t len;
    if ((r = io_read(h, 12, deadline, &got)) != IO_OK) break;
    if ((len = get32(h)) < 8 || len + 4 > MAX_FRAME || h[4] != 1) return IO_FAIL;
    resp->len = 0;
    if (!buf_add(resp, NULL, len - 8)) return IO_FAIL;
    if ((r = io_read(resp->p, len - 8, deadline, &got)) == IO_OK && get32(h + 8) == id) {
      *rop = h[5];
      break;
    } /* else an answer to an earlier request: skip it */
  }
  return r;
}

static void raise_keyd_error(const BUF *resp) {
  const unsigned char *v;
  size_t n;
  int code = 0;
  char msg[256] = "";
  if (item_find(resp, T_ERROR_CODE, &v, &n) == 1 && n == 2)
    code = v[0] << 8 | v[1];
  if (item_find(resp, T_ERROR_MESSAGE, &v, &n) == 1) {
    n = n < sizeof(msg) ? n : sizeof(msg) - 1;
    memcpy(msg, v, n);
    msg[n] = '\0';
  }
  if (code > 0 && code < KEYD_ERRORS)
    ERR(R_KEYD + code, "keyd: %s", msg[0] ? msg : keyd_errors[code]);
  else
    ERR(R_PROTOCOL, "keyd: error %d: %s", code, msg);
}

static void report_io(int r) {
  if (r == IO_TIMEOUT)
    ERR(R_TIMEOUT, "keyd: no answer within %d ms", g_timeout_ms);
  else
    ERR(R_IO, "keyd: connection to %s failed", g_socket);
}

/* the client secret: the file's bytes with trailing whitespace trimmed */
static int read_secret(BUF *out) {
  int fd = open(g_secret_file, O_RDONLY | O_CLOEXEC), ok = fd >= 0;
  unsigned char chunk[512];
  ssize_t n;
  while (ok && (n = read(fd, chunk, sizeof(chunk))) != 0)
    ok = n > 0 && out->len + (size_t)n <= 65536 && buf_add(out, chunk, (size_t)n);
  if (fd >= 0)
    close(fd);
  while (ok && out->len > 0 && strchr(" \t\r\n", out->p[out->len - 1]) != NULL)
    out->len--;
  return ok;
}

/* Connect and say HELLO; on failure an error is raised and 0 returned. */
static int conn_open(long long deadline) {
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  BUF hello = { 0 }, secret = { 0 }, resp = { 0 };
  int rop = 0, r;

  if (g_socket[0] == '\0') {
    ERR(R_CONFIG, "keyedge: keyd_socket not configured, or longer than 107 bytes");
    return 0;
  }
  memcpy(sa.sun_path, g_socket, strlen(g_socket));
  if ((g_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0) {
    ERR(R_IO, "keyd: socket(): %s", strerror(errno));
    return 0;
  }
  while (connect(g_fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
    struct timespec pause = { 0, 2000000 };
    if (errno == EINTR) continue;
    if ((errno == EAGAIN || errno == EINPROGRESS) && now_ms() < deadline) {
      nanosleep(&pause, NULL); /* listen backlog full: retry until the deadline */
      continue;
    }
    if (errno == EAGAIN || errno == EINPROGRESS)
      report_io(IO_TIMEOUT);
    else if (errno == ENOENT)
      ERR(R_NO_SOCKET, "keyd: no socket at %s", g_socket);
    else if (errno == ECONNREFUSED)
      ERR(R_REFUSED, "keyd: connection refused at %s", g_socket);
    else
      ERR(R_IO, "keyd: cannot connect to %s: %s", g_socket, strerror(errno));
    conn_close();
    return 0;
  }
  if (!read_secret(&secret)) {
    ERR(R_SECRET, "keyedge: cannot read client_secret_file %s", g_secret_file);
    r = -1;
  } else {
    r = item_add(&hello, T_CLIENT_NAME, g_client, strlen(g_client))
        && item_add(&hello, T_CLIENT_SECRET, secret.p, secret.len)
        ? roundtrip(OP_HELLO, &hello, &rop, &resp, deadline) : IO_FAIL;
    if (r != IO_OK)
      report_io(r);
    else if (rop == OP_ERROR)
      raise_keyd_error(&resp);
    else if (rop != (OP_HELLO | 0x80))
      ERR(R_PROTOCOL, "keyd: unexpected answer to HELLO");
  }
  buf_wipe(&secret);
  buf_wipe(&hello);
  free(resp.p);
  if (r != IO_OK || rop != (OP_HELLO | 0x80))
    conn_close();
  return g_fd >= 0;
}

/* An idle connection that keyd closed (restart) polls readable (EOF) or hung up. */
static int conn_idle_dead(void) {
  struct pollfd pfd = { g_fd, POLLIN, 0 };
  return poll(&pfd, 1, 0) != 0;
}

/*
 * One request and its answer, bounded by g_timeout_ms in total. A connection that
 * worked before and turns out dead is reopened once within the same deadline.
 * Returns 1 with resp filled, or 0 with an error raised.
 */
static int keyd_call(int op, const BUF *payload, BUF *resp) {
  long long deadline = now_ms() + g_timeout_ms;
  int retried = 0, ok = 0;

  pthread_mutex_lock(&g_lock);
  if (g_fd >= 0 && g_pid != getpid())
    conn_close(); /* inherited over fork(): not ours to share */
  for (;;) {
    int reused = g_fd >= 0, rop = 0, r;
    if (reused && conn_idle_dead()) {
      conn_close();
      reused = 0;
    }
    if (g_fd < 0 && !conn_open(deadline)) break;
    g_pid = getpid();
    if ((r = roundtrip(op, payload, &rop, resp, deadline)) == IO_OK) {
      if (rop == (op | 0x80))
        ok = 1;
      else if (rop == OP_ERROR)
        raise_keyd_error(resp);
      else
        ERR(R_PROTOCOL, "keyd: unexpected opcode 0x%02x", rop);
      break;
    }
    conn_close(); /* after a timeout, a late answer must not meet the next request */
    if (r == IO_DEAD && reused && !retried) {
      retried = 1;
      continue;
    }
    report_io(r);
    break;
  }
  pthread_mutex_unlock(&g_lock);
  return ok;
}

/* ---------- keys: name, version, type and the public part fetched once ---------- */

enum { KT_EC = 1, KT_RSA = 2 };

typedef struct {
  int kind;
  char name[65], type[16];
  uint32_t version, bits;
  unsigned char *pub; /* EC point (0x04||X||Y) or RSA modulus */
  size_t publen, elen;
  unsigned char e[16];
} KEY;

static void key_free(void *vk) {
  KEY *k = vk;
  if (k != NULL)
    free(k->pub);
  free(k);
}

/* "KER1" + KEY_NAME, KEY_VERSION, KEY_TYPE items (PROTOCOL.md "Key reference") */
static int parse_ref(const unsigned char *p, size_t len, KEY *k) {
  BUF items = { (unsigned char *)p + 4, len - 4, 0 };
  const unsigned char *v;
  size_t n;
  memset(k, 0, sizeof(*k));
  if (len < 4 || memcmp(p, "KER1", 4) != 0) return 0;
  if (item_find(&items, T_KEY_NAME, &v, &n) != 1 || n == 0 || n >= sizeof(k->name)) return 0;
  memcpy(k->name, v, n);
  if (item_find(&items, T_KEY_TYPE, &v, &n) != 1 || n == 0 || n >= sizeof(k->type)) return 0;
  memcpy(k->type, v, n);
  if (!item_u32(&items, T_KEY_VERSION, &k->version))
    k->version = 0;
  if (strcmp(k->type, "ec-p256") == 0 || strcmp(k->type, "ec-p384") == 0)
    k->kind = KT_EC;
  else if (strncmp(k->type, "rsa-", 4) == 0)
    k->kind = KT_RSA;
  return k->kind != 0;
}

static int add_key_items(BUF *b, const KEY *k) {
  unsigned char ver[4];
  put32(ver, k->version);
  return item_add(b, T_KEY_NAME, k->name, strlen(k->name))
         && (k->version == 0 || item_add(b, T_KEY_VERSION, ver, 4));
}

/* A pinned version's public key never changes: remember it, so loading a reference again (a reload,
 * another TLS server for a new ticket key) needs no keyd round trip and works while keyd is down. */
#define PUB_CACHE_SIZE 64
static KEY g_pub_cache[PUB_CACHE_SIZE];
static unsigned g_pub_cache_next;
static pthread_mutex_t g_pub_lock = PTHREAD_MUTEX_INITIALIZER;

static int pub_cache_get(KEY *k) {
  int hit = 0;
  pthread_mutex_lock(&g_pub_lock);
  for (unsigned i = 0; i < PUB_CACHE_SIZE && !hit; i++) {
    const KEY *c = &g_pub_cache[i];
    if (c->pub == NULL || c->version != k->version || strcmp(c->name, k->name) != 0 || strcmp(c->type, k->type) != 0)
      continue;
    if ((k->pub = malloc(c->publen)) == NULL) break;
    memcpy(k->pub, c->pub, k->publen = c->publen);
    memcpy(k->e, c->e, k->elen = c->elen);
    k->bits = c->bits;
    hit = 1;
  }
  pthread_mutex_unlock(&g_pub_lock);
  return hit;
}

static void pub_cache_put(const KEY *k) {
  unsigned char *copy = malloc(k->publen);
  if (copy == NULL) return;
  memcpy(copy, k->pub, k->publen);
  pthread_mutex_lock(&g_pub_lock);
  KEY *c = &g_pub_cache[g_pub_cache_next++ % PUB_CACHE_SIZE];
  free(c->pub);
  *c = *k;
  c->pub = copy;
  pthread_mutex_unlock(&g_pub_lock);
}

static void *key_load(const void *ref, size_t ref_sz, int kind) {
  KEY *k = calloc(1, sizeof(*k));
  BUF req = { 0 }, resp = { 0 };
  const unsigned char *v = NULL, *e;
  size_t n = 0, elen;
  int ok = 0;

  if (k == NULL) return NULL;
  if (!parse_ref(ref, ref_sz, k) || k->kind != kind) {
    ERR(R_BAD_REF, "keyedge: not a usable key reference");
    goto done;
  }
  if (k->version != 0 && pub_cache_get(k)) {
    ok = 1;
    goto done;
  }
  if (!add_key_items(&req, k) || !keyd_call(OP_GET_PUBLIC_KEY, &req, &resp)) goto done;
  if (item_find(&resp, T_KEY_TYPE, &v, &n) != 1 || n != strlen(k->type)
      || memcmp(v, k->type, n) != 0) {
    ERR(R_KEY_MISMATCH, "keyd: key %s is not of type %s", k->name, k->type);
    goto done;
  }
  if (!item_u32(&resp, T_KEY_BITS, &k->bits))
    k->bits = 0;
  if (kind == KT_EC)
    ok = k->bits == (strcmp(k->type, "ec-p256") == 0 ? 256u : 384u)
         && item_find(&resp, T_EC_POINT, &v, &n) == 1 && n == 1 + 2 * k->bits / 8 && v[0] == 4;
  else if ((ok = k->bits >= 1024 && item_find(&resp, T_RSA_E, &e, &elen) == 1 && elen > 0
                 && elen <= sizeof(k->e) && item_find(&resp, T_RSA_N, &v, &n) == 1
                 && n == (k->bits + 7) / 8 && n <= 1024))
    memcpy(k->e, e, k->elen = elen);
  if (!ok)
    ERR(R_PROTOCOL, "keyd: malformed public key for %s", k->name);
  else if ((ok = (k->pub = malloc(n)) != NULL)) {
    memcpy(k->pub, v, k->publen = n);
    if (k->version != 0) pub_cache_put(k);
  }
done:
  free(req.p);
  free(resp.p);
  if (!ok)
    key_free(k);
  return ok ? k : NULL;
}

static void *ec_load(const void *ref, size_t sz) { return key_load(ref, sz, KT_EC); }
static void *rsa_load(const void *ref, size_t sz) { return key_load(ref, sz, KT_RSA); }

/* public part here, private part in keyd, domain parameters implied by the type */
static int key_has(const void *k, int selection) { (void)selection; return k != NULL; }

static int key_security_bits(const KEY *k) {
  if (k->kind == KT_EC) return (int)k->bits / 2;
  return k->bits >= 15360 ? 256 : k->bits >= 7680 ? 192 : k->bits >= 4096 ? 152
       : k->bits >= 3072 ? 128 : k->bits >= 2048 ? 112 : 80;
}

static int key_max_sig(const KEY *k) {
  int content = 2 * (3 + (int)(k->bits + 7) / 8); /* DER SEQUENCE of two INTEGERs */
  if (k->kind == KT_EC) return content + (content < 128 ? 2 : 3);
  return (int)(k->bits + 7) / 8;
}

static const char *ec_group(const KEY *k) { return k->bits == 256 ? "prime256v1" : "secp384r1"; }

static int key_get_params(void *vk, OSSL_PARAM params[]) {
  KEY *k = vk;
  OSSL_PARAM *p;
  int ec = k->kind == KT_EC, ok = 1;
  for (p = params; ok && p != NULL && p->key != NULL; p++) {
    const char *s = p->key;
    if (strcmp(s, OSSL_PKEY_PARAM_BITS) == 0)
      ok = p_set_long(p, k->bits);
    else if (strcmp(s, OSSL_PKEY_PARAM_SECURITY_BITS) == 0)
      ok = p_set_long(p, key_security_bits(k));
    else if (strcmp(s, OSSL_PKEY_PARAM_MAX_SIZE) == 0)
      ok = p_set_long(p, key_max_sig(k));
    else if (strcmp(s, OSSL_PKEY_PARAM_DEFAULT_DIGEST) == 0)
      ok = p_set_bytes(p, OSSL_PARAM_UTF8_STRING, "SHA256", 6);
    else if (ec && strcmp(s, OSSL_PKEY_PARAM_GROUP_NAME) == 0)
      ok = p_set_bytes(p, OSSL_PARAM_UTF8_STRING, ec_group(k), strlen(ec_group(k)));
    else if (ec && strcmp(s, OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT) == 0)
      ok = p_set_bytes(p, OSSL_PARAM_UTF8_STRING, "uncompressed", 12);
    else if (ec && (strcmp(s, OSSL_PKEY_PARAM_PUB_KEY) == 0
                    || strcmp(s, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY) == 0))
      ok = p_set_bytes(p, OSSL_PARAM_OCTET_STRING, k->pub, k->publen);
    else if (!ec && strcmp(s, OSSL_PKEY_PARAM_RSA_N) == 0)
      ok = p_set_bn(p, k->pub, k->publen);
    else if (!ec && strcmp(s, OSSL_PKEY_PARAM_RSA_E) == 0)
      ok = p_set_bn(p, k->e, k->elen);
  }
  return ok;
}

#define COMMON_GETTABLE                                         \
  OSSL_PARAM_int(OSSL_PKEY_PARAM_BITS, NULL),                   \
  OSSL_PARAM_int(OSSL_PKEY_PARAM_SECURITY_BITS, NULL),          \
  OSSL_PARAM_int(OSSL_PKEY_PARAM_MAX_SIZE, NULL),               \
  OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_DEFAULT_DIGEST, NULL, 0)
#define EC_PUBLIC                                               \
  OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0),  \
  OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0)
#define RSA_PUBLIC                                              \
  OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, NULL, 0),                \
  OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, NULL, 0)

static const OSSL_PARAM ec_gettable[] = {
  COMMON_GETTABLE, EC_PUBLIC,
  OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, NULL, 0),
  OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, NULL, 0), OSSL_PARAM_END
};
static const OSSL_PARAM rsa_gettable[] = { COMMON_GETTABLE, RSA_PUBLIC, OSSL_PARAM_END };
static const OSSL_PARAM ec_exportable[] = { EC_PUBLIC, OSSL_PARAM_END };
static const OSSL_PARAM rsa_exportable[] = { RSA_PUBLIC, OSSL_PARAM_END };

static const OSSL_PARAM *ec_gettable_params(void *pctx) { (void)pctx; return ec_gettable; }
static const OSSL_PARAM *rsa_gettable_params(void *pctx) { (void)pctx; return rsa_gettable; }
static const OSSL_PARAM *ec_export_types(int sel) {
  return (sel & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) ? NULL : ec_exportable;
}
static const OSSL_PARAM *rsa_export_types(int sel) {
  return (sel & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) ? NULL : rsa_exportable;
}

/*
 * Export the public part only. Refusing a selection with the private key matters:
 * to sign, libcrypto first tries to move the key into the default provider, and
 * must fail there to fall back to our SIGNATURE.
 */
static int key_export(void *vk, int selection, OSSL_CALLBACK *cb, void *cbarg) {
  KEY *k = vk;
  OSSL_PARAM out[3] = { OSSL_PARAM_END, OSSL_PARAM_END, OSSL_PARAM_END };
  unsigned char n_le[1024], e_le[16];
  int i = 0;

  if (k == NULL || (selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0) return 0;
  if (k->kind == KT_EC) {
    if (selection & OSSL_KEYMGMT_SELECT_DOMAIN_PARAMETERS)
      out[i++] = (OSSL_PARAM)OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME,
                                                     (char *)ec_group(k), strlen(ec_group(k)));
    if (selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY)
      out[i++] = (OSSL_PARAM)OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, k->pub, k->publen);
  } else if (selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) {
    out[0] = (OSSL_PARAM)OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, n_le, k->publen);
    out[1] = (OSSL_PARAM)OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, e_le, k->elen);
    if (!p_set_bn(&out[0], k->pub, k->publen) || !p_set_bn(&out[1], k->e, k->elen)) return 0;
  }
  return cb(out, cbarg);
}

static const char *ec_operation_name(int op) { return op == OSSL_OP_SIGNATURE ? "ECDSA" : NULL; }
static const char *rsa_operation_name(int op) { return op == OSSL_OP_SIGNATURE ? "RSA" : NULL; }

#define FN(f) ((void (*)(void))(f))
#define KEYMGMT_TABLE(pfx)                                                      \
  static const OSSL_DISPATCH pfx##_keymgmt[] = {                                \
    { OSSL_FUNC_KEYMGMT_LOAD, FN(pfx##_load) },                                 \
    { OSSL_FUNC_KEYMGMT_FREE, FN(key_free) },                                   \
    { OSSL_FUNC_KEYMGMT_HAS, FN(key_has) },                                     \
    { OSSL_FUNC_KEYMGMT_GET_PARAMS, FN(key_get_params) },                       \
    { OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, FN(pfx##_gettable_params) },           \
    { OSSL_FUNC_KEYMGMT_EXPORT, FN(key_export) },                               \
    { OSSL_FUNC_KEYMGMT_EXPORT_TYPES, FN(pfx##_export_types) },                 \
    { OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, FN(pfx##_operation_name) },       \
    { 0, NULL }                                                                 \
  }
KEYMGMT_TABLE(ec);
KEYMGMT_TABLE(rsa);

/* ---------- signature: the whole message goes to keyd ---------- */

enum { PAD_PKCS1 = 1, PAD_PSS = 6 }; /* RSA_PKCS1_PADDING, RSA_PKCS1_PSS_PADDING */

typedef struct {
  KEY *key;
  int md, mgf1, pad; /* md and mgf1: 256, 384 or 512 (mgf1 0 = md) */
  long saltlen;
  BUF msg;
} SIGCTX;

static int md_bits(const char *name) {
  static const char *const names[] = {
    "SHA256", "SHA2-256", "SHA-256", "SHA384", "SHA2-384", "SHA-384", "SHA512", "SHA2-512", "SHA-512"
  };
  size_t i;
  for (i = 0; name != NULL && i < sizeof(names) / sizeof(names[0]); i++)
    if (strcasecmp(name, names[i]) == 0) return 256 + 128 * (int)(i / 3);
  return 0;
}

static void *sig_newctx(void *provctx, const char *propq) {
  (void)provctx;
  (void)propq;
  return calloc(1, sizeof(SIGCTX));
}

static void sig_freectx(void *vctx) {
  SIGCTX *c = vctx;
  if (c != NULL)
    free(c->msg.p);
  free(c);
}

static void *sig_dupctx(void *vctx) {
  SIGCTX *c = vctx, *d = malloc(sizeof(*d));
  if (d == NULL) return NULL;
  *d = *c;
  memset(&d->msg, 0, sizeof(d->msg));
  if (!buf_add(&d->msg, c->msg.p, c->msg.len)) {
    free(d);
    return NULL;
  }
  return d;
}

/* padding and salt length arrive as integers or as strings, depending on the caller */
static int sig_set_ctx_params(void *vctx, const OSSL_PARAM params[]) {
  SIGCTX *c = vctx;
  const OSSL_PARAM *p;
  const char *s;
  long v;

  if ((p = p_find(params, OSSL_SIGNATURE_PARAM_DIGEST)) != NULL
      && (c->md = md_bits(s = p_get_str(p))) == 0) {
    ERR(R_UNSUPPORTED, "keyedge: digest %s not supported", s != NULL ? s : "?");
    return 0;
  }
  if ((p = p_find(params, OSSL_SIGNATURE_PARAM_MGF1_DIGEST)) != NULL
      && (c->mgf1 = md_bits(p_get_str(p))) == 0)
    return 0;
  if ((p = p_find(params, OSSL_SIGNATURE_PARAM_PAD_MODE)) != NULL) {
    if ((s = p_get_str(p)) != NULL)
      v = strcmp(s, OSSL_PKEY_RSA_PAD_MODE_PKCSV15) == 0 ? PAD_PKCS1
          : strcmp(s, OSSL_PKEY_RSA_PAD_MODE_PSS) == 0 ? PAD_PSS : 0;
    else if (!p_get_long(p, &v)) return 0;
    if (v != PAD_PKCS1 && v != PAD_PSS) {
      ERR(R_UNSUPPORTED, "keyedge: only PKCS#1 v1.5 and PSS padding are supported");
      return 0;
    }
    c->pad = (int)v;
  }
  if ((p = p_find(params, OSSL_SIGNATURE_PARAM_PSS_SALTLEN)) != NULL) {
    if ((s = p_get_str(p)) != NULL) /* digest, max, auto, auto-digestmax, or a number */
      c->saltlen = (s[0] >= '0' && s[0] <= '9') ? strtol(s, NULL, 10) : -1;
    else if (!p_get_long(p, &c->saltlen)) return 0;
  }
  return 1;
}

static const OSSL_PARAM sig_settable[] = {
  OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
  OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PROPERTIES, NULL, 0),
  OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, NULL, 0),
  OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, NULL, 0),
  OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, NULL, 0),
  OSSL_PARAM_END
};

static const OSSL_PARAM *sig_settable_ctx_params(void *vctx, void *provctx) {
  (void)vctx;
  (void)provctx;
  return sig_settable;
}

static int sig_init(void *vctx, const char *mdname, void *provkey, const OSSL_PARAM params[]) {
  SIGCTX *c = vctx;
  if (provkey != NULL)
    c->key = provkey;
  if (c->key == NULL) return 0;
  c->md = 256;
  c->mgf1 = 0;
  c->pad = c->key->kind == KT_RSA ? PAD_PKCS1 : 0;
  c->saltlen = -1;
  c->msg.len = 0;
  if (mdname != NULL && mdname[0] != '\0' && (c->md = md_bits(mdname)) == 0) {
    ERR(R_UNSUPPORTED, "keyedge: digest %s not supported", mdname);
    return 0;
  }
  return sig_set_ctx_params(c, params);
}

/* keyd's ALGORITHM code for this context, or 0 with an error raised */
static int sig_algorithm(const SIGCTX *c) {
  int i = (c->md - 128) / 128; /* 1, 2, 3 for SHA-256, -384, -512 */
  if (c->key->kind == KT_EC) return i;
  if (c->pad == PAD_PKCS1) return 0x10 + i;
  /* PSS: MGF1 with the same digest, salt as long as the digest (negative: OpenSSL's "digest",
   * "max", "auto" and "auto-digestmax", all of which a salt of the digest length satisfies) */
  if ((c->mgf1 == 0 || c->mgf1 == c->md)
      && (c->saltlen < 0 ? c->saltlen >= -4 : c->saltlen == c->md / 8))
    return 0x20 + i;
  ERR(R_UNSUPPORTED, "keyedge: keyd signs PSS only with MGF1 of the digest and a salt of its length");
  return 0;
}

static int sig_sign(void *vctx, unsigned char *sig, size_t *siglen, size_t sigsize,
                    const unsigned char *tbs, size_t tbslen) {
  SIGCTX *c = vctx;
  BUF req = { 0 }, resp = { 0 };
  const unsigned char *v;
  size_t n;
  int alg, ok = 0;
  unsigned char a[2];

  if (c->key == NULL) return 0;
  if (sig == NULL) { /* size query: no keyd call */
    *siglen = (size_t)key_max_sig(c->key);
    return 1;
  }
  if ((alg = sig_algorithm(c)) == 0) return 0;
  a[0] = (unsigned char)(alg >> 8);
  a[1] = (unsigned char)alg;
  if (add_key_items(&req, c->key) && item_add(&req, T_ALGORITHM, a, 2)
      && item_add(&req, T_MESSAGE, tbs, tbslen) && keyd_call(OP_SIGN, &req, &resp)) {
    if (item_find(&resp, T_SIGNATURE, &v, &n) != 1 || n == 0 || n > sigsize) {
      ERR(R_PROTOCOL, "keyd: answer to SIGN without a signature that fits %zu bytes", sigsize);
    } else {
      memcpy(sig, v, n);
      *siglen = n;
      ok = 1;
    }
  }
  free(req.p);
  free(resp.p);
  return ok;
}

static int sig_update(void *vctx, const unsigned char *data, size_t len) {
  SIGCTX *c = vctx;
  if (c->msg.len + len > MAX_FRAME - 4096) {
    ERR(R_UNSUPPORTED, "keyedge: message too large for keyd");
    return 0;
  }
  return buf_add(&c->msg, data, len);
}

static int sig_final(void *vctx, unsigned char *sig, size_t *siglen, size_t sigsize) {
  SIGCTX *c = vctx;
  return sig_sign(c, sig, siglen, sigsize, c->msg.p, c->msg.len);
}

static const OSSL_DISPATCH sig_functions[] = {
  { OSSL_FUNC_SIGNATURE_NEWCTX, FN(sig_newctx) },
  { OSSL_FUNC_SIGNATURE_FREECTX, FN(sig_freectx) },
  { OSSL_FUNC_SIGNATURE_DUPCTX, FN(sig_dupctx) },
  { OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, FN(sig_init) },
  { OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE, FN(sig_update) },
  { OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL, FN(sig_final) },
  { OSSL_FUNC_SIGNATURE_DIGEST_SIGN, FN(sig_sign) },
  { OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS, FN(sig_set_ctx_params) },
  { OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, FN(sig_settable_ctx_params) },
  { 0, NULL }
};

/* ---------- decoders: PEM label -> our DER structure -> key reference ---------- */

static const char PEM_BEGIN[] = "-----BEGIN KEYEDGE KEY REFERENCE-----";
static const char PEM_END[] = "-----END KEYEDGE KEY REFERENCE-----";

static void *dec_newctx(void *provctx) { return provctx; }
static void dec_freectx(void *ctx) { (void)ctx; }

/* Find our PEM block in text and base64-decode its body into out. */
static int pem_decode(const BUF *text, BUF *out) {
  static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const char *b = memmem(text->p, text->len, PEM_BEGIN, sizeof(PEM_BEGIN) - 1), *e, *x;
  uint32_t acc = 0;
  int bits = 0;
  if (b == NULL) return 0;
  b += sizeof(PEM_BEGIN) - 1;
  if ((e = memmem(b, text->len - (size_t)(b - (const char *)text->p), PEM_END, sizeof(PEM_END) - 1)) == NULL)
    return 0;
  for (; b < e; b++) {
    unsigned char byte;
    if (*b == '=' || *b == ' ' || *b == '\r' || *b == '\n' || *b == '\t') continue;
    if (*b == '\0' || (x = strchr(b64, *b)) == NULL) return 0;
    acc = acc << 6 | (uint32_t)(x - b64);
    if ((bits += 6) >= 8) {
      bits -= 8;
      byte = (unsigned char)(acc >> bits);
      if (!buf_add(out, &byte, 1)) return 0;
    }
  }
  return out->len >= 4 && memcmp(out->p, "KER1", 4) == 0;
}

/* Returning 1 without calling data_cb means "not mine": other decoders get their turn. */
static int pem_stage(void *ctx, OSSL_CORE_BIO *cin, int selection, OSSL_CALLBACK *data_cb,
                     void *data_cbarg, OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg) {
  BUF text = { 0 }, der = { 0 };
  int ret = 1;
  (void)ctx; (void)selection; (void)pw_cb; (void)pw_cbarg;
  if (buf_read_bio(&text, cin, MAX_REF) && pem_decode(&text, &der)) {
    OSSL_PARAM out[] = {
      OSSL_PARAM_octet_string(OSSL_OBJECT_PARAM_DATA, der.p, der.len),
      OSSL_PARAM_utf8_string(OSSL_OBJECT_PARAM_DATA_STRUCTURE, (char *)STRUCTURE, sizeof(STRUCTURE) - 1),
      OSSL_PARAM_END
    };
    ret = data_cb(out, data_cbarg);
  }
  free(text.p);
  free(der.p);
  return ret;
}

/* Emits an object reference (the KER1 bytes: name and type, never a pointer) for KEYMGMT load. */
static int ref_stage(OSSL_CORE_BIO *cin, int kind, OSSL_CALLBACK *data_cb, void *data_cbarg) {
  BUF der = { 0 };
  KEY k;
  int ret = 1, type = OSSL_OBJECT_PKEY;
  if (buf_read_bio(&der, cin, MAX_REF) && parse_ref(der.p, der.len, &k) && k.kind == kind) {
    const char *dt = kind == KT_EC ? "EC" : "RSA";
    OSSL_PARAM out[] = {
      OSSL_PARAM_int(OSSL_OBJECT_PARAM_TYPE, &type),
      OSSL_PARAM_utf8_string(OSSL_OBJECT_PARAM_DATA_TYPE, (char *)dt, strlen(dt)),
      OSSL_PARAM_octet_string(OSSL_OBJECT_PARAM_REFERENCE, der.p, der.len),
      OSSL_PARAM_END
    };
    ret = data_cb(out, data_cbarg);
  }
  free(der.p);
  return ret;
}

static int ec_stage(void *ctx, OSSL_CORE_BIO *cin, int selection, OSSL_CALLBACK *cb, void *cbarg,
                    OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg) {
  (void)ctx; (void)selection; (void)pw_cb; (void)pw_cbarg;
  return ref_stage(cin, KT_EC, cb, cbarg);
}

static int rsa_stage(void *ctx, OSSL_CORE_BIO *cin, int selection, OSSL_CALLBACK *cb, void *cbarg,
                     OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg) {
  (void)ctx; (void)selection; (void)pw_cb; (void)pw_cbarg;
  return ref_stage(cin, KT_RSA, cb, cbarg);
}

#define DECODER_TABLE(name, fn)                                                 \
  static const OSSL_DISPATCH name[] = {                                         \
    { OSSL_FUNC_DECODER_NEWCTX, FN(dec_newctx) },                               \
    { OSSL_FUNC_DECODER_FREECTX, FN(dec_freectx) },                             \
    { OSSL_FUNC_DECODER_DECODE, FN(fn) },                                       \
    { 0, NULL }                                                                 \
  }
DECODER_TABLE(pem_decoder, pem_stage);
DECODER_TABLE(ec_decoder, ec_stage);
DECODER_TABLE(rsa_decoder, rsa_stage);

/* ---------- provider ---------- */

#define EC_NAMES "EC:id-ecPublicKey:1.2.840.10045.2.1"
#define RSA_NAMES "RSA:rsaEncryption:1.2.840.113549.1.1.1"
#define REF_INPUT "provider=keyedge,input=der,structure=" STRUCTURE

static const OSSL_ALGORITHM decoders[] = {
  { "DER", "provider=keyedge,input=pem", pem_decoder, "keyedge key reference PEM" },
  { EC_NAMES, REF_INPUT, ec_decoder, "keyedge key reference to an EC key" },
  { RSA_NAMES, REF_INPUT, rsa_decoder, "keyedge key reference to an RSA key" },
  { NULL, NULL, NULL, NULL }
};
static const OSSL_ALGORITHM keymgmts[] = {
  { EC_NAMES, "provider=keyedge", ec_keymgmt, "EC key held by keyd" },
  { RSA_NAMES, "provider=keyedge", rsa_keymgmt, "RSA key held by keyd" },
  { NULL, NULL, NULL, NULL }
};
static const OSSL_ALGORITHM signatures[] = {
  { "ECDSA", "provider=keyedge", sig_functions, "ECDSA by keyd" },
  { RSA_NAMES, "provider=keyedge", sig_functions, "RSA by keyd" },
  { NULL, NULL, NULL, NULL }
};

static const OSSL_ALGORITHM *prov_query(void *provctx, int op, int *no_cache) {
  (void)provctx;
  *no_cache = 0;
  return op == OSSL_OP_DECODER ? decoders : op == OSSL_OP_KEYMGMT ? keymgmts
       : op == OSSL_OP_SIGNATURE ? signatures : NULL;
}

/* Reason strings carry the configured values: Node's error messages show only them. */
static char g_reason_timeout[64], g_reason_refused[160], g_reason_nosock[160];
static char g_keyd_reason[KEYD_ERRORS][48];
static OSSL_ITEM g_reasons[R_KEY_MISMATCH + KEYD_ERRORS + 1] = {
  { R_TIMEOUT, g_reason_timeout }, { R_REFUSED, g_reason_refused },
  { R_NO_SOCKET, g_reason_nosock }, { R_IO, "keyd: connection failed" },
  { R_PROTOCOL, "keyd: protocol error" }, { R_CONFIG, "keyedge: provider not configured" },
  { R_SECRET, "keyedge: cannot read client secret file" },
  { R_BAD_REF, "keyedge: bad key reference" },
  { R_UNSUPPORTED, "keyedge: unsupported signature parameters" },
  { R_KEY_MISMATCH, "keyedge: key type differs from the reference" }
};

static void build_reasons(void) {
  int i, n = R_KEY_MISMATCH;
  snprintf(g_reason_timeout, sizeof(g_reason_timeout), "keyd: no answer within %d ms", g_timeout_ms);
  snprintf(g_reason_refused, sizeof(g_reason_refused), "keyd: connection refused at %s", g_socket);
  snprintf(g_reason_nosock, sizeof(g_reason_nosock), "keyd: no socket at %s", g_socket);
  for (i = 1; i < KEYD_ERRORS; i++) {
    snprintf(g_keyd_reason[i], sizeof(g_keyd_reason[i]), "keyd: %s", keyd_errors[i]);
    g_reasons[n++] = (OSSL_ITEM){ (unsigned int)(R_KEYD + i), g_keyd_reason[i] };
  }
}

static const OSSL_ITEM *prov_reasons(void *provctx) { (void)provctx; return g_reasons; }

static int prov_get_params(void *provctx, OSSL_PARAM params[]) {
  OSSL_PARAM *p;
  (void)provctx;
  for (p = params; p != NULL && p->key != NULL; p++)
    if (strcmp(p->key, OSSL_PROV_PARAM_NAME) == 0 && p->data_type == OSSL_PARAM_UTF8_PTR) {
      *(const char **)p->data = "keyedge keyd bridge";
      p->return_size = 19;
    }
    else if (strcmp(p->key, OSSL_PROV_PARAM_STATUS) == 0)
      p_set_long(p, 1);
  return 1;
}

static const OSSL_PARAM prov_gettable[] = {
  OSSL_PARAM_utf8_ptr(OSSL_PROV_PARAM_NAME, NULL, 0), OSSL_PARAM_int(OSSL_PROV_PARAM_STATUS, NULL),
  OSSL_PARAM_END
};
static const OSSL_PARAM *prov_gettable_params(void *provctx) { (void)provctx; return prov_gettable; }

static void prov_teardown(void *provctx) {
  (void)provctx;
  pthread_mutex_lock(&g_lock);
  if (g_pid == getpid())
    conn_close();
  pthread_mutex_unlock(&g_lock);
}

static const OSSL_DISPATCH prov_functions[] = {
  { OSSL_FUNC_PROVIDER_TEARDOWN, FN(prov_teardown) },
  { OSSL_FUNC_PROVIDER_QUERY_OPERATION, FN(prov_query) },
  { OSSL_FUNC_PROVIDER_GET_PARAMS, FN(prov_get_params) },
  { OSSL_FUNC_PROVIDER_GETTABLE_PARAMS, FN(prov_gettable_params) },
  { OSSL_FUNC_PROVIDER_GET_REASON_STRINGS, FN(prov_reasons) },
  { 0, NULL }
};

/* the environment variable wins over the config value */
static const char *setting(const char *cfg, const char *env) {
  const char *v = getenv(env);
  return v != NULL && v[0] != '\0' ? v : cfg;
}

static void set_str(char *dst, size_t cap, const char *v) {
  if (v != NULL && strlen(v) < cap)
    memcpy(dst, v, strlen(v) + 1);
}

__attribute__((visibility("default")))
int OSSL_provider_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
                       const OSSL_DISPATCH **out, void **provctx) {
  static int provctx_token;
  char *sock = NULL, *client = NULL, *secret = NULL, *timeout = NULL;
  OSSL_PARAM req[] = {
    OSSL_PARAM_utf8_ptr("keyd_socket", &sock, 0),
    OSSL_PARAM_utf8_ptr("client_name", &client, 0),
    OSSL_PARAM_utf8_ptr("client_secret_file", &secret, 0),
    OSSL_PARAM_utf8_ptr("timeout_ms", &timeout, 0),
    OSSL_PARAM_END
  };
  const char *t;

  g_handle = handle;
  for (; in != NULL && in->function_id != 0; in++) {
    switch (in->function_id) {
    case OSSL_FUNC_CORE_GET_PARAMS: c_get_params = OSSL_FUNC_core_get_params(in); break;
    case OSSL_FUNC_CORE_NEW_ERROR: c_new_error = OSSL_FUNC_core_new_error(in); break;
    case OSSL_FUNC_CORE_SET_ERROR_DEBUG: c_set_error_debug = OSSL_FUNC_core_set_error_debug(in); break;
    case OSSL_FUNC_CORE_VSET_ERROR: c_vset_error = OSSL_FUNC_core_vset_error(in); break;
    case OSSL_FUNC_BIO_READ_EX: c_bio_read_ex = OSSL_FUNC_BIO_read_ex(in); break;
    default: break;
    }
  }
  if (c_get_params == NULL || !c_get_params(handle, req))
    sock = client = secret = timeout = NULL;
  set_str(g_socket, sizeof(g_socket), setting(sock, "KEYEDGE_KEYD_SOCKET"));
  set_str(g_client, sizeof(g_client), setting(client, "KEYEDGE_KEYD_CLIENT"));
  set_str(g_secret_file, sizeof(g_secret_file), setting(secret, "KEYEDGE_KEYD_SECRET_FILE"));
  if ((t = setting(timeout, "KEYEDGE_KEYD_TIMEOUT_MS")) != NULL && atoi(t) > 0)
    g_timeout_ms = atoi(t);
  build_reasons();
  *out = prov_functions;
  *provctx = &provctx_token;
  return 1;
}
