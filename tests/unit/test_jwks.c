/*
 * Unit tests of jwks.c, end to end against the loopback identity-provider
 * stand-ins of tests/e2e/idp.py (spawned as `idp.py serve`, driven through
 * their control port): the real background event_base runs on its own
 * thread, exactly as in the server, with one jwks over ten issuers that each
 * exercise one behaviour at the same time:
 *   discovery + key-id miss rotation, schedule-driven rotation and removal,
 *   Cache-Control clamped to refresh_max_s and to refresh_min_s, an issuer
 *   going down (cached keys keep working, backoff between retries, recovery),
 *   one down from the start (never loaded: fails closed), a discovery issuer
 *   mismatch, a random-kid flood (bounded fetches), a jwks_file, and plain
 *   http without allow_http. Then the CLI path: jwks_load_sync (with a hung
 *   issuer bounded by fetch_timeout_ms) and jwks_inherit.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <jansson.h>

#include "config.h"
#include "http_client.h"
#include "jwks.h"
#include "jws.h"
#include "util.h"
#include "tap.h"

/* ---- stand-in processes ------------------------------------------------- */

struct idp {
    pid_t pid;
    int in_fd, out_fd;
    char issuer[256];
    char jwks_uri[320];
    char control[64];
    char kids[4][80];
    int nkids;
};

/* Spawns one idp.py process serving n stand-ins (`--issuer kind:cache-control`
 * each); idp_ready then reads one line per stand-in. idps[0] owns the process. */
static int idp_spawn(struct idp *idps_, int n, const char *const *specs)
{
    const char *src = getenv("BATON_SRCDIR") ? getenv("BATON_SRCDIR") : BATON_SRCDIR;
    char *script = xasprintf("%s/tests/e2e/idp.py", src);
    const char *argv[64];
    int in[2], out[2], a = 0;

    for (int i = 0; i < n; i++) {
        memset(&idps_[i], 0, sizeof(idps_[i]));
        idps_[i].in_fd = idps_[i].out_fd = -1;
    }
    argv[a++] = "python3";
    argv[a++] = script;
    argv[a++] = "serve";
    for (int i = 0; i < n && a < 60; i++) {
        argv[a++] = "--issuer";
        argv[a++] = specs[i];
    }
    argv[a] = NULL;
    if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0) { /* no leak into other children */
        free(script);
        return -1;
    }
    idps_[0].pid = fork();
    if (idps_[0].pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        execv("/usr/bin/python3", (char *const *)argv);
        _exit(127);
    }
    free(script);
    close(in[0]);
    close(out[1]);
    idps_[0].in_fd = in[1]; /* the stand-ins exit when this closes */
    idps_[0].out_fd = out[0];
    return idps_[0].pid < 0 ? -1 : 0;
}

static int idp_ready(struct idp *idps_, int n)
{
    char line[4096];
    int rc = -1, got = 0;
    FILE *f = NULL;

    if (idps_[0].out_fd < 0)
        return -1;
    f = fdopen(idps_[0].out_fd, "r");
    while (f && got < n && fgets(line, sizeof(line), f)) {
        struct idp *p = &idps_[got++];
        json_t *info = json_loads(line, 0, NULL), *kids;
        if (!info)
            goto out;
        snprintf(p->issuer, sizeof(p->issuer), "%s",
                 json_string_value(json_object_get(info, "issuer")));
        snprintf(p->jwks_uri, sizeof(p->jwks_uri), "%s",
                 json_string_value(json_object_get(info, "jwks_uri")));
        snprintf(p->control, sizeof(p->control), "%s",
                 json_string_value(json_object_get(info, "control")));
        kids = json_object_get(info, "kids");
        for (size_t i = 0; i < json_array_size(kids) && i < 4; i++)
            snprintf(p->kids[p->nkids++], sizeof(p->kids[0]), "%s",
                     json_string_value(json_array_get(kids, i)));
        json_decref(info);
    }
    rc = got == n ? 0 : -1;
out:
    if (f)
        fclose(f);
    else
        close(idps_[0].out_fd);
    idps_[0].out_fd = -1;
    return rc;
}

static void idp_stop(struct idp *p)
{
    int st;
    if (p->in_fd >= 0)
        close(p->in_fd);
    p->in_fd = -1;
    if (p->pid <= 0)
        return;
    for (int i = 0; i < 50 && waitpid(p->pid, &st, WNOHANG) == 0; i++)
        usleep(100000);
    if (waitpid(p->pid, &st, WNOHANG) == 0) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, &st, 0);
    }
    p->pid = 0;
}

/* GET <control><path>; returns the JSON answer (owned) or NULL. */
static json_t *ctl(struct idp *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static json_t *ctl(struct idp *p, const char *fmt, ...)
{
    va_list ap;
    char *path, *url;
    struct http_response *r;
    json_t *j = NULL;

    va_start(ap, fmt);
    path = xvasprintf(fmt, ap);
    va_end(ap);
    url = xasprintf("%s%s", p->control, path);
    struct http_request req = {.url = url, .allow_http = true, .timeout_ms = 5000};
    r = http_fetch_sync(&req);
    if (r->error == HTTP_ERR_NONE && r->status == 200)
        j = json_loads(r->body, 0, NULL);
    else
        tap_diag("control %s failed: %s %d", path, r->msg, r->status);
    http_response_free(r);
    free(url);
    free(path);
    return j;
}

/* A control request whose answer is not needed. */
#define ctl_do(p, ...) json_decref(ctl((p), __VA_ARGS__))

/* The public JWKS document of a stand-in (owned string). */
static char *fetch_jwks(struct idp *p)
{
    struct http_request req = {.url = p->jwks_uri, .allow_http = true};
    struct http_response *r = http_fetch_sync(&req);
    char *doc = r->status == 200 ? xstrdup(r->body) : NULL;
    http_response_free(r);
    return doc;
}

static int write_file(const char *path, const char *text)
{
    char *tmp = xasprintf("%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    int rc = -1;
    if (f && fputs(text, f) >= 0 && fclose(f) == 0) {
        f = NULL;
        rc = rename(tmp, path); /* atomic replace, as an operator's deploy would */
    }
    if (f)
        fclose(f);
    free(tmp);
    return rc;
}

/* ---- background loop ---------------------------------------------------- */

static struct event_base *bg;

static void *bg_main(void *arg)
{
    (void)arg;
    event_base_loop(bg, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

/* ---- observations ------------------------------------------------------- */

static struct jwks *J;
static struct authn_keys K;
static struct cfg_issuer iss[16];

static bool has_kid(int i, const char *kid)
{
    struct jws_keyset *ks = K.acquire(K.ctx, &iss[i]);
    bool found = ks && jws_keyset_find(ks, kid, strlen(kid)) != NULL;
    jws_keyset_unref(ks);
    return found;
}

static size_t key_count(int i)
{
    struct jws_keyset *ks = K.acquire(K.ctx, &iss[i]);
    size_t n = ks ? jws_keyset_count(ks) : 0;
    jws_keyset_unref(ks);
    return n;
}

static struct jwks_issuer_stats st(int i)
{
    struct jwks_issuer_stats s;
    memset(&s, 0, sizeof(s));
    jwks_stats(J, (size_t)i, &s);
    return s;
}

#define WAIT_UNTIL(cond, ms)                                   \
    ({                                                         \
        uint64_t until_ = mono_ns() + (uint64_t)(ms)*1000000u; \
        bool r_;                                               \
        while (!(r_ = (cond)) && mono_ns() < until_)           \
            usleep(20000);                                     \
        r_;                                                    \
    })

/* Gaps (seconds) between consecutive request times reported by a stand-in. */
static size_t request_gaps(struct idp *p, const char *which, double *gaps, size_t cap)
{
    json_t *s = ctl(p, "/stats");
    json_t *times = json_object_get(s, which);
    size_t n = 0;
    for (size_t i = 1; i < json_array_size(times) && n < cap; i++)
        gaps[n++] = json_real_value(json_array_get(times, i)) -
                    json_real_value(json_array_get(times, i - 1));
    json_decref(s);
    return n;
}

static long request_count(struct idp *p, const char *which)
{
    json_t *s = ctl(p, "/stats");
    long n = s ? (long)json_integer_value(json_object_get(s, which)) : -1;
    json_decref(s);
    return n;
}

/* ---- flood -------------------------------------------------------------- */

static atomic_bool flood_stop;
static _Atomic uint64_t flood_calls;

static void *flood_main(void *arg)
{
    const struct cfg_issuer *is = arg;
    while (!atomic_load(&flood_stop)) {
        for (int i = 0; i < 100; i++) /* about 100k misses/s per thread */
            K.kid_miss(K.ctx, is);
        atomic_fetch_add(&flood_calls, 100);
        usleep(1000);
    }
    return NULL;
}

/* ---- the scenario ------------------------------------------------------- */

enum {
    I_AWS,
    I_SCHED,
    I_CLAMPMAX,
    I_CLAMPMIN,
    I_DOWN,
    I_NEVER,
    I_MISMATCH,
    I_FLOOD,
    I_FILE,
    I_PLAIN,
    N_ISS
};
enum { P_AWS, P_SCHED, P_CLAMPMAX, P_CLAMPMIN, P_DOWN, P_NEVER, P_MISMATCH, P_FLOOD, N_IDP };

static struct idp idps[N_IDP];
static char jwks_path[128];

static void set_issuer(int i, const char *name, enum cfg_key_source src, const char *issuer,
                       const char *uri_or_file, unsigned min_s, unsigned max_s)
{
    iss[i].name = (char *)name;
    iss[i].issuer = (char *)issuer;
    iss[i].key_source = src;
    if (src == KEYS_JWKS_URI)
        iss[i].jwks_uri = (char *)uri_or_file;
    if (src == KEYS_JWKS_FILE)
        iss[i].jwks_file = (char *)uri_or_file;
    iss[i].allow_http = true;
    iss[i].refresh_min_s = min_s;
    iss[i].refresh_max_s = max_s;
    iss[i].fetch_timeout_ms = 2000;
}

static void check_gaps(struct idp *p, const char *what, double lo, double hi, size_t min_gaps)
{
    double gaps[32];
    size_t n = request_gaps(p, "jwks_times", gaps, 32), bad = 0;
    for (size_t i = 0; i < n; i++)
        if (gaps[i] < lo || gaps[i] > hi) {
            tap_diag("  %s: gap %zu is %.3f s", what, i, gaps[i]);
            bad++;
        }
    ok(n >= min_gaps && bad == 0, "%s: %zu refresh intervals, each within [%.2f, %.2f] s", what, n,
       lo, hi);
}

static void scenario(void)
{
    struct baton_config cfg = {.file = "test-config.json", .issuers = iss, .n_issuers = N_ISS};
    struct http_client *hc;
    char err[200] = "";
    pthread_t bg_thread, flood[2];
    char *doc;
    uint64_t g0, g1, g2;

    hc = http_client_new(bg, err, sizeof(err));
    ok(hc != NULL, "http client on the background base (%s)", err);

    /* a file source, first with the AWS stand-in's keys, later the Cognito one's */
    doc = fetch_jwks(&idps[P_AWS]);
    ok(doc && write_file(jwks_path, doc) == 0, "write the jwks_file");
    free(doc);
    char *cognito_doc = fetch_jwks(&idps[P_CLAMPMAX]);
    ctl_do(&idps[P_AWS], "/reset");
    ctl_do(&idps[P_CLAMPMAX], "/reset");

    set_issuer(I_AWS, "aws", KEYS_DISCOVERY, idps[P_AWS].issuer, NULL, 1, 3600);
    set_issuer(I_SCHED, "sched", KEYS_DISCOVERY, idps[P_SCHED].issuer, NULL, 1, 60);
    set_issuer(I_CLAMPMAX, "clampmax", KEYS_JWKS_URI, idps[P_CLAMPMAX].issuer,
               idps[P_CLAMPMAX].jwks_uri, 1, 2);
    set_issuer(I_CLAMPMIN, "clampmin", KEYS_JWKS_URI, idps[P_CLAMPMIN].issuer,
               idps[P_CLAMPMIN].jwks_uri, 2, 60);
    set_issuer(I_DOWN, "down", KEYS_DISCOVERY, idps[P_DOWN].issuer, NULL, 2, 3600);
    set_issuer(I_NEVER, "never", KEYS_DISCOVERY, idps[P_NEVER].issuer, NULL, 2, 3600);
    set_issuer(I_MISMATCH, "mismatch", KEYS_DISCOVERY, idps[P_MISMATCH].issuer, NULL, 2, 3600);
    set_issuer(I_FLOOD, "flood", KEYS_DISCOVERY, idps[P_FLOOD].issuer, NULL, 2, 3600);
    set_issuer(I_FILE, "file", KEYS_JWKS_FILE, "https://file.example", jwks_path, 1, 60);
    set_issuer(I_PLAIN, "plain", KEYS_DISCOVERY, idps[P_AWS].issuer, NULL, 2, 3600);
    iss[I_PLAIN].allow_http = false;

    ctl_do(&idps[P_NEVER], "/mode?m=%s", "error");
    ctl_do(&idps[P_MISMATCH], "/discovery_issuer?v=%s", "http://127.0.0.1:1/someone-else");

    J = jwks_new(bg, hc, &cfg);
    K = jwks_authn_keys(J);
    jwks_set_retry_base_ms(J, 50);
    is_int(jwks_issuer_count(J), N_ISS, "one source per configured issuer");
    ok(!jwks_ready(J), "not ready before the first fetch");
    ok(K.acquire(K.ctx, &iss[I_AWS]) == NULL, "acquire before any fetch is NULL (fails closed)");
    is_int(K.generation(K.ctx, &iss[I_AWS]), 0, "generation 0 before any fetch");

    /* jwks.h: jwks_start runs before the background loop runs this jwks' events */
    uint64_t t0 = mono_ns();
    is_int(jwks_start(J), 0, "jwks_start");
    pthread_create(&bg_thread, NULL, bg_main, NULL);

    /* 1. first load */
    bool loaded = WAIT_UNTIL(st(I_AWS).loaded && st(I_SCHED).loaded && st(I_CLAMPMAX).loaded &&
                                 st(I_CLAMPMIN).loaded && st(I_DOWN).loaded && st(I_FLOOD).loaded &&
                                 st(I_FILE).loaded,
                             5000);
    ok(loaded, "every reachable issuer loads within 5 s (%.0f ms)", (double)(mono_ns() - t0) / 1e6);
    is_int(key_count(I_AWS), 2, "AWS stand-in: two keys (ES384 and RS256) through discovery");
    ok(has_kid(I_AWS, idps[P_AWS].kids[0]) && has_kid(I_AWS, idps[P_AWS].kids[1]),
       "AWS stand-in: both published kids are found");
    ok(!has_kid(I_AWS, idps[P_SCHED].kids[0]), "a kid of another issuer is not found in this one");
    is_int(key_count(I_CLAMPMAX), 1, "Cognito stand-in: one RS256 key through jwks_uri");
    ok(has_kid(I_FILE, idps[P_AWS].kids[0]), "jwks_file: the file's kid is found");
    ok(WAIT_UNTIL(st(I_NEVER).fetch_failed >= 1 && st(I_MISMATCH).fetch_failed >= 1 &&
                      st(I_PLAIN).fetch_failed >= 1,
                  3000),
       "the three broken issuers have failed at least once");
    ok(!jwks_ready(J), "not ready while an issuer never loaded");
    ok(K.acquire(K.ctx, &iss[I_NEVER]) == NULL && K.generation(K.ctx, &iss[I_NEVER]) == 0,
       "never-loaded issuer (503): acquire NULL, generation 0");
    ok(strstr(st(I_NEVER).last_error, "503") != NULL,
       "never-loaded issuer: the error names the status (%s)", st(I_NEVER).last_error);
    ok(K.acquire(K.ctx, &iss[I_MISMATCH]) == NULL, "discovery issuer mismatch: no keys");
    ok(strstr(st(I_MISMATCH).last_error, "names issuer") != NULL,
       "discovery issuer mismatch: rejected with a reason (%s)", st(I_MISMATCH).last_error);
    ok(K.acquire(K.ctx, &iss[I_PLAIN]) == NULL && strstr(st(I_PLAIN).last_error, "refused"),
       "plain http without allow_http: refused, no keys (%s)", st(I_PLAIN).last_error);
    is_int(request_count(&idps[P_AWS], "discovery"), 1,
           "one discovery fetch at the AWS stand-in (the plain-http issuer never connected)");
    is_int(request_count(&idps[P_AWS], "jwks"), 1, "one JWKS fetch at the AWS stand-in");
    {
        struct cfg_issuer copy = iss[I_AWS]; /* another copy of the config: found by name */
        struct jws_keyset *ks = K.acquire(K.ctx, &copy);
        ok(ks != NULL, "an issuer struct from another config copy is looked up by name");
        jws_keyset_unref(ks);
    }

    /* 2. start the flood and the outage, which then run alongside */
    ctl_do(&idps[P_FLOOD], "/reset");
    ctl_do(&idps[P_DOWN], "/reset");
    ctl_do(&idps[P_DOWN], "/mode?m=%s", "error");
    uint64_t down_t = mono_ns();
    atomic_store(&flood_stop, false);
    uint64_t flood_t = mono_ns();
    for (int i = 0; i < 2; i++)
        pthread_create(&flood[i], NULL, flood_main, &iss[I_FLOOD]);

    /* 3. rotation through an unknown kid */
    g0 = K.generation(K.ctx, &iss[I_AWS]);
    json_t *rot = ctl(&idps[P_AWS], "/rotate?alg=%s", "ES256");
    char newkid[80];
    snprintf(newkid, sizeof(newkid), "%s", json_string_value(json_object_get(rot, "kid")));
    json_decref(rot);
    ok(!has_kid(I_AWS, newkid), "a freshly rotated key is not known before a refresh");
    K.kid_miss(K.ctx, &iss[I_AWS]);
    ok(WAIT_UNTIL(has_kid(I_AWS, newkid), 3000),
       "an unknown kid triggers a refresh that finds the new key");
    g1 = K.generation(K.ctx, &iss[I_AWS]);
    ok(g1 > g0, "the generation increases when a key appears (%llu -> %llu)",
       (unsigned long long)g0, (unsigned long long)g1);
    ok(has_kid(I_AWS, idps[P_AWS].kids[0]), "the old key stays while it is still published");
    ok(st(I_AWS).kid_miss_refreshes >= 1, "the refresh is counted as caused by a kid miss");
    ctl_do(&idps[P_AWS], "/remove?kid=%s", idps[P_AWS].kids[0]);
    K.kid_miss(K.ctx, &iss[I_AWS]);
    ok(WAIT_UNTIL(!has_kid(I_AWS, idps[P_AWS].kids[0]), 3000),
       "a key removed from the JWKS is no longer found after the next refresh");
    g2 = K.generation(K.ctx, &iss[I_AWS]);
    ok(g2 > g1, "the generation increases when a key disappears");
    ok(has_kid(I_AWS, newkid) && has_kid(I_AWS, idps[P_AWS].kids[1]),
       "the remaining keys are still found");

    /* 4. rotation through the schedule (max-age=1 within [1, 60]) */
    uint64_t gs = K.generation(K.ctx, &iss[I_SCHED]);
    ctl_do(&idps[P_SCHED], "/remove?kid=%s", idps[P_SCHED].kids[0]);
    ok(WAIT_UNTIL(!has_kid(I_SCHED, idps[P_SCHED].kids[0]), 3000),
       "schedule: a removed key disappears within max-age without any trigger");
    uint64_t gs2 = K.generation(K.ctx, &iss[I_SCHED]);
    uint64_t ok_before = st(I_SCHED).fetch_ok;
    ok(gs2 > gs, "schedule: the generation increased on removal");
    usleep(2300000);
    ok(K.generation(K.ctx, &iss[I_SCHED]) == gs2 && st(I_SCHED).fetch_ok >= ok_before + 1,
       "an unchanged document keeps the generation (%llu refreshes since)",
       (unsigned long long)(st(I_SCHED).fetch_ok - ok_before));

    /* 5. the flood: at most one refresh per refresh_min_s (2 s) */
    atomic_store(&flood_stop, true);
    for (int i = 0; i < 2; i++)
        pthread_join(flood[i], NULL);
    double flood_s = (double)(mono_ns() - flood_t) / 1e9;
    long flood_jwks = request_count(&idps[P_FLOOD], "jwks");
    long flood_disc = request_count(&idps[P_FLOOD], "discovery");
    long bound = (long)(flood_s / 2.0) + 2;
    struct jwks_issuer_stats fs = st(I_FLOOD);
    ok(flood_jwks >= 1 && flood_jwks <= bound,
       "random-kid flood: %llu kid misses in %.1f s cost %ld JWKS fetches (bound %ld)",
       (unsigned long long)atomic_load(&flood_calls), flood_s, flood_jwks, bound);
    ok(flood_disc <= bound, "random-kid flood: %ld discovery fetches (bound %ld)", flood_disc,
       bound);
    is_int(fs.kid_miss, atomic_load(&flood_calls), "every kid miss is counted");
    ok(fs.kid_miss_limited + fs.kid_miss_refreshes <= fs.kid_miss &&
           fs.kid_miss_limited > fs.kid_miss / 2,
       "most kid misses are absorbed by the limit (%llu limited)",
       (unsigned long long)fs.kid_miss_limited);

    /* 6. the outage: cached keys keep working, retries back off */
    double down_s = (double)(mono_ns() - down_t) / 1e9;
    struct jwks_issuer_stats ds = st(I_DOWN);
    ok(has_kid(I_DOWN, idps[P_DOWN].kids[0]),
       "issuer down for %.1f s: its cached keys keep working", down_s);
    ok(ds.loaded && ds.consecutive_failures >= 3 && strstr(ds.last_error, "503"),
       "issuer down: %u consecutive failures recorded (%s)", ds.consecutive_failures,
       ds.last_error);
    {
        double gaps[32];
        size_t n = request_gaps(&idps[P_DOWN], "discovery_times", gaps, 32);
        double maxgap = 0, mingap = 1e9;
        for (size_t i = 0; i < n; i++) {
            maxgap = gaps[i] > maxgap ? gaps[i] : maxgap;
            mingap = gaps[i] < mingap ? gaps[i] : mingap;
        }
        ok(n >= 3 && n <= 16, "issuer down: %zu retries in %.1f s (bounded)", n, down_s);
        ok(n >= 3 && maxgap >= 3 * mingap,
           "issuer down: retries back off (shortest gap %.3f s, longest %.3f s)", mingap, maxgap);
        ok(maxgap <= 3.0, "issuer down: no retry gap much over refresh_min_s = 2 s (max %.3f s)",
           maxgap);
    }
    ctl_do(&idps[P_DOWN], "/mode?m=%s", "up");
    ok(WAIT_UNTIL(st(I_DOWN).consecutive_failures == 0, 4000),
       "issuer back up: the next retry succeeds");
    is_str(st(I_DOWN).last_error, "", "issuer back up: the error is cleared");

    /* 7. the file changes, then breaks */
    uint64_t gf = K.generation(K.ctx, &iss[I_FILE]);
    ok(cognito_doc && write_file(jwks_path, cognito_doc) == 0, "replace the jwks_file");
    free(cognito_doc);
    ok(WAIT_UNTIL(has_kid(I_FILE, idps[P_CLAMPMAX].kids[0]), 3000),
       "jwks_file: the new file's key is found");
    ok(!has_kid(I_FILE, idps[P_AWS].kids[0]) && K.generation(K.ctx, &iss[I_FILE]) > gf,
       "jwks_file: the old key is gone and the generation increased");
    uint64_t failed_before = st(I_FILE).fetch_failed;
    ok(write_file(jwks_path, "{\"keys\": [ broken") == 0, "break the jwks_file");
    bool failed = WAIT_UNTIL(st(I_FILE).fetch_failed > failed_before, 3000);
    ok(failed, "jwks_file: a broken file is a failed refresh (%s)", st(I_FILE).last_error);
    ok(has_kid(I_FILE, idps[P_CLAMPMAX].kids[0]), "jwks_file: the last good keys are kept");
    ok(write_file(jwks_path, "{\"keys\": []}") == 0, "empty the jwks_file");
    failed_before = st(I_FILE).fetch_failed;
    ok(WAIT_UNTIL(st(I_FILE).empty_sets == 1, 3000),
       "jwks_file: an empty set is published and counted");
    ok(!has_kid(I_FILE, idps[P_CLAMPMAX].kids[0]) && st(I_FILE).keys == 0 &&
           st(I_FILE).fetch_failed == failed_before && st(I_FILE).last_error[0] == '\0',
       "jwks_file: a set without usable keys revokes the old keys; not a failed fetch");

    /* 8. Cache-Control within bounds, measured at the stand-ins */
    /* lower bounds are the contract; upper bounds leave room for a loaded machine */
    check_gaps(&idps[P_CLAMPMAX], "max-age=3600 clamped to refresh_max_s=2", 1.75, 3.0, 2);
    check_gaps(&idps[P_CLAMPMIN], "no-cache raised to refresh_min_s=2", 1.95, 3.0, 2);
    check_gaps(&idps[P_SCHED], "max-age=1 within [1, 60] honoured", 0.85, 2.0, 4);
    {
        struct jwks_issuer_stats cs = st(I_CLAMPMAX);
        int64_t ahead = cs.next_refresh_ms - now_ms();
        ok(cs.next_refresh_ms > 0 && ahead <= 2100,
           "next_refresh_ms is set and within refresh_max_s (%lld ms)", (long long)ahead);
    }
    ok(!jwks_ready(J), "still not ready: three issuers never loaded");

    event_base_loopexit(bg, NULL);
    pthread_join(bg_thread, NULL);
    jwks_free(J);
    J = NULL;
    http_client_free(hc);
}

/* ---- CLI path: jwks_load_sync, jwks_inherit ----------------------------- */

static void test_sync(void)
{
    struct cfg_issuer s_iss[3];
    struct baton_config cfg = {.file = "cli.json", .issuers = s_iss, .n_issuers = 3};
    struct diags d = DIAGS_INIT;
    struct jwks *j, *j2;
    struct authn_keys k;
    struct jws_keyset *ks;

    memset(s_iss, 0, sizeof(s_iss));
    s_iss[0] = iss[I_AWS];
    s_iss[1] = iss[I_NEVER];
    s_iss[2] = iss[I_MISMATCH];
    s_iss[2].name = "hung";
    s_iss[2].fetch_timeout_ms = 500;
    ctl_do(&idps[P_MISMATCH], "/mode?m=%s", "hang");

    j = jwks_new(NULL, NULL, &cfg);
    k = jwks_authn_keys(j);
    is_int(jwks_start(j), -1, "jwks_start without a background base fails");
    uint64_t t0 = mono_ns();
    int rc = jwks_load_sync(j, &d);
    double ms = (double)(mono_ns() - t0) / 1e6;
    is_int(rc, -1, "jwks_load_sync reports the issuers that did not load");
    is_int(d.n, 2, "one diagnostic per failed issuer");
    ok(d.n >= 1 && strstr(d.v[0].msg, "never") && strstr(d.v[0].msg, "503"),
       "diagnostic names the issuer and cause (%s)", d.n ? d.v[0].msg : "");
    ok(d.n >= 2 && strstr(d.v[1].msg, "hung") && strstr(d.v[1].msg, "timeout"),
       "a hung issuer fails by its fetch_timeout_ms (%s)", d.n >= 2 ? d.v[1].msg : "");
    ok(ms < 1500, "jwks_load_sync is bounded by the fetch timeouts (%.0f ms)", ms);
    ks = k.acquire(k.ctx, &s_iss[0]);
    ok(ks && jws_keyset_count(ks) == 2, "the issuer that loaded is usable after jwks_load_sync");
    jws_keyset_unref(ks);
    ok(!jwks_ready(j), "not ready with failed issuers");
    diags_free(&d);

    j2 = jwks_new(NULL, NULL, &cfg);
    jwks_inherit(j2, j);
    struct authn_keys k2 = jwks_authn_keys(j2);
    ks = k2.acquire(k2.ctx, &s_iss[0]);
    ok(ks && jws_keyset_count(ks) == 2, "jwks_inherit: the new jwks serves the old keys at once");
    jws_keyset_unref(ks);
    ok(k2.generation(k2.ctx, &s_iss[0]) != 0 &&
           k2.generation(k2.ctx, &s_iss[0]) != k.generation(k.ctx, &s_iss[0]),
       "jwks_inherit: a fresh generation, distinct from the old one");
    ok(k2.acquire(k2.ctx, &s_iss[1]) == NULL,
       "jwks_inherit: never-loaded issuers stay without keys");
    jwks_free(j2);
    jwks_free(j);
}

int main(void)
{
    static const char *const spec[N_IDP] = {
        /* RSA key generation is slow: only the two that matter get RSA keys */
        [P_AWS] = "aws:public, max-age=3600",    [P_SCHED] = "aws:max-age=1:ES256,ES384",
        [P_CLAMPMAX] = "cognito:max-age=3600",   [P_CLAMPMIN] = "cognito:no-cache:ES256",
        [P_DOWN] = "aws:max-age=1:ES256",        [P_NEVER] = "aws:max-age=3600:ES256",
        [P_MISMATCH] = "aws:max-age=3600:ES256", [P_FLOOD] = "aws:max-age=3600:ES256",
    };
    int started;

    signal(SIGPIPE, SIG_IGN);
    evthread_use_pthreads();
    snprintf(jwks_path, sizeof(jwks_path), "/tmp/baton-jwks-test-%d.json", (int)getpid());
    started = idp_spawn(idps, N_IDP, spec) == 0 && idp_ready(idps, N_IDP) == 0;
    ok(started, "start %d identity-provider stand-ins (tests/e2e/idp.py)", N_IDP);
    bg = event_base_new();
    if (started && bg) {
        scenario();
        test_sync();
    }
    idp_stop(&idps[0]);
    if (bg)
        event_base_free(bg);
    unlink(jwks_path);
    return tap_done();
}
