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
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "audit.h"
#include "audit_canon.h"
#include "buf.h"
#include "log.h"
#include "util.h"

#define AUDIT_PREFIX_MAX 192 /* {"v":1,"seq":N,"prev":"<64>","log":"<32>", */

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

/*
 * The record builder: buf.h's buffer (which grows it, and keeps a borrowed
 * start: buf_init_on) plus the record's own flag. The appends stay inline
 * with their fast path here, since a record makes some sixty of them: only
 * a growth calls into buf.c.
 */
struct sb {
    struct buf buf; /* no cap (the CAP_* bound each string instead) */
    bool truncated; /* a capped string was cut */
};

/* Room for `more` bytes beyond the contents (and the NUL). */
static inline void sb_reserve(struct sb *b, size_t more)
{
    if (b->buf.len + more + 1 > b->buf.cap)
        buf_reserve(&b->buf, more);
}

static inline void sb_put(struct sb *b, const char *s, size_t n)
{
    sb_reserve(b, n);
    memcpy(b->buf.p + b->buf.len, s, n);
    b->buf.len += n;
    b->buf.p[b->buf.len] = '\0';
}

#define sb_lit(b, s) sb_put((b), (s), sizeof(s) - 1)

static inline void sb_fmt(struct sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline void sb_fmt(struct sb *b, const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = buf_vprintf(&b->buf, fmt, ap);
    va_end(ap);
    if (rc < 0)
        abort(); /* no cap: only an invalid format can fail */
}

/* Integers and trusted constant strings (codes, names, timestamps) without
 * printf: audit_record_body runs on every request, and two vsnprintf passes
 * per member cost more than everything else in it. */
static inline void sb_u64(struct sb *b, uint64_t v)
{
    char t[20];

    if (v < 1000) { /* statuses, workers, most latencies and sizes: no call */
        size_t n = v < 10 ? 1 : v < 100 ? 2 : 3, i = n;
        sb_reserve(b, 3);
        do {
            b->buf.p[b->buf.len + --i] = (char)('0' + v % 10);
            v /= 10;
        } while (i);
        b->buf.len += n;
        b->buf.p[b->buf.len] = '\0';
        return;
    }
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
 * claims, paths): for each byte of w, a set high bit in the result flags one
 * below 0x20, above 0x7e, '"' or '\\'. */
static inline uint64_t json_bad8(const char *s)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t w, q, bs;

    memcpy(&w, s, 8);
    q = w ^ (ones * '"');
    bs = w ^ (ones * '\\');
    return (((w - ones * 0x20) & ~w) | ((w + ones) | w) | ((q - ones) & ~q) | ((bs - ones) & ~bs)) &
           highs;
}

#ifdef __SSE2__
/* The same for 16 bytes: as signed bytes, 0x80-0xff are below 0x20 too. */
static inline bool json_bad16(const char *s)
{
    __m128i v = _mm_loadu_si128((const __m128i *)(const void *)s);
    __m128i m = _mm_or_si128(_mm_or_si128(_mm_cmplt_epi8(v, _mm_set1_epi8(0x20)),
                                          _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7f))),
                             _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')),
                                          _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))));
    return _mm_movemask_epi8(m) != 0;
}
#endif

/* Whole words only, the last one overlapping the one before (a string of
 * 8 bytes or more is never read byte by byte): a record holds some thirty
 * strings, most of them short, so the tail is what costs. */
static inline bool json_plain(const char *s, size_t n)
{
    size_t i = 0;

    if (n < 8) {
        unsigned bad = 0;
        for (; i < n; i++) {
            unsigned char c = (unsigned char)s[i];
            bad |= c < 0x20 || c >= 0x7f || c == '"' || c == '\\';
        }
        return !bad;
    }
#ifdef __SSE2__
    if (n >= 16) {
        for (; i + 16 <= n; i += 16)
            if (json_bad16(s + i))
                return false;
        return i == n || !json_bad16(s + n - 16);
    }
#endif
    for (; i + 8 <= n; i += 8)
        if (json_bad8(s + i))
            return false;
    return i == n || !json_bad8(s + n - 8);
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
        b->buf.p[b->buf.len++] = '"';
        memcpy(b->buf.p + b->buf.len, s, n);
        b->buf.len += n;
        b->buf.p[b->buf.len++] = '"';
        b->buf.p[b->buf.len] = '\0';
        return;
    }
    want = escaped_len(s, n);
    room = (want < cap ? want : cap) + 1;
    sb_reserve(b, room + 2);
    b->buf.p[b->buf.len++] = '"';
    w = json_escape(b->buf.p + b->buf.len, room, s, n);
    b->buf.len += w;
    b->buf.p[b->buf.len++] = '"';
    b->buf.p[b->buf.len] = '\0';
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

/*
 * A record_headers name, decided once: when the log opens (for
 * audit_record_body, per call). Which names are secret-bearing
 * (config_header_is_secret: never recorded) and how each opens its entry in
 * `headers` depend on the configuration only, so a request pays for neither.
 */
struct audit_rh {
    char *name; /* owned, the configured spelling */
    size_t len;
    bool secret; /* may carry a credential: never recorded */
    char *open;  /* owned: `[` and the name as a capped JSON string, then `,` */
    size_t open_len;
};
void audit_rh_init(struct audit_rh *rh, const char *name);
void audit_rh_free(struct audit_rh *rh);

/* Formats the body of request record r into b (which may start on a borrowed
 * buffer); see audit_record_body. Headers are recorded when named in rh. */
void audit_record_format(struct sb *b, const struct audit_record *r, const struct audit_rh *rh,
                         size_t n_rh);

/* The fields the writer gives a record, in front of its body. Returns the
 * length, or -1 when it does not fit in cap (with its NUL). */
int audit_line_prefix(char *out, size_t cap, uint64_t seq, const char *prev, const char *log_id);

#endif
