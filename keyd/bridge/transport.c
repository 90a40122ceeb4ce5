/*
 * transport.c: the unix-socket connection to keyd. One connection per provider context and
 * process, HELLO on connect, one request at a time, and one deadline (timeout_ms) over
 * connect, write and read: the socket is non-blocking and every wait is a poll. A connection
 * that worked before and is found dead (keyd restarted) is reopened once within the deadline.
 * The circuit breaker (breaker.c) turns repeated transport failures into immediate errors.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "bridge.h"

/* Why a call failed: raised once, at the end, so a silent retry leaves no stale error. */
typedef struct {
  int reason;    /* KE_R_* */
  int transport; /* keyd unreachable, stuck or broken: counts for the circuit breaker */
  char text[224];
} FAIL;

__attribute__((format(printf, 4, 5))) static void fail(FAIL *f, int reason, int transport,
                                                       const char *fmt, ...) {
  va_list ap;
  f->reason = reason;
  f->transport = transport;
  va_start(ap, fmt);
  vsnprintf(f->text, sizeof(f->text), fmt, ap);
  va_end(ap);
}

/* I/O outcomes. DEAD: the peer was gone before sending a byte of the answer (retry-able). */
enum { IO_OK = 0, IO_TIMEOUT, IO_DEAD, IO_FAIL };

long long ke_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void ke_conn_init(KE_CONN *c) {
  pthread_mutex_init(&c->lock, NULL);
  c->fd = -1;
  c->pid = 0;
  c->next_id = 1;
}

void ke_conn_close(KE_CONN *c) {
  if (c->fd >= 0)
    close(c->fd);
  c->fd = -1;
}

static int wait_fd(int fd, short events, long long deadline) {
  for (;;) {
    struct pollfd pfd = {fd, events, 0};
    long long left = deadline - ke_now_ms();
    int r = left > 0 ? poll(&pfd, 1, (int)left) : 0;
    if (r > 0)
      return IO_OK;
    if (r == 0)
      return IO_TIMEOUT;
    if (errno != EINTR)
      return IO_FAIL;
  }
}

static int io_write(int fd, const unsigned char *p, size_t n, long long deadline) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    int r;
    if (w > 0) {
      p += w;
      n -= (size_t)w;
    } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if ((r = wait_fd(fd, POLLOUT, deadline)) != IO_OK)
        return r;
    } else if (w < 0 && errno != EINTR) {
      return (errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN) ? IO_DEAD : IO_FAIL;
    }
  }
  return IO_OK;
}

/*
 * Reads at least min and at most n bytes into p (*done says how many). *got counts the answer's
 * bytes read so far: a peer that closes before the first is IO_DEAD.
 */
static int io_read_some(int fd, unsigned char *p, size_t min, size_t n, long long deadline,
                        size_t *got, size_t *done_out) {
  size_t done = 0;
  int r = IO_OK;
  while (done < min) {
    ssize_t k = recv(fd, p + done, n - done, MSG_DONTWAIT);
    int w;
    if (k > 0) {
      done += (size_t)k;
      *got += (size_t)k;
    } else if (k == 0) {
      errno = 0; /* fail_io: closed mid-frame, not an errno */
      r = *got == 0 ? IO_DEAD : IO_FAIL;
      break;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if ((w = wait_fd(fd, POLLIN, deadline)) != IO_OK) {
        r = w;
        break;
      }
    } else if (errno != EINTR) {
      r = errno == ECONNRESET && *got == 0 ? IO_DEAD : IO_FAIL;
      break;
    }
  }
  *done_out = done;
  return r;
}

/* *got counts the answer's bytes read so far: a peer that closes before the first is IO_DEAD. */
static int io_read(int fd, unsigned char *p, size_t n, long long deadline, size_t *got) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = recv(fd, p + done, n - done, MSG_DONTWAIT);
    int w;
    if (r > 0) {
      done += (size_t)r;
      *got += (size_t)r;
    } else if (r == 0) {
      errno = 0; /* fail_io: closed mid-frame, not an errno */
      return *got == 0 ? IO_DEAD : IO_FAIL;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if ((w = wait_fd(fd, POLLIN, deadline)) != IO_OK)
        return w;
    } else if (errno != EINTR) {
      return errno == ECONNRESET && *got == 0 ? IO_DEAD : IO_FAIL;
    }
  }
  return IO_OK;
}

static void fail_io(const KE_PROV *p, FAIL *f, int r, const char *during) {
  if (r == IO_TIMEOUT)
    fail(f, KE_R_TIMEOUT, 1, "keyd: no answer within %d ms (%s)", p->timeout_ms, during);
  else if (r == IO_DEAD)
    fail(f, KE_R_IO, 1, "keyd: connection to %s closed (%s)", p->socket, during);
  else
    fail(f, KE_R_IO, 1, "keyd: connection to %s failed (%s): %s", p->socket, during,
         errno != 0 ? strerror(errno) : "closed in the middle of a frame");
}

/*
 * Sends one request frame and reads the frame answering it: *rop and resp get its opcode and
 * payload. Returns IO_OK, or an IO_* with f filled.
 */
static int roundtrip(KE_PROV *p, int op, const KE_BUF *payload, int *rop, KE_BUF *resp,
                     long long deadline, FAIL *f) {
  KE_CONN *c = &p->conn;
  unsigned char h[KEYD_HEADER_SIZE];
  /* the answer's header and, for the usual small answer (a signature), its payload: one recv */
  unsigned char in[KEYD_HEADER_SIZE + 512];
  uint32_t id = c->next_id++;
  size_t got = 0, first = 0, extra;
  KE_BUF req = {0};
  KE_HEAD head;
  enum ke_head_status hs;
  int r;

  if (!ke_frame_head(h, op, id, payload->len)) {
    fail(f, KE_R_UNSUPPORTED, 0, "keyedge: a %zu-byte request does not fit a keyd frame",
         payload->len);
    return IO_FAIL;
  }
  if (!ke_buf_add(&req, h, sizeof(h)) || !ke_buf_add(&req, payload->p, payload->len)) {
    ke_buf_free(&req);
    fail(f, KE_R_NO_MEMORY, 0, "keyedge: out of memory");
    return IO_FAIL;
  }
  errno = 0;
  r = io_write(c->fd, req.p, req.len, deadline);
  ke_buf_free(&req);
  if (r != IO_OK) {
    fail_io(p, f, r, "sending the request");
    return r;
  }
  /*
   * keyd cannot have answered yet: wait before the first recv instead of after an EAGAIN one.
   * EOF and errors poll readable too, and the recv below tells them apart.
   */
  if ((r = wait_fd(c->fd, POLLIN, deadline)) != IO_OK ||
      (r = io_read_some(c->fd, in, KEYD_HEADER_SIZE, sizeof(in), deadline, &got, &first)) !=
          IO_OK) {
    fail_io(p, f, r, got == 0 ? "waiting for the answer" : "reading the answer");
    return r;
  }
  if ((hs = ke_frame_parse(in, &head)) != KE_HEAD_OK) {
    fail(f, KE_R_PROTOCOL, 1, "keyd: bad answer frame: %s (length %u)", ke_head_status_text(hs),
         (unsigned)ke_get32(in));
    return IO_FAIL;
  }
  /* one request at a time and the connection closed after any failure: any other id is a bug */
  if (head.id != id) {
    fail(f, KE_R_PROTOCOL, 1, "keyd: answer for request id %u, expected %u", (unsigned)head.id,
         (unsigned)id);
    return IO_FAIL;
  }
  /* one request at a time: bytes beyond this answer's frame cannot be keyd's */
  if ((extra = first - KEYD_HEADER_SIZE) > head.payload_len) {
    fail(f, KE_R_PROTOCOL, 1, "keyd: %zu bytes after the answer frame", extra - head.payload_len);
    return IO_FAIL;
  }
  resp->len = 0;
  if (!ke_buf_add(resp, NULL, head.payload_len)) {
    fail(f, KE_R_NO_MEMORY, 0, "keyedge: cannot hold a %u-byte answer", (unsigned)head.payload_len);
    return IO_FAIL;
  }
  if (extra > 0)
    memcpy(resp->p, in + KEYD_HEADER_SIZE, extra);
  if (head.payload_len > extra &&
      (r = io_read(c->fd, resp->p + extra, head.payload_len - extra, deadline, &got)) != IO_OK) {
    fail_io(p, f, r, "reading the answer");
    return r == IO_DEAD ? IO_FAIL : r; /* part of the answer came: not a vanished peer */
  }
  *rop = head.op;
  return IO_OK;
}

/* keyd's ERROR frame, named after its code: "keyd: RATE_LIMITED: <keyd's message>". */
static void fail_keyd_error(FAIL *f, const KE_BUF *resp) {
  const unsigned char *v;
  size_t n;
  unsigned code = 0;
  char msg[160] = "";
  const char *name;
  if (ke_item_find(resp->p, resp->len, KEYD_TAG_ERROR_CODE, &v, &n) == 1 && n == 2)
    code = (unsigned)v[0] << 8 | v[1];
  if (ke_item_find(resp->p, resp->len, KEYD_TAG_ERROR_MESSAGE, &v, &n) == 1) {
    size_t i;
    n = n < sizeof(msg) ? n : sizeof(msg) - 1;
    for (i = 0; i < n; i++) /* keyd's text, kept printable */
      msg[i] = v[i] >= 0x20 && v[i] < 0x7f ? (char)v[i] : '?';
    msg[n] = '\0';
  }
  if ((name = ke_keyd_error_name(code)) != NULL)
    fail(f, KE_R_KEYD + (int)code, 0, "keyd: %s: %s", name,
         msg[0] ? msg : ke_keyd_error_meaning(code));
  else
    fail(f, KE_R_KEYD_UNKNOWN, 0, "keyd: error code %u: %s", code, msg[0] ? msg : "(no message)");
}

/* the client secret: the file's bytes with trailing whitespace trimmed */
static int read_secret(const KE_PROV *p, KE_BUF *out) {
  int fd = open(p->secret_file, O_RDONLY | O_CLOEXEC), ok = fd >= 0;
  unsigned char chunk[512];
  ssize_t n;
  while (ok && (n = read(fd, chunk, sizeof(chunk))) != 0)
    ok = n > 0 && out->len + (size_t)n <= 65536 && ke_buf_add(out, chunk, (size_t)n);
  if (fd >= 0)
    close(fd);
  while (ok && out->len > 0 && strchr(" \t\r\n", out->p[out->len - 1]) != NULL)
    out->len--;
  return ok;
}

static int connect_socket(KE_PROV *p, long long deadline, FAIL *f) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  KE_CONN *c = &p->conn;

  if (p->socket[0] == '\0') {
    fail(f, KE_R_CONFIG, 0, "keyedge: keyd_socket not configured, or longer than 107 bytes");
    return 0;
  }
  memcpy(sa.sun_path, p->socket, strlen(p->socket));
  if ((c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0) {
    fail(f, KE_R_IO, 0, "keyd: socket(): %s", strerror(errno));
    return 0;
  }
  while (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
    struct timespec pause = {0, 2000000};
    if (errno == EINTR)
      continue;
    if ((errno == EAGAIN || errno == EINPROGRESS) && ke_now_ms() < deadline) {
      nanosleep(&pause, NULL); /* listen backlog full: retry until the deadline */
      continue;
    }
    if (errno == EAGAIN || errno == EINPROGRESS)
      fail(f, KE_R_TIMEOUT, 1, "keyd: no answer within %d ms (connecting to %s)", p->timeout_ms,
           p->socket);
    else if (errno == ENOENT)
      fail(f, KE_R_NO_SOCKET, 1, "keyd: no socket at %s", p->socket);
    else if (errno == ECONNREFUSED)
      fail(f, KE_R_REFUSED, 1, "keyd: connection refused at %s", p->socket);
    else
      fail(f, KE_R_IO, 1, "keyd: cannot connect to %s: %s", p->socket, strerror(errno));
    ke_conn_close(c);
    return 0;
  }
  return 1;
}

/* Connects and says HELLO; 0 with f filled on failure. */
static int conn_open(KE_PROV *p, long long deadline, FAIL *f) {
  KE_BUF hello = {0}, secret = {0}, resp = {0};
  int rop = 0, ok = 0;

  if (!connect_socket(p, deadline, f))
    return 0;
  p->conn.pid = getpid();
  if (!read_secret(p, &secret)) {
    fail(f, KE_R_SECRET, 0, "keyedge: cannot read client_secret_file %s", p->secret_file);
  } else if (!ke_item_add(&hello, KEYD_TAG_CLIENT_NAME, p->client, strlen(p->client)) ||
             !ke_item_add(&hello, KEYD_TAG_CLIENT_SECRET, secret.p, secret.len)) {
    fail(f, KE_R_NO_MEMORY, 0, "keyedge: cannot build HELLO");
  } else if (roundtrip(p, KEYD_OP_HELLO, &hello, &rop, &resp, deadline, f) != IO_OK) {
    /* f says why */
  } else if (rop == KEYD_OP_ERROR) {
    fail_keyd_error(f, &resp);
  } else if (rop != (KEYD_OP_HELLO | 0x80)) {
    fail(f, KE_R_PROTOCOL, 1, "keyd: opcode 0x%02x in answer to HELLO", rop);
  } else {
    ok = 1;
  }
  ke_buf_free(&secret);
  ke_buf_free(&hello);
  ke_buf_free(&resp);
  if (!ok)
    ke_conn_close(&p->conn);
  return ok;
}

/* An idle connection that keyd closed (restart) polls readable (EOF) or hung up. */
static int conn_idle_dead(const KE_CONN *c) {
  struct pollfd pfd = {c->fd, POLLIN, 0};
  return poll(&pfd, 1, 0) != 0;
}

static int call_locked(KE_PROV *p, int op, const KE_BUF *payload, KE_BUF *resp, FAIL *f) {
  KE_CONN *c = &p->conn;
  long long deadline = ke_now_ms() + p->timeout_ms;
  int retried = 0;

  if (c->fd >= 0 && c->pid != getpid())
    ke_conn_close(c); /* inherited by a fork that bypassed pthread_atfork: the parent's, not ours */
  for (;;) {
    int reused = c->fd >= 0, rop = 0, r;
    if (reused && conn_idle_dead(c)) {
      ke_conn_close(c);
      reused = 0;
    }
    if (c->fd < 0 && !conn_open(p, deadline, f))
      return 0;
    if ((r = roundtrip(p, op, payload, &rop, resp, deadline, f)) == IO_OK) {
      if (rop == (op | 0x80))
        return 1;
      if (rop == KEYD_OP_ERROR) {
        fail_keyd_error(f, resp);
        return 0;
      }
      fail(f, KE_R_PROTOCOL, 1, "keyd: opcode 0x%02x in answer to opcode 0x%02x", rop, op);
      ke_conn_close(c);
      return 0;
    }
    ke_conn_close(c); /* after a timeout, a late answer must not meet the next request */
    if (r == IO_DEAD && reused && !retried) {
      retried = 1;
      continue;
    }
    return 0;
  }
}

static int circuit_open(const KE_PROV *p, const KE_BREAKER_STATE *st) {
  KE_ERR(p, KE_R_CIRCUIT_OPEN,
         "keyd: circuit open after \"%s\"; next try in %ld ms (interval %ld ms)", st->why,
         st->wait_ms, st->interval_ms);
  return 0;
}

int ke_keyd_call(KE_PROV *p, int op, const KE_BUF *payload, KE_BUF *resp) {
  FAIL f = {0, 0, ""};
  KE_BREAKER_STATE st;
  int ok;

  if (ke_breaker_rejects(&p->breaker, ke_now_ms(), &st))
    return circuit_open(p, &st);
  pthread_mutex_lock(&p->conn.lock);
  /* checked again: the call this one waited for may have opened the circuit */
  if (!ke_breaker_admit(&p->breaker, ke_now_ms(), &st)) {
    pthread_mutex_unlock(&p->conn.lock);
    return circuit_open(p, &st);
  }
  ok = call_locked(p, op, payload, resp, &f);
  ke_breaker_record(&p->breaker, ke_now_ms(), !ok && f.transport, f.text);
  pthread_mutex_unlock(&p->conn.lock);
  if (!ok)
    KE_ERR(p, f.reason, "%s", f.text);
  return ok;
}
