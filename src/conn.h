/*
 * conn.h: a worker's client connections (conn.c), for the lifecycle that runs
 * the workers (server.c). Not a public interface: only those two include it.
 *
 * A connection belongs to its worker's thread from accept to free; nothing
 * here may be called from another thread (the audit writer reaches a
 * connection only through its worker's durable-note queue, server_int.h).
 */
#ifndef BATON_CONN_H
#define BATON_CONN_H

#include <stdbool.h>
#include <stdint.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#include <event2/event_struct.h>
#include <event2/util.h>

#include "audit.h"
#include "authn.h"
#include "decide.h"
#include "http1.h"
#include "identity.h"
#include "list.h"
#include "proxy.h"
#include "trace.h"

struct worker;
struct durable_note;
struct evconnlistener;

enum conn_state {
    CS_HEAD,         /* reading (or waiting for) a request head */
    CS_BUSY,         /* a request is being forwarded */
    CS_WAIT_DURABLE, /* fsync "always": the response waits for its record */
    CS_CLOSING,      /* flushing the last response, then lingering */
    CS_PARKED,       /* an unknown kid waits for its issuer's refresh (conn_park) */
    CS_RATE_WAIT,    /* parked on a Redis decision: a global rate, or a link use */
};

/* Everything a request keeps after its head left the input buffer. */
struct request {
    struct runtime *rt; /* reference held from head to audit record */
    uint64_t t0_ns;
    int64_t ts_ms;
    char request_id[PROXY_REQUEST_ID_MAX + 1];        /* baton's own: the audit record's */
    char client_request_id[PROXY_REQUEST_ID_MAX + 1]; /* the client's valid one, or "" */
    char traceparent[56]; /* the one forwarded: baton's own span (trace.h) */
    bool has_trace;
    struct trace_ctx trace;
    bool trace_in; /* the client's traceparent was valid: its tracestate goes on */
    enum http1_method method;
    int version; /* 10 or 11 */
    bool keep_alive;
    bool routed; /* reached step 2: gets an audit record */
    /* copies (in the connection's arena) */
    const char *path;
    size_t path_len;
    const char *query;
    size_t query_len;
    const char *user_agent;
    size_t ua_len;
    size_t n_hdrs; /* hdrs[0..n_hdrs) (at the end) */
    /* stages */
    const struct runtime_step *step; /* d.policy's */
    bool have_idt;
    struct identity_token idt;
    struct audit_reservation rsv;
    bool reserved;
    bool forwarded;
    /* outcome */
    int upstream_status;
    uint64_t upstream_ns;
    uint64_t bytes_in, bytes_out; /* request body bytes forwarded; response body bytes
                                     queued to the client, baton's own error bodies included */
    uint64_t upstream_bytes;      /* response body bytes relayed from the upstream */
    /* signed URLs (signurl.h): a request that carries a link (d.link, d.lp), or a mint */
    const char *link_op; /* "use" | "mint": the record's link member */
    const char *link_method, *link_path;
    size_t link_path_len;
    bool continue_sent; /* the sign endpoint's head waits: 100 Continue sent */
    /* shared limits (README "Shared limits on Redis") */
    struct runtime_inflight *inflight; /* the max_in_flight counter entered; left at release */
    struct redis_wait *rate_wait;      /* the global rate decision parked on (CS_RATE_WAIT) */
    size_t head_len;                   /* while parked: the head's bytes, still in the input */
    bool body_pending;
    bool reads_paused; /* bytes came while parked: reading stopped until the verdict */
    bool park_link;    /* parked on a link use, not on the rate (resume there) */
    /* Last, in this order: request_release clears everything before d's tail
     * (decide.h: the link members, trace) and hdrs, which are set where they are used. */
    struct decide_outcome d; /* route, authn, authz, limits (decide.h); the sign
                                endpoint fills its authn and link members */
    struct audit_header hdrs[AUDIT_MAX_RECORD_HEADERS];
};

struct conn {
    struct worker *w;
    struct list node; /* in its worker's conns */
    struct bufferevent *bev;
    struct proxy_reader *rd; /* owned: reads bev (conn_read_on/off), freed before it */
    struct event timer;      /* the wake-up for deadline_ns (conn.c's timer rule) */
    uint64_t deadline_ns;    /* mono_ns the current timeout falls due; 0: none */
    uint64_t timer_at_ns;    /* the armed timer fires by then; 0: not armed */
    enum conn_state state;
    bool processing; /* inside conn_process: frees are deferred */
    bool head_started;
    uint64_t head_start_ns;
    size_t parse_prev;
    bool lingering;
    bool free_pending; /* conn_free was asked while processing */
    char peer_ip[INET6_ADDRSTRLEN];
    char peer[INET6_ADDRSTRLEN + 8];
    struct sockaddr_storage peer_sa;
    char *arena;
    size_t arena_cap;
    struct proxy_exchange *ex;
    struct authn_hint token_hint; /* the cache entry this connection's last token hit */
    struct request req;
    /* fsync "always" only: bytes the output has handed to the socket (or
     * dropped), and where in that count the forwarded response starts */
    uint64_t out_drained, resp_mark;
    uint64_t
        park_deadline_ns; /* mono_ns the current request may stay parked until; 0: never parked */
};

/*
 * The workers' listener callback (evconnlistener_new's, `arg` the struct
 * worker): takes `fd` as a new connection of that worker, or answers a canned
 * 503 and closes it when limits.max_connections connections are open.
 */
void conn_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                 void *arg);

/* Frees `c` (deferred while conn_process runs): a request still parked or
 * forwarding gets its audit record first. `c` is invalid after the call. */
void conn_free(struct conn *c);

/* A key-set refresh ended (CMD_KEYS) or an abort: a connection parked on an
 * unknown kid handles its head again. Nothing for a connection not parked. */
void conn_unpark(struct conn *c);

/* The audit writer's notice for `c`'s record arrived on the worker's thread
 * (fsync "always"/"group"): the held response goes out, or is withheld. */
void conn_durable_arrived(struct conn *c, const struct durable_note *note);

#endif
