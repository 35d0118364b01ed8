/*
 * audit_witness.h: a second, create-only home for the records that anchor
 * the audit chain (docs/audit.md "Witness").
 *
 * The audit writer hands every `open` record and every checkpoint, once
 * written, to the witness, which stores it as one object per record named
 * `<log id>/<seq, 20 digits>.json` holding the record's line (newline
 * included), never overwriting: in a directory with O_EXCL, or in a Cloud
 * Storage bucket through the JSON API media upload with ifGenerationMatch=0,
 * authenticated with baton's own Google access token. A name that exists
 * already counts as witnessed only when its content is the same record.
 *
 * The witness runs on its own thread with its own event loop and HTTP client:
 * audit_witness_put only copies the record into a bounded queue and wakes it,
 * so neither the request path nor the audit writer ever waits on a bucket.
 * Records are taken in seq order, up to AUDIT_WITNESS_INFLIGHT uploads at once.
 * Failures are retried with exponential backoff (1 s doubling to 60 s) until
 * they succeed or the witness is freed; a full queue drops the record
 * (logged, counted).
 *
 * Threads: audit_witness_put and audit_witness_stats from any thread;
 * audit_witness_new and audit_witness_free once each, by one thread.
 */
#ifndef BATON_AUDIT_WITNESS_H
#define BATON_AUDIT_WITNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* Records waiting to be witnessed at most; more are dropped (counted). */
#define AUDIT_WITNESS_QUEUE 4096
/* Backoff after a failed attempt, doubling from min to max. */
#define AUDIT_WITNESS_BACKOFF_MIN_MS 1000u
#define AUDIT_WITNESS_BACKOFF_MAX_MS 60000u
/* Uploads in flight at once to a bucket (a directory takes one at a time). */
#define AUDIT_WITNESS_INFLIGHT 8
/* Each Cloud Storage call's time limit. */
#define AUDIT_WITNESS_TIMEOUT_MS 10000u

struct audit_witness;

struct audit_witness_stats {
    uint64_t written;   /* objects created */
    uint64_t existing;  /* already there with the same content */
    uint64_t conflicts; /* already there with other content, or not readable to compare */
    uint64_t failures;  /* attempts that failed (each is retried) */
    uint64_t dropped;   /* records never witnessed: queue full, or pending at shutdown */
    uint64_t pending;   /* records queued now */
};

/*
 * Builds the witness of `a` (a->witness_dir or a->witness_bucket; borrowed
 * for the call) and starts its thread. A bucket witness takes its access
 * token from the credentials of `g` (metadata server or service-account key).
 * Returns an owned witness, NULL when `a` names none (err ""), or NULL with a
 * message in err.
 */
struct audit_witness *audit_witness_new(const struct cfg_audit *a, const struct cfg_google *g,
                                        char *err, size_t errlen);

/* Queues the record `line` (len bytes, without newline; copied) of log
 * `log_id` at `seq`. Never blocks on I/O. */
void audit_witness_put(struct audit_witness *w, const char *log_id, uint64_t seq, const char *line,
                       size_t len);

void audit_witness_stats(struct audit_witness *w, struct audit_witness_stats *out);

/*
 * Lets the queue drain for at most flush_ms (the final checkpoint is
 * witnessed inside the shutdown window), then stops the thread and frees.
 * What is still queued is logged and counted as dropped. NULL is a no-op.
 */
void audit_witness_free(struct audit_witness *w, unsigned flush_ms);

/* The object name of a record, "<log id>/<seq, 20 digits>.json" (prefix not
 * included); out holds at least 64 bytes. Exposed for tests. */
void audit_witness_name(char out[64], const char *log_id, uint64_t seq);

#endif
