/*
 * metrics.c: per-worker counters and histograms (single writer each), summed
 * and rendered in the Prometheus text format by the admin thread.
 */
#include "metrics.h"

#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/crypto.h>

#include "util.h"

#ifdef PACKAGE_VERSION
#define METRICS_VERSION PACKAGE_VERSION
#else
#define METRICS_VERSION "unknown"
#endif

/* Histogram upper bounds in seconds (le labels); +Inf is implicit. */
static const double bucket_le[] = {0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05,
                                   0.1,    0.25,    0.5,    1,     2.5,   5,     10,   30,    60};
#define N_BUCKETS (sizeof(bucket_le) / sizeof(bucket_le[0]))
/* The same bounds in nanoseconds, filled from bucket_le by metrics_init: a
 * request's time is compared as an integer, with no division. */
static uint64_t bucket_ns[N_BUCKETS];

struct histogram {
    _Atomic uint64_t bucket[N_BUCKETS + 1]; /* last: +Inf */
    _Atomic uint64_t count;
    _Atomic uint64_t sum_ns;
};

struct label_set {
    _Atomic int used; /* 0 free; 1 filled (published after the fields) */
    char step[METRICS_STEP_MAX];
    enum decision decision;
    enum reason reason;
    int status;
    _Atomic uint64_t count;
};

/* The upstream latency of one step (same insert discipline as label_set). */
struct step_histogram {
    _Atomic int used;
    char step[METRICS_STEP_MAX];
    struct histogram h;
};

struct metrics_worker {
    pthread_mutex_t insert_lock; /* held by the owner to insert, by the renderer to read */
    struct label_set sets[METRICS_LABEL_SETS];
    size_t n_sets; /* owner only */
    struct histogram request;
    struct step_histogram upstream[METRICS_STEP_HISTOGRAMS];
    size_t n_upstream; /* owner only */
    _Atomic uint64_t conn_refused;
    _Atomic uint64_t upstream_new;
    _Atomic uint64_t upstream_reused;
    _Atomic uint64_t cache_hits;
    _Atomic uint64_t cache_misses;
    /* owner only: the last request's label set and upstream histogram, kept
     * only when their step is the request's whole label (not cut, not
     * _overflow), so that a hit is the set label_find would return */
    struct label_set *last;
    struct step_histogram *last_up;
};

static bool request_cache = true;
static struct metrics_worker *workers;
static unsigned n_workers;
static _Atomic long open_conns;

/* The single writer's increment: no read-modify-write instruction needed. */
static inline void bump(_Atomic uint64_t *c, uint64_t by)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + by,
                          memory_order_relaxed);
}

static inline uint64_t get(const _Atomic uint64_t *c)
{
    return atomic_load_explicit((_Atomic uint64_t *)c, memory_order_relaxed);
}

int metrics_init(unsigned n)
{
    if (workers)
        return -1;
    if (n == 0)
        n = 1;
    workers = xcalloc(n, sizeof(*workers));
    n_workers = n;
    for (size_t b = 0; b < N_BUCKETS; b++)
        bucket_ns[b] = (uint64_t)llround(bucket_le[b] * 1e9);
    for (unsigned i = 0; i < n; i++)
        pthread_mutex_init(&workers[i].insert_lock, NULL);
    return 0;
}

void metrics_shutdown(void)
{
    for (unsigned i = 0; i < n_workers; i++)
        pthread_mutex_destroy(&workers[i].insert_lock);
    free(workers);
    workers = NULL;
    n_workers = 0;
}

struct metrics_worker *metrics_worker(unsigned id)
{
    return id < n_workers ? &workers[id] : NULL;
}

static uint32_t step_hash(const char *step)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)step; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h;
}

/* A label set's hash from its step's (step_hash, taken once a request). */
static uint32_t label_hash(uint32_t h, enum decision d, enum reason reason, int status)
{
    h = (h ^ (uint32_t)d) * 16777619u;
    h = (h ^ (uint32_t)reason) * 16777619u;
    h = (h ^ (uint32_t)status) * 16777619u;
    return h;
}

#define OVERFLOW_RESERVE 64

static struct label_set *label_find(struct metrics_worker *mw, const char *step, uint32_t step_h,
                                    enum decision d, enum reason reason, int status,
                                    bool overflowed)
{
    uint32_t h = label_hash(step_h, d, reason, status);
    size_t i;

    for (size_t probe = 0; probe < METRICS_LABEL_SETS; probe++) {
        struct label_set *s;
        i = (h + probe) & (METRICS_LABEL_SETS - 1);
        s = &mw->sets[i];
        if (!atomic_load_explicit(&s->used, memory_order_acquire)) {
            /* The last OVERFLOW_RESERVE slots are kept for the overflow
             * label, one per (decision, status) seen after the table filled. */
            if (!overflowed && mw->n_sets >= METRICS_LABEL_SETS - OVERFLOW_RESERVE)
                return label_find(mw, "_overflow", step_hash("_overflow"), d, reason, status, true);
            mw->n_sets++;
            /* Insert: only this worker writes its table; the lock keeps the
             * renderer from reading a half-filled entry. */
            pthread_mutex_lock(&mw->insert_lock);
            snprintf(s->step, sizeof(s->step), "%s", step);
            s->decision = d;
            s->reason = reason;
            s->status = status;
            atomic_store_explicit(&s->count, 0, memory_order_relaxed);
            atomic_store_explicit(&s->used, 1, memory_order_release);
            pthread_mutex_unlock(&mw->insert_lock);
            return s;
        }
        if (s->decision == d && s->reason == reason && s->status == status &&
            strncmp(s->step, step, sizeof(s->step) - 1) == 0)
            return s;
    }
    return NULL; /* unreachable while the reserve holds: dropped */
}

/* The step's upstream histogram; past the table, the last slot is
 * step="_overflow" for every step that did not fit. */
static struct step_histogram *step_histogram_find(struct metrics_worker *mw, const char *step,
                                                  uint32_t h)
{
    for (size_t probe = 0; probe < METRICS_STEP_HISTOGRAMS; probe++) {
        struct step_histogram *s = &mw->upstream[(h + probe) & (METRICS_STEP_HISTOGRAMS - 1)];
        if (!atomic_load_explicit(&s->used, memory_order_acquire)) {
            if (mw->n_upstream >= METRICS_STEP_HISTOGRAMS - 1 && strcmp(step, "_overflow") != 0)
                return step_histogram_find(mw, "_overflow", step_hash("_overflow"));
            mw->n_upstream++;
            pthread_mutex_lock(&mw->insert_lock);
            snprintf(s->step, sizeof(s->step), "%s", step);
            atomic_store_explicit(&s->used, 1, memory_order_release);
            pthread_mutex_unlock(&mw->insert_lock);
            return s;
        }
        if (strncmp(s->step, step, sizeof(s->step) - 1) == 0)
            return s;
    }
    return NULL;
}

static void observe(struct histogram *h, uint64_t ns)
{
    size_t b = 0;
    while (b < N_BUCKETS && ns > bucket_ns[b])
        b++;
    bump(&h->bucket[b], 1);
    bump(&h->count, 1);
    bump(&h->sum_ns, ns);
}

void metrics_request_cache(bool on)
{
    request_cache = on;
}

/* An exact match of a cached set's step: it holds the whole label (a label
 * that did not fit was never cached), so it is the set found by hash. */
static bool step_is(const char *cached, const char *label)
{
    return strcmp(cached, label) == 0;
}

void metrics_request(struct metrics_worker *mw, const char *step, enum decision d,
                     enum reason reason, int status, uint64_t total_ns, uint64_t upstream_ns)
{
    struct label_set *s;
    const char *label = step && *step ? step : METRICS_NO_STEP;
    uint32_t h = 0;
    bool hashed = false;

    if (!mw)
        return;
    s = mw->last;
    if (!s || s->decision != d || s->reason != reason || s->status != status ||
        !step_is(s->step, label)) {
        h = step_hash(label);
        hashed = true;
        s = label_find(mw, label, h, d, reason, status, false);
        mw->last = request_cache && s && step_is(s->step, label) ? s : NULL;
    }
    if (s)
        bump(&s->count, 1);
    observe(&mw->request, total_ns);
    if (upstream_ns) {
        struct step_histogram *u = mw->last_up;
        if (!u || !step_is(u->step, label)) {
            u = step_histogram_find(mw, label, hashed ? h : step_hash(label));
            mw->last_up = request_cache && u && step_is(u->step, label) ? u : NULL;
        }
        if (u)
            observe(&u->h, upstream_ns);
    }
}

void metrics_conn_refused(struct metrics_worker *mw)
{
    if (mw)
        bump(&mw->conn_refused, 1);
}

void metrics_upstream_conn(struct metrics_worker *mw, int reused)
{
    if (mw)
        bump(reused ? &mw->upstream_reused : &mw->upstream_new, 1);
}

void metrics_token_cache(struct metrics_worker *mw, int hit)
{
    if (mw)
        bump(hit ? &mw->cache_hits : &mw->cache_misses, 1);
}

void metrics_conn_open(int delta)
{
    atomic_fetch_add_explicit(&open_conns, delta, memory_order_relaxed);
}

long metrics_conn_open_now(void)
{
    return atomic_load_explicit(&open_conns, memory_order_relaxed);
}

void metrics_label_escape(char *out, size_t cap, const char *s)
{
    size_t o = 0;
    if (cap == 0)
        return;
    for (; s && *s; s++) {
        const char *rep = NULL;
        char one[2] = {*s, 0};
        if (*s == '\\')
            rep = "\\\\";
        else if (*s == '"')
            rep = "\\\"";
        else if (*s == '\n')
            rep = "\\n";
        else
            rep = one;
        size_t n = strlen(rep);
        if (o + n >= cap)
            break;
        memcpy(out + o, rep, n);
        o += n;
    }
    out[o] = '\0';
}

void metrics_write_sample(struct evbuffer *out, const char *name, const char *labels, double value)
{
    if (labels && *labels)
        evbuffer_add_printf(out, "%s{%s} %.17g\n", name, labels, value);
    else
        evbuffer_add_printf(out, "%s %.17g\n", name, value);
}

void metrics_write_header(struct evbuffer *out, const char *name, const char *type,
                          const char *help)
{
    evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void metrics_write(struct evbuffer *out, const char *name, const char *type, const char *help,
                   const char *labels, double value)
{
    metrics_write_header(out, name, type, help);
    metrics_write_sample(out, name, labels, value);
}

/* Sums one histogram over the workers and writes it. */
static void render_histogram(struct evbuffer *out, const char *name, const char *help,
                             size_t offset)
{
    uint64_t b[N_BUCKETS + 1] = {0}, count = 0, sum_ns = 0, cum = 0;

    for (unsigned w = 0; w < n_workers; w++) {
        const struct histogram *h = (const struct histogram *)((const char *)&workers[w] + offset);
        for (size_t i = 0; i <= N_BUCKETS; i++)
            b[i] += get(&h->bucket[i]);
        count += get(&h->count);
        sum_ns += get(&h->sum_ns);
    }
    metrics_write_header(out, name, "histogram", help);
    for (size_t i = 0; i < N_BUCKETS; i++) {
        cum += b[i];
        evbuffer_add_printf(out, "%s_bucket{le=\"%g\"} %llu\n", name, bucket_le[i],
                            (unsigned long long)cum);
    }
    cum += b[N_BUCKETS];
    evbuffer_add_printf(out, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    evbuffer_add_printf(out, "%s_sum %.9f\n%s_count %llu\n", name, (double)sum_ns / 1e9, name,
                        (unsigned long long)count);
}

/* The per-step upstream histograms, merged over the workers by step. */
static void render_step_histograms(struct evbuffer *out, const char *name, const char *help)
{
    struct acc {
        char step[METRICS_STEP_MAX];
        uint64_t b[N_BUCKETS + 1], count, sum_ns;
    } *a = NULL;
    size_t n = 0, cap = 0;

    for (unsigned w = 0; w < n_workers; w++) {
        struct metrics_worker *mw = &workers[w];
        pthread_mutex_lock(&mw->insert_lock);
        for (size_t i = 0; i < METRICS_STEP_HISTOGRAMS; i++) {
            const struct step_histogram *s = &mw->upstream[i];
            size_t j;
            if (!atomic_load_explicit(&s->used, memory_order_acquire))
                continue;
            for (j = 0; j < n && strcmp(a[j].step, s->step) != 0; j++)
                ;
            if (j == n) {
                if (n == cap) {
                    cap = cap ? cap * 2 : 16;
                    a = xrealloc(a, cap * sizeof(*a));
                }
                memset(&a[n], 0, sizeof(a[n]));
                memcpy(a[n].step, s->step, sizeof(a[n].step));
                n++;
            }
            for (size_t k = 0; k <= N_BUCKETS; k++)
                a[j].b[k] += get(&s->h.bucket[k]);
            a[j].count += get(&s->h.count);
            a[j].sum_ns += get(&s->h.sum_ns);
        }
        pthread_mutex_unlock(&mw->insert_lock);
    }
    metrics_write_header(out, name, "histogram", help);
    for (size_t j = 0; j < n; j++) {
        char step[2 * METRICS_STEP_MAX];
        uint64_t cum = 0;
        metrics_label_escape(step, sizeof(step), a[j].step);
        for (size_t i = 0; i < N_BUCKETS; i++) {
            cum += a[j].b[i];
            evbuffer_add_printf(out, "%s_bucket{step=\"%s\",le=\"%g\"} %llu\n", name, step,
                                bucket_le[i], (unsigned long long)cum);
        }
        cum += a[j].b[N_BUCKETS];
        evbuffer_add_printf(out, "%s_bucket{step=\"%s\",le=\"+Inf\"} %llu\n", name, step,
                            (unsigned long long)cum);
        evbuffer_add_printf(out, "%s_sum{step=\"%s\"} %.9f\n%s_count{step=\"%s\"} %llu\n", name,
                            step, (double)a[j].sum_ns / 1e9, name, step,
                            (unsigned long long)a[j].count);
    }
    free(a);
}

/*
 * The process metrics Prometheus' client libraries export under these names
 * (from /proc/self, Linux): CPU seconds, resident memory, open and maximum
 * descriptors, start time. Read at scrape time on the admin thread.
 */
static void render_process(struct evbuffer *out)
{
    long tck = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    unsigned long long utime = 0, stime = 0, start = 0, rss = 0, btime = 0;
    char buf[1024], *p;
    FILE *f;
    size_t n;
    struct rlimit rl;
    DIR *d;

    if (tck <= 0)
        tck = 100;
    if ((f = fopen("/proc/self/stat", "r"))) {
        n = fread(buf, 1, sizeof(buf) - 1, f);
        buf[n] = '\0';
        fclose(f);
        /* after the ")" that ends comm: state is field 3, utime 14, stime 15, starttime 22 */
        if ((p = strrchr(buf, ')')) &&
            sscanf(p + 2,
                   "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d "
                   "%*d %*d %llu",
                   &utime, &stime, &start) == 3) {
            metrics_write(out, "process_cpu_seconds_total", "counter",
                          "Total user and system CPU time spent in seconds.", NULL,
                          (double)(utime + stime) / (double)tck);
        }
    }
    if ((f = fopen("/proc/self/statm", "r"))) {
        if (fscanf(f, "%*u %llu", &rss) == 1)
            metrics_write(out, "process_resident_memory_bytes", "gauge",
                          "Resident memory size in bytes.", NULL, (double)rss * (double)page);
        fclose(f);
    }
    if ((d = opendir("/proc/self/fd"))) {
        long fds = 0;
        struct dirent *e;
        while ((e = readdir(d)))
            fds += e->d_name[0] != '.';
        closedir(d);
        metrics_write(out, "process_open_fds", "gauge", "Number of open file descriptors.", NULL,
                      (double)(fds - 1)); /* the directory's own descriptor */
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        metrics_write(out, "process_max_fds", "gauge", "Maximum number of open file descriptors.",
                      NULL, rl.rlim_cur == RLIM_INFINITY ? 1e18 : (double)rl.rlim_cur);
    if (start && (f = fopen("/proc/stat", "r"))) {
        while (fgets(buf, sizeof(buf), f))
            if (sscanf(buf, "btime %llu", &btime) == 1)
                break;
        fclose(f);
        if (btime)
            metrics_write(out, "process_start_time_seconds", "gauge",
                          "Start time of the process since unix epoch in seconds.", NULL,
                          (double)btime + (double)start / (double)tck);
    }
}

struct merged {
    char step[METRICS_STEP_MAX];
    enum decision decision;
    enum reason reason;
    int status;
    uint64_t count;
};

void metrics_render(struct evbuffer *out)
{
    struct merged *m = NULL;
    size_t n = 0, cap = 0;
    uint64_t refused = 0, up_new = 0, up_reused = 0, hits = 0, misses = 0;

    /* Merge the label sets of every worker (linear merge: a few hundred sets). */
    for (unsigned w = 0; w < n_workers; w++) {
        struct metrics_worker *mw = &workers[w];
        pthread_mutex_lock(&mw->insert_lock);
        for (size_t i = 0; i < METRICS_LABEL_SETS; i++) {
            const struct label_set *s = &mw->sets[i];
            size_t j;
            if (!atomic_load_explicit(&s->used, memory_order_acquire))
                continue;
            for (j = 0; j < n; j++)
                if (m[j].decision == s->decision && m[j].reason == s->reason &&
                    m[j].status == s->status && strcmp(m[j].step, s->step) == 0)
                    break;
            if (j == n) {
                if (n == cap) {
                    cap = cap ? cap * 2 : 64;
                    m = xrealloc(m, cap * sizeof(*m));
                }
                memcpy(m[n].step, s->step, sizeof(m[n].step));
                m[n].decision = s->decision;
                m[n].reason = s->reason;
                m[n].status = s->status;
                m[n].count = 0;
                n++;
            }
            m[j].count += get(&s->count);
        }
        pthread_mutex_unlock(&mw->insert_lock);
        refused += get(&mw->conn_refused);
        up_new += get(&mw->upstream_new);
        up_reused += get(&mw->upstream_reused);
        hits += get(&mw->cache_hits);
        misses += get(&mw->cache_misses);
    }

    metrics_write_header(
        out, "baton_requests_total", "counter",
        "Requests finished, by step policy, decision, reason and HTTP status sent.");
    for (size_t i = 0; i < n; i++) {
        char step[2 * METRICS_STEP_MAX];
        metrics_label_escape(step, sizeof(step), m[i].step);
        evbuffer_add_printf(out,
                            "baton_requests_total{step=\"%s\",decision=\"%s\",reason=\"%s\","
                            "status=\"%d\"} %llu\n",
                            step, decision_name(m[i].decision), reason_code(m[i].reason),
                            m[i].status, (unsigned long long)m[i].count);
    }
    free(m);

    render_histogram(out, "baton_request_duration_seconds",
                     "Whole request, first header byte to last response byte.",
                     offsetof(struct metrics_worker, request));
    render_step_histograms(out, "baton_upstream_duration_seconds",
                           "Upstream exchange, request forwarded to last response byte, by step.");
    metrics_write(out, "baton_open_connections", "gauge", "Client connections open now.", NULL,
                  (double)metrics_conn_open_now());
    metrics_write(out, "baton_connections_refused_total", "counter",
                  "Client connections closed at accept because of max_connections.", NULL,
                  (double)refused);
    metrics_write_header(
        out, "baton_upstream_connections_total", "counter",
        "Upstream connections used, by whether the keep-alive pool supplied them.");
    metrics_write_sample(out, "baton_upstream_connections_total", "pool=\"new\"", (double)up_new);
    metrics_write_sample(out, "baton_upstream_connections_total", "pool=\"reused\"",
                         (double)up_reused);
    metrics_write_header(
        out, "baton_token_verifications_total", "counter",
        "Bearer tokens authenticated, by whether the verified-token cache answered.");
    metrics_write_sample(out, "baton_token_verifications_total", "cache=\"hit\"", (double)hits);
    metrics_write_sample(out, "baton_token_verifications_total", "cache=\"miss\"", (double)misses);
    render_process(out);
    {
        char labels[400];
        snprintf(labels, sizeof(labels), "version=\"%s\",openssl=\"%s\",libevent=\"%s\"",
                 METRICS_VERSION, OpenSSL_version(OPENSSL_VERSION_STRING), event_get_version());
        metrics_write(out, "baton_build_info", "gauge",
                      "Always 1: the version baton was built as and the libraries it runs on.",
                      labels, 1);
    }
}
