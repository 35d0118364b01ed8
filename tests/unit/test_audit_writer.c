/*
 * test_audit_writer.c: a process that writes audit records, and the crash
 * test that kills it.
 *
 * `test_audit_writer write PATH [options]` opens an audit log and submits
 * records from several threads, printing one line per outcome on stdout
 * ("durable ID 1|0" from the writer thread, "refused ID", "dropped ID") and a
 * "stats ..." line at the end. tests/e2e/test_audit.py drives it for the crash,
 * failure (RLIMIT_FSIZE) and rotation tests, and to make logs to tamper with.
 *
 * Without arguments it is a TAP suite: it runs itself in write mode under
 * fsync "always", SIGKILLs it at random points three times, and checks that
 * every record reported durable is on disk, the file verifies (at most a torn
 * last line), and each restart continues the chain so that a final clean run
 * verifies with the signing key.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "audit.h"
#include "audit_witness.h"
#include "util.h"
#include "tap.h"

/* ------------------------------------------------------------ write mode */

struct wopts {
    const char *path, *prefix, *token;
    uint64_t count;
    unsigned threads, sleep_us;
    struct audit_log *log;
    atomic_uint_fast64_t next;
};

/* Set by SIGUSR1 on whichever thread takes it, taken by one submitter thread:
 * a lock-free atomic (async-signal-safe), not a volatile flag several threads
 * read and clear. */
static atomic_int reopen_flag;

static void on_usr1(int sig)
{
    (void)sig;
    atomic_store(&reopen_flag, 1);
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    char line[256];
    va_list ap;
    int n;
    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n > 0)
        (void)!write(STDOUT_FILENO, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

static atomic_uint_fast64_t accepted, answered;

static void on_durable(void *arg, int ok)
{
    say("durable %" PRIuPTR " %d\n", (uintptr_t)arg, ok);
    atomic_fetch_add(&answered, 1);
}

static void *submitter(void *arg)
{
    struct wopts *o = arg;
    char id[64], tok_hash[65], agent[] = "audit-writer/1";
    char auth[600];
    struct audit_header hdrs[3];

    if (o->token)
        sha256_hex(o->token, strlen(o->token), tok_hash);
    snprintf(auth, sizeof(auth), "Bearer %s", o->token ? o->token : "none");
    for (;;) {
        uint64_t i = atomic_fetch_add(&o->next, 1);
        struct audit_reservation rsv;
        struct audit_record r = {0};
        char exec_arn[96];
        if (i >= o->count)
            break;
        if (atomic_exchange(&reopen_flag, 0))
            audit_reopen(o->log);
        snprintf(id, sizeof(id), "%s%" PRIu64, o->prefix, i);
        snprintf(exec_arn, sizeof(exec_arn),
                 "arn:aws:states:eu-west-1:123456789012:execution:m:%" PRIu64, i);
        hdrs[0] = (struct audit_header){"X-Sfn-Execution", exec_arn, strlen(exec_arn)};
        hdrs[1] = (struct audit_header){"Authorization", auth, strlen(auth)};
        hdrs[2] = (struct audit_header){"Cookie", "session=s3cr3t", 14};
        r.ts_ms = now_ms();
        r.request_id = id;
        r.decision = DECISION_ALLOW;
        r.reason = REASON_ALLOWED;
        r.status = 200;
        r.step = "billing-reconcile";
        r.policy_file = "billing.json";
        r.policy_sha256 = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";
        r.worker = 0;
        r.caller.verified = true;
        r.caller.iss = "https://issuer.test";
        r.caller.sub = "arn:aws:iam::123456789012:role/sfn-billing";
        r.caller.audience = "https://gateway.test";
        r.caller.token_sha256 = o->token ? tok_hash : NULL;
        r.request.method = "POST";
        r.request.method_len = 4;
        r.request.path = "/billing/reconcile";
        r.request.path_len = 18;
        r.request.client = "127.0.0.1:40000";
        r.request.user_agent = agent;
        r.request.user_agent_len = sizeof(agent) - 1;
        r.request.bytes_in = 17;
        r.request.headers = hdrs;
        r.request.n_headers = 3;
        r.upstream.name = "billing";
        r.upstream.status = 200;
        r.upstream.latency_ms = 3;
        r.upstream.bytes = 3;
        r.upstream.identity = "billing-step@proj.iam.gserviceaccount.com";
        r.upstream.audience = "https://billing.test";
        r.duration_ms = 4;
        if (audit_reserve(o->log, &rsv) != 0) {
            say("refused %" PRIu64 "\n", i);
        } else if (audit_submit(o->log, &rsv, &r, on_durable, (void *)(uintptr_t)i) != 0) {
            say("dropped %" PRIu64 "\n", i);
        } else {
            atomic_fetch_add(&accepted, 1);
        }
        if (o->sleep_us)
            usleep(o->sleep_us);
    }
    return NULL;
}

static int write_mode(int argc, char **argv)
{
    struct wopts o = {.prefix = "", .count = 1000, .threads = 2};
    struct cfg_audit cfg = {.fsync = FSYNC_ALWAYS,
                            .on_failure = ON_FAILURE_DENY,
                            .batch_ms = 10,
                            .checkpoint_records = 1000,
                            .checkpoint_interval_s = 60,
                            .queue_records = 65536};
    char *hdr_names[] = {"X-Sfn-Execution", NULL};
    char err[512];
    pthread_t th[16];
    struct audit_stats st;

    cfg.record_headers = hdr_names;
    cfg.n_record_headers = 1;
    if (argc < 3)
        return 2;
    o.path = cfg.path = argv[2];
    for (int i = 3; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--fsync"))
            cfg.fsync = !strcmp(v, "always")  ? FSYNC_ALWAYS
                        : !strcmp(v, "batch") ? FSYNC_BATCH
                        : !strcmp(v, "group") ? FSYNC_GROUP
                                              : FSYNC_NONE;
        else if (!strcmp(k, "--on-failure"))
            cfg.on_failure = !strcmp(v, "allow") ? ON_FAILURE_ALLOW : ON_FAILURE_DENY;
        else if (!strcmp(k, "--key"))
            cfg.signing_key = (char *)v;
        else if (!strcmp(k, "--count"))
            o.count = strtoull(v, NULL, 10);
        else if (!strcmp(k, "--threads"))
            o.threads = (unsigned)atoi(v);
        else if (!strcmp(k, "--sleep-us"))
            o.sleep_us = (unsigned)atoi(v);
        else if (!strcmp(k, "--prefix"))
            o.prefix = v;
        else if (!strcmp(k, "--token"))
            o.token = v;
        else if (!strcmp(k, "--rotate-bytes"))
            cfg.rotate_bytes = strtoull(v, NULL, 10);
        else if (!strcmp(k, "--checkpoint-records"))
            cfg.checkpoint_records = (unsigned)atoi(v);
        else if (!strcmp(k, "--checkpoint-interval"))
            cfg.checkpoint_interval_s = (unsigned)atoi(v);
        else if (!strcmp(k, "--queue"))
            cfg.queue_records = (unsigned)atoi(v);
        else if (!strcmp(k, "--record-header"))
            hdr_names[0] = (char *)v;
        else if (!strcmp(k, "--fsize")) {
            struct rlimit rl = {strtoull(v, NULL, 10), strtoull(v, NULL, 10)};
            if (setrlimit(RLIMIT_FSIZE, &rl) != 0) {
                perror("setrlimit");
                return 2;
            }
        } else if (!strcmp(k, "--witness-dir")) {
            cfg.witness_dir = (char *)v;
        } else {
            fprintf(stderr, "unknown option %s\n", k);
            return 2;
        }
    }
    if (o.threads < 1 || o.threads > 16)
        return 2;
    signal(SIGUSR1, on_usr1);
    {
        struct cfg_google g = {0};
        struct audit_open_opts ao = {0};
        ao.witness = audit_witness_new(&cfg, &g, err, sizeof(err));
        if (!ao.witness && err[0]) {
            say("open failed: %s\n", err);
            return 1;
        }
        o.log = audit_open_with(&cfg, &ao, err, sizeof(err));
    }
    if (!o.log) {
        say("open failed: %s\n", err);
        return 1;
    }
    say("open ok\n");
    for (unsigned i = 0; i < o.threads; i++)
        pthread_create(&th[i], NULL, submitter, &o);
    for (unsigned i = 0; i < o.threads; i++)
        pthread_join(th[i], NULL);
    if (atomic_exchange(&reopen_flag, 0))
        audit_reopen(o.log);
    for (int i = 0; i < 3000 && atomic_load(&answered) < atomic_load(&accepted); i++)
        usleep(10000); /* every callback ran: the stats below count every outcome */
    audit_stats(o.log, &st);
    audit_close(o.log);
    say("stats written=%" PRIu64 " lost=%" PRIu64 " refused=%" PRIu64 " failures=%" PRIu64
        " healthy=%d rotations=%" PRIu64 " checkpoints=%" PRIu64 "\n",
        st.written, st.lost, st.refused, st.failures, st.healthy, st.rotations, st.checkpoints);
    return 0;
}

/* ------------------------------------------------------------ crash test */

#define ROUND_COUNT 200000

static char *read_all(const char *path, size_t *len)
{
    char *buf = NULL;
    if (read_file_capped(path, 1u << 30, &buf, len) != 0)
        return NULL;
    return buf;
}

/* Runs the writer, kills it after `kill_ms` (0: let it finish); fills
 * durable[i] for each "durable <i> 1". Returns the number of such lines. */
static size_t run_writer(const char *path, const char *key, const char *prefix, uint64_t count,
                         int kill_ms, unsigned char *durable)
{
    int pfd[2];
    pid_t pid;
    char buf[65536], cnt[32], *acc = NULL;
    size_t alen = 0, n_durable = 0;
    uint64_t t0 = mono_ns();
    bool killed = false, started = false;

    snprintf(cnt, sizeof(cnt), "%" PRIu64, count);
    if (pipe(pfd) != 0)
        return 0;
    pid = fork();
    if (pid == 0) {
        dup2(pfd[1], STDOUT_FILENO);
        close(pfd[0]);
        close(pfd[1]);
        execl("/proc/self/exe", "test_audit_writer", "write", path, "--fsync", "always", "--key",
              key, "--prefix", prefix, "--count", cnt, "--threads", "3", "--sleep-us", "100",
              "--checkpoint-records", "500", (char *)NULL);
        _exit(127);
    }
    close(pfd[1]);
    for (;;) {
        struct pollfd p = {pfd[0], POLLIN, 0};
        int wait = 50;
        if (!started && ((acc && strstr(acc, "durable ")) || mono_ns() - t0 > 30000000000ull)) {
            started = true; /* the kill delay counts from the first acknowledgement */
            t0 = mono_ns();
        }
        if (kill_ms && started && !killed) {
            int64_t left = kill_ms - (int64_t)((mono_ns() - t0) / 1000000);
            if (left <= 0) {
                kill(pid, SIGKILL);
                killed = true;
            }
            wait = left > 0 ? (int)left : 0;
        }
        if (poll(&p, 1, wait) > 0) {
            ssize_t r = read(pfd[0], buf, sizeof(buf));
            if (r <= 0)
                break;
            acc = xrealloc(acc, alen + (size_t)r + 1);
            memcpy(acc + alen, buf, (size_t)r);
            alen += (size_t)r;
            acc[alen] = '\0';
        }
    }
    close(pfd[0]);
    waitpid(pid, NULL, 0);
    if (acc) {
        acc[alen] = '\0';
        for (char *line = acc, *nl; (nl = strchr(line, '\n')); line = nl + 1) {
            unsigned long long i;
            int ok;
            *nl = '\0';
            if (sscanf(line, "durable %llu %d", &i, &ok) == 2 && ok == 1 && i < count) {
                durable[i] = 1;
                n_durable++;
            }
        }
    }
    free(acc);
    return n_durable;
}

static int verify_file(const char *path, const char *pubpem, struct audit_verify_result *out)
{
    char err[128];
    size_t len = 0;
    char *data = read_all(path, &len);
    struct audit_verifier *v = audit_verifier_new(pubpem, pubpem ? strlen(pubpem) : 0, err,
                                                  sizeof(err));
    int rc;
    audit_verifier_begin_file(v, path);
    audit_verifier_feed(v, data ? data : "", len);
    audit_verifier_end_file(v);
    rc = audit_verifier_finish(v);
    *out = *audit_verifier_result(v);
    audit_verifier_free(v);
    free(data);
    return rc;
}

static int crash_suite(void)
{
    char dir[] = "/tmp/baton_audit_crash.XXXXXX", path[256], keyp[256];
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    char *pub = NULL;
    BIO *b = BIO_new(BIO_s_mem());
    BUF_MEM *mem;
    FILE *f;
    unsigned char *durable = xcalloc(ROUND_COUNT, 1);
    unsigned seed = (unsigned)(mono_ns() & 0xffffffff);

    if (!mkdtemp(dir)) {
        ok(0, "mkdtemp");
        return tap_done();
    }
    snprintf(path, sizeof(path), "%s/audit.jsonl", dir);
    snprintf(keyp, sizeof(keyp), "%s/key.pem", dir);
    f = fopen(keyp, "w");
    PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    chmod(keyp, 0600); /* as baton audit keygen writes it */
    PEM_write_bio_PUBKEY(b, key);
    BIO_get_mem_ptr(b, &mem);
    pub = xstrndup(mem->data, mem->length);
    tap_diag("seed %u, dir %s", seed, dir);
    srand(seed);

    for (int round = 0; round < 3; round++) {
        char prefix[16];
        int kill_ms = 20 + rand() % 300;
        size_t n, len = 0, missing = 0, present = 0;
        char *data;
        struct audit_verify_result res;
        int vr;

        snprintf(prefix, sizeof(prefix), "c%d-", round);
        memset(durable, 0, ROUND_COUNT);
        n = run_writer(path, keyp, prefix, ROUND_COUNT, kill_ms, durable);
        ok(n > 0,
           "round %d: the writer reported %zu durable records before SIGKILL %d ms after the first",
           round, n, kill_ms);
        data = read_all(path, &len);
        /* every durable id must be on disk: look each line's request_id up */
        {
            unsigned char *seen = xcalloc(ROUND_COUNT, 1);
            for (char *line = data, *nl;
                 line && (nl = memchr(line, '\n', len - (size_t)(line - data))); line = nl + 1) {
                json_t *j = json_loadb(line, (size_t)(nl - line), 0, NULL);
                const char *rid = json_string_value(json_object_get(j, "request_id"));
                if (rid && !strncmp(rid, prefix, strlen(prefix))) {
                    unsigned long long i = strtoull(rid + strlen(prefix), NULL, 10);
                    if (i < ROUND_COUNT)
                        seen[i] = 1;
                }
                json_decref(j);
            }
            for (size_t i = 0; i < ROUND_COUNT; i++) {
                missing += durable[i] && !seen[i];
                present += seen[i];
            }
            free(seen);
        }
        is_int(missing, 0, "round %d: every record reported durable is in the file (%zu present)",
               round, present);
        vr = verify_file(path, NULL, &res);
        ok(vr == 0 || res.kind == AUDIT_BREAK_TORN,
           "round %d: the killed log verifies, or only its last line is torn (%s: %s)", round,
           audit_break_name(res.kind), res.message);
        free(data);
    }
    /* a last clean run continues the chain and seals it with a checkpoint */
    {
        struct audit_verify_result res;
        size_t n;
        memset(durable, 0, ROUND_COUNT);
        n = run_writer(path, keyp, "final-", 300, 0, durable);
        is_int(n, 300, "a clean restart writes all of its 300 records durably");
        is_int(verify_file(path, pub, &res), 0,
               "after three crashes and restarts the whole file verifies with the key (%s: %s)",
               audit_break_name(res.kind), res.message);
        ok(res.opens == 4 && res.chains == 1 && res.from_genesis,
           "one chain from genesis through four open records (opens %" PRIu64 ", chains %" PRIu64
           ")",
           res.opens, res.chains);
    }
    {
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        (void)!system(cmd);
    }
    free(durable);
    free(pub);
    BIO_free(b);
    EVP_PKEY_free(key);
    return tap_done();
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "write"))
        return write_mode(argc, argv);
    return crash_suite();
}
