/*
 * fuzz_signurl.c: signurl_parse_query on arbitrary queries. Besides "no
 * crash, no sanitizer report": parsing is deterministic; an accepted suffix
 * has its offsets inside the query, "&baton_sig=" where signed_len says, its
 * values in range, and the query is marked; a query without baton_ names is
 * unmarked and parses to 0; a rejected one is marked. A disagreement aborts,
 * so the fuzzer reports it like a crash.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "signurl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void expect(int cond)
{
    if (!cond)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *q = (const char *)data;
    struct signurl_params a, b;
    char err[256];
    int ra = signurl_parse_query(q, size, &a, err, sizeof(err));
    int rb = signurl_parse_query(q, size, &b, err, sizeof(err));
    bool marked = signurl_query_marked(q, size);

    expect(ra == rb);
    if (ra == 1) {
        expect(memcmp(&a, &b, sizeof(a)) == 0);
        expect(marked);
        expect(a.base_len <= a.signed_len && a.signed_len + 11 + SIGNURL_SIG_CHARS == size);
        expect(memcmp(q + a.signed_len, "&baton_sig=", 11) == 0);
        expect(a.exp >= 1 && a.exp <= SIGNURL_EXP_MAX && a.uses <= SIGNURL_MAX_USES);
        expect(a.kid[0] && strlen(a.kid) <= SIGNURL_KID_MAX);
        expect(a.minter[0] && strlen(a.minter) <= SIGNURL_MINTER_MAX);
        expect(a.base_len == 0 || q[a.base_len] == '&');
        /* the base query, what an upstream gets, carries no baton_ name */
        expect(!signurl_query_marked(q, a.base_len));
        {
            struct signurl_scope s = {"GET", "h", 1, "/", 1, q, size};
            expect(signurl_verify(NULL, &s, &a, 0) == REASON_URL_UNKNOWN_KEY);
        }
    } else if (ra == 0) {
        expect(!marked);
    } else {
        expect(ra == -1 && marked && err[0]);
    }
    return 0;
}
