/*
 * jws_json.c: a single-pass strict JSON reader that builds jansson values
 * (jws_json.h states what it accepts and why it exists).
 *
 * Recursive descent over [p, end): the recursion is bounded by the nesting
 * cap, every read checks the end first, nothing needs a NUL terminator. A
 * string without escapes is handed to jansson straight from the text (one
 * copy, jansson's own); one with escapes is decoded into a scratch buffer
 * first. Integers of up to 18 digits are converted here; longer ones and
 * reals go through strtoll/strtod on a NUL-terminated copy, which is what
 * jansson does, so the values are bit for bit the same.
 */
#include "jws_json.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

struct reader {
    const unsigned char *p, *end;
    int depth, max_depth;
};

static json_t *read_value(struct reader *r);

static void skip_ws(struct reader *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\n' || *r->p == '\r' || *r->p == '\t'))
        r->p++;
}

static bool is_digit(const struct reader *r, const unsigned char *q)
{
    return q < r->end && *q >= '0' && *q <= '9';
}

/* The length of the well-formed UTF-8 sequence at q (whose first byte is
 * >= 0x80), or 0: no overlong form, no surrogate, nothing above U+10FFFF. */
static size_t utf8_len(const unsigned char *q, const unsigned char *end)
{
    unsigned c = q[0];
    uint32_t v;
    size_t n;

    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        v = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        v = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        v = c & 0x07;
    } else {
        return 0; /* a continuation byte, 0xc0/0xc1 (overlong ASCII), or above 0xf4 */
    }
    if ((size_t)(end - q) < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((q[i] & 0xc0) != 0x80)
            return 0;
        v = (v << 6) | (q[i] & 0x3f);
    }
    if (v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff) || (n == 3 && v < 0x800) ||
        (n == 4 && v < 0x10000))
        return 0;
    return n;
}

static int hex4(const unsigned char *q, uint32_t *v)
{
    *v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = q[i], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return -1;
        *v = (*v << 4) | d;
    }
    return 0;
}

static size_t utf8_put(unsigned char *o, uint32_t v)
{
    if (v < 0x80) {
        o[0] = (unsigned char)v;
        return 1;
    }
    if (v < 0x800) {
        o[0] = (unsigned char)(0xc0 | (v >> 6));
        o[1] = (unsigned char)(0x80 | (v & 0x3f));
        return 2;
    }
    if (v < 0x10000) {
        o[0] = (unsigned char)(0xe0 | (v >> 12));
        o[1] = (unsigned char)(0x80 | ((v >> 6) & 0x3f));
        o[2] = (unsigned char)(0x80 | (v & 0x3f));
        return 3;
    }
    o[0] = (unsigned char)(0xf0 | (v >> 18));
    o[1] = (unsigned char)(0x80 | ((v >> 12) & 0x3f));
    o[2] = (unsigned char)(0x80 | ((v >> 6) & 0x3f));
    o[3] = (unsigned char)(0x80 | (v & 0x3f));
    return 4;
}

/*
 * The escaped remainder of a string whose plain prefix [start, q) was already
 * checked; q is at the first backslash. Decodes into *heap (owned by the
 * caller, free()), never longer than the text it came from: an escape is at
 * least as long as the bytes it stands for.
 */
static int read_escaped(struct reader *r, const unsigned char *start, const unsigned char *q,
                        const char **s, size_t *n, char **heap)
{
    unsigned char *out = xmalloc((size_t)(r->end - start)), *o = out;

    *heap = (char *)out;
    memcpy(o, start, (size_t)(q - start));
    o += q - start;
    while (q < r->end) {
        unsigned c = *q;
        uint32_t v, v2;
        size_t k;

        if (c == '"') {
            *s = (const char *)out;
            *n = (size_t)(o - out);
            r->p = q + 1;
            return 0;
        }
        if (c < 0x20)
            return -1;
        if (c >= 0x80) {
            if (!(k = utf8_len(q, r->end)))
                return -1;
            memcpy(o, q, k);
            o += k;
            q += k;
            continue;
        }
        if (c != '\\') {
            *o++ = (unsigned char)c;
            q++;
            continue;
        }
        if (r->end - q < 2)
            return -1;
        switch (q[1]) {
        case '"':
        case '\\':
        case '/':
            *o++ = q[1];
            break;
        case 'b':
            *o++ = '\b';
            break;
        case 'f':
            *o++ = '\f';
            break;
        case 'n':
            *o++ = '\n';
            break;
        case 'r':
            *o++ = '\r';
            break;
        case 't':
            *o++ = '\t';
            break;
        case 'u':
            if (r->end - q < 6 || hex4(q + 2, &v) != 0)
                return -1;
            q += 4; /* with the 2 below: past \uXXXX */
            if (v >= 0xd800 && v <= 0xdbff) {
                /* a high surrogate must be followed by an escaped low one */
                if (r->end - q < 8 || q[2] != '\\' || q[3] != 'u' || hex4(q + 4, &v2) != 0 ||
                    v2 < 0xdc00 || v2 > 0xdfff)
                    return -1;
                q += 6;
                v = ((v - 0xd800) << 10) + (v2 - 0xdc00) + 0x10000;
            } else if (v >= 0xdc00 && v <= 0xdfff) {
                return -1; /* a lone low surrogate */
            }
            if (v == 0)
                return -1; /* \u0000: jansson refuses it without JSON_ALLOW_NUL */
            o += utf8_put(o, v);
            break;
        default:
            return -1;
        }
        q += 2;
    }
    return -1; /* no closing quote */
}

/*
 * The string at r->p (its opening quote). *s and *n are its decoded bytes:
 * pointing into the text when it has no escape, else into *heap (owned by
 * the caller, free(); NULL when unused). Returns 0, or -1 when malformed.
 */
static int read_string(struct reader *r, const char **s, size_t *n, char **heap)
{
    const unsigned char *start = r->p + 1, *q = start;

    *heap = NULL;
    while (q < r->end) {
        unsigned c = *q;
        size_t k;

        if (c == '"') {
            *s = (const char *)start;
            *n = (size_t)(q - start);
            r->p = q + 1;
            return 0;
        }
        if (c == '\\')
            return read_escaped(r, start, q, s, n, heap);
        if (c < 0x20)
            return -1;
        if (c < 0x80) {
            q++;
            continue;
        }
        if (!(k = utf8_len(q, r->end)))
            return -1;
        q += k;
    }
    return -1;
}

/* RFC 8259 number; an integer when it has neither fraction nor exponent. */
static json_t *read_number(struct reader *r)
{
    const unsigned char *s = r->p, *q = s;
    bool neg = false, real = false;
    char stackbuf[64], *buf = stackbuf;
    json_t *v = NULL;
    size_t len;

    if (*q == '-') {
        neg = true;
        q++;
    }
    if (q < r->end && *q == '0')
        q++;
    else if (is_digit(r, q))
        while (is_digit(r, q))
            q++;
    else
        return NULL;
    if (q < r->end && *q == '.') {
        real = true;
        if (!is_digit(r, ++q))
            return NULL;
        while (is_digit(r, q))
            q++;
    }
    if (q < r->end && (*q == 'e' || *q == 'E')) {
        real = true;
        q++;
        if (q < r->end && (*q == '+' || *q == '-'))
            q++;
        if (!is_digit(r, q))
            return NULL;
        while (is_digit(r, q))
            q++;
    }
    r->p = q;
    len = (size_t)(q - s);
    if (!real && len - neg <= 18) { /* fits json_int_t whatever the digits */
        long long x = 0;
        for (const unsigned char *d = s + neg; d < q; d++)
            x = x * 10 + (*d - '0');
        return json_integer(neg ? -x : x);
    }
    if (len >= sizeof(stackbuf))
        buf = xmalloc(len + 1);
    memcpy(buf, s, len);
    buf[len] = '\0';
    errno = 0;
    if (!real) {
        long long x = strtoll(buf, NULL, 10);
        if (errno != ERANGE)
            v = json_integer(x);
    } else {
        double d = strtod(buf, NULL);
        if (!((d == HUGE_VAL || d == -HUGE_VAL) && errno == ERANGE))
            v = json_real(d); /* underflow to 0 or a subnormal is accepted, as jansson does */
    }
    if (buf != stackbuf)
        free(buf);
    return v;
}

static json_t *read_literal(struct reader *r, const char *word, size_t n, json_t *v)
{
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0)
        return NULL;
    r->p += n;
    return v;
}

static json_t *read_object(struct reader *r)
{
    json_t *obj;

    if (++r->depth > r->max_depth)
        return NULL;
    r->p++; /* '{' */
    obj = json_object();
    if (!obj)
        return NULL;
    skip_ws(r);
    if (r->p < r->end && *r->p == '}') {
        r->p++;
        r->depth--;
        return obj;
    }
    for (;;) {
        const char *k;
        size_t kn, size;
        char *heap = NULL;
        json_t *v;

        if (r->p >= r->end || *r->p != '"' || read_string(r, &k, &kn, &heap) != 0)
            goto fail_key;
        skip_ws(r);
        if (r->p >= r->end || *r->p != ':')
            goto fail_key;
        r->p++;
        skip_ws(r);
        v = read_value(r);
        size = json_object_size(obj);
        /* steals v even on failure; a name already present replaces its value
         * and leaves the size as it was: that is how a duplicate shows, with
         * one hash of the name instead of a lookup and then an insert */
        if (!v || json_object_setn_new_nocheck(obj, k, kn, v) != 0 || json_object_size(obj) == size)
            goto fail_key;
        free(heap);
        skip_ws(r);
        if (r->p < r->end && *r->p == ',') {
            r->p++;
            skip_ws(r);
            continue;
        }
        if (r->p < r->end && *r->p == '}') {
            r->p++;
            break;
        }
        goto fail;
    fail_key:
        free(heap);
        goto fail;
    }
    r->depth--;
    return obj;
fail:
    json_decref(obj);
    return NULL;
}

static json_t *read_array(struct reader *r)
{
    json_t *arr;

    if (++r->depth > r->max_depth)
        return NULL;
    r->p++; /* '[' */
    arr = json_array();
    if (!arr)
        return NULL;
    skip_ws(r);
    if (r->p < r->end && *r->p == ']') {
        r->p++;
        r->depth--;
        return arr;
    }
    for (;;) {
        json_t *v = read_value(r);
        if (!v || json_array_append_new(arr, v) != 0) /* steals v even on failure */
            goto fail;
        skip_ws(r);
        if (r->p < r->end && *r->p == ',') {
            r->p++;
            skip_ws(r);
            continue;
        }
        if (r->p < r->end && *r->p == ']') {
            r->p++;
            break;
        }
        goto fail;
    }
    r->depth--;
    return arr;
fail:
    json_decref(arr);
    return NULL;
}

static json_t *read_value(struct reader *r)
{
    const char *s;
    size_t n;
    char *heap;
    json_t *v;

    if (r->p >= r->end)
        return NULL;
    switch (*r->p) {
    case '{':
        return read_object(r);
    case '[':
        return read_array(r);
    case '"':
        if (read_string(r, &s, &n, &heap) != 0) {
            free(heap);
            return NULL;
        }
        v = json_stringn_nocheck(s, n); /* UTF-8 already checked above */
        free(heap);
        return v;
    case 't':
        return read_literal(r, "true", 4, json_true());
    case 'f':
        return read_literal(r, "false", 5, json_false());
    case 'n':
        return read_literal(r, "null", 4, json_null());
    default:
        if (*r->p == '-' || (*r->p >= '0' && *r->p <= '9'))
            return read_number(r);
        return NULL;
    }
}

json_t *jws_json_parse(const char *text, size_t len, int max_depth)
{
    struct reader r = {(const unsigned char *)text, (const unsigned char *)text + len, 0,
                       max_depth};
    json_t *v;

    skip_ws(&r);
    if (r.p >= r.end || *r.p != '{')
        return NULL;
    v = read_object(&r);
    if (!v)
        return NULL;
    skip_ws(&r);
    if (r.p != r.end) {
        json_decref(v);
        return NULL;
    }
    return v;
}
