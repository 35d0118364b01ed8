/*
 * audit_writer.c: the audit log writer (audit.h, docs/audit.md).
 *
 * Request path: audit_submit formats the record body (every string escaped and
 * capped, credentials never recorded) and appends it to a mutex-guarded list;
 * a counter of slots bounds what is queued or awaiting durability, and
 * audit_reserve takes a slot before the request is forwarded so the later
 * submit cannot fail for want of room.
 *
 * Waking the writer is not free (a futex wake for the submitter, a context
 * switch for the writer): per record, it cost more than the rest of a
 * cache-hit request. So with fsync batch or none, once the writer has found
 * records it lingers AUDIT_LINGER_NS before taking the next list, and
 * submitters signal it only when it sleeps idle (the first record after a
 * quiet spell) or the list reaches AUDIT_WAKE_RECORDS: under load it wakes at
 * most every AUDIT_LINGER_NS and writes what gathered in one write(2). With
 * fsync always a record wakes the writer at once (the response waits on it).
 * 5 ms: a wake-up is a context switch on a core that is serving requests;
 * at 55k requests/s, 1 ms cost ~0.6 us of CPU per request more than 5 or
 * 10 ms (same-run A/B, CPU time per request from /proc). A record is written
 * within 5 ms, half the default batch_ms. Peers buffer far longer: nginx's
 * access_log `flush=` is commonly seconds, Envoy's file access log flushes
 * every second.
 *
 * Writer thread: takes the whole list at each wake-up, gives each record its
 * `seq` and `prev` (SHA-256 of the previous line as written), appends the
 * lines to one buffer, writes it with one write(2), and fsyncs per mode
 * (always: before any callback; batch: within batch_ms or every
 * AUDIT_BATCH_RECORDS records; none: never, except at rotation and close).
 * The chain position, file size and counters form a `struct wstate` copied at
 * each successful write and fsync: a failed write or fsync truncates the file
 * back to the last good state, so what is on disk is always a clean chain, and
 * the records concerned are reported lost (callback ok=0). The next write that
 * succeeds starts with a `lost` record saying how many and why.
 *
 * Every file begins with an `open` (process start) or `rotate` record; the
 * chain runs unbroken across files and restarts (docs/audit.md "Genesis,
 * restart and rotation"). Checkpoints are Ed25519 signatures (OpenSSL, key
 * loaded once) over (log id, seq, head, ts, key id), written as records.
 */
#include "audit.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "audit_witness.h"
#include "audit_canon.h"
#include "log.h"
#include "redact.h"
#include "util.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "unknown"
#endif

#define AUDIT_BATCH_RECORDS 1024   /* batch mode: fsync at least every N records */
#define AUDIT_LINGER_NS 5000000ull /* batch/none under load: gather records this long */
#define AUDIT_WAKE_RECORDS 1024    /* ... or until this many are queued */
#define AUDIT_FLUSH_BYTES (1u << 20) /* write(2) when the buffer reaches this */
#define AUDIT_RETRY_MS 500         /* while failing: retry a write this often */
#define AUDIT_ROTATE_HOLD_S 60     /* after a failed rotation, keep the file this long */
#define AUDIT_KEY_FILE_MAX 65536
#define AUDIT_PREFIX_MAX 192       /* {"v":1,"seq":N,"prev":"<64>","log":"<32>", */

/* Caps on each recorded string, in escaped bytes. Their sum with the fixed
 * members stays below AUDIT_LINE_MAX (test_audit checks a record at every cap). */
#define CAP_ID 256
#define CAP_STEP 256
#define CAP_FILE 512
#define CAP_HASH 128
#define CAP_CLAIM 1024
#define CAP_JTI 256
#define CAP_ACCOUNT 64
#define CAP_METHOD 32
#define CAP_PATH 16384
#define CAP_QUERY 4096
#define CAP_CLIENT 128
#define CAP_UA 1024
#define CAP_HNAME 64
#define CAP_NAME 256
#define CAP_IDENTITY 512
/* Every capped string (quotes and escapes within its cap), plus 2 KB for the
 * member names, numbers and the `ts`, fits a line after the writer's prefix. */
_Static_assert(2 * CAP_ID + CAP_STEP + CAP_FILE + 2 * CAP_HASH + 4 * CAP_CLAIM + CAP_JTI +
                       CAP_ACCOUNT + CAP_METHOD + CAP_PATH + CAP_QUERY + CAP_CLIENT + CAP_UA +
                       AUDIT_MAX_RECORD_HEADERS * (CAP_HNAME + AUDIT_HEADER_VALUE_MAX + 16) +
                       CAP_NAME + CAP_IDENTITY + 2048 + AUDIT_PREFIX_MAX <
                   AUDIT_LINE_MAX,
               "audit record caps exceed the line cap");

/* ---------------------------------------------------------------- strings */

struct sb {
    char *buf;
    size_t len, cap;
    bool truncated; /* a capped string was cut */
    bool borrowed;  /* buf is the caller's (not malloc'd): growing moves it to the heap */
};

static void sb_reserve(struct sb *b, size_t more)
{
    size_t cap;
    if (b->len + more + 1 <= b->cap)
        return;
    cap = b->cap ? b->cap : 512;
    while (cap < b->len + more + 1)
        cap *= 2;
    if (b->borrowed) {
        char *heap = xmalloc(cap);
        memcpy(heap, b->buf, b->len);
        b->buf = heap;
        b->borrowed = false;
    } else {
        b->buf = xrealloc(b->buf, cap);
    }
    b->cap = cap;
}

static void sb_put(struct sb *b, const char *s, size_t n)
{
    sb_reserve(b, n);
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = '\0';
}

#define sb_lit(b, s) sb_put((b), (s), sizeof(s) - 1)

static void sb_fmt(struct sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_fmt(struct sb *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        abort(); /* only an invalid format can fail */
    sb_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->buf + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Integers and trusted constant strings (codes, names, timestamps) without
 * printf: audit_record_body runs on every request, and two vsnprintf passes
 * per member cost more than everything else in it. */
static void sb_u64(struct sb *b, uint64_t v)
{
    char t[20];
    sb_put(b, t, u64_decimal(v, t));
}

static void sb_i64(struct sb *b, int64_t v)
{
    if (v < 0) {
        sb_lit(b, "-");
        sb_u64(b, (uint64_t)0 - (uint64_t)v);
    } else {
        sb_u64(b, (uint64_t)v);
    }
}

static void sb_raw(struct sb *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

/* Length of s once json_escape'd. */
static size_t escaped_len(const char *s, size_t n)
{
    size_t out = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        out += (c == '"' || c == '\\') ? 2 : (c < 0x20 || c >= 0x7f) ? 6 : 1;
    }
    return out;
}

/* True when s has nothing to escape (most strings in a record: ids, hashes,
 * claims, paths), eight bytes at a time: for each byte of w, a set high bit
 * in the result flags one below 0x20, above 0x7e, '"' or '\\'. */
static bool json_plain(const char *s, size_t n)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t bad = 0;
    size_t i = 0;

    for (; i + 8 <= n; i += 8) {
        uint64_t w, q, bs;
        memcpy(&w, s + i, 8);
        q = w ^ (ones * '"');
        bs = w ^ (ones * '\\');
        bad |= ((w - ones * 0x20) & ~w) | ((w + ones) | w) | ((q - ones) & ~q) |
               ((bs - ones) & ~bs);
    }
    bad &= highs;
    for (; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        bad |= (uint64_t)(c < 0x20 || c >= 0x7f || c == '"' || c == '\\');
    }
    return bad == 0;
}

/* Appends s as a JSON string cut at `cap` escaped bytes, or null when s is NULL. */
static void sb_str(struct sb *b, const char *s, size_t n, size_t cap)
{
    size_t want, room, w;

    if (!s) {
        sb_lit(b, "null");
        return;
    }
    if (n <= cap && json_plain(s, n)) {
        /* nothing to escape and no cut (ids, hashes, most paths): a copy */
        sb_reserve(b, n + 2);
        b->buf[b->len++] = '"';
        memcpy(b->buf + b->len, s, n);
        b->len += n;
        b->buf[b->len++] = '"';
        b->buf[b->len] = '\0';
        return;
    }
    want = escaped_len(s, n);
    room = (want < cap ? want : cap) + 1;
    sb_reserve(b, room + 2);
    b->buf[b->len++] = '"';
    w = json_escape(b->buf + b->len, room, s, n);
    b->len += w;
    b->buf[b->len++] = '"';
    b->buf[b->len] = '\0';
    if (w < want)
        b->truncated = true;
}

static void sb_cstr(struct sb *b, const char *s, size_t cap)
{
    sb_str(b, s, s ? strlen(s) : 0, cap);
}

/* A count or measure of a record: canonical form (audit_canon.h) wants every
 * number within 2^53-1, which a double holds exactly; nothing baton counts
 * gets there (9 PB, 285 years of ms), so the clamp only guards the form. */
static void sb_count(struct sb *b, uint64_t v)
{
    sb_u64(b, v > (uint64_t)AUDIT_NUMBER_MAX ? (uint64_t)AUDIT_NUMBER_MAX : v);
}

static void sb_int_or_null(struct sb *b, bool known, int64_t v)
{
    if (known)
        sb_i64(b, v > AUDIT_NUMBER_MAX    ? AUDIT_NUMBER_MAX
                  : v < -AUDIT_NUMBER_MAX ? -AUDIT_NUMBER_MAX
                                          : v);
    else
        sb_lit(b, "null");
}

/* "2025-03-01T10:00:00.123Z" (24 bytes), for ms since the epoch. The part up
 * to the seconds is cached per thread. */
static __thread time_t ts_cache_sec = (time_t)-1;
static __thread char ts_cache[24];

static void fmt_ts(int64_t ms, char out[32])
{
    struct tm tm;
    time_t s;

    if (ms < 0)
        ms = 0;
    if (ms > INT64_C(253402300799999)) /* 9999-12-31T23:59:59.999Z */
        ms = INT64_C(253402300799999);
    s = (time_t)(ms / 1000);
    if (s != ts_cache_sec) { /* once a second per thread: the rest is the same */
        gmtime_r(&s, &tm);
        /* every field is in range after the clamp: fixed width, 20 bytes */
        snprintf(ts_cache, sizeof(ts_cache), "%04u-%02u-%02uT%02u:%02u:%02u.",
                 (unsigned)(tm.tm_year + 1900) % 10000u, (unsigned)(tm.tm_mon + 1) % 100u,
                 (unsigned)tm.tm_mday % 100u, (unsigned)tm.tm_hour % 100u,
                 (unsigned)tm.tm_min % 100u, (unsigned)tm.tm_sec % 100u);
        ts_cache_sec = s;
    }
    memcpy(out, ts_cache, 20);
    out[20] = (char)('0' + ms % 1000 / 100);
    out[21] = (char)('0' + ms % 100 / 10);
    out[22] = (char)('0' + ms % 10);
    out[23] = 'Z';
    out[24] = '\0';
}

/* ------------------------------------------------------- secrets, record body */

/* Formats into `b` (which may start on a borrowed buffer). */
static void record_body(struct sb *b0, const struct audit_record *r, char *const *allowed,
                        size_t n_allowed)
{
    struct sb b = *b0;
    char ts[32];
    size_t recorded = 0;

    fmt_ts(r->ts_ms > 0 ? r->ts_ms : now_ms(), ts);
    sb_lit(&b, "\"kind\":\"request\",\"ts\":\"");
    sb_raw(&b, ts);
    sb_lit(&b, "\",\"request_id\":");
    sb_cstr(&b, r->request_id, CAP_ID);
    sb_lit(&b, ",\"decision\":\"");
    sb_raw(&b, decision_name(r->decision));
    sb_lit(&b, "\",\"reason\":\"");
    sb_raw(&b, reason_code(r->reason));
    sb_lit(&b, "\",\"status\":");
    sb_int_or_null(&b, r->status > 0, r->status);
    sb_lit(&b, ",\"step\":");
    sb_cstr(&b, r->step, CAP_STEP);
    sb_raw(&b, r->dry_run ? ",\"dry_run\":true,\"policy\":" : ",\"dry_run\":false,\"policy\":");
    if (r->policy_file || r->policy_sha256) {
        sb_lit(&b, "{\"file\":");
        sb_cstr(&b, r->policy_file, CAP_FILE);
        sb_lit(&b, ",\"sha256\":");
        sb_cstr(&b, r->policy_sha256, CAP_HASH);
        sb_lit(&b, "}");
    } else {
        sb_lit(&b, "null");
    }

    sb_lit(&b, ",\"caller\":");
    if (r->caller.token_sha256 || r->caller.iss || r->caller.sub) {
        sb_raw(&b, r->caller.verified ? "{\"verified\":true,\"iss\":" : "{\"verified\":false,\"iss\":");
        sb_cstr(&b, r->caller.iss, CAP_CLAIM);
        sb_lit(&b, ",\"sub\":");
        sb_cstr(&b, r->caller.sub, CAP_CLAIM);
        sb_lit(&b, ",\"audience\":");
        sb_cstr(&b, r->caller.audience, CAP_CLAIM);
        sb_lit(&b, ",\"jti\":");
        sb_cstr(&b, r->caller.jti, CAP_JTI);
        sb_lit(&b, ",\"aws_account\":");
        sb_cstr(&b, r->caller.aws_account, CAP_ACCOUNT);
        sb_lit(&b, ",\"token_sha256\":");
        sb_cstr(&b, r->caller.token_sha256, CAP_HASH);
        sb_lit(&b, "}");
    } else {
        sb_lit(&b, "null");
    }

    sb_lit(&b, ",\"request\":{\"method\":");
    sb_str(&b, r->request.method, r->request.method_len, CAP_METHOD);
    sb_lit(&b, ",\"path\":");
    sb_str(&b, r->request.path, r->request.path_len, CAP_PATH);
    sb_lit(&b, ",\"query\":");
    if (r->request.query) {
        size_t qlen;
        char *q = redact_query(r->request.query, r->request.query_len, &qlen);
        sb_str(&b, q, qlen, CAP_QUERY);
        free(q);
    } else {
        sb_lit(&b, "null");
    }
    sb_lit(&b, ",\"client\":");
    sb_cstr(&b, r->request.client, CAP_CLIENT);
    sb_lit(&b, ",\"user_agent\":");
    if (r->request.user_agent &&
        redact_is_credential(r->request.user_agent, r->request.user_agent_len))
        sb_lit(&b, "\"[redacted]\"");
    else
        sb_str(&b, r->request.user_agent, r->request.user_agent_len, CAP_UA);
    sb_lit(&b, ",\"bytes_in\":");
    sb_count(&b, r->request.bytes_in);
    sb_lit(&b, ",\"headers\":[");
    for (size_t i = 0; i < r->request.n_headers; i++) {
        const struct audit_header *h = &r->request.headers[i];
        const char *conf = NULL;
        if (!h->name)
            continue;
        for (size_t j = 0; j < n_allowed && !conf; j++)
            if (!ascii_casecmp_n(h->name, strlen(h->name), allowed[j], strlen(allowed[j])))
                conf = allowed[j];
        if (!conf || config_header_is_secret(conf, strlen(conf)))
            continue; /* never configured, or refused: not recorded */
        if (recorded == AUDIT_MAX_RECORD_HEADERS) {
            b.truncated = true;
            break;
        }
        if (recorded)
            sb_lit(&b, ",");
        sb_lit(&b, "[");
        sb_cstr(&b, conf, CAP_HNAME);
        sb_lit(&b, ",");
        if (h->value && redact_is_credential(h->value, h->value_len))
            sb_lit(&b, "\"[redacted]\"");
        else
            sb_str(&b, h->value ? h->value : "", h->value ? h->value_len : 0,
                   AUDIT_HEADER_VALUE_MAX);
        sb_lit(&b, "]");
        recorded++;
    }
    sb_lit(&b, "]}");

    sb_lit(&b, ",\"upstream\":");
    if (r->upstream.name) {
        sb_lit(&b, "{\"name\":");
        sb_cstr(&b, r->upstream.name, CAP_NAME);
        sb_lit(&b, ",\"status\":");
        sb_int_or_null(&b, r->upstream.status > 0, r->upstream.status);
        sb_lit(&b, ",\"latency_ms\":");
        sb_int_or_null(&b, r->upstream.latency_ms >= 0, r->upstream.latency_ms);
        sb_lit(&b, ",\"bytes\":");
        sb_count(&b, r->upstream.bytes);
        sb_lit(&b, ",\"identity\":");
        sb_cstr(&b, r->upstream.identity, CAP_IDENTITY);
        sb_lit(&b, ",\"audience\":");
        sb_cstr(&b, r->upstream.audience, CAP_CLAIM);
        sb_lit(&b, "}");
    } else {
        sb_lit(&b, "null");
    }
    sb_lit(&b, ",\"bytes_out\":");
    sb_count(&b, r->bytes_out);
    sb_lit(&b, ",\"duration_ms\":");
    sb_int_or_null(&b, r->duration_ms >= 0, r->duration_ms);
    sb_lit(&b, ",\"worker\":");
    sb_int_or_null(&b, r->worker >= 0, r->worker);
    sb_lit(&b, ",\"client_request_id\":");
    sb_cstr(&b, r->client_request_id, CAP_ID);
    if (r->link.op) {
        sb_lit(&b, ",\"link\":{\"op\":");
        sb_cstr(&b, r->link.op, CAP_METHOD);
        sb_lit(&b, ",\"id\":");
        sb_cstr(&b, r->link.id, CAP_HASH);
        sb_lit(&b, ",\"method\":");
        sb_cstr(&b, r->link.method, CAP_METHOD);
        sb_lit(&b, ",\"path\":");
        if (r->link.path) {
            struct sb q = {0};
            const char *qm = memchr(r->link.path, '?', r->link.path_len);
            size_t pl = qm ? (size_t)(qm - r->link.path) : r->link.path_len;
            sb_put(&q, r->link.path, pl);
            if (qm) { /* the query as request.query is: secret-looking values redacted */
                size_t rql;
                char *rq = redact_query(qm + 1, r->link.path_len - pl - 1, &rql);
                sb_lit(&q, "?");
                sb_put(&q, rq, rql);
                free(rq);
            }
            sb_str(&b, q.buf ? q.buf : "", q.len, CAP_PATH);
            free(q.buf);
        } else {
            sb_lit(&b, "null");
        }
        sb_lit(&b, ",\"exp\":");
        sb_int_or_null(&b, r->link.exp > 0, r->link.exp);
        sb_lit(&b, ",\"uses\":");
        sb_int_or_null(&b, r->link.exp > 0, r->link.uses);
        sb_lit(&b, ",\"kid\":");
        sb_cstr(&b, r->link.kid, CAP_ID);
        sb_lit(&b, ",\"minter\":");
        sb_cstr(&b, r->link.minter, CAP_ID);
        sb_lit(&b, "}");
    } else {
        sb_lit(&b, ",\"link\":null");
    }
    if (b.truncated)
        sb_lit(&b, ",\"truncated\":true");
    *b0 = b;
}

char *audit_record_body(const struct audit_record *r, char *const *allowed, size_t n_allowed,
                        size_t *len)
{
    struct sb b = {0};

    sb_reserve(&b, 2048); /* a typical record is 1-1.5 KB: no realloc */
    record_body(&b, r, allowed, n_allowed);
    *len = b.len;
    return b.buf;
}

/* --------------------------------------------------------- line formatting */

#define AUDIT_STR_(x) #x
#define AUDIT_STR(x) AUDIT_STR_(x)

/* The fields the writer gives a record, in front of its body: once per
 * record on the writer thread, so without printf. Returns the length, or -1
 * when it does not fit in cap (with its NUL). */
static int fmt_prefix(char *out, size_t cap, uint64_t seq, const char *prev, const char *log_id)
{
    static const char a[] = "{\"v\":" AUDIT_STR(AUDIT_FORMAT_VERSION) ",\"seq\":";
    static const char b[] = ",\"prev\":\"", c[] = "\",\"log\":\"", d[] = "\",";
    size_t lp = strlen(prev), ll = strlen(log_id), p = 0;
    char digits[20];
    size_t nd = u64_decimal(seq, digits);

    if (sizeof(a) + nd + sizeof(b) + lp + sizeof(c) + ll + sizeof(d) - 3 > cap)
        return -1;
    memcpy(out, a, sizeof(a) - 1);
    p = sizeof(a) - 1;
    memcpy(out + p, digits, nd);
    p += nd;
    memcpy(out + p, b, sizeof(b) - 1);
    p += sizeof(b) - 1;
    memcpy(out + p, prev, lp);
    p += lp;
    memcpy(out + p, c, sizeof(c) - 1);
    p += sizeof(c) - 1;
    memcpy(out + p, log_id, ll);
    p += ll;
    memcpy(out + p, d, sizeof(d));
    return (int)(p + sizeof(d) - 1);
}

size_t audit_checkpoint_message(char *out, size_t cap, const char *log_id, uint64_t seq,
                                const char *head, const char *ts, const char *key_id)
{
    int n = snprintf(out, cap, "baton-audit-checkpoint/1\n%s\n%" PRIu64 "\n%s\n%s\n%s\n", log_id,
                     seq, head, ts, key_id);
    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

size_t audit_checkpoint_line(char *out, size_t cap, const char *log_id, uint64_t seq,
                             const char *prev, const char *ts, const char *key_id,
                             const char *sig_hex)
{
    int p = fmt_prefix(out, cap, seq, prev, log_id), n;
    if (p < 0 || (size_t)p >= cap)
        return 0;
    n = snprintf(out + p, cap - (size_t)p,
                 "\"kind\":\"checkpoint\",\"ts\":\"%s\",\"key_id\":\"%s\",\"sig\":\"%s\"}", ts,
                 key_id, sig_hex);
    return n < 0 || (size_t)n >= cap - (size_t)p ? 0 : (size_t)p + (size_t)n;
}

/* ------------------------------------------------------------------ the log */

struct audit_item {
    struct audit_item *next;
    void (*durable)(void *arg, int ok);
    void *arg;
    char *body; /* inline_body, or owned (a record longer than AUDIT_INLINE_BODY) */
    size_t len;
    char inline_body[]; /* AUDIT_INLINE_BODY bytes */
};

/* A typical record is 1-1.5 KB: item and body in one allocation, where a
 * separate body would cost a second malloc and free per request. */
#define AUDIT_INLINE_BODY 2048

static void item_free(struct audit_item *it)
{
    if (it->body != it->inline_body)
        free(it->body);
    free(it);
}

struct ilist {
    struct audit_item *head, **tail;
    size_t n;
};

/* What the writer can roll back to: the chain position and the file size. */
struct wstate {
    uint64_t seq;           /* seq of the next line */
    char prev[65];          /* SHA-256 hex of the last line */
    uint64_t size;          /* bytes in the current file */
    uint64_t since_ckpt;    /* lines after the last checkpoint */
    uint64_t lost_recorded; /* losses already told by `lost` records */
    uint64_t refused_recorded; /* refusals already told by `lost` records */
    bool marker_pending;    /* the file's first record (open/rotate) is still to write */
};

struct audit_log {
    /* configuration, immutable once open */
    char *path;
    bool to_stdout;
    enum cfg_fsync fsync;
    enum cfg_on_failure on_failure;
    char **headers;
    size_t n_headers;
    uint64_t rotate_bytes;
    unsigned batch_ms, checkpoint_records, checkpoint_interval_s;
    size_t queue_cap;
    EVP_PKEY *key; /* NULL: no checkpoints */
    char *pub_pem;
    unsigned char pub_raw[32];
    char key_id[65];
    char log_id[33];

    /* the queue, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    bool thread_started;
    struct audit_item *qhead, **qtail;
    size_t qlen;
    bool writer_waiting;   /* idle: any new record wakes it */
    bool writer_lingering; /* gathering: only AUDIT_WAKE_RECORDS records wake it */
    bool stop, reopen_req;

    /* shared counters */
    atomic_size_t slots;            /* reserved, queued, or awaiting durability */
    atomic_bool failed;
    atomic_uint_fast64_t lost_queue; /* submit-side losses the writer has not seen */
    atomic_uint_fast64_t refused_queue; /* reserve refusals the writer has not seen */
    atomic_uint_fast64_t st_written, st_markers, st_checkpoints, st_bytes, st_fsyncs,
        st_rotations, st_failures, st_lost, st_refused;

    /* writer thread only */
    int fd;
    struct wstate cur, committed, synced;
    bool need_truncate;             /* a failed write could not be cut back yet */
    bool failure_unrecorded;        /* a failure no `lost` record tells yet */
    bool stdout_torn;
    uint64_t file_first_seq, file_marker_end;
    char *marker_body;              /* the open/rotate record of the current file */
    struct sb out;                  /* lines not yet written */
    size_t out_lines;
    struct ilist inbuf, unsynced;   /* their records, and written ones awaiting fsync */
    uint64_t unsynced_since_ns, last_ckpt_ns, next_probe_ns, rotate_hold_ns, last_log_ns;
    uint64_t lost_total;            /* every loss so far */
    uint64_t refused_total;         /* every refusal the writer has seen */
    int64_t lost_since_ms;
    char lost_error[128];

    /* witness: the open record and checkpoints, handed over once written */
    struct audit_witness *witness;  /* owned, or NULL */
    bool witness_marker;            /* the pending marker is the open record */
    struct wnote {
        uint64_t seq;
        char *line;                 /* owned, without newline */
        size_t len;
    } *wnotes;                      /* formatted, not yet written */
    size_t n_wnotes, cap_wnotes, n_wsync;
    char *run_path;                 /* the run marker (docs/audit.md), NULL for stdout */
    char started[32];               /* when this run opened the log */
};

/* batch and group: fsync within batch_ms or every AUDIT_BATCH_RECORDS records */
static bool batch_timed(const struct audit_log *log)
{
    return log->fsync == FSYNC_BATCH || log->fsync == FSYNC_GROUP;
}

/* Remembers the line just formatted at out.buf + start (len bytes) for the
 * witness; handed over by w_flush once written, dropped if the write fails. */
static void w_witness_note(struct audit_log *log, uint64_t seq, size_t start, size_t len)
{
    if (!log->witness)
        return;
    if (log->n_wnotes == log->cap_wnotes) {
        log->cap_wnotes = log->cap_wnotes ? log->cap_wnotes * 2 : 4;
        log->wnotes = xrealloc(log->wnotes, log->cap_wnotes * sizeof(*log->wnotes));
    }
    log->wnotes[log->n_wnotes].seq = seq;
    log->wnotes[log->n_wnotes].line = xstrndup(log->out.buf + start, len);
    log->wnotes[log->n_wnotes].len = len;
    log->n_wnotes++;
}

/* Notes [0, n_wsync) are written and await their fsync; the rest are not
 * written yet. The witness only ever holds lines that are as durable as the
 * mode makes them: a line cut back after a failed write or fsync is dropped
 * (its seq will be reused), never witnessed. */
static void w_witness_take(struct audit_log *log, size_t n, bool put)
{
    for (size_t i = 0; i < n; i++) {
        if (put)
            audit_witness_put(log->witness, log->log_id, log->wnotes[i].seq, log->wnotes[i].line,
                              log->wnotes[i].len);
        free(log->wnotes[i].line);
    }
    if (n < log->n_wnotes)
        memmove(log->wnotes, log->wnotes + n, (log->n_wnotes - n) * sizeof(*log->wnotes));
    log->n_wnotes -= n;
    log->n_wsync = log->n_wsync > n ? log->n_wsync - n : 0;
}

/* After a write (ok or not). */
static void w_witness_written(struct audit_log *log, bool ok)
{
    if (!ok) {
        for (size_t i = log->n_wsync; i < log->n_wnotes; i++)
            free(log->wnotes[i].line); /* the unwritten ones */
        log->n_wnotes = log->n_wsync;
    } else if (log->fsync == FSYNC_NONE || log->to_stdout)
        w_witness_take(log, log->n_wnotes, true);
    else
        log->n_wsync = log->n_wnotes;
}

static void ilist_init(struct ilist *l)
{
    l->head = NULL;
    l->tail = &l->head;
    l->n = 0;
}

static void ilist_append(struct ilist *l, struct audit_item *it)
{
    it->next = NULL;
    *l->tail = it;
    l->tail = &it->next;
    l->n++;
}

static void ilist_concat(struct ilist *dst, struct ilist *src)
{
    if (!src->head)
        return;
    *dst->tail = src->head;
    dst->tail = src->tail;
    dst->n += src->n;
    ilist_init(src);
}

static const char *fsync_name(enum cfg_fsync f)
{
    return f == FSYNC_ALWAYS ? "always" : f == FSYNC_BATCH ? "batch" : f == FSYNC_GROUP ? "group" : "none";
}

/* Runs each record's callback and frees it; its slot is free again. */
static void w_ack(struct audit_log *log, struct ilist *l, int ok)
{
    struct audit_item *it = l->head, *next;
    size_t n = l->n;

    for (; it; it = next) {
        next = it->next;
        if (it->durable)
            it->durable(it->arg, ok);
        item_free(it);
    }
    if (ok) {
        atomic_fetch_add(&log->st_written, n);
    } else if (n) {
        log->lost_total += n;
        atomic_fetch_add(&log->st_lost, n);
    }
    atomic_fetch_sub(&log->slots, n);
    ilist_init(l);
}

/* Logs at most once a second while failing, so a full disk does not flood stderr. */
static void w_log_failure(struct audit_log *log, const char *what, int err)
{
    uint64_t now = mono_ns();
    if (log->last_log_ns && now - log->last_log_ns < 1000000000u)
        return;
    log->last_log_ns = now;
    log_msg(LOG_ERROR, "audit: %s %s failed: %s (%" PRIu64 " records lost so far)", what,
            log->path, strerror(err), log->lost_total);
}

/* Called as a loss happens, before it is counted: starts the period the
 * next `lost` record describes. */
static void w_note_loss(struct audit_log *log)
{
    if (!log->failure_unrecorded && log->lost_total == log->cur.lost_recorded &&
        log->refused_total == log->cur.refused_recorded)
        log->lost_since_ms = now_ms();
}

static void w_fail(struct audit_log *log, const char *what, int err)
{
    w_note_loss(log);
    log->failure_unrecorded = true;
    snprintf(log->lost_error, sizeof(log->lost_error), "%s: %s", what, strerror(err));
    atomic_fetch_add(&log->st_failures, 1);
    atomic_store(&log->failed, true);
    log->next_probe_ns = mono_ns() + AUDIT_RETRY_MS * 1000000ull;
    w_log_failure(log, what, err);
}

/* Cuts the file back to `size` after a failed write or fsync. */
static void w_truncate(struct audit_log *log, uint64_t size)
{
    if (log->to_stdout)
        return;
    log->need_truncate = ftruncate(log->fd, (off_t)size) != 0;
}

/* Ends the line just formatted at out.buf + start (len bytes, no newline):
 * chains it and advances the state. */
static void w_line_done(struct audit_log *log, size_t start, size_t len)
{
    sha256_hex(log->out.buf + start, len, log->cur.prev);
    log->out.buf[start + len] = '\n';
    log->out.len = start + len + 1;
    log->out.buf[log->out.len] = '\0';
    log->out_lines++;
    log->cur.seq++;
    log->cur.size += len + 1;
    log->cur.since_ckpt++;
}

static void w_append_body(struct audit_log *log, const char *body, size_t blen)
{
    size_t start = log->out.len;
    int p;

    sb_reserve(&log->out, AUDIT_PREFIX_MAX + blen + 2);
    p = fmt_prefix(log->out.buf + start, AUDIT_PREFIX_MAX, log->cur.seq, log->cur.prev,
                   log->log_id);
    if (p < 0)
        abort(); /* prev and log are fixed-length hex: 149 bytes at most */
    memcpy(log->out.buf + start + p, body, blen);
    log->out.buf[start + p + blen] = '}';
    w_line_done(log, start, (size_t)p + blen + 1);
}

static void w_checkpoint(struct audit_log *log)
{
    char ts[32], msg[512], sig_hex[129];
    unsigned char sig[64];
    size_t siglen = sizeof(sig), mlen, start, n;
    EVP_MD_CTX *ctx = NULL;

    if (!log->key)
        return;
    fmt_ts(now_ms(), ts);
    mlen = audit_checkpoint_message(msg, sizeof(msg), log->log_id, log->cur.seq, log->cur.prev,
                                    ts, log->key_id);
    ctx = EVP_MD_CTX_new();
    if (!mlen || !ctx || EVP_DigestSignInit(ctx, NULL, NULL, NULL, log->key) != 1 ||
        EVP_DigestSign(ctx, sig, &siglen, (const unsigned char *)msg, mlen) != 1 ||
        siglen != sizeof(sig))
        goto fail;
    hex_encode(sig, sizeof(sig), sig_hex);
    start = log->out.len;
    sb_reserve(&log->out, 512);
    n = audit_checkpoint_line(log->out.buf + start, 510, log->log_id, log->cur.seq,
                              log->cur.prev, ts, log->key_id, sig_hex);
    if (!n)
        goto fail;
    w_witness_note(log, log->cur.seq, start, n);
    w_line_done(log, start, n);
    log->cur.since_ckpt = 0;
    atomic_fetch_add(&log->st_checkpoints, 1);
    goto out;
fail:
    atomic_fetch_add(&log->st_failures, 1);
    log_msg(LOG_ERROR, "audit: signing a checkpoint failed");
out:
    log->last_ckpt_ns = mono_ns(); /* on failure too: retried at the next interval */
    EVP_MD_CTX_free(ctx);
}

/* Writes what a file or a batch must begin with: the file's open/rotate
 * record, then a `lost` record when records were lost since the last one. */
static void w_prelude(struct audit_log *log)
{
    uint64_t q = atomic_exchange(&log->lost_queue, 0);
    uint64_t r = atomic_exchange(&log->refused_queue, 0);

    if (q || r) {
        w_note_loss(log);
        log->lost_total += q;
        log->refused_total += r;
        if (!log->failure_unrecorded && !atomic_load(&log->failed))
            snprintf(log->lost_error, sizeof(log->lost_error), "queue full");
    }
    if (log->cur.marker_pending) {
        size_t start = log->out.len;
        uint64_t seq = log->cur.seq;
        w_append_body(log, log->marker_body, strlen(log->marker_body));
        if (log->witness_marker)
            w_witness_note(log, seq, start, log->out.len - start - 1);
        log->cur.marker_pending = false;
        log->file_marker_end = log->cur.size;
    }
    if (log->failure_unrecorded || log->lost_total > log->cur.lost_recorded ||
        log->refused_total > log->cur.refused_recorded) {
        struct sb b = {0};
        char ts[32], since[32];
        fmt_ts(now_ms(), ts);
        fmt_ts(log->lost_since_ms, since);
        sb_fmt(&b,
               "\"kind\":\"lost\",\"ts\":\"%s\",\"count\":%" PRIu64 ",\"refused\":%" PRIu64
               ",\"since\":\"%s\",\"error\":",
               ts, log->lost_total - log->cur.lost_recorded,
               log->refused_total - log->cur.refused_recorded, since);
        sb_cstr(&b, log->lost_error, sizeof(log->lost_error));
        w_append_body(log, b.buf, b.len);
        free(b.buf);
        log->cur.lost_recorded = log->lost_total;
        log->cur.refused_recorded = log->refused_total;
        log->failure_unrecorded = false;
    }
}

/* Writes the buffer. On failure the file is cut back to the last good write
 * and the buffered records are lost. */
static int w_flush(struct audit_log *log)
{
    size_t off = 0, markers;
    int err;

    if (!log->out.len)
        return 0;
    if (log->need_truncate) {
        w_truncate(log, log->committed.size);
        if (log->need_truncate) {
            err = errno;
            goto fail;
        }
    }
    if (log->stdout_torn) { /* end the torn piece so the next line stands alone */
        if (write(log->fd, "\n", 1) != 1) {
            err = errno;
            goto fail;
        }
        log->stdout_torn = false;
    }
    while (off < log->out.len) {
        ssize_t n = write(log->fd, log->out.buf + off, log->out.len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            err = n < 0 ? errno : EIO;
            goto fail;
        }
        off += (size_t)n;
    }
    markers = log->out_lines - log->inbuf.n;
    atomic_fetch_add(&log->st_bytes, log->out.len);
    atomic_fetch_add(&log->st_markers, markers);
    log->out.len = 0;
    log->out_lines = 0;
    w_witness_written(log, true);
    if (log->committed.seq == log->synced.seq)
        log->unsynced_since_ns = mono_ns(); /* the first line awaiting fsync */
    log->committed = log->cur;
    if (log->fsync == FSYNC_NONE || log->to_stdout) {
        log->synced = log->committed; /* nothing promised beyond the write */
        w_ack(log, &log->inbuf, 1);
    } else {
        ilist_concat(&log->unsynced, &log->inbuf);
    }
    if (atomic_exchange(&log->failed, false))
        log_msg(LOG_WARNING, "audit: writing %s again (%" PRIu64 " records lost in all)",
                log->path, log->lost_total);
    return 0;
fail:
    if (log->to_stdout && off)
        log->stdout_torn = true;
    else
        w_truncate(log, log->committed.size);
    log->out.len = 0;
    log->out_lines = 0;
    w_witness_written(log, false);
    log->cur = log->committed;
    w_note_loss(log);
    w_ack(log, &log->inbuf, 0);
    w_fail(log, "write to", err);
    return -1;
}

/* fsync per mode (or whatever the mode with force). On failure the file is
 * cut back to the last fsync and the records written since are lost. */
static int w_sync(struct audit_log *log, bool force)
{
    int err;

    if (log->to_stdout)
        return 0;
    if (!force && log->fsync == FSYNC_NONE)
        return 0;
    if (!force && log->synced.seq == log->committed.seq && log->synced.size == log->committed.size)
        return 0; /* every line written is fsynced already */
    if (fsync(log->fd) != 0) {
        err = errno;
        w_truncate(log, log->synced.size);
        log->cur = log->committed = log->synced;
        w_witness_take(log, log->n_wnotes, false);
        w_note_loss(log);
        w_ack(log, &log->unsynced, 0);
        w_fail(log, "fsync of", err);
        return -1;
    }
    atomic_fetch_add(&log->st_fsyncs, 1);
    log->synced = log->committed;
    w_witness_take(log, log->n_wsync, true);
    w_ack(log, &log->unsynced, 1);
    return 0;
}

/* Write, then fsync when the mode wants it now. */
static int w_commit(struct audit_log *log)
{
    if (w_flush(log) != 0)
        return -1;
    if (log->fsync == FSYNC_ALWAYS)
        return w_sync(log, false);
    if (batch_timed(log) && log->unsynced.n >= AUDIT_BATCH_RECORDS)
        return w_sync(log, false);
    return 0;
}

static void fsync_dir_of(const char *path)
{
    char *copy = xstrdup(path);
    int dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    free(copy);
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static void write_run(struct audit_log *log);

/* Closes the current file with a checkpoint and continues the chain in a new
 * one at `path`: after renaming the current file to path.<first seq> (cause
 * "size"), or after logrotate moved it (cause "reopen"). */
static void w_rotate(struct audit_log *log, const char *cause)
{
    char *rotated = NULL;
    struct sb m = {0};
    char ts[32];
    int nfd = -1, err = 0;
    struct stat st;
    bool by_size = !strcmp(cause, "size");

    if (log->cur.marker_pending || (by_size && log->cur.size <= log->file_marker_end))
        return; /* nothing but the marker in this file */
    w_prelude(log);
    if (log->cur.since_ckpt)
        w_checkpoint(log);
    if (w_flush(log) != 0 || w_sync(log, true) != 0)
        return;
    if (by_size) {
        rotated = xasprintf("%s.%020" PRIu64, log->path, log->file_first_seq);
        if (renameat2(AT_FDCWD, log->path, AT_FDCWD, rotated, RENAME_NOREPLACE) != 0) {
            err = errno;
            goto fail;
        }
    }
    nfd = open(log->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (nfd < 0) {
        err = errno;
        goto fail;
    }
    if (fstat(nfd, &st) != 0 || st.st_size != 0) {
        err = EEXIST; /* someone else's file is at the path: do not write into it */
        goto fail;
    }
    fsync_dir_of(log->path);
    close(log->fd);
    log->fd = nfd;
    nfd = -1;
    fmt_ts(now_ms(), ts);
    sb_fmt(&m, "\"kind\":\"rotate\",\"ts\":\"%s\",\"cause\":\"%s\",\"prev_file\":", ts, cause);
    sb_cstr(&m, rotated ? base_name(rotated) : NULL, CAP_FILE);
    free(log->marker_body);
    log->marker_body = m.buf;
    log->cur.size = 0;
    log->cur.marker_pending = true;
    log->committed = log->synced = log->cur;
    log->file_first_seq = log->cur.seq;
    log->file_marker_end = 0;
    atomic_fetch_add(&log->st_rotations, 1);
    write_run(log); /* a crash now must look for this file */
    w_prelude(log);
    goto out;
fail:
    /* The chain goes on in the file we have; try again later. */
    atomic_fetch_add(&log->st_failures, 1);
    log_msg(LOG_ERROR, "audit: rotating %s (%s) failed: %s; writing on in the current file",
            log->path, cause, strerror(err));
    log->rotate_hold_ns = mono_ns() + AUDIT_ROTATE_HOLD_S * 1000000000ull;
    if (rotated && nfd < 0 && access(log->path, F_OK) != 0)
        (void)rename(rotated, log->path); /* renamed but no new file: put it back */
out:
    if (nfd >= 0)
        close(nfd);
    free(rotated);
}

static void w_reopen(struct audit_log *log)
{
    struct stat a, b;
    if (log->to_stdout)
        return;
    if (fstat(log->fd, &a) == 0 && stat(log->path, &b) == 0 && a.st_dev == b.st_dev &&
        a.st_ino == b.st_ino)
        return; /* still the file at the path: nothing to do */
    log->rotate_hold_ns = 0;
    w_rotate(log, "reopen");
    (void)w_commit(log);
}

static void w_put(struct audit_log *log, struct audit_item *it)
{
    if (log->rotate_bytes && !log->to_stdout && mono_ns() >= log->rotate_hold_ns &&
        log->cur.size > log->file_marker_end &&
        log->cur.size + it->len + AUDIT_PREFIX_MAX > log->rotate_bytes) {
        w_rotate(log, "size");
    }
    w_prelude(log);
    w_append_body(log, it->body, it->len);
    ilist_append(&log->inbuf, it);
    if (log->key && log->cur.since_ckpt >= log->checkpoint_records)
        w_checkpoint(log);
    if (log->out.len >= AUDIT_FLUSH_BYTES)
        (void)w_commit(log);
}

/* The next time the writer must wake without new records (mono ns), 0: none. */
static uint64_t w_deadline(const struct audit_log *log)
{
    uint64_t d = UINT64_MAX;
    if (batch_timed(log) && log->committed.seq != log->synced.seq) {
        uint64_t t = log->unsynced_since_ns + log->batch_ms * 1000000ull;
        d = t < d ? t : d;
    }
    if (log->key) { /* a heartbeat even when nothing was written (docs/audit.md) */
        uint64_t t = log->last_ckpt_ns + log->checkpoint_interval_s * 1000000000ull;
        d = t < d ? t : d;
    }
    if (atomic_load(&log->failed) && log->next_probe_ns < d)
        d = log->next_probe_ns;
    return d == UINT64_MAX ? 0 : d;
}

/* Work due on time rather than on records: batch fsync, timed checkpoint,
 * and a retry while failing (the retry writes the pending `lost` record). */
static void w_timers(struct audit_log *log)
{
    uint64_t now = mono_ns();

    if (batch_timed(log) && log->committed.seq != log->synced.seq &&
        now >= log->unsynced_since_ns + log->batch_ms * 1000000ull)
        (void)w_sync(log, false);
    if (log->key &&
        now >= log->last_ckpt_ns + log->checkpoint_interval_s * 1000000000ull) {
        w_prelude(log);
        w_checkpoint(log);
        (void)w_commit(log);
    }
    if (atomic_load(&log->failed) && now >= log->next_probe_ns) {
        log->next_probe_ns = now + AUDIT_RETRY_MS * 1000000ull;
        w_prelude(log);
        if (w_flush(log) == 0 && log->fsync != FSYNC_NONE)
            (void)w_sync(log, false);
    }
}

static void w_batch(struct audit_log *log, struct audit_item *items)
{
    while (items) {
        struct audit_item *next = items->next;
        w_put(log, items);
        items = next;
    }
    (void)w_commit(log);
    w_timers(log);
}

static void *writer_main(void *arg)
{
    struct audit_log *log = arg;
    struct audit_item *items;
    bool stop, reopen;

    bool linger = false;

    pthread_mutex_lock(&log->mu);
    for (;;) {
        if (linger) {
            /* the last list had records: let the next one gather (header comment) */
            uint64_t until = mono_ns() + AUDIT_LINGER_NS, d = w_deadline(log);
            struct timespec ts;
            if (d && d < until)
                until = d;
            ts.tv_sec = (time_t)(until / 1000000000u);
            ts.tv_nsec = (long)(until % 1000000000u);
            log->writer_lingering = true;
            while (!log->stop && !log->reopen_req && log->qlen < AUDIT_WAKE_RECORDS)
                if (pthread_cond_timedwait(&log->cv, &log->mu, &ts) == ETIMEDOUT)
                    break;
            log->writer_lingering = false;
        }
        while (!log->qhead && !log->stop && !log->reopen_req) {
            uint64_t d = w_deadline(log);
            log->writer_waiting = true;
            if (!d) {
                pthread_cond_wait(&log->cv, &log->mu);
            } else {
                struct timespec ts = {(time_t)(d / 1000000000u), (long)(d % 1000000000u)};
                if (mono_ns() >= d ||
                    pthread_cond_timedwait(&log->cv, &log->mu, &ts) == ETIMEDOUT) {
                    log->writer_waiting = false;
                    break;
                }
            }
            log->writer_waiting = false;
        }
        items = log->qhead;
        log->qhead = NULL;
        log->qtail = &log->qhead;
        log->qlen = 0;
        linger = items && log->fsync != FSYNC_ALWAYS;
        stop = log->stop;
        reopen = log->reopen_req;
        log->reopen_req = false;
        pthread_mutex_unlock(&log->mu);

        if (reopen)
            w_reopen(log);
        w_batch(log, items);

        pthread_mutex_lock(&log->mu);
        if (stop && !log->qhead)
            break;
    }
    pthread_mutex_unlock(&log->mu);

    /* close: every record is written; seal the chain with a checkpoint, also
     * when a heartbeat just did: the last line of a clean stop is a checkpoint */
    w_prelude(log);
    if (log->key)
        w_checkpoint(log);
    (void)w_flush(log);
    (void)w_sync(log, true); /* whatever the mode: a clean stop is durable */
    w_ack(log, &log->unsynced, 0); /* nothing is left here unless stdout */
    return NULL;
}

/* ----------------------------------------------------- open: key and tail */

static int load_key(struct audit_log *log, const char *path, char *err, size_t errlen)
{
    char *pem = NULL;
    size_t len, rawlen = sizeof(log->pub_raw);
    BIO *in = NULL, *out = NULL;
    BUF_MEM *mem;
    int rc = -1;

    {
        /* the key that makes the log trustworthy: refused when others can read it */
        char why[512];
        pem = read_secret_file(path, AUDIT_KEY_FILE_MAX, &len, why, sizeof(why));
        if (!pem) {
            errbuf_set(err, errlen, "audit signing_key %s", why);
            goto out;
        }
    }
    in = BIO_new_mem_buf(pem, (int)len);
    log->key = in ? PEM_read_bio_PrivateKey(in, NULL, NULL, NULL) : NULL;
    if (!log->key || EVP_PKEY_get_id(log->key) != EVP_PKEY_ED25519) {
        errbuf_set(err, errlen, "audit signing_key %s: not a PEM Ed25519 private key", path);
        goto out;
    }
    if (EVP_PKEY_get_raw_public_key(log->key, log->pub_raw, &rawlen) != 1 || rawlen != 32)
        goto bad;
    sha256_hex(log->pub_raw, sizeof(log->pub_raw), log->key_id);
    out = BIO_new(BIO_s_mem());
    if (!out || PEM_write_bio_PUBKEY(out, log->key) != 1)
        goto bad;
    BIO_get_mem_ptr(out, &mem);
    log->pub_pem = xstrndup(mem->data, mem->length);
    rc = 0;
    goto out;
bad:
    errbuf_set(err, errlen, "audit signing_key %s: cannot derive its public key", path);
out:
    if (pem)
        OPENSSL_cleanse(pem, len);
    free(pem);
    BIO_free(in);
    BIO_free(out);
    return rc;
}

static bool is_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return s[n] == '\0';
}

/* Parses a line of ours enough to continue after it: seq and log id (and its
 * ts into ts_out when not NULL, "" when it has none). */
static int parse_tail_record_ts(const char *line, size_t len, uint64_t *seq, char log_id[33],
                                char ts_out[32])
{
    json_t *root = json_loadb(line, len, JSON_REJECT_DUPLICATES, NULL);
    json_t *v, *s, *l, *ts;
    int rc = -1;

    if (!json_is_object(root))
        goto out;
    v = json_object_get(root, "v");
    s = json_object_get(root, "seq");
    l = json_object_get(root, "log");
    if (!json_is_integer(v) || json_integer_value(v) != AUDIT_FORMAT_VERSION ||
        !json_is_integer(s) || json_integer_value(s) < 0 || !json_is_string(l) ||
        json_string_length(l) != 32 || !is_hex(json_string_value(l), 32))
        goto out;
    *seq = (uint64_t)json_integer_value(s);
    memcpy(log_id, json_string_value(l), 33);
    if (ts_out) {
        ts = json_object_get(root, "ts");
        snprintf(ts_out, 32, "%s", json_is_string(ts) && json_string_length(ts) < 32
                                       ? json_string_value(ts) : "");
    }
    rc = 0;
out:
    json_decref(root);
    return rc;
}

static int parse_tail_record(const char *line, size_t len, uint64_t *seq, char log_id[33])
{
    return parse_tail_record_ts(line, len, seq, log_id, NULL);
}

struct tail {
    char ts[32];      /* of the last complete record, "" if it has none */
    uint64_t seq;     /* of the last complete record */
    char prev[65];    /* its hash */
    char log_id[33];
    uint64_t keep;    /* bytes up to and including its newline */
    uint64_t torn;    /* bytes after it without a newline */
    char torn_sha256[65];
    bool found;       /* a complete record exists */
};

/* Finds the last complete line of `fd` (size bytes) and what follows it. */
static int read_tail(int fd, uint64_t size, const char *name, bool allow_torn, struct tail *t,
                     char *err, size_t errlen)
{
    uint64_t window = size < 2 * (AUDIT_LINE_MAX + 1ull) ? size : 2 * (AUDIT_LINE_MAX + 1ull);
    uint64_t base = size - window;
    char *buf = xmalloc(window + 1);
    size_t got = 0;
    ssize_t n;
    const char *nl, *start;
    int rc = -1;

    memset(t, 0, sizeof(*t));
    while (got < window) {
        n = pread(fd, buf + got, window - got, (off_t)(base + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            errbuf_set(err, errlen, "audit log %s: reading its tail: %s", name,
                    n < 0 ? strerror(errno) : "file shrank");
            goto out;
        }
        got += (size_t)n;
    }
    nl = memrchr(buf, '\n', window);
    if (!nl) {
        if (base != 0) {
            errbuf_set(err, errlen, "audit log %s: no newline in its last %" PRIu64 " bytes", name,
                    window);
            goto out;
        }
        t->keep = 0; /* only a torn first line */
    } else {
        t->keep = base + (uint64_t)(nl - buf) + 1;
    }
    t->torn = size - t->keep;
    if (t->torn) {
        if (!allow_torn) {
            errbuf_set(err, errlen, "audit log %s: last line has no newline (torn)", name);
            goto out;
        }
        sha256_hex(buf + (t->keep - base), t->torn, t->torn_sha256);
    }
    if (!nl) {
        rc = 0;
        goto out;
    }
    start = nl;
    while (start > buf && start[-1] != '\n')
        start--;
    if (start == buf && base != 0) {
        errbuf_set(err, errlen, "audit log %s: last line longer than %d bytes", name, AUDIT_LINE_MAX);
        goto out;
    }
    if (parse_tail_record_ts(start, (size_t)(nl - start), &t->seq, t->log_id, t->ts) != 0) {
        errbuf_set(err, errlen,
                "audit log %s: its last line is not an audit record; move the file aside to "
                "start a new chain", name);
        goto out;
    }
    sha256_hex(start, (size_t)(nl - start), t->prev);
    t->found = true;
    rc = 0;
out:
    free(buf);
    return rc;
}

/* seq of the first record in fd, for the name the file gets at rotation. */
static uint64_t first_seq(int fd, uint64_t fallback)
{
    char *buf = xmalloc(AUDIT_LINE_MAX + 1);
    ssize_t n = pread(fd, buf, AUDIT_LINE_MAX + 1, 0);
    char *nl = n > 0 ? memchr(buf, '\n', (size_t)n) : NULL;
    uint64_t seq = fallback;
    char id[33];

    if (!nl || parse_tail_record(buf, (size_t)(nl - buf), &seq, id) != 0)
        seq = fallback;
    free(buf);
    return seq;
}

/*
 * Where the chain went when the path holds no record: the file next to it
 * (named path.<anything>: baton's path.<20 digits>, logrotate's path.1 or
 * path-DATE) whose last record has the highest seq, of log `want_log` when
 * not NULL. Files that are not audit logs (compressed ones, say) are skipped.
 * Covers a stop (crash or not) between logrotate's rename and SIGUSR1.
 * Returns the owned path and fills *t, or NULL.
 */
static char *best_sibling(const char *path, const char *want_log, struct tail *t)
{
    char *copy = xstrdup(path), *dir = dirname(copy), *best = NULL;
    const char *base = base_name(path);
    size_t blen = strlen(base);
    DIR *d = opendir(dir);
    struct dirent *e;
    char err[256];

    memset(t, 0, sizeof(*t));
    while (d && (e = readdir(d))) {
        struct tail c;
        struct stat st;
        char *full;
        int fd;
        if (strncmp(e->d_name, base, blen) || (e->d_name[blen] != '.' && e->d_name[blen] != '-') ||
            !e->d_name[blen + 1])
            continue;
        full = xasprintf("%s/%s", dir, e->d_name);
        fd = open(full, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 &&
            read_tail(fd, (uint64_t)st.st_size, full, true, &c, err, sizeof(err)) == 0 && c.found &&
            (!want_log || !strcmp(c.log_id, want_log)) && (!best || c.seq > t->seq)) {
            free(best);
            best = full;
            full = NULL;
            *t = c;
        }
        if (fd >= 0)
            close(fd);
        free(full);
    }
    if (d)
        closedir(d);
    free(copy);
    return best;
}

/* ------------------------------------------------------------ run marker */

/*
 * The run marker, `.<file>.baton-run` next to the log: written when a run
 * starts (and at each rotation), removed when it stops cleanly. Finding it at
 * start means the previous run did not close the log: it crashed, was
 * SIGKILLed, or the machine lost power. It holds what the next open record
 * needs to declare that: the run's log id, pid, start, fsync mode and the
 * first seq of the file it was writing.
 */
struct prev_run {
    bool found;             /* a marker was there: an unclean stop */
    char log_id[33];        /* "" when unknown (a marker cut short) */
    int64_t pid;            /* -1: unknown */
    char started[32], fsync[16];
    uint64_t file_first_seq;
    bool has_first_seq;
};

static char *run_path_of(const char *path)
{
    char *copy = xstrdup(path), *dir = dirname(copy);
    char *rp = xasprintf("%s/.%s.baton-run", dir, base_name(path));
    free(copy);
    return rp;
}

static void read_run(const char *rp, struct prev_run *pr)
{
    char buf[1024];
    int fd = open(rp, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    ssize_t n;
    json_t *j, *v;

    memset(pr, 0, sizeof(*pr));
    pr->pid = -1;
    if (fd < 0)
        return;
    pr->found = true;
    n = read(fd, buf, sizeof(buf));
    close(fd);
    j = n > 0 ? json_loadb(buf, (size_t)n, 0, NULL) : NULL;
    if ((v = json_object_get(j, "log")) && json_is_string(v) && json_string_length(v) == 32 &&
        is_hex(json_string_value(v), 32))
        memcpy(pr->log_id, json_string_value(v), 33);
    if ((v = json_object_get(j, "pid")) && json_is_integer(v))
        pr->pid = json_integer_value(v);
    if ((v = json_object_get(j, "started")) && json_is_string(v) && json_string_length(v) < 32)
        memcpy(pr->started, json_string_value(v), json_string_length(v) + 1);
    if ((v = json_object_get(j, "fsync")) && json_is_string(v) && json_string_length(v) < 16)
        memcpy(pr->fsync, json_string_value(v), json_string_length(v) + 1);
    if ((v = json_object_get(j, "file_first_seq")) && json_is_integer(v) &&
        json_integer_value(v) >= 0) {
        pr->file_first_seq = (uint64_t)json_integer_value(v);
        pr->has_first_seq = true;
    }
    json_decref(j);
}

/* (Re)writes the marker for the file now being written; failures are logged
 * only (the marker makes a crash visible, it does not keep records). */
static void write_run(struct audit_log *log)
{
    char *tmp;
    int fd;
    struct sb b = {0};

    if (!log->run_path)
        return;
    tmp = xasprintf("%s.tmp", log->run_path);
    sb_fmt(&b, "{\"log\":\"%s\",\"pid\":%ld,\"started\":\"%s\",\"fsync\":\"%s\","
               "\"file_first_seq\":%" PRIu64 "}\n",
           log->log_id, (long)getpid(), log->started, fsync_name(log->fsync), log->file_first_seq);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (fd < 0 || write(fd, b.buf, b.len) != (ssize_t)b.len || fsync(fd) != 0 ||
        rename(tmp, log->run_path) != 0) {
        log_msg(LOG_WARNING, "audit: cannot write the run marker %s: %s", log->run_path,
                strerror(errno));
        (void)unlink(tmp);
    } else {
        fsync_dir_of(log->run_path);
    }
    if (fd >= 0)
        close(fd);
    free(tmp);
    free(b.buf);
}

static int open_file(struct audit_log *log, const struct prev_run *pr, const char *now,
                     struct sb *marker, struct sb *unclean, char *err, size_t errlen)
{
    struct stat st;
    struct tail t;
    char *sibling = NULL;
    int sfd = -1, rc = -1;
    bool created, missing = false;

    log->fd = open(log->path, O_RDWR | O_APPEND | O_CLOEXEC);
    created = log->fd < 0 && errno == ENOENT;
    if (created)
        log->fd = open(log->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (log->fd < 0 || fstat(log->fd, &st) != 0) {
        errbuf_set(err, errlen, "audit log %s: %s", log->path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        errbuf_set(err, errlen, "audit log %s: not a regular file", log->path);
        goto out;
    }
    memset(&t, 0, sizeof(t));
    if (st.st_size > 0 &&
        read_tail(log->fd, (uint64_t)st.st_size, log->path, true, &t, err, errlen) != 0)
        goto out;
    if (t.torn) {
        if (ftruncate(log->fd, (off_t)t.keep) != 0 || fsync(log->fd) != 0) {
            errbuf_set(err, errlen, "audit log %s: cutting its torn last line: %s", log->path,
                    strerror(errno));
            goto out;
        }
        log_msg(LOG_WARNING, "audit: %s ended with a torn line of %" PRIu64 " bytes; cut",
                log->path, t.torn);
    }
    log->cur.size = t.keep;
    if (t.found) {
        log->file_first_seq = first_seq(log->fd, t.seq + 1);
    } else {
        uint64_t torn = t.torn;
        char torn_sha[65];
        memcpy(torn_sha, t.torn_sha256, sizeof(torn_sha));
        sibling = best_sibling(log->path, pr->log_id[0] ? pr->log_id : NULL, &t);
        if (!sibling && pr->log_id[0])
            sibling = best_sibling(log->path, NULL, &t);
        if (sibling && t.torn) {
            /* the renamed file ends torn (a crash mid-write): cut it, as the path's own */
            sfd = open(sibling, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
            if (sfd < 0 || ftruncate(sfd, (off_t)t.keep) != 0 || fsync(sfd) != 0) {
                errbuf_set(err, errlen, "audit log %s: cutting its torn last line: %s", sibling,
                           strerror(errno));
                goto out;
            }
            log_msg(LOG_WARNING, "audit: %s ended with a torn line of %" PRIu64 " bytes; cut",
                    sibling, t.torn);
            if (!torn) {
                torn = t.torn;
                memcpy(torn_sha, t.torn_sha256, sizeof(torn_sha));
            }
        }
        if (pr->found && pr->log_id[0] && pr->has_first_seq &&
            (!sibling || strcmp(t.log_id, pr->log_id) || t.seq < pr->file_first_seq)) {
            /* The file the crashed run was writing is gone (moved elsewhere,
             * compressed, deleted): continuing from an older file would fork
             * the chain. A new chain starts; the open record declares the gap. */
            log_msg(LOG_ERROR, "audit: the file log %s was writing from seq %" PRIu64 " is not "
                               "next to %s (moved, compressed or deleted?): a new chain starts "
                               "and its open record declares the gap", pr->log_id,
                    pr->file_first_seq, log->path);
            missing = true;
            t.found = false;
        }
        t.torn = torn;
        memcpy(t.torn_sha256, torn_sha, sizeof(torn_sha));
    }
    if (t.found) {
        if (t.seq == UINT64_MAX) {
            errbuf_set(err, errlen, "audit log %s: seq exhausted", log->path);
            goto out;
        }
        log->cur.seq = t.seq + 1;
        memcpy(log->cur.prev, t.prev, sizeof(t.prev));
        memcpy(log->log_id, t.log_id, sizeof(t.log_id));
    }
    if (!t.found || log->cur.size == 0)
        log->file_first_seq = log->cur.seq;
    sb_fmt(marker, ",\"torn_bytes\":%" PRIu64 ",\"torn_sha256\":", t.torn);
    sb_cstr(marker, t.torn ? t.torn_sha256 : NULL, CAP_HASH);
    sb_lit(marker, ",\"prev_file\":");
    sb_cstr(marker, sibling && t.found ? base_name(sibling) : NULL, CAP_FILE);
    if (pr->found) {
        /* docs/audit.md "Unclean stops": what the stopped run may have lost,
         * until `now`, the open record's own time */
        sb_lit(unclean, "{\"log\":");
        sb_cstr(unclean, pr->log_id[0] ? pr->log_id : t.found ? t.log_id : NULL, CAP_HASH);
        sb_lit(unclean, ",\"pid\":");
        sb_int_or_null(unclean, pr->pid >= 0, pr->pid);
        sb_lit(unclean, ",\"started\":");
        sb_cstr(unclean, pr->started[0] ? pr->started : NULL, 32);
        sb_lit(unclean, ",\"fsync\":");
        sb_cstr(unclean, pr->fsync[0] ? pr->fsync : NULL, 16);
        sb_lit(unclean, ",\"last_seq\":");
        sb_int_or_null(unclean, t.found, (int64_t)t.seq);
        sb_lit(unclean, ",\"last_ts\":");
        sb_cstr(unclean, t.found && t.ts[0] ? t.ts : NULL, 32);
        sb_lit(unclean, ",\"missing_from_seq\":");
        sb_int_or_null(unclean, missing, (int64_t)pr->file_first_seq);
        sb_lit(unclean, ",\"window_from\":");
        sb_cstr(unclean, t.found && t.ts[0] ? t.ts : pr->started[0] ? pr->started : NULL, 32);
        sb_lit(unclean, ",\"window_to\":");
        sb_cstr(unclean, now, 32);
        sb_lit(unclean, "}");
    }
    if (created)
        fsync_dir_of(log->path);
    rc = t.found ? 1 : 0;
out:
    if (sfd >= 0)
        close(sfd);
    free(sibling);
    return rc;
}

static int check_headers(const struct cfg_audit *cfg, char *err, size_t errlen)
{
    if (cfg->n_record_headers > AUDIT_MAX_RECORD_HEADERS) {
        errbuf_set(err, errlen, "audit record_headers: at most %d names", AUDIT_MAX_RECORD_HEADERS);
        return -1;
    }
    for (size_t i = 0; i < cfg->n_record_headers; i++) {
        const char *h = cfg->record_headers[i];
        size_t n = strlen(h);
        if (!n || n > CAP_HNAME || strspn(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                             "0123456789!#$%&'*+-.^_`|~") != n) {
            errbuf_set(err, errlen, "audit record_headers: \"%.64s\" is not a header name", h);
            return -1;
        }
        if (config_header_is_secret(h, n)) {
            errbuf_set(err, errlen,
                    "audit record_headers: \"%s\" may carry a credential and is never recorded", h);
            return -1;
        }
    }
    return 0;
}

struct audit_log *audit_open(const struct cfg_audit *cfg, char *err, size_t errlen)
{
    return audit_open_with(cfg, NULL, err, errlen);
}

/* A Cloud Run variable for the open record's instance, NULL when unset. */
static const char *env_or_null(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

struct audit_log *audit_open_with(const struct cfg_audit *cfg, const struct audit_open_opts *opts,
                                  char *err, size_t errlen)
{
    struct audit_log *log = xcalloc(1, sizeof(*log));
    struct sb marker = {0}, unclean = {0};
    struct prev_run pr;
    pthread_condattr_t ca;
    char ts[32], host[256] = "";
    unsigned char rnd[16];
    int cont = 0;

    log->fd = -1;
    log->witness = opts ? opts->witness : NULL;
    memset(&pr, 0, sizeof(pr));
    fmt_ts(now_ms(), log->started);
    pthread_mutex_init(&log->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&log->cv, &ca);
    pthread_condattr_destroy(&ca);
    log->qtail = &log->qhead;
    ilist_init(&log->inbuf);
    ilist_init(&log->unsynced);

    if (!cfg->path || !*cfg->path) {
        errbuf_set(err, errlen, "audit path is empty");
        goto fail;
    }
    if (check_headers(cfg, err, errlen) != 0)
        goto fail;
    log->path = xstrdup(cfg->path);
    log->to_stdout = !strcmp(cfg->path, "-");
    log->fsync = cfg->fsync;
    log->on_failure = cfg->on_failure;
    log->n_headers = cfg->n_record_headers;
    log->headers = xcalloc(log->n_headers + 1, sizeof(char *));
    for (size_t i = 0; i < log->n_headers; i++)
        log->headers[i] = xstrdup(cfg->record_headers[i]);
    log->rotate_bytes = cfg->rotate_bytes;
    log->batch_ms = cfg->batch_ms ? cfg->batch_ms : 10;
    log->checkpoint_records = cfg->checkpoint_records ? cfg->checkpoint_records : 1000;
    log->checkpoint_interval_s = cfg->checkpoint_interval_s ? cfg->checkpoint_interval_s : 60;
    log->queue_cap = cfg->queue_records ? cfg->queue_records : 65536;
    if (cfg->signing_key && load_key(log, cfg->signing_key, err, errlen) != 0)
        goto fail;

    memcpy(log->cur.prev, AUDIT_GENESIS_PREV, sizeof(log->cur.prev));
    fmt_ts(now_ms(), ts); /* the open record's time, and an unclean stop's window_to */
    if (log->to_stdout) {
        log->fd = STDOUT_FILENO; /* a pipe: no tail to read, each start is a new chain */
        signal(SIGPIPE, SIG_IGN); /* a closed pipe must be EPIPE, not death */
        sb_lit(&marker, ",\"torn_bytes\":0,\"torn_sha256\":null,\"prev_file\":null");
    } else {
        signal(SIGXFSZ, SIG_IGN); /* a file size limit must be EFBIG, not death */
        log->run_path = run_path_of(log->path);
        read_run(log->run_path, &pr);
        cont = open_file(log, &pr, ts, &marker, &unclean, err, errlen);
        if (cont < 0)
            goto fail;
    }
    if (!cont) {
        if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
            errbuf_set(err, errlen, "audit: no randomness for a log id");
            goto fail;
        }
        hex_encode(rnd, sizeof(rnd), log->log_id);
    }

    /* The open record: first in the file, written and fsynced before serving. */
    {
        struct sb m = {0};
        (void)gethostname(host, sizeof(host) - 1);
        sb_fmt(&m, "\"kind\":\"open\",\"ts\":\"%s\",\"start\":\"%s\",\"baton\":", ts,
               cont ? "restart" : "genesis");
        sb_cstr(&m, PACKAGE_VERSION, 64);
        sb_lit(&m, ",\"host\":");
        sb_cstr(&m, host, 256);
        sb_fmt(&m, ",\"pid\":%ld,\"fsync\":\"%s\",\"on_failure\":\"%s\",\"key_id\":",
               (long)getpid(), fsync_name(log->fsync),
               log->on_failure == ON_FAILURE_DENY ? "deny" : "allow");
        sb_cstr(&m, log->key ? log->key_id : NULL, CAP_HASH);
        sb_put(&m, marker.buf, marker.len);
        /* docs/audit.md "The open record": which instance this chain is */
        sb_lit(&m, ",\"instance\":{\"service\":");
        sb_cstr(&m, env_or_null("K_SERVICE"), CAP_NAME);
        sb_lit(&m, ",\"revision\":");
        sb_cstr(&m, env_or_null("K_REVISION"), CAP_NAME);
        sb_lit(&m, ",\"configuration\":");
        sb_cstr(&m, env_or_null("K_CONFIGURATION"), CAP_NAME);
        sb_lit(&m, ",\"id\":");
        sb_cstr(&m, opts && opts->instance_id && *opts->instance_id ? opts->instance_id : NULL,
                CAP_NAME);
        sb_lit(&m, ",\"host\":");
        sb_cstr(&m, host, 256);
        sb_fmt(&m, ",\"pid\":%ld,\"started\":\"%s\"}", (long)getpid(), log->started);
        sb_lit(&m, ",\"unclean_stop\":");
        if (unclean.len)
            sb_put(&m, unclean.buf, unclean.len);
        else
            sb_lit(&m, "null");
        log->marker_body = m.buf;
    }
    log->witness_marker = true;
    log->cur.marker_pending = true;
    log->committed = log->synced = log->cur;
    log->last_ckpt_ns = mono_ns();
    w_prelude(log);
    if (w_flush(log) != 0 || w_sync(log, true) != 0) {
        errbuf_set(err, errlen, "audit log %s: cannot write: %s", log->path, log->lost_error);
        goto fail;
    }
    if (pthread_create(&log->thread, NULL, writer_main, log) != 0) {
        errbuf_set(err, errlen, "audit: cannot start the writer thread");
        goto fail;
    }
    log->thread_started = true;
    log->witness_marker = false; /* the next markers are rotate records */
    write_run(log); /* this run is open: a crash from now on is declared at the next start */
    free(marker.buf);
    free(unclean.buf);
    return log;
fail:
    free(marker.buf);
    free(unclean.buf);
    free(log->run_path);
    log->run_path = NULL; /* the previous run's marker stays: it is not ours to remove */
    audit_close(log);
    return NULL;
}

/* ------------------------------------------------------------ request path */

static bool take_slot(struct audit_log *log)
{
    size_t cur = atomic_load(&log->slots);
    while (cur < log->queue_cap)
        if (atomic_compare_exchange_weak(&log->slots, &cur, cur + 1))
            return true;
    return false;
}

int audit_reserve(struct audit_log *log, struct audit_reservation *rsv)
{
    rsv->slot = false;
    if (log->on_failure == ON_FAILURE_DENY && atomic_load(&log->failed))
        goto refuse;
    rsv->slot = take_slot(log);
    if (!rsv->slot && log->on_failure == ON_FAILURE_DENY)
        goto refuse;
    return 0;
refuse:
    atomic_fetch_add(&log->st_refused, 1);
    atomic_fetch_add(&log->refused_queue, 1);
    return -1;
}

void audit_release(struct audit_log *log, struct audit_reservation *rsv)
{
    if (rsv->slot)
        atomic_fetch_sub(&log->slots, 1);
    rsv->slot = false;
}

int audit_submit(struct audit_log *log, struct audit_reservation *rsv,
                 const struct audit_record *rec, void (*durable)(void *arg, int ok), void *arg)
{
    struct audit_item *it;
    bool have = rsv && rsv->slot;

    if (rsv)
        rsv->slot = false;
    if (!have && !take_slot(log)) {
        atomic_fetch_add(&log->st_lost, 1);
        atomic_fetch_add(&log->lost_queue, 1);
        return -1;
    }
    {
        struct sb b = {0};
        it = xmalloc(sizeof(*it) + AUDIT_INLINE_BODY);
        it->next = NULL;
        it->durable = durable;
        it->arg = arg;
        b.buf = it->inline_body;
        b.cap = AUDIT_INLINE_BODY;
        b.borrowed = true;
        record_body(&b, rec, log->headers, log->n_headers);
        it->body = b.buf;
        it->len = b.len;
    }
    pthread_mutex_lock(&log->mu);
    *log->qtail = it;
    log->qtail = &it->next;
    log->qlen++;
    if (log->writer_waiting || (log->writer_lingering && log->qlen >= AUDIT_WAKE_RECORDS))
        pthread_cond_signal(&log->cv);
    pthread_mutex_unlock(&log->mu);
    return 0;
}

bool audit_healthy(const struct audit_log *log)
{
    return !atomic_load(&((struct audit_log *)log)->failed);
}

void audit_reopen(struct audit_log *log)
{
    pthread_mutex_lock(&log->mu);
    log->reopen_req = true;
    pthread_cond_signal(&log->cv);
    pthread_mutex_unlock(&log->mu);
}

void audit_stats(const struct audit_log *clog, struct audit_stats *out)
{
    struct audit_log *log = (struct audit_log *)clog; /* atomics are read-only here */
    out->queue_depth = atomic_load(&log->slots);
    out->written = atomic_load(&log->st_written);
    out->markers = atomic_load(&log->st_markers);
    out->checkpoints = atomic_load(&log->st_checkpoints);
    out->bytes = atomic_load(&log->st_bytes);
    out->fsyncs = atomic_load(&log->st_fsyncs);
    out->rotations = atomic_load(&log->st_rotations);
    out->failures = atomic_load(&log->st_failures);
    out->lost = atomic_load(&log->st_lost);
    out->refused = atomic_load(&log->st_refused);
    out->healthy = !atomic_load(&log->failed);
    {
        struct audit_witness_stats ws;
        audit_witness_stats(log->witness, &ws);
        out->witness_written = ws.written;
        out->witness_existing = ws.existing;
        out->witness_conflicts = ws.conflicts;
        out->witness_failures = ws.failures;
        out->witness_dropped = ws.dropped;
        out->witness_pending = ws.pending;
    }
}

const char *audit_public_key_pem(const struct audit_log *log)
{
    return log->pub_pem;
}

int audit_public_key_raw(const struct audit_log *log, unsigned char out[32])
{
    if (!log->key)
        return -1;
    memcpy(out, log->pub_raw, 32);
    return 0;
}

const char *audit_key_id(const struct audit_log *log)
{
    return log->key ? log->key_id : NULL;
}

const char *audit_log_id(const struct audit_log *log)
{
    return log->log_id;
}

void audit_close(struct audit_log *log)
{
    if (!log)
        return;
    if (log->thread_started) {
        pthread_mutex_lock(&log->mu);
        log->stop = true;
        pthread_cond_signal(&log->cv);
        pthread_mutex_unlock(&log->mu);
        pthread_join(log->thread, NULL);
        if (log->run_path && unlink(log->run_path) == 0)
            fsync_dir_of(log->run_path); /* a clean stop: the next start says so */
    }
    /* the final checkpoint was handed over last: let it reach the witness */
    audit_witness_free(log->witness, AUDIT_WITNESS_CLOSE_MS);
    log->witness = NULL;
    w_witness_take(log, log->n_wnotes, false);
    free(log->wnotes);
    free(log->run_path);
    if (log->fd >= 0 && !log->to_stdout)
        close(log->fd);
    w_ack(log, &log->inbuf, 0);
    w_ack(log, &log->unsynced, 0);
    for (size_t i = 0; i < log->n_headers; i++)
        free(log->headers[i]);
    free(log->headers);
    free(log->path);
    free(log->marker_body);
    free(log->out.buf);
    free(log->pub_pem);
    EVP_PKEY_free(log->key);
    pthread_cond_destroy(&log->cv);
    pthread_mutex_destroy(&log->mu);
    free(log);
}
