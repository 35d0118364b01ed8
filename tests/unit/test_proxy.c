/*
 * test_proxy.c: the forwarding head's hygiene (docs/spec.md step 6) as proxy.c
 * builds it from a parsed request, the client X-Request-Id and traceparent
 * validation, the per-step token bucket of runtime.c, and proxy_reader (a
 * socket read by an event of its own into its bufferevent) on a socketpair.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "config.h"
#include "http1.h"
#include "proxy.h"
#include "runtime.h"
#include "util.h"
#include "tap.h"

static struct http1_request req;

/* Parses `raw` into the static req; returns 0 on success. */
static int parse(const char *raw)
{
    size_t head_len = 0;
    struct http1_limits lim = {65536, 8192, 0, 0, NULL};
    return http1_parse_request(raw, strlen(raw), &lim, &req, &head_len) == HTTP1_OK ? 0 : -1;
}

/* Builds the upstream head for req and returns it as an owned string. */
static char *build(const struct cfg_upstream *up, bool trusted, const char *token,
                   const char *trace, enum http1_body body, uint64_t cl)
{
    struct evbuffer *out = evbuffer_new();
    const char *q = memchr(req.origin, '?', req.origin_len);
    struct proxy_head_params p = {
        .req = &req,
        .path = req.origin,
        .path_len = q ? (size_t)(q - req.origin) : req.origin_len,
        .query = q ? q + 1 : NULL,
        .query_len = q ? req.origin_len - (size_t)(q - req.origin) - 1 : 0,
        .up = up,
        .from_trusted_proxy = trusted,
        .client_ip = "10.0.0.9",
        .request_id = "rid-1",
        .traceparent = trace,
        .token_value = token,
        .body = body,
        .content_length = cl,
    };
    size_t n;
    char *s;

    proxy_build_head(&p, out);
    n = evbuffer_get_length(out);
    s = xmalloc(n + 1);
    evbuffer_remove(out, s, n);
    s[n] = '\0';
    evbuffer_free(out);
    return s;
}

/* Case-insensitive count of header lines named `name` in a built head. */
static int count_header(const char *head, const char *name)
{
    int n = 0;
    size_t nl = strlen(name);
    for (const char *p = strstr(head, "\r\n"); p && p[2]; p = strstr(p + 2, "\r\n")) {
        const char *line = p + 2;
        if (strncasecmp(line, name, nl) == 0 && line[nl] == ':')
            n++;
    }
    return n;
}

static void test_hygiene(void)
{
    struct cfg_upstream up = {.name = "billing",
                              .host = "billing.example",
                              .port = 8443,
                              .tls = true,
                              .base_path = "/v1",
                              .token_header = "x-serverless-authorization"};
    const char *raw =
        "POST /api/run?x=1&y=%2F HTTP/1.1\r\nHost: gw.example\r\n"
        "Authorization: Bearer client-token\r\n"
        "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 7.7.7.7\r\nX_Forwarded_For: 8.8.8.8\r\n"
        "X-Forwarded-Proto: https\r\nForwarded: for=1.1.1.1\r\n"
        "X-Serverless-Authorization: Bearer forged\r\nX_Serverless_Authorization: x\r\n"
        "X-Goog-Iap-Jwt-Assertion: x\r\nX-Baton-Step: admin\r\n"
        "X-HTTP-Method-Override: DELETE\r\nX-HTTP-Method: DELETE\r\nX-Method-Override: PUT\r\n"
        "X_HTTP_Method_Override: DELETE\r\n"
        "Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\n"
        "Upgrade: h2c\r\nProxy-Authorization: Basic x\r\nExpect: 100-continue\r\n"
        "X-Request-Id: client-id\r\ntraceparent: 00-x\r\n"
        "Content-Length: 5\r\nX-Keep: yes\r\nAccept: */*\r\n\r\n";
    char *h;

    ok(parse(raw) == 0, "the hygiene request parses");
    h = build(&up, false, "Bearer minted", NULL, HTTP1_BODY_LENGTH, 5);
    ok(strncmp(h, "POST /v1/api/run?x=1&y=%2F HTTP/1.1\r\nHost: billing.example:8443\r\n",
               strlen("POST /v1/api/run?x=1&y=%2F HTTP/1.1\r\nHost: billing.example:8443\r\n")) ==
           0,
       "request line: base path + canonical path, query unchanged; Host is the upstream's");
    is_int(count_header(h, "authorization"), 0, "the client's Authorization is never forwarded");
    is_int(count_header(h, "x-serverless-authorization"), 1, "one token header: baton's");
    ok(strstr(h, "\r\nx-serverless-authorization: Bearer minted\r\n") != NULL,
       "the minted token in the upstream's token_header");
    ok(strstr(h, "forged") == NULL, "the forged serverless token is gone");
    is_int(count_header(h, "x-forwarded-for"), 1, "one X-Forwarded-For");
    ok(strstr(h, "\r\nX-Forwarded-For: 10.0.0.9\r\n") != NULL,
       "X-Forwarded-For is the peer only, from an untrusted client");
    ok(strstr(h, "\r\nX-Forwarded-Proto: http\r\n") != NULL, "X-Forwarded-Proto set by baton");
    ok(strstr(h, "\r\nX-Forwarded-Host: gw.example\r\n") != NULL, "X-Forwarded-Host = Host sent");
    is_int(count_header(h, "x_forwarded_for"), 0, "underscore X_Forwarded_For stripped");
    is_int(count_header(h, "forwarded"), 0, "Forwarded stripped");
    is_int(count_header(h, "x_serverless_authorization"), 0, "underscore serverless stripped");
    is_int(count_header(h, "x-goog-iap-jwt-assertion"), 0, "X-Goog-* stripped");
    is_int(count_header(h, "x-baton-step"), 0, "X-Baton-* stripped");
    is_int(count_header(h, "x-http-method-override"), 0, "X-HTTP-Method-Override stripped");
    is_int(count_header(h, "x-http-method"), 0, "X-HTTP-Method stripped");
    is_int(count_header(h, "x-method-override"), 0, "X-Method-Override stripped");
    is_int(count_header(h, "x_http_method_override"), 0, "underscore method override stripped");
    is_int(count_header(h, "connection"), 0, "Connection stripped");
    is_int(count_header(h, "x-hop"), 0, "a header named in Connection stripped");
    is_int(count_header(h, "keep-alive") + count_header(h, "te") + count_header(h, "upgrade") +
               count_header(h, "proxy-authorization"),
           0, "hop-by-hop headers stripped");
    is_int(count_header(h, "expect"), 0, "Expect is answered by baton, not forwarded");
    ok(strstr(h, "\r\nX-Request-Id: rid-1\r\n") != NULL && count_header(h, "x-request-id") == 1,
       "X-Request-Id is baton's (validated or generated) only");
    is_int(count_header(h, "traceparent"), 0, "an invalid traceparent is not passed");
    ok(strstr(h, "\r\nContent-Length: 5\r\n") != NULL, "the body length is re-declared");
    ok(strstr(h, "\r\nX-Keep: yes\r\n") != NULL && strstr(h, "\r\nAccept: */*\r\n") != NULL,
       "ordinary headers pass unchanged");
    ok(strlen(h) >= 4 && strcmp(h + strlen(h) - 4, "\r\n\r\n") == 0, "the head ends with CRLFCRLF");
    free(h);

    h = build(&up, true, NULL, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
              HTTP1_BODY_CHUNKED, 0);
    ok(strstr(h, "\r\nX-Forwarded-For: 6.6.6.6, 7.7.7.7, 10.0.0.9\r\n") != NULL,
       "from a trusted proxy, its X-Forwarded-For chain is kept and the peer appended");
    ok(strstr(h, "\r\nX-Forwarded-Proto: https\r\n") != NULL &&
           count_header(h, "x-forwarded-proto") == 1,
       "a trusted proxy's X-Forwarded-Proto is kept, not doubled");
    is_int(count_header(h, "forwarded"), 1, "a trusted proxy's Forwarded is kept");
    is_int(count_header(h, "x_forwarded_for"), 0, "underscore spellings never, even trusted");
    is_int(count_header(h, "x-serverless-authorization"), 0,
           "no token header without a minted token (identity none)");
    ok(strstr(h, "\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"),
       "a valid traceparent is passed");
    ok(strstr(h, "\r\nTransfer-Encoding: chunked\r\n") != NULL &&
           count_header(h, "content-length") == 0,
       "a chunked body is re-sent chunked, without Content-Length");
    free(h);

    up.port = 443;
    up.base_path = "";
    ok(parse("GET / HTTP/1.1\r\nHost: a\r\n\r\n") == 0, "minimal request parses");
    h = build(&up, false, NULL, NULL, HTTP1_BODY_NONE, 0);
    ok(strncmp(h, "GET / HTTP/1.1\r\nHost: billing.example\r\n", 39) == 0,
       "default https port omitted from Host");
    is_int(count_header(h, "content-length") + count_header(h, "transfer-encoding"), 0,
           "no body, no framing header");
    free(h);
}

static void test_request_id(void)
{
    char out[PROXY_REQUEST_ID_MAX + 1];
    char longid[300];

    ok(parse("GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: abc-DEF_1.2:3\r\n\r\n") == 0, "parse");
    ok(proxy_client_request_id(&req, out, sizeof(out)) && strcmp(out, "abc-DEF_1.2:3") == 0,
       "a client X-Request-Id of the allowed charset is kept");
    ok(parse("GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: a b\r\n\r\n") == 0, "parse");
    ok(!proxy_client_request_id(&req, out, sizeof(out)), "a space makes it invalid");
    ok(parse("GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: a;b\r\n\r\n") == 0, "parse");
    ok(!proxy_client_request_id(&req, out, sizeof(out)), "';' makes it invalid");
    ok(parse("GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: a\r\nX-Request-Id: b\r\n\r\n") == 0,
       "parse");
    ok(!proxy_client_request_id(&req, out, sizeof(out)), "two copies: neither is used");
    memset(longid, 'x', 129);
    longid[129] = '\0';
    {
        char raw[512];
        snprintf(raw, sizeof(raw), "GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: %s\r\n\r\n", longid);
        ok(parse(raw) == 0, "parse");
        ok(!proxy_client_request_id(&req, out, sizeof(out)), "129 bytes is too long");
        longid[128] = '\0';
        snprintf(raw, sizeof(raw), "GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: %s\r\n\r\n", longid);
        ok(parse(raw) == 0, "parse");
        ok(proxy_client_request_id(&req, out, sizeof(out)), "128 bytes is accepted");
    }
    ok(parse("GET / HTTP/1.1\r\nHost: a\r\n\r\n") == 0, "parse");
    ok(!proxy_client_request_id(&req, out, sizeof(out)), "absent: none");
}

static void test_traceparent(void)
{
    char out[56];
    static const struct {
        const char *value;
        bool valid;
        const char *why;
    } cases[] = {
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true, "W3C example"},
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", true, "not sampled"},
        {"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false, "upper case"},
        {"00-00000000000000000000000000000000-00f067aa0ba902b7-01", false, "zero trace id"},
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false, "zero parent id"},
        {"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false, "version ff"},
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", false, "trailing data"},
        {"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false, "bad separator"},
        {"00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", false, "non-hex"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char raw[256];
        snprintf(raw, sizeof(raw), "GET / HTTP/1.1\r\nHost: a\r\ntraceparent: %s\r\n\r\n",
                 cases[i].value);
        if (parse(raw) != 0) {
            ok(0, "traceparent case %s parses", cases[i].why);
            continue;
        }
        ok(proxy_traceparent(&req, out) == cases[i].valid, "traceparent %s: %s", cases[i].why,
           cases[i].valid ? "passed" : "dropped");
    }
    ok(parse("GET / HTTP/1.1\r\nHost: a\r\n"
             "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
             "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n") == 0,
       "parse");
    ok(!proxy_traceparent(&req, out), "two traceparent headers: dropped");
}

static void test_rate_bucket(void)
{
    const uint64_t s = 1000000000ull;
    struct rate_bucket *b = runtime_bucket_new(2, 3, 10 * s);
    unsigned retry = 0;
    int allowed = 0;

    for (int i = 0; i < 5; i++)
        allowed += runtime_rate_take(b, 10 * s, &retry);
    is_int(allowed, 3, "the burst (3) passes at once, then the bucket is empty");
    ok(!runtime_rate_take(b, 10 * s, &retry) && retry == 1, "over the rate: Retry-After 1 s");
    ok(runtime_rate_take(b, 10 * s + s / 2, &retry), "after 0.5 s at 2/s one token is back");
    ok(!runtime_rate_take(b, 10 * s + s / 2, &retry), "and only one");
    allowed = 0;
    for (int i = 0; i < 10; i++)
        allowed += runtime_rate_take(b, 100 * s, &retry);
    is_int(allowed, 3, "a long pause refills to the burst, never beyond");
    runtime_bucket_free(b);

    b = runtime_bucket_new(1, 1, 0);
    ok(runtime_rate_take(b, 0, &retry), "rate 1 burst 1: first passes");
    ok(!runtime_rate_take(b, s / 10, &retry) && retry == 1, "Retry-After rounds up to 1 s");
    runtime_bucket_free(b);

    /* "at most once per 5000 s": a fractional rate, burst 1 */
    b = runtime_bucket_new(0.0002, 1, 0);
    ok(runtime_rate_take(b, 0, &retry), "rate 0.0002/s: the first request passes");
    retry = 0;
    ok(!runtime_rate_take(b, 0, &retry) && retry == 5000,
       "at once after it: Retry-After 5000 s (got %u)", retry);
    ok(!runtime_rate_take(b, 1000 * s, &retry) && retry == 4000,
       "1000 s later: Retry-After 4000 s (got %u)", retry);
    ok(!runtime_rate_take(b, 4999 * s, &retry) && retry == 1, "4999 s later: 1 s");
    ok(runtime_rate_take(b, 5000 * s, &retry), "5000 s later a token is back");
    ok(!runtime_rate_take(b, 5000 * s, &retry), "and only one");
    runtime_bucket_free(b);

    b = runtime_bucket_new(0.5, 0, 0);
    ok(runtime_rate_take(b, 0, &retry) && !runtime_rate_take(b, 0, &retry) && retry == 2,
       "rate 0.5/s: burst defaults to 1, Retry-After 2 s");
    runtime_bucket_free(b);

    b = runtime_bucket_new(1e-300, 1, 0);
    ok(runtime_rate_take(b, 0, &retry) && !runtime_rate_take(b, 0, &retry) && retry == 2147483647u,
       "a rate so small the wait overflows: Retry-After capped at 2^31 - 1");
    runtime_bucket_free(b);
}

/* Header lines kept as sent are copied in runs of raw bytes; whatever the
 * spelling, the head holds each kept line as "name: value\r\n", in order. */
static void test_head_runs(void)
{
    struct cfg_upstream up = {.host = "svc.internal", .port = 8080};
    char *h;

    if (!ok(parse("GET /a HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nX-B:2\r\nConnection: keep-alive\r\n"
                  "X-C: 3 \r\nX-D: 4\r\nX-E:\t5\r\nX-F: \r\nTE: trailers\r\nX-G: 7\r\n"
                  "X-H: 8\r\n\r\n") == 0,
            "head runs: the request parses"))
        return;
    h = build(&up, false, NULL, NULL, HTTP1_BODY_NONE, 0);
    ok(strstr(h, "\r\nX-A: 1\r\nX-B: 2\r\nX-C: 3\r\nX-D: 4\r\nX-E: 5\r\nX-F: \r\nX-G: 7\r\n"
                 "X-H: 8\r\nX-Forwarded-For: 10.0.0.9\r\n") != NULL,
       "head runs: kept lines in order, canonical, around dropped ones");
    ok(count_header(h, "Connection") == 0 && count_header(h, "TE") == 0,
       "head runs: hop-by-hop lines between runs dropped");
    free(h);
}

/* proxy_reader: what the reader's callbacks saw */
static int rd_reads, rd_events;
static short rd_what;

static void rd_read_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    (void)arg;
    rd_reads++;
}

static void rd_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    (void)arg;
    rd_events++;
    rd_what = what;
}

static void test_reader(void)
{
    struct event_base *base = event_base_new();
    struct bufferevent *bev;
    struct proxy_reader *rd;
    struct evbuffer *in;
    struct timeval tv = {0, 50000}, cap = {2, 0};
    int sv[2];

    if (!ok(base && socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0,
            "reader: a loop and a socketpair"))
        return;
    bev = bufferevent_socket_new(base, sv[0], BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(bev, rd_read_cb, NULL, rd_event_cb, NULL);
    in = bufferevent_get_input(bev);
    rd = proxy_reader_new(bev);

    ok(write(sv[1], "0123456789", 10) == 10, "reader: the peer wrote 10 bytes");
    event_base_loop(base, EVLOOP_NONBLOCK);
    ok(rd_reads == 0 && evbuffer_get_length(in) == 0, "reader: off at first, nothing read");

    proxy_reader_watermark(rd, 4);
    proxy_reader_on(rd);
    event_base_loop(base, EVLOOP_NONBLOCK);
    ok(rd_reads == 1 && evbuffer_get_length(in) == 4,
       "reader: on, reads up to the high watermark (%d reads, %zu bytes)", rd_reads,
       evbuffer_get_length(in));
    event_base_loop(base, EVLOOP_NONBLOCK);
    event_base_loop(base, EVLOOP_NONBLOCK);
    ok(rd_reads == 1 && evbuffer_get_length(in) == 4, "reader: at the watermark, no more reads");
    evbuffer_drain(in, 4);
    proxy_reader_on(rd);
    event_base_loop(base, EVLOOP_NONBLOCK);
    ok(rd_reads == 2 && evbuffer_get_length(in) == 4, "reader: drained and on again: reads resume");
    proxy_reader_watermark(rd, 0);
    event_base_loop(base, EVLOOP_NONBLOCK);
    ok(rd_reads == 3 && evbuffer_get_length(in) == 6, "reader: no watermark: the rest is read");
    ok(!(bufferevent_get_enabled(bev) & EV_READ),
       "reader: the bufferevent's own reading stays off");

    proxy_reader_off(rd);
    ok(write(sv[1], "x", 1) == 1, "reader: the peer wrote one more byte");
    event_base_loop(base, EVLOOP_NONBLOCK);
    ok(rd_reads == 3 && evbuffer_get_length(in) == 6, "reader: off, nothing read");
    proxy_reader_on(rd);
    event_base_loop(base, EVLOOP_NONBLOCK);
    ok(rd_reads == 4 && evbuffer_get_length(in) == 7, "reader: on again, the byte is read");

    proxy_reader_timeout(rd, &tv);
    event_base_loopexit(base, &cap);
    event_base_loop(base, EVLOOP_ONCE);
    ok(rd_events == 1 && rd_what == (BEV_EVENT_READING | BEV_EVENT_TIMEOUT),
       "reader: silent for the read timeout: READING|TIMEOUT (events %d, what 0x%x)", rd_events,
       (unsigned)rd_what);
    ok(write(sv[1], "y", 1) == 1, "reader: a byte after the timeout");
    event_base_loop(base, EVLOOP_NONBLOCK);
    ok(rd_reads == 4, "reader: a timeout turns reading off");

    proxy_reader_timeout(rd, NULL);
    proxy_reader_on(rd);
    event_base_loop(base, EVLOOP_NONBLOCK);
    ok(rd_reads == 5 && evbuffer_get_length(in) == 8, "reader: on without timeout, read again");
    close(sv[1]);
    event_base_loopexit(base, &cap);
    event_base_loop(base, EVLOOP_ONCE);
    ok(rd_events == 2 && rd_what == (BEV_EVENT_READING | BEV_EVENT_EOF),
       "reader: the peer closed: READING|EOF (what 0x%x)", (unsigned)rd_what);

    proxy_reader_free(rd);
    bufferevent_free(bev);
    event_base_free(base);
}

/* Heads of every size around the builder's 2048-byte stack buffer: pieces
 * that fill it, cross its end or exceed it alone, in runs of raw lines
 * (canonical spelling) and piecewise (any other): the head is always the
 * plain concatenation of its lines, between the same request line, Host and
 * tail as a head without them. 400 generated requests, a fixed seed. */
static void test_head_sizes(void)
{
    struct cfg_upstream up = {.host = "svc.internal", .port = 8080};
    static char raw[60000], want[70000];
    static const char *const seps[] = {": ", ":", ":  ", ":\t"};
    const char *host_line = "\r\nHost: svc.internal:8080\r\n";
    char *h0, *tail, *at;
    size_t prefix_len;
    unsigned seed = 17, bad = 0, cases = 0;

    if (!ok(parse("GET /p?q=1 HTTP/1.1\r\nHost: x\r\n\r\n") == 0, "head sizes: the base parses"))
        return;
    h0 = build(&up, false, NULL, NULL, HTTP1_BODY_NONE, 0);
    at = strstr(h0, host_line);
    if (!ok(at != NULL, "head sizes: the base head has its Host line")) {
        free(h0);
        return;
    }
    prefix_len = (size_t)(at - h0) + strlen(host_line);
    tail = h0 + prefix_len;
    for (int c = 0; c < 400; c++) {
        size_t r = 0, w = 0;
        unsigned n = (seed = seed * 1103515245u + 12345u) >> 16 & 31;
        char *h;

        r += (size_t)snprintf(raw + r, sizeof(raw) - r, "GET /p?q=1 HTTP/1.1\r\nHost: x\r\n");
        memcpy(want, h0, prefix_len);
        w = prefix_len;
        for (unsigned i = 0; i < n; i++) {
            unsigned k = (seed = seed * 1103515245u + 12345u) >> 16;
            static const size_t lens[] = {0, 1, 7, 40, 520, 1000, 1990, 2030, 2047, 2100, 3000};
            size_t vl = lens[k % 11] + (k >> 8) % 5;
            const char *sep = seps[(k >> 4) % 4];
            if (r + vl + 40 > 50000)
                break;
            r += (size_t)snprintf(raw + r, sizeof(raw) - r, "X-Gen-%u%s", i, sep);
            w += (size_t)snprintf(want + w, sizeof(want) - w, "X-Gen-%u: ", i);
            for (size_t j = 0; j < vl; j++)
                raw[r++] = want[w++] = (char)('a' + (k + j) % 26);
            memcpy(raw + r, "\r\n", 2);
            memcpy(want + w, "\r\n", 2);
            r += 2;
            w += 2;
        }
        memcpy(raw + r, "\r\n", 3);
        snprintf(want + w, sizeof(want) - w, "%s", tail);
        if (parse(raw) != 0) {
            bad++;
            continue;
        }
        h = build(&up, false, NULL, NULL, HTTP1_BODY_NONE, 0);
        if (strcmp(h, want) != 0)
            bad++;
        cases++;
        free(h);
    }
    ok(bad == 0 && cases == 400, "head sizes: %u of %u generated heads as the plain concatenation",
       cases - bad, cases);
    free(h0);
}

/* Runs the loop one round at a time until the reader's event callback ran
 * (at most 3 s); returns the rounds it took. */
static int rounds_until_event(struct event_base *base, int events_before)
{
    uint64_t t0 = mono_ns();
    int rounds = 0;
    while (rd_events == events_before && mono_ns() - t0 < 3000000000u) {
        struct timeval cap = {1, 0};
        event_base_loopexit(base, &cap);
        event_base_loop(base, EVLOOP_ONCE);
        rounds++;
    }
    return rounds;
}

/* The read timeout's lazy timer: kept armed while the deadline moves on,
 * it fires early and re-arms for the rest, so the timeout comes at its
 * deadline from the last activity, never from the first arm, never before.
 * The reader's clock is the coarse monotonic one: 10 ms of slack for its
 * tick on the lower bounds. */
static void test_reader_lazy_timeout(void)
{
    struct event_base *base = event_base_new();
    struct bufferevent *bev;
    struct proxy_reader *rd;
    struct timeval t200 = {0, 200000}, t100 = {0, 100000}, t400 = {0, 400000}, pause = {0, 100000};
    uint64_t last, ms;
    int sv[2], rounds, ev0;

    if (!ok(base && socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0,
            "lazy timeout: a loop and a socketpair"))
        return;
    bev = bufferevent_socket_new(base, sv[0], BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(bev, rd_read_cb, NULL, rd_event_cb, NULL);
    rd = proxy_reader_new(bev);
    rd_reads = rd_events = 0;

    /* armed at t0 for t0+200; a read at t0+100 moves the deadline to +300 */
    proxy_reader_timeout(rd, &t200);
    proxy_reader_on(rd);
    event_base_loopexit(base, &pause);
    event_base_dispatch(base);
    ok(write(sv[1], "a", 1) == 1, "lazy timeout: a byte after 100 ms");
    event_base_loop(base, EVLOOP_NONBLOCK);
    last = mono_ns();
    ok(rd_reads == 1 && rd_events == 0, "lazy timeout: read, no timeout yet");
    rounds = rounds_until_event(base, 0);
    ms = (mono_ns() - last) / 1000000u;
    ok(rd_events == 1 && rd_what == (BEV_EVENT_READING | BEV_EVENT_TIMEOUT),
       "lazy timeout: READING|TIMEOUT (what 0x%x)", (unsigned)rd_what);
    ok(ms >= 190 && ms < 600,
       "lazy timeout: 200 ms after the last read, not the first arm (%llu ms)",
       (unsigned long long)ms);
    ok(rounds >= 2, "lazy timeout: the armed timer fired early and re-armed (%d rounds)", rounds);

    /* set again (same duration) while on: restarts, the armed timer kept */
    proxy_reader_on(rd);
    event_base_loopexit(base, &pause);
    event_base_dispatch(base);
    proxy_reader_timeout(rd, &t200);
    last = mono_ns();
    ev0 = rd_events;
    rounds_until_event(base, ev0);
    ms = (mono_ns() - last) / 1000000u;
    ok(rd_events == ev0 + 1 && ms >= 190 && ms < 600,
       "lazy timeout: set again, due 200 ms after that (%llu ms)", (unsigned long long)ms);

    /* a shorter timeout than the armed timer's: armed again, due on time */
    proxy_reader_timeout(rd, &t400);
    proxy_reader_on(rd);
    proxy_reader_timeout(rd, &t100);
    last = mono_ns();
    ev0 = rd_events;
    rounds_until_event(base, ev0);
    ms = (mono_ns() - last) / 1000000u;
    ok(rd_events == ev0 + 1 && ms >= 90 && ms < 300,
       "lazy timeout: shortened to 100 ms, due then, not at 400 (%llu ms)", (unsigned long long)ms);

    /* off: no timeout while reading is off (the armed timer fires idle); on
     * again: the timeout counts from then */
    proxy_reader_timeout(rd, &t100);
    proxy_reader_on(rd);
    proxy_reader_off(rd);
    event_base_loopexit(base, &t200);
    event_base_dispatch(base);
    ok(rd_events == ev0 + 1, "lazy timeout: none while reading is off");
    proxy_reader_on(rd);
    last = mono_ns();
    rounds_until_event(base, ev0 + 1);
    ms = (mono_ns() - last) / 1000000u;
    ok(rd_events == ev0 + 2 && ms >= 90 && ms < 300,
       "lazy timeout: on again, due 100 ms after (%llu ms)", (unsigned long long)ms);

    /* cleared: reads go on without a timeout */
    proxy_reader_timeout(rd, NULL);
    proxy_reader_on(rd);
    event_base_loopexit(base, &t200);
    event_base_dispatch(base);
    ok(rd_events == ev0 + 2, "lazy timeout: cleared, none comes");

    proxy_reader_free(rd);
    bufferevent_free(bev);
    close(sv[1]);
    event_base_free(base);
}

int main(void)
{
    test_hygiene();
    test_request_id();
    test_traceparent();
    test_rate_bucket();
    test_reader();
    test_head_runs();
    test_reader_lazy_timeout();
    test_head_sizes();
    return tap_done();
}
