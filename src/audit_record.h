/*
 * audit_record.h: inside the audit log (not a public API): the string builder
 * every record is formatted with, the caps on recorded strings, and the
 * record formats audit_record.c writes for audit_writer.c and audit_open.c.
 */
#ifndef BATON_AUDIT_RECORD_H
#define BATON_AUDIT_RECORD_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "audit_canon.h"
#include "log.h"
#include "util.h"

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

/* ---------------------------------------------------------------- strings */

struct sb {
    char *buf;
    size_t len, cap;
    bool truncated; /* a capped string was cut */
    bool borrowed;  /* buf is the caller's (not malloc'd): growing moves it to the heap */
};

static inline void sb_reserve(struct sb *b, size_t more)
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

static inline void sb_put(struct sb *b, const char *s, size_t n)
{
    sb_reserve(b, n);
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = '\0';
}

#define sb_lit(b, s) sb_put((b), (s), sizeof(s) - 1)

static inline void sb_fmt(struct sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline void sb_fmt(struct sb *b, const char *fmt, ...)
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
static inline void sb_u64(struct sb *b, uint64_t v)
{
    char t[20];
    sb_put(b, t, u64_decimal(v, t));
}

static inline void sb_i64(struct sb *b, int64_t v)
{
    if (v < 0) {
        sb_lit(b, "-");
        sb_u64(b, (uint64_t)0 - (uint64_t)v);
    } else {
        sb_u64(b, (uint64_t)v);
    }
}

static inline void sb_raw(struct sb *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

/* Length of s once json_escape'd. */
static inline size_t escaped_len(const char *s, size_t n)
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
static inline bool json_plain(const char *s, size_t n)
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
static inline void sb_str(struct sb *b, const char *s, size_t n, size_t cap)
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

static inline void sb_cstr(struct sb *b, const char *s, size_t cap)
{
    sb_str(b, s, s ? strlen(s) : 0, cap);
}

/* A count or measure of a record: canonical form (audit_canon.h) wants every
 * number within 2^53-1, which a double holds exactly; nothing baton counts
 * gets there (9 PB, 285 years of ms), so the clamp only guards the form. */
static inline void sb_count(struct sb *b, uint64_t v)
{
    sb_u64(b, v > (uint64_t)AUDIT_NUMBER_MAX ? (uint64_t)AUDIT_NUMBER_MAX : v);
}

static inline void sb_int_or_null(struct sb *b, bool known, int64_t v)
{
    if (known)
        sb_i64(b, v > AUDIT_NUMBER_MAX    ? AUDIT_NUMBER_MAX
                  : v < -AUDIT_NUMBER_MAX ? -AUDIT_NUMBER_MAX
                                          : v);
    else
        sb_lit(b, "null");
}

/* "2025-03-01T10:00:00.123Z" (24 bytes), for ms since the epoch. */
void audit_fmt_ts(int64_t ms, char out[32]);

/* Formats the body of request record r into b (which may start on a borrowed
 * buffer); see audit_record_body. */
void audit_record_format(struct sb *b, const struct audit_record *r, char *const *allowed,
                         size_t n_allowed);

/* The fields the writer gives a record, in front of its body. Returns the
 * length, or -1 when it does not fit in cap (with its NUL). */
int audit_line_prefix(char *out, size_t cap, uint64_t seq, const char *prev, const char *log_id);

#endif
