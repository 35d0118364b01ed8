/*
 * Unit tests of authn.c's verified-token cache: hit and miss, scoping to the
 * verifier and issuer, expiry, key-set generation changes (rotation and
 * revocation), entry and byte bounds with LRU eviction, and that a result
 * outlives its cache entry. The claim and signature checks themselves are
 * covered by test_jws_attacks.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "authn.h"
#include "jwstest.h"
#include "util.h"
#include "tap.h"

#define ISS "https://idp.example"
#define AUD "https://gw.example"

static int64_t now;
static EVP_PKEY *key, *key2;
/* When set, verify() passes it: the suites run once without and once with a
 * connection hint, which must never change a result. */
static struct authn_hint *cur_hint;

/* A token for ISS signed by `k` under `kid`, with sub and exp = now + exp_in. */
static char *token(EVP_PKEY *k, const char *kid, const char *sub, long exp_in, const char *extra)
{
    char *h = xasprintf("{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"%s\"}", kid);
    char *p = xasprintf("{\"iss\":\"" ISS "\",\"sub\":\"%s\",\"aud\":\"" AUD "\",\"exp\":%lld%s}",
                        sub, (long long)now + exp_in, extra ? extra : "");
    char *t = tk_sign(k, "ES256", h, p);
    free(h);
    free(p);
    return t;
}

static enum reason verify(struct authn *a, struct authn_cache *c, const char *t, int64_t at,
                          bool *hit)
{
    struct authn_result r;
    enum reason rc = authn_verify(a, c, cur_hint, t, strlen(t), at, &r);
    if (hit)
        *hit = r.cache_hit;
    authn_result_release(&r);
    return rc;
}

static struct jws_keyset *keyset_of(EVP_PKEY *k, const char *kid)
{
    json_t *arr = json_array();
    struct jws_keyset *ks;
    json_array_append_new(arr, tk_jwk(k, kid, "ES256"));
    ks = tk_keyset(arr);
    json_decref(arr);
    return ks;
}

static void setup(struct baton_config *cfg, struct cfg_issuer *is, struct tk_keys *tk,
                  const char **auds)
{
    memset(cfg, 0, sizeof(*cfg));
    memset(tk, 0, sizeof(*tk));
    tk_issuer(is, "idp", ISS, auds, 1, 1u << JWS_ES256);
    cfg->issuers = is;
    cfg->n_issuers = 1;
    tk->cfg = cfg;
    tk_keys_set(tk, 0, keyset_of(key, "k1"));
}

static void test_hit_miss(void)
{
    static const char *auds[] = {AUD};
    struct baton_config cfg;
    struct cfg_issuer is;
    struct tk_keys tk;
    struct authn_keys keys;
    struct authn *a;
    struct authn_cache *c = authn_cache_new(16);
    struct authn_cache_stats st;
    struct authn_result r1, r2;
    char *t = token(key, "k1", "alice", 300, ",\"jti\":\"x1\"");
    char *t_other = token(key, "k1", "bob", 300, NULL);

    setup(&cfg, &is, &tk, auds);
    keys = tk_keys_provider(&tk);
    a = authn_new(&cfg, &keys);
    is_int(authn_verify(a, c, cur_hint, t, strlen(t), now, &r1), REASON_ALLOWED,
           "first verification passes");
    ok(!r1.cache_hit, "first verification is a miss");
    is_int(authn_verify(a, c, cur_hint, t, strlen(t), now, &r2), REASON_ALLOWED,
           "second verification passes");
    ok(r2.cache_hit, "second verification is a hit");
    is_str(r2.sub, "alice", "hit returns the cached sub");
    is_str(r2.jti, "x1", "hit returns the cached jti");
    is_str(r2.audience, AUD, "hit returns the matched audience");
    ok(r2.issuer == &is, "hit returns the issuer it was verified for");
    is_str(r2.fingerprint, r1.fingerprint, "hit and miss give the same fingerprint");
    ok(r2.claims == r1.claims, "hit shares the cached claims object");
    authn_result_release(&r1);
    authn_result_release(&r2);
    ok(verify(a, c, t_other, now, NULL) == REASON_ALLOWED, "another token verifies");
    {
        bool hit = true;
        char *t2 = xstrdup(t);
        t2[strlen(t2) - 1] ^= 1; /* flips a bit of the last signature character */
        ok(verify(a, c, t2, now, &hit) != REASON_ALLOWED && !hit,
           "a token differing in its last byte is a miss and fails");
        free(t2);
    }
    authn_cache_stats(c, &st);
    is_int(st.hits, 1, "stats: 1 hit");
    is_int(st.misses, 3, "stats: 3 misses");
    is_int(st.inserts, 2, "stats: 2 inserts (failures are never cached)");
    is_int(st.entries, 2, "stats: 2 entries");
    ok(verify(a, NULL, t, now, NULL) == REASON_ALLOWED, "a NULL cache is allowed");

    /* a new verifier (config reload) never serves the old one's entries */
    authn_free(a);
    a = authn_new(&cfg, &keys);
    {
        bool hit = true;
        ok(verify(a, c, t, now, &hit) == REASON_ALLOWED && !hit,
           "a new authn (reloaded config) misses on entries of the old one");
    }
    authn_free(a);
    authn_cache_free(c);
    tk_keys_clear(&tk);
    free(t);
    free(t_other);
}

static void test_issuer_scope(void)
{
    /* Two configs whose issuers share the `iss` but differ in audience: a
     * token verified under the first must not be served under the second. */
    static const char *auds1[] = {AUD};
    static const char *auds2[] = {"https://other.example"};
    struct baton_config cfg1, cfg2;
    struct cfg_issuer is1, is2;
    struct tk_keys tk1, tk2;
    struct authn_keys keys1, keys2;
    struct authn *a1, *a2;
    struct authn_cache *c = authn_cache_new(16);
    char *t = token(key, "k1", "alice", 300, NULL);
    bool hit = true;

    setup(&cfg1, &is1, &tk1, auds1);
    setup(&cfg2, &is2, &tk2, auds2);
    keys1 = tk_keys_provider(&tk1);
    keys2 = tk_keys_provider(&tk2);
    a1 = authn_new(&cfg1, &keys1);
    a2 = authn_new(&cfg2, &keys2);
    is_int(verify(a1, c, t, now, NULL), REASON_ALLOWED, "scope: verified for issuer 1");
    is_int(verify(a1, c, t, now, &hit), REASON_ALLOWED, "scope: served from cache for issuer 1");
    ok(hit, "scope: that was a hit");
    is_int(verify(a2, c, t, now, &hit), REASON_AUDIENCE_MISMATCH,
           "scope: the same token under issuer 2 (other audience) fails, shared cache or not");
    ok(!hit, "scope: issuer 2 did not get issuer 1's entry");
    authn_free(a1);
    authn_free(a2);
    authn_cache_free(c);
    tk_keys_clear(&tk1);
    tk_keys_clear(&tk2);
    free(t);
}

static void test_expiry(void)
{
    static const char *auds[] = {AUD};
    struct baton_config cfg;
    struct cfg_issuer is;
    struct tk_keys tk;
    struct authn_keys keys;
    struct authn *a;
    struct authn_cache *c = authn_cache_new(16);
    struct authn_cache_stats st;
    char *t = token(key, "k1", "alice", 10, NULL); /* exp now+10, leeway 60: valid < now+70 */
    char *tn;
    bool hit = false;

    setup(&cfg, &is, &tk, auds);
    keys = tk_keys_provider(&tk);
    a = authn_new(&cfg, &keys);
    is_int(verify(a, c, t, now, NULL), REASON_ALLOWED, "expiry: verifies now");
    is_int(verify(a, c, t, now + 69, &hit), REASON_ALLOWED, "expiry: still valid at exp+leeway-1");
    ok(hit, "expiry: from the cache at exp+leeway-1");
    is_int(verify(a, c, t, now + 70, &hit), REASON_EXPIRED,
           "expiry: at exp+leeway the cache does not serve it and the token is expired");
    ok(!hit, "expiry: not a hit");
    authn_cache_stats(c, &st);
    is_int(st.expired, 1, "expiry: one entry dropped as expired");
    is_int(st.entries, 0, "expiry: the cache is empty");

    /* nbf within leeway: cached; a clock that steps back before nbf-leeway misses */
    {
        char extra[64];
        snprintf(extra, sizeof(extra), ",\"nbf\":%lld", (long long)now + 30);
        tn = token(key, "k1", "nbf", 300, extra);
    }
    is_int(verify(a, c, tn, now, NULL), REASON_ALLOWED, "nbf 30 s ahead is within leeway");
    is_int(verify(a, c, tn, now - 31, &hit), REASON_NOT_YET_VALID,
           "clock stepped back: the entry is not served before nbf-leeway");
    ok(!hit, "clock stepped back: not a hit");
    authn_free(a);
    authn_cache_free(c);
    tk_keys_clear(&tk);
    free(t);
    free(tn);
}

static void test_generation(void)
{
    static const char *auds[] = {AUD};
    struct baton_config cfg;
    struct cfg_issuer is;
    struct tk_keys tk;
    struct authn_keys keys;
    struct authn *a;
    struct authn_cache *c = authn_cache_new(16);
    struct authn_cache_stats st;
    char *t = token(key, "k1", "alice", 300, NULL);
    bool hit = false;

    setup(&cfg, &is, &tk, auds);
    keys = tk_keys_provider(&tk);
    a = authn_new(&cfg, &keys);
    verify(a, c, t, now, NULL);
    is_int(verify(a, c, t, now, &hit), REASON_ALLOWED, "generation: cached");
    ok(hit, "generation: hit before any change");
    /* rotation that keeps k1: a new key set object, same key material */
    tk_keys_set(&tk, 0, keyset_of(key, "k1"));
    is_int(verify(a, c, t, now, &hit), REASON_ALLOWED, "generation: still valid after a refresh");
    ok(!hit, "generation: a new generation forces re-verification");
    authn_cache_stats(c, &st);
    is_int(st.stale, 1, "generation: one stale entry dropped");
    is_int(verify(a, c, t, now, &hit), REASON_ALLOWED, "generation: re-cached");
    ok(hit, "generation: hit again under the new generation");
    /* revocation: k1 disappears, k2 replaces it */
    tk_keys_set(&tk, 0, keyset_of(key2, "k2"));
    is_int(verify(a, c, t, now, &hit), REASON_UNKNOWN_KID,
           "revocation: a token of a removed key fails at once, cached or not");
    ok(!hit, "revocation: not served from the cache");
    is_int(tk.kid_misses[0], 1, "revocation: the unknown kid asked for a refresh");
    /* keys that never loaded */
    tk_keys_clear(&tk);
    tk.gen[0]++;
    is_int(verify(a, c, t, now, &hit), REASON_KEYS_UNAVAILABLE,
           "no key set: keys_unavailable, nothing served from the cache");
    authn_free(a);
    authn_cache_free(c);
    free(t);
}

static enum authn_kid kid_answer;
static int kid_asked;
static enum authn_kid fake_kid_unknown(void *ctx, const struct cfg_issuer *is)
{
    (void)ctx;
    (void)is;
    kid_asked++;
    return kid_answer;
}

/* An unknown kid with a key provider that says whether a refresh is coming. */
static void test_kid_unknown(void)
{
    static const char *auds[] = {AUD};
    struct baton_config cfg;
    struct cfg_issuer is;
    struct tk_keys tk;
    struct authn_keys keys;
    struct authn *a;
    struct authn_result r;
    char *t = token(key, "k-new", "alice", 300, NULL);
    enum reason rc;

    setup(&cfg, &is, &tk, auds); /* its key set holds k1 only */
    keys = tk_keys_provider(&tk);
    keys.kid_unknown = fake_kid_unknown;
    a = authn_new(&cfg, &keys);
    kid_answer = AUTHN_KID_WAIT;
    rc = authn_verify(a, NULL, NULL, t, strlen(t), now, &r);
    ok(rc == REASON_UNKNOWN_KID && r.kid_wait, "a refresh in flight: unknown_kid with kid_wait");
    authn_result_release(&r);
    is_int(tk.kid_misses[0], 0, "kid_unknown replaces kid_miss");
    kid_answer = AUTHN_KID_DECIDE;
    rc = authn_verify(a, NULL, NULL, t, strlen(t), now, &r);
    ok(rc == REASON_UNKNOWN_KID && !r.kid_wait, "no refresh coming: unknown_kid, decided");
    authn_result_release(&r);
    kid_answer = AUTHN_KID_STALE;
    rc = authn_verify(a, NULL, NULL, t, strlen(t), now, &r);
    ok(rc == REASON_KEYS_UNAVAILABLE && !r.kid_wait,
       "the issuer's last refresh failed: keys_unavailable (ours), not a 401");
    authn_result_release(&r);
    is_int(kid_asked, 3, "asked once per verification");
    tk_keys_set(&tk, 0, keyset_of(key, "k-new"));
    rc = authn_verify(a, NULL, NULL, t, strlen(t), now, &r);
    ok(rc == REASON_ALLOWED && !r.kid_wait, "after the refresh: decided on the new key set");
    authn_result_release(&r);
    is_int(kid_asked, 3, "a known kid asks nothing");
    authn_free(a);
    tk_keys_clear(&tk);
    free(t);
}

static void test_bounds(void)
{
    static const char *auds[] = {AUD};
    struct baton_config cfg;
    struct cfg_issuer is;
    struct tk_keys tk;
    struct authn_keys keys;
    struct authn *a;
    struct authn_cache *c = authn_cache_new(4);
    struct authn_cache_stats st;
    char *t[6];
    bool hit;

    setup(&cfg, &is, &tk, auds);
    keys = tk_keys_provider(&tk);
    a = authn_new(&cfg, &keys);
    for (int i = 0; i < 6; i++) {
        char sub[16];
        snprintf(sub, sizeof(sub), "u%d", i);
        t[i] = token(key, "k1", sub, 300, NULL);
    }
    for (int i = 0; i < 4; i++)
        verify(a, c, t[i], now, NULL);
    verify(a, c, t[0], now, &hit); /* t0 becomes most recent; t1 is now the LRU */
    ok(hit, "bounds: t0 cached");
    verify(a, c, t[4], now, NULL);
    verify(a, c, t[5], now, NULL);
    authn_cache_stats(c, &st);
    is_int(st.entries, 4, "bounds: never more than max_entries (4)");
    is_int(st.evictions, 2, "bounds: two evictions for six tokens");
    verify(a, c, t[0], now, &hit);
    ok(hit, "bounds: the recently used t0 survived (LRU)");
    verify(a, c, t[1], now, &hit);
    ok(!hit, "bounds: the least recently used t1 was evicted");
    authn_cache_free(c);

    /* byte budget: each entry costs the token, the claims' jansson footprint and the entry */
    {
        size_t one = 2 * strlen(t[0]) + 512;
        c = authn_cache_new_capped(100, 2 * one);
        for (int i = 0; i < 6; i++)
            verify(a, c, t[i], now, NULL);
        authn_cache_stats(c, &st);
        ok(st.entries >= 1 && st.entries < 6 && st.entries * 2 * strlen(t[0]) <= 2 * one &&
               st.evictions > 0,
           "bytes: the byte budget, not the entry count, bounds the cache (%zu entries)",
           st.entries);
        ok(st.bytes <= 2 * one, "bytes: accounted bytes within the budget (%zu <= %zu)", st.bytes,
           2 * one);
        authn_cache_free(c);
        c = authn_cache_new_capped(100, 64);
        verify(a, c, t[0], now, NULL);
        authn_cache_stats(c, &st);
        is_int(st.entries, 0, "bytes: a token larger than the whole budget is never cached");
        authn_cache_free(c);
    }

    /* claims that are cheap as text but heavy as jansson values (an array of
     * small numbers: ~46 bytes held per 2 bytes of JSON) are charged for what
     * jansson holds, not for the token's length */
    {
        char *extra = xmalloc(2 * 3000 + 16);
        char *heavy;
        strcpy(extra, ",\"tags\":[");
        for (int i = 0; i < 3000; i++)
            strcat(extra, i ? ",0" : "0");
        strcat(extra, "]");
        heavy = token(key, "k1", "heavy", 300, extra);
        c = authn_cache_new_capped(100, 1u << 20);
        verify(a, c, heavy, now, NULL);
        authn_cache_stats(c, &st);
        ok(st.entries == 1 && st.bytes >= 3000 * 48,
           "bytes: a 3,000-number claim is charged what jansson holds (%zu bytes for a %zu-byte token)",
           st.bytes, strlen(heavy));
        authn_cache_free(c);
        free(heavy);
        free(extra);
    }

    /* a result outlives the eviction of its entry */
    {
        struct authn_result r;
        c = authn_cache_new(1);
        verify(a, c, t[0], now, NULL);
        authn_verify(a, c, NULL, t[0], strlen(t[0]), now, &r);
        ok(r.cache_hit, "lifetime: result from the cache");
        verify(a, c, t[1], now, NULL); /* evicts t0's entry */
        is_str(r.sub, "u0", "lifetime: the result's sub is still readable after eviction");
        is_str(json_string_value(json_object_get(r.claims, "iss")), ISS,
               "lifetime: the result's claims are still readable after eviction");
        authn_result_release(&r);
        authn_cache_free(c);
    }
    for (int i = 0; i < 6; i++)
        free(t[i]);
    authn_free(a);
    tk_keys_clear(&tk);
}

/* Workers share one authn and key set, each with its own cache (the server's
 * threading model); every verification must succeed on every thread. */
struct worker {
    struct authn *a;
    char **tokens;
    int n_tokens, failures, hits;
};

static void *worker_run(void *p)
{
    struct worker *w = p;
    struct authn_cache *c = authn_cache_new(8);
    for (int i = 0; i < 300; i++) {
        bool hit = false;
        const char *t = w->tokens[i % w->n_tokens];
        if (verify(w->a, (i & 1) ? c : NULL, t, now, &hit) != REASON_ALLOWED)
            w->failures++;
        w->hits += hit;
    }
    authn_cache_free(c);
    return NULL;
}

static void test_threads(void)
{
    static const char *auds[] = {AUD};
    struct baton_config cfg;
    struct cfg_issuer is;
    struct tk_keys tk;
    struct authn_keys keys;
    struct authn *a;
    EVP_PKEY *rsa = tk_rsa(2048), *ed = tk_ed25519();
    json_t *arr = json_array();
    char *tokens[4];
    char *payload = xasprintf("{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"exp\":%lld}",
                              (long long)now + 300);
    struct worker w[3];
    pthread_t th[3];
    int failures = 0, hits = 0;

    memset(&cfg, 0, sizeof(cfg));
    memset(&tk, 0, sizeof(tk));
    tk_issuer(&is, "idp", ISS, auds, 1,
              (1u << JWS_RS256) | (1u << JWS_PS256) | (1u << JWS_ES256) | (1u << JWS_EDDSA));
    cfg.issuers = &is;
    cfg.n_issuers = 1;
    tk.cfg = &cfg;
    json_array_append_new(arr, tk_jwk(key, "k1", "ES256"));
    json_array_append_new(arr, tk_jwk(rsa, "r", NULL));
    json_array_append_new(arr, tk_jwk(ed, "d", NULL));
    tk_keys_set(&tk, 0, tk_keyset(arr));
    tokens[0] = tk_sign(key, "ES256", "{\"alg\":\"ES256\",\"kid\":\"k1\"}", payload);
    tokens[1] = tk_sign(rsa, "RS256", "{\"alg\":\"RS256\",\"kid\":\"r\"}", payload);
    tokens[2] = tk_sign(rsa, "PS256", "{\"alg\":\"PS256\",\"kid\":\"r\"}", payload);
    tokens[3] = tk_sign(ed, "EdDSA", "{\"alg\":\"EdDSA\",\"kid\":\"d\"}", payload);
    keys = tk_keys_provider(&tk);
    a = authn_new(&cfg, &keys);
    for (int i = 0; i < 3; i++) {
        w[i] = (struct worker){a, tokens, 4, 0, 0};
        pthread_create(&th[i], NULL, worker_run, &w[i]);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        failures += w[i].failures;
        hits += w[i].hits;
    }
    is_int(
        failures, 0,
        "threads: 3 workers x 300 verifications (RS256, PS256, ES256, EdDSA) on one key set all pass");
    ok(hits > 0, "threads: per-worker caches served hits (%d)", hits);
    authn_free(a);
    tk_keys_clear(&tk);
    for (int i = 0; i < 4; i++)
        free(tokens[i]);
    free(payload);
    json_decref(arr);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ed);
}

/* The connection hint: found without hashing, never across caches, slots or
 * different bytes. */
static void test_hint(void)
{
    static const char *auds[] = {AUD};
    struct baton_config cfg;
    struct cfg_issuer is;
    struct tk_keys tk;
    struct authn_keys keys;
    struct authn *a;
    struct authn_cache *c = authn_cache_new(2), *c2;
    /* 2 entries: the slot-reuse case below needs evictions */
    struct authn_cache_stats st;
    struct authn_hint h = {0}, h2 = {0};
    struct authn_result r1, r2;
    char *t = token(key, "k1", "alice", 300, NULL);
    char *u = token(key, "k1", "bob", 300, NULL);
    char *v = token(key, "k1", "carol", 300, NULL);
    char *w = token(key, "k1", "dave", 300, NULL);
    bool hit;

    setup(&cfg, &is, &tk, auds);
    keys = tk_keys_provider(&tk);
    a = authn_new(&cfg, &keys);
    is_int(authn_verify(a, c, &h, t, strlen(t), now, &r1), REASON_ALLOWED, "hint: first verifies");
    is_int(authn_verify(a, c, &h, t, strlen(t), now, &r2), REASON_ALLOWED, "hint: second verifies");
    ok(r2.cache_hit, "hint: the second is a hit");
    is_str(r2.fingerprint, r1.fingerprint, "hint: the fingerprint is the token's SHA-256 still");
    is_str(r2.sub, "alice", "hint: the hit returns the entry's claims");
    authn_result_release(&r1);
    authn_result_release(&r2);
    authn_cache_stats(c, &st);
    is_int(st.hint_hits, 1, "hint: the hit came through the hint");

    /* another token on the same connection: the hint is not taken for it */
    is_int(authn_verify(a, c, &h, u, strlen(u), now, &r1), REASON_ALLOWED, "hint: bob verifies");
    is_str(r1.sub, "bob", "hint: a different token gets its own claims");
    authn_result_release(&r1);
    authn_cache_stats(c, &st);
    is_int(st.hint_hits, 1, "hint: not followed for different bytes");
    {
        char *t2 = xstrdup(u);
        t2[strlen(t2) - 1] ^= 1;
        ok(authn_verify(a, c, &h, t2, strlen(t2), now, &r1) != REASON_ALLOWED && !r1.cache_hit,
           "hint: one flipped byte after a hit fails verification");
        authn_result_release(&r1);
        free(t2);
    }
    is_int(authn_verify(a, c, &h, u, strlen(u), now, &r1), REASON_ALLOWED,
           "hint: a failure cleared it; bob still verifies");
    ok(r1.cache_hit, "hint: bob from the cache by lookup");
    authn_result_release(&r1);
    authn_cache_stats(c, &st);
    is_int(st.hint_hits, 1, "hint: a failed request left no hint");

    /* the slot bob's hint names is reused for other tokens (2-entry cache) */
    is_int(authn_verify(a, c, &h, u, strlen(u), now, &r1), REASON_ALLOWED, "hint: set on bob");
    authn_result_release(&r1);
    ok(verify(a, c, v, now, NULL) == REASON_ALLOWED &&
           verify(a, c, w, now, NULL) == REASON_ALLOWED &&
           verify(a, c, t, now, NULL) == REASON_ALLOWED,
       "hint: three other tokens evict bob and reuse his slot");
    authn_cache_stats(c, &st);
    {
        uint64_t before = st.hint_hits;
        is_int(authn_verify(a, c, &h, u, strlen(u), now, &r1), REASON_ALLOWED,
               "hint: bob verifies after his slot was reused");
        ok(!r1.cache_hit && strcmp(r1.sub, "bob") == 0,
           "hint: a stale slot is a miss, not alice's entry");
        authn_result_release(&r1);
        authn_cache_stats(c, &st);
        is_int(st.hint_hits, before, "hint: a reused slot is never followed");
    }

    /* a hint set by one cache is never followed in another (a reload): here
     * it names slot 3 and the new cache has one slot */
    authn_cache_free(c);
    c = authn_cache_new(4);
    ok(verify(a, c, u, now, NULL) == REASON_ALLOWED &&
           verify(a, c, v, now, NULL) == REASON_ALLOWED &&
           verify(a, c, w, now, NULL) == REASON_ALLOWED,
       "hint: three tokens fill slots 0-2 of a 4-entry cache");
    authn_verify(a, c, &h2, t, strlen(t), now, &r1);
    authn_result_release(&r1);
    is_int((int)h2.slot, 3, "hint: alice's hint names slot 3");
    authn_cache_free(c);
    c2 = authn_cache_new(1); /* may well reuse the freed memory */
    is_int(authn_verify(a, c2, &h2, t, strlen(t), now, &r1), REASON_ALLOWED,
           "hint: another cache verifies the token");
    ok(!r1.cache_hit, "hint: from another cache it is a miss");
    authn_result_release(&r1);
    authn_cache_stats(c2, &st);
    is_int(st.hint_hits, 0, "hint: not followed into another cache");
    hit = false;
    is_int(verify(a, c2, t, now, &hit), REASON_ALLOWED, "hint: the new cache serves the token");
    ok(hit, "hint: ... from its own entry");

    /* a reloaded verifier never takes the old one's entry through a hint */
    authn_verify(a, c2, &h2, t, strlen(t), now, &r1);
    authn_result_release(&r1);
    authn_free(a);
    a = authn_new(&cfg, &keys);
    is_int(authn_verify(a, c2, &h2, t, strlen(t), now, &r1), REASON_ALLOWED,
           "hint: a reloaded verifier verifies");
    ok(!r1.cache_hit, "hint: the old verifier's entry is not taken through the hint");
    authn_result_release(&r1);
    authn_free(a);
    authn_cache_free(c2);
    tk_keys_clear(&tk);
    free(t);
    free(u);
    free(v);
    free(w);
}

/*
 * The fingerprint is the SHA-256 of the token bytes on every path: a miss
 * (hashed in one pass with the signing input, for RS256/PS256/ES256), a hit
 * by lookup and by hint (taken from the entry, not rehashed), and failures
 * before and after the signature. Signatures still verify, and a changed
 * payload still fails, when the signing input's digest comes from that pass.
 */
static void test_fingerprint(void)
{
    static const char *auds[] = {AUD};
    static const struct {
        const char *alg, *kid;
        int k;
    } algs[] = {{"RS256", "rsa", 0},  {"PS256", "rsa", 0}, {"RS384", "rsa", 0},
                {"RS512", "rsa", 0},  {"PS512", "rsa", 0}, {"ES256", "p256", 1},
                {"ES384", "p384", 2}, {"EdDSA", "ed", 3}};
    EVP_PKEY *keys4[4] = {tk_rsa(2048), tk_ec("P-256"), tk_ec("P-384"), tk_ed25519()};
    json_t *arr = json_array();
    struct baton_config cfg;
    struct cfg_issuer is;
    struct tk_keys tk;
    struct authn_keys kp;
    struct authn *a;
    struct authn_cache *c = authn_cache_new(64);
    char *p = xasprintf("{\"iss\":\"" ISS "\",\"sub\":\"s\",\"aud\":\"" AUD "\",\"exp\":%lld}",
                        (long long)now + 300);
    char *p2 = xasprintf("{\"iss\":\"" ISS "\",\"sub\":\"t\",\"aud\":\"" AUD "\",\"exp\":%lld}",
                         (long long)now + 300);
    char *pexp = xasprintf("{\"iss\":\"" ISS "\",\"sub\":\"s\",\"aud\":\"" AUD "\",\"exp\":%lld}",
                           (long long)now - 3600);

    json_array_append_new(arr, tk_jwk(keys4[0], "rsa", NULL));
    json_array_append_new(arr, tk_jwk(keys4[1], "p256", "ES256"));
    json_array_append_new(arr, tk_jwk(keys4[2], "p384", "ES384"));
    json_array_append_new(arr, tk_jwk(keys4[3], "ed", "EdDSA"));
    memset(&cfg, 0, sizeof(cfg));
    memset(&tk, 0, sizeof(tk));
    tk_issuer(&is, "idp", ISS, auds, 1, (1u << JWS_ALG__COUNT) - 1);
    cfg.issuers = &is;
    cfg.n_issuers = 1;
    tk.cfg = &cfg;
    tk_keys_set(&tk, 0, tk_keyset(arr));
    kp = tk_keys_provider(&tk);
    a = authn_new(&cfg, &kp);
    for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++) {
        char *h = xasprintf("{\"alg\":\"%s\",\"kid\":\"%s\"}", algs[i].alg, algs[i].kid);
        char *t = tk_sign(keys4[algs[i].k], algs[i].alg, h, p);
        char *t2 = tk_sign(keys4[algs[i].k], algs[i].alg, h, p2);
        char *texp = tk_sign(keys4[algs[i].k], algs[i].alg, h, pexp);
        char *swapped = xstrdup(t), want[65];
        const char *d1 = strchr(t2, '.'), *d2 = strchr(d1 + 1, '.');
        struct authn_hint hint = {0};
        struct authn_result r;
        int good = 1;

        /* t's header and signature around t2's payload: signed, but not this */
        free(swapped);
        swapped = xasprintf("%.*s%.*s%s", (int)(strchr(t, '.') - t), t, (int)(d2 - d1), d1,
                            strrchr(t, '.'));
        sha256_hex(t, strlen(t), want);
        for (int k = 0; k < 3; k++) { /* miss, hit by lookup, hit by hint */
            enum reason rc = authn_verify(a, c, k ? &hint : NULL, t, strlen(t), now, &r);
            good &= rc == REASON_ALLOWED && r.cache_hit == (k > 0) &&
                    strcmp(r.fingerprint, want) == 0;
            authn_result_release(&r);
        }
        ok(good, "%s: miss, hit and hinted hit all verify with fingerprint = SHA-256(token)",
           algs[i].alg);
        is_int(authn_verify(a, NULL, NULL, swapped, strlen(swapped), now, &r), REASON_BAD_SIGNATURE,
               "%s: another payload under the signature fails", algs[i].alg);
        sha256_hex(swapped, strlen(swapped), want);
        is_str(r.fingerprint, want, "%s: ... with its own fingerprint", algs[i].alg);
        authn_result_release(&r);
        is_int(authn_verify(a, c, NULL, texp, strlen(texp), now, &r), REASON_EXPIRED,
               "%s: expired after the signature verified", algs[i].alg);
        sha256_hex(texp, strlen(texp), want);
        is_str(r.fingerprint, want, "%s: ... fingerprint = SHA-256(token)", algs[i].alg);
        authn_result_release(&r);
        free(h);
        free(t);
        free(t2);
        free(texp);
        free(swapped);
    }
    {
        const char *bad[] = {"a.b.c", "e30.e30.", "x", "eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln"};
        char want[65], *big = xmalloc(JWS_DEFAULT_MAX_TOKEN_BYTES + 2);
        struct authn_result r;
        int good = 1;
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            authn_verify(a, c, NULL, bad[i], strlen(bad[i]), now, &r);
            sha256_hex(bad[i], strlen(bad[i]), want);
            good &= strcmp(r.fingerprint, want) == 0;
            authn_result_release(&r);
        }
        memset(big, 'a', JWS_DEFAULT_MAX_TOKEN_BYTES + 1);
        big[JWS_DEFAULT_MAX_TOKEN_BYTES + 1] = '\0';
        is_int(authn_verify(a, c, NULL, big, strlen(big), now, &r), REASON_TOKEN_TOO_LARGE,
               "fingerprint: an oversized token is too large");
        sha256_hex(big, strlen(big), want);
        good &= strcmp(r.fingerprint, want) == 0;
        authn_result_release(&r);
        ok(good, "fingerprint: malformed and oversized tokens carry SHA-256(token) too");
        free(big);
    }
    authn_free(a);
    authn_cache_free(c);
    tk_keys_clear(&tk);
    json_decref(arr);
    free(p);
    free(p2);
    free(pexp);
    for (int i = 0; i < 4; i++)
        EVP_PKEY_free(keys4[i]);
}

/* Many entries in one cache: every one is found again by its key and bytes
 * (chains, the seeded key), and two caches key the same token differently
 * without either missing it. */
static void test_many(void)
{
    static const char *auds[] = {AUD};
    struct baton_config cfg;
    struct cfg_issuer is;
    struct tk_keys tk;
    struct authn_keys keys;
    struct authn *a;
    struct authn_cache *c = authn_cache_new(300), *c2 = authn_cache_new(300);
    struct authn_cache_stats st;
    char *t[256];
    int all = 1;

    setup(&cfg, &is, &tk, auds);
    keys = tk_keys_provider(&tk);
    a = authn_new(&cfg, &keys);
    for (int i = 0; i < 256; i++) {
        char sub[16];
        snprintf(sub, sizeof(sub), "u%d", i);
        t[i] = token(key, "k1", sub, 300, NULL);
        all &= verify(a, c, t[i], now, NULL) == REASON_ALLOWED &&
               verify(a, c2, t[i], now, NULL) == REASON_ALLOWED;
    }
    ok(all, "many: 256 tokens verify into two caches");
    all = 1;
    for (int i = 255; i >= 0; i--) {
        bool h1 = false, h2 = false;
        struct authn_result r;
        char want[16];
        snprintf(want, sizeof(want), "u%d", i);
        all &= verify(a, c, t[i], now, &h1) == REASON_ALLOWED && h1 &&
               verify(a, c2, t[i], now, &h2) == REASON_ALLOWED && h2;
        authn_verify(a, c, NULL, t[i], strlen(t[i]), now, &r);
        all &= r.cache_hit && r.sub && strcmp(r.sub, want) == 0;
        authn_result_release(&r);
    }
    ok(all, "many: each of the 256 is a hit with its own claims, in both caches");
    authn_cache_stats(c, &st);
    is_int(st.entries, 256, "many: 256 entries");
    is_int(st.evictions, 0, "many: none evicted");
    for (int i = 0; i < 256; i++)
        free(t[i]);
    authn_free(a);
    authn_cache_free(c);
    authn_cache_free(c2);
    tk_keys_clear(&tk);
}

int main(void)
{
    struct authn_hint hint = {0};

    now = (int64_t)time(NULL);
    key = tk_ec("P-256");
    key2 = tk_ec("P-256");
    test_hit_miss();
    test_issuer_scope();
    test_expiry();
    test_generation();
    test_kid_unknown();
    test_bounds();
    test_threads();
    test_hint();
    test_fingerprint();
    test_many();
    /* again through one connection's hint: the same results (expired,
     * not yet valid, stale generation, revoked key) must come out */
    cur_hint = &hint;
    test_hit_miss();
    test_expiry();
    test_generation();
    cur_hint = NULL;
    EVP_PKEY_free(key);
    EVP_PKEY_free(key2);
    return tap_done();
}
