/*
 * test_audit_canon.c: the canonical form (audit_canon.h) and the LogEntry
 * reader (audit_logentry.h).
 *
 * The writer (src/audit_writer.c) writes a log of every kind of record: open,
 * request (with every escape, a cut value, a number at the clamp), lost,
 * checkpoint, rotate. Each line is parsed, its members shuffled at every
 * level and its integers turned into doubles, as Cloud Logging's Struct
 * does; the canonical form must give back the writer's bytes exactly. Then
 * what can never be a record is refused, and the splitter cuts arrays and
 * newline-delimited entries fed in chunks of every size. First, the
 * writer's request record is checked against audit_request_members, the one
 * table both the writer and the canonical form go by.
 */
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "audit.h"
#include "audit_canon.h"
#include "audit_logentry.h"
#include "util.h"
#include "tap.h"

static char dir[] = "/tmp/baton_test_audit_canon.XXXXXX";
static unsigned rng = 12345;

static unsigned rnd(void)
{
    rng = rng * 1103515245u + 12345u;
    return rng >> 8;
}

/* Cloud Logging's view of a value: members in another order, numbers doubles. */
static json_t *as_struct(const json_t *v)
{
    if (json_is_integer(v))
        return json_real((double)json_integer_value(v));
    if (json_is_array(v)) {
        json_t *a = json_array();
        size_t i;
        json_t *e;
        json_array_foreach((json_t *)v, i, e)
            json_array_append_new(a, as_struct(e));
        return a;
    }
    if (json_is_object(v)) {
        const char *keys[128];
        size_t n = 0;
        const char *k;
        json_t *e, *o = json_object();
        json_object_foreach((json_t *)v, k, e)
            if (n < 128)
                keys[n++] = k;
        for (size_t i = n; i > 1; i--) { /* Fisher-Yates */
            size_t j = rnd() % i;
            const char *t = keys[i - 1];
            keys[i - 1] = keys[j];
            keys[j] = t;
        }
        for (size_t i = 0; i < n; i++)
            json_object_set_new(o, keys[i], as_struct(json_object_get(v, keys[i])));
        return o;
    }
    return json_incref((json_t *)v);
}

static char *key_file(void)
{
    char *path = xasprintf("%s/key.pem", dir);
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    FILE *f = fopen(path, "w");
    PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    chmod(path, 0600);
    EVP_PKEY_free(key);
    return path;
}

static void fill(struct audit_record *r, const char *id, bool odd)
{
    static char weird[] = "/p\"q\\r\x01\x1f\x7f\xc3\xa9\xff/ok";
    static char longval[700];
    static struct audit_header h[1] = {{"X-Sfn-Execution", longval, sizeof(longval) - 1}};
    memset(longval, 'v', sizeof(longval) - 1);
    memset(r, 0, sizeof(*r));
    r->ts_ms = 1767225600123;
    r->request_id = id;
    r->decision = odd ? DECISION_DENY : DECISION_ALLOW;
    r->reason = odd ? REASON_NO_CALLER_MATCH : REASON_ALLOWED;
    r->status = odd ? 403 : 200;
    r->worker = odd ? -1 : 1;
    r->step = odd ? NULL : "billing";
    r->policy_file = odd ? NULL : "billing.json";
    r->policy_sha256 = odd ? NULL
                           : "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";
    r->caller.verified = !odd;
    r->caller.iss = "https://issuer.test";
    r->caller.sub = "role/\xe2\x82\xac"; /* bytes of a euro sign: three \u00XX */
    r->caller.token_sha256 = "ab";
    r->request.method = "POST";
    r->request.method_len = 4;
    r->request.path = odd ? weird : "/billing/run";
    r->request.path_len = odd ? sizeof(weird) - 1 : 12;
    r->request.query = odd ? "a=1&access_token=x" : NULL;
    r->request.query_len = odd ? 18 : 0;
    r->request.client = "127.0.0.1:1";
    r->request.user_agent = "ua/1";
    r->request.user_agent_len = 4;
    r->request.bytes_in = odd ? UINT64_MAX : 17; /* clamped to 2^53-1 */
    r->request.headers = h;
    r->request.n_headers = odd ? 1 : 0;
    if (!odd) {
        r->upstream.name = "billing";
        r->upstream.status = 200;
        r->upstream.latency_ms = 3;
        r->upstream.bytes = 5;
        r->upstream.identity = "default";
        r->upstream.audience = "https://billing.test";
    }
    r->bytes_out = 5;
    r->duration_ms = odd ? -1 : 4;
}

/* Cloud Logging's special members of a structured line (Cloud Logging
 * "Structured logging: special JSON fields"): a record must have none, at
 * any level, and only [a-z0-9_] names (so never logging.googleapis.com/...). */
static bool names_clear(const json_t *v, char *bad, size_t cap)
{
    static const char *const special[] = {"severity",   "message",          "time",
                                          "timestamp",  "timestampSeconds", "timestampNanos",
                                          "httpRequest"};
    const char *k;
    json_t *e;
    size_t i;

    if (json_is_array(v)) {
        json_array_foreach((json_t *)v, i, e)
            if (!names_clear(e, bad, cap))
                return false;
        return true;
    }
    if (!json_is_object(v))
        return true;
    json_object_foreach((json_t *)v, k, e) {
        bool ok_name = *k != '\0';
        for (const char *c = k; *c; c++)
            ok_name &= (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_';
        for (i = 0; i < sizeof(special) / sizeof(special[0]); i++)
            ok_name &= strcmp(k, special[i]) != 0;
        if (!ok_name || !names_clear(e, bad, cap)) {
            if (!ok_name)
                snprintf(bad, cap, "%s", k);
            return false;
        }
    }
    return true;
}

struct lines {
    char **v;
    size_t n;
};

static void load(struct lines *l, const char *path)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while (f && (n = getline(&line, &cap, f)) > 0) {
        if (line[n - 1] == '\n')
            line[--n] = '\0';
        l->v = xrealloc(l->v, (l->n + 1) * sizeof(char *));
        l->v[l->n++] = xstrdup(line);
    }
    free(line);
    if (f)
        fclose(f);
}

static void write_log(struct lines *l)
{
    char *path = xasprintf("%s/a.jsonl", dir), *key = key_file(), err[256];
    struct cfg_audit c = {0};
    static char *hdrs[] = {"X-Sfn-Execution"};
    struct audit_reservation rsv[16], extra;
    struct audit_record r;
    struct audit_log *log;
    DIR *d;
    struct dirent *e;
    char *names[64];
    size_t nn = 0;

    c.path = path;
    c.fsync = FSYNC_NONE;
    c.on_failure = ON_FAILURE_ALLOW;
    c.signing_key = key;
    c.record_headers = hdrs;
    c.n_record_headers = 1;
    c.checkpoint_records = 5;
    c.checkpoint_interval_s = 60;
    c.rotate_bytes = 8192;
    c.queue_records = 16;
    log = audit_open(&c, err, sizeof(err));
    if (!log) {
        tap_diag("audit_open: %s", err);
        exit(1);
    };
    for (int i = 0; i < 16; i++)
        audit_reserve(log, &rsv[i]);
    audit_reserve(log, &extra);
    fill(&r, "lost", false);
    audit_submit(log, &extra, &r, NULL, NULL); /* no room: lost, then told by a lost record */
    for (int i = 0; i < 16; i++) {
        char id[16];
        snprintf(id, sizeof(id), "r%d", i);
        fill(&r, id, i % 2);
        audit_submit(log, &rsv[i], &r, NULL, NULL);
    }
    audit_close(log);
    d = opendir(dir);
    while (d && (e = readdir(d)))
        if (!strncmp(e->d_name, "a.jsonl", 7) && nn < 64)
            names[nn++] = xasprintf("%s/%s", dir, e->d_name);
    closedir(d);
    for (size_t i = 0; i < nn; i++) { /* rotated files (a.jsonl.<seq>) first, in order */
        for (size_t j = i + 1; j < nn; j++)
            if (strlen(names[j]) > strlen(names[i]) ||
                (strlen(names[j]) == strlen(names[i]) && strcmp(names[j], names[i]) < 0)) {
                char *t = names[i];
                names[i] = names[j];
                names[j] = t;
            }
    }
    for (size_t i = 0; i < nn; i++) {
        load(l, names[i]);
        free(names[i]);
    }
    free(path);
    free(key);
}

static int canon(const char *json, char *out, size_t cap, size_t *len, char *why, size_t wl)
{
    json_t *j = json_loads(json, JSON_REJECT_DUPLICATES, NULL);
    int rc = audit_canon_record(j, out, cap, len, why, wl);
    json_decref(j);
    return rc;
}

struct got {
    char entries[8][512];
    size_t n;
};

static int on_entry(void *arg, const char *e, size_t len, uint64_t no)
{
    struct got *g = arg;
    (void)no;
    if (g->n < 8)
        snprintf(g->entries[g->n++], sizeof(g->entries[0]), "%.*s", (int)len, e);
    return 0;
}

static int split(bool array, const char *text, size_t chunk, struct got *g, char *why, size_t wl)
{
    struct audit_le_reader *r = audit_le_new(array);
    size_t n = strlen(text);
    int rc = 0;
    memset(g, 0, sizeof(*g));
    for (size_t off = 0; off < n && !rc; off += chunk)
        rc = audit_le_feed(r, text + off, n - off < chunk ? n - off : chunk, on_entry, g, why, wl);
    if (!rc)
        rc = audit_le_end(r, why, wl);
    audit_le_free(r);
    return rc;
}

/* The keys of a line in the order they appear, depth first (a string
 * followed by ':' outside any string is a key), joined by ' '. */
static void line_keys(const char *s, char *out, size_t cap)
{
    size_t o = 0;
    out[0] = '\0';
    for (const char *p = s; *p; p++) {
        const char *start, *q;
        if (*p != '"')
            continue;
        start = ++p;
        while (*p && *p != '"')
            p += *p == '\\' && p[1] ? 2 : 1;
        q = p + 1;
        if (*p && *q == ':' && o + (size_t)(p - start) + 2 < cap) {
            o += (size_t)snprintf(out + o, cap - o, "%s%.*s", o ? " " : "", (int)(p - start),
                                  start);
        }
    }
}

/* The same from a member table, descending into an object member only when
 * the record has it as an object (`present` is what the record holds). */
static void table_keys(const struct audit_member *m, const json_t *present, char *out, size_t cap,
                       size_t *o)
{
    for (; m->name; m++) {
        const json_t *v = json_object_get(present, m->name);
        if (!v)
            continue; /* left out of this record (truncated): checked apart */
        *o += (size_t)snprintf(out + *o, cap - *o, "%s%s", *o ? " " : "", m->name);
        if (m->sub && json_is_object(v))
            table_keys(m->sub, v, out, cap, o);
    }
}

/* The writer's request record against audit_request_members, the table the
 * canonical form orders by: the same members, in the same order, at every
 * level, for a record with everything and one with nothing. */
static void table_matches_writer(void)
{
    static char longval[700];
    struct audit_header h[1] = {{"X-Sfn-Execution", longval, sizeof(longval) - 1}};
    char *const allowed[] = {(char *)"X-Sfn-Execution"};
    struct audit_record full, empty;
    const struct audit_member *m;
    size_t n_table = 0, n_put = 0;

    for (m = audit_request_members; m->name; m++) {
        n_table++;
        n_put += m->put != NULL && !strncmp(m->key, ",\"", 2) &&
                 !strncmp(m->key + 2, m->name, strlen(m->name)) &&
                 m->key_len == strlen(m->name) + 4;
    }
    memset(longval, 'v', sizeof(longval) - 1);
    fill(&full, "req-1", false);
    full.request.query = "a=1";
    full.request.query_len = 3;
    full.request.headers = h;
    full.request.n_headers = 1; /* cut at AUDIT_HEADER_VALUE_MAX: truncated */
    full.client_request_id = "c-1";
    full.link.op = "use";
    full.link.id = "0123456789abcdef0123456789abcdef";
    full.link.method = "GET";
    full.link.path = "/r?x=1";
    full.link.path_len = 6;
    full.link.kid = "k1";
    full.link.minter = "m";
    full.link.exp = 1767225600;
    full.link.uses = 1;
    memset(&empty, 0, sizeof(empty));
    empty.worker = -1;
    empty.duration_ms = -1;
    empty.upstream.latency_ms = -1;
    for (int i = 0; i < 2; i++) {
        const struct audit_record *r = i ? &empty : &full;
        size_t len, o = 0;
        char *body = audit_record_body(r, allowed, 1, &len);
        char *line = xasprintf("{%s}", body);
        char got[4096], want[4096];
        json_t *j = json_loads(line, JSON_REJECT_DUPLICATES, NULL);
        line_keys(body, got, sizeof(got));
        snprintf(want, sizeof(want), "kind ts");
        o = strlen(want);
        table_keys(audit_request_members, j, want, sizeof(want), &o);
        ok(j && !strcmp(got, want), "%s record: the writer's members are the table's, in its order",
           i ? "an empty" : "a full");
        if (strcmp(got, want))
            tap_diag("writer: %s\ntable:  %s", got, want);
        /* every member of the table is written, `truncated` only when cut */
        ok(json_object_size(j) == 2 + n_table - (size_t)i,
           "%s record has each of the table's %zu members%s (%zu with kind and ts)",
           i ? "an empty" : "a full", n_table, i ? " but truncated" : "", json_object_size(j));
        json_decref(j);
        free(line);
        free(body);
    }
    ok(n_table > 10 && n_put == n_table,
       "every member of the table has its writer and its rendered key (%zu)", n_table);
}

int main(void)
{
    struct lines l = {0};
    char *out = xmalloc(AUDIT_LINE_MAX + 1), why[256];
    size_t len;
    bool kinds[5] = {false}, all_equal = true, int_equal = true;
    static const char *const kind_names[] = {"open", "request", "lost", "checkpoint", "rotate"};

    if (!mkdtemp(dir)) {
        tap_diag("mkdtemp");
        return 1;
    };
    table_matches_writer();
    write_log(&l);
    ok(l.n > 20, "the writer wrote a log of %zu lines", l.n);
    for (size_t i = 0; i < l.n; i++) {
        json_t *j = json_loads(l.v[i], JSON_REJECT_DUPLICATES, NULL), *s;
        const char *kind = json_string_value(json_object_get(j, "kind"));
        for (int k = 0; k < 5; k++)
            if (kind && !strcmp(kind, kind_names[k]))
                kinds[k] = true;
        if (audit_canon_record(j, out, AUDIT_LINE_MAX + 1, &len, why, sizeof(why)) != 0 ||
            len != strlen(l.v[i]) || memcmp(out, l.v[i], len)) {
            int_equal = false;
            tap_diag("as parsed, line %zu: %s\n  %s", i + 1, why, l.v[i]);
        }
        for (int round = 0; round < 3; round++) {
            s = as_struct(j);
            if (audit_canon_record(s, out, AUDIT_LINE_MAX + 1, &len, why, sizeof(why)) != 0 ||
                len != strlen(l.v[i]) || memcmp(out, l.v[i], len)) {
                all_equal = false;
                tap_diag("as a Struct, line %zu: %s", i + 1, why);
            }
            json_decref(s);
        }
        json_decref(j);
    }
    {
        char bad[64] = "";
        bool clear = true;
        for (size_t i = 0; i < l.n && clear; i++) {
            json_t *j = json_loads(l.v[i], 0, NULL);
            clear = names_clear(j, bad, sizeof(bad));
            json_decref(j);
        }
        ok(clear, "no member of any record is one of Cloud Logging's special fields (%s)", bad);
    }
    for (int k = 0; k < 5; k++)
        ok(kinds[k], "the log has a %s record", kind_names[k]);
    ok(int_equal, "every line rebuilds from its parsed value, byte for byte");
    ok(all_equal, "every line rebuilds from its members shuffled and its numbers doubles");
    {
        bool clamped = false, escaped = false;
        for (size_t i = 0; i < l.n; i++) {
            clamped |= strstr(l.v[i], "\"bytes_in\":9007199254740991,") != NULL;
            escaped |= strstr(l.v[i],
                              "/p\\\"q\\\\r\\u0001\\u001f\\u007f\\u00c3\\u00a9\\u00ff/ok") != NULL;
        }
        ok(clamped, "a count beyond 2^53-1 is written as 2^53-1, which a double holds");
        ok(escaped,
           "quote, backslash, control, DEL and high bytes are written as the canonical form says");
    }

    /* what can never be a record */
    {
        static const struct {
            const char *json, *why, *name;
        } bad[] = {
            {"{\"v\":1,\"seq\":0,\"kind\":\"checkpoint\",\"extra\":1}", "\"extra\"",
             "an unknown member"},
            {"{\"v\":1,\"seq\":0,\"kind\":\"open\",\"severity\":\"INFO\"}", "\"severity\"",
             "a lifted special field put back"},
            {"{\"v\":1,\"seq\":0.5,\"kind\":\"open\"}", "not an integer", "a fraction"},
            {"{\"v\":1,\"seq\":9007199254740992,\"kind\":\"open\"}", "2^53",
             "a number beyond 2^53-1"},
            {"{\"v\":1,\"seq\":1e300,\"kind\":\"open\"}", "2^53", "a huge double"},
            {"{\"v\":1,\"kind\":\"open\",\"host\":\"\\u0100\"}", "U+00FF",
             "a character above U+00FF"},
            {"{\"v\":1,\"kind\":\"open\",\"host\":{\"a\":1}}", "an object",
             "an object where none belongs"},
            {"{\"v\":1,\"kind\":\"request\",\"request\":{\"headers\":[{\"a\":1}]}}",
             "inside the array", "an object in an array"},
            {"{\"v\":1,\"kind\":\"nope\"}", "unknown kind", "an unknown kind"},
            {"{\"v\":1}", "kind", "no kind"},
            {"[1]", "not a JSON object", "not an object"},
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            json_t *j = json_loads(bad[i].json, 0, NULL);
            int rc = audit_canon_record(j, out, AUDIT_LINE_MAX + 1, &len, why, sizeof(why));
            ok(rc == -1 && strstr(why, bad[i].why), "refused: %s (%s)", bad[i].name, why);
            json_decref(j);
        }
        ok(canon(
               "{\"kind\":\"rotate\",\"v\":1.0,\"cause\":\"size\",\"seq\":-0.0,\"prev_file\":null}",
               out, 64, &len, why, sizeof(why)) == 0 &&
               !strcmp(
                   out,
                   "{\"v\":1,\"seq\":0,\"kind\":\"rotate\",\"cause\":\"size\",\"prev_file\":null}"),
           "members in table order, 1.0 as 1, -0.0 as 0 (%s)", out);
        ok(canon(
               "{\"v\":1,\"kind\":\"open\",\"host\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}",
               out, 32, &len, why, sizeof(why)) == -1 &&
               strstr(why, "longer"),
           "a line beyond the cap is refused (%s)", why);
    }

    /* the open record's instance and unclean_stop (written by the witness/crash writer) */
    {
        static const char want[] =
            "{\"v\":1,\"seq\":9,\"prev\":\"p\",\"log\":\"l\",\"kind\":\"open\",\"ts\":\"t\","
            "\"start\":\"restart\",\"baton\":\"1\",\"host\":\"h\",\"pid\":7,\"fsync\":\"batch\","
            "\"on_failure\":\"deny\",\"key_id\":null,\"torn_bytes\":0,\"torn_sha256\":null,"
            "\"prev_file\":null,\"instance\":{\"service\":\"baton\",\"revision\":\"baton-1\","
            "\"configuration\":null,\"id\":\"00ab\",\"host\":\"h\",\"pid\":7,\"started\":\"t\"},"
            "\"unclean_stop\":{\"log\":\"l\",\"pid\":6,\"started\":\"t0\",\"fsync\":\"batch\","
            "\"last_seq\":8,\"last_ts\":\"t1\",\"missing_from_seq\":9,\"window_from\":\"t1\","
            "\"window_to\":\"t\"}}";
        json_t *j = json_loads(want, 0, NULL), *s = as_struct(j);
        char inst[256];
        ok(audit_canon_record(s, out, AUDIT_LINE_MAX + 1, &len, why, sizeof(why)) == 0 &&
               !strcmp(out, want),
           "an open record with instance and unclean_stop rebuilds in table order (%s)", why);
        audit_canon_instance(j, inst, sizeof(inst));
        is_str(inst, "service=baton revision=baton-1 id=00ab host=h pid=7 started=t",
               "the instance is described from its members, nulls left out");
        json_object_del(j, "instance");
        audit_canon_instance(j, inst, sizeof(inst));
        is_str(inst, "host=h pid=7", "without instance: host and pid");
        json_decref(s);
        json_decref(j);
    }

    /* the key of a canonical line */
    {
        char id[33];
        uint64_t seq = 0;
        const char *line = l.v[1];
        json_t *j = json_loads(line, 0, NULL);
        ok(audit_canon_key(line, strlen(line), id, &seq) == 0 &&
               seq == (uint64_t)json_integer_value(json_object_get(j, "seq")) &&
               !strcmp(id, json_string_value(json_object_get(j, "log"))),
           "audit_canon_key reads the seq and the log id");
        json_decref(j);
        ok(audit_canon_key("{\"seq\":1,\"v\":1}", 15, id, &seq) == -1,
           "a line in another order has no key");
        ok(audit_canon_key("{\"v\":1,\"seq\":01,", 16, id, &seq) == -1,
           "nor one with a leading zero");
    }

    /* LogEntry -> record */
    {
        char *entry;
        json_t *j = json_loads(l.v[1], 0, NULL), *e = json_object(), *p = as_struct(j);
        json_object_set_new(e, "insertId", json_string("abc"));
        json_object_set_new(e, "severity", json_string("DEFAULT"));
        json_object_set_new(e, "labels", json_pack("{s:s}", "instanceId", "00ab"));
        json_object_set_new(e, "jsonPayload", p);
        entry = json_dumps(e, JSON_INDENT(2));
        ok(audit_le_record(entry, strlen(entry), out, AUDIT_LINE_MAX + 1, &len, why, sizeof(why)) ==
                   AUDIT_LE_OK &&
               len == strlen(l.v[1]) && !memcmp(out, l.v[1], len),
           "a LogEntry gives back the record's exact line (%s)", why);
        free(entry);
        json_object_set_new(e, "severity", json_string("INFO"));
        entry = json_dumps(e, 0);
        ok(audit_le_record(entry, strlen(entry), out, AUDIT_LINE_MAX + 1, &len, why, sizeof(why)) ==
                   AUDIT_LE_BAD_RECORD &&
               strstr(why, "severity"),
           "a severity lifted out of the payload is put back, and refused (%s)", why);
        free(entry);
        json_object_set_new(e, "severity", json_string("DEFAULT"));
        json_object_set_new(e, "httpRequest", json_pack("{s:s}", "requestMethod", "GET"));
        entry = json_dumps(e, 0);
        ok(audit_le_record(entry, strlen(entry), out, AUDIT_LINE_MAX + 1, &len, why, sizeof(why)) ==
                   AUDIT_LE_BAD_RECORD &&
               strstr(why, "httpRequest"),
           "an httpRequest likewise (%s)", why);
        free(entry);
        json_decref(e);
        json_decref(j);
    }
    {
        static const struct {
            const char *entry, *why, *name;
        } bad[] = {
            {"{\"insertId\":\"a\",\"textPayload\":\"hello\"}", "textPayload",
             "a textPayload entry"},
            {"{\"insertId\":\"a\"}", "without jsonPayload", "an entry without payload"},
            {"{\"insertId\":\"a\",\"jsonPayload\":[1]}", "not an object",
             "a jsonPayload that is not an object"},
            {"{\"a\":1}", "not a LogEntry", "an object that is not a LogEntry"},
            {"{\"insertId\":", "not JSON", "not JSON"},
            {"{\"insertId\":\"a\",\"insertId\":\"b\",\"jsonPayload\":{}}", "not JSON",
             "a duplicate member"},
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
            ok(audit_le_record(bad[i].entry, strlen(bad[i].entry), out, AUDIT_LINE_MAX + 1, &len,
                               why, sizeof(why)) == AUDIT_LE_NOT_ENTRY &&
                   strstr(why, bad[i].why),
               "not a record's LogEntry: %s (%s)", bad[i].name, why);
    }

    /* the splitter */
    {
        static const char arr[] = " [\n {\"a\":\"}]\\\"{\",\"b\":[1,{\"c\":2}]} ,\n{\"d\":{}}\n]\n";
        static const char nd[] = "{\"a\":1}\n\n{\"b\":\"\\\\\"}\r\n{\"c\":[]}";
        struct got g;
        bool every = true;
        for (size_t chunk = 1; chunk <= sizeof(arr); chunk++) {
            if (split(true, arr, chunk, &g, why, sizeof(why)) != 0 || g.n != 2 ||
                strcmp(g.entries[0], "{\"a\":\"}]\\\"{\",\"b\":[1,{\"c\":2}]}") ||
                strcmp(g.entries[1], "{\"d\":{}}"))
                every = false;
            if (split(false, nd, chunk, &g, why, sizeof(why)) != 0 || g.n != 3 ||
                strcmp(g.entries[1], "{\"b\":\"\\\\\"}"))
                every = false;
        }
        ok(every, "arrays and newline-delimited entries split alike in chunks of every size");
        ok(split(true, "[]", 1, &g, why, sizeof(why)) == 0 && g.n == 0,
           "an empty array has no entry");
        ok(split(true, "[{},1]", 64, &g, why, sizeof(why)) == -1 &&
               strstr(why, "entry 2 is not a JSON object"),
           "an array element that is not an object (%s)", why);
        ok(split(true, "[{}", 64, &g, why, sizeof(why)) == -1 && strstr(why, "not closed"),
           "an array cut short (%s)", why);
        ok(split(true, "[{\"a\":", 64, &g, why, sizeof(why)) == -1 && strstr(why, "cut short"),
           "an entry cut short (%s)", why);
        ok(split(true, "[{}] x", 64, &g, why, sizeof(why)) == -1 && strstr(why, "after the array"),
           "bytes after the array (%s)", why);
        ok(split(false, "{}\nhello", 64, &g, why, sizeof(why)) == -1 && strstr(why, "byte 4"),
           "a line that is not an object names its byte (%s)", why);
        ok(split(true, "{}", 64, &g, why, sizeof(why)) == -1,
           "an object where an array was expected");
        {
            size_t big = AUDIT_LE_ENTRY_MAX + 10;
            char *t = xmalloc(big + 1);
            memset(t, ' ', big);
            t[0] = '{';
            t[1] = '"';
            t[big - 2] = '"';
            t[big - 1] = '}';
            t[big] = '\0';
            ok(split(false, t, 65536, &g, why, sizeof(why)) == -1 && strstr(why, "longer than"),
               "an entry longer than AUDIT_LE_ENTRY_MAX is refused, not buffered (%s)", why);
            free(t);
        }
    }

    for (size_t i = 0; i < l.n; i++)
        free(l.v[i]);
    free(l.v);
    free(out);
    {
        char *cmd = xasprintf("rm -rf %s", dir);
        if (system(cmd) != 0)
            tap_diag("could not remove %s", dir);
        free(cmd);
    }
    return tap_done();
}
