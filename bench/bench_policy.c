/*
 * bench_policy.c: route + authorize decisions per second on one core, with
 * 1,000 generated step policies (the request path's policy work: no parsing,
 * no allocation). Each policy has two callers entries (an AWS role with a
 * nested account claim and an ARN glob, a Cognito client with a scope), three
 * allow rules (exact, `*` and `**` patterns) and one required header glob;
 * one policy in ten routes an exact host. Requests cycle through a mix of
 * allowed ones and denials at each stage (caller, rule, header, no route),
 * and every decision is checked against the expected one, so a fast wrong
 * answer cannot pass for a fast right one.
 *
 * usage: bench_policy [seconds (default 2, max 60)] [policies (default 1000)]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "config.h"
#include "diag.h"
#include "policy.h"
#include "util.h"

#define N_REQ 4096

struct req {
    const char *host;
    char path[96];
    const char *method;
    const char *issuer;
    json_t *claims; /* borrowed from the claims tables */
    const char *header;
    int want_step; /* -1: no route */
    const struct policy *want_policy;
    enum reason want;
};

static int header_cb(void *ctx, const char *name, const char **value, size_t *len)
{
    const struct req *r = ctx;
    (void)name; /* the only header the policies require */
    if (!r->header)
        return 0;
    *value = r->header;
    *len = strlen(r->header);
    return 1;
}

static char *policy_text(int i)
{
    char host[64];
    if (i % 10 == 0)
        snprintf(host, sizeof(host), "h%d.example.com", i);
    else
        snprintf(host, sizeof(host), "*");
    return xasprintf(
        "{\"step\":\"step-%d\",\"route\":{\"host\":\"%s\",\"path_prefix\":\"/svc-%d/\"},"
        "\"upstream\":\"billing\",\"callers\":["
        "{\"issuer\":\"aws\",\"claims\":{\"sub\":\"arn:aws:iam::1234567890%02d:role/step-%d-*\","
        "\"https://sts.amazonaws.com/\":{\"aws_account\":\"1234567890%02d\"}}},"
        "{\"issuer\":\"cognito\",\"claims\":{\"client_id\":\"client-%d\",\"token_use\":\"access\"},"
        "\"scopes\":[\"svc-%d/write\"]}],"
        "\"allow\":[{\"methods\":[\"POST\"],\"paths\":[\"/svc-%d/run\",\"/svc-%d/runs/*\"]},"
        "{\"methods\":[\"GET\"],\"paths\":[\"/svc-%d/runs/**\"]},"
        "{\"methods\":[\"PUT\",\"PATCH\"],\"paths\":[\"/svc-%d/items/*/state\"]}],"
        "\"require_headers\":{\"X-Sfn-Execution\":\"arn:aws:states:*:1234567890%02d:execution:*\"}}",
        i, host, i, i % 100, i, i % 100, i, i, i, i, i, i, i % 100);
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 2.0;
    int n = argc > 2 ? atoi(argv[2]) : 1000;
    struct cfg_issuer issuers[2] = {{.name = "aws"}, {.name = "cognito"}};
    struct cfg_upstream upstreams[1] = {{.name = "billing"}};
    struct baton_config cfg = {.file = "bench.json",
                               .issuers = issuers,
                               .n_issuers = 2,
                               .upstreams = upstreams,
                               .n_upstreams = 1};
    struct policy_source *src;
    struct diags d = DIAGS_INIT;
    struct policy_set *set;
    json_t **aws, **cog;
    static struct req reqs[N_REQ];
    char exec_ok[N_REQ][96];
    uint64_t t0, t1, count = 0, allowed = 0, wrong = 0;
    int rc = 1;

    if (seconds <= 0 || seconds > 60 || n < 10 || n > 100000) {
        fprintf(stderr, "usage: bench_policy [seconds 0..60] [policies 10..100000]\n");
        return 2;
    }
    src = xcalloc((size_t)n, sizeof(*src));
    aws = xcalloc((size_t)n, sizeof(*aws));
    cog = xcalloc((size_t)n, sizeof(*cog));
    for (int i = 0; i < n; i++) {
        char *t = policy_text(i);
        src[i].file = xasprintf("policies/step-%d.json", i);
        src[i].text = t;
        src[i].len = strlen(t);
        {
            char sub[96], acct[32], cid[32], scope[64];
            snprintf(acct, sizeof(acct), "1234567890%02d", i % 100);
            snprintf(sub, sizeof(sub), "arn:aws:iam::%s:role/step-%d-lambda", acct, i);
            aws[i] = json_pack("{s:s, s:{s:s, s:s}}", "sub", sub, "https://sts.amazonaws.com/",
                               "aws_account", acct, "source_region", "us-east-1");
            snprintf(cid, sizeof(cid), "client-%d", i);
            snprintf(scope, sizeof(scope), "svc-%d/read svc-%d/write", i, i);
            cog[i] = json_pack("{s:s, s:s, s:s}", "client_id", cid, "token_use", "access", "scope",
                               scope);
        }
    }
    t0 = mono_ns();
    set = policy_set_build(&cfg, src, (size_t)n, &d);
    t1 = mono_ns();
    if (!set) {
        diags_print(&d, stderr);
        goto out;
    }
    printf("bench_policy: loaded %d policies in %.1f ms\n", n, (double)(t1 - t0) / 1e6);

    srand(12345);
    for (int k = 0; k < N_REQ; k++) {
        struct req *r = &reqs[k];
        int i = rand() % n, kind = k % 10;
        snprintf(exec_ok[k], sizeof(exec_ok[k]),
                 "arn:aws:states:us-east-1:1234567890%02d:execution:sm:%d", i % 100, k);
        r->host = "gw.example.com";
        if (i % 10 == 0) { /* exact-host policies, asked in mixed case */
            static char hosts[N_REQ][32];
            snprintf(hosts[k], sizeof(hosts[k]), "H%d.Example.com", i);
            r->host = hosts[k];
        }
        r->want_step = i;
        r->issuer = "aws";
        r->claims = aws[i];
        r->method = "POST";
        r->header = exec_ok[k];
        r->want = REASON_ALLOWED;
        snprintf(r->path, sizeof(r->path), "/svc-%d/runs/%d", i, k);
        switch (kind) {
        case 0:
        case 1:
        case 2: /* allowed, aws, POST one segment */
            break;
        case 3: /* allowed, GET any depth */
            r->method = "GET";
            snprintf(r->path, sizeof(r->path), "/svc-%d/runs/%d/logs/page/2", i, k);
            break;
        case 4: /* allowed, cognito with scope, PATCH */
            r->issuer = "cognito";
            r->claims = cog[i];
            r->method = "PATCH";
            snprintf(r->path, sizeof(r->path), "/svc-%d/items/%d/state", i, k);
            break;
        case 5: /* caller of another step */
            r->claims = aws[(i + 1) % n];
            r->want = REASON_NO_CALLER_MATCH;
            break;
        case 6: /* no rule: DELETE */
            r->method = "DELETE";
            r->want = REASON_NO_RULE_MATCH;
            break;
        case 7: /* header missing */
            r->header = NULL;
            r->want = REASON_HEADER_MISMATCH;
            break;
        case 8: /* no route */
            snprintf(r->path, sizeof(r->path), "/nowhere/%d/x", k);
            r->want_step = -1;
            r->want = REASON_NO_ROUTE;
            break;
        case 9: /* exact run path */
            snprintf(r->path, sizeof(r->path), "/svc-%d/run", i);
            break;
        }
    }

    /* the expected policy of each request, found by step name, not by routing */
    {
        const struct policy **by_step = xcalloc((size_t)n, sizeof(*by_step));
        for (size_t j = 0; j < policy_set_count(set); j++) {
            const struct policy *p = policy_set_at(set, j);
            by_step[atoi(policy_step(p) + 5)] = p;
        }
        for (int k = 0; k < N_REQ; k++)
            reqs[k].want_policy = reqs[k].want_step >= 0 ? by_step[reqs[k].want_step] : NULL;
        free(by_step);
    }

    t0 = mono_ns();
    for (uint64_t deadline = t0 + (uint64_t)(seconds * 1e9);;) {
        for (int k = 0; k < N_REQ; k++) {
            const struct req *r = &reqs[k];
            size_t plen = strlen(r->path);
            const struct policy *p = policy_route(set, r->host, strlen(r->host), r->path, plen);
            enum reason got;
            if (!p) {
                got = REASON_NO_ROUTE;
            } else {
                struct policy_input in = {r->method, r->path,   plen,     r->issuer,
                                          r->claims, header_cb, (void *)r};
                got = policy_authorize(p, &in, NULL);
                wrong += p != r->want_policy;
            }
            wrong += got != r->want;
            allowed += got == REASON_ALLOWED;
        }
        count += N_REQ;
        if (mono_ns() >= deadline)
            break;
    }
    t1 = mono_ns();
    if (wrong) {
        fprintf(stderr, "bench_policy: %llu wrong decisions\n", (unsigned long long)wrong);
        goto out;
    }
    {
        double s = (double)(t1 - t0) / 1e9;
        printf("bench_policy: %d policies, %llu route+authorize decisions in %.2f s "
               "(%.0f%% allowed): %.0f decisions/s per core (%.0f ns each)\n",
               n, (unsigned long long)count, s, 100.0 * (double)allowed / (double)count,
               (double)count / s, s * 1e9 / (double)count);
    }
    rc = 0;
out:
    policy_set_free(set);
    diags_free(&d);
    for (int i = 0; i < n; i++) {
        free((char *)src[i].file);
        free((char *)src[i].text);
        json_decref(aws[i]);
        json_decref(cog[i]);
    }
    free(src);
    free(aws);
    free(cog);
    return rc;
}
