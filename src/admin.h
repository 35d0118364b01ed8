/*
 * admin.h: the admin listener (admin_listen) that `baton serve` starts:
 * /healthz, /readyz, /metrics, /.well-known/jwks.json, /audit/public-key and
 * the caller assertion's JWKS, on the background event_base (loopback, low
 * volume: evhttp is fine there, it never sees request-path traffic), and the
 * readiness verdict that /readyz, health_path and the start gate (ready.h)
 * share.
 */
#ifndef BATON_ADMIN_H
#define BATON_ADMIN_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

struct event_base;
struct evbuffer;
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
bool admin_ready(const struct admin_deps *deps, struct evbuffer *detail);

#endif
