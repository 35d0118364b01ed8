/*
 * identity.c: the token cache of identity.h and its refresh scheduling.
 *
 * Layout. Every (identity, audience) pair ever configured is one `struct
 * entry`, owned by the identity until identity_free. The set the request
 * path may use is an immutable `struct table` of entry pointers, published by
 * an atomic pointer swap (identity_set_pairs) and never freed before
 * identity_free, so a reader needs no reference on it. Each entry's current
 * token is an immutable refcounted `struct token`; identity_get takes a
 * reference under the entry's mutex (a pointer load and an increment), and
 * the background thread swaps in a new token under the same mutex.
 *
 * Scheduling, all on the background event_base: an entry is minted when it
 * has neither a mint in flight nor a timer pending (single flight); success
 * arms the refresh timer from the token's own exp (identity_refresh_delay_ms),
 * failure arms a backoff timer (identity_backoff_ms) and keeps the previous
 * token, which stays usable until exp - margin. Requests never trigger a
 * mint: a pair without a usable token answers 503 until the background
 * succeeds, so a burst of first requests costs exactly one mint per pair.
 */
#include "identity.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <event2/event.h>
#include <jansson.h>

#include "b64.h"
#include "buf.h"
#include "config.h"
#include "google.h"
#include "log.h"
#include "util.h"

#define MAX_TOKEN_BYTES 16384 /* a Google ID token is about 1 KiB */
#define MAX_DETAIL_BYTES 1024

const unsigned identity_latency_bounds_ms[IDENTITY_LATENCY_BUCKETS] = {
    5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000,
};

static const char *const failure_names[IDENTITY_FAIL__COUNT] = {
    [IDENTITY_FAIL_CONNECT] = "connect",         [IDENTITY_FAIL_TIMEOUT] = "timeout",
    [IDENTITY_FAIL_TOO_BIG] = "too_big",         [IDENTITY_FAIL_TLS] = "tls",
    [IDENTITY_FAIL_HTTP_5XX] = "http_5xx",       [IDENTITY_FAIL_PERMISSION] = "permission_denied",
    [IDENTITY_FAIL_NOT_FOUND] = "not_found",     [IDENTITY_FAIL_HTTP] = "http_status",
    [IDENTITY_FAIL_MALFORMED] = "malformed",     [IDENTITY_FAIL_EXPIRED] = "expired",
    [IDENTITY_FAIL_CREDENTIALS] = "credentials", [IDENTITY_FAIL_INTERNAL] = "internal",
};

const char *identity_failure_name(enum identity_failure f)
{
    return (unsigned)f < IDENTITY_FAIL__COUNT ? failure_names[f] : "internal";
}

/* An immutable token; freed by the last identity_token_release. */
struct token {
    atomic_int refs;
    char *header_value; /* "Bearer <jwt>" */
    char *identity;
    char *audience;
    int64_t exp_s;
};

struct identity;

struct entry {
    /* immutable after creation */
    char *sa; /* NULL: baton's own identity */
    char *audience;
    const char *label; /* sa, or "default" */
    uint64_t hash;
    struct identity *id;

    pthread_mutex_t lock; /* guards cur, last_reason and the stats below */
    struct token *cur;
    enum reason last_reason;
    char *last_error; /* NULL after a success */
    uint64_t mints_ok;
    uint64_t failures[IDENTITY_FAIL__COUNT];
    uint64_t lat_buckets[IDENTITY_LATENCY_BUCKETS + 1];
    uint64_t lat_count;
    double lat_sum_s;

    atomic_bool active; /* in the current table */

    /* background thread only */
    struct event *timer;
    bool in_flight;
    unsigned fails_in_row;
    uint64_t started_ns;
};

struct table {
    size_t n;
    struct entry **v;
};

struct identity {
    struct event_base *bg;
    struct identity_source src;
    struct identity_opts opts;

    _Atomic(struct table *) table;

    pthread_mutex_t set_lock; /* serializes identity_set_pairs; guards all/old */
    struct entry **all;
    size_t n_all;
    struct table **old; /* retired tables, freed at identity_free */
    size_t n_old;

    struct event *kick; /* runs sync_entries on the background thread */
    atomic_bool started;
    uint64_t rng; /* background thread only */

    pthread_mutex_t ready_lock;
    pthread_cond_t ready_cond;
};

/* ---------------------------------------------------------------- helpers */

static int64_t clock_now_ms(struct identity *id)
{
    return id->opts.now_ms ? id->opts.now_ms(id->opts.clock_ctx) : now_ms();
}

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t pair_hash(const char *sa, const char *aud)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const char *p = sa ? sa : ""; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    h = (h ^ (sa ? 1u : 2u)) * 1099511628211ULL;
    for (const char *p = aud; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return h;
}

static bool pair_eq(const struct entry *e, uint64_t h, const char *sa, const char *aud)
{
    if (e->hash != h || strcmp(e->audience, aud) != 0)
        return false;
    if (!sa || !e->sa)
        return !sa && !e->sa;
    return strcmp(e->sa, sa) == 0;
}

static void token_unref(struct token *t)
{
    if (!t || atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1)
        return;
    /* The header carries the credential: scrub it before the allocator reuses it. */
    memset(t->header_value, 0, strlen(t->header_value));
    free(t->header_value);
    free(t->identity);
    free(t->audience);
    free(t);
}

static bool token_usable(const struct identity *id, const struct token *t, int64_t now)
{
    return t && t->exp_s * 1000 - (int64_t)id->opts.margin_s * 1000 > now;
}

/* JSON log fields for an entry (escaped). */
static void entry_fields(const struct entry *e, char *out, size_t cap, const char *extra)
{
    char who[300], aud[600];
    json_escape(who, sizeof who, e->label, strlen(e->label));
    json_escape(aud, sizeof aud, e->audience, strlen(e->audience));
    snprintf(out, cap, "\"identity\":\"%s\",\"audience\":\"%s\"%s%s", who, aud, extra ? "," : "",
             extra ? extra : "");
}

/* ------------------------------------------------------------- scheduling */

int64_t identity_refresh_delay_ms(int64_t now, int64_t exp_ms, unsigned margin_s, uint64_t rnd)
{
    int64_t remaining = exp_ms - now;
    int64_t d = remaining / 4 * 3;
    int64_t cap = remaining - (int64_t)margin_s * 1000 - 1000;
    if (d > 10)
        d -= (int64_t)(rnd % (uint64_t)(d / 10 + 1));
    if (d > cap)
        d = cap;
    if (d < 1000)
        d = 1000;
    return d;
}

int64_t identity_backoff_ms(unsigned n, unsigned min_ms, unsigned max_ms, uint64_t rnd)
{
    int64_t d = min_ms ? min_ms : 1;
    for (unsigned i = 1; i < n && d < (int64_t)max_ms; i++)
        d *= 2;
    if (d > (int64_t)max_ms)
        d = max_ms;
    return d / 2 + (int64_t)(rnd % (uint64_t)(d - d / 2 + 1));
}

static void arm(struct entry *e, int64_t delay_ms)
{
    struct timeval tv = {(time_t)(delay_ms / 1000), (suseconds_t)(delay_ms % 1000) * 1000};
    evtimer_add(e->timer, &tv);
}

static void signal_ready(struct identity *id)
{
    pthread_mutex_lock(&id->ready_lock);
    pthread_cond_broadcast(&id->ready_cond);
    pthread_mutex_unlock(&id->ready_lock);
}

static void record_latency(struct entry *e)
{
    double s = (double)(mono_ns() - e->started_ns) / 1e9;
    size_t b = 0;
    while (b < IDENTITY_LATENCY_BUCKETS && s * 1000.0 > identity_latency_bounds_ms[b])
        b++;
    e->lat_buckets[b]++;
    e->lat_count++;
    e->lat_sum_s += s;
}

static enum reason reason_of(enum identity_failure f)
{
    switch (f) {
    case IDENTITY_FAIL_PERMISSION:
        return REASON_IDENTITY_PERMISSION_DENIED;
    case IDENTITY_FAIL_NOT_FOUND:
        return REASON_IDENTITY_UNKNOWN_ACCOUNT;
    default:
        return REASON_IDENTITY_UNAVAILABLE;
    }
}

static void mint_failed(struct entry *e, enum identity_failure f, int http_status,
                        const char *detail)
{
    struct identity *id = e->id;
    char fields[1200], extra[400];
    int64_t delay;
    bool usable;

    e->fails_in_row++;
    delay = identity_backoff_ms(e->fails_in_row, id->opts.backoff_min_ms, id->opts.backoff_max_ms,
                                splitmix64(&id->rng));

    pthread_mutex_lock(&e->lock);
    record_latency(e);
    e->failures[f]++;
    e->last_reason = reason_of(f);
    free(e->last_error);
    e->last_error = xasprintf("%s: %s", identity_failure_name(f), detail ? detail : "");
    if (strlen(e->last_error) > MAX_DETAIL_BYTES)
        e->last_error[MAX_DETAIL_BYTES] = '\0';
    usable = token_usable(id, e->cur, clock_now_ms(id));
    pthread_mutex_unlock(&e->lock);

    {
        char det[MAX_DETAIL_BYTES * 2];
        json_escape(det, sizeof det, detail ? detail : "", detail ? strlen(detail) : 0);
        snprintf(extra, sizeof extra,
                 "\"failure\":\"%s\",\"http_status\":%d,"
                 "\"consecutive_failures\":%u,\"retry_in_ms\":%lld,\"token_still_usable\":%s",
                 identity_failure_name(f), http_status, e->fails_in_row, (long long)delay,
                 usable ? "true" : "false");
        entry_fields(e, fields, sizeof fields, extra);
        /* Loud: a pair that cannot mint means requests on that step get 503. */
        log_msg_fields(usable ? LOG_WARNING : LOG_ERROR, fields,
                       "google identity: minting an ID token for %s failed: %s", e->label, det);
    }
    arm(e, delay);
    signal_ready(id);
}

/* Decodes the payload of a compact JWT into a JSON object, or NULL. */
static json_t *jwt_payload(const char *tok, size_t len)
{
    const char *dot1 = memchr(tok, '.', len), *dot2;
    unsigned char *buf;
    size_t n;
    json_t *j = NULL;
    if (!dot1)
        return NULL;
    dot2 = memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - tok));
    if (!dot2 || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - tok)))
        return NULL;
    buf = xmalloc(b64url_decoded_max((size_t)(dot2 - dot1 - 1)) + 1);
    if (b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), buf, &n) == 0)
        j = json_loadb((const char *)buf, n, JSON_REJECT_DUPLICATES, NULL);
    free(buf);
    if (j && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

/* True when the JWT's aud (string or array) contains `aud`. */
static bool aud_has(json_t *claims, const char *aud)
{
    json_t *a = json_object_get(claims, "aud"), *v;
    size_t i;
    if (json_is_string(a))
        return strcmp(json_string_value(a), aud) == 0;
    json_array_foreach(a, i, v)
        if (json_is_string(v) && strcmp(json_string_value(v), aud) == 0)
            return true;
    return false;
}

static void on_minted(void *arg, const struct identity_mint_result *res)
{
    struct entry *e = arg;
    struct identity *id = e->id;
    json_t *claims = NULL;
    struct token *t = NULL, *old = NULL;
    const char *email;
    char detail[512];
    int64_t now, exp_s, delay;

    e->in_flight = false;
    if (!atomic_load(&e->active)) {
        /* Dropped by identity_set_pairs while in flight: not stored, not rescheduled. */
        pthread_mutex_lock(&e->lock);
        record_latency(e);
        pthread_mutex_unlock(&e->lock);
        return;
    }
    if (!res->ok) {
        mint_failed(e, res->failure, res->http_status, res->detail);
        return;
    }
    if (!res->token || res->token_len == 0 || res->token_len > MAX_TOKEN_BYTES ||
        memchr(res->token, '\0', res->token_len) ||
        !(claims = jwt_payload(res->token, res->token_len))) {
        mint_failed(e, IDENTITY_FAIL_MALFORMED, 200,
                    "the token is not a compact JWT with a JSON payload");
        goto out;
    }
    for (size_t i = 0; i < res->token_len; i++) {
        unsigned char c = (unsigned char)res->token[i];
        if (!(c == '.' || c == '-' || c == '_' || (c >= '0' && c <= '9') ||
              (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) {
            mint_failed(e, IDENTITY_FAIL_MALFORMED, 200, "the token has a byte outside base64url");
            goto out;
        }
    }
    if (!json_is_integer(json_object_get(claims, "exp"))) {
        mint_failed(e, IDENTITY_FAIL_MALFORMED, 200, "the token has no integer exp claim");
        goto out;
    }
    if (!aud_has(claims, e->audience)) {
        mint_failed(e, IDENTITY_FAIL_MALFORMED, 200,
                    "the token's aud is not the audience asked for");
        goto out;
    }
    email = json_string_value(json_object_get(claims, "email"));
    if (e->sa && email && strcmp(email, e->sa) != 0) {
        snprintf(detail, sizeof detail, "the token's email is not %s", e->sa);
        mint_failed(e, IDENTITY_FAIL_MALFORMED, 200, detail);
        goto out;
    }
    exp_s = (int64_t)json_integer_value(json_object_get(claims, "exp"));
    now = clock_now_ms(id);
    if (exp_s > INT64_MAX / 2000 || exp_s * 1000 - now <= (int64_t)id->opts.margin_s * 1000) {
        snprintf(detail, sizeof detail,
                 "the token expires in %lld s, within the %u s safety margin",
                 (long long)(exp_s - now / 1000), id->opts.margin_s);
        mint_failed(e, IDENTITY_FAIL_EXPIRED, 200, detail);
        goto out;
    }

    t = xcalloc(1, sizeof *t);
    atomic_init(&t->refs, 1);
    t->header_value = xmalloc(res->token_len + 8);
    memcpy(t->header_value, "Bearer ", 7);
    memcpy(t->header_value + 7, res->token, res->token_len);
    t->header_value[res->token_len + 7] = '\0';
    t->identity = xstrdup(email ? email : e->label);
    t->audience = xstrdup(e->audience);
    t->exp_s = exp_s;

    pthread_mutex_lock(&e->lock);
    record_latency(e);
    old = e->cur;
    e->cur = t;
    e->mints_ok++;
    e->last_reason = REASON_IDENTITY_UNAVAILABLE;
    free(e->last_error);
    e->last_error = NULL;
    pthread_mutex_unlock(&e->lock);
    token_unref(old);

    delay = identity_refresh_delay_ms(now, exp_s * 1000, id->opts.margin_s, splitmix64(&id->rng));
    {
        char fields[1000], extra[200];
        snprintf(extra, sizeof extra,
                 "\"expires_in_s\":%lld,\"refresh_in_s\":%lld,"
                 "\"recovered_after_failures\":%u",
                 (long long)(exp_s - now / 1000), (long long)(delay / 1000), e->fails_in_row);
        entry_fields(e, fields, sizeof fields, extra);
        log_msg_fields(e->fails_in_row ? LOG_INFO : LOG_DEBUG, fields,
                       "google identity: minted an ID token for %s", e->label);
    }
    e->fails_in_row = 0;
    arm(e, delay);
    signal_ready(id);
out:
    json_decref(claims);
}

static void start_mint(struct entry *e)
{
    struct identity *id = e->id;
    if (e->in_flight || !atomic_load(&e->active))
        return;
    evtimer_del(e->timer);
    e->in_flight = true;
    e->started_ns = mono_ns();
    /* May call on_minted before returning. */
    id->src.mint(id->src.ctx, e->sa, e->audience, on_minted, e);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    start_mint(arg);
}

/* A copy of the entry list (owned by the caller), taken under set_lock. With
 * no pairs at all (no upstream mints) id->all may be NULL. */
static struct entry **snapshot_entries(struct identity *id, size_t *n)
{
    struct entry **all;
    pthread_mutex_lock(&id->set_lock);
    *n = id->n_all;
    all = xmalloc((*n ? *n : 1) * sizeof *all);
    if (*n)
        memcpy(all, id->all, *n * sizeof *all);
    pthread_mutex_unlock(&id->set_lock);
    return all;
}

/* Background: mint every active entry that has nothing in flight or scheduled. */
static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    struct identity *id = arg;
    struct entry **all;
    size_t n;
    (void)fd, (void)what;
    if (!atomic_load(&id->started))
        return;
    all = snapshot_entries(id, &n);
    for (size_t i = 0; i < n; i++) {
        struct entry *e = all[i];
        if (!atomic_load(&e->active))
            evtimer_del(e->timer);
        else if (!e->in_flight && !evtimer_pending(e->timer, NULL))
            start_mint(e);
    }
    free(all);
}

/* ------------------------------------------------------------ construction */

static struct entry *entry_new(struct identity *id, const char *sa, const char *aud)
{
    struct entry *e = xcalloc(1, sizeof *e);
    e->sa = sa ? xstrdup(sa) : NULL;
    e->audience = xstrdup(aud);
    e->label = e->sa ? e->sa : "default";
    e->hash = pair_hash(sa, aud);
    e->id = id;
    pthread_mutex_init(&e->lock, NULL);
    e->last_reason = REASON_IDENTITY_UNAVAILABLE;
    e->last_error = xstrdup("not minted yet");
    atomic_init(&e->active, false);
    e->timer = evtimer_new(id->bg, on_timer, e);
    if (!e->timer)
        abort(); /* only fails on allocation */
    return e;
}

static void entry_free(struct entry *e)
{
    if (!e)
        return;
    if (e->timer)
        event_free(e->timer);
    token_unref(e->cur);
    pthread_mutex_destroy(&e->lock);
    free(e->last_error);
    free(e->sa);
    free(e->audience);
    free(e);
}

void identity_set_pairs(struct identity *id, const struct identity_pair *pairs, size_t n_pairs)
{
    struct table *t = xcalloc(1, sizeof *t), *prev;
    t->v = xcalloc(n_pairs ? n_pairs : 1, sizeof *t->v);

    pthread_mutex_lock(&id->set_lock);
    for (size_t i = 0; i < n_pairs; i++) {
        const char *sa = pairs[i].service_account, *aud = pairs[i].audience;
        uint64_t h;
        struct entry *e = NULL;
        bool dup = false;
        if (!aud)
            continue;
        if (sa && !*sa)
            sa = NULL;
        h = pair_hash(sa, aud);
        for (size_t j = 0; j < t->n && !dup; j++)
            dup = pair_eq(t->v[j], h, sa, aud);
        if (dup)
            continue;
        for (size_t j = 0; j < id->n_all && !e; j++)
            if (pair_eq(id->all[j], h, sa, aud))
                e = id->all[j];
        if (!e) {
            e = entry_new(id, sa, aud);
            id->all = xrealloc(id->all, (id->n_all + 1) * sizeof *id->all);
            id->all[id->n_all++] = e;
        }
        t->v[t->n++] = e;
    }
    /* Activate the new set before publishing it, retire the rest after. */
    for (size_t j = 0; j < t->n; j++)
        atomic_store(&t->v[j]->active, true);
    prev = atomic_exchange(&id->table, t);
    for (size_t j = 0; j < id->n_all; j++) {
        bool keep = false;
        for (size_t k = 0; k < t->n && !keep; k++)
            keep = t->v[k] == id->all[j];
        if (!keep)
            atomic_store(&id->all[j]->active, false);
    }
    if (prev) {
        id->old = xrealloc(id->old, (id->n_old + 1) * sizeof *id->old);
        id->old[id->n_old++] = prev;
    }
    pthread_mutex_unlock(&id->set_lock);
    event_active(id->kick, 0, 0);
}

struct identity *identity_new_source(struct event_base *bg, const struct identity_source *src,
                                     const struct identity_opts *opts,
                                     const struct identity_pair *pairs, size_t n_pairs)
{
    struct identity *id = xcalloc(1, sizeof *id);
    id->bg = bg;
    id->src = *src;
    if (opts)
        id->opts = *opts;
    if (!id->opts.margin_s)
        id->opts.margin_s = IDENTITY_MARGIN_S;
    if (!id->opts.backoff_min_ms)
        id->opts.backoff_min_ms = 1000;
    if (!id->opts.backoff_max_ms)
        id->opts.backoff_max_ms = 60000;
    if (id->opts.backoff_max_ms < id->opts.backoff_min_ms)
        id->opts.backoff_max_ms = id->opts.backoff_min_ms;
    id->rng = id->opts.seed;
    if (!id->rng && getrandom(&id->rng, sizeof id->rng, 0) != (ssize_t)sizeof id->rng)
        id->rng = (uint64_t)mono_ns();
    pthread_mutex_init(&id->set_lock, NULL);
    pthread_mutex_init(&id->ready_lock, NULL);
    pthread_cond_init(&id->ready_cond, NULL);
    atomic_init(&id->started, false);
    id->kick = event_new(bg, -1, 0, on_kick, id);
    if (!id->kick)
        abort();
    identity_set_pairs(id, pairs, n_pairs);
    return id;
}

struct identity *identity_new(struct event_base *bg, struct http_client *http,
                              const struct baton_config *cfg, const struct identity_pair *pairs,
                              size_t n_pairs, char *err, size_t errlen)
{
    struct identity_source src;
    struct identity_opts opts = {0};
    if (google_source_new(bg, http, &cfg->google, &src, err, errlen) != 0)
        return NULL;
    /* A short local lifetime (down to 60 s) would leave no usable window with
     * the 60 s margin: keep a quarter of the lifetime usable-and-refreshing. */
    if (cfg->google.source == GOOGLE_LOCAL && cfg->google.token_lifetime_s < 4 * IDENTITY_MARGIN_S)
        opts.margin_s = cfg->google.token_lifetime_s / 4 ? cfg->google.token_lifetime_s / 4 : 1;
    return identity_new_source(bg, &src, &opts, pairs, n_pairs);
}

void identity_start(struct identity *id)
{
    atomic_store(&id->started, true);
    event_active(id->kick, 0, 0);
}

void identity_free(struct identity *id)
{
    if (!id)
        return;
    /* The source first: it cancels pending mints without calling back. */
    if (id->src.free)
        id->src.free(id->src.ctx);
    if (id->kick)
        event_free(id->kick);
    for (size_t i = 0; i < id->n_all; i++)
        entry_free(id->all[i]);
    free(id->all);
    for (size_t i = 0; i < id->n_old; i++) {
        free(id->old[i]->v);
        free(id->old[i]);
    }
    free(id->old);
    {
        struct table *t = atomic_load(&id->table);
        if (t) {
            free(t->v);
            free(t);
        }
    }
    pthread_mutex_destroy(&id->set_lock);
    pthread_mutex_destroy(&id->ready_lock);
    pthread_cond_destroy(&id->ready_cond);
    free(id);
}

/* ----------------------------------------------------------- request path */

enum reason identity_get(struct identity *id, const char *sa, const char *audience,
                         struct identity_token *out)
{
    struct table *t = atomic_load_explicit(&id->table, memory_order_acquire);
    struct entry *e = NULL;
    struct token *tok = NULL;
    enum reason r = REASON_IDENTITY_UNAVAILABLE;
    uint64_t h;

    memset(out, 0, sizeof *out);
    if (!audience)
        return r;
    if (sa && !*sa)
        sa = NULL;
    h = pair_hash(sa, audience);
    for (size_t i = 0; i < t->n && !e; i++)
        if (pair_eq(t->v[i], h, sa, audience))
            e = t->v[i];
    if (!e)
        return r; /* not configured: never minted on demand */

    pthread_mutex_lock(&e->lock);
    if (token_usable(id, e->cur, clock_now_ms(id))) {
        tok = e->cur;
        atomic_fetch_add_explicit(&tok->refs, 1, memory_order_relaxed);
        r = REASON_ALLOWED;
    } else {
        r = e->last_reason;
    }
    pthread_mutex_unlock(&e->lock);

    if (tok) {
        out->header_value = tok->header_value;
        out->identity = tok->identity;
        out->audience = tok->audience;
        out->expires_at = tok->exp_s;
        out->ref_ = tok;
    }
    return r;
}

void identity_token_release(struct identity_token *tok)
{
    if (!tok)
        return;
    token_unref(tok->ref_);
    memset(tok, 0, sizeof *tok);
}

/* ------------------------------------------------------- readiness, stats */

bool identity_ready(struct identity *id)
{
    struct table *t = atomic_load_explicit(&id->table, memory_order_acquire);
    int64_t now = clock_now_ms(id);
    bool ready = true;
    for (size_t i = 0; i < t->n && ready; i++) {
        pthread_mutex_lock(&t->v[i]->lock);
        ready = token_usable(id, t->v[i]->cur, now);
        pthread_mutex_unlock(&t->v[i]->lock);
    }
    return ready;
}

char *identity_ready_detail(struct identity *id)
{
    struct table *t = atomic_load_explicit(&id->table, memory_order_acquire);
    int64_t now = clock_now_ms(id);
    struct buf text = {0};
    for (size_t i = 0; i < t->n; i++) {
        struct entry *e = t->v[i];
        pthread_mutex_lock(&e->lock);
        if (!token_usable(id, e->cur, now))
            buf_printf(&text, "identity %s for audience %s: no usable token (%s)\n", e->label,
                       e->audience, e->last_error ? e->last_error : "expired, refreshing");
        pthread_mutex_unlock(&e->lock);
    }
    return buf_take(&text, NULL); /* "" when ready */
}

bool identity_wait_ready(struct identity *id, unsigned timeout_ms)
{
    struct timespec deadline;
    bool ready;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&id->ready_lock);
    while (!(ready = identity_ready(id)))
        if (pthread_cond_timedwait(&id->ready_cond, &id->ready_lock, &deadline) == ETIMEDOUT) {
            ready = identity_ready(id);
            break;
        }
    pthread_mutex_unlock(&id->ready_lock);
    return ready;
}

char *identity_jwks_json(struct identity *id)
{
    return id->src.jwks_json ? id->src.jwks_json(id->src.ctx) : NULL;
}

void identity_stats_visit(struct identity *id,
                          void (*fn)(void *ctx, const struct identity_pair_stats *s), void *ctx)
{
    struct entry **all;
    size_t n;
    int64_t now = clock_now_ms(id);

    all = snapshot_entries(id, &n);

    for (size_t i = 0; i < n; i++) {
        struct entry *e = all[i];
        struct identity_pair_stats s;
        char *err_copy;
        memset(&s, 0, sizeof s);
        s.identity = e->label;
        s.audience = e->audience;
        s.active = atomic_load(&e->active);
        pthread_mutex_lock(&e->lock);
        s.usable = token_usable(id, e->cur, now);
        s.expires_at = e->cur ? e->cur->exp_s : 0;
        s.mints_ok = e->mints_ok;
        memcpy(s.failures, e->failures, sizeof s.failures);
        memcpy(s.latency_buckets, e->lat_buckets, sizeof s.latency_buckets);
        s.latency_count = e->lat_count;
        s.latency_sum_s = e->lat_sum_s;
        err_copy = e->last_error ? xstrdup(e->last_error) : NULL;
        pthread_mutex_unlock(&e->lock);
        s.last_error = err_copy;
        fn(ctx, &s);
        free(err_copy);
    }
    free(all);
}
