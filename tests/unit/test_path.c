/*
 * Unit tests of path.c: a table of adversarial request targets, each with the
 * exact reason it must be rejected with, and a table of valid targets with the
 * path and query slices they must yield (unchanged: nothing is rewritten).
 */
#include <stdlib.h>
#include <string.h>

#include "path.h"
#include "reason.h"
#include "util.h"
#include "tap.h"

#define R(x) REASON_##x

struct bad {
    const char *target;
    size_t len; /* 0: strlen(target) */
    enum reason want;
    const char *why;
};

/* Each row names the bypass or ambiguity it closes. */
static const struct bad bad[] = {
    /* not origin-form */
    {"", 0, R(PATH_NOT_ORIGIN_FORM), "empty target"},
    {"*", 0, R(PATH_NOT_ORIGIN_FORM), "asterisk-form"},
    {"http://a.example/x", 0, R(PATH_NOT_ORIGIN_FORM),
     "absolute-form is resolved by the server first"},
    {"a.example:443", 0, R(PATH_NOT_ORIGIN_FORM), "authority-form"},
    {"billing/run", 0, R(PATH_NOT_ORIGIN_FORM), "relative path"},
    {"?x=1", 0, R(PATH_NOT_ORIGIN_FORM), "query without a path"},
    {"\\billing", 0, R(PATH_NOT_ORIGIN_FORM), "leading backslash"},
    /* encoded slash, backslash, dot, any case */
    {"/billing%2Frun", 0, R(PATH_ENCODED_SLASH), "%2F smuggles a separator"},
    {"/billing%2frun", 0, R(PATH_ENCODED_SLASH), "%2f lowercase"},
    {"/%2F/admin", 0, R(PATH_ENCODED_SLASH), "leading encoded slash"},
    {"/a%5Cb", 0, R(PATH_ENCODED_BACKSLASH), "%5C backslash"},
    {"/a%5cb", 0, R(PATH_ENCODED_BACKSLASH), "%5c lowercase"},
    {"/a/%2E%2E/admin", 0, R(PATH_ENCODED_DOT), "%2E%2E encoded dot-dot"},
    {"/a/%2e%2e/admin", 0, R(PATH_ENCODED_DOT), "%2e%2e lowercase"},
    {"/a/.%2E/admin", 0, R(PATH_ENCODED_DOT), "half-encoded dot-dot"},
    {"/a/%2E/admin", 0, R(PATH_ENCODED_DOT), "encoded single dot"},
    {"/a/file%2Ejson", 0, R(PATH_ENCODED_DOT), "encoded dot inside a name has a literal spelling"},
    /* dot segments */
    {"/..", 0, R(PATH_DOT_SEGMENT), "bare dot-dot"},
    {"/.", 0, R(PATH_DOT_SEGMENT), "bare dot"},
    {"/billing/../admin", 0, R(PATH_DOT_SEGMENT), "dot-dot climbs out of the prefix"},
    {"/billing/./run", 0, R(PATH_DOT_SEGMENT), "dot segment in the middle"},
    {"/billing/..", 0, R(PATH_DOT_SEGMENT), "trailing dot-dot"},
    {"/billing/.", 0, R(PATH_DOT_SEGMENT), "trailing dot"},
    {"/billing/..?x=1", 0, R(PATH_DOT_SEGMENT), "dot-dot before the query"},
    {"/billing/../", 0, R(PATH_DOT_SEGMENT), "dot-dot with trailing slash"},
    {"/../../etc/passwd", 0, R(PATH_DOT_SEGMENT), "traversal"},
    /* empty segments */
    {"//admin", 0, R(PATH_EMPTY_SEGMENT), "leading // (network-path reference)"},
    {"//", 0, R(PATH_EMPTY_SEGMENT), "just //"},
    {"/billing//run", 0, R(PATH_EMPTY_SEGMENT), "empty segment in the middle (Envoy-style bypass)"},
    {"/billing/run//", 0, R(PATH_EMPTY_SEGMENT), "double trailing slash"},
    {"///billing", 0, R(PATH_EMPTY_SEGMENT), "triple slash"},
    {"//?x", 0, R(PATH_EMPTY_SEGMENT), "// before the query"},
    /* fragment */
    {"/billing#frag", 0, R(PATH_FRAGMENT), "fragment in the path"},
    {"/billing?x=1#frag", 0, R(PATH_FRAGMENT), "fragment after the query"},
    {"/#", 0, R(PATH_FRAGMENT), "bare fragment"},
    /* backslash */
    {"/billing\\..\\admin", 0, R(PATH_BACKSLASH), "backslash separators (IIS-style)"},
    {"/a\\b", 0, R(PATH_BACKSLASH), "backslash inside a segment"},
    /* NUL and control bytes, raw or encoded */
    {"/a\0b", 4, R(PATH_CONTROL), "raw NUL truncates C strings upstream"},
    {"/a%00b", 0, R(PATH_CONTROL), "encoded NUL"},
    {"/a\tb", 0, R(PATH_CONTROL), "tab"},
    {"/a\rb", 0, R(PATH_CONTROL), "CR"},
    {"/a\nb", 0, R(PATH_CONTROL), "LF"},
    {"/a\x7f", 0, R(PATH_CONTROL), "DEL"},
    {"/a%0A", 0, R(PATH_CONTROL), "encoded LF (header injection downstream)"},
    {"/a%7F", 0, R(PATH_CONTROL), "encoded DEL"},
    {"/a?b\x01", 0, R(PATH_CONTROL), "control byte in the query"},
    {"/a?b\0", 5, R(PATH_CONTROL), "NUL in the query"},
    /* non-ASCII */
    {"/caf\xc3\xa9", 0, R(PATH_NON_ASCII), "raw UTF-8"},
    {"/a\xc0\xaf", 0, R(PATH_NON_ASCII), "overlong UTF-8 slash"},
    {"/a\xff", 0, R(PATH_NON_ASCII), "raw 0xFF"},
    {"/a?q=\xc3\xa9", 0, R(PATH_NON_ASCII), "raw UTF-8 in the query"},
    /* semicolon parameters */
    {"/billing;jsessionid=1/run", 0, R(PATH_SEMICOLON), "matrix parameter (Tomcat strips it)"},
    {"/billing/..;/admin", 0, R(PATH_SEMICOLON), "..; traversal (Tomcat behind a proxy)"},
    {"/admin;", 0, R(PATH_SEMICOLON), "trailing semicolon"},
    {"/;/admin", 0, R(PATH_SEMICOLON), "semicolon segment"},
    /* invalid percent-encoding */
    {"/a%", 0, R(PATH_BAD_PERCENT), "lone % at the end"},
    {"/a%4", 0, R(PATH_BAD_PERCENT), "one hex digit at the end"},
    {"/a%4/b", 0, R(PATH_BAD_PERCENT), "one hex digit then slash"},
    {"/a%G1", 0, R(PATH_BAD_PERCENT), "non-hex first digit"},
    {"/a%1G", 0, R(PATH_BAD_PERCENT), "non-hex second digit"},
    {"/a%%41", 0, R(PATH_BAD_PERCENT), "double percent"},
    {"/a%u002e", 0, R(PATH_BAD_PERCENT), "IIS %u encoding"},
    {"/a% 1", 0, R(PATH_BAD_PERCENT), "space after %"},
    /* non-canonical escapes: one spelling per path */
    {"/%41dmin", 0, R(PATH_NONCANONICAL_ESCAPE), "encoded letter A has a literal spelling"},
    {"/adm%69n", 0, R(PATH_NONCANONICAL_ESCAPE), "encoded letter i"},
    {"/a%30", 0, R(PATH_NONCANONICAL_ESCAPE), "encoded digit"},
    {"/a%2D", 0, R(PATH_NONCANONICAL_ESCAPE), "encoded hyphen"},
    {"/a%5F", 0, R(PATH_NONCANONICAL_ESCAPE), "encoded underscore"},
    {"/a%7E", 0, R(PATH_NONCANONICAL_ESCAPE), "encoded tilde"},
    {"/a%c3%a9", 0, R(PATH_NONCANONICAL_ESCAPE), "lowercase hex escape"},
    {"/a%3b", 0, R(PATH_NONCANONICAL_ESCAPE), "lowercase hex of a reserved byte"},
    {"/a%C3%a9", 0, R(PATH_NONCANONICAL_ESCAPE), "second escape lowercase"},
    /* characters RFC 3986 does not allow in a path */
    {"/a b", 0, R(PATH_BAD_CHAR), "space"},
    {"/a\"b", 0, R(PATH_BAD_CHAR), "double quote"},
    {"/a<b>", 0, R(PATH_BAD_CHAR), "angle brackets"},
    {"/a[0]", 0, R(PATH_BAD_CHAR), "square brackets"},
    {"/a^b", 0, R(PATH_BAD_CHAR), "caret"},
    {"/a`b", 0, R(PATH_BAD_CHAR), "backquote"},
    {"/a{b}", 0, R(PATH_BAD_CHAR), "braces"},
    {"/a|b", 0, R(PATH_BAD_CHAR), "pipe"},
    /* query */
    {"/a?b c", 0, R(PATH_BAD_QUERY), "space in the query"},
    {"/a?b=%", 0, R(PATH_BAD_QUERY), "lone % in the query"},
    {"/a?b=%4", 0, R(PATH_BAD_QUERY), "truncated escape in the query"},
    {"/a?b=%zz", 0, R(PATH_BAD_QUERY), "non-hex escape in the query"},
    {"/a?b\\c", 0, R(PATH_BAD_QUERY), "backslash in the query"},
    {"/a?b=<script>", 0, R(PATH_BAD_QUERY), "angle brackets in the query"},
    {"/a?b=\"x\"", 0, R(PATH_BAD_QUERY), "quote in the query"},
    /* first offence decides, left to right */
    {"/a/../b%2F", 0, R(PATH_DOT_SEGMENT), "dot segment comes before the encoded slash"},
    {"/a%2F/../b", 0, R(PATH_ENCODED_SLASH), "encoded slash comes before the dot segment"},
    {"/a//b;c", 0, R(PATH_EMPTY_SEGMENT), "empty segment before the semicolon"},
};

struct good {
    const char *target;
    const char *path;
    const char *query; /* NULL: no '?' */
};

static const struct good good[] = {
    {"/", "/", NULL},
    {"/billing/", "/billing/", NULL},
    {"/billing/reconcile", "/billing/reconcile", NULL},
    {"/billing/runs/2024-06-01", "/billing/runs/2024-06-01", NULL},
    {"/billing/reconcile?dry=1&x=y", "/billing/reconcile", "dry=1&x=y"},
    {"/a?", "/a", ""},
    {"/?x", "/", "x"},
    {"/a/?x", "/a/", "x"},
    {"/.well-known/jwks.json", "/.well-known/jwks.json", NULL},
    {"/a/.../b", "/a/.../b", NULL},
    {"/a/..b/c.", "/a/..b/c.", NULL},
    {"/caf%C3%A9", "/caf%C3%A9", NULL},
    {"/a%25b", "/a%25b", NULL},
    {"/a/%252F", "/a/%252F", NULL},
    {"/a%20b", "/a%20b", NULL},
    {"/a%3Bb", "/a%3Bb", NULL},
    {"/a%3F", "/a%3F", NULL},
    {"/a%23", "/a%23", NULL},
    {"/arn:aws:iam::1:role/x@y", "/arn:aws:iam::1:role/x@y", NULL},
    {"/!$&'()*+,=", "/!$&'()*+,=", NULL},
    {"/a~b_c-d.e", "/a~b_c-d.e", NULL},
    {"/a?q=%c3%a9;x=/y?z", "/a", "q=%c3%a9;x=/y?z"},
    {"/a?b=!$&'()*+,=:@", "/a", "b=!$&'()*+,=:@"},
    {"/A/B", "/A/B", NULL},
};

static void test_bad(void)
{
    size_t n = 0;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const struct bad *b = &bad[i];
        struct path_result res;
        size_t len = b->len ? b->len : strlen(b->target);
        enum reason r;
        n++;
        memset(&res, 0x5a, sizeof(res));
        r = path_canonicalize(b->target, len, 8192, &res);
        if (!ok(r == b->want, "reject (%s) with %s", b->why, reason_code(b->want)))
            tap_diag("  got %s", reason_code(r));
        ok(res.path == NULL && res.path_len == 0 && res.query == NULL,
           "rejected target (%s) leaves no slices", b->why);
    }
    ok(n >= 60, "the adversarial table has at least 60 targets (%zu)", n);
}

static void test_good(void)
{
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        const struct good *g = &good[i];
        struct path_result res;
        size_t len = strlen(g->target);
        enum reason r = path_canonicalize(g->target, len, 8192, &res);
        char *p, *q;
        if (!ok(r == REASON_ALLOWED, "accept %s", g->target)) {
            tap_diag("  got %s", reason_code(r));
            continue;
        }
        p = xstrndup(res.path, res.path_len);
        is_str(p, g->path, "path slice of %s is unchanged", g->target);
        ok(res.path == g->target, "path of %s is a slice of the target, not a copy", g->target);
        if (g->query) {
            q = res.query ? xstrndup(res.query, res.query_len) : NULL;
            is_str(q, g->query, "query slice of %s is forwarded unchanged", g->target);
            free(q);
        } else {
            ok(res.query == NULL, "%s has no query", g->target);
        }
        free(p);
    }
}

static void test_length(void)
{
    char buf[300];
    struct path_result res;

    memset(buf, 'a', sizeof(buf));
    buf[0] = '/';
    is_int(path_canonicalize(buf, 256, 256, &res), REASON_ALLOWED,
           "target of exactly max_uri bytes is accepted");
    is_int(path_canonicalize(buf, 257, 256, &res), REASON_PATH_TOO_LONG,
           "target one byte over max_uri is PATH_TOO_LONG");
    is_int(reason_status(REASON_PATH_TOO_LONG), 414, "PATH_TOO_LONG maps to 414");
    buf[200] = '?';
    is_int(path_canonicalize(buf, 257, 256, &res), REASON_PATH_TOO_LONG,
           "the query counts toward max_uri");
    is_int(path_canonicalize(buf, 300, 0, &res), REASON_ALLOWED,
           "max_uri 0 means the 8192 default");
    {
        char *big = xmalloc(PATH_DEFAULT_MAX_URI + 1);
        memset(big, 'b', PATH_DEFAULT_MAX_URI + 1);
        big[0] = '/';
        is_int(path_canonicalize(big, PATH_DEFAULT_MAX_URI + 1, 0, &res), REASON_PATH_TOO_LONG,
               "default cap rejects 8193 bytes");
        free(big);
    }
    is_int(reason_status(REASON_PATH_DOT_SEGMENT), 400, "path reasons map to 400");
    is_str(reason_code(REASON_PATH_NONCANONICAL_ESCAPE), "path_noncanonical_escape",
           "stable code of the non-canonical escape reason");
}

/* Every byte value in every position class: no crash, and no accepted target
 * contains a byte outside the documented sets. */
static void test_every_byte(void)
{
    int accepted_bad = 0;
    for (int c = 0; c < 256; c++) {
        char t[4] = {'/', 'a', (char)c, 'b'};
        struct path_result res;
        enum reason r = path_canonicalize(t, 4, 0, &res);
        int allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      (c && strchr("-._~!$&'()*+,=:@/?", c));
        if ((r == REASON_ALLOWED) != allowed) {
            accepted_bad++;
            tap_diag("  byte 0x%02x: %s", c, reason_code(r));
        }
    }
    is_int(accepted_bad, 0, "exactly the RFC 3986 path bytes (minus ';') are accepted literally");
}

/* The reason for byte c alone in a path segment and in a query, by the rules
 * written out as tests (the plain way path.c's class table must agree with). */
static enum reason ref_path_reason(int c)
{
    if (c < 0x20 || c == 0x7f)
        return REASON_PATH_CONTROL;
    if (c >= 0x80)
        return REASON_PATH_NON_ASCII;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
        strchr("-._~!$&'()*+,=:@/?", c))
        return REASON_ALLOWED; /* '?' starts the (empty-valued) query */
    switch (c) {
    case '%':
        return REASON_PATH_BAD_PERCENT; /* "%b" is no escape */
    case '#':
        return REASON_PATH_FRAGMENT;
    case '\\':
        return REASON_PATH_BACKSLASH;
    case ';':
        return REASON_PATH_SEMICOLON;
    default:
        return REASON_PATH_BAD_CHAR;
    }
}

static enum reason ref_query_reason(int c)
{
    if (c < 0x20 || c == 0x7f)
        return REASON_PATH_CONTROL;
    if (c >= 0x80)
        return REASON_PATH_NON_ASCII;
    if (c == '#')
        return REASON_PATH_FRAGMENT;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
        strchr("-._~!$&'()*+,=:@/?;", c))
        return REASON_ALLOWED;
    return REASON_PATH_BAD_QUERY; /* '%' without two digits, '\\', the rest */
}

static void test_every_byte_reason(void)
{
    int wrong = 0;
    for (int c = 0; c < 256; c++) {
        char t[5] = {'/', 'a', (char)c, 'b', 'c'}, q[5] = {'/', '?', 'a', (char)c, 'b'};
        struct path_result res;
        enum reason rp = path_canonicalize(t, 4, 0, &res), rq = path_canonicalize(q, 5, 0, &res);
        if (rp != ref_path_reason(c) || rq != ref_query_reason(c)) {
            wrong++;
            tap_diag("  byte 0x%02x: path %s, query %s", c, reason_code(rp), reason_code(rq));
        }
    }
    is_int(wrong, 0, "every byte in a path and in a query: the reason the rules give");
}

int main(void)
{
    test_every_byte_reason();
    test_bad();
    test_good();
    test_length();
    test_every_byte();
    return tap_done();
}
