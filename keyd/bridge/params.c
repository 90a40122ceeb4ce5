/*
 * params.c: OSSL_PARAM read and written by hand. The bridge links no libcrypto (it runs inside
 * Node, which brings its own), so OpenSSL's OSSL_PARAM_get_* / set_* are not available.
 */
#include <string.h>

#include "bridge.h"

const OSSL_PARAM *ke_param_find(const OSSL_PARAM *p, const char *key) {
  for (; p != NULL && p->key != NULL; p++)
    if (strcmp(p->key, key) == 0)
      return p;
  return NULL;
}

int ke_param_get_long(const OSSL_PARAM *p, long *out) {
  int is_int = p->data_type == OSSL_PARAM_INTEGER;
  if ((!is_int && p->data_type != OSSL_PARAM_UNSIGNED_INTEGER) || p->data == NULL)
    return 0;
  if (p->data_size == 4) {
    *out = is_int ? (long)*(const int32_t *)p->data : (long)*(const uint32_t *)p->data;
  } else if (p->data_size == 8) {
    if (!is_int && *(const uint64_t *)p->data > (uint64_t)INT64_MAX)
      return 0;
    *out = (long)*(const int64_t *)p->data;
  } else {
    return 0;
  }
  return 1;
}

/* A string parameter copied into buf (NUL-terminated); 0 if it is not a string or too long. */
int ke_param_get_str(const OSSL_PARAM *p, char *buf, size_t buflen) {
  const char *s = NULL;
  size_t n = 0;
  if (p->data_type == OSSL_PARAM_UTF8_STRING && p->data != NULL) {
    s = p->data; /* data_size bytes, not necessarily NUL-terminated */
    n = strnlen(s, p->data_size);
  } else if (p->data_type == OSSL_PARAM_UTF8_PTR && p->data != NULL &&
             *(const char *const *)p->data != NULL) {
    s = *(const char *const *)p->data;
    n = strnlen(s, buflen);
  }
  if (s == NULL || n >= buflen)
    return 0;
  memcpy(buf, s, n);
  buf[n] = '\0';
  return 1;
}

int ke_param_set_long(OSSL_PARAM *p, long v) {
  if (p->data_type != OSSL_PARAM_INTEGER && p->data_type != OSSL_PARAM_UNSIGNED_INTEGER)
    return 0;
  p->return_size = p->data == NULL ? sizeof(int) : p->data_size;
  if (p->data == NULL)
    return 1;
  if (p->data_size == 4)
    *(int32_t *)p->data = (int32_t)v;
  else if (p->data_size == 8)
    *(int64_t *)p->data = v;
  else
    return 0;
  return 1;
}

int ke_param_set_bytes(OSSL_PARAM *p, unsigned int type, const void *v, size_t len) {
  if (p->data_type != type)
    return 0;
  p->return_size = len;
  if (p->data == NULL)
    return 1;
  if (p->data_size < len)
    return 0;
  memcpy(p->data, v, len);
  if (type == OSSL_PARAM_UTF8_STRING && p->data_size > len)
    ((char *)p->data)[len] = '\0';
  return 1;
}

/* big-endian bytes into an OSSL_PARAM unsigned integer, which is in native byte order */
int ke_param_set_bn(OSSL_PARAM *p, const unsigned char *be, size_t len) {
  unsigned char *d = p->data;
  size_t i;
  if (p->data_type != OSSL_PARAM_UNSIGNED_INTEGER)
    return 0;
  p->return_size = len;
  if (d == NULL)
    return 1;
  if (p->data_size < len)
    return 0;
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
