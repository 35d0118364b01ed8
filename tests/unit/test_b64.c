/* Unit tests of b64.c: strict base64url, one accepted spelling per byte string. */
#include <stdlib.h>
#include <string.h>

#include "b64.h"
#include "tap.h"

/* Decodes a NUL-terminated input; returns the decoded length or -1. */
static long dec(const char *in, unsigned char *out)
{
    size_t n = 0;
    if (b64url_decode(in, strlen(in), out, &n) != 0)
        return -1;
    return (long)n;
}

static void test_rfc4648_vectors(void)
{
    /* RFC 4648 section 10, unpadded */
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const enc[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
    unsigned char out[16];
    char e[16];

    for (size_t i = 0; i < 7; i++) {
        long n = dec(enc[i], out);
        ok(n == (long)strlen(plain[i]) && memcmp(out, plain[i], (size_t)n) == 0,
           "decodes RFC 4648 vector \"%s\"", enc[i]);
        b64url_encode((const unsigned char *)plain[i], strlen(plain[i]), e);
        is_str(e, enc[i], "encodes RFC 4648 vector \"%s\"", plain[i]);
        is_int(b64url_encoded_len(strlen(plain[i])), strlen(enc[i]), "encoded length of %zu bytes",
               strlen(plain[i]));
    }
}

static void test_url_alphabet(void)
{
    unsigned char out[8];
    const unsigned char bytes[] = {0xfb, 0xff, 0xbf};
    char e[8];

    is_int(dec("-_-_", out), 3, "'-' and '_' are alphabet characters");
    ok(out[0] == 0xfb && out[1] == 0xff && out[2] == 0xbf, "'-' is 62 and '_' is 63");
    b64url_encode(bytes, 3, e);
    is_str(e, "-_-_", "encoder uses the URL-safe alphabet");
    is_int(dec("+/+/", out), -1, "'+' and '/' (standard alphabet) are refused");
}

static void test_strictness(void)
{
    unsigned char out[64];

    is_int(dec("Zg==", out), -1, "padding '==' is refused");
    is_int(dec("Zm8=", out), -1, "padding '=' is refused");
    is_int(dec("Zg=", out), -1, "partial padding is refused");
    is_int(dec("Z", out), -1, "length 1 mod 4 is refused");
    is_int(dec("Zm9vY", out), -1, "length 5 (1 mod 4) is refused");
    is_int(dec("Zm 9v", out), -1, "a space inside is refused");
    is_int(dec("Zm9v\n", out), -1, "a trailing newline is refused");
    is_int(dec("Zm9v.", out), -1, "a dot is refused");
    is_int(dec("Zh", out), -1, "non-zero trailing bits in a 2-char group are refused (Zh vs Zg)");
    is_int(dec("Zm9", out), -1,
           "non-zero trailing bits in a 3-char group are refused (Zm9 vs Zm8)");
    is_int(dec("Zg", out), 1, "canonical Zg decodes");
    {
        const char junk[] = {'Z', 'm', '9', 'v', '\0', 'Z', 'g'};
        size_t n;
        is_int(b64url_decode(junk, sizeof(junk), out, &n), -1, "an embedded NUL is refused");
    }
    for (int c = 0; c < 256; c++) {
        char in[5] = {'A', 'A', 'A', (char)c, 0};
        int alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_';
        size_t n;
        if ((b64url_decode(in, 4, out, &n) == 0) != alpha) {
            ok(0, "byte 0x%02x accepted iff in the alphabet", c);
            return;
        }
    }
    ok(1, "every one of the 256 byte values is accepted iff it is in the alphabet");
}

static void test_round_trip(void)
{
    unsigned char in[300], out[300];
    char e[512];
    int bad = 0;

    for (size_t i = 0; i < sizeof(in); i++)
        in[i] = (unsigned char)(i * 131 + 7);
    for (size_t len = 0; len <= sizeof(in); len++) {
        size_t el = b64url_encode(in, len, e), n = 0;
        if (el != b64url_encoded_len(len) || b64url_decoded_max(el) < len ||
            b64url_decode(e, el, out, &n) != 0 || n != len || memcmp(in, out, len) != 0)
            bad++;
    }
    is_int(bad, 0, "encode/decode round-trips every length 0..300");
}

int main(void)
{
    test_rfc4648_vectors();
    test_url_alphabet();
    test_strictness();
    test_round_trip();
    return tap_done();
}
