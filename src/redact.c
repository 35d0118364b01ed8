/*
 * redact.c: credential-shaped values and secret-named query parameters, the
 * one place the audit record (audit_record.c) and the access log (conn.c) ask
 * what to hide. The tests run on what an upstream framework will see after
 * form decoding, so "api%5Fkey" is judged as "api_key".
 */
#include "redact.h"

#include <stdlib.h>
#include <string.h>
/* SSE2 on x86-64, unless a test builds the plain scan (REDACT_NO_SIMD:
 * tests/unit/test_redact_plain) */
#if defined(__SSE2__) && !defined(REDACT_NO_SIMD)
#define REDACT_SSE2 1
#include <emmintrin.h>
#endif

#include "config.h"
#include "util.h"

static bool contains_ci(const char *s, size_t n, const char *word)
{
    size_t w = strlen(word);
    for (size_t i = 0; i + w <= n; i++)
        if (!ascii_casecmp_n(s + i, w, word, w))
            return true;
    return false;
}

static bool is_alnum(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool is_b64url(unsigned char c)
{
    return is_alnum(c) || c == '-' || c == '_';
}

/* Token prefixes of well-known credential formats, each with the bytes that
 * may follow and how many at least (so that "ghp_x" in prose is left alone).
 * Grouped by first byte ('y': [0, 1), 'g': [1, 7), 'A': [7, 9), as token_at
 * takes them), which the scan tests before any compare. */
static const struct {
    const char *prefix;
    size_t len; /* strlen(prefix) */
    int body;   /* 0: [A-Za-z0-9_-.], 1: [A-Za-z0-9], 2: [A-Z0-9], 3: [A-Za-z0-9_] */
    size_t min;
} token_shapes[] = {
    {"ya29.", 5, 0, 20},                             /* Google OAuth 2.0 access token */
    {"ghp_", 4, 1, 30},  {"gho_", 4, 1, 30},         /* GitHub: personal, OAuth */
    {"ghu_", 4, 1, 30},  {"ghs_", 4, 1, 30},         /* GitHub: user-to-server, server-to-server */
    {"ghr_", 4, 1, 30},  {"github_pat_", 11, 3, 30}, /* GitHub: refresh, fine-grained PAT */
    {"AKIA", 4, 2, 16},  {"ASIA", 4, 2, 16},         /* AWS access key id: long-term, STS */
};

static bool body_char(int kind, unsigned char c)
{
    switch (kind) {
    case 0:
        return is_b64url(c) || c == '.';
    case 1:
        return is_alnum(c);
    case 2:
        return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    default:
        return is_alnum(c) || c == '_';
    }
}

/* A token shape starting at v[i], which starts a word (and is 'y', 'g' or
 * 'A', the first bytes of token_shapes: rc_class). */
static bool token_at(const char *v, size_t n, size_t i)
{
    /* the shapes of v[i]'s group only (the table is in first-byte order),
     * and the second byte tested before any compare */
    size_t k = v[i] == 'y' ? 0 : v[i] == 'g' ? 1 : 7, end = v[i] == 'y' ? 1 : v[i] == 'g' ? 7 : 9;

    for (; k < end; k++) {
        size_t pl = token_shapes[k].len, j;
        if (v[i] != token_shapes[k].prefix[0] || n - i < pl ||
            v[i + 1] != token_shapes[k].prefix[1] || memcmp(v + i, token_shapes[k].prefix, pl) != 0)
            continue;
        for (j = i + pl; j < n && body_char(token_shapes[k].body, (unsigned char)v[j]); j++)
            ;
        if (j - i - pl >= token_shapes[k].min)
            return true;
    }
    return false;
}

/* A JWS at v[i] (which is 'e'): "eyJ", base64url to at least 10 bytes in all,
 * then '.'. */
static bool jws_at(const char *v, size_t n, size_t i)
{
    size_t j;
    if (n - i < 3 || v[i + 1] != 'y' || v[i + 2] != 'J')
        return false;
    for (j = i + 3; j < n && is_b64url((unsigned char)v[j]); j++)
        ;
    return j - i >= 10 && j < n && v[j] == '.';
}

/* The authentication schemes, lower case with their space, by first byte. */
static const struct {
    const char *name;
    size_t len;
} schemes[] = {
    {"bearer ", 7}, {"basic ", 6}, {"digest ", 7}, {"negotiate ", 10}, {"aws4-hmac-sha256 ", 17},
};

/* Per byte: RC_ALNUM for [A-Za-z0-9] (the byte after one starts no word),
 * RC_JWS for 'e' (a JWS may start there), RC_TOKEN for 'y', 'g' and 'A' (a
 * token shape may start there when a word does). Every other byte is
 * passed over (candidates16 finds the four with SSE2). */
enum { RC_ALNUM = 1, RC_JWS = 2, RC_TOKEN = 4 };
static const unsigned char rc_class[256] = {
    ['0' ... '9'] = RC_ALNUM,    ['A'] = RC_ALNUM | RC_TOKEN,
    ['B' ... 'Z'] = RC_ALNUM,    ['a' ... 'd'] = RC_ALNUM,
    ['e'] = RC_ALNUM | RC_JWS,   ['f'] = RC_ALNUM,
    ['g'] = RC_ALNUM | RC_TOKEN, ['h' ... 'x'] = RC_ALNUM,
    ['y'] = RC_ALNUM | RC_TOKEN, ['z'] = RC_ALNUM,
};

/* A JWS or a token shape starting at v[i] (a byte rc_class marks). */
static bool candidate_at(const char *v, size_t n, size_t i)
{
    const unsigned char *u = (const unsigned char *)v;
    unsigned k = rc_class[u[i]];

    if ((k & RC_JWS) && jws_at(v, n, i))
        return true;
    /* a token shape only where a word starts */
    return (k & RC_TOKEN) && !(i && (rc_class[u[i - 1]] & RC_ALNUM)) && token_at(v, n, i);
}

#ifdef REDACT_SSE2
/* Bit j set when s[j] may start a JWS or a token shape ('e', 'y', 'g', 'A'). */
static unsigned candidates16(const unsigned char *s)
{
    __m128i x = _mm_loadu_si128((const __m128i *)(const void *)s);
    __m128i m = _mm_or_si128(
        _mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('e')), _mm_cmpeq_epi8(x, _mm_set1_epi8('y'))),
        _mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('g')), _mm_cmpeq_epi8(x, _mm_set1_epi8('A'))));
    return (unsigned)_mm_movemask_epi8(m);
}
#endif

bool redact_is_credential(const char *v, size_t n)
{
    const unsigned char *u;
    size_t i = 0;

    while (n && (*v == ' ' || *v == '\t')) {
        v++;
        n--;
    }
    if (n) {
        unsigned char c0 = (unsigned char)(*v | 0x20);
        for (size_t k = 0; k < sizeof(schemes) / sizeof(schemes[0]); k++)
            if (c0 == (unsigned char)schemes[k].name[0] && n >= schemes[k].len &&
                !ascii_casecmp_n(v, schemes[k].len, schemes[k].name, schemes[k].len))
                return true;
    }
    /* one pass: a JWS anywhere, a token shape where a word starts; only the
     * bytes that may start one are looked at (16 at a time with SSE2, the
     * last few copied into a block of zeros) */
    u = (const unsigned char *)v;
#ifdef REDACT_SSE2
    while (i < n) {
        unsigned char tail[16] = {0};
        unsigned m;
        if (n - i >= 16) {
            m = candidates16(u + i);
        } else {
            memcpy(tail, u + i, n - i);
            m = candidates16(tail);
        }
        for (; m; m &= m - 1)
            if (candidate_at(v, n, i + (size_t)__builtin_ctz(m)))
                return true;
        i += 16;
    }
#else
    for (; i < n; i++)
        if ((rc_class[u[i]] & (RC_JWS | RC_TOKEN)) && candidate_at(v, n, i))
            return true;
#endif
    return false;
}

/* Form-decodes src (%XX, '+' as space) into dst, at most cap bytes (the rest
 * is cut: names and credential prefixes are short); returns the length. */
static size_t form_decode(const char *src, size_t n, char *dst, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o < cap; i++) {
        int hi, lo;
        if (src[i] == '%' && i + 2 < n && (hi = hex_value((unsigned char)src[i + 1])) >= 0 &&
            (lo = hex_value((unsigned char)src[i + 2])) >= 0) {
            dst[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            dst[o++] = src[i] == '+' ? ' ' : src[i];
        }
    }
    return o;
}

static void put(char *out, size_t *o, const char *p, size_t n)
{
    memcpy(out + *o, p, n);
    *o += n;
}

char *redact_query(const char *q, size_t n, size_t *len)
{
    static const char red[] = "=[redacted]";
    /* each parameter grows by at most sizeof(red) (its value replaced), plus '&' */
    size_t cap = n + 1, o = 0, i = 0;
    char *out;

    for (size_t k = 0; k < n; k++)
        if (q[k] == '&')
            cap += sizeof(red);
    cap += sizeof(red);
    out = xmalloc(cap);
    while (i <= n) {
        size_t end = i, eq;
        while (end < n && q[end] != '&')
            end++;
        eq = i;
        while (eq < end && q[eq] != '=')
            eq++;
        if (end > i) {
            const char *name = q + i, *val = q + eq + (eq < end);
            size_t nlen = eq - i, vlen = eq < end ? end - eq - 1 : 0;
            char dn[256], dv[1024];
            size_t dnlen = form_decode(name, nlen, dn, sizeof(dn));
            size_t dvlen = form_decode(val, vlen, dv, sizeof(dv));
            bool secret = config_header_is_secret(dn, dnlen) || contains_ci(dn, dnlen, "sig") ||
                          contains_ci(dn, dnlen, "code") || contains_ci(dn, dnlen, "pass") ||
                          contains_ci(dn, dnlen, "pwd") || redact_is_credential(dv, dvlen);
            if (o)
                put(out, &o, "&", 1);
            put(out, &o, name, nlen);
            if (secret)
                put(out, &o, red, sizeof(red) - 1);
            else if (eq < end)
                put(out, &o, q + eq, end - eq);
        }
        i = end + 1;
    }
    out[o] = '\0';
    *len = o;
    return out;
}
