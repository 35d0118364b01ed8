/*
 * decide.c: the request decision (decide.h), shared by the server's pipeline
 * and `baton explain`. Each stage is a function that returns true to go on or
 * sets the outcome's refusal and returns false; decide_request runs them in
 * order, decide_resume runs the ones after a parked rate verdict.
 */
#include "decide.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "hdrclass.h"
#include "util.h"

const char *decide_stage_name(enum decide_stage s)
{
    switch (s) {
    case DECIDE_STAGE_PATH:
        return "path";
    case DECIDE_STAGE_ROUTE:
        return "route";
    case DECIDE_STAGE_HEADERS:
        return "headers";
    case DECIDE_STAGE_AUTHN:
        return "authn";
    case DECIDE_STAGE_AUTHZ:
        return "authz";
    case DECIDE_STAGE_IN_FLIGHT:
        return "in_flight";
    case DECIDE_STAGE_RATE:
        return "rate";
    case DECIDE_STAGE_BODY:
        return "body";
    case DECIDE_STAGE_DONE:
        return "done";
    }
    return "?";
}

_Static_assert(
    offsetof(struct decide_outcome, lp) < offsetof(struct decide_outcome, trace) &&
        offsetof(struct decide_outcome, trace) + sizeof(struct policy_trace) +
                _Alignof(struct decide_outcome) >
            sizeof(struct decide_outcome) &&
        offsetof(struct decide_outcome, lp) > offsetof(struct decide_outcome, max_body) &&
        offsetof(struct decide_outcome, link_id) > offsetof(struct decide_outcome, lp) &&
        offsetof(struct decide_outcome, link_sig_sha) > offsetof(struct decide_outcome, link_id) &&
        offsetof(struct decide_outcome, link_err) > offsetof(struct decide_outcome, link_sig_sha) &&
        offsetof(struct decide_outcome, trace) > offsetof(struct decide_outcome, link_err),
    "lp, link_id, link_sig_sha, link_err, then trace, end struct decide_outcome");

/* A refusal at the current stage: ours (keys) is an error, the rest denies. */
static bool refuse(struct decide_outcome *out, enum reason why)
{
    out->reason = why;
    out->decision = why == REASON_KEYS_UNAVAILABLE ? DECISION_ERROR : DECISION_DENY;
    return false;
}

/* A deny that a dry_run policy records and lets through. */
static bool deny_or_record(struct decide_outcome *out, enum reason why)
{
    if (!policy_dry_run(out->policy))
        return refuse(out, why);
    if (!out->would_deny) {
        out->would_deny = true;
        out->deny_reason = why;
    }
    return true;
}

/* Whether policy p's require_headers include name[0..len). */
static bool policy_reads(const struct policy *p, const char *name, size_t len)
{
    const char *want;

    for (size_t i = 0; (want = policy_header_name(p, i)) != NULL; i++)
        if (strlen(want) == len && ascii_casecmp_n(want, len, name, len) == 0)
            return true;
    return false;
}

/*
 * True when `Connection` names a header the step's policy reads
 * (require_headers) or the audit record keeps (record_headers): a hop-by-hop
 * strip would let the policy pass on a header that neither the upstream nor
 * the record then sees. With the snapshot's classes, each listed name is
 * classified once: a recorded one hides, a policy-read one hides when this
 * policy reads it, any other name cannot.
 */
static bool connection_hides(const struct http1_conn_names *conn, const struct policy *p,
                             const struct hdrclass *classes)
{
    if (!conn || conn->n == 0)
        return false;
    if (!classes)
        return true; /* no table to tell: fail closed (decide.h requires one) */
    for (unsigned i = 0; i < conn->n; i++) {
        unsigned cls = hdrclass_of(classes, conn->names[i].name, conn->names[i].len, NULL);
        if ((cls & HDRCLASS_RECORDED) ||
            ((cls & HDRCLASS_POLICY) && policy_reads(p, conn->names[i].name, conn->names[i].len)))
            return true;
    }
    return false;
}

struct hdrclass *decide_classes_new(const struct baton_config *cfg, const struct policy_set *set,
                                    char *err, size_t errlen)
{
    size_t n_pol = 0, n = policy_set_count(set), k = 0;
    const char **pol; /* owned array of borrowed names */
    const char *cred[1] = {cfg->assertion.header};
    struct hdrclass *t;

    for (size_t i = 0; i < n; i++)
        n_pol += policy_header_count(policy_set_at(set, i));
    pol = xcalloc(n_pol ? n_pol : 1, sizeof(*pol));
    for (size_t i = 0; i < n; i++) {
        const struct policy *p = policy_set_at(set, i);
        for (size_t j = 0; j < policy_header_count(p); j++)
            pol[k++] = policy_header_name(p, j);
    }
    t = hdrclass_new((const char *const *)cfg->audit.record_headers, cfg->audit.n_record_headers,
                     pol, k, cred, cfg->assertion.enabled && cfg->assertion.header ? 1 : 0, err,
                     errlen);
    free(pol);
    return t;
}

int decide_bearer(const char *v, size_t n, const char **tok, size_t *len)
{
    size_t i = 6;

    if (n < 6 || ascii_casecmp_n(v, 6, "bearer", 6) != 0)
        return 0;
    if (n == 6)
        return -1;
    if (v[6] != ' ')
        return 0;
    while (i < n && v[i] == ' ')
        i++;
    if (i == n)
        return -1;
    *tok = v + i;
    *len = n - i;
    return 1;
}

/*
 * authn for a request whose query carries a baton_* parameter: a request
 * that also sends Authorization is ambiguous (bad_request); else the link is
 * parsed strictly (a malformed one is url_bad_signature) and verified for the
 * request's own method, host and canonical path.
 */
static bool stage_link(const struct decide_snapshot *snap, const struct decide_request *req,
                       struct decide_outcome *out)
{
    unsigned char id[SIGNURL_ID_BYTES];
    enum reason why;

    out->link = true;
    decide_link_clear(out);
    if (req->authorization)
        return refuse(out, REASON_BAD_REQUEST);
    if (signurl_parse_query(req->query, req->query_len, &out->lp, out->link_err,
                            sizeof(out->link_err)) != 1)
        return refuse(out, REASON_URL_BAD_SIGNATURE);
    out->link_err[0] = '\0';
    signurl_link_id(&out->lp, id);
    signurl_id_hex(id, out->link_id);
    sha256_hex(out->lp.sig, sizeof(out->lp.sig), out->link_sig_sha);
    {
        struct signurl_scope sc = {
            .method = req->method,
            .host = req->hostname ? req->hostname : "",
            .host_len = req->hostname ? req->hostname_len : 0,
            .path = req->path,
            .path_len = req->path_len,
            .query = req->query,
            .query_len = req->query_len,
        };
        why = signurl_verify(snap->url_keys, &sc, &out->lp, req->now_s);
    }
    out->authn_ok = why == REASON_ALLOWED;
    return out->authn_ok || refuse(out, why);
}

/* authn for explain --claims: the issuer named, else the one whose iss the
 * claims carry; token checks (signature, expiry, audience) are skipped. */
static bool stage_claims(const struct decide_snapshot *snap, const struct decide_request *req,
                         struct decide_outcome *out)
{
    const json_t *iss = json_object_get(req->claims, "iss");

    out->issuer = req->issuer;
    if (!out->issuer) {
        if (!iss) {
            out->issuer_note = "the claims have no iss and --issuer is not given";
            return refuse(out, REASON_ISSUER_MISSING);
        }
        if (!json_is_string(iss)) {
            out->issuer_note = "the claims' iss is not a string";
            return refuse(out, REASON_BAD_CLAIM_TYPE);
        }
        out->issuer = config_issuer_by_iss(snap->cfg, json_string_value(iss),
                                           json_string_length(iss));
        if (!out->issuer) {
            out->issuer_note = "the claims' iss is the iss of no configured issuer";
            return refuse(out, REASON_UNKNOWN_ISSUER);
        }
    }
    out->authn_ok = true;
    return true;
}

static bool stage_authn(const struct decide_snapshot *snap, const struct decide_request *req,
                        struct authn_cache *cache, struct authn_hint *hint,
                        struct decide_outcome *out)
{
    const char *tok = NULL;
    size_t tok_len = 0;
    int have_tok;
    enum reason why;

    if (signurl_query_marked(req->query, req->query_len))
        return stage_link(snap, req, out);
    if (req->claims_given)
        return stage_claims(snap, req, out);
    have_tok = req->authorization
                   ? decide_bearer(req->authorization, req->authorization_len, &tok, &tok_len)
                   : 0;
    if (have_tok <= 0) {
        out->token_present = have_tok < 0;
        return refuse(out, have_tok < 0 ? REASON_TOKEN_MALFORMED : REASON_TOKEN_MISSING);
    }
    out->token_present = true;
    if (!snap->authn)
        return refuse(out, REASON_KEYS_UNAVAILABLE);
    out->have_ar = true;
    why = authn_verify(snap->authn, cache, hint, tok, tok_len, req->now_s, &out->ar);
    out->issuer = out->ar.issuer;
    if (why != REASON_ALLOWED)
        return refuse(out, why); /* unknown_kid with ar.kid_wait: the caller may wait */
    out->authn_ok = true;
    return true;
}

static bool stage_authz(const struct decide_request *req, struct decide_outcome *out)
{
    struct policy_input pin = {
        .method = req->method,
        .path = req->path,
        .path_len = req->path_len,
        .issuer_name = out->link ? NULL : out->issuer->name,
        .claims = out->link      ? NULL
                  : out->have_ar ? out->ar.claims
                                 : req->claims,
        .header = req->header,
        .header_ctx = req->header_ctx,
    };
    struct policy_trace *t = req->trace ? &out->trace : NULL;
    enum reason why = out->link ? policy_authorize_link(out->policy, &pin, out->lp.minter, t)
                                : policy_authorize(out->policy, &pin, t);
    out->have_trace = req->trace;
    if (why == REASON_ALLOWED)
        return true;
    return deny_or_record(out, why);
}

/* The rate verdict (now or parked) as the outcome's refusal or record. */
static bool rate_verdict(struct decide_outcome *out, enum decide_rate_verdict v, unsigned retry)
{
    if (v == DECIDE_RATE_ALLOW)
        return true;
    if (!policy_dry_run(out->policy))
        out->retry_after_s = retry;
    return deny_or_record(out,
                          v == DECIDE_RATE_DENY ? REASON_RATE_LIMITED : REASON_RATE_UNAVAILABLE);
}

static bool stage_body(const struct decide_snapshot *snap, const struct decide_request *req,
                       struct decide_outcome *out)
{
    const struct policy_limits *pl = policy_limits(out->policy);

    out->stage = DECIDE_STAGE_BODY;
    out->max_body = snap->cfg->limits.max_body_bytes;
    if (pl->max_body_bytes && pl->max_body_bytes < out->max_body)
        out->max_body = pl->max_body_bytes;
    if ((req->body == HTTP1_BODY_LENGTH && req->content_length > out->max_body) ||
        (req->body == HTTP1_BODY_CHUNKED && out->max_body == 0))
        return refuse(out, REASON_BODY_TOO_LARGE);
    return true;
}

static void done(struct decide_outcome *out)
{
    out->stage = DECIDE_STAGE_DONE;
    out->reason = REASON_ALLOWED;
    out->decision = out->would_deny ? DECISION_WOULD_DENY : DECISION_ALLOW;
}

void decide_request(const struct decide_snapshot *snap, const struct decide_request *req,
                    struct authn_cache *cache, struct authn_hint *hint,
                    const struct decide_limiter *lim, struct decide_outcome *out)
{
    const struct policy_limits *pl;

    /* Everything but the tail (the link members, trace: decide.h) is
     * cleared; the request path never reads the trace, the rest only on a link. */
    memset(out, 0, offsetof(struct decide_outcome, lp));
    if (req->trace)
        memset(&out->trace, 0, sizeof(out->trace));
    out->stage = DECIDE_STAGE_PATH;
    if (req->path_reason != REASON_ALLOWED) {
        refuse(out, req->path_reason);
        return;
    }
    out->stage = DECIDE_STAGE_ROUTE;
    out->policy = policy_route(snap->policies, req->hostname, req->hostname ? req->hostname_len : 0,
                               req->path, req->path_len);
    if (!out->policy) {
        refuse(out, REASON_NO_ROUTE);
        return;
    }
    pl = policy_limits(out->policy);
    out->limits.scope = !pl->rate_per_s                        ? DECIDE_RATE_NONE
                        : pl->rate_scope == POLICY_RATE_GLOBAL ? DECIDE_RATE_GLOBAL
                                                               : DECIDE_RATE_INSTANCE;
    out->limits.rate_per_s = pl->rate_per_s;
    out->limits.burst = pl->burst;
    out->limits.max_in_flight = pl->max_in_flight;

    out->stage = DECIDE_STAGE_HEADERS;
    if (connection_hides(req->connection, out->policy, snap->classes)) {
        refuse(out, REASON_BAD_HEADER);
        return;
    }
    out->stage = DECIDE_STAGE_AUTHN;
    if (!stage_authn(snap, req, cache, hint, out))
        return;
    out->stage = DECIDE_STAGE_AUTHZ;
    if (!stage_authz(req, out))
        return;

    out->stage = DECIDE_STAGE_IN_FLIGHT;
    if (lim && pl->max_in_flight) {
        out->limits.checked = true;
        if (!lim->in_flight(lim->ctx, out->policy, pl->max_in_flight)) {
            if (!policy_dry_run(out->policy))
                out->retry_after_s = 1;
            if (!deny_or_record(out, REASON_TOO_MANY_IN_FLIGHT))
                return;
        }
    }
    out->stage = DECIDE_STAGE_RATE;
    if (lim && out->limits.scope != DECIDE_RATE_NONE) {
        unsigned retry = 1;
        enum decide_rate_verdict v = lim->rate(lim->ctx, out->policy, out->limits.scope, &retry);
        out->limits.checked = true;
        if (v == DECIDE_RATE_PENDING) {
            out->pending = true;
            return;
        }
        if (!rate_verdict(out, v, retry))
            return;
    }
    if (stage_body(snap, req, out))
        done(out);
}

void decide_resume(const struct decide_snapshot *snap, const struct decide_request *req,
                   struct decide_outcome *out, enum decide_rate_verdict v, unsigned retry_after_s)
{
    out->pending = false;
    if (v == DECIDE_RATE_PENDING) { /* not a verdict: fail closed */
        out->stage = DECIDE_STAGE_RATE;
        refuse(out, REASON_RATE_UNAVAILABLE);
        out->retry_after_s = 1;
        return;
    }
    if (rate_verdict(out, v, retry_after_s) && stage_body(snap, req, out))
        done(out);
}

void decide_link_clear(struct decide_outcome *out)
{
    memset(&out->lp, 0,
           offsetof(struct decide_outcome, trace) - offsetof(struct decide_outcome, lp));
}

void decide_outcome_release(struct decide_outcome *out)
{
    if (out->have_ar)
        authn_result_release(&out->ar);
    out->have_ar = false;
}
