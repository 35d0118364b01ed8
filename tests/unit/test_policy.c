/*
 * Unit tests of policy_load.c and policy_match.c: loading (with the exact position of each error),
 * routing order, claims patterns, path patterns, methods, required headers,
 * scopes, dry_run, and the trace explain prints. The config is built in the
 * test: issuers "aws" and "cognito", upstreams "cleanup", "billing" and
 * "approvals", as in conf/baton.json.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jload.h"
#include "policy.h"
#include "util.h"
#include "tap.h"
#include "readme_tables.h"

static struct cfg_issuer issuers[2];
static struct cfg_upstream upstreams[3];
static struct baton_config cfg;

static void cfg_init(void)
{
    issuers[0].name = "aws";
    issuers[0].issuer = "https://0f6e0e5a.tokens.sts.global.api.aws";
    issuers[1].name = "cognito";
    issuers[1].issuer = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Example";
    upstreams[0].name = "cleanup";
    upstreams[1].name = "billing";
    upstreams[2].name = "approvals";
    cfg.file = "conf/baton.json";
    cfg.issuers = issuers;
    cfg.n_issuers = 2;
    cfg.upstreams = upstreams;
    cfg.n_upstreams = 3;
}

/* Builds a set from (name, text) pairs; the diagnostics go to `d`. */
static struct policy_set *build_n(struct diags *d, size_t n, const char *const *files)
{
    struct policy_source src[16];
    for (size_t i = 0; i < n; i++) {
        src[i].file = files[2 * i];
        src[i].text = files[2 * i + 1];
        src[i].len = strlen(files[2 * i + 1]);
    }
    return policy_set_build(&cfg, src, n, d);
}

static struct policy_set *build1(struct diags *d, const char *text)
{
    const char *files[] = {"p.json", text};
    return build_n(d, 1, files);
}

/* All diagnostics as "file:line:col: msg\n" lines (owned). */
static char *diag_text(const struct diags *d)
{
    char *s = xstrdup("");
    for (size_t i = 0; i < d->n; i++) {
        char *t = xasprintf("%s%s:%d:%d: %s\n", s, d->v[i].file, d->v[i].line, d->v[i].col,
                            d->v[i].msg);
        free(s);
        s = t;
    }
    return s;
}

/* ------------------------------------------------------------ request input */

struct hdrs {
    const char *name[8];
    const char *value[8];
    int n;
};

static int hdr_lookup(void *ctx, const char *name, const char **value, size_t *len)
{
    struct hdrs *h = ctx;
    int count = 0;
    for (int i = 0; i < h->n; i++)
        if (ascii_casecmp_n(h->name[i], strlen(h->name[i]), name, strlen(name)) == 0) {
            if (count++ == 0) {
                *value = h->value[i];
                *len = strlen(h->value[i]);
            }
        }
    return count;
}

static enum reason decide(const struct policy *p, const char *issuer, const char *claims_json,
                          const char *method, const char *path, struct hdrs *h,
                          struct policy_trace *t)
{
    json_error_t e;
    json_t *claims = json_loads(claims_json, 0, &e);
    struct policy_input in = {method, path, strlen(path), issuer, claims, hdr_lookup, h};
    enum reason r;
    struct hdrs none = {{NULL}, {NULL}, 0};
    if (!claims)
        tap_diag("bad test claims: %s", e.text);
    if (!h)
        in.header_ctx = &none;
    r = policy_authorize(p, &in, t);
    json_decref(claims);
    return r;
}

/* ------------------------------------------------------------ fixtures */

static const char billing[] =
    "{\n"
    "  \"step\": \"billing-reconcile\",\n"
    "  \"description\": \"Reconcile billing after each deployment\",\n"
    "  \"mode\": \"enforce\",\n"
    "  \"route\": { \"host\": \"*\", \"path_prefix\": \"/billing/\" },\n"
    "  \"upstream\": \"billing\",\n"
    "  \"callers\": [{\n"
    "    \"issuer\": \"aws\",\n"
    "    \"claims\": { \"sub\": \"arn:aws:iam::123456789012:role/sfn-billing\",\n"
    "                \"https://sts.amazonaws.com/\": { \"aws_account\": \"123456789012\" } }\n"
    "  }, {\n"
    "    \"issuer\": \"cognito\",\n"
    "    \"claims\": { \"client_id\": \"4b1c2d3e\", \"token_use\": \"access\" },\n"
    "    \"scopes\": [\"billing/reconcile\"]\n"
    "  }],\n"
    "  \"allow\": [{ \"methods\": [\"POST\"], \"paths\": [\"/billing/reconcile\", \"/billing/runs/*\"] },\n"
    "            { \"methods\": [\"GET\"], \"paths\": [\"/billing/runs/**\"] }],\n"
    "  \"require_headers\": { \"X-Sfn-Execution\": \"arn:aws:states:*:123456789012:execution:*\" },\n"
    "  \"service_account\": \"billing-step@proj.iam.gserviceaccount.com\",\n"
    "  \"limits\": { \"max_body_bytes\": 1048576, \"timeout_ms\": 60000, \"rate_per_s\": 20 }\n"
    "}\n";

#define AWS_OK                                                               \
    "{\"sub\":\"arn:aws:iam::123456789012:role/sfn-billing\",\"iss\":\"x\"," \
    "\"https://sts.amazonaws.com/\":{\"aws_account\":\"123456789012\",\"source_region\":\"us-east-1\"}}"
#define EXEC_OK "arn:aws:states:us-east-1:123456789012:execution:reconcile:7f3a"

static void test_load_accessors(void)
{
    struct diags d = DIAGS_INIT;
    struct policy_set *set = build1(&d, billing);
    const struct policy *p;
    char hex[65];

    if (!ok(set != NULL, "the docs/spec.md sample policy loads")) {
        char *s = diag_text(&d);
        tap_diag("%s", s);
        free(s);
        diags_free(&d);
        return;
    }
    is_int(policy_set_count(set), 1, "one policy in the set");
    p = policy_set_at(set, 0);
    is_str(policy_step(p), "billing-reconcile", "policy_step");
    is_str(policy_description(p), "Reconcile billing after each deployment", "policy_description");
    is_str(policy_file(p), "p.json", "policy_file is the source name");
    sha256_hex(billing, strlen(billing), hex);
    is_str(policy_hash_hex(p), hex, "policy_hash_hex is the SHA-256 of the file bytes");
    is_str(policy_host(p), "*", "policy_host");
    is_str(policy_path_prefix(p), "/billing/", "policy_path_prefix");
    ok(policy_upstream(p) == &upstreams[1],
       "policy_upstream points at the config's billing upstream");
    is_str(policy_service_account(p), "billing-step@proj.iam.gserviceaccount.com",
           "policy_service_account");
    ok(!policy_dry_run(p), "mode enforce is not dry_run");
    is_int(policy_limits(p)->max_body_bytes, 1048576, "limits.max_body_bytes");
    is_int(policy_limits(p)->timeout_ms, 60000, "limits.timeout_ms");
    is_int(policy_limits(p)->rate_per_s, 20, "limits.rate_per_s");
    is_int(policy_limits(p)->burst, 20, "limits.burst defaults to rate_per_s");
    is_int(policy_caller_count(p), 2, "two callers entries");
    is_int(policy_rule_count(p), 2, "two allow rules");
    policy_set_free(set);
    diags_free(&d);
}

static void test_minimal_defaults(void)
{
    struct diags d = DIAGS_INIT;
    struct policy_set *set = build1(
        &d, "{\"step\":\"s\",\"route\":{\"path_prefix\":\"/\"},\"upstream\":\"cleanup\","
            "\"callers\":[{\"issuer\":\"aws\",\"claims\":{\"sub\":\"x\"}}],"
            "\"allow\":[{\"methods\":[\"GET\"],\"paths\":[\"/**\"]}]}");
    const struct policy *p = policy_set_at(set, 0);
    if (!ok(set && p, "a minimal policy loads"))
        goto out;
    is_str(policy_host(p), "*", "route.host defaults to \"*\"");
    ok(policy_service_account(p) == NULL, "service_account absent is NULL");
    is_str(policy_description(p), "", "description absent is \"\"");
    ok(!policy_dry_run(p), "mode defaults to enforce");
    ok(policy_limits(p)->max_body_bytes == 0 && policy_limits(p)->timeout_ms == 0 &&
           policy_limits(p)->rate_per_s == 0 && policy_limits(p)->burst == 0,
       "limits absent are all 0 (unset)");
out:
    policy_set_free(set);
    diags_free(&d);
}

/* ------------------------------------------------------------ routing */

static char *route_policy(const char *step, const char *host, const char *prefix)
{
    return xasprintf(
        "{\"step\":\"%s\",\"route\":{\"host\":\"%s\",\"path_prefix\":\"%s\"},"
        "\"upstream\":\"billing\",\"callers\":[{\"issuer\":\"aws\",\"claims\":{\"sub\":\"x\"}}],"
        "\"allow\":[{\"methods\":[\"GET\"],\"paths\":[\"/**\"]}]}",
        step, host, prefix);
}

static void test_routing(void)
{
    static const char *const def[][3] = {
        {"any-root", "*", "/"},
        {"any-billing", "*", "/billing/"},
        {"any-billing-runs", "*", "/billing/runs"},
        {"any-api-v1", "*", "/api/v1"},
        {"exact-api", "API.Example.com", "/api/"},
        {"exact-api-root", "api.example.com", "/"},
        {"other-host", "other.example.com", "/billing/"},
    };
    static const struct {
        const char *host, *path, *want;
    } cases[] = {
        {"gw.example.com", "/billing/reconcile", "any-billing"},
        {"gw.example.com", "/billing/", "any-billing"},
        {"gw.example.com", "/billing", "any-root"}, /* "/billing/" needs the slash */
        {"gw.example.com", "/billing/runs", "any-billing-runs"},
        {"gw.example.com", "/billing/runs/7", "any-billing-runs"},
        {"gw.example.com", "/billing/runsx", "any-billing"}, /* segment boundary */
        {"gw.example.com", "/api/v1", "any-api-v1"},
        {"gw.example.com", "/api/v1/x/y", "any-api-v1"},
        {"gw.example.com", "/api/v10", "any-root"}, /* not under /api/v1 */
        {"gw.example.com", "/", "any-root"},
        {"api.example.com", "/api/x", "exact-api"},
        {"API.EXAMPLE.COM", "/api/x", "exact-api"},                  /* host case-insensitive */
        {"api.example.com", "/billing/reconcile", "exact-api-root"}, /* exact host before "*" */
        {"api.example.com", "/", "exact-api-root"},
        {"other.example.com", "/billing/x", "other-host"},
        {"other.example.com", "/api/v1", "any-api-v1"}, /* no exact match: falls to "*" */
        {NULL, "/billing/x", "any-billing"},            /* no host: only "*" */
    };
    const char *files[2 * 7];
    char *texts[7];
    struct diags d = DIAGS_INIT;
    struct policy_set *set;

    for (int i = 0; i < 7; i++) {
        texts[i] = route_policy(def[i][0], def[i][1], def[i][2]);
        files[2 * i] = def[i][0];
        files[2 * i + 1] = texts[i];
    }
    set = build_n(&d, 7, files);
    if (ok(set != NULL, "seven routes load")) {
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            const struct policy *p = policy_route(set, cases[i].host,
                                                  cases[i].host ? strlen(cases[i].host) : 0,
                                                  cases[i].path, strlen(cases[i].path));
            is_str(p ? policy_step(p) : NULL, cases[i].want, "route %s %s -> %s",
                   cases[i].host ? cases[i].host : "(no host)", cases[i].path, cases[i].want);
        }
        /* precedence order for `baton check`: exact hosts first, longest prefix first */
        is_str(policy_step(policy_set_at(set, 0)), "exact-api",
               "listing starts with the exact host, longest prefix");
        is_str(policy_step(policy_set_at(set, 1)), "exact-api-root", "then its shorter prefix");
        is_str(policy_step(policy_set_at(set, 6)), "any-root", "\"*\" with \"/\" comes last");
    }
    policy_set_free(set);
    diags_free(&d);

    /* no catch-all: no route */
    {
        char *t = route_policy("only", "*", "/billing/");
        const char *f[] = {"only.json", t};
        set = build_n(&d, 1, f);
        ok(set && policy_route(set, "h", 1, "/other", 6) == NULL,
           "a path under no prefix has no route");
        ok(set && policy_route(set, "h", 1, "/billing", 8) == NULL,
           "\"/billing\" is not under \"/billing/\"");
        policy_set_free(set);
        diags_free(&d);
        free(t);
    }
    {
        struct policy_source none;
        set = policy_set_build(&cfg, &none, 0, &d);
        ok(set && policy_route(set, "h", 1, "/", 1) == NULL, "an empty set routes nothing");
        policy_set_free(set);
    }
    for (int i = 0; i < 7; i++)
        free(texts[i]);
}

static void test_duplicates_across_files(void)
{
    struct diags d = DIAGS_INIT;
    char *a = route_policy("step-a", "*", "/billing/");
    char *b = route_policy("step-b", "*", "/billing/");
    char *c = route_policy("step-a", "api.example.com", "/x");
    char *e = route_policy("step-e", "API.example.com", "/x");
    const char *files[] = {"policies/a.json", a, "policies/b.json", b};
    const char *files2[] = {"policies/a.json", a, "policies/c.json", c};
    const char *files3[] = {"policies/c.json", c, "policies/e.json", e};
    struct policy_set *set = build_n(&d, 2, files);
    char *s = diag_text(&d);

    ok(set == NULL, "two policies with the same host and path_prefix do not load");
    is_str(s,
           "policies/b.json:1:26: route (host \"*\", path_prefix \"/billing/\") is also claimed "
           "by policies/a.json:1:26\n",
           "the duplicate route error names both files with positions");
    free(s);
    diags_free(&d);

    set = build_n(&d, 2, files2);
    s = diag_text(&d);
    ok(set == NULL, "two policies with the same step name do not load");
    is_str(s, "policies/c.json:1:9: step \"step-a\" is also defined by policies/a.json:1:9\n",
           "the duplicate step error names both files");
    free(s);
    diags_free(&d);

    set = build_n(&d, 2, files3);
    ok(set == NULL && d.n == 1 && strstr(d.v[0].msg, "also claimed by policies/c.json"),
       "hosts differing only in case are the same route");
    diags_free(&d);
    free(a);
    free(b);
    free(c);
    free(e);
}

/* ------------------------------------------------------------ claims */

static void test_claims_patterns(void)
{
    static const struct {
        const char *pattern, *claims;
        int want;
        const char *what;
    } t[] = {
        {"{\"sub\":\"abc\"}", "{\"sub\":\"abc\"}", 1, "exact string"},
        {"{\"sub\":\"abc\"}", "{\"sub\":\"abcd\"}", 0, "exact string is not a prefix match"},
        {"{\"sub\":\"abc\"}", "{\"sub\":\"ABC\"}", 0, "exact string is case-sensitive"},
        {"{\"sub\":\"abc\"}", "{\"sub\":\"abc\",\"other\":1}", 1,
         "extra claims are ignored (subset)"},
        {"{\"sub\":\"abc\"}", "{\"other\":\"abc\"}", 0, "absent claim never matches"},
        {"{\"sub\":\"abc\"}", "{\"sub\":null}", 0, "null claim does not match a string"},
        {"{\"sub\":\"abc\"}", "{\"sub\":[\"abc\"]}", 0,
         "array claim never matches a string pattern"},
        {"{\"sub\":\"abc\"}", "{\"sub\":{\"abc\":1}}", 0, "object claim does not match a string"},
        {"{\"sub\":\"arn:aws:iam::*:role/sfn-*\"}",
         "{\"sub\":\"arn:aws:iam::123456789012:role/sfn-billing\"}", 1,
         "glob * spans ':' and '/' in ARNs"},
        {"{\"sub\":\"arn:aws:iam::*:role/sfn-*\"}", "{\"sub\":\"arn:aws:iam::123:role/lambda-x\"}",
         0, "glob literal parts must match"},
        {"{\"sub\":\"*\"}", "{\"sub\":\"\"}", 1, "lone * matches the empty string"},
        {"{\"sub\":\"*\"}", "{\"sub\":5}", 0, "lone * matches strings only"},
        {"{\"sub\":\"*\"}", "{}", 0, "lone * does not match an absent claim"},
        {"{\"sub\":\"a*b*c\"}", "{\"sub\":\"aXbYbZc\"}", 1, "several stars backtrack"},
        {"{\"sub\":\"a*b*c\"}", "{\"sub\":\"aXbYbZcd\"}", 0, "glob is anchored at the end"},
        {"{\"sub\":\"*-prod\"}", "{\"sub\":\"x-prod\"}", 1, "leading star"},
        {"{\"sub\":\"*-prod\"}", "{\"sub\":\"x-prod-2\"}", 0, "leading star, anchored end"},
        {"{\"sub\":\"x**y\"}", "{\"sub\":\"xy\"}", 1, "double star is still any run"},
        {"{\"n\":5}", "{\"n\":5}", 1, "integer exact"},
        {"{\"n\":5}", "{\"n\":6}", 0, "integer differs"},
        {"{\"n\":5}", "{\"n\":\"5\"}", 0, "string \"5\" does not match integer 5"},
        {"{\"n\":5}", "{\"n\":5.0}", 0, "real 5.0 does not match integer 5"},
        {"{\"n\":2.5}", "{\"n\":2.5}", 1, "real exact"},
        {"{\"b\":true}", "{\"b\":true}", 1, "boolean true"},
        {"{\"b\":true}", "{\"b\":false}", 0, "boolean differs"},
        {"{\"b\":false}", "{\"b\":0}", 0, "0 is not false"},
        {"{\"b\":false}", "{\"b\":\"false\"}", 0, "\"false\" is not false"},
        {"{\"x\":{\"y\":{\"z\":\"v\"}}}", "{\"x\":{\"y\":{\"z\":\"v\",\"w\":1}}}", 1,
         "nested objects"},
        {"{\"x\":{\"y\":{\"z\":\"v\"}}}", "{\"x\":{\"y\":\"v\"}}", 0,
         "nested pattern vs string claim"},
        {"{\"x\":{\"y\":{\"z\":\"v\"}}}", "{\"x\":{\"z\":\"v\"}}", 0, "nesting level matters"},
        {"{\"x\":{\"y\":\"v\"}}", "{\"x.y\":\"v\"}", 0, "dotted claim name is not nesting"},
        {"{\"https://sts.amazonaws.com/\":{\"aws_account\":\"123\"}}",
         "{\"https://sts.amazonaws.com/\":{\"aws_account\":\"123\"}}", 1, "AWS namespaced claim"},
        {"{\"https://sts.amazonaws.com/\":{\"aws_account\":\"123\"}}",
         "{\"https://sts.amazonaws.com/\":{\"aws_account\":\"124\"}}", 0, "AWS account differs"},
        {"{\"sub\":[\"a\",\"b\"]}", "{\"sub\":\"b\"}", 1, "array pattern: any of its values"},
        {"{\"sub\":[\"a\",\"b\"]}", "{\"sub\":\"c\"}", 0, "array pattern: none of its values"},
        {"{\"sub\":[\"a\",\"b\"]}", "{\"sub\":[\"a\",\"b\"]}", 0, "array pattern vs array claim"},
        {"{\"sub\":[\"x-*\",7]}", "{\"sub\":7}", 1, "array of a glob and an integer"},
        {"{\"sub\":[\"x-*\",7]}", "{\"sub\":\"x-1\"}", 1, "array element glob"},
        {"{\"sub\":[{\"a\":1},{\"b\":2}]}", "{\"sub\":{\"b\":2,\"c\":3}}", 1,
         "array of object patterns"},
        {"{\"sub\":\"a\",\"client_id\":\"c\"}", "{\"sub\":\"a\"}", 0, "every member must match"},
        {"{\"sub\":\"a*\"}", "{\"sub\":\"a\"}", 1, "trailing star matches nothing too"},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct diags d = DIAGS_INIT;
        char *text;
        struct policy_set *set;
        text = xasprintf(
            "{\"step\":\"c\",\"route\":{\"path_prefix\":\"/\"},\"upstream\":\"billing\","
            "\"callers\":[{\"issuer\":\"aws\",\"claims\":%s}],"
            "\"allow\":[{\"methods\":[\"GET\"],\"paths\":[\"/x\"]}]}",
            t[i].pattern);
        set = build1(&d, text);
        if (!set) {
            ok(0, "claims pattern %s loads", t[i].pattern);
            diags_free(&d);
            free(text);
            continue;
        }
        is_int(decide(policy_set_at(set, 0), "aws", t[i].claims, "GET", "/x", NULL, NULL),
               t[i].want ? REASON_ALLOWED : REASON_NO_CALLER_MATCH, "claims: %s (%s vs %s)",
               t[i].what, t[i].pattern, t[i].claims);
        policy_set_free(set);
        diags_free(&d);
        free(text);
    }
}

/* ------------------------------------------------------------ paths, methods */

static void test_path_patterns(void)
{
    static const struct {
        const char *pattern, *path;
        int want;
    } t[] = {
        {"/a/b", "/a/b", 1},
        {"/a/b", "/a/b/", 0},
        {"/a/b", "/a/bc", 0},
        {"/a/b", "/a", 0},
        {"/a/b/", "/a/b/", 1},
        {"/a/*", "/a/x", 1},
        {"/a/*", "/a/x/y", 0},
        {"/a/*", "/a/", 0}, /* `*` needs a non-empty segment */
        {"/a/*", "/a", 0},
        {"/a/*/c", "/a/b/c", 1},
        {"/a/*/c", "/a/b/d/c", 0},
        {"/a/**", "/a", 1}, /* zero segments */
        {"/a/**", "/a/", 1},
        {"/a/**", "/a/x/y/z", 1},
        {"/a/**", "/ab", 0},
        {"/a/**/z", "/a/z", 1},
        {"/a/**/z", "/a/x/y/z", 1},
        {"/a/**/z", "/a/x/y/zz", 0},
        {"/a/**/z", "/a/x/z/y", 0},
        {"/a/**/*/z", "/a/z", 0},
        {"/a/**/*/z", "/a/q/z", 1},
        {"/**/x/**/y", "/p/x/q/x/r/y", 1},
        {"/**", "/", 1},
        {"/**", "/anything/at/all", 1},
        {"/*", "/", 0},
        {"/", "/", 1},
        {"/", "/a", 0},
        {"/runs/%3A", "/runs/%3A", 1},
        {"/runs/:id", "/runs/42", 0}, /* no placeholders: ":id" is literal */
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct diags d = DIAGS_INIT;
        char *text = xasprintf(
            "{\"step\":\"p\",\"route\":{\"path_prefix\":\"/\"},\"upstream\":\"billing\","
            "\"callers\":[{\"issuer\":\"aws\",\"claims\":{\"sub\":\"s\"}}],"
            "\"allow\":[{\"methods\":[\"GET\"],\"paths\":[\"%s\"]}]}",
            t[i].pattern);
        struct policy_set *set = build1(&d, text);
        if (!set) {
            ok(0, "path pattern %s loads", t[i].pattern);
        } else {
            is_int(decide(policy_set_at(set, 0), "aws", "{\"sub\":\"s\"}", "GET", t[i].path, NULL,
                          NULL),
                   t[i].want ? REASON_ALLOWED : REASON_NO_RULE_MATCH, "path pattern %s %s %s",
                   t[i].pattern, t[i].want ? "matches" : "does not match", t[i].path);
        }
        policy_set_free(set);
        diags_free(&d);
        free(text);
    }
}

static void test_methods_headers_order(void)
{
    struct diags d = DIAGS_INIT;
    struct policy_set *set = build1(&d, billing);
    const struct policy *p = set ? policy_set_at(set, 0) : NULL;
    struct hdrs h1 = {{"X-Sfn-Execution"}, {EXEC_OK}, 1};
    struct hdrs hlower = {{"x-sfn-execution"}, {EXEC_OK}, 1};
    struct hdrs hdup = {{"X-Sfn-Execution", "x-sfn-execution"}, {EXEC_OK, EXEC_OK}, 2};
    struct hdrs hbad = {
        {"X-Sfn-Execution"}, {"arn:aws:states:us-east-1:999999999999:execution:x:1"}, 1};
    struct hdrs hnone = {{"X-Other"}, {EXEC_OK}, 1};

    if (!ok(p != NULL, "billing fixture loads"))
        return;
    is_int(decide(p, "aws", AWS_OK, "POST", "/billing/reconcile", &h1, NULL), REASON_ALLOWED,
           "allowed: caller, POST /billing/reconcile, header matches");
    is_int(decide(p, "aws", AWS_OK, "POST", "/billing/runs/42", &h1, NULL), REASON_ALLOWED,
           "allowed: POST /billing/runs/* one segment");
    is_int(decide(p, "aws", AWS_OK, "GET", "/billing/runs/42/log", &h1, NULL), REASON_ALLOWED,
           "allowed: GET /billing/runs/** by the second rule");
    is_int(decide(p, "aws", AWS_OK, "POST", "/billing/runs/42/log", &h1, NULL),
           REASON_NO_RULE_MATCH, "POST is not allowed deeper than one segment");
    is_int(decide(p, "aws", AWS_OK, "post", "/billing/reconcile", &h1, NULL), REASON_NO_RULE_MATCH,
           "methods are exact: \"post\" is not POST");
    is_int(decide(p, "aws", AWS_OK, "GET", "/billing/reconcile", &h1, NULL), REASON_NO_RULE_MATCH,
           "GET /billing/reconcile matches no rule");
    is_int(decide(p, "aws", AWS_OK, "POST", "/billing/reconcile", &hlower, NULL), REASON_ALLOWED,
           "header names are case-insensitive");
    is_int(decide(p, "aws", AWS_OK, "POST", "/billing/reconcile", &hdup, NULL),
           REASON_HEADER_MISMATCH,
           "a required header sent twice never matches, even with equal values");
    is_int(decide(p, "aws", AWS_OK, "POST", "/billing/reconcile", &hbad, NULL),
           REASON_HEADER_MISMATCH, "a header value outside the glob is a mismatch");
    is_int(decide(p, "aws", AWS_OK, "POST", "/billing/reconcile", &hnone, NULL),
           REASON_HEADER_MISMATCH, "an absent required header is a mismatch");
    is_int(decide(p, "aws", AWS_OK, "POST", "/billing/reconcile", NULL, NULL),
           REASON_HEADER_MISMATCH, "no headers at all is a mismatch");
    /* order: caller before rule before headers */
    is_int(decide(p, "aws", "{\"sub\":\"nobody\"}", "GET", "/nowhere", &hnone, NULL),
           REASON_NO_CALLER_MATCH, "caller is checked first");
    is_int(decide(p, "aws", AWS_OK, "DELETE", "/billing/reconcile", &hnone, NULL),
           REASON_NO_RULE_MATCH, "rules are checked before headers");
    is_int(decide(p, "cognito", AWS_OK, "POST", "/billing/reconcile", &h1, NULL),
           REASON_NO_CALLER_MATCH,
           "the aws claims from another issuer do not match (issuer is part of the entry)");
    {
        struct policy_input in = {"POST", "/billing/reconcile", 18, "aws", NULL, hdr_lookup, &h1};
        is_int(policy_authorize(p, &in, NULL), REASON_NO_CALLER_MATCH, "NULL claims never match");
        in.issuer_name = NULL;
        is_int(policy_authorize(p, &in, NULL), REASON_NO_CALLER_MATCH, "NULL issuer never matches");
    }
    policy_set_free(set);
    diags_free(&d);
}

static void test_scopes(void)
{
    struct diags d = DIAGS_INIT;
    struct policy_set *set = build1(&d, billing);
    const struct policy *p = set ? policy_set_at(set, 0) : NULL;
    struct hdrs h1 = {{"X-Sfn-Execution"}, {EXEC_OK}, 1};
    struct policy_trace t;

    if (!ok(p != NULL, "billing fixture loads for scopes"))
        return;
    is_int(
        decide(
            p, "cognito",
            "{\"client_id\":\"4b1c2d3e\",\"token_use\":\"access\",\"scope\":\"billing/read billing/reconcile\"}",
            "POST", "/billing/reconcile", &h1, NULL),
        REASON_ALLOWED, "scope in the space-separated scope claim");
    is_int(
        decide(
            p, "cognito",
            "{\"client_id\":\"4b1c2d3e\",\"token_use\":\"access\",\"scp\":[\"x\",\"billing/reconcile\"]}",
            "POST", "/billing/reconcile", &h1, NULL),
        REASON_ALLOWED, "scope in the scp array");
    is_int(
        decide(
            p, "cognito",
            "{\"client_id\":\"4b1c2d3e\",\"token_use\":\"access\",\"scp\":\"billing/reconcile\"}",
            "POST", "/billing/reconcile", &h1, NULL),
        REASON_ALLOWED, "scope in an scp string");
    is_int(
        decide(
            p, "cognito",
            "{\"client_id\":\"4b1c2d3e\",\"token_use\":\"access\",\"scope\":\"billing/reconcile2 billing\"}",
            "POST", "/billing/reconcile", &h1, &t),
        REASON_SCOPE_MISSING, "scope words match whole, not as prefixes");
    is_str(t.miss_kind, "scope", "trace: the miss is a scope");
    is_str(t.miss_name, "billing/reconcile", "trace: names the missing scope");
    is_int(t.caller_index, 1, "trace: the cognito entry is the closest caller");
    is_int(t.miss_line, 14, "trace: the miss points at the scopes line");
    is_int(decide(p, "cognito", "{\"client_id\":\"4b1c2d3e\",\"token_use\":\"access\"}", "POST",
                  "/billing/reconcile", &h1, NULL),
           REASON_SCOPE_MISSING, "no scope claim at all");
    is_int(
        decide(
            p, "cognito",
            "{\"client_id\":\"4b1c2d3e\",\"token_use\":\"access\",\"scope\":[\"billing/reconcile\"]}",
            "POST", "/billing/reconcile", &h1, NULL),
        REASON_SCOPE_MISSING, "a scope claim that is an array is not a scope list");
    is_int(decide(p, "cognito", "{\"client_id\":\"other\",\"scope\":\"billing/reconcile\"}", "POST",
                  "/billing/reconcile", &h1, NULL),
           REASON_NO_CALLER_MATCH, "scopes do not help when the claims do not match");
    policy_set_free(set);
    diags_free(&d);

    /* a later entry without scopes still matches after a scope miss */
    set = build1(
        &d,
        "{\"step\":\"s\",\"route\":{\"path_prefix\":\"/\"},\"upstream\":\"billing\","
        "\"callers\":[{\"issuer\":\"cognito\",\"claims\":{\"client_id\":\"c\"},\"scopes\":[\"w\"]},"
        "{\"issuer\":\"cognito\",\"claims\":{\"client_id\":\"c\",\"token_use\":\"access\"}}],"
        "\"allow\":[{\"methods\":[\"GET\"],\"paths\":[\"/**\"]}]}");
    if (ok(set != NULL, "two entries, the first with scopes, load")) {
        is_int(decide(policy_set_at(set, 0), "cognito",
                      "{\"client_id\":\"c\",\"token_use\":\"access\"}", "GET", "/x", NULL, &t),
               REASON_ALLOWED, "the second entry matches after the first misses a scope");
        is_int(t.caller_index, 1, "trace names the second entry");
    }
    policy_set_free(set);
    diags_free(&d);
    /* the trace of a scope miss names the entry that missed only a scope, even
     * when another entry matched more claims before missing one */
    set = build1(
        &d,
        "{\"step\":\"s\",\"route\":{\"path_prefix\":\"/\"},\"upstream\":\"billing\","
        "\"callers\":[{\"issuer\":\"cognito\",\"claims\":{\"client_id\":\"c\"},\"scopes\":[\"w\"]},"
        "{\"issuer\":\"cognito\",\"claims\":{\"client_id\":\"c\",\"token_use\":\"access\",\"x\":\"y\"}}],"
        "\"allow\":[{\"methods\":[\"GET\"],\"paths\":[\"/**\"]}]}");
    if (ok(set != NULL, "scope-miss fixture loads")) {
        is_int(decide(policy_set_at(set, 0), "cognito",
                      "{\"client_id\":\"c\",\"token_use\":\"access\"}", "GET", "/x", NULL, &t),
               REASON_SCOPE_MISSING, "scope_missing when the only full claims match lacks a scope");
        is_str(t.miss_kind, "scope", "trace of scope_missing is a scope miss");
        is_int(t.caller_index, 0, "trace names the entry that missed only its scope");
    }
    policy_set_free(set);
    diags_free(&d);
}

static void test_dry_run(void)
{
    struct diags d = DIAGS_INIT;
    struct policy_set *set = build1(
        &d, "{\"step\":\"s\",\"mode\":\"dry_run\",\"route\":{\"path_prefix\":\"/\"},"
            "\"upstream\":\"approvals\","
            "\"callers\":[{\"issuer\":\"aws\",\"claims\":{\"sub\":\"x\"}}],"
            "\"allow\":[{\"methods\":[\"GET\"],\"paths\":[\"/**\"]}]}");
    const struct policy *p = set ? policy_set_at(set, 0) : NULL;
    if (!ok(p != NULL, "dry_run policy loads"))
        return;
    ok(policy_dry_run(p), "mode dry_run is reported");
    is_int(decide(p, "aws", "{\"sub\":\"y\"}", "GET", "/a", NULL, NULL), REASON_NO_CALLER_MATCH,
           "dry_run: authorize still returns the deny reason");
    is_int(decide(p, "aws", "{\"sub\":\"x\"}", "GET", "/a", NULL, NULL), REASON_ALLOWED,
           "dry_run: an allowed request is allowed");
    policy_set_free(set);
    diags_free(&d);
}

/* ------------------------------------------------------------ trace */

static void test_trace(void)
{
    struct diags d = DIAGS_INIT;
    struct policy_set *set = build1(&d, billing);
    const struct policy *p = set ? policy_set_at(set, 0) : NULL;
    struct hdrs h1 = {{"X-Sfn-Execution"}, {EXEC_OK}, 1};
    struct hdrs hdup = {{"X-Sfn-Execution", "X-Sfn-Execution"}, {EXEC_OK, EXEC_OK}, 2};
    struct policy_trace t;

    if (!ok(p != NULL, "billing fixture loads for traces"))
        return;
    decide(p, "aws", AWS_OK, "GET", "/billing/runs/1", &h1, &t);
    is_int(t.reason, REASON_ALLOWED, "trace: reason allowed");
    is_int(t.caller_index, 0, "trace: matched caller index 0");
    is_int(t.caller_line, 7, "trace: matched caller entry at line 7");
    is_int(t.caller_col, 15, "trace: matched caller entry at column 15");
    is_int(t.rule_index, 1, "trace: matched allow rule index 1");
    is_int(t.rule_line, 17, "trace: matched allow rule at line 17");
    is_int(t.rule_col, 13, "trace: matched allow rule at column 13");
    is_int(t.pattern_index, 0, "trace: the rule's first path pattern matched");
    ok(t.miss_kind == NULL, "trace: no miss on allow");

    decide(p, "aws",
           "{\"sub\":\"arn:aws:iam::123456789012:role/sfn-billing\","
           "\"https://sts.amazonaws.com/\":{\"aws_account\":\"210987654321\"}}",
           "POST", "/billing/reconcile", &h1, &t);
    is_int(t.reason, REASON_NO_CALLER_MATCH, "trace: wrong account is no_caller_match");
    is_str(t.miss_kind, "claim", "trace: the miss is a claim");
    is_str(t.miss_name, "\"https://sts.amazonaws.com/\".aws_account",
           "trace: names the nested claim");
    is_str(t.miss_detail, "expected \"123456789012\", got \"210987654321\"",
           "trace: says how it differs");
    is_int(t.caller_index, 0, "trace: closest caller is the aws entry");
    is_int(t.miss_line, 10, "trace: miss line is the pattern's line");
    is_int(t.miss_col, 64, "trace: miss column is the pattern's column");

    decide(p, "aws", "{\"sub\":\"arn:aws:iam::123456789012:role/sfn-billing\"}", "POST",
           "/billing/reconcile", &h1, &t);
    is_str(t.miss_name, "\"https://sts.amazonaws.com/\"",
           "trace: names the absent namespace claim");
    is_str(t.miss_detail, "absent from the token, expected an object", "trace: an absent claim");
    decide(p, "aws", "{\"sub\":[\"x\"]}", "POST", "/billing/reconcile", &h1, &t);
    is_str(t.miss_name, "sub", "trace: first missing leaf in file order");
    is_str(t.miss_detail,
           "expected a string \"arn:aws:iam::123456789012:role/sfn-billing\", got an array "
           "(another JSON type never matches)",
           "trace: a type mismatch");
    decide(p, "aws", "{\"sub\":42}", "POST", "/billing/reconcile", &h1, &t);
    is_str(t.miss_detail,
           "expected a string \"arn:aws:iam::123456789012:role/sfn-billing\", got an integer 42 "
           "(another JSON type never matches)",
           "trace: a type mismatch shows the value received");
    decide(p, "github", AWS_OK, "POST", "/billing/reconcile", &h1, &t);
    is_str(t.miss_kind, "issuer", "trace: no entry for the issuer");
    is_str(t.miss_detail,
           "no callers entry is for issuer \"github\"; entries are for \"aws\", \"cognito\"",
           "trace: lists the issuers the entries accept");

    decide(p, "aws", AWS_OK, "DELETE", "/billing/runs/3", &h1, &t);
    is_int(t.reason, REASON_NO_RULE_MATCH, "trace: DELETE is no_rule_match");
    is_str(t.miss_kind, "method", "trace: path matched a rule, the method did not");
    is_int(t.rule_index, 0, "trace: the closest rule is the first one whose path matched");
    is_str(t.miss_detail, "method \"DELETE\" is not one of [POST]",
           "trace: lists the rule's methods");
    decide(p, "aws", AWS_OK, "POST", "/billing/other", &h1, &t);
    is_str(t.miss_kind, "path", "trace: the method matched a rule, the path did not");
    is_str(t.miss_detail,
           "path \"/billing/other\" matches none of [\"/billing/reconcile\", \"/billing/runs/*\"]",
           "trace: lists the rule's path patterns");
    decide(p, "aws", AWS_OK, "PUT", "/billing/other", &h1, &t);
    is_str(t.miss_kind, "rule", "trace: neither method nor path");

    decide(p, "aws", AWS_OK, "POST", "/billing/reconcile", &hdup, &t);
    is_int(t.reason, REASON_HEADER_MISMATCH, "trace: duplicate header");
    is_str(t.miss_kind, "header", "trace: the miss is a header");
    is_str(t.miss_name, "X-Sfn-Execution", "trace: names the header");
    is_str(t.miss_detail, "present 2 times (a header sent more than once never matches)",
           "trace: says it was sent twice");
    is_int(t.miss_line, 18, "trace: header miss line");
    is_int(t.caller_index, 0, "trace: the matched caller is kept on a header miss");
    is_int(t.rule_index, 0, "trace: the matched rule is kept on a header miss");
    decide(p, "aws", AWS_OK, "POST", "/billing/reconcile", NULL, &t);
    is_str(t.miss_detail, "absent from the request", "trace: absent header");
    {
        struct hdrs hv = {{"X-Sfn-Execution"}, {"nope"}, 1};
        decide(p, "aws", AWS_OK, "POST", "/billing/reconcile", &hv, &t);
        is_str(
            t.miss_detail,
            "got \"nope\", which does not match glob \"arn:aws:states:*:123456789012:execution:*\"",
            "trace: the value received and the glob");
    }
    {
        /* a credential-shaped value is never printed, whatever the header's name */
        struct hdrs hv = {{"X-Sfn-Execution"}, {"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"}, 1};
        decide(p, "aws", AWS_OK, "POST", "/billing/reconcile", &hv, &t);
        ok(strstr(t.miss_detail, "eyJ") == NULL &&
               strstr(t.miss_detail, "[redacted] (41 bytes)") != NULL,
           "trace: a JWT-shaped value is redacted (%s)", t.miss_detail);
        hv.value[0] = "Bearer abc.def";
        decide(p, "aws", AWS_OK, "POST", "/billing/reconcile", &hv, &t);
        ok(strstr(t.miss_detail, "abc") == NULL && strstr(t.miss_detail, "[redacted]") != NULL,
           "trace: a bearer credential is redacted");
    }
    policy_set_free(set);
    diags_free(&d);
}

/* ------------------------------------------------------------ load errors */

static void test_load_errors(void)
{
    static const struct {
        const char *text;
        const char *want; /* the whole diagnostic output */
        const char *what;
    } t[] = {
        {"{\"step\":\"s\",\"route\":{\"path_prefix\":\"/\"},\"upstream\":\"billing\",\n"
         " \"callers\":[{\"issuer\":\"aws\",\"claims\":{\"sub\":\"x\"}}],\n"
         " \"allow\":[{\"methods\":[\"GET\"],\"paths\":[\"/**\"]}],\n"
         " \"colour\": \"blue\"}",
         "p.json:4:2: unknown key \"colour\"\n", "unknown top-level key"},
        {"{\"step\":\"s\",\"route\":{\"path_prefix\":\"/\", \"port\": 80},\"upstream\":\"billing\",\n"
         " \"callers\":[{\"issuer\":\"aws\",\"claims\":{\"sub\":\"x\"}, \"role\": 1}],\n"
         " \"allow\":[{\"methods\":[\"GET\"],\"paths\":[\"/**\"], \"deny\": true}]}",
         "p.json:1:41: route: unknown key \"port\" (did you mean \"host\"?)\n"
         "p.json:2:51: callers[0]: unknown key \"role\"\n"
         "p.json:3:47: allow[0]: unknown key \"deny\"\n",
         "unknown nested keys, all reported in order"},
        {"{\"step\":\"s\",\"route\":{\"path_prefix\":\"/\"},\"upstream\":\"billing\",\n"
         " \"step\":\"t\",\n"
         " \"callers\":[{\"issuer\":\"aws\",\"claims\":{\"sub\":\"x\",\"sub\":\"y\"}}],\n"
         " \"allow\":[{\"methods\":[\"GET\"],\"paths\":[\"/**\"]}]}",
         "p.json:2:2: duplicate key \"step\" (first at line 1, column 2)\n"
         "p.json:3:49: duplicate key \"sub\" (first at line 3, column 39)\n",
         "duplicate keys"},
        {"{\"step\":5,\"route\":{\"path_prefix\":\"/\"},\"upstream\":\"billing\",\n"
         " \"callers\":{},\n"
         " \"allow\":[{\"methods\":\"GET\",\"paths\":[\"/**\"]}]}",
         "p.json:1:9: \"step\" must be a string, not an integer\n"
         "p.json:2:12: \"callers\" must be an array, not an object\n"
         "p.json:3:22: \"methods\" must be an array, not a string\n",
         "wrong types"},
        {"{\"step\":\"s\",\"route\":{\"path_prefix\":\"/\"},\"upstream\":\"payroll\",\n"
         " \"callers\":[{\"issuer\":\"google\",\"claims\":{\"sub\":\"x\"}}],\n"
         " \"allow\":[{\"methods\":[\"GET\"],\"paths\":[\"/**\"]}]}",
         "p.json:1:52: upstream \"payroll\" is not defined in conf/baton.json (upstreams: \"cleanup\", \"billing\", \"approvals\")\n"
         "p.json:2:23: issuer \"google\" is not defined in conf/baton.json (issuers: \"aws\", \"cognito\")\n",
         "unknown upstream and issuer"},
        {"{\"step\":\"s\",\"route\":{\"path_prefix\":\"/\"},\"upstream\":\"billing\",\n"
         " \"callers\":[{\"issuer\":\"aws\",\"claims\":{\"sub\":\"x\"}}],\n"
         " \"allow\":[{\"methods\":[\"GET\"],\"paths\":[\"/**\"]}],\n"
         " \"limits\":{\"max_body_bytes\":0,\"timeout_ms\":3600001,\"rate_per_s\":0,\"burst\":-1}}",
         "p.json:4:29: limits.max_body_bytes: 0 is out of range 1..1099511627776\n"
         "p.json:4:44: limits.timeout_ms: 3600001 is out of range 1..3600000\n"
         "p.json:4:65: \"rate_per_s\" is 0, the range is greater than 0 up to 1000000 (0.0002 is one request per 5000 s)\n"
         "p.json:4:75: limits.burst: -1 is out of range 1..1000000\n",
         "limits out of range"},
        {"{\"step\":\"s\",\"route\":{\"path_prefix\":\"/\"},\"upstream\":\"billing\",\n"
         " \"callers\":[{\"issuer\":\"aws\",\"claims\":{\"sub\":\"x\"}}],\n"
         " \"allow\":[{\"methods\":[\"GET\"],\"paths\":[\"/**\"]}],\n"
         " \"limits\":{\"burst\":10}}",
         "p.json:4:12: \"burst\" needs \"rate_per_s\"\n", "burst without rate"},
        {"{\"step\":\"s\",\"mode\":\"audit\",\"route\":{\"path_prefix\":\"/a//b\"},\"upstream\":\"billing\",\n"
         " \"callers\":[{\"issuer\":\"aws\",\"claims\":{}}],\n"
         " \"allow\":[{\"methods\":[\"get\",\"GET\",\"GET\"],\"paths\":[\"a\",\"/x/run-*\",\"/x/../y\",\"/q?x\"]}]}",
         "p.json:1:20: \"mode\" must be \"enforce\" or \"dry_run\", not \"audit\"\n"
         "p.json:1:51: path_prefix \"/a//b\" is not a canonical path (path_empty_segment)\n"
         "p.json:2:38: an empty claims object would match any object; name the claims to match\n"
         "p.json:3:23: method \"get\" must be an upper-case token (methods match exactly)\n"
         "p.json:3:35: method \"GET\" is listed twice\n"
         "p.json:3:51: path pattern \"a\" must start with \"/\"\n"
         "p.json:3:55: path pattern \"/x/run-*\": \"*\" and \"**\" stand for whole segments, not parts of one (\"run-*\")\n"
         "p.json:3:66: path pattern \"/x/../y\" can never match a canonical path (path_dot_segment)\n"
         "p.json:3:76: path pattern \"/q?x\" has a query; patterns match the path only\n",
         "bad mode, prefix, empty claims, methods and path patterns"},
        {"{\"step\":\"s\",\"route\":{\"host\":\"api.example.com:443\",\"path_prefix\":\"/billing/\"},\"upstream\":\"billing\",\n"
         " \"callers\":[{\"issuer\":\"aws\",\"claims\":{\"sub\":null,\"groups\":[],\"x\":[[1]]}}],\n"
         " \"allow\":[{\"methods\":[\"GET\"],\"paths\":[\"/other/**\",\"/billing\",\"/*/x\",\"/**\"]}]}",
         "p.json:1:29: host \"api.example.com:443\" must not include a port (the port is stripped before routing)\n"
         "p.json:2:45: null is not a claim pattern (a pattern never matches an absent claim; name the values to accept)\n"
         "p.json:2:59: an empty array never matches; name the accepted values\n"
         "p.json:2:67: an array inside an array is not a claim pattern\n"
         "p.json:3:39: path pattern \"/other/**\" can never match under the route's path_prefix \"/billing/\"\n"
         "p.json:3:51: path pattern \"/billing\" can never match under the route's path_prefix \"/billing/\"\n",
         "bad host and claims patterns, and paths outside the prefix"},
        {"{\"step\":\"s\",\"route\":{\"path_prefix\":\"/billing/\"},\"upstream\":\"billing\",\n"
         " \"callers\":[{\"issuer\":\"aws\",\"claims\":{\"sub\":\"x\"}}],\n"
         " \"allow\":[{\"methods\":[\"GET\"],\"paths\":[\"/other/**\",\"/billing\",\"/*/x\",\"/**\",\"/billing/\"]}]}",
         "p.json:3:39: path pattern \"/other/**\" can never match under the route's path_prefix \"/billing/\"\n"
         "p.json:3:51: path pattern \"/billing\" can never match under the route's path_prefix \"/billing/\"\n",
         "path patterns outside the route's prefix"},
        {"{\"step\":\"s\",\"route\":{\"path_prefix\":\"/\"},\"upstream\":\"billing\",\n"
         " \"callers\":[{\"issuer\":\"aws\",\"claims\":{\"sub\":\"x\"},\"scopes\":[\"a b\",\"c\",\"c\"]}],\n"
         " \"allow\":[{\"methods\":[\"GET\"],\"paths\":[\"/**\"]}],\n"
         " \"require_headers\":{\"X-A\":\"1\",\"x-a\":\"2\",\"Authorization\":\"Bearer *\",\"Bad Name\":\"x\",\"X-B\":\" v\"},\n"
         " \"service_account\":\"not-an-email\"}",
         "p.json:2:60: \"a b\" is not a scope token (no space, '\"' or '\\')\n"
         "p.json:2:70: scope \"c\" is listed twice\n"
         "p.json:4:31: header \"x-a\" is already required as \"X-A\" at line 4 column 21 (names are case-insensitive)\n"
         "p.json:4:41: \"Authorization\" carries the caller's token: authorize the caller with \"callers\", not require_headers\n"
         "p.json:4:68: \"Bad Name\" is not a header name (RFC 9110 token, at most 256 bytes)\n"
         "p.json:4:89: header value pattern \" v\" starts or ends with a space; values are matched without surrounding whitespace\n"
         "p.json:5:20: service_account \"not-an-email\" is not a service account e-mail address\n",
         "bad scopes, headers and service account"},
        {"{\"route\":{},\n \"callers\":[],\"allow\":[{}]}",
         "p.json:1:1: missing required key \"step\"\n"
         "p.json:1:1: missing required key \"upstream\"\n"
         "p.json:1:10: route: missing required key \"path_prefix\"\n"
         "p.json:2:12: \"callers\" must not be empty\n"
         "p.json:2:24: allow[0]: missing required key \"methods\"\n"
         "p.json:2:24: allow[0]: missing required key \"paths\"\n",
         "missing required keys"},
        {"{\"step\": \"s\",\n \"route\": {\"path_prefix\": \"/\"\n}",
         "p.json:3:1: invalid JSON: '}' expected near end of file\n",
         "syntax error with jansson's position"},
        {"[1]", "p.json:1:1: a step policy must be a JSON object, not an array\n",
         "top level array"},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct diags d = DIAGS_INIT;
        struct policy_set *set = build1(&d, t[i].text);
        char *s = diag_text(&d);
        ok(set == NULL, "load error (%s): the set is not built", t[i].what);
        is_str(s, t[i].want, "load error (%s): every error at its file:line:column", t[i].what);
        free(s);
        policy_set_free(set);
        diags_free(&d);
    }
    /* too deep */
    {
        struct diags d = DIAGS_INIT;
        char *deep = xmalloc(200);
        struct policy_set *set;
        memset(deep, '[', 100);
        memset(deep + 100, ']', 100);
        {
            struct policy_source src = {"deep.json", deep, 200};
            set = policy_set_build(&cfg, &src, 1, &d);
        }
        ok(set == NULL && d.n == 1 && strstr(d.v[0].msg, "nesting deeper than"),
           "nesting deeper than POLICY_MAX_DEPTH is an error");
        free(deep);
        diags_free(&d);
    }
    /* the config's cap and order (jload): 151 unknown keys and 5 missing ones give
     * 100 errors and a summary, sorted by position with the summary last */
    {
        struct diags d = DIAGS_INIT;
        char *many = xstrdup("{");
        struct policy_set *set;
        for (int k = 0; k < 150; k++) {
            char *next = xasprintf("%s\"k%d\": %d, ", many, k, k);
            free(many);
            many = next;
        }
        char *text = xasprintf("%s\"stepp\": 1}", many);
        set = build1(&d, text);
        ok(set == NULL && d.n == JLOAD_MAX_ERRORS + 1,
           "policy errors stop at JLOAD_MAX_ERRORS plus a summary (%zu)", d.n);
        if (d.n == JLOAD_MAX_ERRORS + 1) {
            ok(strstr(d.v[d.n - 1].msg, "too many errors: 56 more not shown") &&
                   d.v[d.n - 1].line == 0,
               "the summary counts what was not shown, and sorts last");
            is_str(d.v[0].msg, "unknown key \"k0\"", "the first error is the first in the file");
        }
        free(many);
        free(text);
        policy_set_free(set);
        diags_free(&d);
    }
}

/* ------------------------------------------------------------ directory */

static void write_file(const char *dir, const char *name, const char *text)
{
    char *path = xasprintf("%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
    free(path);
}

static void test_load_dir(void)
{
    char tmpl[] = "/tmp/baton-policy-XXXXXX";
    char *dir = mkdtemp(tmpl);
    struct diags d = DIAGS_INIT;
    struct policy_set *set;
    char *a = route_policy("step-a", "*", "/a/"), *b = route_policy("step-b", "*", "/b/");
    char *s;

    if (!ok(dir != NULL, "temporary policy directory"))
        return;
    cfg.policies = dir;
    set = policy_set_load(&cfg, &d);
    s = diag_text(&d);
    ok(set == NULL, "an empty policy directory does not load");
    ok(strstr(s, "no step policy (*.json) in the policy directory") != NULL,
       "the error says no policy");
    free(s);
    diags_free(&d);

    write_file(dir, "a.json", a);
    write_file(dir, "b.json", b);
    write_file(dir, "README.md", "not a policy");
    write_file(dir, ".hidden.json", "{");
    write_file(dir, "b.json~", "{");
    set = policy_set_load(&cfg, &d);
    ok(set != NULL && policy_set_count(set) == 2, "only *.json files (not hidden) are loaded");
    if (set) {
        char *want = xasprintf("%s/a.json", dir);
        const struct policy *p = policy_route(set, NULL, 0, "/a/x", 4);
        is_str(p ? policy_file(p) : NULL, want, "policy_file is the path in the directory");
        free(want);
    }
    policy_set_free(set);
    diags_free(&d);

    write_file(dir, "c.json", "{\"step\":1}");
    set = policy_set_load(&cfg, &d);
    s = diag_text(&d);
    ok(set == NULL, "one broken file fails the whole set");
    {
        char *want = xasprintf("%s/c.json:1:9: \"step\" must be a string, not an integer\n", dir);
        ok(strstr(s, want) != NULL, "the broken file's error names the file in the directory");
        free(want);
    }
    free(s);
    diags_free(&d);

    cfg.policies = "/nonexistent/baton/policies";
    set = policy_set_load(&cfg, &d);
    ok(set == NULL && d.n == 1 && strstr(d.v[0].msg, "cannot open the policy directory"),
       "a missing directory is an error");
    diags_free(&d);
    cfg.policies = NULL;

    {
        char *cmd = xasprintf("rm -rf '%s'", dir);
        if (system(cmd) != 0)
            tap_diag("cleanup of %s failed", dir);
        free(cmd);
    }
    free(a);
    free(b);
}

/* Issue 13: "did you mean", regex-looking patterns as warnings, fractional rates. */
static const char lint_base[] =
    "{\"step\":\"s\",\"route\":{\"path_prefix\":\"/r/\"},\"upstream\":\"billing\",\n"
    " \"callers\":[{\"issuer\":\"aws\",\"claims\":{\"sub\":%s}}],\n"
    " \"allow\":[{\"methods\":[\"GET\"],\"paths\":[%s]}],\n"
    " \"require_headers\":{\"X-Sfn-Execution\":%s}%s}";

/* Loads one policy with warnings collected; returns the warnings (owned). */
static char *lint(const char *sub, const char *path, const char *hdr, const char *more,
                  bool *loaded)
{
    struct diags d = DIAGS_INIT, w = DIAGS_INIT;
    char *text = xasprintf(lint_base, sub, path, hdr, more);
    struct policy_set *set;
    char *s;
    d.warnings = &w;
    set = build1(&d, text);
    *loaded = set != NULL && d.n == 0;
    if (d.n) {
        char *e = diag_text(&d);
        tap_diag("errors: %s", e);
        free(e);
    }
    s = diag_text(&w);
    policy_set_free(set);
    diags_free(&d);
    diags_free(&w);
    free(text);
    return s;
}

static void test_first_hour(void)
{
    struct diags d = DIAGS_INIT;
    struct policy_set *set;
    char *s;
    bool loaded;

    set = build1(&d, "{\"step\":\"s\",\"route\":{\"path_prefx\":\"/\"},\"upstream\":\"billing\",\n"
                     " \"callers\":[{\"isuer\":\"aws\",\"claims\":{\"sub\":\"x\"}}],\n"
                     " \"allow\":[{\"methods\":[\"GET\"],\"paths\":[\"/**\"]}], \"limit\":{}}");
    s = diag_text(&d);
    ok(set == NULL, "misspelled keys fail the load");
    ok(strstr(s,
              "p.json:1:22: route: unknown key \"path_prefx\" (did you mean \"path_prefix\"?)\n") !=
           NULL,
       "did you mean path_prefix");
    ok(strstr(s, "p.json:2:14: callers[0]: unknown key \"isuer\" (did you mean \"issuer\"?)\n") !=
           NULL,
       "did you mean issuer");
    ok(strstr(s, "unknown key \"limit\" (did you mean \"limits\"?)") != NULL,
       "did you mean limits");
    free(s);
    policy_set_free(set);
    diags_free(&d);

    /* regex-looking patterns: warnings with positions, the policy still loads */
    s = lint("\"^arn:aws:states:.*$\"", "\"/r/*\"", "\"arn:aws:states:*\"", "", &loaded);
    ok(loaded, "a regex-looking claim pattern is a warning, not an error");
    ok(strstr(s,
              "p.json:2:45: claim pattern \"^arn:aws:states:.*$\" looks like a regular expression "
              "(it starts with the anchor \"^\")") != NULL,
       "anchored claim pattern warned at its value");
    free(s);
    {
        static const struct {
            const char *pat, *why;
        } bad[] = {
            {"\"arn:aws:iam::1:role/x$\"", "ends with the anchor"},
            {"\"arn:aws:states:.*:execution\"", "\".*\" where a literal dot"},
            {"\"run-[12]\"", "bracket expression"},
            {"\"run-[0-9]+\"", "bracket expression"},
            {"\"\\\\d+\"", "backslash escape"},
            {"\"(a|b)\"", "alternation"},
            {"\"x(ab)+\"", "repeated group"},
            {"\"a.+b\"", "\".+\""},
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            s = lint(bad[i].pat, "\"/r/*\"", "\"x\"", "", &loaded);
            ok(loaded && strstr(s, bad[i].why) != NULL, "claim %s: warned (%s)", bad[i].pat,
               bad[i].why);
            free(s);
            s = lint("\"x\"", "\"/r/*\"", bad[i].pat, "", &loaded);
            ok(loaded && strstr(s, "header value pattern") && strstr(s, bad[i].why) != NULL,
               "header %s: warned", bad[i].pat);
            free(s);
        }
    }
    {
        /* real ARNs, paths, e-mail addresses, URLs and globs: no warning */
        static const char *const fine[] = {
            "\"arn:aws:iam::123456789012:role/sfn-billing\"",
            "\"arn:aws:states:us-east-1:123456789012:execution:billing-after-deploy:*\"",
            "\"arn:aws:sts::123456789012:assumed-role/Role-Name_1/session.name+tag@x\"",
            "\"billing-reconciler@billing-prod.iam.gserviceaccount.com\"",
            "\"https://sts.amazonaws.com/\"",
            "\"report.*\"",
            "\"*.example.com\"",
            "\"[::1]:8080\"",
            "\"price $5 (approx)\"",
            "\"a|b\"",
            "\"5kq8example1ab2cd3ef4gh5ij6\"",
        };
        for (size_t i = 0; i < sizeof(fine) / sizeof(fine[0]); i++) {
            s = lint(fine[i], "\"/r/**\"", fine[i], "", &loaded);
            ok(loaded && s[0] == '\0', "no warning for %s%s%s", fine[i], s[0] ? ": " : "", s);
            free(s);
        }
        s = lint("\"x\"", "\"/r/runs/*\", \"/r/a.b/**\", \"/r/v1/x-y_z\"", "\"x\"", "", &loaded);
        ok(loaded && s[0] == '\0', "no warning for real path patterns");
        free(s);
    }
    s = lint("\"x\"", "\"/r/*\"", "\"x\"", ", \"limits\":{\"rate_per_s\":0.0002}", &loaded);
    ok(loaded, "rate_per_s 0.0002 loads");
    free(s);
    {
        const char *text =
            "{\"step\":\"s\",\"route\":{\"path_prefix\":\"/r/\"},\"upstream\":\"billing\",\n"
            " \"callers\":[{\"issuer\":\"aws\",\"claims\":{\"sub\":\"x\"}}],\n"
            " \"allow\":[{\"methods\":[\"GET\"],\"paths\":[\"/r/*\"]}],\n"
            " \"limits\":{\"rate_per_s\":0.0002}}";
        set = build1(&d, text);
        if (set) {
            const struct policy_limits *lim = policy_limits(policy_set_at(set, 0));
            ok(lim->rate_per_s == 0.0002, "rate_per_s kept as 0.0002");
            is_int(lim->burst, 1, "burst defaults to 1 below one request a second");
        } else {
            ok(0, "rate_per_s kept as 0.0002");
            ok(0, "burst defaults to 1");
        }
        policy_set_free(set);
        diags_free(&d);
        set = build1(
            &d, "{\"step\":\"s\",\"route\":{\"path_prefix\":\"/r/\"},\"upstream\":\"billing\",\n"
                " \"callers\":[{\"issuer\":\"aws\",\"claims\":{\"sub\":\"x\"}}],\n"
                " \"allow\":[{\"methods\":[\"GET\"],\"paths\":[\"/r/*\"]}],\n"
                " \"limits\":{\"rate_per_s\":2.5}}");
        ok(set && policy_limits(policy_set_at(set, 0))->burst == 3,
           "burst defaults to 2.5 rounded up");
        policy_set_free(set);
        diags_free(&d);
        set = build1(
            &d, "{\"step\":\"s\",\"route\":{\"path_prefix\":\"/r/\"},\"upstream\":\"billing\",\n"
                " \"callers\":[{\"issuer\":\"aws\",\"claims\":{\"sub\":\"x\"}}],\n"
                " \"allow\":[{\"methods\":[\"GET\"],\"paths\":[\"/r/*\"]}],\n"
                " \"limits\":{\"rate_per_s\":\"1/h\"}}");
        s = diag_text(&d);
        ok(!set && strstr(s, "p.json:4:25: \"rate_per_s\" must be a number, not a string") != NULL,
           "a rate that is not a number is an error");
        free(s);
        policy_set_free(set);
        diags_free(&d);
    }
}

/* ------------------------------------------------------------ signed URLs */

static const char approvals[] =
    "{\n"
    "  \"step\": \"approvals\",\n"
    "  \"route\": { \"host\": \"*\", \"path_prefix\": \"/approvals/\" },\n"
    "  \"upstream\": \"approvals\",\n"
    "  \"callers\": [{ \"signed_url\": { \"minted_by\": { \"issuer\": \"aws\",\n"
    "                  \"claims\": { \"sub\": \"arn:aws:iam::123456789012:role/approval-lambda\" } } } },\n"
    "              { \"issuer\": \"aws\", \"claims\": { \"sub\": \"arn:aws:iam::123456789012:role/ops\" } }],\n"
    "  \"allow\": [{ \"methods\": [\"GET\"], \"paths\": [\"/approvals/*/approve\", \"/approvals/*/reject\"] }],\n"
    "  \"sign\": [{ \"callers\": [{ \"issuer\": \"aws\",\n"
    "                \"claims\": { \"sub\": \"arn:aws:iam::123456789012:role/approval-lambda\" } }],\n"
    "              \"methods\": [\"GET\"], \"paths\": [\"/approvals/**\"], \"max_ttl_s\": 3600 }]\n"
    "}\n";

static enum reason decide_link(const struct policy *p, const char *minter, const char *method,
                               const char *path)
{
    struct hdrs none = {{NULL}, {NULL}, 0};
    struct policy_input in = {method, path, strlen(path), NULL, NULL, hdr_lookup, &none};
    return policy_authorize_link(p, &in, minter, NULL);
}

static enum reason sign_check(const struct policy *p, const char *issuer, const char *claims_json,
                              const char *method, const char *path, unsigned ttl)
{
    json_t *claims = json_loads(claims_json, 0, NULL);
    enum reason r = policy_sign_check(p, issuer, claims, method, path, strlen(path), ttl);
    json_decref(claims);
    return r;
}

static void test_signed_urls(void)
{
    struct diags d = DIAGS_INIT;
    struct policy_set *set = build1(&d, approvals);
    const struct policy *p;
    const char *lambda = "{\"sub\": \"arn:aws:iam::123456789012:role/approval-lambda\"}";
    const char *ops = "{\"sub\": \"arn:aws:iam::123456789012:role/ops\"}";

    if (!ok(set != NULL, "a policy with signed_url callers and a sign section loads")) {
        char *all = diag_text(&d);
        tap_diag("%s", all);
        free(all);
        diags_free(&d);
        return;
    }
    p = policy_set_at(set, 0);
    ok(policy_accepts_signed_urls(p) && policy_sign_count(p) == 1, "accessors see them");
    is_int(decide_link(p, "aws.0123456789ab", "GET", "/approvals/42/approve"), REASON_ALLOWED,
           "a link minted by an aws caller passes minted_by");
    is_int(decide_link(p, "cli", "GET", "/approvals/42/approve"), REASON_NO_CALLER_MATCH,
           "a link from baton sign-url does not pass minted_by");
    is_int(decide_link(p, "cognito.0123456789ab", "GET", "/approvals/42/approve"),
           REASON_NO_CALLER_MATCH,
           "a link minted by another issuer's caller does not pass minted_by");
    is_int(decide_link(p, "aws.0123456789ab", "POST", "/approvals/42/approve"),
           REASON_NO_RULE_MATCH, "allow rules apply to links unchanged");
    is_int(decide(p, "aws", ops, "GET", "/approvals/42/approve", NULL, NULL), REASON_ALLOWED,
           "token callers still work");
    is_int(decide(p, "aws", lambda, "GET", "/approvals/42/approve", NULL, NULL),
           REASON_NO_CALLER_MATCH, "a token never matches a signed_url entry");
    is_int(sign_check(p, "aws", lambda, "GET", "/approvals/42/approve", 900), REASON_ALLOWED,
           "the granted caller may mint");
    is_int(sign_check(p, "aws", ops, "GET", "/approvals/42/approve", 900), REASON_NO_CALLER_MATCH,
           "a caller the sign section does not list may not mint");
    is_int(sign_check(p, "aws", lambda, "POST", "/approvals/42/approve", 900), REASON_NO_RULE_MATCH,
           "a method the grant does not list may not be minted");
    is_int(sign_check(p, "aws", lambda, "GET", "/approvals/42/approve", 3601), REASON_BAD_REQUEST,
           "a lifetime over the grant's max_ttl_s is refused");
    policy_set_free(set);
    diags_free(&d);

    /* a step whose signed_url entry would refuse the minter's links: no mint */
    {
        char *t = xstrdup(approvals);
        char *m = strstr(t, "approval-lambda\" } } } }");
        memcpy(m, "approval-lambdX", 15);
        set = build1(&d, t);
        ok(set && sign_check(policy_set_at(set, 0), "aws", lambda, "GET", "/approvals/1/approve",
                             60) == REASON_NO_CALLER_MATCH,
           "minted_by claims are checked at mint time");
        policy_set_free(set);
        diags_free(&d);
        free(t);
    }
    {
        static const struct {
            const char *text, *want, *what;
        } t[] = {
            {"{\"step\":\"s\",\"route\":{\"path_prefix\":\"/a/\"},\"upstream\":\"billing\",\n"
             " \"callers\":[{\"signed_url\":1},{\"signed_url\":true,\"issuer\":\"aws\"},\n"
             "   {\"signed_url\":{\"minted_by\":{\"issuer\":\"google\",\"claims\":{}}}}],\n"
             " \"allow\":[{\"methods\":[\"GET\"],\"paths\":[\"/a/**\"]}]}",
             "p.json:2:27: \"signed_url\" must be true or {\"minted_by\": {\"issuer\": ..., \"claims\": {...}}}\n"
             "p.json:2:49: callers[1]: unknown key \"issuer\"\n"
             "p.json:3:41: issuer \"google\" is not defined in conf/baton.json\n"
             "p.json:3:59: an empty claims object would match any object; name the claims to match\n",
             "signed_url entries are checked at file:line:column"},
            {"{\"step\":\"s\",\"route\":{\"path_prefix\":\"/a/\"},\"upstream\":\"billing\",\n"
             " \"callers\":[{\"signed_url\":true}],\n"
             " \"allow\":[{\"methods\":[\"GET\"],\"paths\":[\"/a/**\"]}],\n"
             " \"sign\":[{\"callers\":[{\"signed_url\":true}],\"methods\":[\"get\"],\"paths\":[\"/b/**\"],\"max_ttl_s\":0,\"x\":1},\n"
             "         {\"methods\":[\"GET\"],\"paths\":[\"/a/x\"]}]}",
             "p.json:4:22: a sign entry's callers hold tokens: a signed URL cannot mint links\n"
             "p.json:4:54: method \"get\" must be an upper-case token (methods match exactly)\n"
             "p.json:4:70: path pattern \"/b/**\" can never match under the route's path_prefix \"/a/\"\n"
             "p.json:4:91: sign[0].max_ttl_s: 0 is out of range 1..604800\n"
             "p.json:4:93: sign[0]: unknown key \"x\"\n"
             "p.json:5:10: sign[1]: missing required key \"callers\"\n"
             "p.json:5:10: sign[1]: missing required key \"max_ttl_s\"\n",
             "sign entries are checked at file:line:column"},
        };
        for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
            struct policy_set *s2 = build1(&d, t[i].text);
            char *all = diag_text(&d);
            if (!ok(!s2 && strcmp(all, t[i].want) == 0, "%s", t[i].what))
                tap_diag("got:\n%s", all);
            free(all);
            policy_set_free(s2);
            diags_free(&d);
        }
    }
}

/* limits.rate_scope and limits.max_in_flight (README "Shared limits on Redis"). */
static void test_shared_limits(void)
{
    static const char *head =
        "{\"step\":\"s\",\"route\":{\"path_prefix\":\"/\"},\"upstream\":\"billing\",\n"
        " \"callers\":[{\"issuer\":\"aws\",\"claims\":{\"sub\":\"x\"}}],\n"
        " \"allow\":[{\"methods\":[\"GET\"],\"paths\":[\"/**\"]}],\n";
    struct {
        const char *limits;
        bool redis;
        const char *want; /* "" : loads */
        const char *what;
    } t[] = {
        {" \"limits\":{\"rate_per_s\":5}}", false, "", "rate_scope absent: instance"},
        {" \"limits\":{\"rate_per_s\":5,\"rate_scope\":\"instance\"}}", false, "",
         "instance without redis"},
        {" \"limits\":{\"rate_per_s\":5,\"rate_scope\":\"global\"}}", true, "",
         "global with redis"},
        {" \"limits\":{\"rate_per_s\":5,\"rate_scope\":\"global\"}}", false,
         "p.json:4:40: \"rate_scope\": \"global\" needs \"redis\" in the main config (the store every instance shares)\n",
         "global without redis"},
        {" \"limits\":{\"rate_scope\":\"global\"}}", true,
         "p.json:4:25: \"rate_scope\": \"global\" needs \"rate_per_s\"\n", "global without a rate"},
        {" \"limits\":{\"rate_per_s\":5,\"rate_scope\":\"cluster\"}}", true,
         "p.json:4:40: limits.rate_scope: \"cluster\" is not one of \"instance\" or \"global\"\n",
         "unknown scope"},
        {" \"limits\":{\"rate_per_s\":5,\"rate_scope\":1}}", true,
         "p.json:4:40: limits.rate_scope: expected a string, got an integer\n",
         "scope of the wrong type"},
        {" \"limits\":{\"max_in_flight\":0}}", false,
         "p.json:4:28: limits.max_in_flight: 0 is out of range 1..1000000\n", "max_in_flight 0"},
        {" \"limits\":{\"max_in_flight\":1000001}}", false,
         "p.json:4:28: limits.max_in_flight: 1000001 is out of range 1..1000000\n",
         "max_in_flight over the cap"},
        {" \"limits\":{\"max_in_flight\":1000000}}", false, "", "max_in_flight at the cap"},
        {" \"limits\":{\"max_in_flight\":\"2\"}}", false,
         "p.json:4:28: limits.max_in_flight: expected an integer, got a string\n",
         "max_in_flight as a string"},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct diags d = DIAGS_INIT;
        char *text = xasprintf("%s%s", head, t[i].limits);
        struct policy_set *set;
        char *s;
        cfg.redis.enabled = t[i].redis;
        set = build1(&d, text);
        s = diag_text(&d);
        is_str(s, t[i].want, "shared limits (%s): diagnostics", t[i].what);
        ok((set != NULL) == (t[i].want[0] == '\0'), "shared limits (%s): built iff no error",
           t[i].what);
        free(s);
        free(text);
        policy_set_free(set);
        diags_free(&d);
    }
    {
        struct diags d = DIAGS_INIT;
        char *text = xasprintf("%s%s", head,
                               " \"limits\":{\"rate_per_s\":7,\"burst\":9,"
                               "\"rate_scope\":\"global\",\"max_in_flight\":3}}");
        struct policy_set *set;
        cfg.redis.enabled = true;
        set = build1(&d, text);
        ok(set != NULL, "global step with max_in_flight loads");
        if (set) {
            const struct policy_limits *l = policy_limits(policy_set_at(set, 0));
            is_int(l->rate_scope, POLICY_RATE_GLOBAL, "rate_scope global");
            is_int(l->max_in_flight, 3, "max_in_flight");
            is_int(l->rate_per_s, 7, "rate_per_s kept");
            is_int(l->burst, 9, "burst kept");
        }
        policy_set_free(set);
        diags_free(&d);
        free(text);
        cfg.redis.enabled = false;
    }
}

static void report_lines(char *report)
{
    for (char *line = report, *nl; line && *line; line = nl + 1) {
        nl = strchr(line, '\n');
        tap_diag("%.*s", (int)(nl - line), line);
    }
}

/* README's "Policy keys" table and the "Shared limits on Redis" rows agree
 * with the loader's tables: names, and the ranges and defaults of the keys
 * a table row checks (readme_tables.h). */
static void test_readme_tables(void)
{
    size_t n;
    const struct jload_table *t = policy_tables(&n);
    char *readme = readme_text(), *report = NULL, *drifted, *row;
    int bad;

    ok(readme != NULL, "README.md is readable");
    if (!readme)
        return;
    bad = readme_check(readme, "### Policy keys\n", t, n, NULL, &report);
    ok(bad == 0, "README's policy key table agrees with the loader's tables (%d disagreements)",
       bad);
    report_lines(report);
    free(report);
    bad = readme_check(readme, "## Shared limits on Redis\n", t, n, "limits.", &report);
    ok(bad == 0, "README's shared limits rows agree with the loader's limits table (%d)", bad);
    report_lines(report);
    free(report);
    /* the check can fail: a range and a choice that drifted */
    drifted = xstrdup(readme);
    row = strstr(drifted,
                 "| `limits.timeout_ms` | integer | the upstream's `timeout_ms` | 1..3600000");
    ok(row != NULL, "README has the timeout_ms row the drift test edits");
    if (row)
        memcpy(strstr(row, "1..3600000"), "1..3600001", 10);
    row = strstr(
        drifted,
        "| `limits.rate_scope` *ext.* | string | `\"instance\"` | `\"instance\"` or `\"global\"`");
    ok(row != NULL, "README has the rate_scope row the drift test edits");
    if (row)
        memcpy(strstr(row, "`\"global\"`"), "`\"glob4l\"`", 10);
    bad = readme_check(drifted, "### Policy keys\n", t, n, NULL, &report);
    ok(bad == 2 && report &&
           strstr(report, "limits.timeout_ms: README's range does not say 1..3600000") &&
           strstr(report, "limits.rate_scope: README does not name the choice \"global\""),
       "a range and a choice that drift are caught (%d)", bad);
    free(report);
    free(drifted);
    free(readme);
}

/* The glob matcher before issue 17 (a byte loop with one backtrack point):
 * the verdicts policy_glob_match keeps. */
static bool ref_glob_match(const char *p, size_t pn, const char *s, size_t sn)
{
    size_t pi = 0, si = 0, star = (size_t)-1, mark = 0;

    while (si < sn) {
        if (pi < pn && p[pi] == '*') {
            star = pi++;
            mark = si;
        } else if (pi < pn && p[pi] == s[si]) {
            pi++;
            si++;
        } else if (star != (size_t)-1) {
            pi = star + 1;
            si = ++mark;
        } else {
            return false;
        }
    }
    while (pi < pn && p[pi] == '*')
        pi++;
    return pi == pn;
}

/* Every pattern over {a, b, *} up to 6 bytes against every value over {a, b}
 * up to 7 bytes, exhaustively, then random longer ones over {a, b, c, *}
 * (values over {a, b, c}): policy_glob_match agrees with the reference. */
static void test_glob_differential(void)
{
    static const char pa[] = "ab*", sa[] = "ab";
    char p[64], v[64];
    size_t checked = 0, matched = 0, bad = 0;

    for (size_t pn = 0; pn <= 6; pn++) {
        size_t np = 1;
        for (size_t i = 0; i < pn; i++)
            np *= 3;
        for (size_t pc = 0; pc < np; pc++) {
            for (size_t i = 0, c = pc; i < pn; i++, c /= 3)
                p[i] = pa[c % 3];
            for (size_t sn = 0; sn <= 7; sn++) {
                for (size_t sc = 0; sc < ((size_t)1 << sn); sc++) {
                    for (size_t i = 0; i < sn; i++)
                        v[i] = sa[(sc >> i) & 1];
                    bool want = ref_glob_match(p, pn, v, sn), got = policy_glob_match(p, pn, v, sn);
                    checked++;
                    matched += want;
                    if (want != got && bad++ < 5)
                        ok(0, "glob \"%.*s\" on \"%.*s\": want %d got %d", (int)pn, p, (int)sn, v,
                           want, got);
                }
            }
        }
    }
    unsigned long long seed = 0x2545f4914f6cdd1dull;
    for (int round = 0; round < 200000; round++) {
        size_t pn, sn;
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        pn = (size_t)(seed >> 58) % 24;
        sn = (size_t)(seed >> 52) % 40;
        for (size_t i = 0; i < pn; i++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            p[i] = "abc**"[(seed >> 40) % 5];
        }
        for (size_t i = 0; i < sn; i++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            v[i] = "aab"[(seed >> 40) % 3];
        }
        /* half the time, the value is the pattern with each star filled */
        if (seed >> 63) {
            sn = 0;
            for (size_t i = 0; i < pn && sn < 40; i++) {
                if (p[i] != '*')
                    v[sn++] = p[i];
                else
                    for (size_t k = (seed >> (i % 32)) % 4; k && sn < 40; k--)
                        v[sn++] = "abc"[k % 3];
            }
        }
        bool want = ref_glob_match(p, pn, v, sn), got = policy_glob_match(p, pn, v, sn);
        checked++;
        matched += want;
        if (want != got && bad++ < 5)
            ok(0, "glob \"%.*s\" on \"%.*s\": want %d got %d", (int)pn, p, (int)sn, v, want, got);
    }
    ok(bad == 0 && matched > checked / 50 && matched < checked - checked / 50,
       "policy_glob_match agrees with the reference on %zu pattern/value pairs (%zu match), %zu differ",
       checked, matched, bad);
    ok(policy_glob_match("arn:aws:states:*", 16, "arn:aws:states:us-east-1:1:execution:x", 38) &&
           !policy_glob_match("arn:aws:states:*", 16, "arn:aws:state", 13) &&
           policy_glob_match("*-prod", 6, "-prod", 5) && !policy_glob_match("a*a", 3, "a", 1) &&
           policy_glob_match("a*b*a", 5, "abba", 4) && policy_glob_match("a*b*b*a", 7, "abba", 4) &&
           !policy_glob_match("a*b*b*b*a", 9, "abba", 4),
       "prefix, suffix and overlap boundaries");
}

int main(void)
{
    cfg_init();
    test_load_accessors();
    test_minimal_defaults();
    test_routing();
    test_duplicates_across_files();
    test_claims_patterns();
    test_path_patterns();
    test_methods_headers_order();
    test_scopes();
    test_dry_run();
    test_trace();
    test_load_errors();
    test_load_dir();
    test_shared_limits();
    test_first_hour();
    test_signed_urls();
    test_readme_tables();
    test_glob_differential();
    return tap_done();
}
