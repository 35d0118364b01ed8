/*
 * redis.c: the per-worker hiredis client of global rate limits and signed
 * URL uses (redis.h). The only file that includes hiredis.
 *
 * Connection life: CONNECTING (TCP or unix connect, then AUTH, SELECT and
 * SCRIPT LOAD pipelined behind it) -> UP when the script is loaded -> DOWN on
 * any error, a stall or a disconnect, with a reconnect timer (backoff) ->
 * CONNECTING ... Decisions are accepted while CONNECTING (hiredis queues them
 * behind the setup commands, and they are bounded by the request timeout) and
 * UP; while DOWN they fail at once.
 *
 * A parked decision is a `struct redis_wait`, owned by the client from
 * redis_take until hiredis has called its reply callback (a reply, or NULL
 * when the context is torn down: hiredis calls every pending callback then).
 * The request side leaves it earlier by redis_cancel, by its timeout, or when
 * the verdict is delivered: `cb` is cleared, and the late reply only frees it.
 *
 * Leases (redis.h): a leased step's key has a `struct lease_entry` on the
 * worker. A request spends one of its tokens when it has one (no wait, no
 * round trip), or is refused at once while the bucket is known empty, or
 * parks on a fetch that asks for its own token plus a batch. A spend that
 * leaves half a batch or less sends the next batch's fetch with no request
 * waiting on it (cb NULL, no timer). Every token a reply grants beyond the
 * asking request's (all of them when it has left) goes to the lease, to
 * expire one lease age after the fetch was sent.
 */
#include "redis.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <hiredis/adapters/libevent.h>
#include <openssl/evp.h>

#include "list.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

/*
 * GCRA: the key holds the theoretical arrival time (TAT) of the next request
 * in microseconds of Redis's clock. A token at `now` is granted when
 * max(TAT, now) + interval - tolerance <= now, with interval = 1e6/rate and
 * tolerance = burst * interval (so `burst` requests pass at once from idle;
 * a leased step passes its tolerance less the lease age, redis.h), and then
 * TAT becomes max(TAT, now) + interval. ARGV[3] tokens are asked: as many are
 * granted as that condition allows, one after the other, in one step (n =
 * floor((now + tolerance - TAT) / interval), corrected by one either way so
 * that the division's rounding never grants one the condition refuses).
 * Reply {n, wait}: n tokens granted, and the microseconds until the next one
 * would be (0 when one is left). Nothing granted writes nothing. With
 * ARGV[3] = 1 this is exactly one GCRA decision. The TTL is the time until
 * TAT: past it, an absent key means the same. TAT is passed to SET as a Lua
 * number, which Redis writes with 17 significant digits: exact to a fraction
 * of a microsecond. redis.replicate_commands(): Redis < 5 needs it to write
 * after TIME (a non-deterministic command); it is the default, and a no-op,
 * since 5.
 */
static const char gcra_script[] =
    "if redis.replicate_commands then redis.replicate_commands() end\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local interval = tonumber(ARGV[1])\n"
    "local tolerance = tonumber(ARGV[2])\n"
    "local want = tonumber(ARGV[3])\n"
    "local tat = tonumber(redis.call('GET', KEYS[1]))\n"
    "if not tat or tat < now then tat = now end\n"
    "local n = math.floor((now + tolerance - tat) / interval)\n"
    "if n > want then n = want end\n"
    "if n < want and tat + (n + 1) * interval - tolerance <= now then n = n + 1 end\n"
    "if n >= 1 and tat + n * interval - tolerance > now then n = n - 1 end\n"
    "if n < 1 then return {0, math.ceil(tat + interval - tolerance - now)} end\n"
    "local nxt = tat + n * interval\n"
    "redis.call('SET', KEYS[1], nxt, 'PX', math.ceil((nxt - now) / 1000) + 1)\n"
    "local wait = nxt + interval - tolerance - now\n"
    "if wait < 0 then wait = 0 end\n"
    "return {n, math.ceil(wait)}\n";

/*
 * One use of a signed URL (signurl.h): KEYS[1] "baton:link:<link id>" counts
 * the uses; the first one sets its expiry to ARGV[2] (unix seconds, past the
 * last instant any instance still accepts the link), so the count outlives
 * the link and then vanishes. {1, n}: use n of ARGV[1], go on; {0, n}: none
 * left. INCR + EXPIREAT rather than SET NX EX: one script covers uses 1..N
 * alike; for uses 1 it is the same single atomic step. Nothing reads a clock.
 */
static const char link_script[] = "local n = redis.call('INCR', KEYS[1])\n"
                                  "if n == 1 then redis.call('EXPIREAT', KEYS[1], ARGV[2]) end\n"
                                  "if n <= tonumber(ARGV[1]) then return {1, n} end\n"
                                  "return {0, n}\n";

enum conn_state { ST_DISABLED, ST_CONNECTING, ST_UP, ST_DOWN };

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

/* Latency buckets (seconds) of the round-trip histogram. */
static const double lat_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                    0.01,   0.025,   0.05,   0.1,   0.25,   1.0};
#define N_BOUNDS (sizeof(lat_bounds) / sizeof(lat_bounds[0]))

/* One worker's counters: written by its thread only (relaxed load+1 store). */
struct redis_stats {
    _Atomic uint64_t round_trips, failures, timeouts, reconnects, script_loads;
    _Atomic uint64_t fallback[3];              /* by enum cfg_redis_failure */
    _Atomic uint64_t link_uses, link_failures; /* signed URL uses asked; not verified */
    _Atomic uint64_t lat_bucket[N_BOUNDS + 1];
    _Atomic uint64_t lat_sum_ns;
    _Atomic uint64_t lease_tokens, lease_decisions, lease_expired; /* redis.h: leases */
    _Atomic int state;                                             /* enum conn_state */
    _Atomic bool configured;
};

static struct {
    struct redis_stats *stats;
    unsigned n;
    pthread_mutex_t lock; /* last_error */
    char last_error[160];
    char sha[41];
    char link_sha[41];
} reg = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* One key's lease on this worker (redis.h): its tokens, its arrivals, and
 * whether the bucket is known empty. Owned by the client; freed when idle for
 * LEASE_IDLE_NS with no fetch in flight pointing at it, or with the client. */
struct lease_entry {
    struct lease_entry *next;
    double rate;
    unsigned burst;
    struct redis_lease_plan plan;
    char interval[32], tolerance[32];
    struct redis_lease lease;
    uint64_t win_start_ns; /* arrivals: the current window, one lease age long */
    unsigned win_count;    /* arrivals in it */
    unsigned prev_count;   /* arrivals in the window before (0 when not adjacent) */
    uint64_t dry_until_ns; /* the bucket is empty for us until then: refuse here */
    uint64_t last_use_ns;
    unsigned pending;    /* fetches in flight that point here */
    bool batch_inflight; /* one of them asks for a batch */
    char key[REDIS_KEY_MAX];
};

#define LEASE_IDLE_NS 10000000000ull /* an entry unused this long is freed */

struct redis_wait {
    struct redis_client *cl;
    struct list node; /* on cl->waits while outstanding, on cl->spares once freed */
    redis_cb cb;      /* NULL once delivered or cancelled */
    void *arg;
    struct event timer;
    bool timer_set;
    uint64_t sent_ns;
    bool retried;           /* resent with EVAL after NOSCRIPT */
    bool link;              /* a link use (link_script; interval: uses, tolerance: expiry) */
    bool batch;             /* asks for a lease's batch (le->batch_inflight) */
    unsigned want;          /* tokens asked (ARGV[3]) */
    struct lease_entry *le; /* the lease the tokens go to; NULL: no lease */
    char key[REDIS_KEY_MAX];
    char interval[32], tolerance[32], want_s[12];
};

struct redis_client {
    struct event_base *base;
    unsigned id;
    struct redis_stats *st;
    redisAsyncContext *ac; /* NULL while DOWN or DISABLED */
    enum conn_state state;
    /* the config applied (owned copies) */
    bool enabled;
    char *host, *unix_path, *password;
    int port, db;
    struct list waits;      /* of redis_wait.node: outstanding commands, oldest first */
    struct event *retry_ev; /* reconnect after backoff */
    struct event *stall_ev; /* the connect or the oldest reply is overdue */
    struct event *flush_ev; /* writes what this loop turn queued, in one write */
    unsigned backoff_ms;
    uint64_t connect_ns;
    unsigned tv_ms;
    const struct timeval *tv; /* common timeout of tv_ms */
    /* the GCRA arguments of the last (rate, burst) asked: formatting doubles
     * costs more than the rest of a decision on our side */
    double last_rate;
    unsigned last_burst;
    struct redis_lease_plan last_plan;
    char last_interval[32], last_tolerance[32];
    struct lease_entry *leases; /* the leased keys this worker has used */
    struct list spares;         /* of redis_wait.node: freed waits kept for reuse (a short list) */
    char setup_error[128];      /* why AUTH, SELECT or SCRIPT LOAD was refused */
    unsigned n_spare;
};

/* The next reconnect delay: the backoff plus up to a quarter of it at random,
 * so that the instances and workers that lost Redis together do not all
 * knock at the same instant when it comes back. */
static struct timeval backoff_next(struct redis_client *cl)
{
    unsigned ms = cl->backoff_ms ? cl->backoff_ms : BACKOFF_MIN_MS;
    unsigned jitter = (unsigned)((mono_ns() >> 10) % (ms / 4 + 1));
    struct timeval tv = {(ms + jitter) / 1000, ((ms + jitter) % 1000) * 1000};
    cl->backoff_ms = ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : ms * 2;
    return tv;
}

static void set_state(struct redis_client *cl, enum conn_state s)
{
    cl->state = s;
    if (cl->st)
        atomic_store_explicit(&cl->st->state, (int)s, memory_order_relaxed);
}

static void bump(_Atomic uint64_t *c, uint64_t by)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + by,
                          memory_order_relaxed);
}

static void note_error(struct redis_client *cl, const char *what, const char *detail)
{
    pthread_mutex_lock(&reg.lock);
    snprintf(reg.last_error, sizeof(reg.last_error), "%s%s%s", what, detail ? ": " : "",
             detail ? detail : "");
    pthread_mutex_unlock(&reg.lock);
    if (cl->state != ST_DOWN) /* one line per transition, not per request */
        log_msg(LOG_WARNING, "worker %u: redis %s%s%s", cl->id, what, detail ? ": " : "",
                detail ? detail : "");
}

/* ------------------------------------------------------------ helpers */

int redis_key(char *out, size_t cap, const char *step, const char *policy_hash)
{
    int n = snprintf(out, cap, "baton:rl:%s:%s", step, policy_hash);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

unsigned redis_retry_after_s(double wait_us)
{
    double s = ceil(wait_us / 1e6);
    if (!(s >= 1)) /* NaN too */
        return 1;
    return s > 86400 ? 86400 : (unsigned)s;
}

int redis_link_key(char *out, size_t cap, const char *link_id_hex)
{
    int n = snprintf(out, cap, "baton:link:%s", link_id_hex);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

/* ------------------------------------------------------ lease arithmetic */

void redis_lease_plan(double rate_per_s, unsigned burst, struct redis_lease_plan *p)
{
    unsigned b = burst ? burst : 1;
    unsigned share = b / REDIS_LEASE_BURST_SHARE;
    double age;

    memset(p, 0, sizeof(*p));
    p->interval_us = 1e6 / rate_per_s;
    p->tolerance_us = p->interval_us * b;
    if (!(rate_per_s >= REDIS_LEASE_MIN_RATE) || share < 2)
        return;
    /* the age holds at most `share` tokens of the global rate, so keeping it
     * back from the tolerance costs at most burst/8 */
    age = p->interval_us * share;
    if (age > REDIS_LEASE_AGE_MAX_US)
        age = REDIS_LEASE_AGE_MAX_US;
    if (age < REDIS_LEASE_AGE_MIN_US)
        return;
    p->age_us = age;
    p->max_tokens = share < REDIS_LEASE_MAX_TOKENS ? share : REDIS_LEASE_MAX_TOKENS;
    p->tolerance_us -= age;
}

unsigned redis_lease_batch(const struct redis_lease_plan *p, unsigned arrivals)
{
    unsigned k = arrivals / 4;
    if (!p->max_tokens)
        return 0;
    return k > p->max_tokens ? p->max_tokens : k;
}

static void lease_remove(struct redis_lease *l, unsigned i)
{
    l->held -= l->batch[i].tokens;
    memmove(&l->batch[i], &l->batch[i + 1], (l->n_batches - i - 1) * sizeof(l->batch[0]));
    l->n_batches--;
}

unsigned redis_lease_expire(struct redis_lease *l, uint64_t now_ns)
{
    unsigned dropped = 0;
    /* sorted by expiry: the expired ones come first */
    while (l->n_batches && l->batch[0].expires_ns <= now_ns) {
        dropped += l->batch[0].tokens;
        lease_remove(l, 0);
    }
    return dropped;
}

unsigned redis_lease_add(struct redis_lease *l, unsigned tokens, uint64_t expires_ns,
                         uint64_t now_ns)
{
    unsigned i;
    if (!tokens)
        return 0;
    if (expires_ns <= now_ns)
        return tokens;
    if (l->n_batches == REDIS_LEASE_BATCHES) {
        /* no slot: the two oldest become one that expires with the older,
         * which only shortens a life (never drops a live token) */
        l->batch[0].tokens += l->batch[1].tokens;
        memmove(&l->batch[1], &l->batch[2], (l->n_batches - 2) * sizeof(l->batch[0]));
        l->n_batches--;
    }
    i = l->n_batches;
    while (i > 0 && l->batch[i - 1].expires_ns > expires_ns) {
        l->batch[i] = l->batch[i - 1];
        i--;
    }
    l->batch[i].tokens = tokens;
    l->batch[i].expires_ns = expires_ns;
    l->n_batches++;
    l->held += tokens;
    return 0;
}

bool redis_lease_spend(struct redis_lease *l, uint64_t now_ns, unsigned *expired)
{
    *expired = redis_lease_expire(l, now_ns);
    if (!l->held)
        return false;
    l->batch[0].tokens--;
    l->held--;
    if (!l->batch[0].tokens)
        lease_remove(l, 0);
    return true;
}

static void script_sha(const char *script, size_t len, char out[41])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    static const char hex[] = "0123456789abcdef";
    EVP_Digest(script, len, md, &mdlen, EVP_sha1(), NULL);
    for (unsigned i = 0; i < 20; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[40] = '\0';
}

void redis_init(unsigned n_workers)
{
    reg.n = n_workers ? n_workers : 1;
    reg.stats = xcalloc(reg.n, sizeof(*reg.stats));
    reg.last_error[0] = '\0';
    script_sha(gcra_script, sizeof(gcra_script) - 1, reg.sha);
    script_sha(link_script, sizeof(link_script) - 1, reg.link_sha);
}

void redis_shutdown(void)
{
    free(reg.stats);
    reg.stats = NULL;
    reg.n = 0;
}

/* --------------------------------------------------------- waits */

/* The first wait of `l` (cl->waits: the oldest outstanding one), or NULL. */
static struct redis_wait *wait_first(const struct list *l)
{
    struct list *n = list_first(l);

    return n ? list_entry(n, struct redis_wait, node) : NULL;
}

#define SPARE_MAX 64

/* The wait is over (or was never sent): its lease no longer waits on it. */
static void wait_free(struct redis_client *cl, struct redis_wait *w)
{
    if (w->le) {
        w->le->pending--;
        if (w->batch)
            w->le->batch_inflight = false;
        w->le = NULL;
    }
    if (cl->n_spare >= SPARE_MAX) {
        free(w);
        return;
    }
    list_push_front(&cl->spares, &w->node);
    cl->n_spare++;
}

/* Hands the verdict to the request once, and stops its timer. */
static void deliver(struct redis_wait *w, enum redis_verdict v, unsigned retry)
{
    redis_cb cb = w->cb;
    if (w->timer_set) {
        evtimer_del(&w->timer);
        w->timer_set = false;
    }
    if (!cb)
        return;
    w->cb = NULL;
    cb(w->arg, v, retry);
}

void redis_cancel(struct redis_wait *w)
{
    if (!w)
        return;
    w->cb = NULL;
    if (w->timer_set) {
        evtimer_del(&w->timer);
        w->timer_set = false;
    }
}

/* ------------------------------------------------------ connection */

static void connect_now(struct redis_client *cl);

static void arm_stall(struct redis_client *cl)
{
    struct timeval tv = {REDIS_STALL_MS / 1000, (REDIS_STALL_MS % 1000) * 1000};
    evtimer_add(cl->stall_ev, &tv);
}

/* Drops the connection (never from inside a hiredis callback: hiredis frees
 * a context it is dispatching on its own) and schedules the reconnect. */
static void drop(struct redis_client *cl, const char *why, const char *detail)
{
    redisAsyncContext *ac = cl->ac;

    if (cl->state == ST_DISABLED)
        return;
    note_error(cl, why, detail);
    set_state(cl, ST_DOWN);
    cl->ac = NULL;
    evtimer_del(cl->stall_ev);
    if (ac) {
        ac->data = NULL;
        redisAsyncFree(ac); /* runs every pending reply callback with NULL */
    }
    if (cl->enabled) {
        struct timeval tv = backoff_next(cl);
        evtimer_add(cl->retry_ev, &tv);
    }
}

/* hiredis said the context is going (connection lost or refused): it frees
 * the context itself after this, and has already failed every pending reply. */
static void lost(struct redis_client *cl, const char *why, const char *detail)
{
    note_error(cl, why, detail);
    set_state(cl, ST_DOWN);
    cl->ac = NULL;
    evtimer_del(cl->stall_ev);
    if (cl->enabled) {
        struct timeval tv = backoff_next(cl);
        evtimer_add(cl->retry_ev, &tv);
    }
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct redis_client *cl = ac->data;
    if (!cl || cl->ac != ac || status == REDIS_OK)
        return;
    lost(cl, "connect failed", ac->errstr);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct redis_client *cl = ac->data;
    if (!cl || cl->ac != ac)
        return;
    lost(cl, "connection lost", status == REDIS_OK ? "closed" : ac->errstr);
}

/* A setup reply (AUTH, SELECT): an error drops the connection. */
static void on_setup(redisAsyncContext *ac, void *r, void *priv)
{
    redisReply *reply = r;
    struct redis_client *cl = ac->data;
    (void)priv;
    if (!cl || cl->ac != ac || !reply)
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        snprintf(cl->setup_error, sizeof(cl->setup_error), "%s", reply->str);
        /* dropped later, outside hiredis's dispatch: the stall timer fires at once */
        set_state(cl, ST_DOWN);
        event_active(cl->stall_ev, EV_TIMEOUT, 0);
    }
}

/* A SCRIPT LOAD reply; `priv` is the SHA expected. The link script is loaded
 * first, the rate script last: its reply makes the connection UP. */
static void on_script(redisAsyncContext *ac, void *r, void *priv)
{
    redisReply *reply = r;
    struct redis_client *cl = ac->data;
    const char *sha = priv;
    if (!cl || cl->ac != ac || !reply || cl->state == ST_DOWN)
        return;
    if (reply->type != REDIS_REPLY_STRING || strcmp(reply->str, sha) != 0) {
        snprintf(cl->setup_error, sizeof(cl->setup_error), "SCRIPT LOAD: %s",
                 reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
        set_state(cl, ST_DOWN);
        event_active(cl->stall_ev, EV_TIMEOUT, 0);
        return;
    }
    bump(&cl->st->script_loads, 1);
    if (sha != reg.sha)
        return;
    if (cl->backoff_ms > BACKOFF_MIN_MS || reg.last_error[0])
        log_msg(LOG_INFO, "worker %u: redis connection up", cl->id);
    cl->backoff_ms = 0;
    set_state(cl, ST_UP);
    if (!list_empty(&cl->waits))
        arm_stall(cl);
    else
        evtimer_del(cl->stall_ev);
}

static void connect_now(struct redis_client *cl)
{
    redisAsyncContext *ac;

    if (!cl->enabled || cl->ac)
        return;
    bump(&cl->st->reconnects, 1);
    ac = cl->unix_path ? redisAsyncConnectUnix(cl->unix_path)
                       : redisAsyncConnect(cl->host, cl->port);
    if (!ac || ac->err) {
        char detail[128];
        snprintf(detail, sizeof(detail), "%s", ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        cl->ac = NULL;
        set_state(cl, ST_CONNECTING);
        drop(cl, "connect failed", detail);
        return;
    }
    ac->data = cl;
    if (redisLibeventAttach(ac, cl->base) != REDIS_OK) {
        redisAsyncFree(ac);
        set_state(cl, ST_CONNECTING);
        drop(cl, "cannot attach to the event loop", NULL);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    cl->ac = ac;
    set_state(cl, ST_CONNECTING);
    cl->connect_ns = mono_ns();
    if (cl->password) {
        const char *argv[2] = {"AUTH", cl->password};
        size_t lens[2] = {4, strlen(cl->password)};
        redisAsyncCommandArgv(ac, on_setup, NULL, 2, argv, lens);
    }
    if (cl->db)
        redisAsyncCommand(ac, on_setup, NULL, "SELECT %d", cl->db);
    {
        const char *argv[3] = {"SCRIPT", "LOAD", link_script};
        size_t lens[3] = {6, 4, sizeof(link_script) - 1};
        redisAsyncCommandArgv(ac, on_script, reg.link_sha, 3, argv, lens);
    }
    {
        const char *argv[3] = {"SCRIPT", "LOAD", gcra_script};
        size_t lens[3] = {6, 4, sizeof(gcra_script) - 1};
        redisAsyncCommandArgv(ac, on_script, reg.sha, 3, argv, lens);
    }
    arm_stall(cl); /* the whole setup must finish within REDIS_STALL_MS */
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    connect_now(arg);
}

/* The connect, a setup step or the oldest reply is overdue (or a setup reply
 * asked for the drop): drop the connection. */
static void on_stall(evutil_socket_t fd, short what, void *arg)
{
    struct redis_client *cl = arg;
    uint64_t now = mono_ns(), limit = (uint64_t)REDIS_STALL_MS * 1000000ull;
    struct redis_wait *oldest = wait_first(&cl->waits);
    (void)fd;
    (void)what;
    if (!cl->ac)
        return;
    if (cl->state == ST_DOWN) {
        /* drop() notes the error only on a transition: this one is new */
        set_state(cl, ST_CONNECTING);
        drop(cl, "setup refused", cl->setup_error);
        return;
    }
    if (cl->state == ST_CONNECTING && now - cl->connect_ns >= limit) {
        drop(cl, "connect timed out", NULL);
        return;
    }
    if (oldest && now - oldest->sent_ns >= limit) {
        drop(cl, "reply overdue", NULL);
        return;
    }
    if (oldest) {
        uint64_t left = limit - (now - oldest->sent_ns);
        struct timeval tv = {(time_t)(left / 1000000000ull),
                             (suseconds_t)(left % 1000000000ull / 1000)};
        evtimer_add(cl->stall_ev, &tv);
    }
}

/* ------------------------------------------------------- decisions */

static int send_decision(struct redis_client *cl, struct redis_wait *w);

/* A lease fetch answered: `got` tokens for the lease (the asking request's
 * own already taken), `wait_us` until the next token after them (> 0: the
 * bucket is empty now). An empty bucket is not asked again before the next
 * batch could be granted: until then the lease refuses here, with no round
 * trip (the tokens stay in the bucket, for any instance). */
static void lease_granted(struct redis_client *cl, struct redis_wait *w, unsigned got,
                          long long wait_us)
{
    struct lease_entry *le = w->le;
    uint64_t now = mono_ns();
    if (wait_us > 0) {
        unsigned k = redis_lease_batch(&le->plan, le->prev_count > le->win_count ? le->prev_count
                                                                                 : le->win_count);
        double until_us = (double)wait_us + (k > 1 ? (k - 1) * le->plan.interval_us : 0);
        le->dry_until_ns = now + (uint64_t)(until_us * 1000.0);
    }
    if (got) {
        bump(&cl->st->lease_tokens, got);
        bump(&cl->st->lease_expired,
             redis_lease_add(&le->lease, got, w->sent_ns + (uint64_t)(le->plan.age_us * 1000.0),
                             now));
    }
}

static void on_reply(redisAsyncContext *ac, void *r, void *priv)
{
    redisReply *reply = r;
    struct redis_wait *w = priv;
    struct redis_client *cl = w->cl;
    uint64_t ns = mono_ns() - w->sent_ns;
    enum redis_verdict v = REDIS_FAILED;
    unsigned retry = 1;
    size_t b = 0;

    list_remove(&w->node);
    if (!reply) { /* the context is going: every pending reply fails */
        bump(&cl->st->failures, 1);
        deliver(w, REDIS_FAILED, 1);
        wait_free(cl, w);
        return;
    }
    bump(&cl->st->round_trips, 1);
    while (b < N_BOUNDS && (double)ns / 1e9 > lat_bounds[b])
        b++;
    bump(&cl->st->lat_bucket[b], 1);
    bump(&cl->st->lat_sum_ns, ns);
    if (reply->type == REDIS_REPLY_ERROR && !w->retried && !strncmp(reply->str, "NOSCRIPT", 8) &&
        cl->ac == ac && (w->cb || w->le)) {
        /* A server without the script (a flush, a failover): EVAL loads it. */
        w->retried = true;
        if (send_decision(cl, w) == 0)
            return;
    }
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
        reply->element[0]->type == REDIS_REPLY_INTEGER &&
        reply->element[1]->type == REDIS_REPLY_INTEGER) {
        if (w->link) {
            v = reply->element[0]->integer == 1 ? REDIS_ALLOW : REDIS_DENY;
        } else {
            long long n = reply->element[0]->integer;
            unsigned got = n <= 0 ? 0 : n > (long long)w->want ? w->want : (unsigned)n;
            v = got ? REDIS_ALLOW : REDIS_DENY;
            retry = redis_retry_after_s((double)reply->element[1]->integer);
            if (w->cb && got)
                got--; /* the asking request's own token */
            if (w->le)
                lease_granted(cl, w, got, reply->element[1]->integer);
        }
    } else {
        bump(&cl->st->failures, 1);
        if (w->cb)
            note_error(cl, "unexpected reply",
                       reply->type == REDIS_REPLY_ERROR ? reply->str : NULL);
    }
    deliver(w, v, retry);
    wait_free(cl, w);
    if (cl->state == ST_UP && list_empty(&cl->waits))
        evtimer_del(cl->stall_ev);
}

/*
 * Pipelining: the decisions queued by every callback of one loop turn go out
 * in one write() at the end of the turn (flush_ev is activated, so it runs in
 * the same turn after the callbacks already active). Writing then, rather than
 * when the socket is next reported writable, also lets the epoll changelist
 * fold hiredis's add and delete of the write event: no epoll_ctl per decision.
 * Only once connected: before that, hiredis's own write event completes the
 * connect.
 */
static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    struct redis_client *cl = arg;
    (void)fd;
    (void)what;
    if (cl->ac && cl->state == ST_UP)
        redisAsyncHandleWrite(cl->ac);
}

static void on_wait_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct redis_wait *w = arg;
    (void)fd;
    (void)what;
    w->timer_set = false;
    bump(&w->cl->st->timeouts, 1);
    deliver(w, REDIS_FAILED, 1); /* the wait stays listed until its reply or teardown */
}

static int send_decision(struct redis_client *cl, struct redis_wait *w)
{
    int rc;
    const char *script = w->link ? link_script : gcra_script;
    size_t script_len = w->link ? sizeof(link_script) - 1 : sizeof(gcra_script) - 1;
    int argc = w->link ? 6 : 7; /* a rate decision adds the tokens asked */
    if (!w->retried) {
        const char *argv[7] = {
            "EVALSHA", w->link ? reg.link_sha : reg.sha, "1", w->key, w->interval, w->tolerance,
            w->want_s};
        size_t lens[7] = {
            7, 40, 1, strlen(w->key), strlen(w->interval), strlen(w->tolerance), strlen(w->want_s)};
        rc = redisAsyncCommandArgv(cl->ac, on_reply, w, argc, argv, lens);
    } else {
        const char *argv[7] = {"EVAL", script, "1", w->key, w->interval, w->tolerance, w->want_s};
        size_t lens[7] = {4,
                          script_len,
                          1,
                          strlen(w->key),
                          strlen(w->interval),
                          strlen(w->tolerance),
                          strlen(w->want_s)};
        bump(&cl->st->script_loads, 1);
        rc = redisAsyncCommandArgv(cl->ac, on_reply, w, argc, argv, lens);
    }
    if (rc != REDIS_OK)
        return -1;
    if (cl->state == ST_UP && !event_pending(cl->flush_ev, EV_TIMEOUT, NULL))
        event_active(cl->flush_ev, EV_TIMEOUT, 0);
    w->sent_ns = mono_ns();
    list_push_back(&cl->waits, &w->node);
    if (!evtimer_pending(cl->stall_ev, NULL))
        arm_stall(cl);
    return 0;
}

/* A wait for `key` from the spare list, or NULL when the key does not fit. */
static struct redis_wait *wait_new(struct redis_client *cl, const char *key, redis_cb cb, void *arg)
{
    struct redis_wait *w;
    if (strlen(key) >= sizeof(w->key))
        return NULL;
    if ((w = wait_first(&cl->spares))) {
        list_remove(&w->node);
        cl->n_spare--;
        memset(w, 0, sizeof(*w));
    } else {
        w = xcalloc(1, sizeof(*w));
    }
    w->cl = cl;
    w->cb = cb;
    w->arg = arg;
    strcpy(w->key, key);
    return w;
}

/* Sends `w` and arms its timeout: 0, or -1 (w freed). */
static int wait_start(struct redis_client *cl, struct redis_wait *w, unsigned timeout_ms,
                      struct redis_wait **wait)
{
    if (send_decision(cl, w) < 0) {
        wait_free(cl, w);
        return -1;
    }
    if (cl->tv_ms != timeout_ms || !cl->tv) {
        struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
        cl->tv = event_base_init_common_timeout(cl->base, &tv);
        cl->tv_ms = timeout_ms;
    }
    evtimer_assign(&w->timer, cl->base, on_wait_timeout, w);
    evtimer_add(&w->timer, cl->tv);
    w->timer_set = true;
    *wait = w;
    return 0;
}

static bool accepting(const struct redis_client *cl)
{
    return cl && cl->ac && (cl->state == ST_UP || cl->state == ST_CONNECTING);
}

/* The lease of `key` (created with the plan of rate_per_s and burst), or
 * NULL when the key does not fit. Creating one frees the entries idle for
 * LEASE_IDLE_NS (a reload's old keys), their tokens counted as expired. */
static struct lease_entry *lease_find(struct redis_client *cl, const char *key, double rate_per_s,
                                      unsigned burst, uint64_t now)
{
    struct lease_entry *le, **pp;
    for (le = cl->leases; le; le = le->next)
        if (!strcmp(le->key, key))
            break;
    if (!le) {
        if (strlen(key) >= sizeof(le->key))
            return NULL;
        for (pp = &cl->leases; *pp;) {
            struct lease_entry *old = *pp;
            if (!old->pending && now - old->last_use_ns >= LEASE_IDLE_NS) {
                bump(&cl->st->lease_expired, old->lease.held);
                *pp = old->next;
                free(old);
            } else {
                pp = &old->next;
            }
        }
        le = xcalloc(1, sizeof(*le));
        strcpy(le->key, key);
        le->next = cl->leases;
        cl->leases = le;
    }
    if (le->rate != rate_per_s || le->burst != burst) {
        redis_lease_plan(rate_per_s, burst, &le->plan);
        snprintf(le->interval, sizeof(le->interval), "%.6f", le->plan.interval_us);
        snprintf(le->tolerance, sizeof(le->tolerance), "%.6f", le->plan.tolerance_us);
        le->rate = rate_per_s;
        le->burst = burst;
    }
    return le;
}

/* Fills a rate fetch of `want` tokens (for the lease `le`, or none). */
static void wait_fetch(struct redis_wait *w, struct lease_entry *le, const char *interval,
                       const char *tolerance, unsigned want, bool batch)
{
    memcpy(w->interval, interval, sizeof(w->interval));
    memcpy(w->tolerance, tolerance, sizeof(w->tolerance));
    snprintf(w->want_s, sizeof(w->want_s), "%u", want);
    w->want = want;
    w->batch = batch;
    if (le) {
        w->le = le;
        le->pending++;
        if (batch)
            le->batch_inflight = true;
    }
}

/* The arrivals of one lease age, for the batch size: the larger of the last
 * whole window and the current one so far. */
static unsigned lease_arrivals(const struct lease_entry *le)
{
    return le->prev_count > le->win_count ? le->prev_count : le->win_count;
}

/* While a few tokens remain (half a batch), asks for the next batch ahead of
 * need, so that requests rarely park: one fetch in flight per lease, none
 * while the bucket is known empty or the connection is not up. */
static void lease_prefetch(struct redis_client *cl, struct lease_entry *le, uint64_t now)
{
    unsigned k = redis_lease_batch(&le->plan, lease_arrivals(le));
    struct redis_wait *w;

    if (!k || le->batch_inflight || le->lease.held > k / 2 || now < le->dry_until_ns || !cl->ac ||
        cl->state != ST_UP || !(w = wait_new(cl, le->key, NULL, NULL)))
        return;
    wait_fetch(w, le, le->interval, le->tolerance, k, true);
    if (send_decision(cl, w) < 0)
        wait_free(cl, w);
}

enum redis_take_result redis_take(struct redis_client *cl, const char *key, double rate_per_s,
                                  unsigned burst, unsigned timeout_ms, redis_cb cb, void *arg,
                                  struct redis_wait **wait, unsigned *retry_after_s)
{
    struct redis_wait *w;
    struct lease_entry *le = NULL;
    unsigned want = 1;

    if (!cl || !(rate_per_s > 0))
        return REDIS_TAKE_FAILED;
    if (rate_per_s != cl->last_rate || burst != cl->last_burst) {
        redis_lease_plan(rate_per_s, burst, &cl->last_plan);
        if (!cl->last_plan.max_tokens) { /* a leased key keeps its own (lease_find) */
            snprintf(cl->last_interval, sizeof(cl->last_interval), "%.6f",
                     cl->last_plan.interval_us);
            snprintf(cl->last_tolerance, sizeof(cl->last_tolerance), "%.6f",
                     cl->last_plan.tolerance_us);
        }
        cl->last_rate = rate_per_s;
        cl->last_burst = burst;
    }
    if (cl->last_plan.max_tokens) {
        uint64_t now = mono_ns(), age_ns;
        unsigned expired = 0;
        if (!(le = lease_find(cl, key, rate_per_s, burst, now)))
            return REDIS_TAKE_FAILED;
        age_ns = (uint64_t)(le->plan.age_us * 1000.0);
        if (now - le->win_start_ns >= age_ns) {
            le->prev_count = now - le->win_start_ns < 2 * age_ns ? le->win_count : 0;
            le->win_count = 0;
            le->win_start_ns = now;
        }
        le->win_count++;
        le->last_use_ns = now;
        if (redis_lease_spend(&le->lease, now, &expired)) {
            bump(&cl->st->lease_expired, expired);
            bump(&cl->st->lease_decisions, 1);
            lease_prefetch(cl, le, now);
            return REDIS_TAKE_ALLOW;
        }
        bump(&cl->st->lease_expired, expired);
        if (now < le->dry_until_ns) {
            *retry_after_s = redis_retry_after_s((double)(le->dry_until_ns - now) / 1e3);
            bump(&cl->st->lease_decisions, 1);
            return REDIS_TAKE_DENY;
        }
        if (!le->batch_inflight)
            want += redis_lease_batch(&le->plan, lease_arrivals(le));
    }
    if (!accepting(cl) || !(w = wait_new(cl, key, cb, arg)))
        return REDIS_TAKE_FAILED;
    if (le)
        wait_fetch(w, le, le->interval, le->tolerance, want, want > 1);
    else
        wait_fetch(w, NULL, cl->last_interval, cl->last_tolerance, 1, false);
    return wait_start(cl, w, timeout_ms, wait) == 0 ? REDIS_TAKE_PARKED : REDIS_TAKE_FAILED;
}

int redis_link_use(struct redis_client *cl, const char *key, unsigned uses, int64_t expire_at_s,
                   unsigned timeout_ms, redis_cb cb, void *arg, struct redis_wait **wait)
{
    struct redis_wait *w;

    if (!accepting(cl) || uses == 0 || expire_at_s <= 0 || !(w = wait_new(cl, key, cb, arg)))
        return -1;
    w->link = true;
    snprintf(w->interval, sizeof(w->interval), "%u", uses);
    snprintf(w->tolerance, sizeof(w->tolerance), "%lld", (long long)expire_at_s);
    bump(&cl->st->link_uses, 1);
    return wait_start(cl, w, timeout_ms, wait);
}

void redis_count_fallback(struct redis_client *cl, enum cfg_redis_failure how)
{
    if (cl && (unsigned)how < 3)
        bump(&cl->st->fallback[how], 1);
}

void redis_count_link_failure(struct redis_client *cl)
{
    if (cl)
        bump(&cl->st->link_failures, 1);
}

/* ------------------------------------------------------ lifecycle */

struct redis_client *redis_client_new(struct event_base *base, unsigned id)
{
    struct redis_client *cl = xcalloc(1, sizeof(*cl));
    list_init(&cl->waits);
    list_init(&cl->spares);
    cl->base = base;
    cl->id = id;
    cl->st = reg.stats && id < reg.n ? &reg.stats[id] : xcalloc(1, sizeof(*cl->st));
    cl->retry_ev = evtimer_new(base, on_retry, cl);
    cl->stall_ev = evtimer_new(base, on_stall, cl);
    cl->flush_ev = event_new(base, -1, 0, on_flush, cl);
    set_state(cl, ST_DISABLED);
    return cl;
}

static void forget_config(struct redis_client *cl)
{
    free(cl->host);
    free(cl->unix_path);
    if (cl->password) {
        explicit_bzero(cl->password, strlen(cl->password));
        free(cl->password);
    }
    cl->host = cl->unix_path = cl->password = NULL;
}

static bool same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

void redis_configure(struct redis_client *cl, const struct cfg_redis *r)
{
    bool same = r->enabled == cl->enabled && same_str(r->host, cl->host) &&
                same_str(r->unix_path, cl->unix_path) && same_str(r->password, cl->password) &&
                r->port == cl->port && r->db == cl->db;
    if (same)
        return;
    if (cl->ac) {
        cl->enabled = false; /* no reconnect scheduled by the drop */
        drop(cl, "configuration changed", NULL);
    }
    evtimer_del(cl->retry_ev);
    forget_config(cl);
    cl->enabled = r->enabled;
    atomic_store_explicit(&cl->st->configured, r->enabled, memory_order_relaxed);
    if (!r->enabled) {
        set_state(cl, ST_DISABLED);
        return;
    }
    cl->host = r->host ? xstrdup(r->host) : NULL;
    cl->unix_path = r->unix_path ? xstrdup(r->unix_path) : NULL;
    cl->password = r->password ? xstrdup(r->password) : NULL;
    cl->port = r->port;
    cl->db = r->db;
    cl->backoff_ms = 0;
    connect_now(cl);
}

void redis_client_free(struct redis_client *cl)
{
    struct list *n, *tmp;

    if (!cl)
        return;
    list_for_each_safe(n, tmp, &cl->waits)
        redis_cancel(list_entry(n, struct redis_wait, node));
    cl->enabled = false;
    if (cl->ac) {
        redisAsyncContext *ac = cl->ac;
        cl->ac = NULL;
        ac->data = NULL;
        redisAsyncFree(ac);
    }
    event_free(cl->retry_ev);
    event_free(cl->stall_ev);
    event_free(cl->flush_ev);
    forget_config(cl);
    list_for_each_safe(n, tmp, &cl->spares)
        free(list_entry(n, struct redis_wait, node));
    while (cl->leases) { /* after the context: its pending replies pointed here */
        struct lease_entry *le = cl->leases;
        cl->leases = le->next;
        free(le);
    }
    if (!reg.stats || cl->st < reg.stats || cl->st >= reg.stats + reg.n)
        free(cl->st);
    free(cl);
}

/* --------------------------------------------------------- reports */

void redis_status(struct redis_status *st)
{
    memset(st, 0, sizeof(*st));
    st->workers = reg.n;
    for (unsigned i = 0; i < reg.n; i++) {
        if (atomic_load_explicit(&reg.stats[i].configured, memory_order_relaxed))
            st->configured = true;
        if (atomic_load_explicit(&reg.stats[i].state, memory_order_relaxed) == ST_UP)
            st->up++;
    }
    pthread_mutex_lock(&reg.lock);
    snprintf(st->last_error, sizeof(st->last_error), "%s", reg.last_error);
    pthread_mutex_unlock(&reg.lock);
}

#define SUM(field)                                                                  \
    ({                                                                              \
        uint64_t s_ = 0;                                                            \
        for (unsigned i_ = 0; i_ < reg.n; i_++)                                     \
            s_ += atomic_load_explicit(&reg.stats[i_].field, memory_order_relaxed); \
        s_;                                                                         \
    })

void redis_metrics_render(struct evbuffer *out)
{
    static const char *const how[3] = {"local", "deny", "allow"};
    struct redis_status st;
    uint64_t cum = 0;
    char labels[64];

    if (!reg.stats)
        return;
    redis_status(&st);
    metrics_write(out, "baton_redis_connections_up", "gauge",
                  "Worker connections to Redis with the rate script loaded.", NULL, st.up);
    metrics_write(out, "baton_redis_round_trips_total", "counter",
                  "Rate decisions (and lease batches) and signed URL uses answered by Redis.", NULL,
                  (double)SUM(round_trips));
    metrics_write(
        out, "baton_redis_failures_total", "counter",
        "Rate decisions and link uses Redis did not answer (connection lost, error reply).", NULL,
        (double)SUM(failures));
    metrics_write(out, "baton_redis_timeouts_total", "counter",
                  "Rate decisions and link uses that waited timeout_ms without a reply.", NULL,
                  (double)SUM(timeouts));
    metrics_write(out, "baton_redis_connects_total", "counter",
                  "Connection attempts to Redis (the first one included).", NULL,
                  (double)SUM(reconnects));
    metrics_write(out, "baton_redis_script_loads_total", "counter",
                  "Script loads (SCRIPT LOAD per connection and script, EVAL after NOSCRIPT).",
                  NULL, (double)SUM(script_loads));
    metrics_write_header(out, "baton_redis_fallbacks_total", "counter",
                         "Global rate decisions made by on_failure, by what it did.");
    for (int k = 0; k < 3; k++) {
        snprintf(labels, sizeof(labels), "on_failure=\"%s\"", how[k]);
        metrics_write_sample(out, "baton_redis_fallbacks_total", labels, (double)SUM(fallback[k]));
    }
    metrics_write_header(out, "baton_redis_latency_seconds", "histogram",
                         "Round-trip time of decisions answered by Redis.");
    for (size_t b = 0; b <= N_BOUNDS; b++) {
        cum += SUM(lat_bucket[b]);
        if (b < N_BOUNDS)
            snprintf(labels, sizeof(labels), "le=\"%g\"", lat_bounds[b]);
        else
            snprintf(labels, sizeof(labels), "le=\"+Inf\"");
        metrics_write_sample(out, "baton_redis_latency_seconds_bucket", labels, (double)cum);
    }
    metrics_write_sample(out, "baton_redis_latency_seconds_sum", NULL,
                         (double)SUM(lat_sum_ns) / 1e9);
    metrics_write_sample(out, "baton_redis_latency_seconds_count", NULL, (double)cum);
    metrics_write(out, "baton_redis_link_uses_total", "counter",
                  "Signed URL uses sent to Redis to be counted across instances.", NULL,
                  (double)SUM(link_uses));
    metrics_write(out, "baton_redis_link_failures_total", "counter",
                  "Signed URL uses refused with 503 because Redis could not count them.", NULL,
                  (double)SUM(link_failures));
    metrics_write(
        out, "baton_redis_lease_tokens_total", "counter",
        "Tokens of global steps Redis granted to workers' leases, beyond the asking request's.",
        NULL, (double)SUM(lease_tokens));
    metrics_write(out, "baton_redis_lease_decisions_total", "counter",
                  "Global rate decisions made from a worker's lease, without a round trip.", NULL,
                  (double)SUM(lease_decisions));
    metrics_write(out, "baton_redis_lease_expired_tokens_total", "counter",
                  "Leased tokens dropped unspent at the lease age (never admitted by anyone).",
                  NULL, (double)SUM(lease_expired));
}
