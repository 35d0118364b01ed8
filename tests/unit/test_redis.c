/*
 * Unit tests of the shared limits' pieces that need no Redis: the rate key,
 * Retry-After from a GCRA wait, the per-step in-flight counter (caps, and
 * exactness under concurrent workers), and the client's behaviour with no
 * server to talk to (a decision fails at once, so on_failure applies without
 * a wait; the state says why). The GCRA script itself runs against a real
 * redis-server in tests/e2e/test_serve_redis.py.
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
    is_int(redis_key(small, sizeof(small), "billing", hash), -1, "a key that does not fit is refused");
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

    redis_init(1);
    cl = redis_client_new(base, 0);
    redis_configure(cl, &off);
    is_int(redis_take(cl, "k", 5, 5, 50, never_cb, NULL, &w), -1, "no redis configured: fails at once");
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
    is_int(redis_take(cl, "k", 5, 5, 50, never_cb, NULL, &w), -1,
           "no server: a decision fails at once (on_failure without waiting)");
    is_int(redis_take(cl, "k", 0, 5, 50, never_cb, NULL, &w), -1, "a rate of 0 is refused");
    redis_status(&st);
    ok(st.configured && st.up == 0, "status: configured, no connection up");
    ok(strstr(st.last_error, "connect failed") != NULL, "status: the last error says why (%s)",
       st.last_error);
    is_int(redis_link_use(cl, "baton:link:00", 1, 2000000000, 50, never_cb, NULL, &w), -1,
           "no server: a link use fails at once (503, whatever on_failure says)");
    is_int(cb_calls, 0, "no callback for a decision that was never parked");
    redis_client_free(cl);
    redis_shutdown();
    event_base_free(base);
}

int main(void)
{
    test_key();
    test_link_key();
    test_retry_after();
    test_inflight_caps();
    test_inflight_threads();
    test_client_without_server();
    return tap_done();
}
