/*
 * hdrclass.c: the header-name classifier declared in hdrclass.h.
 *
 * An open-addressing table (linear probing, at most half full) of lowercase
 * names. A name's '-'/'_'-insensitive classes are stored under its
 * dash-folded spelling ('_' read as '-'), its exact classes and id under its
 * lowercase spelling; the two keys are one entry when the name has no '_'. A
 * lookup folds the name once (lowercase, '_' to '-') eight bytes at a time
 * into a buffer while hashing the words, probes that key (a compare of the
 * folded words), and probes the lowercase spelling only when the name held a
 * '_'. Keys are stored zero-padded to whole words, as the fold leaves the
 * lookup's key, so a probe compares words, not bytes. Prefix families
 * (X-Forwarded-*, X-Goog-*, ...) are a switch on the first folded bytes,
 * after the probe, for names starting "x-" only.
 */
#include "hdrclass.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define HC_MAX_NAME 256
/* internal: an exact-dash name under a forwarding prefix that is no hop
 * (X-Forwarded-User/-Email claim an identity) */
#define HC_NOT_FORWARDING 0x8000u

struct hc_entry {
    uint64_t *name; /* owned, lowercase, zero-padded to whole words; NULL: empty slot */
    size_t len;
    uint32_t hash;
    uint16_t exact; /* classes of this exact spelling */
    uint16_t any;   /* classes of every '-'/'_' spelling (stored under the dash-folded key) */
    uint8_t id;     /* enum hdrclass_id of this exact spelling */
};

struct hdrclass {
    struct hc_entry *slots; /* owned */
    size_t mask;            /* capacity - 1, capacity a power of two */
    size_t n;
};

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "hdrclass.c folds names as little-endian words"
#endif

#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull
#define MIX 0x9e3779b97f4a7c15ull

/*
 * Folds w's bytes (little-endian, as loaded) ASCII-lowercase, and '_' to '-'
 * when dash; a byte with its high bit set is left as it is. *us gets the '_'
 * bytes (0x80 each). SWAR: a byte b < 0x80 plus 0x3f carries into its high
 * bit when b >= 'A', plus 0x25 when b > 'Z'; b ^ '_' is zero only for '_'.
 */
static inline uint64_t fold_word(uint64_t w, bool dash, uint64_t *us)
{
    uint64_t lo = w & ~HIGHS, ascii = ~w & HIGHS;
    uint64_t upper = (lo + ONES * 0x3f) & ~(lo + ONES * 0x25) & ascii;
    uint64_t t = lo ^ (ONES * '_');
    uint64_t under = ~((t + ONES * 0x7f) | t) & ascii;

    *us |= under;
    w |= upper >> 2; /* 0x80 >> 2 is 0x20: 'A' becomes 'a' */
    if (dash)
        w ^= (under >> 7) * ('_' ^ '-');
    return w;
}

/* s[i..n) (i < n) as a word, its bytes past n zero, never reading outside
 * s[0..n): a name of 8 bytes or more ends on a load of its last 8 shifted
 * down; a shorter one is two overlapping 4-byte loads, or up to three bytes. */
static inline uint64_t load_word(const char *s, size_t i, size_t n)
{
    size_t r = n - i;
    uint64_t w;
    uint32_t a, b;

    if (r >= 8) {
        memcpy(&w, s + i, 8);
        return w;
    }
    if (n >= 8) {
        memcpy(&w, s + n - 8, 8);
        return w >> (8 * (8 - r));
    }
    if (r >= 4) {
        memcpy(&a, s, 4);
        memcpy(&b, s + r - 4, 4);
        return (uint64_t)a | (uint64_t)b << (8 * (r - 4));
    }
    return (uint64_t)(unsigned char)s[0] | (uint64_t)(unsigned char)s[r / 2] << (8 * (r / 2)) |
           (uint64_t)(unsigned char)s[r - 1] << (8 * (r - 1));
}

/* Folds s[0..n) into out (n rounded up to 8 bytes, zero-padded: out has room
 * for them) and returns the hash of the folded bytes; *us true when s holds
 * a '_'. The table and the lookup hash alike, by this function. */
static inline uint32_t fold_hash(const char *s, size_t n, bool dash, unsigned char *out, bool *us)
{
    uint64_t h = MIX ^ n, u = 0;

    for (size_t i = 0; i < n; i += 8) {
        uint64_t w = fold_word(load_word(s, i, n), dash, &u);
        memcpy(out + i, &w, 8);
        h = (h ^ w) * MIX;
    }
    if (us)
        *us = u != 0;
    return (uint32_t)(h ^ (h >> 29));
}

/* a[0..words) == b[0..words) */
static inline bool words_eq(const uint64_t *a, const uint64_t *b, size_t words)
{
    for (size_t k = 0; k < words; k++)
        if (a[k] != b[k])
            return false;
    return true;
}

/* The entry of key (n bytes, folded and zero-padded by fold_hash, hash h), or NULL. */
static inline struct hc_entry *probe(const struct hdrclass *t, const uint64_t *key, size_t n,
                                     uint32_t h)
{
    for (size_t i = h & t->mask;; i = (i + 1) & t->mask) {
        struct hc_entry *e = &t->slots[i];
        if (!e->name)
            return NULL;
        if (e->hash == h && e->len == n && words_eq(e->name, key, (n + 7) / 8))
            return e;
    }
}

/* The slot of key (folded as wanted, hash h by fold_hash), created when absent. */
static struct hc_entry *slot_for(struct hdrclass *t, const uint64_t *key, size_t n, uint32_t h)
{
    size_t i = h & t->mask;

    for (;; i = (i + 1) & t->mask) {
        struct hc_entry *e = &t->slots[i];
        if (!e->name) {
            /* whole words, zero past n (a NUL terminator included) */
            e->name = xcalloc(n / 8 + 1, sizeof(uint64_t));
            memcpy(e->name, key, n);
            e->len = n;
            e->hash = h;
            t->n++;
            return e;
        }
        if (e->hash == h && e->len == n && words_eq(e->name, key, (n + 7) / 8))
            return e;
    }
}

static void add(struct hdrclass *t, const char *name, unsigned exact, unsigned any,
                enum hdrclass_id id)
{
    uint64_t low[HC_MAX_NAME / 8 + 1], dash[HC_MAX_NAME / 8 + 1];
    size_t n = strlen(name);
    uint32_t h_low = fold_hash(name, n, false, (unsigned char *)low, NULL),
             h_dash = fold_hash(name, n, true, (unsigned char *)dash, NULL);

    if (exact || id) {
        struct hc_entry *e = slot_for(t, low, n, h_low);
        e->exact |= (uint16_t)exact;
        if (id)
            e->id = (uint8_t)id;
    }
    if (any)
        slot_for(t, dash, n, h_dash)->any |= (uint16_t)any;
}

static const struct {
    const char *name;
    unsigned exact, any;
    enum hdrclass_id id;
} builtins[] = {
    /* hop-by-hop (RFC 9110 7.6.1 and the de-facto ones) */
    {"connection", HDRCLASS_HOP_BY_HOP, 0, HDR_CONNECTION},
    {"keep-alive", HDRCLASS_HOP_BY_HOP, 0, HDR_OTHER},
    {"proxy-connection", HDRCLASS_HOP_BY_HOP, 0, HDR_OTHER},
    {"te", HDRCLASS_HOP_BY_HOP, 0, HDR_OTHER},
    {"trailer", HDRCLASS_HOP_BY_HOP, 0, HDR_OTHER},
    {"transfer-encoding", HDRCLASS_HOP_BY_HOP | HDRCLASS_FRAMING, 0, HDR_TRANSFER_ENCODING},
    {"upgrade", HDRCLASS_HOP_BY_HOP, 0, HDR_OTHER},
    {"proxy-authorization", HDRCLASS_HOP_BY_HOP | HDRCLASS_CREDENTIAL, 0, HDR_OTHER},
    {"proxy-authenticate", HDRCLASS_HOP_BY_HOP, 0, HDR_OTHER},
    {"http2-settings", HDRCLASS_HOP_BY_HOP, 0, HDR_OTHER},
    /* framing, and what baton sets itself or never forwards */
    {"content-length", HDRCLASS_FRAMING | HDRCLASS_DROPPED, 0, HDR_CONTENT_LENGTH},
    {"authorization", HDRCLASS_CREDENTIAL | HDRCLASS_DROPPED, 0, HDR_AUTHORIZATION},
    {"host", HDRCLASS_DROPPED, 0, HDR_HOST},
    {"expect", HDRCLASS_DROPPED, 0, HDR_EXPECT},
    {"x-request-id", HDRCLASS_DROPPED, 0, HDR_X_REQUEST_ID},
    {"traceparent", HDRCLASS_DROPPED, 0, HDR_TRACEPARENT},
    {"tracestate", 0, 0, HDR_TRACESTATE},
    {"user-agent", 0, 0, HDR_USER_AGENT},
    /* forwarding (the prefix X-Forwarded- is in hdrclass_of) */
    {"forwarded", 0, HDRCLASS_SPOOFABLE | HDRCLASS_FORWARDING, HDR_FORWARDED},
    {"x-forwarded-for", 0, 0, HDR_X_FORWARDED_FOR},
    {"x-forwarded-proto", 0, 0, HDR_X_FORWARDED_PROTO},
    {"x-forwarded-host", 0, 0, HDR_X_FORWARDED_HOST},
    /* spoofable identity (docs/spec.md step 6), every spelling */
    {"x-serverless-authorization", 0, HDRCLASS_SPOOFABLE, HDR_OTHER},
    {"x-http-method-override", 0, HDRCLASS_SPOOFABLE, HDR_OTHER},
    {"x-http-method", 0, HDRCLASS_SPOOFABLE, HDR_OTHER},
    {"x-method-override", 0, HDRCLASS_SPOOFABLE, HDR_OTHER},
    /* path overrides (IIS URL Rewrite, Symfony, Laravel behind a proxy): the
     * upstream would route to a path the policy never matched */
    {"x-original-url", 0, HDRCLASS_SPOOFABLE, HDR_OTHER},
    {"x-rewrite-url", 0, HDRCLASS_SPOOFABLE, HDR_OTHER},
    {"x-original-uri", 0, HDRCLASS_SPOOFABLE, HDR_OTHER},
    /* client-address claims an upstream may trust like X-Forwarded-For */
    {"x-real-ip", 0, HDRCLASS_SPOOFABLE, HDR_OTHER},
    {"true-client-ip", 0, HDRCLASS_SPOOFABLE, HDR_OTHER},
    {"x-client-ip", 0, HDRCLASS_SPOOFABLE, HDR_OTHER},
    {"cf-connecting-ip", 0, HDRCLASS_SPOOFABLE, HDR_OTHER},
    /* identity claims a platform or an auth proxy puts in front of an app
     * (ESP, API Gateway, oauth2-proxy, Apache/nginx auth modules), and
     * Next.js's internal-subrequest marker that skips its middleware */
    {"x-endpoint-api-userinfo", 0, HDRCLASS_SPOOFABLE, HDR_OTHER},
    {"x-apigateway-api-userinfo", 0, HDRCLASS_SPOOFABLE, HDR_OTHER},
    {"x-remote-user", 0, HDRCLASS_SPOOFABLE, HDR_OTHER},
    {"x-forwarded-user", 0, HDRCLASS_SPOOFABLE | HC_NOT_FORWARDING, HDR_OTHER},
    {"x-forwarded-email", 0, HDRCLASS_SPOOFABLE | HC_NOT_FORWARDING, HDR_OTHER},
    {"x-middleware-subrequest", 0, HDRCLASS_SPOOFABLE, HDR_OTHER},
    /* the framing names spelled with '_', refused by the parser */
    {"content_length", 0, 0, HDR_CONTENT_LENGTH_US},
    {"transfer_encoding", 0, 0, HDR_TRANSFER_ENCODING_US},
};

static int add_list(struct hdrclass *t, const char *const *names, size_t n, unsigned exact,
                    unsigned any, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        size_t len = names[i] ? strlen(names[i]) : 0;
        if (len == 0 || len > HC_MAX_NAME) {
            snprintf(err, errlen, "header name %s", len ? "longer than 256 bytes" : "empty");
            return -1;
        }
        add(t, names[i], exact, any, HDR_OTHER);
    }
    return 0;
}

struct hdrclass *hdrclass_new(const char *const *recorded, size_t n_recorded,
                              const char *const *policy_read, size_t n_policy,
                              const char *const *credential, size_t n_credential, char *err,
                              size_t errlen)
{
    struct hdrclass *t = xcalloc(1, sizeof(*t));
    /* every name may take two keys (exact and dash-folded); at most half full */
    size_t want = 2 * (2 * (sizeof(builtins) / sizeof(builtins[0]) + n_recorded + n_policy +
                            n_credential)),
           cap = 64;

    while (cap < want)
        cap *= 2;
    t->slots = xcalloc(cap, sizeof(*t->slots));
    t->mask = cap - 1;
    for (size_t i = 0; i < sizeof(builtins) / sizeof(builtins[0]); i++)
        add(t, builtins[i].name, builtins[i].exact, builtins[i].any, builtins[i].id);
    if (add_list(t, recorded, n_recorded, HDRCLASS_RECORDED, 0, err, errlen) < 0 ||
        add_list(t, policy_read, n_policy, HDRCLASS_POLICY, 0, err, errlen) < 0 ||
        add_list(t, credential, n_credential, 0, HDRCLASS_CREDENTIAL, err, errlen) < 0) {
        hdrclass_free(t);
        return NULL;
    }
    return t;
}

void hdrclass_free(struct hdrclass *t)
{
    if (!t)
        return;
    for (size_t i = 0; i <= t->mask; i++)
        free(t->slots[i].name);
    free(t->slots);
    free(t);
}

static struct hdrclass *builtin_table;
static pthread_once_t builtin_once = PTHREAD_ONCE_INIT;

static void builtin_init(void)
{
    char err[64];
    builtin_table = hdrclass_new(NULL, 0, NULL, 0, NULL, 0, err, sizeof(err));
}

const struct hdrclass *hdrclass_builtin(void)
{
    pthread_once(&builtin_once, builtin_init);
    return builtin_table;
}

/* The spoofable prefix families, on the dash-folded first bytes f[0..n). */
static inline unsigned prefix_class(const unsigned char *f, size_t n)
{
#define HAS(lit) (n >= sizeof(lit) - 1 && memcmp(f, lit, sizeof(lit) - 1) == 0)
    if (n < 7 || f[0] != 'x' || f[1] != '-')
        return 0;
    switch (f[2]) {
    case 'f':
        return HAS("x-forwarded-") ? HDRCLASS_SPOOFABLE | HDRCLASS_FORWARDING : 0;
    case 'g':
        return HAS("x-goog-") ? HDRCLASS_SPOOFABLE : 0;
    case 'b':
        return HAS("x-baton-") ? HDRCLASS_SPOOFABLE : 0;
    /* App Engine's and Cloud Scheduler's platform headers (X-Appengine-Cron,
     * X-CloudScheduler, X-CloudScheduler-JobName...), oauth2-proxy's
     * X-Auth-Request-User/-Email/-Access-Token */
    case 'a':
        return HAS("x-appengine-") || HAS("x-auth-request-") ? HDRCLASS_SPOOFABLE : 0;
    case 'c':
        return HAS("x-cloudscheduler") ? HDRCLASS_SPOOFABLE : 0;
    default:
        return 0;
    }
#undef HAS
}

/* prefix_class of the (at most 16) folded bytes in w0, w1. */
__attribute__((noinline)) static unsigned prefix_class2(uint64_t w0, uint64_t w1, size_t n)
{
    uint64_t f[2] = {w0, w1};
    return prefix_class((const unsigned char *)f, n);
}

/* hdrclass_of for any name (the short names without '_' take the path below). */
__attribute__((noinline)) static unsigned classify_any(const struct hdrclass *t, const char *name,
                                                       size_t len, enum hdrclass_id *id)
{
    uint64_t f[HC_MAX_NAME / 8 + 1]; /* the name folded, '_' read as '-' */
    bool us = false;
    unsigned cls = 0;
    uint32_t h;
    const struct hc_entry *e;

    if (!t)
        t = hdrclass_builtin();
    if (id)
        *id = HDR_OTHER;
    if (len == 0) /* no name: no class (and f stays unread) */
        return 0;
    if (len > HC_MAX_NAME) { /* no entry is so long: the prefix families only */
        fold_hash(name, 16, true, (unsigned char *)f, NULL);
        cls = prefix_class((const unsigned char *)f, 16);
        goto out;
    }
    h = fold_hash(name, len, true, (unsigned char *)f, &us);
    if ((e = probe(t, f, len, h)) != NULL) {
        cls = e->any;
        if (!us) {
            cls |= e->exact;
            if (id)
                *id = (enum hdrclass_id)e->id;
        }
    }
    if ((f[0] & 0xffff) == ('x' | '-' << 8)) /* every prefix family starts "x-" */
        cls |= prefix_class((const unsigned char *)f, len < 16 ? len : 16);
    if (us) {
        uint64_t x[HC_MAX_NAME / 8 + 1]; /* the name lowercase, '_' kept */
        h = fold_hash(name, len, false, (unsigned char *)x, NULL);
        if ((e = probe(t, x, len, h)) != NULL) {
            cls |= e->exact;
            if (id)
                *id = (enum hdrclass_id)e->id;
        }
    }
out:
    if (cls & HC_NOT_FORWARDING)
        cls &= ~(HC_NOT_FORWARDING | HDRCLASS_FORWARDING);
    return cls;
}

/* The classes of a short folded name (as hdrclass_of_folded takes it). */
static inline unsigned classify_short(const struct hdrclass *t, uint64_t w0, uint64_t w1,
                                      size_t len, enum hdrclass_id *id)
{
    uint64_t h = MIX ^ len;
    unsigned cls = 0;
    uint32_t h32;

    h = (h ^ w0) * MIX;
    if (len > 8)
        h = (h ^ w1) * MIX;
    if (!t)
        t = hdrclass_builtin();
    if (id)
        *id = HDR_OTHER;
    h32 = (uint32_t)(h ^ (h >> 29));
    for (size_t i = h32 & t->mask;; i = (i + 1) & t->mask) {
        const struct hc_entry *e = &t->slots[i];
        if (!e->name)
            break;
        if (e->hash == h32 && e->len == len && e->name[0] == w0 && (len <= 8 || e->name[1] == w1)) {
            cls = e->any | e->exact;
            if (id)
                *id = (enum hdrclass_id)e->id;
            break;
        }
    }
    if ((w0 & 0xffff) == ('x' | '-' << 8)) /* every prefix family starts "x-" */
        cls |= prefix_class2(w0, w1, len);
    if (cls & HC_NOT_FORWARDING)
        cls &= ~(HC_NOT_FORWARDING | HDRCLASS_FORWARDING);
    return cls;
}

/*
 * Most names are 1..16 bytes without '_': folded into two words kept in
 * registers, hashed as fold_hash hashes them, and probed word by word, with
 * no buffer. Anything else, classify_any.
 */
unsigned hdrclass_of(const struct hdrclass *t, const char *name, size_t len, enum hdrclass_id *id)
{
    uint64_t w0, w1 = 0, u = 0;

    if (len == 0 || len > 16)
        return classify_any(t, name, len, id);
    w0 = fold_word(load_word(name, 0, len), true, &u);
    if (len > 8)
        w1 = fold_word(load_word(name, 8, len), true, &u);
    if (u) /* a '_': its classes under both spellings */
        return classify_any(t, name, len, id);
    return classify_short(t, w0, w1, len, id);
}

unsigned hdrclass_of_folded(const struct hdrclass *t, uint64_t w0, uint64_t w1, size_t len,
                            enum hdrclass_id *id)
{
    return classify_short(t, w0, w1, len, id);
}
