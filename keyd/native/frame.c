/* The pure half of keyd's native SIGN path: frame parser, tls-server shape check, eligibility
 * table. */
#include "fastsign.h"

#include <stdlib.h>
#include <string.h>

static uint32_t be32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

int fs_parse_sign(const uint8_t *frame, size_t len, struct fs_sign_req *out) {
  if (frame == NULL || out == NULL || len < FS_HEADER_SIZE || len > FS_FAST_FRAME_MAX)
    return 0;
  if ((size_t)be32(frame) + 4 != len)
    return 0;
  if (frame[4] != 1 || frame[5] != FS_OP_SIGN || frame[6] != 0 || frame[7] != 0)
    return 0;
  memset(out, 0, sizeof(*out));
  out->request_id = be32(frame + 8);
  int seen_name = 0, seen_alg = 0, seen_msg = 0, seen_enc = 0;
  size_t off = FS_HEADER_SIZE;
  while (off < len) {
    if (len - off < 5)
      return 0;
    uint8_t tag = frame[off];
    size_t vlen = be32(frame + off + 1);
    off += 5;
    if (vlen > len - off)
      return 0;
    const uint8_t *v = frame + off;
    off += vlen;
    switch (tag) {
    case FS_TAG_KEY_NAME:
      if (seen_name++ || vlen == 0 || vlen > FS_MAX_NAME)
        return 0;
      out->name = v;
      out->name_len = vlen;
      break;
    case FS_TAG_KEY_VERSION:
      if (out->has_version++ || vlen != 4)
        return 0;
      out->version = be32(v);
      break;
    case FS_TAG_ALGORITHM:
      if (seen_alg++ || vlen != 2)
        return 0;
      out->algorithm = (uint16_t)((v[0] << 8) | v[1]);
      break;
    case FS_TAG_MESSAGE:
      if (seen_msg++)
        return 0;
      out->msg = v;
      out->msg_len = vlen;
      break;
    case FS_TAG_SIG_ENCODING:
      if (seen_enc++ || vlen != 1 || v[0] > 1)
        return 0;
      out->p1363 = v[0];
      break;
    default:
      return 0;
    }
  }
  return seen_name && seen_alg && seen_msg;
}

static const char TLS13_LABEL[] = "TLS 1.3, server CertificateVerify";
#define TLS13_PREFIX_LEN (64 + sizeof(TLS13_LABEL)) /* 64 spaces, the label, its 0 byte */

int fs_tls_message_ok(const uint8_t *m, size_t len) {
  if (m == NULL)
    return 0;
  if (len > TLS13_PREFIX_LEN) {
    size_t h = len - TLS13_PREFIX_LEN;
    if (h == 32 || h == 48 || h == 64) {
      int ok = 1;
      for (size_t i = 0; i < 64 && ok; i++)
        ok = m[i] == 0x20;
      if (ok && memcmp(m + 64, TLS13_LABEL, sizeof(TLS13_LABEL)) == 0)
        return 1;
    }
  }
  /* client_random(32) server_random(32) curve_type=named_curve(3) named_curve(2) point_len(1) point
   */
  if (len >= 64 + 4 + 1 && m[64] == 0x03) {
    size_t point_len = m[67];
    if (point_len > 0 && len == 64 + 4 + point_len)
      return 1;
  }
  return 0;
}

int fs_alg_bit(uint16_t code) {
  static const uint16_t codes[] = {0x0001, 0x0002, 0x0003, 0x0004, 0x0011, 0x0012,
                                   0x0013, 0x0014, 0x0021, 0x0022, 0x0023, 0x0030};
  for (int i = 0; i < (int)(sizeof(codes) / sizeof(codes[0])); i++)
    if (codes[i] == code)
      return i;
  return -1;
}

static uint32_t hash_of(const char *client, const uint8_t *name, size_t name_len,
                        uint32_t version) {
  uint32_t h = 2166136261u;
  for (const char *p = client; *p != '\0'; p++)
    h = (h ^ (uint8_t)*p) * 16777619u;
  h = (h ^ 0xffu) * 16777619u;
  for (size_t i = 0; i < name_len; i++)
    h = (h ^ name[i]) * 16777619u;
  for (int i = 0; i < 4; i++)
    h = (h ^ ((version >> (8 * i)) & 0xffu)) * 16777619u;
  return h;
}

int fs_table_index(struct fs_table *t) {
  size_t n = 16;
  while (n < t->count * 2 + 1)
    n *= 2;
  t->slots = calloc(n, sizeof(uint32_t));
  if (t->slots == NULL)
    return -1;
  t->nslots = n;
  for (size_t i = 0; i < t->count; i++) {
    const struct fs_entry *e = &t->entries[i];
    size_t s = hash_of(e->client, (const uint8_t *)e->key, strlen(e->key), e->version) & (n - 1);
    while (t->slots[s] != 0)
      s = (s + 1) & (n - 1);
    t->slots[s] = (uint32_t)i + 1;
  }
  return 0;
}

void fs_table_free_index(struct fs_table *t) {
  free(t->slots);
  t->slots = NULL;
  t->nslots = 0;
}

const struct fs_entry *fs_table_find(const struct fs_table *t, const char *client,
                                     const uint8_t *name, size_t name_len, uint32_t version) {
  if (t == NULL || t->nslots == 0 || name_len > FS_MAX_NAME)
    return NULL;
  size_t s = hash_of(client, name, name_len, version) & (t->nslots - 1);
  for (size_t probes = 0; probes < t->nslots && t->slots[s] != 0; probes++) {
    const struct fs_entry *e = &t->entries[t->slots[s] - 1];
    if (e->version == version && strlen(e->key) == name_len &&
        memcmp(e->key, name, name_len) == 0 && strcmp(e->client, client) == 0)
      return e;
    s = (s + 1) & (t->nslots - 1);
  }
  return NULL;
}

const struct fs_entry *fs_eligible(const struct fs_table *t, const char *client,
                                   const struct fs_sign_req *req, int64_t now_ms) {
  const struct fs_entry *e =
      fs_table_find(t, client, req->name, req->name_len, req->has_version ? req->version : 0);
  if (e == NULL)
    return NULL;
  int bit = fs_alg_bit(req->algorithm);
  if (bit < 0 || (e->alg_mask & (1u << bit)) == 0)
    return NULL;
  if (e->tls_server && !fs_tls_message_ok(req->msg, req->msg_len))
    return NULL;
  if (e->deadline_ms != 0 && now_ms > e->deadline_ms)
    return NULL;
  return e;
}
