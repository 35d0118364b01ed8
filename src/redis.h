/*
 * redis.h: the shared store of global rate limits (limits.rate_scope
 * "global") and of signed URL uses (signurl.h), one asynchronous hiredis
 * connection per worker.
 *
 * Each decision is one atomic operation on the Redis side: a GCRA (generic
 * cell rate algorithm) step in a Lua script, loaded once per connection with
 * SCRIPT LOAD and run with EVALSHA (EVAL again after a NOSCRIPT, as after a
 * failover to a replica that never saw the script). The script reads the
 * clock with Redis's own TIME, so the instances' clocks never matter, and
 * stores one number per (step, policy hash) key with a TTL that ends when the
 * key would be indistinguishable from an absent one, so idle keys vanish.
 * Accuracy: every decision is serialized on one key in one server, so over
 * any window of t seconds, however many instances share it, at most
 * rate_per_s * t + burst requests are admitted (the time is kept in
 * microseconds as a double: at most 0.25 us of rounding per admitted request).
 *
 * Leases (a step of rate_per_s >= REDIS_LEASE_MIN_RATE and burst >= 16): one
 * script call debits up to k tokens at once (fewer when fewer are there), the
 * asking request takes one and the worker keeps the rest, spending them
 * without a round trip, and asks for the next batch while a few remain (in
 * the spirit of Doorman's capacity leases and Envoy's quota assignments, with
 * Redis as the arbiter). k follows the worker's own arrivals (a quarter of
 * those seen in one lease age), at most burst/8 and REDIS_LEASE_MAX_TOKENS; a
 * leased token not spent within the lease age of its request is dropped. The
 * script keeps rate_per_s * age (at most burst/8) of the burst back, so that
 * the bound above holds for every window even though a leased token is spent
 * up to one age after Redis debited it. The costs: an instantaneous burst of
 * burst - rate_per_s * age (at least 7/8 of burst), and tokens stranded on a
 * worker whose arrivals stop (at most k per worker per lease age): under-,
 * never over-admission. Below the threshold every request is one round trip
 * and the script behaves exactly as before leases existed.
 *
 * Never blocking: commands are written through the worker's event_base (the
 * libevent adapter) and pipelined on the worker's one connection; a request
 * waits for its reply through a callback, at most the configured timeout_ms
 * (after which the callback says REDIS_FAILED and a late reply is dropped).
 * A connection that does not connect, or leaves a reply unanswered, within
 * REDIS_STALL_MS is dropped; reconnection backs off from 100 ms to 5 s (plus
 * up to a quarter at random). While
 * no connection is up, redis_take fails at once: the caller applies
 * on_failure without waiting.
 *
 * Threads: a client belongs to its worker's thread. The state summary
 * (redis_status) and the metrics are read from any thread.
 */
#ifndef BATON_REDIS_H
#define BATON_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct event_base;
struct evbuffer;
struct redis_client;
struct redis_wait;

#define REDIS_STALL_MS \
    1000 /* a connect or an unanswered reply older than this drops the connection */
#define REDIS_KEY_MAX 256 /* bytes of a rate key (redis_key) */

enum redis_verdict { REDIS_ALLOW, REDIS_DENY, REDIS_FAILED };

/* A decision: `retry_after_s` (>= 1) with REDIS_DENY. Called on the worker's
 * thread from its event loop, never from inside redis_take. */
typedef void (*redis_cb)(void *arg, enum redis_verdict v, unsigned retry_after_s);

/* Creates the state and metrics registry for n_workers clients; call once
 * before the workers start. */
void redis_init(unsigned n_workers);
void redis_shutdown(void);

/* Worker `id`'s client on `base` (borrowed, outlives it); owned. It connects
 * when redis_configure gives it an enabled config. */
struct redis_client *redis_client_new(struct event_base *base, unsigned id);
/* Closes the connection; waiters still parked get no callback. NULL ok. */
void redis_client_free(struct redis_client *cl);

/* Applies the config's "redis" (borrowed for the call; what is needed is
 * copied): connects, reconnects when the address, database or password
 * changed, disconnects when it is gone. On the client's thread. */
void redis_configure(struct redis_client *cl, const struct cfg_redis *r);

/* What redis_take did with a request. */
enum redis_take_result {
    REDIS_TAKE_FAILED = -1, /* no connection up, or the command cannot be queued: on_failure */
    REDIS_TAKE_PARKED = 0,  /* `cb` will say */
    REDIS_TAKE_ALLOW = 1,   /* admitted now with a leased token, no round trip */
    REDIS_TAKE_DENY = 2,    /* refused now: the bucket is known empty (*retry_after_s) */
};

/*
 * Asks for one request's admission on `key` (REDIS_KEY_MAX) at rate_per_s
 * (> 0) and burst (>= 1). REDIS_TAKE_PARKED: `cb` will be called exactly once
 * (unless redis_cancel), within timeout_ms; *wait is the handle, owned by the
 * client. REDIS_TAKE_ALLOW and REDIS_TAKE_DENY (leased steps only): decided
 * at once from this worker's lease, no callback; with DENY, *retry_after_s
 * (>= 1). REDIS_TAKE_FAILED at once when the lease is empty and no connection
 * is up or the command cannot be queued: the caller applies on_failure.
 */
enum redis_take_result redis_take(struct redis_client *cl, const char *key, double rate_per_s,
                                  unsigned burst, unsigned timeout_ms, redis_cb cb, void *arg,
                                  struct redis_wait **wait, unsigned *retry_after_s);
/*
 * Counts one use of a signed URL on `key` (redis_link_key) that allows `uses`
 * (>= 1) forwards, atomically across every instance sharing the server: the
 * first use sets the key's expiry to `expire_at_s` (unix seconds). Parks like
 * redis_take: `cb` gets REDIS_ALLOW (a use was left and is now spent),
 * REDIS_DENY (none left) or REDIS_FAILED (no answer within timeout_ms: the use
 * may or may not have been counted). -1 at once when no connection is up.
 */
int redis_link_use(struct redis_client *cl, const char *key, unsigned uses, int64_t expire_at_s,
                   unsigned timeout_ms, redis_cb cb, void *arg, struct redis_wait **wait);
/* "baton:link:<link id hex>" into out[cap]; -1 when it does not fit. */
int redis_link_key(char *out, size_t cap, const char *link_id_hex);
/* A link use refused because Redis could not count it (metrics). */
void redis_count_link_failure(struct redis_client *cl);

/* The parked request is gone: its callback will not be called. */
void redis_cancel(struct redis_wait *w);

/* "baton:rl:<step>:<policy sha256 hex>" into out[cap]; -1 when it does not fit. */
int redis_key(char *out, size_t cap, const char *step, const char *policy_hash);
/* Retry-After for a wait of `wait_us` microseconds: whole seconds, >= 1. */
unsigned redis_retry_after_s(double wait_us);

/* What the counts of the fallback metric are: on_failure applied to a request. */
void redis_count_fallback(struct redis_client *cl, enum cfg_redis_failure how);

/* --- the lease arithmetic (pure, exposed for tests/unit/test_redis.c) --- */

#define REDIS_LEASE_MIN_RATE 100.0      /* requests/s: below, one round trip per request */
#define REDIS_LEASE_BURST_SHARE 8       /* a lease and its age hold at most burst/8 tokens */
#define REDIS_LEASE_MAX_TOKENS 256      /* tokens asked in one batch, at most */
#define REDIS_LEASE_AGE_MAX_US 100000.0 /* a leased token is dropped after this (or sooner) */
#define REDIS_LEASE_AGE_MIN_US 5000.0   /* a shorter age would not outlive a round trip: no lease */
#define REDIS_LEASE_BATCHES 4           /* batches of different ages held at once */

/* How a (rate_per_s, burst) is asked of Redis: the same on every instance. */
struct redis_lease_plan {
    double interval_us;  /* 1e6 / rate_per_s: one token */
    double tolerance_us; /* burst * interval_us, less age_us when leasing */
    double age_us;       /* a leased token's life from its request's send; 0: no lease */
    unsigned max_tokens; /* the largest batch; 0: no lease (one token a round trip) */
};
void redis_lease_plan(double rate_per_s, unsigned burst, struct redis_lease_plan *p);
/* The batch to ask for when `arrivals` requests came in the last lease age:
 * a quarter of them (a batch lasts about a quarter of its age, so a pause in
 * the arrivals strands little), at most max_tokens; 0 (no batch: one token a
 * round trip) below 4 or without a lease. */
unsigned redis_lease_batch(const struct redis_lease_plan *p, unsigned arrivals);

/* Tokens a worker holds for one key, in batches that expire whole. */
struct redis_lease {
    unsigned held; /* the sum of the batches' counts */
    unsigned n_batches;
    struct {
        unsigned tokens;
        uint64_t expires_ns;      /* mono_ns() */
    } batch[REDIS_LEASE_BATCHES]; /* oldest first */
};
/* Adds `tokens` expiring at expires_ns; returns the tokens dropped instead
 * (already expired at now_ns, or the oldest batch when all slots are taken). */
unsigned redis_lease_add(struct redis_lease *l, unsigned tokens, uint64_t expires_ns,
                         uint64_t now_ns);
/* Drops the batches expired at now_ns; returns the tokens dropped. */
unsigned redis_lease_expire(struct redis_lease *l, uint64_t now_ns);
/* Spends one token of the oldest batch alive at now_ns: true, or false when
 * none is left (expired batches are dropped first, counted in *expired). */
bool redis_lease_spend(struct redis_lease *l, uint64_t now_ns, unsigned *expired);

/* The clients' states, for /readyz: thread-safe. */
struct redis_status {
    bool configured;      /* some worker has an enabled config */
    unsigned workers;     /* clients */
    unsigned up;          /* clients with a connection ready (script loaded) */
    char last_error[160]; /* the last connection error, "" when none */
};
void redis_status(struct redis_status *st);

/* Appends the Redis metrics (round trips, latency histogram, failures,
 * fallbacks, connection states, leases) in the Prometheus text format.
 * Thread-safe. */
void redis_metrics_render(struct evbuffer *out);

#endif
