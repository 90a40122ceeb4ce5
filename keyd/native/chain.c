/* keyd's audit chain in C: see chain.h. */
#define _GNU_SOURCE
#include "chain.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

size_t fc_u64(char *out, uint64_t v) {
  char tmp[20];
  size_t n = 0;
  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v != 0);
  for (size_t i = 0; i < n; i++)
    out[i] = tmp[n - 1 - i];
  return n;
}

static void digits(char *p, int v, int width) {
  for (int i = width - 1; i >= 0; i--) {
    p[i] = (char)('0' + v % 10);
    v /= 10;
  }
}

/* The civil date of a day count from 1970-01-01 (proleptic Gregorian; H. Hinnant's algorithm). */
static void civil(int64_t days, int *year, int *month, int *day) {
  days += 719468;
  int64_t era = (days >= 0 ? days : days - 146096) / 146097;
  int64_t doe = days - era * 146097;
  int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  int64_t mp = (5 * doy + 2) / 153;
  *day = (int)(doy - (153 * mp + 2) / 5 + 1);
  *month = (int)(mp < 10 ? mp + 3 : mp - 9);
  *year = (int)(yoe + era * 400 + (*month <= 2));
}

void fc_iso_time(int64_t ms, char out[32]) {
  /* Without gmtime_r (it takes glibc's time zone lock) or printf: one per entry at a handshake's
   * pace. */
  int64_t days = ms >= 0 ? ms / 86400000 : (ms - 86399999) / 86400000;
  int64_t rest = ms - days * 86400000;
  int year, month, day;
  civil(days, &year, &month, &day);
  if (year < 0 || year > 9999) {
    memcpy(out, "1970-01-01T00:00:00.000Z", 25);
    return;
  }
  digits(out, year, 4);
  out[4] = '-';
  digits(out + 5, month, 2);
  out[7] = '-';
  digits(out + 8, day, 2);
  out[10] = 'T';
  digits(out + 11, (int)(rest / 3600000), 2);
  out[13] = ':';
  digits(out + 14, (int)(rest / 60000 % 60), 2);
  out[16] = ':';
  digits(out + 17, (int)(rest / 1000 % 60), 2);
  out[19] = '.';
  digits(out + 20, (int)(rest % 1000), 3);
  out[23] = 'Z';
  out[24] = '\0';
}

/* Writes `len` bytes whole; 0, or -errno (a short write that makes no progress counts as ENOSPC).
 */
static int write_all(int fd, const uint8_t *p, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    if (n == 0)
      return -ENOSPC;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

int64_t fc_append(struct fc_chain *c, int64_t now_ms, const char *tail, size_t tail_len) {
  if (tail_len < 2 || tail_len > FC_MAX_TAIL || tail[tail_len - 1] != '}')
    return -EINVAL;
  if (now_ms != c->iso_ms) {
    c->iso_ms = now_ms;
    fc_iso_time(now_ms, c->iso);
  }
  /* text: {"seq":N,"time":"T",tail   line: text less '}' + ,"chain":"H"}\n */
  size_t cap = 64 + 32 + tail_len + 12 + 64 + 3;
  uint8_t stack[2048];
  uint8_t *buf = cap <= sizeof(stack) ? stack : malloc(cap);
  if (buf == NULL)
    return -ENOMEM;
  uint64_t seq = c->seq + 1;
  size_t head = 0;
  memcpy(buf, "{\"seq\":", 7);
  head = 7 + fc_u64((char *)buf + 7, seq);
  memcpy(buf + head, ",\"time\":\"", 9);
  head += 9;
  memcpy(buf + head, c->iso, 24);
  head += 24;
  memcpy(buf + head, "\",", 2);
  head += 2;
  size_t text_len = head + tail_len;
  memcpy(buf + head, tail, tail_len);
  char next[65];
  int64_t rc;
  if (c->mac(c->mac_ctx, c->chain, buf, text_len, next) != 0) {
    rc = -EIO;
    goto out;
  }
  size_t off = text_len - 1;
  memcpy(buf + off, ",\"chain\":\"", 10);
  off += 10;
  memcpy(buf + off, next, 64);
  off += 64;
  memcpy(buf + off, "\"}\n", 3);
  off += 3;
  int w = write_all(c->fd, buf, off);
  if (w != 0) {
    /* Nothing half-written stays: the next entry (or keyd's next start) follows a whole line. */
    if (ftruncate(c->fd, (off_t)c->size) != 0) {
      /* keyd's next start drops a partial last line */
    }
    c->error = -w;
    rc = w;
    goto out;
  }
  c->seq = seq;
  memcpy(c->chain, next, 65);
  c->size += off;
  c->written++;
  rc = (int64_t)seq;
out:
  if (buf != stack)
    free(buf);
  return rc;
}
