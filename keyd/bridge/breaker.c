/*
 * breaker.c: the circuit breaker in front of keyd. A signature blocks its thread (Node's event
 * loop) until keyd answers or timeout_ms passes; with keyd stuck, every handshake would pay the
 * whole timeout. After a transport failure (timeout, failed connect, broken connection) the
 * circuit opens: calls fail at once for an interval, then one call probes keyd (half-open). A
 * probe that fails doubles the interval (up to max_ms); a call that works closes the circuit.
 * Times are passed in (monotonic ms) so the state machine is testable without waiting.
 */
#include <stdio.h>
#include <string.h>

#include "bridge.h"

void ke_breaker_init(KE_BREAKER *b, long min_ms, long max_ms) {
  pthread_mutex_init(&b->lock, NULL);
  b->state = KE_BREAKER_CLOSED;
  b->open_until = 0;
  b->interval_ms = 0;
  b->min_ms = min_ms > 0 ? min_ms : 0;
  b->max_ms = max_ms > b->min_ms ? max_ms : b->min_ms;
  b->why[0] = '\0';
}

static void explain(const KE_BREAKER *b, long long now, KE_BREAKER_STATE *st) {
  st->wait_ms =
      b->state == KE_BREAKER_OPEN && b->open_until > now ? (long)(b->open_until - now) : 0;
  st->interval_ms = b->interval_ms;
  snprintf(st->why, sizeof(st->why), "%s", b->why);
}

int ke_breaker_rejects(KE_BREAKER *b, long long now, KE_BREAKER_STATE *st) {
  int reject;
  if (b->min_ms == 0)
    return 0;
  pthread_mutex_lock(&b->lock);
  /* a probe in flight, or the interval not over: the next call would most likely wait in vain */
  reject = b->state == KE_BREAKER_PROBING || (b->state == KE_BREAKER_OPEN && now < b->open_until);
  if (reject)
    explain(b, now, st);
  pthread_mutex_unlock(&b->lock);
  return reject;
}

int ke_breaker_admit(KE_BREAKER *b, long long now, KE_BREAKER_STATE *st) {
  int admit = 1;
  if (b->min_ms == 0)
    return 1;
  pthread_mutex_lock(&b->lock);
  if (b->state == KE_BREAKER_OPEN && now >= b->open_until)
    b->state = KE_BREAKER_PROBING; /* this call is the probe */
  else if (b->state != KE_BREAKER_CLOSED)
    admit = 0;
  if (!admit)
    explain(b, now, st);
  pthread_mutex_unlock(&b->lock);
  return admit;
}

void ke_breaker_record(KE_BREAKER *b, long long now, int failed, const char *why) {
  if (b->min_ms == 0)
    return;
  pthread_mutex_lock(&b->lock);
  if (!failed) {
    b->state = KE_BREAKER_CLOSED;
    b->interval_ms = 0;
  } else {
    if (b->interval_ms == 0)
      b->interval_ms = b->min_ms;
    else
      b->interval_ms = b->interval_ms > b->max_ms / 2 ? b->max_ms : b->interval_ms * 2;
    b->state = KE_BREAKER_OPEN;
    b->open_until = now + b->interval_ms;
    snprintf(b->why, sizeof(b->why), "%s", why != NULL ? why : "keyd failed");
  }
  pthread_mutex_unlock(&b->lock);
}
