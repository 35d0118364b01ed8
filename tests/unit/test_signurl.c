/*
 * test_signurl.c: signed URLs (signurl.h): the strict parameter parser, the
 * canonical string (checked by signing it independently: Ed25519 is
 * deterministic), every failure reason, key rotation, key file checks, the
 * use store and the sign endpoint's body.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "b64.h"
#include "signurl.h"
#include "util.h"
#include "tap.h"

static char tmpdir[] = "/tmp/test_signurl.XXXXXX";

/* Writes a fresh key of `type` (EVP_PKEY_ED25519 or EVP_PKEY_EC) to
 * tmpdir/name with `mode`; returns the owned path. */
static char *write_key(const char *name, int type, mode_t mode)
{
    char *path = xasprintf("%s/%s", tmpdir, name);
    EVP_PKEY *k = type == EVP_PKEY_ED25519 ? EVP_PKEY_Q_keygen(NULL, NULL, "ED25519")
                                           : EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    FILE *f = fopen(path, "w");
    PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    chmod(path, mode);
    EVP_PKEY_free(k);
    return path;
}

static struct signurl_keys *load(struct cfg_url_key *keys, size_t n, unsigned max_ttl,
                                 unsigned leeway, char *err, int *bad)
{
    struct cfg_url_signing cfg = {true, keys, n, max_ttl, leeway};
    return signurl_keys_load(&cfg, err, 512, bad);
}

static struct signurl_scope scope_of(const char *method, const char *host, const char *path,
                                     const char *query)
{
    struct signurl_scope s = {
        method, host, strlen(host), path, strlen(path), query, query ? strlen(query) : 0};
    return s;
}

/* Mints a link for (method, host, path, base query) and returns the whole
 * query of the link (owned). */
static char *mint(const struct signurl_keys *k, const char *method, const char *host,
                  const char *path, const char *base, int64_t exp, unsigned uses,
                  const char *minter)
{
    struct signurl_scope s = scope_of(method, host, path, base);
    char suffix[SIGNURL_SUFFIX_MAX], err[256];
    int n = signurl_sign(k, &s, exp, uses, minter, suffix, NULL, err, sizeof(err));
    if (n < 0) {
        tap_diag("sign failed: %s", err);
        return xstrdup("");
    }
    return xasprintf("%s%s", base && *base ? base : "", suffix + (base && *base ? 0 : 1));
}

/* Parses `query` and verifies it for the request (method, host, path). */
static enum reason check(const struct signurl_keys *k, const char *method, const char *host,
                         const char *path, const char *query, int64_t now)
{
    struct signurl_params p;
    char err[256];
    struct signurl_scope s = scope_of(method, host, path, query);
    if (signurl_parse_query(query, strlen(query), &p, err, sizeof(err)) != 1) {
        tap_diag("parse: %s", err);
        return REASON_BAD_REQUEST;
    }
    return signurl_verify(k, &s, &p, now);
}

static int parse(const char *q, char *err)
{
    struct signurl_params p;
    return signurl_parse_query(q, strlen(q), &p, err, 256);
}

static const char SIG96[] =
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

static void test_parse(void)
{
    struct signurl_params p;
    char err[256], q[512];
    const char *good =
        "a=1&b=&baton_exp=1700000000&baton_kid=k1&baton_uses=1&baton_minter=cli&baton_sig=";

    snprintf(q, sizeof(q), "%s%s", good, SIG96);
    is_int(signurl_parse_query(q, strlen(q), &p, err, sizeof(err)), 1, "a canonical suffix parses");
    ok(p.exp == 1700000000 && !strcmp(p.kid, "k1") && p.uses == 1 && !strcmp(p.minter, "cli"),
       "values are read");
    ok(p.base_len == strlen("a=1&b="), "base_len excludes the joining '&'");
    ok(memcmp(q + p.signed_len, "&baton_sig=", 11) == 0, "signed_len stops before &baton_sig");
    is_int(signurl_parse_query("a=1&b=2", 7, &p, err, sizeof(err)), 0, "no baton_ parameter: 0");
    is_int(signurl_parse_query(NULL, 0, &p, err, sizeof(err)), 0, "no query: 0");

#define BAD(query, what)                            \
    do {                                            \
        snprintf(q, sizeof(q), query, SIG96);       \
        ok(parse(q, err) == -1, what " (%s)", err); \
    } while (0)
    BAD("baton_exp=1&baton_exp=1&baton_kid=k1&baton_uses=1&baton_minter=cli&baton_sig=%s",
        "duplicate baton_exp");
    BAD("baton_exp=1&baton_kid=k1&baton_uses=1&baton_minter=cli&baton_sig=%s&baton_sig=x",
        "duplicate baton_sig");
    BAD("baton_kid=k1&baton_exp=1&baton_uses=1&baton_minter=cli&baton_sig=%s", "kid before exp");
    BAD("baton_exp=1&baton_kid=k1&baton_minter=cli&baton_uses=1&baton_sig=%s",
        "minter before uses");
    BAD("baton_exp=1&baton_kid=k1&baton_uses=1&baton_minter=cli&baton_sig=%s&x=1",
        "a parameter after baton_sig");
    BAD("baton_exp=1&x=1&baton_kid=k1&baton_uses=1&baton_minter=cli&baton_sig=%s",
        "a parameter inside the suffix");
    BAD("baton_exp=1&baton_kid=k1&baton_uses=1&baton_minter=cli&baton_sig=%s&", "a trailing '&'");
    BAD("baton_exp=1&baton_kid=k1&baton_uses=1&baton_minter=cli%.0s", "baton_sig missing");
    BAD("%%62aton_exp=1&baton_kid=k1&baton_uses=1&baton_minter=cli&baton_sig=%s", "escaped name");
    BAD("BATON_EXP=1&baton_kid=k1&baton_uses=1&baton_minter=cli&baton_sig=%s", "upper-case name");
    BAD("baton_exp=1&baton_kid=k1&baton_uses=1&baton_minter=cli&baton_extra=1&baton_sig=%s",
        "unknown baton_ parameter");
    BAD("baton_foo=1&baton_exp=1&baton_kid=k1&baton_uses=1&baton_minter=cli&baton_sig=%s",
        "unknown baton_ parameter first");
    BAD("baton_exp=01&baton_kid=k1&baton_uses=1&baton_minter=cli&baton_sig=%s", "exp leading zero");
    BAD("baton_exp=%%31&baton_kid=k1&baton_uses=1&baton_minter=cli&baton_sig=%s", "exp escaped");
    BAD("baton_exp=0&baton_kid=k1&baton_uses=1&baton_minter=cli&baton_sig=%s", "exp zero");
    BAD("baton_exp=99999999999999&baton_kid=k1&baton_uses=1&baton_minter=cli&baton_sig=%s",
        "exp beyond 2^40");
    BAD("baton_exp=+1&baton_kid=k1&baton_uses=1&baton_minter=cli&baton_sig=%s", "exp with a sign");
    BAD("baton_exp=1&baton_kid=k%%31&baton_uses=1&baton_minter=cli&baton_sig=%s", "kid escaped");
    BAD("baton_exp=1&baton_kid=&baton_uses=1&baton_minter=cli&baton_sig=%s", "kid empty");
    BAD("baton_exp=1&baton_kid&baton_uses=1&baton_minter=cli&baton_sig=%s", "kid without '='");
    BAD("baton_exp=1&baton_kid=k1&baton_uses=01&baton_minter=cli&baton_sig=%s",
        "uses leading zero");
    BAD("baton_exp=1&baton_kid=k1&baton_uses=1001&baton_minter=cli&baton_sig=%s", "uses over 1000");
    BAD("baton_exp=1&baton_kid=k1&baton_uses=1&baton_minter=c+i&baton_sig=%s", "minter with '+'");
    BAD("baton_exp=1&baton_kid=k1&baton_uses=1&baton_minter=cli&baton_sig=%.95s", "sig 95 chars");
    BAD("baton_exp=1&baton_kid=k1&baton_uses=1&baton_minter=cli&baton_sig=%s=", "sig padded");
    BAD("baton_exp=1&baton_kid=k1&baton_uses=1&baton_minter=cli&baton_sig=+%.95s",
        "sig base64 '+'");
    BAD("baton_exp=1&baton_kid=k1&baton_uses=1&baton_minter=cli&baton_sig=%%41%.93s",
        "sig escaped");
#undef BAD
    ok(signurl_query_marked("x=1&Baton_Foo=2", 15), "marked: any case");
    ok(signurl_query_marked("%62aton_x=1", 11), "marked: escaped name");
    ok(!signurl_query_marked("xbaton_=1&baton=2", 17), "not marked: baton_ elsewhere");
    ok(!signurl_query_marked(NULL, 0), "not marked: no query");
}

static void test_sign_verify(const char *f1, const char *f2)
{
    struct cfg_url_key one[] = {{"k1", (char *)f1}};
    struct cfg_url_key rotated[] = {{"k2", (char *)f2}, {"k1", (char *)f1}};
    struct cfg_url_key only2[] = {{"k2", (char *)f2}};
    char err[512];
    int bad;
    struct signurl_keys *k1 = load(one, 1, 3600, 0, err, &bad);
    struct signurl_keys *k21 = load(rotated, 2, 3600, 0, err, &bad);
    struct signurl_keys *k2 = load(only2, 1, 3600, 0, err, &bad);
    int64_t now = 1800000000;
    char *q, *q2;

    ok(k1 && k21 && k2, "keys load (%s)", err);
    if (!k1 || !k21 || !k2)
        goto out;
    q = mint(k1, "GET", "approvals.example.com", "/approve/42", "task=abc", now + 600, 1, "cli");
    ok(!strncmp(
           q, "task=abc&baton_exp=1800000600&baton_kid=k1&baton_uses=1&baton_minter=cli&baton_sig=",
           strlen(
               "task=abc&baton_exp=1800000600&baton_kid=k1&baton_uses=1&baton_minter=cli&baton_sig=")),
       "the link keeps the query and appends the five parameters in order: %s", q);
    is_int(check(k1, "GET", "approvals.example.com", "/approve/42", q, now), REASON_ALLOWED,
           "the link verifies for its own method, host and path");
    is_int(check(k1, "GET", "Approvals.EXAMPLE.com", "/approve/42", q, now), REASON_ALLOWED,
           "host compares case-insensitively");
    is_int(check(k1, "POST", "approvals.example.com", "/approve/42", q, now),
           REASON_URL_SCOPE_MISMATCH, "another method: url_scope_mismatch");
    is_int(check(k1, "GET", "evil.example.com", "/approve/42", q, now), REASON_URL_SCOPE_MISMATCH,
           "another host: url_scope_mismatch");
    is_int(check(k1, "GET", "approvals.example.com", "/approve/43", q, now),
           REASON_URL_SCOPE_MISMATCH, "another path: url_scope_mismatch");
    {
        char *t = xasprintf("x=1&%s", q);
        is_int(check(k1, "GET", "approvals.example.com", "/approve/42", t, now),
               REASON_URL_BAD_SIGNATURE, "a parameter added before: url_bad_signature");
        free(t);
        t = xstrdup(q);
        t[5] = 'X'; /* task=abc -> task=Xbc */
        is_int(check(k1, "GET", "approvals.example.com", "/approve/42", t, now),
               REASON_URL_BAD_SIGNATURE, "query changed: url_bad_signature");
        free(t);
        t = xstrdup(q);
        memcpy(strstr(t, "baton_uses=1") + 11, "2", 1);
        is_int(check(k1, "GET", "approvals.example.com", "/approve/42", t, now),
               REASON_URL_BAD_SIGNATURE, "uses raised: url_bad_signature");
        free(t);
        t = xstrdup(q);
        {
            char *s = strstr(t, "baton_sig=") + 10;
            s[3] = s[3] == 'A' ? 'B' : 'A';
        }
        is_int(check(k1, "GET", "approvals.example.com", "/approve/42", t, now),
               REASON_URL_BAD_SIGNATURE, "signature altered: url_bad_signature");
        free(t);
    }
    is_int(check(k1, "GET", "approvals.example.com", "/approve/42", q, now + 599), REASON_ALLOWED,
           "one second before expiry: allowed");
    is_int(check(k1, "GET", "approvals.example.com", "/approve/42", q, now + 600),
           REASON_URL_EXPIRED, "at expiry: url_expired (leeway 0)");
    is_int(check(k2, "GET", "approvals.example.com", "/approve/42", q, now), REASON_URL_UNKNOWN_KEY,
           "a key set without k1: url_unknown_key");
    /* rotation: k2 now signs, k1 still verifies */
    is_str(signurl_keys_signer(k21), "k2", "the first key signs");
    is_int(check(k21, "GET", "approvals.example.com", "/approve/42", q, now), REASON_ALLOWED,
           "rotation: a link of the old key still verifies");
    q2 = mint(k21, "GET", "approvals.example.com", "/approve/42", NULL, now + 60, 0,
              "aws.0123456789ab");
    ok(strstr(q2, "baton_kid=k2") == q2 + strlen("baton_exp=1800000060&"),
       "a new link names k2: %s", q2);
    is_int(check(k2, "GET", "approvals.example.com", "/approve/42", q2, now), REASON_ALLOWED,
           "rotation: the new link verifies once k1 is gone");
    is_int(check(k1, "GET", "approvals.example.com", "/approve/42", q2, now),
           REASON_URL_UNKNOWN_KEY, "the old set does not know k2");
    free(q2);
    /* the expiry cap */
    q2 = mint(k1, "GET", "h", "/p", NULL, now + 3601, 1, "cli");
    is_int(check(k1, "GET", "h", "/p", q2, now), REASON_URL_EXPIRED,
           "expiry beyond max_ttl_s: url_expired");
    is_int(check(k1, "GET", "h", "/p", q2, now + 1), REASON_ALLOWED, "within max_ttl_s: allowed");
    free(q2);
    {
        struct signurl_keys *kl = load(one, 1, 3600, 5, err, &bad);
        q2 = mint(kl, "GET", "h", "/p", NULL, now, 1, "cli");
        is_int(check(kl, "GET", "h", "/p", q2, now + 4), REASON_ALLOWED,
               "leeway 5: 4 s late allowed");
        is_int(check(kl, "GET", "h", "/p", q2, now + 5), REASON_URL_EXPIRED,
               "leeway 5: 5 s late expired");
        free(q2);
        signurl_keys_free(kl);
    }
    /* the canonical string, signed independently */
    {
        EVP_PKEY *pk = NULL;
        FILE *f = fopen(f1, "r");
        struct signurl_params p;
        const char *canon;
        unsigned char sig[64];
        size_t sl = sizeof(sig);
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        if (f) {
            pk = PEM_read_PrivateKey(f, NULL, NULL, NULL);
            fclose(f);
        }
        signurl_parse_query(q, strlen(q), &p, err, sizeof(err));
        canon = "BATON-SIGNED-URL-V1\nGET\napprovals.example.com\n/approve/42\n"
                "task=abc&baton_exp=1800000600&baton_kid=k1&baton_uses=1&baton_minter=cli";
        ok(pk && EVP_DigestSignInit(ctx, NULL, NULL, NULL, pk) == 1 &&
               EVP_DigestSign(ctx, sig, &sl, (const unsigned char *)canon, strlen(canon)) == 1 &&
               memcmp(sig, p.sig, 64) == 0,
           "the signature is Ed25519 over the documented canonical string");
        {
            unsigned char d[32];
            const char *head = "BATON-SIGNED-URL-V1\nGET\napprovals.example.com\n/approve/42\n";
            sha256_raw(head, strlen(head), d);
            ok(memcmp(d, p.hint, 8) == 0, "the scope hint is SHA-256 of the first four lines");
        }
        EVP_MD_CTX_free(ctx);
        EVP_PKEY_free(pk);
    }
    {
        struct signurl_scope s = scope_of("GET", "h", "/p", "baton_x=1");
        char suffix[SIGNURL_SUFFIX_MAX];
        ok(signurl_sign(k1, &s, now, 1, "cli", suffix, NULL, err, sizeof(err)) < 0,
           "a target already carrying baton_ cannot be signed");
        ok(signurl_sign(k1, &s, now, 1, "bad minter", suffix, NULL, err, sizeof(err)) < 0,
           "a minter outside the alphabet cannot be signed");
    }
    free(q);
out:
    signurl_keys_free(k1);
    signurl_keys_free(k21);
    signurl_keys_free(k2);
}

static void test_keys(const char *good)
{
    char *loose = write_key("loose.pem", EVP_PKEY_ED25519, 0644);
    char *ec = write_key("ec.pem", EVP_PKEY_EC, 0600);
    struct cfg_url_key k[] = {{"k1", (char *)good}, {"k2", loose}};
    char err[512];
    int bad;
    struct signurl_keys *ks = load(k, 2, 60, 0, err, &bad);

    ok(!ks && bad == 1 && strstr(err, "k2"), "a key readable by others is refused: %s", err);
    k[1].file = ec;
    ks = load(k, 2, 60, 0, err, &bad);
    ok(!ks && bad == 1 && strstr(err, "not a PEM Ed25519 private key"), "an EC key is refused: %s",
       err);
    k[1].file = (char *)"/nonexistent/key.pem";
    ks = load(k, 2, 60, 0, err, &bad);
    ok(!ks && bad == 1, "a missing file is refused: %s", err);
    k[1].id = (char *)"bad id";
    k[1].file = (char *)good;
    ks = load(k, 2, 60, 0, err, &bad);
    ok(!ks && bad == 1, "a key id outside the alphabet is refused: %s", err);
    unlink(loose);
    unlink(ec);
    free(loose);
    free(ec);
}

static void test_store(void)
{
    struct signurl_memstore *m = signurl_memstore_new(64);
    struct signurl_uses u = signurl_memstore_uses(m);
    unsigned char a[16] = {1}, b[16] = {2};

    is_int(u.consume(u.ctx, a, 1, 200, 100), SIGNURL_USE_OK, "first use of a one-use link");
    is_int(u.consume(u.ctx, a, 1, 200, 101), SIGNURL_USE_USED, "second use: used");
    is_int(u.consume(u.ctx, b, 2, 200, 100), SIGNURL_USE_OK, "two uses: first");
    is_int(u.consume(u.ctx, b, 2, 200, 100), SIGNURL_USE_OK, "two uses: second");
    is_int(u.consume(u.ctx, b, 2, 200, 100), SIGNURL_USE_USED, "two uses: third is used");
    /* fill the probe window of one hash: every id with the same first 8 bytes */
    {
        int okc = 0;
        for (int i = 0; i < 40; i++) {
            unsigned char c[16] = {9};
            c[15] = (unsigned char)i;
            okc += u.consume(u.ctx, c, 1, 300, 100) == SIGNURL_USE_OK;
        }
        ok(okc > 0 && okc < 40, "a full probe window is unavailable, not forgotten (%d stored)",
           okc);
        {
            unsigned char c[16] = {9};
            is_int(u.consume(u.ctx, c, 1, 300, 100), SIGNURL_USE_USED, "the stored ids stay used");
            c[15] = 39;
            is_int(u.consume(u.ctx, c, 1, 300, 100), SIGNURL_USE_UNAVAILABLE,
                   "no room: unavailable (the caller answers 503)");
            is_int(u.consume(u.ctx, c, 1, 400, 300), SIGNURL_USE_OK,
                   "once the links expired their slots are reused");
        }
    }
    signurl_memstore_free(m);
}

static void test_mint_parse(void)
{
    struct signurl_mint_req r;
    char err[256];
    const char *good = "{\"method\":\"GET\",\"path\":\"/approve/1?t=x\",\"ttl_s\":900}";

    ok(signurl_mint_parse(good, strlen(good), &r, err, sizeof(err)) == 0 && r.uses == 1 &&
           r.ttl_s == 900 && !strcmp(r.method, "GET") && !strcmp(r.target, "/approve/1?t=x"),
       "a mint body parses, uses defaults to 1");
    signurl_mint_req_clear(&r);
#define BADM(body, what) \
    ok(signurl_mint_parse(body, strlen(body), &r, err, sizeof(err)) == -1, what " (%s)", err)
    BADM("{\"method\":\"get\",\"path\":\"/a\",\"ttl_s\":1}", "lower-case method");
    BADM("{\"method\":\"GET\",\"path\":\"a\",\"ttl_s\":1}", "path not origin-form");
    BADM("{\"method\":\"GET\",\"path\":\"/a\",\"ttl_s\":0}", "ttl 0");
    BADM("{\"method\":\"GET\",\"path\":\"/a\",\"ttl_s\":604801}", "ttl over a week");
    BADM("{\"method\":\"GET\",\"path\":\"/a\",\"ttl_s\":1,\"uses\":1001}", "uses over 1000");
    BADM("{\"method\":\"GET\",\"path\":\"/a\",\"ttl_s\":1,\"host\":\"x\"}", "unknown key");
    BADM("{\"method\":\"GET\",\"path\":\"/a\",\"ttl_s\":1,\"ttl_s\":2}", "duplicate key");
    BADM("[]", "not an object");
#undef BADM
}

static void test_minter(void)
{
    char m[SIGNURL_MINTER_MAX + 1], m2[SIGNURL_MINTER_MAX + 1];
    signurl_minter_id("aws", "https://sts.amazonaws.com", "arn:aws:iam::1:role/x", m);
    signurl_minter_id("aws", "https://sts.amazonaws.com", "arn:aws:iam::1:role/y", m2);
    ok(!strncmp(m, "aws.", 4) && strlen(m) == 16, "minter id is issuer name and 12 hex: %s", m);
    ok(strcmp(m, m2) != 0, "another subject, another minter id");
    ok(signurl_minter_issuer_is(m, "aws") && !signurl_minter_issuer_is(m, "aw") &&
           !signurl_minter_issuer_is("cli", "cli") && !signurl_minter_issuer_is("aws.x", "aws"),
       "the issuer of a minter id");
}

int main(void)
{
    char *k1, *k2;
    if (!mkdtemp(tmpdir))
        return 1;
    k1 = write_key("k1.pem", EVP_PKEY_ED25519, 0600);
    k2 = write_key("k2.pem", EVP_PKEY_ED25519, 0600);
    test_parse();
    test_sign_verify(k1, k2);
    test_keys(k1);
    test_store();
    test_mint_parse();
    test_minter();
    unlink(k1);
    unlink(k2);
    rmdir(tmpdir);
    free(k1);
    free(k2);
    return tap_done();
}
