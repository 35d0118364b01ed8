/*
 * audit_witness.c: the audit witness (audit_witness.h, docs/audit.md "Witness").
 *
 * One thread runs a private event_base. Producers append to a mutex-guarded
 * FIFO and write an eventfd; the loop takes records from its head and
 * witnesses them, in seq order, one at a time in a directory and up to
 * AUDIT_WITNESS_INFLIGHT at once in a bucket (an upload takes tens of ms; a
 * busy instance writes several checkpoints a second):
 *  - directory: mkdir <dir>/<log id>, open(O_CREAT|O_EXCL, 0440), write,
 *    fsync the file and the directory. EEXIST: read the object back and
 *    compare.
 *  - bucket: baton's access token (google.c, cached there), then
 *    POST {storage_url}/upload/storage/v1/b/BUCKET/o?uploadType=media
 *    &name=PREFIX/LOG/SEQ.json&ifGenerationMatch=0 with the line as body.
 *    200: created. 412 (the precondition failed: the name exists, e.g. our
 *    own earlier attempt whose answer was lost): GET the object
 *    (alt=media) and compare; equal counts as witnessed, different (or not
 *    readable: the service account may hold objectCreator only) is logged as
 *    an error and counted as a conflict, and the record is not retried (the
 *    object must never be overwritten). 401 drops the cached token. Every
 *    other outcome (transport error, 403, 429, 5xx, ...) is a failure:
 *    counted, logged at most every 10 s, retried after a backoff.
 * Nothing here touches the audit file or the request path.
 */
#include "audit_witness.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "google.h"
#include "http_client.h"
#include "identity.h"
#include "list.h"
#include "log.h"
#include "util.h"

#define WITNESS_LOG_EVERY_NS 10000000000ull /* failures: one log line per 10 s */

struct audit_witness;

struct witem {
    struct witem *next;   /* in the queue */
    struct list inflight; /* on w->inflight while an attempt is under way */
    struct audit_witness *w;
    char name[64]; /* <log>/<seq>.json */
    char *line;    /* owned, newline included */
    size_t len;
    struct http_call *call; /* the upload or read-back in flight, or NULL */
    char *token;            /* the access token of this attempt, owned */
};

struct audit_witness {
    /* configuration, immutable */
    char *dir;         /* directory witness, or NULL */
    char *bucket;      /* bucket witness, or NULL */
    char *prefix;      /* "" or "a/b" */
    char *storage_url; /* no trailing slash */

    /* the queue, under mu */
    pthread_mutex_t mu;
    struct witem *head, **tail;
    size_t n;
    bool stopping;
    uint64_t stop_deadline_ns;

    /* counters */
    _Atomic uint64_t written, existing, conflicts, failures, dropped;

    /* the witness thread */
    pthread_t thread;
    bool thread_started;
    int wake_fd;
    struct event_base *base;
    struct http_client *http;
    struct identity_source src; /* bucket: baton's access token; src.ctx NULL: none */
    struct event *wake_ev, *retry_ev, *deadline_ev;
    struct list inflight; /* of witem.inflight: attempts under way (taken off the queue) */
    size_t n_inflight, max_inflight;
    bool waiting_retry; /* the retry timer is armed: no new attempt until it fires */
    bool in_next;       /* next() is running: done() need not call it (no recursion) */
    unsigned backoff_ms;
    uint64_t last_log_ns;
};

void audit_witness_name(char out[64], const char *log_id, uint64_t seq)
{
    snprintf(out, 64, "%.32s/%020" PRIu64 ".json", log_id, seq);
}

static void item_free(struct witem *it)
{
    if (!it)
        return;
    free(it->line);
    free(it->token);
    free(it);
}

static void wake(struct audit_witness *w)
{
    uint64_t one = 1;
    (void)!write(w->wake_fd, &one, sizeof(one));
}

void audit_witness_put(struct audit_witness *w, const char *log_id, uint64_t seq, const char *line,
                       size_t len)
{
    struct witem *it;
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    if (w->n >= AUDIT_WITNESS_QUEUE) {
        pthread_mutex_unlock(&w->mu);
        w->dropped++;
        log_msg(LOG_ERROR,
                "audit witness: queue full (%d records): record %s seq %" PRIu64
                " is not witnessed",
                AUDIT_WITNESS_QUEUE, log_id, seq);
        return;
    }
    it = xcalloc(1, sizeof(*it));
    list_init(&it->inflight);
    it->w = w;
    audit_witness_name(it->name, log_id, seq);
    it->line = xmalloc(len + 1);
    memcpy(it->line, line, len);
    it->line[len] = '\n';
    it->len = len + 1;
    *w->tail = it;
    w->tail = &it->next;
    w->n++;
    pthread_mutex_unlock(&w->mu);
    wake(w);
}

void audit_witness_stats(struct audit_witness *w, struct audit_witness_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (!w)
        return;
    out->written = w->written;
    out->existing = w->existing;
    out->conflicts = w->conflicts;
    out->failures = w->failures;
    out->dropped = w->dropped;
    pthread_mutex_lock(&w->mu);
    out->pending = w->n;
    pthread_mutex_unlock(&w->mu);
}

/* ------------------------------------------------------------ outcomes */

static void next(struct audit_witness *w);

/* Takes `it` off the attempts in flight. */
static void inflight_del(struct audit_witness *w, struct witem *it)
{
    if (list_linked(&it->inflight)) {
        list_remove(&it->inflight);
        w->n_inflight--;
    }
    it->call = NULL;
}

/* `it` is done with (witnessed, or a conflict that retrying cannot fix). */
static void done(struct witem *it)
{
    struct audit_witness *w = it->w;
    inflight_del(w, it);
    pthread_mutex_lock(&w->mu);
    w->n--;
    pthread_mutex_unlock(&w->mu);
    item_free(it);
    w->backoff_ms = 0;
    if (!w->in_next)
        next(w);
}

static void conflict(struct witem *it, const char *why)
{
    struct audit_witness *w = it->w;
    w->conflicts++;
    log_msg(LOG_ERROR,
            "audit witness: %s%s%s already exists and %s; it is left as it is "
            "(check the log with baton audit verify --witness)",
            w->bucket ? w->prefix : w->dir, *(w->bucket ? w->prefix : w->dir) ? "/" : "", it->name,
            why);
    done(it);
}

/* A failed attempt: counted, logged now and then; the record goes back to
 * the head of the queue and nothing new starts until the backoff passed. */
static void failed(struct witem *it, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void failed(struct witem *it, const char *fmt, ...)
{
    struct audit_witness *w = it->w;
    char msg[512];
    va_list ap;
    uint64_t now = mono_ns();
    struct timeval tv;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    inflight_del(w, it);
    pthread_mutex_lock(&w->mu);
    it->next = w->head;
    w->head = it;
    if (!it->next)
        w->tail = &it->next;
    pthread_mutex_unlock(&w->mu);
    w->failures++;
    if (!w->waiting_retry) {
        w->backoff_ms = w->backoff_ms ? w->backoff_ms * 2 : AUDIT_WITNESS_BACKOFF_MIN_MS;
        if (w->backoff_ms > AUDIT_WITNESS_BACKOFF_MAX_MS)
            w->backoff_ms = AUDIT_WITNESS_BACKOFF_MAX_MS;
        w->waiting_retry = true;
        tv.tv_sec = w->backoff_ms / 1000;
        tv.tv_usec = (w->backoff_ms % 1000) * 1000;
        evtimer_add(w->retry_ev, &tv);
    }
    if (!w->last_log_ns || now - w->last_log_ns >= WITNESS_LOG_EVERY_NS) {
        w->last_log_ns = now;
        log_msg(LOG_ERROR, "audit witness: %s: %s; retrying in %u ms (%" PRIu64 " failures so far)",
                it->name, msg, w->backoff_ms, (uint64_t)w->failures);
    }
}

/* ------------------------------------------------------------ directory */

static int read_back(int dfd, const char *leaf, const struct witem *it, bool *equal)
{
    char *buf = xmalloc(it->len + 1);
    int fd = openat(dfd, leaf, O_RDONLY | O_CLOEXEC);
    ssize_t n = -1;
    if (fd >= 0) {
        n = pread(fd, buf, it->len + 1, 0);
        close(fd);
    }
    *equal = n >= 0 && (size_t)n == it->len && !memcmp(buf, it->line, it->len);
    free(buf);
    return n < 0 ? -1 : 0;
}

static void dir_attempt(struct audit_witness *w, struct witem *it)
{
    char sub[40], *subpath = NULL;
    const char *leaf = strchr(it->name, '/') + 1;
    int dfd = -1, fd = -1;
    size_t off = 0;
    bool created_dir = false, equal = false;

    snprintf(sub, sizeof(sub), "%.*s", (int)(leaf - it->name - 1), it->name);
    subpath = xasprintf("%s/%s", w->dir, sub);
    if (mkdir(subpath, 0750) == 0)
        created_dir = true;
    else if (errno != EEXIST) {
        failed(it, "mkdir %s: %s", subpath, strerror(errno));
        goto out;
    }
    if (created_dir) {
        int pfd = open(w->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (pfd >= 0) {
            (void)fsync(pfd);
            close(pfd);
        }
    }
    dfd = open(subpath, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        failed(it, "open %s: %s", subpath, strerror(errno));
        goto out;
    }
    fd = openat(dfd, leaf, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0440);
    if (fd < 0 && errno == EEXIST) {
        if (read_back(dfd, leaf, it, &equal) != 0) {
            failed(it, "reading the existing object back: %s", strerror(errno));
        } else if (equal) {
            w->existing++;
            done(it);
        } else {
            conflict(it, "holds another record");
        }
        goto out;
    }
    if (fd < 0) {
        failed(it, "create %s/%s: %s", subpath, leaf, strerror(errno));
        goto out;
    }
    while (off < it->len) {
        ssize_t n = write(fd, it->line + off, it->len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    if (off < it->len || fsync(fd) != 0 || fsync(dfd) != 0) {
        int e = errno;
        /* a partial object would be a conflict forever: remove what we created */
        (void)unlinkat(dfd, leaf, 0);
        failed(it, "write %s/%s: %s", subpath, leaf, strerror(e ? e : EIO));
        goto out;
    }
    w->written++;
    done(it);
out:
    if (fd >= 0)
        close(fd);
    if (dfd >= 0)
        close(dfd);
    free(subpath);
}

/* ------------------------------------------------------------ bucket */

static char *object_name(const struct audit_witness *w, const struct witem *it)
{
    char *full = *w->prefix ? xasprintf("%s/%s", w->prefix, it->name) : xstrdup(it->name);
    char *enc = google_form_encode(full); /* names hold [A-Za-z0-9._/-]: '/' -> %2F */
    free(full);
    return enc;
}

static void on_get(struct http_response *resp, void *arg)
{
    struct witem *it = arg;
    struct audit_witness *w = it->w;

    it->call = NULL;
    if (resp->error == HTTP_ERR_NONE && resp->status == 200) {
        if (resp->body_len == it->len && !memcmp(resp->body, it->line, it->len)) {
            w->existing++;
            done(it);
        } else {
            conflict(it, "holds another record");
        }
    } else if (resp->error == HTTP_ERR_NONE && (resp->status == 403 || resp->status == 404)) {
        conflict(it, resp->status == 403
                         ? "cannot be read back to compare (HTTP 403: the service account "
                           "holds no storage.objects.get; grant roles/storage.objectViewer to "
                           "let baton compare)"
                         : "vanished while being compared (HTTP 404)");
    } else if (resp->error == HTTP_ERR_NONE) {
        if (resp->status == 401)
            google_source_access_token_drop(w->src.ctx);
        failed(it, "reading the existing object back: HTTP %d", resp->status);
    } else {
        failed(it, "reading the existing object back: %s%s%s", http_error_name(resp->error),
               resp->msg[0] ? ": " : "", resp->msg);
    }
    http_response_free(resp);
}

static void on_upload(struct http_response *resp, void *arg)
{
    struct witem *it = arg;
    struct audit_witness *w = it->w;

    it->call = NULL;
    if (resp->error != HTTP_ERR_NONE) {
        failed(it, "upload: %s%s%s", http_error_name(resp->error), resp->msg[0] ? ": " : "",
               resp->msg);
    } else if (resp->status == 200 || resp->status == 201) {
        w->written++;
        done(it);
    } else if (resp->status == 412) {
        /* the name exists: equal content is an earlier attempt of ours */
        char *name = object_name(w, it), *url, *auth;
        const char *hdrs[1];
        url = xasprintf("%s/storage/v1/b/%s/o/%s?alt=media", w->storage_url, w->bucket, name);
        auth = xasprintf("Authorization: Bearer %s", it->token);
        hdrs[0] = auth;
        it->call = http_client_submit(w->http,
                                      &(struct http_request){.method = "GET",
                                                             .url = url,
                                                             .headers = hdrs,
                                                             .n_headers = 1,
                                                             .timeout_ms = AUDIT_WITNESS_TIMEOUT_MS,
                                                             .max_body = it->len + 1,
                                                             .allow_http = true},
                                      on_get, it);
        free(name);
        free(url);
        free(auth);
    } else {
        if (resp->status == 401)
            google_source_access_token_drop(w->src.ctx);
        failed(it, "upload: HTTP %d%s", resp->status,
               resp->status == 403   ? " (grant the service account roles/storage.objectCreator "
                                       "on the bucket)"
               : resp->status == 404 ? " (no such bucket?)"
                                     : "");
    }
    http_response_free(resp);
}

static void on_token(void *arg, const struct identity_mint_result *res)
{
    struct witem *it = arg;
    struct audit_witness *w = it->w;
    char *name, *url, *auth;
    const char *hdrs[2];

    if (!res->ok) {
        failed(it, "no access token: %s", res->detail ? res->detail : "unknown failure");
        return;
    }
    free(it->token);
    it->token = xstrndup(res->token, res->token_len);
    name = object_name(w, it);
    url = xasprintf("%s/upload/storage/v1/b/%s/o?uploadType=media&name=%s&ifGenerationMatch=0",
                    w->storage_url, w->bucket, name);
    auth = xasprintf("Authorization: Bearer %s", it->token);
    hdrs[0] = auth;
    hdrs[1] = "Content-Type: application/json";
    it->call = http_client_submit(w->http,
                                  &(struct http_request){.method = "POST",
                                                         .url = url,
                                                         .headers = hdrs,
                                                         .n_headers = 2,
                                                         .body = it->line,
                                                         .body_len = it->len,
                                                         .timeout_ms = AUDIT_WITNESS_TIMEOUT_MS,
                                                         .max_body = 65536,
                                                         .allow_http = true},
                                  on_upload, it);
    free(name);
    free(url);
    free(auth);
}

/* ------------------------------------------------------------ the loop */

static void next(struct audit_witness *w)
{
    w->in_next = true;
    for (;;) {
        struct witem *it;
        bool stopping;

        if (w->waiting_retry || w->n_inflight >= w->max_inflight)
            break;
        pthread_mutex_lock(&w->mu);
        it = w->head;
        if (it) {
            w->head = it->next;
            if (!w->head)
                w->tail = &w->head;
        }
        stopping = w->stopping;
        pthread_mutex_unlock(&w->mu);
        if (!it) {
            if (stopping && !w->n_inflight)
                event_base_loopbreak(w->base);
            break;
        }
        it->next = NULL;
        list_push_front(&w->inflight, &it->inflight);
        w->n_inflight++;
        if (w->dir)
            dir_attempt(w, it); /* synchronous: done() or failed() before it returns */
        else
            google_source_access_token(w->src.ctx, on_token, it);
    }
    w->in_next = false;
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    struct audit_witness *w = arg;
    uint64_t v;
    bool stopping;
    (void)what;
    (void)!read(fd, &v, sizeof(v));
    pthread_mutex_lock(&w->mu);
    stopping = w->stopping;
    if (stopping && !evtimer_pending(w->deadline_ev, NULL)) {
        uint64_t now = mono_ns(), left = w->stop_deadline_ns > now ? w->stop_deadline_ns - now : 0;
        struct timeval tv = {(time_t)(left / 1000000000u),
                             (suseconds_t)(left % 1000000000u / 1000u)};
        evtimer_add(w->deadline_ev, &tv);
    }
    pthread_mutex_unlock(&w->mu);
    if (stopping && w->waiting_retry) {
        /* shutting down: no more backoff, try what is left until the deadline */
        evtimer_del(w->retry_ev);
        w->waiting_retry = false;
    }
    next(w);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    struct audit_witness *w = arg;
    (void)fd;
    (void)what;
    w->waiting_retry = false;
    next(w);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct audit_witness *w = arg;
    (void)fd;
    (void)what;
    event_base_loopbreak(w->base);
}

static void *witness_main(void *arg)
{
    struct audit_witness *w = arg;
    event_base_loop(w->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

struct audit_witness *audit_witness_new(const struct cfg_audit *a, const struct cfg_google *g,
                                        char *err, size_t errlen)
{
    struct audit_witness *w;

    errbuf_set(err, errlen, "%s", "");
    if (!a->witness_dir && !a->witness_bucket)
        return NULL;
    w = xcalloc(1, sizeof(*w));
    list_init(&w->inflight);
    w->wake_fd = -1;
    pthread_mutex_init(&w->mu, NULL);
    w->tail = &w->head;
    if (a->witness_dir) {
        struct stat st;
        w->dir = xstrdup(a->witness_dir);
        w->max_inflight = 1;
        if (stat(w->dir, &st) != 0 || !S_ISDIR(st.st_mode) || access(w->dir, W_OK | X_OK) != 0) {
            errbuf_set(err, errlen, "audit witness dir %s: not a writable directory", w->dir);
            goto fail;
        }
    } else {
        size_t n;
        w->bucket = xstrdup(a->witness_bucket);
        w->max_inflight = AUDIT_WITNESS_INFLIGHT;
        w->prefix = xstrdup(a->witness_prefix ? a->witness_prefix : "");
        w->storage_url = xstrdup(a->witness_storage_url ? a->witness_storage_url
                                                        : "https://storage.googleapis.com");
        n = strlen(w->storage_url);
        while (n && w->storage_url[n - 1] == '/')
            w->storage_url[--n] = '\0';
    }
    w->base = event_base_new();
    w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (!w->base || w->wake_fd < 0) {
        errbuf_set(err, errlen, "audit witness: cannot create its event loop");
        goto fail;
    }
    if (w->bucket) {
        w->http = http_client_new(w->base, err, errlen);
        if (!w->http)
            goto fail;
        if (google_source_new(w->base, w->http, g, &w->src, err, errlen) != 0) {
            w->src.ctx = NULL;
            goto fail;
        }
    }
    w->wake_ev = event_new(w->base, w->wake_fd, EV_READ | EV_PERSIST, on_wake, w);
    w->retry_ev = evtimer_new(w->base, on_retry, w);
    w->deadline_ev = evtimer_new(w->base, on_deadline, w);
    if (!w->wake_ev || !w->retry_ev || !w->deadline_ev || event_add(w->wake_ev, NULL) != 0) {
        errbuf_set(err, errlen, "audit witness: cannot create its events");
        goto fail;
    }
    if (pthread_create(&w->thread, NULL, witness_main, w) != 0) {
        errbuf_set(err, errlen, "audit witness: cannot start its thread");
        goto fail;
    }
    w->thread_started = true;
    return w;
fail:
    audit_witness_free(w, 0);
    return NULL;
}

void audit_witness_free(struct audit_witness *w, unsigned flush_ms)
{
    struct witem *it;
    struct list *n, *tmp;
    uint64_t left = 0;

    if (!w)
        return;
    if (w->thread_started) {
        pthread_mutex_lock(&w->mu);
        w->stopping = true;
        w->stop_deadline_ns = mono_ns() + flush_ms * 1000000ull;
        pthread_mutex_unlock(&w->mu);
        wake(w);
        pthread_join(w->thread, NULL);
    }
    list_for_each_safe(n, tmp, &w->inflight) {
        it = list_entry(n, struct witem, inflight);
        list_remove(n);
        if (it->call)
            http_call_cancel(it->call);
        it->next = w->head; /* counted with the rest below */
        w->head = it;
    }
    if (w->src.ctx && w->src.free)
        w->src.free(w->src.ctx);
    http_client_free(w->http);
    while ((it = w->head)) {
        w->head = it->next;
        left++;
        item_free(it);
    }
    if (left) {
        w->dropped += left;
        log_msg(LOG_ERROR,
                "audit witness: %" PRIu64 " record(s) not witnessed at shutdown "
                "(the last one is the final checkpoint)",
                left);
    }
    if (w->wake_ev)
        event_free(w->wake_ev);
    if (w->retry_ev)
        event_free(w->retry_ev);
    if (w->deadline_ev)
        event_free(w->deadline_ev);
    if (w->base)
        event_base_free(w->base);
    if (w->wake_fd >= 0)
        close(w->wake_fd);
    free(w->dir);
    free(w->bucket);
    free(w->prefix);
    free(w->storage_url);
    pthread_mutex_destroy(&w->mu);
    free(w);
}
