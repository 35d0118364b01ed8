/*
 * runtime.c: building, publishing and retiring the request path's snapshot.
 */
#include "runtime.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "assertion.h"
#include "authn.h"
#include "decide.h"
#include "hdrclass.h"
#include "jwks.h"
#include "log.h"
#include "policy.h"
#include "resolve.h"
#include "signurl.h"
#include "redis.h"
#include "util.h"

struct rate_bucket {
    pthread_mutex_t lock;
    double tokens;
    double rate;  /* tokens per second */
    double burst; /* capacity */
    uint64_t last_ns;
};

struct runtime_inflight {
    _Atomic long count;
    _Atomic int refs;
};

static struct event_base *bg_base;
static struct http_client *bg_http;
static unsigned n_workers = 1;

static pthread_mutex_t cur_lock = PTHREAD_MUTEX_INITIALIZER;
static struct runtime *current;
static _Atomic uint64_t cur_gen;
static uint64_t next_gen;

static pthread_mutex_t reap_lock = PTHREAD_MUTEX_INITIALIZER;
static struct runtime *reap_list;
static struct event *reap_ev;
static bool sync_destroy;

/* ----------------------------------------------------------- rate buckets */

struct rate_bucket *runtime_bucket_new(double rate_per_s, unsigned burst, uint64_t now_ns)
{
    struct rate_bucket *b = xcalloc(1, sizeof(*b));
    pthread_mutex_init(&b->lock, NULL);
    b->rate = rate_per_s;
    b->burst = burst ? burst : ceil(rate_per_s);
    if (b->burst < 1)
        b->burst = 1;
    b->tokens = b->burst;
    b->last_ns = now_ns;
    return b;
}

void runtime_bucket_free(struct rate_bucket *b)
{
    if (!b)
        return;
    pthread_mutex_destroy(&b->lock);
    free(b);
}

bool runtime_rate_take(struct rate_bucket *b, uint64_t now_ns, unsigned *retry_after_s)
{
    bool ok;

    pthread_mutex_lock(&b->lock);
    if (now_ns > b->last_ns) {
        b->tokens += (double)(now_ns - b->last_ns) / 1e9 * b->rate;
        if (b->tokens > b->burst)
            b->tokens = b->burst;
        b->last_ns = now_ns;
    }
    ok = b->tokens >= 1.0;
    if (ok) {
        b->tokens -= 1.0;
    } else {
        /* the epsilon keeps 1/0.0002 (4999.999... or 5000.000...1 in binary)
         * at 5000; a rate so small the wait overflows is capped */
        double wait = ceil((1.0 - b->tokens) / b->rate - 1e-6);
        *retry_after_s = wait < 1 ? 1 : wait > 2147483647.0 ? 2147483647u : (unsigned)wait;
    }
    pthread_mutex_unlock(&b->lock);
    return ok;
}

/* ------------------------------------------------------- in-flight caps */

struct runtime_inflight *runtime_inflight_new(void)
{
    struct runtime_inflight *f = xcalloc(1, sizeof(*f));
    atomic_init(&f->count, 0);
    atomic_init(&f->refs, 1);
    return f;
}

static struct runtime_inflight *inflight_ref(struct runtime_inflight *f)
{
    atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
    return f;
}

void runtime_inflight_unref(struct runtime_inflight *f)
{
    if (f && atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) == 1)
        free(f);
}

bool runtime_inflight_enter(struct runtime_inflight *f, unsigned max)
{
    if (atomic_fetch_add_explicit(&f->count, 1, memory_order_relaxed) < (long)max)
        return true;
    atomic_fetch_sub_explicit(&f->count, 1, memory_order_relaxed);
    return false;
}

void runtime_inflight_leave(struct runtime_inflight *f)
{
    atomic_fetch_sub_explicit(&f->count, 1, memory_order_relaxed);
}

long runtime_inflight_now(const struct runtime_inflight *f)
{
    return atomic_load_explicit(&f->count, memory_order_relaxed);
}

/* The previous snapshot's counter of the same step name, shared; else a new one. */
static struct runtime_inflight *inherit_inflight(const struct runtime *old, const char *step)
{
    for (size_t i = 0; old && i < old->n_steps; i++)
        if (old->steps[i].inflight && strcmp(policy_step(old->steps[i].policy), step) == 0)
            return inflight_ref(old->steps[i].inflight);
    return runtime_inflight_new();
}

/* ------------------------------------------------------------- lifecycle */

static void destroy(struct runtime *rt)
{
    if (!rt)
        return;
    authn_free(rt->authn);
    for (unsigned i = 0; rt->caches && i < rt->n_workers; i++)
        authn_cache_free(rt->caches[i]);
    free(rt->caches);
    for (unsigned i = 0; rt->assertion_caches && i < rt->n_workers; i++)
        assertion_cache_free(rt->assertion_caches[i]);
    free(rt->assertion_caches);
    assertion_signer_free(rt->assertion);
    jwks_free(rt->jwks);
    for (size_t i = 0; i < rt->n_steps; i++) {
        runtime_bucket_free(rt->steps[i].bucket);
        free(rt->steps[i].rate_key);
        runtime_inflight_unref(rt->steps[i].inflight);
    }
    free(rt->steps);
    policy_set_free(rt->policies);
    for (size_t i = 0; rt->targets && rt->cfg && i < rt->cfg->n_upstreams; i++)
        resolver_free(rt->targets[i].res);
    free(rt->targets);
    signurl_keys_free(rt->url_keys);
    hdrclass_free(rt->classes);
    config_free(rt->cfg);
    free(rt);
}

static void reap_cb(evutil_socket_t fd, short what, void *arg)
{
    struct runtime *list;
    (void)fd;
    (void)what;
    (void)arg;
    pthread_mutex_lock(&reap_lock);
    list = reap_list;
    reap_list = NULL;
    pthread_mutex_unlock(&reap_lock);
    while (list) {
        struct runtime *next = list->next_;
        log_msg(LOG_DEBUG, "snapshot %llu retired", (unsigned long long)list->generation);
        destroy(list);
        list = next;
    }
}

void runtime_init(struct event_base *bg, struct http_client *http, unsigned workers)
{
    bg_base = bg;
    bg_http = http;
    n_workers = workers ? workers : 1;
    reap_ev = event_new(bg, -1, 0, reap_cb, NULL);
    sync_destroy = false;
}

struct runtime *runtime_ref(struct runtime *rt)
{
    if (rt)
        atomic_fetch_add_explicit(&rt->refs_, 1, memory_order_relaxed);
    return rt;
}

void runtime_unref(struct runtime *rt)
{
    if (!rt || atomic_fetch_sub_explicit(&rt->refs_, 1, memory_order_acq_rel) != 1)
        return;
    pthread_mutex_lock(&reap_lock);
    if (sync_destroy || !reap_ev) {
        pthread_mutex_unlock(&reap_lock);
        destroy(rt);
        return;
    }
    rt->next_ = reap_list;
    reap_list = rt;
    pthread_mutex_unlock(&reap_lock);
    event_active(reap_ev, EV_TIMEOUT, 0);
}

static pthread_mutex_t reload_lock = PTHREAD_MUTEX_INITIALIZER;
static struct runtime_reload reload_st;

void runtime_publish(struct runtime *rt)
{
    struct runtime *old;
    if (rt) {
        pthread_mutex_lock(&reload_lock);
        reload_st.ok = true;
        reload_st.success_ms = now_ms();
        reload_st.error[0] = '\0';
        pthread_mutex_unlock(&reload_lock);
    }
    pthread_mutex_lock(&cur_lock);
    old = current;
    current = rt;
    atomic_store_explicit(&cur_gen, rt ? rt->generation : 0, memory_order_release);
    pthread_mutex_unlock(&cur_lock);
    runtime_unref(old);
}

struct runtime *runtime_current(void)
{
    struct runtime *rt;
    pthread_mutex_lock(&cur_lock);
    rt = runtime_ref(current);
    pthread_mutex_unlock(&cur_lock);
    return rt;
}

uint64_t runtime_generation(void)
{
    return atomic_load_explicit(&cur_gen, memory_order_acquire);
}

void runtime_shutdown(void)
{
    runtime_publish(NULL);
    pthread_mutex_lock(&reap_lock);
    sync_destroy = true;
    pthread_mutex_unlock(&reap_lock);
    reap_cb(-1, 0, NULL);
    if (reap_ev)
        event_free(reap_ev);
    reap_ev = NULL;
}

/* ---------------------------------------------------------------- build */

static int step_cmp(const void *a, const void *b)
{
    const struct runtime_step *x = a, *y = b;
    return x->policy < y->policy ? -1 : x->policy > y->policy;
}

const struct runtime_step *runtime_step(const struct runtime *rt, const struct policy *p)
{
    size_t lo = 0, hi = rt->n_steps;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (rt->steps[mid].policy == p)
            return &rt->steps[mid];
        if ((uintptr_t)rt->steps[mid].policy < (uintptr_t)p)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* A reloaded step keeps the tokens its bucket had, when its rate is unchanged,
 * so a reload does not hand every caller a fresh burst. */
static void inherit_bucket(struct rate_bucket *b, const struct runtime *old, const char *step,
                           const struct policy_limits *lim)
{
    if (!old)
        return;
    for (size_t i = 0; i < old->n_steps; i++) {
        const struct runtime_step *s = &old->steps[i];
        const struct policy_limits *ol;
        if (!s->bucket || strcmp(policy_step(s->policy), step) != 0)
            continue;
        ol = policy_limits(s->policy);
        if (ol->rate_per_s != lim->rate_per_s || ol->burst != lim->burst)
            return;
        pthread_mutex_lock(&s->bucket->lock);
        b->tokens = s->bucket->tokens;
        b->last_ns = s->bucket->last_ns;
        pthread_mutex_unlock(&s->bucket->lock);
        return;
    }
}

struct runtime *runtime_build(const char *path, struct diags *d)
{
    struct runtime *rt = xcalloc(1, sizeof(*rt));
    struct runtime *old = runtime_current();
    struct authn_keys keys;
    size_t n;
    uint64_t now = mono_ns();

    rt->cfg = config_load(path, d);
    if (!rt->cfg)
        goto fail;
    rt->policies = policy_set_load(rt->cfg, d);
    if (!rt->policies)
        goto fail;
    rt->targets = xcalloc(rt->cfg->n_upstreams ? rt->cfg->n_upstreams : 1, sizeof(*rt->targets));
    /* A name that does not resolve is not an error: that upstream answers
     * 502 upstream_unresolved until a refresh resolves it (resolve.h). A
     * reload keeps the good addresses of an unchanged name meanwhile. */
    {
        size_t n_prev = old ? old->cfg->n_upstreams : 0;
        struct resolver **prev = xcalloc(n_prev ? n_prev : 1, sizeof(*prev));
        for (size_t j = 0; j < n_prev; j++)
            prev[j] = old->targets[j].res;
        for (size_t i = 0; i < rt->cfg->n_upstreams; i++) {
            const struct cfg_upstream *up = &rt->cfg->upstreams[i];
            rt->targets[i].up = up;
            rt->targets[i].res = resolver_new(up->name, up->host, up->port, up->resolve_interval_s,
                                              prev, n_prev);
        }
        free(prev);
    }
    rt->url_keys = signurl_keys_for(rt->cfg, d);
    if (d->n)
        goto fail;

    n = policy_set_count(rt->policies);
    rt->steps = xcalloc(n ? n : 1, sizeof(*rt->steps));
    for (size_t i = 0; i < n; i++) {
        const struct policy *p = policy_set_at(rt->policies, i);
        const struct cfg_upstream *up = policy_upstream(p);
        const struct policy_limits *lim = policy_limits(p);
        struct runtime_step *s = &rt->steps[rt->n_steps++];
        s->policy = p;
        s->target = &rt->targets[up - rt->cfg->upstreams];
        if (lim->rate_per_s) {
            s->bucket = runtime_bucket_new(lim->rate_per_s, lim->burst, now);
            inherit_bucket(s->bucket, old, policy_step(p), lim);
        }
        if (lim->rate_per_s && lim->rate_scope == POLICY_RATE_GLOBAL) {
            char key[REDIS_KEY_MAX];
            if (redis_key(key, sizeof(key), policy_step(p), policy_hash_hex(p)) < 0)
                diags_add(d, policy_file(p), 0, 0, "the step name is too long for a Redis key");
            else
                s->rate_key = xstrdup(key);
        }
        if (lim->max_in_flight)
            s->inflight = inherit_inflight(old, policy_step(p));
        if (up->identity == IDENTITY_GOOGLE)
            rt->needs_identity = true;
    }
    qsort(rt->steps, rt->n_steps, sizeof(*rt->steps), step_cmp);
    if (d->n)
        goto fail;
    {
        char err[128];
        rt->classes = decide_classes_new(rt->cfg, rt->policies, err, sizeof(err));
        if (!rt->classes) {
            diags_add(d, rt->cfg->file, 0, 0, "%s", err);
            goto fail;
        }
    }

    rt->jwks = jwks_new(bg_base, bg_http, rt->cfg);
    if (old && old->jwks)
        jwks_inherit(rt->jwks, old->jwks);
    keys = jwks_authn_keys(rt->jwks);
    rt->authn = authn_new(rt->cfg, &keys);
    rt->n_workers = n_workers;
    rt->caches = xcalloc(n_workers, sizeof(*rt->caches));
    for (unsigned i = 0; i < n_workers; i++)
        rt->caches[i] = authn_cache_new(0);
    if (rt->cfg->assertion.enabled) {
        char err[512];
        /* a generated key carries over a reload: assertions already out stay verifiable */
        rt->assertion = assertion_signer_new(&rt->cfg->assertion, old ? old->assertion : NULL, err,
                                             sizeof(err));
        if (!rt->assertion) {
            config_diag(rt->cfg, d, "assertion/signing_key", false, "%s", err);
            goto fail;
        }
        rt->assertion_caches = xcalloc(n_workers, sizeof(*rt->assertion_caches));
        for (unsigned i = 0; i < n_workers; i++)
            rt->assertion_caches[i] = assertion_cache_new();
    }
    if (bg_base && jwks_start(rt->jwks) < 0) {
        diags_add(d, rt->cfg->file, 0, 0, "cannot start key set refresh");
        goto fail;
    }
    for (size_t i = 0; bg_base && i < rt->cfg->n_upstreams; i++)
        if (resolver_start(rt->targets[i].res, bg_base) < 0) {
            diags_add(d, rt->cfg->file, 0, 0, "cannot start upstream address refresh");
            goto fail;
        }
    atomic_store(&rt->refs_, 1);
    rt->generation = ++next_gen;
    runtime_unref(old);
    return rt;
fail:
    runtime_unref(old);
    destroy(rt);
    return NULL;
}

void runtime_reload_refused(const char *error)
{
    pthread_mutex_lock(&reload_lock);
    reload_st.ok = false;
    reload_st.failure_ms = now_ms();
    reload_st.failures++;
    snprintf(reload_st.error, sizeof(reload_st.error), "%s", error ? error : "");
    pthread_mutex_unlock(&reload_lock);
}

void runtime_reload_status(struct runtime_reload *out)
{
    pthread_mutex_lock(&reload_lock);
    *out = reload_st;
    pthread_mutex_unlock(&reload_lock);
}
