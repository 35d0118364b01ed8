/*
 * Unit tests of jws_json.c: the token JSON reader accepts exactly what
 * jansson's json_loadb(JSON_REJECT_DUPLICATES) accepts as an object within the
 * nesting cap, and builds the same value (compared by json_equal and by the
 * compact dump, which also shows member order, integer vs real and -0.0).
 *
 * Three layers: crafted documents with the expected verdict (each corner of
 * the grammar, of UTF-8 and of escapes), then ~60,000 deterministic random
 * mutations of seed documents compared with jansson, then random documents
 * built from random strings and numbers, also compared with jansson.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jws.h"
#include "jws_json.h"
#include "tap.h"

#define DEPTH JWS_JSON_MAX_DEPTH

/* jansson's verdict, with the same cap and the same "an object" rule. */
static json_t *reference(const char *s, size_t len)
{
    json_t *v;
    if (jws_json_too_deep(s, len, DEPTH))
        return NULL;
    v = json_loadb(s, len, JSON_REJECT_DUPLICATES, NULL);
    if (v && !json_is_object(v)) {
        json_decref(v);
        v = NULL;
    }
    return v;
}

/* 1 when both readers agree on s (verdict and value), else 0. */
static int agree(const char *s, size_t len, int *accepted)
{
    json_t *a = jws_json_parse(s, len, DEPTH), *b = reference(s, len);
    int same = 0;

    if (!a && !b) {
        same = 1;
    } else if (a && b && json_equal(a, b)) {
        char *da = json_dumps(a, JSON_COMPACT | JSON_ENCODE_ANY);
        char *db = json_dumps(b, JSON_COMPACT | JSON_ENCODE_ANY);
        same = da && db && strcmp(da, db) == 0;
        free(da);
        free(db);
    }
    if (accepted)
        *accepted = a != NULL;
    json_decref(a);
    json_decref(b);
    return same;
}

static void printable(const char *s, size_t len, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o + 5 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f)
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
    }
    out[o] = '\0';
}

static const struct {
    const char *text;
    size_t len; /* 0: strlen */
    int accept;
} crafted[] = {
    {"{}", 0, 1},
    {" \t\r\n{ \t\r\n} \t\r\n", 0, 1},
    {"{\"a\":1}", 0, 1},
    {"{\"a\":-0}", 0, 1},
    {"{\"a\":-0.0}", 0, 1},
    {"{\"a\":0.5e-3,\"b\":1E+2,\"c\":2e2,\"d\":-1.25}", 0, 1},
    {"{\"a\":999999999999999999}", 0, 1},   /* 18 digits */
    {"{\"a\":9223372036854775807}", 0, 1},  /* INT64_MAX */
    {"{\"a\":-9223372036854775808}", 0, 1}, /* INT64_MIN */
    {"{\"a\":9223372036854775808}", 0, 0},  /* too big integer */
    {"{\"a\":-9223372036854775809}", 0, 0},
    {"{\"a\":1e309}", 0, 0}, /* real overflow */
    {"{\"a\":-1e309}", 0, 0},
    {"{\"a\":1e-400}", 0, 1}, /* underflow is accepted, as jansson does */
    {"{\"a\":0.000000000000000000000000000000000000000000000000000000000000000000000001}", 0, 1},
    {"{\"a\":01}", 0, 0},
    {"{\"a\":-}", 0, 0},
    {"{\"a\":+1}", 0, 0},
    {"{\"a\":.5}", 0, 0},
    {"{\"a\":1.}", 0, 0},
    {"{\"a\":1e}", 0, 0},
    {"{\"a\":1e+}", 0, 0},
    {"{\"a\":NaN}", 0, 0},
    {"{\"a\":Infinity}", 0, 0},
    {"{\"a\":1x}", 0, 0},
    {"{\"a\":true,\"b\":false,\"c\":null}", 0, 1},
    {"{\"a\":tru}", 0, 0},
    {"{\"a\":truex}", 0, 0},
    {"{\"a\":True}", 0, 0},
    {"{\"a\":[]}", 0, 1},
    {"{\"a\":[1,\"x\",{},[],null]}", 0, 1},
    {"{\"a\":[1,]}", 0, 0},
    {"{\"a\":[,1]}", 0, 0},
    {"{\"a\":1,}", 0, 0},
    {"{,\"a\":1}", 0, 0},
    {"{\"a\" 1}", 0, 0},
    {"{\"a\":1 \"b\":2}", 0, 0},
    {"{a:1}", 0, 0},
    {"{'a':1}", 0, 0},
    {"{\"a\":1}x", 0, 0},
    {"{\"a\":1}{}", 0, 0},
    {"{\"a\":1", 0, 0},
    {"{\"a", 0, 0},
    {"", 0, 0},
    {"   ", 0, 0},
    {"[]", 0, 0}, /* valid JSON, not an object */
    {"\"s\"", 0, 0},
    {"1", 0, 0},
    {"null", 0, 0},
    {"{\"a\":1,\"a\":2}", 0, 0},         /* duplicate */
    {"{\"a\":1,\"\\u0061\":2}", 0, 0},   /* duplicate after unescaping */
    {"{\"a\":{\"b\":1,\"b\":1}}", 0, 0}, /* duplicate in a nested object */
    {"{\"a\":1,\"A\":2}", 0, 1},         /* names are case-sensitive */
    {"{\"\":1}", 0, 1},                  /* an empty name */
    {"{\"a\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"}", 0, 1},
    {"{\"a\":\"\\x\"}", 0, 0},
    {"{\"a\":\"\\'\"}", 0, 0},
    {"{\"a\":\"\\u00e9\\u20AC\\uD83D\\uDE00\"}", 0, 1},
    {"{\"a\":\"\\u0000\"}", 0, 0}, /* NUL */
    {"{\"\\u0000\":1}", 0, 0},
    {"{\"a\":\"\\uD83D\"}", 0, 0}, /* lone high surrogate */
    {"{\"a\":\"\\uD83Dx\"}", 0, 0},
    {"{\"a\":\"\\uD83D\\n\"}", 0, 0},
    {"{\"a\":\"\\uD83D\\u0041\"}", 0, 0}, /* high + non-low */
    {"{\"a\":\"\\uDE00\"}", 0, 0},        /* lone low surrogate */
    {"{\"a\":\"\\u12\"}", 0, 0},
    {"{\"a\":\"\\u12G4\"}", 0, 0},
    {"{\"a\":\"\\", 0, 0},
    {"{\"a\":\"\\u", 0, 0},
    {"{\"a\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"}", 0, 1}, /* raw UTF-8 */
    {"{\"a\":\"\xc3\xa9\\n\xc3\xa9\"}", 0, 1},                  /* raw UTF-8 beside an escape */
    {"{\"a\":\"\xc3\"}", 0, 0},                                 /* truncated */
    {"{\"a\":\"\xc0\xaf\"}", 0, 0},                             /* overlong '/' */
    {"{\"a\":\"\xe0\x80\xaf\"}", 0, 0},                         /* overlong, 3 bytes */
    {"{\"a\":\"\xf0\x80\x80\xaf\"}", 0, 0},                     /* overlong, 4 bytes */
    {"{\"a\":\"\xed\xa0\x80\"}", 0, 0},                         /* an encoded surrogate */
    {"{\"a\":\"\xf4\x90\x80\x80\"}", 0, 0},                     /* above U+10FFFF */
    {"{\"a\":\"\xf5\x80\x80\x80\"}", 0, 0},
    {"{\"a\":\"\x80\"}", 0, 0}, /* a bare continuation byte */
    {"{\"a\":\"\xff\"}", 0, 0},
    {"{\"a\":\"\xef\xbf\xbf\"}", 0, 1},     /* U+FFFF is a character */
    {"{\"a\":\"\xf4\x8f\xbf\xbf\"}", 0, 1}, /* U+10FFFF */
    {"{\"\xc3\xa9\":1}", 0, 1},             /* a UTF-8 name */
    {"{\"a\":\"tab\there\"}", 0, 0},        /* a raw control byte */
    {"{\"a\":\"x\x7f\"}", 0, 1},            /* DEL is not a control byte in JSON */
    {"{\"a\":\"nul\0\"}", 11, 0},
    {"{\"a\":1}\0", 8, 0},                               /* a trailing NUL */
    {"\xef\xbb\xbf{}", 0, 0},                            /* a byte-order mark */
    {"{\"a\":1}\x0b", 0, 0},                             /* vertical tab is not whitespace */
    {"{\"a\":1}\xc2\xa0", 0, 0},                         /* nor is U+00A0 */
    {"{\"a\":[[[[[[[[[[[[[[1]]]]]]]]]]]]]]}", 0, 1},     /* depth 15 */
    {"{\"a\":[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]}", 0, 1},   /* depth 16 */
    {"{\"a\":[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]}", 0, 0}, /* depth 17 */
    {"{\"a\":\"[[[[[[[[[[[[[[[[[[[[\"}", 0, 1},          /* brackets in a string are not nesting */
};

static void test_crafted(void)
{
    char shown[256];

    for (size_t i = 0; i < sizeof(crafted) / sizeof(crafted[0]); i++) {
        const char *s = crafted[i].text;
        size_t len = crafted[i].len ? crafted[i].len : strlen(s);
        int accepted = -1, same = agree(s, len, &accepted);

        printable(s, len, shown, sizeof(shown));
        ok(same && accepted == crafted[i].accept, "%s %s, as jansson does",
           crafted[i].accept ? "accepts" : "refuses", shown);
    }
}

static uint64_t rng = 0x9e3779b97f4a7c15u;

static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

/* Bytes a mutation inserts: JSON's own punctuation, escapes, UTF-8 pieces. */
static const char pieces[][5] = {
    "{",    "}",    "[",  "]",   ",",    ":",    "\"",   "\\",   "\\u",  "u",    "0",
    "1",    "-",    "+",  ".",   "e",    "E",    " ",    "\n",   "\t",   "t",    "n",
    "f",    "a",    "D8", "DC",  "00",   "\xc3", "\xa9", "\x80", "\xed", "\xf4", "\xff",
    "\x01", "\x7f", "9",  "\\n", "\\\"", "\"\"", "1e9",  "-0",   "true",
};

static const char *const seeds[] = {
    "{\"iss\":\"https://issuer.example\",\"sub\":\"arn:aws:iam::123456789012:role/x\","
    "\"aud\":[\"a\",\"b\"],\"exp\":1764000000,\"iat\":1764000000.5,\"nbf\":-1e3,"
    "\"https://sts.amazonaws.com/\":{\"aws_account\":\"123456789012\",\"tags\":{\"t\":true,"
    "\"f\":false,\"n\":null}},\"s\":\"\\u00e9\\uD83D\\uDE00\\n\\/\xc3\xa9\"}",
    "{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\"k1\"}",
    "{\"a\":[[1,2,[3,{\"b\":[]}]],{},\"\"],\"c\":0.1E-2,\"d\":9223372036854775807}",
};

static void test_mutations(void)
{
    char buf[1024];
    size_t disagree = 0, accepted_n = 0, n = 60000;

    for (size_t it = 0; it < n; it++) {
        const char *seed = seeds[rnd(sizeof(seeds) / sizeof(seeds[0]))];
        size_t len = strlen(seed);
        int muts = 1 + (int)rnd(3), accepted = 0;

        memcpy(buf, seed, len);
        for (int m = 0; m < muts; m++) {
            uint32_t at = rnd((uint32_t)len + 1), kind = rnd(4);
            const char *p = pieces[rnd(sizeof(pieces) / sizeof(pieces[0]))];
            size_t pl = strlen(p);

            if (kind == 0 && len + pl < sizeof(buf)) { /* insert */
                memmove(buf + at + pl, buf + at, len - at);
                memcpy(buf + at, p, pl);
                len += pl;
            } else if (kind == 1 && at < len) { /* delete one byte */
                memmove(buf + at, buf + at + 1, len - at - 1);
                len--;
            } else if (kind == 2 && at < len) { /* replace one byte */
                buf[at] = p[0];
            } else if (kind == 3) { /* truncate */
                len = at;
            }
        }
        if (!agree(buf, len, &accepted)) {
            char shown[512];
            if (disagree++ < 5) {
                printable(buf, len, shown, sizeof(shown));
                tap_diag("disagreement with jansson on: %s", shown);
            }
        }
        accepted_n += (size_t)accepted;
    }
    ok(disagree == 0, "%zu random mutations of seed documents: same verdict and value as jansson",
       n);
    tap_diag("%zu of them were accepted", accepted_n);
    ok(accepted_n > n / 20 && accepted_n < n - n / 20,
       "the mutations exercise both verdicts (%zu accepted)", accepted_n);
}

/* A random JSON value into buf; strings mix plain ASCII, escapes and UTF-8. */
static size_t gen_value(char *b, size_t cap, int depth);

static size_t gen_string(char *b, size_t cap)
{
    static const char *const parts[] = {
        "a",
        "Z",
        " ",
        "/",
        "\\/",
        "\\\"",
        "\\\\",
        "\\b",
        "\\f",
        "\\n",
        "\\r",
        "\\t",
        "\\u0041",
        "\\u00e9",
        "\\u07FF",
        "\\u0800",
        "\\uFFFF",
        "\\uD800\\uDC00",
        "\\uDBFF\\uDFFF",
        "\xc3\xa9",
        "\xe2\x82\xac",
        "\xf0\x9f\x98\x80",
        "\x7f",
        "\\u001f",
    };
    size_t o = 0, n = rnd(6);

    b[o++] = '"';
    for (size_t i = 0; i < n; i++) {
        const char *p = parts[rnd(sizeof(parts) / sizeof(parts[0]))];
        size_t pl = strlen(p);
        if (o + pl + 2 >= cap)
            break;
        memcpy(b + o, p, pl);
        o += pl;
    }
    b[o++] = '"';
    return o;
}

static size_t gen_value(char *b, size_t cap, int depth)
{
    static const char *const nums[] = {"0",
                                       "-0",
                                       "7",
                                       "-12",
                                       "123456789012345678",
                                       "1234567890123456789",
                                       "9223372036854775807",
                                       "-9223372036854775808",
                                       "0.5",
                                       "-2.5e10",
                                       "1E-5",
                                       "3e+2",
                                       "1.7976931348623157e308",
                                       "4.9e-324",
                                       "1e-400"};
    uint32_t k = cap < 64 ? rnd(3) : rnd(depth > 3 ? 5 : 7);
    size_t o = 0;

    switch (k) {
    case 0:
        o = (size_t)snprintf(b, cap, "%s", nums[rnd(sizeof(nums) / sizeof(nums[0]))]);
        break;
    case 1:
        o = gen_string(b, cap);
        break;
    case 2:
        o = (size_t)snprintf(b, cap, "%s", rnd(3) == 0 ? "null" : rnd(2) ? "true" : "false");
        break;
    case 3:
    case 4:
        o = gen_string(b, cap);
        break;
    case 5: { /* array */
        size_t n = rnd(4);
        b[o++] = '[';
        for (size_t i = 0; i < n && o + 80 < cap; i++) {
            if (i)
                b[o++] = ',';
            o += gen_value(b + o, cap - o - 2, depth + 1);
        }
        b[o++] = ']';
        break;
    }
    default: { /* object; names may repeat, which both must refuse */
        size_t n = rnd(4);
        b[o++] = '{';
        for (size_t i = 0; i < n && o + 80 < cap; i++) {
            if (i)
                b[o++] = ',';
            o += (size_t)snprintf(b + o, cap - o, "\"%c\":", 'a' + rnd(6));
            o += gen_value(b + o, cap - o - 2, depth + 1);
        }
        b[o++] = '}';
        break;
    }
    }
    return o;
}

static void test_generated(void)
{
    char buf[4096];
    size_t disagree = 0, accepted_n = 0, n = 20000;

    for (size_t it = 0; it < n; it++) {
        size_t o = 0;
        int members = 1 + (int)rnd(6), accepted = 0;

        buf[o++] = '{';
        for (int i = 0; i < members && sizeof(buf) - o > 700; i++) {
            if (i)
                buf[o++] = ',';
            o += (size_t)snprintf(buf + o, sizeof(buf) - o, "\"m%u\":", rnd(12));
            o += gen_value(buf + o, 600, 1);
        }
        buf[o++] = '}';
        if (!agree(buf, o, &accepted)) {
            char shown[1024];
            if (disagree++ < 5) {
                printable(buf, o, shown, sizeof(shown));
                tap_diag("disagreement with jansson on: %s", shown);
            }
        }
        accepted_n += (size_t)accepted;
    }
    ok(disagree == 0, "%zu random documents: same verdict and value as jansson", n);
    ok(accepted_n > n / 10, "most generated documents are valid (%zu accepted)", accepted_n);
}

int main(void)
{
    test_crafted();
    test_mutations();
    test_generated();
    return tap_done();
}
