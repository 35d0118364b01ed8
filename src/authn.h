/*
 * authn.h: step 3 of the request path: who is calling, proven by a JWS.
 *
 * `authn_verify` takes the bearer token and decides, as one `enum reason`:
 * issuer by `iss` (exact), key by `kid` within that issuer's key set only,
 * signature (jws.c, algorithm pinned by the key and on the issuer's list),
 * then `exp` (required), `nbf`, `iat` (each with the issuer's leeway), the
 * audience (`aud` string or array, or `client_id`, per audience_claim), `typ`
 * (allow-list, case-insensitive, optional "application/" prefix, absent is
 * accepted) and `token_use` when the issuer sets it.
 *
 * Keys come through `struct authn_keys` (jwks.c implements it), so this module
 * never fetches anything and never blocks.
 *
 * A per-worker verified-token cache (no locks: one cache per thread) keeps the
 * claims of tokens that verified, keyed by a seeded hash of the token with the
 * whole token compared on a hit (which then computes no SHA-256: the entry
 * keeps the fingerprint), scoped to the `struct authn` and issuer that
 * verified it, until the earliest of `exp` + leeway and the issuer's key-set
 * generation changing. It caches authentication only; authorization is
 * evaluated on every request by the caller.
 */
#ifndef BATON_AUTHN_H
#define BATON_AUTHN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "config.h"
#include "jws.h"
#include "reason.h"

/* What to do about a kid the issuer's current key set lacks (kid_unknown). */
enum authn_kid {
    AUTHN_KID_DECIDE, /* no refresh will come soon: the kid is unknown (401) */
    AUTHN_KID_WAIT,   /* a refresh of the issuer's keys is in flight: worth waiting for */
    AUTHN_KID_STALE,  /* none may start yet and the last one failed: we cannot tell (503) */
};

/* Key provider (jwks.c). Every callback is thread-safe and non-blocking. */
struct authn_keys {
    /* The issuer's current key set: a new reference (the caller unrefs), or
     * NULL when no key set was ever loaded for it. */
    struct jws_keyset *(*acquire)(void *ctx, const struct cfg_issuer *);
    /* Changes whenever the issuer's key set is replaced (rotation, removal). */
    uint64_t (*generation)(void *ctx, const struct cfg_issuer *);
    /* An unknown kid was seen: request a (rate-limited, single-flight) refresh. */
    void (*kid_miss)(void *ctx, const struct cfg_issuer *);
    void *ctx;
    /* The same, and says whether a refresh will answer it soon; NULL: kid_miss
     * is called and the kid is decided at once. */
    enum authn_kid (*kid_unknown)(void *ctx, const struct cfg_issuer *);
};

struct authn;       /* immutable after authn_new; shared by all workers */
struct authn_cache; /* per worker; never shared between threads */

/*
 * What authn_verify learned. Strings and claims are borrowed and stay valid
 * until authn_result_release (the result holds a reference to the claims;
 * `audience` points into the config, valid while the config lives).
 *
 * `issuer` is set as soon as `iss` names a configured issuer, even when the
 * token then fails. `claims`, `sub`, `jti`, `audience`, `aws_account` are set
 * only once the signature verified (so for EXPIRED, AUDIENCE_MISMATCH, ... the
 * audit record still gets a verified subject); never authorize on them unless
 * the reason is REASON_ALLOWED. `fingerprint` (SHA-256 hex of the token bytes)
 * is always set, whatever the outcome.
 */
struct authn_result {
    const struct cfg_issuer *issuer;
    const json_t *claims;
    char fingerprint[65];
    const char *sub;
    const char *jti;
    const char *audience; /* the configured audience that matched */
    const char *aws_account;
    enum jws_alg alg; /* valid once the signature verified */
    bool cache_hit;
    json_t *claims_ref_; /* private: the owned reference behind `claims` */
    /* REASON_UNKNOWN_KID only: a refresh of the issuer's keys is in flight
     * (AUTHN_KID_WAIT). The caller may park the request, without blocking,
     * until that refresh ends, then call authn_verify again: the token is
     * then decided on the new key set (key rotation never fails a request). */
    bool kid_wait;
};

/*
 * A verifier over `cfg`'s issuers. Both are borrowed and must outlive the
 * returned object (owned; authn_free). `keys` is copied.
 */
struct authn *authn_new(const struct baton_config *cfg, const struct authn_keys *keys);
void authn_free(struct authn *a);

#define AUTHN_CACHE_DEFAULT_ENTRIES 4096
#define AUTHN_CACHE_BYTES_PER_ENTRY 4096 /* default memory budget per entry */

/*
 * A verified-token cache of at most `max_entries` tokens (0: the default) and
 * max_entries * AUTHN_CACHE_BYTES_PER_ENTRY bytes of token and claims. Owned;
 * authn_cache_free. One per worker thread.
 */
struct authn_cache *authn_cache_new(size_t max_entries);
/* Same, with an explicit byte budget (token bytes + decoded payload bytes). */
struct authn_cache *authn_cache_new_capped(size_t max_entries, size_t max_bytes);
void authn_cache_free(struct authn_cache *c);

struct authn_cache_stats {
    uint64_t hits, misses, inserts, evictions, expired, stale; /* stale: generation changed */
    uint64_t hint_hits; /* hits found through a connection's hint, without hashing */
    size_t entries, bytes;
};
void authn_cache_stats(const struct authn_cache *c, struct authn_cache_stats *out);

/* What one connection remembers of its last verified token: the cache entry
 * it hit. A keep-alive client sends the same token on every request; the next
 * request that carries the same bytes (compared whole) finds that entry
 * without hashing them. Zero-initialize; owned by the caller, one per client
 * connection, and only used with the cache it was set by (checked). */
struct authn_hint {
    uint64_t cache_id;
    size_t slot;
};

/*
 * Authenticates `token` (`len` bytes, the bearer credential without the
 * "Bearer " prefix) at wall-clock time `now_s`. `cache` may be NULL (no
 * caching), and `hint` NULL (none): the result is the same with or without
 * the hint, which only spares the key hash and the lookup. Fills `out` (which
 * the caller releases with authn_result_release whatever the outcome) and
 * returns REASON_ALLOWED or the authn reason. Thread-safe for concurrent calls
 * with distinct caches.
 */
enum reason authn_verify(struct authn *a, struct authn_cache *cache, struct authn_hint *hint,
                         const char *token, size_t len, int64_t now_s, struct authn_result *out);

/* Drops the result's claims reference and clears it. Safe on a cleared result. */
void authn_result_release(struct authn_result *r);

#endif
