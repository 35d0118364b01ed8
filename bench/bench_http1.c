/*
 * bench_http1.c: parse throughput of the HTTP/1.1 guard, in heads per second
 * and MB/s, for a small GET, a realistic Step Functions POST carrying an RS256
 * bearer token (~1.3 KB head), an upstream response head, and the chunked
 * decoder. Each case runs for about one second of wall time (bounded), on one
 * core. Built only on request: `make bench/bench_http1`, then run it. Numbers
 * depend on the machine and on the build flags (use a build without ASan for
 * meaningful figures).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"
#include "util.h"

static struct http1_request req;
static struct http1_response resp;

typedef int (*bench_fn)(const char *buf, size_t len);

static int do_request(const char *buf, size_t len)
{
    size_t hl;
    return http1_parse_request(buf, len, NULL, &req, &hl) == HTTP1_OK ? (int)req.n_headers : -1;
}

static int do_response(const char *buf, size_t len)
{
    size_t hl;
    return http1_parse_response(buf, len, NULL, HTTP1_METHOD_GET, &resp, &hl) == HTTP1_OK
               ? (int)resp.n_headers
               : -1;
}

static int do_chunked(const char *buf, size_t len)
{
    struct http1_chunked ck;
    size_t off = 0, used;
    const char *d;
    size_t dl;
    int rc;
    http1_chunked_init(&ck, 0);
    do {
        rc = http1_chunked_feed(&ck, buf + off, len - off, &used, &d, &dl);
        off += used;
    } while (rc == HTTP1_DATA);
    return rc == HTTP1_DONE ? 0 : -1;
}

static void run(const char *name, bench_fn fn, const char *buf, size_t len)
{
    uint64_t start = mono_ns(), elapsed;
    unsigned long long iters = 0;
    volatile int sink = 0;

    if (fn(buf, len) < 0) {
        fprintf(stderr, "%s: input does not parse\n", name);
        exit(1);
    }
    do {
        for (int i = 0; i < 10000; i++)
            sink += fn(buf, len);
        iters += 10000;
        elapsed = mono_ns() - start;
    } while (elapsed < 1000000000ull && iters < 100000000ull);
    (void)sink;
    printf("%-28s %6zu B  %12.0f /s  %8.1f MB/s  %6.1f ns each\n", name, len,
           iters * 1e9 / (double)elapsed, iters * (double)len * 1e3 / (double)elapsed,
           (double)elapsed / (double)iters);
}

int main(void)
{
    static const char small[] =
        "GET /healthz HTTP/1.1\r\nHost: gw.example\r\nUser-Agent: curl/7.88.1\r\n"
        "Accept: */*\r\n\r\n";
    char sfn[4096], token[1100], body[70000];
    static const char upstream[] =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        "Date: Wed, 26 Nov 2025 10:00:00 GMT\r\nServer: Google Frontend\r\n"
        "Content-Length: 27\r\nX-Cloud-Trace-Context: 0123456789abcdef/1;o=1\r\n"
        "Alt-Svc: h3=\":443\"; ma=2592000\r\n\r\n";
    size_t o = 0;

    for (size_t i = 0; i < sizeof(token) - 1; i++)
        token[i] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[i * 7 % 64];
    token[120] = token[600] = '.';
    token[sizeof(token) - 1] = '\0';
    snprintf(
        sfn, sizeof(sfn),
        "POST /billing/reconcile?dry=0 HTTP/1.1\r\nHost: gateway.example.com\r\n"
        "Authorization: Bearer %s\r\nContent-Type: application/json; charset=utf-8\r\n"
        "Content-Length: 512\r\nUser-Agent: Amazon|StepFunctions|HttpInvoke|us-east-1\r\n"
        "X-Sfn-Execution: arn:aws:states:us-east-1:123456789012:execution:deploy:4f1c\r\n"
        "X-Sfn-State: Reconcile\r\nX-Amzn-Trace-Id: Root=1-67891233-abcdef012345678912345678\r\n"
        "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"
        "Accept: application/json\r\nAccept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\n\r\n",
        token);
    /* a 64 KiB body in 4 KiB chunks */
    for (int c = 0; c < 16; c++) {
        o += (size_t)snprintf(body + o, sizeof(body) - o, "1000\r\n");
        memset(body + o, 'x', 4096);
        o += 4096;
        memcpy(body + o, "\r\n", 2);
        o += 2;
    }
    o += (size_t)snprintf(body + o, sizeof(body) - o, "0\r\n\r\n");

    run("request GET (small)", do_request, small, sizeof(small) - 1);
    run("request POST sfn + JWT", do_request, sfn, strlen(sfn));
    run("response head", do_response, upstream, sizeof(upstream) - 1);
    run("chunked 64 KiB / 4 KiB", do_chunked, body, o);
    return 0;
}
