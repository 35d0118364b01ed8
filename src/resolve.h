/*
 * resolve.h: an upstream host name's addresses, kept fresh off the request
 * path (issue 12 point 4).
 *
 * A resolver owns one name:port. It resolves with getaddrinfo (so
 * /etc/hosts, nsswitch and the system's resolver rules all apply) once when
 * built, then again every `interval_s` seconds from a timer on the background
 * event_base. getaddrinfo gives no record TTL, so the interval is fixed
 * (upstreams[].resolve_interval_s, default 30 s, 1..3600). Every A and AAAA
 * address is kept, in getaddrinfo's order, duplicates dropped, at most
 * RESOLVE_MAX_ADDRS. A failed resolution (or one returning no address) keeps
 * the last good set and records the error.
 *
 * Sets are immutable and refcounted; the resolver swaps its current set under
 * a mutex and workers take a reference for the life of one exchange, so a
 * refresh never changes addresses under a running connection attempt. New
 * connections spread over a set round robin (resolver_current's `start`), and
 * a connect failure moves to resolve_pick(set, start, attempt + 1).
 *
 * Threads: resolver_new and resolver_resolve block (getaddrinfo): background
 * thread or before its loop runs. resolver_current and resolver_status: any
 * thread. resolver_start and resolver_free: the background thread (or after
 * its loop stopped).
 */
#ifndef BATON_RESOLVE_H
#define BATON_RESOLVE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include <netinet/in.h>
#include <sys/socket.h>

struct event_base;
struct addrinfo;

#define RESOLVE_MAX_ADDRS 32
#define RESOLVE_INTERVAL_S_DEFAULT 30

struct resolve_addr {
    struct sockaddr_storage sa;
    socklen_t len;
    char text[INET6_ADDRSTRLEN + 8]; /* "10.0.0.7:443", "[::1]:8080" */
};

/* An immutable address set (n >= 1). */
struct resolve_set {
    _Atomic int refs_;
    size_t n;
    struct resolve_addr a[];
};

/*
 * A set from a getaddrinfo list (borrowed): SOCK_STREAM AF_INET/AF_INET6
 * entries in order, duplicates dropped, at most RESOLVE_MAX_ADDRS. Owned
 * (refcount 1); NULL when the list holds no usable address.
 */
struct resolve_set *resolve_set_from(const struct addrinfo *ai);
struct resolve_set *resolve_set_ref(struct resolve_set *s);
void resolve_set_unref(struct resolve_set *s); /* NULL ok */

/* The index of the `attempt`th address (0: the first try) of a connection
 * whose round-robin start is `start`: (start + attempt) mod n. */
size_t resolve_pick(const struct resolve_set *s, unsigned start, unsigned attempt);

struct resolver;

/*
 * A resolver for host:port (host copied; an IPv6 literal with or without
 * brackets), resolved once now (blocking). `name` (copied) labels log lines.
 * `prev` (borrowed, NULL ok): the previous snapshot's resolvers, `n_prev`
 * of them; one for the same host:port lends its set first (resolver_inherit),
 * so a reload whose resolution fails keeps the good addresses. Never NULL. A
 * failed first resolution is not an error: the resolver has no set until a
 * refresh succeeds.
 */
struct resolver *resolver_new(const char *name, const char *host, int port, unsigned interval_s,
                              struct resolver *const *prev, size_t n_prev);

/* Resolves now (blocking). Returns 0 when a set was published, -1 with the
 * error recorded (and the previous set, if any, kept). */
int resolver_resolve(struct resolver *r);

/* Takes over `old`'s set when `old` (borrowed, NULL ok) resolves the same
 * host:port and `r` has none yet: a reload does not forget good addresses. */
void resolver_inherit(struct resolver *r, const struct resolver *old);

/* Arms the refresh timer on `bg`. Returns 0 or -1. */
int resolver_start(struct resolver *r, struct event_base *bg);

/* The current set with a new reference (resolve_set_unref it), NULL when the
 * name never resolved; *start is the connection's round-robin start. */
struct resolve_set *resolver_current(struct resolver *r, unsigned *start);

/* For /readyz and logs: whether a set exists, its size, and the last
 * resolution error ("" when the last one succeeded), copied into err. */
bool resolver_status(struct resolver *r, size_t *n_addrs, char *err, size_t errlen);

/* Stops the timer and frees. NULL ok. */
void resolver_free(struct resolver *r);

#endif
