/*
 * keyd's native SIGN path (docs/keyd.md, "Native SIGN path"): the pure parts shared by the addon
 * and its AddressSanitizer harness (test/keyd/native-hostile.c): the SIGN frame parser, the
 * tls-server message shape check and the eligibility table. Nothing here touches a socket, a thread
 * or a key.
 */
#ifndef KEYD_FASTSIGN_H
#define KEYD_FASTSIGN_H

#include <stddef.h>
#include <stdint.h>

#define FS_HEADER_SIZE 12
#define FS_OP_SIGN 0x04
#define FS_TAG_KEY_NAME 0x03
#define FS_TAG_KEY_VERSION 0x04
#define FS_TAG_ALGORITHM 0x06
#define FS_TAG_MESSAGE 0x07
#define FS_TAG_SIGNATURE 0x08
#define FS_TAG_SIG_ENCODING 0x11
#define FS_MAX_NAME 64
/* The largest frame the native side answers; a longer one goes to JavaScript whole. */
#define FS_FAST_FRAME_MAX (16 * 1024)
/* The longest json_head of an entry (two names of 64 bytes, each escaped at most 6 to 1). */
#define FS_JSON_HEAD_MAX 1024

/* A SIGN request the native side may answer: pointers into the frame it was parsed from. */
struct fs_sign_req {
  uint32_t request_id;
  const uint8_t *name;
  size_t name_len;
  int has_version;
  uint32_t version;
  uint16_t algorithm;
  const uint8_t *msg;
  size_t msg_len;
  int p1363;
};

/*
 * Parses one whole frame (length field included, `len` bytes). Returns 1 for a SIGN the native side
 * may answer: version 1, flags 0, items that parse, each of KEY_NAME (1..64 bytes), ALGORITHM (2),
 * MESSAGE and the optional KEY_VERSION (4) and SIG_ENCODING (1, value 0 or 1) at most once, no
 * other tag. Anything else (0) goes to JavaScript, which answers it as it always has: the parser
 * may be stricter than keyd/protocol/codec.ts, never looser.
 */
int fs_parse_sign(const uint8_t *frame, size_t len, struct fs_sign_req *out);

/* keyd/policy/tls-message.ts: 1 if `msg` is TLS 1.3 CertificateVerify or TLS 1.2 ServerKeyExchange
 * input. */
int fs_tls_message_ok(const uint8_t *msg, size_t len);

/* The algorithm codes of PROTOCOL.md, as bit numbers of an eligibility entry's mask (-1: unknown).
 */
int fs_alg_bit(uint16_t code);

/* One (client, key, version) that may sign without JavaScript (JavaScript computes and pushes
 * them). */
struct fs_entry {
  char client[160]; /* name ":" secretSha256: a changed secret matches no entry */
  char client_name[FS_MAX_NAME + 1];
  char key[FS_MAX_NAME + 1];
  uint32_t version; /* 0: the current-version alias */
  uint32_t key_version;
  uint32_t alg_mask;
  int tls_server;
  int64_t deadline_ms; /* 0: none; else signs while now <= deadline */
  char *json_head;     /* `"client":…,"op":"SIGN","key":…,"version":` of its audit entries
                          (JSON.stringify's) */
  void *key_ref;       /* the key (the addon's; opaque here) */
  void *cache; /* the addon's signing contexts for this entry, one per thread (opaque here) */
};

struct fs_table {
  struct fs_entry *entries;
  size_t count;
  uint32_t *slots; /* open addressing: index + 1, 0 = empty */
  size_t nslots;
};

/* Builds the hash index of `t->entries` (count entries); 0 on success, -1 out of memory. */
int fs_table_index(struct fs_table *t);
void fs_table_free_index(struct fs_table *t);
/* The entry for (client, key name, requested version; 0 = current), or NULL. */
const struct fs_entry *fs_table_find(const struct fs_table *t, const char *client,
                                     const uint8_t *name, size_t name_len, uint32_t version);
/*
 * Everything a SIGN must pass besides the key itself: an entry, an algorithm in its mask, the
 * tls-server message shape, the signable-until deadline. NULL = JavaScript answers.
 */
const struct fs_entry *fs_eligible(const struct fs_table *t, const char *client,
                                   const struct fs_sign_req *req, int64_t now_ms);

#endif
