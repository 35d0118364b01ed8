/*
 * decide.h: the request decision, once, for `serve` and `explain`.
 *
 * decide_request runs the stages between the guard and the mint, in the
 * order of docs/spec.md "One request, in order", and returns one typed
 * outcome:
 *   path      the target's canonical form (the caller ran path_canonicalize
 *             and hands its verdict in: the server needs the canonical path
 *             before routing for its own endpoints)
 *   route     policy_route on the hostname and canonical path (no_route)
 *   headers   Connection naming a header the policy reads or the audit
 *             record keeps (bad_header)
 *   authn     a signed-URL query (signurl_*), else the Bearer token
 *             (authn_verify with the caller's verified-token cache, NULL for
 *             explain), else claims handed in by explain --claims
 *   authz     policy_authorize / policy_authorize_link; a dry_run policy's
 *             deny is recorded (would_deny) and the request goes on
 *   in_flight the step's max_in_flight
 *   rate      the step's token bucket (instance) or Redis (global)
 *   body      the step's max_body_bytes against a declared length
 * The mint, the caller assertion, the audit reservation, a link's use count
 * and the forward are the server's, after an allow.
 *
 * Pure: no I/O, no libevent, no sockets, no clock (`now_s` comes in); the
 * only state it touches is what the caller passes: the verified-token cache
 * and hint, and the limiter.
 *
 * Limits have state (a worker's bucket, an in-flight counter, a verdict
 * parked on Redis). The choice made here: the caller passes a small limiter
 * interface (struct decide_limiter); decide calls it at the in_flight and
 * rate stages, in order, and applies the verdict (enforce or dry_run, the
 * Retry-After). The rate callback may answer DECIDE_RATE_PENDING (a global
 * verdict parked on Redis): decide_request then returns with `pending` set
 * and the stage "rate", and the caller, when the verdict arrives, calls
 * decide_resume with it to run the rest (the body stage). explain passes no
 * limiter: nothing is taken and the outcome's `limits` says what the server
 * would check (scope, rate, burst, max_in_flight). The alternative, returning
 * "check rate for step S" and letting the caller run the later stages, would
 * have put the order of the last three stages in two callers.
 */
#ifndef BATON_DECIDE_H
#define BATON_DECIDE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "authn.h"
#include "config.h"
#include "http1.h"
#include "policy.h"
#include "reason.h"
#include "signurl.h"

/* The stage a decision reached: the one that refused, or DONE on allow. */
enum decide_stage {
    DECIDE_STAGE_PATH,
    DECIDE_STAGE_ROUTE,
    DECIDE_STAGE_HEADERS,
    DECIDE_STAGE_AUTHN,
    DECIDE_STAGE_AUTHZ,
    DECIDE_STAGE_IN_FLIGHT,
    DECIDE_STAGE_RATE,
    DECIDE_STAGE_BODY,
    DECIDE_STAGE_DONE,
};

/* "path", "route", ... "done": for explain's output and the tests. */
const char *decide_stage_name(enum decide_stage s);

/* What the loaded snapshot gives the decision; all borrowed. */
struct decide_snapshot {
    const struct baton_config *cfg;
    const struct policy_set *policies;
    struct authn *authn;                 /* NULL: tokens are keys_unavailable */
    const struct signurl_keys *url_keys; /* NULL: no url_signing */
    /* required: decide_classes_new(cfg, policies); the head's headers were
     * classified by it (http1_limits.classes) */
    const struct hdrclass *classes;
};

/* The canonical request. Strings are borrowed for the call (and, for
 * decide_resume, until it returns). */
struct decide_request {
    const char *method;   /* NUL-terminated, as received */
    const char *hostname; /* http1's hostname (port and root dot stripped); NULL: none */
    size_t hostname_len;
    enum reason path_reason; /* path_canonicalize's verdict; ALLOWED: path below is canonical */
    const char *path;
    size_t path_len;
    const char *query; /* NULL: none */
    size_t query_len;
    /* policy_input.header over the request's headers */
    int (*header)(void *ctx, const char *name, const char **value, size_t *len);
    void *header_ctx;
    const struct http1_conn_names *connection; /* NULL: no Connection header */
    /* Authorization: the value (NULL: no header) */
    const char *authorization;
    size_t authorization_len;
    /* explain --claims: decide on these claims (borrowed) instead of a token;
     * `issuer` is --issuer's, or NULL to take the one whose iss they name */
    bool claims_given;
    const json_t *claims;
    const struct cfg_issuer *issuer;
    enum http1_body body; /* the body the head declares */
    uint64_t content_length;
    int64_t now_s;
    bool trace; /* fill the outcome's policy trace (explain: closest miss) */
};

enum decide_rate_verdict {
    DECIDE_RATE_ALLOW,
    DECIDE_RATE_DENY,        /* rate_limited */
    DECIDE_RATE_UNAVAILABLE, /* rate_unavailable (global, Redis down, on_failure deny) */
    DECIDE_RATE_PENDING,     /* asked Redis: decide_resume comes with the verdict */
};

enum decide_rate_scope {
    DECIDE_RATE_NONE,
    DECIDE_RATE_INSTANCE,
    DECIDE_RATE_GLOBAL,
};

/* The caller's limits, called on the worker's thread during the call. */
struct decide_limiter {
    void *ctx;
    /* The step's in-flight counter, max_in_flight > 0: true entered (the
     * caller leaves it when the request ends), false full. */
    bool (*in_flight)(void *ctx, const struct policy *p, unsigned max);
    /* The step's rate, rate_per_s > 0. *retry_after_s: the Retry-After of a
     * refusal. */
    enum decide_rate_verdict (*rate)(void *ctx, const struct policy *p,
                                     enum decide_rate_scope scope, unsigned *retry_after_s);
};

struct decide_outcome {
    enum reason reason;     /* ALLOWED, or the refusal */
    enum decision decision; /* ALLOW, DENY, WOULD_DENY (dry_run, goes on), ERROR (ours) */
    enum decide_stage stage;
    bool pending;                /* the rate callback parked: decide_resume follows */
    unsigned retry_after_s;      /* in_flight and rate refusals: the Retry-After; else 0 */
    const struct policy *policy; /* the step routed to, or NULL */
    /* authn */
    bool token_present; /* an Authorization: Bearer, usable or not */
    bool authn_ok;      /* the token, the link or the claims passed authentication */
    bool have_ar;       /* ar below is set: decide_outcome_release */
    struct authn_result ar;
    const struct cfg_issuer *issuer; /* the issuer that verified (or was named) */
    const char *issuer_note;         /* claims mode: why no issuer, or NULL (static) */
    bool link;                       /* a signed-URL request: lp, link_id, link_sig_sha */
    /* authz */
    bool would_deny;
    enum reason deny_reason; /* the dry_run deny let through */
    bool have_trace;
    /* limits: what the step checks (explain reports them unchecked) */
    struct {
        enum decide_rate_scope scope;
        double rate_per_s;
        unsigned burst;
        unsigned max_in_flight;
        bool checked; /* a limiter was called */
    } limits;
    uint64_t max_body; /* the step's body cap (body stage reached) */
    /* Last, and not cleared with the rest (decide_request clears the members
     * above only): each is set where it becomes meaningful. */
    struct signurl_params lp; /* with link, like the three below: cleared (decide_link_clear)
                                 when the link stage starts */
    char link_id[2 * SIGNURL_ID_BYTES + 1];
    char link_sig_sha[65];
    char link_err[160];        /* a link that did not parse: why (for a log line) */
    struct policy_trace trace; /* with request.trace: cleared when the decision starts */
};

/* Decides `req` (see the opening comment). `lim` NULL: no limits taken.
 * `out` is overwritten; release it with decide_outcome_release. */
void decide_request(const struct decide_snapshot *snap, const struct decide_request *req,
                    struct authn_cache *cache, struct authn_hint *hint,
                    const struct decide_limiter *lim, struct decide_outcome *out);

/* After DECIDE_RATE_PENDING: the parked verdict (not PENDING), then the rest.
 * `snap` and `req` describe the same request as before. */
void decide_resume(const struct decide_snapshot *snap, const struct decide_request *req,
                   struct decide_outcome *out, enum decide_rate_verdict v, unsigned retry_after_s);

/*
 * The header classes of cfg and the policies of set (hdrclass.h): the
 * built-in names, audit.record_headers (recorded), every require_headers
 * name (policy-read) and the caller assertion's header when configured
 * (credential). Built once per loaded configuration (runtime.c, explain), so
 * that a request reads each header's class instead of comparing its name
 * with these lists. Owned (hdrclass_free); NULL with err filled.
 */
struct hdrclass *decide_classes_new(const struct baton_config *cfg, const struct policy_set *set,
                                    char *err, size_t errlen);

/* The bearer credential of an Authorization value (`n` bytes): 1 found
 * (*tok points into `v`), 0 another scheme, -1 "Bearer" with nothing usable
 * after it. */
int decide_bearer(const char *v, size_t n, const char **tok, size_t *len);

/* Clears the outcome's link members (lp, link_id, link_sig_sha, link_err),
 * which decide_request leaves as they were unless the request is a link: for a
 * caller that fills them itself (the sign endpoint). */
void decide_link_clear(struct decide_outcome *out);

/* Drops what the outcome holds (the claims reference). Safe twice. */
void decide_outcome_release(struct decide_outcome *out);

#endif
