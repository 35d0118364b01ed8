/*
 * audit_record.c: the audit record formats (audit.h, docs/audit.md): a
 * request record's body as a worker formats it before queueing it (in the
 * order of audit_request_members, the one table of its members, which the
 * canonical form in audit_canon.c orders by too: written straight, with the
 * table walk kept as the plain way it must match), the writer's prefix (v,
 * seq, prev, log) and the checkpoint line. Every string is escaped and
 * capped so a record fits AUDIT_LINE_MAX; credentials are never recorded.
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

/* Length of s once escaped (canonical form: audit_canon.h). */
static size_t escaped_len(const char *s, size_t n)
{
    size_t out = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        out += (c == '"' || c == '\\') ? 2 : (c < 0x20 || c >= 0x7f) ? 6 : 1;
    }
    return out;
}

void sb_str_escaped(struct sb *b, const char *s, size_t n, size_t cap)
{
    size_t want = escaped_len(s, n), room = (want < cap ? want : cap) + 1, w;

    sb_reserve(b, room + 2);
    b->buf.p[b->buf.len++] = '"';
    w = json_escape(b->buf.p + b->buf.len, room, s, n);
    b->buf.len += w;
    b->buf.p[b->buf.len++] = '"';
    b->buf.p[b->buf.len] = '\0';
    if (w < want)
        b->truncated = true;
}

void sb_str(struct sb *b, const char *s, size_t n, size_t cap)
{
    char *o;

    if (!s) {
        sb_lit(b, "null");
        return;
    }
    if (n <= cap) {
        sb_reserve(b, n + 2);
        o = b->buf.p + b->buf.len;
        if (json_copy_plain(o + 1, s, n)) {
            o[0] = '"';
            o[n + 1] = '"';
            o[n + 2] = '\0';
            b->buf.len += n + 2;
            return;
        }
        o[0] = '\0'; /* the contents end where they did */
    }
    sb_str_escaped(b, s, n, cap);
}

/* ------------------------------------------------- the request record's members */

/*
 * The request record is defined by one table, audit_request_members: each
 * member's name, its place, how its value is written, and for an object its
 * own members. audit_canon.c rebuilds lines in the order of the same table.
 * audit_record_format writes the same members straight (no table step per
 * member), so adding a member is one entry here, its put function and its
 * line there; test_audit_canon checks a record against the table member by
 * member and test_audit_format the straight writer against the table walk
 * (audit_record_format_by_table) byte for byte.
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
/* Whether each optional object is written (else null), for both writers. */
static bool has_policy(const struct audit_record *r)
{
    return r->policy_file || r->policy_sha256;
}
static bool has_caller(const struct audit_record *r)
{
    return r->caller.token_sha256 || r->caller.iss || r->caller.sub;
}
static bool has_upstream(const struct audit_record *r)
{
    return r->upstream.name != NULL;
}
static bool has_link(const struct audit_record *r)
{
    return r->link.op != NULL;
}

PUT(put_policy)
{
    return put_object(b, r, f, self, has_policy(r));
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
    return put_object(b, r, f, self, has_caller(r));
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
    int j = r->request.user_agent_judged; /* the caller's verdict, else ours */

    if (r->request.user_agent &&
        (j == AUDIT_UA_PLAIN ? false
         : j == AUDIT_UA_CREDENTIAL
             ? true
             : redact_is_credential(r->request.user_agent, r->request.user_agent_len)))
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
    return put_object(b, r, f, self, has_upstream(r));
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
    return put_object(b, r, f, self, has_link(r));
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

/* The members every record has before its own, up to the opening quote of
 * `ts`, and `ts` itself (24 bytes, audit_fmt_ts). */
static void put_kind_ts(struct sb *b, const struct audit_record *r)
{
    static const char head[] = "\"kind\":\"request\",\"ts\":\"";
    char ts[32];

    audit_fmt_ts(r->ts_ms > 0 ? r->ts_ms : now_ms(), ts);
    sb_reserve(b, sizeof(head) + 24);
    memcpy(b->buf.p + b->buf.len, head, sizeof(head) - 1);
    memcpy(b->buf.p + b->buf.len + sizeof(head) - 1, ts, 24);
    b->buf.len += sizeof(head) - 1 + 24;
    b->buf.p[b->buf.len] = '\0';
}

void audit_record_format_by_table(struct sb *b0, const struct audit_record *r,
                                  const struct audit_rh *rh, size_t n_rh)
{
    struct sb b = *b0;
    const struct audit_fmt f = {rh, n_rh};

    put_kind_ts(&b, r);
    sb_lit(&b, "\"");
    put_members(&b, r, &f, audit_request_members, false);
    *b0 = b;
}

/* Each reason's code as the record quotes it, rendered at compile time from
 * reason.h's list: a copy of known length instead of a lookup, a strlen and
 * two quotes. */
static const struct {
    const char *s;
    size_t len;
} reason_quoted[REASON__COUNT] = {
#define REASON_QUOTED(name, code, status) [REASON_##name] = {"\"" code "\"", sizeof(code) + 1},
    REASONS(REASON_QUOTED)
#undef REASON_QUOTED
};

/* From the decision through the reason's opening: `,"decision":"allow","reason":`
 * as one literal per decision. */
static void put_decision_reason(struct sb *b, const struct audit_record *r)
{
    switch (r->decision) {
    case DECISION_ALLOW:
        sb_lit(b, ",\"decision\":\"allow\",\"reason\":");
        break;
    case DECISION_DENY:
        sb_lit(b, ",\"decision\":\"deny\",\"reason\":");
        break;
    case DECISION_WOULD_DENY:
        sb_lit(b, ",\"decision\":\"would_deny\",\"reason\":");
        break;
    default: /* decision_name's, as the table walk writes it */
        sb_lit(b, ",\"decision\":");
        (void)put_decision(b, r, NULL, NULL);
        sb_lit(b, ",\"reason\":");
        break;
    }
    if ((unsigned)r->reason < REASON__COUNT)
        sb_put(b, reason_quoted[r->reason].s, reason_quoted[r->reason].len);
    else
        (void)put_reason(b, r, NULL, NULL);
}

/*
 * The same bytes as audit_record_format_by_table, written straight: each run
 * of constant text between two values (a closing quote, the next member's
 * key, an object's brace) is one literal copy, each value the member's own
 * put function (inlined), and no member costs a table step or an indirect
 * call. The order and nesting here are audit_request_members' (that table
 * is the record's definition: the canonical form orders by it), which
 * test_audit_canon checks member by member and test_audit_format byte for
 * byte on generated records against the table walk.
 */
void audit_record_format(struct sb *b0, const struct audit_record *r, const struct audit_rh *rh,
                         size_t n_rh)
{
    struct sb bb = *b0, *b = &bb;
    const struct audit_fmt fmt = {rh, n_rh}, *f = &fmt;

#define V(fn) (void)fn(b, r, f, NULL)
    put_kind_ts(b, r);
    sb_lit(b, "\",\"request_id\":");
    V(put_request_id);
    put_decision_reason(b, r);
    sb_lit(b, ",\"status\":");
    V(put_status);
    sb_lit(b, ",\"step\":");
    V(put_step);
    if (r->dry_run)
        sb_lit(b, ",\"dry_run\":true,\"policy\":");
    else
        sb_lit(b, ",\"dry_run\":false,\"policy\":");
    if (has_policy(r)) {
        sb_lit(b, "{\"file\":");
        V(put_policy_file);
        sb_lit(b, ",\"sha256\":");
        V(put_policy_sha256);
        sb_lit(b, "},\"caller\":");
    } else {
        sb_lit(b, "null,\"caller\":");
    }
    if (has_caller(r)) {
        if (r->caller.verified)
            sb_lit(b, "{\"verified\":true,\"iss\":");
        else
            sb_lit(b, "{\"verified\":false,\"iss\":");
        V(put_caller_iss);
        sb_lit(b, ",\"sub\":");
        V(put_caller_sub);
        sb_lit(b, ",\"audience\":");
        V(put_caller_audience);
        sb_lit(b, ",\"jti\":");
        V(put_caller_jti);
        sb_lit(b, ",\"aws_account\":");
        V(put_caller_account);
        sb_lit(b, ",\"token_sha256\":");
        V(put_caller_token);
        sb_lit(b, "},\"request\":{\"method\":");
    } else {
        sb_lit(b, "null,\"request\":{\"method\":");
    }
    V(put_method); /* request is always present (put_request) */
    sb_lit(b, ",\"path\":");
    V(put_path);
    sb_lit(b, ",\"query\":");
    V(put_query);
    sb_lit(b, ",\"client\":");
    V(put_client);
    sb_lit(b, ",\"user_agent\":");
    V(put_user_agent);
    sb_lit(b, ",\"bytes_in\":");
    V(put_bytes_in);
    sb_lit(b, ",\"headers\":");
    V(put_headers);
    if (has_upstream(r)) {
        sb_lit(b, "},\"upstream\":{\"name\":");
        V(put_up_name);
        sb_lit(b, ",\"status\":");
        V(put_up_status);
        sb_lit(b, ",\"latency_ms\":");
        V(put_up_latency);
        sb_lit(b, ",\"bytes\":");
        V(put_up_bytes);
        sb_lit(b, ",\"identity\":");
        V(put_up_identity);
        sb_lit(b, ",\"audience\":");
        V(put_up_audience);
        sb_lit(b, "},\"bytes_out\":");
    } else {
        sb_lit(b, "},\"upstream\":null,\"bytes_out\":");
    }
    V(put_bytes_out);
    sb_lit(b, ",\"duration_ms\":");
    V(put_duration);
    sb_lit(b, ",\"worker\":");
    V(put_worker);
    sb_lit(b, ",\"client_request_id\":");
    V(put_client_request_id);
    if (has_link(r)) {
        sb_lit(b, ",\"link\":{\"op\":");
        V(put_link_op);
        sb_lit(b, ",\"id\":");
        V(put_link_id);
        sb_lit(b, ",\"method\":");
        V(put_link_method);
        sb_lit(b, ",\"path\":");
        V(put_link_path);
        sb_lit(b, ",\"exp\":");
        V(put_link_exp);
        sb_lit(b, ",\"uses\":");
        V(put_link_uses);
        sb_lit(b, ",\"kid\":");
        V(put_link_kid);
        sb_lit(b, ",\"minter\":");
        V(put_link_minter);
        sb_lit(b, "}");
    } else {
        sb_lit(b, ",\"link\":null");
    }
    if (b->truncated) /* put_truncated's */
        sb_lit(b, ",\"truncated\":true");
#undef V
    *b0 = bb;
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
