/*
 * jwks.c: per-issuer key sources, refreshed on the background event_base and
 * read lock-briefly by the workers (jwks.h states the contract).
 *
 * Publication. Each source keeps its current key set behind a mutex that
 * guards exactly one pointer load and one atomic refcount increment
 * (acquire) or one pointer store (publish): readers never wait for I/O, only
 * for another reader's few instructions. This is simpler than an RCU-like
 * scheme and costs an uncontended lock per cache miss, next to a signature
 * check that costs thousands of times more; cache hits only read the
 * generation, an atomic load. The generation is stored after the pointer,
 * inside the same critical section, so a reader that sees a new generation
 * always acquires the new set (authn reads the generation before acquiring:
 * a race can only cause a spurious cache miss, never a stale hit).
 * Generations come from one process-wide counter, so they never repeat
 * across sources or reloads; 0 means never loaded.
 *
 * Refresh state machine (background thread only): refresh_begin starts an
 * attempt (file read, or discovery GET then JWKS GET through http_client),
 * refresh_end records the outcome and arms the source's single timer for
 * the next attempt. An unknown kid may come from any thread: kid_unknown
 * decides under the source's lock whether a refresh will answer it (one in
 * flight, or one it starts: a flag and the source's `kick` event, thread-safe
 * on a base created after evthread_use_pthreads()), so the caller knows at
 * once whether waiting is worth it; the kick handler starts the fetch on the
 * background thread. Every finished attempt calls the refresh listener
 * (jwks_set_refresh_listener), which wakes the requests parked on it.
 *
 * The unknown-kid limit. A kid the current set lacks is, in the common case,
 * a key the issuer rotated in since the last fetch: the first one starts a
 * refresh at once, and every request that meets an unknown kid while it runs
 * shares it. A flood of random kids must not make baton hammer the issuer:
 * after an unknown-kid refresh, the next may start only refresh_min_s after
 * it, unless that refresh found a changed key set (a rotation is happening:
 * an attacker cannot cause that). So random kids cost at most one fetch per
 * refresh_min_s, and no request waits longer than the fetch in flight.
 *
 * jwks_load_sync (CLI) runs the same state machine on a private event_base
 * and http_client, with the scheduling turned off.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>
#include <jansson.h>

#include "http_client.h"
#include "jwks.h"
#include "jws.h"
#include "log.h"
#include "util.h"

enum stage { STAGE_DISCOVERY, STAGE_JWKS };

struct source {
    struct jwks *j;
    const struct cfg_issuer *iss; /* borrowed from j->cfg */

    /* published state: `lock` guards current, doc_hash and st */
    pthread_mutex_t lock;
    struct jws_keyset *current;  /* owned reference; NULL: never loaded */
    unsigned char doc_hash[32];  /* SHA-256 of the document behind current */
    struct jwks_issuer_stats st; /* counters (name, generation, kid_miss filled on read) */
    _Atomic uint64_t generation; /* 0: never loaded */
    _Atomic uint64_t kid_miss;
    atomic_int miss_pending; /* a kick is queued and not yet handled */
    /* unknown-kid state, under `lock` (any thread) */
    bool flight_pending; /* an attempt is in flight or kicked: misses wait for it */
    bool last_failed;    /* the last finished attempt failed */
    bool miss_credit; /* the last attempt changed the key set: the next miss may refresh at once */
    uint64_t last_miss_start_ns; /* mono_ns of the last unknown-kid refresh; 0: none yet */

    /* background-thread state */
    struct event *timer;    /* owned: next scheduled attempt */
    struct event *kick;     /* owned: kid_miss trigger */
    struct http_call *call; /* borrowed handle of the fetch in flight */
    struct http_client *hc; /* client of the attempt in flight */
    bool in_flight;
    bool flight_changed; /* the attempt in flight published a new key set */
    enum stage stage;
    uint64_t last_start_ns; /* mono_ns of the last attempt start; 0: none */
    uint64_t due_ns;        /* mono_ns when the timer fires; 0: not armed */
    unsigned failures;      /* consecutive */
    char *jwks_uri;         /* owned: discovered (or configured) JWKS URL */

    /* jwks_load_sync */
    bool sync;
    bool sync_ok;
    char sync_err[300];
};

struct jwks {
    struct event_base *bg;    /* borrowed, may be NULL */
    struct http_client *http; /* borrowed, may be NULL */
    const struct baton_config *cfg;
    struct source *src; /* owned array of n */
    size_t n;
    unsigned retry_base_ms;
    uint64_t rng;                 /* xorshift state: jitter only, background thread */
    atomic_bool started;          /* set by jwks_start, read by the background thread */
    struct event_base *sync_base; /* during jwks_load_sync */
    size_t sync_pending;
};

static _Atomic uint64_t generation_counter;

/* ---- small helpers ------------------------------------------------------ */

static uint64_t rnd(struct jwks *j)
{
    uint64_t x = j->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    j->rng = x;
    return x;
}

/* A uniformly-ish distributed value in [0, n]. */
static uint64_t rnd_upto(struct jwks *j, uint64_t n)
{
    return n ? rnd(j) % (n + 1) : 0;
}

/* `"issuer":"<name>"` for log_msg_fields. */
static void issuer_field(const struct source *s, char *out, size_t cap)
{
    char esc[256];
    json_escape(esc, sizeof(esc), s->iss->name, strlen(s->iss->name));
    snprintf(out, cap, "\"issuer\":\"%s\"", esc);
}

/*
 * max-age from a Cache-Control value, in seconds: -1 when absent, 0 for
 * no-cache / no-store. Directives are comma-separated tokens, case-insensitive.
 */
static long cache_control_max_age(const char *v)
{
    long best = -1;
    while (v && *v) {
        size_t len = strcspn(v, ",");
        const char *t = v, *end = v + len;
        while (t < end && (*t == ' ' || *t == '\t'))
            t++;
        if ((size_t)(end - t) >= 8 && !strncasecmp(t, "no-store", 8))
            return 0;
        if ((size_t)(end - t) >= 8 && !strncasecmp(t, "no-cache", 8))
            return 0;
        if ((size_t)(end - t) > 8 && !strncasecmp(t, "max-age=", 8)) {
            const char *d = t + 8;
            long val = 0;
            if (*d == '"')
                d++;
            if (*d >= '0' && *d <= '9') {
                while (d < end && *d >= '0' && *d <= '9') {
                    if (val < 100000000L)
                        val = val * 10 + (*d - '0');
                    d++;
                }
                best = val;
            }
        }
        v = *end ? end + 1 : end;
    }
    return best;
}

static struct source *lookup(struct jwks *j, const struct cfg_issuer *iss)
{
    uintptr_t p = (uintptr_t)iss, lo = (uintptr_t)j->cfg->issuers;
    if (!iss)
        return NULL;
    if (j->n && p >= lo && p < lo + j->n * sizeof(*iss) && (p - lo) % sizeof(*iss) == 0)
        return &j->src[(p - lo) / sizeof(*iss)];
    for (size_t i = 0; i < j->n; i++) /* an issuer struct from another copy of the config */
        if (!strcmp(j->src[i].iss->name, iss->name) && !strcmp(j->src[i].iss->issuer, iss->issuer))
            return &j->src[i];
    return NULL;
}

/* ---- publication -------------------------------------------------------- */

/* Installs `ks` (takes the reference) as the source's key set. */
static void publish(struct source *s, struct jws_keyset *ks, const unsigned char hash[32])
{
    struct jws_keyset *old;
    uint64_t gen = atomic_fetch_add(&generation_counter, 1) + 1;

    pthread_mutex_lock(&s->lock);
    old = s->current;
    s->current = ks;
    memcpy(s->doc_hash, hash, 32);
    s->st.keys = jws_keyset_count(ks);
    s->st.keys_skipped = jws_keyset_skipped(ks);
    s->st.key_changes++;
    atomic_store_explicit(&s->generation, gen, memory_order_release); /* after the pointer */
    pthread_mutex_unlock(&s->lock);
    jws_keyset_unref(old);
}

static struct jws_keyset *keys_acquire(void *ctx, const struct cfg_issuer *iss)
{
    struct source *s = lookup(ctx, iss);
    struct jws_keyset *ks = NULL;
    if (!s)
        return NULL;
    pthread_mutex_lock(&s->lock);
    if (s->current)
        ks = jws_keyset_ref(s->current);
    pthread_mutex_unlock(&s->lock);
    return ks;
}

static uint64_t keys_generation(void *ctx, const struct cfg_issuer *iss)
{
    struct source *s = lookup(ctx, iss);
    return s ? atomic_load_explicit(&s->generation, memory_order_acquire) : 0;
}

static void (*refresh_listener)(void);

void jwks_set_refresh_listener(void (*fn)(void))
{
    refresh_listener = fn;
}

/* An unknown kid for a configured issuer (any thread): the limit in the file
 * comment, decided under the source's lock. */
static enum authn_kid keys_kid_unknown(void *ctx, const struct cfg_issuer *iss)
{
    struct jwks *j = ctx;
    struct source *s = lookup(j, iss);
    enum authn_kid r;
    bool kick = false;
    uint64_t now = mono_ns(), min_ns;

    if (!s)
        return AUTHN_KID_DECIDE;
    min_ns = (uint64_t)s->iss->refresh_min_s * 1000000000u;
    atomic_fetch_add_explicit(&s->kid_miss, 1, memory_order_relaxed);
    if (!j->bg || !s->kick || !atomic_load(&j->started))
        return AUTHN_KID_DECIDE;
    pthread_mutex_lock(&s->lock);
    if (s->flight_pending) {
        r = AUTHN_KID_WAIT; /* share the attempt in flight */
    } else if (s->miss_credit || s->last_miss_start_ns == 0 ||
               now - s->last_miss_start_ns >= min_ns) {
        s->flight_pending = true;
        s->miss_credit = false;
        s->last_miss_start_ns = now;
        kick = true;
        r = AUTHN_KID_WAIT;
    } else {
        s->st.kid_miss_limited++;
        r = s->last_failed ? AUTHN_KID_STALE : AUTHN_KID_DECIDE;
    }
    pthread_mutex_unlock(&s->lock);
    /* one queued kick at a time */
    if (kick && atomic_exchange(&s->miss_pending, 1) == 0)
        event_active(s->kick, EV_TIMEOUT, 0);
    return r;
}

static void keys_kid_miss(void *ctx, const struct cfg_issuer *iss)
{
    (void)keys_kid_unknown(ctx, iss);
}

struct authn_keys jwks_authn_keys(struct jwks *j)
{
    struct authn_keys k = {keys_acquire, keys_generation, keys_kid_miss, j, keys_kid_unknown};
    return k;
}

/* ---- scheduling --------------------------------------------------------- */

static void arm(struct source *s, uint64_t delay_ms)
{
    struct timeval tv = {(time_t)(delay_ms / 1000), (suseconds_t)((delay_ms % 1000) * 1000)};
    if (!s->timer)
        return;
    evtimer_add(s->timer, &tv); /* re-adding moves an armed timer */
    s->due_ns = mono_ns() + delay_ms * 1000000u;
    pthread_mutex_lock(&s->lock);
    s->st.next_refresh_ms = now_ms() + (int64_t)delay_ms;
    pthread_mutex_unlock(&s->lock);
}

/* Next refresh after a success: max-age clamped to [min, max], minus up to
 * 10% jitter (never below min) so that replicas do not refresh in step. */
static uint64_t success_delay_ms(struct source *s, long max_age)
{
    const struct cfg_issuer *iss = s->iss;
    uint64_t lo = (uint64_t)iss->refresh_min_s * 1000u, hi = (uint64_t)iss->refresh_max_s * 1000u;
    uint64_t d;

    if (iss->key_source == KEYS_JWKS_FILE)
        d = lo;
    else if (max_age < 0)
        d = hi;
    else
        d = (uint64_t)max_age * 1000u;
    if (d < lo)
        d = lo;
    if (d > hi)
        d = hi;
    d -= rnd_upto(s->j, d / 10);
    return d < lo ? lo : d;
}

/* Retry after the n-th consecutive failure: base * 2^(n-1) capped at
 * refresh_min_s, with "equal jitter" (half fixed, half random). */
static uint64_t failure_delay_ms(struct source *s)
{
    uint64_t cap = (uint64_t)s->iss->refresh_min_s * 1000u, d = s->j->retry_base_ms;
    for (unsigned i = 1; i < s->failures && d < cap; i++)
        d *= 2;
    if (d > cap)
        d = cap;
    return d / 2 + rnd_upto(s->j, d - d / 2);
}

/* ---- one attempt -------------------------------------------------------- */

static void refresh_begin(struct source *s, struct http_client *hc);

static void refresh_end(struct source *s, bool ok, const char *err, long max_age)
{
    struct jwks *j = s->j;
    char fields[512], ifield[300];
    uint64_t delay;

    s->in_flight = false;
    s->call = NULL;
    s->hc = NULL;
    pthread_mutex_lock(&s->lock);
    if (ok) {
        s->st.fetch_ok++;
        s->st.last_success_ms = now_ms();
        s->st.last_error[0] = '\0';
        s->st.consecutive_failures = 0;
    } else {
        s->st.fetch_failed++;
        s->st.last_failure_ms = now_ms();
        snprintf(s->st.last_error, sizeof(s->st.last_error), "%s", err);
        s->st.consecutive_failures = s->failures + 1;
    }
    s->st.next_refresh_ms = 0;
    s->flight_pending = false;
    s->last_failed = !ok;
    if (ok && s->flight_changed)
        s->miss_credit = true; /* a rotation is under way: the next unknown kid may look again */
    pthread_mutex_unlock(&s->lock);
    s->flight_changed = false;

    if (s->sync) {
        s->sync_ok = ok;
        snprintf(s->sync_err, sizeof(s->sync_err), "%s", ok ? "" : err);
        if (--j->sync_pending == 0 && j->sync_base)
            event_base_loopbreak(j->sync_base);
        return;
    }
    issuer_field(s, ifield, sizeof(ifield));
    if (ok) {
        s->failures = 0;
        delay = success_delay_ms(s, max_age);
    } else {
        s->failures++;
        delay = failure_delay_ms(s);
        snprintf(fields, sizeof(fields),
                 "%s,\"consecutive_failures\":%u,\"retry_ms\":%llu,\"keys_loaded\":%s", ifield,
                 s->failures, (unsigned long long)delay,
                 atomic_load(&s->generation) ? "true" : "false");
        log_msg_fields(atomic_load(&s->generation) ? LOG_WARNING : LOG_ERROR, fields,
                       "key set refresh of issuer %s failed: %s%s", s->iss->name, err,
                       atomic_load(&s->generation) ? " (keeping the last good key set)"
                                                   : " (its tokens are refused until keys load)");
    }
    arm(s, delay);
    if (refresh_listener)
        refresh_listener(); /* the requests parked on this attempt decide now */
}

static void fail(struct source *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(struct source *s, const char *fmt, ...)
{
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    refresh_end(s, false, msg, -1);
}

/* `baton check`'s rule for a configured jwks_file: it parses and has at least
 * one usable key (a file configured without one is a mistake to report before
 * serve; a served set emptied by its issuer is a revocation, accept_document).
 * Returns the owned keyset, or NULL with the reason in err. */
static struct jws_keyset *keyset_accept(const char *doc, size_t len, char *err, size_t errlen)
{
    char why[200] = "", note[256];
    struct jws_keyset *ks = jws_keyset_parse(doc, len, why, sizeof(why));

    if (!ks) {
        errbuf_set(err, errlen, "key set rejected: %s", why);
        return NULL;
    }
    if (jws_keyset_count(ks) == 0) {
        json_escape(note, sizeof(note), jws_keyset_note(ks), strlen(jws_keyset_note(ks)));
        errbuf_set(err, errlen, "key set has no usable key (%zu skipped%s%s)",
                   jws_keyset_skipped(ks), note[0] ? ": " : "", note);
        jws_keyset_unref(ks);
        return NULL;
    }
    return ks;
}

/* Reads a jwks_file with the document cap; 0, or -1 with the reason in err. */
static int read_jwks_file(const char *path, char **doc, size_t *len, char *err, size_t errlen)
{
    if (read_file_capped(path, JWKS_MAX_DOC_BYTES, doc, len) == 0)
        return 0;
    errbuf_set(err, errlen, "cannot read jwks_file %s: %s", path,
               errno == EFBIG ? "larger than the key set cap" : strerror(errno));
    return -1;
}

int jwks_check_file(const char *path, size_t *keys, size_t *skipped, char *note, size_t notelen,
                    char *err, size_t errlen)
{
    char *doc = NULL;
    size_t len = 0;
    struct jws_keyset *ks = NULL;
    int rc = -1;

    if (read_jwks_file(path, &doc, &len, err, errlen) < 0)
        goto out;
    if (!(ks = keyset_accept(doc, len, err, errlen)))
        goto out;
    *keys = jws_keyset_count(ks);
    *skipped = jws_keyset_skipped(ks);
    errbuf_set(note, notelen, "%s", jws_keyset_note(ks));
    rc = 0;
out:
    jws_keyset_unref(ks);
    free(doc);
    return rc;
}

/* A JWK Set document arrived (from a file or a URL): publish it or fail. */
static void accept_document(struct source *s, const char *doc, size_t len, long max_age)
{
    unsigned char hash[32];
    char err[200] = "", fields[600], ifield[300], note[256];
    struct jws_keyset *ks;
    bool same;

    sha256_raw(doc, len, hash);
    pthread_mutex_lock(&s->lock);
    same = s->current && !memcmp(hash, s->doc_hash, 32);
    pthread_mutex_unlock(&s->lock);
    if (same) {
        refresh_end(s, true, NULL, max_age);
        return;
    }
    ks = jws_keyset_parse(doc, len, err, sizeof(err));
    if (!ks) {
        fail(s, "key set rejected: %s", err);
        return;
    }
    issuer_field(s, ifield, sizeof(ifield));
    if (jws_keyset_count(ks) == 0) {
        /* A well-formed answer is the issuer's word: a set emptied of usable
         * keys revokes every token of the issuer, it is not a failed fetch. */
        json_escape(note, sizeof(note), jws_keyset_note(ks), strlen(jws_keyset_note(ks)));
        snprintf(fields, sizeof(fields), "%s,\"keys\":0,\"keys_skipped\":%zu%s%s%s", ifield,
                 jws_keyset_skipped(ks), note[0] ? ",\"skipped_note\":\"" : "", note,
                 note[0] ? "\"" : "");
        log_msg_fields(LOG_ERROR, fields,
                       "key set of issuer %s has no usable key (%zu skipped): it replaces the "
                       "previous set, every token of this issuer is refused until the issuer "
                       "publishes a usable key",
                       s->iss->name, jws_keyset_skipped(ks));
        pthread_mutex_lock(&s->lock);
        s->st.empty_sets++;
        pthread_mutex_unlock(&s->lock);
        publish(s, ks, hash);
        refresh_end(s, true, NULL, max_age);
        return;
    }
    json_escape(note, sizeof(note), jws_keyset_note(ks), strlen(jws_keyset_note(ks)));
    snprintf(fields, sizeof(fields), "%s,\"keys\":%zu,\"keys_skipped\":%zu%s%s%s", ifield,
             jws_keyset_count(ks), jws_keyset_skipped(ks), note[0] ? ",\"skipped_note\":\"" : "",
             note, note[0] ? "\"" : "");
    log_msg_fields(LOG_INFO, fields, "key set of issuer %s %s: %zu keys", s->iss->name,
                   atomic_load(&s->generation) ? "changed" : "loaded", jws_keyset_count(ks));
    publish(s, ks, hash);
    s->flight_changed = true;
    refresh_end(s, true, NULL, max_age);
}

static void on_fetch(struct http_response *resp, void *arg);

static void fetch(struct source *s, const char *url)
{
    const char *hdrs[] = {"Accept: application/json"};
    struct http_request req = {
        .url = url,
        .headers = hdrs,
        .n_headers = 1,
        .timeout_ms = s->iss->fetch_timeout_ms,
        .max_body = JWKS_MAX_DOC_BYTES,
        .max_redirects = JWKS_MAX_REDIRECTS,
        .allow_http = s->iss->allow_http,
    };
    s->call = http_client_submit(s->hc, &req, on_fetch, s);
}

static char *discovery_url(const struct cfg_issuer *iss)
{
    size_t len = strlen(iss->issuer);
    if (len && iss->issuer[len - 1] == '/') /* OIDC Discovery 1.0 section 4 */
        len--;
    return xasprintf("%.*s%s", (int)len, iss->issuer, JWKS_DISCOVERY_PATH);
}

/* Checks a discovery document and returns its jwks_uri (owned), or NULL
 * with a message in err. */
static char *discovery_parse(const struct source *s, const char *body, size_t len, char *err,
                             size_t errlen)
{
    json_error_t je;
    json_t *doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    const char *iss, *uri;
    char *out = NULL, uerr[200];

    if (!doc || !json_is_object(doc)) {
        snprintf(err, errlen, "discovery document is not a JSON object%s%s", doc ? "" : ": ",
                 doc ? "" : je.text);
        goto out;
    }
    iss = json_string_value(json_object_get(doc, "issuer"));
    if (!iss || strcmp(iss, s->iss->issuer)) {
        char esc[200];
        json_escape(esc, sizeof(esc), iss ? iss : "(none)", strlen(iss ? iss : "(none)"));
        snprintf(err, errlen, "discovery document names issuer \"%s\", not the configured one",
                 esc);
        goto out;
    }
    uri = json_string_value(json_object_get(doc, "jwks_uri"));
    if (!uri) {
        snprintf(err, errlen, "discovery document has no jwks_uri string");
        goto out;
    }
    if (http_url_check(uri, s->iss->allow_http, uerr, sizeof(uerr)) < 0) {
        snprintf(err, errlen, "discovery jwks_uri refused: %s", uerr);
        goto out;
    }
    out = xstrdup(uri);
out:
    json_decref(doc);
    return out;
}

static void on_fetch(struct http_response *resp, void *arg)
{
    struct source *s = arg;
    char err[300];
    const char *what = s->stage == STAGE_DISCOVERY ? "discovery" : "JWKS";

    s->call = NULL;
    if (resp->error != HTTP_ERR_NONE) {
        fail(s, "%s fetch failed (%s): %s", what, http_error_name(resp->error), resp->msg);
        goto out;
    }
    if (resp->status != 200) {
        fail(s, "%s fetch answered HTTP %d", what, resp->status);
        goto out;
    }
    if (s->stage == STAGE_DISCOVERY) {
        char *uri = discovery_parse(s, resp->body, resp->body_len, err, sizeof(err));
        if (!uri) {
            fail(s, "%s", err);
            goto out;
        }
        free(s->jwks_uri);
        s->jwks_uri = uri;
        s->stage = STAGE_JWKS;
        fetch(s, s->jwks_uri);
        goto out;
    }
    accept_document(s, resp->body, resp->body_len,
                    cache_control_max_age(http_response_header(resp, "Cache-Control")));
out:
    http_response_free(resp);
}

static void refresh_begin(struct source *s, struct http_client *hc)
{
    const struct cfg_issuer *iss = s->iss;
    char *doc = NULL, *url = NULL, err[300];
    size_t len = 0;

    s->in_flight = true;
    s->hc = hc;
    s->last_start_ns = mono_ns();
    s->flight_changed = false;
    pthread_mutex_lock(&s->lock);
    s->st.refreshes++;
    s->flight_pending = true; /* unknown kids from now on wait for this attempt */
    pthread_mutex_unlock(&s->lock);
    switch (iss->key_source) {
    case KEYS_JWKS_FILE:
        if (!iss->jwks_file) {
            fail(s, "no jwks_file configured");
        } else if (read_jwks_file(iss->jwks_file, &doc, &len, err, sizeof(err)) < 0) {
            fail(s, "%s", err);
        } else {
            accept_document(s, doc, len, -1);
        }
        break;
    case KEYS_JWKS_URI:
        if (!iss->jwks_uri) {
            fail(s, "no jwks_uri configured");
            break;
        }
        s->stage = STAGE_JWKS;
        fetch(s, iss->jwks_uri);
        break;
    case KEYS_DISCOVERY:
        url = discovery_url(iss);
        s->stage = STAGE_DISCOVERY;
        fetch(s, url);
        break;
    }
    free(doc);
    free(url);
}

/* ---- background events -------------------------------------------------- */

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct source *s = arg;
    (void)fd;
    (void)what;
    s->due_ns = 0;
    if (s->in_flight)
        return;
    refresh_begin(s, s->j->http);
}

/* An unknown kid started a refresh (keys_kid_unknown decided it under the
 * lock): start it, unless one began meanwhile (it began after the miss, so
 * it answers it). */
static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    struct source *s = arg;
    (void)fd;
    (void)what;

    atomic_store(&s->miss_pending, 0);
    pthread_mutex_lock(&s->lock);
    s->st.kid_miss_refreshes++;
    pthread_mutex_unlock(&s->lock);
    if (s->in_flight)
        return;
    if (s->timer)
        evtimer_del(s->timer);
    s->due_ns = 0;
    refresh_begin(s, s->j->http);
}

/* ---- lifecycle ---------------------------------------------------------- */

struct jwks *jwks_new(struct event_base *bg, struct http_client *http,
                      const struct baton_config *cfg)
{
    struct jwks *j = xcalloc(1, sizeof(*j));

    j->bg = bg;
    j->http = http;
    j->cfg = cfg;
    j->n = cfg->n_issuers;
    j->retry_base_ms = JWKS_RETRY_BASE_MS;
    j->rng = (mono_ns() ^ ((uint64_t)(uintptr_t)j << 17) ^ (uint64_t)now_ms()) | 1u;
    j->src = xcalloc(j->n ? j->n : 1, sizeof(*j->src));
    for (size_t i = 0; i < j->n; i++) {
        struct source *s = &j->src[i];
        s->j = j;
        s->iss = &cfg->issuers[i];
        pthread_mutex_init(&s->lock, NULL);
        if (bg) {
            s->timer = evtimer_new(bg, on_timer, s);
            s->kick = event_new(bg, -1, 0, on_kick, s);
            if (!s->timer || !s->kick)
                abort(); /* libevent out of memory */
        }
    }
    return j;
}

int jwks_start(struct jwks *j)
{
    if (!j->bg || !j->http)
        return -1;
    if (atomic_exchange(&j->started, true))
        return 0;
    for (size_t i = 0; i < j->n; i++)
        arm(&j->src[i], 0);
    return 0;
}

static bool str_eq(const char *a, const char *b)
{
    return a == b || (a && b && !strcmp(a, b));
}

void jwks_inherit(struct jwks *j, struct jwks *old)
{
    for (size_t i = 0; old && i < j->n; i++) {
        const struct cfg_issuer *a = j->src[i].iss;
        for (size_t k = 0; k < old->n; k++) {
            struct source *o = &old->src[k];
            const struct cfg_issuer *b = o->iss;
            struct jws_keyset *ks = NULL;
            unsigned char hash[32];
            if (strcmp(a->issuer, b->issuer) || a->key_source != b->key_source ||
                a->allow_http != b->allow_http || !str_eq(a->jwks_uri, b->jwks_uri) ||
                !str_eq(a->jwks_file, b->jwks_file))
                continue;
            pthread_mutex_lock(&o->lock);
            if (o->current) {
                ks = jws_keyset_ref(o->current);
                memcpy(hash, o->doc_hash, 32);
            }
            pthread_mutex_unlock(&o->lock);
            if (ks)
                publish(&j->src[i], ks, hash);
            break;
        }
    }
}

int jwks_load_sync(struct jwks *j, struct diags *d)
{
    struct event_base *base = NULL;
    struct http_client *hc = NULL;
    char err[200] = "";
    int rc = -1;

    if (atomic_load(&j->started)) {
        diags_add(d, j->cfg->file, 0, 0, "key sets: jwks_load_sync on a started jwks");
        return -1;
    }
    base = event_base_new();
    if (!base || !(hc = http_client_new(base, err, sizeof(err)))) {
        diags_add(d, j->cfg->file, 0, 0, "key sets: %s",
                  base ? err : "cannot create an event_base");
        goto out;
    }
    j->sync_base = base;
    j->sync_pending = j->n;
    for (size_t i = 0; i < j->n; i++) {
        j->src[i].sync = true;
        j->src[i].sync_ok = false;
    }
    for (size_t i = 0; i < j->n; i++)
        refresh_begin(&j->src[i], hc);
    if (j->sync_pending > 0)
        event_base_dispatch(base); /* every fetch has its own time limit */
    rc = 0;
    for (size_t i = 0; i < j->n; i++) {
        struct source *s = &j->src[i];
        if (s->in_flight) { /* the loop ended early: cannot happen with live fetches */
            http_call_cancel(s->call);
            s->in_flight = false;
            s->call = NULL;
            snprintf(s->sync_err, sizeof(s->sync_err), "fetch did not complete");
            s->sync_ok = false;
        }
        s->sync = false;
        if (!s->sync_ok) {
            diags_add(d, j->cfg->file, 0, 0, "issuer \"%s\": keys not loaded: %s", s->iss->name,
                      s->sync_err);
            rc = -1;
        }
    }
out:
    j->sync_base = NULL;
    http_client_free(hc);
    if (base)
        event_base_free(base);
    return rc;
}

bool jwks_ready(struct jwks *j)
{
    for (size_t i = 0; i < j->n; i++)
        if (atomic_load(&j->src[i].generation) == 0)
            return false;
    return true;
}

size_t jwks_issuer_count(const struct jwks *j)
{
    return j->n;
}

int jwks_stats(struct jwks *j, size_t i, struct jwks_issuer_stats *out)
{
    struct source *s;
    if (i >= j->n)
        return -1;
    s = &j->src[i];
    pthread_mutex_lock(&s->lock);
    *out = s->st;
    out->generation = atomic_load(&s->generation);
    pthread_mutex_unlock(&s->lock);
    out->name = s->iss->name;
    out->loaded = out->generation != 0;
    out->kid_miss = atomic_load(&s->kid_miss);
    return 0;
}

void jwks_set_retry_base_ms(struct jwks *j, unsigned ms)
{
    j->retry_base_ms = ms ? ms : 1;
}

void jwks_free(struct jwks *j)
{
    if (!j)
        return;
    for (size_t i = 0; i < j->n; i++) {
        struct source *s = &j->src[i];
        if (s->call)
            http_call_cancel(s->call);
        if (s->timer)
            event_free(s->timer);
        if (s->kick)
            event_free(s->kick);
        jws_keyset_unref(s->current);
        free(s->jwks_uri);
        pthread_mutex_destroy(&s->lock);
    }
    free(j->src);
    free(j);
}
