/*
 * resolve.c: upstream addresses refreshed on the background thread and
 * published to workers as immutable refcounted sets (resolve.h).
 */
#include "resolve.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "log.h"
#include "util.h"

struct resolver {
    char *name; /* owned: the upstream's name, for log lines */
    char *host; /* owned: without brackets */
    int port;
    unsigned interval_s;
    struct event *timer;     /* owned; NULL until resolver_start */
    pthread_mutex_t lock;    /* guards set and err */
    struct resolve_set *set; /* owned reference; NULL: never resolved */
    char err[200];
    _Atomic unsigned rr; /* round-robin counter */
};

/* ------------------------------------------------------------------ sets */

static void addr_text(const struct sockaddr_storage *ss, char *out, size_t cap)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
        snprintf(out, cap, "%s:%u", ip, ntohs(a->sin_port));
    } else {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
        snprintf(out, cap, "[%s]:%u", ip, ntohs(a->sin6_port));
    }
}

struct resolve_set *resolve_set_from(const struct addrinfo *ai)
{
    struct resolve_set *s = xcalloc(1,
                                    sizeof(*s) + RESOLVE_MAX_ADDRS * sizeof(struct resolve_addr));

    for (; ai && s->n < RESOLVE_MAX_ADDRS; ai = ai->ai_next) {
        struct resolve_addr *a = &s->a[s->n];
        bool dup = false;
        if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) || !ai->ai_addr ||
            ai->ai_addrlen > sizeof(a->sa) || (ai->ai_socktype && ai->ai_socktype != SOCK_STREAM))
            continue;
        memset(a, 0, sizeof(*a));
        memcpy(&a->sa, ai->ai_addr, ai->ai_addrlen);
        a->len = ai->ai_addrlen;
        addr_text(&a->sa, a->text, sizeof(a->text));
        for (size_t i = 0; i < s->n && !dup; i++)
            dup = strcmp(s->a[i].text, a->text) == 0;
        if (!dup)
            s->n++;
    }
    if (s->n == 0) {
        free(s);
        return NULL;
    }
    atomic_store(&s->refs_, 1);
    return s;
}

struct resolve_set *resolve_set_ref(struct resolve_set *s)
{
    if (s)
        atomic_fetch_add(&s->refs_, 1);
    return s;
}

void resolve_set_unref(struct resolve_set *s)
{
    if (s && atomic_fetch_sub(&s->refs_, 1) == 1)
        free(s);
}

size_t resolve_pick(const struct resolve_set *s, unsigned start, unsigned attempt)
{
    return ((size_t)start + attempt) % s->n;
}

static bool same_set(const struct resolve_set *a, const struct resolve_set *b)
{
    if (!a || !b || a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->a[i].text, b->a[i].text) != 0)
            return false;
    return true;
}

/* ------------------------------------------------------------- resolvers */

struct resolver *resolver_new(const char *name, const char *host, int port, unsigned interval_s,
                              struct resolver *const *prev, size_t n_prev)
{
    struct resolver *r = xcalloc(1, sizeof(*r));
    size_t n = strlen(host);

    r->name = xstrdup(name);
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']')
        r->host = xstrndup(host + 1, n - 2); /* an IPv6 literal as written in a URL */
    else
        r->host = xstrdup(host);
    r->port = port;
    r->interval_s = interval_s ? interval_s : RESOLVE_INTERVAL_S_DEFAULT;
    pthread_mutex_init(&r->lock, NULL);
    for (size_t i = 0; prev && i < n_prev && !r->set; i++)
        resolver_inherit(r, prev[i]);
    resolver_resolve(r);
    return r;
}

int resolver_resolve(struct resolver *r)
{
    struct addrinfo hints, *res = NULL;
    struct resolve_set *s = NULL, *old = NULL;
    char port[16];
    int rc;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_ADDRCONFIG;
    snprintf(port, sizeof(port), "%d", r->port);
    rc = getaddrinfo(r->host, port, &hints, &res);
    if (rc == 0)
        s = resolve_set_from(res);
    if (res)
        freeaddrinfo(res);

    pthread_mutex_lock(&r->lock);
    if (!s) {
        bool had = r->set != NULL, first = !r->err[0];
        snprintf(r->err, sizeof(r->err), "cannot resolve %s: %s", r->host,
                 rc ? gai_strerror(rc) : "no IPv4 or IPv6 address");
        pthread_mutex_unlock(&r->lock);
        if (first)
            log_msg(LOG_WARNING, "upstream %s: %s%s", r->name, r->err,
                    had ? " (keeping the last good addresses)"
                        : " (502 upstream_unresolved until it resolves)");
        return -1;
    }
    bool recovered = r->err[0] != '\0';
    r->err[0] = '\0';
    if (same_set(r->set, s)) {
        pthread_mutex_unlock(&r->lock);
        resolve_set_unref(s);
        return 0;
    }
    old = r->set;
    r->set = s;
    pthread_mutex_unlock(&r->lock);
    {
        char list[512];
        size_t off = 0;
        list[0] = '\0';
        for (size_t i = 0; i < s->n && off < sizeof(list); i++) {
            int w = snprintf(list + off, sizeof(list) - off, "%s%s", i ? " " : "", s->a[i].text);
            if (w < 0)
                break;
            off += (size_t)w;
        }
        log_msg(old || recovered ? LOG_INFO : LOG_DEBUG,
                "upstream %s: %s resolves to %zu address%s: %s", r->name, r->host, s->n,
                s->n == 1 ? "" : "es", list);
    }
    resolve_set_unref(old);
    return 0;
}

void resolver_inherit(struct resolver *r, const struct resolver *old)
{
    struct resolve_set *s = NULL;
    struct resolver *o = (struct resolver *)old; /* its lock only */

    if (!old || old->port != r->port || strcmp(old->host, r->host) != 0)
        return;
    pthread_mutex_lock(&o->lock);
    s = resolve_set_ref(o->set);
    pthread_mutex_unlock(&o->lock);
    pthread_mutex_lock(&r->lock);
    if (!r->set) {
        r->set = s;
        s = NULL;
    }
    pthread_mutex_unlock(&r->lock);
    resolve_set_unref(s);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct resolver *r = arg;
    struct timeval tv = {r->interval_s, 0};
    (void)fd;
    (void)what;
    resolver_resolve(r);
    evtimer_add(r->timer, &tv);
}

int resolver_start(struct resolver *r, struct event_base *bg)
{
    struct timeval tv = {r->interval_s, 0};

    if (r->timer)
        return 0;
    r->timer = evtimer_new(bg, on_timer, r);
    if (!r->timer || evtimer_add(r->timer, &tv) < 0)
        return -1;
    return 0;
}

struct resolve_set *resolver_current(struct resolver *r, unsigned *start)
{
    struct resolve_set *s;

    pthread_mutex_lock(&r->lock);
    s = resolve_set_ref(r->set);
    pthread_mutex_unlock(&r->lock);
    *start = atomic_fetch_add_explicit(&r->rr, 1, memory_order_relaxed);
    return s;
}

bool resolver_status(struct resolver *r, size_t *n_addrs, char *err, size_t errlen)
{
    bool have;

    pthread_mutex_lock(&r->lock);
    have = r->set != NULL;
    *n_addrs = have ? r->set->n : 0;
    snprintf(err, errlen, "%s", r->err);
    pthread_mutex_unlock(&r->lock);
    return have;
}

void resolver_free(struct resolver *r)
{
    if (!r)
        return;
    if (r->timer)
        event_free(r->timer);
    resolve_set_unref(r->set);
    pthread_mutex_destroy(&r->lock);
    free(r->name);
    free(r->host);
    free(r);
}
