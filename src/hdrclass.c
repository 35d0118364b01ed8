/*
 * hdrclass.c: the header-name classifier declared in hdrclass.h.
 *
 * An open-addressing table (linear probing, at most half full) of lowercase
 * names. A name's '-'/'_'-insensitive classes are stored under its
 * dash-folded spelling ('_' read as '-'), its exact classes and id under its
 * lowercase spelling; the two keys are one entry when the name has no '_'. A
 * lookup folds the name once (lowercase, '_' to '-') while hashing it, probes
 * that key, and probes the lowercase spelling only when the name held a '_'.
 * Prefix families (X-Forwarded-*, X-Goog-*, ...) are a switch on the first
 * folded bytes, after the probe.
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
    char *name; /* owned, lowercase; NULL: empty slot */
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

static inline unsigned char fold_case(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c;
}

static inline unsigned char fold_dash(unsigned char c)
{
    c = fold_case(c);
    return c == '_' ? '-' : c;
}

#define FNV_OFFSET 2166136261u
#define FNV_PRIME 16777619u

static uint32_t hash_case(const char *s, size_t n)
{
    uint32_t h = FNV_OFFSET;
    for (size_t i = 0; i < n; i++)
        h = (h ^ fold_case((unsigned char)s[i])) * FNV_PRIME;
    return h;
}

/* name (any case, any '_') equals the stored lowercase key, folding '_' when dash */
static bool key_eq(const struct hc_entry *e, const char *s, size_t n, bool dash)
{
    if (e->len != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = dash ? fold_dash((unsigned char)s[i]) : fold_case((unsigned char)s[i]);
        if (c != (unsigned char)e->name[i])
            return false;
    }
    return true;
}

static struct hc_entry *probe(const struct hdrclass *t, const char *s, size_t n, uint32_t h,
                              bool dash)
{
    for (size_t i = h & t->mask;; i = (i + 1) & t->mask) {
        struct hc_entry *e = &t->slots[i];
        if (!e->name)
            return NULL;
        if (e->hash == h && key_eq(e, s, n, dash))
            return e;
    }
}

/* The slot of key (lowercase, already folded as wanted), created when absent. */
static struct hc_entry *slot_for(struct hdrclass *t, const char *key, size_t n)
{
    uint32_t h = hash_case(key, n);
    size_t i = h & t->mask;

    for (;; i = (i + 1) & t->mask) {
        struct hc_entry *e = &t->slots[i];
        if (!e->name) {
            e->name = xstrndup(key, n);
            e->len = n;
            e->hash = h;
            t->n++;
            return e;
        }
        if (e->hash == h && e->len == n && memcmp(e->name, key, n) == 0)
            return e;
    }
}

static void add(struct hdrclass *t, const char *name, unsigned exact, unsigned any,
                enum hdrclass_id id)
{
    char low[HC_MAX_NAME], dash[HC_MAX_NAME];
    size_t n = strlen(name);

    for (size_t i = 0; i < n; i++) {
        low[i] = (char)fold_case((unsigned char)name[i]);
        dash[i] = (char)fold_dash((unsigned char)name[i]);
    }
    if (exact || id) {
        struct hc_entry *e = slot_for(t, low, n);
        e->exact |= (uint16_t)exact;
        if (id)
            e->id = (uint8_t)id;
    }
    if (any)
        slot_for(t, dash, n)->any |= (uint16_t)any;
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
                            n_credential)), cap = 64;

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
static unsigned prefix_class(const unsigned char *f, size_t n)
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

unsigned hdrclass_of(const struct hdrclass *t, const char *name, size_t len,
                     enum hdrclass_id *id)
{
    unsigned char head[16];
    uint32_t h = FNV_OFFSET;
    bool us = false;
    unsigned cls = 0;
    const struct hc_entry *e;

    if (!t)
        t = hdrclass_builtin();
    if (id)
        *id = HDR_OTHER;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = fold_case((unsigned char)name[i]);
        if (c == '_') {
            us = true;
            c = '-';
        }
        if (i < sizeof(head))
            head[i] = c;
        h = (h ^ c) * FNV_PRIME;
    }
    if ((e = probe(t, name, len, h, true)) != NULL) {
        cls = e->any;
        if (!us) {
            cls |= e->exact;
            if (id)
                *id = (enum hdrclass_id)e->id;
        }
    }
    if (us && (e = probe(t, name, len, hash_case(name, len), false)) != NULL) {
        cls |= e->exact;
        if (id)
            *id = (enum hdrclass_id)e->id;
    }
    cls |= prefix_class(head, len < sizeof(head) ? len : sizeof(head));
    if (cls & HC_NOT_FORWARDING)
        cls &= ~(HC_NOT_FORWARDING | HDRCLASS_FORWARDING);
    return cls;
}
