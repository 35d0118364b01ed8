/*
 * trace.c: W3C Trace Context for baton's hop and the Cloud Logging trace
 * fields (trace.h states the contract).
 *
 * The project id is process-wide and set at most once: an atomic pointer to
 * a static buffer written before the pointer is published, so workers read
 * it with one acquire load and never wait. The metadata fetch runs on the
 * background loop like every outbound call (http_client), off the request
 * path; a request logged before it lands carries the bare trace id.
 */
#include "trace.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "google.h"
#include "http_client.h"
#include "log.h"
#include "util.h"

#define PROJECT_ATTEMPTS 6 /* 1 + 2 + 4 + 8 + 16 s of backoff, then give up */
#define PROJECT_TIMEOUT_MS 2000

static _Atomic bool sample_new;

void trace_sample_new(bool on)
{
    atomic_store_explicit(&sample_new, on, memory_order_relaxed);
}

/* The 8 nibbles of `v` spread one a byte, nibble k in byte k (bits 8k..8k+3). */
static uint64_t spread_nibbles(uint32_t v)
{
    uint64_t x = v;

    x = (x | x << 16) & 0x0000ffff0000ffffull;
    x = (x | x << 8) & 0x00ff00ff00ff00ffull;
    return (x | x << 4) & 0x0f0f0f0f0f0f0f0full;
}

/* Each byte 0..15 of `x` as its lowercase hex digit: '0' + b, and 39 more
 * ('a' - '0' - 10) where b + 6 carries into bit 4, that is b >= 10. */
static uint64_t hex_bytes(uint64_t x)
{
    uint64_t letters = ((x + 0x0606060606060606ull) >> 4) & 0x0101010101010101ull;
    return x + 0x3030303030303030ull + letters * 39u;
}

/* The 8 digits of `v`, most significant first: byte 7 of the word first, so
 * one store of the word in big-endian order. */
static void put8(uint32_t v, char *out)
{
    uint64_t d = hex_bytes(spread_nibbles(v));
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    d = __builtin_bswap64(d);
#endif
    memcpy(out, &d, 8);
}

void trace_hex64(uint64_t v, char out[16])
{
    put8((uint32_t)(v >> 32), out);
    put8((uint32_t)v, out + 8);
}

void trace_hex64_plain(uint64_t v, char out[16])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++)
        out[i] = digits[(v >> (4 * (15 - i))) & 15];
}

void trace_begin(const char *incoming, uint64_t r1, uint64_t r2, uint64_t r3, struct trace_ctx *out)
{
    trace_hex64(r1 ? r1 : 1, out->span_id);
    out->span_id[16] = '\0';
    if (incoming) {
        memcpy(out->trace_id, incoming + 3, 32);
        memcpy(out->parent_id, incoming + 36, 16);
        out->parent_id[16] = '\0';
        out->sampled = (incoming[54] == '1' || incoming[54] == '3' || incoming[54] == '5' ||
                        incoming[54] == '7' || incoming[54] == '9' || incoming[54] == 'b' ||
                        incoming[54] == 'd' || incoming[54] == 'f'); /* flags bit 0 */
    } else {
        trace_hex64(r2, out->trace_id);
        trace_hex64(r3 ? r3 : 1, out->trace_id + 16);
        out->parent_id[0] = '\0';
        out->sampled = atomic_load_explicit(&sample_new, memory_order_relaxed);
    }
    out->trace_id[32] = '\0';
}

void trace_traceparent(const struct trace_ctx *t, char out[56])
{
    memcpy(out, "00-", 3);
    memcpy(out + 3, t->trace_id, 32);
    out[35] = '-';
    memcpy(out + 36, t->span_id, 16);
    memcpy(out + 52, t->sampled ? "-01" : "-00", 3);
    out[55] = '\0';
}

/* ---- the project ---------------------------------------------------------- */

static _Atomic(const char *) project;
static char project_buf[TRACE_PROJECT_MAX + 1];

static struct {
    struct http_client *http;
    struct event *timer;
    struct http_call *call;
    char *url;
    unsigned attempt;
} fetch;

const char *trace_project(void)
{
    return atomic_load_explicit(&project, memory_order_acquire);
}

size_t trace_log_fields(const struct trace_ctx *t, char *out, size_t cap)
{
    const char *p = trace_project();
    int n;
    if (p)
        n = snprintf(out, cap, ",\"logging.googleapis.com/trace\":\"projects/%s/traces/%s\"", p,
                     t->trace_id);
    else
        n = snprintf(out, cap, ",\"logging.googleapis.com/trace\":\"%s\"", t->trace_id);
    if (n < 0 || (size_t)n >= cap)
        goto full;
    n += snprintf(out + n, cap - (size_t)n,
                  ",\"logging.googleapis.com/spanId\":\"%s\","
                  "\"logging.googleapis.com/trace_sampled\":%s",
                  t->span_id, t->sampled ? "true" : "false");
    if ((size_t)n >= cap)
        goto full;
    return (size_t)n;
full:
    if (cap)
        out[0] = '\0';
    return 0;
}

/* A project id as GCP spells them: lowercase letters, digits, '-', and a
 * domain prefix ("example.com:my-project"). */
static bool project_ok(const char *s, size_t n)
{
    if (n == 0 || n > TRACE_PROJECT_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == ':'))
            return false;
    }
    return true;
}

static void set_project(const char *s, size_t n)
{
    memcpy(project_buf, s, n);
    project_buf[n] = '\0';
    atomic_store_explicit(&project, project_buf, memory_order_release);
}

static void fetch_start(evutil_socket_t fd, short what, void *arg);

static void on_project(struct http_response *resp, void *arg)
{
    const char *flavor = http_response_header(resp, "Metadata-Flavor");
    char why[300] = "";
    size_t n = resp->body_len;
    (void)arg;

    fetch.call = NULL;
    while (n && (resp->body[n - 1] == '\n' || resp->body[n - 1] == '\r'))
        n--;
    if (resp->error != HTTP_ERR_NONE)
        snprintf(why, sizeof(why), "%s", resp->msg);
    else if (resp->status != 200)
        snprintf(why, sizeof(why), "HTTP %d", resp->status);
    else if (!flavor || strcmp(flavor, "Google"))
        snprintf(why, sizeof(why), "the answer lacks Metadata-Flavor: Google");
    else if (!project_ok(resp->body, n))
        snprintf(why, sizeof(why), "not a project id");
    if (!why[0]) {
        set_project(resp->body, n);
        log_msg(LOG_INFO, "trace links use project %s (from the metadata server)", project_buf);
    } else if (++fetch.attempt < PROJECT_ATTEMPTS) {
        struct timeval tv = {(time_t)1 << (fetch.attempt - 1), 0};
        evtimer_add(fetch.timer, &tv);
    } else {
        log_msg(LOG_WARNING,
                "project id for trace links not learned from the metadata server "
                "(%s): log lines carry bare trace ids; set GOOGLE_CLOUD_PROJECT",
                why);
    }
    http_response_free(resp);
}

static void fetch_start(evutil_socket_t fd, short what, void *arg)
{
    static const char *const hdrs[] = {"Metadata-Flavor: Google"};
    struct http_request req = {
        .url = fetch.url,
        .headers = hdrs,
        .n_headers = 1,
        .timeout_ms = PROJECT_TIMEOUT_MS,
        .max_body = 1024,
        .allow_http = true,
        .allow_metadata_http = true,
    };
    (void)fd;
    (void)what;
    (void)arg;
    fetch.call = http_client_submit(fetch.http, &req, on_project, NULL);
}

void trace_project_start(struct event_base *bg, struct http_client *http,
                         const struct cfg_google *google)
{
    const char *env = getenv("GOOGLE_CLOUD_PROJECT"), *host;
    struct timeval now = {0, 0};

    if (env && *env) {
        if (project_ok(env, strlen(env)))
            set_project(env, strlen(env));
        else
            log_msg(LOG_WARNING, "GOOGLE_CLOUD_PROJECT is not a project id: ignored");
        return;
    }
    if (google->source != GOOGLE_METADATA || fetch.timer)
        return;
    host = google->metadata_host && *google->metadata_host ? google->metadata_host
                                                           : getenv("GCE_METADATA_HOST");
    if (!host || !*host)
        host = GOOGLE_DEFAULT_METADATA_HOST;
    fetch.http = http;
    fetch.url = xasprintf("http://%s/computeMetadata/v1/project/project-id", host);
    fetch.timer = evtimer_new(bg, fetch_start, NULL);
    if (!fetch.timer)
        abort();
    evtimer_add(fetch.timer, &now);
}

void trace_project_stop(void)
{
    if (fetch.call)
        http_call_cancel(fetch.call);
    fetch.call = NULL;
    if (fetch.timer)
        event_free(fetch.timer);
    fetch.timer = NULL;
    free(fetch.url);
    fetch.url = NULL;
}
