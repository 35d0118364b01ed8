/*
 * audit_record.c: the audit record formats (audit.h, docs/audit.md): a
 * request record's body as a worker formats it before queueing it (from
 * audit_request_members, the one table of its members, which the canonical
 * form in audit_canon.c orders by too), the writer's prefix (v, seq, prev,
 * log) and the checkpoint line. Every string is escaped and capped so a
 * record fits AUDIT_LINE_MAX; credentials are never recorded.
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

/* ------------------------------------------------- the request record's members */

/*
 * The request record is written from one table, audit_request_members: each
 * member's name, its place, how its value is written, and for an object its
 * own members. audit_canon.c rebuilds lines in the order of the same table,
 * so adding a member is one entry here (and its put function), and the
 * writer and the canonical form cannot disagree (test_audit_canon checks a
 * record against the table member by member).
 */

/* What a record is formatted with besides itself. */
struct audit_fmt {
    const struct audit_rh *rh; /* record_headers, decided at open */
    size_t n_rh;
};

void audit_rh_init(struct audit_rh *rh, const char *name)
{
    struct sb o = {0};

    rh->name = xstrdup(name);
    rh->len = strlen(name);
    rh->secret = config_header_is_secret(name, rh->len);
    sb_lit(&o, "[");
    sb_str(&o, rh->name, rh->len, CAP_HNAME);
    sb_lit(&o, ",");
    rh->open = o.buf.p;
    rh->open_len = o.buf.len;
}

void audit_rh_free(struct audit_rh *rh)
{
    free(rh->name);
    free(rh->open);
}

#define PUT(fn)                                                                           \
    static bool fn(struct sb *b, const struct audit_record *r, const struct audit_fmt *f, \
                   const struct audit_member *self)

static void put_members(struct sb *b, const struct audit_record *r, const struct audit_fmt *f,
                        const struct audit_member *m, bool first);

/* An object member's value: its members, or null when absent. */
static bool put_object(struct sb *b, const struct audit_record *r, const struct audit_fmt *f,
                       const struct audit_member *self, bool present)
{
    if (!present) {
        sb_lit(b, "null");
        return true;
    }
    sb_lit(b, "{");
    put_members(b, r, f, self->sub, true);
    sb_lit(b, "}");
    return true;
}

/* A string the record holds in quotes as it is (codes, names). */
static void sb_quoted(struct sb *b, const char *s)
{
    sb_lit(b, "\"");
    sb_raw(b, s);
    sb_lit(b, "\"");
}

PUT(put_request_id)
{
    sb_cstr(b, r->request_id, CAP_ID);
    return true;
}
PUT(put_decision)
{
    sb_quoted(b, decision_name(r->decision));
    return true;
}
PUT(put_reason)
{
    sb_quoted(b, reason_code(r->reason));
    return true;
}
PUT(put_status)
{
    sb_int_or_null(b, r->status > 0, r->status);
    return true;
}
PUT(put_step)
{
    sb_cstr(b, r->step, CAP_STEP);
    return true;
}
PUT(put_dry_run)
{
    sb_raw(b, r->dry_run ? "true" : "false");
    return true;
}

PUT(put_policy_file)
{
    sb_cstr(b, r->policy_file, CAP_FILE);
    return true;
}
PUT(put_policy_sha256)
{
    sb_cstr(b, r->policy_sha256, CAP_HASH);
    return true;
}
PUT(put_policy)
{
    return put_object(b, r, f, self, r->policy_file || r->policy_sha256);
}

PUT(put_caller_verified)
{
    sb_raw(b, r->caller.verified ? "true" : "false");
    return true;
}
PUT(put_caller_iss)
{
    sb_cstr(b, r->caller.iss, CAP_CLAIM);
    return true;
}
PUT(put_caller_sub)
{
    sb_cstr(b, r->caller.sub, CAP_CLAIM);
    return true;
}
PUT(put_caller_audience)
{
    sb_cstr(b, r->caller.audience, CAP_CLAIM);
    return true;
}
PUT(put_caller_jti)
{
    sb_cstr(b, r->caller.jti, CAP_JTI);
    return true;
}
PUT(put_caller_account)
{
    sb_cstr(b, r->caller.aws_account, CAP_ACCOUNT);
    return true;
}
PUT(put_caller_token)
{
    sb_cstr(b, r->caller.token_sha256, CAP_HASH);
    return true;
}
PUT(put_caller)
{
    return put_object(b, r, f, self, r->caller.token_sha256 || r->caller.iss || r->caller.sub);
}

PUT(put_method)
{
    sb_str(b, r->request.method, r->request.method_len, CAP_METHOD);
    return true;
}
PUT(put_path)
{
    sb_str(b, r->request.path, r->request.path_len, CAP_PATH);
    return true;
}
PUT(put_query)
{
    size_t qlen;
    char *q;

    if (!r->request.query) {
        sb_lit(b, "null");
        return true;
    }
    q = redact_query(r->request.query, r->request.query_len, &qlen);
    sb_str(b, q, qlen, CAP_QUERY);
    free(q);
    return true;
}
PUT(put_client)
{
    sb_cstr(b, r->request.client, CAP_CLIENT);
    return true;
}
PUT(put_user_agent)
{
    if (r->request.user_agent &&
        redact_is_credential(r->request.user_agent, r->request.user_agent_len))
        sb_lit(b, "\"[redacted]\"");
    else
        sb_str(b, r->request.user_agent, r->request.user_agent_len, CAP_UA);
    return true;
}
PUT(put_bytes_in)
{
    sb_count(b, r->request.bytes_in);
    return true;
}
PUT(put_headers)
{
    size_t recorded = 0;

    sb_lit(b, "[");
    for (size_t i = 0; i < r->request.n_headers; i++) {
        const struct audit_header *h = &r->request.headers[i];
        const struct audit_rh *conf = NULL;
        size_t hl;
        if (!h->name)
            continue;
        hl = strlen(h->name);
        for (size_t j = 0; j < f->n_rh && !conf; j++)
            if (f->rh[j].len == hl && !ascii_casecmp_n(h->name, hl, f->rh[j].name, hl))
                conf = &f->rh[j];
        if (!conf || conf->secret)
            continue; /* never configured, or refused: not recorded */
        if (recorded == AUDIT_MAX_RECORD_HEADERS) {
            b->truncated = true;
            break;
        }
        if (recorded)
            sb_lit(b, ",");
        sb_put(b, conf->open, conf->open_len);
        if (h->value && redact_is_credential(h->value, h->value_len))
            sb_lit(b, "\"[redacted]\"");
        else
            sb_str(b, h->value ? h->value : "", h->value ? h->value_len : 0,
                   AUDIT_HEADER_VALUE_MAX);
        sb_lit(b, "]");
        recorded++;
    }
    sb_lit(b, "]");
    return true;
}
PUT(put_request)
{
    return put_object(b, r, f, self, true);
}

PUT(put_up_name)
{
    sb_cstr(b, r->upstream.name, CAP_NAME);
    return true;
}
PUT(put_up_status)
{
    sb_int_or_null(b, r->upstream.status > 0, r->upstream.status);
    return true;
}
PUT(put_up_latency)
{
    sb_int_or_null(b, r->upstream.latency_ms >= 0, r->upstream.latency_ms);
    return true;
}
PUT(put_up_bytes)
{
    sb_count(b, r->upstream.bytes);
    return true;
}
PUT(put_up_identity)
{
    sb_cstr(b, r->upstream.identity, CAP_IDENTITY);
    return true;
}
PUT(put_up_audience)
{
    sb_cstr(b, r->upstream.audience, CAP_CLAIM);
    return true;
}
PUT(put_upstream)
{
    return put_object(b, r, f, self, r->upstream.name != NULL);
}

PUT(put_bytes_out)
{
    sb_count(b, r->bytes_out);
    return true;
}
PUT(put_duration)
{
    sb_int_or_null(b, r->duration_ms >= 0, r->duration_ms);
    return true;
}
PUT(put_worker)
{
    sb_int_or_null(b, r->worker >= 0, r->worker);
    return true;
}
PUT(put_client_request_id)
{
    sb_cstr(b, r->client_request_id, CAP_ID);
    return true;
}

PUT(put_link_op)
{
    sb_cstr(b, r->link.op, CAP_METHOD);
    return true;
}
PUT(put_link_id)
{
    sb_cstr(b, r->link.id, CAP_HASH);
    return true;
}
PUT(put_link_method)
{
    sb_cstr(b, r->link.method, CAP_METHOD);
    return true;
}
PUT(put_link_path)
{
    const char *qm;
    char *rq, *q;
    size_t pl, rql;

    if (!r->link.path) {
        sb_lit(b, "null");
        return true;
    }
    qm = memchr(r->link.path, '?', r->link.path_len);
    if (!qm) {
        sb_str(b, r->link.path, r->link.path_len, CAP_PATH);
        return true;
    }
    /* the query as request.query is: secret-looking values redacted */
    pl = (size_t)(qm - r->link.path);
    rq = redact_query(qm + 1, r->link.path_len - pl - 1, &rql);
    q = xmalloc(pl + 1 + rql);
    memcpy(q, r->link.path, pl);
    q[pl] = '?';
    memcpy(q + pl + 1, rq, rql);
    sb_str(b, q, pl + 1 + rql, CAP_PATH);
    free(q);
    free(rq);
    return true;
}
PUT(put_link_exp)
{
    sb_int_or_null(b, r->link.exp > 0, r->link.exp);
    return true;
}
PUT(put_link_uses)
{
    sb_int_or_null(b, r->link.exp > 0, r->link.uses);
    return true;
}
PUT(put_link_kid)
{
    sb_cstr(b, r->link.kid, CAP_ID);
    return true;
}
PUT(put_link_minter)
{
    sb_cstr(b, r->link.minter, CAP_ID);
    return true;
}
PUT(put_link)
{
    return put_object(b, r, f, self, r->link.op != NULL);
}

/* Only in a record a capped string or the header list was cut in: it comes
 * last, so every member before it has been written. */
PUT(put_truncated)
{
    if (!b->truncated)
        return false;
    sb_lit(b, "true");
    return true;
}

#define M(name, put) AUDIT_MEMBER(name, NULL, put)
#define O(name, sub, put) AUDIT_MEMBER(name, sub, put)

static const struct audit_member policy_m[] = {M("file", put_policy_file),
                                               M("sha256", put_policy_sha256), AUDIT_MEMBERS_END};
static const struct audit_member caller_m[] = {M("verified", put_caller_verified),
                                               M("iss", put_caller_iss),
                                               M("sub", put_caller_sub),
                                               M("audience", put_caller_audience),
                                               M("jti", put_caller_jti),
                                               M("aws_account", put_caller_account),
                                               M("token_sha256", put_caller_token),
                                               AUDIT_MEMBERS_END};
static const struct audit_member reqdetail_m[] = {
    M("method", put_method),         M("path", put_path),
    M("query", put_query),           M("client", put_client),
    M("user_agent", put_user_agent), M("bytes_in", put_bytes_in),
    M("headers", put_headers),       AUDIT_MEMBERS_END};
static const struct audit_member upstream_m[] = {
    M("name", put_up_name),   M("status", put_up_status),     M("latency_ms", put_up_latency),
    M("bytes", put_up_bytes), M("identity", put_up_identity), M("audience", put_up_audience),
    AUDIT_MEMBERS_END};
/* a signed URL's use or mint (docs/audit.md "link") */
static const struct audit_member link_m[] = {
    M("op", put_link_op),     M("id", put_link_id),         M("method", put_link_method),
    M("path", put_link_path), M("exp", put_link_exp),       M("uses", put_link_uses),
    M("kid", put_link_kid),   M("minter", put_link_minter), AUDIT_MEMBERS_END};

/* After the members every record has (v, seq, prev, log, kind, ts). */
const struct audit_member audit_request_members[] = {M("request_id", put_request_id),
                                                     M("decision", put_decision),
                                                     M("reason", put_reason),
                                                     M("status", put_status),
                                                     M("step", put_step),
                                                     M("dry_run", put_dry_run),
                                                     O("policy", policy_m, put_policy),
                                                     O("caller", caller_m, put_caller),
                                                     O("request", reqdetail_m, put_request),
                                                     O("upstream", upstream_m, put_upstream),
                                                     M("bytes_out", put_bytes_out),
                                                     M("duration_ms", put_duration),
                                                     M("worker", put_worker),
                                                     M("client_request_id", put_client_request_id),
                                                     O("link", link_m, put_link),
                                                     M("truncated", put_truncated),
                                                     AUDIT_MEMBERS_END};

#undef M
#undef O

/* Writes each member as `"name":value`, comma-separated (and a comma before
 * the first unless `first`); a member whose put says absent leaves nothing. */
static void put_members(struct sb *b, const struct audit_record *r, const struct audit_fmt *f,
                        const struct audit_member *m, bool first)
{
    for (; m->name; m++) {
        size_t mark = b->buf.len;
        /* the key, with its comma unless first: a copy of fixed size, which
         * the compiler makes two moves rather than a call */
        sb_reserve(b, AUDIT_MEMBER_KEY);
        memcpy(b->buf.p + b->buf.len, m->key + first, AUDIT_MEMBER_KEY - 1);
        b->buf.len += m->key_len - first;
        b->buf.p[b->buf.len] = '\0';
        if (!m->put(b, r, f, m)) {
            b->buf.len = mark;
            b->buf.p[mark] = '\0';
            continue;
        }
        first = false;
    }
}

/* Formats into `b` (which may start on a borrowed buffer). */
void audit_record_format(struct sb *b0, const struct audit_record *r, const struct audit_rh *rh,
                         size_t n_rh)
{
    struct sb b = *b0;
    const struct audit_fmt f = {rh, n_rh};
    char ts[32];

    audit_fmt_ts(r->ts_ms > 0 ? r->ts_ms : now_ms(), ts);
    sb_lit(&b, "\"kind\":\"request\",\"ts\":\"");
    sb_raw(&b, ts);
    sb_lit(&b, "\"");
    put_members(&b, r, &f, audit_request_members, false);
    *b0 = b;
}

char *audit_record_body(const struct audit_record *r, char *const *allowed, size_t n_allowed,
                        size_t *len)
{
    struct sb b = {0};
    struct audit_rh *rh = xcalloc(n_allowed + 1, sizeof(*rh));

    for (size_t i = 0; i < n_allowed; i++)
        audit_rh_init(&rh[i], allowed[i]);
    sb_reserve(&b, 2048); /* a typical record is 1-1.5 KB: no realloc */
    audit_record_format(&b, r, rh, n_allowed);
    for (size_t i = 0; i < n_allowed; i++)
        audit_rh_free(&rh[i]);
    free(rh);
    *len = b.buf.len;
    return b.buf.p;
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
