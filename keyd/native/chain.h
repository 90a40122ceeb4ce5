/*
 * keyd's audit chain in C (docs/keyd.md, "Native SIGN path"): the pure part shared by the addon and
 * its AddressSanitizer harness (test/keyd/native-hostile.c). One entry is formatted exactly as
 * keyd/audit/chain.ts writes it (canonical text, then the chain value), chained with the caller's
 * HMAC and written to the log with write(2); a failed or short write cuts the file back to its last
 * whole entry and leaves the chain where it was. No locking here: the addon serialises every call.
 */
#ifndef KEYD_CHAIN_H
#define KEYD_CHAIN_H

#include <stddef.h>
#include <stdint.h>

/* chain(n) = HMAC-SHA256(K, chain(n-1) hex || text): writes 64 hex digits and a NUL into `out`. */
typedef int (*fc_mac_fn)(void *ctx, const char *prev_hex, const uint8_t *text, size_t len,
                         char out[65]);

struct fc_chain {
  int fd;           /* the log, opened for appending (-1: none) */
  uint64_t seq;     /* the last entry's seq (0: none yet) */
  char chain[65];   /* its chain value, hex */
  uint64_t size;    /* bytes of whole entries in the file */
  uint64_t written; /* entries written through this chain */
  int error;        /* errno of the write that failed (0: none) */
  int64_t iso_ms;   /* the millisecond `iso` spells */
  char iso[32];
  fc_mac_fn mac;
  void *mac_ctx;
};

/* Longest tail fc_append takes (the record fields after seq and time). */
#define FC_MAX_TAIL 8192

/* Writes `v` in decimal (no NUL) into `out` (room for 20 digits); returns the digits written. */
size_t fc_u64(char *out, uint64_t v);

/* The ISO 8601 UTC time of `ms` as JavaScript's Date.prototype.toISOString (years 0..9999). */
void fc_iso_time(int64_t ms, char out[32]);

/*
 * Appends one entry: canonical text `{"seq":<seq+1>,"time":"<now>",` + `tail` (the remaining
 * fields as JSON.stringify writes them, ending with `}`), then the line = text less its `}` +
 * `,"chain":"<hex>"}\n`, written whole. Returns the new seq (> 0), or -errno: the write failed
 * (the file is cut back to `size`, `error` set, seq and chain unchanged), or -EINVAL for a bad
 * tail, -EIO when the MAC failed. Never called with `error` set (the caller checks).
 */
int64_t fc_append(struct fc_chain *c, int64_t now_ms, const char *tail, size_t tail_len);

#endif
