/*
 * fuzz_guard.c: libFuzzer target for what baton puts on the wire upstream.
 * Each input is a request head; when the guard (http1) and path_canonicalize
 * accept it, proxy_build_head rebuilds the upstream head, once as from an
 * untrusted client and once as from a trusted proxy. Besides memory safety
 * it checks the forwarding contract on the rebuilt bytes, parsed back with
 * the same strict parser: it is one valid request head (no header injection
 * whatever the input), with exactly one Host (the upstream's), one
 * X-Forwarded-For, one X-Request-Id, the method and canonical path
 * unchanged, no Authorization, no hop-by-hop header, and no spoofable header
 * except a trusted proxy's canonical forwarding headers.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "config.h"
#include "http1.h"
#include "path.h"
#include "proxy.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct http1_request in, out;

static void check(int cond)
{
    if (!cond)
        abort();
}

static int count(const struct http1_request *r, const char *name)
{
    int n = 0;
    for (unsigned i = 0; i < r->n_headers; i++)
        if (ascii_casecmp_n(r->headers[i].name, r->headers[i].name_len, name, strlen(name)) == 0)
            n++;
    return n;
}

static void rebuild(const struct path_result *pr, bool trusted)
{
    static struct cfg_upstream up = {.name = "u",
                                     .host = "up.example",
                                     .port = 8080,
                                     .base_path = "/base",
                                     .token_header = "authorization"};
    struct evbuffer *b = evbuffer_new();
    struct proxy_head_params p = {
        .req = &in,
        .path = pr->path,
        .path_len = pr->path_len,
        .query = pr->query,
        .query_len = pr->query_len,
        .up = &up,
        .from_trusted_proxy = trusted,
        .client_ip = "192.0.2.7",
        .request_id = "fuzz-request-id",
        .traceparent = NULL,
        .token_value = trusted ? "Bearer minted.token.value" : NULL,
        .body = in.body,
        .content_length = in.content_length,
    };
    struct http1_limits lim = {1 << 22, 1 << 20, 0, HTTP1_MAX_HEADERS, NULL};
    size_t len, head_len = 0;
    const char *s;

    proxy_build_head(&p, b);
    len = evbuffer_get_length(b);
    s = (const char *)evbuffer_pullup(b, -1);
    check(http1_parse_request(s, len, &lim, &out, &head_len) == HTTP1_OK);
    check(head_len == len);
    check(out.method == in.method);
    check(out.origin_len == 5 + pr->path_len + (pr->query ? 1 + pr->query_len : 0));
    check(memcmp(out.origin, "/base", 5) == 0);
    check(memcmp(out.origin + 5, pr->path, pr->path_len) == 0);
    check(out.host_len == strlen("up.example:8080") &&
          memcmp(out.host, "up.example:8080", out.host_len) == 0);
    check(count(&out, "host") == 1);
    check(count(&out, "x-forwarded-for") == 1);
    check(count(&out, "x-request-id") == 1);
    /* the host baton routed on, never a client's or a proxy's word for it */
    check(count(&out, "x-forwarded-host") == (in.hostname ? 1 : 0));
    for (unsigned i = 0; i < out.n_headers; i++) {
        const struct http1_header *h = &out.headers[i];
        if (ascii_casecmp_n(h->name, h->name_len, "x-forwarded-host", 16) != 0 || h->name_len != 16)
            continue;
        check(h->value_len >= in.hostname_len &&
              memcmp(h->value, in.hostname, in.hostname_len) == 0 &&
              (h->value_len == in.hostname_len || h->value[in.hostname_len] == ':'));
        check(in.hostname_len == 0 || in.hostname[in.hostname_len - 1] != '.');
    }
    check(count(&out, "authorization") == (trusted ? 1 : 0));
    check(out.body == in.body && out.content_length == in.content_length);
    for (unsigned i = 0; i < out.n_headers; i++) {
        const struct http1_header *h = &out.headers[i];
        bool framing = ascii_casecmp_n(h->name, h->name_len, "transfer-encoding", 17) == 0;
        check(!http1_header_is_hop_by_hop(h->name, h->name_len) || framing);
        if (http1_header_is_spoofable(h->name, h->name_len)) {
            check(trusted || ascii_casecmp_n(h->name, h->name_len, "x-forwarded-for", 15) == 0 ||
                  ascii_casecmp_n(h->name, h->name_len, "x-forwarded-proto", 17) == 0 ||
                  ascii_casecmp_n(h->name, h->name_len, "x-forwarded-host", 16) == 0);
            check(http1_header_is_forwarding(h->name, h->name_len));
            check(memchr(h->name, '_', h->name_len) == NULL);
        }
    }
    evbuffer_free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct http1_limits lim = {16384, 8192, 0, 0, NULL};
    struct path_result pr;
    size_t head_len = 0;

    if (http1_parse_request((const char *)data, size, &lim, &in, &head_len) != HTTP1_OK)
        return 0;
    if (path_canonicalize(in.origin, in.origin_len, 8192, &pr) != REASON_ALLOWED)
        return 0;
    rebuild(&pr, false);
    rebuild(&pr, true);
    return 0;
}
