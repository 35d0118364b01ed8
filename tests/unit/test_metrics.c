/*
 * test_metrics.c: per-worker counters summed into the Prometheus text
 * format: request counters by (step, decision, status), cumulative
 * histogram buckets, label escaping, and the overflow label set.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "metrics.h"
#include "util.h"
#include "tap.h"

static char *render(void)
{
    struct evbuffer *b = evbuffer_new();
    size_t n;
    char *s;
    metrics_render(b);
    n = evbuffer_get_length(b);
    s = xmalloc(n + 1);
    evbuffer_remove(b, s, n);
    s[n] = '\0';
    evbuffer_free(b);
    return s;
}

/* Drops the process_* lines (CPU time, memory: not the requests'). */
static void drop_process_lines(char *text)
{
    char *out = text;
    for (char *p = text; *p;) {
        char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) + 1 : strlen(p);
        if (strncmp(p, "process_", 8) != 0 && strncmp(p, "# HELP process_", 15) != 0 &&
            strncmp(p, "# TYPE process_", 15) != 0) {
            memmove(out, p, n);
            out += n;
        }
        p += n;
    }
    *out = '\0';
}

/* The rendered counters of one generated request sequence on a fresh
 * registry, with metrics_request's last-set cache on or off. */
static char *sequence_text(bool cache)
{
    char longs[4][220];
    const char *steps[10];
    uint64_t x = 0x6a09e667f3bcc909ull;
    char *text;

    /* names that fit the label, one cut at exactly the label's size, two
     * longer ones sharing that prefix, the no-step label, the overflow name */
    memset(longs, 0, sizeof(longs));
    memset(longs[0], 'p', METRICS_STEP_MAX - 2);
    memset(longs[1], 'p', METRICS_STEP_MAX - 1);
    memset(longs[2], 'p', METRICS_STEP_MAX);
    memset(longs[3], 'p', 200);
    steps[0] = "billing";
    steps[1] = "orders";
    steps[2] = longs[0];
    steps[3] = longs[1];
    steps[4] = longs[2];
    steps[5] = longs[3];
    steps[6] = NULL;
    steps[7] = "";
    steps[8] = "_overflow";
    steps[9] = "billing";
    metrics_init(1);
    metrics_request_cache(cache);
    for (int i = 0; i < 30000; i++) {
        int run;
        const char *step;
        enum decision d;
        int status;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        run = 1 + (int)(x % 7); /* runs of the same set: what the cache is for */
        step = steps[(x >> 8) % 10];
        d = (x >> 16) & 1 ? DECISION_ALLOW : DECISION_DENY;
        status = (x >> 20) % 3 == 0 ? 200 : (x >> 20) % 3 == 1 ? 403 : 502;
        if (i > 20000 && (x >> 24) % 4 == 0) { /* past the table: new sets overflow */
            char fresh[32];
            snprintf(fresh, sizeof(fresh), "s%d", i);
            metrics_request(metrics_worker(0), fresh, d, REASON_ALLOWED, status, 1000, 0);
        }
        for (int k = 0; k < run; k++)
            metrics_request(metrics_worker(0), step, d,
                            d == DECISION_ALLOW ? REASON_ALLOWED : REASON_NO_RULE_MATCH, status,
                            1000 + (x >> 40) % 5000000, (x >> 28) & 1 ? (x >> 36) % 3000000 : 0);
        i += run - 1;
    }
    text = render();
    drop_process_lines(text);
    metrics_shutdown();
    metrics_request_cache(true);
    return text;
}

int main(void)
{
    struct metrics_worker *w0, *w1;
    char *text, line[256];

    is_int(metrics_init(2), 0, "registry for two workers");
    is_int(metrics_init(2), -1, "a second init is refused");
    w0 = metrics_worker(0);
    w1 = metrics_worker(1);
    ok(w0 && w1 && w0 != w1 && metrics_worker(2) == NULL, "one counter block per worker");

    metrics_request(w0, "billing", DECISION_ALLOW, REASON_ALLOWED, 200, 300000,
                    200000); /* 0.3 ms */
    metrics_request(w1, "billing", DECISION_ALLOW, REASON_ALLOWED, 200, 3000000,
                    2000000); /* 3 ms */
    metrics_request(w1, "billing", DECISION_DENY, REASON_NO_RULE_MATCH, 403, 150000, 0);
    metrics_request(w0, NULL, DECISION_DENY, REASON_BAD_HEADER, 400, 50000, 0);
    metrics_request(w0, "we\"ird\\step", DECISION_WOULD_DENY, REASON_NO_CALLER_MATCH, 200, 1000,
                    1000);
    metrics_token_cache(w0, 1);
    metrics_token_cache(w1, 1);
    metrics_token_cache(w1, 0);
    metrics_conn_open(3);
    metrics_conn_open(-1);
    metrics_conn_refused(w1);
    metrics_upstream_conn(w0, 0);
    metrics_upstream_conn(w0, 1);
    metrics_upstream_conn(w1, 1);

    text = render();
    ok(strstr(text, "# TYPE baton_requests_total counter\n") != NULL, "requests counter typed");
    ok(strstr(
           text,
           "baton_requests_total{step=\"billing\",decision=\"allow\",reason=\"allowed\",status=\"200\"} 2\n"),
       "two workers' counts of one label set are summed");
    ok(strstr(
           text,
           "baton_requests_total{step=\"billing\",decision=\"deny\",reason=\"no_rule_match\",status=\"403\"} 1\n"),
       "deny counted apart from allow");
    ok(strstr(
           text,
           "baton_requests_total{step=\"_none\",decision=\"deny\",reason=\"bad_header\",status=\"400\"} 1\n"),
       "a request refused before routing counts under step _none");
    ok(strstr(text, "step=\"we\\\"ird\\\\step\",decision=\"would_deny\"") != NULL,
       "label values are escaped");
    ok(strstr(text, "baton_request_duration_seconds_bucket{le=\"0.0001\"} 2\n") != NULL,
       "1 us and 50 us fall under 0.1 ms");
    ok(strstr(text, "baton_request_duration_seconds_bucket{le=\"0.0005\"} 4\n") != NULL,
       "histogram buckets are cumulative (0.15 and 0.3 ms join under 0.5 ms)");
    ok(strstr(text, "baton_request_duration_seconds_bucket{le=\"+Inf\"} 5\n") != NULL,
       "+Inf bucket counts every request");
    ok(strstr(text, "baton_request_duration_seconds_count 5\n") != NULL, "histogram count");
    ok(strstr(text, "baton_upstream_duration_seconds_count{step=\"billing\"} 2\n") != NULL,
       "upstream latency only for forwarded requests, by step");
    ok(strstr(text, "baton_upstream_duration_seconds_bucket{step=\"billing\",le=\"0.0005\"} 1\n") &&
           strstr(text,
                  "baton_upstream_duration_seconds_bucket{step=\"billing\",le=\"0.001\"} 1\n") &&
           strstr(text,
                  "baton_upstream_duration_seconds_bucket{step=\"billing\",le=\"0.002\"} 2\n"),
       "a step's upstream histogram sums the workers' (0.2 ms, 2 ms)");
    ok(strstr(text, "baton_upstream_duration_seconds_count{step=\"we\\\"ird\\\\step\"} 1\n") !=
           NULL,
       "step label escaped in the histogram too");
    ok(strstr(text, "# TYPE process_cpu_seconds_total counter\n") &&
           strstr(text, "\nprocess_resident_memory_bytes ") &&
           strstr(text, "\nprocess_open_fds ") && strstr(text, "\nprocess_max_fds ") &&
           strstr(text, "\nprocess_start_time_seconds "),
       "process metrics");
    ok(strstr(text, "baton_build_info{version=\"") != NULL, "build info");
    ok(strstr(text, "baton_open_connections 2\n") != NULL, "open connections gauge");
    ok(strstr(text, "baton_connections_refused_total 1\n") != NULL, "refused connections");
    ok(strstr(text, "baton_upstream_connections_total{pool=\"reused\"} 2\n") != NULL,
       "pool reuse counted");
    ok(strstr(text, "baton_token_verifications_total{cache=\"hit\"} 2\n") != NULL &&
           strstr(text, "baton_token_verifications_total{cache=\"miss\"} 1\n") != NULL,
       "verified-token cache hits and misses");
    free(text);

    for (int i = 0; i < METRICS_LABEL_SETS + 10; i++) {
        char step[32];
        snprintf(step, sizeof(step), "s%d", i);
        metrics_request(w1, step, DECISION_ALLOW, REASON_ALLOWED, 200, 1000, 0);
    }
    text = render();
    ok(strstr(text, "step=\"_overflow\"") != NULL, "label sets past the table go to _overflow");
    snprintf(line, sizeof(line), "step=\"s%d\"", 3);
    ok(strstr(text, line) != NULL, "early label sets stay");
    free(text);

    {
        struct evbuffer *b = evbuffer_new();
        char esc[64];
        metrics_label_escape(esc, sizeof(esc), "a\nb\"c\\");
        is_str(esc, "a\\nb\\\"c\\\\", "newline, quote and backslash escaped");
        metrics_write(b, "x_total", "counter", "Help text.", "k=\"v\"", 7);
        {
            size_t n = evbuffer_get_length(b);
            char *s = xmalloc(n + 1);
            evbuffer_remove(b, s, n);
            s[n] = '\0';
            is_str(s, "# HELP x_total Help text.\n# TYPE x_total counter\nx_total{k=\"v\"} 7\n",
                   "metrics_write emits HELP, TYPE and the sample");
            free(s);
        }
        evbuffer_free(b);
    }
    metrics_shutdown();

    /* Every bound is inclusive ("le") and in whole nanoseconds: a request of
     * exactly the bound counts in its bucket, one nanosecond more does not. */
    {
        static const struct {
            const char *le;
            uint64_t ns;
        } bounds[] = {{"0.0001", 100000},   {"0.00025", 250000},  {"0.0005", 500000},
                      {"0.001", 1000000},   {"0.002", 2000000},   {"0.005", 5000000},
                      {"0.01", 10000000},   {"0.025", 25000000},  {"0.05", 50000000},
                      {"0.1", 100000000},   {"0.25", 250000000},  {"0.5", 500000000},
                      {"1", 1000000000},    {"2.5", 2500000000u}, {"5", 5000000000u},
                      {"10", 10000000000u}, {"30", 30000000000u}, {"60", 60000000000u}};
        int wrong = 0;
        for (size_t i = 0; i < sizeof(bounds) / sizeof(bounds[0]); i++) {
            metrics_init(1);
            metrics_request(metrics_worker(0), "b", DECISION_ALLOW, REASON_ALLOWED, 200,
                            bounds[i].ns, bounds[i].ns);
            metrics_request(metrics_worker(0), "b", DECISION_ALLOW, REASON_ALLOWED, 200,
                            bounds[i].ns + 1, bounds[i].ns + 1);
            text = render();
            snprintf(line, sizeof(line), "baton_request_duration_seconds_bucket{le=\"%s\"} 1\n",
                     bounds[i].le);
            if (!strstr(text, line) && wrong++ < 3)
                tap_diag("not exactly one request within le=%s", bounds[i].le);
            snprintf(line, sizeof(line),
                     "baton_upstream_duration_seconds_bucket{step=\"b\",le=\"%s\"} 1\n",
                     bounds[i].le);
            if (!strstr(text, line) && wrong++ < 3)
                tap_diag("not exactly one upstream time within le=%s", bounds[i].le);
            free(text);
            metrics_shutdown();
        }
        is_int(wrong, 0,
               "a time of exactly a bound is within it, one ns more is not, at all 18 bounds");
    }
    {
        char *with = sequence_text(true), *without = sequence_text(false);
        ok(strcmp(with, without) == 0 && strstr(with, "step=\"_overflow\"") &&
               strstr(with, "step=\"billing\""),
           "30,000 generated requests (cut and overflow labels among them) render the same "
           "with the last-set cache as without");
        free(with);
        free(without);
    }
    return tap_done();
}
