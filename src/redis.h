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

#define REDIS_STALL_MS 1000 /* a connect or an unanswered reply older than this drops the connection */
#define REDIS_KEY_MAX 256   /* bytes of a rate key (redis_key) */

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

/*
 * Asks for one request's admission on `key` (REDIS_KEY_MAX) at rate_per_s
 * (> 0) and burst (>= 1). Returns 0: parked, `cb` will be called exactly once
 * (unless redis_cancel), within timeout_ms; *wait is the handle, owned by the
 * client. Returns -1 at once when no connection is up or the command cannot
 * be queued: the caller applies on_failure.
 */
int redis_take(struct redis_client *cl, const char *key, double rate_per_s, unsigned burst,
               unsigned timeout_ms, redis_cb cb, void *arg, struct redis_wait **wait);
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

/* The clients' states, for /readyz: thread-safe. */
struct redis_status {
    bool configured;    /* some worker has an enabled config */
    unsigned workers;   /* clients */
    unsigned up;        /* clients with a connection ready (script loaded) */
    char last_error[160]; /* the last connection error, "" when none */
};
void redis_status(struct redis_status *st);

/* Appends the Redis metrics (round trips, latency histogram, failures,
 * fallbacks, connection states) in the Prometheus text format. Thread-safe. */
void redis_metrics_render(struct evbuffer *out);

#endif
