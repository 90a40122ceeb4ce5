/*
 * Drives the pure C of keyd's native SIGN path (keyd/native/frame.c: the SIGN frame parser, the
 * tls-server message check, the eligibility table; keyd/native/chain.c: the audit entry's format,
 * chaining and write, with failing writes) with hostile input under AddressSanitizer and
 * UndefinedBehaviorSanitizer (test/keyd/native-hostile.test.ts builds and runs it). Prints TAP
 * lines.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "chain.h"
#include "fastsign.h"

static int checks = 0;
static int failures = 0;

static void ok(int cond, const char *what) {
  checks++;
  if (!cond)
    failures++;
  printf("%s %d - %s\n", cond ? "ok" : "not ok", checks, what);
}

static uint32_t rng_state = 12345;
static uint32_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 17;
  rng_state ^= rng_state << 5;
  return rng_state;
}

static void put32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

static size_t item(uint8_t *p, uint8_t tag, const void *v, uint32_t len) {
  p[0] = tag;
  put32(p + 1, len);
  memcpy(p + 5, v, len);
  return 5 + (size_t)len;
}

static size_t tls13(uint8_t *m, size_t hash) {
  memset(m, 0x20, 64);
  memcpy(m + 64, "TLS 1.3, server CertificateVerify", 34);
  for (size_t i = 0; i < hash; i++)
    m[98 + i] = (uint8_t)rnd();
  return 98 + hash;
}

/* A valid SIGN frame into `f`; returns its length. */
static size_t sign_frame(uint8_t *f, const char *key, int with_version, uint32_t version,
                         uint16_t alg, const uint8_t *msg, size_t msg_len, int enc) {
  size_t off = FS_HEADER_SIZE;
  off += item(f + off, FS_TAG_KEY_NAME, key, (uint32_t)strlen(key));
  if (with_version) {
    uint8_t v[4];
    put32(v, version);
    off += item(f + off, FS_TAG_KEY_VERSION, v, 4);
  }
  uint8_t a[2] = {(uint8_t)(alg >> 8), (uint8_t)alg};
  off += item(f + off, FS_TAG_ALGORITHM, a, 2);
  off += item(f + off, FS_TAG_MESSAGE, msg, (uint32_t)msg_len);
  if (enc >= 0) {
    uint8_t e = (uint8_t)enc;
    off += item(f + off, FS_TAG_SIG_ENCODING, &e, 1);
  }
  put32(f, (uint32_t)(off - 4));
  f[4] = 1;
  f[5] = FS_OP_SIGN;
  f[6] = f[7] = 0;
  put32(f + 8, 42);
  return off;
}

/* A stand-in for HMAC-SHA256 (no OpenSSL here): FNV-1a over prev || text, spread to 32 bytes. */
static int mac_fail = 0;
static int fake_mac(void *ctx, const char *prev, const uint8_t *text, size_t len, char out[65]) {
  (void)ctx;
  if (mac_fail)
    return -1;
  static const char hex[] = "0123456789abcdef";
  uint32_t h = 2166136261u;
  for (int i = 0; i < 64; i++)
    h = (h ^ (uint8_t)prev[i]) * 16777619u;
  for (size_t i = 0; i < len; i++)
    h = (h ^ text[i]) * 16777619u;
  for (int i = 0; i < 64; i++) {
    h = (h ^ (uint32_t)i) * 16777619u;
    out[i] = hex[h & 15];
  }
  out[64] = '\0';
  return 0;
}

static off_t file_size(int fd) {
  struct stat st;
  return fstat(fd, &st) == 0 ? st.st_size : -1;
}

static void chain_checks(void) {
  char iso[32];
  fc_iso_time(0, iso);
  ok(strcmp(iso, "1970-01-01T00:00:00.000Z") == 0, "ISO time of 0");
  fc_iso_time(1700000000123LL, iso);
  ok(strcmp(iso, "2023-11-14T22:13:20.123Z") == 0, "ISO time with milliseconds");
  fc_iso_time(253402300799999LL, iso);
  ok(strcmp(iso, "9999-12-31T23:59:59.999Z") == 0, "ISO time at the end of year 9999");
  fc_iso_time(-1, iso);
  ok(strcmp(iso, "1969-12-31T23:59:59.999Z") == 0, "ISO time before 1970");
  int iso_ok = 1;
  for (int i = 0; i < 100000 && iso_ok; i++) {
    /* Years 0..9999, against gmtime_r (what toISOString spells for them). */
    int64_t ms =
        -62167219200000LL + (int64_t)(((uint64_t)rnd() << 32 | rnd()) % 315537897600000ULL);
    int64_t secs = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
    time_t tt = (time_t)secs;
    struct tm tm;
    char want[96];
    gmtime_r(&tt, &tm);
    snprintf(want, sizeof(want), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms - secs * 1000));
    fc_iso_time(ms, iso);
    iso_ok = strcmp(iso, want) == 0;
  }
  ok(iso_ok, "100,000 random times of years 0..9999 spelled as gmtime_r does");
  char num[24] = {0};
  ok(fc_u64(num, 0) == 1 && strcmp(num, "0") == 0, "decimal 0");
  memset(num, 0, sizeof(num));
  ok(fc_u64(num, UINT64_MAX) == 20 && strcmp(num, "18446744073709551615") == 0, "decimal 2^64-1");

  char path[] = "/tmp/keyd-chain-XXXXXX";
  int fd = mkstemp(path);
  ok(fd >= 0, "a temporary log");
  if (fd < 0)
    return;
  unlink(path);
  struct fc_chain c;
  memset(&c, 0, sizeof(c));
  c.fd = fd;
  memset(c.chain, '0', 64);
  c.iso_ms = -1;
  c.mac = fake_mac;
  const char *tail = "\"client\":\"proxy\",\"op\":\"SIGN\",\"key\":\"k\",\"version\":null,"
                     "\"result\":\"ok\",\"msgSha256\":\"ab\"}";
  int64_t r = fc_append(&c, 1700000000123LL, tail, strlen(tail));
  char text[512], want[600], mac[65], genesis[65];
  memset(genesis, '0', 64);
  genesis[64] = '\0';
  snprintf(text, sizeof(text), "{\"seq\":1,\"time\":\"2023-11-14T22:13:20.123Z\",%s", tail);
  fake_mac(NULL, genesis, (const uint8_t *)text, strlen(text), mac);
  snprintf(want, sizeof(want), "%.*s,\"chain\":\"%s\"}\n", (int)strlen(text) - 1, text, mac);
  char got[600] = {0};
  ssize_t n = pread(fd, got, sizeof(got) - 1, 0);
  ok(r == 1 && c.seq == 1 && strcmp(c.chain, mac) == 0,
     "the first entry: seq 1, chained from genesis");
  ok(n == (ssize_t)strlen(want) && strcmp(got, want) == 0, "its line, byte for byte");
  ok(c.size == (uint64_t)n && c.written == 1, "size and count follow");
  char first[65];
  memcpy(first, c.chain, 65);
  r = fc_append(&c, 1700000000124LL, tail, strlen(tail));
  snprintf(text, sizeof(text), "{\"seq\":2,\"time\":\"2023-11-14T22:13:20.124Z\",%s", tail);
  fake_mac(NULL, first, (const uint8_t *)text, strlen(text), mac);
  ok(r == 2 && strcmp(c.chain, mac) == 0, "the second entry chains from the first");

  /* Refused tails: nothing written, nothing changed. */
  uint64_t size = c.size;
  static char big[FC_MAX_TAIL + 2];
  memset(big, 'x', sizeof(big));
  big[FC_MAX_TAIL] = '}';
  ok(fc_append(&c, 1, "", 0) == -EINVAL && fc_append(&c, 1, "}", 1) == -EINVAL,
     "an empty or one-byte tail is refused");
  ok(fc_append(&c, 1, "\"a\":1", 5) == -EINVAL, "a tail not ending in } is refused");
  ok(fc_append(&c, 1, big, FC_MAX_TAIL + 1) == -EINVAL, "a tail over FC_MAX_TAIL is refused");
  ok(c.seq == 2 && c.size == size && file_size(fd) == (off_t)size && c.error == 0,
     "refusals leave the chain and the file as they were");
  big[FC_MAX_TAIL - 1] = '}';
  r = fc_append(&c, 1, big, FC_MAX_TAIL);
  ok(r == 3 && file_size(fd) == (off_t)c.size, "the longest tail is written whole (heap buffer)");
  size = c.size;
  char before[65];
  memcpy(before, c.chain, 65);
  mac_fail = 1;
  r = fc_append(&c, 1, tail, strlen(tail));
  mac_fail = 0;
  ok(r == -EIO && c.seq == 3 && c.size == size && strcmp(c.chain, before) == 0 && c.error == 0,
     "a failing MAC: nothing written, chain unchanged");

  /* A short write: the file size limit stops it part-way; the file is cut back to whole entries. */
  struct rlimit old, lim;
  getrlimit(RLIMIT_FSIZE, &old);
  signal(SIGXFSZ, SIG_IGN);
  lim.rlim_cur = (rlim_t)size + 50;
  lim.rlim_max = old.rlim_max;
  int limited = setrlimit(RLIMIT_FSIZE, &lim) == 0;
  r = fc_append(&c, 1, tail, strlen(tail));
  setrlimit(RLIMIT_FSIZE, &old);
  ok(limited && r == -EFBIG && c.error == EFBIG, "a write stopped part-way fails (EFBIG)");
  ok(file_size(fd) == (off_t)size && c.seq == 3 && strcmp(c.chain, before) == 0,
     "and the file is cut back to its last whole entry, the chain unchanged");
  close(fd);

  /* A full device. */
  int full = open("/dev/full", O_WRONLY);
  if (full >= 0) {
    struct fc_chain d = c;
    d.fd = full;
    d.error = 0;
    r = fc_append(&d, 1, tail, strlen(tail));
    ok(r == -ENOSPC && d.error == ENOSPC && d.seq == 3 && strcmp(d.chain, before) == 0,
       "ENOSPC: refused, chain unchanged");
    close(full);
  } else {
    ok(1, "no /dev/full here: ENOSPC checked by the disk-full test only");
  }

  /* Random tails into /dev/null: each either refused or written as the next entry. */
  int null = open("/dev/null", O_WRONLY);
  struct fc_chain e = c;
  e.fd = null;
  e.error = 0;
  int consistent = null >= 0;
  static char junk[FC_MAX_TAIL + 64];
  for (int i = 0; i < 20000 && consistent; i++) {
    size_t len = rnd() % (i % 10 == 0 ? sizeof(junk) : 300);
    for (size_t j = 0; j < len; j++)
      junk[j] = (char)rnd();
    if (len > 0 && (rnd() & 1))
      junk[len - 1] = '}';
    uint64_t prev = e.seq;
    r = fc_append(&e, (int64_t)rnd() * 1000, junk, len);
    consistent = r == -EINVAL ? e.seq == prev : (r == (int64_t)prev + 1 && e.seq == prev + 1);
  }
  ok(consistent, "20,000 random tails: each refused or chained as the next entry");
  if (null >= 0)
    close(null);
}

int main(void) {
  time_t started = time(NULL);
  struct fs_sign_req req;
  uint8_t msg[200];
  size_t mlen = tls13(msg, 32);
  static uint8_t frame[FS_FAST_FRAME_MAX + 64];
  size_t flen = sign_frame(frame, "web", 0, 0, 0x0001, msg, mlen, -1);

  /* The parser on valid frames. */
  ok(fs_parse_sign(frame, flen, &req) == 1, "a valid SIGN parses");
  ok(req.request_id == 42 && req.name_len == 3 && memcmp(req.name, "web", 3) == 0, "name and id");
  ok(req.algorithm == 1 && req.msg_len == mlen && !req.has_version && !req.p1363, "fields");
  flen = sign_frame(frame, "web", 1, 7, 0x0021, msg, mlen, 1);
  ok(fs_parse_sign(frame, flen, &req) == 1 && req.has_version && req.version == 7 && req.p1363,
     "version and P1363");
  flen = sign_frame(frame, "web", 0, 0, 0x0001, msg, mlen, 2);
  ok(fs_parse_sign(frame, flen, &req) == 0, "SIG_ENCODING 2 goes to JavaScript");
  flen = sign_frame(frame, "", 0, 0, 0x0001, msg, mlen, -1);
  ok(fs_parse_sign(frame, flen, &req) == 0, "an empty name goes to JavaScript");
  char long_name[80];
  memset(long_name, 'a', 65);
  long_name[65] = '\0';
  flen = sign_frame(frame, long_name, 0, 0, 0x0001, msg, mlen, -1);
  ok(fs_parse_sign(frame, flen, &req) == 0, "a 65-byte name goes to JavaScript");

  /* Header fields, duplicates, unknown tags, wrong sizes. */
  flen = sign_frame(frame, "web", 0, 0, 0x0001, msg, mlen, -1);
  uint8_t copy[512];
  memcpy(copy, frame, flen);
  copy[4] = 2;
  ok(fs_parse_sign(copy, flen, &req) == 0, "version 2 goes to JavaScript");
  memcpy(copy, frame, flen);
  copy[7] = 1;
  ok(fs_parse_sign(copy, flen, &req) == 0, "flags go to JavaScript");
  memcpy(copy, frame, flen);
  copy[5] = 0x05;
  ok(fs_parse_sign(copy, flen, &req) == 0, "SIGN_BATCH goes to JavaScript");
  memcpy(copy, frame, flen);
  put32(copy, (uint32_t)flen);
  ok(fs_parse_sign(copy, flen, &req) == 0, "a length field that disagrees goes to JavaScript");
  memcpy(copy, frame, flen);
  size_t extra = item(copy + flen, FS_TAG_KEY_NAME, "x", 1);
  put32(copy, (uint32_t)(flen + extra - 4));
  ok(fs_parse_sign(copy, flen + extra, &req) == 0, "a repeated tag goes to JavaScript");
  memcpy(copy, frame, flen);
  extra = item(copy + flen, 0x40, "x", 1);
  put32(copy, (uint32_t)(flen + extra - 4));
  ok(fs_parse_sign(copy, flen + extra, &req) == 0, "an unknown tag goes to JavaScript");
  memcpy(copy, frame, flen);
  put32(copy + FS_HEADER_SIZE + 1, 0xffffffffu);
  ok(fs_parse_sign(copy, flen, &req) == 0, "an item length of 4 GiB goes to JavaScript");
  memcpy(copy, frame, flen);
  put32(copy + FS_HEADER_SIZE + 1, 0xfffffffbu);
  ok(fs_parse_sign(copy, flen, &req) == 0, "an item length that wraps goes to JavaScript");
  ok(fs_parse_sign(NULL, 0, &req) == 0 && fs_parse_sign(frame, 0, &req) == 0, "NULL and empty");

  /* Every truncation of a valid frame, with its length field fixed up or not. */
  int truncations_ok = 1;
  for (size_t n = 0; n < flen; n++) {
    uint8_t *t = malloc(n == 0 ? 1 : n);
    memcpy(t, frame, n);
    if (fs_parse_sign(t, n, &req) != 0)
      truncations_ok = 0;
    if (n >= 4) {
      put32(t, (uint32_t)(n - 4));
      if (n < flen && fs_parse_sign(t, n, &req) != 0 && n < FS_HEADER_SIZE)
        truncations_ok = 0;
    }
    free(t);
  }
  ok(truncations_ok, "every truncation is refused or parses within its bytes");

  /* Random mutations of valid frames, each in a buffer of exactly its size (ASan sees any
   * overread). */
  for (int round = 0; round < 20; round++) {
    int survived = 1;
    for (int i = 0; i < 20000; i++) {
      size_t n = sign_frame(frame, "web", (int)(rnd() & 1), rnd(), (uint16_t)rnd(), msg,
                            rnd() % mlen, (int)(rnd() % 3) - 1);
      int muts = 1 + (int)(rnd() % 4);
      for (int m = 0; m < muts; m++) {
        uint32_t r = rnd() % 3;
        if (r == 0 && n > 0)
          frame[rnd() % n] = (uint8_t)rnd();
        else if (r == 1)
          n = rnd() % (n + 1);
        else if (n >= 4)
          put32(frame + (rnd() % (n - 3)), rnd());
      }
      uint8_t *exact = malloc(n == 0 ? 1 : n);
      memcpy(exact, frame, n);
      int r = fs_parse_sign(exact, n, &req);
      if (r == 1 && (req.msg + req.msg_len > exact + n || req.name + req.name_len > exact + n))
        survived = 0;
      free(exact);
    }
    ok(survived, "20,000 mutated frames: pointers stay inside the frame");
  }
  /* Random bytes. */
  for (int round = 0; round < 10; round++) {
    for (int i = 0; i < 20000; i++) {
      size_t n = rnd() % 300;
      uint8_t *b = malloc(n == 0 ? 1 : n);
      for (size_t j = 0; j < n; j++)
        b[j] = (uint8_t)rnd();
      if (n >= 4 && (rnd() & 1))
        put32(b, (uint32_t)(n - 4));
      fs_parse_sign(b, n, &req);
      free(b);
    }
    ok(1, "20,000 random inputs");
  }

  /* The tls-server message shape, as keyd/policy/tls-message.ts. */
  uint8_t m[200];
  ok(fs_tls_message_ok(m, tls13(m, 32)) && fs_tls_message_ok(m, tls13(m, 48)) &&
         fs_tls_message_ok(m, tls13(m, 64)),
     "TLS 1.3 CertificateVerify with 32, 48, 64-byte hashes");
  ok(!fs_tls_message_ok(m, tls13(m, 31)) && !fs_tls_message_ok(m, tls13(m, 33)),
     "other hash sizes are refused");
  tls13(m, 32);
  m[10] = 0x21;
  ok(!fs_tls_message_ok(m, 130), "a changed space is refused");
  tls13(m, 32);
  m[97] = 1;
  ok(!fs_tls_message_ok(m, 130), "a missing 0 byte is refused");
  memset(m, 7, 64);
  m[64] = 3;
  m[65] = 0;
  m[66] = 29;
  m[67] = 32;
  ok(fs_tls_message_ok(m, 100), "TLS 1.2 ServerKeyExchange");
  ok(!fs_tls_message_ok(m, 99) && !fs_tls_message_ok(m, 101), "with its exact point length only");
  m[67] = 0;
  ok(!fs_tls_message_ok(m, 68), "an empty point is refused");
  m[64] = 4;
  m[67] = 32;
  ok(!fs_tls_message_ok(m, 100), "another curve type is refused");
  int shapes_ok = 1;
  for (int i = 0; i < 200000; i++) {
    size_t n = rnd() % 200;
    uint8_t *b = malloc(n == 0 ? 1 : n);
    for (size_t j = 0; j < n; j++)
      b[j] = (rnd() & 1) ? 0x20 : (uint8_t)rnd();
    int r = fs_tls_message_ok(b, n);
    if (r && !(n > 98 || (n >= 69 && b[64] == 3)))
      shapes_ok = 0;
    free(b);
  }
  ok(shapes_ok, "200,000 random messages: accepted only with a possible shape");
  ok(!fs_tls_message_ok(NULL, 0), "NULL");

  /* The eligibility table. */
  struct fs_table t = {0};
  t.count = 300;
  t.entries = calloc(t.count, sizeof(struct fs_entry));
  for (size_t i = 0; i < t.count; i++) {
    struct fs_entry *e = &t.entries[i];
    snprintf(e->client, sizeof(e->client), "proxy:%064zu", i % 3);
    snprintf(e->client_name, sizeof(e->client_name), "proxy");
    snprintf(e->key, sizeof(e->key), "key-%zu", i / 3);
    e->version = (uint32_t)(i % 2);
    e->key_version = 1;
    e->alg_mask = 1u << 0;
    e->tls_server = (int)(i % 5 == 0);
    e->deadline_ms = (i % 7 == 0) ? 1000 : 0;
  }
  ok(fs_table_index(&t) == 0, "index built");
  char client[160];
  snprintf(client, sizeof(client), "proxy:%064d", 1);
  const struct fs_entry *found = fs_table_find(&t, client, (const uint8_t *)"key-0", 5, 1);
  ok(found == &t.entries[1], "finds (client, key, version)");
  ok(fs_table_find(&t, client, (const uint8_t *)"key-0", 5, 2) == NULL, "not another version");
  ok(fs_table_find(&t, "proxy:x", (const uint8_t *)"key-0", 5, 1) == NULL, "not another client");
  ok(fs_table_find(&t, client, (const uint8_t *)"key-0\0", 6, 1) == NULL,
     "not a name with a 0 byte");
  struct fs_table empty = {0};
  ok(fs_table_find(&empty, client, (const uint8_t *)"key-0", 5, 0) == NULL, "an empty table");
  /* fs_eligible: algorithm, tls shape, deadline. */
  snprintf(client, sizeof(client), "proxy:%064d", 0);
  flen = sign_frame(frame, "key-0", 0, 0, 0x0001, msg, mlen, -1);
  fs_parse_sign(frame, flen, &req);
  ok(fs_eligible(&t, client, &req, 500) == &t.entries[0], "entry 0 (tls-server, deadline 1000)");
  ok(fs_eligible(&t, client, &req, 1000) == &t.entries[0], "at its deadline");
  ok(fs_eligible(&t, client, &req, 1001) == NULL, "after its deadline: JavaScript");
  flen = sign_frame(frame, "key-0", 0, 0, 0x0002, msg, mlen, -1);
  fs_parse_sign(frame, flen, &req);
  ok(fs_eligible(&t, client, &req, 0) == NULL, "an algorithm outside the mask: JavaScript");
  flen = sign_frame(frame, "key-0", 0, 0, 0x0001, (const uint8_t *)"hello", 5, -1);
  fs_parse_sign(frame, flen, &req);
  ok(fs_eligible(&t, client, &req, 0) == NULL,
     "a non-TLS message for a tls-server key: JavaScript");
  int lookups_ok = 1;
  for (int i = 0; i < 200000; i++) {
    char name[70];
    size_t n = rnd() % 66;
    for (size_t j = 0; j < n; j++)
      name[j] = (rnd() & 1) ? (char)('a' + rnd() % 26) : (char)rnd();
    const struct fs_entry *e = fs_table_find(&t, client, (const uint8_t *)name, n, rnd() % 3);
    if (e != NULL && (strlen(e->key) != n || memcmp(e->key, name, n) != 0))
      lookups_ok = 0;
  }
  ok(lookups_ok, "200,000 random lookups: a hit is always the exact name");
  fs_table_free_index(&t);
  free(t.entries);
  chain_checks();
  ok(time(NULL) - started < 60, "within 60 s");
  printf("1..%d\n", checks);
  return failures == 0 ? 0 : 1;
}
