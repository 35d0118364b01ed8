/*
 * Unit tests of audit.c and audit_verify.c: record building and escaping (no
 * credential ever recorded), the writer (modes, checkpoints, restart, torn
 * tail, rotation by size and by reopen, queue limits, write failures through
 * RLIMIT_FSIZE and recovery, stdout), and the verifier against every kind of
 * tamper: each member of each record edited, deletions, swaps, a forged record
 * with a recomputed chain, truncation, torn lines, checkpoints forged with
 * another key, and splices across files.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "audit.h"
#include "util.h"
#include "tap.h"

static char dir[] = "/tmp/baton_test_audit.XXXXXX";
static char keyp[512], otherkeyp[512];
static char *pub_pem, *other_pub_pem;
static EVP_PKEY *other_key;

/* ------------------------------------------------------------- helpers */

static char *tmp_path(const char *name)
{
    return xasprintf("%s/%s", dir, name);
}

static char *write_key(const char *path, EVP_PKEY **keep)
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    FILE *f = fopen(path, "w");
    BIO *b = BIO_new(BIO_s_mem());
    BUF_MEM *mem;
    char *pub;

    PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    chmod(path, 0600); /* as baton audit keygen writes it: a readable key is refused */
    PEM_write_bio_PUBKEY(b, key);
    BIO_get_mem_ptr(b, &mem);
    pub = xstrndup(mem->data, mem->length);
    BIO_free(b);
    if (keep)
        *keep = key;
    else
        EVP_PKEY_free(key);
    return pub;
}

static struct cfg_audit base_cfg(const char *path)
{
    static char *hdrs[] = {"X-Sfn-Execution", "X-Amzn-Trace-Id"};
    struct cfg_audit c = {0};
    c.path = (char *)path;
    c.fsync = FSYNC_BATCH;
    c.on_failure = ON_FAILURE_DENY;
    c.record_headers = hdrs;
    c.n_record_headers = 2;
    c.batch_ms = 5;
    c.checkpoint_records = 1000;
    c.checkpoint_interval_s = 60;
    c.queue_records = 4096;
    return c;
}

struct counter {
    atomic_int ok, lost;
};

static void count_cb(void *arg, int ok)
{
    struct counter *c = arg;
    if (ok)
        atomic_fetch_add(&c->ok, 1);
    else
        atomic_fetch_add(&c->lost, 1);
}

static void fill_record(struct audit_record *r, const char *id)
{
    static struct audit_header h[2] = {
        {"X-Sfn-Execution", "arn:aws:states:eu-west-1:1:execution:m:e", 40},
        {"Authorization", "Bearer SECRET-TOKEN-VALUE", 25},
    };
    memset(r, 0, sizeof(*r));
    r->ts_ms = 1767225600123; /* 2026-01-01T00:00:00.123Z */
    r->request_id = id;
    r->decision = DECISION_ALLOW;
    r->reason = REASON_ALLOWED;
    r->status = 200;
    r->step = "billing";
    r->policy_file = "billing.json";
    r->policy_sha256 = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";
    r->caller.verified = true;
    r->caller.iss = "https://issuer.test";
    r->caller.sub = "role/sfn";
    r->caller.token_sha256 = "ab";
    r->request.method = "POST";
    r->request.method_len = 4;
    r->request.path = "/billing/run";
    r->request.path_len = 12;
    r->request.client = "127.0.0.1:1";
    r->request.headers = h;
    r->request.n_headers = 2;
    r->upstream.name = "billing";
    r->upstream.status = 200;
    r->upstream.latency_ms = 1;
    r->duration_ms = 2;
}

static int submit_n(struct audit_log *log, int n, const char *prefix, struct counter *c)
{
    int fails = 0;
    for (int i = 0; i < n; i++) {
        struct audit_record r;
        struct audit_reservation rsv;
        char id[64];
        snprintf(id, sizeof(id), "%s%d", prefix, i);
        fill_record(&r, id);
        if (audit_reserve(log, &rsv) != 0 || audit_submit(log, &rsv, &r, count_cb, c) != 0)
            fails++;
    }
    return fails;
}

/* Writes a log of n request records; returns 0. */
static int make_log(const char *path, int n, bool signed_, unsigned ckpt_records)
{
    struct cfg_audit c = base_cfg(path);
    struct counter cnt = {0};
    char err[256];
    struct audit_log *log;

    c.signing_key = signed_ ? keyp : NULL;
    c.checkpoint_records = ckpt_records;
    log = audit_open(&c, err, sizeof(err));
    if (!log) {
        tap_diag("audit_open: %s", err);
        return -1;
    }
    submit_n(log, n, "req-", &cnt);
    audit_close(log);
    return atomic_load(&cnt.ok) == n ? 0 : -1;
}

struct lines {
    char **v;
    size_t n;
};

static struct lines load_lines(const char *path)
{
    struct lines l = {0};
    char *data = NULL, *p, *nl;
    size_t len;
    if (read_file_capped(path, 64u << 20, &data, &len) != 0)
        return l;
    for (p = data; (nl = memchr(p, '\n', len - (size_t)(p - data))); p = nl + 1) {
        l.v = xrealloc(l.v, (l.n + 1) * sizeof(char *));
        l.v[l.n++] = xstrndup(p, (size_t)(nl - p));
    }
    free(data);
    return l;
}

static void free_lines(struct lines *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

/* Verifies files given as line arrays (one "file" per entry). */
static int verify_sets(struct lines *files, size_t nfiles, const char *pub,
                       struct audit_verify_result *res)
{
    char err[128];
    struct audit_verifier *v = audit_verifier_new(pub, pub ? strlen(pub) : 0, err, sizeof(err));
    int rc;
    for (size_t f = 0; f < nfiles; f++) {
        char name[32];
        snprintf(name, sizeof(name), "file%zu", f + 1);
        audit_verifier_begin_file(v, name);
        for (size_t i = 0; i < files[f].n; i++) {
            if (!files[f].v[i])
                continue; /* deleted */
            audit_verifier_feed(v, files[f].v[i], strlen(files[f].v[i]));
            audit_verifier_feed(v, "\n", 1);
        }
        audit_verifier_end_file(v);
    }
    rc = audit_verifier_finish(v);
    *res = *audit_verifier_result(v);
    audit_verifier_free(v);
    return rc;
}

static int verify_lines(struct lines *l, const char *pub, struct audit_verify_result *res)
{
    return verify_sets(l, 1, pub, res);
}

static int verify_paths(const char *const *paths, size_t n, const char *pub,
                        struct audit_verify_result *res)
{
    struct lines *f = xcalloc(n, sizeof(*f));
    int rc;
    for (size_t i = 0; i < n; i++)
        f[i] = load_lines(paths[i]);
    rc = verify_sets(f, n, pub, res);
    for (size_t i = 0; i < n; i++)
        free_lines(&f[i]);
    free(f);
    return rc;
}

/* Verifies one file's raw bytes, a torn last line included. */
static int verify_raw(const char *path, const char *pub, struct audit_verify_result *res)
{
    char *data = NULL, err[64];
    size_t len = 0;
    struct audit_verifier *v = audit_verifier_new(pub, pub ? strlen(pub) : 0, err, sizeof(err));
    int rc;
    read_file_capped(path, 64u << 20, &data, &len);
    audit_verifier_begin_file(v, path);
    audit_verifier_feed(v, data ? data : "", len);
    audit_verifier_end_file(v);
    rc = audit_verifier_finish(v);
    *res = *audit_verifier_result(v);
    audit_verifier_free(v);
    free(data);
    return rc;
}

static json_t *parse(const char *line)
{
    return json_loads(line, JSON_REJECT_DUPLICATES, NULL);
}

static char *dump(json_t *j)
{
    return json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
}

static const char *kind_of(const char *line)
{
    static char k[32];
    json_t *j = parse(line);
    snprintf(k, sizeof(k), "%s", json_string_value(json_object_get(j, "kind")) ?: "");
    json_decref(j);
    return k;
}

/* Rewrites seq and prev of lines[from..] so the chain is consistent again
 * (what a forger without the signing key can do). */
static void rechain(struct lines *l, size_t from)
{
    for (size_t i = from; i < l->n; i++) {
        json_t *j = parse(l->v[i]);
        char h[65];
        if (i > 0) {
            sha256_hex(l->v[i - 1], strlen(l->v[i - 1]), h);
            json_object_set_new(j, "prev", json_string(h));
            json_object_set_new(j, "seq", json_integer((json_int_t)i));
        }
        free(l->v[i]);
        l->v[i] = dump(j);
        json_decref(j);
    }
}

static struct lines copy_lines(const struct lines *l)
{
    struct lines c = {xcalloc(l->n + 2, sizeof(char *)), l->n};
    for (size_t i = 0; i < l->n; i++)
        c.v[i] = xstrdup(l->v[i]);
    return c;
}

/* ------------------------------------------------------- record building */

static void test_secret_names(void)
{
    static const char *secret[] = {"Authorization",
                                   "proxy-authorization",
                                   "Cookie",
                                   "Set-Cookie",
                                   "X-Api-Key",
                                   "X-Amz-Security-Token",
                                   "X-Serverless-Authorization",
                                   "X-Goog-Iap-Jwt-Assertion",
                                   "X-Amzn-Oidc-Data",
                                   "X-Session-Id"};
    static const char *fine[] = {"X-Sfn-Execution", "X-Sfn-State", "X-Amzn-Trace-Id", "User-Agent",
                                 "traceparent"};
    for (size_t i = 0; i < sizeof(secret) / sizeof(*secret); i++)
        ok(config_header_is_secret(secret[i], strlen(secret[i])), "%s is a secret-bearing header",
           secret[i]);
    for (size_t i = 0; i < sizeof(fine) / sizeof(*fine); i++)
        ok(!config_header_is_secret(fine[i], strlen(fine[i])), "%s may be recorded", fine[i]);
}

static void test_record_body(void)
{
    char *allowed[] = {"X-Sfn-Execution", "Authorization"}; /* Authorization forced in */
    struct audit_record r;
    struct audit_header h[4] = {
        {"x-sfn-execution", "arn:aws:states:1", 16},
        {"Authorization", "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", 46},
        {"Cookie", "sid=COOKIE-SECRET", 17},
        {"X-Not-Configured", "nope", 4},
    };
    size_t len;
    char *body, *line;
    json_t *j, *req;

    fill_record(&r, "rid-1");
    r.request.headers = h;
    r.request.n_headers = 4;
    r.request.user_agent = "curl/8.0";
    r.request.user_agent_len = 8;
    r.caller.token_sha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    r.caller.jti = "jti-1";
    r.caller.aws_account = "123456789012";
    r.upstream.identity = "sa@proj.iam.gserviceaccount.com";
    r.upstream.audience = "https://billing.test";
    r.request.bytes_in = 42;
    r.bytes_out = 7;
    r.worker = 3;
    r.dry_run = true;
    r.decision = DECISION_WOULD_DENY;
    r.reason = REASON_NO_RULE_MATCH;
    body = audit_record_body(&r, allowed, 2, &len);
    is_int(len, strlen(body), "audit_record_body returns its length");
    line = xasprintf("{%s}", body);
    j = parse(line);
    ok(j != NULL, "the body is valid JSON");
    is_str(json_string_value(json_object_get(j, "kind")), "request", "kind is request");
    is_str(json_string_value(json_object_get(j, "ts")), "2026-01-01T00:00:00.123Z",
           "ts is UTC with milliseconds");
    {
        /* the per-thread cache of the seconds part: other seconds, same second, clamps */
        static const struct {
            int64_t ms;
            const char *want;
        } tss[] = {
            {1767225600005, "2026-01-01T00:00:00.005Z"},
            {1767225659999, "2026-01-01T00:00:59.999Z"},
            {1767225600123, "2026-01-01T00:00:00.123Z"},
            {951782400000, "2000-02-29T00:00:00.000Z"},
            {951782400001, "2000-02-29T00:00:00.001Z"},
            {INT64_C(253402300800000), "9999-12-31T23:59:59.999Z"},
        };
        struct audit_record t = r;
        for (size_t i = 0; i < sizeof(tss) / sizeof(tss[0]); i++) {
            size_t tl;
            char *tb, *tline;
            json_t *tj;
            t.ts_ms = tss[i].ms;
            tb = audit_record_body(&t, allowed, 2, &tl);
            tline = xasprintf("{%s}", tb);
            tj = parse(tline);
            is_str(json_string_value(json_object_get(tj, "ts")), tss[i].want, "ts of %lld ms",
                   (long long)tss[i].ms);
            json_decref(tj);
            free(tline);
            free(tb);
        }
    }
    is_str(json_string_value(json_object_get(j, "decision")), "would_deny", "decision name");
    is_str(json_string_value(json_object_get(j, "reason")), "no_rule_match",
           "reason is the stable code");
    is_int(json_integer_value(json_object_get(j, "status")), 200, "status");
    ok(json_is_true(json_object_get(j, "dry_run")), "dry_run true");
    is_str(json_string_value(json_object_get(json_object_get(j, "policy"), "file")), "billing.json",
           "policy.file");
    is_str(json_string_value(json_object_get(json_object_get(j, "caller"), "aws_account")),
           "123456789012", "caller.aws_account");
    is_str(json_string_value(json_object_get(json_object_get(j, "caller"), "token_sha256")),
           "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
           "caller.token_sha256 is the fingerprint");
    req = json_object_get(j, "request");
    is_str(json_string_value(json_object_get(req, "path")), "/billing/run", "request.path");
    is_int(json_integer_value(json_object_get(req, "bytes_in")), 42, "request.bytes_in");
    is_int(json_array_size(json_object_get(req, "headers")), 1,
           "only the configured, non-secret header is recorded");
    is_str(json_string_value(json_array_get(json_array_get(json_object_get(req, "headers"), 0), 0)),
           "X-Sfn-Execution", "the header is named with its configured spelling");
    is_str(json_string_value(json_array_get(json_array_get(json_object_get(req, "headers"), 0), 1)),
           "arn:aws:states:1", "the header value is recorded");
    ok(!strstr(line, "eyJhbGci") && !strstr(line, "Bearer") && !strstr(line, "COOKIE-SECRET") &&
           !strstr(line, "Authorization") && !strstr(line, "nope"),
       "no Authorization, token, cookie or unconfigured header in the record");
    is_str(json_string_value(json_object_get(json_object_get(j, "upstream"), "identity")),
           "sa@proj.iam.gserviceaccount.com", "upstream.identity");
    is_int(json_integer_value(json_object_get(j, "worker")), 3, "worker");
    ok(!json_object_get(j, "truncated"), "nothing cut, no truncated flag");
    json_decref(j);
    free(line);
    free(body);

    /* absent values are null, absent groups are null */
    memset(&r, 0, sizeof(r));
    r.worker = -1;
    r.duration_ms = -1;
    r.upstream.latency_ms = -1;
    body = audit_record_body(&r, NULL, 0, &len);
    line = xasprintf("{%s}", body);
    j = parse(line);
    ok(j && json_is_null(json_object_get(j, "step")) &&
           json_is_null(json_object_get(j, "policy")) &&
           json_is_null(json_object_get(j, "caller")) &&
           json_is_null(json_object_get(j, "upstream")) &&
           json_is_null(json_object_get(j, "status")) &&
           json_is_null(json_object_get(j, "duration_ms")) &&
           json_is_null(json_object_get(j, "worker")) &&
           json_is_null(json_object_get(j, "request_id")),
       "an empty record has null for every unknown member and group");
    ok(j && json_is_null(json_object_get(json_object_get(j, "request"), "path")),
       "a NULL path is null");
    json_decref(j);
    free(line);
    free(body);
}

static void test_escaping(void)
{
    char *allowed[] = {"X-Sfn-Execution"};
    const char path[] = "/a\"b\\c\nd\x01\x7f\xff/e";
    char big[3000];
    struct audit_header h[1];
    struct audit_record r;
    size_t len;
    char *body, *line;
    json_t *j;
    bool ascii = true;

    memset(&r, 0, sizeof(r));
    r.request.path = path;
    r.request.path_len = sizeof(path) - 1;
    memset(big, 'v', sizeof(big));
    h[0] = (struct audit_header){"X-Sfn-Execution", big, sizeof(big)};
    r.request.headers = h;
    r.request.n_headers = 1;
    r.request.query =
        "a=1&access_token=QSECRET&X-Amz-Signature=abc&next=eyJhbGciOiJIUzI1NiJ9.e30.x&b=2";
    r.request.query_len = strlen(r.request.query);
    r.request.user_agent = "Bearer UASECRET";
    r.request.user_agent_len = 15;
    body = audit_record_body(&r, allowed, 1, &len);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)body[i] < 0x20 || (unsigned char)body[i] > 0x7e)
            ascii = false;
    ok(ascii, "control, DEL and non-ASCII bytes are escaped: the body is printable ASCII");
    ok(strstr(body, "/a\\\"b\\\\c\\u000ad\\u0001\\u007f\\u00ff/e") != NULL,
       "quotes, backslashes and bytes are escaped as \\\" \\\\ \\u00XX");
    line = xasprintf("{%s}", body);
    j = parse(line);
    ok(j != NULL, "the escaped record parses");
    {
        const char *v = json_string_value(json_array_get(
            json_array_get(json_object_get(json_object_get(j, "request"), "headers"), 0), 1));
        is_int(v ? strlen(v) : 0, AUDIT_HEADER_VALUE_MAX,
               "a long header value is cut at AUDIT_HEADER_VALUE_MAX");
    }
    ok(json_is_true(json_object_get(j, "truncated")), "a cut value sets truncated: true");
    is_str(json_string_value(json_object_get(json_object_get(j, "request"), "query")),
           "a=1&access_token=[redacted]&X-Amz-Signature=[redacted]&next=[redacted]&b=2",
           "secret query parameters are redacted, the others kept");
    is_str(json_string_value(json_object_get(json_object_get(j, "request"), "user_agent")),
           "[redacted]", "a credential-shaped user agent is redacted");
    ok(!strstr(line, "QSECRET") && !strstr(line, "UASECRET"), "no secret value remains");
    json_decref(j);
    free(line);
    free(body);
    /* percent-encoded spellings are judged as the upstream framework decodes them */
    r.request.query =
        "api%5Fkey=K1SECRET&%74oken=K2SECRET&h=Bearer%20K3SECRET&g=Basic+K4SECRET&ok=%41";
    r.request.query_len = strlen(r.request.query);
    body = audit_record_body(&r, allowed, 1, &len);
    line = xasprintf("{%s}", body);
    j = parse(line);
    is_str(json_string_value(json_object_get(json_object_get(j, "request"), "query")),
           "api%5Fkey=[redacted]&%74oken=[redacted]&h=[redacted]&g=[redacted]&ok=%41",
           "encoded secret names and encoded credential values are redacted too");
    ok(!strstr(line, "SECRET"), "no encoded secret value remains");
    json_decref(j);
    free(line);
    free(body);
}

static void test_record_at_caps(void)
{
    /* every string at 100 KB of bytes that escape to 6: the worst case */
    size_t n = 100000;
    char *s = xmalloc(n + 1);
    char *names[AUDIT_MAX_RECORD_HEADERS];
    struct audit_header h[AUDIT_MAX_RECORD_HEADERS + 5];
    struct audit_record r;
    size_t len;
    char *body, *line;
    json_t *j;

    memset(s, 1, n);
    s[n] = '\0';
    for (int i = 0; i < AUDIT_MAX_RECORD_HEADERS; i++)
        names[i] = xasprintf("X-H%02d-%s", i,
                             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    for (int i = 0; i < AUDIT_MAX_RECORD_HEADERS + 5; i++)
        h[i] = (struct audit_header){names[i % AUDIT_MAX_RECORD_HEADERS], s, n};
    memset(&r, 0, sizeof(r));
    r.request_id = r.step = r.policy_file = r.policy_sha256 = s;
    r.caller.iss = r.caller.sub = r.caller.audience = r.caller.jti = r.caller.aws_account =
        r.caller.token_sha256 = s;
    r.request.method = r.request.path = r.request.query = r.request.user_agent = s;
    r.request.method_len = r.request.path_len = r.request.query_len = r.request.user_agent_len = n;
    r.request.client = s;
    r.request.headers = h;
    r.request.n_headers = AUDIT_MAX_RECORD_HEADERS + 5;
    r.upstream.name = r.upstream.identity = r.upstream.audience = s;
    body = audit_record_body(&r, names, AUDIT_MAX_RECORD_HEADERS, &len);
    ok(len + 200 < AUDIT_LINE_MAX,
       "a record with every field at its cap fits a line with room for the prefix (%zu bytes)",
       len);
    line = xasprintf("{%s}", body);
    j = parse(line);
    ok(j != NULL, "and is valid JSON");
    is_int(json_array_size(json_object_get(json_object_get(j, "request"), "headers")),
           AUDIT_MAX_RECORD_HEADERS, "at most AUDIT_MAX_RECORD_HEADERS headers are recorded");
    ok(json_is_true(json_object_get(j, "truncated")), "and it says it was cut");
    json_decref(j);
    free(line);
    free(body);
    for (int i = 0; i < AUDIT_MAX_RECORD_HEADERS; i++)
        free(names[i]);
    free(s);
}

/* ------------------------------------------------------------- opening */

static void test_open_errors(void)
{
    char err[256];
    char *p = tmp_path("errors.jsonl");
    struct cfg_audit c = base_cfg(p);
    static char *bad1[] = {"X-Sfn-Execution", "Authorization"};
    static char *bad2[] = {"set-cookie"};
    static char *bad3[] = {"X Bad"};
    char *garbage = tmp_path("garbage.pem"), *notrec = tmp_path("notrec.jsonl");
    FILE *f;

    c.record_headers = bad1;
    c.n_record_headers = 2;
    ok(!audit_open(&c, err, sizeof(err)) && strstr(err, "Authorization"),
       "record_headers naming Authorization is refused at open (%s)", err);
    c.record_headers = bad2;
    c.n_record_headers = 1;
    ok(!audit_open(&c, err, sizeof(err)) && strstr(err, "set-cookie"),
       "record_headers naming Set-Cookie is refused at open");
    c.record_headers = bad3;
    ok(!audit_open(&c, err, sizeof(err)) && strstr(err, "not a header name"),
       "an invalid header name is refused at open");
    c = base_cfg(p);
    f = fopen(garbage, "w");
    fputs("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", f);
    fclose(f);
    c.signing_key = garbage;
    chmod(garbage, 0644);
    ok(!audit_open(&c, err, sizeof(err)) && strstr(err, "mode 644") && strstr(err, "chmod 600"),
       "a signing key other users can read is refused, naming the fix (%s)", err);
    chmod(garbage, 0600);
    ok(!audit_open(&c, err, sizeof(err)) && strstr(err, "Ed25519"),
       "a signing key that is not Ed25519 PEM is refused (%s)", err);
    c = base_cfg("/nonexistent-dir/x/audit.jsonl");
    ok(!audit_open(&c, err, sizeof(err)), "an unwritable path is refused (%s)", err);
    f = fopen(notrec, "w");
    fputs("{\"hello\":1}\n", f);
    fclose(f);
    c = base_cfg(notrec);
    ok(!audit_open(&c, err, sizeof(err)) && strstr(err, "not an audit record"),
       "a file whose last line is not an audit record is not appended to (%s)", err);
    free(p);
    free(garbage);
    free(notrec);
}

/* -------------------------------------------------------------- writing */

static void test_modes(void)
{
    static const enum cfg_fsync modes[] = {FSYNC_ALWAYS, FSYNC_BATCH, FSYNC_NONE};
    static const char *names[] = {"always", "batch", "none"};
    for (int m = 0; m < 3; m++) {
        char *p = xasprintf("%s/mode-%s.jsonl", dir, names[m]);
        struct cfg_audit c = base_cfg(p);
        struct counter cnt = {0};
        struct audit_stats st;
        struct audit_verify_result res;
        const char *paths[] = {p};
        char err[256];
        struct audit_log *log;

        c.fsync = modes[m];
        c.signing_key = keyp;
        c.checkpoint_records = 25;
        log = audit_open(&c, err, sizeof(err));
        ok(log != NULL, "fsync %s: open", names[m]);
        if (!log)
            continue;
        ok(audit_healthy(log), "fsync %s: healthy", names[m]);
        submit_n(log, 200, "m-", &cnt);
        audit_close(log);
        is_int(atomic_load(&cnt.ok), 200, "fsync %s: 200 durable callbacks with ok=1", names[m]);
        is_int(atomic_load(&cnt.lost), 0, "fsync %s: none lost", names[m]);
        is_int(verify_paths(paths, 1, pub_pem, &res), 0,
               "fsync %s: the log verifies with the key (%s)", names[m], res.message);
        is_int(res.requests, 200, "fsync %s: 200 request records", names[m]);
        ok(res.checkpoints >= 8,
           "fsync %s: a checkpoint every 25 records and at close (%" PRIu64 ")", names[m],
           res.checkpoints);
        is_int(res.signed_seq, res.last_seq, "fsync %s: the last record is a signed checkpoint",
               names[m]);
        (void)st;
        free(p);
    }
}

static void test_keys_and_stats(void)
{
    char *p = tmp_path("keys.jsonl");
    struct cfg_audit c = base_cfg(p);
    char err[256], id[65];
    unsigned char raw[32];
    struct audit_log *log;
    struct audit_stats st;
    struct counter cnt = {0};

    c.signing_key = keyp;
    log = audit_open(&c, err, sizeof(err));
    ok(log && audit_public_key_pem(log) && !strcmp(audit_public_key_pem(log), pub_pem),
       "audit_public_key_pem is the signing key's public half");
    ok(log && audit_public_key_raw(log, raw) == 0, "audit_public_key_raw gives 32 bytes");
    sha256_hex(raw, 32, id);
    is_str(log ? audit_key_id(log) : NULL, id, "audit_key_id is the SHA-256 of the raw key");
    submit_n(log, 10, "s-", &cnt);
    audit_close(log);
    c.signing_key = NULL;
    log = audit_open(&c, err, sizeof(err));
    ok(log && !audit_public_key_pem(log) && audit_public_key_raw(log, raw) == -1 &&
           !audit_key_id(log),
       "without a signing key there is no public key");
    submit_n(log, 5, "s2-", &cnt);
    /* wait until written to read stats */
    for (int i = 0; i < 200 && atomic_load(&cnt.ok) < 15; i++)
        usleep(5000);
    audit_stats(log, &st);
    is_int(st.written, 5, "stats count written records");
    ok(st.markers >= 1 && st.bytes > 0 && st.fsyncs >= 1 && st.healthy && st.lost == 0,
       "stats count markers, bytes, fsyncs and health");
    audit_close(log);
    free(p);
}

static void test_timed_checkpoint(void)
{
    char *p = tmp_path("timed.jsonl");
    struct cfg_audit c = base_cfg(p);
    struct counter cnt = {0};
    struct audit_stats before, after;
    struct audit_log *log;
    struct lines l;
    char err[256];
    int i;

    c.signing_key = keyp;
    c.checkpoint_interval_s = 1;
    c.fsync = FSYNC_BATCH;
    log = audit_open(&c, err, sizeof(err));
    submit_n(log, 3, "t-", &cnt);
    for (i = 0; i < 200 && atomic_load(&cnt.ok) < 3; i++)
        usleep(5000);
    audit_stats(log, &before);
    l = load_lines(p);
    is_str(l.n ? kind_of(l.v[l.n - 1]) : "", "request",
           "before the interval the last line is a request");
    free_lines(&l);
    for (i = 0; i < 300; i++) { /* up to 3 s: the interval plus a loaded machine */
        usleep(10000);
        audit_stats(log, &after);
        if (after.checkpoints && after.fsyncs > before.fsyncs)
            break;
    }
    l = load_lines(p);
    is_str(l.n ? kind_of(l.v[l.n - 1]) : "", "checkpoint",
           "with no new record, a checkpoint is written after checkpoint_interval_s");
    free_lines(&l);
    ok(after.fsyncs > before.fsyncs, "and fsynced within batch_ms, without waiting for traffic");
    usleep(1200000);
    audit_stats(log, &before);
    ok(before.checkpoints >= 2,
       "an idle log gets a heartbeat checkpoint every interval (%" PRIu64 ")", before.checkpoints);
    l = load_lines(p);
    is_str(l.n ? kind_of(l.v[l.n - 1]) : "", "checkpoint", "nothing but checkpoints since");
    is_str(l.n > 1 ? kind_of(l.v[l.n - 2]) : "", "checkpoint", "a heartbeat follows a checkpoint");
    free_lines(&l);
    audit_close(log);
    free(p);
}

static void test_restart_and_torn(void)
{
    char *p = tmp_path("restart.jsonl");
    const char *paths[] = {p};
    struct audit_verify_result res;
    struct cfg_audit c = base_cfg(p);
    struct lines l;
    char err[256], first_log[33] = "";
    struct audit_log *log;
    struct counter cnt = {0};
    FILE *f;
    json_t *j;

    ok(make_log(p, 20, true, 1000) == 0, "a first run writes 20 records");
    l = load_lines(p);
    j = parse(l.v[0]);
    snprintf(first_log, sizeof(first_log), "%s", json_string_value(json_object_get(j, "log")));
    json_decref(j);
    free_lines(&l);
    f = fopen(p, "a");
    fputs("{\"v\":1,\"seq\":99,\"prev\":\"abc", f); /* a torn write of 27 bytes */
    fclose(f);
    is_int(verify_raw(p, NULL, &res), 1, "a torn last line fails verification");
    is_str(audit_break_name(res.kind), "torn", "it is reported as torn");
    is_int(res.line, 23, "at the line after the last record");
    c.signing_key = keyp;
    log = audit_open(&c, err, sizeof(err));
    ok(log != NULL, "a restart over a torn tail opens (%s)", log ? "" : err);
    submit_n(log, 5, "again-", &cnt);
    audit_close(log);
    l = load_lines(p);
    j = parse(l.v[22]);
    is_str(json_string_value(json_object_get(j, "kind")), "open",
           "the restart writes an open record");
    is_str(json_string_value(json_object_get(j, "start")), "restart", "marked restart");
    is_int(json_integer_value(json_object_get(j, "torn_bytes")), 27,
           "which tells how many torn bytes were cut");
    ok(json_is_string(json_object_get(j, "torn_sha256")), "and their hash");
    is_int(json_integer_value(json_object_get(j, "seq")), 22,
           "seq continues after the last record");
    is_str(json_string_value(json_object_get(j, "log")), first_log, "the log id is kept");
    json_decref(j);
    free_lines(&l);
    is_int(verify_paths(paths, 1, pub_pem, &res), 0,
           "after the restart the whole file verifies as one chain (%s)", res.message);
    is_int(res.chains, 1, "one chain");
    is_int(res.opens, 2, "two open records");
    free(p);
}

static int cmpstr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The rotated files of `base` in order, then base itself. */
static size_t rotated_set(const char *base, char **out, size_t max)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    const char *bn = strrchr(base, '/') + 1;
    size_t n = 0;
    while (d && (e = readdir(d)) && n + 1 < max)
        if (!strncmp(e->d_name, bn, strlen(bn)) && e->d_name[strlen(bn)] == '.')
            out[n++] = xasprintf("%s/%s", dir, e->d_name);
    closedir(d);
    qsort(out, n, sizeof(char *), cmpstr);
    out[n++] = xstrdup(base);
    return n;
}

static void test_rotation(void)
{
    char *p = tmp_path("rot.jsonl");
    struct cfg_audit c = base_cfg(p);
    char err[256], *files[64];
    struct counter cnt = {0};
    struct audit_log *log;
    struct audit_verify_result res;
    struct audit_stats st;
    size_t n;

    c.signing_key = keyp;
    c.rotate_bytes = 8192;
    log = audit_open(&c, err, sizeof(err));
    submit_n(log, 60, "rot-", &cnt);
    for (int i = 0; i < 400 && atomic_load(&cnt.ok) < 60; i++)
        usleep(5000);
    audit_stats(log, &st);
    audit_close(log);
    n = rotated_set(p, files, 64);
    ok(n >= 5, "60 records of ~1 KB with rotate_bytes 8192 make several files (%zu)", n);
    is_int(st.rotations, n - 1, "stats count the rotations");
    {
        struct stat sb;
        bool small = true;
        for (size_t i = 0; i + 1 < n; i++)
            if (stat(files[i], &sb) != 0 || sb.st_size > 8192 + 600)
                small = false;
        ok(small, "each rotated file stays within rotate_bytes plus one checkpoint");
    }
    is_int(verify_paths((const char *const *)files, n, pub_pem, &res), 0,
           "the rotated files verify in order as one chain (%s)", res.message);
    is_int(res.rotates, n - 1, "each new file starts with a rotate record");
    is_int(res.chains, 1, "the chain is unbroken across files");
    {
        struct lines l = load_lines(files[0]);
        is_str(kind_of(l.v[l.n - 1]), "checkpoint", "a rotated file ends with a checkpoint");
        free_lines(&l);
    }
    /* each file after the first verifies alone: it begins at a rotate record */
    is_int(verify_paths((const char *const *)files + 1, n - 1, pub_pem, &res), 0,
           "files from the second on verify without the first");
    ok(!res.from_genesis, "and say that earlier records are elsewhere");
    /* a file missing in the middle, files out of order */
    {
        const char *gap[] = {files[0], files[2]};
        const char *swapped[] = {files[1], files[0]};
        verify_paths(gap, 2, pub_pem, &res);
        is_str(audit_break_name(res.kind), "missing",
               "a file left out is reported as missing records");
        verify_paths(swapped, 2, pub_pem, &res);
        is_str(audit_break_name(res.kind), "reordered", "files given out of order: reordered");
    }
    /* restart with the active file gone: continue from the newest rotated file */
    unlink(p);
    log = audit_open(&c, err, sizeof(err));
    ok(log != NULL, "a restart with only rotated files opens");
    submit_n(log, 3, "after-", &cnt);
    audit_close(log);
    {
        struct lines l = load_lines(p);
        json_t *j = parse(l.v[0]);
        const char *pf = json_string_value(json_object_get(j, "prev_file"));
        ok(pf && !strcmp(pf, strrchr(files[n - 2], '/') + 1),
           "its open record names the rotated file it continues (%s)", pf ? pf : "null");
        json_decref(j);
        free_lines(&l);
    }
    is_int(verify_paths((const char *const *)files, n, pub_pem, &res), 0,
           "and the set still verifies as one chain (%s)", res.message);
    for (size_t i = 0; i < n; i++)
        free(files[i]);
    free(p);
}

static void test_reopen(void)
{
    char *p = tmp_path("reopen.jsonl"), *moved = tmp_path("reopen.jsonl.1");
    struct cfg_audit c = base_cfg(p);
    char err[256];
    struct counter cnt = {0};
    struct audit_log *log;
    struct audit_verify_result res;
    const char *both[] = {moved, p};
    struct lines l;

    c.signing_key = keyp;
    log = audit_open(&c, err, sizeof(err));
    submit_n(log, 10, "a-", &cnt);
    audit_reopen(log); /* not moved: nothing happens */
    for (int i = 0; i < 400 && atomic_load(&cnt.ok) < 10; i++)
        usleep(5000);
    usleep(20000);
    rename(p, moved); /* logrotate */
    audit_reopen(log);
    usleep(50000);
    submit_n(log, 10, "b-", &cnt);
    audit_close(log);
    l = load_lines(moved);
    is_int(l.n, 12,
           "the moved file holds the open record, 10 records and the checkpoint of the reopen");
    is_str(l.n ? kind_of(l.v[l.n - 1]) : "", "checkpoint", "and ends with a checkpoint");
    free_lines(&l);
    l = load_lines(p);
    is_str(l.n ? kind_of(l.v[0]) : "", "rotate", "the new file begins with a rotate record");
    free_lines(&l);
    is_int(verify_paths(both, 2, pub_pem, &res), 0, "both files verify as one chain (%s)",
           res.message);
    is_int(res.rotates, 1, "one rotate record: the reopen of an unmoved file did nothing");
    free(p);
    free(moved);
}

static void test_queue_limits(void)
{
    char *p = tmp_path("queue.jsonl");
    const char *paths[] = {p};
    struct cfg_audit c = base_cfg(p);
    char err[256];
    struct audit_reservation rsv[17], extra;
    struct audit_record r;
    struct audit_stats st;
    struct audit_log *log;
    struct counter cnt = {0};
    struct audit_verify_result res;
    struct lines l;
    bool lost_rec = false;

    c.queue_records = 16;
    log = audit_open(&c, err, sizeof(err));
    for (int i = 0; i < 16; i++)
        audit_reserve(log, &rsv[i]);
    is_int(audit_reserve(log, &rsv[16]), -1, "deny: a reserve beyond queue_records fails");
    audit_release(log, &rsv[0]);
    is_int(audit_reserve(log, &rsv[0]), 0, "a released slot can be reserved again");
    for (int i = 0; i < 16; i++)
        audit_release(log, &rsv[i]);
    audit_stats(log, &st);
    is_int(st.refused, 1, "the refusal is counted");
    is_int(st.queue_depth, 0, "released slots leave the queue empty");
    audit_close(log);

    c.on_failure = ON_FAILURE_ALLOW;
    log = audit_open(&c, err, sizeof(err));
    for (int i = 0; i < 16; i++)
        audit_reserve(log, &rsv[i]);
    is_int(audit_reserve(log, &extra), 0,
           "allow: a reserve beyond the queue still lets the request go");
    ok(!extra.slot, "but without a slot");
    fill_record(&r, "no-room");
    is_int(audit_submit(log, &extra, &r, count_cb, &cnt), -1,
           "its submit finds no room and returns -1");
    for (int i = 0; i < 16; i++) {
        char id[16];
        snprintf(id, sizeof(id), "q%d", i);
        fill_record(&r, id);
        audit_submit(log, &rsv[i], &r, count_cb, &cnt);
    }
    audit_stats(log, &st);
    is_int(st.lost, 1, "the record without room is counted lost");
    audit_close(log);
    is_int(atomic_load(&cnt.ok), 16, "every reserved record was written");
    l = load_lines(p);
    for (size_t i = 0; i < l.n; i++)
        if (!strcmp(kind_of(l.v[i]), "lost") && strstr(l.v[i], "\"count\":1,"))
            lost_rec = true;
    ok(lost_rec, "the log itself records the loss in a lost record");
    free_lines(&l);
    is_int(verify_paths(paths, 1, NULL, &res), 0, "and verifies");
    free(p);
}

static void test_failure_and_recovery(void)
{
    static const enum cfg_on_failure pol[] = {ON_FAILURE_DENY, ON_FAILURE_ALLOW};
    struct rlimit saved;

    getrlimit(RLIMIT_FSIZE, &saved);
    for (int k = 0; k < 2; k++) {
        char *p = xasprintf("%s/full-%d.jsonl", dir, k);
        const char *paths[] = {p};
        struct cfg_audit c = base_cfg(p);
        struct counter cnt = {0};
        struct audit_stats st;
        struct audit_verify_result res;
        struct audit_log *log;
        struct rlimit rl = saved;
        char err[256];
        int refused = 0, i, submitted;
        bool lost_rec = false, unhealthy;
        struct lines l;
        const char *name = k ? "allow" : "deny";

        c.on_failure = pol[k];
        c.fsync = FSYNC_ALWAYS;
        log = audit_open(&c, err, sizeof(err));
        rl.rlim_cur = 16384; /* a full disk, as far as this process can tell */
        setrlimit(RLIMIT_FSIZE, &rl);
        for (i = 0; i < 400 && audit_healthy(log); i++) {
            refused += submit_n(log, 1, "f-", &cnt);
            usleep(2000);
        }
        unhealthy = !audit_healthy(log);
        submitted = i - refused;
        refused = submit_n(log, 10, "g-", &cnt);
        submitted += 10 - refused;
        for (int w = 0; w < 400 && atomic_load(&cnt.ok) + atomic_load(&cnt.lost) < submitted; w++)
            usleep(5000); /* every callback has run: what failed, failed under the limit */
        audit_stats(log, &st);
        rl.rlim_cur = saved.rlim_cur; /* space again; and TAP output may go to a file */
        setrlimit(RLIMIT_FSIZE, &rl);
        ok(unhealthy, "%s: the log turns unhealthy when writes fail with EFBIG", name);
        ok(st.failures >= 1 && st.lost >= 1,
           "%s: failures and lost records are counted (%" PRIu64 ", %" PRIu64 ")", name,
           st.failures, st.lost);
        is_int(atomic_load(&cnt.lost), st.lost, "%s: each lost record's callback said ok=0", name);
        if (k == 1)
            ok(st.lost >= 10, "allow: records submitted while failing are lost and counted");
        if (k == 0)
            is_int(refused, 10, "deny: while failing every reserve is refused");
        else
            is_int(refused, 0, "allow: while failing requests are not refused");
        for (i = 0; i < 300 && !audit_healthy(log); i++)
            usleep(10000);
        ok(audit_healthy(log), "%s: a retry succeeds once writes work again", name);
        submit_n(log, 5, "h-", &cnt);
        audit_close(log);
        l = load_lines(p);
        for (size_t j = 0; j < l.n; j++)
            if (!strcmp(kind_of(l.v[j]), "lost"))
                lost_rec = true;
        ok(lost_rec, "%s: a lost record tells the loss in the log", name);
        free_lines(&l);
        is_int(verify_paths(paths, 1, NULL, &res), 0,
               "%s: the log verifies: failed writes were cut back (%s)", name, res.message);
        free(p);
    }
}

static void test_stdout(void)
{
    char *p = tmp_path("stdout.jsonl");
    const char *paths[] = {p};
    struct cfg_audit c = base_cfg("-");
    struct counter cnt = {0};
    struct audit_verify_result res;
    struct audit_log *log;
    char err[256];
    int saved, fd;

    fflush(stdout);
    saved = dup(STDOUT_FILENO);
    fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, STDOUT_FILENO);
    close(fd);
    c.signing_key = keyp;
    log = audit_open(&c, err, sizeof(err));
    submit_n(log, 7, "o-", &cnt);
    audit_close(log);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    ok(log != NULL, "path \"-\" opens stdout");
    is_int(atomic_load(&cnt.ok), 7, "records written to stdout are acknowledged");
    is_int(verify_paths(paths, 1, pub_pem, &res), 0, "what went to stdout verifies (%s)",
           res.message);
    ok(res.from_genesis, "a stdout log starts its own chain");
    free(p);
}

/* ------------------------------------------------------------- tampering */

/* A different value of the same type, for every JSON type. */
static json_t *mutate(json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_INTEGER:
        return json_integer(json_integer_value(v) + 1);
    case JSON_STRING: {
        char *s = xstrdup(json_string_value(v));
        json_t *r;
        if (*s)
            s[0] = s[0] == '0' ? '1' : '0';
        r = *s ? json_string(s) : json_string("x");
        free(s);
        return r;
    }
    case JSON_TRUE:
        return json_false();
    case JSON_FALSE:
        return json_true();
    case JSON_NULL:
        return json_string("forged");
    case JSON_REAL:
        return json_real(json_real_value(v) + 1);
    case JSON_OBJECT: {
        json_t *c = json_deep_copy(v);
        const char *k = NULL;
        json_t *m;
        void *it = json_object_iter(c);
        if (!it) {
            json_object_set_new(c, "x", json_true());
            return c;
        }
        k = json_object_iter_key(it);
        m = mutate(json_object_iter_value(it));
        json_object_set_new(c, k, m);
        return c;
    }
    case JSON_ARRAY: {
        json_t *c = json_deep_copy(v);
        json_array_append_new(c, json_string("forged"));
        return c;
    }
    }
    return json_null();
}

static void test_edit_every_member(struct lines *log)
{
    size_t edits = 0, caught = 0, near = 0;
    for (size_t i = 0; i < log->n; i++) {
        json_t *j = parse(log->v[i]);
        const char *key;
        json_t *val;
        json_object_foreach(j, key, val) {
            struct lines t = copy_lines(log);
            json_t *c = json_deep_copy(j);
            struct audit_verify_result res;
            json_object_set_new(c, key, mutate(val));
            free(t.v[i]);
            t.v[i] = dump(c);
            json_decref(c);
            edits++;
            if (verify_lines(&t, pub_pem, &res) == 1) {
                caught++;
                if (res.line >= i && res.line <= i + 2)
                    near++;
                else
                    tap_diag("edit of %s on line %zu reported at line %" PRIu64, key, i + 1,
                             res.line);
            } else {
                tap_diag("edit of %s on line %zu went unnoticed", key, i + 1);
            }
            free_lines(&t);
        }
        json_decref(j);
    }
    ok(edits > 300, "edited each member of each record (%zu edits)", edits);
    is_int(caught, edits, "every edit of any member of any record is detected");
    is_int(near, edits, "and reported at the edited record or the next one");
}

static void test_tamper(void)
{
    char *p = tmp_path("tamper.jsonl");
    struct lines log, t;
    struct audit_verify_result res;
    bool all;

    make_log(p, 30, true, 7);
    log = load_lines(p);
    ok(log.n > 30, "a signed log of %zu lines to tamper with", log.n);
    /* jansson's compact dump reproduces our lines: edits change only what they change */
    all = true;
    for (size_t i = 0; i < log.n; i++) {
        json_t *j = parse(log.v[i]);
        char *d = dump(j);
        all &= !strcmp(d, log.v[i]);
        free(d);
        json_decref(j);
    }
    ok(all, "re-serializing an untouched line gives the same bytes");
    is_int(verify_lines(&log, pub_pem, &res), 0, "the untouched log verifies with its key");

    test_edit_every_member(&log);

    /* delete each record */
    all = true;
    for (size_t i = 0; i < log.n; i++) {
        t = copy_lines(&log);
        free(t.v[i]);
        t.v[i] = NULL;
        if (verify_lines(&t, pub_pem, &res) != 1)
            all = false, tap_diag("deleting line %zu went unnoticed", i + 1);
        if (i > 0 && i + 1 < log.n && res.kind != AUDIT_BREAK_MISSING)
            all = false, tap_diag("deleting line %zu: %s", i + 1, audit_break_name(res.kind));
        free_lines(&t);
    }
    ok(all,
       "deleting any record is detected (inside: missing; first: bad_start; last: unsigned_tail)");
    t = copy_lines(&log);
    free(t.v[0]);
    t.v[0] = NULL;
    verify_lines(&t, pub_pem, &res);
    is_str(audit_break_name(res.kind), "bad_start", "deleting the genesis record: bad_start");
    free_lines(&t);

    /* swap each pair of neighbours */
    all = true;
    for (size_t i = 1; i + 1 < log.n; i++) {
        char *tmp;
        t = copy_lines(&log);
        tmp = t.v[i];
        t.v[i] = t.v[i + 1];
        t.v[i + 1] = tmp;
        if (verify_lines(&t, pub_pem, &res) != 1 || res.kind != AUDIT_BREAK_REORDERED)
            all = false, tap_diag("swap %zu: %s", i + 1, audit_break_name(res.kind));
        free_lines(&t);
    }
    ok(all, "swapping any two neighbouring records is reported as reordered");
    t = copy_lines(&log);
    {
        char *tmp = t.v[3];
        t.v[3] = t.v[20];
        t.v[20] = tmp;
    }
    ok(verify_lines(&t, pub_pem, &res) == 1, "swapping two distant records is detected (%s)",
       audit_break_name(res.kind));
    free_lines(&t);

    /* a forged record inserted, the chain recomputed: the next checkpoint fails */
    for (size_t at = 5; at < log.n; at += 11) {
        json_t *j;
        t = copy_lines(&log);
        memmove(t.v + at + 1, t.v + at, (t.n - at) * sizeof(char *));
        t.n++;
        j = parse(log.v[at - 1]);
        if (strcmp(kind_of(log.v[at - 1]), "request"))
            j = (json_decref(j), parse(log.v[at]));
        json_object_set_new(j, "request_id", json_string("forged"));
        t.v[at] = dump(j);
        json_decref(j);
        rechain(&t, at);
        verify_lines(&t, NULL, &res);
        is_int(res.kind, AUDIT_OK,
               "a record inserted at line %zu with a recomputed chain fools "
               "a check without the key",
               at + 1);
        verify_lines(&t, pub_pem, &res);
        is_str(audit_break_name(res.kind), "bad_signature",
               "but not the checkpoint signature that follows it (line %" PRIu64 ")", res.line);
        free_lines(&t);
    }
    /* appended after the final checkpoint: unsigned tail */
    t = copy_lines(&log);
    t.v[t.n] = xstrdup(log.v[t.n - 2]);
    t.n++;
    rechain(&t, t.n - 1);
    verify_lines(&t, pub_pem, &res);
    is_str(audit_break_name(res.kind), "unsigned_tail",
           "a record appended after the last checkpoint is an unsigned tail");
    is_int(res.line, t.n, "reported at that record");
    free_lines(&t);

    /* truncation */
    t = copy_lines(&log);
    free(t.v[t.n - 1]);
    free(t.v[t.n - 2]);
    t.n -= 2;
    is_int(verify_lines(&t, NULL, &res), 0, "cutting the tail goes unnoticed without the key");
    verify_lines(&t, pub_pem, &res);
    is_str(audit_break_name(res.kind), "unsigned_tail",
           "with the key, a cut tail leaves records after the last checkpoint: unsigned_tail");
    free_lines(&t);
    t = copy_lines(&log);
    t.v[t.n - 1][strlen(t.v[t.n - 1]) / 2] = '\0';
    {
        char err[64];
        struct audit_verifier *v = audit_verifier_new(pub_pem, strlen(pub_pem), err, sizeof(err));
        audit_verifier_begin_file(v, "cut");
        for (size_t i = 0; i < t.n; i++) {
            audit_verifier_feed(v, t.v[i], strlen(t.v[i]));
            if (i + 1 < t.n)
                audit_verifier_feed(v, "\n", 1);
        }
        audit_verifier_end_file(v);
        audit_verifier_finish(v);
        is_str(audit_break_name(audit_verifier_result(v)->kind), "torn",
               "a file cut inside its last line: torn");
        audit_verifier_free(v);
    }
    free_lines(&t);

    /* checkpoints forged with another key */
    {
        json_t *j = parse(log.v[log.n - 1]);
        const char *lid = json_string_value(json_object_get(j, "log"));
        const char *prev = json_string_value(json_object_get(j, "prev"));
        const char *ts = json_string_value(json_object_get(j, "ts"));
        const char *real_id = json_string_value(json_object_get(j, "key_id"));
        uint64_t seq = (uint64_t)json_integer_value(json_object_get(j, "seq"));
        unsigned char raw[32], sig[64];
        size_t rawlen = 32, siglen = 64, mlen;
        char other_id[65], msg[512], sighex[129], line[640];
        EVP_MD_CTX *ctx;

        EVP_PKEY_get_raw_public_key(other_key, raw, &rawlen);
        sha256_hex(raw, 32, other_id);
        for (int variant = 0; variant < 2; variant++) {
            const char *kid = variant ? real_id : other_id;
            mlen = audit_checkpoint_message(msg, sizeof(msg), lid, seq, prev, ts, kid);
            ctx = EVP_MD_CTX_new();
            EVP_DigestSignInit(ctx, NULL, NULL, NULL, other_key);
            EVP_DigestSign(ctx, sig, &siglen, (unsigned char *)msg, mlen);
            EVP_MD_CTX_free(ctx);
            hex_encode(sig, 64, sighex);
            audit_checkpoint_line(line, sizeof(line), lid, seq, prev, ts, kid, sighex);
            t = copy_lines(&log);
            free(t.v[t.n - 1]);
            t.v[t.n - 1] = xstrdup(line);
            verify_lines(&t, pub_pem, &res);
            is_str(audit_break_name(res.kind), "bad_signature",
                   "a checkpoint signed with another key (%s key id) is a bad signature",
                   variant ? "claiming the real" : "with its own");
            if (!variant)
                is_int(verify_lines(&t, other_pub_pem, &res), 1,
                       "and it does not verify with the other key either (the chain before "
                       "was signed by the real key)");
            free_lines(&t);
        }
        json_decref(j);
    }
    free_lines(&log);
    free(p);
}

static void test_splice(void)
{
    char *a = tmp_path("spl-a.jsonl"), *b = tmp_path("spl-b.jsonl");
    char *fa[64], *fb[64];
    size_t na, nb;
    struct audit_verify_result res;
    struct cfg_audit c;
    struct counter cnt = {0};
    char err[256];
    struct audit_log *log;

    c = base_cfg(a);
    c.signing_key = keyp;
    c.rotate_bytes = 8192;
    log = audit_open(&c, err, sizeof(err));
    submit_n(log, 30, "A", &cnt);
    audit_close(log);
    c.path = b;
    log = audit_open(&c, err, sizeof(err));
    submit_n(log, 30, "B", &cnt);
    audit_close(log);
    na = rotated_set(a, fa, 64);
    nb = rotated_set(b, fb, 64);
    ok(na >= 3 && nb >= 3, "two logs of several files each");
    {
        const char *set[] = {fa[0], fb[1]};
        verify_paths(set, 2, pub_pem, &res);
        is_str(audit_break_name(res.kind), "spliced",
               "a file of another log after a file of this one is a splice");
        is_str(res.file, "file2", "reported in the second file");
        is_int(res.line, 1, "at its first record");
    }
    {
        const char *set[] = {fa[0], fa[1], fb[0]};
        is_int(verify_paths(set, 3, pub_pem, &res), 0,
               "a whole second log after a signed first one verifies as a second chain");
        is_int(res.chains, 2, "and is counted as one");
    }
    {
        struct lines l1 = load_lines(fa[0]), l2 = load_lines(fb[1]);
        struct lines mixed = copy_lines(&l1);
        /* records of log B pasted inside log A's file */
        mixed.v = xrealloc(mixed.v, (mixed.n + l2.n) * sizeof(char *));
        for (size_t i = 1; i < l2.n; i++)
            mixed.v[mixed.n++] = xstrdup(l2.v[i]);
        verify_lines(&mixed, pub_pem, &res);
        is_str(audit_break_name(res.kind), "spliced", "records of another log pasted in: spliced");
        free_lines(&l1);
        free_lines(&l2);
        free_lines(&mixed);
    }
    for (size_t i = 0; i < na; i++)
        free(fa[i]);
    for (size_t i = 0; i < nb; i++)
        free(fb[i]);
    free(a);
    free(b);
}

static void test_verifier_input(void)
{
    char *p = tmp_path("input.jsonl");
    char *data = NULL, err[64];
    size_t len = 0;
    struct audit_verifier *v;
    struct audit_verify_result whole;
    struct lines l = {0};

    make_log(p, 10, true, 4);
    read_file_capped(p, 1 << 24, &data, &len);
    v = audit_verifier_new(pub_pem, strlen(pub_pem), err, sizeof(err));
    audit_verifier_begin_file(v, "x");
    audit_verifier_feed(v, data, len);
    audit_verifier_end_file(v);
    audit_verifier_finish(v);
    whole = *audit_verifier_result(v);
    audit_verifier_free(v);
    v = audit_verifier_new(pub_pem, strlen(pub_pem), err, sizeof(err));
    audit_verifier_begin_file(v, "x");
    for (size_t i = 0; i < len; i++)
        audit_verifier_feed(v, data + i, 1);
    audit_verifier_end_file(v);
    audit_verifier_finish(v);
    ok(whole.kind == AUDIT_OK && audit_verifier_result(v)->kind == AUDIT_OK &&
           !strcmp(whole.head, audit_verifier_result(v)->head) &&
           whole.records == audit_verifier_result(v)->records,
       "feeding byte by byte gives the result of feeding the whole file");
    audit_verifier_free(v);

    is_int(verify_lines(&l, NULL, &whole), 1, "no records at all fails");
    is_str(audit_break_name(whole.kind), "empty", "as empty");
    {
        char *big = xmalloc(AUDIT_LINE_MAX + 10);
        memset(big, 'a', AUDIT_LINE_MAX + 9);
        big[AUDIT_LINE_MAX + 9] = '\0';
        l.v = &big;
        l.n = 1;
        verify_lines(&l, NULL, &whole);
        is_str(audit_break_name(whole.kind), "too_long", "a line over AUDIT_LINE_MAX: too_long");
        free(big);
    }
    {
        struct lines g = load_lines(p);
        char *orig = g.v[1];
        g.v[1] = xasprintf("%.*s\xc3\xa9%s", 20, orig, orig + 20);
        verify_lines(&g, NULL, &whole);
        is_str(audit_break_name(whole.kind), "malformed", "a non-ASCII byte: malformed");
        free(g.v[1]);
        g.v[1] = xasprintf("{\"seq\":1,%s", orig + 1);
        verify_lines(&g, NULL, &whole);
        is_str(audit_break_name(whole.kind), "malformed", "a duplicate member: malformed");
        free(g.v[1]);
        g.v[1] = orig;
        free_lines(&g);
    }
    v = audit_verifier_new("not a key", 9, err, sizeof(err));
    ok(v == NULL, "a --pubkey that is not an Ed25519 PEM key is refused");
    {
        char *priv = NULL;
        size_t plen;
        read_file_capped(keyp, 65536, &priv, &plen);
        v = audit_verifier_new(priv, plen, err, sizeof(err));
        ok(v != NULL, "the private key PEM is accepted for its public half");
        audit_verifier_free(v);
        free(priv);
    }
    free(data);
    free(p);
}

struct recycle_run {
    struct audit_log *log;
    struct counter *cnt;
    int from, n;
};

/* Record i: every third with a 5,000-byte path (its body outgrows an item's
 * inline room), the others short; the path names i. */
static void recycle_record(struct audit_record *r, char *id, char *path, int i)
{
    int len;
    snprintf(id, 32, "rec-%d", i);
    fill_record(r, id);
    len = snprintf(path, 5100, "/p/%d/", i);
    if (i % 3 == 0) {
        memset(path + len, 'a', 5000 - (size_t)len);
        len = 5000;
        path[len] = '\0';
    }
    r->request.path = path;
    r->request.path_len = (size_t)len;
}

static void *recycle_thread(void *arg)
{
    struct recycle_run *run = arg;
    char id[32], *path = xmalloc(5100);
    for (int i = run->from; i < run->from + run->n; i++) {
        struct audit_record r;
        struct audit_reservation rsv;
        recycle_record(&r, id, path, i);
        if (audit_reserve(run->log, &rsv) == 0)
            audit_submit(run->log, &rsv, &r, count_cb, run->cnt);
        if (i % 20 == 19)
            usleep(12000); /* the writer acks (batch_ms 5): its items come back */
    }
    free(path);
    return NULL;
}

/* The writer gives finished items back for the next records (audit_writer.c):
 * short and long bodies alternate in recycled items, from the main thread
 * and from threads that exit (their item is freed: ASan's leak check), and
 * each line is its own record. */
static void test_recycled_items(void)
{
    char *path = tmp_path("recycle.jsonl"), err[256], id[32], *want = xmalloc(5100);
    struct cfg_audit c = base_cfg(path);
    struct counter cnt = {0};
    struct recycle_run runs[3];
    pthread_t th[2];
    struct audit_log *log = audit_open(&c, err, sizeof(err));
    struct lines l;
    size_t requests = 0, right = 0;

    ok(log != NULL, "a log to recycle items in (%s)", log ? "" : err);
    if (!log)
        goto out;
    for (int t = 0; t < 3; t++)
        runs[t] = (struct recycle_run){log, &cnt, t * 100, 100};
    recycle_thread(&runs[0]);
    for (int t = 0; t < 2; t++)
        pthread_create(&th[t], NULL, recycle_thread, &runs[t + 1]);
    for (int t = 0; t < 2; t++)
        pthread_join(th[t], NULL);
    recycle_thread(&runs[0]); /* again on this thread: its item is still there */
    audit_close(log);
    is_int(atomic_load(&cnt.ok), 400, "400 records durable");
    l = load_lines(path);
    for (size_t i = 0; i < l.n; i++) {
        json_t *j = parse(l.v[i]), *rq;
        const char *rid, *p;
        int n;
        if (strcmp(kind_of(l.v[i]), "request")) {
            json_decref(j);
            continue;
        }
        requests++;
        rid = json_string_value(json_object_get(j, "request_id"));
        rq = json_object_get(j, "request");
        p = json_string_value(json_object_get(rq, "path"));
        if (rid && sscanf(rid, "rec-%d", &n) == 1 && p) {
            struct audit_record r;
            recycle_record(&r, id, want, n);
            right += !strcmp(p, want);
        }
        json_decref(j);
    }
    is_int(requests, 400, "the log holds the 400 request records");
    is_int(right, 400, "each with its own path, long or short, in a recycled item or not");
    free_lines(&l);
out:
    free(want);
    free(path);
}

int main(void)
{
    char cmd[300];

    if (!mkdtemp(dir)) {
        ok(0, "mkdtemp");
        return tap_done();
    }
    snprintf(keyp, sizeof(keyp), "%s/key.pem", dir);
    snprintf(otherkeyp, sizeof(otherkeyp), "%s/other.pem", dir);
    pub_pem = write_key(keyp, NULL);
    other_pub_pem = write_key(otherkeyp, &other_key);

    test_secret_names();
    test_record_body();
    test_escaping();
    test_record_at_caps();
    test_open_errors();
    test_modes();
    test_keys_and_stats();
    test_timed_checkpoint();
    test_restart_and_torn();
    test_rotation();
    test_reopen();
    test_queue_limits();
    test_failure_and_recovery();
    test_stdout();
    test_tamper();
    test_splice();
    test_verifier_input();
    test_recycled_items();

    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    (void)!system(cmd);
    free(pub_pem);
    free(other_pub_pem);
    EVP_PKEY_free(other_key);
    return tap_done();
}
