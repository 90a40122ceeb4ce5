/*
 * wire.c: keyd's frame and item format (keyd/protocol/PROTOCOL.md), as pure functions over
 * bytes; the numbers come from the generated keyd_protocol.h. Never touches a socket.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bridge.h"

int ke_buf_add(KE_BUF *b, const void *data, size_t n) {
  if (n > SIZE_MAX / 2 - b->len)
    return 0;
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    unsigned char *np;
    while (cap < b->len + n)
      cap *= 2;
    if ((np = malloc(cap)) == NULL)
      return 0;
    /* not realloc: the old bytes may be a secret, wiped before they are freed */
    size_t len = b->len;
    if (len > 0)
      memcpy(np, b->p, len);
    ke_buf_free(b);
    b->p = np;
    b->len = len;
    b->cap = cap;
  }
  if (n > 0 && data != NULL)
    memcpy(b->p + b->len, data, n);
  b->len += n;
  return 1;
}

void ke_buf_free(KE_BUF *b) {
  if (b->p != NULL) {
    volatile unsigned char *v = b->p;
    size_t i;
    for (i = 0; i < b->cap; i++)
      v[i] = 0;
  }
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

void ke_put32(unsigned char *d, uint32_t v) {
  d[0] = (unsigned char)(v >> 24);
  d[1] = (unsigned char)(v >> 16);
  d[2] = (unsigned char)(v >> 8);
  d[3] = (unsigned char)v;
}

uint32_t ke_get32(const unsigned char *d) {
  return (uint32_t)d[0] << 24 | (uint32_t)d[1] << 16 | (uint32_t)d[2] << 8 | (uint32_t)d[3];
}

int ke_item_add(KE_BUF *b, int tag, const void *v, size_t n) {
  unsigned char h[5] = {(unsigned char)tag};
  if (n > KEYD_MAX_FRAME)
    return 0;
  ke_put32(h + 1, (uint32_t)n);
  return ke_buf_add(b, h, 5) && ke_buf_add(b, v, n);
}

int ke_item_add_u16(KE_BUF *b, int tag, unsigned v) {
  unsigned char d[2] = {(unsigned char)(v >> 8), (unsigned char)v};
  return ke_item_add(b, tag, d, 2);
}

int ke_item_find(const unsigned char *p, size_t len, int tag, const unsigned char **val,
                 size_t *vlen) {
  size_t off = 0;
  while (off < len) {
    uint32_t n;
    if (len - off < 5 || (n = ke_get32(p + off + 1)) > len - off - 5)
      return -1;
    if (p[off] == tag) {
      *val = p + off + 5;
      *vlen = n;
      return 1;
    }
    off += 5 + (size_t)n;
  }
  return 0;
}

int ke_item_u32(const unsigned char *p, size_t len, int tag, uint32_t *out) {
  const unsigned char *v;
  size_t n;
  if (ke_item_find(p, len, tag, &v, &n) != 1 || n != 4)
    return 0;
  *out = ke_get32(v);
  return 1;
}

int ke_frame_head(unsigned char *h, int op, uint32_t id, size_t payload_len) {
  if (payload_len > KEYD_MAX_FRAME - KEYD_HEADER_SIZE)
    return 0;
  ke_put32(h, (uint32_t)(KEYD_HEADER_SIZE - 4 + payload_len));
  h[4] = KEYD_PROTOCOL_VERSION;
  h[5] = (unsigned char)op;
  h[6] = h[7] = 0;
  ke_put32(h + 8, id);
  return 1;
}

enum ke_head_status ke_frame_parse(const unsigned char *h, KE_HEAD *out) {
  uint32_t len = ke_get32(h);
  /* length counts the bytes after itself; written so that no length near 2^32 can wrap */
  if (len < KEYD_HEADER_SIZE - 4)
    return KE_HEAD_SHORT;
  if (len > KEYD_MAX_FRAME - 4)
    return KE_HEAD_TOO_LARGE;
  if (h[4] != KEYD_PROTOCOL_VERSION)
    return KE_HEAD_VERSION;
  if (h[6] != 0 || h[7] != 0)
    return KE_HEAD_FLAGS;
  out->payload_len = len - (KEYD_HEADER_SIZE - 4);
  out->op = h[5];
  out->id = ke_get32(h + 8);
  return KE_HEAD_OK;
}

const char *ke_head_status_text(enum ke_head_status s) {
  switch (s) {
  case KE_HEAD_OK:
    return "ok";
  case KE_HEAD_SHORT:
    return "frame length under the header size";
  case KE_HEAD_TOO_LARGE:
    return "frame length over the maximum frame size";
  case KE_HEAD_VERSION:
    return "unsupported protocol version";
  case KE_HEAD_FLAGS:
    return "non-zero flags";
  }
  return "?";
}

/* keyd's error codes, from the generated header: one table, so none reads "protocol error". */
static const struct {
  unsigned code;
  const char *name, *meaning;
} keyd_errors[] = {
#define KE_ERROR_ROW(code, name, meaning) {code, #name, meaning},
    KEYD_ERRORS(KE_ERROR_ROW)
#undef KE_ERROR_ROW
};

#define KE_NERRORS (sizeof(keyd_errors) / sizeof(keyd_errors[0]))

const char *ke_keyd_error_name(unsigned code) {
  size_t i;
  for (i = 0; i < KE_NERRORS; i++)
    if (keyd_errors[i].code == code)
      return keyd_errors[i].name;
  return NULL;
}

const char *ke_keyd_error_meaning(unsigned code) {
  size_t i;
  for (i = 0; i < KE_NERRORS; i++)
    if (keyd_errors[i].code == code)
      return keyd_errors[i].meaning;
  return NULL;
}

size_t ke_keyd_error_count(void) { return KE_NERRORS; }

unsigned ke_keyd_error_code_at(size_t i) { return i < KE_NERRORS ? keyd_errors[i].code : 0; }
