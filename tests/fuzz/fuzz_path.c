/*
 * fuzz_path.c: path_canonicalize on arbitrary bytes. Besides "no crash, no
 * sanitizer report", every accepted target is re-checked against the rules of
 * path.h by an independent, deliberately naive checker, and every rejected one
 * must leave no slices; a disagreement aborts, so the fuzzer reports it like a
 * crash.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "path.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void expect(int cond)
{
    if (!cond)
        abort();
}

static bool upper_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F');
}

static int hexv(char c)
{
    return c <= '9' ? c - '0' : c - 'A' + 10;
}

/* The path rules of path.h, restated segment by segment. */
static void check_accepted(const char *t, size_t len, const struct path_result *r)
{
    const char *q = memchr(t, '?', len);
    size_t plen = q ? (size_t)(q - t) : len;

    expect(r->path == t && r->path_len == plen && plen >= 1 && t[0] == '/');
    expect(q ? (r->query == q + 1 && r->query_len == len - plen - 1) : r->query == NULL);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)t[i];
        expect(c > 0x20 && c < 0x7f && !strchr("#\\\"<>[]^`{|}", c));
        expect(i < plen ? c != ';' : true);
        if (i > plen && c == '%') /* query escapes: well-formed, either case */
            expect(i + 2 < len && isxdigit((unsigned char)t[i + 1]) &&
                   isxdigit((unsigned char)t[i + 2]));
    }
    /* segments */
    for (size_t s = 1; s <= plen;) {
        const char *e = memchr(t + s, '/', plen - s);
        size_t end = e ? (size_t)(e - t) : plen, n = end - s;
        expect(n > 0 || end == plen); /* empty only last */
        expect(!(n == 1 && t[s] == '.') && !(n == 2 && t[s] == '.' && t[s + 1] == '.'));
        for (size_t i = s; i < end; i++) {
            if (t[i] != '%')
                continue;
            expect(i + 2 < end);
            expect(upper_hex(t[i + 1]) && upper_hex(t[i + 2]));
            {
                int v = hexv(t[i + 1]) << 4 | hexv(t[i + 2]);
                bool unres = (v >= 'a' && v <= 'z') || (v >= 'A' && v <= 'Z') ||
                             (v >= '0' && v <= '9') || v == '-' || v == '.' || v == '_' || v == '~';
                expect(!unres && v != '/' && v != '\\' && v >= 0x20 && v != 0x7f);
            }
            i += 2;
        }
        s = end + 1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *t = (const char *)data;
    struct path_result r, r2;
    enum reason a = path_canonicalize(t, size, 65536, &r);
    enum reason b = path_canonicalize(t, size, 65536, &r2);

    expect(a == b && memcmp(&r, &r2, sizeof(r)) == 0); /* deterministic */
    if (a == REASON_ALLOWED) {
        check_accepted(t, size, &r);
        if (size > 1) /* the cap applies to the whole target */
            expect(path_canonicalize(t, size, size - 1, &r2) == REASON_PATH_TOO_LONG);
    } else {
        expect(r.path == NULL && r.path_len == 0 && r.query == NULL && r.query_len == 0);
        expect(reason_status(a) == 400 || (a == REASON_PATH_TOO_LONG && size > 65536));
    }
    return 0;
}
