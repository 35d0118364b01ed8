/*
 * audit_logentry.c: LogEntry exports cut into entries, and an entry's
 * jsonPayload rebuilt into the record line (audit_logentry.h).
 *
 * The splitter is a byte-level state machine that knows only what it needs to
 * find where a top-level object ends: nesting of {} and [] outside strings,
 * and strings with their backslash escapes. It copies one entry at a time
 * into a buffer capped at AUDIT_LE_ENTRY_MAX; jansson parses that entry
 * (duplicate members refused). Nothing else of the input is held.
 *
 * What Cloud Logging does to a JSON line written to stdout (Cloud Logging
 * "Structured logging", LogEntry reference): the object becomes jsonPayload,
 * a protobuf Struct, so member order is not kept and every number is a
 * double; special members are moved out of the payload into the entry
 * (severity, httpRequest, time/timestamp, logging.googleapis.com/insertId,
 * labels, operation, sourceLocation, spanId, trace, trace_sampled). baton's
 * records use none of those names, so a payload holds the whole record; a
 * lifted member that the platform would not have set on its own (severity
 * other than DEFAULT, httpRequest, sourceLocation, operation) is put back so
 * the record fails to rebuild, as it should. timestamp, insertId, labels,
 * trace and spanId are set by Cloud Run and the agent for every line, so they
 * say nothing about the payload and are not put back.
 */
#include "audit_logentry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "audit_canon.h"
#include "util.h"

enum le_state {
    LE_START,       /* before the first value: '[' (array) or an object */
    LE_EXPECT_ITEM, /* array: after '[' or ',' */
    LE_AFTER_ITEM,  /* array: after an entry, ',' or ']' */
    LE_BETWEEN,     /* newline-delimited: whitespace or the next '{' */
    LE_IN_ENTRY,    /* copying an object */
    LE_DONE,        /* array closed: only whitespace may follow */
};

struct audit_le_reader {
    bool array;
    enum le_state st;
    int depth;
    bool in_str, esc;
    bool first_item; /* array: no entry yet (']' allowed) */
    char *buf;
    size_t len;
    uint64_t no;     /* entries begun */
    uint64_t offset; /* bytes fed */
};

struct audit_le_reader *audit_le_new(bool array)
{
    struct audit_le_reader *r = xcalloc(1, sizeof(*r));
    r->array = array;
    r->st = LE_START;
    r->buf = xmalloc(AUDIT_LE_ENTRY_MAX);
    return r;
}

void audit_le_free(struct audit_le_reader *r)
{
    if (!r)
        return;
    free(r->buf);
    free(r);
}

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int bad(struct audit_le_reader *r, char c, const char *what, char *why, size_t whylen)
{
    if (c >= 0x21 && c <= 0x7e)
        snprintf(why, whylen, "byte %llu ('%c'): %s", (unsigned long long)r->offset + 1, c, what);
    else
        snprintf(why, whylen, "byte %llu (0x%02x): %s", (unsigned long long)r->offset + 1,
                 (unsigned char)c, what);
    return -1;
}

int audit_le_feed(struct audit_le_reader *r, const void *data, size_t len, audit_le_cb cb,
                  void *arg, char *why, size_t whylen)
{
    const char *p = data, *end = p + len;

    for (; p < end; p++, r->offset++) {
        char c = *p;
        switch (r->st) {
        case LE_START:
            if (is_ws(c))
                continue;
            if (r->array) {
                if (c != '[')
                    return bad(r, c, "not a JSON array of LogEntry objects", why, whylen);
                r->st = LE_EXPECT_ITEM;
                r->first_item = true;
                continue;
            }
            /* newline-delimited: an object begins */
            __attribute__((fallthrough));
        case LE_BETWEEN:
        case LE_EXPECT_ITEM:
            if (is_ws(c))
                continue;
            if (r->st == LE_EXPECT_ITEM && c == ']' && r->first_item) {
                r->st = LE_DONE;
                continue;
            }
            if (c != '{') {
                char what[96];
                snprintf(what, sizeof(what), "entry %llu is not a JSON object",
                         (unsigned long long)r->no + 1);
                return bad(r, c, what, why, whylen);
            }
            r->st = LE_IN_ENTRY;
            r->no++;
            r->depth = 0;
            r->in_str = r->esc = false;
            r->len = 0;
            /* the '{' is the entry's first byte */
            __attribute__((fallthrough));
        case LE_IN_ENTRY: {
            /* copy the run up to a byte that matters, then look at it */
            const char *s = p;
            while (p < end) {
                c = *p;
                if (r->in_str) {
                    if (r->esc)
                        r->esc = false;
                    else if (c == '\\')
                        r->esc = true;
                    else if (c == '"')
                        r->in_str = false;
                } else if (c == '"') {
                    r->in_str = true;
                } else if (c == '{' || c == '[') {
                    r->depth++;
                } else if (c == '}' || c == ']') {
                    if (--r->depth == 0)
                        break;
                    if (r->depth < 0)
                        return bad(r, c, "unbalanced brackets", why, whylen);
                }
                p++;
                r->offset++;
            }
            {
                size_t n = (size_t)(p - s) + (p < end); /* with the closing '}' */
                if (r->len + n > AUDIT_LE_ENTRY_MAX) {
                    snprintf(why, whylen,
                             "entry %llu is longer than %u bytes (Cloud Logging keeps at most "
                             "256 KB an entry)",
                             (unsigned long long)r->no, AUDIT_LE_ENTRY_MAX);
                    return -1;
                }
                memcpy(r->buf + r->len, s, n);
                r->len += n;
            }
            if (p == end)
                return 0; /* the entry goes on in the next chunk */
            r->st = r->array ? LE_AFTER_ITEM : LE_BETWEEN;
            r->first_item = false;
            if (cb(arg, r->buf, r->len, r->no))
                return 1;
            continue;
        }
        case LE_AFTER_ITEM:
            if (is_ws(c))
                continue;
            if (c == ',')
                r->st = LE_EXPECT_ITEM;
            else if (c == ']')
                r->st = LE_DONE;
            else
                return bad(r, c, "expected , or ] after an entry", why, whylen);
            continue;
        case LE_DONE:
            if (!is_ws(c))
                return bad(r, c, "bytes after the array", why, whylen);
            continue;
        }
    }
    return 0;
}

int audit_le_end(struct audit_le_reader *r, char *why, size_t whylen)
{
    if (r->st == LE_IN_ENTRY) {
        snprintf(why, whylen, "entry %llu is cut short at the end of the input",
                 (unsigned long long)r->no);
        return -1;
    }
    if (r->array && r->st != LE_DONE) {
        snprintf(why, whylen, "%s",
                 r->st == LE_START ? "no JSON array"
                                   : "the array is not closed: the input is cut short");
        return -1;
    }
    return 0;
}

/* Members a LogEntry has (any one makes an object LogEntry-shaped). */
static bool entry_shaped(const json_t *e)
{
    static const char *const names[] = {"logName",     "insertId",         "resource",
                                        "timestamp",   "receiveTimestamp", "jsonPayload",
                                        "textPayload", "protoPayload"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (json_object_get(e, names[i]))
            return true;
    return false;
}

enum audit_le_status audit_le_record(const char *entry, size_t elen, char *out, size_t cap,
                                     size_t *len, char *why, size_t whylen)
{
    json_error_t jerr;
    json_t *e = json_loadb(entry, elen, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    json_t *payload, *rec = NULL, *sev;
    enum audit_le_status st = AUDIT_LE_NOT_ENTRY;

    *len = 0;
    if (!e) {
        snprintf(why, whylen, "not JSON: %s (line %d, column %d of the entry)", jerr.text,
                 jerr.line, jerr.column);
        goto out;
    }
    if (!json_is_object(e) || !entry_shaped(e)) {
        snprintf(why, whylen,
                 "not a LogEntry (no logName, insertId, resource, timestamp or "
                 "payload)");
        goto out;
    }
    payload = json_object_get(e, "jsonPayload");
    if (!payload) {
        snprintf(why, whylen,
                 "a LogEntry without jsonPayload (%s): not an audit record; export "
                 "only the audit log (docs/audit.md)",
                 json_object_get(e, "textPayload")    ? "a textPayload"
                 : json_object_get(e, "protoPayload") ? "a protoPayload"
                                                      : "no payload");
        goto out;
    }
    if (!json_is_object(payload)) {
        snprintf(why, whylen, "a LogEntry whose jsonPayload is not an object");
        goto out;
    }
    if (!json_object_get(payload, "v") && !json_object_get(payload, "seq") &&
        !json_object_get(payload, "log") && !json_object_get(payload, "kind")) {
        snprintf(why, whylen,
                 "a jsonPayload that is not an audit record (no v, seq, log or kind): "
                 "export only baton's stdout log (its own log lines go to stderr)");
        goto out;
    }
    st = AUDIT_LE_BAD_RECORD;
    if (json_object_get(e, "split")) {
        snprintf(why, whylen, "a split LogEntry: a record is never longer than 65536 bytes");
        goto out;
    }
    rec = json_copy(payload); /* shallow: the members stay e's */
    sev = json_object_get(e, "severity");
    if (sev && !(json_is_string(sev) && !strcmp(json_string_value(sev), "DEFAULT")))
        json_object_set(rec, "severity", sev);
    if (json_object_get(e, "httpRequest"))
        json_object_set(rec, "httpRequest", json_object_get(e, "httpRequest"));
    if (json_object_get(e, "sourceLocation"))
        json_object_set(rec, "logging.googleapis.com/sourceLocation",
                        json_object_get(e, "sourceLocation"));
    if (json_object_get(e, "operation"))
        json_object_set(rec, "logging.googleapis.com/operation", json_object_get(e, "operation"));
    if (audit_canon_record(rec, out, cap, len, why, whylen) != 0)
        goto out;
    st = AUDIT_LE_OK;
out:
    json_decref(rec);
    json_decref(e);
    return st;
}
