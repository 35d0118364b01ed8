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
/* x86-64's SSE2 string check, unless a test builds the plain one
 * (AUDIT_RECORD_NO_SIMD: test_audit_format_plain.c) */
#if defined(__SSE2__) && !defined(AUDIT_RECORD_NO_SIMD)
#define AUDIT_RECORD_SSE2 1
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
 * per member cost more than everything else in it. Below 1000 (statuses,
 * workers, most latencies) at most one pair-table load; else u64_decimal
 * writes the digits in place. */
static inline void sb_u64(struct sb *b, uint64_t v)
{
    static const char pairs[201] = "00010203040506070809101112131415161718192021222324"
                                   "25262728293031323334353637383940414243444546474849"
                                   "50515253545556575859606162636465666768697071727374"
                                   "75767778798081828384858687888990919293949596979899";

    sb_reserve(b, 20);
    if (v < 10) {
        b->buf.p[b->buf.len++] = (char)('0' + v);
    } else if (v < 100) {
        memcpy(b->buf.p + b->buf.len, pairs + 2 * v, 2);
        b->buf.len += 2;
    } else if (v < 1000) { /* statuses */
        b->buf.p[b->buf.len] = (char)('0' + v / 100);
        memcpy(b->buf.p + b->buf.len + 1, pairs + 2 * (v % 100), 2);
        b->buf.len += 3;
    } else {
        b->buf.len += u64_decimal(v, b->buf.p + b->buf.len);
    }
    b->buf.p[b->buf.len] = '\0';
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

/* For each byte of w, a set high bit in the result flags one below 0x20,
 * above 0x7e, '"' or '\\' (as a whole, zero means none: a flag may also
 * land on the byte after a flagged one, never when none is). */
static inline uint64_t json_bad_word(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t q = w ^ (ones * '"'), bs = w ^ (ones * '\\');

    return (((w - ones * 0x20) & ~w) | ((w + ones) | w) | ((q - ones) & ~q) | ((bs - ones) & ~bs)) &
           highs;
}

/* The same for the 8 bytes at s. */
static inline uint64_t json_bad8(const char *s)
{
    uint64_t w;

    memcpy(&w, s, 8);
    return json_bad_word(w);
}

#ifdef AUDIT_RECORD_SSE2
/* The same for 16 bytes: non-zero when one is below 0x20, above 0x7e, '"'
 * or '\\'. Adding 0x60 maps 0x20-0x7e to -128..-34 as signed bytes and
 * every other byte above -34, so the range is one add and one compare. */
static inline int json_bad_v(__m128i v)
{
    __m128i out = _mm_cmpgt_epi8(_mm_add_epi8(v, _mm_set1_epi8(0x60)), _mm_set1_epi8(-34));
    __m128i q = _mm_cmpeq_epi8(v, _mm_set1_epi8('"')), bs = _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'));
    return _mm_movemask_epi8(_mm_or_si128(out, _mm_or_si128(q, bs)));
}

static inline int json_bad16(const char *s)
{
    return json_bad_v(_mm_loadu_si128((const __m128i *)(const void *)s));
}

/* Two words (up to 16 bytes of a string, 'A' where it has none) at once. */
static inline int json_bad_2w(uint64_t lo, uint64_t hi)
{
    return json_bad_v(_mm_set_epi64x((long long)hi, (long long)lo));
}
#else
static inline uint64_t json_bad_2w(uint64_t lo, uint64_t hi)
{
    return json_bad_word(lo) | json_bad_word(hi);
}
#endif

/*
 * Copies s (n bytes) to d when nothing in it needs escaping (most strings in
 * a record: ids, hashes, claims, paths) and says so; else returns false,
 * having written some of d[0, n). One pass, never byte by byte (a record
 * holds some twenty strings, most of them short, so a short one must cost
 * as little as a long one): 1-3 bytes are checked as one word (first,
 * middle and last byte, the rest 'A'), 4-7 as two overlapping 4-byte loads,
 * 8-16 as two overlapping words (with SSE2 either in one 16-byte check),
 * longer ones by 16 (SSE2) or 8 bytes with the last block overlapping the
 * one before; each block checked is the block stored. Only s[0, n) is read
 * and d[0, n) written.
 */
static inline __attribute__((always_inline)) bool json_copy_plain(char *d, const char *s, size_t n)
{
    size_t i = 0;

    if (n < 4) {
        const unsigned char *u = (const unsigned char *)s;
        if (!n)
            return true;
        d[0] = s[0];
        d[n >> 1] = s[n >> 1];
        d[n - 1] = s[n - 1];
        return !json_bad_2w(0x4141414141000000ull | u[0] | (uint64_t)u[n >> 1] << 8 |
                                (uint64_t)u[n - 1] << 16,
                            0x4141414141414141ull);
    }
    if (n < 8) {
        uint32_t lo, hi;
        memcpy(&lo, s, 4);
        memcpy(&hi, s + n - 4, 4);
        memcpy(d, &lo, 4);
        memcpy(d + n - 4, &hi, 4);
        return !json_bad_2w(lo | (uint64_t)hi << 32, 0x4141414141414141ull);
    }
    if (n <= 16) {
        uint64_t lo, hi;
        memcpy(&lo, s, 8);
        memcpy(&hi, s + n - 8, 8);
        memcpy(d, &lo, 8);
        memcpy(d + n - 8, &hi, 8);
        return !json_bad_2w(lo, hi);
    }
#ifdef AUDIT_RECORD_SSE2
    for (; i + 16 <= n; i += 16) {
        if (json_bad16(s + i))
            return false;
        _mm_storeu_si128((__m128i *)(void *)(d + i),
                         _mm_loadu_si128((const __m128i *)(const void *)(s + i)));
    }
    if (i < n) {
        if (json_bad16(s + n - 16))
            return false;
        _mm_storeu_si128((__m128i *)(void *)(d + n - 16),
                         _mm_loadu_si128((const __m128i *)(const void *)(s + n - 16)));
    }
#else
    for (; i + 8 <= n; i += 8) {
        if (json_bad8(s + i))
            return false;
        memcpy(d + i, s + i, 8);
    }
    if (i < n) {
        if (json_bad8(s + n - 8))
            return false;
        memcpy(d + n - 8, s + n - 8, 8);
    }
#endif
    return true;
}

/* sb_str's other way: s (not NULL) needs escaping or a cut. Out of line: a
 * record rarely takes it. */
void sb_str_escaped(struct sb *b, const char *s, size_t n, size_t cap);

/* Appends s as a JSON string cut at `cap` escaped bytes, or null when s is
 * NULL. A string with nothing to escape and no cut is checked and copied in
 * one pass (json_copy_plain) into the room reserved for it. */
void sb_str(struct sb *b, const char *s, size_t n, size_t cap);

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
/* The same bytes, written the plain way: member by member from
 * audit_request_members, each key copied and each value put through the
 * table. What audit_record_format must match (test_audit_format). */
void audit_record_format_by_table(struct sb *b, const struct audit_record *r,
                                  const struct audit_rh *rh, size_t n_rh);

/* The fields the writer gives a record, in front of its body. Returns the
 * length, or -1 when it does not fit in cap (with its NUL). */
int audit_line_prefix(char *out, size_t cap, uint64_t seq, const char *prev, const char *log_id);

#endif
