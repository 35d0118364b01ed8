/* Unit tests of redact.c: credential-shaped values, and the query redaction the
 * audit record applies (its output length bound is exercised under ASan). */
#include <stdlib.h>
#include <string.h>

#include "redact.h"
#include "tap.h"

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
    };
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        ok(cred(yes[i]), "a credential: \"%s\"", yes[i]);
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        ok(!cred(no[i]), "not a credential: \"%s\"", no[i]);
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
    test_query();
    return tap_done();
}
