/*
 * cli.c: `baton check` and `baton explain`, the offline front ends of the
 * config and policy engine.
 *
 * check loads the config and every step policy exactly as `serve` would and
 * prints every error (file:line:column), or what it loaded. explain builds the
 * head the server would receive, parses it with the server's guard (http1.c),
 * and runs it through the server's own decision (decide.h) with no token cache
 * and no limiter, then prints the decision with the policy, the caller entry
 * and allow rule that matched, or the reason and the closest miss.
 *
 * Exit status (both commands): 0 clean / allow; 1 errors in the files (check)
 * or deny and would_deny (explain: a dry_run policy's deny is still a deny of
 * the policy under test, so a script asserting "this caller is allowed" fails
 * before the policy is switched to enforce); 2 usage errors, and for explain a
 * config or policy that does not load.
 */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "assertion.h"
#include "authn.h"
#include "config.h"
#include "decide.h"
#include "diag.h"
#include "http1.h"
#include "jwks.h"
#include "log.h"
#include "path.h"
#include "policy.h"
#include "reason.h"
#include "signurl.h"
#include "util.h"

#define CLI_MAX_HEADERS 64
#define CLI_MAX_CLAIMS_BYTES (1u << 20)

/* ---------------------------------------------------------------- check */

static const char *key_source_name(enum cfg_key_source k)
{
    switch (k) {
    case KEYS_DISCOVERY:
        return "discovery";
    case KEYS_JWKS_URI:
        return "jwks_uri";
    case KEYS_JWKS_FILE:
        return "jwks_file";
    }
    return "?";
}

static void check_summary(const struct baton_config *cfg, const struct policy_set *set)
{
    size_t n = policy_set_count(set);

    printf("%s: OK\n", cfg->file);
    printf("issuers (%zu):\n", cfg->n_issuers);
    for (size_t i = 0; i < cfg->n_issuers; i++)
        printf("  %-12s %s (keys: %s)\n", cfg->issuers[i].name, cfg->issuers[i].issuer,
               key_source_name(cfg->issuers[i].key_source));
    printf("upstreams (%zu):\n", cfg->n_upstreams);
    for (size_t i = 0; i < cfg->n_upstreams; i++)
        printf("  %-12s %s (identity: %s)\n", cfg->upstreams[i].name, cfg->upstreams[i].url,
               cfg->upstreams[i].identity == IDENTITY_NONE ? "none" : "google");
    printf("steps (%zu):\n", n);
    for (size_t i = 0; i < n; i++) {
        const struct policy *p = policy_set_at(set, i);
        printf("  %-24s %-8s %s (sha256 %s)\n", policy_step(p),
               policy_dry_run(p) ? "dry_run" : "enforce", policy_file(p), policy_hash_hex(p));
    }
    printf("routes (%zu, in match order):\n", n);
    for (size_t i = 0; i < n; i++) {
        const struct policy *p = policy_set_at(set, i);
        printf("  %-20s %-24s -> %s (upstream %s)\n", policy_host(p), policy_path_prefix(p),
               policy_step(p), policy_upstream(p)->name);
    }
    if (cfg->assertion.enabled) {
        const struct cfg_assertion *a = &cfg->assertion;
        printf("caller assertion: iss %s, header %s, lifetime %us, key %s, %zu previous key%s; to:",
               a->issuer, a->header, a->lifetime_s,
               a->signing_key ? a->signing_key : "(generated at start)", a->n_previous_keys,
               a->n_previous_keys == 1 ? "" : "s");
        for (size_t i = 0; i < cfg->n_upstreams; i++)
            if (cfg->upstreams[i].caller_assertion)
                printf(" %s", cfg->upstreams[i].name);
        printf("\n");
    }
}

/*
 * Reads every issuer's jwks_file as serve would (jwks_check_file): a key file
 * is not a secret mounted at run time, so a missing, unreadable or unusable
 * one is an error here, at the config's jwks_file line, rather than a 503 from
 * /readyz after deployment. Skipped keys are warnings.
 */
static void check_jwks_files(const struct baton_config *cfg, struct diags *d)
{
    for (size_t i = 0; i < cfg->n_issuers; i++) {
        const struct cfg_issuer *iss = &cfg->issuers[i];
        char err[300], note[256], ptr[64];
        size_t keys = 0, skipped = 0;

        if (iss->key_source != KEYS_JWKS_FILE || !iss->jwks_file)
            continue;
        snprintf(ptr, sizeof(ptr), "issuers/%zu/jwks_file", i);
        if (jwks_check_file(iss->jwks_file, &keys, &skipped, note, sizeof(note), err, sizeof(err)) <
            0)
            config_diag(cfg, d, ptr, false, "issuer \"%s\": %s", iss->name, err);
        else if (skipped)
            diags_warn(d, iss->jwks_file, 0, 0, "issuer \"%s\": %zu key%s skipped (%s); %zu usable",
                       iss->name, skipped, skipped == 1 ? "" : "s", note, keys);
    }
}

static void check_usage(FILE *out)
{
    fputs("usage: baton check [-c FILE]\n"
          "  Validates the config (FILE, else $BATON_CONFIG, else " CONFIG_DEFAULT_PATH ")\n"
          "  and every step policy; prints every error as file:line:column.\n"
          "  Exit 0: valid; 1: errors; 2: usage.\n",
          out);
}

/*
 * url_signing: steps that mint or take links without url_signing are errors;
 * and, without "redis" (where uses are counted across instances), a warning
 * that single-use links are counted per instance. Like
 * every other key file, the keys themselves are opened by serve (type, mode
 * 0600), not here: a config whose secrets are mounted at run time still checks.
 */
static int check_url_signing(const struct baton_config *cfg, const struct policy_set *set,
                             struct diags *d)
{
    size_t n = policy_set_count(set);
    int rc = 0;

    for (size_t i = 0; i < n; i++) {
        const struct policy *p = policy_set_at(set, i);
        if (!cfg->url_signing.enabled && (policy_sign_count(p) || policy_accepts_signed_urls(p))) {
            diags_add(d, policy_file(p), 0, 0,
                      "step \"%s\" mints or accepts signed URLs but %s has no url_signing section",
                      policy_step(p), cfg->file);
            rc = -1;
        }
    }
    if (cfg->url_signing.enabled && !cfg->redis.enabled)
        fprintf(stderr,
                "baton check: warning: url_signing: single-use links are counted per instance "
                "(in memory); behind N instances a link can be used up to N times its uses: "
                "configure \"redis\" to count them across instances\n");
    return rc;
}

int cmd_check(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct diags d = DIAGS_INIT, warnings = DIAGS_INIT;
    struct baton_config *cfg = NULL;
    struct policy_set *set = NULL;
    const char *flag = NULL;
    int c, rc = 2;

    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            flag = optarg;
            break;
        case 'h':
            check_usage(stdout);
            rc = 0;
            goto out;
        default:
            fprintf(stderr, "baton check: unknown or incomplete option \"%s\"\n", argv[optind - 1]);
            check_usage(stderr);
            goto out;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "baton check: unexpected argument \"%s\"\n", argv[optind]);
        check_usage(stderr);
        goto out;
    }
    rc = 1;
    d.warnings = &warnings;
    cfg = config_load(config_path_choose(flag), &d);
    if (cfg) {
        set = policy_set_load(cfg, &d);
        check_jwks_files(cfg, &d);
    }
    diags_print(&warnings, stderr);
    if (!cfg || !set || d.n) {
        diags_print(&d, stderr);
        fprintf(stderr, "baton check: %zu error%s\n", d.n, d.n == 1 ? "" : "s");
        goto out;
    }
    if (check_url_signing(cfg, set, &d) < 0) {
        diags_print(&d, stderr);
        fprintf(stderr, "baton check: %zu error%s\n", d.n, d.n == 1 ? "" : "s");
        goto out;
    }
    if (warnings.n)
        fprintf(stderr, "baton check: %zu warning%s\n", warnings.n, warnings.n == 1 ? "" : "s");
    check_summary(cfg, set);
    rc = 0;
out:
    policy_set_free(set);
    config_free(cfg);
    diags_free(&d);
    diags_free(&warnings);
    return rc;
}

/* ---------------------------------------------------------------- explain */

struct cli_header {
    char *name, *value; /* owned */
};

struct cli_headers {
    struct cli_header v[CLI_MAX_HEADERS];
    int n;
};

/* policy_input.header over the --header list: occurrences, first value. */
static int cli_header_lookup(void *ctx, const char *name, const char **value, size_t *len)
{
    struct cli_headers *h = ctx;
    int count = 0;
    for (int i = 0; i < h->n; i++) {
        if (ascii_casecmp_n(h->v[i].name, strlen(h->v[i].name), name, strlen(name)) != 0)
            continue;
        if (count++ == 0) {
            *value = h->v[i].value;
            *len = strlen(h->v[i].value);
        }
    }
    return count;
}

static bool is_token(const char *s)
{
    return http1_token(s, strlen(s));
}

/* "Name: value" -> header (OWS around the value trimmed). 0 or -1. */
static int parse_header(const char *arg, struct cli_header *out)
{
    const char *colon = strchr(arg, ':'), *v, *e;
    char *name;

    if (!colon)
        return -1;
    name = xstrndup(arg, (size_t)(colon - arg));
    if (!is_token(name)) {
        free(name);
        return -1;
    }
    v = colon + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    e = v + strlen(v);
    while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    for (const char *q = v; q < e; q++)
        if ((unsigned char)*q < 0x20 && *q != '\t') {
            free(name);
            return -1;
        }
    out->name = name;
    out->value = xstrndup(v, (size_t)(e - v));
    return 0;
}

static void explain_usage(FILE *out)
{
    fputs("usage: baton explain [-c FILE] --method M --path P [--host H]\n"
          "                     [--header 'Name: value']... (--claims JSON|@FILE | --token JWT)\n"
          "                     [--issuer NAME] [--json]\n"
          "  Runs one request through the canonical path, the route table and the step\n"
          "  policy exactly as the server does, and prints the decision, the policy, the\n"
          "  caller entry and allow rule that matched (file:line), or the reason and the\n"
          "  closest miss. --host is the Host header, parsed as the server parses it\n"
          "  (port and a root dot stripped); without it only routes for host \"*\"\n"
          "  apply. With --claims, the issuer is --issuer NAME or\n"
          "  the one whose `iss` equals the claims' iss; token checks (signature,\n"
          "  expiry, audience) are skipped. --claims @FILE reads the claims from FILE.\n"
          "  With --token, the issuers' keys are fetched once and the token is verified\n"
          "  exactly as the server does (signature, expiry, audience, typ) before the\n"
          "  policy decides; the authentication outcome is printed beside the decision.\n"
          "  Exit 0: allow; 1: deny or would_deny (dry_run); 2: usage or config.\n",
          out);
}

struct explain {
    /* inputs */
    const char *method, *path_arg, *host;
    struct cli_headers headers;
    /* outcome */
    enum reason reason; /* the decision's, or a dry_run step's deny */
    enum decision decision;
    bool guard; /* the head itself was refused (http1.c): no stage ran */
    struct path_result path;
    struct decide_outcome d;     /* the server's decision (decide.h), no cache, no limiter */
    const struct policy *policy; /* d.policy */
    const struct cfg_issuer *issuer;
    bool have_authn;                  /* --token reached authentication: `authn` and d.ar are set */
    enum reason authn;                /* REASON_ALLOWED, or why the token was refused */
    const struct authn_result *token; /* &d.ar */
    const struct policy_trace *trace; /* &d.trace */
    bool have_trace;
    json_t *assertion; /* --token, allowed, caller_assertion: the claims it would carry (owned) */
};

/* "none", "instance", "global": the step's rate limit, as policies name it. */
static const char *rate_scope_name(enum decide_rate_scope s)
{
    return s == DECIDE_RATE_GLOBAL ? "global" : s == DECIDE_RATE_INSTANCE ? "instance" : "none";
}

/* The head explain's request would arrive with: --method, Host (HTTP/1.1),
 * or no Host (HTTP/1.0: then only routes for host "*" apply), the --header
 * lines, and the token as a Bearer credential; the target is --path as
 * given, so the guard's target checks apply as in the server. Owned; *len
 * bytes. */
static char *explain_head(const struct explain *x, const char *token, size_t *len)
{
    size_t cap = strlen(x->method) + strlen(x->path_arg) + 64 + (x->host ? strlen(x->host) : 0) +
                 (token ? strlen(token) + 32 : 0);
    char *b;
    int n;

    for (int i = 0; i < x->headers.n; i++)
        cap += strlen(x->headers.v[i].name) + strlen(x->headers.v[i].value) + 4;
    b = xmalloc(cap);
    n = snprintf(b, cap, "%s %s HTTP/1.%c\r\n", x->method, x->path_arg, x->host ? '1' : '0');
    if (x->host)
        n += snprintf(b + n, cap - (size_t)n, "Host: %s\r\n", x->host);
    for (int i = 0; i < x->headers.n; i++)
        n += snprintf(b + n, cap - (size_t)n, "%s: %s\r\n", x->headers.v[i].name,
                      x->headers.v[i].value);
    if (token)
        n += snprintf(b + n, cap - (size_t)n, "Authorization: Bearer %s\r\n", token);
    n += snprintf(b + n, cap - (size_t)n, "\r\n");
    *len = (size_t)n;
    return b;
}

/* policy_input.header over the parsed head: occurrences, first value (as
 * the server's header_lookup). */
static int cli_request_header(void *ctx, const char *name, const char **value, size_t *len)
{
    const struct http1_request *req = ctx;
    size_t nlen = strlen(name);
    int n = 0;
    for (unsigned i = 0; i < req->n_headers; i++) {
        const struct http1_header *h = &req->headers[i];
        if (h->name_len == nlen && ascii_casecmp_n(h->name, nlen, name, nlen) == 0 && n++ == 0) {
            *value = h->value;
            *len = h->value_len;
        }
    }
    return n;
}

static void print_text(const struct explain *x)
{
    const struct policy *p = x->policy;
    const struct policy_trace *t = x->trace;

    printf("decision: %s\n", decision_name(x->decision));
    printf("reason:   %s (%d)\n", reason_code(x->reason), reason_status(x->reason));
    if (x->path.path)
        printf("path:     %.*s\n", (int)x->path.path_len, x->path.path);
    else
        printf("target:   %s (rejected: not a canonical path, see path.h)\n", x->path_arg);
    if (!p) {
        if (x->reason == REASON_NO_ROUTE)
            printf("route:    no step policy routes host \"%s\", path \"%.*s\"\n",
                   x->host ? x->host : "", (int)x->path.path_len, x->path.path);
        return;
    }
    printf("step:     %s (%s)\n", policy_step(p), policy_dry_run(p) ? "dry_run" : "enforce");
    printf("policy:   %s (sha256 %s)\n", policy_file(p), policy_hash_hex(p));
    printf("upstream: %s\n", policy_upstream(p)->name);
    if (x->d.limits.scope != DECIDE_RATE_NONE || x->d.limits.max_in_flight)
        printf("limits:   rate %s %g/s burst %u, max_in_flight %u (the server takes them after "
               "authorize; explain does not)\n",
               rate_scope_name(x->d.limits.scope), x->d.limits.rate_per_s, x->d.limits.burst,
               x->d.limits.max_in_flight);
    if (x->issuer)
        printf("issuer:   %s (%s)\n", x->issuer->name, x->issuer->issuer);
    if (x->have_authn) {
        printf("authn:    %s", reason_code(x->authn));
        if (x->token->sub)
            printf(" (sub %s)", x->token->sub);
        printf(", token sha256 %s\n", x->token->fingerprint);
    }
    if (x->d.issuer_note)
        printf("miss:     issuer: %s\n", x->d.issuer_note);
    if (!x->have_trace)
        return;
    if (t->caller_index >= 0)
        printf("%-10scallers[%d] at %s:%d:%d (issuer %s)\n",
               t->reason == REASON_NO_CALLER_MATCH || t->reason == REASON_SCOPE_MISSING ? "closest:"
                                                                                        : "caller:",
               t->caller_index, policy_file(p), t->caller_line, t->caller_col,
               policy_caller_issuer(p, (size_t)t->caller_index));
    if (t->rule_index >= 0) {
        const char *pat = t->pattern_index >= 0
                              ? policy_rule_path(p, (size_t)t->rule_index, (size_t)t->pattern_index)
                              : NULL;
        printf("%-10sallow[%d] at %s:%d:%d",
               t->reason == REASON_NO_RULE_MATCH ? "closest:" : "rule:", t->rule_index,
               policy_file(p), t->rule_line, t->rule_col);
        if (pat)
            printf(" (path pattern \"%s\")", pat);
        printf("\n");
    }
    if (t->miss_kind) {
        printf("miss:     %s", t->miss_kind);
        if (t->miss_name[0])
            printf(" %s", t->miss_name);
        printf(": %s", t->miss_detail);
        if (t->miss_line > 0)
            printf(" (%s:%d:%d)", policy_file(p), t->miss_line, t->miss_col);
        printf("\n");
    }
    if (x->decision == DECISION_WOULD_DENY)
        printf(
            "note:     the policy is in dry_run mode: the server records would_deny and forwards\n");
    if (x->assertion) {
        char *s = json_dumps(x->assertion, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        printf(
            "assertion: the claims the upstream would receive (iat now; audit_log is the serving log's id)\n%s\n",
            s ? s : "");
        free(s);
    }
}

/* A JSON string of `s`; bytes that are not UTF-8 are shown \u00XX-escaped
 * (json_string refuses them) so that --json output is always valid JSON. */
static json_t *json_text(const char *s)
{
    json_t *v = json_string(s);
    if (!v) {
        size_t n = strlen(s), cap = 6 * n + 1;
        char *esc = xmalloc(cap);
        json_escape(esc, cap, s, n);
        v = json_string(esc);
        free(esc);
    }
    return v;
}

static json_t *json_at(const char *file, int index, int line, int col)
{
    return json_pack("{s:i, s:o, s:i, s:i}", "index", index, "file", json_text(file), "line", line,
                     "column", col);
}

static void print_json(const struct explain *x)
{
    const struct policy *p = x->policy;
    const struct policy_trace *t = x->trace;
    json_t *o = json_object();
    char *s;

    json_object_set_new(o, "decision", json_string(decision_name(x->decision)));
    json_object_set_new(o, "reason", json_string(reason_code(x->reason)));
    json_object_set_new(o, "status", json_integer(reason_status(x->reason)));
    json_object_set_new(o, "method", json_string(x->method));
    json_object_set_new(o, "target", json_text(x->path_arg));
    json_object_set_new(o, "path",
                        x->path.path ? json_stringn(x->path.path, x->path.path_len) : json_null());
    json_object_set_new(
        o, "query", x->path.query ? json_stringn(x->path.query, x->path.query_len) : json_null());
    json_object_set_new(o, "step", p ? json_string(policy_step(p)) : json_null());
    json_object_set_new(o, "mode",
                        p ? json_string(policy_dry_run(p) ? "dry_run" : "enforce") : json_null());
    json_object_set_new(
        o, "policy",
        p ? json_pack("{s:o, s:s}", "file", json_text(policy_file(p)), "sha256", policy_hash_hex(p))
          : json_null());
    json_object_set_new(o, "upstream", p ? json_string(policy_upstream(p)->name) : json_null());
    json_object_set_new(o, "issuer", x->issuer ? json_string(x->issuer->name) : json_null());
    if (x->have_authn)
        json_object_set_new(o, "authentication",
                            json_pack("{s:s, s:o, s:s}", "reason", reason_code(x->authn), "sub",
                                      x->token->sub ? json_text(x->token->sub) : json_null(),
                                      "token_sha256", x->token->fingerprint));
    json_object_set_new(
        o, "caller",
        x->have_trace && t->caller_index >= 0
            ? json_at(policy_file(p), t->caller_index, t->caller_line, t->caller_col)
            : json_null());
    if (x->have_trace && t->rule_index >= 0) {
        json_t *r = json_at(policy_file(p), t->rule_index, t->rule_line, t->rule_col);
        const char *pat = t->pattern_index >= 0
                              ? policy_rule_path(p, (size_t)t->rule_index, (size_t)t->pattern_index)
                              : NULL;
        json_object_set_new(r, "pattern", pat ? json_string(pat) : json_null());
        json_object_set_new(o, "rule", r);
    } else {
        json_object_set_new(o, "rule", json_null());
    }
    /* "caller" and "rule" name the closest entry on a deny at that stage */
    if (x->have_trace && t->miss_kind) {
        json_t *m = json_pack("{s:s, s:s, s:s}", "kind", t->miss_kind, "name", t->miss_name,
                              "detail", t->miss_detail);
        if (t->miss_line > 0) {
            json_object_set_new(m, "file", json_text(policy_file(p)));
            json_object_set_new(m, "line", json_integer(t->miss_line));
            json_object_set_new(m, "column", json_integer(t->miss_col));
        }
        json_object_set_new(o, "miss", m);
    } else if (x->d.issuer_note) {
        json_object_set_new(
            o, "miss",
            json_pack("{s:s, s:s, s:s}", "kind", "issuer", "name", "", "detail", x->d.issuer_note));
    } else {
        json_object_set_new(o, "miss", json_null());
    }
    json_object_set(o, "assertion", x->assertion ? x->assertion : json_null());
    /* the stage that decided, and the limits the server would take next
     * (explain takes none: the server's counters are not here) */
    json_object_set_new(o, "stage",
                        json_string(x->guard ? "guard" : decide_stage_name(x->d.stage)));
    json_object_set_new(o, "limits",
                        p ? json_pack("{s:s, s:f, s:i, s:i}", "rate_scope",
                                      rate_scope_name(x->d.limits.scope), "rate_per_s",
                                      x->d.limits.rate_per_s, "burst", (int)x->d.limits.burst,
                                      "max_in_flight", (int)x->d.limits.max_in_flight)
                          : json_null());
    s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (s)
        printf("%s\n", s);
    free(s);
    json_decref(o);
}

/* Reads --claims: inline JSON, or @FILE. Returns an owned object or NULL
 * with a message in err. */
static json_t *load_claims(const char *arg, char *err, size_t errlen)
{
    json_error_t je;
    json_t *v = NULL;
    char *text = NULL;
    size_t len;

    if (arg[0] == '@') {
        if (read_file_capped(arg + 1, CLI_MAX_CLAIMS_BYTES, &text, &len) != 0) {
            snprintf(err, errlen, "cannot read %s: %s", arg + 1, strerror(errno));
            return NULL;
        }
        arg = text;
    }
    v = json_loads(arg, JSON_REJECT_DUPLICATES, &je);
    if (!v)
        snprintf(err, errlen, "--claims is not JSON: %s (line %d column %d)", je.text, je.line,
                 je.column);
    else if (!json_is_object(v)) {
        snprintf(err, errlen, "--claims must be a JSON object");
        json_decref(v);
        v = NULL;
    }
    free(text);
    return v;
}

int cmd_explain(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"method", required_argument, NULL, 'm'},
        {"path", required_argument, NULL, 'p'},
        {"host", required_argument, NULL, 'H'},
        {"header", required_argument, NULL, 'e'},
        {"claims", required_argument, NULL, 'C'},
        {"token", required_argument, NULL, 'T'},
        {"issuer", required_argument, NULL, 'i'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct explain x;
    struct diags d = DIAGS_INIT;
    struct baton_config *cfg = NULL;
    struct policy_set *set = NULL;
    struct hdrclass *classes = NULL; /* owned: the server's header classes (decide.h) */
    struct jwks *keys = NULL;
    struct authn *authn = NULL;
    struct signurl_keys *url_keys = NULL; /* url_signing's, to verify a link as the server does */
    json_t *claims = NULL;
    const char *flag = NULL, *claims_arg = NULL, *token = NULL, *issuer_name = NULL;
    const struct cfg_issuer *named = NULL; /* --issuer's */
    struct http1_request hreq;
    char *head = NULL;
    size_t head_len = 0;
    enum reason path_reason = REASON_ALLOWED;
    bool as_json = false;
    char err[512];
    int c, rc = 2;

    memset(&x, 0, sizeof(x));
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            flag = optarg;
            break;
        case 'm':
            x.method = optarg;
            break;
        case 'p':
            x.path_arg = optarg;
            break;
        case 'H':
            x.host = optarg;
            break;
        case 'e':
            if (x.headers.n == CLI_MAX_HEADERS) {
                fprintf(stderr, "baton explain: at most %d --header options\n", CLI_MAX_HEADERS);
                goto out;
            }
            if (parse_header(optarg, &x.headers.v[x.headers.n]) != 0) {
                fprintf(stderr, "baton explain: --header \"%s\" is not \"Name: value\"\n", optarg);
                goto out;
            }
            x.headers.n++;
            break;
        case 'C':
            claims_arg = optarg;
            break;
        case 'T':
            token = optarg;
            break;
        case 'i':
            issuer_name = optarg;
            break;
        case 'j':
            as_json = true;
            break;
        case 'h':
            explain_usage(stdout);
            rc = 0;
            goto out;
        default:
            fprintf(stderr, "baton explain: unknown or incomplete option \"%s\"\n",
                    argv[optind - 1]);
            explain_usage(stderr);
            goto out;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "baton explain: unexpected argument \"%s\"\n", argv[optind]);
        goto out;
    }
    if (!x.method || !x.path_arg) {
        fprintf(stderr, "baton explain: --method and --path are required\n");
        explain_usage(stderr);
        goto out;
    }
    if (!is_token(x.method)) {
        fprintf(stderr, "baton explain: --method \"%s\" is not an HTTP method token\n", x.method);
        goto out;
    }
    if (!!claims_arg == !!token) {
        fprintf(stderr, "baton explain: give exactly one of --claims or --token\n");
        goto out;
    }
    if (claims_arg && !(claims = load_claims(claims_arg, err, sizeof(err)))) {
        fprintf(stderr, "baton explain: %s\n", err);
        goto out;
    }
    cfg = config_load(config_path_choose(flag), &d);
    if (cfg)
        set = policy_set_load(cfg, &d);
    if (!cfg || !set) {
        diags_print(&d, stderr);
        fprintf(stderr, "baton explain: the config or a policy does not load (%zu error%s)\n", d.n,
                d.n == 1 ? "" : "s");
        goto out;
    }
    if (cfg->url_signing.enabled && !(url_keys = signurl_keys_for(cfg, &d))) {
        diags_print(&d, stderr);
        fprintf(stderr, "baton explain: the url_signing keys do not load\n");
        goto out;
    }
    if (!(classes = decide_classes_new(cfg, set, err, sizeof(err)))) {
        fprintf(stderr, "baton explain: %s\n", err);
        goto out;
    }
    if (token && issuer_name) {
        fprintf(stderr, "baton explain: --issuer goes with --claims; a token names its issuer\n");
        goto out;
    }
    if (token) {
        /* Authenticate exactly as the server does, with each issuer's keys
         * fetched once (blocking is fine here); an issuer that does not load is
         * reported and its tokens fail keys_unavailable, as in the server. */
        struct diags kd = DIAGS_INIT;
        struct authn_keys provider;
        keys = jwks_new(NULL, NULL, cfg);
        if (jwks_load_sync(keys, &kd) != 0) {
            fprintf(stderr, "baton explain: some issuer keys did not load:\n");
            diags_print(&kd, stderr);
        }
        diags_free(&kd);
        provider = jwks_authn_keys(keys);
        authn = authn_new(cfg, &provider);
    }
    if (issuer_name && !(named = config_issuer(cfg, issuer_name))) {
        fprintf(stderr, "baton explain: --issuer \"%s\" is not an issuer of %s\n", issuer_name,
                cfg->file);
        goto out;
    }
    {
        const json_t *iss = json_object_get(claims, "iss");
        if (named && json_is_string(iss) &&
            (json_string_length(iss) != strlen(named->issuer) ||
             memcmp(json_string_value(iss), named->issuer, json_string_length(iss)) != 0)) {
            fprintf(stderr, "baton explain: the claims' iss \"%s\" is not issuer %s's \"%s\"\n",
                    json_string_value(iss), named->name, named->issuer);
            goto out;
        }
    }
    if ((x.host && strpbrk(x.host, "\r\n")) || (token && strpbrk(token, "\r\n")) ||
        strpbrk(x.path_arg, "\r\n")) {
        fprintf(stderr, "baton explain: --path, --host and --token are one line each\n");
        goto out;
    }
    /* The head the server would parse: its guard (http1.c) gives the
     * hostname (port and root dot stripped), Connection, Authorization and
     * the headers policies read, exactly as for a real request. */
    head = explain_head(&x, token, &head_len);
    {
        struct http1_limits lim;
        size_t hl = 0;
        memset(&lim, 0, sizeof(lim));
        lim.max_header_bytes = cfg->limits.max_header_bytes;
        lim.max_uri_bytes = cfg->limits.max_uri_bytes;
        lim.classes = classes;
        if (head_len > lim.max_header_bytes + 2) {
            x.guard = true;
            x.reason = REASON_HEADERS_TOO_LARGE;
        } else if (http1_parse_request(head, head_len, &lim, &hreq, &hl) != HTTP1_OK) {
            x.guard = true;
            x.reason = hreq.error ? hreq.error : REASON_BAD_REQUEST;
        } else if (hreq.body == HTTP1_BODY_LENGTH &&
                   hreq.content_length > cfg->limits.max_body_bytes) {
            x.guard = true;
            x.reason = REASON_BODY_TOO_LARGE;
        } else {
            /* the target the guard accepted, as the server canonicalizes it */
            path_reason = path_canonicalize(hreq.origin, hreq.origin_len, cfg->limits.max_uri_bytes,
                                            &x.path);
        }
    }
    if (x.guard) {
        x.decision = DECISION_DENY;
    } else {
        const struct decide_snapshot snap = {cfg, set, authn, url_keys, classes};
        struct decide_request dr = {
            .method = x.method,
            .hostname = hreq.hostname,
            .hostname_len = hreq.hostname ? hreq.hostname_len : 0,
            .path_reason = path_reason,
            .path = x.path.path,
            .path_len = x.path.path_len,
            .query = x.path.query,
            .query_len = x.path.query_len,
            .header = cli_request_header,
            .header_ctx = &hreq,
            .connection = &hreq.connection,
            .claims_given = claims != NULL,
            .claims = claims,
            .issuer = named,
            .body = hreq.body,
            .content_length = hreq.content_length,
            .now_s = now_ms() / 1000,
            .trace = true,
        };
        if (hreq.authorization >= 0) {
            dr.authorization = hreq.headers[hreq.authorization].value;
            dr.authorization_len = hreq.headers[hreq.authorization].value_len;
        }
        /* no cache, no limiter: a verdict, not a use */
        decide_request(&snap, &dr, NULL, NULL, NULL, &x.d);
        x.policy = x.d.policy;
        x.issuer = x.d.issuer;
        x.have_authn = x.d.have_ar;
        x.authn = x.d.stage == DECIDE_STAGE_AUTHN ? x.d.reason : REASON_ALLOWED;
        x.token = &x.d.ar;
        x.trace = &x.d.trace;
        x.have_trace = x.d.have_trace;
        x.decision = x.d.decision;
        x.reason = x.d.would_deny ? x.d.deny_reason : x.d.reason;
    }
    /* What the server would sign for the upstream: the same builder, with
     * the --header values that matched (no audit log is open here). */
    if (x.decision != DECISION_DENY && x.decision != DECISION_ERROR && x.have_authn &&
        x.authn == REASON_ALLOWED && cfg->assertion.enabled &&
        policy_upstream(x.policy)->caller_assertion) {
        const char *names[ASSERTION_MAX_HEADERS], *vals[ASSERTION_MAX_HEADERS];
        size_t lens[ASSERTION_MAX_HEADERS], nh = 0;
        const struct policy_input hin = {.header = cli_header_lookup, .header_ctx = &x.headers};
        for (size_t i = 0; i < policy_header_count(x.policy) && nh < ASSERTION_MAX_HEADERS; i++)
            if (policy_header_matched(x.policy, i, &hin, &vals[nh], &lens[nh]))
                names[nh++] = policy_header_name(x.policy, i);
        struct assertion_input ain = {
            .cfg = &cfg->assertion,
            .audience = policy_upstream(x.policy)->audience,
            .caller = x.token,
            .cognito = x.token->issuer && !strcmp(x.token->issuer->audience_claim, "client_id"),
            .step = policy_step(x.policy),
            .policy_file = policy_file(x.policy),
            .policy_sha256 = policy_hash_hex(x.policy),
            .dry_run = policy_dry_run(x.policy),
            .header_names = names,
            .header_values = vals,
            .header_lens = lens,
            .n_headers = nh,
            .audit_log = NULL,
            .now_s = now_ms() / 1000,
        };
        x.assertion = assertion_claims(&ain);
    }
    if (as_json)
        print_json(&x);
    else
        print_text(&x);
    rc = x.decision == DECISION_ALLOW ? 0 : 1;
out:
    for (int i = 0; i < x.headers.n; i++) {
        free(x.headers.v[i].name);
        free(x.headers.v[i].value);
    }
    json_decref(claims);
    json_decref(x.assertion);
    decide_outcome_release(&x.d);
    free(head);
    authn_free(authn);
    signurl_keys_free(url_keys);
    jwks_free(keys);
    policy_set_free(set);
    hdrclass_free(classes);
    config_free(cfg);
    diags_free(&d);
    return rc;
}
