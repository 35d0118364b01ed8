/*
 * authn.c: token authentication (issuer, key, signature, claims) and the
 * per-worker verified-token cache.
 *
 * Order of checks, each failing with its own reason (authn.h lists them):
 * size cap (the largest issuer cap, before any decoding) -> jws_parse (strict
 * encoding, JSON, header: alg/crit/b64/embedded keys) -> `iss` selects the
 * issuer -> the issuer's own size cap and algorithm list -> key set (never
 * loaded: keys_unavailable) -> `kid` within that key set only (unknown: ask the
 * key provider for a rate-limited refresh; unknown_kid, with kid_wait set when
 * one is in flight so the caller can park and verify again, or
 * keys_unavailable when the issuer's last refresh failed) -> signature -> exp, nbf, iat
 * -> audience -> typ -> token_use -> sub/jti types. Claims never decide
 * anything before the signature over them verified.
 *
 * The cache (one per worker, so no locks) is a chained hash table over a
 * fixed pool of entries with an LRU list. Its key is a 64-bit keyed hash of
 * the token (token_key: a multiply-fold over 16-byte blocks, seeded per cache
 * from getrandom, so callers cannot aim tokens at one bucket) plus the
 * identity of the `struct authn` (each authn_new gets a process-unique id, so
 * a reloaded config never serves entries verified under the old one); a hit
 * compares the whole token bytes, so the hash only picks the bucket and never
 * decides a hit. The entry keeps the token's SHA-256 fingerprint, computed
 * once when it verified: a hit hashes nothing with SHA-256. An entry remembers the issuer it
 * was verified for, the key-set generation read BEFORE the key set was
 * acquired (so a racing rotation can only cause a spurious miss, never keep a
 * revoked key's token alive), and its validity window [max(nbf, iat) -
 * leeway, exp + leeway). A hit re-checks the generation and the window.
 *
 * A keep-alive connection usually sends the same token on every request: its
 * `struct authn_hint` remembers the slot of the entry its last token hit, and
 * a request whose token has the same bytes (compared whole) takes that entry
 * without hashing. It is the same hit, with the same checks after it.
 *
 * SHA-256 per request: none on a hit. On a miss, one pass over the token
 * (jws_token_sha256), which also yields the digest an RS256, PS256 or ES256
 * signature is checked against: each byte is hashed once.
 */
#include "authn.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "list.h"
#include "util.h"

struct authn {
    uint64_t id;
    const struct baton_config *cfg;
    struct authn_keys keys;
    size_t max_token_bytes; /* the largest of the issuers' caps */
};

static atomic_uint_fast64_t authn_ids = 1;
static atomic_uint_fast64_t cache_ids = 1;

/* ---- cache ---------------------------------------------------------------------- */

struct centry {
    uint64_t key;         /* token_key() of the token: picks the bucket */
    char fingerprint[65]; /* SHA-256 hex of the token, from when it verified */
    uint64_t authn_id;
    const struct cfg_issuer *issuer; /* only dereferenced when authn_id matches */
    uint64_t generation;
    double valid_from, valid_until; /* seconds; valid while from <= now < until */
    char *token;                    /* owned copy, compared whole on a hit */
    size_t len, bytes;
    json_t *claims; /* owned reference */
    const char *sub, *jti, *audience, *aws_account;
    enum jws_alg alg;
    struct centry *hnext; /* bucket chain */
    struct list lru;      /* on the cache's lru, first = most recent */
};

struct authn_cache {
    uint64_t id;      /* process-unique: a hint names its cache by this, never by address */
    uint64_t seed[2]; /* token_key's secret */
    size_t max_entries, max_bytes, mask;
    struct centry **buckets;  /* mask + 1 */
    struct centry *pool;      /* max_entries */
    struct centry *free_list; /* chained through hnext */
    struct list lru;          /* of centry.lru, first = most recently used */
    struct authn_cache_stats st;
};

struct authn_cache *authn_cache_new_capped(size_t max_entries, size_t max_bytes)
{
    struct authn_cache *c = xcalloc(1, sizeof(*c));
    size_t nb = 16;

    c->id = atomic_fetch_add(&cache_ids, 1);
    if (getrandom(c->seed, sizeof(c->seed), 0) != (ssize_t)sizeof(c->seed)) {
        /* no entropy source: still distinct per cache and per run */
        c->seed[0] = mono_ns() ^ (uint64_t)(uintptr_t)c;
        c->seed[1] = (uint64_t)now_ms() * 0x9e3779b97f4a7c15u;
    }
    if (!max_entries)
        max_entries = AUTHN_CACHE_DEFAULT_ENTRIES;
    while (nb < 2 * max_entries)
        nb *= 2;
    c->max_entries = max_entries;
    c->max_bytes = max_bytes;
    c->mask = nb - 1;
    c->buckets = xcalloc(nb, sizeof(*c->buckets));
    c->pool = xcalloc(max_entries, sizeof(*c->pool));
    list_init(&c->lru);
    for (size_t i = max_entries; i-- > 0;) {
        c->pool[i].hnext = c->free_list;
        c->free_list = &c->pool[i];
    }
    return c;
}

struct authn_cache *authn_cache_new(size_t max_entries)
{
    if (!max_entries)
        max_entries = AUTHN_CACHE_DEFAULT_ENTRIES;
    return authn_cache_new_capped(max_entries, max_entries * AUTHN_CACHE_BYTES_PER_ENTRY);
}

/* 64 x 64 -> 128-bit multiply, folded: the mixing step of token_key. */
static uint64_t mul_fold(uint64_t a, uint64_t b)
{
    unsigned __int128 r = (unsigned __int128)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
}

/*
 * The cache's key for `len` token bytes: one multiply per 16 bytes, keyed by
 * the cache's random seed. Not a cryptographic hash and not meant to be one:
 * it only spreads entries over buckets (a hit compares the whole token); the
 * seed keeps anyone from choosing tokens that share a bucket.
 */
static uint64_t token_key(const struct authn_cache *c, const char *p, size_t len)
{
    uint64_t s0 = c->seed[0], s1 = c->seed[1], h = s0 ^ len, w[2];
    size_t n = len;

    for (; n >= 16; p += 16, n -= 16) {
        memcpy(w, p, 16);
        h = mul_fold(w[0] ^ s0, w[1] ^ s1 ^ h);
    }
    w[0] = w[1] = 0;
    memcpy(w, p, n); /* the last 0..15 bytes, zero-padded; len is in h */
    h = mul_fold(w[0] ^ s0, w[1] ^ s1 ^ h);
    return mul_fold(h ^ s1, 0x9e3779b97f4a7c15u);
}

static size_t bucket_of(const struct authn_cache *c, uint64_t key)
{
    return (size_t)key & c->mask;
}

/* The least recently used entry, or NULL when the cache is empty. */
static struct centry *lru_oldest(const struct authn_cache *c)
{
    struct list *n = list_last(&c->lru);

    return n ? list_entry(n, struct centry, lru) : NULL;
}

static void centry_remove(struct authn_cache *c, struct centry *e)
{
    struct centry **pp = &c->buckets[bucket_of(c, e->key)];

    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    list_remove(&e->lru);
    c->st.entries--;
    c->st.bytes -= e->bytes;
    json_decref(e->claims);
    free(e->token);
    memset(e, 0, sizeof(*e));
    e->hnext = c->free_list;
    c->free_list = e;
}

void authn_cache_free(struct authn_cache *c)
{
    if (!c)
        return;
    for (struct centry *e; (e = lru_oldest(c));)
        centry_remove(c, e);
    free(c->buckets);
    free(c->pool);
    free(c);
}

void authn_cache_stats(const struct authn_cache *c, struct authn_cache_stats *out)
{
    *out = c->st;
}

static struct centry *cache_find(struct authn_cache *c, uint64_t authn_id, uint64_t key,
                                 const char *tok, size_t len)
{
    for (struct centry *e = c->buckets[bucket_of(c, key)]; e; e = e->hnext)
        if (e->key == key && e->authn_id == authn_id && e->len == len &&
            memcmp(e->token, tok, len) == 0)
            return e;
    return NULL;
}

/*
 * An upper estimate of the heap jansson 2.14 holds for `v`: 48 bytes a value,
 * 192 more an object (its hashtable), 96 and the key a member, 8 an array
 * slot, the bytes and 16 a string. Measured with malloc_usable_size: the AWS
 * outbound-identity claims (417 bytes of JSON) hold 2,760 bytes, estimated
 * 2,964; a 12 KB array of 6,000 numbers holds 275,624, estimated 336,401.
 */
static size_t json_footprint(const json_t *v)
{
    size_t n = 48;
    const char *k;
    json_t *m;
    size_t i;

    switch (json_typeof(v)) {
    case JSON_OBJECT:
        n += 192;
        json_object_foreach((json_t *)v, k, m)
            n += 96 + strlen(k) + json_footprint(m);
        break;
    case JSON_ARRAY:
        json_array_foreach(v, i, m)
            n += sizeof(void *) + json_footprint(m);
        break;
    case JSON_STRING:
        n += json_string_length(v) + 16;
        break;
    default:
        break;
    }
    return n;
}

/* Takes a new reference to `claims`; the borrowed strings point into it or the config. */
static struct centry *cache_insert(struct authn_cache *c, uint64_t authn_id, uint64_t key,
                                   const char *tok, size_t len, const struct authn_result *r,
                                   uint64_t generation, double from, double until)
{
    /* the token copy plus what jansson holds for the claims: a node per value
     * (counted, not guessed: an array of small numbers costs ~20x its text) */
    size_t bytes = len + json_footprint(r->claims_ref_) + sizeof(struct centry);
    struct centry *e;

    if (bytes > c->max_bytes)
        return NULL; /* would not fit even alone */
    for (struct centry *old;
         (old = lru_oldest(c)) && (!c->free_list || c->st.bytes + bytes > c->max_bytes);) {
        centry_remove(c, old);
        c->st.evictions++;
    }
    e = c->free_list;
    c->free_list = e->hnext;
    e->key = key;
    memcpy(e->fingerprint, r->fingerprint, sizeof(e->fingerprint));
    e->authn_id = authn_id;
    e->issuer = r->issuer;
    e->generation = generation;
    e->valid_from = from;
    e->valid_until = until;
    e->token = xstrndup(tok, len);
    e->len = len;
    e->bytes = bytes;
    e->claims = json_incref(r->claims_ref_);
    e->sub = r->sub;
    e->jti = r->jti;
    e->audience = r->audience;
    e->aws_account = r->aws_account;
    e->alg = r->alg;
    e->hnext = c->buckets[bucket_of(c, key)];
    c->buckets[bucket_of(c, key)] = e;
    list_push_front(&c->lru, &e->lru);
    c->st.entries++;
    c->st.bytes += bytes;
    c->st.inserts++;
    return e;
}

/* The pool slot `h` remembers, when it holds an entry of this verifier for
 * these exact bytes: found without hashing them. The whole token is compared,
 * so a slot since reused for another token, or freed (len 0), never matches.
 * The cache is named by its id, never by address: a hint that outlived its
 * cache (a reload) is not followed into another cache's pool. */
static struct centry *hint_find(const struct authn_cache *c, const struct authn_hint *h,
                                uint64_t authn_id, const char *tok, size_t len)
{
    struct centry *e;

    if (!c || !h || h->cache_id != c->id)
        return NULL;
    e = &c->pool[h->slot];
    if (e->authn_id != authn_id || e->len != len || memcmp(e->token, tok, len) != 0)
        return NULL;
    return e;
}

static void hint_set(const struct authn_cache *c, struct authn_hint *h, const struct centry *e)
{
    if (!h)
        return;
    h->cache_id = e ? c->id : 0; /* ids start at 1: 0 names no cache */
    h->slot = e ? (size_t)(e - c->pool) : 0;
}

/* ---- verifier ------------------------------------------------------------------- */

struct authn *authn_new(const struct baton_config *cfg, const struct authn_keys *keys)
{
    struct authn *a = xcalloc(1, sizeof(*a));

    a->id = atomic_fetch_add(&authn_ids, 1);
    a->cfg = cfg;
    a->keys = *keys;
    a->max_token_bytes = 0;
    for (size_t i = 0; i < cfg->n_issuers; i++) {
        size_t m = cfg->issuers[i].max_token_bytes;
        if (!m)
            m = JWS_DEFAULT_MAX_TOKEN_BYTES;
        if (m > a->max_token_bytes)
            a->max_token_bytes = m;
    }
    if (!a->max_token_bytes)
        a->max_token_bytes = JWS_DEFAULT_MAX_TOKEN_BYTES;
    return a;
}

void authn_free(struct authn *a)
{
    free(a);
}

void authn_result_release(struct authn_result *r)
{
    json_decref(r->claims_ref_);
    memset(r, 0, sizeof(*r));
}

/* NumericDates outside 1970-01-01 .. 9999-12-31T23:59:59Z (the range of an
 * RFC 3339 timestamp, as Google's protobuf Timestamp) are refused: `exp: 1e300`
 * is a token that never expires, and such a number loses all precision. */
#define NUMERIC_DATE_MAX 253402300799.0

/* A NumericDate claim: absent (0), a number in range (1, *v set), or the
 * wrong type or out of range (-1). */
static int numeric_date(const json_t *claims, const char *name, double *v)
{
    const json_t *j = json_object_get(claims, name);
    if (!j)
        return 0;
    if (!json_is_number(j))
        return -1;
    *v = json_number_value(j);
    if (!(*v >= 0 && *v <= NUMERIC_DATE_MAX))
        return -1;
    return 1;
}

/* A string claim: absent (0, *v NULL), a string (1), or the wrong type (-1). */
static int string_claim(const json_t *claims, const char *name, const char **v)
{
    const json_t *j = json_object_get(claims, name);
    *v = NULL;
    if (!j)
        return 0;
    if (!json_is_string(j))
        return -1;
    *v = json_string_value(j);
    return 1;
}

static const char *audience_match(const struct cfg_issuer *is, const json_t *v)
{
    for (size_t i = 0; i < is->n_audiences; i++)
        if (strcmp(json_string_value(v), is->audiences[i]) == 0)
            return is->audiences[i];
    return NULL;
}

/* Sets *matched to the configured audience named by the token. */
static enum reason check_audience(const struct cfg_issuer *is, const json_t *claims,
                                  const char **matched)
{
    const char *name = is->audience_claim ? is->audience_claim : "aud";
    const json_t *v = json_object_get(claims, name), *el;
    size_t i;

    *matched = NULL;
    if (!v)
        return REASON_AUDIENCE_MISMATCH;
    if (json_is_string(v)) {
        *matched = audience_match(is, v);
        return *matched ? REASON_ALLOWED : REASON_AUDIENCE_MISMATCH;
    }
    /* `aud` may be an array (RFC 7519 4.1.3); client_id is a single string. */
    if (!json_is_array(v) || strcmp(name, "aud") != 0)
        return REASON_BAD_CLAIM_TYPE;
    json_array_foreach(v, i, el) {
        if (!json_is_string(el))
            return REASON_BAD_CLAIM_TYPE;
    }
    json_array_foreach(v, i, el) {
        if ((*matched = audience_match(is, el)))
            return REASON_ALLOWED;
    }
    return REASON_AUDIENCE_MISMATCH;
}

/* RFC 7515 4.1.9: a typ without '/' means "application/" + typ; media types
 * compare case-insensitively. The list is config's as loaded (absent key:
 * ["JWT", "at+jwt"]; an explicit [] admits only tokens without typ). */
static void typ_norm(const char *s, const char **out, size_t *len)
{
    size_t n = strlen(s);
    if (n >= 12 && ascii_casecmp_n(s, 12, "application/", 12) == 0) {
        s += 12;
        n -= 12;
    }
    *out = s;
    *len = n;
}

static bool typ_allowed(const struct cfg_issuer *is, const char *typ)
{
    const char *t, *w;
    size_t tl, wl;

    typ_norm(typ, &t, &tl);
    for (size_t i = 0; i < is->n_token_types; i++) {
        typ_norm(is->token_types[i], &w, &wl);
        if (ascii_casecmp_n(t, tl, w, wl) == 0)
            return true;
    }
    return false;
}

static const char *aws_account(const json_t *claims)
{
    const json_t *ns = json_object_get(claims, "https://sts.amazonaws.com/");
    return json_string_value(json_object_get(ns, "aws_account")); /* NULL-safe both */
}

/* Signature by kid, or (issuer opt-in) by every key able to verify the alg.
 * An unknown kid asks the key provider for a refresh and says in *wait
 * whether one is in flight. */
static enum reason verify_signature(struct authn *a, const struct cfg_issuer *is,
                                    const struct jws_keyset *ks, const struct jws_token *t,
                                    bool *wait)
{
    const struct jws_key *k;
    enum reason r;

    if (t->kid) {
        k = jws_keyset_find(ks, t->kid, t->kid_len);
        if (!k) {
            if (!a->keys.kid_unknown) {
                a->keys.kid_miss(a->keys.ctx, is);
                return REASON_UNKNOWN_KID;
            }
            switch (a->keys.kid_unknown(a->keys.ctx, is)) {
            case AUTHN_KID_WAIT:
                *wait = true;
                return REASON_UNKNOWN_KID;
            case AUTHN_KID_STALE: /* the issuer is failing: maybe a rotation we cannot see */
                return REASON_KEYS_UNAVAILABLE;
            case AUTHN_KID_DECIDE:
                break;
            }
            return REASON_UNKNOWN_KID;
        }
        return jws_verify(t, k, is->algorithms);
    }
    if (!is->allow_missing_kid)
        return REASON_KID_MISSING;
    r = REASON_ALG_KEY_MISMATCH; /* no key of the token's type at all */
    for (size_t i = 0; i < jws_keyset_count(ks); i++) {
        k = jws_keyset_key(ks, i);
        if (!(jws_key_algs(k) & (1u << t->alg)))
            continue;
        r = jws_verify(t, k, is->algorithms);
        if (r == REASON_ALLOWED)
            break;
    }
    return r;
}

/* Claims of a token whose signature verified. Fills out's borrowed strings. */
static enum reason check_claims(const struct cfg_issuer *is, const struct jws_token *t,
                                int64_t now_s, struct authn_result *out, double *from,
                                double *until)
{
    const json_t *claims = t->claims;
    double now = (double)now_s, leeway = is->leeway_s, exp = 0, nbf = 0, iat = 0;
    int has_nbf, has_iat, sub_ok, jti_ok;
    const char *use;
    enum reason r;

    /* identity first, so a verified but failing token still names its subject */
    sub_ok = string_claim(claims, "sub", &out->sub);
    jti_ok = string_claim(claims, "jti", &out->jti);
    out->aws_account = aws_account(claims);
    switch (numeric_date(claims, "exp", &exp)) {
    case 0:
        return REASON_EXP_MISSING;
    case -1:
        return REASON_BAD_CLAIM_TYPE;
    }
    if (now >= exp + leeway)
        return REASON_EXPIRED;
    if ((has_nbf = numeric_date(claims, "nbf", &nbf)) < 0 ||
        (has_iat = numeric_date(claims, "iat", &iat)) < 0)
        return REASON_BAD_CLAIM_TYPE;
    if (has_nbf && nbf > now + leeway)
        return REASON_NOT_YET_VALID;
    if (has_iat && iat > now + leeway)
        return REASON_IAT_IN_FUTURE;
    *until = exp + leeway;
    *from = -1e300;
    if (has_nbf)
        *from = nbf - leeway;
    if (has_iat && iat - leeway > *from)
        *from = iat - leeway;
    r = check_audience(is, claims, &out->audience);
    if (r != REASON_ALLOWED)
        return r;
    if (t->typ && !typ_allowed(is, t->typ))
        return REASON_TYP_NOT_ALLOWED;
    if (is->token_use) {
        if (string_claim(claims, "token_use", &use) != 1 || strcmp(use, is->token_use) != 0)
            return REASON_TOKEN_USE_MISMATCH;
    }
    if (sub_ok < 0 || jti_ok < 0)
        return REASON_BAD_CLAIM_TYPE;
    return REASON_ALLOWED;
}

static enum reason verify_token(struct authn *a, struct authn_cache *cache, struct authn_hint *hint,
                                const char *token, size_t len, int64_t now_s, uint64_t key,
                                struct authn_result *out);

enum reason authn_verify(struct authn *a, struct authn_cache *cache, struct authn_hint *hint,
                         const char *token, size_t len, int64_t now_s, struct authn_result *out)
{
    uint64_t key = 0;
    struct centry *e = hint_find(cache, hint, a->id, token, len);
    bool hinted = e != NULL;

    memset(out, 0, sizeof(*out));
    hint_set(cache, hint, NULL);
    if (len > a->max_token_bytes) {
        sha256_hex(token, len, out->fingerprint);
        return REASON_TOKEN_TOO_LARGE;
    }

    if (cache) {
        if (!e) {
            key = token_key(cache, token, len);
            e = cache_find(cache, a->id, key, token, len);
        }
        if (e) {
            double now = (double)now_s;
            key = e->key; /* the same bytes in the same cache: the same key */
            if (a->keys.generation(a->keys.ctx, e->issuer) != e->generation) {
                cache->st.stale++;
                centry_remove(cache, e);
            } else if (now >= e->valid_until || now < e->valid_from) {
                cache->st.expired++;
                centry_remove(cache, e);
            } else {
                list_remove(&e->lru);
                list_push_front(&cache->lru, &e->lru);
                cache->st.hits++;
                memcpy(out->fingerprint, e->fingerprint, sizeof(out->fingerprint));
                out->issuer = e->issuer;
                out->claims = out->claims_ref_ = json_incref(e->claims);
                out->sub = e->sub;
                out->jti = e->jti;
                out->audience = e->audience;
                out->aws_account = e->aws_account;
                out->alg = e->alg;
                out->cache_hit = true;
                if (hinted)
                    cache->st.hint_hits++;
                hint_set(cache, hint, e);
                return REASON_ALLOWED;
            }
        }
        cache->st.misses++;
    }
    return verify_token(a, cache, hint, token, len, now_s, key, out);
}

/* A token the cache did not have (`key`: its cache key, when there is a
 * cache): parse, issuer, keys, signature, claims; cached when it passes. The
 * token's parse state is set up here, off the hit path. */
static enum reason verify_token(struct authn *a, struct authn_cache *cache, struct authn_hint *hint,
                                const char *token, size_t len, int64_t now_s, uint64_t key,
                                struct authn_result *out)
{
    struct jws_token t = JWS_TOKEN_INIT;
    struct jws_keyset *ks = NULL;
    const struct cfg_issuer *is;
    const json_t *iss;
    unsigned char sha[32];
    uint64_t gen = 0;
    double from = 0, until = 0;
    enum reason r;

    r = jws_parse(token, len, a->max_token_bytes, &t);
    if (r == REASON_ALLOWED)
        jws_token_sha256(&t, sha); /* also the signing input's digest, when SHA-256 */
    else
        sha256_raw(token, len, sha);
    hex_encode(sha, 32, out->fingerprint);
    if (r != REASON_ALLOWED)
        goto out;
    iss = json_object_get(t.claims, "iss");
    if (!iss) {
        r = REASON_ISSUER_MISSING;
        goto out;
    }
    if (!json_is_string(iss)) {
        r = REASON_BAD_CLAIM_TYPE;
        goto out;
    }
    is = config_issuer_by_iss(a->cfg, json_string_value(iss), json_string_length(iss));
    if (!is) {
        r = REASON_UNKNOWN_ISSUER;
        goto out;
    }
    out->issuer = is;
    if (is->max_token_bytes && len > is->max_token_bytes) {
        r = REASON_TOKEN_TOO_LARGE;
        goto out;
    }
    if (!(is->algorithms & (1u << t.alg))) {
        r = REASON_ALG_NOT_ALLOWED; /* before the kid lookup: no refresh for a refused alg */
        goto out;
    }
    gen = a->keys.generation(a->keys.ctx, is); /* before acquire: see the file comment */
    ks = a->keys.acquire(a->keys.ctx, is);
    if (!ks) {
        r = REASON_KEYS_UNAVAILABLE;
        goto out;
    }
    r = verify_signature(a, is, ks, &t, &out->kid_wait);
    if (r != REASON_ALLOWED)
        goto out;
    out->claims = out->claims_ref_ = json_incref(t.claims);
    out->alg = t.alg;
    r = check_claims(is, &t, now_s, out, &from, &until);
    if (r == REASON_ALLOWED && cache)
        hint_set(cache, hint, cache_insert(cache, a->id, key, token, len, out, gen, from, until));
out:
    jws_token_clear(&t);
    jws_keyset_unref(ks);
    return r;
}
