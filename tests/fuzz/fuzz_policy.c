/*
 * fuzz_policy.c: step-policy loading from a buffer (policy_set_build) on
 * arbitrary bytes, against a fixed config with the sample's issuers and
 * upstreams. Properties besides "no crash, no sanitizer report": a rejected
 * policy has at least one diagnostic, each with a position inside the text or
 * none; an accepted one routes and authorizes a few fixed requests (with and
 * without a trace) to the same decision either way. A violation aborts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "config.h"
#include "diag.h"
#include "policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void expect(int cond)
{
    if (!cond)
        abort();
}

static int one_header(void *ctx, const char *name, const char **value, size_t *len)
{
    (void)ctx;
    if (strcasecmp(name, "X-Sfn-Execution") != 0)
        return 0;
    *value = "arn:aws:states:us-east-1:123456789012:execution:billing-after-deploy:1";
    *len = strlen(*value);
    return 1;
}

static void exercise(const struct policy_set *set)
{
    static const char *const paths[] = {"/",
                                        "/billing/reconcile",
                                        "/billing/runs/7",
                                        "/cleanup/weekly",
                                        "/approvals/42/decision",
                                        "/a/b/c/d"};
    static const char *const claims_json[] = {
        ("{\"sub\":\"arn:aws:iam::123456789012:role/weekly-cleanup-lambda\","
         "\"https://sts.amazonaws.com/\":{\"aws_account\":\"123456789012\",\"source_region\":\"us-east-1\"}}"),
        "{\"client_id\":\"5kq8example1ab2cd3ef4gh5ij6\",\"token_use\":\"access\",\"scope\":\"billing-api/reconcile\"}",
        "{\"sub\":[1,2],\"n\":5,\"b\":true,\"x\":{\"y\":null}}",
    };
    static const char *const issuers[] = {"aws", "cognito", "aws"};
    static const char *const methods[] = {"GET", "POST"};

    for (size_t c = 0; c < 3; c++) {
        json_t *claims = json_loads(claims_json[c], 0, NULL);
        expect(claims != NULL);
        for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
            const struct policy *p = policy_route(set, "api.example.com", 15, paths[i],
                                                  strlen(paths[i]));
            const struct policy *q = policy_route(set, NULL, 0, paths[i], strlen(paths[i]));
            (void)q;
            if (!p)
                continue;
            for (size_t m = 0; m < 2; m++) {
                struct policy_input in = {
                    methods[m], paths[i], strlen(paths[i]), issuers[c], claims, one_header, NULL};
                struct policy_trace t;
                enum reason a = policy_authorize(p, &in, NULL), b = policy_authorize(p, &in, &t);
                expect(a == b && t.reason == a);
                expect(a == REASON_ALLOWED ? t.miss_kind == NULL : t.miss_kind != NULL);
                expect((a == REASON_SCOPE_MISSING) ==
                       (t.miss_kind && !strcmp(t.miss_kind, "scope")));
                expect((a == REASON_HEADER_MISMATCH) ==
                       (t.miss_kind && !strcmp(t.miss_kind, "header")));
            }
        }
        json_decref(claims);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct cfg_issuer issuers[2];
    static struct cfg_upstream upstreams[3];
    static struct baton_config cfg;
    struct policy_source src = {"fuzz.json", (const char *)data, size};
    struct diags d = DIAGS_INIT;
    struct policy_set *set;

    if (!cfg.n_issuers) {
        issuers[0].name = "aws";
        issuers[1].name = "cognito";
        upstreams[0].name = "cleanup";
        upstreams[1].name = "billing";
        upstreams[2].name = "approvals";
        cfg.file = "baton.json";
        cfg.issuers = issuers;
        cfg.n_issuers = 2;
        cfg.upstreams = upstreams;
        cfg.n_upstreams = 3;
    }
    set = policy_set_build(&cfg, &src, 1, &d);
    if (set) {
        expect(d.n == 0 && policy_set_count(set) == 1);
        exercise(set);
    } else {
        expect(d.n > 0);
        for (size_t i = 0; i < d.n; i++)
            expect(d.v[i].line >= 0 && d.v[i].col >= 0 && (size_t)d.v[i].line <= size + 1);
    }
    policy_set_free(set);
    diags_free(&d);
    return 0;
}
