/*
 * proxy.c: the upstream side of a request: head hygiene, the keep-alive pool,
 * and the streaming exchange with flow control both ways.
 *
 * One exchange moves bytes between two bufferevents on the worker's loop:
 *   client input  --(request body: length or chunked, decoded, re-framed)--> upstream output
 *   upstream input --(response: head rebuilt, body re-framed)-------------> client output
 * Reading from a side pauses while the opposite output holds more than
 * PROXY_HIGH_WATER bytes and resumes when it drains below half of that, so
 * what an exchange holds in memory is bounded by the watermarks plus one
 * socket read, whatever the body sizes.
 *
 * Only libevent's public API is used. Both sides are libevent bufferevents
 * (socket, or OpenSSL for https upstreams); a flush may write right away
 * (proxy_flush) through the public evbuffer calls. A plain socket, client or
 * upstream, is read by a proxy_reader: a plain `event` of its own on the
 * socket (reader_cb: recv into the bufferevent's input, then its callbacks),
 * where libevent's read would make an ioctl(FIONREAD) before each recv; its
 * bufferevent never reads. TLS upstreams are read by libevent.
 */
#include "proxy.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "list.h"
#include "log.h"
#include "metrics.h"
#include "resolve.h"
#include "util.h"

struct proxy_pool;

/*
 * A timeout restarted per request (or per read) with the same duration, on
 * a timer armed lazily (nginx keeps an armed timer whose new deadline is
 * close, NGX_TIMER_LAZY_DELAY; this is the exact form): restarting it only
 * moves `deadline`, and keeps the armed timer when that fires no later; a
 * timer that fires before the deadline re-arms for the rest instead of
 * acting (lazy_due). So the timeout acts at its deadline, never before, and
 * after at most one re-arm, where an event_add (and often an event_del) ran
 * per request. Whether a timeout is running at all is its owner's state: a
 * timer that fires when none is does nothing and stays unarmed. Times are
 * CLOCK_MONOTONIC_COARSE ns, libevent's own timer clock.
 */
struct lazy_timer {
    struct event ev;   /* an evtimer; its callback calls lazy_due */
    struct timeval tv; /* the duration (a common timeout's or plain) */
    uint64_t ns;       /* the same, in ns */
    uint64_t deadline; /* when the timeout is due, while it runs */
    uint64_t at;       /* no earlier than the armed timer fires; 0: not armed */
};

/* A plain socket's bufferevent read by an event of our own (proxy.h); its
 * read timeout is a lazy_timer. */
struct proxy_reader {
    struct bufferevent *bev; /* borrowed: the connection's; it never reads itself */
    struct event ev;         /* EV_READ|EV_PERSIST on the socket, without timeout */
    struct lazy_timer to;    /* the read timeout: runs while added && has_tv */
    bool has_tv;
    size_t high; /* the input's high watermark: no reading at or above it; 0: none */
    bool want;   /* reading is on */
    bool hold;   /* not before the connect completed (upstreams) */
    bool added;  /* ev is pending */
};

struct upconn {
    struct proxy_pool *pool;
    struct bufferevent *bev;
    bool tls;
    bool connecting;
    unsigned write_ms;      /* plain: the write timeout set on bev (0: none) */
    bool write_wm;          /* plain: bev's write watermark is the exchanges' */
    struct proxy_reader rd; /* plain connections; TLS ones read through their bufferevent */
    struct list idle;       /* on pool->idle while pooled */
};

struct proxy_pool {
    struct proxy *px;
    char key[320];
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char *host; /* owned: SNI and certificate name (IPv6 without brackets) */
    bool host_is_ip;
    bool tls;
    struct list idle; /* of upconn.idle, most recently used first */
    size_t n_idle;
    struct proxy_pool *next;
};

struct proxy {
    struct event_base *base;
    SSL_CTX *tls;
    struct metrics_worker *mw;
    struct proxy_pool *pools;
    struct http1_limits resp_limits;
    /* a few durations used by every exchange, as libevent common timeouts */
    unsigned tv_ms[4];
    const struct timeval *tv_common[4];
    struct timeval tv_plain[4];
    unsigned tv_next;
    /* Finished exchanges kept for reuse: one loop turn often completes many
     * exchanges and then starts as many, so one spare was not enough. */
    struct proxy_exchange *spares;
    unsigned n_spares;
    struct evbuffer *head_spares[16]; /* emptied request-head buffers, likewise */
    unsigned n_head_spares;
};

#define PROXY_SPARES 64

struct proxy_exchange {
    struct proxy_exchange *next_spare; /* in px->spares, once finished */
    struct proxy *px;
    struct proxy_pool *pool;
    struct upconn *uc; /* owned while the exchange runs */
    struct bufferevent *client;
    struct proxy_reader *client_rd; /* borrowed: reads client */
    proxy_done_fn done;
    void *arg;
    struct evbuffer *head; /* kept until a response head arrives (retry) */
    struct event kick;     /* first step after proxy_forward returns */
    bool kick_armed;
    bool body_timer_on; /* body_timer runs: limits.body_timeout_ms, the whole request body */
    bool start_failed;
    int start_errno;                   /* why the upstream connection could not be opened */
    const struct proxy_target *target; /* borrowed until done */
    struct resolve_set *addrs;         /* owned reference; NULL: the name has no address yet */
    unsigned rr_start;                 /* round-robin start in addrs */
    unsigned attempt;                  /* addresses tried before the current one */

    enum http1_method method;
    int client_version;
    bool client_keep_alive;
    unsigned timeout_ms;
    char request_id[PROXY_REQUEST_ID_MAX + 1];

    /* request body */
    enum http1_body req_body;
    uint64_t req_remaining;
    struct http1_chunked req_ck;
    bool req_done;

    /* response */
    bool resp_head;
    size_t resp_prev;
    enum http1_body resp_body;
    uint64_t resp_remaining;
    struct http1_chunked resp_ck;
    bool chunk_out; /* re-encode the body chunked toward the client */
    bool close_out; /* body delimited by closing the client connection */
    bool resp_keep_alive;

    bool reused;
    bool retried;
    bool no_body; /* the request had no body: a stale pooled connection may be retried */
    uint64_t t0;
    struct proxy_outcome out;

    /* Kept when a spare is reused (proxy_forward clears what is above): the
     * body deadline's timer stays armed across exchanges (lazy_timer). */
    struct lazy_timer body_timer;
    bool body_timer_assigned;
};

static void up_read_cb(struct bufferevent *bev, void *arg);
static void up_write_cb(struct bufferevent *bev, void *arg);
static void up_event_cb(struct bufferevent *bev, short what, void *arg);
static void client_read_cb(struct bufferevent *bev, void *arg);
static void client_write_cb(struct bufferevent *bev, void *arg);
static void client_event_cb(struct bufferevent *bev, short what, void *arg);

/* ---------------------------------------------------------------- targets */

SSL_CTX *proxy_tls_ctx_new(char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

    if (!ctx) {
        snprintf(err, errlen, "SSL_CTX_new failed");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        snprintf(err, errlen, "cannot load the default trust store");
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT);
    return ctx;
}

/* ------------------------------------------------------------------- pool */

struct proxy *proxy_new(struct event_base *base, SSL_CTX *tls, struct metrics_worker *mw)
{
    struct proxy *px = xcalloc(1, sizeof(*px));
    px->base = base;
    px->tls = tls;
    px->mw = mw;
    px->resp_limits.max_header_bytes = PROXY_MAX_RESPONSE_HEAD;
    px->resp_limits.max_line_bytes = PROXY_MAX_RESPONSE_HEAD;
    px->resp_limits.max_headers = HTTP1_MAX_HEADERS;
    return px;
}

/*
 * The timeval to pass for `ms`: a libevent common timeout (O(1) to add and
 * remove, where a plain timeout is heap work), cached per worker; a plain one
 * if the base has no common-timeout slot left.
 */
static const struct timeval *proxy_tv(struct proxy *px, unsigned ms)
{
    unsigned i;
    for (i = 0; i < 4; i++)
        if (px->tv_ms[i] == ms &&
            (px->tv_common[i] || px->tv_plain[i].tv_sec || px->tv_plain[i].tv_usec))
            return px->tv_common[i] ? px->tv_common[i] : &px->tv_plain[i];
    i = px->tv_next;
    px->tv_next = (i + 1) % 4;
    px->tv_ms[i] = ms;
    px->tv_plain[i].tv_sec = ms / 1000;
    px->tv_plain[i].tv_usec = (ms % 1000) * 1000;
    px->tv_common[i] = event_base_init_common_timeout(px->base, &px->tv_plain[i]);
    return px->tv_common[i] ? px->tv_common[i] : &px->tv_plain[i];
}

#define READ_MAX 4096 /* per read, as libevent 2.1 (EVBUFFER_MAX_READ) */

/* The clock of the read timeouts: libevent's timers run on the coarse
 * monotonic clock (unless a base asks for precise timers), so a deadline
 * taken on it meets an armed timer's expiry exactly. */
static uint64_t coarse_ns(void)
{
    struct timespec ts;
#ifdef CLOCK_MONOTONIC_COARSE
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
#else
    clock_gettime(CLOCK_MONOTONIC, &ts);
#endif
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The duration of `t`: `tv` (copied; a common timeout's too), `ns` long. */
static void lazy_set(struct lazy_timer *t, const struct timeval *tv, uint64_t ns)
{
    if (t->ns != ns) {
        t->tv = *tv;
        t->ns = ns;
    }
}

/* The timeout (re)starts now. The armed timer stays when it fires no later
 * than the new deadline: its expiry is libevent's time at the add (at most
 * the clock then) plus the duration, so at most `at`. Else it is armed for
 * the whole duration. */
static void lazy_restart(struct lazy_timer *t)
{
    t->deadline = coarse_ns() + t->ns;
    if (t->at && t->at <= t->deadline)
        return;
    evtimer_add(&t->ev, &t->tv); /* re-adding a pending timer moves it */
    t->at = t->deadline;
}

/* In the timer's callback, the timeout running: true when it is due; else
 * (it fired early: the deadline moved since it was armed) armed again for
 * the rest, rounded up to a microsecond, and false. */
static bool lazy_due(struct lazy_timer *t)
{
    uint64_t now = coarse_ns(), us;
    struct timeval rest;

    t->at = 0;
    if (now >= t->deadline)
        return true;
    us = (t->deadline - now + 999u) / 1000u;
    rest.tv_sec = (time_t)(us / 1000000u);
    rest.tv_usec = (suseconds_t)(us % 1000000u);
    evtimer_add(&t->ev, &rest);
    t->at = t->deadline;
    return false;
}

static void lazy_stop(struct lazy_timer *t)
{
    if (t->at)
        event_del(&t->ev);
    t->at = 0;
}

/* Adds or removes the read event so that it is pending exactly when reading
 * is on, not held, and the input is below its high watermark. The read
 * timeout runs while it is pending: it restarts when it is added, and a
 * timer armed for it is left to fire idle once it is removed. */
static void reader_sync(struct proxy_reader *rd)
{
    bool go = rd->want && !rd->hold &&
              !(rd->high && evbuffer_get_length(bufferevent_get_input(rd->bev)) >= rd->high);

    if (go && !rd->added) {
        event_add(&rd->ev, NULL);
        rd->added = true;
        if (rd->has_tv)
            lazy_restart(&rd->to);
    } else if (!go && rd->added) {
        event_del(&rd->ev);
        rd->added = false;
    }
}

/* Reading ends with `err` (BEV_EVENT_READING|EOF, |ERROR with errno `saved`,
 * or |TIMEOUT): reading goes off and the event callback runs, as libevent
 * reports them. Nothing touches `rd` after (the callback may free it). */
static void reader_fail(struct proxy_reader *rd, short err, int saved)
{
    struct bufferevent *bev = rd->bev;
    bufferevent_event_cb eventcb;
    void *cbarg;

    proxy_reader_off(rd);
    bufferevent_getcb(bev, NULL, NULL, &eventcb, &cbarg);
    errno = saved;
    if (eventcb)
        eventcb(bev, err, cbarg);
}

/*
 * The socket is readable: the bytes go to the bufferevent's input and its
 * read callback runs; EOF or an error stop reading and reach its event
 * callback as BEV_EVENT_READING|EOF or |ERROR (errno kept for
 * EVUTIL_SOCKET_ERROR), as libevent reports them. At most up to the high
 * watermark, as libevent reads. Into the stack, then appended: the input
 * gets a chain of the size that came. Nothing touches `rd` after a callback
 * (it may free it).
 */
static void reader_cb(evutil_socket_t fd, short what, void *arg)
{
    struct proxy_reader *rd = arg;
    struct bufferevent *bev = rd->bev;
    struct evbuffer *in = bufferevent_get_input(bev);
    bufferevent_data_cb readcb;
    void *cbarg;
    char buf[READ_MAX];
    size_t want = sizeof(buf);
    short err = BEV_EVENT_READING;
    ssize_t n;
    int saved = 0;

    (void)what;
    if (rd->has_tv) /* activity: the read timeout counts from now (armed timer kept) */
        rd->to.deadline = coarse_ns() + rd->to.ns;
    if (rd->high) {
        size_t len = evbuffer_get_length(in);
        if (len >= rd->high) {
            reader_sync(rd); /* full: paused until drained and turned on again */
            return;
        }
        if (rd->high - len < want)
            want = rd->high - len;
    }
    n = recv(fd, buf, want, 0);
    if (n > 0) {
        int rc;
        /* the input's end is frozen: only the bufferevent's reader appends */
        evbuffer_unfreeze(in, 0);
        rc = evbuffer_add(in, buf, (size_t)n);
        evbuffer_freeze(in, 0);
        if (rc < 0) {
            reader_fail(rd, err | BEV_EVENT_ERROR, ENOMEM);
            return;
        }
        bufferevent_getcb(bev, &readcb, NULL, NULL, &cbarg);
        if (readcb)
            readcb(bev, cbarg);
        return;
    }
    if (n < 0) {
        saved = errno;
        if (saved == EAGAIN || saved == EWOULDBLOCK || saved == EINTR)
            return;
        err |= BEV_EVENT_ERROR;
    } else {
        err |= BEV_EVENT_EOF;
    }
    reader_fail(rd, err, saved);
}

/* The read timeout's timer: READING|TIMEOUT once due (lazy_due). */
static void reader_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct proxy_reader *rd = arg;

    (void)fd;
    (void)what;
    if (!rd->added || !rd->has_tv) { /* none running: stays unarmed */
        rd->to.at = 0;
        return;
    }
    if (lazy_due(&rd->to))
        reader_fail(rd, BEV_EVENT_READING | BEV_EVENT_TIMEOUT, 0);
}

static void reader_init(struct proxy_reader *rd, struct bufferevent *bev)
{
    struct event_base *base = bufferevent_get_base(bev);

    memset(rd, 0, sizeof(*rd));
    rd->bev = bev;
    event_assign(&rd->ev, base, bufferevent_getfd(bev), EV_READ | EV_PERSIST, reader_cb, rd);
    evtimer_assign(&rd->to.ev, base, reader_timer_cb, rd);
}

struct proxy_reader *proxy_reader_new(struct bufferevent *bev)
{
    struct proxy_reader *rd = xcalloc(1, sizeof(*rd));
    reader_init(rd, bev);
    return rd;
}

static void reader_stop(struct proxy_reader *rd)
{
    if (rd->added)
        event_del(&rd->ev); /* before the socket closes with the bufferevent */
    rd->added = false;
    lazy_stop(&rd->to);
}

void proxy_reader_free(struct proxy_reader *rd)
{
    if (!rd)
        return;
    reader_stop(rd);
    free(rd);
}

void proxy_reader_on(struct proxy_reader *rd)
{
    rd->want = true;
    if (!rd->added)
        reader_sync(rd);
}

void proxy_reader_off(struct proxy_reader *rd)
{
    rd->want = false;
    if (rd->added)
        reader_sync(rd);
}

/* The read timeout: `tv` (NULL: none) of `ns` nanoseconds. Setting one
 * restarts it when reading is on (as re-adding libevent's read event did);
 * clearing it leaves an armed timer to fire idle. */
static void reader_timeout(struct proxy_reader *rd, const struct timeval *tv, uint64_t ns)
{
    if (!tv) {
        rd->has_tv = false;
        return;
    }
    lazy_set(&rd->to, tv, ns);
    rd->has_tv = true;
    if (rd->added)
        lazy_restart(&rd->to);
}

/* reader_timeout for `ms` (0: none), its timeval looked up only when the
 * duration changes. */
static void reader_timeout_ms(struct proxy *px, struct proxy_reader *rd, unsigned ms)
{
    uint64_t ns = (uint64_t)ms * 1000000u;

    if (!ms) {
        rd->has_tv = false;
        return;
    }
    if (rd->to.ns != ns)
        lazy_set(&rd->to, proxy_tv(px, ms), ns);
    rd->has_tv = true;
    if (rd->added)
        lazy_restart(&rd->to);
}

void proxy_reader_timeout(struct proxy_reader *rd, const struct timeval *tv)
{
    reader_timeout(rd, tv,
                   tv ? (uint64_t)tv->tv_sec * 1000000000u + (uint64_t)tv->tv_usec * 1000u : 0);
}

void proxy_reader_watermark(struct proxy_reader *rd, size_t high)
{
    if (rd->high == high)
        return;
    rd->high = high;
    reader_sync(rd);
}

static void upconn_free(struct upconn *uc)
{
    if (!uc)
        return;
    if (!uc->tls)
        reader_stop(&uc->rd);
    if (uc->bev)
        bufferevent_free(uc->bev);
    free(uc);
}

/*
 * Reading an upstream connection. TLS: the bufferevent's. Plain: the reader,
 * held until the connect completed (a connect failure is libevent's to
 * report, as before), with the read timeout a bufferevent would have.
 */
static void up_read_on(struct upconn *uc)
{
    if (uc->tls) {
        if (!(bufferevent_get_enabled(uc->bev) & EV_READ))
            bufferevent_enable(uc->bev, EV_READ);
        return;
    }
    proxy_reader_on(&uc->rd);
}

static void up_read_off(struct upconn *uc)
{
    if (uc->tls) {
        bufferevent_disable(uc->bev, EV_READ);
        return;
    }
    proxy_reader_off(&uc->rd);
}

/* An upstream connection's timeouts in ms (0: none): read, write. TLS: the
 * bufferevent's. Plain: the reader's (lazy), and the bufferevent's write
 * timeout only when it changes (bufferevent_set_timeouts costs two
 * event_pending and may re-add a pending write; a pooled connection keeps
 * the write timeout of its last exchange: pool_put). */
static void up_timeouts(struct proxy *px, struct upconn *uc, unsigned read_ms, unsigned write_ms)
{
    if (uc->tls) {
        bufferevent_set_timeouts(uc->bev, read_ms ? proxy_tv(px, read_ms) : NULL,
                                 write_ms ? proxy_tv(px, write_ms) : NULL);
        return;
    }
    if (uc->write_ms != write_ms) {
        bufferevent_set_timeouts(uc->bev, NULL, write_ms ? proxy_tv(px, write_ms) : NULL);
        uc->write_ms = write_ms;
    }
    reader_timeout_ms(px, &uc->rd, read_ms);
}

/* The connect completed: reading starts if it was asked for meanwhile. */
static void up_connected(struct upconn *uc)
{
    uc->connecting = false;
    if (!uc->tls) {
        uc->rd.hold = false;
        reader_sync(&uc->rd);
    }
}

static void pool_unlink(struct upconn *uc)
{
    list_remove(&uc->idle);
    uc->pool->n_idle--;
}

/* The most recently pooled idle connection of `pool`, or NULL. */
static struct upconn *pool_first(const struct proxy_pool *pool)
{
    struct list *n = list_first(&pool->idle);

    return n ? list_entry(n, struct upconn, idle) : NULL;
}

void proxy_close_idle(struct proxy *px)
{
    if (!px)
        return;
    for (struct proxy_pool *p = px->pools; p; p = p->next)
        for (struct upconn *uc; (uc = pool_first(p));) {
            pool_unlink(uc);
            upconn_free(uc);
        }
}

void proxy_free(struct proxy *px)
{
    if (!px)
        return;
    proxy_close_idle(px);
    while (px->spares) {
        struct proxy_exchange *ex = px->spares;
        px->spares = ex->next_spare;
        lazy_stop(&ex->body_timer);
        free(ex);
    }
    while (px->n_head_spares)
        evbuffer_free(px->head_spares[--px->n_head_spares]);
    while (px->pools) {
        struct proxy_pool *p = px->pools;
        px->pools = p->next;
        free(p->host);
        free(p);
    }
    free(px);
}

/* The pool of one address of an upstream: keyed by scheme, name, port and
 * address, so that a name's addresses each keep their own connections. */
static struct proxy_pool *pool_get(struct proxy *px, const struct proxy_target *t,
                                   const struct resolve_addr *a)
{
    struct proxy_pool *p;

    /* compared by fields (the port is in the address): no key to format per request */
    for (p = px->pools; p; p = p->next)
        if (p->tls == t->up->tls && p->addrlen == a->len && memcmp(&p->addr, &a->sa, a->len) == 0 &&
            strcmp(p->host, t->up->host) == 0)
            return p;
    p = xcalloc(1, sizeof(*p));
    p->px = px;
    list_init(&p->idle);
    snprintf(p->key, sizeof(p->key), "%s|%s|%d|%s", t->up->tls ? "https" : "http", t->up->host,
             t->up->port, a->text);
    memcpy(&p->addr, &a->sa, a->len);
    p->addrlen = a->len;
    {
        const char *h = t->up->host;
        size_t n = strlen(h);
        unsigned char tmp[16];
        if (n >= 2 && h[0] == '[' && h[n - 1] == ']')
            p->host = xstrndup(h + 1, n - 2);
        else
            p->host = xstrdup(h);
        p->host_is_ip = inet_pton(AF_INET, p->host, tmp) == 1 ||
                        inet_pton(AF_INET6, p->host, tmp) == 1;
    }
    p->tls = t->up->tls;
    p->next = px->pools;
    px->pools = p;
    return p;
}

/* An idle pooled connection: any byte, EOF, error or the idle timeout ends it. */
static void idle_read_cb(struct bufferevent *bev, void *arg)
{
    struct upconn *uc = arg;
    (void)bev;
    pool_unlink(uc);
    upconn_free(uc);
}

static void idle_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)what;
    idle_read_cb(bev, arg);
}

static void pool_put(struct upconn *uc)
{
    struct proxy_pool *pool = uc->pool;

    if (pool->n_idle >= PROXY_MAX_IDLE_PER_POOL) {
        upconn_free(uc);
        return;
    }
    bufferevent_setcb(uc->bev, idle_read_cb, NULL, idle_event_cb, uc);
    if (uc->tls) {
        up_timeouts(pool->px, uc, PROXY_IDLE_MS, 0);
        bufferevent_setwatermark(uc->bev, EV_WRITE, 0, 0);
    } else {
        /* Pooled with its output empty, a plain connection writes nothing
         * until the next exchange: its write timeout and write watermark,
         * which act only on pending writes, stay as they are, and
         * wire_upstream sets them only when they differ. */
        up_timeouts(pool->px, uc, PROXY_IDLE_MS, uc->write_ms);
    }
    up_read_on(uc);
    list_push_front(&pool->idle, &uc->idle);
    pool->n_idle++;
}

static struct upconn *pool_pop(struct proxy_pool *pool)
{
    struct upconn *uc = pool_first(pool);
    if (!uc)
        return NULL;
    pool_unlink(uc);
    return uc; /* its timeouts are the caller's to set */
}

/* A new connection, connecting. NULL when the socket could not be set up. */
static struct upconn *upconn_connect(struct proxy_pool *pool)
{
    struct proxy *px = pool->px;
    struct upconn *uc = NULL;
    struct bufferevent *bev = NULL;
    SSL *ssl = NULL;
    int fd = -1, one = 1;

    fd = socket(pool->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (pool->tls) {
        if (!px->tls)
            goto fail;
        ssl = SSL_new(px->tls);
        if (!ssl)
            goto fail;
        if (pool->host_is_ip) {
            /* An address: verified against the certificate's IP SANs, and no
             * SNI (RFC 6066 allows only host names there). */
            if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), pool->host) != 1)
                goto fail;
        } else {
            SSL_set_tlsext_host_name(ssl, pool->host);
            if (SSL_set1_host(ssl, pool->host) != 1)
                goto fail;
            SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        }
        bev = bufferevent_openssl_socket_new(px->base, fd, ssl, BUFFEREVENT_SSL_CONNECTING,
                                             BEV_OPT_CLOSE_ON_FREE);
        if (!bev)
            goto fail;
        ssl = NULL; /* owned by bev now (freed with it) */
        fd = -1;
        bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    } else {
        bev = bufferevent_socket_new(px->base, fd, BEV_OPT_CLOSE_ON_FREE);
        if (!bev)
            goto fail;
        fd = -1;
    }
    if (bufferevent_socket_connect(bev, (struct sockaddr *)&pool->addr, (int)pool->addrlen) < 0)
        goto fail;
    uc = xcalloc(1, sizeof(*uc));
    uc->pool = pool;
    uc->bev = bev;
    uc->tls = pool->tls;
    uc->connecting = true;
    if (!uc->tls) {
        reader_init(&uc->rd, bev);
        uc->rd.hold = true;
    }
    return uc;
fail:
    if (bev)
        bufferevent_free(bev);
    if (ssl)
        SSL_free(ssl);
    if (fd >= 0)
        close(fd);
    return NULL;
}

/* ------------------------------------------------------------ head hygiene */

static void add_str(struct evbuffer *out, const char *s)
{
    evbuffer_add(out, s, strlen(s));
}

/*
 * Heads are assembled in a stack buffer and reach the evbuffer in one add
 * (or a few, past HB_CAP): an evbuffer_add per piece of every header line
 * cost more than the rest of building the head.
 */
#define HB_CAP 2048
struct hb {
    struct evbuffer *out;
    size_t n;
    const char *run, *run_end; /* hb_header's raw lines not yet copied (borrowed) */
    char b[HB_CAP];
};

static void hb_flush(struct hb *h)
{
    if (h->n)
        evbuffer_add(h->out, h->b, h->n);
    h->n = 0;
}

/* hb_put past the stack buffer's end: flushed first, or added directly. */
static void __attribute__((noinline)) hb_put_full(struct hb *h, const void *p, size_t n)
{
    hb_flush(h);
    if (n > sizeof(h->b))
        evbuffer_add(h->out, p, n);
    else {
        memcpy(h->b, p, n);
        h->n = n;
    }
}

/* Inlined: most pieces are literals, whose copy (and strlen, in hb_str)
 * the compiler then makes a few moves. */
static inline __attribute__((always_inline)) void hb_put(struct hb *h, const void *p, size_t n)
{
    if (__builtin_expect(h->n + n > sizeof(h->b), 0)) {
        hb_put_full(h, p, n);
        return;
    }
    memcpy(h->b + h->n, p, n);
    h->n += n;
}

static inline __attribute__((always_inline)) void hb_str(struct hb *h, const char *s)
{
    hb_put(h, s, strlen(s));
}

/* Decimal without printf (which costs more than the rest of a head),
 * written in place when the buffer has room for any. */
static void hb_u64(struct hb *h, uint64_t v)
{
    char buf[20];

    if (h->n + sizeof(buf) <= sizeof(h->b)) {
        h->n += u64_decimal(v, h->b + h->n);
        return;
    }
    hb_put(h, buf, u64_decimal(v, buf));
}

/* The header's line in its head reads exactly "name: value\r\n", the line a
 * head we build would hold: its raw bytes can be copied as they are (h's
 * slices point into the parsed head, whose lines all end before its end). */
static bool raw_line_is_canonical(const struct http1_header *h)
{
    return h->value == h->name + h->name_len + 2 && h->name[h->name_len] == ':' &&
           h->name[h->name_len + 1] == ' ' && h->value[h->value_len] == '\r' &&
           h->value[h->value_len + 1] == '\n';
}

/* Copies the raw lines of the run pending, if any (hb_header). */
static inline __attribute__((always_inline)) void hb_run_end(struct hb *h)
{
    if (h->run_end)
        hb_put(h, h->run, (size_t)(h->run_end - h->run));
    h->run = h->run_end = NULL;
}

/* Appends a header line kept from a parsed head. Lines as sent that follow
 * one another in it are copied together, once the run ends (hb_run_end,
 * before anything else is put): one copy for most of a head's lines, where
 * four a line cost more than the rest of building it. */
static inline __attribute__((always_inline)) void hb_header(struct hb *h,
                                                            const struct http1_header *hd)
{
    if (raw_line_is_canonical(hd)) {
        if (h->run_end != hd->name) {
            hb_run_end(h);
            h->run = hd->name;
        }
        h->run_end = hd->value + hd->value_len + 2;
        return;
    }
    hb_run_end(h);
    hb_put(h, hd->name, hd->name_len);
    hb_put(h, ": ", 2);
    hb_put(h, hd->value, hd->value_len);
    hb_put(h, "\r\n", 2);
}

/* The value of header `name` when the request holds exactly one copy (two
 * copies: neither is trusted): true and *v / *n set. */
static bool single_header(const struct http1_request *r, const char *name, size_t len,
                          const char **v, size_t *n)
{
    return http1_header_find(r->headers, r->n_headers, name, len, v, n) == 1;
}

bool proxy_client_request_id(const struct http1_request *req, char *out, size_t cap)
{
    const char *v;
    size_t n;

    if (!single_header(req, "x-request-id", 12, &v, &n) || n == 0 || n > PROXY_REQUEST_ID_MAX ||
        n >= cap)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = v[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-'))
            return false;
    }
    memcpy(out, v, n);
    out[n] = '\0';
    return true;
}

static bool lower_hex(const char *s, size_t n, bool *all_zero)
{
    *all_zero = true;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
        if (c != '0')
            *all_zero = false;
    }
    return true;
}

bool proxy_traceparent(const struct http1_request *req, char out[56])
{
    /* version "-" trace-id(32) "-" parent-id(16) "-" flags(2): 55 bytes */
    const char *v;
    size_t n;
    bool z_ver, z_trace, z_parent, z_flags;

    if (!single_header(req, "traceparent", 11, &v, &n) || n != 55)
        return false;
    if (v[2] != '-' || v[35] != '-' || v[52] != '-')
        return false;
    if (!lower_hex(v, 2, &z_ver) || !lower_hex(v + 3, 32, &z_trace) ||
        !lower_hex(v + 36, 16, &z_parent) || !lower_hex(v + 53, 2, &z_flags))
        return false;
    if (v[0] != '0' || v[1] != '0') /* only version 00 has this exact shape */
        return false;
    if (z_trace || z_parent)
        return false;
    memcpy(out, v, 55);
    out[55] = '\0';
    return true;
}

/*
 * A trusted proxy's `Forwarded` value without its host= parameters (RFC 7239:
 * elements separated by ',', pairs by ';', a value a token or a quoted string
 * with backslash escapes). baton forwards the host it routed on, never the
 * one a proxy claims: that host's policy may be one that denies the caller.
 * Writes the result to `out` (capacity at least 2n); returns its length, 0
 * when nothing is left.
 */
static size_t forwarded_without_host(const char *v, size_t n, char *out)
{
    size_t i = 0, o = 0;

    while (i < n) {
        size_t s = i, e;
        bool quoted = false, elem_end;
        while (i < n && (v[i] == ' ' || v[i] == '\t'))
            i++;
        s = i;
        for (e = i; e < n; e++) {
            if (quoted && v[e] == '\\' && e + 1 < n) {
                e++;
                continue;
            }
            if (v[e] == '"')
                quoted = !quoted;
            else if (!quoted && (v[e] == ';' || v[e] == ','))
                break;
        }
        elem_end = e == n || v[e] == ',';
        if (e > s && !(e - s >= 5 && ascii_casecmp_n(v + s, 5, "host=", 5) == 0)) {
            if (o && out[o - 1] != ',' && out[o - 1] != ' ')
                out[o++] = ';';
            memcpy(out + o, v + s, e - s);
            o += e - s;
        }
        if (elem_end && e < n && o && out[o - 1] != ' ') {
            out[o++] = ',';
            out[o++] = ' ';
        }
        i = e < n ? e + 1 : n;
    }
    while (o && (out[o - 1] == ' ' || out[o - 1] == ','))
        o--;
    return o;
}

int proxy_build_head(const struct proxy_head_params *p, struct evbuffer *out)
{
    const struct http1_request *r = p->req;
    const struct cfg_upstream *up = p->up;
    bool have_proto = false;
    size_t n_xff = 0;
    const struct http1_header *xff[HTTP1_MAX_HEADERS];
    struct hb hb;

    hb.out = out;
    hb.n = 0;
    hb.run = hb.run_end = NULL;
    hb_str(&hb, http1_method_name(r->method));
    hb_put(&hb, " ", 1);
    hb_str(&hb, up->base_path ? up->base_path : "");
    hb_put(&hb, p->path, p->path_len);
    if (p->query) {
        hb_put(&hb, "?", 1);
        hb_put(&hb, p->query, p->query_len);
    }
    hb_str(&hb, " HTTP/1.1\r\nHost: ");
    hb_str(&hb, up->host);
    if (up->port != (up->tls ? 443 : 80)) {
        hb_put(&hb, ":", 1);
        hb_u64(&hb, (uint64_t)up->port);
    }
    hb_put(&hb, "\r\n", 2);

    for (unsigned i = 0; i < r->n_headers; i++) {
        const struct http1_header *h = &r->headers[i];
        /* the class was found once, in the parse (hdrclass.h) */
        if ((h->cls & (HDRCLASS_HOP_BY_HOP | HDRCLASS_DROPPED)) ||
            (r->connection.n && http1_header_in_connection(&r->connection, h->name, h->name_len)) ||
            (!p->keep_tracestate && h->id == HDR_TRACESTATE) ||
            (p->assertion_name && (h->cls & HDRCLASS_CREDENTIAL)))
            continue;
        if (h->cls & HDRCLASS_SPOOFABLE) {
            /* Only a trusted proxy's forwarding headers survive, and only in
             * their canonical spelling: an underscore variant is never sent. */
            if (!p->from_trusted_proxy || !(h->cls & HDRCLASS_FORWARDING) ||
                memchr(h->name, '_', h->name_len))
                continue;
            if (h->id == HDR_X_FORWARDED_FOR) {
                xff[n_xff++] = h;
                continue;
            }
            if (h->id == HDR_X_FORWARDED_PROTO)
                have_proto = true;
            if (h->id == HDR_X_FORWARDED_HOST)
                continue; /* baton sets it: the host it routed on */
            if (h->id == HDR_FORWARDED) {
                char *fw = xmalloc(2 * h->value_len + 1); /* owned: ", " may replace "," */
                size_t fl = forwarded_without_host(h->value, h->value_len, fw);
                if (fl) {
                    hb_run_end(&hb);
                    hb_str(&hb, "Forwarded: ");
                    hb_put(&hb, fw, fl);
                    hb_put(&hb, "\r\n", 2);
                }
                free(fw);
                continue;
            }
        }
        hb_header(&hb, h);
    }
    hb_run_end(&hb);

    hb_str(&hb, "X-Forwarded-For: ");
    for (size_t i = 0; i < n_xff; i++) {
        hb_put(&hb, xff[i]->value, xff[i]->value_len);
        hb_put(&hb, ", ", 2);
    }
    hb_str(&hb, p->client_ip);
    hb_put(&hb, "\r\n", 2);
    if (!have_proto)
        hb_str(&hb, "X-Forwarded-Proto: http\r\n");
    if (r->hostname) {
        /* the host baton routed on (no trailing dot), with the client's port */
        hb_str(&hb, "X-Forwarded-Host: ");
        hb_put(&hb, r->hostname, r->hostname_len);
        if (r->port) {
            hb_put(&hb, ":", 1);
            hb_u64(&hb, r->port);
        }
        hb_put(&hb, "\r\n", 2);
    }
    hb_str(&hb, "X-Request-Id: ");
    hb_str(&hb, p->request_id);
    hb_put(&hb, "\r\n", 2);
    if (p->traceparent) {
        hb_str(&hb, "traceparent: ");
        hb_str(&hb, p->traceparent);
        hb_put(&hb, "\r\n", 2);
    }
    if (p->token_value) {
        hb_str(&hb, up->token_header ? up->token_header : "authorization");
        hb_put(&hb, ": ", 2);
        hb_str(&hb, p->token_value);
        hb_put(&hb, "\r\n", 2);
    }
    if (p->assertion_line)
        hb_put(&hb, p->assertion_line, p->assertion_line_len);
    if (p->body == HTTP1_BODY_LENGTH) {
        hb_str(&hb, "Content-Length: ");
        hb_u64(&hb, p->content_length);
        hb_put(&hb, "\r\n", 2);
    } else if (p->body == HTTP1_BODY_CHUNKED)
        hb_str(&hb, "Transfer-Encoding: chunked\r\n");
    hb_put(&hb, "\r\n", 2);
    hb_flush(&hb);
    return 0;
}

/* ---------------------------------------------------------------- exchange */

struct evbuffer *proxy_out(struct bufferevent *bev)
{
    if (!(bufferevent_get_enabled(bev) & EV_WRITE))
        bufferevent_enable(bev, EV_WRITE);
    return bufferevent_get_output(bev);
}

/* proxy_flush of a bufferevent on socket `fd` (-1: asked of bev, which
 * costs a call through its backend; a reader's event knows it). */
static void flush_fd(struct bufferevent *bev, evutil_socket_t fd)
{
    struct evbuffer *out = bufferevent_get_output(bev);

    if (evbuffer_get_length(out) > 0) {
        /* A bufferevent keeps its output's start frozen so that only its own
         * write callback drains it; that callback thaws it around the write
         * exactly like this. EAGAIN or an error: libevent goes on as usual. */
        evbuffer_unfreeze(out, 1);
        (void)evbuffer_write(out, fd >= 0 ? fd : bufferevent_getfd(bev));
        evbuffer_freeze(out, 1);
    }
    if (evbuffer_get_length(out) == 0) {
        if (bufferevent_get_enabled(bev) & EV_WRITE)
            bufferevent_disable(bev, EV_WRITE);
    } else if (!(bufferevent_get_enabled(bev) & EV_WRITE)) {
        bufferevent_enable(bev, EV_WRITE);
    }
}

void proxy_flush(struct bufferevent *bev)
{
    flush_fd(bev, -1);
}

/* The client's flush: its reader's event has its socket. */
static void client_flush(struct proxy_exchange *ex)
{
    flush_fd(ex->client, event_get_fd(&ex->client_rd->ev));
}

/* The upstream connection's output, ready for bytes; and its flush, which
 * TLS and a connect in progress leave to libevent. */
static struct evbuffer *up_out(struct upconn *uc)
{
    return uc->tls ? bufferevent_get_output(uc->bev) : proxy_out(uc->bev);
}

static void up_flush(struct upconn *uc)
{
    if (!uc->tls && !uc->connecting)
        flush_fd(uc->bev, event_get_fd(&uc->rd.ev));
}

/* The upstream output for bytes that up_flush sends in this same turn: a
 * plain connected socket's without turning EV_WRITE on (proxy_flush turns it
 * on for what the socket does not take: an event_add and an event_del a
 * request less); else up_out. */
static struct evbuffer *up_out_flushed(struct upconn *uc)
{
    return !uc->tls && !uc->connecting ? bufferevent_get_output(uc->bev) : up_out(uc);
}

struct evbuffer *proxy_head_buffer(struct proxy *px)
{
    return px->n_head_spares ? px->head_spares[--px->n_head_spares] : evbuffer_new();
}

/* Gives an exchange's request head back, emptied, for the next one. */
static void head_release(struct proxy *px, struct evbuffer *head)
{
    if (px->n_head_spares < sizeof(px->head_spares) / sizeof(px->head_spares[0])) {
        evbuffer_drain(head, evbuffer_get_length(head));
        px->head_spares[px->n_head_spares++] = head;
    } else {
        evbuffer_free(head);
    }
}

/* Ends the exchange: reports to the server and frees. Nothing may touch `ex`
 * after this. */
static void complete(struct proxy_exchange *ex)
{
    proxy_done_fn done = ex->done;
    void *arg = ex->arg;
    struct proxy_outcome out = ex->out;

    out.upstream_ns = mono_ns() - ex->t0;
    bufferevent_setcb(ex->client, NULL, NULL, NULL, NULL);
    if (ex->kick_armed)
        event_del(&ex->kick);
    ex->body_timer_on = false; /* an armed timer fires idle, or serves the next exchange */
    if (ex->head)
        head_release(ex->px, ex->head);
    resolve_set_unref(ex->addrs);
    ex->addrs = NULL;
    /* Kept for the next exchanges (one allocation less each), up to a bound. */
    if (ex->px->n_spares < PROXY_SPARES) {
        ex->next_spare = ex->px->spares;
        ex->px->spares = ex;
        ex->px->n_spares++;
    } else {
        lazy_stop(&ex->body_timer);
        free(ex);
    }
    done(arg, &out);
}

/* "ip:port" of a sockaddr, IPv6 in brackets. */
static void format_addr(const struct sockaddr_storage *ss, char *out, size_t cap)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
        snprintf(out, cap, "%s:%u", ip, ntohs(a->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
        snprintf(out, cap, "[%s]:%u", ip, ntohs(a->sin6_port));
    } else {
        snprintf(out, cap, "?");
    }
}

/* The precise error of an upstream failure, for its log line (proxy.h). */
static void fail_error(struct proxy_exchange *ex, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void fail_error(struct proxy_exchange *ex, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ex->out.error, sizeof(ex->out.error), fmt, ap);
    va_end(ap);
}

static void fail(struct proxy_exchange *ex, enum reason why, const char *detail)
{
    if (why == REASON_UPSTREAM_ERROR || why == REASON_UPSTREAM_TIMEOUT) {
        format_addr(&ex->pool->addr, ex->out.address, sizeof(ex->out.address));
        if (!ex->out.error[0])
            fail_error(ex, "%s", detail);
    }
    if (ex->uc) {
        upconn_free(ex->uc);
        ex->uc = NULL;
    }
    ex->out.reason = why;
    ex->out.detail = detail;
    ex->out.client_reusable = false;
    complete(ex);
}

static int pump_request(struct proxy_exchange *ex);

/* The request body did not arrive whole within limits.body_timeout_ms of the
 * exchange's start, however it trickled (a slow upload holds an upstream
 * connection and a worker's buffers). */
static void body_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct proxy_exchange *ex = arg;
    (void)fd;
    (void)what;
    if (!ex->body_timer_on || ex->req_done) { /* none running (a spare's, too) */
        ex->body_timer.at = 0;
        return;
    }
    if (lazy_due(&ex->body_timer))
        fail(ex, REASON_BODY_TIMEOUT, "request body not complete before limits.body_timeout_ms");
}

/* Runs once, from the loop, right after proxy_forward: so that `done` never
 * runs inside proxy_forward, whatever the buffered bytes hold. */
static void kick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct proxy_exchange *ex = arg;
    (void)fd;
    (void)what;
    ex->kick_armed = false;
    if (!ex->addrs) {
        size_t n;
        char err[200];
        resolver_status(ex->target->res, &n, err, sizeof(err));
        fail_error(ex, "resolve: %s", err[0] ? err : "no address yet");
        fail(ex, REASON_UPSTREAM_UNRESOLVED, "upstream name not resolved");
        return;
    }
    if (ex->start_failed) {
        fail_error(ex, "connect: %s", strerror(ex->start_errno));
        fail(ex, REASON_UPSTREAM_ERROR, "cannot open an upstream connection");
        return;
    }
    if (!ex->req_done)
        pump_request(ex);
}

static void add_chunk(struct evbuffer *out, const char *data, size_t len)
{
    char hdr[24];
    int n = snprintf(hdr, sizeof(hdr), "%zx\r\n", len);
    evbuffer_add(out, hdr, (size_t)n);
    evbuffer_add(out, data, len);
    evbuffer_add(out, "\r\n", 2);
}

/*
 * Decodes chunked bytes from `in` into `out` (re-encoded as chunks when
 * `reencode`), until `in` is exhausted, the body ends, or `out` holds `budget`
 * bytes. Returns HTTP1_INCOMPLETE, HTTP1_DONE or HTTP1_ERROR (ck->error).
 */
static int relay_chunked(struct http1_chunked *ck, struct evbuffer *in, struct evbuffer *out,
                         bool reencode, uint64_t *bytes, size_t budget)
{
    struct evbuffer_iovec v[16];
    int nv, rc = HTTP1_INCOMPLETE;
    size_t consumed = 0;

    nv = evbuffer_peek(in, -1, NULL, v, 16);
    if (nv > 16)
        nv = 16;
    for (int i = 0; i < nv && rc == HTTP1_INCOMPLETE; i++) {
        const char *p = v[i].iov_base;
        size_t left = v[i].iov_len;
        while (left > 0) {
            const char *data = NULL;
            size_t used = 0, data_len = 0;
            rc = http1_chunked_feed(ck, p, left, &used, &data, &data_len);
            if (rc == HTTP1_ERROR)
                goto out;
            if (rc == HTTP1_DATA) {
                if (reencode)
                    add_chunk(out, data, data_len);
                else
                    evbuffer_add(out, data, data_len);
                *bytes += data_len;
                rc = HTTP1_INCOMPLETE;
            }
            p += used;
            left -= used;
            consumed += used;
            if (rc == HTTP1_DONE)
                goto out;
            if (used == 0)
                break;
        }
        if (evbuffer_get_length(out) >= budget)
            break;
    }
out:
    evbuffer_drain(in, consumed);
    return rc;
}

static void request_body_done(struct proxy_exchange *ex)
{
    ex->req_done = true;
    ex->body_timer_on = false; /* lazy: an armed timer is kept for the next exchange */
    /* The client's reading stays enabled (no epoll change per request): what
     * it pipelines stays in its input, bounded by the read watermark, until
     * this exchange ends. Its silence is no longer a stall. */
    reader_timeout(ex->client_rd, NULL, 0);
    /* (the client's write timeout is proxy_forward's, unchanged) */
    /* The upstream's response time counts from the end of the request. */
    if (ex->uc)
        up_timeouts(ex->px, ex->uc, ex->timeout_ms, ex->timeout_ms);
}

/* Client input -> upstream output, as far as flow control allows. Returns -1
 * when the exchange ended (failed). */
static int pump_request(struct proxy_exchange *ex)
{
    struct evbuffer *in = bufferevent_get_input(ex->client);
    struct evbuffer *out = up_out_flushed(ex->uc); /* every way out flushes, or fails */

    while (!ex->req_done) {
        if (evbuffer_get_length(out) >= PROXY_HIGH_WATER) {
            up_flush(ex->uc);
            if (evbuffer_get_length(out) >= PROXY_HIGH_WATER)
                break;
            out = up_out_flushed(ex->uc);
        }
        size_t avail = evbuffer_get_length(in);
        if (ex->req_body == HTTP1_BODY_LENGTH) {
            size_t n = avail;
            if (n > ex->req_remaining)
                n = (size_t)ex->req_remaining;
            if (n == 0 && ex->req_remaining > 0)
                break;
            if (n > 0)
                evbuffer_remove_buffer(in, out, n);
            ex->req_remaining -= n;
            ex->out.request_bytes += n;
            if (ex->req_remaining == 0)
                request_body_done(ex);
        } else {
            int rc;
            if (avail == 0)
                break;
            rc = relay_chunked(&ex->req_ck, in, out, true, &ex->out.request_bytes,
                               PROXY_HIGH_WATER);
            if (rc == HTTP1_ERROR) {
                fail(ex, ex->req_ck.error, ex->req_ck.detail);
                return -1;
            }
            if (rc == HTTP1_DONE) {
                evbuffer_add(out, "0\r\n\r\n", 5);
                request_body_done(ex);
            }
        }
    }
    up_flush(ex->uc);
    if (!ex->req_done && evbuffer_get_length(out) >= PROXY_HIGH_WATER)
        proxy_reader_off(ex->client_rd);
    else
        proxy_reader_on(ex->client_rd); /* resumes reading paused at the watermark */
    return 0;
}

/* Writes the client's response head from the parsed upstream head. */
static void write_response_head(struct proxy_exchange *ex, const struct http1_response *resp)
{
    struct hb hb;

    hb.out = bufferevent_get_output(ex->client); /* pump_response flushes or finishes */
    hb.n = 0;
    hb.run = hb.run_end = NULL;
    hb_str(&hb, "HTTP/1.1 ");
    hb_u64(&hb, resp->status);
    hb_put(&hb, " ", 1);
    hb_str(&hb, http1_status_text(resp->status, "Status"));
    hb_put(&hb, "\r\n", 2);
    for (unsigned i = 0; i < resp->n_headers; i++) {
        const struct http1_header *h = &resp->headers[i];
        if ((h->cls & HDRCLASS_HOP_BY_HOP) || h->id == HDR_X_REQUEST_ID ||
            (resp->connection.n &&
             http1_header_in_connection(&resp->connection, h->name, h->name_len)))
            continue;
        hb_header(&hb, h);
    }
    hb_run_end(&hb);
    hb_str(&hb, "X-Request-Id: ");
    hb_str(&hb, ex->request_id);
    hb_put(&hb, "\r\n", 2);
    if (ex->chunk_out)
        hb_str(&hb, "Transfer-Encoding: chunked\r\n");
    if (ex->close_out || !ex->client_keep_alive)
        hb_str(&hb, "Connection: close\r\n");
    else if (ex->client_version == 10)
        hb_str(&hb, "Connection: keep-alive\r\n");
    hb_put(&hb, "\r\n", 2);
    hb_flush(&hb);
}

static void finish(struct proxy_exchange *ex)
{
    struct upconn *uc = ex->uc;
    bool reuse = ex->req_done && ex->resp_keep_alive && ex->resp_body != HTTP1_BODY_CLOSE &&
                 evbuffer_get_length(bufferevent_get_input(uc->bev)) == 0 &&
                 evbuffer_get_length(bufferevent_get_output(uc->bev)) == 0;

    ex->uc = NULL;
    if (reuse)
        pool_put(uc);
    else
        upconn_free(uc);
    ex->out.reason = REASON_ALLOWED;
    ex->out.client_reusable = ex->client_keep_alive && ex->req_done && !ex->close_out;
    complete(ex);
}

/* Parses the response head once complete. Returns 1 when the head was
 * handled, 0 when more bytes are needed, -1 when the exchange ended. */
static int take_response_head(struct proxy_exchange *ex)
{
    struct evbuffer *in = bufferevent_get_input(ex->uc->bev);

    for (;;) {
        struct http1_response resp;
        size_t len = evbuffer_get_length(in), n, head_len = 0;
        const char *buf;
        int rc;

        if (len == 0)
            return 0;
        n = len < PROXY_MAX_RESPONSE_HEAD ? len : PROXY_MAX_RESPONSE_HEAD;
        buf = (const char *)evbuffer_pullup(in, (ssize_t)n);
        if (ex->resp_prev && !http1_worth_parsing(buf, n, ex->resp_prev, &ex->px->resp_limits)) {
            ex->resp_prev = n;
            return 0;
        }
        rc = http1_parse_response(buf, n, &ex->px->resp_limits, ex->method, &resp, &head_len);
        if (rc == HTTP1_INCOMPLETE) {
            if (n >= PROXY_MAX_RESPONSE_HEAD) {
                fail(ex, REASON_UPSTREAM_ERROR, "upstream response head too large");
                return -1;
            }
            ex->resp_prev = n;
            return 0;
        }
        if (rc != HTTP1_OK) {
            fail(ex, REASON_UPSTREAM_ERROR, resp.detail ? resp.detail : "bad response head");
            return -1;
        }
        ex->resp_prev = 0;
        if (resp.informational) {
            evbuffer_drain(in, head_len);
            continue;
        }
        ex->resp_body = resp.body;
        ex->resp_remaining = resp.content_length;
        ex->resp_keep_alive = resp.keep_alive;
        if (resp.body == HTTP1_BODY_CHUNKED || resp.body == HTTP1_BODY_CLOSE) {
            if (ex->client_version >= 11)
                ex->chunk_out = true;
            else
                ex->close_out = true;
        }
        if (resp.body == HTTP1_BODY_CHUNKED)
            http1_chunked_init(&ex->resp_ck, 0);
        write_response_head(ex, &resp);
        evbuffer_drain(in, head_len);
        ex->resp_head = true;
        ex->out.upstream_status = (int)resp.status;
        ex->out.response_started = true;
        if (ex->head) {
            head_release(ex->px, ex->head);
            ex->head = NULL;
        }
        return 1;
    }
}

/* Moves `avail` bytes of a close-delimited upstream body to the client, as one
 * chunk when the client side is re-chunked (an HTTP/1.1 client on a kept-alive
 * connection cannot be told "until close"). */
static void relay_close_delimited(struct proxy_exchange *ex, struct evbuffer *in,
                                  struct evbuffer *out, size_t avail)
{
    if (ex->chunk_out) {
        char hdr[24];
        int n = snprintf(hdr, sizeof(hdr), "%zx\r\n", avail);
        evbuffer_add(out, hdr, (size_t)n);
        evbuffer_remove_buffer(in, out, avail);
        evbuffer_add(out, "\r\n", 2);
    } else {
        evbuffer_remove_buffer(in, out, avail);
    }
    ex->out.response_bytes += avail;
}

/* Upstream input -> client output. */
static void pump_response(struct proxy_exchange *ex)
{
    struct evbuffer *in, *out;

    if (!ex->resp_head) {
        int r = take_response_head(ex);
        if (r <= 0)
            return;
    }
    /* Bytes are added without turning EV_WRITE on: every way out of here
     * flushes (proxy_flush turns it on for what the socket did not take),
     * fails or finishes, after which the server flushes the tail. An
     * enable and a disable a response less. */
    in = bufferevent_get_input(ex->uc->bev);
    out = bufferevent_get_output(ex->client);
    for (;;) {
        size_t avail = evbuffer_get_length(in);
        if (ex->resp_body == HTTP1_BODY_NONE ||
            (ex->resp_body == HTTP1_BODY_LENGTH && ex->resp_remaining == 0))
            goto done;
        if (evbuffer_get_length(out) >= PROXY_HIGH_WATER) {
            client_flush(ex);
            if (evbuffer_get_length(out) >= PROXY_HIGH_WATER) {
                up_read_off(ex->uc);
                return;
            }
        }
        if (avail == 0)
            break;
        if (ex->resp_body == HTTP1_BODY_LENGTH) {
            size_t n = avail > ex->resp_remaining ? (size_t)ex->resp_remaining : avail;
            evbuffer_remove_buffer(in, out, n);
            ex->resp_remaining -= n;
            ex->out.response_bytes += n;
        } else if (ex->resp_body == HTTP1_BODY_CHUNKED) {
            int rc = relay_chunked(&ex->resp_ck, in, out, ex->chunk_out, &ex->out.response_bytes,
                                   PROXY_HIGH_WATER);
            if (rc == HTTP1_ERROR) {
                fail(ex, REASON_UPSTREAM_ERROR, "bad chunked framing from upstream");
                return;
            }
            if (rc == HTTP1_DONE) {
                if (ex->chunk_out)
                    evbuffer_add(out, "0\r\n\r\n", 5);
                goto done;
            }
        } else { /* HTTP1_BODY_CLOSE: everything until EOF */
            relay_close_delimited(ex, in, out, avail);
        }
    }
    up_read_on(ex->uc);
    client_flush(ex);
    return;
done:
    /* The tail is written by the server once the request is finished (after
     * its audit record is durable with fsync "always"). */
    finish(ex);
}

/* Moves the exchange to the next address of its set (ex->pool). False when
 * every address was tried. */
static bool next_address(struct proxy_exchange *ex)
{
    if (ex->attempt + 1 >= ex->addrs->n)
        return false;
    ex->attempt++;
    ex->pool = pool_get(ex->px, ex->target,
                        &ex->addrs->a[resolve_pick(ex->addrs, ex->rr_start, ex->attempt)]);
    return true;
}

/* Wires a connection that has (or will have, once connected) the request's
 * bytes queued: callbacks, watermarks, timeouts. */
static void wire_upstream(struct proxy_exchange *ex, struct upconn *uc)
{
    metrics_upstream_conn(ex->px->mw, ex->reused);
    ex->uc = uc;
    bufferevent_setcb(uc->bev, up_read_cb, up_write_cb, up_event_cb, ex);
    if (!uc->write_wm) {
        bufferevent_setwatermark(uc->bev, EV_WRITE, PROXY_HIGH_WATER / 2, 0);
        uc->write_wm = !uc->tls; /* TLS: pool_put resets it */
    }
    up_timeouts(ex->px, uc, ex->req_done ? ex->timeout_ms : 0, ex->timeout_ms);
}

/*
 * Opening a new connection failed before any byte left (refused,
 * unreachable: nothing is written while connecting), so any request may go
 * to the next address of the set, idempotent or not (Envoy's connect-failure
 * retry, nginx's proxy_next_upstream error): the queued head and body move
 * to a connection to the next address. False when none is left or none opens.
 */
static bool failover(struct proxy_exchange *ex)
{
    struct upconn *old = ex->uc;
    struct evbuffer *queued = bufferevent_get_output(old->bev);

    while (next_address(ex)) {
        struct upconn *uc = upconn_connect(ex->pool);
        if (!uc)
            continue;
        log_msg(LOG_DEBUG, "upstream %s: connect failed, trying %s", ex->target->up->name,
                ex->pool->key);
        evbuffer_unfreeze(queued, 1); /* a bufferevent's output start is frozen */
        evbuffer_add_buffer(up_out(uc), queued);
        ex->uc = NULL;
        upconn_free(old);
        ex->reused = false;
        wire_upstream(ex, uc);
        up_read_on(uc);
        return true;
    }
    return false;
}

/*
 * A request sent on a pooled connection that the upstream had already closed
 * is sent once more on a fresh one, but only when it is idempotent (RFC 9110
 * 9.2.2; nginx's proxy_next_upstream does the same): the upstream may have run
 * a POST or PATCH before closing, and a workflow step must not run twice under
 * one audit record. may_resend: the request could be (its head is kept for
 * that); may_retry: it is now.
 */
static bool may_resend(const struct proxy_exchange *ex)
{
    bool idempotent = ex->method == HTTP1_METHOD_GET || ex->method == HTTP1_METHOD_HEAD ||
                      ex->method == HTTP1_METHOD_PUT || ex->method == HTTP1_METHOD_DELETE ||
                      ex->method == HTTP1_METHOD_OPTIONS;
    return idempotent && ex->reused && !ex->retried && ex->no_body;
}

static bool may_retry(struct proxy_exchange *ex)
{
    return may_resend(ex) && !ex->resp_head &&
           evbuffer_get_length(bufferevent_get_input(ex->uc->bev)) == 0;
}

/* Sends the head on the current upstream connection and wires callbacks. */
static int start_upstream(struct proxy_exchange *ex)
{
    struct upconn *uc = pool_pop(ex->pool);
    struct evbuffer *out;

    ex->reused = uc != NULL;
    while (!uc) {
        uc = upconn_connect(ex->pool);
        if (uc)
            break;
        int e = errno;
        if (!next_address(ex)) {
            errno = e;
            return -1;
        }
    }
    /* While the request body streams, only writes are timed: an upstream may
     * legitimately say nothing until the body is complete. */
    wire_upstream(ex, uc);
    /* flushed right below, or with the body by pump_request (proxy_forward
     * calls it, or arms the kick that does, when a body is to come) */
    out = up_out_flushed(uc);
    if (may_resend(ex))
        evbuffer_add(out, evbuffer_pullup(ex->head, -1), evbuffer_get_length(ex->head));
    else
        evbuffer_add_buffer(out, ex->head); /* moved: no copy, no allocation */
    up_read_on(uc);
    if (ex->req_done)
        up_flush(uc); /* else pump_request flushes head and body together */
    return 0;
}

static void up_read_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    pump_response(arg);
}

static void up_write_cb(struct bufferevent *bev, void *arg)
{
    struct proxy_exchange *ex = arg;
    (void)bev;
    if (!ex->req_done)
        pump_request(ex);
}

static void up_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct proxy_exchange *ex = arg;
    int err = EVUTIL_SOCKET_ERROR(); /* libevent leaves the socket's error here */
    unsigned long tls_err = 0;
    (void)bev;

    if (what & BEV_EVENT_CONNECTED) {
        up_connected(ex->uc);
        return;
    }
    if ((what & BEV_EVENT_ERROR) && ex->uc->tls)
        tls_err = bufferevent_get_openssl_error(ex->uc->bev);
    if ((what & BEV_EVENT_ERROR) && ex->uc->connecting && !tls_err && failover(ex))
        return;
    if (what & BEV_EVENT_TIMEOUT) {
        if (ex->uc->connecting)
            fail_error(ex, "timeout: connect not complete after %u ms", ex->timeout_ms);
        else if (!ex->resp_head)
            fail_error(ex, "timeout: no response head after %u ms without progress",
                       ex->timeout_ms);
        else
            fail_error(ex, "timeout: response body stalled for %u ms", ex->timeout_ms);
        fail(ex, REASON_UPSTREAM_TIMEOUT, "upstream timeout");
        return;
    }
    /* EOF or error. A close-delimited body ends here. */
    if (ex->resp_head && ex->resp_body == HTTP1_BODY_CLOSE && (what & BEV_EVENT_EOF)) {
        struct evbuffer *in = bufferevent_get_input(ex->uc->bev);
        struct evbuffer *out = proxy_out(ex->client);
        size_t avail = evbuffer_get_length(in);
        if (avail)
            relay_close_delimited(ex, in, out, avail);
        if (ex->chunk_out)
            evbuffer_add(out, "0\r\n\r\n", 5);
        finish(ex);
        return;
    }
    if (may_retry(ex)) {
        upconn_free(ex->uc);
        ex->uc = NULL;
        ex->retried = true;
        if (start_upstream(ex) == 0)
            return;
        fail_error(ex, "connect: %s", strerror(errno));
        fail(ex, REASON_UPSTREAM_ERROR, "cannot open an upstream connection");
        return;
    }
    if (what & BEV_EVENT_ERROR) {
        if (tls_err) {
            SSL *ssl = bufferevent_openssl_get_ssl(ex->uc->bev);
            long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
            char buf[160];
            if (vr != X509_V_OK) {
                fail_error(ex, "TLS: certificate verify failed: %s",
                           X509_verify_cert_error_string(vr));
            } else {
                ERR_error_string_n(tls_err, buf, sizeof(buf));
                fail_error(ex, "TLS: %s", buf);
            }
        } else {
            fail_error(ex, "%s: %s",
                       ex->uc->connecting ? "connect"
                       : ex->resp_head    ? "read"
                                          : "send",
                       err ? strerror(err) : "connection failed");
        }
        fail(ex, REASON_UPSTREAM_ERROR,
             tls_err
                 ? "upstream TLS failure"
                 : (ex->resp_head ? "upstream connection reset" : "upstream connection failed"));
        return;
    }
    fail_error(ex, "%s",
               ex->resp_head ? "EOF: the upstream closed the connection mid-response"
                             : "EOF: the upstream closed the connection before a response head");
    fail(ex, REASON_UPSTREAM_ERROR, "upstream closed the connection early");
}

static void client_read_cb(struct bufferevent *bev, void *arg)
{
    struct proxy_exchange *ex = arg;
    (void)bev;
    if (!ex->req_done)
        pump_request(ex);
    /* else: the next pipelined request; it waits in the input buffer */
}

static void client_write_cb(struct bufferevent *bev, void *arg)
{
    struct proxy_exchange *ex = arg;
    (void)bev;
    if (ex->resp_head)
        pump_response(ex);
}

static void client_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct proxy_exchange *ex = arg;
    (void)bev;

    if ((what & BEV_EVENT_EOF) && (what & BEV_EVENT_READING) && ex->req_done)
        return; /* a half-close after the request: the response may still go out */
    if ((what & BEV_EVENT_TIMEOUT) && (what & BEV_EVENT_READING) && !ex->req_done) {
        /* the body went silent for timeout_ms: the client is still there to
         * be told (408), unlike a client that closed */
        fail(ex, REASON_BODY_TIMEOUT, "request body silent for the step's timeout_ms");
        return;
    }
    fail(ex, REASON_CLIENT_CLOSED,
         (what & BEV_EVENT_TIMEOUT) ? "client stalled" : "client closed the connection");
}

struct proxy_exchange *proxy_forward(struct proxy *px, const struct proxy_forward_params *p,
                                     proxy_done_fn done, void *arg)
{
    struct proxy_exchange *ex = px->spares;

    if (ex) {
        px->spares = ex->next_spare;
        px->n_spares--;
        memset(ex, 0, offsetof(struct proxy_exchange, body_timer));
    } else {
        ex = xcalloc(1, sizeof(*ex));
    }
    ex->px = px;
    ex->target = p->target;
    ex->addrs = resolver_current(p->target->res, &ex->rr_start);
    ex->pool = ex->addrs ? pool_get(px, p->target,
                                    &ex->addrs->a[resolve_pick(ex->addrs, ex->rr_start, 0)])
                         : NULL;
    ex->client = p->client;
    ex->client_rd = p->client_rd;
    ex->done = done;
    ex->arg = arg;
    ex->head = p->head;
    ex->method = p->method;
    ex->client_version = p->client_version;
    ex->client_keep_alive = p->client_keep_alive;
    ex->timeout_ms = p->timeout_ms ? p->timeout_ms : 60000;
    if (p->request_id) { /* validated or generated: at most PROXY_REQUEST_ID_MAX */
        size_t n = strnlen(p->request_id, sizeof(ex->request_id) - 1);
        memcpy(ex->request_id, p->request_id, n);
        ex->request_id[n] = '\0';
    }
    ex->req_body = p->body;
    ex->req_remaining = p->body == HTTP1_BODY_LENGTH ? p->content_length : 0;
    if (p->body == HTTP1_BODY_CHUNKED)
        http1_chunked_init(&ex->req_ck, p->max_body);
    ex->req_done = p->body == HTTP1_BODY_NONE ||
                   (p->body == HTTP1_BODY_LENGTH && p->content_length == 0);
    ex->no_body = ex->req_done;
    ex->t0 = mono_ns();
    ex->out.reason = REASON_ALLOWED;

    bufferevent_setcb(ex->client, client_read_cb, client_write_cb, client_event_cb, ex);
    bufferevent_setwatermark(ex->client, EV_WRITE, PROXY_HIGH_WATER / 2, 0);
    proxy_reader_watermark(ex->client_rd, PROXY_HIGH_WATER);
    reader_timeout_ms(px, ex->client_rd, ex->req_done ? 0 : ex->timeout_ms);
    bufferevent_set_timeouts(ex->client, NULL, proxy_tv(px, ex->timeout_ms));

    if (!ex->req_done && p->body_timeout_ms) {
        if (!ex->body_timer_assigned) {
            evtimer_assign(&ex->body_timer.ev, px->base, body_deadline_cb, ex);
            ex->body_timer_assigned = true;
        }
        lazy_set(&ex->body_timer, proxy_tv(px, p->body_timeout_ms),
                 (uint64_t)p->body_timeout_ms * 1000000u);
        lazy_restart(&ex->body_timer);
        ex->body_timer_on = true;
    }
    if (!ex->addrs) {
        ex->start_failed = true; /* kick_cb reports UPSTREAM_UNRESOLVED */
    } else if (start_upstream(ex) < 0) {
        ex->start_failed = true;
        ex->start_errno = errno;
    } else if (!ex->req_done && p->expect_100 &&
               evbuffer_get_length(bufferevent_get_input(ex->client)) == 0) {
        add_str(proxy_out(ex->client), "HTTP/1.1 100 Continue\r\n\r\n");
        client_flush(ex);
    }
    if (!ex->start_failed && !ex->req_done && ex->req_body == HTTP1_BODY_LENGTH) {
        /* A length-delimited body has no framing to fail on and pumping it
         * calls no callback: pumped now, the head and what came of the body
         * leaving together, without a kick (an event_assign and an
         * event_active a request). */
        pump_request(ex);
    } else if (ex->start_failed || !ex->req_done) {
        /* Failure to report, or chunked bytes to pump (whose framing may
         * fail): from the loop, never from inside this call. */
        event_assign(&ex->kick, px->base, -1, 0, kick_cb, ex);
        event_active(&ex->kick, EV_TIMEOUT, 0);
        ex->kick_armed = true;
    }
    return ex;
}

void proxy_abort(struct proxy_exchange *ex)
{
    fail(ex, REASON_DRAIN_ABORTED, "aborted at the drain deadline");
}
