/*
 * conn.c: the client side of every request on a worker: its connections from
 * accept to close, the head parsing loop (conn_process), the request pipeline
 * (handle_request, handle_stages), error responses and the one audit record per
 * routed request (finish). A connection is in one state (enum conn_state,
 * conn.h): waiting for a head, busy forwarding, parked on a key-set refresh or
 * a Redis verdict, waiting for its record to be durable, or closing. server.c
 * runs the process and the workers that own these connections; proxy.c does the
 * upstream side.
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
 * path..body are one call, decide_request (decide.h), which `baton explain`
 * calls too; the worker hands it its token cache and a limiter over its
 * in-flight counters, buckets and Redis connection (limit_in_flight,
 * limit_rate). handle_stages reads: guard, decide, mint, assert, reserve the
 * audit record, forward, with one refusal exit.
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

#include "conn.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/listener.h>
#include <openssl/ssl.h>

#include "assertion.h"
#include "audit.h"
#include "authn.h"
#include "decide.h"
#include "http1.h"
#include "identity.h"
#include "jwks.h"
#include "log.h"
#include "metrics.h"
#include "path.h"
#include "policy.h"
#include "proxy.h"
#include "redact.h"
#include "ready.h"
#include "redis.h"
#include "runtime.h"
#include "server_int.h"
#include "trace.h"
#include "signurl.h"
#include "otlp.h"
#include "util.h"

#define ARENA_KEEP 4096 /* a bigger per-connection arena is freed after its request */
#define UA_MAX 512      /* user agent bytes kept for the audit record */
#define LINGER_MS 2000  /* after a close, how long unread client bytes are drained */

static void conn_process(struct conn *c);
static void conn_next(struct conn *c, bool reusable, uint64_t now);
static void conn_close(struct conn *c);
static void on_read(struct bufferevent *bev, void *arg);
static void on_write(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);
static bool conn_park(struct conn *c, const struct cfg_issuer *is);

/* Every read enable and disable of the client: its reader (proxy_reader),
 * never libevent's, which would make an ioctl per read. */
static void conn_read_on(struct conn *c)
{
    proxy_reader_on(c->rd);
}

static void conn_read_off(struct conn *c)
{
    proxy_reader_off(c->rd);
}

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

/* 32 lowercase hex digits of two random words (the digits by word: trace.h). */
static void new_request_id(struct worker *w, char out[PROXY_REQUEST_ID_MAX + 1])
{
    uint64_t a = rng_next(w->rng), b = rng_next(w->rng);
    trace_hex64(a, out);
    trace_hex64(b, out + 16);
    out[32] = '\0';
}

static bool name_is(const char *name, size_t len, const char *lit)
{
    size_t n = strlen(lit); /* a literal: folded; lengths first, the bytes when equal */
    return len == n && ascii_case_eq(name, lit, n);
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

/*
 * The connection's one timer (idle, header, linger, park): c->deadline_ns is
 * when the current timeout falls due (0: none), and the armed timer is only a
 * wake-up that fires no later than that. A new deadline keeps an armed timer
 * that fires at or before it, so a keep-alive connection arms its timer about
 * once per header timeout instead of twice a request; when the timer fires
 * before the deadline (it was armed for an earlier one), on_timer arms it again
 * for the rest, so no timeout fires before its true deadline (the rule proxy.c
 * follows for its own timers). Clearing a deadline leaves the timer armed: it
 * fires into nothing.
 */
static void timer_arm_tv(struct conn *c, uint64_t at, const struct timeval *tv)
{
    evtimer_add(&c->timer, tv);
    c->timer_at_ns = at;
}

/* The deadline `ms` after `now` (mono_ns); `which` names the worker's cached
 * common timeout of that duration (0 idle, 1 header, 2 linger). */
static void arm_timer(struct conn *c, int which, unsigned ms, uint64_t now)
{
    struct worker *w = c->w;

    c->deadline_ns = now + (uint64_t)ms * 1000000u;
    if (c->timer_at_ns && c->timer_at_ns <= c->deadline_ns)
        return; /* armed to fire no later: on_timer re-arms for the rest */
    if (w->timer_ms[which] != ms || !w->timer_tv[which]) {
        struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
        w->timer_tv[which] = event_base_init_common_timeout(w->base, &tv);
        w->timer_ms[which] = ms;
    }
    timer_arm_tv(c, c->deadline_ns, w->timer_tv[which]);
}

/* The deadline `deadline` (mono_ns, after `now`), armed exactly when the timer
 * is not armed to fire by then. */
static void arm_timer_at(struct conn *c, uint64_t deadline, uint64_t now)
{
    uint64_t left = deadline > now ? deadline - now : 0;
    struct timeval tv;

    c->deadline_ns = deadline;
    if (c->timer_at_ns && c->timer_at_ns <= deadline)
        return;
    tv.tv_sec = (time_t)(left / 1000000000u);
    tv.tv_usec = (suseconds_t)((left % 1000000000u + 999u) / 1000u); /* rounded up */
    if (tv.tv_usec >= 1000000) {
        tv.tv_sec++;
        tv.tv_usec -= 1000000;
    }
    timer_arm_tv(c, deadline, &tv);
}

/* No timeout runs (forwarding, parked on Redis, a held response). */
static void timer_clear(struct conn *c)
{
    c->deadline_ns = 0;
}

static const char *status_text(int status)
{
    return http1_status_text((unsigned)status, "Error");
}

/* The generic error word of a status: the body says what class of failure,
 * never the precise reason (that is the audit record's). */
static const char *status_word(int status)
{
    switch (status) {
    case 400:
        return "bad_request";
    case 401:
        return "unauthorized";
    case 403:
        return "forbidden";
    case 404:
        return "not_found";
    case 408:
        return "request_timeout";
    case 413:
        return "content_too_large";
    case 414:
        return "uri_too_long";
    case 429:
        return "too_many_requests";
    case 431:
        return "headers_too_large";
    case 501:
        return "not_implemented";
    case 502:
        return "bad_gateway";
    case 503:
        return "unavailable";
    case 504:
        return "gateway_timeout";
    case 505:
        return "version_not_supported";
    default:
        return "internal_error";
    }
}

/* The X-Request-Id sent upstream and back to the client: the client's own
 * when it sent a valid one (its correlation id), else baton's. */
static const char *fwd_request_id(const struct request *r)
{
    return r->client_request_id[0] ? r->client_request_id : r->request_id;
}

/*
 * Queues an error response for `reason` (status from reason_status only).
 * `extra` is one more header line without CRLF, or NULL: then a reason that
 * is our failure gets its Retry-After (reason_retry_after_s).
 */
static void send_error(struct conn *c, enum reason reason, const char *extra, bool close)
{
    struct evbuffer *out = proxy_out(c->bev);
    int status = reason_status(reason);
    char body[256], retry[40];
    int n = snprintf(body, sizeof(body), "{\"error\":\"%s\",\"request_id\":\"%s\"}\n",
                     status_word(status), c->req.request_id);

    if (!extra && reason_retry_after_s(reason)) { /* ours: the caller should come back */
        snprintf(retry, sizeof(retry), "Retry-After: %u", reason_retry_after_s(reason));
        extra = retry;
    }
    if (status == 503 && !extra)
        extra = "Retry-After: 1"; /* any other failure of ours: retryable */

    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                        "Content-Length: %d\r\nX-Request-Id: %s\r\nCache-Control: no-store\r\n"
                        "%s%s%s\r\n",
                        status, status_text(status), n, fwd_request_id(&c->req), extra ? extra : "",
                        extra ? "\r\n" : "",
                        close                  ? "Connection: close\r\n"
                        : c->req.version == 10 ? "Connection: keep-alive\r\n"
                                               : "");
    evbuffer_add(out, body, (size_t)n);
    c->req.bytes_out += (uint64_t)n; /* the audit record and the access log count it */
}

/* What request_release clears: all of struct request but d's tail (link, trace)
 * and hdrs, which come last (conn.h) and are written before they are read. */
#define REQUEST_CLEARED (offsetof(struct request, d) + offsetof(struct decide_outcome, lp))
_Static_assert(offsetof(struct request, hdrs) + sizeof(((struct request *)0)->hdrs) ==
                   sizeof(struct request),
               "hdrs is struct request's last member");
_Static_assert(offsetof(struct request, hdrs) - offsetof(struct request, d) -
                       sizeof(struct decide_outcome) <
                   _Alignof(struct audit_header),
               "d comes right before hdrs");

static void request_release(struct request *r)
{
    redis_cancel(r->rate_wait);
    if (r->inflight)
        runtime_inflight_leave(r->inflight);
    decide_outcome_release(&r->d);
    if (r->have_idt)
        identity_token_release(&r->idt);
    runtime_unref(r->rt);
    memset(r, 0, REQUEST_CLEARED);
}

/*
 * A new head starts on a released request (every way out of a request goes
 * through request_release, and a new connection's is calloc'ed): only what is
 * written between requests is reset here (the keep-alive flag finish leaves,
 * the sign endpoint's 100 Continue mark, a durable note's ids), not the whole
 * struct a second time. Builds with AddressSanitizer check the rest is clear.
 */
static void request_begin(struct request *r)
{
#if defined(__SANITIZE_ADDRESS__)
    {
        static const struct request zero;
        struct request t;
        memcpy(&t, r, REQUEST_CLEARED);
        t.keep_alive = t.continue_sent = false;
        memset(t.request_id, 0, sizeof(t.request_id));
        memset(t.client_request_id, 0, sizeof(t.client_request_id));
        if (memcmp(&t, &zero, REQUEST_CLEARED) != 0) {
            log_msg(LOG_ERROR, "a request began on a request not released");
            abort();
        }
    }
#endif
    r->keep_alive = r->continue_sent = false;
    r->request_id[0] = r->client_request_id[0] = '\0';
}

static void access_log(struct conn *c, enum reason reason, enum decision d, int status,
                       uint64_t total_ns, int ua_judged)
{
    struct request *r = &c->req;
    char path[1024], ua[600], fields[3072], trace[400] = "";
    size_t pl = r->path_len < 400 ? r->path_len : 400;

    json_escape(path, sizeof(path), r->path ? r->path : "", r->path ? pl : 0);
    /* the audit record's redaction: a credential sent as User-Agent is never logged */
    if (r->user_agent && (ua_judged ? ua_judged == AUDIT_UA_CREDENTIAL
                                    : redact_is_credential(r->user_agent, r->ua_len)))
        snprintf(ua, sizeof(ua), "[redacted]");
    else
        json_escape(ua, sizeof(ua), r->user_agent ? r->user_agent : "", r->ua_len);
    if (r->has_trace)
        trace_log_fields(&r->trace, trace, sizeof(trace));
    snprintf(fields, sizeof(fields),
             "\"httpRequest\":{\"requestMethod\":\"%s\",\"requestUrl\":\"%s\",\"status\":%d,"
             "\"userAgent\":\"%s\",\"remoteIp\":\"%s\",\"latency\":\"%.6fs\","
             "\"responseSize\":\"%llu\",\"protocol\":\"HTTP/1.1\"},"
             "\"request_id\":\"%s\",%s%s%s\"step\":\"%s\",\"decision\":\"%s\",\"reason\":\"%s\"%s",
             http1_method_name(r->method), path, status, ua, c->peer_ip, (double)total_ns / 1e9,
             (unsigned long long)r->bytes_out, r->request_id,
             /* the client's id (token characters only), to find its line by */
             r->client_request_id[0] ? "\"client_request_id\":\"" : "", r->client_request_id,
             r->client_request_id[0] ? "\"," : "", r->d.policy ? policy_step(r->d.policy) : "",
             decision_name(d), reason_code(reason), trace);
    log_msg_fields(LOG_INFO, fields, "%s %.*s %d", http1_method_name(r->method), (int)pl,
                   r->path ? r->path : "", status);
}

static void durable_cb(void *arg, int ok);

/* fsync "always": counts what leaves the client output (see withhold_response). */
static void out_drained_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct conn *c = arg;
    (void)buf;
    c->out_drained += info->n_deleted;
}

/*
 * fsync "always" with on_failure "deny": the upstream's response cannot be
 * delivered because its record could not be written. When none of it has
 * reached the socket yet (the usual case: the writer holds the response
 * until the record is durable), it is replaced by the 503 audit_unavailable
 * that `batch` answers; otherwise the connection is closed short of it, so
 * the client sees an incomplete response, never a complete unrecorded one.
 * Either way the connection closes. Uses c->req's request ids.
 */
static void withhold_response(struct conn *c)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    size_t len = evbuffer_get_length(out);

    evbuffer_unfreeze(out, 1); /* the bufferevent keeps the start frozen */
    if (c->out_drained <= c->resp_mark && c->resp_mark - c->out_drained <= len) {
        size_t keep = (size_t)(c->resp_mark - c->out_drained); /* earlier responses' tails */
        struct evbuffer *prior = evbuffer_new();
        if (prior) {
            evbuffer_remove_buffer(out, prior, keep);
            evbuffer_drain(out, evbuffer_get_length(out));
            evbuffer_add_buffer(out, prior);
            evbuffer_free(prior);
            evbuffer_freeze(out, 1);
            send_error(c, REASON_AUDIT_UNAVAILABLE, NULL, true);
            return;
        }
    }
    evbuffer_drain(out, len);
    evbuffer_freeze(out, 1);
}

/* A sampled request's spans to the exporter (otlp.h): copied, never waited on. */
static void export_span(struct conn *c, enum reason reason, enum decision d, int status,
                        uint64_t total_ns)
{
    struct request *r = &c->req;
    struct otlp_span s;
    struct timespec ts;
    uint64_t end;
    size_t pl = r->path_len < OTLP_PATH_MAX ? r->path_len : OTLP_PATH_MAX;

    memset(&s, 0, sizeof(s));
    clock_gettime(CLOCK_REALTIME, &ts);
    end = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    memcpy(s.trace_id, r->trace.trace_id, sizeof(s.trace_id));
    memcpy(s.span_id, r->trace.span_id, sizeof(s.span_id));
    memcpy(s.parent_id, r->trace.parent_id, sizeof(s.parent_id));
    s.start_ns = end - total_ns;
    s.end_ns = end;
    snprintf(s.method, sizeof(s.method), "%s", http1_method_name(r->method));
    if (r->path)
        memcpy(s.path, r->path, pl);
    snprintf(s.step, sizeof(s.step), "%s", r->d.policy ? policy_step(r->d.policy) : "");
    s.decision = decision_name(d);
    s.reason = reason_code(reason);
    s.status = status;
    if (r->forwarded && r->step) {
        const struct cfg_upstream *up = r->step->target->up;
        s.upstream = true;
        s.up_span = rng_next(c->w->rng);
        s.up_end_ns = end;
        s.up_start_ns = end - (r->upstream_ns < total_ns ? r->upstream_ns : total_ns);
        snprintf(s.up_name, sizeof(s.up_name), "%s", up->name);
        snprintf(s.up_host, sizeof(s.up_host), "%s", up->host ? up->host : "");
        s.up_port = up->port;
        s.up_status = r->upstream_status;
    }
    otlp_submit(&s);
}

/*
 * The end of every request after the guard: one audit record (when routed),
 * metrics, the access log line, then the connection goes on or closes.
 */
static void finish(struct conn *c, enum reason reason, enum decision d, int status, bool reusable)
{
    struct worker *w = c->w;
    struct request *r = &c->req;
    uint64_t now = mono_ns(), total = now - r->t0_ns;
    bool always = false, held = false;
    int ua_judged = AUDIT_UA_UNJUDGED; /* judged once for the record and the access log */

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
        rec.client_request_id = r->client_request_id[0] ? r->client_request_id : NULL;
        if (r->d.policy) {
            rec.step = policy_step(r->d.policy);
            rec.dry_run = policy_dry_run(r->d.policy);
            rec.policy_file = policy_file(r->d.policy);
            rec.policy_sha256 = policy_hash_hex(r->d.policy);
        }
        if (r->d.token_present && r->d.have_ar) {
            rec.caller.verified = r->d.authn_ok;
            rec.caller.iss = r->d.ar.issuer ? r->d.ar.issuer->issuer : NULL;
            rec.caller.sub = r->d.ar.sub;
            rec.caller.audience = r->d.ar.audience;
            rec.caller.jti = r->d.ar.jti;
            rec.caller.aws_account = r->d.ar.aws_account;
            rec.caller.token_sha256 = r->d.ar.fingerprint[0] ? r->d.ar.fingerprint : NULL;
        }
        if (r->d.link) {
            /* the link as the caller: minter as sub, link id as jti, kid as
             * audience, the signature's SHA-256 as token_sha256 */
            rec.caller.verified = r->d.authn_ok;
            rec.caller.iss = "baton:signed_url";
            rec.caller.sub = r->d.lp.minter[0] ? r->d.lp.minter : NULL;
            rec.caller.audience = r->d.lp.kid[0] ? r->d.lp.kid : NULL;
            rec.caller.jti = r->d.link_id[0] ? r->d.link_id : NULL;
            rec.caller.token_sha256 = r->d.link_sig_sha[0] ? r->d.link_sig_sha : NULL;
        }
        if (r->link_op) {
            rec.link.op = r->link_op;
            rec.link.id = r->d.link_id[0] ? r->d.link_id : NULL;
            rec.link.method = r->link_method;
            rec.link.path = r->link_path;
            rec.link.path_len = r->link_path_len;
            rec.link.kid = r->d.lp.kid[0] ? r->d.lp.kid : NULL;
            rec.link.minter = r->d.lp.minter[0] ? r->d.lp.minter : NULL;
            rec.link.exp = r->d.lp.exp;
            rec.link.uses = r->d.lp.uses;
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
        ua_judged = r->user_agent && redact_is_credential(r->user_agent, r->ua_len)
                        ? AUDIT_UA_CREDENTIAL
                        : AUDIT_UA_PLAIN;
        rec.request.user_agent_judged = ua_judged;
        rec.request.bytes_in = r->bytes_in;
        rec.request.headers = r->hdrs;
        rec.request.n_headers = r->n_hdrs;
        if (r->forwarded && up) {
            rec.upstream.name = up->name;
            rec.upstream.status = r->upstream_status;
            rec.upstream.latency_ms = (int64_t)(r->upstream_ns / 1000000);
            rec.upstream.bytes = r->upstream_bytes;
            rec.upstream.identity = r->have_idt ? r->idt.identity : "none";
            rec.upstream.audience = r->have_idt ? r->idt.audience : NULL;
        } else {
            rec.upstream.latency_ms = -1;
        }
        rec.bytes_out = r->bytes_out;
        rec.duration_ms = (int64_t)(total / 1000000);
        /* always and group: the response waits for its record's fsync */
        always = server_g.audit_cfg.fsync == FSYNC_ALWAYS ||
                 server_g.audit_cfg.fsync == FSYNC_GROUP;
        if (always) {
            struct durable_note *note = xcalloc(1, sizeof(*note));
            note->c = c;
            note->w = w;
            /* Only what came from the upstream is withheld: baton's own
             * refusals (a 503 audit_unavailable among them) go out whether or
             * not their record could be written, as with "batch". */
            note->strict = server_g.audit_cfg.on_failure == ON_FAILURE_DENY && r->forwarded;
            memcpy(note->request_id, r->request_id, sizeof(note->request_id));
            memcpy(note->client_request_id, r->client_request_id, sizeof(note->client_request_id));
            if (audit_submit(server_g.audit, r->reserved ? &r->rsv : NULL, &rec, durable_cb,
                             note) == 0) {
                held = true;
            } else {
                if (note->strict) {
                    /* Not recordable: the response is never delivered. */
                    withhold_response(c);
                    reusable = false;
                }
                free(note);
            }
        } else {
            audit_submit(server_g.audit, r->reserved ? &r->rsv : NULL, &rec, NULL, NULL);
        }
        r->reserved = false;
    } else if (r->reserved) {
        audit_release(server_g.audit, &r->rsv);
        r->reserved = false;
    }
    metrics_request(w->mw, r->d.policy ? policy_step(r->d.policy) : NULL, d, reason, status, total,
                    r->upstream_ns);
    if (r->has_trace && r->trace.sampled && otlp_enabled())
        export_span(c, reason, d, status, total);
    if (r->rt && r->rt->cfg->access_log)
        access_log(c, reason, d, status, total, ua_judged);
    {
        bool keep = reusable && r->keep_alive;
        request_release(r);
        r->keep_alive = keep;
    }
    if (held) {
        /* fsync "always": the response (or its tail) stays queued until the
         * writer says the record is durable. */
        c->state = CS_WAIT_DURABLE;
        conn_read_off(c);
        bufferevent_disable(c->bev, EV_WRITE);
        bufferevent_setcb(c->bev, NULL, NULL, NULL, c);
        return;
    }
    conn_next(c, c->req.keep_alive, now);
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
    server_worker_wake(w);
}

void conn_durable_arrived(struct conn *c, const struct durable_note *note)
{
    if (c->state != CS_WAIT_DURABLE)
        return;
    if (!note->ok && note->strict) {
        memcpy(c->req.request_id, note->request_id, sizeof(c->req.request_id));
        memcpy(c->req.client_request_id, note->client_request_id, sizeof(c->req.client_request_id));
        withhold_response(c);
        c->req.request_id[0] = c->req.client_request_id[0] = '\0';
        bufferevent_enable(c->bev, EV_WRITE);
        c->state = CS_BUSY;
        conn_close(c);
        return;
    }
    bufferevent_enable(c->bev, EV_WRITE);
    c->state = CS_BUSY;
    conn_next(c, c->req.keep_alive, 0);
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
        snprintf(
            fields, sizeof(fields),
            "\"reason\":\"%s\",\"status\":%d,\"remote_ip\":\"%s\",\"request_id\":\"%s\",\"detail\":\"%s\"",
            reason_code(reason), status, c->peer_ip, r->request_id, esc);
        log_msg_fields(LOG_INFO, fields, "request refused by the guard: %s", reason_code(reason));
    }
    send_error(c, reason, NULL, true);
    metrics_request(c->w->mw, NULL, DECISION_DENY, reason, status,
                    c->head_started ? mono_ns() - c->head_start_ns : 0, 0);
    request_release(r);
    conn_close(c);
}

/* A refusal after routing started: error response and the audit record.
 * `close`: the body was not read, so the connection cannot go on. */
static void deny(struct conn *c, enum reason reason, enum decision d, const char *extra, bool close)
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

/* One pass over the head's headers: which ids occur (a bit per enum
 * hdrclass_id), the first User-Agent, whether any is recorded, and where the
 * policy-read ones are (header_lookup's context). */
struct head_scan {
    const struct http1_request *hreq;
    uint32_t ids;
    const struct http1_header *ua;
    bool recorded;
    unsigned n_pol;
    uint8_t pol[HTTP1_MAX_HEADERS]; /* indexes of the HDRCLASS_POLICY headers, in order */
};
_Static_assert(HDR_TRANSFER_ENCODING_US < 32, "a bit per header id");
_Static_assert(HTTP1_MAX_HEADERS <= 256, "a header index in a byte");

static void scan_head(const struct http1_request *hreq, struct head_scan *hs)
{
    hs->hreq = hreq;
    hs->ids = 0;
    hs->ua = NULL;
    hs->recorded = false;
    hs->n_pol = 0;
    for (unsigned i = 0; i < hreq->n_headers; i++) {
        const struct http1_header *h = &hreq->headers[i];
        if (h->id == HDR_USER_AGENT && !(hs->ids & 1u << HDR_USER_AGENT))
            hs->ua = h;
        hs->ids |= 1u << h->id;
        hs->recorded |= (h->cls & HDRCLASS_RECORDED) != 0;
        if (h->cls & HDRCLASS_POLICY)
            hs->pol[hs->n_pol++] = (uint8_t)i;
    }
}

/* header_lookup over every header, the policy-read ones by their class: the
 * plain way, which AddressSanitizer builds hold header_lookup to. */
static int header_lookup_plain(const struct http1_request *req, const char *name,
                               const char **value, size_t *len)
{
    size_t n = strlen(name);
    int count = 0;

    *value = NULL;
    *len = 0;
    for (unsigned i = 0; i < req->n_headers; i++) {
        const struct http1_header *h = &req->headers[i];
        if (!(h->cls & HDRCLASS_POLICY) || h->name_len != n || !ascii_case_eq(h->name, name, n))
            continue;
        if (count++ == 0) {
            *value = h->value;
            *len = h->value_len;
        }
    }
    return count;
}

/* A policy's require_headers name (`ctx` a struct head_scan): only headers of
 * the policy-read class (stamped by the snapshot's table, runtime.h) can be
 * it, and the scan listed those. */
static int header_lookup(void *ctx, const char *name, const char **value, size_t *len)
{
    const struct head_scan *hs = ctx;
    const struct http1_header *hdrs = hs->hreq->headers;
    size_t n = strlen(name);
    int count = 0;

    *value = NULL;
    *len = 0;
    for (unsigned k = 0; k < hs->n_pol; k++) {
        const struct http1_header *h = &hdrs[hs->pol[k]];
        if (h->name_len != n || !ascii_case_eq(h->name, name, n))
            continue;
        if (count++ == 0) {
            *value = h->value;
            *len = h->value_len;
        }
    }
#if defined(__SANITIZE_ADDRESS__)
    {
        const char *pv;
        size_t pl;
        if (header_lookup_plain(hs->hreq, name, &pv, &pl) != count || pv != *value || pl != *len) {
            log_msg(LOG_ERROR, "header_lookup disagrees with the plain lookup of %s", name);
            abort();
        }
    }
#else
    (void)header_lookup_plain;
#endif
    return count;
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
                                const struct head_scan *hs, const char *path, size_t path_len,
                                const char *query, size_t query_len, const struct baton_config *cfg)
{
    struct request *r = &c->req;
    size_t need = path_len + query_len + 1, off = 0;
    const struct http1_header *ua = hs->ua;

    /* the classes were found in the parse, by the snapshot's table (runtime.h) */
    if (ua)
        need += ua->value_len < UA_MAX ? ua->value_len : UA_MAX;
    for (unsigned i = 0; hs->recorded && i < hreq->n_headers; i++) {
        const struct http1_header *h = &hreq->headers[i];
        if (h->cls & HDRCLASS_RECORDED)
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
    for (size_t k = 0; hs->recorded && k < cfg->audit.n_record_headers; k++) {
        const char *want = cfg->audit.record_headers[k];
        int copies = 0;
        for (unsigned i = 0; i < hreq->n_headers && r->n_hdrs < AUDIT_MAX_RECORD_HEADERS; i++) {
            const struct http1_header *h = &hreq->headers[i];
            size_t n;
            if (!(h->cls & HDRCLASS_RECORDED) || !name_is(h->name, h->name_len, want) ||
                copies == 2) /* two show a duplicate */
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
    if (hreq->authorization < 0)
        return 0;
    return decide_bearer(hreq->headers[hreq->authorization].value,
                         hreq->headers[hreq->authorization].value_len, tok, len);
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
                                 const struct http1_request *hreq, size_t head_len,
                                 bool body_pending)
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
                        close              ? "Connection: close\r\n"
                        : r->version == 10 ? "Connection: keep-alive\r\n"
                                           : "");
    if (hreq->method != HTTP1_METHOD_HEAD)
        evbuffer_add(out, doc, n);
    skip_body(bufferevent_get_input(c->bev), hreq, head_len, body_pending);
    request_release(r);
    r->keep_alive = !close;
    conn_next(c, !close, 0);
}

/*
 * The caller assertion's header line for this request (assertion.h): the
 * step's require_headers that matched, the verified caller, from the
 * worker's cache. NULL when signing failed (err set).
 */
static const char *assertion_line(struct worker *w, const struct runtime *rt,
                                  const struct request *r, const struct head_scan *hs, size_t *len,
                                  char *err, size_t errlen)
{
    const char *names[ASSERTION_MAX_HEADERS], *vals[ASSERTION_MAX_HEADERS];
    size_t lens[ASSERTION_MAX_HEADERS], nh = 0;
    const struct policy_input hin = {.header = header_lookup, .header_ctx = (void *)hs};
    const struct cfg_upstream *up = r->step->target->up;

    for (size_t i = 0; i < policy_header_count(r->d.policy) && nh < ASSERTION_MAX_HEADERS; i++) {
        const char *name = policy_header_name(r->d.policy, i);
        /* authorized: every require_headers entry matched (once, its glob);
         * a dry-run pass-through (would_deny) carries only those that did */
        if (r->d.would_deny ? policy_header_matched(r->d.policy, i, &hin, &vals[nh], &lens[nh])
                            : header_lookup((void *)hs, name, &vals[nh], &lens[nh]) == 1)
            names[nh++] = name;
    }
    {
        struct assertion_input in = {
            .cfg = &rt->cfg->assertion,
            .audience = up->audience,
            .caller = &r->d.ar,
            .cognito = r->d.ar.issuer && !strcmp(r->d.ar.issuer->audience_claim, "client_id"),
            .step = policy_step(r->d.policy),
            .policy_file = policy_file(r->d.policy),
            .policy_sha256 = policy_hash_hex(r->d.policy),
            .dry_run = policy_dry_run(r->d.policy),
            .header_names = names,
            .header_values = vals,
            .header_lens = lens,
            .n_headers = nh,
            .audit_log = server_g.audit ? audit_log_id(server_g.audit) : NULL,
            .now_s = r->ts_ms / 1000,
        };
        return assertion_cache_line(rt->assertion_caches[w->id % rt->n_workers], rt->assertion, &in,
                                    len, err, errlen);
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

/*
 * health_path (a GET or HEAD of exactly that path, any query): the /readyz
 * verdict and body on the serving port, for Cloud Run's HTTP startup and
 * liveness probes, which cannot reach the loopback admin listener. A probe
 * is not a routed request: no audit record, no request metrics.
 */
static void serve_health(struct conn *c, const struct http1_request *hreq, size_t head_len,
                         bool body_pending)
{
    struct request *r = &c->req;
    struct evbuffer *body = evbuffer_new(), *out = proxy_out(c->bev);
    bool ready, keep = r->keep_alive && !body_pending;

    if (!body)
        abort();
    ready = admin_ready(&server_g.ready_deps, body);
    evbuffer_add_printf(
        out,
        "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
        "Content-Length: %zu\r\nX-Request-Id: %s\r\nCache-Control: no-store\r\n%s\r\n",
        ready ? 200 : 503, status_text(ready ? 200 : 503), evbuffer_get_length(body), r->request_id,
        !keep              ? "Connection: close\r\n"
        : r->version == 10 ? "Connection: keep-alive\r\n"
                           : "");
    if (hreq->method != HTTP1_METHOD_HEAD)
        evbuffer_add_buffer(out, body);
    evbuffer_free(body);
    skip_body(bufferevent_get_input(c->bev), hreq, head_len, body_pending);
    request_release(r);
    r->keep_alive = keep;
    conn_next(c, keep, 0);
}

/* ------------------------------------------------------------ signed URLs */

/* Whether a head for the sign endpoint waits for the rest of its (small,
 * Content-Length) body; other heads never wait. */
static bool sign_body_incomplete(const struct http1_request *hreq, size_t head_len, size_t buffered)
{
    size_t n = sizeof(SIGNURL_ENDPOINT) - 1;
    return hreq->body == HTTP1_BODY_LENGTH && hreq->content_length <= SIGNURL_MINT_BODY_MAX &&
           buffered - head_len < hreq->content_length && hreq->origin_len >= n &&
           memcmp(hreq->origin, SIGNURL_ENDPOINT, n) == 0 &&
           (hreq->origin_len == n || hreq->origin[n] == '?');
}

static void send_json(struct conn *c, int status, const char *body, size_t n)
{
    struct evbuffer *out = proxy_out(c->bev);
    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                        "Content-Length: %zu\r\nX-Request-Id: %s\r\nCache-Control: no-store\r\n"
                        "%s\r\n",
                        status, status_text(status), n, c->req.request_id,
                        !c->req.keep_alive     ? "Connection: close\r\n"
                        : c->req.version == 10 ? "Connection: keep-alive\r\n"
                                               : "");
    evbuffer_add(out, body, n);
}

/*
 * POST /.well-known/baton/sign: the minter's bearer token, then the body
 * {"method", "path", "ttl_s", "uses"}; the step routing `path` on this host
 * must grant the mint in its "sign" section (policy_sign_check). The answer is
 * {"url", "path", "method", "expires_at", "uses", "link_id"}; the record says
 * who minted what (the link member: id, method, path, expiry, never the
 * signature). conn_process held the head until the whole body was buffered.
 */
static void handle_sign(struct conn *c, const struct http1_request *hreq, size_t head_len,
                        bool body_pending)
{
    struct request *r = &c->req;
    struct runtime *rt = r->rt;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    struct signurl_mint_req mr;
    struct path_result tp;
    enum reason why = REASON_BAD_REQUEST;
    const char *tok = NULL;
    size_t tok_len = 0, cl = hreq->content_length;
    char err[200], suffix[SIGNURL_SUFFIX_MAX], *target = NULL, *answer = NULL;
    unsigned char id[SIGNURL_ID_BYTES];
    int have_tok;
    bool drained = false;

    memset(&mr, 0, sizeof(mr));
    decide_link_clear(&r->d); /* not cleared with the request (conn.h) */
    r->link_op = "mint";
    if (hreq->method != HTTP1_METHOD_POST || hreq->body != HTTP1_BODY_LENGTH) {
        why = REASON_BAD_REQUEST;
        goto refuse;
    }
    if (cl > SIGNURL_MINT_BODY_MAX) {
        why = REASON_BODY_TOO_LARGE;
        goto refuse;
    }
    /* the body is complete (sign_body_incomplete): take it off the input */
    {
        const char *body = (const char *)evbuffer_pullup(in, (ssize_t)(head_len + cl)) + head_len;
        have_tok = bearer_token(hreq, &tok, &tok_len);
        if (have_tok > 0) {
            r->d.token_present = true;
            r->d.have_ar = true;
            why = authn_verify(rt->authn, rt->caches[c->w->id % rt->n_workers], &c->token_hint, tok,
                               tok_len, r->ts_ms / 1000, &r->d.ar);
            metrics_token_cache(c->w->mw, r->d.ar.cache_hit);
        } else {
            r->d.token_present = have_tok < 0;
            why = have_tok < 0 ? REASON_TOKEN_MALFORMED : REASON_TOKEN_MISSING;
        }
        if (why == REASON_ALLOWED && signurl_mint_parse(body, cl, &mr, err, sizeof(err)) < 0)
            why = REASON_BAD_REQUEST;
        drained = true; /* at the exits below: hreq's slices live until then */
        r->bytes_in = cl;
    }
    if (why != REASON_ALLOWED)
        goto refuse;
    r->d.authn_ok = true;
    r->link_method = mr.method;
    r->link_path = mr.target;
    r->link_path_len = strlen(mr.target);
    if (path_canonicalize(mr.target, strlen(mr.target), rt->cfg->limits.max_uri_bytes, &tp) !=
            REASON_ALLOWED ||
        signurl_query_marked(tp.query, tp.query_len) ||
        mr.ttl_s > signurl_keys_max_ttl(rt->url_keys)) {
        why = REASON_BAD_REQUEST;
        goto refuse;
    }
    r->d.policy = policy_route(rt->policies, hreq->hostname,
                               hreq->hostname ? hreq->hostname_len : 0, tp.path, tp.path_len);
    if (!r->d.policy) {
        why = REASON_NO_ROUTE;
        goto refuse;
    }
    why = policy_sign_check(r->d.policy, r->d.ar.issuer->name, r->d.ar.claims, mr.method, tp.path,
                            tp.path_len, mr.ttl_s);
    if (why != REASON_ALLOWED)
        goto refuse;
    {
        char minter[SIGNURL_MINTER_MAX + 1];
        int64_t exp = r->ts_ms / 1000 + (int64_t)mr.ttl_s;
        struct signurl_scope sc = {
            .method = mr.method,
            .host = hreq->hostname ? hreq->hostname : "",
            .host_len = hreq->hostname ? hreq->hostname_len : 0,
            .path = tp.path,
            .path_len = tp.path_len,
            .query = tp.query_len ? tp.query : NULL,
            .query_len = tp.query_len,
        };
        signurl_minter_id(r->d.ar.issuer->name, r->d.ar.issuer->issuer, r->d.ar.sub, minter);
        if (signurl_sign(rt->url_keys, &sc, exp, mr.uses, minter, suffix, id, err, sizeof(err)) <
            0) {
            log_msg(LOG_ERROR, "sign endpoint: %s", err);
            why = REASON_INTERNAL;
            goto error;
        }
        r->d.lp.exp = exp;
        r->d.lp.uses = mr.uses;
        snprintf(r->d.lp.kid, sizeof(r->d.lp.kid), "%s", signurl_keys_signer(rt->url_keys));
        snprintf(r->d.lp.minter, sizeof(r->d.lp.minter), "%s", minter);
        signurl_id_hex(id, r->d.link_id);
    }
    if (audit_reserve(server_g.audit, &r->rsv) < 0) {
        why = REASON_AUDIT_UNAVAILABLE;
        goto error;
    }
    r->reserved = true;
    {
        /* http only for a loopback host (tests); a link is for a browser */
        bool loop = hreq->hostname &&
                    ((hreq->hostname_len == 9 &&
                      !ascii_casecmp_n(hreq->hostname, 9, "localhost", 9)) ||
                     (hreq->hostname_len >= 4 && !memcmp(hreq->hostname, "127.", 4)) ||
                     (hreq->hostname_len == 5 && !memcmp(hreq->hostname, "[::1]", 5)));
        char *url, *esc;
        size_t elen;
        target = xasprintf("%.*s%s%.*s%s", (int)tp.path_len, tp.path, tp.query_len ? "?" : "",
                           (int)tp.query_len, tp.query_len ? tp.query : "", suffix);
        url = xasprintf("%s://%.*s%s", loop ? "http" : "https",
                        (int)(hreq->host ? hreq->host_len : 0), hreq->host ? hreq->host : "",
                        target);
        elen = 2 * strlen(url) + 8;
        esc = xmalloc(elen);
        json_escape(esc, elen, url, strlen(url));
        answer = xasprintf("{\"url\":\"%s\",\"method\":\"%s\",\"expires_at\":%lld,\"uses\":%u,"
                           "\"link_id\":\"%s\"}\n",
                           esc, mr.method, (long long)r->d.lp.exp, r->d.lp.uses, r->d.link_id);
        free(esc);
        free(url);
    }
    evbuffer_drain(in, head_len + cl);
    send_json(c, 200, answer, strlen(answer));
    finish(c, REASON_ALLOWED, DECISION_ALLOW, 200, true);
    goto out;
refuse:
    if (!drained)
        skip_body(in, hreq, head_len, body_pending);
    else
        evbuffer_drain(in, head_len + cl);
    deny(c, why, DECISION_DENY,
         reason_status(why) == 401 ? "WWW-Authenticate: Bearer error=\"invalid_token\"" : NULL,
         !drained && body_pending);
    goto out;
error:
    evbuffer_drain(in, head_len + cl); /* only reached with the body read */
    deny(c, why, DECISION_ERROR, NULL, false);
out:
    signurl_mint_req_clear(&mr);
    free(target);
    free(answer);
}

static void on_rate_reply(void *arg, enum redis_verdict v, unsigned retry_after_s);
static void closing_write(struct bufferevent *bev, void *arg);

/* A global step's rate decision when Redis did not give one: the config's
 * redis.on_failure. Counted (metrics), and logged at most once per worker per
 * 10 s with the count since the last line: an outage under load must not
 * become a flood of log lines. */
static enum redis_verdict rate_fallback(struct conn *c, unsigned *retry)
{
    struct request *r = &c->req;
    enum cfg_redis_failure how = r->rt->cfg->redis.on_failure;
    enum redis_verdict v = REDIS_ALLOW;

    redis_count_fallback(c->w->redis, how);
    if (how == REDIS_FAIL_DENY)
        v = REDIS_FAILED;
    else if (how == REDIS_FAIL_LOCAL && r->step->bucket &&
             !runtime_rate_take(r->step->bucket, mono_ns(), retry))
        v = REDIS_DENY;
    c->w->fallback_unlogged++;
    if (!c->w->fallback_log_ns || mono_ns() - c->w->fallback_log_ns >= 10000000000ull) {
        char fields[256];
        snprintf(fields, sizeof(fields),
                 "\"step\":\"%s\",\"request_id\":\"%s\",\"on_failure\":\"%s\",\"decisions\":%llu",
                 policy_step(r->d.policy), r->request_id,
                 how == REDIS_FAIL_LOCAL  ? "local"
                 : how == REDIS_FAIL_DENY ? "deny"
                                          : "allow",
                 (unsigned long long)c->w->fallback_unlogged);
        log_msg_fields(LOG_WARNING, fields,
                       "worker %u: global rate limit without redis: %llu "
                       "decisions by on_failure since the last such line",
                       c->w->id, (unsigned long long)c->w->fallback_unlogged);
        c->w->fallback_log_ns = mono_ns();
        c->w->fallback_unlogged = 0;
    }
    return v;
}

/* A link use Redis did not count (down, timed out, an error): refused with
 * 503 whatever redis.on_failure says, counted, and logged at most once per
 * worker per 10 s with the count since the last line. */
static void link_use_failed(struct conn *c)
{
    struct worker *w = c->w;
    redis_count_link_failure(w->redis);
    w->link_fail_unlogged++;
    if (!w->link_fail_log_ns || mono_ns() - w->link_fail_log_ns >= 10000000000ull) {
        char fields[256];
        snprintf(fields, sizeof(fields), "\"step\":\"%s\",\"request_id\":\"%s\",\"uses\":%llu",
                 policy_step(c->req.d.policy), c->req.request_id,
                 (unsigned long long)w->link_fail_unlogged);
        log_msg_fields(LOG_WARNING, fields,
                       "worker %u: signed URL uses refused (503): redis cannot count them: %llu "
                       "since the last such line",
                       w->id, (unsigned long long)w->link_fail_unlogged);
        w->link_fail_log_ns = mono_ns();
        w->link_fail_unlogged = 0;
    }
}

/* The decision's limiter (decide.h) over this worker's counters and its Redis
 * connection: the one place the in-flight and rate stages meet runtime.c and
 * redis.c. */
static const struct runtime_step *limit_step(struct request *r, const struct policy *p)
{
    if (!r->step)
        r->step = runtime_step(r->rt, p);
    return r->step;
}

static bool limit_in_flight(void *ctx, const struct policy *p, unsigned max)
{
    struct request *r = &((struct conn *)ctx)->req;

    if (!limit_step(r, p)->inflight)
        return true;
    if (!runtime_inflight_enter(r->step->inflight, max))
        return false;
    r->inflight = r->step->inflight;
    return true;
}

static enum decide_rate_verdict rate_verdict_of(enum redis_verdict v)
{
    return v == REDIS_ALLOW  ? DECIDE_RATE_ALLOW
           : v == REDIS_DENY ? DECIDE_RATE_DENY
                             : DECIDE_RATE_UNAVAILABLE;
}

/* A global step takes a token from the worker's lease or asks Redis (the
 * request parks: DECIDE_RATE_PENDING, the verdict comes to on_rate_reply), or
 * decides by redis.on_failure when the ask cannot be sent; an instance step
 * takes from the worker's bucket. */
static enum decide_rate_verdict limit_rate(void *ctx, const struct policy *p,
                                           enum decide_rate_scope scope, unsigned *retry)
{
    struct conn *c = ctx;
    struct request *r = &c->req;

    (void)scope;
    if (limit_step(r, p)->rate_key) {
        const struct policy_limits *lim = policy_limits(p);
        enum redis_take_result tr;

        *retry = 1;
        tr = redis_take(c->w->redis, r->step->rate_key, (double)lim->rate_per_s, lim->burst,
                        r->rt->cfg->redis.timeout_ms, on_rate_reply, c, &r->rate_wait, retry);
        if (tr == REDIS_TAKE_PARKED)
            return DECIDE_RATE_PENDING;
        /* decided at once from the worker's lease, or no Redis: on_failure */
        if (tr == REDIS_TAKE_ALLOW)
            return DECIDE_RATE_ALLOW;
        if (tr == REDIS_TAKE_DENY)
            return DECIDE_RATE_DENY;
        *retry = 1;
        return rate_verdict_of(rate_fallback(c, retry));
    }
    if (r->step->bucket && !runtime_rate_take(r->step->bucket, mono_ns(), retry))
        return DECIDE_RATE_DENY;
    return DECIDE_RATE_ALLOW;
}

/* The decision's view of a parsed head (decide.h); `pr` canonical when
 * `path_reason` is REASON_ALLOWED. */
static void decide_input(const struct request *r, const struct http1_request *hreq,
                         const struct head_scan *hs, const struct path_result *pr,
                         enum reason path_reason, struct decide_request *dr)
{
    memset(dr, 0, sizeof(*dr));
    dr->method = http1_method_name(hreq->method);
    dr->hostname = hreq->hostname;
    dr->hostname_len = hreq->hostname ? hreq->hostname_len : 0;
    dr->path_reason = path_reason;
    dr->path = pr->path;
    dr->path_len = pr->path_len;
    dr->query = pr->query;
    dr->query_len = pr->query_len;
    dr->header = header_lookup;
    dr->header_ctx = (void *)hs;
    dr->connection = &hreq->connection;
    if (hreq->authorization >= 0) {
        dr->authorization = hreq->headers[hreq->authorization].value;
        dr->authorization_len = hreq->headers[hreq->authorization].value_len;
    }
    dr->body = hreq->body;
    dr->content_length = hreq->content_length;
    dr->now_s = r->ts_ms / 1000;
}

/*
 * One parsed head, after the guard: the server's own endpoints, decide
 * (decide.h: path, route, headers, authn, authz, in-flight, rate, body),
 * then the chunked prescan, mint, caller assertion, audit reservation, a
 * link's use, and the forward. The head's bytes are still at the front of the
 * input; every exit drains or closes, and every refusal leaves through
 * `refuse`. A global step's request parks at the rate stage (CS_RATE_WAIT) and
 * comes back here from on_rate_reply with `resumed` (the head parsed again
 * from the same bytes) and the verdict, to go on from the rate stage; a link
 * use parks the same way and goes on from the link check.
 */
static void handle_stages(struct conn *c, const struct http1_request *hreq, size_t head_len,
                          bool resumed, enum redis_verdict verdict, unsigned verdict_retry)
{
    struct worker *w = c->w;
    struct request *r = &c->req;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    struct runtime *rt;
    const struct baton_config *cfg;
    struct path_result pr;
    struct decide_snapshot snap;
    struct decide_request dr;
    enum reason why;
    enum decision dec = DECISION_DENY;
    const char *extra = NULL;
    char retry_hdr[48];
    bool body_pending;
    const struct cfg_upstream *up;
    struct evbuffer *head = NULL;
    unsigned timeout_ms;
    const char *a_line = NULL; /* the caller assertion line, borrowed from the worker's cache */
    size_t a_len = 0;
    struct head_scan hs;

    if (resumed) {
        scan_head(hreq, &hs); /* the head parsed again: where its headers are now */
        rt = r->rt;
        cfg = rt->cfg;
        body_pending = r->body_pending;
        memset(&pr, 0, sizeof(pr));
        pr.path = r->path;
        pr.path_len = r->path_len;
        pr.query = r->query;
        pr.query_len = r->query_len;
        up = r->step->target->up;
        if (r->park_link)
            goto link_decided;
        if (verdict == REDIS_FAILED)
            verdict = rate_fallback(c, &verdict_retry);
        snap = (struct decide_snapshot){cfg, rt->policies, rt->authn, rt->url_keys, rt->classes};
        decide_input(r, hreq, &hs, &pr, REASON_ALLOWED, &dr);
        decide_resume(&snap, &dr, &r->d, rate_verdict_of(verdict), verdict_retry);
        goto decided;
    }
    request_begin(r);
    r->t0_ns = c->head_start_ns;
    r->ts_ms = now_ms();
    rt = w->rt; /* the snapshot conn_process parsed the head with: its header classes */
    r->rt = runtime_ref(rt);
    cfg = rt->cfg;
    r->method = hreq->method;
    r->version = hreq->version;
    r->keep_alive = hreq->keep_alive && !w->draining;
    /* Clients never choose the audit record's id: theirs travels beside it.
     * A name the head lacks (by its id, found in the parse) is not looked for. */
    new_request_id(w, r->request_id);
    scan_head(hreq, &hs);
    if (!(hs.ids & 1u << HDR_X_REQUEST_ID) ||
        !proxy_client_request_id(hreq, r->client_request_id, sizeof(r->client_request_id)))
        r->client_request_id[0] = '\0';
    {
        /* baton's hop of the trace: its own span, the client's trace kept */
        char tp[56];
        r->trace_in = (hs.ids & 1u << HDR_TRACEPARENT) && proxy_traceparent(hreq, tp);
        trace_begin(r->trace_in ? tp : NULL, rng_next(w->rng), r->trace_in ? 0 : rng_next(w->rng),
                    r->trace_in ? 0 : rng_next(w->rng), &r->trace);
        trace_traceparent(&r->trace, r->traceparent);
        r->has_trace = true;
    }

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
    if (why == REASON_ALLOWED && cfg->health_path &&
        (hreq->method == HTTP1_METHOD_GET || hreq->method == HTTP1_METHOD_HEAD) &&
        pr.path_len == strlen(cfg->health_path) &&
        memcmp(pr.path, cfg->health_path, pr.path_len) == 0) {
        serve_health(c, hreq, head_len, body_pending);
        return;
    }
    if (why == REASON_ALLOWED)
        copy_request_fields(c, hreq, &hs, pr.path, pr.path_len, pr.query, pr.query_len, cfg);
    else
        copy_request_fields(c, hreq, &hs, hreq->origin, hreq->origin_len, NULL, 0, cfg);
    r->routed = true;
    if (why == REASON_ALLOWED && rt->url_keys && pr.path_len == sizeof(SIGNURL_ENDPOINT) - 1 &&
        memcmp(pr.path, SIGNURL_ENDPOINT, pr.path_len) == 0) {
        handle_sign(c, hreq, head_len, body_pending);
        return;
    }

    {
        const struct decide_limiter lim = {c, limit_in_flight, limit_rate};
        snap = (struct decide_snapshot){cfg, rt->policies, rt->authn, rt->url_keys, rt->classes};
        decide_input(r, hreq, &hs, &pr, why, &dr);
        decide_request(&snap, &dr, rt->caches[w->id % rt->n_workers], &c->token_hint, &lim, &r->d);
    }
    if (r->d.have_ar)
        metrics_token_cache(w->mw, r->d.ar.cache_hit);
    if (r->d.link) {
        r->link_op = "use";
        r->link_method = http1_method_name(hreq->method);
        r->link_path = r->path;
        r->link_path_len = r->path_len; /* the query is the record's request.query */
        if (r->d.link_err[0] && log_budget(w))
            log_msg(LOG_INFO, "signed URL refused (request %s): %s", r->request_id, r->d.link_err);
    }
    if (r->d.reason == REASON_UNKNOWN_KID && r->d.ar.kid_wait) {
        /* a key rotated in since the last fetch, most likely: wait for the
         * refresh in flight, then decide on the new set */
        if (conn_park(c, r->d.ar.issuer))
            return;
        r->d.reason = REASON_KEYS_UNAVAILABLE; /* it outlived fetch_timeout_ms: we cannot tell */
        r->d.decision = DECISION_ERROR;
    }
    if (r->d.pending) {
        /* Reading goes on (stopping and restarting it costs two epoll_ctl
         * a request); on_read stops it if the client sends more meanwhile. */
        r->head_len = head_len;
        r->body_pending = body_pending;
        c->state = CS_RATE_WAIT;
        return;
    }
decided:
    if (r->d.policy && !r->step)
        r->step = runtime_step(rt, r->d.policy);
    if (r->d.decision == DECISION_DENY || r->d.decision == DECISION_ERROR) {
        why = r->d.reason;
        dec = r->d.decision;
        if (r->d.retry_after_s) {
            snprintf(retry_hdr, sizeof(retry_hdr), "Retry-After: %u", r->d.retry_after_s);
            extra = retry_hdr;
        }
        goto refuse;
    }
    up = r->step->target->up;
    if (hreq->body == HTTP1_BODY_CHUNKED) {
        why = prescan_chunked(in, head_len, r->d.max_body);
        if (why != REASON_ALLOWED)
            goto refuse;
    }

    if (up->identity == IDENTITY_GOOGLE) {
        if (!server_g.identity) {
            why = REASON_IDENTITY_UNAVAILABLE;
        } else {
            why = identity_get(server_g.identity, policy_service_account(r->d.policy), up->audience,
                               &r->idt);
            r->have_idt = why == REASON_ALLOWED;
        }
        if (why != REASON_ALLOWED) {
            dec = DECISION_ERROR;
            goto refuse;
        }
    }

    if (rt->assertion && up->caller_assertion) {
        char aerr[256];
        a_line = assertion_line(w, rt, r, &hs, &a_len, aerr, sizeof(aerr));
        if (!a_line) {
            /* ours, not the caller's: retryable, and nothing is forwarded */
            if (log_budget(w)) {
                char fields[256];
                snprintf(fields, sizeof(fields), "\"reason\":\"%s\",\"request_id\":\"%s\"",
                         reason_code(REASON_ASSERTION_UNAVAILABLE), r->request_id);
                log_msg_fields(LOG_ERROR, fields, "caller assertion not signed: %s", aerr);
            }
            why = REASON_ASSERTION_UNAVAILABLE;
            dec = DECISION_ERROR;
            extra = "Retry-After: 1";
            goto refuse;
        }
    }

    if (audit_reserve(server_g.audit, &r->rsv) < 0) {
        why = REASON_AUDIT_UNAVAILABLE;
        dec = DECISION_ERROR;
        goto refuse;
    }
    r->reserved = true;
    if (r->d.link && r->d.lp.uses && cfg->redis.enabled) {
        /* the last check before forwarding: a refusal above spends no use;
         * counted in the shared Redis, parked like the rate decision */
        char key[REDIS_KEY_MAX];
        if (redis_link_key(key, sizeof(key), r->d.link_id) == 0 &&
            redis_link_use(w->redis, key, r->d.lp.uses,
                           r->d.lp.exp + (int64_t)cfg->url_signing.leeway_s +
                               SIGNURL_SHARED_GRACE_S,
                           cfg->redis.timeout_ms, on_rate_reply, c, &r->rate_wait) == 0) {
            r->head_len = head_len;
            r->body_pending = body_pending;
            r->park_link = true;
            c->state = CS_RATE_WAIT;
            return;
        }
        verdict = REDIS_FAILED;
    link_decided:
        if (verdict == REDIS_DENY) {
            why = REASON_URL_USED;
            goto refuse;
        }
        if (verdict != REDIS_ALLOW) {
            /* Unverifiable, whatever on_failure says: a link is a credential */
            link_use_failed(c);
            why = REASON_OVERLOADED;
            dec = DECISION_ERROR;
            extra = "Retry-After: 1";
            goto refuse;
        }
    } else if (r->d.link && r->d.lp.uses) {
        /* the last check before forwarding: a refusal above spends no use */
        unsigned char id[SIGNURL_ID_BYTES];
        signurl_link_id(&r->d.lp, id);
        switch (server_g.link_uses.consume(server_g.link_uses.ctx, id, r->d.lp.uses,
                                           r->d.lp.exp + (int64_t)rt->cfg->url_signing.leeway_s,
                                           r->ts_ms / 1000)) {
        case SIGNURL_USE_OK:
            break;
        case SIGNURL_USE_USED:
            why = REASON_URL_USED;
            goto refuse;
        case SIGNURL_USE_UNAVAILABLE:
            why = REASON_OVERLOADED;
            dec = DECISION_ERROR;
            extra = "Retry-After: 1";
            goto refuse;
        }
    }

    head = proxy_head_buffer(w->proxy);
    {
        struct proxy_head_params hp = {
            .req = hreq,
            .path = pr.path,
            .path_len = pr.path_len,
            .query = r->d.link && !r->d.lp.base_len ? NULL : pr.query, /* never baton_* */
            .query_len = r->d.link ? r->d.lp.base_len : pr.query_len,
            .up = up,
            .from_trusted_proxy = cfg->n_trusted_proxies &&
                                  config_is_trusted_proxy(cfg, (struct sockaddr *)&c->peer_sa),
            .client_ip = c->peer_ip,
            .request_id = fwd_request_id(r),
            .traceparent = r->has_trace ? r->traceparent : NULL,
            .keep_tracestate = r->trace_in,
            .token_value = r->have_idt ? r->idt.header_value : NULL,
            .body = hreq->body,
            .content_length = hreq->content_length,
            .assertion_name = cfg->assertion.enabled ? cfg->assertion.header : NULL,
            .assertion_line = a_line,
            .assertion_line_len = a_len,
        };
        proxy_build_head(&hp, head);
    }
    timeout_ms = policy_limits(r->d.policy)->timeout_ms ? policy_limits(r->d.policy)->timeout_ms
                                                        : up->timeout_ms;
    {
        struct proxy_forward_params fp = {
            .target = r->step->target,
            .client = c->bev,
            .client_rd = c->rd,
            .head = head,
            .method = hreq->method,
            .body = hreq->body,
            .content_length = hreq->content_length,
            .max_body = r->d.max_body,
            .timeout_ms = timeout_ms,
            .expect_100 = hreq->expect_100,
            .client_keep_alive = r->keep_alive,
            .client_version = hreq->version,
            .request_id = fwd_request_id(r),
            .body_timeout_ms = cfg->limits.body_timeout_ms,
        };
        evbuffer_drain(in, head_len); /* hreq's slices die here */
        r->forwarded = true;
        c->resp_mark = c->out_drained + evbuffer_get_length(bufferevent_get_output(c->bev));
        c->state = CS_BUSY;
        timer_clear(c);
        c->ex = proxy_forward(w->proxy, &fp, on_proxy_done, c);
    }
    return;

refuse:
    if (!extra && reason_status(why) == 401)
        extra = why == REASON_TOKEN_MISSING ? "WWW-Authenticate: Bearer"
                                            : "WWW-Authenticate: Bearer error=\"invalid_token\"";
    skip_body(in, hreq, head_len, body_pending);
    deny(c, why, dec, extra, body_pending || why == REASON_BODY_TOO_LARGE);
}

static void handle_request(struct conn *c, const struct http1_request *hreq, size_t head_len)
{
    handle_stages(c, hreq, head_len, false, REDIS_ALLOW, 0);
}

/* The global rate verdict of a parked request (on the worker, from the Redis
 * client's loop): parse the head again from the same bytes (still at the front
 * of the input: whatever was read meanwhile only follows them) and go on from
 * the rate stage, with conn_process's deferral of frees and closes. */
static void on_rate_reply(void *arg, enum redis_verdict v, unsigned retry_after_s)
{
    struct conn *c = arg;
    struct request *r = &c->req;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    struct http1_limits lim;
    struct http1_request hreq;
    size_t hl = 0;
    const char *buf;

    r->rate_wait = NULL;
    if (c->state != CS_RATE_WAIT)
        return;
    c->state = CS_HEAD;
    if (r->reads_paused)
        conn_read_on(c);
    memset(&lim, 0, sizeof(lim));
    lim.max_header_bytes = r->rt->cfg->limits.max_header_bytes;
    lim.max_uri_bytes = r->rt->cfg->limits.max_uri_bytes;
    lim.classes = r->rt->classes;
    c->processing = true;
    buf = (const char *)evbuffer_pullup(in, (ssize_t)r->head_len);
    if (!buf || http1_parse_request(buf, r->head_len, &lim, &hreq, &hl) != HTTP1_OK ||
        hl != r->head_len) {
        send_error(c, REASON_INTERNAL, NULL,
                   true); /* cannot happen: the same bytes parsed before */
        finish(c, REASON_INTERNAL, DECISION_ERROR, 500, false);
    } else {
        handle_stages(c, &hreq, hl, true, v, retry_after_s);
    }
    c->processing = false;
    if (c->free_pending)
        conn_free(c);
    else if (c->state == CS_CLOSING)
        closing_write(c->bev, c);
    else if (c->state == CS_HEAD)
        conn_process(c); /* a pipelined head behind a refused one */
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
    r->upstream_bytes = o->response_bytes;
    if (why == REASON_ALLOWED) {
        d = r->d.would_deny ? DECISION_WOULD_DENY : DECISION_ALLOW;
        finish(c, r->d.would_deny ? r->d.deny_reason : REASON_ALLOWED, d, o->upstream_status,
               o->client_reusable);
        return;
    }
    d = (why == REASON_BODY_TOO_LARGE || why == REASON_BAD_FRAMING || why == REASON_BODY_TIMEOUT)
            ? DECISION_DENY
            : DECISION_ERROR;
    if (why != REASON_CLIENT_CLOSED && why != REASON_BODY_TOO_LARGE && why != REASON_BAD_FRAMING &&
        why != REASON_BODY_TIMEOUT && log_budget(c->w)) {
        /* which upstream, the address tried and what failed, precisely */
        char fields[1200], err[400], trace[400] = "";
        const char *name = r->step ? r->step->target->up->name : "";
        json_escape(err, sizeof(err), o->error, strlen(o->error));
        if (r->has_trace)
            trace_log_fields(&r->trace, trace, sizeof(trace));
        snprintf(fields, sizeof(fields),
                 "\"reason\":\"%s\",\"request_id\":\"%s\",%s%s%s\"upstream\":\"%s\","
                 "\"address\":\"%s\",\"error\":\"%s\"%s",
                 reason_code(why), r->request_id,
                 r->client_request_id[0] ? "\"client_request_id\":\"" : "", r->client_request_id,
                 r->client_request_id[0] ? "\"," : "", name, o->address, err, trace);
        if (o->error[0])
            log_msg_fields(LOG_WARNING, fields, "upstream %s (%s) failed: %s", name, o->address,
                           o->error);
        else
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

void conn_free(struct conn *c)
{
    struct worker *w = c->w;

    if (c->processing) { /* conn_process frees it on its way out */
        c->free_pending = true;
        return;
    }
    if (c->state == CS_RATE_WAIT) {
        /* Parked on Redis when the client went away (or at an abort): the
         * request still gets its record. */
        bool aborted = w->draining;
        redis_cancel(c->req.rate_wait);
        c->req.rate_wait = NULL;
        c->state = CS_BUSY;
        c->processing = true;
        if (aborted)
            send_error(c, REASON_DRAIN_ABORTED, NULL, true);
        finish(c, aborted ? REASON_DRAIN_ABORTED : REASON_CLIENT_CLOSED, DECISION_ERROR,
               aborted ? 503 : 0, false);
        c->processing = false;
    }
    if (c->ex) {
        struct proxy_exchange *ex = c->ex;
        c->ex = NULL;
        proxy_abort(ex); /* runs on_proxy_done -> finish -> ... -> conn_next */
    }
    evtimer_del(&c->timer);
    c->timer_at_ns = c->deadline_ns = 0;
    proxy_reader_free(c->rd);
    if (c->bev)
        bufferevent_free(c->bev);
    request_release(&c->req);
    list_remove(&c->node);
    w->n_conns--;
    free(c->arena);
    free(c);
    atomic_fetch_sub(&server_g.n_conns, 1);
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
    conn_read_on(c);
    arm_timer(c, 2, LINGER_MS, mono_ns());
}

static void conn_close(struct conn *c)
{
    c->state = CS_CLOSING;
    bufferevent_setcb(c->bev, NULL, closing_write, linger_event, c);
    conn_read_off(c);
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    bufferevent_enable(c->bev, EV_WRITE);
    /* A client that never reads its response is dropped after the idle timeout. */
    arm_timer(c, 0, c->w->rt ? c->w->rt->cfg->limits.idle_timeout_ms : 10000, mono_ns());
    if (!c->processing)
        closing_write(c->bev, c);
}

/* After a request: close, or wait for / process the next head. `now`: the
 * caller's mono_ns reading at the request's end, or 0 to read the clock. */
static void conn_next(struct conn *c, bool reusable, uint64_t now)
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
    c->park_deadline_ns = 0;
    if (c->arena_cap > ARENA_KEEP) {
        free(c->arena);
        c->arena = NULL;
        c->arena_cap = 0;
    }
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    bufferevent_set_timeouts(c->bev, NULL, NULL);
    proxy_reader_timeout(c->rd, NULL);
    bufferevent_setwatermark(c->bev, EV_WRITE, PROXY_HIGH_WATER / 2, 0);
    proxy_reader_watermark(c->rd, 0);
    conn_read_on(c);
    proxy_flush(c->bev); /* the response (or its tail), now */
    timer_clear(c);
    if (evbuffer_get_length(in) == 0) {
        /* the idle timeout runs from the end of the last request */
        arm_timer(c, 0, w->rt ? w->rt->cfg->limits.idle_timeout_ms : 60000, now ? now : mono_ns());
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
            conn_read_off(c);
            break;
        }
        rt = server_worker_rt(w);
        if (!c->head_started) {
            c->head_started = true;
            c->head_start_ns = mono_ns();
            arm_timer(c, 1, rt->cfg->limits.header_timeout_ms, c->head_start_ns);
        }
        memset(&lim, 0, sizeof(lim));
        lim.max_header_bytes = rt->cfg->limits.max_header_bytes;
        lim.max_uri_bytes = rt->cfg->limits.max_uri_bytes;
        lim.classes = rt->classes;
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
        if (rt->url_keys && sign_body_incomplete(&hreq, head_len, len)) {
            c->parse_prev = 0; /* the header deadline still runs */
            if (hreq.expect_100 && len == head_len && !c->req.continue_sent) {
                /* no body byte yet: ask for it, once (c->req is cleared
                 * between requests and at handle_request) */
                evbuffer_add(out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
                c->req.continue_sent = true;
            }
            break;
        }
        timer_clear(c);
        c->parse_prev = 0;
        handle_request(c, &hreq, head_len);
    }
    c->processing = false;
    if (c->free_pending)
        conn_free(c);
    else if (c->state == CS_CLOSING)
        closing_write(c->bev, c);
}

/*
 * Key rotation never fails a request: a token whose kid the issuer's key
 * set lacks, while a refresh of that set is in flight (authn kid_wait),
 * parks its connection instead of being refused. Nothing blocks: the head
 * stays unconsumed in the input, reading is off, the request's state is
 * released, and the connection waits for CMD_KEYS (any refresh ended:
 * jwks_set_refresh_listener) or its deadline, fetch_timeout_ms after it
 * first parked. Then the head is parsed and handled again from the start,
 * on the key set the refresh left: a kid still unknown with no refresh in
 * flight is 401 unknown_kid; a refresh still running at the deadline is our
 * failure, 503 keys_unavailable. Every parked request of every worker
 * shares the one refresh (jwks.c's unknown-kid limit). Returns false when
 * the deadline has passed: decide now.
 */
static bool conn_park(struct conn *c, const struct cfg_issuer *is)
{
    uint64_t now = mono_ns();

    if (!c->park_deadline_ns)
        c->park_deadline_ns = now + (uint64_t)is->fetch_timeout_ms * 1000000u;
    if (now >= c->park_deadline_ns)
        return false;
    request_release(&c->req);
    c->state = CS_PARKED;
    conn_read_off(c);
    arm_timer_at(c, c->park_deadline_ns, now);
    return true;
}

/* The refresh ended or the deadline came: handle the parked head again. */
void conn_unpark(struct conn *c)
{
    if (c->state != CS_PARKED)
        return;
    timer_clear(c);
    c->state = CS_HEAD;
    conn_read_on(c);
    conn_process(c);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    (void)bev;
    if (c->state == CS_RATE_WAIT) { /* more bytes while parked: none until the verdict */
        conn_read_off(c);
        c->req.reads_paused = true;
        return;
    }
    conn_process(c);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    (void)bev;
    /* Pipelined heads paused while responses were queued: go on. */
    if (c->state == CS_HEAD) {
        conn_read_on(c);
        if (evbuffer_get_length(bufferevent_get_input(c->bev)))
            conn_process(c);
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;
    if (c->state == CS_RATE_WAIT && (what & BEV_EVENT_EOF) && (what & BEV_EVENT_READING) &&
        !c->req.body_pending) {
        /* A half-close after a whole request, parked: the answer may still go
         * out (as the proxy allows while forwarding). */
        conn_read_off(c);
        c->req.reads_paused = true;
        return;
    }
    conn_free(c);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    (void)fd;
    (void)what;
    c->timer_at_ns = 0;
    if (!c->deadline_ns)
        return; /* armed for a deadline since cleared */
    {
        uint64_t now = mono_ns();
        if (now < c->deadline_ns) { /* armed for an earlier deadline: the rest */
            arm_timer_at(c, c->deadline_ns, now);
            return;
        }
    }
    c->deadline_ns = 0;
    if (c->state == CS_PARKED) { /* fetch_timeout_ms passed: decide now */
        conn_unpark(c);
        return;
    }
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
    "Content-Length: 23\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{\"error\":\"unavailable\"}";

void conn_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                 void *arg)
{
    struct worker *w = arg;
    struct runtime *rt = server_worker_rt(w);
    long max = rt ? (long)rt->cfg->limits.max_connections : 10000;
    struct conn *c;
    int one = 1;
    (void)l;

    if (server_g.conn_cap > 0 && max > server_g.conn_cap)
        max = server_g.conn_cap;
    if (atomic_fetch_add(&server_g.n_conns, 1) >= max) {
        atomic_fetch_sub(&server_g.n_conns, 1);
        (void)!send(fd, overload_response, sizeof(overload_response) - 1,
                    MSG_DONTWAIT | MSG_NOSIGNAL);
        close(fd);
        metrics_conn_refused(w->mw);
        return;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c = xcalloc(1, sizeof(*c));
    c->w = w;
    memcpy(&c->peer_sa, sa,
           (size_t)salen < sizeof(c->peer_sa) ? (size_t)salen : sizeof(c->peer_sa));
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
        atomic_fetch_sub(&server_g.n_conns, 1);
        return;
    }
    c->rd = proxy_reader_new(c->bev);
    if (server_g.audit_cfg.fsync == FSYNC_ALWAYS)
        evbuffer_add_cb(bufferevent_get_output(c->bev), out_drained_cb, c);
    evtimer_assign(&c->timer, w->base, on_timer, c);
    list_push_front(&w->conns, &c->node);
    w->n_conns++;
    metrics_conn_open(1);
    c->state = CS_HEAD;
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    bufferevent_setwatermark(c->bev, EV_WRITE, PROXY_HIGH_WATER / 2, 0);
    conn_read_on(c);
    arm_timer(c, 0, rt ? rt->cfg->limits.idle_timeout_ms : 60000, mono_ns());
}
