/*
 * audit_record.c: the audit record formats (audit.h, docs/audit.md): a
 * request record's body as a worker formats it before queueing it, the
 * writer's prefix (v, seq, prev, log) and the checkpoint line. Every string
 * is escaped and capped so a record fits AUDIT_LINE_MAX; credentials are
 * never recorded.
 */
#include "audit_record.h"

#include <inttypes.h>
#include <time.h>

#include "redact.h"

/* Every capped string (quotes and escapes within its cap), plus 2 KB for the
 * member names, numbers and the `ts`, fits a line after the writer's prefix. */
_Static_assert(2 * CAP_ID + CAP_STEP + CAP_FILE + 2 * CAP_HASH + 4 * CAP_CLAIM + CAP_JTI +
                       CAP_ACCOUNT + CAP_METHOD + CAP_PATH + CAP_QUERY + CAP_CLIENT + CAP_UA +
                       AUDIT_MAX_RECORD_HEADERS * (CAP_HNAME + AUDIT_HEADER_VALUE_MAX + 16) +
                       CAP_NAME + CAP_IDENTITY + 2048 + AUDIT_PREFIX_MAX <
                   AUDIT_LINE_MAX,
               "audit record caps exceed the line cap");

/* "2025-03-01T10:00:00.123Z" (24 bytes), for ms since the epoch. The part up
 * to the seconds is cached per thread. */
static __thread time_t ts_cache_sec = (time_t)-1;
static __thread char ts_cache[24];

void audit_fmt_ts(int64_t ms, char out[32])
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
void audit_record_format(struct sb *b0, const struct audit_record *r, char *const *allowed,
                        size_t n_allowed)
{
    struct sb b = *b0;
    char ts[32];
    size_t recorded = 0;

    audit_fmt_ts(r->ts_ms > 0 ? r->ts_ms : now_ms(), ts);
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
    audit_record_format(&b, r, allowed, n_allowed);
    *len = b.len;
    return b.buf;
}

/* --------------------------------------------------------- line formatting */

#define AUDIT_STR_(x) #x
#define AUDIT_STR(x) AUDIT_STR_(x)

/* The fields the writer gives a record, in front of its body: once per
 * record on the writer thread, so without printf. Returns the length, or -1
 * when it does not fit in cap (with its NUL). */
int audit_line_prefix(char *out, size_t cap, uint64_t seq, const char *prev, const char *log_id)
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
    int p = audit_line_prefix(out, cap, seq, prev, log_id), n;
    if (p < 0 || (size_t)p >= cap)
        return 0;
    n = snprintf(out + p, cap - (size_t)p,
                 "\"kind\":\"checkpoint\",\"ts\":\"%s\",\"key_id\":\"%s\",\"sig\":\"%s\"}", ts,
                 key_id, sig_hex);
    return n < 0 || (size_t)n >= cap - (size_t)p ? 0 : (size_t)p + (size_t)n;
}
