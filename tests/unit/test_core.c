/* Unit tests of util.c, diag.c, log.c and reason.c. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

#include "diag.h"
#include "log.h"
#include "reason.h"
#include "util.h"
#include "tap.h"

#include <openssl/evp.h>

static void test_sha256(void)
{
    char hex[65];
    sha256_hex("abc", 3, hex);
    is_str(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
           "sha256_hex of \"abc\" is the FIPS 180-2 vector");
    sha256_hex("", 0, hex);
    is_str(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
           "sha256_hex of the empty string");
}

/* sha256_raw reuses one context per thread (and, where the provider's
 * dispatch table is readable, calls it directly): every length across the
 * block and padding boundaries against a one-shot EVP_Digest, which shares
 * nothing with it, and the same from several threads at once (TSan). */
static unsigned char sha_buf[1100];

static bool sha256_lengths_agree(size_t *first_bad)
{
    for (size_t n = 0; n <= sizeof(sha_buf); n++) {
        unsigned char a[32], b[32];
        unsigned int bl = 0;
        sha256_raw(sha_buf, n, a);
        if (EVP_Digest(sha_buf, n, b, &bl, EVP_sha256(), NULL) != 1 || bl != 32 ||
            memcmp(a, b, 32)) {
            *first_bad = n;
            return false;
        }
    }
    return true;
}

static void *sha256_thread(void *arg)
{
    size_t bad = 0;
    *(bool *)arg = sha256_lengths_agree(&bad);
    return NULL;
}

static void test_sha256_reuse(void)
{
    size_t bad = 0;
    pthread_t t[4];
    bool good[4] = {false, false, false, false};
    int started = 0;

    for (size_t i = 0; i < sizeof(sha_buf); i++)
        sha_buf[i] = (unsigned char)(i * 131 + 7);
    ok(sha256_lengths_agree(&bad),
       "sha256_raw of every length 0..%zu is EVP_Digest's (first differing: %zu)", sizeof(sha_buf),
       bad);
    for (int i = 0; i < 4; i++)
        started += pthread_create(&t[i], NULL, sha256_thread, &good[i]) == 0;
    for (int i = 0; i < started; i++)
        pthread_join(t[i], NULL);
    ok(started == 4 && good[0] && good[1] && good[2] && good[3],
       "and from four threads at once, each with its own context");
}

static void test_escape(void)
{
    char out[64];
    json_escape(out, sizeof(out), "a\"b\\c\n\x01\xff", 8);
    is_str(out, "a\\\"b\\\\c\\u000a\\u0001\\u00ff",
           "json_escape escapes quotes, control and non-ASCII bytes");
    json_escape(out, 8, "abcdefghijkl", 12);
    is_str(out, "abcdefg", "json_escape truncates at the capacity and terminates");
    json_escape(out, 8, "abcde\"", 6);
    is_str(out, "abcde\\\"", "json_escape never splits an escape sequence");
    json_escape(out, 7, "abcde\"", 6);
    is_str(out, "abcde", "json_escape drops an escape that does not fit whole");
}

static void test_reason(void)
{
    is_str(reason_code(REASON_NO_ROUTE), "no_route", "reason code of NO_ROUTE");
    is_int(reason_status(REASON_NO_ROUTE), 404, "no_route maps to 404");
    is_int(reason_status(REASON_EXPIRED), 401, "expired maps to 401");
    is_int(reason_status(REASON_RATE_LIMITED), 429, "rate_limited maps to 429");
    is_int(reason_status(REASON_IDENTITY_UNAVAILABLE), 503, "identity_unavailable maps to 503");
    is_int(reason_from_code("header_mismatch"), REASON_HEADER_MISMATCH,
           "reason_from_code round-trips");
    is_int(reason_from_code("nonsense"), -1, "unknown code is -1");
    int dup = 0;
    for (int i = 0; i < REASON__COUNT; i++)
        for (int j = i + 1; j < REASON__COUNT; j++)
            dup += !strcmp(reason_code(i), reason_code(j));
    is_int(dup, 0, "every reason code is unique");
    is_str(decision_name(DECISION_WOULD_DENY), "would_deny", "decision name of dry-run deny");
    is_int(reason_status(REASON_KEYS_UNAVAILABLE), 503,
           "keys_unavailable is our outage: 503, never a 401 the caller takes as final");
    ok(reason_retry_after_s(REASON_KEYS_UNAVAILABLE) > 0, "keys_unavailable carries Retry-After");
    int mismatched = 0;
    for (int i = 0; i < REASON__COUNT; i++) {
        int st = reason_status(i);
        bool retryable = st == 503 || st == 429;
        if (retryable != (reason_retry_after_s(i) > 0)) {
            tap_diag("%s: status %d, Retry-After %u", reason_code(i), st, reason_retry_after_s(i));
            mismatched++;
        }
    }
    is_int(mismatched, 0, "Retry-After exactly on every 503 and 429 reason");
}

static void test_diags(void)
{
    struct diags d = DIAGS_INIT;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    diags_add(&d, "conf/baton.json", 3, 14, "unknown key \"%s\"", "lisen");
    diags_add(&d, "policies", 0, 0, "cannot open");
    diags_print(&d, f);
    fclose(f);
    is_str(buf,
           "conf/baton.json:3:14: error: unknown key \"lisen\"\npolicies: error: cannot open\n",
           "diags print file:line:col and omit unknown positions");
    diags_free(&d);
    is_int(d.n, 0, "diags_free empties the list");
    free(buf);
}

static void test_read_capped(void)
{
    char path[] = "/tmp/baton-test-XXXXXX";
    int fd = mkstemp(path);
    char *out;
    size_t len;
    (void)!write(fd, "0123456789", 10);
    close(fd);
    ok(read_file_capped(path, 10, &out, &len) == 0 && len == 10 && !strcmp(out, "0123456789"),
       "read_file_capped reads a file of exactly the cap");
    free(out);
    ok(read_file_capped(path, 9, &out, &len) == -1 && errno == EFBIG,
       "read_file_capped refuses a file one byte over the cap with EFBIG");
    unlink(path);
}

/* ascii_case_eq folds a word at a time: it must agree with the byte-wise
 * ascii_casecmp_n for every pair of byte values, at every offset of words
 * and of a short tail. */
static void test_case_eq(void)
{
    char a[19], b[19];
    long wrong = 0, n = 0;

    for (int x = 0; x < 256; x++)
        for (int y = 0; y < 256; y++)
            for (size_t len = 1; len <= sizeof(a); len += (len < 9 ? 1 : 3))
                /* 1 to 9, 12, 15, 18: bytes, two 4-byte halves, a whole word, an overlapping last word */
                for (size_t at = 0; at < len; at += (len > 9 ? 3 : 1)) {
                    memset(a, 'k', len);
                    memset(b, 'K', len);
                    a[at] = (char)x;
                    b[at] = (char)y;
                    n++;
                    if (ascii_case_eq(a, b, len) != (ascii_casecmp_n(a, len, b, len) == 0))
                        wrong++;
                }
    is_int(wrong, 0, "ascii_case_eq agrees with ascii_casecmp_n on every byte pair");
    ok(n > 1000000, "ascii_case_eq: over a million cases");
    ok(ascii_case_eq("Content-Length", "content-length", 14), "ascii_case_eq folds letters");
    ok(!ascii_case_eq("content_length", "content-length", 14), "ascii_case_eq: _ is not -");
    ok(!ascii_case_eq("[", "{", 1) && !ascii_case_eq("@", "`", 1),
       "ascii_case_eq: only letters fold (not [ { @ `)");
    ok(!ascii_case_eq("\xc1", "\xe1", 1), "ascii_case_eq: bytes over 0x7f never fold");
    ok(ascii_case_eq("", "x", 0), "ascii_case_eq: zero bytes are equal");
}

/* u64_decimal agrees with printf at every length, 0 and UINT64_MAX included. */
static void test_decimal(void)
{
    char got[21], want[24];
    int wrong = 0;
    uint64_t v = 0;

    for (int i = 0; i < 200; i++) {
        size_t n = u64_decimal(v, got);
        got[n] = '\0';
        snprintf(want, sizeof(want), "%llu", (unsigned long long)v);
        if (strcmp(got, want) != 0 && wrong++ < 3)
            tap_diag("u64_decimal(%s) gave %s", want, got);
        v = v * 3 + (uint64_t)i; /* wraps: every length from 1 to 20 digits */
    }
    is_int(wrong, 0, "u64_decimal agrees with printf over 200 values of every length");
    got[u64_decimal(UINT64_MAX, got)] = '\0';
    is_str(got, "18446744073709551615", "u64_decimal of UINT64_MAX is 20 digits");
    got[u64_decimal(0, got)] = '\0';
    is_str(got, "0", "u64_decimal of 0");
}

/* The byte-wise order ascii_casecmp_n had before it compared whole words first. */
static int casecmp_bytes(const char *a, size_t alen, const char *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    for (size_t i = 0; i < n; i++) {
        int ca = (unsigned char)a[i], cb = (unsigned char)b[i];
        ca += (ca >= 'A' && ca <= 'Z') ? 32 : 0;
        cb += (cb >= 'A' && cb <= 'Z') ? 32 : 0;
        if (ca != cb)
            return ca - cb;
    }
    return alen < blen ? -1 : alen > blen;
}

static int sign(int v)
{
    return (v > 0) - (v < 0);
}

/* ascii_casecmp_n skips words that fold equal: the order it gives must be
 * the byte-wise one for a difference in any word, at any byte, in any length. */
static void test_casecmp_words(void)
{
    static const char vals[] = {'a', 'A', 'b',    'Z',    '[',    '`',
                                '-', '_', '\x80', '\xe1', '\xc1', '0'};
    char a[20], b[20];
    long wrong = 0, n = 0;

    for (size_t la = 0; la <= sizeof(a); la++)
        for (size_t lb = la > 2 ? la - 2 : 0; lb <= la + 2 && lb <= sizeof(b); lb++)
            for (size_t at = 0; at < (la > lb ? la : lb); at++)
                for (size_t x = 0; x < sizeof(vals); x++)
                    for (size_t y = 0; y < sizeof(vals); y++) {
                        memset(a, 'q', sizeof(a));
                        memset(b, 'Q', sizeof(b));
                        a[at] = vals[x];
                        b[at] = vals[y];
                        n++;
                        if (sign(ascii_casecmp_n(a, la, b, lb)) !=
                            sign(casecmp_bytes(a, la, b, lb)))
                            wrong++;
                    }
    is_int(wrong, 0, "ascii_casecmp_n orders as the byte-wise comparison at every length and byte");
    ok(n > 50000, "ascii_casecmp_n: over 50,000 cases");
    ok(ascii_casecmp_n("X-Sfn-Execution", 15, "x-sfn-executioN", 15) == 0 &&
           ascii_casecmp_n("x-sfn-execution-a", 17, "X-SFN-EXECUTION-B", 17) < 0 &&
           ascii_casecmp_n("Authorization", 13, "authorization2", 14) < 0,
       "ascii_casecmp_n: equal across words, a difference in the third word, a longer name");
}

/* hex_encode's pair table holds the right two digits for every byte value. */
static void test_hex_encode(void)
{
    unsigned char all[256];
    char got[513], want[513];

    for (int i = 0; i < 256; i++) {
        all[i] = (unsigned char)i;
        snprintf(want + 2 * i, 3, "%02x", i);
    }
    hex_encode(all, sizeof(all), got);
    is_str(got, want,
           "hex_encode of every byte value is two lowercase hex digits, as printf gives");
    hex_encode(all, 0, got);
    is_str(got, "", "hex_encode of no bytes is the empty string");
}

/* Issue 13: the one "did you mean" and warnings beside errors. */
static void test_suggest_and_warnings(void)
{
    static const char *const keys[] = {"path_prefix", "host", "issuer", "issuers", NULL};
    struct suggestion sg = SUGGESTION_INIT;
    struct diags d = DIAGS_INIT, w = DIAGS_INIT;
    char *buf = NULL, long_name[SUGGEST_MAX_NAME + 2];
    size_t len = 0;
    FILE *f;

    for (const char *const *k = keys; *k; k++)
        suggestion_offer(&sg, "path_prefx", *k);
    is_str(sg.best, "path_prefix", "one deletion away: suggested");
    sg = (struct suggestion)SUGGESTION_INIT;
    for (const char *const *k = keys; *k; k++)
        suggestion_offer(&sg, "isuers", *k);
    is_str(sg.best, "issuers", "the closest of two candidates");
    sg = (struct suggestion)SUGGESTION_INIT;
    for (const char *const *k = keys; *k; k++)
        suggestion_offer(&sg, "colour", *k);
    ok(sg.best == NULL, "three edits away: no suggestion");
    memset(long_name, 'a', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    sg = (struct suggestion)SUGGESTION_INIT;
    suggestion_offer(&sg, long_name, long_name);
    ok(sg.best == NULL, "names over SUGGEST_MAX_NAME are never compared");

    diags_warn(&d, "p.json", 1, 2, "dropped");
    is_int(d.n, 0, "a warning without a warnings list is dropped, never an error");
    d.warnings = &w;
    diags_warn(&d, "p.json", 3, 4, "looks like a %s", "regex");
    is_int(d.n, 0, "a warning does not count as an error");
    is_int(w.n, 1, "it goes to the warnings list");
    f = open_memstream(&buf, &len);
    diags_print(&w, f);
    fclose(f);
    is_str(buf, "p.json:3:4: warning: looks like a regex\n", "printed as a warning");
    free(buf);
    diags_free(&w);
    diags_free(&d);
}

int main(void)
{
    test_case_eq();
    test_decimal();
    test_sha256();
    test_sha256_reuse();
    test_escape();
    test_casecmp_words();
    test_hex_encode();
    test_reason();
    test_diags();
    test_read_capped();
    test_suggest_and_warnings();
    return tap_done();
}
