/* keyd's audit chain in C: see chain.h. */
#define _GNU_SOURCE
#include "chain.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void fc_iso_time(int64_t ms, char out[32]) {
  int64_t secs = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
  int millis = (int)(ms - secs * 1000);
  time_t t = (time_t)secs;
  struct tm tm;
  if (gmtime_r(&t, &tm) == NULL) {
    snprintf(out, 32, "1970-01-01T00:00:00.000Z");
    return;
  }
  char buf[96];
  snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
           tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, millis);
  snprintf(out, 32, "%.31s", buf);
}

/* Writes `len` bytes whole; 0, or -errno (a short write that makes no progress counts as ENOSPC). */
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
  int head = snprintf((char *)buf, cap, "{\"seq\":%llu,\"time\":\"%s\",", (unsigned long long)seq,
                      c->iso);
  size_t text_len = (size_t)head + tail_len;
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
