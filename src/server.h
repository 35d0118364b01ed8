/*
 * server.h: `baton serve` (cmd_serve in cli.h) and the admin listener it
 * starts.
 *
 * server.c owns the process lifecycle (workers, listeners, signals, reload,
 * drain); conn.c (conn.h) the client side of every request: the guard, the
 * pipeline of docs/spec.md "One request, in order", error responses and the one
 * audit record per routed request. proxy.c does the upstream side. admin.c serves
 * /healthz, /readyz, /metrics, /.well-known/jwks.json and /audit/public-key
 * on the admin address, on the background event_base (loopback, low volume:
 * evhttp is fine there, it never sees request-path traffic).
 */
#ifndef BATON_SERVER_H
#define BATON_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

struct event_base;
struct audit_log;
struct identity;
struct admin;

/* What the admin endpoints read; every pointer borrowed, valid until admin_free. */
struct admin_deps {
    struct audit_log *audit;
    struct identity *identity; /* NULL: no Google identity configured */
    bool (*draining)(void);    /* true once SIGTERM was received */
};

/*
 * Binds the admin listener at `addr` on `bg` (the background base). Returns
 * an owned admin, or NULL with a message in err. Free it on bg's thread or
 * after the loop stopped.
 */
struct admin *admin_start(struct event_base *bg, const struct cfg_addr *addr,
                          const struct admin_deps *deps, char *err, size_t errlen);
void admin_free(struct admin *a);

/* The readiness verdict /readyz serves, with its JSON detail appended to
 * `detail` (an evbuffer). Exposed for tests. */
struct evbuffer;
bool admin_ready(const struct admin_deps *deps, struct evbuffer *detail);

#endif
