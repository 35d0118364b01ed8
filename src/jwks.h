/*
 * jwks.h: the key sets of the configured issuers, kept fresh in the background.
 *
 * One source per issuer, of the kind its config names: `discovery` (GET
 * <issuer>/.well-known/openid-configuration, whose `issuer` must equal the
 * configured one exactly, then its `jwks_uri`), `jwks_uri`, or `jwks_file`.
 * A fetched document becomes an immutable refcounted `struct jws_keyset`
 * (jws_keyset_parse) and is published by pointer swap together with a new
 * generation number; readers on worker threads take a reference and never
 * wait on I/O.
 *
 * Refresh happens only on the background event_base:
 *  - on a schedule: the JWKS response's Cache-Control max-age clamped to the
 *    issuer's [refresh_min_s, refresh_max_s] (no max-age: refresh_max_s; a
 *    jwks_file is re-read every refresh_min_s), minus up to 10% jitter;
 *  - on an unknown kid (kid_unknown, any thread): at once for the first one
 *    (a rotation), shared by every request that meets an unknown kid while
 *    it runs, then at most one per refresh_min_s unless the last one found a
 *    changed key set, so a flood of random kids costs the issuer at most one
 *    refresh (discovery + JWKS) per interval (jwks.c says why);
 *  - after a failure: exponential backoff with jitter from 1 s up to
 *    refresh_min_s, the last good key set kept and served meanwhile.
 * A document identical to the current one (same SHA-256) keeps the current
 * set and generation, so caches keyed on the generation survive routine
 * refreshes. A document with no usable key is treated as a failure.
 *
 * An issuer whose keys never loaded has no key set: acquire returns NULL (the
 * request fails closed with keys_unavailable) and jwks_ready stays false.
 *
 * Threads: jwks_new, jwks_start, jwks_inherit and jwks_load_sync on the
 * owning thread before the background loop runs this jwks' events;
 * jwks_free on the background thread or after its loop stopped (it cancels
 * the jwks' HTTP calls, so the http_client must still exist). The authn_keys
 * callbacks, jwks_ready and jwks_stats are safe from any thread. The
 * background base must have been created after evthread_use_pthreads().
 */
#ifndef BATON_JWKS_H
#define BATON_JWKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "authn.h"
#include "config.h"
#include "diag.h"

struct event_base;
struct http_client;
struct jwks;

#define JWKS_MAX_DOC_BYTES (256u * 1024u) /* JWKS and discovery documents */
#define JWKS_DISCOVERY_PATH "/.well-known/openid-configuration"
#define JWKS_MAX_REDIRECTS 3u    /* each hop re-checked by http_client */
#define JWKS_RETRY_BASE_MS 1000u /* first retry after a failure */

/*
 * Creates the sources for cfg's issuers; nothing is fetched yet. `bg` and
 * `http` are borrowed and must outlive the jwks; both may be NULL for a jwks
 * used only through jwks_load_sync (the CLI). `cfg` is borrowed and must
 * outlive the jwks: the cfg_issuer pointers authn passes back are looked up in
 * it (by address, else by issuer name). Returns an owned jwks (never NULL:
 * allocation failure aborts).
 */
struct jwks *jwks_new(struct event_base *bg, struct http_client *http,
                      const struct baton_config *cfg);

/* Starts the first fetch of every issuer now (asynchronously, on bg); from
 * then on the schedule above keeps them fresh. Idempotent. 0, or -1 without bg. */
int jwks_start(struct jwks *j);

/*
 * Takes, for every issuer of `j` whose key source (issuer, kind, jwks_uri or
 * jwks_file, allow_http) matches one of `old`, the old one's current key set
 * (a new reference) so a reloaded config serves at once without waiting for
 * a fetch. Call before jwks_start(j). `old` is only read (thread-safe).
 */
void jwks_inherit(struct jwks *j, struct jwks *old);

/* The key provider authn consumes; ctx is `j`, valid while j lives. */
struct authn_keys jwks_authn_keys(struct jwks *j);

/*
 * CLI: fetches every issuer once, blocking (on a private event_base), with
 * the same checks as the background refresh. Returns 0 when every issuer
 * loaded, else -1 with one diagnostic per failed issuer in `d`; the issuers
 * that did load are usable either way. Not while the jwks is started.
 */
int jwks_load_sync(struct jwks *j, struct diags *d);

/* True once every issuer has had a key set (it stays true: a failed refresh
 * keeps the last good set). */
bool jwks_ready(struct jwks *j);

/* Figures for /metrics and /readyz, per issuer. */
struct jwks_issuer_stats {
    const char *name; /* borrowed from the config */
    bool loaded;
    uint64_t generation;         /* 0: never loaded */
    size_t keys;                 /* usable keys in the current set */
    size_t keys_skipped;         /* keys the current document had but baton cannot use */
    uint64_t refreshes;          /* refresh attempts started */
    uint64_t fetch_ok;           /* documents accepted (changed or not) */
    uint64_t fetch_failed;       /* refresh attempts that failed */
    uint64_t key_changes;        /* new key sets published */
    uint64_t kid_miss;           /* unknown-kid notifications received */
    uint64_t kid_miss_refreshes; /* refreshes started because of one */
    uint64_t kid_miss_limited;   /* notifications deferred or dropped by the limit */
    unsigned consecutive_failures;
    int64_t last_success_ms; /* wall clock; 0: never */
    int64_t last_failure_ms; /* wall clock; 0: never */
    int64_t next_refresh_ms; /* wall clock of the scheduled refresh; 0: none */
    char last_error[200];    /* "" when the last attempt succeeded */
    uint64_t empty_sets;     /* well-formed sets without a usable key that were
                                    published (each revoked every token of the issuer) */
};
size_t jwks_issuer_count(const struct jwks *j);
/* Fills `out` for issuer i (< jwks_issuer_count). 0, or -1 when out of range. */
int jwks_stats(struct jwks *j, size_t i, struct jwks_issuer_stats *out);

/*
 * `fn` runs on the background thread after every refresh attempt of any
 * jwks ends (success or failure), once its outcome is published: the server
 * wakes the requests parked on an unknown kid (authn.h AUTHN_KID_WAIT).
 * Process-wide; set before any jwks starts. NULL: none.
 */
void jwks_set_refresh_listener(void (*fn)(void));

/* Tests: first retry delay after a failure (default JWKS_RETRY_BASE_MS). */
void jwks_set_retry_base_ms(struct jwks *j, unsigned ms);

void jwks_free(struct jwks *j);

/*
 * `baton check`: reads the jwks_file at `path` and accepts it exactly as the
 * refresh does (size cap, JSON, at least one usable key). Returns 0 with the
 * usable and skipped key counts and the skipped keys' note (caller-owned,
 * notelen bytes, "" when none), or -1 with the reason in err.
 */
int jwks_check_file(const char *path, size_t *keys, size_t *skipped, char *note, size_t notelen,
                    char *err, size_t errlen);

#endif
