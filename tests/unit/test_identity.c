/*
 * test_identity.c: the token cache of identity.c against a fake credential
 * source and a fake clock: scheduling arithmetic, the safety margin, what a
 * token must be to be stored, failure reasons and readiness text, single
 * flight under 1,000 concurrent first requests, refresh and backoff timing on
 * a real event_base, pair-set changes and token lifetime across refreshes.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <jansson.h>

#include "b64.h"
#include "identity.h"
#include "tap.h"
#include "util.h"

/* ------------------------------------------------------------ the fakes */

static int64_t fake_now_ms;
static int64_t fake_clock(void *ctx)
{
    (void)ctx;
    return fake_now_ms;
}

enum fake_mode { FAKE_OK, FAKE_FAIL, FAKE_DEFER };

struct pending {
    identity_mint_done done;
    void *arg;
    char *sa, *aud;
};

struct fake {
    enum fake_mode mode;
    enum identity_failure fail_kind;
    int fail_status;
    atomic_int mints;
    int64_t lifetime_s;         /* exp = clock + lifetime */
    bool real_clock;            /* exp from the wall clock instead of fake_now_ms */
    const char *override_aud;   /* a token for another audience */
    const char *override_email; /* a token for another account */
    const char *raw;            /* answer this instead of a JWT */
    bool freed;
    pthread_mutex_t lock;
    struct pending pend[64];
    int n_pend;
};

static char *b64json(const char *json)
{
    char *out = xmalloc(b64url_encoded_len(strlen(json)) + 1);
    b64url_encode((const unsigned char *)json, strlen(json), out);
    return out;
}

static char *fake_token(const char *aud, const char *email, int64_t exp)
{
    json_t *c = json_pack("{s:s, s:I}", "aud", aud, "exp", (json_int_t)exp);
    char *cj, *h, *p, *tok;
    if (email)
        json_object_set_new(c, "email", json_string(email));
    cj = json_dumps(c, JSON_COMPACT | JSON_SORT_KEYS);
    h = b64json("{\"alg\":\"RS256\",\"typ\":\"JWT\"}");
    p = b64json(cj);
    tok = xasprintf("%s.%s.c2lnbmF0dXJl", h, p);
    free(cj);
    free(h);
    free(p);
    json_decref(c);
    return tok;
}

static void fake_answer(struct fake *f, const char *sa, const char *aud, identity_mint_done done,
                        void *arg)
{
    if (f->mode == FAKE_FAIL) {
        struct identity_mint_result r = {
            .failure = f->fail_kind,
            .http_status = f->fail_status,
            .detail = "grant roles/iam.serviceAccountOpenIdTokenCreator"};
        done(arg, &r);
        return;
    }
    int64_t now_s = (f->real_clock ? now_ms() : fake_now_ms) / 1000;
    char *tok = f->raw ? xstrdup(f->raw)
                       : fake_token(f->override_aud ? f->override_aud : aud,
                                    f->override_email ? f->override_email
                                                      : (sa ? sa : "me@p.iam.gserviceaccount.com"),
                                    now_s + f->lifetime_s);
    struct identity_mint_result r = {.ok = true, .token = tok, .token_len = strlen(tok)};
    done(arg, &r);
    free(tok);
}

static void fake_mint(void *ctx, const char *sa, const char *aud, identity_mint_done done,
                      void *arg)
{
    struct fake *f = ctx;
    atomic_fetch_add(&f->mints, 1);
    if (f->mode == FAKE_DEFER) {
        pthread_mutex_lock(&f->lock);
        if (f->n_pend < 64) {
            struct pending *p = &f->pend[f->n_pend++];
            p->done = done;
            p->arg = arg;
            p->sa = sa ? xstrdup(sa) : NULL;
            p->aud = xstrdup(aud);
        }
        pthread_mutex_unlock(&f->lock);
        return;
    }
    fake_answer(f, sa, aud, done, arg);
}

/* Completes every deferred mint (on the calling thread: run it on the base's). */
static void fake_flush(struct fake *f, enum fake_mode as)
{
    struct pending copy[64];
    int n;
    enum fake_mode keep = f->mode;
    pthread_mutex_lock(&f->lock);
    n = f->n_pend;
    memcpy(copy, f->pend, sizeof copy);
    f->n_pend = 0;
    pthread_mutex_unlock(&f->lock);
    f->mode = as;
    for (int i = 0; i < n; i++) {
        fake_answer(f, copy[i].sa, copy[i].aud, copy[i].done, copy[i].arg);
        free(copy[i].sa);
        free(copy[i].aud);
    }
    f->mode = keep;
}

static void fake_free(void *ctx)
{
    struct fake *f = ctx;
    for (int i = 0; i < f->n_pend; i++) {
        free(f->pend[i].sa);
        free(f->pend[i].aud);
    }
    f->n_pend = 0;
    f->freed = true;
}

static void fake_init(struct fake *f, enum fake_mode mode)
{
    memset(f, 0, sizeof *f);
    f->mode = mode;
    f->lifetime_s = 3600;
    atomic_init(&f->mints, 0);
    pthread_mutex_init(&f->lock, NULL);
}

static struct identity *new_id(struct event_base *base, struct fake *f,
                               const struct identity_pair *pairs, size_t n, bool fake_time)
{
    struct identity_source src = {.ctx = f, .mint = fake_mint, .free = fake_free};
    struct identity_opts o = {.seed = 42};
    if (fake_time) {
        o.now_ms = fake_clock;
        o.clock_ctx = NULL;
    }
    return identity_new_source(base, &src, &o, pairs, n);
}

static void run_for_ms(struct event_base *b, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_base_loopexit(b, &tv);
    event_base_dispatch(b);
}

static void run_pending(struct event_base *b)
{
    event_base_loop(b, EVLOOP_NONBLOCK);
    event_base_loop(b, EVLOOP_NONBLOCK);
}

static const struct identity_pair PAIRS[] = {
    {NULL, "https://billing.run.app"},
    {"step@p.iam.gserviceaccount.com", "https://billing.run.app"},
    {"step@p.iam.gserviceaccount.com", "https://ledger.run.app"},
};

/* ------------------------------------------------------------ the tests */

static void test_arithmetic(void)
{
    int64_t now = 1000000, d, lo = INT64_MAX, hi = 0;
    for (uint64_t r = 0; r < 2000; r += 7) {
        d = identity_refresh_delay_ms(now, now + 3600000, 60, r * 2654435761u);
        lo = d < lo ? d : lo;
        hi = d > hi ? d : hi;
    }
    ok(lo >= 2430000 && hi <= 2700000,
       "1 h token: refresh at 67.5-75%% of its lifetime (%lld..%lld ms)", (long long)lo,
       (long long)hi);
    ok(hi > lo, "refresh delay has jitter");
    is_int(identity_refresh_delay_ms(now, now + 70000, 60, 0), 9000,
           "70 s token with 60 s margin: refresh before exp - margin - 1 s");
    is_int(identity_refresh_delay_ms(now, now + 30000, 60, 0), 1000,
           "token inside the margin: refresh delay floors at 1 s");
    is_int(identity_refresh_delay_ms(now, now - 5000, 60, 99), 1000,
           "expired token: refresh delay floors at 1 s, never negative");

    d = identity_backoff_ms(1, 1000, 60000, 0);
    ok(d >= 500 && d <= 1000, "first failure backs off 0.5-1 s (%lld)", (long long)d);
    d = identity_backoff_ms(3, 1000, 60000, 123456789);
    ok(d >= 2000 && d <= 4000, "third failure backs off 2-4 s (%lld)", (long long)d);
    lo = INT64_MAX, hi = 0;
    for (uint64_t r = 0; r < 100; r++) {
        d = identity_backoff_ms(40, 1000, 60000, r * 0x9e3779b97f4a7c15ULL);
        lo = d < lo ? d : lo;
        hi = d > hi ? d : hi;
    }
    ok(lo >= 30000 && hi <= 60000, "40th failure is capped at 30-60 s (%lld..%lld)", (long long)lo,
       (long long)hi);
    is_str(identity_failure_name(IDENTITY_FAIL_PERMISSION), "permission_denied",
           "failure label for a 403");
}

static void test_cache_and_margin(void)
{
    struct event_base *b = event_base_new();
    struct fake f;
    struct identity *id;
    struct identity_token t, t2;
    char *detail;
    enum reason r;

    fake_init(&f, FAKE_OK);
    fake_now_ms = 1700000000000LL;
    id = new_id(b, &f, PAIRS, 3, true);

    r = identity_get(id, NULL, "https://billing.run.app", &t);
    is_int(r, REASON_IDENTITY_UNAVAILABLE, "before start: identity_unavailable");
    ok(t.header_value == NULL && t.ref_ == NULL, "before start: out is zeroed");
    ok(!identity_ready(id), "before start: not ready");
    detail = identity_ready_detail(id);
    ok(strstr(detail, "not minted yet") && strstr(detail, "step@p.iam.gserviceaccount.com"),
       "readiness detail names the pair not minted yet");
    free(detail);
    run_pending(b);
    is_int(atomic_load(&f.mints), 0, "nothing is minted before identity_start");

    identity_start(id);
    run_pending(b);
    is_int(atomic_load(&f.mints), 3, "identity_start mints each pair once");
    ok(identity_ready(id), "ready once every pair is minted");
    detail = identity_ready_detail(id);
    is_str(detail, "", "readiness detail is empty when ready");
    free(detail);

    r = identity_get(id, NULL, "https://billing.run.app", &t);
    is_int(r, REASON_ALLOWED, "own identity token served from the cache");
    ok(t.header_value && strncmp(t.header_value, "Bearer ey", 9) == 0,
       "header value is 'Bearer <jwt>'");
    is_str(t.identity, "me@p.iam.gserviceaccount.com", "identity is the token's email claim");
    is_str(t.audience, "https://billing.run.app", "audience is the one asked for");
    is_int(t.expires_at, fake_now_ms / 1000 + 3600, "expires_at is the token's exp");
    identity_token_release(&t);
    ok(t.ref_ == NULL && t.header_value == NULL, "release zeroes the token");
    identity_token_release(&t);

    r = identity_get(id, "step@p.iam.gserviceaccount.com", "https://ledger.run.app", &t);
    is_int(r, REASON_ALLOWED, "impersonated pair served");
    is_str(t.identity, "step@p.iam.gserviceaccount.com",
           "impersonated identity is the step's account");
    identity_token_release(&t);
    r = identity_get(id, "", "https://billing.run.app", &t);
    is_int(r, REASON_ALLOWED, "empty service account means baton's own identity");
    identity_token_release(&t);

    r = identity_get(id, "other@p.iam.gserviceaccount.com", "https://billing.run.app", &t);
    is_int(r, REASON_IDENTITY_UNAVAILABLE, "unknown pair refused");
    r = identity_get(id, NULL, "https://unknown.run.app", &t);
    is_int(r, REASON_IDENTITY_UNAVAILABLE, "unknown audience refused");
    r = identity_get(id, NULL, NULL, &t);
    is_int(r, REASON_IDENTITY_UNAVAILABLE, "NULL audience refused");
    run_pending(b);
    is_int(atomic_load(&f.mints), 3, "unknown pairs are never minted on demand");

    /* The margin: at exp - 61 s usable, at exp - 60 s not. */
    int64_t exp_ms = (fake_now_ms / 1000 + 3600) * 1000;
    fake_now_ms = exp_ms - 61000;
    r = identity_get(id, NULL, "https://billing.run.app", &t);
    is_int(r, REASON_ALLOWED, "token usable 61 s before exp");
    fake_now_ms = exp_ms - 60000;
    r = identity_get(id, NULL, "https://billing.run.app", &t2);
    is_int(r, REASON_IDENTITY_UNAVAILABLE, "token refused 60 s before exp (safety margin)");
    ok(!identity_ready(id), "not ready once tokens are within the margin");
    ok(t.header_value && strncmp(t.header_value, "Bearer ", 7) == 0,
       "a token taken earlier stays readable after it ages");
    identity_token_release(&t);
    fake_now_ms = exp_ms + 10000;
    r = identity_get(id, NULL, "https://billing.run.app", &t2);
    is_int(r, REASON_IDENTITY_UNAVAILABLE, "expired token refused");

    identity_free(id);
    ok(f.freed, "identity_free frees the source");
    event_base_free(b);
}

static void test_bad_tokens(void)
{
    struct event_base *b = event_base_new();
    struct fake f;
    struct identity *id;
    struct identity_token t;
    struct identity_pair own = {NULL, "https://a.run.app"};
    struct identity_pair sa = {"step@p.iam.gserviceaccount.com", "https://a.run.app"};
    struct {
        const char *name, *raw, *aud, *email;
        int64_t life;
        const char *expect_in_detail;
    } cases[] = {
        {"token expiring within the margin is not stored", NULL, NULL, NULL, 30, "expired"},
        {"already expired token is not stored", NULL, NULL, NULL, -10, "expired"},
        {"token for another audience is not stored", NULL, "https://b.run.app", NULL, 3600, "aud"},
        {"not a JWT is not stored", "not-a-jwt", NULL, NULL, 3600, "malformed"},
        {"JWT with non-JSON payload is not stored", "eyJh.bm90IGpzb24.c2ln", NULL, NULL, 3600,
         "malformed"},
        {"token with a space is not stored", "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjF9.c2 ln", NULL, NULL,
         3600, "malformed"},
        {"payload without exp is not stored",
         "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL2EucnVuLmFwcCJ9.c2ln", NULL, NULL, 3600, "exp"},
    };
    fake_now_ms = 1700000000000LL;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *detail;
        fake_init(&f, FAKE_OK);
        f.raw = cases[i].raw;
        f.override_aud = cases[i].aud;
        f.lifetime_s = cases[i].life;
        id = new_id(b, &f, &own, 1, true);
        identity_start(id);
        run_pending(b);
        is_int(identity_get(id, NULL, "https://a.run.app", &t), REASON_IDENTITY_UNAVAILABLE, "%s",
               cases[i].name);
        detail = identity_ready_detail(id);
        ok(strstr(detail, cases[i].expect_in_detail) != NULL, "%s: detail says %s", cases[i].name,
           cases[i].expect_in_detail);
        free(detail);
        identity_free(id);
    }

    fake_init(&f, FAKE_OK);
    f.override_email = "intruder@p.iam.gserviceaccount.com";
    id = new_id(b, &f, &sa, 1, true);
    identity_start(id);
    run_pending(b);
    is_int(identity_get(id, sa.service_account, sa.audience, &t), REASON_IDENTITY_UNAVAILABLE,
           "impersonated token whose email is another account is not stored");
    identity_free(id);
    event_base_free(b);
}

struct stats_seen {
    int n;
    uint64_t perm, ok, lat;
    bool any_inactive;
    char last_error[512];
};

static void stats_cb(void *ctx, const struct identity_pair_stats *s)
{
    struct stats_seen *seen = ctx;
    seen->n++;
    seen->perm += s->failures[IDENTITY_FAIL_PERMISSION];
    seen->ok += s->mints_ok;
    seen->lat += s->latency_count;
    if (!s->active)
        seen->any_inactive = true;
    if (s->last_error)
        snprintf(seen->last_error, sizeof seen->last_error, "%s", s->last_error);
}

static void test_failures(void)
{
    struct event_base *b = event_base_new();
    struct fake f;
    struct identity *id;
    struct identity_token t;
    struct identity_pair sa = {"step@p.iam.gserviceaccount.com", "https://a.run.app"};
    struct stats_seen seen = {0};
    char *detail;

    fake_now_ms = 1700000000000LL;
    fake_init(&f, FAKE_FAIL);
    f.fail_kind = IDENTITY_FAIL_PERMISSION;
    f.fail_status = 403;
    id = new_id(b, &f, &sa, 1, true);
    identity_start(id);
    run_pending(b);
    is_int(identity_get(id, sa.service_account, sa.audience, &t), REASON_IDENTITY_PERMISSION_DENIED,
           "403 from the source: identity_permission_denied");
    detail = identity_ready_detail(id);
    ok(strstr(detail, "permission_denied") && strstr(detail, "serviceAccountOpenIdTokenCreator") &&
           strstr(detail, "step@p.iam.gserviceaccount.com"),
       "readiness detail carries the failure, the fix and the account");
    free(detail);
    identity_stats_visit(id, stats_cb, &seen);
    is_int(seen.perm, 1, "stats count the permission failure");
    is_int(seen.lat, 1, "stats count the failed mint's latency");
    ok(strstr(seen.last_error, "permission_denied") != NULL, "stats expose the last error");
    identity_free(id);

    fake_init(&f, FAKE_FAIL);
    f.fail_kind = IDENTITY_FAIL_NOT_FOUND;
    id = new_id(b, &f, &sa, 1, true);
    identity_start(id);
    run_pending(b);
    is_int(identity_get(id, sa.service_account, sa.audience, &t), REASON_IDENTITY_UNKNOWN_ACCOUNT,
           "404 from the source: identity_unknown_account");
    identity_free(id);

    fake_init(&f, FAKE_FAIL);
    f.fail_kind = IDENTITY_FAIL_TIMEOUT;
    id = new_id(b, &f, &sa, 1, true);
    identity_start(id);
    run_pending(b);
    is_int(identity_get(id, sa.service_account, sa.audience, &t), REASON_IDENTITY_UNAVAILABLE,
           "timeout from the source: identity_unavailable");
    is_int(reason_status(REASON_IDENTITY_PERMISSION_DENIED), 503, "permission denied maps to 503");
    is_int(reason_status(REASON_IDENTITY_UNKNOWN_ACCOUNT), 503, "unknown account maps to 503");
    identity_free(id);
    event_base_free(b);
}

/* Real time: refresh timers fire, failures back off, recovery, old tokens survive. */
static void test_timing(void)
{
    struct event_base *b = event_base_new();
    struct fake f;
    struct identity *id;
    struct identity_token t, old;
    struct identity_pair own = {NULL, "https://a.run.app"};
    struct identity_source src = {.ctx = &f, .mint = fake_mint, .free = fake_free};
    struct identity_opts o = {
        .margin_s = 1, .backoff_min_ms = 50, .backoff_max_ms = 200, .seed = 7};
    int n;

    /* A 3 s token with a 1 s margin is refreshed every second. */
    fake_init(&f, FAKE_OK);
    f.real_clock = true;
    f.lifetime_s = 3;
    id = identity_new_source(b, &src, &o, &own, 1);
    identity_start(id);
    run_pending(b);
    is_int(identity_get(id, NULL, own.audience, &old), REASON_ALLOWED, "short-lived token served");
    run_for_ms(b, 2600);
    n = atomic_load(&f.mints);
    ok(n >= 2 && n <= 4, "3 s tokens are refreshed ahead of expiry (%d mints in 2.6 s)", n);
    is_int(identity_get(id, NULL, own.audience, &t), REASON_ALLOWED, "refreshed token served");
    ok(old.header_value && strncmp(old.header_value, "Bearer ", 7) == 0,
       "a token held across refreshes stays valid until released");
    identity_token_release(&old);
    identity_token_release(&t);

    /* Failures back off (50..200 ms), then the source recovers. */
    f.mode = FAKE_FAIL;
    f.fail_kind = IDENTITY_FAIL_HTTP_5XX;
    atomic_store(&f.mints, 0);
    run_for_ms(b, 1500);
    n = atomic_load(&f.mints);
    ok(n >= 3 && n <= 30,
       "failing source retried with backoff, not in a hot loop (%d tries in 1.5 s)", n);
    f.mode = FAKE_OK;
    f.lifetime_s = 3600;
    run_for_ms(b, 400);
    is_int(identity_get(id, NULL, own.audience, &t), REASON_ALLOWED,
           "recovers once the source answers");
    ok(t.expires_at > now_ms() / 1000 + 3000, "recovered token is the new 1 h token");
    identity_token_release(&t);
    n = atomic_load(&f.mints);
    run_for_ms(b, 500);
    is_int(atomic_load(&f.mints), n, "after recovery the next mint waits for the refresh timer");
    identity_free(id);
    event_base_free(b);
}

/* The pair set changes (SIGHUP): new pairs minted, dropped pairs refused. */
static void test_set_pairs(void)
{
    struct event_base *b = event_base_new();
    struct fake f;
    struct identity *id;
    struct identity_token t;
    struct identity_pair dup[] = {{NULL, "https://a.run.app"},
                                  {NULL, "https://a.run.app"},
                                  {"", "https://a.run.app"},
                                  {"s@p.iam.gserviceaccount.com", NULL}};
    struct identity_pair next[] = {{NULL, "https://b.run.app"}, {NULL, "https://a.run.app"}};
    struct stats_seen seen = {0};

    fake_now_ms = 1700000000000LL;
    fake_init(&f, FAKE_OK);
    id = new_id(b, &f, dup, 4, true);
    identity_start(id);
    run_pending(b);
    is_int(atomic_load(&f.mints), 1, "duplicate pairs (and NULL audiences) merge into one mint");

    identity_set_pairs(id, next, 2);
    run_pending(b);
    is_int(atomic_load(&f.mints), 2, "a new pair is minted, a kept pair is not re-minted");
    is_int(identity_get(id, NULL, "https://b.run.app", &t), REASON_ALLOWED, "new pair served");
    identity_token_release(&t);

    identity_set_pairs(id, next, 1);
    run_pending(b);
    is_int(identity_get(id, NULL, "https://a.run.app", &t), REASON_IDENTITY_UNAVAILABLE,
           "dropped pair refused");
    identity_stats_visit(id, stats_cb, &seen);
    ok(seen.n == 2 && seen.any_inactive, "stats list the dropped pair as inactive");
    identity_set_pairs(id, next, 2);
    run_pending(b);
    is_int(identity_get(id, NULL, "https://a.run.app", &t), REASON_ALLOWED,
           "re-added pair served with its kept token");
    identity_token_release(&t);
    identity_free(id);
    event_base_free(b);
}

/* ---- 1,000 concurrent first requests: one mint per pair */

struct loop_thread {
    struct event_base *base;
    pthread_t th;
    struct event *keep;
};

static void *loop_main(void *arg)
{
    struct loop_thread *lt = arg;
    event_base_dispatch(lt->base);
    return NULL;
}

static void noop_cb(evutil_socket_t fd, short w, void *a)
{
    (void)fd, (void)w, (void)a;
}

struct hammer {
    struct identity *id;
    atomic_int allowed, refused;
    pthread_barrier_t *go;
};

static void *hammer_main(void *arg)
{
    struct hammer *h = arg;
    pthread_barrier_wait(h->go);
    for (int i = 0; i < 25; i++) {
        struct identity_token t;
        const struct identity_pair *p = &PAIRS[i % 3];
        if (identity_get(h->id, p->service_account, p->audience, &t) == REASON_ALLOWED) {
            if (t.header_value && strncmp(t.header_value, "Bearer ", 7) == 0)
                atomic_fetch_add(&h->allowed, 1);
            identity_token_release(&t);
        } else {
            atomic_fetch_add(&h->refused, 1);
        }
    }
    return NULL;
}

static void hammer_round(struct hammer *h)
{
    pthread_t th[40];
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, 40);
    h->go = &go;
    atomic_store(&h->allowed, 0);
    atomic_store(&h->refused, 0);
    for (int i = 0; i < 40; i++)
        pthread_create(&th[i], NULL, hammer_main, h);
    for (int i = 0; i < 40; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&go);
}

static void flush_cb(evutil_socket_t fd, short w, void *a)
{
    (void)fd, (void)w;
    fake_flush(a, FAKE_OK);
}

static void test_concurrency(void)
{
    struct loop_thread lt;
    struct fake f;
    struct hammer h;
    struct timeval forever = {3600, 0};
    int waited = 0;

    fake_now_ms = now_ms();
    lt.base = event_base_new();
    lt.keep = event_new(lt.base, -1, EV_PERSIST, noop_cb, NULL);
    event_add(lt.keep, &forever);
    pthread_create(&lt.th, NULL, loop_main, &lt);

    fake_init(&f, FAKE_DEFER);
    h.id = new_id(lt.base, &f, PAIRS, 3, true);
    atomic_init(&h.allowed, 0);
    atomic_init(&h.refused, 0);

    hammer_round(&h);
    is_int(atomic_load(&h.refused), 1000, "1,000 concurrent requests before start: all refused");
    identity_start(h.id);
    while (atomic_load(&f.mints) < 3 && waited++ < 200)
        usleep(5000);
    hammer_round(&h);
    is_int(atomic_load(&h.refused), 1000, "1,000 concurrent requests while minting: all refused");
    is_int(atomic_load(&f.mints), 3, "one mint per pair, whatever the request burst");
    ok(!identity_wait_ready(h.id, 50), "wait_ready times out while mints are pending");

    event_base_once(lt.base, -1, EV_TIMEOUT, flush_cb, &f, NULL);
    ok(identity_wait_ready(h.id, 5000), "wait_ready returns once every pair is minted");
    hammer_round(&h);
    is_int(atomic_load(&h.allowed), 1000, "1,000 concurrent requests after minting: all served");
    is_int(atomic_load(&f.mints), 3, "serving requests never mints");

    event_base_loopbreak(lt.base);
    pthread_join(lt.th, NULL);
    identity_free(h.id);
    event_free(lt.keep);
    event_base_free(lt.base);
}

int main(void)
{
    evthread_use_pthreads();
    test_arithmetic();
    test_cache_and_margin();
    test_bad_tokens();
    test_failures();
    test_set_pairs();
    test_concurrency();
    test_timing();
    libevent_global_shutdown();
    return tap_done();
}
