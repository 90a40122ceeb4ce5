/*
 * keyd's native SIGN path (docs/keyd.md, "Native SIGN path"): a Node addon inside keyd. After a
 * client's HELLO, keyd's JavaScript hands the connection's descriptor to a pool of threads, each an
 * epoll loop over its connections. A thread answers only the success path of SIGN, for a (client,
 * key, version) that JavaScript put in the eligibility table, while the audit log has handed it
 * the chain (chain.c): it chains and writes the signature's audit entry before it queues the
 * answer, and JavaScript's own entries go through the same chain. Every other byte goes to
 * JavaScript in order (the connection's own framing, limits and dispatch run there unchanged), and
 * JavaScript's answers come back here to be written, so one writer owns the socket. It uses the
 * OpenSSL that Node carries.
 */
#define _GNU_SOURCE /* pthread_setname_np, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#include <node_api.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "chain.h"
#include "fastsign.h"

#define EV_DATA 1
#define EV_EOF 2
#define EV_FLUSHED 3
#define EV_STALLED 4
#define EV_CLOSED 5
#define EV_AUDIT                                                                                   \
  6 /* a native entry could not be written: JavaScript takes the chain back and fails */

/* The most histogram bounds the native metrics take (keyd/server/metrics.ts BUCKETS has 14). */
#define MB_MAX 32

/*
 * Bytes for JavaScript that may wait in the event queue: past it the threads stop reading until
 * JavaScript drains, so a client sending faster than JavaScript answers cannot grow keyd's memory
 * (JavaScript's own connection limits then apply to what it takes).
 */
#define FWD_CAP (1024 * 1024)

#define CMD_ADOPT 1
#define CMD_WRITE 2
#define CMD_PAUSE 3
#define CMD_RESUME 4
#define CMD_SHUTDOWN 5
#define CMD_END 6
#define CMD_DROP 7

struct out {
  struct out *next;
  size_t len, off;
  int js;
  uint8_t data[];
};

struct conn {
  struct conn *next;
  uint32_t id;
  int fd;
  char client[160];
  char client_name[FS_MAX_NAME + 1];
  uint8_t *in;
  size_t in_len;
  int pass;
  uint64_t pass_left;
  struct out *out_head, *out_tail;
  size_t out_bytes;
  int js_paused, dead, eof, ending, shut_pending;
  uint32_t events;
  int64_t blocked_since;
  int stall_reported;
  int gone; /* closed; freed at the end of the epoll batch that may still name it */
};

struct cmd {
  struct cmd *next;
  int type;
  uint32_t id;
  struct conn *conn;
  struct out *out;
};

struct worker {
  pthread_t th;
  int ep, evfd;
  pthread_mutex_t lock;
  struct cmd *head, *tail;
  struct conn *conns;
  struct conn *graveyard;
  atomic_int throttled; /* stopped reading because JavaScript has FWD_CAP bytes to take */
  EVP_MD_CTX *md;
  int index; /* its slot in each table entry's sign_cache */
};

/* A signing context kept per table entry and thread: set up once, not per signature. */
struct sign_cache {
  EVP_PKEY_CTX *ctx;
  uint16_t alg; /* what ctx is initialised for (0: nothing) */
  int id;       /* the key's EVP_PKEY_get_base_id (0: not read yet; OpenSSL looks it up by name) */
  int field;    /* an EC key's field size in bytes, for P1363 (0: not read yet) */
};

struct event {
  int type;
  uint32_t id;
  uint8_t *data;
  size_t len;
};

/* Native signatures counted for one key name (its audit entries are already written). */
struct keycount {
  char key[FS_MAX_NAME + 1];
  uint64_t n;
};

/*
 * The native signatures' metrics, counted here so that JavaScript does no work per signature: per
 * key, and keyd_operation_duration_seconds's three phases (queue, exec, total) bucketed with the
 * bounds JavaScript gave at start. JavaScript takes and resets them when it needs them (a scrape,
 * keyd stopping: takeMetrics).
 */
static struct {
  pthread_mutex_t lock;
  double bounds[MB_MAX];
  int nbounds;
  uint64_t buckets[3][MB_MAX + 1]; /* the last one: above every bound (+Inf only) */
  double sums[3];
  uint64_t count;
  struct keycount *keys;
  size_t nkeys, capkeys;
} M = {.lock = PTHREAD_MUTEX_INITIALIZER};

struct key {
  struct key *next;
  char name[FS_MAX_NAME + 1];
  uint32_t version;
  EVP_PKEY *pkey;
};

static struct {
  int started;
  int nthreads;
  struct worker *workers;
  pthread_rwlock_t lock;
  struct fs_table table;
  /*
   * The audit chain while JavaScript has attached it (chainAttach): every entry, native or from
   * JavaScript, is chained and written under `alock`, so there is one chain and one order.
   */
  pthread_mutex_t alock;
  struct fc_chain chain;
  int chain_on;          /* under alock: attached and no write failed */
  atomic_int chain_live; /* chain_on, read without the lock to skip signing early */
  EVP_MAC_CTX *mac;      /* HMAC-SHA256 keyed with the audit key (under alock) */
  pthread_mutex_t qlock;
  struct event *events;
  size_t nevents, capevents;
  int signalled;
  napi_threadsafe_function tsfn;
  uint64_t max_frame;
  size_t out_cap;
  int64_t stall_ms;
  struct key *keys; /* the JavaScript thread's alone */
  atomic_llong signed_count;
  atomic_llong fwd_bytes; /* bytes handed to JavaScript (EV_DATA) and not yet drained */
} G;

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double mono_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint32_t be32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void put32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

/* Wakes JavaScript once for everything queued until it drains (the caller holds qlock). */
static void signal_js_locked(void) {
  if (G.signalled)
    return;
  G.signalled = 1;
  napi_call_threadsafe_function(G.tsfn, NULL, napi_tsfn_nonblocking);
}

static void push_event(int type, uint32_t id, uint8_t *data, size_t len) {
  pthread_mutex_lock(&G.qlock);
  if (G.nevents == G.capevents) {
    size_t cap = G.capevents == 0 ? 64 : G.capevents * 2;
    struct event *n = realloc(G.events, cap * sizeof(*n));
    if (n == NULL) {
      /* Out of memory: the connection's bytes cannot reach JavaScript; it will see the close. */
      pthread_mutex_unlock(&G.qlock);
      free(data);
      return;
    }
    G.events = n;
    G.capevents = cap;
  }
  G.events[G.nevents++] = (struct event){type, id, data, len};
  if (type == EV_DATA)
    atomic_fetch_add(&G.fwd_bytes, (long long)len);
  signal_js_locked();
  pthread_mutex_unlock(&G.qlock);
}

/* Counts one native signature of `key` that waited `queue_s` and took `exec_s`; -1 out of memory.
 */
static int count_native(const char *key, double queue_s, double exec_s) {
  pthread_mutex_lock(&M.lock);
  size_t i = 0;
  while (i < M.nkeys && strcmp(M.keys[i].key, key) != 0)
    i++;
  if (i == M.nkeys) {
    if (M.nkeys == M.capkeys) {
      size_t cap = M.capkeys == 0 ? 8 : M.capkeys * 2;
      struct keycount *n = realloc(M.keys, cap * sizeof(*n));
      if (n == NULL) {
        pthread_mutex_unlock(&M.lock);
        return -1;
      }
      M.keys = n;
      M.capkeys = cap;
    }
    memset(&M.keys[i], 0, sizeof(M.keys[i]));
    snprintf(M.keys[i].key, sizeof(M.keys[i].key), "%s", key);
    M.nkeys++;
  }
  M.keys[i].n++;
  double v[3] = {queue_s, exec_s, queue_s + exec_s};
  for (int p = 0; p < 3; p++) {
    int b = 0;
    while (b < M.nbounds && v[p] > M.bounds[b]) /* prom-client's bucket: the first bound >= v */
      b++;
    M.buckets[p][b]++;
    M.sums[p] += v[p];
  }
  M.count++;
  pthread_mutex_unlock(&M.lock);
  return 0;
}

static int mac_hex(void *ctx, const char *prev, const uint8_t *text, size_t len, char out[65]) {
  static const char hex[] = "0123456789abcdef";
  unsigned char d[32];
  size_t dl = 0;
  EVP_MAC_CTX *m = ctx;
  /* A NULL key re-initialises with the key given at attach (its pads are kept). */
  if (EVP_MAC_init(m, NULL, 0, NULL) != 1 ||
      EVP_MAC_update(m, (const unsigned char *)prev, 64) != 1 ||
      EVP_MAC_update(m, text, len) != 1 || EVP_MAC_final(m, d, &dl, sizeof(d)) != 1 || dl != 32)
    return -1;
  for (int i = 0; i < 32; i++) {
    out[2 * i] = hex[d[i] >> 4];
    out[2 * i + 1] = hex[d[i] & 15];
  }
  out[64] = '\0';
  return 0;
}

/*
 * Chains and writes one entry whose record fields after seq and time are `tail`; the new seq, or
 * -errno. A failed write detaches the chain (no entry, native or JavaScript, is made until
 * JavaScript has taken the chain back); the caller tells JavaScript.
 */
static int64_t chain_append(const char *tail, size_t len) {
  pthread_mutex_lock(&G.alock);
  int64_t r;
  if (!G.chain_on) {
    r = -(G.chain.error != 0 ? G.chain.error : EBADF);
  } else {
    r = fc_append(&G.chain, now_ms(), tail, len);
    if (r < 0 && G.chain.error != 0) {
      G.chain_on = 0;
      atomic_store(&G.chain_live, 0);
    }
  }
  pthread_mutex_unlock(&G.alock);
  return r;
}

/* ---- the socket side, on a worker thread ---- */

static void set_events(struct worker *w, struct conn *c) {
  if (c->gone)
    return;
  uint32_t want = 0;
  int reading = !c->js_paused && !c->dead && !c->eof && c->out_bytes <= G.out_cap;
  if (reading && atomic_load(&G.fwd_bytes) > FWD_CAP) {
    /* Flag first, then look again: a drain either sees the flag (and wakes this thread) or ran
     * before. */
    atomic_store(&w->throttled, 1);
    reading = atomic_load(&G.fwd_bytes) <= FWD_CAP;
  }
  if (reading)
    want |= EPOLLIN;
  if (c->out_head != NULL)
    want |= EPOLLOUT;
  if (!reading && c->out_bytes > G.out_cap && !c->dead && !c->eof) {
    if (c->blocked_since == 0)
      c->blocked_since = now_ms();
  } else {
    c->blocked_since = 0;
    c->stall_reported = 0;
  }
  if (want == c->events)
    return;
  struct epoll_event ev = {.events = want, .data.ptr = c};
  epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev);
  c->events = want;
}

static void conn_free(struct worker *w, struct conn *c) {
  for (struct conn **p = &w->conns; *p != NULL; p = &(*p)->next)
    if (*p == c) {
      *p = c->next;
      break;
    }
  epoll_ctl(w->ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  c->fd = -1;
  c->gone = 1;
  for (struct out *o = c->out_head; o != NULL;) {
    struct out *n = o->next;
    free(o);
    o = n;
  }
  c->out_head = c->out_tail = NULL;
  c->out_bytes = 0;
  free(c->in);
  c->in = NULL;
  c->in_len = 0;
  c->next = w->graveyard;
  w->graveyard = c;
}

static void bury(struct worker *w) {
  while (w->graveyard != NULL) {
    struct conn *c = w->graveyard;
    w->graveyard = c->next;
    free(c);
  }
}

/* Writes what is queued; 0 on success or EAGAIN, -1 if the peer is gone. */
static int flush_out(struct conn *c) {
  while (c->out_head != NULL) {
    struct out *o = c->out_head;
    ssize_t n = send(c->fd, o->data + o->off, o->len - o->off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return 0;
      if (errno == EINTR)
        continue;
      return -1;
    }
    o->off += (size_t)n;
    if (o->off < o->len)
      continue;
    c->out_head = o->next;
    if (c->out_head == NULL)
      c->out_tail = NULL;
    c->out_bytes -= o->len;
    if (o->js)
      push_event(EV_FLUSHED, c->id, NULL, o->len);
    free(o);
  }
  if (c->shut_pending) {
    c->shut_pending = 0;
    shutdown(c->fd, SHUT_WR);
  }
  return 0;
}

static void queue_out(struct conn *c, struct out *o) {
  o->next = NULL;
  if (c->out_tail != NULL)
    c->out_tail->next = o;
  else
    c->out_head = o;
  c->out_tail = o;
  c->out_bytes += o->len;
}

/* The peer is gone or broke the socket: JavaScript closes the connection (and then drops it). */
static void conn_lost(struct worker *w, struct conn *c) {
  if (c->gone)
    return;
  if (c->ending) {
    /* JavaScript already asked for the close once the answers are out: they never will be. */
    uint32_t id = c->id;
    conn_free(w, c);
    push_event(EV_CLOSED, id, NULL, 0);
    return;
  }
  if (c->dead && c->eof)
    return;
  c->dead = 1;
  c->eof = 1;
  set_events(w, c);
  push_event(EV_EOF, c->id, NULL, 0);
}

/* The digests, fetched once at start: a fetch by name per signature costs more than the hash. */
static EVP_MD *MDS[4]; /* SHA-256, SHA-384, SHA-512, SHA-224 */
static const char *const MD_NAMES[4] = {"SHA256", "SHA384", "SHA512", "SHA224"};
static const int MD_SIZES[4] = {32, 48, 64, 28};

/* The digest of a PROTOCOL.md algorithm code (index into MDS), -1 for none (Ed25519, unknown). */
static int md_index(uint16_t alg) {
  switch (alg) {
  case 0x0001:
  case 0x0011:
  case 0x0021:
    return 0;
  case 0x0002:
  case 0x0012:
  case 0x0022:
    return 1;
  case 0x0003:
  case 0x0013:
  case 0x0023:
    return 2;
  case 0x0004:
  case 0x0014:
    return 3;
  default:
    return -1;
  }
}

/* A DER ECDSA signature in `out` (len bytes) rewritten as IEEE P1363 r||s; the new length, or -1.
 */
static int to_p1363(EVP_PKEY *pkey, struct sign_cache *cache, uint8_t *out, size_t len,
                    size_t cap) {
  if (cache->field == 0)
    cache->field = (EVP_PKEY_get_bits(pkey) + 7) / 8;
  int field = cache->field;
  const uint8_t *p = out;
  ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)len);
  if (sig == NULL || (size_t)field * 2 > cap) {
    ECDSA_SIG_free(sig);
    return -1;
  }
  const BIGNUM *r = NULL, *s = NULL;
  ECDSA_SIG_get0(sig, &r, &s);
  int ok = BN_bn2binpad(r, out, field) == field && BN_bn2binpad(s, out + field, field) == field;
  ECDSA_SIG_free(sig);
  return ok ? field * 2 : -1;
}

/*
 * Signs as keyd/keystore/file-keystore.ts does through node:crypto (the same signatures: ECDSA DER
 * or P1363, RSA PKCS#1 v1.5 and PSS with salt = digest length, Ed25519), returns the length or -1.
 * `sha256` receives the message's SHA-256 (the audit entry's msgSha256): for a SHA-256 algorithm it
 * is the very digest that is signed, computed once. ECDSA and RSA sign that digest with a context
 * kept in the table entry for this thread (`cache`); Ed25519 signs the message itself.
 */
static int sign_with(struct worker *w, EVP_PKEY *pkey, struct sign_cache *cache,
                     const struct fs_sign_req *req, uint8_t *out, size_t cap, uint8_t sha256[32]) {
  if (cache->id == 0)
    cache->id = EVP_PKEY_get_base_id(pkey);
  int id = cache->id;
  int mi = md_index(req->algorithm);
  unsigned dlen = 0;
  if (id == EVP_PKEY_ED25519) {
    if (req->algorithm != 0x0030)
      return -1;
    size_t len = cap;
    EVP_MD_CTX_reset(w->md);
    if (EVP_DigestSignInit_ex(w->md, NULL, NULL, NULL, NULL, pkey, NULL) != 1 ||
        EVP_DigestSign(w->md, out, &len, req->msg, req->msg_len) != 1 ||
        EVP_Digest(req->msg, req->msg_len, sha256, &dlen, MDS[0], NULL) != 1 || dlen != 32)
      return -1;
    return (int)len;
  }
  if (mi < 0 || (id != EVP_PKEY_EC && id != EVP_PKEY_RSA))
    return -1;
  uint8_t digest[64];
  if (EVP_Digest(req->msg, req->msg_len, digest, &dlen, MDS[mi], NULL) != 1 ||
      dlen != (unsigned)MD_SIZES[mi])
    return -1;
  if (mi == 0) {
    memcpy(sha256, digest, 32);
  } else {
    unsigned l = 0;
    if (EVP_Digest(req->msg, req->msg_len, sha256, &l, MDS[0], NULL) != 1 || l != 32)
      return -1;
  }
  EVP_PKEY_CTX *ctx = cache->ctx;
  if (ctx == NULL || cache->alg != req->algorithm) {
    if (ctx == NULL && (ctx = cache->ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL)) == NULL)
      return -1;
    cache->alg = 0;
    if (EVP_PKEY_sign_init(ctx) != 1 || EVP_PKEY_CTX_set_signature_md(ctx, MDS[mi]) != 1)
      return -1;
    if (id == EVP_PKEY_RSA) {
      int pss = req->algorithm >= 0x0021 && req->algorithm <= 0x0023;
      if (EVP_PKEY_CTX_set_rsa_padding(ctx, pss ? RSA_PKCS1_PSS_PADDING : RSA_PKCS1_PADDING) != 1)
        return -1;
      if (pss && EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, MD_SIZES[mi]) != 1)
        return -1;
    }
    cache->alg = req->algorithm;
  }
  size_t len = cap;
  if (EVP_PKEY_sign(ctx, out, &len, digest, dlen) != 1) {
    cache->alg = 0; /* set up again next time */
    return -1;
  }
  if (id == EVP_PKEY_EC && req->p1363)
    return to_p1363(pkey, cache, out, len, cap);
  return (int)len;
}

/*
 * Answers `frame` natively if it is an eligible SIGN and the audit chain is attached; 1 if it did.
 * The answer is queued only after the signature's audit entry is chained and written to the log.
 */
static int try_fast(struct worker *w, struct conn *c, const uint8_t *frame, size_t len,
                    double arrived) {
  struct fs_sign_req req;
  if (!fs_parse_sign(frame, len, &req) || !atomic_load(&G.chain_live))
    return 0;
  double started = mono_s();
  uint8_t sig[1024];
  char key[FS_MAX_NAME + 1];
  double queue_s = 0, exec_s = 0;
  int siglen = -1;
  uint32_t key_version = 0;
  int64_t failed = 0;
  /*
   * Everything up to the written entry happens under the table's read lock: a table change (a key
   * disabled, a client revoked, keyd sealed) waits for it, so once setTable returns no signature of
   * the old table is still to be recorded.
   */
  pthread_rwlock_rdlock(&G.lock);
  const struct fs_entry *e = fs_eligible(&G.table, c->client, &req, now_ms());
  uint8_t digest[32];
  if (e != NULL)
    siglen = sign_with(w, (EVP_PKEY *)e->key_ref, &((struct sign_cache *)e->cache)[w->index], &req,
                       sig, sizeof(sig), digest);
  if (siglen >= 0) {
    static const char hex[] = "0123456789abcdef";
    /* The record fields after seq and time, as keyd/audit/chain.ts canonical() writes them. */
    char tail[FS_JSON_HEAD_MAX + 160];
    size_t hl = strlen(e->json_head);
    memcpy(tail, e->json_head, hl);
    size_t n = hl;
    n += req.has_version ? fc_u64(tail + n, req.version) : (memcpy(tail + n, "null", 4), 4);
    static const char mid[] = ",\"result\":\"ok\",\"msgSha256\":\"";
    memcpy(tail + n, mid, sizeof(mid) - 1);
    n += sizeof(mid) - 1;
    for (unsigned i = 0; i < 32; i++) {
      tail[n + 2 * i] = hex[digest[i] >> 4];
      tail[n + 2 * i + 1] = hex[digest[i] & 15];
    }
    n += 64;
    memcpy(tail + n, "\"}", 2);
    n += 2;
    /* The entry first: no answer leaves before its audit entry is in the log. */
    int64_t seq = chain_append(tail, n);
    if (seq < 0) {
      siglen = -1;
      failed = -seq;
    } else {
      memcpy(key, e->key, sizeof(key));
      key_version = e->key_version;
      queue_s = started > arrived ? started - arrived : 0;
      exec_s = mono_s() - started;
    }
  }
  pthread_rwlock_unlock(&G.lock);
  if (failed != 0 && failed != EBADF)
    push_event(EV_AUDIT, 0, NULL, (size_t)failed); /* JavaScript takes the chain back and fails */
  if (siglen < 0)
    return 0; /* JavaScript answers: a refusal, no chain, or a failure it reports its own way */
  /* Counted before its metrics: signatures made >= signatures in the metrics >= those taken. */
  atomic_fetch_add(&G.signed_count, 1);
  if (count_native(key, queue_s, exec_s) != 0) {
    /* Out of memory for a new key's count: the signature is audited and answered all the same. */
  }
  size_t total = FS_HEADER_SIZE + 5 + (size_t)siglen + 5 + 4;
  struct out *o = malloc(sizeof(*o) + total);
  if (o == NULL) {
    conn_lost(w, c);
    return 1;
  }
  o->len = total;
  o->off = 0;
  o->js = 0;
  uint8_t *p = o->data;
  put32(p, (uint32_t)(total - 4));
  p[4] = 1;
  p[5] = FS_OP_SIGN | 0x80;
  p[6] = p[7] = 0;
  put32(p + 8, req.request_id);
  p += FS_HEADER_SIZE;
  *p++ = FS_TAG_SIGNATURE;
  put32(p, (uint32_t)siglen);
  memcpy(p + 4, sig, (size_t)siglen);
  p += 4 + siglen;
  *p++ = FS_TAG_KEY_VERSION;
  put32(p, 4);
  put32(p + 4, key_version);
  queue_out(c, o);
  return 1;
}

struct fwd {
  uint8_t *buf;
  size_t len, cap;
};

static int fwd_add(struct fwd *f, const uint8_t *p, size_t n) {
  if (f->len + n > f->cap) {
    size_t cap = f->cap == 0 ? 4096 : f->cap;
    while (cap < f->len + n)
      cap *= 2;
    uint8_t *b = realloc(f->buf, cap);
    if (b == NULL)
      return -1;
    f->buf = b;
    f->cap = cap;
  }
  memcpy(f->buf + f->len, p, n);
  f->len += n;
  return 0;
}

/*
 * Splits what was read into frames: whole eligible SIGNs are answered here, everything else goes to
 * JavaScript byte for byte, so its decoder sees exactly the stream it would have read (less the
 * frames answered here, which are whole frames). A length outside the limits goes to JavaScript too
 * (it answers FRAME_TOO_LARGE and closes) and this side stops reading.
 */
static void process_input(struct worker *w, struct conn *c, double arrived) {
  struct fwd f = {0};
  size_t off = 0;
  int oom = 0;
  while (off < c->in_len && !oom) {
    size_t avail = c->in_len - off;
    if (c->pass) {
      size_t n = avail < c->pass_left ? avail : (size_t)c->pass_left;
      oom = fwd_add(&f, c->in + off, n) != 0;
      off += n;
      c->pass_left -= n;
      if (c->pass_left == 0)
        c->pass = 0;
      continue;
    }
    if (avail < 4)
      break;
    uint64_t total = (uint64_t)be32(c->in + off) + 4;
    if (total > G.max_frame || total < FS_HEADER_SIZE) {
      oom = fwd_add(&f, c->in + off, avail) != 0;
      off = c->in_len;
      c->dead = 1;
      break;
    }
    if (total > FS_FAST_FRAME_MAX) {
      size_t n = avail < total ? avail : (size_t)total;
      oom = fwd_add(&f, c->in + off, n) != 0;
      off += n;
      if (n < total) {
        c->pass = 1;
        c->pass_left = total - n;
      }
      continue;
    }
    if (avail < total)
      break;
    if (!try_fast(w, c, c->in + off, (size_t)total, arrived))
      oom = fwd_add(&f, c->in + off, (size_t)total) != 0;
    if (c->gone) {
      free(f.buf);
      return;
    }
    off += (size_t)total;
  }
  if (oom) {
    free(f.buf);
    conn_lost(w, c);
    return;
  }
  if (off > 0) {
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
  }
  if (f.len > 0)
    push_event(EV_DATA, c->id, f.buf, f.len);
  else
    free(f.buf);
}

static void on_readable(struct worker *w, struct conn *c) {
  for (int rounds = 0; rounds < 16; rounds++) {
    if (c->js_paused || c->dead || c->eof || c->out_bytes > G.out_cap ||
        atomic_load(&G.fwd_bytes) > FWD_CAP)
      break;
    size_t room = FS_FAST_FRAME_MAX - c->in_len;
    ssize_t n = recv(c->fd, c->in + c->in_len, room, MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK)
        conn_lost(w, c);
      break;
    }
    if (n == 0) {
      c->eof = 1;
      push_event(EV_EOF, c->id, NULL, 0);
      break;
    }
    c->in_len += (size_t)n;
    process_input(w, c, mono_s());
    if ((size_t)n < room)
      break;
  }
  if (flush_out(c) != 0)
    conn_lost(w, c);
}

static struct conn *find_conn(struct worker *w, uint32_t id) {
  for (struct conn *c = w->conns; c != NULL; c = c->next)
    if (c->id == id)
      return c;
  return NULL;
}

static void run_commands(struct worker *w) {
  pthread_mutex_lock(&w->lock);
  struct cmd *list = w->head;
  w->head = w->tail = NULL;
  pthread_mutex_unlock(&w->lock);
  while (list != NULL) {
    struct cmd *cmd = list;
    list = cmd->next;
    struct conn *c = cmd->type == CMD_ADOPT ? cmd->conn : find_conn(w, cmd->id);
    if (cmd->type == CMD_ADOPT) {
      c->next = w->conns;
      w->conns = c;
      struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
      c->events = EPOLLIN;
      if (epoll_ctl(w->ep, EPOLL_CTL_ADD, c->fd, &ev) != 0)
        conn_lost(w, c);
    } else if (c == NULL) {
      free(cmd->out); /* the connection is gone: its answer goes nowhere, as on a closed socket */
    } else if (cmd->type == CMD_WRITE) {
      if (c->dead && c->eof) {
        free(cmd->out);
      } else {
        queue_out(c, cmd->out);
      }
    } else if (cmd->type == CMD_PAUSE) {
      c->js_paused = 1;
    } else if (cmd->type == CMD_RESUME) {
      c->js_paused = 0;
    } else if (cmd->type == CMD_SHUTDOWN) {
      c->shut_pending = 1;
      c->dead = 1;
    } else if (cmd->type == CMD_END) {
      c->ending = 1;
    } else if (cmd->type == CMD_DROP) {
      conn_free(w, c);
      c = NULL;
    }
    if (c != NULL) {
      if (flush_out(c) != 0) {
        conn_lost(w, c);
      } else if (c->ending && c->out_head == NULL) {
        uint32_t id = c->id;
        conn_free(w, c);
        push_event(EV_CLOSED, id, NULL, 0);
        c = NULL;
      }
      if (c != NULL) {
        set_events(w, c);
        if (c->in_len > 0 && !c->js_paused && !c->dead && !c->eof)
          process_input(w, c, mono_s());
      }
    }
    free(cmd);
  }
}

static void *worker_main(void *arg) {
  struct worker *w = arg;
  struct epoll_event evs[64];
  int timeout = -1;
  for (;;) {
    int n = epoll_wait(w->ep, evs, 64, timeout);
    for (int i = 0; i < n; i++) {
      if (evs[i].data.ptr == NULL) {
        uint64_t v;
        if (read(w->evfd, &v, sizeof(v)) < 0) {
          /* nothing to read: the commands are taken below anyway */
        }
        run_commands(w);
        continue;
      }
      struct conn *c = evs[i].data.ptr;
      if (c->gone)
        continue;
      if (evs[i].events & (EPOLLERR | EPOLLHUP)) {
        if (c->out_head != NULL && flush_out(c) != 0) {
          conn_lost(w, c);
          continue;
        }
      }
      if (evs[i].events & EPOLLOUT) {
        if (flush_out(c) != 0) {
          conn_lost(w, c);
          continue;
        }
        if (c->ending && c->out_head == NULL) {
          uint32_t id = c->id;
          conn_free(w, c);
          push_event(EV_CLOSED, id, NULL, 0);
          continue;
        }
      }
      if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        on_readable(w, c);
      if ((evs[i].events & (EPOLLERR | EPOLLHUP)) && !(c->events & EPOLLIN) && !c->eof)
        conn_lost(w, c); /* hung up while this side does not read: JavaScript still closes it */
      if (!c->gone)
        set_events(w, c);
    }
    /* JavaScript drained (it wakes this thread then): connections stopped for it read again. */
    if (atomic_load(&w->throttled) && atomic_load(&G.fwd_bytes) <= FWD_CAP) {
      atomic_store(&w->throttled, 0);
      for (struct conn *c = w->conns; c != NULL; c = c->next)
        set_events(w, c);
    }
    bury(w);
    /*
     * A connection stopped on answers its client leaves unread is looked at again within a second
     * (to be reported stalled); with none, the thread sleeps until something happens, as a thread
     * blocked in read would: a timed wait arms and cancels a timer at every wake-up (~1 µs each).
     */
    timeout = -1;
    if (G.stall_ms > 0) {
      int64_t now = 0;
      for (struct conn *c = w->conns; c != NULL; c = c->next) {
        if (c->blocked_since == 0 || c->stall_reported)
          continue;
        if (now == 0)
          now = now_ms();
        if (now - c->blocked_since > G.stall_ms) {
          c->stall_reported = 1;
          push_event(EV_STALLED, c->id, NULL, 0);
        } else {
          timeout = 1000;
        }
      }
    }
  }
  return NULL;
}

static void post(struct worker *w, struct cmd *cmd) {
  cmd->next = NULL;
  pthread_mutex_lock(&w->lock);
  if (w->tail != NULL)
    w->tail->next = cmd;
  else
    w->head = cmd;
  w->tail = cmd;
  pthread_mutex_unlock(&w->lock);
  uint64_t one = 1;
  if (write(w->evfd, &one, sizeof(one)) < 0) {
    /* the counter is saturated: the thread is awake anyway */
  }
}

/* ---- the JavaScript side ---- */

#define CHECK(env, call)                                                                           \
  do {                                                                                             \
    if ((call) != napi_ok) {                                                                       \
      napi_throw_error(env, NULL, "keyd native: " #call " failed");                                \
      return NULL;                                                                                 \
    }                                                                                              \
  } while (0)

static napi_value args_of(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < want) {
    napi_throw_type_error(env, NULL, "keyd native: missing arguments");
    return NULL;
  }
  napi_value ok;
  napi_get_boolean(env, true, &ok);
  return ok;
}

static int get_u32(napi_env env, napi_value v, uint32_t *out) {
  return napi_get_value_uint32(env, v, out) == napi_ok;
}

static int get_str(napi_env env, napi_value v, char *buf, size_t cap) {
  size_t n = 0;
  if (napi_get_value_string_utf8(env, v, buf, cap, &n) != napi_ok)
    return 0;
  return n < cap - 1 || cap == 1 ? 1 : (buf[cap - 1] = '\0', n == cap - 1);
}

static void call_js(napi_env env, napi_value js_cb, void *context, void *data) {
  (void)context;
  (void)data;
  if (env == NULL || js_cb == NULL)
    return;
  napi_value undefined;
  napi_get_undefined(env, &undefined);
  napi_call_function(env, undefined, js_cb, 0, NULL, NULL);
}

/* start(threads, maxFrame, outCap, stallMs, onWake, bounds): `bounds` are the metrics' histogram
 * bounds (ascending, at most MB_MAX). */
static napi_value js_start(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  if (args_of(env, info, 6, argv) == NULL)
    return NULL;
  if (G.started) {
    napi_throw_error(env, NULL, "keyd native: already started");
    return NULL;
  }
  uint32_t threads, max_frame, out_cap, stall;
  if (!get_u32(env, argv[0], &threads) || !get_u32(env, argv[1], &max_frame) ||
      !get_u32(env, argv[2], &out_cap) || !get_u32(env, argv[3], &stall) || threads == 0 ||
      threads > 256) {
    napi_throw_type_error(env, NULL, "keyd native: bad start arguments");
    return NULL;
  }
  uint32_t nbounds = 0;
  double bounds[MB_MAX] = {0};
  if (napi_get_array_length(env, argv[5], &nbounds) != napi_ok || nbounds > MB_MAX) {
    napi_throw_type_error(env, NULL, "keyd native: bad histogram bounds");
    return NULL;
  }
  for (uint32_t i = 0; i < nbounds; i++) {
    napi_value v;
    if (napi_get_element(env, argv[5], i, &v) != napi_ok ||
        napi_get_value_double(env, v, &bounds[i]) != napi_ok ||
        (i > 0 && bounds[i] <= bounds[i - 1])) {
      napi_throw_type_error(env, NULL, "keyd native: bad histogram bounds");
      return NULL;
    }
  }
  pthread_mutex_lock(&M.lock);
  memcpy(M.bounds, bounds, sizeof(bounds));
  M.nbounds = (int)nbounds;
  pthread_mutex_unlock(&M.lock);
  napi_value name;
  CHECK(env, napi_create_string_utf8(env, "keyd-native-sign", NAPI_AUTO_LENGTH, &name));
  CHECK(env, napi_create_threadsafe_function(env, argv[4], NULL, name, 0, 1, NULL, NULL, NULL,
                                             call_js, &G.tsfn));
  CHECK(env, napi_unref_threadsafe_function(env, G.tsfn));
  G.max_frame = max_frame;
  G.out_cap = out_cap;
  G.stall_ms = stall;
  pthread_rwlockattr_t attr;
  pthread_rwlockattr_init(&attr);
  pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init(&G.lock, &attr);
  pthread_rwlockattr_destroy(&attr);
  pthread_mutex_init(&G.qlock, NULL);
  pthread_mutex_init(&G.alock, NULL);
  G.chain.fd = -1;
  /*
   * A file size limit (ulimit -f) reached by an audit write must fail that write (EFBIG: cut back,
   * fail closed), not kill keyd with SIGXFSZ and lose the entries it holds.
   */
  struct sigaction ign = {.sa_handler = SIG_IGN};
  sigemptyset(&ign.sa_mask);
  sigaction(SIGXFSZ, &ign, NULL);
  for (int i = 0; i < 4; i++)
    if ((MDS[i] = EVP_MD_fetch(NULL, MD_NAMES[i], NULL)) == NULL) {
      napi_throw_error(env, NULL, "keyd native: cannot fetch the digests");
      return NULL;
    }
  G.workers = calloc(threads, sizeof(struct worker));
  if (G.workers == NULL) {
    napi_throw_error(env, NULL, "keyd native: out of memory");
    return NULL;
  }
  for (uint32_t i = 0; i < threads; i++) {
    struct worker *w = &G.workers[i];
    pthread_mutex_init(&w->lock, NULL);
    w->ep = epoll_create1(EPOLL_CLOEXEC);
    w->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    w->md = EVP_MD_CTX_new();
    w->index = (int)i;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (w->ep < 0 || w->evfd < 0 || w->md == NULL ||
        epoll_ctl(w->ep, EPOLL_CTL_ADD, w->evfd, &ev) != 0 ||
        pthread_create(&w->th, NULL, worker_main, w) != 0) {
      napi_throw_error(env, NULL, "keyd native: cannot start a signing thread");
      return NULL;
    }
    pthread_setname_np(w->th, "keyd-sign");
    pthread_detach(w->th);
    G.nthreads = (int)i + 1;
  }
  G.started = 1;
  napi_value ok;
  napi_get_boolean(env, true, &ok);
  return ok;
}

static struct worker *worker_of(uint32_t id) { return &G.workers[id % (uint32_t)G.nthreads]; }

/* adopt(id, fd, clientKey, clientName): takes a duplicate of `fd` (JavaScript keeps its own). */
static napi_value js_adopt(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (args_of(env, info, 4, argv) == NULL)
    return NULL;
  uint32_t id, fd;
  struct conn *c = calloc(1, sizeof(*c));
  if (c == NULL || !G.started || !get_u32(env, argv[0], &id) || !get_u32(env, argv[1], &fd) ||
      !get_str(env, argv[2], c->client, sizeof(c->client)) ||
      !get_str(env, argv[3], c->client_name, sizeof(c->client_name))) {
    free(c);
    napi_throw_type_error(env, NULL, "keyd native: bad adopt arguments");
    return NULL;
  }
  c->in = malloc(FS_FAST_FRAME_MAX);
  c->fd = fcntl((int)fd, F_DUPFD_CLOEXEC, 3);
  if (c->in == NULL || c->fd < 0) {
    if (c->fd >= 0)
      close(c->fd);
    free(c->in);
    free(c);
    napi_throw_error(env, NULL, "keyd native: cannot take the connection");
    return NULL;
  }
  c->id = id;
  struct cmd *cmd = calloc(1, sizeof(*cmd));
  if (cmd == NULL) {
    close(c->fd);
    free(c->in);
    free(c);
    napi_throw_error(env, NULL, "keyd native: out of memory");
    return NULL;
  }
  cmd->type = CMD_ADOPT;
  cmd->id = id;
  cmd->conn = c;
  post(worker_of(id), cmd);
  napi_value ok;
  napi_get_boolean(env, true, &ok);
  return ok;
}

static napi_value simple_cmd(napi_env env, napi_callback_info info, int type) {
  napi_value argv[2];
  size_t want = type == CMD_WRITE ? 2 : 1;
  if (args_of(env, info, want, argv) == NULL)
    return NULL;
  uint32_t id;
  if (!G.started || !get_u32(env, argv[0], &id)) {
    napi_throw_type_error(env, NULL, "keyd native: bad connection id");
    return NULL;
  }
  struct cmd *cmd = calloc(1, sizeof(*cmd));
  if (cmd == NULL) {
    napi_throw_error(env, NULL, "keyd native: out of memory");
    return NULL;
  }
  cmd->type = type;
  cmd->id = id;
  if (type == CMD_WRITE) {
    void *data;
    size_t len;
    if (napi_get_buffer_info(env, argv[1], &data, &len) != napi_ok) {
      free(cmd);
      napi_throw_type_error(env, NULL, "keyd native: write needs a Buffer");
      return NULL;
    }
    cmd->out = malloc(sizeof(struct out) + len);
    if (cmd->out == NULL) {
      free(cmd);
      napi_throw_error(env, NULL, "keyd native: out of memory");
      return NULL;
    }
    memcpy(cmd->out->data, data, len);
    cmd->out->len = len;
    cmd->out->off = 0;
    cmd->out->js = 1;
  }
  post(worker_of(id), cmd);
  napi_value ok;
  napi_get_boolean(env, true, &ok);
  return ok;
}

static napi_value js_write(napi_env env, napi_callback_info info) {
  return simple_cmd(env, info, CMD_WRITE);
}
static napi_value js_pause(napi_env env, napi_callback_info info) {
  return simple_cmd(env, info, CMD_PAUSE);
}
static napi_value js_resume(napi_env env, napi_callback_info info) {
  return simple_cmd(env, info, CMD_RESUME);
}
static napi_value js_shutdown(napi_env env, napi_callback_info info) {
  return simple_cmd(env, info, CMD_SHUTDOWN);
}
static napi_value js_end(napi_env env, napi_callback_info info) {
  return simple_cmd(env, info, CMD_END);
}
static napi_value js_drop(napi_env env, napi_callback_info info) {
  return simple_cmd(env, info, CMD_DROP);
}

/* setKey(name, version, pkcs8Der): the caller zeroes its buffer after. */
static napi_value js_set_key(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (args_of(env, info, 3, argv) == NULL)
    return NULL;
  char name[FS_MAX_NAME + 1];
  uint32_t version;
  void *data;
  size_t len;
  if (!get_str(env, argv[0], name, sizeof(name)) || !get_u32(env, argv[1], &version) ||
      napi_get_buffer_info(env, argv[2], &data, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "keyd native: bad setKey arguments");
    return NULL;
  }
  const unsigned char *p = data;
  PKCS8_PRIV_KEY_INFO *p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &p, (long)len);
  EVP_PKEY *pkey = p8 == NULL ? NULL : EVP_PKCS82PKEY(p8);
  PKCS8_PRIV_KEY_INFO_free(p8);
  struct key *k = pkey == NULL ? NULL : calloc(1, sizeof(*k));
  if (k == NULL) {
    EVP_PKEY_free(pkey);
    napi_throw_error(env, NULL, "keyd native: the key does not decode");
    return NULL;
  }
  memcpy(k->name, name, sizeof(k->name));
  k->version = version;
  k->pkey = pkey;
  k->next = G.keys;
  G.keys = k;
  napi_value ok;
  napi_get_boolean(env, true, &ok);
  return ok;
}

static EVP_PKEY *key_lookup(const char *name, uint32_t version) {
  for (struct key *k = G.keys; k != NULL; k = k->next)
    if (k->version == version && strcmp(k->name, name) == 0)
      return k->pkey;
  return NULL;
}

/* dropKey(name, version): frees keyd's copy (a table still using it keeps a reference until
 * replaced). */
static napi_value js_drop_key(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (args_of(env, info, 2, argv) == NULL)
    return NULL;
  char name[FS_MAX_NAME + 1];
  uint32_t version;
  if (!get_str(env, argv[0], name, sizeof(name)) || !get_u32(env, argv[1], &version)) {
    napi_throw_type_error(env, NULL, "keyd native: bad dropKey arguments");
    return NULL;
  }
  for (struct key **p = &G.keys; *p != NULL; p = &(*p)->next)
    if ((*p)->version == version && strcmp((*p)->name, name) == 0) {
      struct key *k = *p;
      *p = k->next;
      EVP_PKEY_free(k->pkey);
      free(k);
      break;
    }
  napi_value ok;
  napi_get_boolean(env, true, &ok);
  return ok;
}

static void table_free(struct fs_table *t) {
  for (size_t i = 0; i < t->count; i++) {
    struct sign_cache *cache = t->entries[i].cache;
    for (int j = 0; cache != NULL && j < G.nthreads; j++)
      EVP_PKEY_CTX_free(cache[j].ctx);
    free(cache);
    EVP_PKEY_free(t->entries[i].key_ref);
    free(t->entries[i].json_head);
  }
  free(t->entries);
  fs_table_free_index(t);
  memset(t, 0, sizeof(*t));
}

static int prop(napi_env env, napi_value arr, uint32_t i, napi_value *out) {
  return napi_get_element(env, arr, i, out) == napi_ok;
}

/*
 * setTable(entries): entries = [clientKey, clientName, keyName, version (0 = current alias),
 * keyVersion, algMask, tlsServer (0/1), deadlineMs (0 = none), jsonHead], flat, 9 per entry.
 * Replaces the table at once: a signature in progress finishes first, none starts on the old one.
 */
static napi_value js_set_table(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (args_of(env, info, 1, argv) == NULL)
    return NULL;
  uint32_t n = 0;
  if (napi_get_array_length(env, argv[0], &n) != napi_ok || n % 9 != 0) {
    napi_throw_type_error(env, NULL, "keyd native: setTable needs 9 values per entry");
    return NULL;
  }
  struct fs_table t = {0};
  t.count = n / 9;
  t.entries = calloc(t.count == 0 ? 1 : t.count, sizeof(struct fs_entry));
  if (t.entries == NULL) {
    napi_throw_error(env, NULL, "keyd native: out of memory");
    return NULL;
  }
  for (size_t i = 0; i < t.count; i++) {
    struct fs_entry *e = &t.entries[i];
    napi_value v[9];
    uint32_t tls = 0;
    double deadline = 0;
    int ok = 1;
    char head[FS_JSON_HEAD_MAX + 1];
    for (uint32_t j = 0; j < 9 && ok; j++)
      ok = prop(env, argv[0], (uint32_t)(i * 9 + j), &v[j]);
    ok = ok && get_str(env, v[0], e->client, sizeof(e->client)) &&
         get_str(env, v[1], e->client_name, sizeof(e->client_name)) &&
         get_str(env, v[2], e->key, sizeof(e->key)) && get_u32(env, v[3], &e->version) &&
         get_u32(env, v[4], &e->key_version) && get_u32(env, v[5], &e->alg_mask) &&
         get_u32(env, v[6], &tls) && napi_get_value_double(env, v[7], &deadline) == napi_ok &&
         get_str(env, v[8], head, sizeof(head)) && strlen(head) < FS_JSON_HEAD_MAX &&
         (e->json_head = strdup(head)) != NULL &&
         (e->cache = calloc((size_t)G.nthreads, sizeof(struct sign_cache))) != NULL;
    EVP_PKEY *pkey = ok ? key_lookup(e->key, e->key_version) : NULL;
    if (pkey == NULL || EVP_PKEY_up_ref(pkey) != 1) {
      t.count = i + 1; /* this entry's json_head is freed too */
      table_free(&t);
      napi_throw_type_error(env, NULL, "keyd native: bad table entry (or its key was not set)");
      return NULL;
    }
    e->key_ref = pkey;
    e->tls_server = tls != 0;
    e->deadline_ms = (int64_t)deadline;
  }
  if (fs_table_index(&t) != 0) {
    table_free(&t);
    napi_throw_error(env, NULL, "keyd native: out of memory");
    return NULL;
  }
  pthread_rwlock_wrlock(&G.lock);
  struct fs_table old = G.table;
  G.table = t;
  pthread_rwlock_unlock(&G.lock);
  table_free(&old);
  napi_value ok;
  napi_get_boolean(env, true, &ok);
  return ok;
}

static napi_value str(napi_env env, const char *s) {
  napi_value v;
  napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &v);
  return v;
}

static napi_value num(napi_env env, double d) {
  napi_value v;
  napi_create_double(env, d, &v);
  return v;
}

static void free_buffer(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

/* drain(): { events: [type, id, Buffer|number] x n flat }, queued since the last call. */
static napi_value js_drain(napi_env env, napi_callback_info info) {
  (void)info;
  pthread_mutex_lock(&G.qlock);
  struct event *events = G.events;
  size_t nevents = G.nevents;
  G.events = NULL;
  G.nevents = G.capevents = 0;
  G.signalled = 0;
  pthread_mutex_unlock(&G.qlock);
  napi_value out, evs;
  napi_create_object(env, &out);
  napi_create_array_with_length(env, nevents * 3, &evs);
  for (size_t i = 0; i < nevents; i++) {
    struct event *e = &events[i];
    uint32_t b = (uint32_t)(i * 3);
    napi_value data;
    napi_set_element(env, evs, b, num(env, e->type));
    napi_set_element(env, evs, b + 1, num(env, e->id));
    if (e->data != NULL) {
      if (napi_create_external_buffer(env, e->len, e->data, free_buffer, NULL, &data) != napi_ok) {
        /* External buffers may be refused: copy instead. */
        void *copy;
        napi_create_buffer_copy(env, e->len, e->data, &copy, &data);
        free(e->data);
      }
    } else {
      data = num(env, (double)e->len);
    }
    napi_set_element(env, evs, b + 2, data);
  }
  long long drained = 0;
  for (size_t i = 0; i < nevents; i++)
    if (events[i].type == EV_DATA)
      drained += (long long)events[i].len;
  if (drained > 0 && atomic_fetch_sub(&G.fwd_bytes, drained) - drained <= FWD_CAP) {
    uint64_t one = 1;
    for (int i = 0; i < G.nthreads; i++)
      if (atomic_load(&G.workers[i].throttled) && write(G.workers[i].evfd, &one, sizeof(one)) < 0) {
        /* the counter is saturated: the thread is awake anyway */
      }
  }
  free(events);
  napi_set_named_property(env, out, "events", evs);
  return out;
}

/*
 * takeMetrics(): the native signatures counted since the last call, and resets them: { count,
 * keys: [name, n] x k flat, buckets: queue, exec, total phases' counts per bound of start's and
 * one above them all, flat, sums: [queue, exec, total] }.
 */
static napi_value js_take_metrics(napi_env env, napi_callback_info info) {
  (void)info;
  pthread_mutex_lock(&M.lock);
  struct keycount *keys = M.keys;
  size_t nkeys = M.nkeys;
  uint64_t buckets[3][MB_MAX + 1];
  double sums[3];
  uint64_t count = M.count;
  int nb = M.nbounds + 1;
  memcpy(buckets, M.buckets, sizeof(buckets));
  memcpy(sums, M.sums, sizeof(sums));
  memset(M.buckets, 0, sizeof(M.buckets));
  memset(M.sums, 0, sizeof(M.sums));
  M.count = 0;
  M.keys = NULL;
  M.nkeys = M.capkeys = 0;
  pthread_mutex_unlock(&M.lock);
  napi_value out, ks, bs, ss;
  napi_create_object(env, &out);
  napi_create_array_with_length(env, nkeys * 2, &ks);
  for (size_t i = 0; i < nkeys; i++) {
    napi_set_element(env, ks, (uint32_t)(i * 2), str(env, keys[i].key));
    napi_set_element(env, ks, (uint32_t)(i * 2 + 1), num(env, (double)keys[i].n));
  }
  free(keys);
  napi_create_array_with_length(env, (size_t)(3 * nb), &bs);
  for (int p = 0; p < 3; p++)
    for (int b = 0; b < nb; b++)
      napi_set_element(env, bs, (uint32_t)(p * nb + b), num(env, (double)buckets[p][b]));
  napi_create_array_with_length(env, 3, &ss);
  for (int p = 0; p < 3; p++)
    napi_set_element(env, ss, (uint32_t)p, num(env, sums[p]));
  napi_set_named_property(env, out, "count", num(env, (double)count));
  napi_set_named_property(env, out, "keys", ks);
  napi_set_named_property(env, out, "buckets", bs);
  napi_set_named_property(env, out, "sums", ss);
  return out;
}

/* The chain's state as JavaScript reads it: { seq, chain, size, written, error, attached }. */
static napi_value chain_state_locked(napi_env env) {
  napi_value out, attached;
  napi_create_object(env, &out);
  napi_get_boolean(env, G.chain_on != 0, &attached);
  napi_set_named_property(env, out, "seq", num(env, (double)G.chain.seq));
  napi_set_named_property(env, out, "chain", str(env, G.chain.chain));
  napi_set_named_property(env, out, "size", num(env, (double)G.chain.size));
  napi_set_named_property(env, out, "written", num(env, (double)G.chain.written));
  napi_set_named_property(env, out, "error", num(env, G.chain.error));
  napi_set_named_property(env, out, "attached", attached);
  return out;
}

static void chain_release_locked(void) {
  G.chain_on = 0;
  atomic_store(&G.chain_live, 0);
  if (G.chain.fd >= 0)
    close(G.chain.fd);
  G.chain.fd = -1;
  EVP_MAC_CTX_free(G.mac); /* cleanses the key */
  G.mac = NULL;
  G.chain.mac_ctx = NULL;
}

/*
 * chainAttach(fd, key, seq, chainHex, size): from now on every entry is chained and written here
 * (a duplicate of the log's descriptor `fd`, opened for appending), after entry `seq` whose chain
 * value is `chainHex`, the file holding `size` bytes of whole entries.
 */
static napi_value js_chain_attach(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  if (args_of(env, info, 5, argv) == NULL)
    return NULL;
  uint32_t fd;
  void *key;
  size_t key_len;
  double seq, size;
  char chain[66];
  if (!G.started || !get_u32(env, argv[0], &fd) ||
      napi_get_buffer_info(env, argv[1], &key, &key_len) != napi_ok || key_len == 0 ||
      napi_get_value_double(env, argv[2], &seq) != napi_ok || seq < 0 ||
      !get_str(env, argv[3], chain, sizeof(chain)) || strlen(chain) != 64 ||
      napi_get_value_double(env, argv[4], &size) != napi_ok || size < 0) {
    napi_throw_type_error(env, NULL, "keyd native: bad chainAttach arguments");
    return NULL;
  }
  EVP_MAC *alg = EVP_MAC_fetch(NULL, "HMAC", NULL);
  EVP_MAC_CTX *mac = alg == NULL ? NULL : EVP_MAC_CTX_new(alg);
  EVP_MAC_free(alg);
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
                         OSSL_PARAM_construct_end()};
  int dup = fcntl((int)fd, F_DUPFD_CLOEXEC, 3);
  if (mac == NULL || dup < 0 || EVP_MAC_init(mac, key, key_len, params) != 1) {
    EVP_MAC_CTX_free(mac);
    if (dup >= 0)
      close(dup);
    napi_throw_error(env, NULL, "keyd native: cannot attach the audit chain");
    return NULL;
  }
  pthread_mutex_lock(&G.alock);
  chain_release_locked();
  G.mac = mac;
  G.chain.fd = dup;
  G.chain.seq = (uint64_t)seq;
  memcpy(G.chain.chain, chain, 65);
  G.chain.size = (uint64_t)size;
  G.chain.written = 0;
  G.chain.error = 0;
  G.chain.mac = mac_hex;
  G.chain.mac_ctx = mac;
  G.chain_on = 1;
  atomic_store(&G.chain_live, 1);
  pthread_mutex_unlock(&G.alock);
  napi_value ok;
  napi_get_boolean(env, true, &ok);
  return ok;
}

/* chainAppend(tail): chains and writes one entry (JavaScript's); its seq, or -errno (see chain.h).
 */
static napi_value js_chain_append(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (args_of(env, info, 1, argv) == NULL)
    return NULL;
  char stack[2048];
  size_t len = 0;
  if (napi_get_value_string_utf8(env, argv[0], NULL, 0, &len) != napi_ok || len > FC_MAX_TAIL) {
    napi_throw_type_error(env, NULL, "keyd native: chainAppend needs a string of at most 8 KiB");
    return NULL;
  }
  char *buf = len < sizeof(stack) ? stack : malloc(len + 1);
  if (buf == NULL) {
    napi_throw_error(env, NULL, "keyd native: out of memory");
    return NULL;
  }
  napi_get_value_string_utf8(env, argv[0], buf, len + 1, &len);
  int64_t r = chain_append(buf, len);
  if (buf != stack)
    free(buf);
  return num(env, (double)r);
}

/* chainDetach(): stops chaining here (no entry is made here afterwards) and returns the state. */
static napi_value js_chain_detach(napi_env env, napi_callback_info info) {
  (void)info;
  pthread_mutex_lock(&G.alock);
  chain_release_locked();
  napi_value out = chain_state_locked(env);
  pthread_mutex_unlock(&G.alock);
  return out;
}

/* chainHead(): the chain's state (the last entry written, and whether it is attached). */
static napi_value js_chain_head(napi_env env, napi_callback_info info) {
  (void)info;
  pthread_mutex_lock(&G.alock);
  napi_value out = chain_state_locked(env);
  pthread_mutex_unlock(&G.alock);
  return out;
}

/* stats(): { signatures } for tests and metrics. */
static napi_value js_stats(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value out;
  napi_create_object(env, &out);
  napi_set_named_property(env, out, "signatures", num(env, (double)atomic_load(&G.signed_count)));
  return out;
}

static napi_value init(napi_env env, napi_value exports) {
  struct {
    const char *name;
    napi_callback fn;
  } fns[] = {{"start", js_start},
             {"adopt", js_adopt},
             {"write", js_write},
             {"pause", js_pause},
             {"resume", js_resume},
             {"shutdown", js_shutdown},
             {"end", js_end},
             {"drop", js_drop},
             {"setKey", js_set_key},
             {"dropKey", js_drop_key},
             {"setTable", js_set_table},
             {"drain", js_drain},
             {"takeMetrics", js_take_metrics},
             {"stats", js_stats},
             {"chainAttach", js_chain_attach},
             {"chainAppend", js_chain_append},
             {"chainDetach", js_chain_detach},
             {"chainHead", js_chain_head}};
  for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++) {
    napi_value f;
    if (napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &f) != napi_ok ||
        napi_set_named_property(env, exports, fns[i].name, f) != napi_ok)
      return NULL;
  }
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
