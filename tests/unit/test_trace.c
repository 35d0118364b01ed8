/* Unit tests of trace.c (W3C Trace Context hop, Cloud Logging trace fields)
 * and ready.c's summary of what /readyz says is missing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ready.h"
#include "trace.h"
#include "tap.h"

static void test_hop(void)
{
    struct trace_ctx t;
    char tp[56];
    const char *in = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    trace_begin(in, 0x1122334455667788ull, 0, 0, &t);
    is_str(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736", "the client's trace id is kept");
    is_str(t.span_id, "1122334455667788", "baton's own span id");
    ok(t.sampled, "flags 01: sampled");
    trace_traceparent(&t, tp);
    is_str(tp, "00-4bf92f3577b34da6a3ce929d0e0e4736-1122334455667788-01",
           "forwarded with baton's span as the parent");
    trace_begin("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02", 5, 0, 0, &t);
    ok(!t.sampled, "flags 02: bit 0 clear, not sampled");
    trace_begin("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0b", 5, 0, 0, &t);
    ok(t.sampled, "flags 0b: bit 0 set");
    trace_begin(NULL, 0, 0, 0, &t);
    ok(strcmp(t.trace_id, "00000000000000000000000000000000") != 0 &&
           strcmp(t.span_id, "0000000000000000") != 0,
       "zero random words never make an all-zero (invalid) id");
    trace_begin(NULL, 7, 0xabcdef0123456789ull, 0x0fedcba987654321ull, &t);
    is_str(t.trace_id, "abcdef01234567890fedcba987654321", "a new trace id from the random words");
    ok(!t.sampled, "a new trace is not sampled");
    trace_traceparent(&t, tp);
    is_str(tp, "00-abcdef01234567890fedcba987654321-0000000000000007-00", "its traceparent");
}

static void test_log_fields(void)
{
    struct trace_ctx t;
    char out[400];

    trace_begin("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", 0x10, 0, 0, &t);
    ok(trace_project() == NULL, "no project before trace_project_start");
    trace_log_fields(&t, out, sizeof(out));
    is_str(out,
           ",\"logging.googleapis.com/trace\":\"4bf92f3577b34da6a3ce929d0e0e4736\","
           "\"logging.googleapis.com/spanId\":\"0000000000000010\","
           "\"logging.googleapis.com/trace_sampled\":true",
           "without a project: the bare trace id, the span and the sampled flag");
    setenv("GOOGLE_CLOUD_PROJECT", "billing-prod", 1);
    {
        struct cfg_google g;
        memset(&g, 0, sizeof(g));
        g.source = GOOGLE_LOCAL;
        trace_project_start(NULL, NULL, &g);
    }
    is_str(trace_project(), "billing-prod", "GOOGLE_CLOUD_PROJECT is the project");
    trace_log_fields(&t, out, sizeof(out));
    ok(strstr(out, "\"logging.googleapis.com/trace\":\"projects/billing-prod/traces/"
                   "4bf92f3577b34da6a3ce929d0e0e4736\"") != NULL,
       "with a project: projects/P/traces/T");
    is_int((int)trace_log_fields(&t, out, 20), 0, "a buffer too small yields nothing, terminated");
    is_str(out, "", "and empty");
}

static void test_ready_missing(void)
{
    const char *doc =
        "{\"ready\":false,\"config_loaded\":true,\"keys\":{\"ready\":false,\"issuers\":["
        "{\"name\":\"aws\",\"loaded\":false,\"keys\":0,\"last_error\":\"HTTP 503\"},"
        "{\"name\":\"cognito\",\"loaded\":true,\"keys\":2}]},"
        "\"audit\":{\"healthy\":false},\"identity\":{\"required\":true,\"ready\":false,"
        "\"detail\":\"not minted yet\"},\"draining\":false}";
    char out[512];
    ready_missing(doc, strlen(doc), out, sizeof(out));
    is_str(out,
           "issuer aws keys (HTTP 503), Google identity tokens (not minted yet), the audit log",
           "what /readyz says is missing, in words");
    const char *ready =
        "{\"ready\":true,\"config_loaded\":true,\"keys\":{\"ready\":true,\"issuers\":[]},"
        "\"audit\":{\"healthy\":true},\"identity\":{\"required\":false,\"ready\":true},"
        "\"draining\":false}";
    ready_missing(ready, strlen(ready), out, sizeof(out));
    is_str(out, "", "nothing missing when ready");
    ready_missing("not json", 8, out, sizeof(out));
    is_str(out, "", "a document that does not parse: nothing");
}

/* trace_hex64 (by words) against the plain digit-by-digit way and printf, on
 * every single nibble value in every position and on many generated words. */
static void test_hex64(void)
{
    uint64_t x = 0x9e3779b97f4a7c15ull;
    int bad = 0, n = 0;

    for (int pos = 0; pos < 16; pos++)
        for (uint64_t d = 0; d < 16; d++) {
            uint64_t v[2] = {d << (4 * pos), ~(d << (4 * pos))};
            for (int k = 0; k < 2; k++) {
                char a[17] = "", b[17] = "", c[17];
                trace_hex64(v[k], a);
                trace_hex64_plain(v[k], b);
                snprintf(c, sizeof(c), "%016llx", (unsigned long long)v[k]);
                bad += memcmp(a, b, 16) != 0 || memcmp(a, c, 16) != 0;
                n++;
            }
        }
    for (int i = 0; i < 200000; i++) {
        char a[17] = "", c[17];
        x ^= x << 13; /* xorshift64 */
        x ^= x >> 7;
        x ^= x << 17;
        trace_hex64(x, a);
        snprintf(c, sizeof(c), "%016llx", (unsigned long long)x);
        bad += memcmp(a, c, 16) != 0;
        n++;
    }
    ok(bad == 0, "trace_hex64 = %%016llx on %d words (%d differ)", n, bad);
}

int main(void)
{
    test_hex64();
    test_hop();
    test_log_fields();
    test_ready_missing();
    return tap_done();
}
