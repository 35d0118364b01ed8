/*
 * Project Wycheproof signature vectors against jws.c.
 *
 * Every vector of every file in $BATON_SRCDIR/tests/vectors/wycheproof (Apache
 * 2.0, see the LICENSE and README there) runs through jws_verify_raw, with the group's key
 * loaded by jws_keyset_parse: from the group's own JWK where the file has one
 * (so the JWK parser is under test too), else from a JWK built here from the
 * raw wx/wy (the nine special-key ECDSA groups per file).
 *
 * Expected outcomes: `valid` verifies, `invalid` fails. Documented choices:
 * - `acceptable` (only flag MissingNull: PKCS#1 DigestInfo without the ASN.1
 *   NULL parameter, one per RSA PKCS#1 file): REJECTED. OpenSSL builds the
 *   expected encoding with the NULL and compares byte for byte; one spelling
 *   per signature is what baton wants anyway.
 * - RSA keys with e != 65537 (five e = 3 groups, one valid vector each) are
 *   refused at key-set load (jws.h), so those vectors are not run; the suite
 *   asserts that the JWK parser refused exactly those keys with that reason.
 * Per-file counts (tests, valid, invalid, acceptable, e = 3 vectors, groups
 * without a JWK) are asserted against the table in the vectors' README.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "b64.h"
#include "jws.h"
#include "util.h"
#include "tap.h"

static const struct file_expect {
    const char *name;
    int tests, valid, invalid, acceptable;
    int e3;     /* vectors under e = 3 keys (refused at load, not run) */
    int no_jwk; /* groups whose key is built from wx/wy */
} files[] = {
    {"ecdsa_secp256r1_sha256_p1363_test.json", 262, 173, 89, 0, 0, 9},
    {"ecdsa_secp384r1_sha384_p1363_test.json", 280, 193, 87, 0, 0, 9},
    {"ecdsa_secp521r1_sha512_p1363_test.json", 318, 231, 87, 0, 0, 9},
    {"ed25519_test.json", 151, 88, 63, 0, 0, 0},
    {"rsa_pss_2048_sha256_mgf1_32_test.json", 108, 63, 45, 0, 0, 0},
    {"rsa_pss_2048_sha384_mgf1_48_test.json", 141, 95, 46, 0, 0, 0},
    {"rsa_pss_3072_sha256_mgf1_32_test.json", 108, 63, 45, 0, 0, 0},
    {"rsa_pss_4096_sha256_mgf1_32_test.json", 108, 63, 45, 0, 0, 0},
    {"rsa_pss_4096_sha384_mgf1_48_test.json", 141, 95, 46, 0, 0, 0},
    {"rsa_pss_4096_sha512_mgf1_64_test.json", 179, 132, 47, 0, 0, 0},
    {"rsa_signature_2048_sha256_test.json", 259, 9, 249, 1, 2, 0},
    {"rsa_signature_2048_sha384_test.json", 258, 7, 250, 1, 0, 0},
    {"rsa_signature_2048_sha512_test.json", 259, 8, 250, 1, 1, 0},
    {"rsa_signature_3072_sha256_test.json", 259, 8, 250, 1, 1, 0},
    {"rsa_signature_3072_sha384_test.json", 259, 7, 251, 1, 0, 0},
    {"rsa_signature_3072_sha512_test.json", 260, 8, 251, 1, 1, 0},
    {"rsa_signature_4096_sha256_test.json", 258, 7, 250, 1, 0, 0},
    {"rsa_signature_4096_sha384_test.json", 259, 7, 251, 1, 0, 0},
    {"rsa_signature_4096_sha512_test.json", 259, 7, 251, 1, 0, 0},
};

struct tally {
    int tests, valid, invalid, acceptable, e3, no_jwk;
    int valid_ok, invalid_ok, acceptable_rejected, key_errors;
};

static unsigned char *hex_decode(const char *hex, size_t *len)
{
    size_t n = strlen(hex) / 2;
    unsigned char *out = xmalloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1)
            v = 0;
        out[i] = (unsigned char)v;
    }
    *len = n;
    return out;
}

static int sha_index(const char *sha)
{
    if (!sha)
        return -1;
    if (!strcmp(sha, "SHA-256"))
        return 0;
    if (!strcmp(sha, "SHA-384"))
        return 1;
    if (!strcmp(sha, "SHA-512"))
        return 2;
    return -1;
}

/* The JWS alg a group's parameters name, or -1 when they name none. */
static int group_alg(const json_t *g)
{
    const char *type = json_string_value(json_object_get(g, "type"));
    int s = sha_index(json_string_value(json_object_get(g, "sha")));

    if (!type)
        return -1;
    if (!strcmp(type, "EddsaVerify"))
        return JWS_EDDSA;
    if (s < 0)
        return -1;
    if (!strcmp(type, "RsassaPkcs1Verify"))
        return JWS_RS256 + s;
    if (!strcmp(type, "RsassaPssVerify")) {
        int m = sha_index(json_string_value(json_object_get(g, "mgfSha")));
        json_int_t slen = json_integer_value(json_object_get(g, "sLen"));
        if (m != s || slen != (json_int_t)(32 + 16 * s))
            return -1; /* not a JWS PS* parameter set */
        return JWS_PS256 + s;
    }
    if (!strcmp(type, "EcdsaP1363Verify"))
        return JWS_ES256 + s;
    return -1;
}

/* A JWK for an ECDSA group without one, from wx/wy (big-endian, maybe a leading 00). */
static json_t *ec_jwk_from_xy(const json_t *pk)
{
    const char *curve = json_string_value(json_object_get(pk, "curve"));
    const char *crv = NULL;
    size_t field = 0;
    json_t *jwk = NULL;
    char *coords[2] = {NULL, NULL};
    const char *names[2] = {"wx", "wy"};

    if (curve && !strcmp(curve, "secp256r1"))
        crv = "P-256", field = 32;
    else if (curve && !strcmp(curve, "secp384r1"))
        crv = "P-384", field = 48;
    else if (curve && !strcmp(curve, "secp521r1"))
        crv = "P-521", field = 66;
    if (!crv)
        return NULL;
    for (int i = 0; i < 2; i++) {
        size_t n;
        unsigned char *raw = hex_decode(json_string_value(json_object_get(pk, names[i])), &n);
        unsigned char fixed[66] = {0};
        size_t off = 0;
        while (n - off > field && raw[off] == 0)
            off++;
        if (n - off > field) {
            free(raw);
            goto out;
        }
        memcpy(fixed + field - (n - off), raw + off, n - off);
        free(raw);
        coords[i] = xmalloc(b64url_encoded_len(field) + 1);
        b64url_encode(fixed, field, coords[i]);
    }
    jwk = json_pack("{s:s, s:s, s:s, s:s}", "kty", "EC", "crv", crv, "x", coords[0], "y",
                    coords[1]);
out:
    free(coords[0]);
    free(coords[1]);
    return jwk;
}

static void run_group(const char *file, const json_t *g, struct tally *t)
{
    const json_t *jwk = json_object_get(g, "keyJwk"), *tests, *tc;
    json_t *owned = NULL, *doc = NULL;
    struct jws_keyset *ks = NULL;
    const struct jws_key *k;
    char err[256], *text = NULL;
    int alg = group_alg(g);
    size_t i;

    if (!jwk)
        jwk = json_object_get(g, "publicKeyJwk");
    if (!jwk) {
        jwk = owned = ec_jwk_from_xy(json_object_get(g, "publicKey"));
        t->no_jwk++;
    }
    tests = json_object_get(g, "tests");
    if (alg < 0 || !jwk) {
        tap_diag("%s: a group has no JWS algorithm or no usable key description", file);
        t->key_errors++;
        goto out;
    }
    doc = json_pack("{s:[O]}", "keys", jwk);
    text = json_dumps(doc, JSON_COMPACT);
    ks = jws_keyset_parse(text, strlen(text), err, sizeof(err));
    if (!ks) {
        tap_diag("%s: key set refused: %s", file, err);
        t->key_errors++;
        goto out;
    }
    k = jws_keyset_key(ks, 0);
    if (!k) {
        const char *e = json_string_value(json_object_get(jwk, "e"));
        /* The one documented refusal: e != 65537 (jws.h); anything else is a bug. */
        if (e && strcmp(e, "AQAB") != 0 && strstr(jws_keyset_note(ks), "e is not 65537")) {
            json_array_foreach(tests, i, tc) {
                t->tests++;
                t->e3++;
                if (!strcmp(json_string_value(json_object_get(tc, "result")), "valid"))
                    t->valid++;
                else
                    t->invalid++; /* none in these files; counted so totals still add up */
            }
        } else {
            tap_diag("%s: key skipped: %s", file, jws_keyset_note(ks));
            t->key_errors++;
        }
        goto out;
    }
    if (!(jws_key_algs(k) & (1u << alg))) {
        tap_diag("%s: key does not pin the group's alg %d", file, alg);
        t->key_errors++;
        goto out;
    }
    json_array_foreach(tests, i, tc) {
        const char *result = json_string_value(json_object_get(tc, "result"));
        size_t mlen, slen;
        unsigned char *msg = hex_decode(json_string_value(json_object_get(tc, "msg")), &mlen);
        unsigned char *sig = hex_decode(json_string_value(json_object_get(tc, "sig")), &slen);
        int rc = jws_verify_raw(k, (enum jws_alg)alg, msg, mlen, sig, slen);
        json_int_t id = json_integer_value(json_object_get(tc, "tcId"));

        t->tests++;
        if (!strcmp(result, "valid")) {
            t->valid++;
            if (rc == 0)
                t->valid_ok++;
            else
                tap_diag("%s tcId %lld: valid vector rejected", file, (long long)id);
        } else if (!strcmp(result, "invalid")) {
            t->invalid++;
            if (rc != 0)
                t->invalid_ok++;
            else
                tap_diag("%s tcId %lld: invalid vector ACCEPTED", file, (long long)id);
        } else {
            t->acceptable++;
            if (rc != 0)
                t->acceptable_rejected++;
            else
                tap_diag("%s tcId %lld: acceptable vector accepted (documented: rejected)", file,
                         (long long)id);
        }
        free(msg);
        free(sig);
    }
out:
    jws_keyset_unref(ks);
    free(text);
    json_decref(doc);
    json_decref(owned);
}

static void run_file(const char *dir, const struct file_expect *fe)
{
    char path[8192], *buf = NULL;
    size_t len;
    json_t *root = NULL, *g;
    json_error_t jerr;
    struct tally t = {0};
    size_t i;

    snprintf(path, sizeof(path), "%s/%s", dir, fe->name);
    if (!ok(read_file_capped(path, 8u << 20, &buf, &len) == 0, "%s is readable", fe->name))
        return;
    root = json_loadb(buf, len, 0, &jerr);
    if (!ok(root != NULL, "%s parses", fe->name))
        goto out;
    json_array_foreach(json_object_get(root, "testGroups"), i, g)
        run_group(fe->name, g, &t);
    is_int(json_integer_value(json_object_get(root, "numberOfTests")), fe->tests,
           "%s: numberOfTests is the README's %d", fe->name, fe->tests);
    is_int(t.tests, fe->tests, "%s: all %d vectors seen", fe->name, fe->tests);
    ok(t.valid == fe->valid && t.invalid == fe->invalid && t.acceptable == fe->acceptable,
       "%s: %d valid / %d invalid / %d acceptable as the README counts", fe->name, fe->valid,
       fe->invalid, fe->acceptable);
    is_int(t.key_errors, 0, "%s: every group's key loads through jws_keyset_parse", fe->name);
    is_int(t.no_jwk, fe->no_jwk, "%s: %d groups keyed from wx/wy (no JWK in the file)", fe->name,
           fe->no_jwk);
    is_int(t.e3, fe->e3, "%s: %d vectors under e=3 keys, refused at load as documented", fe->name,
           fe->e3);
    is_int(t.valid_ok, fe->valid - fe->e3, "%s: every valid vector verifies (%d)", fe->name,
           fe->valid - fe->e3);
    is_int(t.invalid_ok, fe->invalid, "%s: every invalid vector is rejected (%d)", fe->name,
           fe->invalid);
    is_int(t.acceptable_rejected, fe->acceptable,
           "%s: acceptable (MissingNull) vectors rejected as documented (%d)", fe->name,
           fe->acceptable);
out:
    json_decref(root);
    free(buf);
}

int main(void)
{
    const char *src = getenv("BATON_SRCDIR");
    char dir[4096];

    snprintf(dir, sizeof(dir), "%s/tests/vectors/wycheproof", src ? src : BATON_SRCDIR);
    tap_diag("vectors from %s", dir);
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
        run_file(dir, &files[i]);
    return tap_done();
}
