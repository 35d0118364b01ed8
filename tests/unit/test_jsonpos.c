/*
 * Unit tests of jsonpos.c: path -> line:column, the validating scan, duplicate
 * member names, and bounds (every input is copied into a buffer of exactly its
 * length, so ASan reports any read past the end).
 */
#include <stdlib.h>
#include <string.h>

#include "jsonpos.h"
#include "util.h"
#include "tap.h"

/* An exact-length heap copy (no NUL after it). */
static char *exact(const char *s, size_t *len)
{
    *len = strlen(s);
    char *p = xmalloc(*len ? *len : 1);
    memcpy(p, s, *len);
    return p;
}

/* "line:col" of path in text, "-" when not found. */
static const char *where(const char *text, const char *path, bool key)
{
    static char out[32];
    struct jsonpos p;
    size_t len;
    char *buf = exact(text, &len);
    if (jsonpos_find(buf, len, path, key, &p) < 0)
        strcpy(out, "-");
    else
        snprintf(out, sizeof(out), "%d:%d", p.line, p.col);
    free(buf);
    return out;
}

static void test_find_basic(void)
{
    const char *doc = "{\n"
                      "  \"listen\": \"0.0.0.0:8080\",\n"
                      "  \"issuers\": [\n"
                      "    { \"name\": \"aws\", \"audiences\": [\"a\", \"b\"] },\n"
                      "    {\"name\":\"c\",\"n\":[[1,2],{\"x\":null}]}\n"
                      "  ],\n"
                      "  \"t\": true, \"f\": false, \"num\": -1.5e3\n"
                      "}\n";
    is_str(where(doc, "", false), "1:1", "root value is the opening brace at 1:1");
    is_str(where(doc, "listen", false), "2:13", "value of a top-level member");
    is_str(where(doc, "listen", true), "2:3", "name of a top-level member (its opening quote)");
    is_str(where(doc, "issuers", false), "3:14", "array value position");
    is_str(where(doc, "issuers/0", false), "4:5", "first array element");
    is_str(where(doc, "issuers/0", true), "4:5", "want_key on an array element gives the element");
    is_str(where(doc, "issuers/0/name", true), "4:7", "member name inside an element");
    is_str(where(doc, "issuers/0/audiences/1", false), "4:41",
           "second audience of the first issuer");
    is_str(where(doc, "issuers/1/n/0/1", false), "5:25", "element of a nested array");
    is_str(where(doc, "issuers/1/n/1/x", false), "5:33", "null inside an object inside an array");
    is_str(where(doc, "t", false), "7:8", "true literal");
    is_str(where(doc, "f", false), "7:19", "false literal");
    is_str(where(doc, "num", false), "7:33", "negative number with exponent");
    is_str(where(doc, "/listen", false), "2:13", "a leading slash (RFC 6901 form) is accepted");
    is_str(where(doc, "issuers/2", false), "-", "index past the end is not found");
    is_str(where(doc, "issuers/01", false), "-", "index with a leading zero is refused");
    is_str(where(doc, "issuers/-1", false), "-", "negative index is refused");
    is_str(where(doc, "issuers/x", false), "-", "non-numeric segment on an array is not found");
    is_str(where(doc, "listen/0", false), "-", "descending into a string is not found");
    is_str(where(doc, "nope", false), "-", "absent member is not found");
    is_str(where(doc, "issuers/", false), "-", "empty segment names a member \"\", absent here");
    is_str(where("[]", "0", false), "-", "element of an empty array is not found");
    is_str(where("{}", "a", false), "-", "member of an empty object is not found");
    is_str(where("  \n [1]", "", false), "2:2", "root after leading whitespace");
    is_str(where("", "", false), "-", "empty text has no root");
    is_str(where("   ", "", false), "-", "whitespace-only text has no root");
}

static void test_find_strings(void)
{
    /* values full of brackets, quotes and escapes must be skipped exactly */
    const char *doc = "{\"a\": \"}]\\\"{[\", \"b\\\"c\": 1, \"x\": \"\\\\\", \"y\": 2}";
    is_str(where(doc, "y", false), "1:44",
           "brackets and escaped quotes inside strings are skipped");
    is_str(where(doc, "b\"c", true), "1:17",
           "member name with an escaped quote matches its decoded form");
    is_str(where("{\"\\u0041\": 1, \"A\": 2}", "A", false), "1:20",
           "\\u0041 decodes to A (and a repeated name resolves to the last)");
    is_str(where("{\"a/b\": 1, \"c~d\": 2}", "a~1b", false), "1:9", "~1 in a segment stands for /");
    is_str(where("{\"a/b\": 1, \"c~d\": 2}", "c~0d", false), "1:19",
           "~0 in a segment stands for ~");
    is_str(where("{\"a\": 1}", "a~2", false), "-", "~2 is not a valid pointer escape");
    is_str(where("{\"a~\": 1}", "a~", false), "-", "a trailing ~ is not a valid pointer escape");
    is_str(where("{\"\": 1, \"b\": {\"\": 2}}", "/", false), "1:6",
           "\"/\" names the empty member of the root");
    is_str(where("{\"\": 1, \"b\": {\"\": 2}}", "b/", false), "1:19",
           "\"b/\" names the empty member of b");
    is_str(where("{\"\\ud83d\\ude00\": 7}", "\xf0\x9f\x98\x80", false), "1:18",
           "a surrogate pair decodes to one 4-byte UTF-8 character");
    is_str(where("{\"\xc3\xa9t\xc3\xa9\": 1, \"k\": 2}", "k", true), "1:12",
           "columns count UTF-8 characters, not bytes");
    is_str(where("{\r\n\t\"k\": 2}", "k", false), "2:7", "CRLF ends a line; a tab is one column");
    is_str(where("{\"a\": 1, \"a\": {\"b\": 2}}", "a/b", false), "1:21",
           "a repeated name: the path follows the last occurrence (jansson's)");
    is_str(where("{\"a\": \"\\q\", \"b\": 1}", "b", false), "-",
           "a bad escape before the target: not found");
    is_str(where("{\"a\": 1 \"b\": 2}", "b", false), "-", "a missing comma: not found");
    is_str(where("{\"a\": [1, 2,], \"b\": 1}", "b", false), "-", "a trailing comma: not found");
    is_str(where("{\"a\": 01, \"b\": 1}", "b", false), "-", "a leading-zero number: not found");
    is_str(where("[1, x]", "1", false), "-",
           "a target that does not start like a value: not found");
}

/* Every prefix of a document: no read past the end, and no false hits. */
static void test_truncation(void)
{
    const char *doc =
        "{\"s\": \"a\\u00e9\\\"b\", \"n\": [1, -2.5e+3, {\"k\": [true, false, null]}], \"z\": 0}";
    size_t n = strlen(doc);
    int bad = 0, found_full = 0;
    for (size_t k = 0; k <= n; k++) {
        char *buf = xmalloc(k ? k : 1);
        struct jsonpos p;
        struct jsonpos_scan sc;
        memcpy(buf, doc, k);
        int r = jsonpos_find(buf, k, "n/2/k/2", false, &p);
        if (r == 0 && (p.offset >= k || buf[p.offset] != 'n'))
            bad++;
        if (k == n)
            found_full = r == 0;
        jsonpos_scan(buf, k, 16, &sc);
        if (k < n && sc.status == JSONPOS_OK)
            bad++;
        if (k == n && sc.status != JSONPOS_OK)
            bad++;
        jsonpos_scan_free(&sc);
        (void)jsonpos_find(buf, k, "z", true, &p);
        free(buf);
    }
    is_int(bad, 0, "every prefix: hits point inside the buffer, only the whole text scans OK");
    ok(found_full, "the whole document finds n/2/k/2");
}

static void test_at(void)
{
    const char *t = "ab\ncd\n\xc3\xa9x";
    struct jsonpos p = jsonpos_at(t, strlen(t), 4);
    ok(p.line == 2 && p.col == 2, "offset 4 is line 2 column 2");
    p = jsonpos_at(t, strlen(t), 8);
    ok(p.line == 3 && p.col == 2, "after a 2-byte character the column advances by one");
    p = jsonpos_at(t, strlen(t), 1000);
    ok(p.offset == strlen(t) && p.line == 3 && p.col == 3,
       "an offset past the end is clamped to the end");
    p = jsonpos_at(NULL, 0, 5);
    ok(p.line == 1 && p.col == 1 && p.offset == 0, "NULL text is position 1:1");
}

static void test_segment(void)
{
    char *s = jsonpos_segment("a/b~c", 5);
    is_str(s, "a~1b~0c", "jsonpos_segment escapes / and ~");
    free(s);
    s = jsonpos_segment("", 0);
    is_str(s, "", "jsonpos_segment of the empty name is empty");
    free(s);
}

static struct jsonpos_scan scan_of(const char *text, int depth)
{
    struct jsonpos_scan sc;
    size_t len;
    char *buf = exact(text, &len);
    jsonpos_scan(buf, len, depth, &sc);
    free(buf);
    return sc;
}

static void scan_status(const char *text, enum jsonpos_status want, int line, int col,
                        const char *name)
{
    struct jsonpos_scan sc = scan_of(text, 8);
    ok(sc.status == want && (want == JSONPOS_OK || (sc.where.line == line && sc.where.col == col)),
       "scan %s (status %d at %d:%d)", name, sc.status, sc.where.line, sc.where.col);
    jsonpos_scan_free(&sc);
}

static void test_scan(void)
{
    scan_status("{\"a\": [1, 2.5, -0, 1e9, 1E-2, \"x\", true, false, null, {}, []]}", JSONPOS_OK, 0,
                0, "accepts every kind of value");
    scan_status(" \n\t[] \r\n", JSONPOS_OK, 0, 0, "accepts surrounding whitespace");
    scan_status("\"just a string\"", JSONPOS_OK, 0, 0, "accepts a scalar document");
    scan_status("", JSONPOS_MALFORMED, 1, 1, "refuses empty text at 1:1");
    scan_status("{\"a\": 1,}", JSONPOS_MALFORMED, 1, 9,
                "refuses a trailing comma in an object at the }");
    scan_status("[1,]", JSONPOS_MALFORMED, 1, 4, "refuses a trailing comma in an array");
    scan_status("{\"a\" 1}", JSONPOS_MALFORMED, 1, 6, "refuses a missing colon");
    scan_status("{\"a\": 1}\n x", JSONPOS_MALFORMED, 2, 2, "refuses trailing garbage");
    scan_status("{\"a\": \"x\ty\"}", JSONPOS_MALFORMED, 1, 9,
                "refuses a raw control byte in a string");
    scan_status("[\"\\x\"]", JSONPOS_MALFORMED, 1, 3,
                "refuses an unknown escape, at its backslash");
    scan_status("[\"\\u12G4\"]", JSONPOS_MALFORMED, 1, 3, "refuses a bad \\u escape");
    scan_status("[\"\\udc00\"]", JSONPOS_MALFORMED, 1, 3, "refuses a lone low surrogate");
    scan_status("[\"\\ud800x\"]", JSONPOS_MALFORMED, 1, 3,
                "refuses a high surrogate without its pair");
    scan_status("[01]", JSONPOS_MALFORMED, 1, 3, "refuses a leading zero");
    scan_status("[1.]", JSONPOS_MALFORMED, 1, 4, "refuses a number ending in a dot");
    scan_status("[-]", JSONPOS_MALFORMED, 1, 3, "refuses a lone minus");
    scan_status("[1e]", JSONPOS_MALFORMED, 1, 4, "refuses an empty exponent");
    scan_status("[tru]", JSONPOS_MALFORMED, 1, 2, "refuses a truncated literal");
    scan_status("[\"abc", JSONPOS_MALFORMED, 1, 6, "refuses an unterminated string at the end");
    scan_status("{'a': 1}", JSONPOS_MALFORMED, 1, 2, "refuses single quotes");

    struct jsonpos_scan sc = scan_of("[[[[]]]]", 4);
    ok(sc.status == JSONPOS_OK && sc.depth == 4, "depth 4 is allowed with a cap of 4 (depth %d)",
       sc.depth);
    jsonpos_scan_free(&sc);
    sc = scan_of("{\"a\":\n [[[[1]]]]}", 4);
    ok(sc.status == JSONPOS_TOO_DEEP && sc.where.line == 2 && sc.where.col == 5,
       "the fifth level is too deep with a cap of 4, at its bracket (2:5)");
    jsonpos_scan_free(&sc);
    /* the recursion is capped whatever the caller asks */
    size_t n = 100000;
    char *deep = xmalloc(n);
    memset(deep, '[', n);
    jsonpos_scan(deep, n, 1 << 30, &sc);
    ok(sc.status == JSONPOS_TOO_DEEP && sc.where.offset == JSONPOS_MAX_DEPTH,
       "100000 nested brackets stop at JSONPOS_MAX_DEPTH");
    jsonpos_scan_free(&sc);
    struct jsonpos p;
    ok(jsonpos_find(deep, n, "0/0/0", false, &p) == 0 && p.offset == 3,
       "find walks into deep nesting without scanning it");
    ok(jsonpos_find(deep, n, "1", false, &p) < 0,
       "find does not blow the stack skipping deep nesting");
    free(deep);
}

static void test_dups(void)
{
    struct jsonpos_scan sc = scan_of(
        "{\"a\": 1,\n \"b\": {\"a\": 2, \"c\": 3},\n \"a\": 4, \"\\u0061\": 5}", 8);
    ok(sc.status == JSONPOS_OK, "a document with duplicates is still well-formed");
    is_int(sc.n_dups, 2, "two repeats of \"a\" at the top level; b's own \"a\" is not a repeat");
    if (sc.n_dups == 2) {
        ok(sc.dups[0].at.line == 3 && sc.dups[0].at.col == 2, "first repeat at 3:2");
        ok(sc.dups[0].first.line == 1 && sc.dups[0].first.col == 2,
           "refers to the first occurrence at 1:2");
        ok(sc.dups[1].at.line == 3 && sc.dups[1].at.col == 10 && !strcmp(sc.dups[1].name, "a"),
           "an escaped spelling (\\u0061) is a repeat too, at 3:10");
        ok(sc.dups[1].first.offset == 1, "every repeat refers to the first occurrence");
    } else {
        ok(0, "first repeat at 3:2");
        ok(0, "refers to the first occurrence at 1:2");
        ok(0, "an escaped spelling (\\u0061) is a repeat too, at 3:10");
        ok(0, "every repeat refers to the first occurrence");
    }
    jsonpos_scan_free(&sc);

    sc = scan_of("[{\"x\": 1}, {\"x\": 2}, {\"y\": {\"z\": 1, \"z\": 2}}]", 8);
    ok(sc.n_dups == 1 && sc.dups[0].at.col == 37 && !strcmp(sc.dups[0].name, "z"),
       "equal names in sibling objects are not repeats; a nested repeat is found");
    jsonpos_scan_free(&sc);

    sc = scan_of("{\"a\\u0000b\": 1, \"a\": 2, \"a\\u0000b\": 3}", 8);
    ok(sc.n_dups == 1 && sc.dups[0].name_len == 3, "names with an embedded NUL compare by length");
    jsonpos_scan_free(&sc);

    sc = scan_of("{\"k\": 1, \"k\": 2, \"x\": }", 8);
    ok(sc.status == JSONPOS_MALFORMED && sc.n_dups == 1, "repeats before a syntax error are kept");
    jsonpos_scan_free(&sc);
}

int main(void)
{
    test_find_basic();
    test_find_strings();
    test_truncation();
    test_at();
    test_segment();
    test_scan();
    test_dups();
    return tap_done();
}
