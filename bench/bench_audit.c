/*
 * bench_audit.c: the audit log's cost, per fsync mode (always, batch, none):
 *   - saturation: T threads reserve and submit records as fast as the queue
 *     takes them; records per second from the first submit to the last
 *     durable callback, and the request-path cost of reserve+submit (record
 *     formatting and enqueue, what a request pays) as p50/p99;
 *   - paced: records at a fixed rate (default 2000/s for 1 s), the added
 *     latency from submit to the durable callback (what a request waits for
 *     under fsync "always" before its response) as p50/p99/max;
 * then the verifier's throughput in MB/s over the largest log written, with
 * and without the public key. Signed checkpoints every 1000 records are on.
 *
 * Usage: bench_audit DIR [records] [threads] [paced_per_s] [mode]. DIR should
 * be on the disk the log would use (fsync cost is the disk's). With `mode`
 * (always, batch or none) only that mode's saturated phase runs, without the
 * paced phase and the verifier: what bench/audit.sh runs under callgrind, twice
 * with different record counts, for instructions per record. Built only by
 * `make bench/bench_audit`; bench/audit.sh runs it. Use a build without ASan.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "audit.h"
#include "util.h"

#define MAX_SECONDS 10 /* per mode and phase */

struct run {
    struct audit_log *log;
    uint64_t n;
    atomic_uint_fast64_t next, done, submitted;
    atomic_bool stop;     /* out of time */
    uint64_t *submit_ns;  /* per record: when submitted */
    uint64_t *durable_ns; /* per record: submit to callback */
    uint64_t *path_ns;    /* per record: reserve+submit time */
    uint64_t pace_ns;     /* 0: as fast as possible */
    uint64_t t0;
};

/* The callback's arg is the record's slot in submit_ns; the run is global. */
static struct run *cur;

static void durable_cb(void *arg, int ok)
{
    uint64_t *slot = arg;
    size_t i = (size_t)(slot - cur->submit_ns);
    cur->durable_ns[i] = ok ? mono_ns() - *slot : UINT64_MAX;
    atomic_fetch_add(&cur->done, 1);
}

static void fill(struct audit_record *r, char *id, uint64_t i, struct audit_header *h)
{
    static const char agent[] = "aws-sdk-stepfunctions/2.0";
    static const char arn[] = "arn:aws:states:eu-west-1:123456789012:execution:billing:6f1c2d3e";
    snprintf(id, 40, "req-%016" PRIx64, i);
    memset(r, 0, sizeof(*r));
    r->ts_ms = now_ms();
    r->request_id = id;
    r->decision = DECISION_ALLOW;
    r->reason = REASON_ALLOWED;
    r->status = 200;
    r->step = "billing-reconcile";
    r->policy_file = "billing-reconcile.json";
    r->policy_sha256 = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";
    r->worker = (int)(i % 4);
    r->caller.verified = true;
    r->caller.iss = "https://a1b2c3d4-0000-1111-2222-333344445555.tokens.sts.global.api.aws";
    r->caller.sub = "arn:aws:iam::123456789012:role/sfn-billing";
    r->caller.audience = "https://gateway.example.com";
    r->caller.jti = "b3c1f0e2-6a7d-4c39-9d0e-2f4b8a1c7e55";
    r->caller.aws_account = "123456789012";
    r->caller.token_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    r->request.method = "POST";
    r->request.method_len = 4;
    r->request.path = "/billing/reconcile";
    r->request.path_len = 18;
    r->request.client = "10.0.3.17:53122";
    r->request.user_agent = agent;
    r->request.user_agent_len = sizeof(agent) - 1;
    r->request.bytes_in = 512;
    h[0] = (struct audit_header){"X-Sfn-Execution", arn, sizeof(arn) - 1};
    r->request.headers = h;
    r->request.n_headers = 1;
    r->upstream.name = "billing";
    r->upstream.status = 200;
    r->upstream.latency_ms = 12;
    r->upstream.bytes = 2048;
    r->upstream.identity = "billing-step@proj.iam.gserviceaccount.com";
    r->upstream.audience = "https://billing-abc-uc.a.run.app";
    r->bytes_out = 2048;
    r->duration_ms = 14;
}

static void *producer(void *arg)
{
    struct run *r = arg;
    struct audit_header h[1];
    struct audit_record rec;
    char id[40];

    for (;;) {
        uint64_t i = atomic_fetch_add(&r->next, 1), t;
        struct audit_reservation rsv;
        if (i >= r->n || atomic_load(&r->stop))
            break;
        if (r->pace_ns) {
            uint64_t due = r->t0 + i * r->pace_ns;
            while ((t = mono_ns()) < due)
                usleep((useconds_t)((due - t) / 1000 > 1000 ? 1000 : (due - t) / 1000 + 1));
        }
        if (mono_ns() - r->t0 > MAX_SECONDS * 1000000000ull) {
            atomic_store(&r->stop, true);
            break;
        }
        fill(&rec, id, i, h);
        t = mono_ns();
        while (audit_reserve(r->log, &rsv) != 0) /* deny: queue full, wait for room */
            sched_yield();
        r->submit_ns[i] = mono_ns();
        audit_submit(r->log, &rsv, &rec, durable_cb, &r->submit_ns[i]);
        r->path_ns[i] = mono_ns() - t;
        atomic_fetch_add(&r->submitted, 1);
    }
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t pct(uint64_t *v, size_t n, double p)
{
    size_t i = (size_t)(p * (double)(n - 1));
    return n ? v[i] : 0;
}

/* One phase; returns records per second. */
static double phase(const char *path, const char *key, enum cfg_fsync mode, uint64_t n,
                    unsigned threads, uint64_t pace_ns, struct audit_stats *st)
{
    struct cfg_audit cfg = {0};
    struct run r = {0};
    pthread_t th[64];
    char err[256];
    uint64_t t_end;
    double rate;

    cfg.path = (char *)path;
    cfg.fsync = mode;
    cfg.on_failure = ON_FAILURE_DENY;
    cfg.signing_key = (char *)key;
    cfg.batch_ms = 10;
    cfg.checkpoint_records = 1000;
    cfg.checkpoint_interval_s = 60;
    cfg.queue_records = 65536;
    r.log = audit_open(&cfg, err, sizeof(err));
    if (!r.log) {
        fprintf(stderr, "bench_audit: %s\n", err);
        exit(1);
    }
    r.n = n;
    r.submit_ns = xcalloc(n, sizeof(uint64_t));
    r.durable_ns = xcalloc(n, sizeof(uint64_t));
    r.path_ns = xcalloc(n, sizeof(uint64_t));
    r.pace_ns = pace_ns;
    cur = &r;
    r.t0 = mono_ns();
    for (unsigned i = 0; i < threads; i++)
        pthread_create(&th[i], NULL, producer, &r);
    for (unsigned i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    r.n = atomic_load(&r.submitted); /* fewer when out of time; slots past it stay 0 */
    while (atomic_load(&r.done) < r.n && mono_ns() - r.t0 < (MAX_SECONDS + 20) * 1000000000ull)
        usleep(200);
    t_end = mono_ns();
    audit_stats(r.log, st);
    audit_close(r.log);
    rate = (double)r.n / ((double)(t_end - r.t0) / 1e9);
    qsort(r.path_ns, r.n, sizeof(uint64_t), cmp_u64);
    qsort(r.durable_ns, r.n, sizeof(uint64_t), cmp_u64);
    if (!pace_ns)
        printf("  saturated: %8" PRIu64 " records in %.2f s = %9.0f records/s; "
               "reserve+submit p50 %5.2f us p99 %6.2f us; fsyncs %" PRIu64 "\n",
               r.n, (double)(t_end - r.t0) / 1e9, rate, (double)pct(r.path_ns, r.n, 0.5) / 1e3,
               (double)pct(r.path_ns, r.n, 0.99) / 1e3, st->fsyncs);
    else
        printf("  paced %5.0f/s: submit to durable p50 %8.1f us p99 %8.1f us max %8.1f us; "
               "reserve+submit p50 %5.2f us\n",
               1e9 / (double)pace_ns, (double)pct(r.durable_ns, r.n, 0.5) / 1e3,
               (double)pct(r.durable_ns, r.n, 0.99) / 1e3, (double)r.durable_ns[r.n - 1] / 1e3,
               (double)pct(r.path_ns, r.n, 0.5) / 1e3);
    free(r.submit_ns);
    free(r.durable_ns);
    free(r.path_ns);
    return rate;
}

static double verify_mbs(const char *path, const char *pub, uint64_t *bytes)
{
    char err[128], *buf = xmalloc(1u << 20);
    struct audit_verifier *v = audit_verifier_new(pub, pub ? strlen(pub) : 0, err, sizeof(err));
    int fd = open(path, O_RDONLY);
    uint64_t t0 = mono_ns(), n = 0;
    ssize_t r;
    double s;

    audit_verifier_begin_file(v, path);
    while ((r = read(fd, buf, 1u << 20)) > 0) {
        n += (uint64_t)r;
        audit_verifier_feed(v, buf, (size_t)r);
    }
    audit_verifier_end_file(v);
    audit_verifier_finish(v);
    s = (double)(mono_ns() - t0) / 1e9;
    if (audit_verifier_result(v)->kind != AUDIT_OK)
        fprintf(stderr, "bench_audit: verify failed: %s\n", audit_verifier_result(v)->message);
    close(fd);
    audit_verifier_free(v);
    free(buf);
    *bytes = n;
    return (double)n / 1e6 / s;
}

int main(int argc, char **argv)
{
    static const enum cfg_fsync modes[] = {FSYNC_ALWAYS, FSYNC_BATCH, FSYNC_NONE};
    static const char *names[] = {"always", "batch", "none"};
    const char *dir = argc > 1 ? argv[1] : NULL;
    uint64_t n = argc > 2 ? strtoull(argv[2], NULL, 10) : 100000;
    unsigned threads = argc > 3 ? (unsigned)atoi(argv[3]) : 4;
    double paced = argc > 4 ? atof(argv[4]) : 2000;
    const char *only = argc > 5 ? argv[5] : NULL;
    char key[4096], path[4096], *pub;
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    BIO *b = BIO_new(BIO_s_mem());
    BUF_MEM *mem;
    FILE *f;
    struct audit_stats st;
    uint64_t bytes;

    if (!dir || !n || threads < 1 || threads > 64 || paced <= 0) {
        fprintf(stderr, "usage: bench_audit DIR [records] [threads] [paced_per_s] [mode]\n");
        return 2;
    }
    if (only && strcmp(only, "always") && strcmp(only, "batch") && strcmp(only, "none")) {
        fprintf(stderr, "bench_audit: mode is always, batch or none\n");
        return 2;
    }
    snprintf(key, sizeof(key), "%s/bench-key.pem", dir);
    f = fopen(key, "w");
    if (!f || !PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL)) {
        perror(key);
        return 1;
    }
    fclose(f);
    chmod(key, 0600); /* as baton audit keygen writes it */
    PEM_write_bio_PUBKEY(b, k);
    BIO_get_mem_ptr(b, &mem);
    pub = xstrndup(mem->data, mem->length);
    printf("bench_audit: %" PRIu64 " records, %u threads, dir %s\n", n, threads, dir);
    for (int m = 0; m < 3; m++) {
        if (only && strcmp(only, names[m]))
            continue;
        printf("fsync %s\n", names[m]);
        snprintf(path, sizeof(path), "%s/bench-%s.jsonl", dir, names[m]);
        unlink(path);
        phase(path, key, modes[m], n, threads, 0, &st);
        if (only)
            goto out; /* the callgrind run: one phase, nothing else */
        snprintf(path, sizeof(path), "%s/bench-%s-paced.jsonl", dir, names[m]);
        unlink(path);
        phase(path, key, modes[m], (uint64_t)paced, 1, (uint64_t)(1e9 / paced), &st);
    }
    snprintf(path, sizeof(path), "%s/bench-none.jsonl", dir);
    printf("verify %s\n", path);
    printf("  without key: %7.1f MB/s\n", verify_mbs(path, NULL, &bytes));
    printf("  with key:    %7.1f MB/s (%" PRIu64 " bytes, %.0f bytes/record)\n",
           verify_mbs(path, pub, &bytes), bytes, (double)bytes / (double)n);
out:
    unlink(key);
    free(pub);
    BIO_free(b);
    EVP_PKEY_free(k);
    return 0;
}
