/*
 * otlp.c: span export as OTLP/HTTP JSON (otlp.h states the contract).
 *
 * The wire format is the OTLP specification's (opentelemetry-proto
 * docs/specification.md, "OTLP/HTTP" and "JSON Protobuf Encoding";
 * https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding): the
 * ExportTraceServiceRequest message in proto3's JSON mapping, POSTed to
 * {endpoint}/v1/traces with Content-Type: application/json, except that
 * traceId, spanId and parentSpanId are hex strings (32 and 16 characters),
 * not base64 as proto3 would spell bytes. Keys are lowerCamelCase, enums
 * (kind, status.code) integers, 64-bit integers (fixed64 times, intValue)
 * decimal strings, as proto3 JSON writes them. Retryable responses are the
 * spec's "Retryable Response Codes": 429, 502, 503, 504 (and no response).
 *
 * The queue is a ring of fixed-size records under one mutex, allocated once
 * at start: a worker copies one record in (or counts a drop), the background
 * thread copies a batch out and builds the JSON outside the lock. A tick of
 * OTLP_TICK_MS (or schedule_delay_ms when shorter) sends when a whole batch
 * waits or the oldest record has waited schedule_delay_ms; one POST is in
 * flight at a time, and a completed one sends the next whole batch at once.
 */
#include "otlp.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <event2/event.h>

#include "buf.h"
#include "http_client.h"
#include "log.h"
#include "util.h"

#define OTLP_TICK_MS 200
#define OTLP_BACKOFF_MS 500           /* 0.5, 1, 2 s between the attempts */
#define OTLP_RESPONSE_MAX (64 * 1024) /* ExportTraceServiceResponse: a partial_success at most */
#define OTLP_LOG_EVERY_NS 10000000000ull

static struct {
    bool on;
    struct event_base *bg;
    struct http_client *http;
    char *url; /* {endpoint}/v1/traces, owned */
    unsigned batch, delay_ms, timeout_ms;
    char instance_id[37];   /* a UUID v4, this process's service.instance.id */
    struct cfg_tracing cfg; /* as started; cfg.otlp_endpoint owned */

    /* the queue, under mu */
    pthread_mutex_t mu;
    struct otlp_span *ring; /* owned, cap records */
    size_t cap, head, n;
    uint64_t oldest_ns; /* mono_ns when the queue last went from empty to not */

    /* the export in flight or waiting for a retry (background thread) */
    struct event *tick, *retry;
    struct http_call *call;
    char *body; /* owned while a batch is pending */
    size_t body_spans;
    unsigned attempt;
    uint64_t last_log_ns;

    _Atomic uint64_t exported, dropped_queue, dropped_export, failures;
} X = {.mu = PTHREAD_MUTEX_INITIALIZER};

static _Atomic bool enabled;

bool otlp_enabled(void)
{
    return atomic_load_explicit(&enabled, memory_order_relaxed);
}

void otlp_stats(struct otlp_stats *out)
{
    out->exported = atomic_load(&X.exported);
    out->dropped_queue = atomic_load(&X.dropped_queue);
    out->dropped_export = atomic_load(&X.dropped_export);
    out->failures = atomic_load(&X.failures);
}

static unsigned spans_of(const struct otlp_span *s)
{
    return s->upstream ? 2 : 1;
}

void otlp_submit(const struct otlp_span *s)
{
    bool full;
    if (!otlp_enabled())
        return;
    pthread_mutex_lock(&X.mu);
    full = X.n == X.cap;
    if (!full) {
        if (X.n == 0)
            X.oldest_ns = mono_ns();
        memcpy(&X.ring[(X.head + X.n) % X.cap], s, sizeof(*s));
        X.n++;
    }
    pthread_mutex_unlock(&X.mu);
    if (full)
        atomic_fetch_add(&X.dropped_queue, spans_of(s));
}

/* ---- the JSON ------------------------------------------------------------- */

/* A JSON string, escaped (log.h json_escape: any bytes become valid JSON). */
static void add_json_str(struct buf *b, const char *s)
{
    char esc[6 * (OTLP_HOST_MAX + 1) + 1];
    size_t n = strlen(s);
    if (n > OTLP_HOST_MAX)
        n = OTLP_HOST_MAX;
    json_escape(esc, sizeof(esc), s, n);
    buf_addlit(b, "\"");
    buf_add(b, esc, strlen(esc));
    buf_addlit(b, "\"");
}

/* {"key":K,"value":{"stringValue":V}}, preceded by a comma unless first */
static void attr_str(struct buf *b, bool *first, const char *key, const char *v)
{
    buf_printf(b, "%s{\"key\":\"%s\",\"value\":{\"stringValue\":", *first ? "" : ",", key);
    add_json_str(b, v ? v : "");
    buf_addlit(b, "}}");
    *first = false;
}

static void attr_int(struct buf *b, bool *first, const char *key, long long v)
{
    buf_printf(b, "%s{\"key\":\"%s\",\"value\":{\"intValue\":\"%lld\"}}", *first ? "" : ",", key,
               v);
    *first = false;
}

/* OTLP Span.Kind and Status.StatusCode (trace.proto) */
enum { KIND_SERVER = 2, KIND_CLIENT = 3 };
enum { STATUS_UNSET = 0, STATUS_ERROR = 2 };

static void span_json(struct buf *b, const struct otlp_span *s)
{
    bool first = true;
    char name[2 * OTLP_NAME_MAX + 32];

    /* OpenTelemetry HTTP semantic conventions: "{method} {route}"; the step
     * names the route. A server span's status is an error on 5xx only. */
    snprintf(name, sizeof(name), "%s%s%s", s->method, s->step[0] ? " " : "", s->step);
    buf_printf(b, "{\"traceId\":\"%s\",\"spanId\":\"%s\",", s->trace_id, s->span_id);
    if (s->parent_id[0])
        buf_printf(b, "\"parentSpanId\":\"%s\",", s->parent_id);
    buf_addlit(b, "\"name\":");
    add_json_str(b, name);
    buf_printf(b,
               ",\"kind\":%d,\"startTimeUnixNano\":\"%" PRIu64 "\",\"endTimeUnixNano\":\"%" PRIu64
               "\",\"attributes\":[",
               KIND_SERVER, s->start_ns, s->end_ns);
    if (s->step[0])
        attr_str(b, &first, "baton.step", s->step);
    attr_str(b, &first, "baton.decision", s->decision);
    attr_str(b, &first, "baton.reason", s->reason);
    attr_str(b, &first, "http.request.method", s->method);
    attr_str(b, &first, "url.path", s->path);
    attr_int(b, &first, "http.response.status_code", s->status);
    buf_printf(b, "],\"status\":{\"code\":%d}}", s->status >= 500 ? STATUS_ERROR : STATUS_UNSET);

    if (!s->upstream)
        return;
    first = true;
    snprintf(name, sizeof(name), "%s %s", s->method, s->up_name);
    buf_printf(b, ",{\"traceId\":\"%s\",\"spanId\":\"%016" PRIx64 "\",\"parentSpanId\":\"%s\",",
               s->trace_id, s->up_span ? s->up_span : 1, s->span_id);
    buf_addlit(b, "\"name\":");
    add_json_str(b, name);
    buf_printf(b,
               ",\"kind\":%d,\"startTimeUnixNano\":\"%" PRIu64 "\",\"endTimeUnixNano\":\"%" PRIu64
               "\",\"attributes\":[",
               KIND_CLIENT, s->up_start_ns, s->up_end_ns);
    attr_str(b, &first, "baton.upstream", s->up_name);
    attr_str(b, &first, "server.address", s->up_host);
    attr_int(b, &first, "server.port", s->up_port);
    attr_str(b, &first, "http.request.method", s->method);
    if (s->up_status)
        attr_int(b, &first, "http.response.status_code", s->up_status);
    /* a client span is an error on no response or 4xx/5xx */
    buf_printf(b, "],\"status\":{\"code\":%d}}",
               s->up_status == 0 || s->up_status >= 400 ? STATUS_ERROR : STATUS_UNSET);
}

char *otlp_build_json(const struct otlp_span *spans, size_t n, const char *instance_id,
                      size_t *n_spans)
{
    struct buf b = {0};
    bool first = true;
    size_t count = 0;

    buf_reserve(&b, 4096);
    buf_addlit(&b, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[");
    attr_str(&b, &first, "service.name", "baton");
    attr_str(&b, &first, "service.instance.id", instance_id);
#ifdef PACKAGE_VERSION
    attr_str(&b, &first, "service.version", PACKAGE_VERSION);
#endif
    buf_addlit(&b, "]},\"scopeSpans\":[{\"scope\":{\"name\":\"baton\"},\"spans\":[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            buf_addlit(&b, ",");
        span_json(&b, &spans[i]);
        count += spans_of(&spans[i]);
    }
    buf_addlit(&b, "]}]}]}");
    if (n_spans)
        *n_spans = count;
    return buf_take(&b, NULL);
}

/* ---- the export ----------------------------------------------------------- */

/* Takes up to `max` records off the queue and builds their body; NULL when empty. */
static char *take_batch(size_t max, size_t *n_spans)
{
    struct otlp_span *tmp;
    size_t n;
    char *body;

    pthread_mutex_lock(&X.mu);
    n = X.n < max ? X.n : max;
    if (n == 0) {
        pthread_mutex_unlock(&X.mu);
        return NULL;
    }
    tmp = xcalloc(n, sizeof(*tmp));
    for (size_t i = 0; i < n; i++)
        memcpy(&tmp[i], &X.ring[(X.head + i) % X.cap], sizeof(*tmp));
    X.head = (X.head + n) % X.cap;
    X.n -= n;
    if (X.n)
        X.oldest_ns = mono_ns();
    pthread_mutex_unlock(&X.mu);
    body = otlp_build_json(tmp, n, X.instance_id, n_spans);
    free(tmp);
    return body;
}

static void log_failure(const char *why)
{
    uint64_t now = mono_ns();
    if (X.last_log_ns && now - X.last_log_ns < OTLP_LOG_EVERY_NS)
        return;
    X.last_log_ns = now;
    log_msg(LOG_WARNING,
            "trace export to %s failed: %s (spans dropped after %d attempts; "
            "see baton_trace_export_failures_total)",
            X.url, why, OTLP_ATTEMPTS);
}

static void send_pending(void);

static void drop_pending(void)
{
    atomic_fetch_add(&X.dropped_export, X.body_spans);
    free(X.body);
    X.body = NULL;
    X.body_spans = 0;
    X.attempt = 0;
}

static bool retryable(const struct http_response *r)
{
    if (r->error != HTTP_ERR_NONE)
        return r->error != HTTP_ERR_REFUSED && r->error != HTTP_ERR_INTERNAL;
    return r->status == 429 || r->status == 502 || r->status == 503 || r->status == 504;
}

/* A whole batch waits, or the oldest record has waited schedule_delay_ms. */
static void next_batch(bool whole_only)
{
    size_t n;
    uint64_t oldest;
    pthread_mutex_lock(&X.mu);
    n = X.n;
    oldest = X.oldest_ns;
    pthread_mutex_unlock(&X.mu);
    if (X.body || X.call || n == 0)
        return;
    if (n < X.batch && (whole_only || mono_ns() - oldest < (uint64_t)X.delay_ms * 1000000ull))
        return;
    X.body = take_batch(X.batch, &X.body_spans);
    X.attempt = 0;
    if (X.body)
        send_pending();
}

static void on_export(struct http_response *resp, void *arg)
{
    char why[320];
    (void)arg;
    X.call = NULL;
    if (resp->error == HTTP_ERR_NONE && resp->status >= 200 && resp->status < 300) {
        atomic_fetch_add(&X.exported, X.body_spans);
        free(X.body);
        X.body = NULL;
        X.body_spans = 0;
        X.attempt = 0;
        http_response_free(resp);
        next_batch(true);
        return;
    }
    atomic_fetch_add(&X.failures, 1);
    if (resp->error != HTTP_ERR_NONE)
        snprintf(why, sizeof(why), "%s: %s", http_error_name(resp->error), resp->msg);
    else
        snprintf(why, sizeof(why), "HTTP %d", resp->status);
    if (retryable(resp) && ++X.attempt < OTLP_ATTEMPTS) {
        unsigned ms = OTLP_BACKOFF_MS << (X.attempt - 1);
        struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
        evtimer_add(X.retry, &tv);
    } else {
        log_failure(why);
        drop_pending();
    }
    http_response_free(resp);
}

static void send_pending(void)
{
    static const char *const hdrs[] = {"Content-Type: application/json"};
    struct http_request req = {
        .method = "POST",
        .url = X.url,
        .headers = hdrs,
        .n_headers = 1,
        .body = X.body,
        .body_len = strlen(X.body),
        .timeout_ms = X.timeout_ms,
        .max_body = OTLP_RESPONSE_MAX,
        .allow_http = true, /* the config admits plain http to loopback only */
    };
    X.call = http_client_submit(X.http, &req, on_export, NULL);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    if (X.body && !X.call)
        send_pending();
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    next_batch(false);
}

int otlp_start(struct event_base *bg, struct http_client *http, const struct cfg_tracing *cfg,
               char *err, size_t errlen)
{
    unsigned char r[16];
    size_t elen;
    unsigned tick_ms;
    struct timeval tv;

    if (!cfg->enabled || X.on)
        return 0;
    if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
        snprintf(err, errlen, "trace export: no random bytes for the instance id");
        return -1;
    }
    r[6] = (unsigned char)((r[6] & 0x0f) | 0x40); /* UUID version 4 */
    r[8] = (unsigned char)((r[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    snprintf(X.instance_id, sizeof(X.instance_id),
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", r[0], r[1],
             r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13], r[14],
             r[15]);
    elen = strlen(cfg->otlp_endpoint);
    while (elen && cfg->otlp_endpoint[elen - 1] == '/')
        elen--;
    X.url = xasprintf("%.*s/v1/traces", (int)elen, cfg->otlp_endpoint);
    X.cfg = *cfg;
    X.cfg.otlp_endpoint = xstrdup(cfg->otlp_endpoint);
    X.bg = bg;
    X.http = http;
    X.batch = cfg->max_export_batch_size;
    X.delay_ms = cfg->schedule_delay_ms;
    X.timeout_ms = cfg->export_timeout_ms;
    X.cap = cfg->max_queue_size;
    X.ring = xcalloc(X.cap, sizeof(*X.ring));
    X.head = X.n = 0;
    X.tick = event_new(bg, -1, EV_PERSIST, on_tick, NULL);
    X.retry = evtimer_new(bg, on_retry, NULL);
    if (!X.tick || !X.retry)
        abort();
    tick_ms = X.delay_ms < OTLP_TICK_MS ? X.delay_ms : OTLP_TICK_MS;
    tv.tv_sec = tick_ms / 1000;
    tv.tv_usec = (tick_ms % 1000) * 1000;
    event_add(X.tick, &tv);
    X.on = true;
    atomic_store(&enabled, true);
    log_msg(LOG_INFO, "exporting sampled spans to %s (OTLP/HTTP JSON)", X.url);
    return 0;
}

/* One blocking POST at shutdown; true when the collector took it. */
static bool send_sync(const char *body, unsigned timeout_ms)
{
    static const char *const hdrs[] = {"Content-Type: application/json"};
    struct http_request req = {
        .method = "POST",
        .url = X.url,
        .headers = hdrs,
        .n_headers = 1,
        .body = body,
        .body_len = strlen(body),
        .timeout_ms = timeout_ms,
        .max_body = OTLP_RESPONSE_MAX,
        .allow_http = true,
    };
    struct http_response *resp = http_fetch_sync(&req);
    bool ok = resp->error == HTTP_ERR_NONE && resp->status >= 200 && resp->status < 300;
    if (!ok)
        atomic_fetch_add(&X.failures, 1);
    http_response_free(resp);
    return ok;
}

void otlp_stop(void)
{
    uint64_t deadline;

    if (!X.on)
        return;
    atomic_store(&enabled, false);
    if (X.call)
        http_call_cancel(X.call);
    X.call = NULL;
    event_free(X.tick);
    event_free(X.retry);
    X.tick = X.retry = NULL;
    deadline = mono_ns() + (uint64_t)OTLP_SHUTDOWN_MS * 1000000ull;
    for (;;) {
        uint64_t now = mono_ns();
        unsigned left;
        if (!X.body)
            X.body = take_batch(X.batch, &X.body_spans);
        if (!X.body)
            break;
        if (now >= deadline) {
            drop_pending();
            continue; /* count what is left as dropped */
        }
        left = (unsigned)((deadline - now) / 1000000ull);
        if (left > X.timeout_ms)
            left = X.timeout_ms;
        if (send_sync(X.body, left ? left : 1)) {
            atomic_fetch_add(&X.exported, X.body_spans);
            free(X.body);
            X.body = NULL;
            X.body_spans = 0;
        } else {
            drop_pending();
            deadline = now; /* the collector is down: do not wait for it again */
        }
    }
    free(X.ring);
    X.ring = NULL;
    free(X.url);
    X.url = NULL;
    free(X.cfg.otlp_endpoint);
    X.cfg.otlp_endpoint = NULL;
    X.on = false;
}

bool otlp_same(const struct cfg_tracing *cfg)
{
    if (!X.on || !cfg->enabled)
        return X.on == cfg->enabled;
    return strcmp(X.cfg.otlp_endpoint, cfg->otlp_endpoint) == 0 &&
           X.cfg.max_queue_size == cfg->max_queue_size &&
           X.cfg.max_export_batch_size == cfg->max_export_batch_size &&
           X.cfg.schedule_delay_ms == cfg->schedule_delay_ms &&
           X.cfg.export_timeout_ms == cfg->export_timeout_ms;
}
