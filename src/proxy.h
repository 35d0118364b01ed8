/*
 * proxy.h: forwarding one admitted request to its upstream and streaming the
 * response back (docs/spec.md step 6), for one worker's event loop.
 *
 * The server calls proxy_build_head with the parsed request while its bytes
 * are still in the client's input buffer; that is where header hygiene
 * happens (client Authorization, hop-by-hop headers, names listed in
 * Connection, spoofable identity headers in every spelling, method overrides,
 * X-Forwarded-*, X-Request-Id, traceparent, the minted token). Then, with the
 * head consumed from the client's input, proxy_forward runs the exchange:
 * it takes over the client bufferevent's callbacks until `done` runs, streams
 * the request body (Content-Length or chunked, decoded strictly and re-sent
 * chunked, capped at max_body) and the response (re-framed for the client)
 * with flow control both ways, so memory per exchange stays bounded by the
 * watermarks whatever the body sizes.
 *
 * Upstream connections are kept alive in a per-worker pool per upstream
 * address (LIFO, idle ones closed when the upstream closes them or after
 * PROXY_IDLE_MS); https upstreams use TLS with peer and hostname
 * verification and SNI. A request without a body that meets a pooled
 * connection closed under it is retried once on a fresh connection.
 *
 * An upstream name may have many addresses (resolve.h): each exchange takes
 * the current set, starts at the next address round robin, and when opening
 * a new connection fails (refused, unreachable: before any byte left) moves
 * on to the next address of the set, carrying the queued head and body over;
 * a connect timeout or a TLS failure does not fail over. With no set yet the
 * exchange fails with UPSTREAM_UNRESOLVED.
 *
 * Threads: everything here belongs to one worker's thread, except
 * proxy_tls_ctx_new (any thread, at snapshot build).
 */
#ifndef BATON_PROXY_H
#define BATON_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <netinet/in.h>
#include <sys/socket.h>

#include "config.h"
#include "http1.h"
#include "reason.h"

struct event_base;
struct bufferevent;
struct timeval;
struct evbuffer;
struct metrics_worker;
typedef struct ssl_ctx_st SSL_CTX;

#define PROXY_IDLE_MS 30000u            /* idle pooled connection lifetime */
#define PROXY_MAX_IDLE_PER_POOL 256     /* idle connections kept per upstream per worker */
#define PROXY_HIGH_WATER (256u * 1024u) /* bytes queued toward a peer before reading pauses */
#define PROXY_MAX_RESPONSE_HEAD 65536u  /* upstream response head cap (502 beyond) */
#define PROXY_REQUEST_ID_MAX 128        /* a client X-Request-Id longer than this is replaced */

/* An upstream and its addresses, kept fresh on the background thread
 * (resolve.h). */
struct resolver;
struct proxy_target {
    const struct cfg_upstream *up; /* borrowed from the snapshot's config */
    struct resolver *res;          /* owned by the snapshot (runtime.c) */
};

/* A TLS client context verifying peers against the default trust store
 * ($SSL_CERT_FILE / $SSL_CERT_DIR honoured), TLS 1.2+. Owned; NULL on error. */
SSL_CTX *proxy_tls_ctx_new(char *err, size_t errlen);

struct proxy; /* one per worker */

/* `tls` and `mw` are borrowed and must outlive the proxy. */
struct proxy *proxy_new(struct event_base *base, SSL_CTX *tls, struct metrics_worker *mw);
/* Closes pooled connections. No exchange may be running. NULL ok. */
void proxy_free(struct proxy *px);
/* Closes every idle pooled connection (drain, reload). */
void proxy_close_idle(struct proxy *px);

/* What proxy_build_head needs besides the parsed request. Borrowed for the call. */
struct proxy_head_params {
    const struct http1_request *req;
    const char *path; /* canonical path (slice) */
    size_t path_len;
    const char *query; /* NULL: none; else the query without '?' (may be empty) */
    size_t query_len;
    const struct cfg_upstream *up;
    bool from_trusted_proxy; /* keep X-Forwarded-* / Forwarded sent by the client */
    const char *client_ip;   /* NUL-terminated text form of the peer address */
    const char *request_id;  /* NUL-terminated */
    const char *traceparent; /* validated, NUL-terminated, or NULL */
    const char *token_value; /* "Bearer <jwt>" for up->token_header, or NULL */
    enum http1_body body;    /* framing to send: NONE, LENGTH or CHUNKED */
    uint64_t content_length;
    bool keep_tracestate; /* the client's traceparent was valid: its tracestate goes on */
    /* the caller assertion (assertion.h): every client copy of `assertion_name`
     * (NULL: none configured; '-' and '_' equivalent) is dropped, and the ready
     * line (NULL: none for this upstream) "name: value\r\n" is sent. req's
     * headers carry the credential class of that name (runtime.h's classes,
     * stamped by the parse): a copy is found by its class */
    const char *assertion_name;
    const char *assertion_line;
    size_t assertion_line_len;
};

/* Appends the upstream request head to `out`. Returns 0. */
int proxy_build_head(const struct proxy_head_params *p, struct evbuffer *out);
/* An empty buffer for proxy_build_head, reused from finished exchanges
 * (proxy_forward takes it over). */
struct evbuffer *proxy_head_buffer(struct proxy *px);

/*
 * The client's X-Request-Id if there is exactly one and it is 1..128 bytes
 * of [A-Za-z0-9._:-], copied into out (cap >= PROXY_REQUEST_ID_MAX+1):
 * returns true. Otherwise false and out is untouched.
 */
bool proxy_client_request_id(const struct http1_request *req, char *out, size_t cap);
/* The traceparent header if exactly one is present and valid per W3C Trace
 * Context (version 00 form, lowercase hex, non-zero ids): copied into
 * out[56] and true, else false. */
bool proxy_traceparent(const struct http1_request *req, char out[56]);

/*
 * Writing without a loop turn. libevent arms EPOLLOUT for every write and
 * disarms it once the buffer drained: two epoll_ctl calls and an extra turn
 * per response. proxy_flush writes what `bev` holds right away and, when
 * the socket took it all, disables EV_WRITE in the same turn, which the
 * epoll changelist folds with the pending arm into nothing. proxy_out must
 * then be used to get the output evbuffer before adding bytes (it re-enables
 * EV_WRITE if a flush left it off). Plain sockets only (never TLS: the bytes
 * would bypass the cipher).
 */
struct evbuffer *proxy_out(struct bufferevent *bev);
void proxy_flush(struct bufferevent *bev);

/*
 * Reading a plain socket's bufferevent without libevent's reader, which makes
 * an ioctl(FIONREAD) before every recv: a public `event` on the socket recvs
 * (at most 4096 bytes, as libevent) into the bufferevent's input and runs its
 * read callback; EOF, an error or the read timeout turn reading off and run
 * its event callback with BEV_EVENT_READING|EOF, |ERROR or |TIMEOUT, as
 * libevent would. Every read enable, disable, read timeout and read
 * watermark of such a bufferevent goes through these calls instead of
 * bufferevent_enable/disable/set_timeouts/setwatermark(EV_READ); its
 * bufferevent's own reading is never enabled. Turning reading on when it is
 * on costs nothing (no epoll change).
 */
struct proxy_reader;
/* Owned by the caller; `bev` borrowed (a bufferevent_socket, not TLS) and
 * freed after the reader: proxy_reader_free, then bufferevent_free. Reading
 * starts off, without timeout or watermark. */
struct proxy_reader *proxy_reader_new(struct bufferevent *bev);
void proxy_reader_free(struct proxy_reader *rd);
void proxy_reader_on(struct proxy_reader *rd);
void proxy_reader_off(struct proxy_reader *rd);
/* The read timeout (copied; a plain timeval), NULL: none. Setting it while
 * reading is on restarts it, as a read does. It runs on a timer of the
 * reader's own, kept armed across restarts while it fires no later than the
 * deadline (it re-arms for the rest when early): the timeout comes at its
 * deadline, never before. */
void proxy_reader_timeout(struct proxy_reader *rd, const struct timeval *tv);
/* No reading while the input holds `high` bytes or more, and none beyond it;
 * reading resumes at the next proxy_reader_on below it. 0: no limit. */
void proxy_reader_watermark(struct proxy_reader *rd, size_t high);

struct proxy_exchange;

struct proxy_forward_params {
    const struct proxy_target *target; /* borrowed until done */
    struct bufferevent *client;        /* borrowed; callbacks taken over until done */
    struct proxy_reader *client_rd;    /* borrowed: reads client; taken over until done */
    struct evbuffer *head;             /* built by proxy_build_head; taken over */
    enum http1_method method;
    enum http1_body body; /* request body framing as received */
    uint64_t content_length;
    uint64_t max_body; /* decoded body cap (0: none) */
    unsigned timeout_ms;
    bool expect_100; /* answer "100 Continue" before reading the body */
    bool client_keep_alive;
    int client_version;       /* 10 or 11 */
    const char *request_id;   /* copied: echoed as X-Request-Id in the response */
    unsigned body_timeout_ms; /* the whole request body must arrive within it; 0: no deadline */
};

struct proxy_outcome {
    enum reason
        reason; /* ALLOWED, UPSTREAM_ERROR, UPSTREAM_TIMEOUT, UPSTREAM_UNRESOLVED, CLIENT_CLOSED, DRAIN_ABORTED,
                           BODY_TIMEOUT (the body missed its deadline or went silent for
                           timeout_ms), or the chunked decoder's BODY_TOO_LARGE / BAD_FRAMING */
    int upstream_status;     /* 0: no response head received */
    bool response_started;   /* response bytes were queued to the client */
    bool client_reusable;    /* the client connection may serve another request */
    uint64_t request_bytes;  /* decoded request body bytes sent upstream */
    uint64_t response_bytes; /* response body bytes queued to the client */
    uint64_t upstream_ns;    /* forward start to response end (or failure) */
    const char *detail;      /* static text for the log on failure, or NULL */
    /* on an upstream failure (502/504), for its log line: the address tried
     * ("10.0.0.7:443", "[::1]:8080") and what failed, precisely ("connect:
     * Connection refused", "TLS: certificate verify failed: ...", "timeout:
     * no upstream progress for 500 ms"); "" otherwise */
    char address[INET6_ADDRSTRLEN + 8];
    char error[200];
};

/* Runs on the worker thread exactly once; the exchange is freed after it
 * returns. The client's callbacks are the proxy's until then: the callee
 * must set its own. `out` is borrowed for the call. */
typedef void (*proxy_done_fn)(void *arg, const struct proxy_outcome *out);

/* Starts the exchange. `done` never runs from inside this call. */
struct proxy_exchange *proxy_forward(struct proxy *px, const struct proxy_forward_params *p,
                                     proxy_done_fn done, void *arg);

/* Stops an exchange now (drain deadline): `done` runs before this returns,
 * with reason DRAIN_ABORTED. */
void proxy_abort(struct proxy_exchange *ex);

#endif
