/*
 * otlp.h: baton's spans exported as OTLP/HTTP JSON (config "tracing",
 * README "Cloud Run serving").
 *
 * A sampled request yields one record (struct otlp_span): baton's SERVER
 * span (its own span id, the incoming traceparent's parent) and, when the
 * request was forwarded, a CLIENT child span for the upstream exchange. The
 * worker that finished the request copies the fixed-size record into a
 * bounded queue shared by every worker (a mutex held for one memcpy; never a
 * wait, never an allocation); a full queue drops the record and counts it.
 * The background thread takes batches off the queue every schedule_delay_ms
 * (or as soon as a whole batch waits), builds the JSON and POSTs it to
 * {otlp_endpoint}/v1/traces through http_client, one POST at a time. A
 * transport error, 429, 502, 503 or 504 is retried after 0.5, 1 and 2 s
 * (OTLP/HTTP "Retryable Response Codes"), then the batch is dropped; any
 * other status drops it at once. Both count as export failures and dropped
 * spans. At shutdown, after the workers stopped, what is left is sent in
 * blocking POSTs for at most OTLP_SHUTDOWN_MS.
 *
 * Threads: otlp_start, otlp_stop, otlp_same on the background thread (the one running
 * `bg`), before its loop runs and after it ended; otlp_enabled, otlp_submit
 * and otlp_stats from any thread; otlp_build_json is pure.
 */
#ifndef BATON_OTLP_H
#define BATON_OTLP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct event_base;
struct http_client;

#define OTLP_PATH_MAX 256 /* url.path: longer paths are cut (the audit record has them whole) */
#define OTLP_NAME_MAX 64  /* step and upstream names (config names are shorter) */
#define OTLP_HOST_MAX 256
#define OTLP_SHUTDOWN_MS 1500 /* the last flush, inside Cloud Run's 10 s after SIGTERM */
#define OTLP_ATTEMPTS 4       /* one POST and three retries */

/* One request's spans. Strings are copied in (truncated to their arrays);
 * decision and reason point at static strings (decision_name, reason_code). */
struct otlp_span {
    char trace_id[33];         /* 32 lowercase hex */
    char span_id[17];          /* baton's span */
    char parent_id[17];        /* the incoming traceparent's parent-id, or "" */
    uint64_t start_ns, end_ns; /* Unix time, nanoseconds */
    char method[16];
    char path[OTLP_PATH_MAX + 1];
    char step[OTLP_NAME_MAX + 1]; /* "" when no policy matched */
    const char *decision, *reason;
    int status; /* the status baton answered */
    /* the upstream exchange (CLIENT child), when forwarded */
    bool upstream;
    uint64_t up_span; /* its span id (a random word, never 0) */
    uint64_t up_start_ns, up_end_ns;
    char up_name[OTLP_NAME_MAX + 1];
    char up_host[OTLP_HOST_MAX + 1];
    int up_port;
    int up_status; /* the upstream's status, 0 when none arrived */
};

struct otlp_stats {
    uint64_t exported;       /* spans the collector accepted (2xx) */
    uint64_t dropped_queue;  /* spans dropped because the queue was full */
    uint64_t dropped_export; /* spans dropped after their export failed for good */
    uint64_t failures;       /* failed POSTs (every attempt) */
};

/*
 * Starts exporting per `cfg` (borrowed; copied) on `bg` through `http` (both
 * borrowed, must outlive otlp_stop). A disabled cfg is a no-op returning 0.
 * Returns -1 with a message in err when the queue cannot be set up.
 */
int otlp_start(struct event_base *bg, struct http_client *http, const struct cfg_tracing *cfg,
               char *err, size_t errlen);

/* Export is configured: sample new traces, and submit sampled requests. */
bool otlp_enabled(void);

/* Queues a copy of `s` (borrowed), or drops and counts it when the queue is
 * full or export is off. Never blocks beyond a memcpy under a mutex. */
void otlp_submit(const struct otlp_span *s);

/* Sends what is queued (blocking, at most OTLP_SHUTDOWN_MS), cancels the
 * POST in flight and frees everything. Safe when never started. */
void otlp_stop(void);

void otlp_stats(struct otlp_stats *out);

/* True when `cfg` (borrowed) is what export was started with (a reload
 * does not change it). Background thread. */
bool otlp_same(const struct cfg_tracing *cfg);

/*
 * The ExportTraceServiceRequest JSON for spans[0..n) (borrowed): one
 * resourceSpans with service.name "baton" and service.instance.id
 * `instance_id`, one scopeSpans (scope "baton"). Returns an owned
 * NUL-terminated string; *n_spans (optional) gets the number of spans.
 */
char *otlp_build_json(const struct otlp_span *spans, size_t n, const char *instance_id,
                      size_t *n_spans);

#endif
