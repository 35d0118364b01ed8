/*
 * Unit tests of the request record's fast formatting (issue 17): each fast
 * way against a plain one on many generated inputs, byte for byte.
 *   - sb_str (one pass: check and copy a clean string by words, 16 bytes with
 *     SSE2) against a plain byte-by-byte escaper kept here, with the cap, on
 *     strings of quotes, backslashes, control bytes, DEL, UTF-8, invalid
 *     UTF-8 and NULs, at every short length and around the caps; the word
 *     check without SSE2 (test_audit_format_plain.c, the same header built
 *     with AUDIT_RECORD_NO_SIMD) on the same strings;
 *   - audit_record_format (written straight) against
 *     audit_record_format_by_table (member by member from
 *     audit_request_members) on generated records: every member present or
 *     absent, strings at and past their caps, numbers at the limits,
 *     recorded headers, queries and links to redact;
 *   - u64_decimal and the record's sb_i64 against snprintf, hex_encode
 *     against a plain loop, and sha256_hex against hex_encode of sha256_raw.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit_record.h"
#include "tap.h"

/* test_audit_format_plain.c: json_copy_plain built without SSE2 */
bool plain_json_copy(char *d, const char *s, size_t n);

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static size_t below(size_t n)
{
    return n ? (size_t)(next() % n) : 0;
}

/* ------------------------------------------------------------ the strings */

/* `"`, the escaped pieces within min(escaped length, cap), `"`; *cut when
 * some were left out. NULL: null. */
static size_t ref_str(char *out, const char *s, size_t n, size_t cap, bool *cut)
{
    static const char hex[] = "0123456789abcdef";
    size_t want = 0, o = 0, limit;

    if (!s) {
        memcpy(out, "null", 4);
        return 4;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        want += c == '"' || c == '\\' ? 2 : c < 0x20 || c >= 0x7f ? 6 : 1;
    }
    limit = want < cap ? want : cap;
    out[o++] = '"';
    for (size_t i = 0, w = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char piece[6];
        size_t k;
        if (c == '"' || c == '\\') {
            piece[0] = '\\';
            piece[1] = (char)c;
            k = 2;
        } else if (c < 0x20 || c >= 0x7f) {
            memcpy(piece, "\\u00", 4);
            piece[4] = hex[c >> 4];
            piece[5] = hex[c & 15];
            k = 6;
        } else {
            piece[0] = (char)c;
            k = 1;
        }
        if (w + k > limit)
            break;
        memcpy(out + o, piece, k);
        o += k;
        w += k;
    }
    out[o++] = '"';
    *cut = o - 2 < want;
    return o;
}

/* A byte of one of the kinds a recorded string may hold. */
static char gen_byte(int mix)
{
    static const char special[] = {'"',        '\\',       '\0',       '\n',
                                   '\t',       0x1f,       0x7f,       (char)0x80,
                                   (char)0xc3, (char)0xa9, (char)0xff, (char)0xe2};
    size_t r = below(100);

    if (mix == 0 || r >= (size_t)mix)
        return (char)(0x20 + below(0x7f - 0x20)); /* printable, '"' and '\\' included */
    return special[below(sizeof(special))];
}

/* n bytes: clean (mix 0) or with about mix% special bytes, sometimes one
 * special byte at a chosen place (first, last, inside each block). */
static void gen_str(char *s, size_t n, int mix)
{
    for (size_t i = 0; i < n; i++) {
        s[i] = gen_byte(mix);
        if (mix == 0 && (s[i] == '"' || s[i] == '\\'))
            s[i] = 'q';
    }
    if (n && mix < 0)
        s[below(n)] = gen_byte(100);
}

/* A generated string of fewer than `size` bytes into s, half of the time
 * clean, with `needle` at a random place half of the time it fits; its
 * length. */
static size_t gen_with(char *s, size_t size, const char *needle)
{
    size_t n = below(size), k = strlen(needle);

    gen_str(s, n, below(2) ? 0 : 5);
    if (n > k && below(2))
        memcpy(s + below(n - k), needle, k);
    return n;
}

static int check_str(const char *s, size_t n, size_t cap, const char *what)
{
    char want[8 * 1024 + 16], pre[] = "pre";
    struct sb b = {0};
    bool cut = false;
    size_t wl = ref_str(want, s, n, cap, &cut);
    int good;

    sb_put(&b, pre, 3); /* after other contents, as in a record */
    sb_str(&b, s, n, cap);
    good = b.buf.len == wl + 3 && !memcmp(b.buf.p + 3, want, wl) && b.buf.p[b.buf.len] == '\0' &&
           b.truncated == cut;
    if (!good)
        tap_diag("%s: n %zu cap %zu: got %zu bytes, want %zu", what, n, cap, b.buf.len - 3, wl);
    buf_free(&b.buf);
    return good;
}

static void test_strings(void)
{
    static char s[8192];
    static const size_t caps[] = {CAP_METHOD, CAP_ACCOUNT, CAP_HASH, CAP_ID, CAP_UA};
    size_t bad = 0, runs = 0, plain_bad = 0, fast_bad = 0;

    ok(check_str(NULL, 0, CAP_ID, "NULL"), "sb_str: NULL is null");
    ok(check_str("", 0, CAP_ID, "empty"), "sb_str: the empty string");
    /* every length to 80 (each short form, each SSE2 block and tail), each mix */
    for (size_t n = 0; n <= 80; n++)
        for (int mix = -1; mix <= 30; mix += mix < 2 ? 1 : 7)
            for (int k = 0; k < 40; k++) {
                gen_str(s, n, mix);
                bad += !check_str(s, n, CAP_UA, "short");
                runs++;
                {
                    char d[96], ref[96];
                    bool clean = true;
                    for (size_t i = 0; i < n; i++) {
                        unsigned char c = (unsigned char)s[i];
                        clean &= c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
                    }
                    memset(d, 'x', sizeof(d));
                    memset(ref, 'x', sizeof(ref));
                    memcpy(ref, s, n);
                    /* the plain word check: the verdict, and the bytes when clean */
                    if (plain_json_copy(d, s, n) != clean || (clean && memcmp(d, ref, n + 1)))
                        plain_bad++;
                    /* and this build's (SSE2 on x86-64): a wrong "needs escaping"
                     * would not change sb_str's bytes, only its cost */
                    memset(d, 'x', sizeof(d));
                    if (json_copy_plain(d, s, n) != clean || (clean && memcmp(d, ref, n + 1)))
                        fast_bad++;
                }
            }
    ok(!bad, "sb_str = the plain escaper on %zu strings of 0-80 bytes (%zu differ)", runs, bad);
    ok(!plain_bad, "the word check without SSE2: the same verdicts and bytes (%zu differ)",
       plain_bad);
    ok(!fast_bad, "json_copy_plain: the exact verdict and bytes on each (%zu differ)", fast_bad);
    /* around each cap: clean and not, cut inside an escape or not */
    bad = runs = 0;
    for (size_t c = 0; c < sizeof(caps) / sizeof(caps[0]); c++)
        for (size_t n = caps[c] > 8 ? caps[c] - 8 : 0; n <= caps[c] + 8; n++)
            for (int mix = -1; mix <= 20; mix += 7) {
                gen_str(s, n, mix);
                bad += !check_str(s, n, caps[c], "at cap");
                runs++;
            }
    /* long values: the path cap and beyond */
    for (int k = 0; k < 40; k++) {
        size_t n = CAP_UA * 2 + below(sizeof(s) - CAP_UA * 2);
        gen_str(s, n, k % 3 ? 0 : 2);
        bad += !check_str(s, n, k % 2 ? CAP_UA : 4096, "long");
        runs++;
    }
    ok(!bad, "sb_str = the plain escaper at and past the caps on %zu strings (%zu differ)", runs,
       bad);
}

/* ------------------------------------------------------------ the records */

#define NSTR 24
static char pool[NSTR][2400];

/* A string for a member: NULL now and then, else generated, sometimes past
 * the member's cap. */
static const char *gen_member(int i, size_t cap, size_t *len)
{
    size_t n;
    int r = (int)below(40);

    if (r < 4) {
        *len = 0;
        return NULL;
    }
    n = r == 4 ? cap + below(40) : r == 5 ? cap - below(4) : below(cap < 140 ? cap / 2 : 70);
    if (n >= sizeof(pool[i]))
        n = sizeof(pool[i]) - 1;
    gen_str(pool[i], n, r < 20 ? 0 : r < 32 ? -1 : 10);
    pool[i][n] = '\0';
    *len = n;
    return pool[i];
}

/* a C string member (no NUL inside: it is measured by strlen) */
static const char *gen_cmember(int i, size_t cap)
{
    size_t n;
    const char *s = gen_member(i, cap, &n);
    if (s)
        for (size_t k = 0; k < n; k++)
            if (!pool[i][k])
                pool[i][k] = '0';
    return s;
}

static int64_t gen_int(void)
{
    static const int64_t edges[] = {0,
                                    -1,
                                    1,
                                    9,
                                    10,
                                    99,
                                    100,
                                    999,
                                    1000,
                                    INT64_MAX,
                                    INT64_MIN,
                                    AUDIT_NUMBER_MAX,
                                    AUDIT_NUMBER_MAX + 1,
                                    -AUDIT_NUMBER_MAX,
                                    -AUDIT_NUMBER_MAX - 1};
    switch (below(4)) {
    case 0:
        return edges[below(sizeof(edges) / sizeof(edges[0]))];
    case 1:
        return (int64_t)below(1000);
    case 2:
        return (int64_t)next();
    default:
        return (int64_t)below(100000) - 50000;
    }
}

static void test_records(void)
{
    static const char *const names[] = {"X-Sfn-Execution", "X-Team", "Authorization", "X-Api-Key",
                                        "Traceparent"};
    static const char *const ops[] = {"use", "mint"};
    struct audit_rh rh[5];
    struct audit_header hdrs[AUDIT_MAX_RECORD_HEADERS + 4];
    char hvals[AUDIT_MAX_RECORD_HEADERS + 4][96], linkpath[2][200], query[2][200];
    size_t bad = 0, truncated = 0, runs = 4000;

    for (size_t i = 0; i < 5; i++)
        audit_rh_init(&rh[i], names[i]);
    for (size_t k = 0; k < runs; k++) {
        struct audit_record r;
        struct sb fast = {0}, plain = {0};
        char store[512];
        size_t n;

        memset(&r, 0, sizeof(r));
        r.ts_ms = 1 + (int64_t)below(4000000000000ull); /* > 0: no clock read in between */
        r.request_id = gen_cmember(0, CAP_ID);
        r.decision = (enum decision)below(5); /* 4: none of them */
        r.reason = (enum reason)(below(20) ? below(REASON__COUNT) : REASON__COUNT + below(3));
        r.status = (int)gen_int();
        r.step = gen_cmember(1, CAP_STEP);
        r.dry_run = below(2);
        r.policy_file = gen_cmember(2, CAP_FILE);
        r.policy_sha256 = gen_cmember(3, CAP_HASH);
        r.worker = (int)gen_int();
        r.client_request_id = gen_cmember(4, CAP_ID);
        r.caller.verified = below(2);
        r.caller.iss = gen_cmember(5, CAP_CLAIM);
        r.caller.sub = gen_cmember(6, CAP_CLAIM);
        r.caller.audience = gen_cmember(7, CAP_CLAIM);
        r.caller.jti = gen_cmember(8, CAP_JTI);
        r.caller.aws_account = gen_cmember(9, CAP_ACCOUNT);
        r.caller.token_sha256 = gen_cmember(10, CAP_HASH);
        r.request.method = gen_member(11, CAP_METHOD, &r.request.method_len);
        r.request.path = gen_member(12, 2000, &r.request.path_len);
        if (below(2)) {
            r.request.query_len = gen_with(query[0], sizeof(query[0]), "sig=");
            r.request.query = query[0];
        }
        r.request.client = gen_cmember(13, CAP_CLIENT);
        r.request.user_agent = gen_member(14, CAP_UA, &r.request.user_agent_len);
        if (r.request.user_agent && below(4) == 0) {
            r.request.user_agent = "Bearer abcdef";
            r.request.user_agent_len = 13;
        }
        r.request.user_agent_judged = (int)below(4);
        r.request.bytes_in = (uint64_t)gen_int();
        r.request.n_headers = below(AUDIT_MAX_RECORD_HEADERS + 4);
        for (size_t h = 0; h < r.request.n_headers; h++) {
            size_t vl = below(sizeof(hvals[h]));
            gen_str(hvals[h], vl, below(3) ? 0 : 5);
            hdrs[h].name = below(8) ? names[below(5)] : below(2) ? "X-Other" : NULL;
            hdrs[h].value = below(10) ? hvals[h] : NULL;
            hdrs[h].value_len = hdrs[h].value ? vl : 0;
            if (hdrs[h].value && below(6) == 0) {
                hdrs[h].value = "AKIAIOSFODNN7EXAMPLE";
                hdrs[h].value_len = 20;
            }
        }
        r.request.headers = hdrs;
        r.upstream.name = gen_cmember(15, CAP_NAME);
        r.upstream.status = (int)gen_int();
        r.upstream.latency_ms = gen_int();
        r.upstream.bytes = (uint64_t)gen_int();
        r.upstream.identity = gen_cmember(16, CAP_IDENTITY);
        r.upstream.audience = gen_cmember(17, CAP_CLAIM);
        r.bytes_out = (uint64_t)gen_int();
        r.duration_ms = gen_int();
        if (below(3) == 0) {
            r.link.op = below(6) ? ops[below(2)] : gen_cmember(18, CAP_METHOD);
            r.link.id = gen_cmember(19, CAP_HASH);
            r.link.method = gen_cmember(20, CAP_METHOD);
            if (below(5)) {
                r.link.path_len = gen_with(linkpath[0], sizeof(linkpath[0]), "/?a=b&");
                r.link.path = linkpath[0];
            }
            r.link.kid = gen_cmember(21, CAP_ID);
            r.link.minter = gen_cmember(22, CAP_ID);
            r.link.exp = gen_int();
            r.link.uses = (unsigned)next();
        }
        /* the fast one on a borrowed buffer, sometimes small (it grows
         * mid-record), the plain one on none; some of the record_headers */
        n = below(6);
        buf_init_on(&fast.buf, store, below(2) ? sizeof(store) : 1 + below(64));
        audit_record_format(&fast, &r, rh, n);
        audit_record_format_by_table(&plain, &r, rh, n);
        if (fast.buf.len != plain.buf.len || memcmp(fast.buf.p, plain.buf.p, fast.buf.len) ||
            fast.truncated != plain.truncated || fast.buf.p[fast.buf.len] != '\0') {
            if (!bad)
                tap_diag("record %zu differs:\n  fast  %.*s\n  table %.*s", k, (int)fast.buf.len,
                         fast.buf.p, (int)plain.buf.len, plain.buf.p);
            bad++;
        }
        truncated += plain.truncated;
        buf_free(&fast.buf);
        buf_free(&plain.buf);
    }
    ok(!bad, "audit_record_format = the table walk on %zu generated records (%zu differ)", runs,
       bad);
    ok(truncated > runs / 10 && truncated < runs, "of which %zu cut (some, not all)", truncated);
    for (size_t i = 0; i < 5; i++)
        audit_rh_free(&rh[i]);
}

/* The User-Agent's verdict a caller passes (conn.c judges it once for the
 * record and its access log): taken as given; unjudged, the formatter's. */
static void test_user_agent_judged(void)
{
    static const struct {
        const char *ua;
        int judged;
        const char *want;
    } cases[] = {
        {"Bearer abc", AUDIT_UA_UNJUDGED, "\"user_agent\":\"[redacted]\""},
        {"curl/8.5.0", AUDIT_UA_UNJUDGED, "\"user_agent\":\"curl/8.5.0\""},
        {"Bearer abc", AUDIT_UA_CREDENTIAL, "\"user_agent\":\"[redacted]\""},
        {"curl/8.5.0", AUDIT_UA_PLAIN, "\"user_agent\":\"curl/8.5.0\""},
        {"curl/8.5.0", AUDIT_UA_CREDENTIAL, "\"user_agent\":\"[redacted]\""},
        {"Bearer abc", 7, "\"user_agent\":\"[redacted]\""}, /* not a verdict: judged here */
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct audit_record r;
        struct sb b = {0};
        memset(&r, 0, sizeof(r));
        r.ts_ms = 1;
        r.request.user_agent = cases[i].ua;
        r.request.user_agent_len = strlen(cases[i].ua);
        r.request.user_agent_judged = cases[i].judged;
        audit_record_format(&b, &r, NULL, 0);
        ok(strstr(b.buf.p, cases[i].want) != NULL, "user_agent \"%s\" judged %d: %s", cases[i].ua,
           cases[i].judged, cases[i].want);
        buf_free(&b.buf);
    }
}

/* ------------------------------------------------------------ util */

static void test_numbers_and_hex(void)
{
    char got[32], want[32];
    unsigned char in[80], digest[32];
    size_t bad = 0, runs = 0;

    for (int k = 0; k < 64; k++)
        for (int d = -2; d <= 2; d++) {
            uint64_t v = (1ull << k) + (uint64_t)(int64_t)d;
            size_t n = u64_decimal(v, got);
            snprintf(want, sizeof(want), "%" PRIu64, v);
            bad += n != strlen(want) || memcmp(got, want, n);
            runs++;
        }
    for (uint64_t p = 1, k = 0; k < 20; k++, p *= 10)
        for (int d = -2; d <= 2; d++) {
            uint64_t v = p + (uint64_t)(int64_t)d;
            size_t n = u64_decimal(v, got);
            snprintf(want, sizeof(want), "%" PRIu64, v);
            bad += n != strlen(want) || memcmp(got, want, n);
            runs++;
        }
    for (int k = 0; k < 20000; k++) {
        uint64_t v = next() >> below(64);
        size_t n = u64_decimal(v, got);
        snprintf(want, sizeof(want), "%" PRIu64, v);
        bad += n != strlen(want) || memcmp(got, want, n);
        runs++;
    }
    ok(!bad, "u64_decimal = snprintf on %zu numbers (every power of 2 and 10 and around)", runs);

    /* the record's own numbers (inline below 1000) */
    bad = runs = 0;
    for (int64_t v = -3000; v <= 3000; v++) {
        struct sb b = {0};
        sb_i64(&b, v);
        snprintf(want, sizeof(want), "%" PRId64, v);
        bad += strcmp(b.buf.p, want) != 0;
        runs++;
        buf_free(&b.buf);
    }
    for (int k = 0; k < 2000; k++) {
        struct sb b = {0};
        int64_t v = (int64_t)(next() >> (1 + below(63))); /* 0 .. 2^63-1 */
        v = k % 3 == 0 ? INT64_MIN + v : k % 3 == 1 ? -v : v;
        sb_i64(&b, v);
        snprintf(want, sizeof(want), "%" PRId64, v);
        bad += strcmp(b.buf.p, want) != 0;
        runs++;
        buf_free(&b.buf);
    }
    ok(!bad, "sb_i64 = snprintf on %zu numbers (every one within 3000)", runs);

    bad = runs = 0;
    for (size_t len = 0; len <= sizeof(in); len++)
        for (int k = 0; k < 20; k++) {
            char h[2 * sizeof(in) + 2], ref[2 * sizeof(in) + 2];
            for (size_t i = 0; i < len; i++)
                in[i] = (unsigned char)next();
            if (k == 0)
                memset(in, 0xff, len);
            memset(h, 'x', sizeof(h));
            for (size_t i = 0; i < len; i++)
                snprintf(ref + 2 * i, 3, "%02x", in[i]);
            ref[2 * len] = '\0';
            ref[2 * len + 1] = 'x';
            hex_encode(in, len, h);
            bad += memcmp(h, ref, 2 * len + 2) != 0;
            runs++;
        }
    ok(!bad, "hex_encode = a plain loop on %zu inputs of 0-80 bytes (and writes no further)", runs);
    {
        char a[65], b[65];
        sha256_raw("abc", 3, digest);
        hex_encode(digest, 32, a);
        sha256_hex("abc", 3, b);
        is_str(b, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
               "sha256_hex of \"abc\"");
        is_str(a, b, "sha256_hex = hex_encode of sha256_raw");
    }
}

int main(void)
{
    test_strings();
    test_records();
    test_user_agent_judged();
    test_numbers_and_hex();
    return tap_done();
}
