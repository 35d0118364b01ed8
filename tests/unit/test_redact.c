/* Unit tests of redact.c: credential-shaped values, and the query redaction the
 * audit record applies (its output length bound is exercised under ASan). The
 * one-pass credential scan is checked against the straightforward one it
 * replaced (ref_is_credential below) over generated values. */
#include <stdlib.h>
#include <string.h>

#include "redact.h"
#include "tap.h"
#include "util.h"

static bool cred(const char *v)
{
    return redact_is_credential(v, strlen(v));
}

static void test_credentials(void)
{
    static const char *const yes[] = {
        "Bearer abc",
        "  basic dTpw",
        "AWS4-HMAC-SHA256 Credential=x",
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.sig",
        "ua/1 eyJhbGciOiJFUzI1NiJ9.x",
        "ya29.a0AfH6SMBx3kYq-example_token",
        "ghp_A1b2C3d4E5A1b2C3d4E5A1b2C3d4E5",
        "gho_Z9y8X7w6V5Z9y8X7w6V5Z9y8X7w6V5",
        "ghs_Z9y8X7w6V5Z9y8X7w6V5Z9y8X7w6V5",
        "github_pat_11ABCDEFG0x_Y1x_Y1x_Y1x_Y1x_Y1",
        "AKIAIOSFODNN7EXAMPLE",
        "ASIAY34FZKBOKMUTVV7A",
        "key=AKIAIOSFODNN7EXAMPLE;",
        /* at each minimum exactly */
        "AKIAABCDEFGHIJKLMNOP",
        "ya29.ABCDEFGHIJKLMNOPQRST",
        "eyJ1234567.",
        "x-eyJabcdefg.h",
        "\tBEARER x",
        "NEGOTIATE YII",
        "github_pat_ABCDEFGHIJKLMNOPQRSTUVWXYZ0123",
        "x:ghr_ABCDEFGHIJKLMNOPQRSTUVWXYZ0123",
    };
    static const char *const no[] = {
        "",
        "curl/8.5.0",
        "ghp_x",
        "ghp_short",
        "ya29.short",
        "AKIAIOSFODNN7EXAMPL",
        "xAKIAIOSFODNN7EXAMPLE",
        "akiaiosfodnn7example",
        "eyJhbGci",
        "Bearerx",
        "Mozilla/5.0 (X11; Linux x86_64)",
        "notghp_A1b2C3d4E5A1b2C3d4E5A1b2C3d4E5",
        /* one short of each minimum, or cut at the end */
        "AKIAABCDEFGHIJKLMNO",
        "ya29.ABCDEFGHIJKLMNOPQRS",
        "eyJ123456.",
        "eyJ1234567",
        "Bearer",
        "github_pat_ABCDEFGHIJKLMNOPQRSTUVWXYZ012",
        "ghr_ABCDEFGHIJKLMNOPQRSTUVWXYZ012",
        "0AKIAABCDEFGHIJKLMNOP",
        "AKIAabcdefghijklmnop",
        "x bearer abc",
    };
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        ok(cred(yes[i]), "a credential: \"%s\"", yes[i]);
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        ok(!cred(no[i]), "not a credential: \"%s\"", no[i]);
}

/* The scan before issue 17: each scheme, then "eyJ" at every offset, then
 * every token prefix at every word start. The verdicts to keep. */
static bool ref_alnum(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool ref_b64url(unsigned char c)
{
    return ref_alnum(c) || c == '-' || c == '_';
}

static bool ref_body(int kind, unsigned char c)
{
    switch (kind) {
    case 0:
        return ref_b64url(c) || c == '.';
    case 1:
        return ref_alnum(c);
    case 2:
        return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    default:
        return ref_alnum(c) || c == '_';
    }
}

static bool ref_is_credential(const char *v, size_t n)
{
    static const char *const schemes[] = {"bearer ", "basic ", "digest ", "negotiate ",
                                          "aws4-hmac-sha256 "};
    static const struct {
        const char *prefix;
        int body;
        size_t min;
    } shapes[] = {
        {"ya29.", 0, 20}, {"ghp_", 1, 30},        {"gho_", 1, 30}, {"ghu_", 1, 30}, {"ghs_", 1, 30},
        {"ghr_", 1, 30},  {"github_pat_", 3, 30}, {"AKIA", 2, 16}, {"ASIA", 2, 16},
    };
    while (n && (*v == ' ' || *v == '\t')) {
        v++;
        n--;
    }
    for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
        size_t l = strlen(schemes[i]);
        if (n >= l && !ascii_casecmp_n(v, l, schemes[i], l))
            return true;
    }
    for (size_t i = 0; i + 3 <= n; i++) {
        if (memcmp(v + i, "eyJ", 3))
            continue;
        size_t j = i + 3;
        while (j < n && ref_b64url((unsigned char)v[j]))
            j++;
        if (j - i >= 10 && j < n && v[j] == '.')
            return true;
    }
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && ref_alnum((unsigned char)v[i - 1]))
            continue;
        for (size_t k = 0; k < sizeof(shapes) / sizeof(shapes[0]); k++) {
            size_t pl = strlen(shapes[k].prefix), j;
            if (n - i < pl || memcmp(v + i, shapes[k].prefix, pl) != 0)
                continue;
            for (j = i + pl; j < n && ref_body(shapes[k].body, (unsigned char)v[j]); j++)
                ;
            if (j - i - pl >= shapes[k].min)
                return true;
        }
    }
    return false;
}

/* Values built from fragments near every boundary (prefixes, scheme names in
 * both cases, runs one short of and at each minimum, separators that do and do
 * not start a word), compared with the reference scan. */
static void test_credentials_differential(void)
{
    static const char *const frag[] = {
        "Bearer ",
        "bearer",
        "BASIC ",
        "Digest ",
        "negotiate ",
        "aws4-hmac-sha256 ",
        "AWS4-HMAC-SHA256",
        " ",
        "\t",
        "x",
        "0",
        "-",
        "_",
        ".",
        ":",
        "/",
        "=",
        ";",
        "%",
        "eyJ",
        "ey",
        "eyj",
        "e",
        "ya29.",
        "ya29",
        "ghp_",
        "gho_",
        "ghu_",
        "ghs_",
        "ghr_",
        "ghx_",
        "github_pat_",
        "github_",
        "AKIA",
        "ASIA",
        "AKI",
        "akia",
        "ABCDEFGHIJKLMNOP",
        "ABCDEFGHIJKLMNO",
        "abcdefghij",
        "A1b2C3d4E5A1b2C3d4E5A1b2C3d4E5",
        "A1b2C3d4E5A1b2C3d4E5A1b2C3d4E",
        "hbGciOi",
        "\xc3\xa9",
    };
    const size_t nf = sizeof(frag) / sizeof(frag[0]);
    unsigned long long seed = 0x9e3779b97f4a7c15ull;
    size_t checked = 0, yes = 0, bad = 0;
    char v[512];

    for (int round = 0; round < 200000; round++) {
        size_t n = 0, parts;
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        parts = (size_t)(seed >> 59) % 7 + 1;
        for (size_t p = 0; p < parts; p++) {
            size_t f, l;
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            f = (size_t)(seed >> 33) % nf;
            l = strlen(frag[f]);
            if (n + l > sizeof(v))
                break;
            memcpy(v + n, frag[f], l);
            n += l;
        }
        /* a cut anywhere too: the end of the value is a boundary */
        if ((seed >> 20) % 3 == 0 && n)
            n -= (size_t)(seed >> 40) % n;
        bool want = ref_is_credential(v, n), got = redact_is_credential(v, n);
        checked++;
        yes += want;
        if (want != got && bad++ < 5)
            ok(0, "differential: \"%.*s\" want %d got %d", (int)n, v, want, got);
    }
    ok(bad == 0 && yes > checked / 20 && yes < checked - checked / 20,
       "one-pass scan agrees with the reference on %zu generated values (%zu credentials), %zu differ",
       checked, yes, bad);
}

static void q(const char *in, const char *want)
{
    size_t len = 0;
    char *out = redact_query(in, strlen(in), &len);
    ok(strcmp(out, want) == 0 && len == strlen(want), "query \"%s\" -> \"%s\" (got \"%s\")", in,
       want, out);
    free(out);
}

static void test_query(void)
{
    q("", "");
    q("a=1&b=2", "a=1&b=2");
    q("access_token=x&n=1", "access_token=[redacted]&n=1");
    q("api%5Fkey=x", "api%5Fkey=[redacted]");
    q("X-Amz-Signature=ab&x=1", "X-Amz-Signature=[redacted]&x=1");
    q("q=ya29.a0AfH6SMBx3kYq-example_token", "q=[redacted]");
    q("q=Bearer%20abc", "q=[redacted]");
    q("q=ghp_A1b2C3d4E5A1b2C3d4E5A1b2C3d4E5&p=ghp_x", "q=[redacted]&p=ghp_x");
    q("k=AKIAIOSFODNN7EXAMPLE", "k=[redacted]");
    q("a&&b", "a&b");
    q("flag&password", "flag&password=[redacted]");
    /* "pwd&pwd&...": every parameter grows by "=[redacted]", the output bound's worst case */
    {
        static char in[4000], want[16000];
        size_t n = 0, o = 0;
        for (int i = 0; i < 999; i++) {
            if (n) {
                in[n++] = '&';
                want[o++] = '&';
            }
            memcpy(in + n, "pwd", 3);
            n += 3;
            memcpy(want + o, "pwd=[redacted]", 14);
            o += 14;
        }
        q(in, want);
    }
}

int main(void)
{
    test_credentials();
    test_credentials_differential();
    test_query();
    return tap_done();
}
