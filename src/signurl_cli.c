/*
 * signurl_cli.c: `baton sign-url -c FILE --method M --url URL --ttl DURATION
 * [--uses N]`: mints a signed URL with the config's signing key and prints
 * it, for scripts and tests (the serving port's sign endpoint is the other
 * way; conn.c). The URL must be one the config would accept: its step
 * routes it, takes links minted by "cli" ({"signed_url": true}) and allows
 * the method on the path.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "config.h"
#include "path.h"
#include "policy.h"
#include "signurl.h"
#include "util.h"

static void usage(FILE *out)
{
    fputs(
        "usage: baton sign-url [-c FILE] --method M --url URL --ttl DURATION [--uses N]\n"
        "  DURATION: seconds, or a number with s, m, h or d (\"15m\"), at most url_signing.max_ttl_s\n"
        "  --uses N: forwards the link allows, 0 (any until expiry) or 1..1000; default 1\n",
        out);
}

/* "900", "900s", "15m", "2h", "7d" -> seconds (1..604800), or -1. */
static long long parse_duration(const char *s)
{
    char *end;
    long long v, mul = 1;
    if (!s || *s < '0' || *s > '9')
        return -1;
    v = strtoll(s, &end, 10);
    if (*end == 's')
        end++;
    else if (*end == 'm')
        mul = 60, end++;
    else if (*end == 'h')
        mul = 3600, end++;
    else if (*end == 'd')
        mul = 86400, end++;
    if (*end || v < 1 || v > 604800 / mul)
        return -1;
    return v * mul;
}

static int no_headers(void *ctx, const char *name, const char **value, size_t *len)
{
    (void)ctx;
    (void)name;
    (void)value;
    (void)len;
    return 0;
}

int cmd_sign_url(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"method", required_argument, NULL, 'm'},
        {"url", required_argument, NULL, 'u'},
        {"ttl", required_argument, NULL, 't'},
        {"uses", required_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct diags d = DIAGS_INIT;
    struct baton_config *cfg = NULL;
    struct policy_set *set = NULL;
    struct signurl_keys *keys = NULL;
    const char *flag = NULL, *method = NULL, *url = NULL, *ttl_s = NULL, *uses_s = NULL;
    const char *auth, *slash, *host, *colon;
    char suffix[SIGNURL_SUFFIX_MAX], *hostname = NULL, *end;
    long long ttl, uses = 1;
    struct path_result pr;
    const struct policy *p;
    int c, rc = 2;
    size_t hl;

    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            flag = optarg;
            break;
        case 'm':
            method = optarg;
            break;
        case 'u':
            url = optarg;
            break;
        case 't':
            ttl_s = optarg;
            break;
        case 'n':
            uses_s = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            fprintf(stderr, "baton sign-url: unknown or incomplete option \"%s\"\n",
                    argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc || !method || !url || !ttl_s) {
        usage(stderr);
        return 2;
    }
    if ((ttl = parse_duration(ttl_s)) < 0) {
        fprintf(stderr, "baton sign-url: --ttl \"%s\" is not a duration of 1s..7d\n", ttl_s);
        return 2;
    }
    if (uses_s) {
        uses = strtoll(uses_s, &end, 10);
        if (!*uses_s || *end || uses < 0 || uses > SIGNURL_MAX_USES) {
            fprintf(stderr, "baton sign-url: --uses must be 0..%d\n", SIGNURL_MAX_USES);
            return 2;
        }
    }
    if (strcmp(method, "GET") && strcmp(method, "HEAD") && strcmp(method, "POST") &&
        strcmp(method, "PUT") && strcmp(method, "DELETE") && strcmp(method, "PATCH") &&
        strcmp(method, "OPTIONS")) {
        fprintf(stderr, "baton sign-url: --method must be an upper-case method baton forwards\n");
        return 2;
    }
    /* http(s)://host[:port]/path[?query]; no user info, no fragment */
    rc = 1;
    auth = !strncmp(url, "https://", 8) ? url + 8 : !strncmp(url, "http://", 7) ? url + 7 : NULL;
    slash = auth ? strchr(auth, '/') : NULL;
    if (!auth || !slash || slash == auth || memchr(auth, '@', (size_t)(slash - auth))) {
        fprintf(stderr, "baton sign-url: --url must be http(s)://host[:port]/path[?query]\n");
        goto out;
    }
    host = auth;
    hl = (size_t)(slash - auth);
    if (host[0] == '[') {
        const char *rb = memchr(host, ']', hl);
        hl = rb ? (size_t)(rb - host) + 1 : hl;
    } else if ((colon = memchr(host, ':', hl))) {
        hl = (size_t)(colon - host);
    }
    hostname = xstrndup(host, hl);
    for (char *q = hostname; *q; q++)
        if (*q >= 'A' && *q <= 'Z')
            *q = (char)(*q + ('a' - 'A'));
    if (path_canonicalize(slash, strlen(slash), 0, &pr) != REASON_ALLOWED) {
        fprintf(
            stderr,
            "baton sign-url: the path of --url is not canonical (see README \"Canonical paths\")\n");
        goto out;
    }
    cfg = config_load(config_path_choose(flag), &d);
    if (cfg)
        set = policy_set_load(cfg, &d);
    if (cfg && !cfg->url_signing.enabled)
        diags_add(&d, cfg->file, 0, 0, "no url_signing section: nothing to sign with");
    if (cfg && set)
        keys = signurl_keys_for(cfg, &d);
    if (!cfg || !set || !keys) {
        diags_print(&d, stderr);
        goto out;
    }
    if (ttl > signurl_keys_max_ttl(keys)) {
        fprintf(stderr, "baton sign-url: --ttl is over url_signing.max_ttl_s (%u)\n",
                signurl_keys_max_ttl(keys));
        goto out;
    }
    p = policy_route(set, hostname, strlen(hostname), pr.path, pr.path_len);
    if (!p) {
        fprintf(stderr, "baton sign-url: no step routes %s\n", url);
        goto out;
    }
    {
        struct policy_input in = {method, pr.path, pr.path_len, NULL, NULL, no_headers, NULL};
        enum reason why = policy_authorize_link(p, &in, SIGNURL_CLI_MINTER, NULL);
        if (why == REASON_HEADER_MISMATCH) {
            fprintf(
                stderr,
                "baton sign-url: warning: step \"%s\" requires headers a browser will not send\n",
                policy_step(p));
        } else if (why != REASON_ALLOWED) {
            fprintf(stderr,
                    "baton sign-url: step \"%s\" would refuse this link (%s): it needs a "
                    "{\"signed_url\": true} callers entry and an allow rule for %s %.*s\n",
                    policy_step(p), reason_code(why), method, (int)pr.path_len, pr.path);
            goto out;
        }
    }
    {
        struct signurl_scope sc = {method,      hostname,    strlen(hostname),
                                   pr.path,     pr.path_len, pr.query_len ? pr.query : NULL,
                                   pr.query_len};
        char err[256];
        size_t ul = strlen(url);
        if (pr.query && !pr.query_len)
            ul--; /* a bare trailing '?' */
        if (signurl_sign(keys, &sc, now_ms() / 1000 + ttl, (unsigned)uses, SIGNURL_CLI_MINTER,
                         suffix, NULL, err, sizeof(err)) < 0) {
            fprintf(stderr, "baton sign-url: %s\n", err);
            goto out;
        }
        printf("%.*s%s\n", (int)ul, url, suffix);
    }
    rc = 0;
out:
    free(hostname);
    signurl_keys_free(keys);
    policy_set_free(set);
    config_free(cfg);
    diags_free(&d);
    return rc;
}
