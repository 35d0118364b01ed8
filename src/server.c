/*
 * server.c: `baton serve`, the process: start-up (config, the audit log,
 * identities, the port lock, each worker's socket behind the start gate),
 * the workers and their threads, signals, reload, reopen and drain, and the
 * admin listener's wiring. The connections the workers accept, and every
 * request on them, are conn.c's; what the two share is in server_int.h.
 *
 * Threads: N workers, each with its own event_base and its own SO_REUSEPORT
 * listening socket, so the kernel spreads connections and a worker never
 * shares a connection; one background thread (the main thread) runs the
 * background event_base: key-set and identity refresh, the admin listener,
 * signals, snapshot retirement. The audit writer has its own thread.
 *
 * A worker's loop hears from other threads only through its eventfd
 * (server_worker_wake): commands (CMD_*) and the audit writer's durable notes,
 * both handled by worker_ctl on the worker's own thread.
 */

#include "server.h"

#include "server_int.h"
#include "conn.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <openssl/ssl.h>

#include "audit.h"
#include "audit_witness.h"
#include "cli.h"
#include "google.h"
#include "http_client.h"
#include "identity.h"
#include "jwks.h"
#include "log.h"
#include "metrics.h"
#include "policy.h"
#include "proxy.h"
#include "ready.h"
#include "redis.h"
#include "runtime.h"
#include "trace.h"
#include "signurl.h"
#include "otlp.h"
#include "util.h"

#define CMD_DRAIN 1
#define CMD_ABORT 2
#define CMD_OPEN 4    /* the start gate opened: enable the listener (ready.h) */
#define CMD_KEYS 8    /* a key-set refresh ended: parked requests decide (conn_park) */
#define CMD_RELOAD 16 /* take the new snapshot now (its Redis settings), not at the next request */

struct server server_g;

/* ------------------------------------------------------------- listeners */

/*
 * accept() failed with something other than a retriable error. Out of
 * descriptors (EMFILE, ENFILE) or kernel memory, the pending connection stays
 * in the queue and the socket stays readable: left alone, the loop would spin
 * on it (libevent would also log each failure). The listener is paused for
 * ACCEPT_PAUSE_MS instead, the connections already open are served as usual
 * (each one that closes gives a descriptor back), and a line is logged at
 * most once a second, with the count of failures since the last one.
 */
#define ACCEPT_PAUSE_MS 100
static void on_accept_error(struct evconnlistener *l, void *arg)
{
    struct worker *w = arg;
    int err = EVUTIL_SOCKET_ERROR();
    struct timeval tv = {0, ACCEPT_PAUSE_MS * 1000};
    uint64_t now = mono_ns();

    evconnlistener_disable(l);
    evtimer_add(w->accept_pause, &tv);
    w->accept_failures++;
    if (now - w->accept_log_ns >= 1000000000ull || !w->accept_log_ns) {
        char fields[160];
        snprintf(fields, sizeof(fields),
                 "\"worker\":%u,\"errno\":%d,\"failures\":%llu,"
                 "\"open_connections\":%ld",
                 w->id, err, (unsigned long long)w->accept_failures,
                 atomic_load(&server_g.n_conns));
        log_msg_fields(LOG_WARNING, fields,
                       "worker %u: accept failed (%s): not accepting for %d ms, open "
                       "connections are still served%s",
                       w->id, strerror(err), ACCEPT_PAUSE_MS,
                       err == EMFILE || err == ENFILE ? "; raise the descriptor limit or "
                                                        "lower limits.max_connections"
                                                      : "");
        w->accept_log_ns = now;
        w->accept_failures = 0;
    }
}

static void on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    (void)fd;
    (void)what;
    if (w->listener && !w->draining)
        evconnlistener_enable(w->listener);
}

/* --------------------------------------------------------------- workers */

struct runtime *server_worker_rt(struct worker *w)
{
    uint64_t gen = runtime_generation();
    if (gen != w->rt_gen || !w->rt) {
        runtime_unref(w->rt);
        w->rt = runtime_current();
        w->rt_gen = w->rt ? w->rt->generation : 0;
        if (w->rt && w->redis)
            redis_configure(w->redis, &w->rt->cfg->redis);
    }
    return w->rt;
}

/* Any thread -> worker: makes worker_ctl run on the worker's thread. */
void server_worker_wake(struct worker *w)
{
    uint64_t one = 1;
    (void)!write(w->wake_fd, &one, sizeof(one));
}

static void worker_ctl(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    struct durable_note *notes;
    int cmd;
    uint64_t count;
    (void)what;

    (void)!read(fd, &count, sizeof(count));
    cmd = atomic_exchange(&w->cmd, 0);

    pthread_mutex_lock(&w->q_lock);
    notes = w->q_head;
    w->q_head = w->q_tail = NULL;
    pthread_mutex_unlock(&w->q_lock);
    while (notes) {
        struct durable_note *next = notes->next;
        conn_durable_arrived(notes->c, notes);
        free(notes);
        notes = next;
    }

    if ((cmd & CMD_DRAIN) && !w->draining) {
        w->draining = true;
        if (w->listener) {
            evconnlistener_free(w->listener); /* closes the socket: new connections are refused */
            w->listener = NULL;
        }
        proxy_close_idle(w->proxy);
        struct list *pos, *tmp;
        list_for_each_safe(pos, tmp, &w->conns) {
            struct conn *c = list_entry(pos, struct conn, node);
            if (c->state == CS_HEAD && !c->head_started &&
                evbuffer_get_length(bufferevent_get_input(c->bev)) == 0)
                conn_free(c);
        }
        if (w->n_conns == 0)
            event_base_loopexit(w->base, NULL);
    }
    if ((cmd & CMD_OPEN) && w->listener && !w->draining)
        evconnlistener_enable(w->listener); /* the socket listens: accept from now on */
    if (cmd & (CMD_KEYS | CMD_ABORT)) {
        struct list *pos, *tmp;
        list_for_each_safe(pos, tmp, &w->conns) {
            struct conn *c = list_entry(pos, struct conn, node);
            if (c->state != CS_PARKED)
                continue;
            if (cmd & CMD_ABORT)
                c->park_deadline_ns = 1; /* decide now: every routed request gets its record */
            conn_unpark(c);
        }
    }
    if ((cmd & CMD_RELOAD) && !w->draining)
        server_worker_rt(w);
    if (cmd & CMD_ABORT) {
        /* a running exchange gets its record (drain_aborted) first */
        while (!list_empty(&w->conns))
            conn_free(list_entry(list_first(&w->conns), struct conn, node));
        event_base_loopexit(w->base, NULL);
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    event_base_dispatch(w->base);
    /* Anything left (abort): free it here, on the owning thread. */
    while (!list_empty(&w->conns))
        conn_free(list_entry(list_first(&w->conns), struct conn, node));
    proxy_close_idle(w->proxy);
    runtime_unref(w->rt);
    w->rt = NULL;
    atomic_fetch_sub(&server_g.workers_running, 1);
    event_active(server_g.worker_exit_ev, EV_TIMEOUT, 0);
    return NULL;
}

/* A worker's serving socket, bound but not listening: connections are
 * refused until the start gate opens it (open_listeners). `reuseport`
 * false: the probe of claim_address. */
static int open_listener(const struct cfg_addr *addr, int port, bool reuseport, char *err,
                         size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    int fd, one = 1;

    memset(&ss, 0, sizeof(ss));
    if (inet_pton(AF_INET, addr->host, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
        ((struct sockaddr_in *)&ss)->sin_family = AF_INET;
        ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)port);
        sl = sizeof(struct sockaddr_in);
    } else if (inet_pton(AF_INET6, addr->host, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1) {
        ((struct sockaddr_in6 *)&ss)->sin6_family = AF_INET6;
        ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)port);
        sl = sizeof(struct sockaddr_in6);
    } else {
        snprintf(err, errlen, "listen address %s is not an IP address", addr->host);
        return -1;
    }
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0)
        goto fail;
    return fd;
fail:
    if (errno == EADDRINUSE)
        snprintf(err, errlen,
                 "cannot listen on %s:%d: address already in use (another process "
                 "holds it)",
                 addr->host, port);
    else
        snprintf(err, errlen, "cannot listen on %s:%d: %s", addr->host, port, strerror(errno));
    if (fd >= 0)
        close(fd);
    return -1;
}

/*
 * One process per address. SO_REUSEPORT lets this process's workers each
 * own a socket on the port, but it would as well let a second `baton serve`
 * of the same user bind the port and the kernel split connections between
 * two processes with different policies. Two checks, before the workers'
 * sockets are bound:
 *  - a lock: an abstract AF_UNIX socket named after the port, bound for the
 *    life of the process. Abstract names live per network namespace, as
 *    ports do, and vanish with the process (no stale lock file after a
 *    crash); a second bind fails with EADDRINUSE. Keyed by the port alone,
 *    since 0.0.0.0:P and 127.0.0.1:P overlap. This is what catches a second
 *    baton while the first keeps its port closed (the start gate: bound
 *    sockets that do not listen yet do not conflict with SO_REUSEADDR).
 *  - a probe: a socket bound to the address without SO_REUSEPORT (with
 *    SO_REUSEADDR, so connections left in TIME_WAIT do not count), closed at
 *    once: any other process listening there, baton or not, makes it fail,
 *    even one that set SO_REUSEPORT under our user.
 * Returns the lock's descriptor (owned by the caller, held until exit), or
 * -1 with "address already in use" in err.
 */
static int claim_address(const struct cfg_addr *addr, int port, char *err, size_t errlen)
{
    struct sockaddr_un un;
    socklen_t len;
    int fd, probe, n;

    memset(&un, 0, sizeof(un));
    un.sun_family = AF_UNIX;
    n = snprintf(un.sun_path + 1, sizeof(un.sun_path) - 1, "baton-serve-port-%d", port);
    len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create the port lock: %s", strerror(errno));
        return -1;
    }
    if (bind(fd, (struct sockaddr *)&un, len) < 0) {
        if (errno == EADDRINUSE)
            snprintf(err, errlen,
                     "cannot listen on %s:%d: address already in use (another "
                     "baton serve holds port %d)",
                     addr->host, port, port);
        else
            snprintf(err, errlen, "cannot take the port lock: %s", strerror(errno));
        close(fd);
        return -1;
    }
    probe = open_listener(addr, port, false, err, errlen);
    if (probe < 0) {
        close(fd);
        return -1;
    }
    close(probe);
    return fd;
}

/* ------------------------------------------------------------ lifecycle */

static bool is_draining(void)
{
    return atomic_load(&server_g.stopping);
}

static void begin_drain(void);

/* A key-set refresh ended (background thread): the parked requests decide. */
static void on_keys_refreshed(void)
{
    for (unsigned i = 0; server_g.workers && i < server_g.n_workers; i++) {
        atomic_fetch_or(&server_g.workers[i].cmd, CMD_KEYS);
        server_worker_wake(&server_g.workers[i]);
    }
}

/* The start gate opened (ready.h): every worker's socket starts listening,
 * then each worker enables its (disabled) listener on its own thread. */
static void open_listeners(void *arg, bool ready, const char *missing)
{
    (void)arg;
    (void)ready;
    (void)missing;
    if (atomic_load(&server_g.stopping))
        return; /* begin_drain frees the gate first: cannot happen */
    for (unsigned i = 0; i < server_g.n_workers; i++) {
        struct worker *w = &server_g.workers[i];
        if (listen(w->listen_fd, 4096) < 0) {
            log_msg(LOG_ERROR, "cannot listen on port %d: %s", server_g.listen_port,
                    strerror(errno));
            begin_drain();
            return;
        }
    }
    for (unsigned i = 0; i < server_g.n_workers; i++) {
        atomic_fetch_or(&server_g.workers[i].cmd, CMD_OPEN);
        server_worker_wake(&server_g.workers[i]);
    }
}

static struct identity_pair *identity_pairs(const struct runtime *rt, size_t *n)
{
    size_t count = policy_set_count(rt->policies), k = 0;
    struct identity_pair *pairs = xcalloc(count ? count : 1, sizeof(*pairs));
    for (size_t i = 0; i < count; i++) {
        const struct policy *p = policy_set_at(rt->policies, i);
        const struct cfg_upstream *up = policy_upstream(p);
        if (up->identity != IDENTITY_GOOGLE)
            continue;
        pairs[k].service_account = policy_service_account(p);
        pairs[k].audience = up->audience;
        k++;
    }
    *n = k;
    return pairs;
}

static bool same_str(const char *a, const char *b)
{
    return a == b || (a && b && !strcmp(a, b));
}

/* The loaders' warnings (a pattern that looks like a regex, ...), logged with
 * their positions as `baton check` prints them; they never refuse a load. */
static void log_warnings(const struct diags *w)
{
    for (size_t i = 0; i < w->n; i++) {
        char fields[1024], file[512];
        json_escape(file, sizeof(file), w->v[i].file ? w->v[i].file : "",
                    w->v[i].file ? strlen(w->v[i].file) : 0);
        snprintf(fields, sizeof(fields), "\"file\":\"%s\",\"line\":%d,\"column\":%d", file,
                 w->v[i].line, w->v[i].col);
        log_msg_fields(LOG_WARNING, fields, "%s", w->v[i].msg);
    }
}

static void reload(void)
{
    struct diags d = DIAGS_INIT, warnings = DIAGS_INIT;
    struct runtime *rt;

    log_msg(LOG_INFO, "SIGHUP: reloading %s", server_g.config_path);
    d.warnings = &warnings;
    rt = runtime_build(server_g.config_path, &d);
    d.warnings = NULL;
    log_warnings(&warnings);
    diags_free(&warnings);
    if (!rt) {
        for (size_t i = 0; i < d.n; i++) {
            char fields[1024], file[512];
            json_escape(file, sizeof(file), d.v[i].file ? d.v[i].file : "",
                        d.v[i].file ? strlen(d.v[i].file) : 0);
            snprintf(fields, sizeof(fields), "\"file\":\"%s\",\"line\":%d,\"column\":%d", file,
                     d.v[i].line, d.v[i].col);
            /* the message is escaped by the logger; only fields come escaped */
            log_msg_fields(LOG_ERROR, fields, "reload refused: %s", d.v[i].msg);
        }
        log_msg(LOG_ERROR, "reload refused (%zu errors): the previous configuration stays in use",
                d.n);
        {
            /* /readyz and /metrics say the running set is older than the files */
            char first[512] = "no error reported";
            if (d.n && d.v[0].line > 0)
                snprintf(first, sizeof(first), "%s:%d:%d: %s%s", d.v[0].file, d.v[0].line,
                         d.v[0].col, d.v[0].msg, d.n > 1 ? " (and more)" : "");
            else if (d.n)
                snprintf(first, sizeof(first), "%s: %s%s", d.v[0].file, d.v[0].msg,
                         d.n > 1 ? " (and more)" : "");
            runtime_reload_refused(first);
        }
        diags_free(&d);
        return;
    }
    diags_free(&d);
    if (server_g.identity) {
        size_t n;
        struct identity_pair *pairs = identity_pairs(rt, &n);
        identity_set_pairs(server_g.identity, pairs, n);
        free(pairs);
    } else if (rt->needs_identity) {
        log_msg(LOG_WARNING, "the reloaded policies forward to identity \"google\" upstreams, "
                             "but no Google identity could be set up at start: they answer 503");
    }
    if (!same_str(rt->cfg->audit.path, server_g.audit_cfg.path) ||
        !same_str(rt->cfg->audit.signing_key, server_g.audit_cfg.signing_key) ||
        rt->cfg->audit.fsync != server_g.audit_cfg.fsync ||
        rt->cfg->audit.on_failure != server_g.audit_cfg.on_failure)
        log_msg(LOG_WARNING, "reload: the audit section's path, signing_key, fsync and "
                             "on_failure take effect at the next restart; the log keeps "
                             "the ones it was opened with");
    if (!otlp_same(&rt->cfg->tracing))
        log_msg(LOG_WARNING, "reload: the tracing section takes effect at the next restart");
    log_msg(LOG_INFO, "configuration generation %llu in use (%zu steps)",
            (unsigned long long)rt->generation, rt->n_steps);
    runtime_publish(rt);
    for (unsigned i = 0; i < server_g.n_workers; i++) {
        atomic_fetch_or(&server_g.workers[i].cmd, CMD_RELOAD);
        server_worker_wake(&server_g.workers[i]);
    }
}

static void begin_drain(void)
{
    struct runtime *rt;
    struct timeval tv;
    unsigned ms;

    if (atomic_exchange(&server_g.stopping, true))
        return;
    ready_gate_free(server_g.gate); /* a port never opened stays closed */
    server_g.gate = NULL;
    rt = runtime_current();
    ms = rt ? rt->cfg->drain_ms : 8000;
    runtime_unref(rt);
    log_msg(LOG_INFO, "draining: no new connections, %u ms for requests in flight", ms);
    for (unsigned i = 0; i < server_g.n_workers; i++) {
        atomic_fetch_or(&server_g.workers[i].cmd, CMD_DRAIN);
        server_worker_wake(&server_g.workers[i]);
    }
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    evtimer_add(server_g.drain_timer, &tv);
}

static void on_drain_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct timeval hard = {2, 0};
    (void)fd;
    (void)what;
    (void)arg;
    log_msg(LOG_WARNING, "drain deadline reached: aborting what is still in flight");
    for (unsigned i = 0; i < server_g.n_workers; i++) {
        atomic_fetch_or(&server_g.workers[i].cmd, CMD_ABORT);
        server_worker_wake(&server_g.workers[i]);
    }
    evtimer_add(server_g.hard_timer, &hard);
}

static void on_hard_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    event_base_loopexit(server_g.bg, NULL);
}

static void on_worker_exit(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    if (atomic_load(&server_g.workers_running) == 0)
        event_base_loopexit(server_g.bg, NULL);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    (void)arg;
    switch (sig) {
    case SIGHUP:
        if (!atomic_load(&server_g.stopping)) {
            reload();
            audit_reopen(server_g.audit);
        }
        break;
    case SIGUSR1:
        log_msg(LOG_INFO, "SIGUSR1: reopening the audit log");
        audit_reopen(server_g.audit);
        break;
    default:
        begin_drain();
        break;
    }
}

static int parse_args(int argc, char **argv, const char **config_flag)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;

    optind = 1;
    while ((ch = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            *config_flag = optarg;
            break;
        case 'h':
            printf("usage: baton serve [-c FILE]\n");
            return 1;
        default:
            fprintf(stderr, "usage: baton serve [-c FILE]\n");
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "baton serve: unexpected argument \"%s\"\n", argv[optind]);
        return 2;
    }
    return 0;
}

/*
 * Descriptors. The soft RLIMIT_NOFILE is raised to the hard limit at start,
 * as nginx's worker_rlimit_nofile and Go's runtime do: Debian's default soft
 * limit of 1024 is far below what max_connections asks. Then the connections
 * the limit can serve are counted: each may hold two descriptors (the client
 * and an upstream connection), beside those open at start and a reserve for
 * what the process opens later (key set and identity fetches, the admin
 * listener's connections, audit reopen). Past that count a connection gets
 * the canned 503, like past max_connections, instead of starving a request
 * that already holds its client of the upstream connection it needs.
 */
#define FD_RESERVE 64

static void raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max)
        return;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        log_msg(LOG_WARNING, "cannot raise the descriptor limit to %llu: %s",
                (unsigned long long)rl.rlim_max, strerror(errno));
}

static long open_descriptors(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    long n = 0;

    if (!d)
        return FD_RESERVE; /* no /proc: count the reserve twice */
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

static void cap_connections(unsigned max_connections)
{
    struct rlimit rl;
    long in_use = open_descriptors(), cap;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return;
    cap = ((long)rl.rlim_cur - in_use - FD_RESERVE) / 2;
    if (cap < 1)
        cap = 1;
    server_g.conn_cap = cap;
    if ((long)max_connections > cap)
        log_msg(LOG_WARNING,
                "limits.max_connections %u capped at %ld: the descriptor limit "
                "(RLIMIT_NOFILE) is %llu, %ld are open at start, %d are reserved, "
                "and each connection may hold two (client and upstream)",
                max_connections, cap, (unsigned long long)rl.rlim_cur, in_use, FD_RESERVE);
}

static int env_port(int fallback)
{
    const char *p = getenv("PORT");
    char *end = NULL;
    long v;

    if (!p || !*p)
        return fallback;
    errno = 0;
    v = strtol(p, &end, 10);
    if (errno || *end || v < 1 || v > 65535)
        return -1;
    return (int)v;
}

int cmd_serve(int argc, char **argv)
{
    const char *flag = NULL;
    struct diags d = DIAGS_INIT;
    struct runtime *rt = NULL;
    char err[512];
    int rc = 1, arc, port;
    unsigned ready_timeout_ms;
    long nproc;
    sigset_t block, old;
    const int sigs[4] = {SIGHUP, SIGUSR1, SIGTERM, SIGINT};

    arc = parse_args(argc, argv, &flag);
    if (arc)
        return arc == 1 ? 0 : 2;
    memset(&server_g, 0, sizeof(server_g));
    raise_nofile();
    server_g.addr_lock_fd = -1;
    server_g.config_path = config_path_choose(flag);
    if (getenv("BATON_LOG_LEVEL") && strcmp(getenv("BATON_LOG_LEVEL"), "debug") == 0)
        log_set_level(LOG_DEBUG);
    signal(SIGPIPE, SIG_IGN);
    if (evthread_use_pthreads() < 0) {
        log_msg(LOG_ERROR, "libevent threading unavailable");
        return 1;
    }
    server_g.bg = event_base_new();
    if (!server_g.bg) {
        log_msg(LOG_ERROR, "cannot create the background event loop");
        return 1;
    }
    server_g.http = http_client_new(server_g.bg, err, sizeof(err));
    if (!server_g.http) {
        log_msg(LOG_ERROR, "%s", err);
        goto out;
    }

    /* The worker count is fixed at start (reloads keep it): load the config
     * once to learn it, then build the snapshot for that many workers. */
    {
        struct baton_config *probe = config_load(server_g.config_path, &d);
        if (!probe) {
            diags_print(&d, stderr);
            goto out;
        }
        nproc = sysconf(_SC_NPROCESSORS_ONLN);
        server_g.n_workers = probe->workers > 0 ? (unsigned)probe->workers
                                                : (unsigned)(nproc > 0 ? nproc : 1);
        port = env_port(probe->listen.port);
        /* baton check refuses admin_listen on listen's port; $PORT is only
         * known here, so the same rule is applied again to the port in use */
        if (port > 0 && probe->admin_enabled && probe->admin_listen.port == port) {
            log_msg(LOG_ERROR,
                    "PORT=%d is admin_listen's port too (%s:%d): choose another "
                    "PORT or admin_listen",
                    port, probe->admin_listen.host, probe->admin_listen.port);
            config_free(probe);
            goto out;
        }
        config_free(probe);
    }
    if (port < 0) {
        log_msg(LOG_ERROR, "PORT must be an integer 1..65535");
        goto out;
    }
    server_g.listen_port = port;
    jwks_set_refresh_listener(on_keys_refreshed);
    server_g.link_store = signurl_memstore_new(0);
    server_g.link_uses = signurl_memstore_uses(server_g.link_store);
    runtime_init(server_g.bg, server_g.http, server_g.n_workers);
    {
        struct diags warnings = DIAGS_INIT;
        d.warnings = &warnings;
        rt = runtime_build(server_g.config_path, &d);
        d.warnings = NULL;
        log_warnings(&warnings);
        diags_free(&warnings);
    }
    if (!rt) {
        diags_print(&d, stderr);
        goto out;
    }

    server_g.audit_cfg.fsync = rt->cfg->audit.fsync;
    server_g.audit_cfg.on_failure = rt->cfg->audit.on_failure;
    server_g.audit_cfg.path = rt->cfg->audit.path ? xstrdup(rt->cfg->audit.path) : NULL;
    server_g.audit_cfg.signing_key = rt->cfg->audit.signing_key
                                         ? xstrdup(rt->cfg->audit.signing_key)
                                         : NULL;
    {
        /* the open record names the instance; the witness keeps its own copy
         * of the open record and every checkpoint (docs/audit.md) */
        struct audit_open_opts ao = {0};
        char *iid = NULL;
        if (google_metadata_expected(&rt->cfg->google)) {
            iid = google_metadata_instance_id(&rt->cfg->google, 1000, err, sizeof(err));
            if (!iid)
                log_msg(LOG_WARNING,
                        "audit: no instance id from the metadata server (%s); "
                        "the open record says null",
                        err);
        }
        ao.instance_id = iid;
        ao.witness = audit_witness_new(&rt->cfg->audit, &rt->cfg->google, err, sizeof(err));
        if (!ao.witness && err[0]) {
            free(iid);
            log_msg(LOG_ERROR, "%s", err);
            goto out;
        }
        server_g.audit = audit_open_with(&rt->cfg->audit, &ao, err, sizeof(err));
        free(iid);
    }
    if (!server_g.audit) {
        log_msg(LOG_ERROR, "audit log: %s", err);
        goto out;
    }
    {
        size_t n;
        struct identity_pair *pairs = identity_pairs(rt, &n);
        server_g.identity = identity_new(server_g.bg, server_g.http, rt->cfg, pairs, n, err,
                                         sizeof(err));
        free(pairs);
        if (!server_g.identity) {
            if (rt->needs_identity) {
                log_msg(LOG_ERROR, "google identity: %s", err);
                goto out;
            }
            log_msg(LOG_WARNING, "google identity unavailable (no step needs it): %s", err);
        } else {
            identity_start(server_g.identity);
        }
    }
    trace_project_start(server_g.bg, server_g.http, &rt->cfg->google);
    if (otlp_start(server_g.bg, server_g.http, &rt->cfg->tracing, err, sizeof(err)) < 0) {
        log_msg(LOG_ERROR, "%s", err);
        goto out;
    }
    trace_sample_new(otlp_enabled());
    server_g.tls = proxy_tls_ctx_new(err, sizeof(err));
    if (!server_g.tls) {
        log_msg(LOG_ERROR, "%s", err);
        goto out;
    }
    metrics_init(server_g.n_workers);
    redis_init(server_g.n_workers);

    server_g.addr_lock_fd = claim_address(&rt->cfg->listen, port, err, sizeof(err));
    if (server_g.addr_lock_fd < 0) {
        log_msg(LOG_ERROR, "%s", err);
        goto out;
    }
    server_g.workers = xcalloc(server_g.n_workers, sizeof(*server_g.workers));
    for (unsigned i = 0; i < server_g.n_workers; i++) {
        struct worker *w = &server_g.workers[i];
        w->id = i;
        list_init(&w->conns);
        w->listen_fd = -1;
        w->wake_fd = -1;
        pthread_mutex_init(&w->q_lock, NULL);
    }
    for (unsigned i = 0; i < server_g.n_workers; i++) {
        struct worker *w = &server_g.workers[i];
        {
            /* Single-threaded by design: no locks inside libevent, and the
             * epoll changelist folds the add/del pairs of one loop turn. */
            struct event_config *ec = event_config_new();
            event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
            event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
            w->base = event_base_new_with_config(ec);
            event_config_free(ec);
        }
        if (!w->base) {
            log_msg(LOG_ERROR, "cannot create a worker event loop");
            goto out;
        }
        w->listen_fd = open_listener(&rt->cfg->listen, port, true, err, sizeof(err));
        if (w->listen_fd < 0) {
            log_msg(LOG_ERROR, "%s", err);
            goto out;
        }
        /* backlog 0: libevent does not listen(); the start gate does (4096), and
         * the listener stays disabled until then (ready.h) */
        w->listener = evconnlistener_new(w->base, conn_accept, w,
                                         LEV_OPT_CLOSE_ON_FREE | LEV_OPT_DISABLED, 0, w->listen_fd);
        if (!w->listener) {
            close(w->listen_fd);
            log_msg(LOG_ERROR, "cannot start listening");
            goto out;
        }
        w->accept_pause = evtimer_new(w->base, on_accept_resume, w);
        evconnlistener_set_error_cb(w->listener, on_accept_error);
        w->mw = metrics_worker(i);
        w->proxy = proxy_new(w->base, server_g.tls, w->mw);
        w->redis = redis_client_new(w->base, i);
        redis_configure(w->redis, &rt->cfg->redis);
        w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (w->wake_fd < 0) {
            log_msg(LOG_ERROR, "eventfd: %s", strerror(errno));
            goto out;
        }
        w->ctl = event_new(w->base, w->wake_fd, EV_READ | EV_PERSIST, worker_ctl, w);
        event_add(w->ctl, NULL);
        if (getrandom(w->rng, sizeof(w->rng), 0) != sizeof(w->rng) || (!w->rng[0] && !w->rng[1])) {
            w->rng[0] = mono_ns() ^ (uint64_t)(uintptr_t)w;
            w->rng[1] = (uint64_t)getpid() * 0x9e3779b97f4a7c15ull + i;
        }
    }
    server_g.ready_deps.audit = server_g.audit;
    server_g.ready_deps.identity = server_g.identity;
    server_g.ready_deps.draining = is_draining;
    if (rt->cfg->admin_enabled) {
        server_g.admin = admin_start(server_g.bg, &rt->cfg->admin_listen, &server_g.ready_deps, err,
                                     sizeof(err));
        if (!server_g.admin) {
            log_msg(LOG_ERROR, "%s", err);
            goto out;
        }
    }
    server_g.worker_exit_ev = event_new(server_g.bg, -1, 0, on_worker_exit, NULL);
    server_g.drain_timer = evtimer_new(server_g.bg, on_drain_deadline, NULL);
    server_g.hard_timer = evtimer_new(server_g.bg, on_hard_deadline, NULL);
    for (int i = 0; i < 4; i++) {
        server_g.sig_ev[i] = evsignal_new(server_g.bg, sigs[i], on_signal, NULL);
        event_add(server_g.sig_ev[i], NULL);
    }
    cap_connections(rt->cfg->limits.max_connections);
    log_msg(LOG_INFO, "baton serving on %s:%d with %u workers (%zu steps), admin %s:%d",
            rt->cfg->listen.host, port, server_g.n_workers, rt->n_steps,
            rt->cfg->admin_enabled ? rt->cfg->admin_listen.host : "-",
            rt->cfg->admin_enabled ? rt->cfg->admin_listen.port : 0);
    ready_timeout_ms = rt->cfg->ready_timeout_ms;
    runtime_publish(rt);
    rt = NULL;

    /* Workers never take the process signals: the background loop does. */
    sigemptyset(&block);
    for (int i = 0; i < 4; i++)
        sigaddset(&block, sigs[i]);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    for (unsigned i = 0; i < server_g.n_workers; i++) {
        atomic_fetch_add(&server_g.workers_running, 1);
        if (pthread_create(&server_g.workers[i].thread, NULL, worker_main, &server_g.workers[i]) !=
            0) {
            atomic_fetch_sub(&server_g.workers_running, 1);
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            log_msg(LOG_ERROR, "cannot start worker threads");
            begin_drain();
            break;
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!atomic_load(&server_g.stopping))
        server_g.gate = ready_gate_start(server_g.bg, &server_g.ready_deps, ready_timeout_ms,
                                         open_listeners, NULL);

    event_base_dispatch(server_g.bg);
    rc = 0;
    for (unsigned i = 0; i < server_g.n_workers; i++)
        if (server_g.workers[i].thread)
            pthread_join(server_g.workers[i].thread, NULL);
    log_msg(LOG_INFO, "workers stopped; closing the audit log");

out:
    ready_gate_free(server_g.gate);
    server_g.gate = NULL;
    for (int i = 0; i < 4; i++)
        if (server_g.sig_ev[i])
            event_free(server_g.sig_ev[i]);
    if (server_g.worker_exit_ev)
        event_free(server_g.worker_exit_ev);
    if (server_g.drain_timer)
        event_free(server_g.drain_timer);
    if (server_g.hard_timer)
        event_free(server_g.hard_timer);
    admin_free(server_g.admin);
    /* Close the audit log while the workers' note queues and wake fds still
     * exist: the writer acknowledges what is left on its queue through
     * durable_cb, which locks w->q_lock and writes w->wake_fd. The notes it
     * queues are freed just below. */
    audit_close(server_g.audit);
    server_g.audit = NULL;
    free(server_g.audit_cfg.path);
    free(server_g.audit_cfg.signing_key);
    for (unsigned i = 0; server_g.workers && i < server_g.n_workers; i++) {
        struct worker *w = &server_g.workers[i];
        struct durable_note *n = w->q_head;
        while (n) {
            struct durable_note *next = n->next;
            free(n);
            n = next;
        }
        if (w->listener)
            evconnlistener_free(w->listener);
        if (w->accept_pause)
            event_free(w->accept_pause);
        proxy_free(w->proxy);
        redis_client_free(w->redis);
        if (w->ctl)
            event_free(w->ctl);
        if (w->wake_fd >= 0)
            close(w->wake_fd);
        runtime_unref(w->rt);
        if (w->base)
            event_base_free(w->base);
        pthread_mutex_destroy(&w->q_lock);
    }
    free(server_g.workers);
    identity_free(server_g.identity);
    signurl_memstore_free(server_g.link_store);
    runtime_unref(rt);
    runtime_shutdown();
    if (server_g.tls)
        SSL_CTX_free(server_g.tls);
    metrics_shutdown();
    otlp_stop();
    trace_project_stop();
    redis_shutdown();
    http_client_free(server_g.http);
    if (server_g.bg)
        event_base_free(server_g.bg);
    if (server_g.addr_lock_fd >= 0)
        close(server_g.addr_lock_fd);
    diags_free(&d);
    if (rc == 0)
        log_msg(LOG_INFO, "baton stopped");
    return rc;
}
