/*
 * trace.h: baton as a hop of a W3C Trace Context trace, and the trace
 * fields Cloud Logging links to Cloud Trace.
 *
 * Each request gets baton's own span id. A valid incoming `traceparent`
 * (proxy_traceparent) keeps its trace id and sampled flag; baton forwards
 * `00-<trace id>-<its own span id>-<flags>`, so the upstream's spans are
 * children of baton's. No or an invalid `traceparent`: a new trace id,
 * sampled only when baton exports its spans (trace_sample_new: otherwise a
 * sampled child would hang under a span no one ever sees), and the request's
 * `tracestate` is dropped with it (W3C Trace Context 3.3: a
 * tracestate is only meaningful beside the traceparent it came with).
 *
 * Log lines carry `logging.googleapis.com/trace` as
 * `projects/PROJECT/traces/TRACE_ID`, `logging.googleapis.com/spanId` and
 * `logging.googleapis.com/trace_sampled`. PROJECT is $GOOGLE_CLOUD_PROJECT,
 * else (Cloud Run does not set it) the metadata server's
 * `project/project-id`, fetched once at start on the background thread; until
 * it is known the trace field carries the bare trace id.
 *
 * Threads: trace_begin, trace_traceparent and trace_log_fields from any
 * thread (pure); trace_project_start on the background thread before its loop
 * runs; trace_project from any thread.
 */
#ifndef BATON_TRACE_H
#define BATON_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct event_base;
struct http_client;

#define TRACE_PROJECT_MAX 100 /* project ids are 6..30 characters; a cap all the same */

struct trace_ctx {
    char trace_id[33];  /* 32 lowercase hex */
    char span_id[17];   /* baton's own span: 16 lowercase hex */
    char parent_id[17]; /* the incoming traceparent's parent-id, "" for a new trace */
    bool sampled;
};

/*
 * Starts baton's span for a request: `incoming` is the request's validated
 * traceparent (55 characters, proxy_traceparent) or NULL; r1..r3 are random
 * words (the worker's generator): the new span id, and a new trace id when
 * incoming is NULL. Never yields an all-zero id.
 */
void trace_begin(const char *incoming, uint64_t r1, uint64_t r2, uint64_t r3,
                 struct trace_ctx *out);

/* The 16 lowercase hex digits of `v`, most significant first (no NUL): by
 * 8-byte words, not a table lookup per digit (trace_hex64_plain's value). */
void trace_hex64(uint64_t v, char out[16]);

/* The same digits one at a time: the plain way the tests hold it against. */
void trace_hex64_plain(uint64_t v, char out[16]);

/* New traces (no valid incoming traceparent) are sampled from now on when
 * `on` (span export is configured, otlp.h). Any thread; default off. */
void trace_sample_new(bool on);

/* The traceparent baton forwards: out[56], NUL-terminated. */
void trace_traceparent(const struct trace_ctx *t, char out[56]);

/*
 * The three Cloud Logging fields, each preceded by a comma, for
 * log_msg_fields: `,"logging.googleapis.com/trace":"projects/P/traces/T",
 * "logging.googleapis.com/spanId":"S","logging.googleapis.com/trace_sampled":B`.
 * Always terminated; returns the length written.
 */
size_t trace_log_fields(const struct trace_ctx *t, char *out, size_t cap);

/*
 * Learns the project for trace links: $GOOGLE_CLOUD_PROJECT when set, else,
 * when the Google credentials are "metadata", one GET of the metadata
 * server's project/project-id on `bg` through `http` (both borrowed; retried
 * with backoff a few times on failure, never on the request path). Call once.
 */
void trace_project_start(struct event_base *bg, struct http_client *http,
                         const struct cfg_google *google);

/* The project, or NULL while unknown. The string, once set, never changes. */
const char *trace_project(void);

/* Cancels a fetch in flight (before the http_client is freed). */
void trace_project_stop(void);

#endif
