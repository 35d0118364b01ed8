/*
 * Unit tests of the shared limits' pieces that need no Redis: the rate key,
 * Retry-After from a GCRA wait, the per-step in-flight counter (caps, and
 * exactness under concurrent workers), and the client's behaviour with no
 * server to talk to (a decision fails at once, so on_failure applies without
 * a wait; the state says why), and the lease arithmetic: which steps lease,
 * the batch size, the lease age and the burst it keeps back, and a lease's
 * batches (spent oldest first, dropped whole at their age, never a live
 * token lost). The GCRA script itself runs against a real redis-server in
 * tests/e2e/test_serve_redis.py.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "redis.h"
#include "runtime.h"
#include "util.h"
#include "tap.h"

static void test_key(void)
{
    char key[REDIS_KEY_MAX], small[20];
    const char *hash = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    is_int(redis_key(key, sizeof(key), "billing", hash), 0, "a key fits");
    is_str(key, "baton:rl:billing:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
           "the key names the step and the policy hash");
    is_int(redis_key(small, sizeof(small), "billing", hash), -1,
           "a key that does not fit is refused");
}

static void test_link_key(void)
{
    char key[REDIS_KEY_MAX], small[20];
    const char *id = "0123456789abcdef0123456789abcdef";
    is_int(redis_link_key(key, sizeof(key), id), 0, "a link key fits");
    is_str(key, "baton:link:0123456789abcdef0123456789abcdef", "link key: prefix and link id");
    is_int(redis_link_key(small, sizeof(small), id), -1, "a link key that does not fit is refused");
}

static void test_retry_after(void)
{
    is_int(redis_retry_after_s(0), 1, "no wait: Retry-After 1 (never 0)");
    is_int(redis_retry_after_s(1), 1, "1 us: 1 s");
    is_int(redis_retry_after_s(1e6), 1, "exactly 1 s");
    is_int(redis_retry_after_s(1e6 + 1), 2, "just over 1 s: rounded up");
    is_int(redis_retry_after_s(2.5e6), 3, "2.5 s: 3");
    is_int(redis_retry_after_s(-5), 1, "a negative wait: 1");
    is_int(redis_retry_after_s(NAN), 1, "NaN: 1");
    is_int(redis_retry_after_s(1e15), 86400, "capped at a day");
}

static void test_inflight_caps(void)
{
    struct runtime_inflight *f = runtime_inflight_new();
    ok(runtime_inflight_enter(f, 2), "1st of 2 enters");
    ok(runtime_inflight_enter(f, 2), "2nd of 2 enters");
    ok(!runtime_inflight_enter(f, 2), "3rd of 2 is refused");
    is_int(runtime_inflight_now(f), 2, "a refusal counts nothing");
    runtime_inflight_leave(f);
    is_int(runtime_inflight_now(f), 1, "leave gives a slot back");
    ok(runtime_inflight_enter(f, 2), "a freed slot is taken again");
    runtime_inflight_leave(f);
    runtime_inflight_leave(f);
    is_int(runtime_inflight_now(f), 0, "back to 0");
    runtime_inflight_unref(f);
}

#define THREADS 4
#define ROUNDS 200000
#define CAP 3

static struct runtime_inflight *shared;
static _Atomic long inside, peak, refused;

static void *hammer(void *arg)
{
    (void)arg;
    for (int i = 0; i < ROUNDS; i++) {
        if (!runtime_inflight_enter(shared, CAP)) {
            atomic_fetch_add(&refused, 1);
            continue;
        }
        long now = atomic_fetch_add(&inside, 1) + 1, p = atomic_load(&peak);
        while (now > p && !atomic_compare_exchange_weak(&peak, &p, now))
            ;
        atomic_fetch_sub(&inside, 1);
        runtime_inflight_leave(shared);
    }
    return NULL;
}

static void test_inflight_threads(void)
{
    pthread_t t[THREADS];
    shared = runtime_inflight_new();
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, hammer, NULL);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    ok(atomic_load(&peak) <= CAP, "never more than max_in_flight inside at once (peak %ld)",
       (long)atomic_load(&peak));
    is_int(runtime_inflight_now(shared), 0, "every enter left: the count is exact after %d rounds",
           THREADS * ROUNDS);
    runtime_inflight_unref(shared);
}

static int cb_calls;
static void never_cb(void *arg, enum redis_verdict v, unsigned retry)
{
    (void)arg;
    (void)v;
    (void)retry;
    cb_calls++;
}

static void test_client_without_server(void)
{
    struct event_base *base = event_base_new();
    struct redis_client *cl;
    struct redis_wait *w = NULL;
    struct cfg_redis off = {0}, on = {0};
    struct redis_status st;
    struct timeval tv = {0, 50000};
    unsigned retry = 0;

    redis_init(1);
    cl = redis_client_new(base, 0);
    redis_configure(cl, &off);
    is_int(redis_take(cl, "k", 5, 5, 50, never_cb, NULL, &w, &retry), REDIS_TAKE_FAILED,
           "no redis configured: fails at once");
    is_int(redis_link_use(cl, "baton:link:00", 1, 2000000000, 50, never_cb, NULL, &w), -1,
           "no redis configured: a link use fails at once");
    redis_status(&st);
    ok(!st.configured && st.up == 0 && st.workers == 1, "status: not configured");

    on.enabled = true;
    on.unix_path = "/nonexistent/baton-test/redis.sock";
    on.timeout_ms = 50;
    redis_configure(cl, &on);
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
    is_int(redis_take(cl, "k", 5, 5, 50, never_cb, NULL, &w, &retry), REDIS_TAKE_FAILED,
           "no server: a decision fails at once (on_failure without waiting)");
    is_int(redis_take(cl, "k", 0, 5, 50, never_cb, NULL, &w, &retry), REDIS_TAKE_FAILED,
           "a rate of 0 is refused");
    redis_status(&st);
    ok(st.configured && st.up == 0, "status: configured, no connection up");
    ok(strstr(st.last_error, "connect failed") != NULL, "status: the last error says why (%s)",
       st.last_error);
    is_int(redis_link_use(cl, "baton:link:00", 1, 2000000000, 50, never_cb, NULL, &w), -1,
           "no server: a link use fails at once (503, whatever on_failure says)");
    is_int(redis_take(cl, "baton:rl:hot:00", 2000, 200, 50, never_cb, NULL, &w, &retry),
           REDIS_TAKE_FAILED, "a leased step with an empty lease and no server: fails at once");
    is_int(cb_calls, 0, "no callback for a decision that was never parked");
    redis_client_free(cl);
    redis_shutdown();
    event_base_free(base);
}

static void test_lease_plan(void)
{
    struct redis_lease_plan p;

    redis_lease_plan(5, 10, &p);
    ok(p.max_tokens == 0 && p.age_us == 0, "rate 5/s: no lease, one round trip a request");
    ok(fabs(p.interval_us - 200000) < 1e-6 && fabs(p.tolerance_us - 2000000) < 1e-6,
       "no lease: interval 1/rate, tolerance burst intervals (as before leases)");
    redis_lease_plan(99.9, 1000, &p);
    is_int(p.max_tokens, 0, "under REDIS_LEASE_MIN_RATE (100/s): no lease, whatever the burst");
    redis_lease_plan(1000, 15, &p);
    is_int(p.max_tokens, 0, "burst 15 (burst/8 < 2): no lease");
    redis_lease_plan(100000, 100, &p);
    is_int(p.max_tokens, 0, "rate 100000 burst 100: burst/8 lasts 0.12 ms < 5 ms: no lease");

    redis_lease_plan(2000, 200, &p);
    is_int(p.max_tokens, 25, "rate 2000 burst 200: batches of at most burst/8 = 25");
    ok(fabs(p.age_us - 12500) < 1e-6, "its age: 25 tokens of the global rate, 12.5 ms (%g)",
       p.age_us);
    ok(fabs(p.tolerance_us - (200 * 500.0 - 12500)) < 1e-6,
       "the tolerance keeps the age's tokens back: 175 of 200 at once (%g us)", p.tolerance_us);

    redis_lease_plan(100, 100, &p);
    ok(p.max_tokens == 12 && fabs(p.age_us - 100000) < 1e-6,
       "rate 100 burst 100: 12 a batch, age capped at 100 ms (%u, %g)", p.max_tokens, p.age_us);
    ok(fabs(p.tolerance_us - 900000) < 1e-6, "... 10 tokens of burst kept back");

    redis_lease_plan(1e6, 1000000, &p);
    ok(p.max_tokens == REDIS_LEASE_MAX_TOKENS && fabs(p.age_us - REDIS_LEASE_AGE_MAX_US) < 1e-6,
       "rate 1e6: at most %d a batch, age 100 ms", REDIS_LEASE_MAX_TOKENS);
    for (double rate = 100; rate < 1e7; rate *= 1.7)
        for (unsigned burst = 1; burst < 5000000; burst = burst * 3 + 1) {
            redis_lease_plan(rate, burst, &p);
            if (p.max_tokens &&
                (p.age_us * rate / 1e6 > burst / 8.0 + 1e-9 || p.age_us < REDIS_LEASE_AGE_MIN_US ||
                 p.tolerance_us < p.interval_us * (burst - burst / 8.0) - 1e-6 ||
                 p.max_tokens > burst / 8)) {
                ok(0, "rate %g burst %u: age %g us, tolerance %g, batch %u", rate, burst, p.age_us,
                   p.tolerance_us, p.max_tokens);
                return;
            }
        }
    ok(1, "over rates 100..1e7 and bursts 1..5e6: the age holds at most burst/8 tokens, is at "
          "least 5 ms, and at least 7/8 of burst passes at once");
}

static void test_lease_batch(void)
{
    struct redis_lease_plan p, none;
    redis_lease_plan(2000, 200, &p);
    redis_lease_plan(5, 10, &none);
    is_int(redis_lease_batch(&p, 0), 0, "no arrivals: no batch (one token a request)");
    is_int(redis_lease_batch(&p, 3), 0, "three arrivals a lease age: no batch, nothing stranded");
    is_int(redis_lease_batch(&p, 4), 1, "four: a batch of one");
    is_int(redis_lease_batch(&p, 39), 9, "a quarter of the arrivals of one age");
    is_int(redis_lease_batch(&p, 1000), 25, "capped at the plan's largest batch");
    is_int(redis_lease_batch(&none, 1000), 0, "a step without lease: never a batch");
}

static void test_lease_batches(void)
{
    struct redis_lease l;
    unsigned expired = 0, spent = 0;
    const uint64_t ms = 1000000;

    memset(&l, 0, sizeof(l));
    ok(!redis_lease_spend(&l, 0, &expired) && expired == 0, "an empty lease spends nothing");
    is_int(redis_lease_add(&l, 3, 10 * ms, 20 * ms), 3, "a batch already past its age is dropped");
    is_int(l.held, 0, "... and not held");
    is_int(redis_lease_add(&l, 3, 30 * ms, 1 * ms), 0, "a batch of 3 to 30 ms");
    is_int(redis_lease_add(&l, 2, 20 * ms, 2 * ms), 0,
           "a batch of 2 to 20 ms (a reply out of order)");
    is_int(l.held, 5, "5 held");
    ok(redis_lease_spend(&l, 3 * ms, &expired) && expired == 0, "spent one");
    is_int(l.batch[0].tokens, 1, "from the batch that expires first");
    is_int(redis_lease_expire(&l, 20 * ms), 1, "at 20 ms the older batch's last token expires");
    is_int(l.held, 3, "the younger batch lives on");
    ok(redis_lease_spend(&l, 29 * ms, &expired) && expired == 0 && l.held == 2, "spent at 29 ms");
    ok(!redis_lease_spend(&l, 30 * ms, &expired) && expired == 2 && l.held == 0,
       "at 30 ms the rest expires: nothing to spend, 2 counted as expired");

    for (unsigned i = 0; i < REDIS_LEASE_BATCHES + 2; i++)
        is_int(redis_lease_add(&l, 1, (100 + i) * ms, 0), 0, "batch %u: nothing dropped", i);
    is_int(l.held, REDIS_LEASE_BATCHES + 2, "more batches than slots: every token still held");
    is_int(l.n_batches, REDIS_LEASE_BATCHES, "in %d slots", REDIS_LEASE_BATCHES);
    is_int(l.batch[0].tokens, 3,
           "the oldest merged, with the oldest expiry (a life only shortened)");
    ok(l.batch[0].expires_ns == 100 * ms, "merged batch expires at the older's time");
    while (redis_lease_spend(&l, 50 * ms, &expired))
        spent++;
    is_int(spent, REDIS_LEASE_BATCHES + 2, "every held token is spent exactly once");
}

int main(void)
{
    test_key();
    test_link_key();
    test_retry_after();
    test_inflight_caps();
    test_inflight_threads();
    test_client_without_server();
    test_lease_plan();
    test_lease_batch();
    test_lease_batches();
    return tap_done();
}
