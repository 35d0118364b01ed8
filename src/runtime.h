/*
 * runtime.h: the immutable snapshot a request runs on (config, policy set,
 * key sets, authenticator, resolved upstreams, rate buckets), swapped
 * atomically on SIGHUP.
 *
 * A snapshot is refcounted. Each worker caches a reference to the current one
 * and re-reads it only when the published generation changed (one relaxed
 * atomic load per request); each request holds its own reference from head to
 * audit record, so in-flight requests finish on the snapshot they started
 * with. The last reference may drop on any thread, but the key sets belong to
 * the background event_base, so destruction is always handed to that thread.
 *
 * The only mutable state in a snapshot is the per-step token buckets (a mutex
 * each, taken only by steps that set rate_per_s) and the per-worker
 * verified-token caches (each touched by its own worker only).
 */
#ifndef BATON_RUNTIME_H
#define BATON_RUNTIME_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "diag.h"
#include "proxy.h"

struct event_base;
struct http_client;
struct policy;
struct policy_set;
struct authn;
struct authn_cache;
struct jwks;
struct rate_bucket;
struct signurl_keys;
struct runtime_inflight;
struct assertion_signer;
struct assertion_cache;

/* What the request path needs about one policy, found by policy pointer. */
struct runtime_step {
    const struct policy *policy;
    const struct proxy_target *target; /* its upstream, resolved */
    struct rate_bucket *bucket;        /* NULL: no rate limit */
    /* extensions (README "Shared limits on Redis") */
    char *rate_key;                    /* owned; rate_scope "global": its Redis key, else NULL */
    struct runtime_inflight *inflight; /* max_in_flight: the step's counter, else NULL */
};

struct runtime {
    uint64_t generation;
    struct baton_config *cfg;
    struct policy_set *policies;
    struct jwks *jwks;
    struct authn *authn;
    struct authn_cache **caches; /* one per worker */
    unsigned n_workers;
    struct proxy_target *targets; /* parallel to cfg->upstreams */
    struct runtime_step *steps;   /* sorted by policy pointer */
    size_t n_steps;
    bool needs_identity;                /* some step forwards to an identity "google" upstream */
    struct signurl_keys *url_keys;      /* url_signing's keys, NULL when not configured */
    struct assertion_signer *assertion; /* NULL: no "assertion" configured */
    struct assertion_cache **assertion_caches; /* one per worker, with assertion */
    /* owned: the request header classes of cfg and policies (hdrclass.h): the
     * built-in names, audit.record_headers, every require_headers name and the
     * caller assertion's header; the parse stamps each header by it */
    struct hdrclass *classes;
    /* private */
    _Atomic int refs_;
    struct runtime *next_; /* destruction queue */
};

/*
 * Must be called once before anything else, on the thread that runs `bg` (the
 * background base, created after evthread_use_pthreads), with the shared
 * HTTP client (borrowed, outlives every snapshot).
 */
void runtime_init(struct event_base *bg, struct http_client *http, unsigned n_workers);

/*
 * Loads config `path` and its policies, resolves upstreams, builds the key
 * sets (inheriting the current snapshot's loaded keys where the source is
 * unchanged) and the authenticator, and starts key refresh. On the background
 * thread (or before its loop runs). Returns an owned snapshot (refcount 1),
 * or NULL with every error in `d` (nothing is started then).
 */
struct runtime *runtime_build(const char *path, struct diags *d);

/* Makes `rt` current (takes over the caller's reference); the previous one is
 * released. Any thread. */
void runtime_publish(struct runtime *rt);
/* The current snapshot, with a new reference (NULL before the first publish). */
struct runtime *runtime_current(void);
/* The published generation, for a worker's cheap "changed?" test. */
uint64_t runtime_generation(void);

struct runtime *runtime_ref(struct runtime *rt);
/* Drops a reference; the last one hands destruction to the background thread
 * (or destroys at once after runtime_shutdown). NULL ok. */
void runtime_unref(struct runtime *rt);
/* Drops the current snapshot and makes later destructions synchronous: call
 * after the background loop and the workers stopped. */
void runtime_shutdown(void);

/* The step record of `p` in rt (never NULL for a policy of rt's set). */
const struct runtime_step *runtime_step(const struct runtime *rt, const struct policy *p);

/*
 * Takes one token from a step's bucket at monotonic time now_ns. Returns true
 * when allowed; false with *retry_after_s when over the rate: the whole
 * seconds until a token is back (5000 at 0.0002/s), at least 1 and at most
 * 2^31 - 1 (RFC 9111's largest delta-seconds).
 */
bool runtime_rate_take(struct rate_bucket *b, uint64_t now_ns, unsigned *retry_after_s);
/* For tests: a standalone bucket (owned; free with runtime_bucket_free). */
struct rate_bucket *runtime_bucket_new(double rate_per_s, unsigned burst, uint64_t now_ns);
void runtime_bucket_free(struct rate_bucket *b);

/*
 * Whether the running snapshot is what the files say (Prometheus'
 * config_last_reload_successful). runtime_publish of a snapshot records a
 * success at that moment; runtime_reload_refused records a refused reload
 * (the previous snapshot keeps serving, older than the files) with its first
 * error. Any thread.
 */
struct runtime_reload {
    bool ok;            /* the last load (start or SIGHUP) was taken */
    int64_t success_ms; /* wall clock of the running snapshot's load; 0: none yet */
    int64_t failure_ms; /* wall clock of the last refused reload; 0: none */
    uint64_t failures;  /* refused reloads since start */
    char error[512];    /* the refused reload's first error, "" when ok */
};
void runtime_reload_refused(const char *error);
void runtime_reload_status(struct runtime_reload *out);

/*
 * max_in_flight: one counter per step name for the whole process (all
 * workers), shared by every snapshot that has the step, so a reload neither
 * resets nor leaks the count of requests started on the previous snapshot
 * (each request leaves the counter it entered, which its snapshot reference
 * keeps alive). enter returns false, counting nothing, when `max` are already
 * in flight. Thread-safe (one atomic add each).
 */
bool runtime_inflight_enter(struct runtime_inflight *f, unsigned max);
void runtime_inflight_leave(struct runtime_inflight *f);
long runtime_inflight_now(const struct runtime_inflight *f);
/* For tests: a standalone counter, and the one a step of `rt` shares. */
struct runtime_inflight *runtime_inflight_new(void);
void runtime_inflight_unref(struct runtime_inflight *f);

#endif
