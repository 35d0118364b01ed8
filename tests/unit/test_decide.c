/*
 * Unit tests of decide.c, without a socket: the order of the stages (path,
 * route, headers, authn, authz, in-flight, rate, body), dry_run, the limiter
 * interface and a parked rate verdict, explain's claims mode, signed-URL
 * authn, and a table of every reason in reason.h: each is one the decision
 * returns (and some case here produced it) or is named as another stage's
 * (the guard's, the mint's, the forward's). A reason added to reason.h that
 * is in neither list fails this suite.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "decide.h"
#include "http1.h"
#include "jwstest.h"
#include "path.h"
#include "signurl.h"
#include "tap.h"
#include "util.h"

#define ISS "https://idp.example"
#define AUD "baton"

static int64_t now;
static EVP_PKEY *key;
static struct baton_config cfg;
static struct cfg_issuer issuer;
static struct cfg_upstream upstream;
static struct tk_keys tk;
static struct authn *authn;
static struct policy_set *set;
static struct hdrclass *classes; /* decide_classes_new(&cfg, set) */
static struct signurl_keys *url_keys, *other_keys;
static char *record_headers[] = {(char *)"x-record-me"};
static bool seen[REASON__COUNT]; /* reasons some decision here returned */

static const char *POLICIES[] = {
    "main.json",
    "{\"step\":\"main\",\"route\":{\"path_prefix\":\"/api/\"},\"upstream\":\"up\",\n"
    " \"callers\":[{\"issuer\":\"idp\",\"claims\":{\"sub\":\"alice\"}}],\n"
    " \"allow\":[{\"methods\":[\"GET\",\"POST\"],\"paths\":[\"/api/**\"]}],\n"
    " \"require_headers\":{\"X-Need\":\"yes*\"},\n"
    " \"limits\":{\"max_body_bytes\":100,\"rate_per_s\":5,\"max_in_flight\":3}}",
    "dry.json",
    "{\"step\":\"dry\",\"mode\":\"dry_run\",\"route\":{\"path_prefix\":\"/dry/\"},\"upstream\":\"up\",\n"
    " \"callers\":[{\"issuer\":\"idp\",\"claims\":{\"sub\":\"alice\"}}],\n"
    " \"allow\":[{\"methods\":[\"GET\"],\"paths\":[\"/dry/ok\"]}],\n"
    " \"limits\":{\"rate_per_s\":5,\"rate_scope\":\"global\"}}",
    "exact.json",
    "{\"step\":\"exact\",\"route\":{\"host\":\"h.example\",\"path_prefix\":\"/api/\"},\"upstream\":\"up\",\n"
    " \"callers\":[{\"issuer\":\"idp\",\"claims\":{\"sub\":\"carol\"}}],\n"
    " \"allow\":[{\"methods\":[\"GET\"],\"paths\":[\"/api/**\"]}]}",
    "open.json",
    "{\"step\":\"open\",\"route\":{\"path_prefix\":\"/open/\"},\"upstream\":\"up\",\n"
    " \"callers\":[{\"issuer\":\"idp\",\"claims\":{\"sub\":\"*\"}}],\n"
    " \"allow\":[{\"methods\":[\"GET\"],\"paths\":[\"/open/**\"]}]}",
    "scoped.json",
    "{\"step\":\"scoped\",\"route\":{\"path_prefix\":\"/scoped/\"},\"upstream\":\"up\",\n"
    " \"callers\":[{\"issuer\":\"idp\",\"claims\":{\"sub\":\"alice\"},\"scopes\":[\"write\"]}],\n"
    " \"allow\":[{\"methods\":[\"GET\"],\"paths\":[\"/scoped/**\"]}]}",
};
#define N_POLICIES 5

/* ------------------------------------------------------------ a request */

struct req {
    const char *method, *host, *target, *auth;
    const char *hname[4], *hval[4];
    int nh;
    const char *conn; /* one name the Connection header lists, or NULL */
    enum http1_body body;
    uint64_t cl;
    const json_t *claims;
    bool claims_given;
};

static int hdr(void *ctx, const char *name, const char **value, size_t *len)
{
    const struct req *r = ctx;
    int n = 0;
    for (int i = 0; i < r->nh; i++)
        if (!ascii_casecmp_n(r->hname[i], strlen(r->hname[i]), name, strlen(name)) && n++ == 0) {
            *value = r->hval[i];
            *len = strlen(r->hval[i]);
        }
    return n;
}

/* A limiter that records its calls and answers what the test says. */
struct fake {
    int calls; /* in_flight: +1, rate: +10 */
    bool full; /* in_flight answer: false */
    enum decide_rate_verdict rate;
    unsigned retry;
    enum decide_rate_scope scope_seen;
};

static bool fake_in_flight(void *ctx, const struct policy *p, unsigned max)
{
    struct fake *f = ctx;
    (void)p;
    (void)max;
    f->calls += 1;
    return !f->full;
}

static enum decide_rate_verdict fake_rate(void *ctx, const struct policy *p,
                                          enum decide_rate_scope scope, unsigned *retry)
{
    struct fake *f = ctx;
    (void)p;
    f->calls += 10;
    f->scope_seen = scope;
    if (f->retry)
        *retry = f->retry;
    return f->rate;
}

static struct http1_conn_names conn_names;
static struct path_result pr;
static struct decide_request dr;

static void input(const struct req *r)
{
    enum reason pw = path_canonicalize(r->target, strlen(r->target), 8192, &pr);
    memset(&dr, 0, sizeof(dr));
    dr.method = r->method ? r->method : "GET";
    dr.hostname = r->host;
    dr.hostname_len = r->host ? strlen(r->host) : 0;
    dr.path_reason = pw;
    dr.path = pr.path;
    dr.path_len = pr.path_len;
    dr.query = pr.query;
    dr.query_len = pr.query_len;
    dr.header = hdr;
    dr.header_ctx = (void *)r;
    memset(&conn_names, 0, sizeof(conn_names));
    if (r->conn) {
        conn_names.n = 1;
        conn_names.names[0].name = r->conn;
        conn_names.names[0].len = strlen(r->conn);
        dr.connection = &conn_names;
    }
    dr.authorization = r->auth;
    dr.authorization_len = r->auth ? strlen(r->auth) : 0;
    dr.claims_given = r->claims_given;
    dr.claims = r->claims;
    dr.body = r->body;
    dr.content_length = r->cl;
    dr.now_s = now;
    dr.trace = true;
}

/* Decides `r` (limiter `f`, or none); the outcome stays in *out. */
static enum reason decide(const struct req *r, struct fake *f, struct authn *a,
                          struct decide_outcome *out)
{
    const struct decide_snapshot snap = {&cfg, set, a, url_keys, classes};
    const struct decide_limiter lim = {f, fake_in_flight, fake_rate};
    input(r);
    decide_request(&snap, &dr, NULL, NULL, f ? &lim : NULL, out);
    seen[out->reason] = true;
    if (out->would_deny)
        seen[out->deny_reason] = true;
    return out->reason;
}

/* Decides and releases; returns the reason, the stage in *stage. */
static enum reason decide1(const struct req *r, struct fake *f, enum decide_stage *stage)
{
    struct decide_outcome o;
    enum reason why = decide(r, f, authn, &o);
    if (stage)
        *stage = o.stage;
    decide_outcome_release(&o);
    return why;
}

static char *bearer_of(const char *t)
{
    return xasprintf("Bearer %s", t);
}

/* A token with this header and payload texts (signed by `key`). */
static char *jwt(const char *header, const char *payload)
{
    return tk_sign(key, "ES256", header, payload);
}

/* A good token for `sub` (Authorization value, owned). */
static char *good(const char *sub)
{
    char *p = xasprintf("{\"iss\":\"" ISS "\",\"sub\":\"%s\",\"aud\":\"" AUD "\",\"exp\":%lld}",
                        sub, (long long)now + 300);
    char *t = jwt("{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"k1\"}", p);
    char *b = bearer_of(t);
    free(p);
    free(t);
    return b;
}

/* ------------------------------------------------------------ the order */

static void test_order(void)
{
    char *alice = good("alice");
    enum decide_stage st;
    struct fake f = {0};

    {
        struct req r = {.target = "/api/../x", .auth = "Bearer x", .conn = "x-need"};
        is_int(decide1(&r, &f, &st), REASON_PATH_DOT_SEGMENT,
               "path: a dot segment is refused first");
        is_int(st, DECIDE_STAGE_PATH, "path: stage path");
    }
    {
        struct req r = {.target = "/nowhere", .conn = "x-need"};
        is_int(decide1(&r, &f, &st), REASON_NO_ROUTE, "route: before the headers and the token");
        is_int(st, DECIDE_STAGE_ROUTE, "route: stage route");
    }
    {
        struct req r = {.target = "/api/x", .conn = "X-Need"};
        is_int(decide1(&r, &f, &st), REASON_BAD_HEADER,
               "headers: Connection naming a require_headers header, before the token");
        is_int(st, DECIDE_STAGE_HEADERS, "headers: stage headers");
    }
    {
        struct req r = {.target = "/open/x", .conn = "x-record-me"};
        is_int(decide1(&r, &f, NULL), REASON_BAD_HEADER,
               "headers: Connection naming an audit.record_headers header");
    }
    {
        /* the classes built at load drive it: X-Need is policy-read (main),
         * but /open/ routes to a policy that does not read it */
        struct req r = {.target = "/open/x", .conn = "X-Need"};
        is_int(decide1(&r, &f, &st), REASON_TOKEN_MISSING,
               "headers: Connection naming another policy's require_headers header passes");
    }
    {
        struct req r = {.target = "/api/x", .conn = "X_Need"};
        is_int(decide1(&r, &f, &st), REASON_TOKEN_MISSING,
               "headers: Connection naming X_Need is not X-Need (exact spelling)");
    }
    {
        struct req r = {.target = "/open/x", .conn = "X-RECORD-ME"};
        is_int(decide1(&r, &f, NULL), REASON_BAD_HEADER,
               "headers: a record_headers name in any case hides");
    }
    {
        struct hdrclass *t = decide_classes_new(&cfg, set, NULL, 0);
        ok(t && hdrclass_of(t, "x-need", 6, NULL) == HDRCLASS_POLICY &&
               hdrclass_of(t, "X-Record-Me", 11, NULL) == HDRCLASS_RECORDED &&
               hdrclass_of(t, "x-other", 7, NULL) == 0,
           "classes: require_headers names are policy-read, record_headers recorded");
        hdrclass_free(t);
        cfg.assertion.enabled = true;
        cfg.assertion.header = (char *)"X-Caller";
        t = decide_classes_new(&cfg, set, NULL, 0);
        ok(t && hdrclass_of(t, "x_CALLER", 8, NULL) == HDRCLASS_CREDENTIAL,
           "classes: the assertion header is a credential in every '-'/'_' spelling");
        hdrclass_free(t);
        cfg.assertion.enabled = false;
        cfg.assertion.header = NULL;
    }
    {
        struct req r = {.target = "/api/x", .conn = "x-other"};
        is_int(decide1(&r, &f, &st), REASON_TOKEN_MISSING, "authn: no Authorization");
        is_int(st, DECIDE_STAGE_AUTHN, "authn: stage authn");
    }
    {
        struct req r = {.target = "/api/x", .method = "DELETE", .auth = alice};
        is_int(decide1(&r, &f, &st), REASON_NO_RULE_MATCH, "authz: after authn");
        is_int(st, DECIDE_STAGE_AUTHZ, "authz: stage authz");
    }
    is_int(f.calls, 0, "no limiter was called for a request refused before the limits");
    {
        struct req r = {.target = "/api/x",
                        .auth = alice,
                        .nh = 1,
                        .hname = {"X-Need"},
                        .hval = {"yes"},
                        .body = HTTP1_BODY_LENGTH,
                        .cl = 101};
        struct fake g = {0};
        is_int(decide1(&r, &g, &st), REASON_BODY_TOO_LARGE, "body: over the step's max_body_bytes");
        is_int(st, DECIDE_STAGE_BODY, "body: stage body");
        is_int(g.calls, 11, "body: decided after both limits were taken");
    }
    {
        struct req r = {.target = "/api/x",
                        .auth = alice,
                        .nh = 1,
                        .hname = {"X-Need"},
                        .hval = {"yes"},
                        .body = HTTP1_BODY_LENGTH,
                        .cl = 100};
        struct decide_outcome o;
        struct fake g = {0};
        is_int(decide(&r, &g, authn, &o), REASON_ALLOWED, "allowed at exactly the body cap");
        is_int(o.stage, DECIDE_STAGE_DONE, "allowed: stage done");
        is_int(o.decision, DECISION_ALLOW, "allowed: decision allow");
        is_int((int)o.max_body, 100, "allowed: the step's body cap");
        ok(o.authn_ok && o.token_present && o.have_ar, "allowed: authn recorded");
        is_str(o.ar.sub, "alice", "allowed: the caller");
        ok(o.have_trace && o.trace.caller_index == 0 && o.trace.rule_index == 0,
           "allowed: trace names callers[0] and allow[0]");
        is_int(g.scope_seen, DECIDE_RATE_INSTANCE, "the rate is asked with the step's scope");
        decide_outcome_release(&o);
        decide_outcome_release(&o); /* twice is safe */
    }
    {
        struct req r = {.target = "/api/x",
                        .auth = alice,
                        .nh = 1,
                        .hname = {"X-Need"},
                        .hval = {"yes"},
                        .body = HTTP1_BODY_CHUNKED};
        is_int(decide1(&r, NULL, NULL), REASON_ALLOWED, "chunked: allowed under a cap > 0");
    }
    free(alice);
}

/* ------------------------------------------------------------ limits */

static void test_limits(void)
{
    char *alice = good("alice");
    struct req r = {
        .target = "/api/x", .auth = alice, .nh = 1, .hname = {"X-Need"}, .hval = {"yes"}};
    struct decide_outcome o;

    {
        struct fake f = {.full = true};
        is_int(decide(&r, &f, authn, &o), REASON_TOO_MANY_IN_FLIGHT, "in_flight: a full counter");
        is_int(o.stage, DECIDE_STAGE_IN_FLIGHT, "in_flight: stage in_flight");
        is_int(o.retry_after_s, 1, "in_flight: Retry-After 1");
        is_int(f.calls, 1, "in_flight: the rate is not taken after an in-flight refusal");
        decide_outcome_release(&o);
    }
    {
        struct fake f = {.rate = DECIDE_RATE_DENY, .retry = 7};
        is_int(decide(&r, &f, authn, &o), REASON_RATE_LIMITED, "rate: the bucket is empty");
        is_int(o.stage, DECIDE_STAGE_RATE, "rate: stage rate");
        is_int(o.retry_after_s, 7, "rate: the limiter's Retry-After");
        is_int(f.calls, 11, "rate: in_flight first, then the rate");
        decide_outcome_release(&o);
    }
    {
        struct fake f = {.rate = DECIDE_RATE_UNAVAILABLE};
        is_int(decide(&r, &f, authn, &o), REASON_RATE_UNAVAILABLE, "rate: unavailable");
        is_int(o.retry_after_s, 1, "rate unavailable: Retry-After 1 by default");
        decide_outcome_release(&o);
    }
    {
        const struct decide_snapshot snap = {&cfg, set, authn, url_keys, classes};
        struct fake f = {.rate = DECIDE_RATE_PENDING};
        struct req big = r;
        decide(&r, &f, authn, &o);
        ok(o.pending && o.stage == DECIDE_STAGE_RATE,
           "rate: a parked verdict leaves the outcome pending");
        decide_resume(&snap, &dr, &o, DECIDE_RATE_ALLOW, 0);
        ok(!o.pending && o.reason == REASON_ALLOWED && o.stage == DECIDE_STAGE_DONE,
           "resume: allow goes on to done");
        decide_outcome_release(&o);
        decide(&r, &f, authn, &o);
        decide_resume(&snap, &dr, &o, DECIDE_RATE_DENY, 9);
        ok(o.reason == REASON_RATE_LIMITED && o.retry_after_s == 9,
           "resume: deny is rate_limited, its Retry-After");
        decide_outcome_release(&o);
        big.body = HTTP1_BODY_LENGTH;
        big.cl = 1000;
        decide(&big, &f, authn, &o);
        decide_resume(&snap, &dr, &o, DECIDE_RATE_ALLOW, 0);
        is_int(o.reason, REASON_BODY_TOO_LARGE,
               "resume: the body stage runs after the parked rate");
        decide_outcome_release(&o);
        decide(&r, &f, authn, &o);
        decide_resume(&snap, &dr, &o, DECIDE_RATE_PENDING, 0);
        is_int(o.reason, REASON_RATE_UNAVAILABLE, "resume without a verdict fails closed");
        decide_outcome_release(&o);
    }
    {
        /* explain: no limiter; the outcome says what the server would take */
        is_int(decide(&r, NULL, authn, &o), REASON_ALLOWED, "no limiter: nothing is taken");
        ok(!o.limits.checked && o.limits.scope == DECIDE_RATE_INSTANCE &&
               o.limits.rate_per_s == 5 && o.limits.max_in_flight == 3,
           "no limiter: the limits are reported, unchecked");
        decide_outcome_release(&o);
    }
    free(alice);
}

/* ------------------------------------------------------------ dry_run */

static void test_dry_run(void)
{
    char *bob = good("bob");
    struct req r = {.target = "/dry/ok", .auth = bob};
    struct decide_outcome o;
    struct fake f = {.rate = DECIDE_RATE_DENY, .retry = 4};

    is_int(decide(&r, &f, authn, &o), REASON_ALLOWED, "dry_run: an authz deny goes on");
    is_int(o.decision, DECISION_WOULD_DENY, "dry_run: decision would_deny");
    is_int(o.deny_reason, REASON_NO_CALLER_MATCH,
           "dry_run: the first deny is kept (authz, not rate)");
    is_int(o.retry_after_s, 0, "dry_run: no Retry-After");
    is_int(f.calls, 10, "dry_run: the rate is still taken");
    is_int(f.scope_seen, DECIDE_RATE_GLOBAL, "dry_run: a global step's scope");
    decide_outcome_release(&o);
    free(bob);
    {
        char *alice = good("alice");
        struct req a = {.target = "/dry/ok", .auth = alice};
        struct fake g = {.rate = DECIDE_RATE_UNAVAILABLE};
        is_int(decide(&a, &g, authn, &o), REASON_ALLOWED, "dry_run: a rate refusal goes on");
        ok(o.would_deny && o.deny_reason == REASON_RATE_UNAVAILABLE,
           "dry_run: recorded as rate_unavailable");
        decide_outcome_release(&o);
        free(alice);
    }
}

/* ------------------------------------------------------------ authn */

static void test_authn(void)
{
    struct {
        const char *auth; /* the Authorization value, or NULL: built from header/payload */
        const char *header, *payload;
        enum reason want;
        const char *what;
    } t[] = {
        {"Basic eA==", NULL, NULL, REASON_TOKEN_MISSING, "another scheme is no token"},
        {"Bearer", NULL, NULL, REASON_TOKEN_MALFORMED, "Bearer and nothing"},
        {"Bearer    ", NULL, NULL, REASON_TOKEN_MALFORMED, "Bearer and spaces"},
        {"Bearer not.a.jwt", NULL, NULL, REASON_TOKEN_BAD_ENCODING, "not base64url JSON"},
        {NULL, "{\"alg\":\"none\",\"kid\":\"k1\"}", "{\"iss\":\"" ISS "\"}", REASON_ALG_NONE,
         "alg none"},
        {NULL, "{\"alg\":\"ES256\",\"typ\":\"JWT\"}",
         "{\"iss\":\"" ISS "\",\"sub\":\"alice\",\"aud\":\"" AUD "\",\"exp\":%EXP}",
         REASON_KID_MISSING, "no kid"},
        {NULL, "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"k9\"}",
         "{\"iss\":\"" ISS "\",\"sub\":\"alice\",\"aud\":\"" AUD "\",\"exp\":%EXP}",
         REASON_UNKNOWN_KID, "unknown kid"},
        {NULL, "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"k1\"}",
         "{\"iss\":\"https://other\",\"sub\":\"alice\",\"aud\":\"" AUD "\",\"exp\":%EXP}",
         REASON_UNKNOWN_ISSUER, "unknown issuer"},
        {NULL, "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"k1\"}",
         "{\"sub\":\"alice\",\"aud\":\"" AUD "\",\"exp\":%EXP}", REASON_ISSUER_MISSING, "no iss"},
        {NULL, "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"k1\"}",
         "{\"iss\":\"" ISS "\",\"sub\":\"alice\",\"aud\":\"" AUD "\"}", REASON_EXP_MISSING,
         "no exp"},
        {NULL, "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"k1\"}",
         "{\"iss\":\"" ISS "\",\"sub\":\"alice\",\"aud\":\"" AUD "\",\"exp\":%OLD}", REASON_EXPIRED,
         "expired"},
        {NULL, "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"k1\"}",
         "{\"iss\":\"" ISS "\",\"sub\":\"alice\",\"aud\":\"" AUD "\",\"exp\":%EXP,\"nbf\":%EXP}",
         REASON_NOT_YET_VALID, "nbf in the future"},
        {NULL, "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"k1\"}",
         "{\"iss\":\"" ISS "\",\"sub\":\"alice\",\"aud\":\"" AUD "\",\"exp\":%EXP,\"iat\":%EXP}",
         REASON_IAT_IN_FUTURE, "iat in the future"},
        {NULL, "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"k1\"}",
         "{\"iss\":\"" ISS "\",\"sub\":\"alice\",\"aud\":\"elsewhere\",\"exp\":%EXP}",
         REASON_AUDIENCE_MISMATCH, "another audience"},
        {NULL, "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"k1\"}",
         "{\"iss\":\"" ISS "\",\"sub\":\"alice\",\"aud\":\"" AUD "\",\"exp\":\"soon\"}",
         REASON_BAD_CLAIM_TYPE, "exp not a number"},
        {NULL, "{\"alg\":\"ES256\",\"typ\":\"dpop+jwt\",\"kid\":\"k1\"}",
         "{\"iss\":\"" ISS "\",\"sub\":\"alice\",\"aud\":\"" AUD "\",\"exp\":%EXP}",
         REASON_TYP_NOT_ALLOWED, "typ dpop+jwt"},
        {NULL, "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"k1\",\"crit\":[\"x\"],\"x\":1}",
         "{\"iss\":\"" ISS "\",\"sub\":\"alice\",\"aud\":\"" AUD "\",\"exp\":%EXP}",
         REASON_CRIT_UNSUPPORTED, "crit"},
        {NULL, "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"k1\",\"jku\":\"https://x\"}",
         "{\"iss\":\"" ISS "\",\"sub\":\"alice\",\"aud\":\"" AUD "\",\"exp\":%EXP}",
         REASON_EMBEDDED_KEY, "jku"},
        {NULL, "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"k1\"}",
         "{\"iss\":\"" ISS "\",\"sub\":\"alice\",\"aud\":\"" AUD "\",\"exp\":%EXP}",
         REASON_ALG_NOT_ALLOWED, "HS256"},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        char *auth = NULL;
        if (!t[i].auth) {
            char exp[32], old[32], *p, *q, *tok;
            snprintf(exp, sizeof(exp), "%lld", (long long)now + 3000);
            snprintf(old, sizeof(old), "%lld", (long long)now - 3000);
            p = xstrdup(t[i].payload);
            while ((q = strstr(p, "%EXP")) || (q = strstr(p, "%OLD"))) {
                char *n = xasprintf("%.*s%s%s", (int)(q - p), p, q[1] == 'E' ? exp : old, q + 4);
                free(p);
                p = n;
            }
            tok = jwt(t[i].header, p);
            auth = bearer_of(tok);
            free(tok);
            free(p);
        }
        {
            struct req r = {.target = "/api/x", .auth = auth ? auth : t[i].auth};
            enum decide_stage st;
            is_int(decide1(&r, NULL, &st), t[i].want, "authn: %s", t[i].what);
            is_int(st, DECIDE_STAGE_AUTHN, "authn: %s: stage authn", t[i].what);
        }
        free(auth);
    }
    {
        char *alice = good("alice");
        char *big = xmalloc(20000);
        struct req r = {.target = "/api/x", .auth = alice};
        struct decide_outcome o;
        memset(big, 'a', 19999);
        memcpy(big, "Bearer ", 7);
        big[19999] = '\0';
        is_int(decide(&r, NULL, NULL, &o), REASON_KEYS_UNAVAILABLE,
               "authn: no verifier is our outage");
        is_int(o.decision, DECISION_ERROR, "keys_unavailable: decision error, not deny");
        decide_outcome_release(&o);
        r.auth = big;
        is_int(decide1(&r, NULL, NULL), REASON_TOKEN_TOO_LARGE, "authn: a token over the cap");
        {
            char *tok = xstrdup(alice + 7), *b;
            tok[strlen(tok) - 2] = tok[strlen(tok) - 2] == 'A' ? 'B' : 'A';
            b = bearer_of(tok);
            r.auth = b;
            is_int(decide1(&r, NULL, NULL), REASON_BAD_SIGNATURE, "authn: a changed signature");
            free(b);
            free(tok);
        }
        {
            char *b = bearer_of("eyJhbGciOiJFUzI1NiJ9.bm90IGpzb24.AAAA");
            r.auth = b;
            is_int(decide1(&r, NULL, NULL), REASON_TOKEN_BAD_JSON,
                   "authn: a payload that is not JSON");
            free(b);
        }
        free(big);
        free(alice);
    }
}

/* ------------------------------------------------------------ authz */

static void test_authz(void)
{
    char *alice = good("alice"), *bob = good("bob");
    struct decide_outcome o;
    {
        struct req r = {
            .target = "/api/x", .auth = bob, .nh = 1, .hname = {"X-Need"}, .hval = {"yes"}};
        is_int(decide(&r, NULL, authn, &o), REASON_NO_CALLER_MATCH, "authz: another caller");
        ok(o.have_trace && o.trace.miss_kind, "authz: the trace names the closest miss");
        decide_outcome_release(&o);
    }
    {
        struct req r = {.target = "/api/x", .auth = alice};
        is_int(decide1(&r, NULL, NULL), REASON_HEADER_MISMATCH, "authz: a required header missing");
    }
    {
        struct req r = {.target = "/scoped/x", .auth = alice};
        is_int(decide1(&r, NULL, NULL), REASON_SCOPE_MISSING, "authz: the caller lacks a scope");
    }
    {
        struct req r = {.target = "/api/x", .host = "h.example", .auth = alice};
        is_int(decide(&r, NULL, authn, &o), REASON_NO_CALLER_MATCH,
               "route: an exact host wins over \"*\" (carol's step)");
        is_str(policy_step(o.policy), "exact", "route: the exact host's step");
        decide_outcome_release(&o);
    }
    free(alice);
    free(bob);
}

/* ------------------------------------------------------------ claims (explain) */

static void test_claims(void)
{
    json_t *ok_claims = json_pack("{s:s, s:s}", "iss", ISS, "sub", "alice");
    json_t *no_iss = json_pack("{s:s}", "sub", "alice");
    json_t *num_iss = json_pack("{s:i, s:s}", "iss", 1, "sub", "alice");
    json_t *other = json_pack("{s:s, s:s}", "iss", "https://other", "sub", "alice");
    struct req r = {.target = "/open/x", .claims_given = true};
    struct decide_outcome o;

    r.claims = ok_claims;
    is_int(decide(&r, NULL, NULL, &o), REASON_ALLOWED, "claims: the issuer its iss names");
    ok(o.issuer == &issuer && o.authn_ok && !o.have_ar, "claims: issuer taken, no token result");
    decide_outcome_release(&o);
    r.claims = no_iss;
    is_int(decide(&r, NULL, NULL, &o), REASON_ISSUER_MISSING, "claims: no iss");
    ok(o.issuer_note != NULL, "claims: a note says why");
    decide_outcome_release(&o);
    r.claims = num_iss;
    is_int(decide1(&r, NULL, NULL), REASON_BAD_CLAIM_TYPE, "claims: iss not a string");
    r.claims = other;
    is_int(decide1(&r, NULL, NULL), REASON_UNKNOWN_ISSUER, "claims: iss of no issuer");
    json_decref(ok_claims);
    json_decref(no_iss);
    json_decref(num_iss);
    json_decref(other);
}

/* ------------------------------------------------------------ signed URLs */

static char *link_target(const struct signurl_keys *k, const char *path, int64_t exp)
{
    struct signurl_scope s = {"GET", "h2.example", 10, path, strlen(path), NULL, 0};
    char suffix[SIGNURL_SUFFIX_MAX], err[256];
    if (signurl_sign(k, &s, exp, 0, "cli", suffix, NULL, err, sizeof(err)) < 0) {
        tap_diag("sign: %s", err);
        return xstrdup(path);
    }
    return xasprintf("%s%s", path, suffix);
}

static void test_links(void)
{
    char *good_t = link_target(url_keys, "/open/a", now + 60);
    char *old_t = link_target(url_keys, "/open/a", now - 600);
    char *other_t = link_target(other_keys, "/open/a", now + 60);
    char *moved = link_target(url_keys, "/open/b", now + 60);
    struct decide_outcome o;
    struct req r = {.target = good_t, .host = "h2.example", .auth = "Bearer x"};

    is_int(decide(&r, NULL, authn, &o), REASON_BAD_REQUEST, "link: and Authorization is ambiguous");
    ok(o.link, "link: the outcome says a link was presented");
    decide_outcome_release(&o);
    r.auth = NULL;
    r.target = "/open/a?baton_exp=1";
    is_int(decide(&r, NULL, authn, &o), REASON_URL_BAD_SIGNATURE, "link: a malformed link");
    ok(o.link_err[0] != '\0', "link: why it did not parse, for the log");
    decide_outcome_release(&o);
    r.target = old_t;
    is_int(decide1(&r, NULL, NULL), REASON_URL_EXPIRED, "link: expired");
    r.target = other_t;
    is_int(decide1(&r, NULL, NULL), REASON_URL_UNKNOWN_KEY, "link: signed by a key not configured");
    {
        /* the path of another link with this one's signature */
        char *q = strchr(good_t, '?');
        char *t = xasprintf("/open/b%s", q ? q : "");
        r.target = t;
        is_int(decide1(&r, NULL, NULL), REASON_URL_SCOPE_MISMATCH, "link: used for another path");
        free(t);
    }
    r.target = good_t;
    is_int(decide(&r, NULL, authn, &o), REASON_NO_CALLER_MATCH,
           "link: verified, then authorized (this step names no minter)");
    ok(o.authn_ok && o.link_id[0], "link: authenticated, with its id");
    decide_outcome_release(&o);
    free(good_t);
    free(old_t);
    free(other_t);
    free(moved);
}

/* ------------------------------------------------------------ every reason */

/* Reasons the decision returns (each must have been produced above). */
static const enum reason DECIDED[] = {
    REASON_ALLOWED,
    /* path: path_canonicalize's verdicts, handed in and returned as they are */
    REASON_PATH_NOT_ORIGIN_FORM,
    REASON_PATH_ENCODED_SLASH,
    REASON_PATH_ENCODED_BACKSLASH,
    REASON_PATH_ENCODED_DOT,
    REASON_PATH_DOT_SEGMENT,
    REASON_PATH_EMPTY_SEGMENT,
    REASON_PATH_BACKSLASH,
    REASON_PATH_CONTROL,
    REASON_PATH_NON_ASCII,
    REASON_PATH_BAD_PERCENT,
    REASON_PATH_SEMICOLON,
    REASON_PATH_FRAGMENT,
    REASON_PATH_BAD_CHAR,
    REASON_PATH_BAD_QUERY,
    REASON_PATH_NONCANONICAL_ESCAPE,
    REASON_PATH_TOO_LONG,
    /* route, headers */
    REASON_NO_ROUTE,
    REASON_BAD_HEADER,
    /* authn */
    REASON_BAD_REQUEST,
    REASON_TOKEN_MISSING,
    REASON_TOKEN_MALFORMED,
    REASON_TOKEN_TOO_LARGE,
    REASON_TOKEN_BAD_ENCODING,
    REASON_TOKEN_BAD_JSON,
    REASON_ALG_NONE,
    REASON_ALG_NOT_ALLOWED,
    REASON_CRIT_UNSUPPORTED,
    REASON_EMBEDDED_KEY,
    REASON_ISSUER_MISSING,
    REASON_UNKNOWN_ISSUER,
    REASON_KID_MISSING,
    REASON_UNKNOWN_KID,
    REASON_KEYS_UNAVAILABLE,
    REASON_BAD_SIGNATURE,
    REASON_EXP_MISSING,
    REASON_EXPIRED,
    REASON_NOT_YET_VALID,
    REASON_IAT_IN_FUTURE,
    REASON_BAD_CLAIM_TYPE,
    REASON_AUDIENCE_MISMATCH,
    REASON_TYP_NOT_ALLOWED,
    REASON_URL_EXPIRED,
    REASON_URL_BAD_SIGNATURE,
    REASON_URL_UNKNOWN_KEY,
    REASON_URL_SCOPE_MISMATCH,
    /* authz, limits, body */
    REASON_NO_CALLER_MATCH,
    REASON_NO_RULE_MATCH,
    REASON_HEADER_MISMATCH,
    REASON_SCOPE_MISSING,
    REASON_TOO_MANY_IN_FLIGHT,
    REASON_RATE_LIMITED,
    REASON_RATE_UNAVAILABLE,
    REASON_BODY_TOO_LARGE,
};

/* authn_verify verdicts the decision returns as they are, that need a key
 * or issuer setup of their own: test_authn.c produces each. */
static const enum reason AUTHN_ONLY[] = {
    REASON_ALG_KEY_MISMATCH,
    REASON_TOKEN_USE_MISMATCH,
};

/* Reasons that are not the decision's: the guard's (http1.c, before it), the
 * server's after an allow (mint, assertion, audit, a link's use count,
 * forward), and the connection's. */
static const enum reason NOT_DECIDED[] = {
    REASON_BAD_FRAMING,
    REASON_BAD_HOST,
    REASON_DUPLICATE_AUTHORIZATION,
    REASON_HEADERS_TOO_LARGE,
    REASON_URI_TOO_LONG,
    REASON_HEADER_TIMEOUT,
    REASON_METHOD_NOT_IMPLEMENTED,
    REASON_VERSION_NOT_SUPPORTED,
    REASON_BAD_TARGET,
    REASON_IDENTITY_UNAVAILABLE,
    REASON_IDENTITY_PERMISSION_DENIED,
    REASON_IDENTITY_UNKNOWN_ACCOUNT,
    REASON_AUDIT_UNAVAILABLE,
    REASON_OVERLOADED,
    REASON_UPSTREAM_ERROR,
    REASON_UPSTREAM_TIMEOUT,
    REASON_CLIENT_CLOSED,
    REASON_DRAIN_ABORTED,
    REASON_INTERNAL,
    REASON_BODY_TIMEOUT,
    REASON_URL_USED,
    REASON_ASSERTION_UNAVAILABLE,
    REASON_UPSTREAM_UNRESOLVED,
};

static void test_paths(void)
{
    /* each path reason, from the target that produces it */
    static const char *targets[] = {
        "x",          "/a%2fb", "/a%5cb", "/a%2e/b", "/a/./b", "/a//b",  "/a\\b", "/a\x01",
        "/a\xc3\xa9", "/a%zz",  "/a;b",   "/a#b",    "/a b",   "/a?b c", "/a%41",
    };
    for (size_t i = 0; i < sizeof(targets) / sizeof(targets[0]); i++) {
        struct req r = {.target = targets[i]};
        enum decide_stage st;
        enum reason why = decide1(&r, NULL, &st);
        ok(why != REASON_ALLOWED && st == DECIDE_STAGE_PATH, "path: \"%s\" is %s at the path stage",
           targets[i], reason_code(why));
    }
    {
        char *longp = xmalloc(9000);
        struct req r = {.target = longp};
        memset(longp, 'a', 8999);
        longp[0] = '/';
        longp[8999] = '\0';
        is_int(decide1(&r, NULL, NULL), REASON_PATH_TOO_LONG, "path: over max_uri_bytes");
        free(longp);
    }
}

static bool listed(const enum reason *v, size_t n, enum reason r)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] == r)
            return true;
    return false;
}

static void test_every_reason(void)
{
#define N(a) (sizeof(a) / sizeof((a)[0]))
    for (int r = 0; r < REASON__COUNT; r++) {
        int in = listed(DECIDED, N(DECIDED), r) + listed(AUTHN_ONLY, N(AUTHN_ONLY), r) +
                 listed(NOT_DECIDED, N(NOT_DECIDED), r);
        is_int(in, 1, "reason %s is in exactly one list of this suite", reason_code(r));
        if (listed(DECIDED, N(DECIDED), r))
            ok(seen[r], "reason %s: some case here returned it", reason_code(r));
    }
#undef N
}

/* ------------------------------------------------------------ setup */

static char tmpdir[] = "/tmp/test_decide.XXXXXX";

static struct signurl_keys *keys_in(const char *name)
{
    char *path = xasprintf("%s/%s", tmpdir, name), err[512];
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    FILE *f = fopen(path, "w");
    struct cfg_url_key uk = {(char *)(strcmp(name, "k1.pem") ? "k2" : "k1"), path};
    struct cfg_url_signing us = {true, &uk, 1, 3600, 30};
    struct signurl_keys *ks;
    int bad;
    PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    chmod(path, 0600);
    EVP_PKEY_free(k);
    ks = signurl_keys_load(&us, err, sizeof(err), &bad);
    if (!ks)
        tap_diag("url keys: %s", err);
    unlink(path);
    free(path);
    return ks;
}

static void setup(void)
{
    static const char *auds[] = {AUD};
    struct policy_source src[N_POLICIES];
    struct diags d = DIAGS_INIT;
    json_t *arr = json_array();
    struct authn_keys provider;

    now = now_ms() / 1000;
    key = tk_ec("P-256");
    tk_issuer(&issuer, "idp", ISS, auds, 1, 1u << JWS_ES256);
    upstream.name = "up";
    cfg.file = "baton.json";
    cfg.issuers = &issuer;
    cfg.n_issuers = 1;
    cfg.upstreams = &upstream;
    cfg.n_upstreams = 1;
    cfg.limits.max_body_bytes = 1000;
    cfg.limits.max_uri_bytes = 8192;
    cfg.audit.record_headers = record_headers;
    cfg.audit.n_record_headers = 1;
    cfg.redis.enabled = true;
    for (size_t i = 0; i < N_POLICIES; i++) {
        src[i].file = POLICIES[2 * i];
        src[i].text = POLICIES[2 * i + 1];
        src[i].len = strlen(POLICIES[2 * i + 1]);
    }
    set = policy_set_build(&cfg, src, N_POLICIES, &d);
    if (set)
        classes = decide_classes_new(&cfg, set, NULL, 0);
    for (size_t i = 0; i < d.n; i++)
        tap_diag("%s:%d:%d: %s", d.v[i].file, d.v[i].line, d.v[i].col, d.v[i].msg);
    diags_free(&d);
    tk.cfg = &cfg;
    json_array_append_new(arr, tk_jwk(key, "k1", "ES256"));
    tk_keys_set(&tk, 0, tk_keyset(arr));
    json_decref(arr);
    provider = tk_keys_provider(&tk);
    authn = authn_new(&cfg, &provider);
    if (!mkdtemp(tmpdir))
        abort();
    url_keys = keys_in("k1.pem");
    other_keys = keys_in("k2.pem");
}

/*
 * conn.c looks for X-Request-Id and traceparent by name (http1_header_find)
 * only when some header of the head has that id, and takes the User-Agent by
 * id: on generated heads (the names in other cases, with '_' for '-', one
 * byte more or less, among the policy's and recorded names), "a header has the
 * id" must agree with a find by name, and the first by id be the one found.
 */
static void test_head_ids(void)
{
    static const char *const base[] = {"x-request-id", "traceparent", "user-agent",
                                       "x-need",       "x-record-me", "tracestate"};
    static const struct {
        enum hdrclass_id id;
        const char *name;
    } want[] = {{HDR_X_REQUEST_ID, "x-request-id"},
                {HDR_TRACEPARENT, "traceparent"},
                {HDR_USER_AGENT, "user-agent"}};
    uint64_t x = 0x243f6a8885a308d3ull;
    int bad = 0, heads = 0;
    struct http1_limits lim = {.max_header_bytes = 8192, .max_uri_bytes = 2048, .classes = classes};

    for (int round = 0; round < 20000; round++) {
        char buf[1024], names[4][40];
        size_t len = (size_t)snprintf(buf, sizeof(buf), "GET /api/x HTTP/1.1\r\nHost: a\r\n");
        int nh;
        struct http1_request req;
        size_t hl = 0;

        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        nh = 1 + (int)(x % 4);
        for (int k = 0; k < nh; k++) {
            uint64_t r = x >> (8 * k + 3);
            char *n = names[k];
            size_t nl;
            snprintf(n, sizeof(names[k]), "%s", base[(r >> 2) % 6]);
            nl = strlen(n);
            for (size_t i = 0; i < nl; i++) /* case flips */
                if ((r >> (i % 40)) & 1 && n[i] >= 'a' && n[i] <= 'z')
                    n[i] = (char)(n[i] - 32);
            switch (r & 3) {
            case 1: /* '_' for a '-' */
                for (size_t i = 0; i < nl; i++)
                    if (n[i] == '-') {
                        n[i] = '_';
                        break;
                    }
                break;
            case 2: /* one byte more */
                n[nl] = 'x';
                n[nl + 1] = '\0';
                break;
            case 3: /* one byte less */
                n[nl - 1] = '\0';
                break;
            }
            len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s: v%d\r\n", n, k);
        }
        len += (size_t)snprintf(buf + len, sizeof(buf) - len, "\r\n");
        if (http1_parse_request(buf, len, &lim, &req, &hl) != HTTP1_OK)
            continue; /* a name the guard refuses: no request to look into */
        heads++;
        for (size_t w = 0; w < sizeof(want) / sizeof(want[0]); w++) {
            const char *v = NULL, *by_id = NULL;
            bool has_id = false;
            unsigned found = http1_header_find(req.headers, req.n_headers, want[w].name,
                                               strlen(want[w].name), &v, NULL);
            for (unsigned i = 0; i < req.n_headers; i++)
                if (req.headers[i].id == want[w].id && !has_id) {
                    has_id = true;
                    by_id = req.headers[i].value;
                }
            if (has_id != (found > 0) || by_id != v) {
                if (bad++ < 3)
                    tap_diag("ids and names disagree on %s in: %.*s", want[w].name, (int)len, buf);
            }
        }
    }
    ok(bad == 0 && heads > 10000, "header ids agree with a find by name on %d heads", heads);
}

int main(void)
{
    setup();
    if (!ok(set && classes && url_keys && other_keys, "the config, policies and link keys load"))
        return 1;
    test_order();
    test_limits();
    test_dry_run();
    test_authn();
    test_authz();
    test_claims();
    test_links();
    test_paths();
    test_every_reason();
    test_head_ids();
    signurl_keys_free(url_keys);
    signurl_keys_free(other_keys);
    rmdir(tmpdir);
    authn_free(authn);
    hdrclass_free(classes);
    policy_set_free(set);
    tk_keys_clear(&tk);
    EVP_PKEY_free(key);
    return tap_done();
}
