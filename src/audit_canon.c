/*
 * audit_canon.c: a record's JSON value back to the exact line the writer
 * wrote (audit_canon.h, docs/audit.md "Canonical form").
 *
 * The member order of a request record is the writer's own table
 * (audit_request_members, audit_record.c); that of each other kind lives in
 * the tables below, which must list exactly what src/audit_writer.c and
 * src/audit_open.c write, in their order: test_audit_canon formats a
 * record of every kind with the writer, parses it, shuffles its members and
 * turns every integer into a double, and checks that the rebuilt line is the
 * writer's byte for byte. A member the tables do not know is refused, never
 * placed by a guess: the rebuilt line would hash differently and show as an
 * edit far from its cause.
 */
#include "audit_canon.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

#define CANON_MAX_DEPTH 8

#define M(name) AUDIT_MEMBER(name, NULL, NULL)
#define O(name, sub) AUDIT_MEMBER(name, sub, NULL)
#define END AUDIT_MEMBERS_END

static const struct audit_member common_m[] = {M("v"),    M("seq"), M("prev"), M("log"),
                                               M("kind"), M("ts"),  END};

/* instance and unclean_stop: the open record's members the witness and
 * crash-recovery writer adds (docs/audit.md "open"). */
static const struct audit_member instance_m[] = {
    M("service"), M("revision"), M("configuration"), M("id"),
    M("host"),    M("pid"),      M("started"),       END};

static const struct audit_member unclean_m[] = {
    M("log"),       M("pid"),     M("started"),          M("fsync"),
    M("last_seq"),  M("last_ts"), M("missing_from_seq"), M("window_from"),
    M("window_to"), END};

static const struct audit_member open_m[] = {M("start"),
                                             M("baton"),
                                             M("host"),
                                             M("pid"),
                                             M("fsync"),
                                             M("on_failure"),
                                             M("key_id"),
                                             M("torn_bytes"),
                                             M("torn_sha256"),
                                             M("prev_file"),
                                             O("instance", instance_m),
                                             O("unclean_stop", unclean_m),
                                             END};

static const struct audit_member rotate_m[] = {M("cause"), M("prev_file"), END};

static const struct audit_member lost_m[] = {M("count"), M("refused"), M("since"), M("error"), END};

static const struct audit_member checkpoint_m[] = {M("key_id"), M("sig"), END};

#undef M
#undef O
#undef END

static const struct {
    const char *kind;
    const struct audit_member *m;
} kinds[] = {{"request", audit_request_members},
             {"open", open_m},
             {"rotate", rotate_m},
             {"lost", lost_m},
             {"checkpoint", checkpoint_m}};

struct out {
    char *p;
    size_t len, cap;
    char *why;
    size_t whylen;
    bool failed;
};

static void fail(struct out *o, const char *msg)
{
    if (o->failed)
        return;
    o->failed = true;
    snprintf(o->why, o->whylen, "%s", msg);
}

static void put(struct out *o, const char *s, size_t n)
{
    if (o->failed)
        return;
    if (o->len + n >= o->cap) {
        fail(o, "the rebuilt record is longer than 65536 bytes");
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static void put_string(struct out *o, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t i = 0;

    put(o, "\"", 1);
    while (i < n && !o->failed) {
        unsigned char c = (unsigned char)s[i];
        unsigned cp;
        size_t k;
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            size_t j = i + 1; /* a run written as itself: one copy */
            while (j < n && (unsigned char)s[j] >= 0x20 && (unsigned char)s[j] < 0x7f &&
                   s[j] != '"' && s[j] != '\\')
                j++;
            put(o, s + i, j - i);
            i = j;
            continue;
        }
        if (c < 0x80) {
            cp = c;
            k = 1;
        } else if ((c & 0xe0) == 0xc0 && i + 1 < n && ((unsigned char)s[i + 1] & 0xc0) == 0x80) {
            cp = (unsigned)(c & 0x1f) << 6 | ((unsigned char)s[i + 1] & 0x3f);
            k = 2;
        } else {
            /* jansson holds valid UTF-8: anything longer is above U+07FF */
            fail(o, "a string holds a character above U+00FF, which the writer never writes");
            return;
        }
        if (cp > 0xff) {
            fail(o, "a string holds a character above U+00FF, which the writer never writes");
            return;
        }
        if (cp == '"' || cp == '\\') {
            char e[2] = {'\\', (char)cp};
            put(o, e, 2);
        } else if (cp < 0x20 || cp >= 0x7f) {
            char e[6] = {'\\', 'u', '0', '0', hex[cp >> 4], hex[cp & 15]};
            put(o, e, 6);
        } else {
            char e = (char)cp;
            put(o, &e, 1);
        }
        i += k;
    }
    put(o, "\"", 1);
}

static void put_number(struct out *o, const json_t *v)
{
    int64_t n;
    char t[20];
    size_t len;

    if (json_is_integer(v)) {
        n = (int64_t)json_integer_value(v);
    } else {
        double d = json_real_value(v);
        if (!isfinite(d) || d != floor(d)) {
            fail(o, "a number is not an integer (the writer writes integers only)");
            return;
        }
        if (d > (double)AUDIT_NUMBER_MAX || d < -(double)AUDIT_NUMBER_MAX) {
            fail(o, "a number is beyond 2^53-1");
            return;
        }
        n = (int64_t)d;
    }
    if (n > AUDIT_NUMBER_MAX || n < -AUDIT_NUMBER_MAX) {
        fail(o, "a number is beyond 2^53-1");
        return;
    }
    if (n < 0)
        put(o, "-", 1);
    len = u64_decimal(n < 0 ? (uint64_t)0 - (uint64_t)n : (uint64_t)n, t);
    put(o, t, len);
}

static void put_value(struct out *o, const json_t *v, const struct audit_member *sub,
                      const char *name, int depth);

static void put_object(struct out *o, const json_t *obj, const struct audit_member *const *tables,
                       size_t ntables, const char *what, int depth)
{
    const char *key;
    json_t *val;
    bool first = true;

    /* every member must be one the tables know */
    json_object_foreach((json_t *)obj, key, val) {
        bool known = false;
        for (size_t t = 0; t < ntables && !known; t++)
            for (const struct audit_member *m = tables[t]; m->name && !known; m++)
                known = !strcmp(m->name, key);
        if (!known) {
            char why[200];
            snprintf(why, sizeof(why), "member \"%.60s\" is not one %s has", key, what);
            fail(o, why);
            return;
        }
    }
    put(o, "{", 1);
    for (size_t t = 0; t < ntables; t++) {
        for (const struct audit_member *m = tables[t]; m->name; m++) {
            json_t *mv = json_object_get(obj, m->name);
            if (!mv)
                continue;
            if (!first)
                put(o, ",", 1);
            first = false;
            put_string(o, m->name, strlen(m->name));
            put(o, ":", 1);
            put_value(o, mv, m->sub, m->name, depth + 1);
        }
    }
    put(o, "}", 1);
}

static void put_value(struct out *o, const json_t *v, const struct audit_member *sub,
                      const char *name, int depth)
{
    if (o->failed)
        return;
    if (depth > CANON_MAX_DEPTH) {
        fail(o, "values nested deeper than a record's");
        return;
    }
    switch (json_typeof(v)) {
    case JSON_NULL:
        put(o, "null", 4);
        break;
    case JSON_TRUE:
        put(o, "true", 4);
        break;
    case JSON_FALSE:
        put(o, "false", 5);
        break;
    case JSON_INTEGER:
    case JSON_REAL:
        put_number(o, v);
        break;
    case JSON_STRING:
        put_string(o, json_string_value(v), json_string_length(v));
        break;
    case JSON_ARRAY: {
        size_t i;
        json_t *e;
        put(o, "[", 1);
        json_array_foreach((json_t *)v, i, e) {
            if (i)
                put(o, ",", 1);
            if (json_is_object(e)) {
                char why[160];
                snprintf(why, sizeof(why),
                         "an object inside the array \"%.60s\", where a "
                         "record has none",
                         name);
                fail(o, why);
                return;
            }
            put_value(o, e, NULL, name, depth + 1);
        }
        put(o, "]", 1);
        break;
    }
    case JSON_OBJECT: {
        char what[96];
        if (!sub) {
            char why[160];
            snprintf(why, sizeof(why),
                     "member \"%.60s\" is an object, which it never is in a "
                     "record",
                     name);
            fail(o, why);
            return;
        }
        snprintf(what, sizeof(what), "the object \"%s\"", name);
        put_object(o, v, &sub, 1, what, depth);
        break;
    }
    }
}

int audit_canon_record(const json_t *rec, char *out, size_t cap, size_t *len, char *why,
                       size_t whylen)
{
    struct out o = {out, 0, cap, why, whylen, false};
    const struct audit_member *tables[2] = {common_m, NULL};
    const json_t *kind = json_object_get(rec, "kind");
    char what[64];

    *len = 0;
    if (!json_is_object(rec)) {
        snprintf(why, whylen, "not a JSON object");
        return -1;
    }
    if (!json_is_string(kind)) {
        snprintf(why, whylen, "\"kind\" is missing");
        return -1;
    }
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
        if (!strcmp(kinds[i].kind, json_string_value(kind)))
            tables[1] = kinds[i].m;
    if (!tables[1]) {
        snprintf(why, whylen, "unknown kind");
        return -1;
    }
    snprintf(what, sizeof(what), "the %s record", json_string_value(kind));
    put_object(&o, rec, tables, 2, what, 0);
    if (o.failed)
        return -1;
    out[o.len] = '\0';
    *len = o.len;
    return 0;
}

static bool hex_run(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return false;
    return true;
}

int audit_canon_key(const char *line, size_t len, char log_id[33], uint64_t *seq)
{
    static const char a[] = "{\"v\":1,\"seq\":", b[] = ",\"prev\":\"", c[] = "\",\"log\":\"";
    size_t p = sizeof(a) - 1, start;
    uint64_t s = 0;

    if (len < p || memcmp(line, a, p))
        return -1;
    start = p;
    while (p < len && line[p] >= '0' && line[p] <= '9' && p - start < 16) {
        s = s * 10 + (uint64_t)(line[p] - '0');
        p++;
    }
    if (p == start || (p - start > 1 && line[start] == '0') || s > (uint64_t)AUDIT_NUMBER_MAX)
        return -1;
    if (len - p < sizeof(b) - 1 + 64 + sizeof(c) - 1 + 32 + 2 || memcmp(line + p, b, sizeof(b) - 1))
        return -1;
    p += sizeof(b) - 1;
    if (!hex_run(line + p, 64))
        return -1;
    p += 64;
    if (memcmp(line + p, c, sizeof(c) - 1))
        return -1;
    p += sizeof(c) - 1;
    if (!hex_run(line + p, 32) || line[p + 32] != '"' || line[p + 33] != ',')
        return -1;
    memcpy(log_id, line + p, 32);
    log_id[32] = '\0';
    *seq = s;
    return 0;
}

static void append(char *out, size_t cap, size_t *n, const char *s)
{
    while (*s && *n + 1 < cap) {
        unsigned char c = (unsigned char)*s++;
        out[(*n)++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    out[*n] = '\0';
}

static void describe(const char *key, const json_t *v, char *out, size_t cap, size_t *n)
{
    char num[32], cut[129];
    const char *text;

    if (json_is_string(v)) {
        text = json_string_value(v);
    } else if (json_is_integer(v)) {
        snprintf(num, sizeof(num), "%" PRId64, (int64_t)json_integer_value(v));
        text = num;
    } else if (json_is_real(v)) {
        snprintf(num, sizeof(num), "%.0f", json_real_value(v));
        text = num;
    } else if (json_is_true(v) || json_is_false(v)) {
        text = json_is_true(v) ? "true" : "false";
    } else {
        return; /* null, arrays, objects: nothing to say */
    }
    if (*n)
        append(out, cap, n, " ");
    append(out, cap, n, key);
    append(out, cap, n, "=");
    snprintf(cut, sizeof(cut), "%s", text);
    append(out, cap, n, cut);
}

void audit_canon_describe(const json_t *obj, char *out, size_t cap)
{
    const char *key;
    json_t *val;
    size_t n = 0;

    if (!cap)
        return;
    out[0] = '\0';
    if (json_is_object(obj))
        json_object_foreach((json_t *)obj, key, val)
            describe(key, val, out, cap, &n);
}

void audit_canon_instance(const json_t *open_rec, char *out, size_t cap)
{
    const json_t *inst = json_object_get(open_rec, "instance");
    size_t n = 0;

    if (json_is_object(inst)) {
        audit_canon_describe(inst, out, cap);
        return;
    }
    if (!cap)
        return;
    out[0] = '\0';
    if (json_is_object(open_rec)) { /* a writer before `instance`: host and pid */
        describe("host", json_object_get(open_rec, "host"), out, cap, &n);
        describe("pid", json_object_get(open_rec, "pid"), out, cap, &n);
    }
}
