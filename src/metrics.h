/*
 * metrics.h: request counters and latency histograms, exposed in the
 * Prometheus text format on the admin listener.
 *
 * The request path never takes a lock or an atomic read-modify-write here:
 * each worker thread owns one `struct metrics_worker` and is its only writer
 * (relaxed atomic stores of load+1, which compile to plain moves on x86-64),
 * and the admin thread sums the workers while rendering. The only shared
 * mutable counter is the open-connection gauge, one atomic add per
 * connection, not per request.
 *
 * Labels: requests are counted by (step, decision, reason, status); the
 * upstream latency histogram is kept per step. Steps come from
 * policies and change on reload, so each worker keeps a small open-addressing
 * table keyed by the label values; a new label set is inserted under the
 * worker's mutex (rare), which the renderer holds while it reads that table.
 * When the table is full, new label sets count under step="_overflow".
 *
 * metrics_render also writes the standard process metrics (process_*, from
 * /proc/self, as Prometheus' client libraries name them) and
 * baton_build_info.
 */
#ifndef BATON_METRICS_H
#define BATON_METRICS_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#include "reason.h"

struct evbuffer;
struct metrics_worker;

#define METRICS_STEP_MAX 128        /* a longer step label is cut */
#define METRICS_LABEL_SETS 1024     /* (step, decision, reason, status) sets per worker */
#define METRICS_STEP_HISTOGRAMS 256 /* per-step upstream histograms per worker */
#define METRICS_NO_STEP "_none"     /* requests refused before a route was chosen */

/* Creates the registry for `n_workers` workers (call once, before workers
 * start). Returns 0, or -1 when called twice. */
int metrics_init(unsigned n_workers);
/* Frees the registry; workers must have stopped. */
void metrics_shutdown(void);

/* Worker `id`'s counters (id < n_workers), borrowed until metrics_shutdown.
 * Only the thread serving that worker may pass it to the functions below. */
struct metrics_worker *metrics_worker(unsigned id);

/*
 * Whether metrics_request first tries the worker's last label set and upstream
 * histogram (on by default): a worker mostly counts the same step, decision
 * and status over and over. Off, every request looks its sets up by hash: the
 * plain way the tests compare with. Set before the workers run.
 */
void metrics_request_cache(bool on);

/*
 * Counts one finished request: `step` (NUL-terminated, borrowed for the call;
 * NULL or "" for a request refused before routing), its decision, its reason
 * and the status sent (0 when none could be sent). `total_ns` is the whole
 * request; `upstream_ns` the upstream exchange, 0 when nothing was forwarded.
 */
void metrics_request(struct metrics_worker *mw, const char *step, enum decision d,
                     enum reason reason, int status, uint64_t total_ns, uint64_t upstream_ns);
/* Counts a connection refused at max_connections, and an upstream connection
 * opened (pool miss) or reused (pool hit). */
void metrics_conn_refused(struct metrics_worker *mw);
void metrics_upstream_conn(struct metrics_worker *mw, int reused);

/* Counts one authentication, by whether the verified-token cache answered. */
void metrics_token_cache(struct metrics_worker *mw, int hit);

/* The open client connections gauge (all workers): +1 / -1. Thread-safe. */
void metrics_conn_open(int delta);
long metrics_conn_open_now(void);

/*
 * Appends the request metrics (counters, histograms, connection gauges) in
 * the Prometheus text format 0.0.4 to `out`. Thread-safe with the workers.
 */
void metrics_render(struct evbuffer *out);

/* Helpers for the admin listener to append other modules' figures in the same
 * format: one "# HELP", one "# TYPE" and one sample line. `labels` is either
 * NULL or pre-formatted label pairs without braces (`issuer="aws"`), whose
 * values the caller has escaped with metrics_label_escape. */
void metrics_write(struct evbuffer *out, const char *name, const char *type, const char *help,
                   const char *labels, double value);
/* The "# HELP" and "# TYPE" lines that open a family; its samples follow,
 * all in one group (the text format requires it). */
void metrics_write_header(struct evbuffer *out, const char *name, const char *type,
                          const char *help);
/* Only the sample line, for a family whose HELP/TYPE was already written. */
void metrics_write_sample(struct evbuffer *out, const char *name, const char *labels, double value);
/* Escapes a label value (backslash, double quote, newline) into out[cap]. */
void metrics_label_escape(char *out, size_t cap, const char *s);

#endif
