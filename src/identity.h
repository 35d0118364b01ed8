/*
 * identity.h: the Google identity baton presents to upstreams (docs/spec.md step 5).
 *
 * One cache entry per (identity, audience) pair, where the identity is baton's
 * own (service_account NULL) or a step's `service_account` (impersonation).
 * Every entry is minted before first use by identity_start and refreshed on the
 * background event_base ahead of expiry (at about 75% of the remaining
 * lifetime, with jitter, one mint in flight per pair, exponential backoff on
 * failure). The request path only reads: identity_get takes a reference to the
 * entry's current immutable token under a per-entry lock held for a few
 * instructions; it never performs I/O, never mints and never waits. A token
 * whose `exp` is within IDENTITY_MARGIN_S is never handed out: the caller gets
 * a 503 reason and forwards nothing (fail closed).
 *
 * The credential source (metadata server, service-account key, local signing)
 * sits behind `struct identity_source` (identity_source.h; google.h builds
 * the real ones), so the cache and its scheduling are tested with a fake
 * source and a fake clock. The dependency points one way: identity.c picks
 * the Google source (identity_new calls google_source_new); google knows only
 * identity_source.h, never the cache.
 *
 * Threads: identity_new/identity_free on the owning thread while the
 * background loop is not running callbacks of this identity (free: after the
 * loop stopped); identity_get, identity_token_release, identity_ready,
 * identity_ready_detail, identity_jwks_json, identity_stats_visit and
 * identity_wait_ready from any thread; identity_start and identity_set_pairs
 * from any thread (they schedule onto the background base, which must have
 * been created after evthread_use_pthreads()).
 */
#ifndef BATON_IDENTITY_H
#define BATON_IDENTITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "identity_source.h"
#include "reason.h"

struct event_base;
struct http_client;
struct baton_config;
struct identity;

/* A token is never used once fewer than this many seconds remain before its exp. */
#define IDENTITY_MARGIN_S 60

/*
 * One pair to keep minted: `service_account` NULL means baton's own identity,
 * else the email of the account to impersonate; `audience` the upstream's
 * audience (cfg_upstream.audience). The server passes one pair per policy whose
 * upstream has identity google: {policy_service_account(p),
 * policy_upstream(p)->audience}. Duplicates are merged. Strings are copied.
 */
struct identity_pair {
    const char *service_account;
    const char *audience;
};

/*
 * A token handed to the request path. All strings are borrowed from an
 * immutable refcounted object and stay valid until identity_token_release.
 */
struct identity_token {
    const char *header_value; /* "Bearer <jwt>": the whole header value */
    const char *identity;     /* the token's email claim, else "default" / "baton@local" */
    const char *audience;     /* the audience minted (the token's aud) */
    int64_t expires_at;       /* the token's exp, seconds since the epoch */
    void *ref_;               /* private */
};

/*
 * Creates the cache for `pairs` with the credential source of cfg->google,
 * using `bg` (the background event_base) and `http` (borrowed; both must
 * outlive the identity). Nothing is fetched yet. Returns an owned identity, or
 * NULL with a message in err (unreadable or invalid key file, bad local key).
 * cfg is borrowed for the call only.
 */
struct identity *identity_new(struct event_base *bg, struct http_client *http,
                              const struct baton_config *cfg, const struct identity_pair *pairs,
                              size_t n_pairs, char *err, size_t errlen);

/* Starts minting every pair now (asynchronously, on bg). Idempotent. */
void identity_start(struct identity *id);

/*
 * Replaces the set of pairs kept minted (SIGHUP with new policies): new pairs
 * are minted at once, pairs no longer listed stop refreshing and identity_get
 * refuses them; pairs in both keep their token. Strings are copied.
 */
void identity_set_pairs(struct identity *id, const struct identity_pair *pairs, size_t n_pairs);

/*
 * Request path. Fills *out with a reference to the current token of
 * (service_account_or_NULL, audience) and returns REASON_ALLOWED, or returns a
 * reason of the mint stage (all map to 503: REASON_IDENTITY_UNAVAILABLE, or
 * the more precise REASON_IDENTITY_PERMISSION_DENIED /
 * REASON_IDENTITY_UNKNOWN_ACCOUNT when the last mint of this pair failed that
 * way) with *out zeroed. Unknown pairs are refused, never minted on demand.
 */
enum reason identity_get(struct identity *id, const char *service_account_or_NULL,
                         const char *audience, struct identity_token *out);

/* Drops the reference taken by identity_get; zeroes *tok. NULL or zeroed: no-op. */
void identity_token_release(struct identity_token *tok);

/* True when every pair holds a token valid beyond the margin. */
bool identity_ready(struct identity *id);

/*
 * For /readyz: an owned NUL-terminated text, one line per pair that has no
 * usable token, naming the identity, the audience, the last failure and the
 * fix (e.g. the missing IAM binding); "" when ready. Never contains a token.
 */
char *identity_ready_detail(struct identity *id);

/* Blocks until identity_ready or timeout_ms elapsed; returns identity_ready. */
bool identity_wait_ready(struct identity *id, unsigned timeout_ms);

/*
 * For /.well-known/jwks.json: with `local` credentials an owned JSON text
 * {"keys":[{RSA public JWK with kid, alg RS256, use sig}]}; NULL otherwise.
 */
char *identity_jwks_json(struct identity *id);

/* The metrics label of a failure kind (identity_source.h). */
const char *identity_failure_name(enum identity_failure f);

/* Upper bounds (ms) of the mint latency histogram buckets; +Inf is implicit. */
#define IDENTITY_LATENCY_BUCKETS 10
extern const unsigned identity_latency_bounds_ms[IDENTITY_LATENCY_BUCKETS];

/* A snapshot of one pair, passed to the visitor; strings valid during the call. */
struct identity_pair_stats {
    const char *identity; /* service account email, or "default" (baton's own) */
    const char *audience;
    bool active;        /* false: dropped by identity_set_pairs */
    bool usable;        /* holds a token valid beyond the margin */
    int64_t expires_at; /* exp of the current token, 0 when none */
    uint64_t mints_ok;
    uint64_t failures[IDENTITY_FAIL__COUNT];
    uint64_t latency_buckets[IDENTITY_LATENCY_BUCKETS + 1]; /* non-cumulative; last: +Inf */
    uint64_t latency_count;
    double latency_sum_s;
    const char *last_error; /* NULL when the last mint succeeded */
};

/* Calls fn once per pair (active or not), in a stable order. */
void identity_stats_visit(struct identity *id,
                          void (*fn)(void *ctx, const struct identity_pair_stats *s), void *ctx);

/* Stops refreshing, cancels the calls in flight and frees. Call after the
 * background loop stopped and before http_client_free. NULL ok. */
void identity_free(struct identity *id);

/* ---- credential sources: identity_source.h (google.h builds them; tests build fakes) ---- */

/* Test seams and tuning; zero fields take the defaults. */
struct identity_opts {
    int64_t (*now_ms)(void *clock_ctx); /* default: util.h now_ms */
    void *clock_ctx;
    unsigned margin_s;       /* default IDENTITY_MARGIN_S */
    unsigned backoff_min_ms; /* default 1000 */
    unsigned backoff_max_ms; /* default 60000 */
    uint64_t seed;           /* jitter PRNG seed; 0: random */
};

/* As identity_new with an explicit source (taken over even on failure). */
struct identity *identity_new_source(struct event_base *bg, const struct identity_source *src,
                                     const struct identity_opts *opts_or_NULL,
                                     const struct identity_pair *pairs, size_t n_pairs);

/*
 * Scheduling arithmetic, exposed for tests. Delay (ms) before refreshing a
 * token received at now_ms that expires at exp_ms: 75% of the remaining
 * lifetime, -10%..+0% jitter from `rnd` (any 64-bit value), never past
 * exp - margin - 1 s, never below 1 s.
 */
int64_t identity_refresh_delay_ms(int64_t now_ms, int64_t exp_ms, unsigned margin_s, uint64_t rnd);
/* Delay after the n-th consecutive failure (n >= 1): min * 2^(n-1) capped at
 * max, then 50%..100% of it from `rnd`. */
int64_t identity_backoff_ms(unsigned n, unsigned min_ms, unsigned max_ms, uint64_t rnd);

#endif
