/*
 * server.c: `baton serve`: workers, listeners, the client side of every
 * request, and the process lifecycle (reload, reopen, drain).
 *
 * Threads: N workers, each with its own event_base and its own SO_REUSEPORT
 * listening socket, so the kernel spreads connections and a worker never
 * shares a connection; one background thread (the main thread) runs the
 * background event_base: key-set and identity refresh, the admin listener,
 * signals, snapshot retirement. The audit writer has its own thread.
 *
 * One request, on its worker (docs/spec.md "One request, in order"):
 *   guard   http1_parse_request over the connection's input (at most
 *           max_header_bytes+2 bytes pulled up), a total header deadline from
 *           the first byte, the global body cap. Refusals here get a log line
 *           and the connection closes; no audit record (nothing was routed).
 *   path    path_canonicalize: a refusal is a 400 WITH an audit record.
 *   route   policy_route on the Host name and canonical path (404 no_route).
 *   authn   Bearer token, authn_verify with the worker's verified-token cache.
 *   authz   policy_authorize, then the step's token bucket (429, Retry-After);
 *           a dry_run step records would_deny and goes on.
 *   body    the step's max_body_bytes against a declared Content-Length.
 *   mint    identity "none": no token; "google": identity_get or 503.
 *   assert  with "assertion" and the upstream's caller_assertion: the signed
 *           caller assertion from the worker's cache (assertion.h), or 503
 *           assertion_unavailable with nothing forwarded.
 *   audit   audit_reserve before anything is forwarded (503 when refused).
 *   forward proxy.c streams both ways; the record is submitted when the
 *           exchange ends, whatever the way it ends.
 * Exactly one audit record per request that reached routing: every path out
 * of the pipeline after the guard goes through finish().
 *
 * Connections: keep-alive and pipelining; a second request already in the
 * buffer is parsed only when the first is finished, and while a response is
 * queued beyond PROXY_HIGH_WATER the next head is not read, so a client that
 * pipelines without reading cannot grow our buffers. max_connections is a
 * global count: over it, a connection is accepted, answered with a canned 503
 * and closed at once (rather than left in the kernel's accept queue where it
 * would time out without an answer).
 */
#include "server.h"

#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <openssl/ssl.h>

#include "assertion.h"
#include "audit.h"
#include "authn.h"
#include "cli.h"
#include "http1.h"
#include "http_client.h"
#include "identity.h"
#include "jwks.h"
#include "log.h"
#include "metrics.h"
#include "path.h"
#include "policy.h"
#include "proxy.h"
#include "runtime.h"
#include "util.h"

#define ARENA_KEEP 4096        /* a bigger per-connection arena is freed after its request */
#define UA_MAX 512             /* user agent bytes kept for the audit record */
#define LINGER_MS 2000         /* after a close, how long unread client bytes are drained */
#define CMD_DRAIN 1
#define CMD_ABORT 2

struct worker;

enum conn_state {
    CS_HEAD,         /* reading (or waiting for) a request head */
    CS_BUSY,         /* a request is being forwarded */
    CS_WAIT_DURABLE, /* fsync "always": the response waits for its record */
    CS_CLOSING,      /* flushing the last response, then lingering */
};

/* Everything a request keeps after its head left the input buffer. */
struct request {
    struct runtime *rt; /* reference held from head to audit record */
    uint64_t t0_ns;
    int64_t ts_ms;
    char request_id[PROXY_REQUEST_ID_MAX + 1];
    char traceparent[56];
    bool has_trace;
    enum http1_method method;
    int version; /* 10 or 11 */
    bool keep_alive;
    bool routed; /* reached step 2: gets an audit record */
    bool would_deny;
    enum reason deny_reason; /* the dry_run deny that was let through */
    /* copies (in the connection's arena) */
    const char *path;
    size_t path_len;
    const char *query;
    size_t query_len;
    const char *user_agent;
    size_t ua_len;
    struct audit_header hdrs[AUDIT_MAX_RECORD_HEADERS];
    size_t n_hdrs;
    /* stages */
    const struct policy *policy;
    const struct runtime_step *step;
    bool token_present;
    bool authn_ok; /* the token passed authentication */
    bool have_ar;
    struct authn_result ar;
    bool have_idt;
    struct identity_token idt;
    struct audit_reservation rsv;
    bool reserved;
    bool forwarded;
    /* outcome */
    int upstream_status;
    uint64_t upstream_ns;
    uint64_t bytes_in, bytes_out;
};

struct conn {
    struct worker *w;
    struct conn *prev, *next;
    struct bufferevent *bev;
    struct event timer;
    enum conn_state state;
    bool processing; /* inside conn_process: frees are deferred */
    bool head_started;
    uint64_t head_start_ns;
    size_t parse_prev;
    bool lingering;
    bool free_pending; /* conn_free was asked while processing */
    char peer_ip[INET6_ADDRSTRLEN];
    char peer[INET6_ADDRSTRLEN + 8];
    struct sockaddr_storage peer_sa;
    char *arena;
    size_t arena_cap;
    struct proxy_exchange *ex;
    struct authn_hint token_hint; /* the cache entry this connection's last token hit */
    struct request req;
};

/* A durable-record notice from the audit writer thread (fsync "always"). */
struct durable_note {
    struct worker *w;
    struct conn *c;
    bool strict; /* on_failure "deny": an unrecorded response is never delivered */
    int ok;
    struct durable_note *next;
};

struct worker {
    unsigned id;
    pthread_t thread;
    struct event_base *base;
    evutil_socket_t listen_fd;
    struct evconnlistener *listener;
    struct proxy *proxy;
    struct metrics_worker *mw;
    struct conn *conns;
    size_t n_conns;
    struct runtime *rt;
    uint64_t rt_gen;
    struct event *ctl;
    int wake_fd; /* eventfd: the worker's base has no locks, so other threads
                    wake it through the kernel, never through event_active */
    _Atomic int cmd;
    pthread_mutex_t q_lock;
    struct durable_note *q_head, *q_tail;
    bool draining;
    uint64_t rng[2];
    uint64_t log_window_ns; /* per-second budget of per-request warning lines */
    unsigned log_in_window;
    uint64_t log_suppressed;
    unsigned timer_ms[3];           /* cached common timeouts: idle, header, linger */
    const struct timeval *timer_tv[3];
};

static struct server {
    const char *config_path;
    struct event_base *bg;
    struct http_client *http;
    struct audit_log *audit;
    /* what the log was opened with (strings owned): a reload does not reopen the
     * log elsewhere or change its mode */
    struct {
        enum cfg_fsync fsync;
        enum cfg_on_failure on_failure;
        char *path, *signing_key;
    } audit_cfg;
    struct identity *identity;
    SSL_CTX *tls;
    struct admin *admin;
    struct worker *workers;
    unsigned n_workers;
    _Atomic long n_conns;
    _Atomic int workers_running;
    _Atomic bool stopping;
    struct event *worker_exit_ev;
    struct event *drain_timer;
    struct event *hard_timer;
    struct event *sig_ev[4];
    int listen_port;
    const char *trace_project; /* $GOOGLE_CLOUD_PROJECT, for trace links */
} g;

static void conn_process(struct conn *c);
static void conn_next(struct conn *c, bool reusable);
static void conn_close(struct conn *c);
static void conn_free(struct conn *c);
static void on_read(struct bufferevent *bev, void *arg);
static void on_write(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);

/* ------------------------------------------------------------- helpers */

static uint64_t rng_next(uint64_t s[2])
{
    uint64_t s1 = s[0];
    const uint64_t s0 = s[1];
    s[0] = s0;
    s1 ^= s1 << 23;
    s[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
    return s[1] + s0;
}

static void new_request_id(struct worker *w, char out[PROXY_REQUEST_ID_MAX + 1])
{
    static const char hex[] = "0123456789abcdef";
    uint64_t a = rng_next(w->rng), b = rng_next(w->rng);
    for (int i = 0; i < 16; i++) {
        out[i] = hex[(a >> (i * 4)) & 15];
        out[16 + i] = hex[(b >> (i * 4)) & 15];
    }
    out[32] = '\0';
}

static bool name_is(const char *name, size_t len, const char *lit)
{
    size_t n = strlen(lit); /* a literal: folded; lengths first, the bytes when equal */
    return len == n && ascii_casecmp_n(name, len, lit, n) == 0;
}

/*
 * Per-request log lines (guard refusals, upstream failures) are capped per
 * worker at LOG_LINES_PER_S: a flood of bad requests or a dead upstream
 * under load must not turn into a flood of log writes. The count of lines
 * left out is logged when the next window opens.
 */
#define LOG_LINES_PER_S 20
static bool log_budget(struct worker *w)
{
    uint64_t now = mono_ns();
    if (now - w->log_window_ns >= 1000000000ull) {
        if (w->log_suppressed)
            log_msg(LOG_WARNING, "worker %u: %llu similar log lines suppressed", w->id,
                    (unsigned long long)w->log_suppressed);
        w->log_window_ns = now;
        w->log_in_window = 0;
        w->log_suppressed = 0;
    }
    if (w->log_in_window >= LOG_LINES_PER_S) {
        w->log_suppressed++;
        return false;
    }
    w->log_in_window++;
    return true;
}

static struct runtime *worker_rt(struct worker *w)
{
    uint64_t gen = runtime_generation();
    if (gen != w->rt_gen || !w->rt) {
        runtime_unref(w->rt);
        w->rt = runtime_current();
        w->rt_gen = w->rt ? w->rt->generation : 0;
    }
    return w->rt;
}

static void arm_timer(struct conn *c, int which, unsigned ms)
{
    struct worker *w = c->w;
    if (w->timer_ms[which] != ms || !w->timer_tv[which]) {
        struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
        w->timer_tv[which] = event_base_init_common_timeout(w->base, &tv);
        w->timer_ms[which] = ms;
    }
    evtimer_add(&c->timer, w->timer_tv[which]);
}

static const char *status_text(int status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
    }
}

/* The generic error word of a status: the body says what class of failure,
 * never the precise reason (that is the audit record's). */
static const char *status_word(int status)
{
    switch (status) {
    case 400: return "bad_request";
    case 401: return "unauthorized";
    case 403: return "forbidden";
    case 404: return "not_found";
    case 408: return "request_timeout";
    case 413: return "content_too_large";
    case 414: return "uri_too_long";
    case 429: return "too_many_requests";
    case 431: return "headers_too_large";
    case 501: return "not_implemented";
    case 502: return "bad_gateway";
    case 503: return "unavailable";
    case 504: return "gateway_timeout";
    case 505: return "version_not_supported";
    default: return "internal_error";
    }
}

/*
 * Queues an error response for `reason` (status from reason_status only).
 * `extra` is one more header line without CRLF, or NULL.
 */
static void send_error(struct conn *c, enum reason reason, const char *extra, bool close)
{
    struct evbuffer *out = proxy_out(c->bev);
    int status = reason_status(reason);
    char body[256];
    int n = snprintf(body, sizeof(body), "{\"error\":\"%s\",\"request_id\":\"%s\"}\n",
                     status_word(status), c->req.request_id);

    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                        "Content-Length: %d\r\nX-Request-Id: %s\r\nCache-Control: no-store\r\n"
                        "%s%s%s\r\n",
                        status, status_text(status), n, c->req.request_id, extra ? extra : "",
                        extra ? "\r\n" : "",
                        close ? "Connection: close\r\n"
                              : c->req.version == 10 ? "Connection: keep-alive\r\n" : "");
    evbuffer_add(out, body, (size_t)n);
}

static void request_release(struct request *r)
{
    if (r->have_ar)
        authn_result_release(&r->ar);
    if (r->have_idt)
        identity_token_release(&r->idt);
    runtime_unref(r->rt);
    memset(r, 0, sizeof(*r));
}

static void access_log(struct conn *c, enum reason reason, enum decision d, int status,
                       uint64_t total_ns)
{
    struct request *r = &c->req;
    char path[1024], ua[600], fields[3072], trace[160] = "";
    size_t pl = r->path_len < 400 ? r->path_len : 400;

    json_escape(path, sizeof(path), r->path ? r->path : "", r->path ? pl : 0);
    json_escape(ua, sizeof(ua), r->user_agent ? r->user_agent : "", r->ua_len);
    if (r->has_trace) {
        char id[33];
        memcpy(id, r->traceparent + 3, 32);
        id[32] = '\0';
        if (g.trace_project)
            snprintf(trace, sizeof(trace), ",\"logging.googleapis.com/trace\":\"projects/%s/traces/%s\"",
                     g.trace_project, id);
        else
            snprintf(trace, sizeof(trace), ",\"logging.googleapis.com/trace\":\"%s\"", id);
    }
    snprintf(fields, sizeof(fields),
             "\"httpRequest\":{\"requestMethod\":\"%s\",\"requestUrl\":\"%s\",\"status\":%d,"
             "\"userAgent\":\"%s\",\"remoteIp\":\"%s\",\"latency\":\"%.6fs\","
             "\"responseSize\":\"%llu\",\"protocol\":\"HTTP/1.1\"},"
             "\"request_id\":\"%s\",\"step\":\"%s\",\"decision\":\"%s\",\"reason\":\"%s\"%s",
             http1_method_name(r->method), path, status, ua, c->peer_ip, (double)total_ns / 1e9,
             (unsigned long long)r->bytes_out, r->request_id,
             r->policy ? policy_step(r->policy) : "", decision_name(d), reason_code(reason), trace);
    log_msg_fields(LOG_INFO, fields, "%s %.*s %d", http1_method_name(r->method), (int)pl,
                   r->path ? r->path : "", status);
}

static void durable_cb(void *arg, int ok);

/*
 * The end of every request after the guard: one audit record (when routed),
 * metrics, the access log line, then the connection goes on or closes.
 */
static void finish(struct conn *c, enum reason reason, enum decision d, int status, bool reusable)
{
    struct worker *w = c->w;
    struct request *r = &c->req;
    uint64_t total = mono_ns() - r->t0_ns;
    bool always = false, held = false;

    if (r->routed && r->rt) {
        struct audit_record rec;
        const struct cfg_upstream *up = r->step ? r->step->target->up : NULL;
        memset(&rec, 0, sizeof(rec));
        rec.ts_ms = r->ts_ms;
        rec.request_id = r->request_id;
        rec.decision = d;
        rec.reason = reason;
        rec.status = status;
        rec.worker = (int)w->id;
        if (r->policy) {
            rec.step = policy_step(r->policy);
            rec.dry_run = policy_dry_run(r->policy);
            rec.policy_file = policy_file(r->policy);
            rec.policy_sha256 = policy_hash_hex(r->policy);
        }
        if (r->token_present && r->have_ar) {
            rec.caller.verified = r->authn_ok;
            rec.caller.iss = r->ar.issuer ? r->ar.issuer->issuer : NULL;
            rec.caller.sub = r->ar.sub;
            rec.caller.audience = r->ar.audience;
            rec.caller.jti = r->ar.jti;
            rec.caller.aws_account = r->ar.aws_account;
            rec.caller.token_sha256 = r->ar.fingerprint[0] ? r->ar.fingerprint : NULL;
        }
        rec.request.method = http1_method_name(r->method);
        rec.request.method_len = strlen(rec.request.method);
        rec.request.path = r->path;
        rec.request.path_len = r->path_len;
        rec.request.query = r->query;
        rec.request.query_len = r->query_len;
        rec.request.client = c->peer;
        rec.request.user_agent = r->user_agent;
        rec.request.user_agent_len = r->ua_len;
        rec.request.bytes_in = r->bytes_in;
        rec.request.headers = r->hdrs;
        rec.request.n_headers = r->n_hdrs;
        if (r->forwarded && up) {
            rec.upstream.name = up->name;
            rec.upstream.status = r->upstream_status;
            rec.upstream.latency_ms = (int64_t)(r->upstream_ns / 1000000);
            rec.upstream.bytes = r->bytes_out;
            rec.upstream.identity = r->have_idt ? r->idt.identity : "none";
            rec.upstream.audience = r->have_idt ? r->idt.audience : NULL;
        } else {
            rec.upstream.latency_ms = -1;
        }
        rec.bytes_out = r->bytes_out;
        rec.duration_ms = (int64_t)(total / 1000000);
        always = g.audit_cfg.fsync == FSYNC_ALWAYS;
        if (always) {
            struct durable_note *note = xcalloc(1, sizeof(*note));
            note->c = c;
            note->w = w;
            note->strict = g.audit_cfg.on_failure == ON_FAILURE_DENY;
            if (audit_submit(g.audit, r->reserved ? &r->rsv : NULL, &rec, durable_cb, note) == 0) {
                held = true;
            } else {
                if (note->strict) {
                    /* Not recordable: the response is never delivered. */
                    evbuffer_drain(bufferevent_get_output(c->bev),
                                   evbuffer_get_length(bufferevent_get_output(c->bev)));
                    reusable = false;
                }
                free(note);
            }
        } else {
            audit_submit(g.audit, r->reserved ? &r->rsv : NULL, &rec, NULL, NULL);
        }
        r->reserved = false;
    } else if (r->reserved) {
        audit_release(g.audit, &r->rsv);
        r->reserved = false;
    }
    metrics_request(w->mw, r->policy ? policy_step(r->policy) : NULL, d, status, total,
                    r->upstream_ns);
    if (r->rt && r->rt->cfg->access_log)
        access_log(c, reason, d, status, total);
    {
        bool keep = reusable && r->keep_alive;
        request_release(r);
        r->keep_alive = keep;
    }
    if (held) {
        /* fsync "always": the response (or its tail) stays queued until the
         * writer says the record is durable. */
        c->state = CS_WAIT_DURABLE;
        bufferevent_disable(c->bev, EV_READ | EV_WRITE);
        bufferevent_setcb(c->bev, NULL, NULL, NULL, c);
        return;
    }
    conn_next(c, c->req.keep_alive);
}

/* Any thread -> worker: makes worker_ctl run on the worker's thread. */
static void worker_wake(struct worker *w)
{
    uint64_t one = 1;
    (void)!write(w->wake_fd, &one, sizeof(one));
}

/* Writer thread -> worker: queue the notice and wake the worker's loop. */
static void durable_cb(void *arg, int ok)
{
    struct durable_note *note = arg;
    struct worker *w = note->w; /* never note->c: it belongs to the worker's thread */
    note->ok = ok;
    pthread_mutex_lock(&w->q_lock);
    if (w->q_tail)
        w->q_tail->next = note;
    else
        w->q_head = note;
    w->q_tail = note;
    pthread_mutex_unlock(&w->q_lock);
    worker_wake(w);
}

static void durable_arrived(struct conn *c, int ok, bool strict)
{
    if (c->state != CS_WAIT_DURABLE)
        return;
    if (!ok && strict) {
        evbuffer_drain(bufferevent_get_output(c->bev),
                       evbuffer_get_length(bufferevent_get_output(c->bev)));
        c->state = CS_BUSY;
        conn_free(c);
        return;
    }
    bufferevent_enable(c->bev, EV_WRITE);
    c->state = CS_BUSY;
    conn_next(c, c->req.keep_alive);
}

/* ------------------------------------------------------------- pipeline */

/* A refusal before routing: a log line, no audit record, and close. */
static void guard_reject(struct conn *c, enum reason reason, const char *detail)
{
    struct request *r = &c->req;
    int status = reason_status(reason);
    char esc[256], fields[512];

    if (!r->request_id[0])
        new_request_id(c->w, r->request_id);
    if (log_budget(c->w)) {
        json_escape(esc, sizeof(esc), detail ? detail : "", detail ? strlen(detail) : 0);
        snprintf(fields, sizeof(fields),
                 "\"reason\":\"%s\",\"status\":%d,\"remote_ip\":\"%s\",\"request_id\":\"%s\",\"detail\":\"%s\"",
                 reason_code(reason), status, c->peer_ip, r->request_id, esc);
        log_msg_fields(LOG_INFO, fields, "request refused by the guard: %s", reason_code(reason));
    }
    send_error(c, reason, NULL, true);
    metrics_request(c->w->mw, NULL, DECISION_DENY, status,
                    c->head_started ? mono_ns() - c->head_start_ns : 0, 0);
    request_release(r);
    conn_close(c);
}

/* A refusal after routing started: error response and the audit record.
 * `close`: the body was not read, so the connection cannot go on. */
static void deny(struct conn *c, enum reason reason, enum decision d, const char *extra,
                 bool close)
{
    close = close || !c->req.keep_alive;
    send_error(c, reason, extra, close);
    finish(c, reason, d, reason_status(reason), !close);
}

/* Drops a refused request's head, and its body when it is already complete
 * in the buffer (else the connection closes after the response). */
static void skip_body(struct evbuffer *in, const struct http1_request *hreq, size_t head_len,
                      bool body_pending)
{
    if (body_pending)
        return;
    evbuffer_drain(in, head_len + (hreq->body == HTTP1_BODY_LENGTH ? hreq->content_length : 0));
}

static int header_lookup(void *ctx, const char *name, const char **value, size_t *len)
{
    const struct http1_request *req = ctx;
    size_t nlen = strlen(name);
    int n = 0;
    for (unsigned i = 0; i < req->n_headers; i++) {
        const struct http1_header *h = &req->headers[i];
        if (h->name_len == nlen && ascii_casecmp_n(h->name, nlen, name, nlen) == 0) {
            if (n == 0) {
                *value = h->value;
                *len = h->value_len;
            }
            n++;
        }
    }
    return n;
}

static void arena_reserve(struct conn *c, size_t need)
{
    if (need <= c->arena_cap)
        return;
    free(c->arena);
    c->arena_cap = need < 256 ? 256 : need;
    c->arena = xmalloc(c->arena_cap);
}

/* Copies what the audit record and log need before the head leaves the buffer. */
static void copy_request_fields(struct conn *c, const struct http1_request *hreq,
                                const char *path, size_t path_len, const char *query,
                                size_t query_len, const struct baton_config *cfg)
{
    struct request *r = &c->req;
    size_t need = path_len + query_len + 1, off = 0;
    const struct http1_header *ua = NULL;

    for (unsigned i = 0; i < hreq->n_headers; i++) {
        const struct http1_header *h = &hreq->headers[i];
        if (!ua && name_is(h->name, h->name_len, "user-agent")) {
            ua = h;
            need += h->value_len < UA_MAX ? h->value_len : UA_MAX;
        }
        for (size_t k = 0; k < cfg->audit.n_record_headers; k++)
            if (name_is(h->name, h->name_len, cfg->audit.record_headers[k]))
                need += h->value_len < AUDIT_HEADER_VALUE_MAX ? h->value_len
                                                              : AUDIT_HEADER_VALUE_MAX;
    }
    arena_reserve(c, need);

    memcpy(c->arena, path, path_len);
    r->path = c->arena;
    r->path_len = path_len;
    off = path_len;
    if (query) {
        memcpy(c->arena + off, query, query_len);
        r->query = c->arena + off;
        r->query_len = query_len;
        off += query_len;
    }
    if (ua) {
        size_t n = ua->value_len < UA_MAX ? ua->value_len : UA_MAX;
        memcpy(c->arena + off, ua->value, n);
        r->user_agent = c->arena + off;
        r->ua_len = n;
        off += n;
    }
    r->n_hdrs = 0;
    for (size_t k = 0; k < cfg->audit.n_record_headers; k++) {
        const char *want = cfg->audit.record_headers[k];
        int copies = 0;
        for (unsigned i = 0; i < hreq->n_headers && r->n_hdrs < AUDIT_MAX_RECORD_HEADERS; i++) {
            const struct http1_header *h = &hreq->headers[i];
            size_t n;
            if (!name_is(h->name, h->name_len, want) || copies == 2) /* two show a duplicate */
                continue;
            n = h->value_len < AUDIT_HEADER_VALUE_MAX ? h->value_len : AUDIT_HEADER_VALUE_MAX;
            memcpy(c->arena + off, h->value, n);
            r->hdrs[r->n_hdrs].name = want;
            r->hdrs[r->n_hdrs].value = c->arena + off;
            r->hdrs[r->n_hdrs].value_len = n;
            r->n_hdrs++;
            off += n;
            copies++;
        }
    }
}

/* The bearer credential of the Authorization header: 1 found, 0 absent or
 * another scheme, -1 "Bearer" with nothing usable after it. */
static int bearer_token(const struct http1_request *hreq, const char **tok, size_t *len)
{
    const struct http1_header *h;
    size_t i = 6;

    if (hreq->authorization < 0)
        return 0;
    h = &hreq->headers[hreq->authorization];
    if (h->value_len < 6 || ascii_casecmp_n(h->value, 6, "bearer", 6) != 0)
        return 0;
    if (h->value_len == 6)
        return -1;
    if (h->value[6] != ' ')
        return 0;
    while (i < h->value_len && h->value[i] == ' ')
        i++;
    if (i == h->value_len)
        return -1;
    *tok = h->value + i;
    *len = h->value_len - i;
    return 1;
}

static void on_proxy_done(void *arg, const struct proxy_outcome *o);

/* GET or HEAD of the assertion key set (a query is ignored). */
#define ASSERTION_JWKS_PATH "/.well-known/baton/jwks.json"
static bool is_assertion_jwks(const struct http1_request *hreq)
{
    size_t n = sizeof(ASSERTION_JWKS_PATH) - 1;
    return (hreq->method == HTTP1_METHOD_GET || hreq->method == HTTP1_METHOD_HEAD) &&
           hreq->origin_len >= n && !memcmp(hreq->origin, ASSERTION_JWKS_PATH, n) &&
           (hreq->origin_len == n || hreq->origin[n] == '?');
}

/*
 * Serves the assertion JWKS on the serving port, so an application behind a
 * gateway can fetch it where it already sends requests. It is public key
 * material, before routing: no token, no policy, no audit record (like the
 * admin listener's endpoints). Cacheable for ASSERTION_JWKS_MAX_AGE_S.
 */
static void serve_assertion_jwks(struct conn *c, const struct runtime *rt,
                                 const struct http1_request *hreq, size_t head_len, bool body_pending)
{
    struct request *r = &c->req;
    struct evbuffer *out = proxy_out(c->bev);
    bool close = body_pending || !r->keep_alive;
    size_t n;
    const char *doc = assertion_signer_jwks(rt->assertion, &n);

    evbuffer_add_printf(out,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/jwk-set+json\r\n"
                        "Content-Length: %zu\r\nCache-Control: public, max-age=%d\r\n"
                        "X-Request-Id: %s\r\n%s\r\n",
                        n, ASSERTION_JWKS_MAX_AGE_S, r->request_id,
                        close ? "Connection: close\r\n"
                              : r->version == 10 ? "Connection: keep-alive\r\n" : "");
    if (hreq->method != HTTP1_METHOD_HEAD)
        evbuffer_add(out, doc, n);
    skip_body(bufferevent_get_input(c->bev), hreq, head_len, body_pending);
    request_release(r);
    r->keep_alive = !close;
    conn_next(c, !close);
}

/*
 * The caller assertion's header line for this request (assertion.h): the
 * step's require_headers that matched, the verified caller, from the
 * worker's cache. NULL when signing failed (err set).
 */
static const char *assertion_line(struct worker *w, const struct runtime *rt, const struct request *r,
                                  const struct http1_request *hreq, size_t *len, char *err, size_t errlen)
{
    const char *names[ASSERTION_MAX_HEADERS], *vals[ASSERTION_MAX_HEADERS];
    size_t lens[ASSERTION_MAX_HEADERS], nh = 0;
    const struct policy_input hin = {.header = header_lookup, .header_ctx = (void *)hreq};
    const struct cfg_upstream *up = r->step->target->up;

    for (size_t i = 0; i < policy_header_count(r->policy) && nh < ASSERTION_MAX_HEADERS; i++) {
        const char *name = policy_header_name(r->policy, i);
        /* authorized: every require_headers entry matched (once, its glob);
         * a dry-run pass-through (would_deny) carries only those that did */
        if (r->would_deny ? policy_header_matched(r->policy, i, &hin, &vals[nh], &lens[nh])
                          : header_lookup((void *)hreq, name, &vals[nh], &lens[nh]) == 1)
            names[nh++] = name;
    }
    {
        struct assertion_input in = {
            .cfg = &rt->cfg->assertion,
            .audience = up->audience,
            .caller = &r->ar,
            .cognito = r->ar.issuer && !strcmp(r->ar.issuer->audience_claim, "client_id"),
            .step = policy_step(r->policy),
            .policy_file = policy_file(r->policy),
            .policy_sha256 = policy_hash_hex(r->policy),
            .dry_run = policy_dry_run(r->policy),
            .header_names = names,
            .header_values = vals,
            .header_lens = lens,
            .n_headers = nh,
            .audit_log = g.audit ? audit_log_id(g.audit) : NULL,
            .now_s = r->ts_ms / 1000,
        };
        return assertion_cache_line(rt->assertion_caches[w->id % rt->n_workers], rt->assertion, &in, len,
                                    err, errlen);
    }
}

/*
 * Decodes the chunked body bytes already buffered behind the head with a
 * scratch decoder, so that a framing error present in the first packet (the
 * smuggling shapes: `0x5`, `5 junk`, extensions, trailers) is refused before
 * anything reaches the upstream. An error in bytes that arrive later is
 * caught while streaming: the upstream connection is then aborted mid-body.
 */
static enum reason prescan_chunked(struct evbuffer *in, size_t head_len, uint64_t max_body)
{
    struct http1_chunked ck;
    struct evbuffer_ptr pos;
    struct evbuffer_iovec v[8];
    int nv;

    http1_chunked_init(&ck, max_body);
    if (evbuffer_ptr_set(in, &pos, head_len, EVBUFFER_PTR_SET) < 0)
        return REASON_ALLOWED;
    nv = evbuffer_peek(in, -1, &pos, v, 8);
    if (nv > 8)
        nv = 8;
    for (int i = 0; i < nv; i++) {
        const char *p = v[i].iov_base;
        size_t left = v[i].iov_len;
        while (left > 0) {
            const char *data;
            size_t used = 0, dlen;
            int rc = http1_chunked_feed(&ck, p, left, &used, &data, &dlen);
            if (rc == HTTP1_ERROR)
                return ck.error;
            if (rc == HTTP1_DONE || used == 0)
                return REASON_ALLOWED;
            p += used;
            left -= used;
        }
    }
    return REASON_ALLOWED;
}

/* Runs stages 2..6 for one parsed head. The head's bytes are still at the
 * front of the input; every exit drains or closes. */
static void handle_request(struct conn *c, const struct http1_request *hreq, size_t head_len)
{
    struct worker *w = c->w;
    struct request *r = &c->req;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    struct runtime *rt;
    const struct baton_config *cfg;
    struct path_result pr;
    enum reason why;
    const char *tok = NULL;
    size_t tok_len = 0;
    int have_tok;
    uint64_t max_body;
    bool body_pending;
    const struct cfg_upstream *up;
    struct evbuffer *head = NULL;
    unsigned timeout_ms;
    const char *a_line = NULL; /* the caller assertion line, borrowed from the worker's cache */
    size_t a_len = 0;

    memset(r, 0, sizeof(*r));
    r->t0_ns = c->head_start_ns;
    r->ts_ms = now_ms();
    rt = worker_rt(w);
    r->rt = runtime_ref(rt);
    cfg = rt->cfg;
    r->method = hreq->method;
    r->version = hreq->version;
    r->keep_alive = hreq->keep_alive && !w->draining;
    if (!proxy_client_request_id(hreq, r->request_id, sizeof(r->request_id)))
        new_request_id(w, r->request_id);
    r->has_trace = proxy_traceparent(hreq, r->traceparent);

    /* The body, if any, is not read on a refusal: only a complete one
     * already in the buffer can be skipped to keep the connection. */
    body_pending = hreq->body == HTTP1_BODY_CHUNKED ||
                   (hreq->body == HTTP1_BODY_LENGTH && hreq->content_length > 0 &&
                    evbuffer_get_length(in) - head_len < hreq->content_length);
    if (rt->assertion && is_assertion_jwks(hreq)) {
        serve_assertion_jwks(c, rt, hreq, head_len, body_pending);
        return;
    }

    if (hreq->body == HTTP1_BODY_LENGTH && hreq->content_length > cfg->limits.max_body_bytes) {
        guard_reject(c, REASON_BODY_TOO_LARGE, "Content-Length over limits.max_body_bytes");
        return;
    }

    why = path_canonicalize(hreq->origin, hreq->origin_len, cfg->limits.max_uri_bytes, &pr);
    if (why == REASON_ALLOWED)
        copy_request_fields(c, hreq, pr.path, pr.path_len, pr.query, pr.query_len, cfg);
    else
        copy_request_fields(c, hreq, hreq->origin, hreq->origin_len, NULL, 0, cfg);
    r->routed = true;
    if (why != REASON_ALLOWED)
        goto refuse;

    r->policy = policy_route(rt->policies, hreq->hostname, hreq->hostname ? hreq->hostname_len : 0,
                             pr.path, pr.path_len);
    if (!r->policy) {
        why = REASON_NO_ROUTE;
        goto refuse;
    }
    r->step = runtime_step(rt, r->policy);
    up = r->step->target->up;

    have_tok = bearer_token(hreq, &tok, &tok_len);
    if (have_tok <= 0) {
        r->token_present = have_tok < 0;
        why = have_tok < 0 ? REASON_TOKEN_MALFORMED : REASON_TOKEN_MISSING;
        goto refuse;
    }
    r->token_present = true;
    r->have_ar = true;
    why = authn_verify(rt->authn, rt->caches[w->id % rt->n_workers], &c->token_hint, tok, tok_len,
                       r->ts_ms / 1000, &r->ar);
    metrics_token_cache(w->mw, r->ar.cache_hit);
    if (why != REASON_ALLOWED)
        goto refuse;
    r->authn_ok = true;

    {
        struct policy_input pin = {
            .method = http1_method_name(hreq->method),
            .path = pr.path,
            .path_len = pr.path_len,
            .issuer_name = r->ar.issuer->name,
            .claims = r->ar.claims,
            .header = header_lookup,
            .header_ctx = (void *)hreq,
        };
        why = policy_authorize(r->policy, &pin, NULL);
    }
    if (why != REASON_ALLOWED) {
        if (!policy_dry_run(r->policy))
            goto refuse;
        r->would_deny = true;
        r->deny_reason = why;
    }
    if (r->step->bucket) {
        unsigned retry = 1;
        if (!runtime_rate_take(r->step->bucket, mono_ns(), &retry)) {
            if (!policy_dry_run(r->policy)) {
                char extra[48];
                snprintf(extra, sizeof(extra), "Retry-After: %u", retry);
                skip_body(in, hreq, head_len, body_pending);
                deny(c, REASON_RATE_LIMITED, DECISION_DENY, extra, body_pending);
                return;
            }
            if (!r->would_deny) {
                r->would_deny = true;
                r->deny_reason = REASON_RATE_LIMITED;
            }
        }
    }

    max_body = cfg->limits.max_body_bytes;
    if (policy_limits(r->policy)->max_body_bytes &&
        policy_limits(r->policy)->max_body_bytes < max_body)
        max_body = policy_limits(r->policy)->max_body_bytes;
    if ((hreq->body == HTTP1_BODY_LENGTH && hreq->content_length > max_body) ||
        (hreq->body == HTTP1_BODY_CHUNKED && max_body == 0)) {
        why = REASON_BODY_TOO_LARGE;
        goto refuse;
    }
    if (hreq->body == HTTP1_BODY_CHUNKED) {
        why = prescan_chunked(in, head_len, max_body);
        if (why != REASON_ALLOWED)
            goto refuse;
    }

    if (up->identity == IDENTITY_GOOGLE) {
        if (!g.identity) {
            why = REASON_IDENTITY_UNAVAILABLE;
        } else {
            why = identity_get(g.identity, policy_service_account(r->policy), up->audience,
                               &r->idt);
            r->have_idt = why == REASON_ALLOWED;
        }
        if (why != REASON_ALLOWED)
            goto error;
    }

    if (rt->assertion && up->caller_assertion) {
        char aerr[256];
        a_line = assertion_line(w, rt, r, hreq, &a_len, aerr, sizeof(aerr));
        if (!a_line) {
            /* ours, not the caller's: retryable, and nothing is forwarded */
            if (log_budget(w)) {
                char fields[256];
                snprintf(fields, sizeof(fields), "\"reason\":\"%s\",\"request_id\":\"%s\"",
                         reason_code(REASON_ASSERTION_UNAVAILABLE), r->request_id);
                log_msg_fields(LOG_ERROR, fields, "caller assertion not signed: %s", aerr);
            }
            skip_body(in, hreq, head_len, body_pending);
            deny(c, REASON_ASSERTION_UNAVAILABLE, DECISION_ERROR, "Retry-After: 1", body_pending);
            return;
        }
    }

    if (audit_reserve(g.audit, &r->rsv) < 0) {
        why = REASON_AUDIT_UNAVAILABLE;
        goto error;
    }
    r->reserved = true;

    head = proxy_head_buffer(w->proxy);
    {
        struct proxy_head_params hp = {
            .req = hreq,
            .path = pr.path,
            .path_len = pr.path_len,
            .query = pr.query,
            .query_len = pr.query_len,
            .up = up,
            .from_trusted_proxy = cfg->n_trusted_proxies &&
                                  config_is_trusted_proxy(cfg, (struct sockaddr *)&c->peer_sa),
            .client_ip = c->peer_ip,
            .request_id = r->request_id,
            .traceparent = r->has_trace ? r->traceparent : NULL,
            .token_value = r->have_idt ? r->idt.header_value : NULL,
            .body = hreq->body,
            .content_length = hreq->content_length,
            .assertion_name = cfg->assertion.enabled ? cfg->assertion.header : NULL,
            .assertion_line = a_line,
            .assertion_line_len = a_len,
        };
        proxy_build_head(&hp, head);
    }
    timeout_ms = policy_limits(r->policy)->timeout_ms ? policy_limits(r->policy)->timeout_ms
                                                      : up->timeout_ms;
    {
        struct proxy_forward_params fp = {
            .target = r->step->target,
            .client = c->bev,
            .head = head,
            .method = hreq->method,
            .body = hreq->body,
            .content_length = hreq->content_length,
            .max_body = max_body,
            .timeout_ms = timeout_ms,
            .expect_100 = hreq->expect_100,
            .client_keep_alive = r->keep_alive,
            .client_version = hreq->version,
            .request_id = r->request_id,
        };
        evbuffer_drain(in, head_len); /* hreq's slices die here */
        r->forwarded = true;
        c->state = CS_BUSY;
        evtimer_del(&c->timer);
        c->ex = proxy_forward(w->proxy, &fp, on_proxy_done, c);
    }
    return;

refuse: {
        const char *extra = NULL;
        int status = reason_status(why);
        if (status == 401)
            extra = why == REASON_TOKEN_MISSING ? "WWW-Authenticate: Bearer"
                                                : "WWW-Authenticate: Bearer error=\"invalid_token\"";
        skip_body(in, hreq, head_len, body_pending);
        deny(c, why, DECISION_DENY, extra, body_pending || why == REASON_BODY_TOO_LARGE);
        return;
    }
error:
    skip_body(in, hreq, head_len, body_pending);
    deny(c, why, DECISION_ERROR, NULL, body_pending);
}

static void on_proxy_done(void *arg, const struct proxy_outcome *o)
{
    struct conn *c = arg;
    struct request *r = &c->req;
    enum reason why = o->reason;
    enum decision d;
    int status;

    c->ex = NULL;
    r->upstream_status = o->upstream_status;
    r->upstream_ns = o->upstream_ns;
    r->bytes_in = o->request_bytes;
    r->bytes_out = o->response_bytes;
    if (why == REASON_ALLOWED) {
        d = r->would_deny ? DECISION_WOULD_DENY : DECISION_ALLOW;
        finish(c, r->would_deny ? r->deny_reason : REASON_ALLOWED, d, o->upstream_status,
               o->client_reusable);
        return;
    }
    d = (why == REASON_BODY_TOO_LARGE || why == REASON_BAD_FRAMING) ? DECISION_DENY
                                                                    : DECISION_ERROR;
    if (why != REASON_CLIENT_CLOSED && why != REASON_BODY_TOO_LARGE && why != REASON_BAD_FRAMING &&
        log_budget(c->w)) {
        char fields[256];
        snprintf(fields, sizeof(fields), "\"reason\":\"%s\",\"request_id\":\"%s\",\"upstream\":\"%s\"",
                 reason_code(why), r->request_id, r->step ? r->step->target->up->name : "");
        log_msg_fields(LOG_WARNING, fields, "upstream exchange failed: %s",
                       o->detail ? o->detail : reason_code(why));
    }
    if (!o->response_started && why != REASON_CLIENT_CLOSED && why != REASON_DRAIN_ABORTED) {
        send_error(c, why, NULL, true);
        status = reason_status(why);
    } else {
        status = o->response_started ? o->upstream_status : 0;
    }
    finish(c, why, d, status, false);
}

/* ----------------------------------------------------------- connections */

static void conn_free(struct conn *c)
{
    struct worker *w = c->w;

    if (c->processing) { /* conn_process frees it on its way out */
        c->free_pending = true;
        return;
    }
    if (c->ex) {
        struct proxy_exchange *ex = c->ex;
        c->ex = NULL;
        proxy_abort(ex); /* runs on_proxy_done -> finish -> ... -> conn_next */
    }
    evtimer_del(&c->timer);
    if (c->bev)
        bufferevent_free(c->bev);
    request_release(&c->req);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->n_conns--;
    free(c->arena);
    free(c);
    atomic_fetch_sub(&g.n_conns, 1);
    metrics_conn_open(-1);
    if (w->draining && w->n_conns == 0)
        event_base_loopexit(w->base, NULL);
}

static void linger_read(struct bufferevent *bev, void *arg)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    (void)arg;
    evbuffer_drain(in, evbuffer_get_length(in));
}

static void linger_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    (void)what;
    conn_free(arg);
}

/* Output flushed: half-close and read what the client still sends for a
 * moment, so that our response is not destroyed by a reset (unread input at
 * close makes the kernel send RST). */
static void closing_write(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    (void)bev;
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) > 0 || c->lingering)
        return;
    c->lingering = true;
    shutdown(bufferevent_getfd(c->bev), SHUT_WR);
    bufferevent_setcb(c->bev, linger_read, NULL, linger_event, c);
    bufferevent_enable(c->bev, EV_READ);
    evtimer_del(&c->timer);
    arm_timer(c, 2, LINGER_MS);
}

static void conn_close(struct conn *c)
{
    c->state = CS_CLOSING;
    bufferevent_setcb(c->bev, NULL, closing_write, linger_event, c);
    bufferevent_disable(c->bev, EV_READ);
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    bufferevent_enable(c->bev, EV_WRITE);
    evtimer_del(&c->timer);
    /* A client that never reads its response is dropped after the idle timeout. */
    arm_timer(c, 0, c->w->rt ? c->w->rt->cfg->limits.idle_timeout_ms : 10000);
    if (!c->processing)
        closing_write(c->bev, c);
}

/* After a request: close, or wait for / process the next head. */
static void conn_next(struct conn *c, bool reusable)
{
    struct worker *w = c->w;
    struct evbuffer *in = bufferevent_get_input(c->bev);

    if (!reusable || w->draining) {
        conn_close(c);
        return;
    }
    c->state = CS_HEAD;
    c->head_started = false;
    c->parse_prev = 0;
    if (c->arena_cap > ARENA_KEEP) {
        free(c->arena);
        c->arena = NULL;
        c->arena_cap = 0;
    }
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    bufferevent_set_timeouts(c->bev, NULL, NULL);
    bufferevent_setwatermark(c->bev, EV_WRITE, PROXY_HIGH_WATER / 2, 0);
    bufferevent_setwatermark(c->bev, EV_READ, 0, 0);
    proxy_read_on(c->bev);
    proxy_flush(c->bev); /* the response (or its tail), now */
    evtimer_del(&c->timer);
    if (evbuffer_get_length(in) == 0) {
        arm_timer(c, 0, w->rt ? w->rt->cfg->limits.idle_timeout_ms : 60000);
        return;
    }
    if (!c->processing)
        conn_process(c);
}

/* Parses and handles heads while the connection is waiting for one. */
static void conn_process(struct conn *c)
{
    struct worker *w = c->w;

    if (c->processing)
        return;
    c->processing = true;
    while (c->state == CS_HEAD) {
        struct evbuffer *in = bufferevent_get_input(c->bev);
        struct evbuffer *out = bufferevent_get_output(c->bev);
        struct runtime *rt;
        struct http1_limits lim;
        struct http1_request hreq;
        size_t len = evbuffer_get_length(in), n, head_len = 0;
        const char *buf;
        int rc;

        if (len == 0)
            break;
        if (evbuffer_get_length(out) >= PROXY_HIGH_WATER) {
            /* Responses pile up unread: stop reading heads until they drain. */
            bufferevent_disable(c->bev, EV_READ);
            break;
        }
        rt = worker_rt(w);
        if (!c->head_started) {
            c->head_started = true;
            c->head_start_ns = mono_ns();
            evtimer_del(&c->timer);
            arm_timer(c, 1, rt->cfg->limits.header_timeout_ms);
        }
        memset(&lim, 0, sizeof(lim));
        lim.max_header_bytes = rt->cfg->limits.max_header_bytes;
        lim.max_uri_bytes = rt->cfg->limits.max_uri_bytes;
        n = len < lim.max_header_bytes + 2 ? len : lim.max_header_bytes + 2;
        buf = (const char *)evbuffer_pullup(in, (ssize_t)n);
        if (c->parse_prev && !http1_worth_parsing(buf, n, c->parse_prev, &lim)) {
            c->parse_prev = n;
            break;
        }
        rc = http1_parse_request(buf, n, &lim, &hreq, &head_len);
        if (rc == HTTP1_INCOMPLETE) {
            if (n >= lim.max_header_bytes + 2) {
                guard_reject(c, REASON_HEADERS_TOO_LARGE, "request head over max_header_bytes");
                break;
            }
            c->parse_prev = n;
            break;
        }
        if (rc != HTTP1_OK) {
            guard_reject(c, hreq.error, hreq.detail);
            break;
        }
        evtimer_del(&c->timer);
        c->parse_prev = 0;
        handle_request(c, &hreq, head_len);
    }
    c->processing = false;
    if (c->free_pending)
        conn_free(c);
    else if (c->state == CS_CLOSING)
        closing_write(c->bev, c);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    (void)bev;
    conn_process(arg);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    (void)bev;
    /* Pipelined heads paused while responses were queued: go on. */
    if (c->state == CS_HEAD) {
        bufferevent_enable(c->bev, EV_READ);
        if (evbuffer_get_length(bufferevent_get_input(c->bev)))
            conn_process(c);
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    (void)what;
    conn_free(arg);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    (void)fd;
    (void)what;
    if (c->state == CS_HEAD && c->head_started) {
        /* Slowloris: the head did not complete within header_timeout_ms of
         * its first byte, however the bytes trickled. */
        guard_reject(c, REASON_HEADER_TIMEOUT, "request head not complete before the deadline");
        return;
    }
    conn_free(c);
}

static const char overload_response[] =
    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    "Content-Length: 23\r\nConnection: close\r\n\r\n{\"error\":\"unavailable\"}";

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    struct worker *w = arg;
    struct runtime *rt = worker_rt(w);
    long max = rt ? (long)rt->cfg->limits.max_connections : 10000;
    struct conn *c;
    int one = 1;
    (void)l;

    if (atomic_fetch_add(&g.n_conns, 1) >= max) {
        atomic_fetch_sub(&g.n_conns, 1);
        (void)!send(fd, overload_response, sizeof(overload_response) - 1,
                    MSG_DONTWAIT | MSG_NOSIGNAL);
        close(fd);
        metrics_conn_refused(w->mw);
        return;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c = xcalloc(1, sizeof(*c));
    c->w = w;
    memcpy(&c->peer_sa, sa, (size_t)salen < sizeof(c->peer_sa) ? (size_t)salen : sizeof(c->peer_sa));
    if (sa->sa_family == AF_INET) {
        struct sockaddr_in *in4 = (struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in4->sin_addr, c->peer_ip, sizeof(c->peer_ip));
        snprintf(c->peer, sizeof(c->peer), "%s:%u", c->peer_ip, ntohs(in4->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, c->peer_ip, sizeof(c->peer_ip));
        snprintf(c->peer, sizeof(c->peer), "[%s]:%u", c->peer_ip, ntohs(in6->sin6_port));
    } else {
        snprintf(c->peer_ip, sizeof(c->peer_ip), "unknown");
        snprintf(c->peer, sizeof(c->peer), "unknown");
    }
    c->bev = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!c->bev) {
        close(fd);
        free(c);
        atomic_fetch_sub(&g.n_conns, 1);
        return;
    }
    proxy_plain_reads(c->bev);
    evtimer_assign(&c->timer, w->base, on_timer, c);
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->n_conns++;
    metrics_conn_open(1);
    c->state = CS_HEAD;
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    bufferevent_setwatermark(c->bev, EV_WRITE, PROXY_HIGH_WATER / 2, 0);
    bufferevent_enable(c->bev, EV_READ);
    arm_timer(c, 0, rt ? rt->cfg->limits.idle_timeout_ms : 60000);
}

/* --------------------------------------------------------------- workers */

static void worker_ctl(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    struct durable_note *notes;
    int cmd;
    uint64_t count;
    (void)what;

    (void)!read(fd, &count, sizeof(count));
    cmd = atomic_exchange(&w->cmd, 0);

    pthread_mutex_lock(&w->q_lock);
    notes = w->q_head;
    w->q_head = w->q_tail = NULL;
    pthread_mutex_unlock(&w->q_lock);
    while (notes) {
        struct durable_note *next = notes->next;
        durable_arrived(notes->c, notes->ok, notes->strict);
        free(notes);
        notes = next;
    }

    if ((cmd & CMD_DRAIN) && !w->draining) {
        w->draining = true;
        if (w->listener) {
            evconnlistener_free(w->listener); /* closes the socket: new connections are refused */
            w->listener = NULL;
        }
        proxy_close_idle(w->proxy);
        for (struct conn *c = w->conns, *next; c; c = next) {
            next = c->next;
            if (c->state == CS_HEAD && !c->head_started &&
                evbuffer_get_length(bufferevent_get_input(c->bev)) == 0)
                conn_free(c);
        }
        if (w->n_conns == 0)
            event_base_loopexit(w->base, NULL);
    }
    if (cmd & CMD_ABORT) {
        while (w->conns)
            conn_free(w->conns); /* a running exchange gets its record (drain_aborted) first */
        event_base_loopexit(w->base, NULL);
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    event_base_dispatch(w->base);
    /* Anything left (abort): free it here, on the owning thread. */
    while (w->conns)
        conn_free(w->conns);
    proxy_close_idle(w->proxy);
    runtime_unref(w->rt);
    w->rt = NULL;
    atomic_fetch_sub(&g.workers_running, 1);
    event_active(g.worker_exit_ev, EV_TIMEOUT, 0);
    return NULL;
}

static int open_listener(const struct cfg_addr *addr, int port, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    int fd, one = 1;

    memset(&ss, 0, sizeof(ss));
    if (inet_pton(AF_INET, addr->host, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
        ((struct sockaddr_in *)&ss)->sin_family = AF_INET;
        ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)port);
        sl = sizeof(struct sockaddr_in);
    } else if (inet_pton(AF_INET6, addr->host, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1) {
        ((struct sockaddr_in6 *)&ss)->sin6_family = AF_INET6;
        ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)port);
        sl = sizeof(struct sockaddr_in6);
    } else {
        snprintf(err, errlen, "listen address %s is not an IP address", addr->host);
        return -1;
    }
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 4096) < 0)
        goto fail;
    return fd;
fail:
    snprintf(err, errlen, "cannot listen on %s:%d: %s", addr->host, port, strerror(errno));
    if (fd >= 0)
        close(fd);
    return -1;
}

/* ------------------------------------------------------------ lifecycle */

static bool is_draining(void)
{
    return atomic_load(&g.stopping);
}

static struct identity_pair *identity_pairs(const struct runtime *rt, size_t *n)
{
    size_t count = policy_set_count(rt->policies), k = 0;
    struct identity_pair *pairs = xcalloc(count ? count : 1, sizeof(*pairs));
    for (size_t i = 0; i < count; i++) {
        const struct policy *p = policy_set_at(rt->policies, i);
        const struct cfg_upstream *up = policy_upstream(p);
        if (up->identity != IDENTITY_GOOGLE)
            continue;
        pairs[k].service_account = policy_service_account(p);
        pairs[k].audience = up->audience;
        k++;
    }
    *n = k;
    return pairs;
}

static bool same_str(const char *a, const char *b)
{
    return a == b || (a && b && !strcmp(a, b));
}

static void reload(void)
{
    struct diags d = DIAGS_INIT;
    struct runtime *rt;

    log_msg(LOG_INFO, "SIGHUP: reloading %s", g.config_path);
    rt = runtime_build(g.config_path, &d);
    if (!rt) {
        for (size_t i = 0; i < d.n; i++) {
            char fields[1024], file[512];
            json_escape(file, sizeof(file), d.v[i].file ? d.v[i].file : "",
                        d.v[i].file ? strlen(d.v[i].file) : 0);
            snprintf(fields, sizeof(fields), "\"file\":\"%s\",\"line\":%d,\"column\":%d", file,
                     d.v[i].line, d.v[i].col);
            /* the message is escaped by the logger; only fields come escaped */
            log_msg_fields(LOG_ERROR, fields, "reload refused: %s", d.v[i].msg);
        }
        log_msg(LOG_ERROR, "reload refused (%zu errors): the previous configuration stays in use",
                d.n);
        diags_free(&d);
        return;
    }
    diags_free(&d);
    if (g.identity) {
        size_t n;
        struct identity_pair *pairs = identity_pairs(rt, &n);
        identity_set_pairs(g.identity, pairs, n);
        free(pairs);
    } else if (rt->needs_identity) {
        log_msg(LOG_WARNING, "the reloaded policies forward to identity \"google\" upstreams, "
                             "but no Google identity could be set up at start: they answer 503");
    }
    if (!same_str(rt->cfg->audit.path, g.audit_cfg.path) ||
        !same_str(rt->cfg->audit.signing_key, g.audit_cfg.signing_key) ||
        rt->cfg->audit.fsync != g.audit_cfg.fsync ||
        rt->cfg->audit.on_failure != g.audit_cfg.on_failure)
        log_msg(LOG_WARNING, "reload: the audit section's path, signing_key, fsync and "
                             "on_failure take effect at the next restart; the log keeps "
                             "the ones it was opened with");
    log_msg(LOG_INFO, "configuration generation %llu in use (%zu steps)",
            (unsigned long long)rt->generation, rt->n_steps);
    runtime_publish(rt);
}

static void begin_drain(void)
{
    struct runtime *rt;
    struct timeval tv;
    unsigned ms;

    if (atomic_exchange(&g.stopping, true))
        return;
    rt = runtime_current();
    ms = rt ? rt->cfg->drain_ms : 8000;
    runtime_unref(rt);
    log_msg(LOG_INFO, "draining: no new connections, %u ms for requests in flight", ms);
    for (unsigned i = 0; i < g.n_workers; i++) {
        atomic_fetch_or(&g.workers[i].cmd, CMD_DRAIN);
        worker_wake(&g.workers[i]);
    }
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    evtimer_add(g.drain_timer, &tv);
}

static void on_drain_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct timeval hard = {2, 0};
    (void)fd;
    (void)what;
    (void)arg;
    log_msg(LOG_WARNING, "drain deadline reached: aborting what is still in flight");
    for (unsigned i = 0; i < g.n_workers; i++) {
        atomic_fetch_or(&g.workers[i].cmd, CMD_ABORT);
        worker_wake(&g.workers[i]);
    }
    evtimer_add(g.hard_timer, &hard);
}

static void on_hard_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    event_base_loopexit(g.bg, NULL);
}

static void on_worker_exit(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    if (atomic_load(&g.workers_running) == 0)
        event_base_loopexit(g.bg, NULL);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    (void)arg;
    switch (sig) {
    case SIGHUP:
        if (!atomic_load(&g.stopping)) {
            reload();
            audit_reopen(g.audit);
        }
        break;
    case SIGUSR1:
        log_msg(LOG_INFO, "SIGUSR1: reopening the audit log");
        audit_reopen(g.audit);
        break;
    default:
        begin_drain();
        break;
    }
}

static int parse_args(int argc, char **argv, const char **config_flag)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;

    optind = 1;
    while ((ch = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            *config_flag = optarg;
            break;
        case 'h':
            printf("usage: baton serve [-c FILE]\n");
            return 1;
        default:
            fprintf(stderr, "usage: baton serve [-c FILE]\n");
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "baton serve: unexpected argument \"%s\"\n", argv[optind]);
        return 2;
    }
    return 0;
}

static int env_port(int fallback)
{
    const char *p = getenv("PORT");
    char *end = NULL;
    long v;

    if (!p || !*p)
        return fallback;
    errno = 0;
    v = strtol(p, &end, 10);
    if (errno || *end || v < 1 || v > 65535)
        return -1;
    return (int)v;
}

int cmd_serve(int argc, char **argv)
{
    const char *flag = NULL;
    struct diags d = DIAGS_INIT;
    struct runtime *rt = NULL;
    char err[512];
    int rc = 1, arc, port;
    long nproc;
    sigset_t block, old;
    const int sigs[4] = {SIGHUP, SIGUSR1, SIGTERM, SIGINT};

    arc = parse_args(argc, argv, &flag);
    if (arc)
        return arc == 1 ? 0 : 2;
    memset(&g, 0, sizeof(g));
    g.config_path = config_path_choose(flag);
    g.trace_project = getenv("GOOGLE_CLOUD_PROJECT");
    if (getenv("BATON_LOG_LEVEL") && strcmp(getenv("BATON_LOG_LEVEL"), "debug") == 0)
        log_set_level(LOG_DEBUG);
    signal(SIGPIPE, SIG_IGN);
    if (evthread_use_pthreads() < 0) {
        log_msg(LOG_ERROR, "libevent threading unavailable");
        return 1;
    }
    g.bg = event_base_new();
    if (!g.bg) {
        log_msg(LOG_ERROR, "cannot create the background event loop");
        return 1;
    }
    g.http = http_client_new(g.bg, err, sizeof(err));
    if (!g.http) {
        log_msg(LOG_ERROR, "%s", err);
        goto out;
    }

    /* The worker count is fixed at start (reloads keep it): load the config
     * once to learn it, then build the snapshot for that many workers. */
    {
        struct baton_config *probe = config_load(g.config_path, &d);
        if (!probe) {
            diags_print(&d, stderr);
            goto out;
        }
        nproc = sysconf(_SC_NPROCESSORS_ONLN);
        g.n_workers = probe->workers > 0 ? (unsigned)probe->workers
                                         : (unsigned)(nproc > 0 ? nproc : 1);
        port = env_port(probe->listen.port);
        /* baton check refuses admin_listen on listen's port; $PORT is only
         * known here, so the same rule is applied again to the port in use */
        if (port > 0 && probe->admin_enabled && probe->admin_listen.port == port) {
            log_msg(LOG_ERROR, "PORT=%d is admin_listen's port too (%s:%d): choose another "
                               "PORT or admin_listen", port, probe->admin_listen.host,
                    probe->admin_listen.port);
            config_free(probe);
            goto out;
        }
        config_free(probe);
    }
    if (port < 0) {
        log_msg(LOG_ERROR, "PORT must be an integer 1..65535");
        goto out;
    }
    g.listen_port = port;
    runtime_init(g.bg, g.http, g.n_workers);
    rt = runtime_build(g.config_path, &d);
    if (!rt) {
        diags_print(&d, stderr);
        goto out;
    }

    g.audit_cfg.fsync = rt->cfg->audit.fsync;
    g.audit_cfg.on_failure = rt->cfg->audit.on_failure;
    g.audit_cfg.path = rt->cfg->audit.path ? xstrdup(rt->cfg->audit.path) : NULL;
    g.audit_cfg.signing_key = rt->cfg->audit.signing_key ? xstrdup(rt->cfg->audit.signing_key) : NULL;
    g.audit = audit_open(&rt->cfg->audit, err, sizeof(err));
    if (!g.audit) {
        log_msg(LOG_ERROR, "audit log: %s", err);
        goto out;
    }
    {
        size_t n;
        struct identity_pair *pairs = identity_pairs(rt, &n);
        g.identity = identity_new(g.bg, g.http, rt->cfg, pairs, n, err, sizeof(err));
        free(pairs);
        if (!g.identity) {
            if (rt->needs_identity) {
                log_msg(LOG_ERROR, "google identity: %s", err);
                goto out;
            }
            log_msg(LOG_WARNING, "google identity unavailable (no step needs it): %s", err);
        } else {
            identity_start(g.identity);
        }
    }
    g.tls = proxy_tls_ctx_new(err, sizeof(err));
    if (!g.tls) {
        log_msg(LOG_ERROR, "%s", err);
        goto out;
    }
    metrics_init(g.n_workers);

    g.workers = xcalloc(g.n_workers, sizeof(*g.workers));
    for (unsigned i = 0; i < g.n_workers; i++) {
        struct worker *w = &g.workers[i];
        w->id = i;
        w->listen_fd = -1;
        w->wake_fd = -1;
        pthread_mutex_init(&w->q_lock, NULL);
    }
    for (unsigned i = 0; i < g.n_workers; i++) {
        struct worker *w = &g.workers[i];
        {
            /* Single-threaded by design: no locks inside libevent, and the
             * epoll changelist folds the add/del pairs of one loop turn. */
            struct event_config *ec = event_config_new();
            event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
            event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
            w->base = event_base_new_with_config(ec);
            event_config_free(ec);
        }
        if (!w->base) {
            log_msg(LOG_ERROR, "cannot create a worker event loop");
            goto out;
        }
        w->listen_fd = open_listener(&rt->cfg->listen, port, err, sizeof(err));
        if (w->listen_fd < 0) {
            log_msg(LOG_ERROR, "%s", err);
            goto out;
        }
        /* backlog 0: the socket already listens (4096); -1 would re-listen at 128 */
        w->listener = evconnlistener_new(w->base, on_accept, w, LEV_OPT_CLOSE_ON_FREE, 0,
                                         w->listen_fd);
        if (!w->listener) {
            close(w->listen_fd);
            log_msg(LOG_ERROR, "cannot start listening");
            goto out;
        }
        w->mw = metrics_worker(i);
        w->proxy = proxy_new(w->base, g.tls, w->mw);
        w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (w->wake_fd < 0) {
            log_msg(LOG_ERROR, "eventfd: %s", strerror(errno));
            goto out;
        }
        w->ctl = event_new(w->base, w->wake_fd, EV_READ | EV_PERSIST, worker_ctl, w);
        event_add(w->ctl, NULL);
        if (getrandom(w->rng, sizeof(w->rng), 0) != sizeof(w->rng) || (!w->rng[0] && !w->rng[1])) {
            w->rng[0] = mono_ns() ^ (uint64_t)(uintptr_t)w;
            w->rng[1] = (uint64_t)getpid() * 0x9e3779b97f4a7c15ull + i;
        }
    }
    if (rt->cfg->admin_enabled) {
        struct admin_deps deps = {g.audit, g.identity, is_draining};
        g.admin = admin_start(g.bg, &rt->cfg->admin_listen, &deps, err, sizeof(err));
        if (!g.admin) {
            log_msg(LOG_ERROR, "%s", err);
            goto out;
        }
    }
    g.worker_exit_ev = event_new(g.bg, -1, 0, on_worker_exit, NULL);
    g.drain_timer = evtimer_new(g.bg, on_drain_deadline, NULL);
    g.hard_timer = evtimer_new(g.bg, on_hard_deadline, NULL);
    for (int i = 0; i < 4; i++) {
        g.sig_ev[i] = evsignal_new(g.bg, sigs[i], on_signal, NULL);
        event_add(g.sig_ev[i], NULL);
    }
    log_msg(LOG_INFO, "baton serving on %s:%d with %u workers (%zu steps), admin %s:%d",
            rt->cfg->listen.host, port, g.n_workers, rt->n_steps,
            rt->cfg->admin_enabled ? rt->cfg->admin_listen.host : "-",
            rt->cfg->admin_enabled ? rt->cfg->admin_listen.port : 0);
    runtime_publish(rt);
    rt = NULL;

    /* Workers never take the process signals: the background loop does. */
    sigemptyset(&block);
    for (int i = 0; i < 4; i++)
        sigaddset(&block, sigs[i]);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    for (unsigned i = 0; i < g.n_workers; i++) {
        atomic_fetch_add(&g.workers_running, 1);
        if (pthread_create(&g.workers[i].thread, NULL, worker_main, &g.workers[i]) != 0) {
            atomic_fetch_sub(&g.workers_running, 1);
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            log_msg(LOG_ERROR, "cannot start worker threads");
            begin_drain();
            break;
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);

    event_base_dispatch(g.bg);
    rc = 0;
    for (unsigned i = 0; i < g.n_workers; i++)
        if (g.workers[i].thread)
            pthread_join(g.workers[i].thread, NULL);
    log_msg(LOG_INFO, "workers stopped; closing the audit log");

out:
    for (int i = 0; i < 4; i++)
        if (g.sig_ev[i])
            event_free(g.sig_ev[i]);
    if (g.worker_exit_ev)
        event_free(g.worker_exit_ev);
    if (g.drain_timer)
        event_free(g.drain_timer);
    if (g.hard_timer)
        event_free(g.hard_timer);
    admin_free(g.admin);
    /* Close the audit log while the workers' note queues and wake fds still
     * exist: the writer acknowledges what is left on its queue through
     * durable_cb, which locks w->q_lock and writes w->wake_fd. The notes it
     * queues are freed just below. */
    audit_close(g.audit);
    g.audit = NULL;
    free(g.audit_cfg.path);
    free(g.audit_cfg.signing_key);
    for (unsigned i = 0; g.workers && i < g.n_workers; i++) {
        struct worker *w = &g.workers[i];
        struct durable_note *n = w->q_head;
        while (n) {
            struct durable_note *next = n->next;
            free(n);
            n = next;
        }
        if (w->listener)
            evconnlistener_free(w->listener);
        proxy_free(w->proxy);
        if (w->ctl)
            event_free(w->ctl);
        if (w->wake_fd >= 0)
            close(w->wake_fd);
        runtime_unref(w->rt);
        if (w->base)
            event_base_free(w->base);
        pthread_mutex_destroy(&w->q_lock);
    }
    free(g.workers);
    identity_free(g.identity);
    runtime_unref(rt);
    runtime_shutdown();
    if (g.tls)
        SSL_CTX_free(g.tls);
    metrics_shutdown();
    http_client_free(g.http);
    if (g.bg)
        event_base_free(g.bg);
    diags_free(&d);
    if (rc == 0)
        log_msg(LOG_INFO, "baton stopped");
    return rc;
}
