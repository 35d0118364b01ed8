/*
 * The attack table: hostile tokens against authn_verify (and so jws.c), each
 * with the exact reason it must fail with. Keys are generated and tokens
 * signed here with OpenSSL at run time (exp relative to now), so nothing goes
 * stale. Control tokens (well-formed, must pass) sit beside the attacks so a
 * failure is known to come from the mutation, not from the setup.
 *
 * Issuers: A (RS256 PS256 ES256 ES384 EdDSA; keys a-rsa without alg, a-rs256
 * pinned RS256, a-ps pinned PS256, a-ec256, a-ec384, a-ed), B (RS256; b-rsa),
 * C (Cognito shape: client_id audience, token_use access, no kid allowed),
 * D (keys never loaded). Hostile or broken JWK Sets are checked first
 * (keyset_cases): what jws_keyset_parse skips, refuses and why.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "authn.h"
#include "b64.h"
#include "jws.h"
#include "jwstest.h"
#include "util.h"
#include "tap.h"

#define ISS_A "https://a.example"
#define ISS_B "https://b.example"
#define ISS_C "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_T3st"
#define ISS_D "https://d.example"
#define AUD "https://gw.example"

struct tcase {
    const char *name;
    char *token;
    enum reason want;
    bool control;
};

static struct tcase cases[160];
static size_t n_cases;
static int64_t now;

static void add(const char *name, char *token, enum reason want)
{
    if (n_cases == sizeof(cases) / sizeof(cases[0]))
        abort();
    cases[n_cases++] = (struct tcase){name, token, want, false};
}

static void control(const char *name, char *token)
{
    add(name, token, REASON_ALLOWED);
    cases[n_cases - 1].control = true;
}

static char *hdr(const char *alg, const char *kid)
{
    return xasprintf("{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":\"%s\"}", alg, kid);
}

/* Issuer A's baseline claims, with `extra` members appended (",\"k\":v" or ""). */
static char *claims_a(const char *extra)
{
    return xasprintf("{\"iss\":\"" ISS_A "\",\"sub\":\"arn:aws:iam::123456789012:role/sfn\","
                     "\"aud\":\"" AUD "\",\"exp\":%lld,\"iat\":%lld,\"jti\":\"j-1\","
                     "\"https://sts.amazonaws.com/\":{\"aws_account\":\"123456789012\"}%s}",
                     (long long)now + 300, (long long)now, extra);
}

/* Claims from a literal format with one %lld for exp (= now + 300). */
#define claims_fmt(fmt) xasprintf(fmt, (long long)now + 300)

/* Replaces part `which` (0 header, 1 payload, 2 signature) of a token by `with`. */
static char *replace_part(const char *tok, int which, const char *with)
{
    const char *d1 = strchr(tok, '.'), *d2 = strchr(d1 + 1, '.');
    if (which == 0)
        return xasprintf("%s%s", with, d1);
    if (which == 1)
        return xasprintf("%.*s.%s%s", (int)(d1 - tok), tok, with, d2);
    return xasprintf("%.*s.%s", (int)(d2 - tok), tok, with);
}

/* Inserts `ins` into part `which` at its position `at` (from the part's start). */
static char *insert_in_part(const char *tok, int which, size_t at, const char *ins)
{
    const char *start = tok;
    for (int i = 0; i < which; i++)
        start = strchr(start, '.') + 1;
    return xasprintf("%.*s%s%s", (int)(start - tok + (ptrdiff_t)at), tok, ins, start + at);
}

static char *nested(int depth)
{
    size_t n = (size_t)depth;
    char *s = xmalloc(2 * n + 1);
    memset(s, '[', n);
    memset(s + n, ']', n);
    s[2 * n] = '\0';
    return s;
}

static EVP_PKEY *k_rsa, *k_rs256, *k_ps, *k_ec256, *k_ec384, *k_ed, *k_b, *k_evil, *k_ec_evil;
static json_t *jwk_rsa;

static void build_cases(void)
{
    char *h, *p, *t, *x, *y;
    char *base_h = hdr("RS256", "a-rsa"), *base_p = claims_a("");
    char *good = tk_sign(k_rsa, "RS256", base_h, base_p);

    /* ---- controls ---- */
    control("control: RS256 with a-rsa (JWK without alg)", xstrdup(good));
    h = hdr("PS256", "a-ps");
    control("control: PS256 with a-ps", tk_sign(k_ps, "PS256", h, base_p));
    free(h);
    h = hdr("PS256", "a-rsa");
    control("control: PS256 with a-rsa (RSA JWK without alg allows PS*)",
            tk_sign(k_rsa, "PS256", h, base_p));
    free(h);
    h = hdr("ES256", "a-ec256");
    control("control: ES256 with a-ec256", tk_sign(k_ec256, "ES256", h, base_p));
    free(h);
    h = hdr("ES384", "a-ec384");
    control("control: ES384 with a-ec384", tk_sign(k_ec384, "ES384", h, base_p));
    free(h);
    h = hdr("EdDSA", "a-ed");
    control("control: EdDSA with a-ed", tk_sign(k_ed, "EdDSA", h, base_p));
    free(h);
    h = xstrdup("{\"alg\":\"RS256\",\"typ\":\"application/AT+JWT\",\"kid\":\"a-rsa\"}");
    control("control: typ application/AT+JWT matches at+jwt", tk_sign(k_rsa, "RS256", h, base_p));
    free(h);
    h = xstrdup("{\"alg\":\"RS256\",\"kid\":\"a-rsa\"}");
    control("control: absent typ is accepted", tk_sign(k_rsa, "RS256", h, base_p));
    free(h);
    p = claims_fmt("{\"iss\":\"" ISS_A "\",\"sub\":\"s\",\"aud\":[\"x\",\"" AUD
                   "\"],\"exp\":%lld}");
    control("control: aud array containing the audience", tk_sign(k_rsa, "RS256", base_h, p));
    free(p);
    p = xasprintf("{\"iss\":\"" ISS_A "\",\"aud\":\"" AUD "\",\"exp\":%lld}", (long long)now - 30);
    control("control: exp 30 s ago is within the 60 s leeway", tk_sign(k_rsa, "RS256", base_h, p));
    free(p);
    p = claims_fmt("{\"iss\":\"" ISS_C "\",\"client_id\":\"client123\",\"token_use\":\"access\","
                   "\"scope\":\"billing/run\",\"exp\":%lld}");
    control("control: Cognito access token without kid (issuer opts in), client_id audience",
            tk_sign(k_b, "RS256", "{\"alg\":\"RS256\"}", p));
    free(p);

    /* ---- alg none and HMAC confusion ---- */
    add("alg none, empty signature", tk_join("{\"alg\":\"none\",\"typ\":\"JWT\"}", base_p, ""),
        REASON_ALG_NONE);
    add("alg None", tk_join("{\"alg\":\"None\"}", base_p, ""), REASON_ALG_NONE);
    add("alg NONE", tk_join("{\"alg\":\"NONE\",\"kid\":\"a-rsa\"}", base_p, ""), REASON_ALG_NONE);
    x = strrchr(good, '.') + 1;
    add("alg nOnE carrying a valid RS256 signature",
        tk_join("{\"alg\":\"nOnE\",\"kid\":\"a-rsa\"}", base_p, x), REASON_ALG_NONE);
    x = tk_pem_public(k_rsa);
    h = hdr("HS256", "a-rsa");
    add("HS256 signed with the RSA public key PEM as secret",
        tk_sign_hmac("HS256", x, strlen(x), h, base_p), REASON_ALG_NOT_ALLOWED);
    free(x);
    x = json_dumps(jwk_rsa, JSON_COMPACT);
    add("HS256 signed with the RSA JWK JSON as secret",
        tk_sign_hmac("HS256", x, strlen(x), h, base_p), REASON_ALG_NOT_ALLOWED);
    free(x);
    add("HS256 with an empty secret over an RSA JWK without alg (CVE-2026-44699 shape)",
        tk_sign_hmac("HS256", "", 0, h, base_p), REASON_ALG_NOT_ALLOWED);
    x = xstrdup(json_string_value(json_object_get(jwk_rsa, "n")));
    add("HS256 with the JWK's n (public key material) as secret",
        tk_sign_hmac("HS256", x, strlen(x), h, base_p), REASON_ALG_NOT_ALLOWED);
    free(x);
    free(h);
    h = hdr("HS512", "a-rsa");
    add("HS512 with the PEM as secret", tk_sign_hmac("HS512", "k", 1, h, base_p),
        REASON_ALG_NOT_ALLOWED);
    free(h);
    h = hdr("rs256", "a-rsa");
    add("alg rs256 in lower case (names are case-sensitive)", tk_sign(k_rsa, "RS256", h, base_p),
        REASON_ALG_NOT_ALLOWED);
    free(h);
    add("alg missing", tk_sign(k_rsa, "RS256", "{\"typ\":\"JWT\",\"kid\":\"a-rsa\"}", base_p),
        REASON_TOKEN_MALFORMED);
    add("alg is a number", tk_sign(k_rsa, "RS256", "{\"alg\":256,\"kid\":\"a-rsa\"}", base_p),
        REASON_TOKEN_MALFORMED);
    h = hdr("ES512", "a-ec256");
    add("ES512: not on issuer A's algorithm list", tk_sign(k_ec256, "ES256", h, base_p),
        REASON_ALG_NOT_ALLOWED);
    free(h);

    /* ---- key selection ---- */
    h = hdr("RS256", "b-rsa");
    add("kid of another issuer (B's key, iss A)", tk_sign(k_b, "RS256", h, base_p),
        REASON_UNKNOWN_KID);
    free(h);
    h = hdr("RS256", "../../../../etc/passwd");
    add("kid with a path traversal", tk_sign(k_rsa, "RS256", h, base_p), REASON_UNKNOWN_KID);
    free(h);
    h = hdr("RS256", "a-rsa' OR '1'='1'; --");
    add("kid with SQL characters", tk_sign(k_rsa, "RS256", h, base_p), REASON_UNKNOWN_KID);
    free(h);
    h = hdr("RS256", "a-rsa\\u0000");
    add("kid with an escaped NUL (jansson refuses NUL in strings)",
        tk_sign(k_rsa, "RS256", h, base_p), REASON_TOKEN_BAD_JSON);
    free(h);
    add("kid is a number", tk_sign(k_rsa, "RS256", "{\"alg\":\"RS256\",\"kid\":1}", base_p),
        REASON_BAD_CLAIM_TYPE);
    add("no kid, issuer A does not opt in", tk_sign(k_rsa, "RS256", "{\"alg\":\"RS256\"}", base_p),
        REASON_KID_MISSING);
    h = hdr("ES256", "a-ec384");
    add("ES256 header over the P-384 key a-ec384", tk_sign(k_ec384, "ES256", h, base_p),
        REASON_ALG_KEY_MISMATCH);
    free(h);
    h = hdr("RS256", "a-ec256");
    add("RS256 header with the kid of an EC key", tk_sign(k_rsa, "RS256", h, base_p),
        REASON_ALG_KEY_MISMATCH);
    free(h);
    h = hdr("PS256", "a-rs256");
    add("PS256 over a JWK pinned to RS256 by its alg", tk_sign(k_rs256, "PS256", h, base_p),
        REASON_ALG_KEY_MISMATCH);
    free(h);
    h = hdr("EdDSA", "a-rsa");
    add("EdDSA header with an RSA kid", tk_sign(k_ed, "EdDSA", h, base_p), REASON_ALG_KEY_MISMATCH);
    free(h);

    /* ---- encoding: padding and junk in each part ---- */
    t = insert_in_part(good, 0, strchr(good, '.') - good, "=");
    add("padding '=' after the header", t, REASON_TOKEN_BAD_ENCODING);
    x = strchr(good, '.') + 1;
    t = insert_in_part(good, 1, (size_t)(strchr(x, '.') - x), "==");
    add("padding '==' after the payload", t, REASON_TOKEN_BAD_ENCODING);
    add("padding '==' after the signature (libjwt accepts it)", xasprintf("%s==", good),
        REASON_TOKEN_BAD_ENCODING);
    add("junk '!' inside the header", insert_in_part(good, 0, 5, "!"), REASON_TOKEN_BAD_ENCODING);
    add("a space inside the payload", insert_in_part(good, 1, 7, " "), REASON_TOKEN_BAD_ENCODING);
    add("junk '*' inside the signature", insert_in_part(good, 2, 9, "*"),
        REASON_TOKEN_BAD_ENCODING);
    add("standard-alphabet '+/' inside the signature", insert_in_part(good, 2, 12, "+/"),
        REASON_TOKEN_BAD_ENCODING);
    {
        /* 256 signature bytes end in a 2-character group whose last 4 bits are
         * unused: set one of them to spell the same bytes differently. */
        char *m = xstrdup(good);
        char *last = m + strlen(m) - 1;
        static const char alpha[] =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        int v = (int)(strchr(alpha, *last) - alpha);
        *last = alpha[v | 1];
        add("signature with non-canonical trailing bits (same bytes, other spelling)", m,
            REASON_TOKEN_BAD_ENCODING);
    }
    add("trailing newline", xasprintf("%s\n", good), REASON_TOKEN_BAD_ENCODING);
    add("leading space", xasprintf(" %s", good), REASON_TOKEN_BAD_ENCODING);
    add("percent-encoded dot inside the payload", insert_in_part(good, 1, 4, "%2E"),
        REASON_TOKEN_BAD_ENCODING);

    /* ---- structure ---- */
    add("empty token", xstrdup(""), REASON_TOKEN_MALFORMED);
    add("two parts", xasprintf("%.*s", (int)(strrchr(good, '.') - good), good),
        REASON_TOKEN_MALFORMED);
    add("five parts (JWE shape)", xasprintf("%s.e30.e30", good), REASON_TOKEN_MALFORMED);
    add("empty header part", replace_part(good, 0, ""), REASON_TOKEN_MALFORMED);
    add("header is a JSON array", tk_sign(k_rsa, "RS256", "[\"RS256\"]", base_p),
        REASON_TOKEN_BAD_JSON);
    add("payload is a JSON string", tk_sign(k_rsa, "RS256", base_h, "\"sub\""),
        REASON_TOKEN_BAD_JSON);
    add("header is not UTF-8",
        tk_sign(k_rsa, "RS256", "{\"alg\":\"RS256\",\"kid\":\"\xff\"}", base_p),
        REASON_TOKEN_BAD_JSON);
    add("duplicate alg in the header (RS256 then none)",
        tk_sign(k_rsa, "RS256", "{\"alg\":\"RS256\",\"kid\":\"a-rsa\",\"alg\":\"none\"}", base_p),
        REASON_TOKEN_BAD_JSON);
    p = xasprintf("{\"iss\":\"" ISS_A "\",\"sub\":\"admin\",\"aud\":\"" AUD "\",\"exp\":%lld,"
                  "\"sub\":\"arn:aws:iam::123456789012:role/sfn\"}",
                  (long long)now + 300);
    add("duplicate sub in the payload", tk_sign(k_rsa, "RS256", base_h, p), REASON_TOKEN_BAD_JSON);
    free(p);
    x = nested(200);
    p = claims_a(",\"deep\":");
    p[strlen(p) - 1] = '\0';
    y = xasprintf("%s%s}", p, x);
    add("payload nested 200 deep", tk_sign(k_rsa, "RS256", base_h, y), REASON_TOKEN_BAD_JSON);
    free(y);
    free(p);
    y = xasprintf("{\"alg\":\"RS256\",\"kid\":\"a-rsa\",\"x\":%s}", x);
    add("header nested 200 deep", tk_sign(k_rsa, "RS256", y, base_p), REASON_TOKEN_BAD_JSON);
    free(y);
    free(x);
    {
        size_t big = 1u << 20;
        char *m = xmalloc(big + 1);
        memset(m, 'A', big);
        memcpy(m, good, strlen(good));
        m[big] = '\0';
        add("a 1 MB token", m, REASON_TOKEN_TOO_LARGE);
        m = xmalloc(16385 + 1);
        memset(m, 'A', 16385);
        memcpy(m, good, strlen(good));
        m[16385] = '\0';
        add("16385 bytes: one over the 16 KiB cap", m, REASON_TOKEN_TOO_LARGE);
    }

    /* ---- signatures ---- */
    add("empty signature", replace_part(good, 2, ""), REASON_BAD_SIGNATURE);
    add("signature truncated to 252 bytes (6 characters cut)",
        xasprintf("%.*s", (int)strlen(good) - 6, good), REASON_BAD_SIGNATURE);
    h = hdr("RS256", "a-rsa");
    add("signed by another RSA key under a-rsa's kid", tk_sign(k_evil, "RS256", h, base_p),
        REASON_BAD_SIGNATURE);
    free(h);
    {
        char *other = claims_a(",\"admin\":true");
        char *forged = tk_sign(k_evil, "RS256", base_h, other);
        char *d1 = strchr(forged, '.') + 1, *d2 = strchr(d1, '.');
        char *pl = xstrndup(d1, (size_t)(d2 - d1));
        add("payload swapped after signing", replace_part(good, 1, pl), REASON_BAD_SIGNATURE);
        free(pl);
        free(forged);
        free(other);
    }
    h = hdr("ES256", "a-ec256");
    add("DER ECDSA signature instead of raw r||s", tk_sign_der(k_ec256, "ES256", h, base_p),
        REASON_BAD_SIGNATURE);
    add("ES256 by an attacker's P-256 key under a-ec256", tk_sign(k_ec_evil, "ES256", h, base_p),
        REASON_BAD_SIGNATURE);
    free(h);
    {
        /* r||s with s replaced by n - s is the classic malleated twin; here the
         * raw signature is simply bit-flipped: must fail, never crash. */
        char *m = xstrdup(good);
        char *s = strrchr(m, '.') + 1;
        s[10] = s[10] == 'A' ? 'B' : 'A';
        add("one signature character changed", m, REASON_BAD_SIGNATURE);
    }
    x = xmalloc(1500);
    memset(x, 'A', 1499);
    x[1499] = '\0';
    add("signature of 1124 bytes (longer than any key's)", replace_part(good, 2, x),
        REASON_BAD_SIGNATURE);
    free(x);

    /* ---- header extensions and embedded keys ---- */
    add("crit [\"exp\"]",
        tk_sign(k_rsa, "RS256",
                "{\"alg\":\"RS256\",\"kid\":\"a-rsa\",\"crit\":[\"exp\"],\"exp\":1}", base_p),
        REASON_CRIT_UNSUPPORTED);
    add("crit empty array",
        tk_sign(k_rsa, "RS256", "{\"alg\":\"RS256\",\"kid\":\"a-rsa\",\"crit\":[]}", base_p),
        REASON_CRIT_UNSUPPORTED);
    add("b64:false with crit [\"b64\"] (RFC 7797)",
        tk_sign(k_rsa, "RS256",
                "{\"alg\":\"RS256\",\"kid\":\"a-rsa\",\"b64\":false,\"crit\":[\"b64\"]}", base_p),
        REASON_CRIT_UNSUPPORTED);
    add("b64:false without crit",
        tk_sign(k_rsa, "RS256", "{\"alg\":\"RS256\",\"kid\":\"a-rsa\",\"b64\":false}", base_p),
        REASON_CRIT_UNSUPPORTED);
    add("jku pointing at an attacker's JWKS",
        tk_sign(k_evil, "RS256",
                "{\"alg\":\"RS256\",\"kid\":\"a-rsa\",\"jku\":\"https://evil.example/jwks\"}",
                base_p),
        REASON_EMBEDDED_KEY);
    add("x5u pointing at an attacker's certificate",
        tk_sign(k_evil, "RS256",
                "{\"alg\":\"RS256\",\"kid\":\"a-rsa\",\"x5u\":\"https://evil.example/c.pem\"}",
                base_p),
        REASON_EMBEDDED_KEY);
    {
        json_t *ej = tk_jwk(k_evil, "a-rsa", "RS256");
        char *ejs = json_dumps(ej, JSON_COMPACT);
        h = xasprintf("{\"alg\":\"RS256\",\"kid\":\"a-rsa\",\"jwk\":%s}", ejs);
        add("jwk: the attacker's own key embedded, token signed with it",
            tk_sign(k_evil, "RS256", h, base_p), REASON_EMBEDDED_KEY);
        free(h);
        free(ejs);
        json_decref(ej);
    }
    add("x5c embedded certificate chain",
        tk_sign(k_evil, "RS256", "{\"alg\":\"RS256\",\"kid\":\"a-rsa\",\"x5c\":[\"MIIB\"]}",
                base_p),
        REASON_EMBEDDED_KEY);

    /* ---- claims ---- */
    p = claims_fmt("{\"sub\":\"s\",\"aud\":\"" AUD "\",\"exp\":%lld}");
    add("iss missing", tk_sign(k_rsa, "RS256", base_h, p), REASON_ISSUER_MISSING);
    free(p);
    p = claims_fmt("{\"iss\":\"https://evil.example\",\"aud\":\"" AUD "\",\"exp\":%lld}");
    add("iss of an unknown issuer", tk_sign(k_rsa, "RS256", base_h, p), REASON_UNKNOWN_ISSUER);
    free(p);
    p = claims_fmt("{\"iss\":\"" ISS_A "/\",\"aud\":\"" AUD "\",\"exp\":%lld}");
    add("iss with a trailing slash (exact match only)", tk_sign(k_rsa, "RS256", base_h, p),
        REASON_UNKNOWN_ISSUER);
    free(p);
    p = claims_fmt("{\"iss\":\"HTTPS://A.EXAMPLE\",\"aud\":\"" AUD "\",\"exp\":%lld}");
    add("iss in another case", tk_sign(k_rsa, "RS256", base_h, p), REASON_UNKNOWN_ISSUER);
    free(p);
    p = claims_fmt("{\"iss\":[\"" ISS_A "\"],\"aud\":\"" AUD "\",\"exp\":%lld}");
    add("iss is an array", tk_sign(k_rsa, "RS256", base_h, p), REASON_BAD_CLAIM_TYPE);
    free(p);
    p = claims_fmt("{\"iss\":\"" ISS_A "\",\"aud\":\"https://other.example\",\"exp\":%lld}");
    add("aud of another service", tk_sign(k_rsa, "RS256", base_h, p), REASON_AUDIENCE_MISMATCH);
    free(p);
    p = claims_fmt("{\"iss\":\"" ISS_A "\",\"exp\":%lld}");
    add("aud missing", tk_sign(k_rsa, "RS256", base_h, p), REASON_AUDIENCE_MISMATCH);
    free(p);
    p = claims_fmt("{\"iss\":\"" ISS_A "\",\"aud\":[\"x\",\"y\"],\"exp\":%lld}");
    add("aud array without the audience", tk_sign(k_rsa, "RS256", base_h, p),
        REASON_AUDIENCE_MISMATCH);
    free(p);
    p = claims_fmt("{\"iss\":\"" ISS_A "\",\"aud\":7,\"exp\":%lld}");
    add("aud is a number", tk_sign(k_rsa, "RS256", base_h, p), REASON_BAD_CLAIM_TYPE);
    free(p);
    p = claims_fmt("{\"iss\":\"" ISS_A "\",\"aud\":\"" AUD ".evil\",\"exp\":%lld}");
    add("the audience as a prefix of the token's aud", tk_sign(k_rsa, "RS256", base_h, p),
        REASON_AUDIENCE_MISMATCH);
    free(p);
    p = xstrdup("{\"iss\":\"" ISS_A "\",\"aud\":\"" AUD "\"}");
    add("exp missing", tk_sign(k_rsa, "RS256", base_h, p), REASON_EXP_MISSING);
    free(p);
    p = xasprintf("{\"iss\":\"" ISS_A "\",\"aud\":\"" AUD "\",\"exp\":%lld}",
                  (long long)now - 3600);
    add("exp an hour ago", tk_sign(k_rsa, "RS256", base_h, p), REASON_EXPIRED);
    free(p);
    p = xasprintf("{\"iss\":\"" ISS_A "\",\"aud\":\"" AUD "\",\"exp\":%lld}", (long long)now - 61);
    add("exp 61 s ago: just beyond the 60 s leeway", tk_sign(k_rsa, "RS256", base_h, p),
        REASON_EXPIRED);
    free(p);
    p = xstrdup("{\"iss\":\"" ISS_A "\",\"aud\":\"" AUD "\",\"exp\":\"9999999999\"}");
    add("exp is a string", tk_sign(k_rsa, "RS256", base_h, p), REASON_BAD_CLAIM_TYPE);
    free(p);
    p = xasprintf("{\"iss\":\"" ISS_A "\",\"aud\":\"" AUD "\",\"exp\":%lld,\"nbf\":%lld}",
                  (long long)now + 7200, (long long)now + 3600);
    add("nbf an hour ahead", tk_sign(k_rsa, "RS256", base_h, p), REASON_NOT_YET_VALID);
    free(p);
    p = xasprintf("{\"iss\":\"" ISS_A "\",\"aud\":\"" AUD "\",\"exp\":%lld,\"iat\":%lld}",
                  (long long)now + 7200, (long long)now + 3600);
    add("iat an hour ahead", tk_sign(k_rsa, "RS256", base_h, p), REASON_IAT_IN_FUTURE);
    free(p);
    add("typ JOSE not on the list",
        tk_sign(k_rsa, "RS256", "{\"alg\":\"RS256\",\"typ\":\"JOSE\",\"kid\":\"a-rsa\"}", base_p),
        REASON_TYP_NOT_ALLOWED);
    add("typ text/jwt (another top-level type)",
        tk_sign(k_rsa, "RS256", "{\"alg\":\"RS256\",\"typ\":\"text/jwt\",\"kid\":\"a-rsa\"}",
                base_p),
        REASON_TYP_NOT_ALLOWED);
    add("typ is a number",
        tk_sign(k_rsa, "RS256", "{\"alg\":\"RS256\",\"typ\":1,\"kid\":\"a-rsa\"}", base_p),
        REASON_BAD_CLAIM_TYPE);
    p = claims_fmt("{\"iss\":\"" ISS_A "\",\"sub\":5,\"aud\":\"" AUD "\",\"exp\":%lld}");
    add("sub is a number", tk_sign(k_rsa, "RS256", base_h, p), REASON_BAD_CLAIM_TYPE);
    free(p);
    p = claims_fmt("{\"iss\":\"" ISS_C "\",\"client_id\":\"client123\",\"token_use\":\"id\","
                   "\"exp\":%lld}");
    add("Cognito ID token where an access token is required",
        tk_sign(k_b, "RS256", "{\"alg\":\"RS256\"}", p), REASON_TOKEN_USE_MISMATCH);
    free(p);
    p = claims_fmt("{\"iss\":\"" ISS_C "\",\"client_id\":\"other\",\"token_use\":\"access\","
                   "\"exp\":%lld}");
    add("Cognito token of another app client", tk_sign(k_b, "RS256", "{\"alg\":\"RS256\"}", p),
        REASON_AUDIENCE_MISMATCH);
    free(p);
    p = claims_fmt("{\"iss\":\"" ISS_C "\",\"aud\":\"client123\",\"token_use\":\"access\","
                   "\"exp\":%lld}");
    add("Cognito: aud present but client_id (the configured claim) missing",
        tk_sign(k_b, "RS256", "{\"alg\":\"RS256\"}", p), REASON_AUDIENCE_MISMATCH);
    free(p);
    p = claims_fmt("{\"iss\":\"" ISS_C "\",\"client_id\":\"client123\",\"token_use\":\"access\","
                   "\"exp\":%lld}");
    add("no kid, issuer C opts in, signed by a key C does not have",
        tk_sign(k_evil, "RS256", "{\"alg\":\"RS256\"}", p), REASON_BAD_SIGNATURE);
    add("no kid, issuer C opts in, ES256: C has no EC key",
        tk_sign(k_ec256, "ES256", "{\"alg\":\"ES256\"}", p), REASON_ALG_KEY_MISMATCH);
    free(p);
    p = claims_fmt("{\"iss\":\"" ISS_D "\",\"aud\":\"" AUD "\",\"exp\":%lld}");
    add("issuer D: keys never loaded",
        tk_sign(k_rsa, "RS256", "{\"alg\":\"RS256\",\"kid\":\"d\"}", p), REASON_KEYS_UNAVAILABLE);
    free(p);

    free(good);
    free(base_h);
    free(base_p);
}

/* Parses {"keys":[jwk]} with one member of `jwk` replaced (or removed when
 * value is NULL); returns the number of usable keys, -1 when the document is
 * refused. `note` receives the keyset's note. */
static int keyset_with(json_t *jwk, const char *member, json_t *value, char *note, size_t cap)
{
    json_t *copy = json_deep_copy(jwk), *arr = json_array();
    struct jws_keyset *ks;
    char err[256], *text;
    int n;

    if (member && value)
        json_object_set_new(copy, member, value);
    else if (member)
        json_object_del(copy, member);
    json_array_append_new(arr, copy);
    text = tk_jwks_text(arr);
    ks = jws_keyset_parse(text, strlen(text), err, sizeof(err));
    n = ks ? (int)jws_keyset_count(ks) : -1;
    snprintf(note, cap, "%s", ks ? jws_keyset_note(ks) : err);
    jws_keyset_unref(ks);
    json_decref(arr);
    free(text);
    return n;
}

static void keyset_cases(void)
{
    EVP_PKEY *small = tk_rsa(1024), *p521 = tk_ec("P-521");
    json_t *rsa = tk_jwk(k_rsa, "r", NULL), *ec = tk_jwk(k_ec256, "e", NULL);
    json_t *ed = tk_jwk(k_ed, "d", NULL), *sm = tk_jwk(small, "s", NULL);
    json_t *e521 = tk_jwk(p521, "p", NULL);
    char note[256], err[256];

    is_int(keyset_with(rsa, NULL, NULL, note, sizeof(note)), 1, "keyset: an RSA-2048 JWK loads");
    is_int(keyset_with(e521, NULL, NULL, note, sizeof(note)), 1, "keyset: a P-521 JWK loads");
    is_int(keyset_with(rsa, "use", json_string("enc"), note, sizeof(note)), 0,
           "keyset: use \"enc\" is skipped");
    is_int(keyset_with(ec, "key_ops", json_pack("[s]", "encrypt"), note, sizeof(note)), 0,
           "keyset: key_ops without verify is skipped");
    is_int(keyset_with(ec, "key_ops", json_pack("[s,s]", "sign", "verify"), note, sizeof(note)), 1,
           "keyset: key_ops with verify loads");
    is_int(keyset_with(sm, NULL, NULL, note, sizeof(note)), 0, "keyset: RSA-1024 is refused");
    ok(strstr(note, "under 2048") != NULL, "keyset: the note says why (%s)", note);
    is_int(keyset_with(rsa, "e", json_string("Aw"), note, sizeof(note)), 0,
           "keyset: RSA e = 3 is refused");
    is_int(keyset_with(rsa, "e", json_string("AAEAAQ"), note, sizeof(note)), 1,
           "keyset: e = 65537 with a leading zero octet still loads");
    {
        /* y of another point: (x, y') off the curve */
        const char *y = json_string_value(json_object_get(ec, "y"));
        char *y2 = xstrdup(y);
        y2[5] = y2[5] == 'A' ? 'B' : 'A';
        is_int(keyset_with(ec, "y", json_string(y2), note, sizeof(note)), 0,
               "keyset: an EC point off the curve is refused");
        free(y2);
    }
    is_int(keyset_with(ec, "x", json_string("AAAA"), note, sizeof(note)), 0,
           "keyset: EC x shorter than the field is refused");
    is_int(keyset_with(ec, "crv", json_string("secp256k1"), note, sizeof(note)), 0,
           "keyset: an unsupported curve is skipped");
    is_int(keyset_with(ec, "alg", json_string("ES384"), note, sizeof(note)), 0,
           "keyset: alg ES384 on a P-256 key is skipped");
    is_int(keyset_with(rsa, "alg", json_string("HS256"), note, sizeof(note)), 0,
           "keyset: alg HS256 on an RSA key is skipped");
    is_int(keyset_with(rsa, "alg", json_string("RSA-OAEP"), note, sizeof(note)), 0,
           "keyset: an encryption alg is skipped");
    is_int(keyset_with(ed, "crv", json_string("Ed448"), note, sizeof(note)), 0,
           "keyset: OKP Ed448 is skipped");
    is_int(keyset_with(ed, "crv", json_string("X25519"), note, sizeof(note)), 0,
           "keyset: OKP X25519 (key agreement) is skipped");
    {
        char *x = xasprintf("%s=", json_string_value(json_object_get(ed, "x")));
        is_int(keyset_with(ed, "x", json_string(x), note, sizeof(note)), 0,
               "keyset: padded base64url in a JWK is refused");
        free(x);
    }
    is_int(keyset_with(rsa, "kty", json_string("oct"), note, sizeof(note)), 0,
           "keyset: a symmetric (oct) key is never loaded");
    is_int(keyset_with(rsa, "kid", json_integer(5), note, sizeof(note)), 0,
           "keyset: a non-string kid is skipped");
    {
        json_t *arr = json_array();
        struct jws_keyset *ks;
        char *text;
        json_array_append(arr, ed);
        json_array_append(arr, rsa);
        json_array_append(arr, ed);
        text = tk_jwks_text(arr);
        ks = jws_keyset_parse(text, strlen(text), err, sizeof(err));
        ok(ks && jws_keyset_count(ks) == 2 && jws_keyset_skipped(ks) == 1,
           "keyset: a duplicate kid is skipped, the rest loads");
        ok(ks && jws_keyset_find(ks, "d", 1) == jws_keyset_key(ks, 0),
           "keyset: find by kid returns the first key with it");
        ok(ks && jws_keyset_find(ks, "x", 1) == NULL, "keyset: find of an unknown kid is NULL");
        ok(ks && jws_key_algs(jws_keyset_find(ks, "r", 1)) ==
                     ((1u << JWS_RS256) | (1u << JWS_RS384) | (1u << JWS_RS512) |
                      (1u << JWS_PS256) | (1u << JWS_PS384) | (1u << JWS_PS512)),
           "keyset: an RSA JWK without alg pins the six RSA algorithms, nothing else");
        jws_keyset_unref(ks);
        free(text);
        for (int i = 0; i < 98; i++)
            json_array_append(arr, ed);
        text = tk_jwks_text(arr);
        ks = jws_keyset_parse(text, strlen(text), err, sizeof(err));
        ok(ks == NULL && strstr(err, "more than"), "keyset: 101 keys are refused (%s)", err);
        free(text);
        json_decref(arr);
    }
    {
        static const char *const bad[] = {
            "",
            "[]",
            "{\"keys\":{}}",
            "{\"kid\":\"x\"}",
            "{\"keys\":[],\"keys\":[]}",
            "{\"keys\":[{\"kty\":\"RSA\",",
            "{\"keys\":[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]}",
        };
        static const char *const why[] = {
            "empty document",         "an array",       "keys not an array",      "no keys member",
            "duplicate member names", "truncated JSON", "nesting deeper than 16",
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            err[0] = '\0';
            ok(jws_keyset_parse(bad[i], strlen(bad[i]), err, sizeof(err)) == NULL && err[0],
               "keyset: document refused with a message: %s", why[i]);
        }
    }
    {
        size_t big = JWS_KEYSET_MAX_BYTES + 1;
        char *doc = xmalloc(big + 1);
        memset(doc, ' ', big);
        memcpy(doc, "{\"keys\":[]}", 11);
        doc[big] = '\0';
        ok(jws_keyset_parse(doc, big, err, sizeof(err)) == NULL && strstr(err, "cap"),
           "keyset: a document over the size cap is refused before parsing");
        free(doc);
    }
    {
        struct jws_keyset *ks = jws_keyset_parse("{\"keys\":[]}", 11, err, sizeof(err));
        ok(ks && jws_keyset_count(ks) == 0, "keyset: an empty keys array is a keyset of 0");
        jws_keyset_unref(ks);
    }
    json_decref(rsa);
    json_decref(ec);
    json_decref(ed);
    json_decref(sm);
    json_decref(e521);
    EVP_PKEY_free(small);
    EVP_PKEY_free(p521);
}

int main(void)
{
    static const char *auds[] = {AUD};
    static const char *cognito_auds[] = {"client123"};
    struct cfg_issuer issuers[4];
    struct baton_config cfg;
    struct tk_keys tk;
    struct authn_keys keys;
    struct authn *a;
    struct authn_cache *cache;
    json_t *ka = json_array(), *kb = json_array();
    size_t attacks = 0, passes;

    now = (int64_t)time(NULL);
    memset(&cfg, 0, sizeof(cfg));
    memset(&tk, 0, sizeof(tk));
    tk_issuer(&issuers[0], "a", ISS_A, auds, 1,
              (1u << JWS_RS256) | (1u << JWS_PS256) | (1u << JWS_ES256) | (1u << JWS_ES384) |
                  (1u << JWS_EDDSA));
    tk_issuer(&issuers[1], "b", ISS_B, auds, 1, 1u << JWS_RS256);
    tk_issuer(&issuers[2], "cognito", ISS_C, cognito_auds, 1,
              (1u << JWS_RS256) | (1u << JWS_ES256));
    issuers[2].audience_claim = (char *)"client_id";
    issuers[2].token_use = (char *)"access";
    issuers[2].allow_missing_kid = true;
    tk_issuer(&issuers[3], "d", ISS_D, auds, 1, 1u << JWS_RS256);
    cfg.issuers = issuers;
    cfg.n_issuers = 4;
    tk.cfg = &cfg;

    k_rsa = tk_rsa(2048);
    k_rs256 = tk_rsa(2048);
    k_ps = tk_rsa(3072);
    k_ec256 = tk_ec("P-256");
    k_ec384 = tk_ec("P-384");
    k_ed = tk_ed25519();
    k_b = tk_rsa(2048);
    k_evil = tk_rsa(2048);
    k_ec_evil = tk_ec("P-256");
    jwk_rsa = tk_jwk(k_rsa, "a-rsa", NULL);
    json_object_del(jwk_rsa, "use");
    json_array_append(ka, jwk_rsa);
    json_array_append_new(ka, tk_jwk(k_rs256, "a-rs256", "RS256"));
    json_array_append_new(ka, tk_jwk(k_ps, "a-ps", "PS256"));
    json_array_append_new(ka, tk_jwk(k_ec256, "a-ec256", "ES256"));
    json_array_append_new(ka, tk_jwk(k_ec384, "a-ec384", NULL));
    json_array_append_new(ka, tk_jwk(k_ed, "a-ed", "EdDSA"));
    json_array_append_new(kb, tk_jwk(k_b, "b-rsa", "RS256"));
    tk_keys_set(&tk, 0, tk_keyset(ka));
    tk_keys_set(&tk, 1, tk_keyset(kb));
    tk_keys_set(&tk, 2, tk_keyset(kb)); /* Cognito issuer shares B's key material */
    is_int(jws_keyset_count(tk.ks[0]), 6, "issuer A's key set loads all 6 keys");

    keyset_cases();
    keys = tk_keys_provider(&tk);
    a = authn_new(&cfg, &keys);
    cache = authn_cache_new(64);
    build_cases();

    /* Twice: without a cache, then with one (a failure must never be cached
     * and a control must still pass when served from it on the second pass). */
    for (passes = 0; passes < 2; passes++) {
        for (size_t i = 0; i < n_cases; i++) {
            struct authn_result res;
            enum reason r = authn_verify(a, passes ? cache : NULL, NULL, cases[i].token,
                                         strlen(cases[i].token), now, &res);
            if (!passes && !cases[i].control)
                attacks++;
            if (!ok(r == cases[i].want, "%s%s -> %s", passes ? "cached: " : "", cases[i].name,
                    reason_code(cases[i].want)))
                tap_diag("  got %s", reason_code(r));
            if (r == REASON_ALLOWED)
                ok(res.claims && res.issuer && res.audience, "%s%s: issuer, claims, audience set",
                   passes ? "cached: " : "", cases[i].name);
            authn_result_release(&res);
        }
    }
    {
        struct authn_cache_stats st;
        size_t controls = n_cases - attacks;
        authn_cache_stats(cache, &st);
        is_int(st.inserts, controls, "only the %zu controls were cached", controls);
    }
    ok(attacks >= 40, "the table holds at least 40 attack tokens (%zu)", attacks);
    ok(tk.kid_misses[0] >= 3, "unknown kids asked issuer A's provider for a refresh (%d)",
       tk.kid_misses[0]);
    is_int(tk.kid_misses[1], 0, "issuer B's provider was never asked (kid scoping)");

    {
        /* the audit fields of a control */
        struct authn_result res;
        char *h = hdr("RS256", "a-rsa"), *p = claims_a(""), *tok = tk_sign(k_rsa, "RS256", h, p);
        char fp[65];
        is_int(authn_verify(a, NULL, NULL, tok, strlen(tok), now, &res), REASON_ALLOWED,
               "audit fields: token verifies");
        is_str(res.sub, "arn:aws:iam::123456789012:role/sfn", "sub extracted");
        is_str(res.jti, "j-1", "jti extracted");
        is_str(res.audience, AUD, "matched audience is the configured one");
        is_str(res.aws_account, "123456789012", "aws_account from https://sts.amazonaws.com/");
        is_str(res.issuer->name, "a", "issuer selected by iss");
        sha256_hex(tok, strlen(tok), fp);
        is_str(res.fingerprint, fp, "fingerprint is the SHA-256 of the token bytes");
        authn_result_release(&res);
        free(tok);
        free(p);
        p = xasprintf("{\"iss\":\"" ISS_A "\",\"sub\":\"late\",\"aud\":\"" AUD "\",\"exp\":%lld}",
                      (long long)now - 3600);
        tok = tk_sign(k_rsa, "RS256", h, p);
        is_int(authn_verify(a, NULL, NULL, tok, strlen(tok), now, &res), REASON_EXPIRED,
               "expired token fails");
        is_str(res.sub, "late", "a verified but expired token still names its subject");
        authn_result_release(&res);
        free(tok);
        free(p);
        free(h);
    }

    for (size_t i = 0; i < n_cases; i++)
        free(cases[i].token);
    authn_cache_free(cache);
    authn_free(a);
    tk_keys_clear(&tk);
    json_decref(ka);
    json_decref(kb);
    json_decref(jwk_rsa);
    EVP_PKEY_free(k_rsa);
    EVP_PKEY_free(k_rs256);
    EVP_PKEY_free(k_ps);
    EVP_PKEY_free(k_ec256);
    EVP_PKEY_free(k_ec384);
    EVP_PKEY_free(k_ed);
    EVP_PKEY_free(k_b);
    EVP_PKEY_free(k_evil);
    EVP_PKEY_free(k_ec_evil);
    return tap_done();
}
