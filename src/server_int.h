/*
 * server_int.h: what server.c (the process lifecycle) and conn.c (the
 * connections) share: the worker, the audit writer's durable notes, and the
 * process-wide state of `baton serve`. Private to those two files.
 *
 * server_g is server.c's: cmd_serve sets it up before the workers start and
 * tears it down after they stopped. Workers read it (the audit log, the audit
 * settings, identities, the signed-URL use store) and write only its atomics.
 */
#ifndef BATON_SERVER_INT_H
#define BATON_SERVER_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <event2/util.h>
#include <openssl/ssl.h>

#include "admin.h"
#include "config.h"
#include "list.h"
#include "proxy.h"
#include "server.h"
#include "signurl.h"

struct conn;
struct runtime;

/* A durable-record notice from the audit writer thread (fsync "always"). */
struct durable_note {
    struct worker *w;
    struct conn *c;
    bool strict; /* on_failure "deny" and an upstream response: never delivered unrecorded */
    int ok;
    char request_id[PROXY_REQUEST_ID_MAX + 1], client_request_id[PROXY_REQUEST_ID_MAX + 1];
    struct durable_note *next;
};

struct worker {
    unsigned id;
    pthread_t thread;
    struct event_base *base;
    evutil_socket_t listen_fd;
    struct evconnlistener *listener;
    struct proxy *proxy;
    struct metrics_worker *mw;
    struct list conns; /* struct conn.node: the worker's client connections */
    size_t n_conns;
    struct runtime *rt;
    uint64_t rt_gen;
    struct event *ctl;
    int wake_fd; /* eventfd: the worker's base has no locks, so other threads
                    wake it through the kernel, never through event_active */
    _Atomic int cmd;
    pthread_mutex_t q_lock;
    struct durable_note *q_head, *q_tail;
    bool draining;
    uint64_t rng[2];
    uint64_t log_window_ns; /* per-second budget of per-request warning lines */
    unsigned log_in_window;
    uint64_t log_suppressed;
    unsigned timer_ms[3]; /* cached common timeouts: idle, header, linger */
    const struct timeval *timer_tv[3];
    struct event *accept_pause;  /* re-enables the listener after EMFILE/ENFILE */
    uint64_t accept_log_ns;      /* the last accept-failure log line */
    uint64_t accept_failures;    /* since that line */
    struct redis_client *redis;  /* global rate limits: this worker's connection */
    uint64_t fallback_log_ns;    /* the last on_failure log line (one per 10 s) */
    uint64_t fallback_unlogged;  /* on_failure decisions since */
    uint64_t link_fail_log_ns;   /* the last "link uses refused" log line (one per 10 s) */
    uint64_t link_fail_unlogged; /* link uses refused since */
};

struct server {
    const char *config_path;
    struct event_base *bg;
    struct http_client *http;
    struct audit_log *audit;
    /* what the log was opened with (strings owned): a reload does not reopen the
     * log elsewhere or change its mode */
    struct {
        enum cfg_fsync fsync;
        enum cfg_on_failure on_failure;
        char *path, *signing_key;
    } audit_cfg;
    struct identity *identity;
    SSL_CTX *tls;
    struct admin *admin;
    struct worker *workers;
    unsigned n_workers;
    _Atomic long n_conns;
    _Atomic int workers_running;
    _Atomic bool stopping;
    struct event *worker_exit_ev;
    struct event *drain_timer;
    struct event *hard_timer;
    struct event *sig_ev[4];
    int listen_port;
    long conn_cap;                /* connections the descriptor limit can serve (0: not computed) */
    struct admin_deps ready_deps; /* what /readyz, health_path and the start gate read */
    struct ready_gate *gate;      /* owned: closes the serving port until ready */
    int addr_lock_fd;             /* claim_address: held for the life of the process */
    struct signurl_memstore *link_store; /* uses of signed URLs, across reloads */
    struct signurl_uses link_uses;
};

extern struct server server_g;

/* The worker's current snapshot (a reference the worker holds), taken anew
 * when a reload published another; NULL before the first. Worker's thread. */
struct runtime *server_worker_rt(struct worker *w);

/* Any thread -> worker: makes worker_ctl run on the worker's thread. */
void server_worker_wake(struct worker *w);

#endif
