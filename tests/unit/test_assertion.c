/*
 * Unit tests of assertion.c and its config: every config error of "assertion"
 * and "caller_assertion", the key checks (mode, type, curve, previous keys),
 * the kid, the claims builder for the AWS and Cognito token shapes, the ES256
 * signature verified by baton's own JWS verifier against the published JWKS,
 * and the per-worker cache (hit, expiry margin, a different token, step or
 * execution value misses, an uncacheable key, an oversize assertion).
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "assertion.h"
#include "authn.h"
#include "config.h"
#include "diag.h"
#include "jws.h"
#include "util.h"
#include "tap.h"

#define BASE_HEAD                                                                                            \
    "{\"issuers\":[{\"name\":\"aws\",\"issuer\":\"https://a.example\",\"jwks_uri\":\"https://a.example/k\"," \
    "\"audiences\":[\"x\"]}],\"upstreams\":[{\"name\":\"u\",\"url\":\"https://u.example\""

static struct baton_config *load(const char *up_extra, const char *root_extra, struct diags *d)
{
    char *text = xasprintf(BASE_HEAD "%s}]%s}", up_extra, root_extra);
    struct baton_config *cfg = config_load_buffer(text, strlen(text), "/etc/baton/baton.json", d);
    free(text);
    return cfg;
}

static void fails(const char *up_extra, const char *root_extra, const char *want, const char *name)
{
    struct diags d = DIAGS_INIT;
    struct baton_config *cfg = load(up_extra, root_extra, &d);
    bool hit = false;
    for (size_t k = 0; k < d.n; k++)
        if (strstr(d.v[k].msg, want) && d.v[k].line > 0)
            hit = true;
    if (!ok(!cfg && hit, "config error: %s", name))
        for (size_t k = 0; k < d.n; k++)
            tap_diag("  %d:%d: %s", d.v[k].line, d.v[k].col, d.v[k].msg);
    config_free(cfg);
    diags_free(&d);
}

static void test_config(void)
{
    struct diags d = DIAGS_INIT;
    struct baton_config *cfg;

    cfg = load("", ",\"assertion\":{\"issuer\":\"https://gw.example\"}", &d);
    ok(cfg && cfg->assertion.enabled, "assertion with only an issuer loads");
    if (cfg) {
        is_int(cfg->assertion.lifetime_s, 300, "lifetime_s defaults to 300");
        is_str(cfg->assertion.header, "x-baton-assertion", "header defaults to x-baton-assertion");
        ok(cfg->assertion.signing_key == NULL, "no signing_key: generated at start");
        ok(cfg->upstreams[0].caller_assertion, "caller_assertion defaults to true with assertion");
    }
    config_free(cfg);
    cfg = load("", "", &d);
    ok(cfg && !cfg->assertion.enabled && !cfg->upstreams[0].caller_assertion,
       "no assertion: caller_assertion defaults to false");
    config_free(cfg);
    cfg = load(
        ",\"caller_assertion\":false",
        ",\"assertion\":{\"issuer\":\"https://gw.example\",\"signing_key\":\"k.pem\","
        "\"lifetime_s\":30,\"header\":\"X-Caller-Proof\",\"previous_keys\":[\"old.pem\",\"/abs/o2.pem\"]}",
        &d);
    ok(cfg != NULL, "every assertion key at its bound loads");
    if (cfg) {
        ok(!cfg->upstreams[0].caller_assertion, "caller_assertion false is kept");
        is_str(cfg->assertion.signing_key, "/etc/baton/k.pem",
               "signing_key resolves against the config dir");
        is_str(cfg->assertion.previous_keys[0], "/etc/baton/old.pem", "previous_keys resolve too");
        is_str(cfg->assertion.previous_keys[1], "/abs/o2.pem", "absolute previous_keys stay");
        is_int(cfg->assertion.lifetime_s, 30, "lifetime_s 30 is the lower bound");
    }
    config_free(cfg);
    cfg = load("", ",\"assertion\":{\"issuer\":\"https://gw.example\",\"lifetime_s\":3600}", &d);
    ok(cfg != NULL, "lifetime_s 3600 is the upper bound");
    config_free(cfg);
    diags_free(&d);

    fails("", ",\"assertion\":true", "expected an object", "assertion is not an object");
    fails("", ",\"assertion\":{}", "missing required key \"issuer\"", "issuer is required");
    fails("", ",\"assertion\":{\"issuer\":\"gw\"}", "http(s) URL", "issuer is not a URL");
    fails("", ",\"assertion\":{\"issuer\":\"https://a b\"}", "without spaces",
          "issuer with a space");
    fails("", ",\"assertion\":{\"issuer\":7}", "expected a string", "issuer is not a string");
    fails("", ",\"assertion\":{\"issuer\":\"https://g\",\"lifetime_s\":29}",
          "out of range 30..3600", "lifetime_s 29");
    fails("", ",\"assertion\":{\"issuer\":\"https://g\",\"lifetime_s\":3601}",
          "out of range 30..3600", "lifetime_s 3601");
    fails("", ",\"assertion\":{\"issuer\":\"https://g\",\"lifetime_s\":\"300\"}",
          "expected an integer", "lifetime_s is a string");
    fails("", ",\"assertion\":{\"issuer\":\"https://g\",\"signing_key\":\"\"}", "must not be empty",
          "signing_key empty");
    fails("", ",\"assertion\":{\"issuer\":\"https://g\",\"header\":\"Connection\"}", "hop-by-hop",
          "header Connection is hop-by-hop");
    fails("", ",\"assertion\":{\"issuer\":\"https://g\",\"header\":\"te\"}", "hop-by-hop",
          "header TE");
    fails("", ",\"assertion\":{\"issuer\":\"https://g\",\"header\":\"Transfer-Encoding\"}",
          "hop-by-hop", "header Transfer-Encoding");
    fails("", ",\"assertion\":{\"issuer\":\"https://g\",\"header\":\"Upgrade\"}", "hop-by-hop",
          "header Upgrade");
    fails("", ",\"assertion\":{\"issuer\":\"https://g\",\"header\":\"Content-Length\"}", "framing",
          "header Content-Length is framing");
    fails("", ",\"assertion\":{\"issuer\":\"https://g\",\"header\":\"host\"}", "framing",
          "header Host");
    fails("", ",\"assertion\":{\"issuer\":\"https://g\",\"header\":\"Authorization\"}",
          "baton sets itself", "header Authorization");
    fails("", ",\"assertion\":{\"issuer\":\"https://g\",\"header\":\"X-Serverless-Authorization\"}",
          "baton sets itself", "header X-Serverless-Authorization");
    fails("", ",\"assertion\":{\"issuer\":\"https://g\",\"header\":\"X-Request-Id\"}",
          "baton sets itself", "header X-Request-Id");
    fails("", ",\"assertion\":{\"issuer\":\"https://g\",\"header\":\"X-Forwarded-For\"}",
          "baton sets itself", "header X-Forwarded-For");
    fails("", ",\"assertion\":{\"issuer\":\"https://g\",\"header\":\"x bad\"}", "not a header name",
          "header with a space");
    fails("", ",\"assertion\":{\"issuer\":\"https://g\",\"header\":\"\"}", "must not be empty",
          "header empty");
    fails("", ",\"assertion\":{\"issuer\":\"https://g\",\"previous_keys\":\"a.pem\"}",
          "expected an array", "previous_keys not an array");
    fails(
        "",
        ",\"assertion\":{\"issuer\":\"https://g\",\"previous_keys\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\"]}",
        "at most 8 entries", "previous_keys over 8");
    fails("", ",\"assertion\":{\"issuer\":\"https://g\",\"previous_keys\":[\"a.pem\",\"a.pem\"]}",
          "listed twice", "previous_keys duplicate");
    fails("", ",\"assertion\":{\"issuer\":\"https://g\",\"previous_keys\":[\"\"]}",
          "must not be empty", "previous_keys empty entry");
    fails(
        "",
        ",\"assertion\":{\"issuer\":\"https://g\",\"signing_key\":\"k.pem\",\"previous_keys\":[\"k.pem\"]}",
        "cannot also be a previous key", "the signing key listed as previous");
    fails("", ",\"assertion\":{\"issuer\":\"https://g\",\"lifetme_s\":300}",
          "did you mean \"lifetime_s\"", "unknown key in assertion");
    fails(",\"caller_assertion\":\"yes\"", ",\"assertion\":{\"issuer\":\"https://g\"}",
          "expected true or false", "caller_assertion not a boolean");
    fails(",\"caller_assertion\":true", "", "needs the top-level \"assertion\"",
          "caller_assertion true without assertion");
}

/* ------------------------------------------------------------------ keys */

static char dir[] = "/tmp/baton-assertion-XXXXXX";

static char *write_key(const char *name, EVP_PKEY *k, bool pub, mode_t mode)
{
    char *path = xasprintf("%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (pub)
        PEM_write_PUBKEY(f, k);
    else
        PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    chmod(path, mode);
    return path;
}

static struct assertion_signer *signer(const char *key, const char *prev0, const char *prev1,
                                       const struct assertion_signer *inherit, char *err,
                                       size_t errlen)
{
    char *prevs[2] = {(char *)prev0, (char *)prev1};
    struct cfg_assertion a = {.enabled = true,
                              .issuer = "https://gw.example",
                              .signing_key = (char *)key,
                              .lifetime_s = 300,
                              .header = "x-baton-assertion",
                              .previous_keys = prevs,
                              .n_previous_keys = prev1   ? 2
                                                 : prev0 ? 1
                                                         : 0};
    err[0] = '\0';
    return assertion_signer_new(&a, inherit, err, errlen);
}

static EVP_PKEY *p256, *p256_old;
static char *p256_path, *old_pub_path;

static void test_keys(void)
{
    char err[512];
    EVP_PKEY *rsa = EVP_RSA_gen(2048), *p384 = EVP_EC_gen("P-384");
    char *loose = write_key("loose.pem", p256, false, 0644);
    char *rsa_path = write_key("rsa.pem", rsa, false, 0600);
    char *p384_path = write_key("p384.pem", p384, false, 0600);
    char *pub_as_priv = write_key("pub.pem", p256, true, 0600);
    char *priv_as_prev = write_key("priv-prev.pem", p256_old, false, 0600);
    char *self_pub = write_key("self.pem", p256, true, 0644);
    struct assertion_signer *s, *s2;
    json_t *jwks;

    ok(!signer(loose, NULL, NULL, NULL, err, sizeof(err)) && strstr(err, "mode 644"),
       "a signing key readable by others is refused: %s", err);
    ok(!signer(rsa_path, NULL, NULL, NULL, err, sizeof(err)) && strstr(err, "not an EC P-256 key"),
       "an RSA signing key is refused: %s", err);
    ok(!signer(p384_path, NULL, NULL, NULL, err, sizeof(err)) && strstr(err, "not an EC P-256 key"),
       "a P-384 signing key is refused: %s", err);
    ok(!signer(pub_as_priv, NULL, NULL, NULL, err, sizeof(err)) &&
           strstr(err, "not an unencrypted PEM private key"),
       "a public key as signing key is refused: %s", err);
    ok(!signer("/nonexistent/k.pem", NULL, NULL, NULL, err, sizeof(err)) &&
           strstr(err, "cannot open"),
       "a missing signing key is refused: %s", err);
    ok(!signer(p256_path, priv_as_prev, NULL, NULL, err, sizeof(err)) &&
           strstr(err, "not a PEM public key"),
       "a private key in previous_keys is refused: %s", err);
    ok(!signer(p256_path, rsa_path, NULL, NULL, err, sizeof(err)),
       "an unreadable-as-public previous key is refused: %s", err);
    ok(!signer(p256_path, self_pub, NULL, NULL, err, sizeof(err)) &&
           strstr(err, "as the signing key"),
       "the signing key's own public key in previous_keys is refused: %s", err);
    ok(!signer(p256_path, old_pub_path, old_pub_path, NULL, err, sizeof(err)) &&
           strstr(err, "twice"),
       "the same previous key twice is refused: %s", err);

    s = signer(p256_path, old_pub_path, NULL, NULL, err, sizeof(err));
    ok(s != NULL, "a 0600 P-256 key with one previous key loads: %s", err);
    if (s) {
        size_t len;
        const char *doc = assertion_signer_jwks(s, &len);
        jwks = json_loadb(doc, len, 0, NULL);
        is_int(json_array_size(json_object_get(jwks, "keys")), 2,
               "the JWKS publishes the current and the previous key");
        is_str(json_string_value(
                   json_object_get(json_array_get(json_object_get(jwks, "keys"), 0), "kid")),
               assertion_signer_kid(s), "the first JWK is the signing key");
        is_str(json_string_value(
                   json_object_get(json_array_get(json_object_get(jwks, "keys"), 0), "alg")),
               "ES256", "its alg is ES256");
        is_int(strlen(assertion_signer_kid(s)), 43, "the kid is a base64url SHA-256 (RFC 7638)");
        ok(json_object_get(json_array_get(json_object_get(jwks, "keys"), 1), "d") == NULL &&
               json_object_get(json_array_get(json_object_get(jwks, "keys"), 0), "d") == NULL,
           "no private member is published");
        json_decref(jwks);
        s2 = signer(p256_path, NULL, NULL, s, err, sizeof(err));
        is_str(assertion_signer_kid(s2), assertion_signer_kid(s),
               "a key file gives the same kid on reload");
        assertion_signer_free(s2);
    }
    {
        struct assertion_signer *g1 = signer(NULL, NULL, NULL, NULL, err, sizeof(err));
        struct assertion_signer *g2 = signer(NULL, old_pub_path, NULL, g1, err, sizeof(err));
        struct assertion_signer *g3 = signer(NULL, NULL, NULL, NULL, err, sizeof(err));
        struct assertion_signer *f = signer(p256_path, NULL, NULL, g1, err, sizeof(err));
        ok(g1 && g2 && g3 && f, "generated keys build");
        if (g1 && g2 && g3 && f) {
            is_str(assertion_signer_kid(g2), assertion_signer_kid(g1),
                   "a reload keeps the generated key");
            ok(strcmp(assertion_signer_kid(g3), assertion_signer_kid(g1)) != 0,
               "a fresh start generates a new key");
            ok(strcmp(assertion_signer_kid(f), assertion_signer_kid(g1)) != 0,
               "a configured key replaces a generated one on reload");
        }
        assertion_signer_free(g1);
        assertion_signer_free(g2);
        assertion_signer_free(g3);
        assertion_signer_free(f);
    }
    assertion_signer_free(s);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(p384);
    free(loose);
    free(rsa_path);
    free(p384_path);
    free(pub_as_priv);
    free(priv_as_prev);
    free(self_pub);
}

/* ---------------------------------------------------------------- claims */

static struct cfg_issuer aws_iss = {
    .name = "aws", .issuer = "https://abc.tokens.sts.global.api.aws", .audience_claim = "aud"};
static struct cfg_issuer cog_iss = {
    .name = "cognito",
    .issuer = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_X",
    .audience_claim = "client_id"};
static struct cfg_assertion acfg = {.enabled = true,
                                    .issuer = "https://gw.example",
                                    .lifetime_s = 300,
                                    .header = "x-baton-assertion"};

static void fill_aws(struct authn_result *ar, json_t **claims, int64_t exp, char fp)
{
    memset(ar, 0, sizeof(*ar));
    *claims = json_pack("{s:s, s:s, s:I, s:s, s:{s:s}}", "iss", aws_iss.issuer, "sub",
                        "arn:aws:iam::123456789012:role/sfn-billing", "exp", (json_int_t)exp, "jti",
                        "j-1", "https://sts.amazonaws.com/", "aws_account", "123456789012");
    ar->issuer = &aws_iss;
    ar->claims = *claims;
    ar->sub = "arn:aws:iam::123456789012:role/sfn-billing";
    ar->jti = "j-1";
    ar->aws_account = "123456789012";
    memset(ar->fingerprint, fp, 64);
    ar->fingerprint[64] = '\0';
}

static const char *const STEP = "billing-reconcile"; /* one address: the cache keys steps by it */
static const char *hname[] = {"X-Sfn-Execution"};
static const char *hval_a[] = {"arn:aws:states:us-east-1:123456789012:execution:billing:run-1"};
static const char *hval_b[] = {"arn:aws:states:us-east-1:123456789012:execution:billing:run-2"};
static size_t hlen[1];

static struct assertion_input input(const struct authn_result *ar, const char *step,
                                    const char **vals, int64_t now)
{
    hlen[0] = strlen(vals[0]);
    return (struct assertion_input){.cfg = &acfg,
                                    .audience = "https://billing.run.app",
                                    .caller = ar,
                                    .cognito = ar->issuer == &cog_iss,
                                    .step = step,
                                    .policy_file = "/etc/baton/policies/billing.json",
                                    .policy_sha256 = "ab12",
                                    .dry_run = false,
                                    .header_names = hname,
                                    .header_values = vals,
                                    .header_lens = hlen,
                                    .n_headers = 1,
                                    .audit_log = "0123456789abcdef0123456789abcdef",
                                    .now_s = now};
}

static void test_claims(void)
{
    struct authn_result ar;
    json_t *cl, *c;
    struct assertion_input in;

    fill_aws(&ar, &cl, 1000000 + 3600, 'a');
    in = input(&ar, STEP, hval_a, 1000000);
    c = assertion_claims(&in);
    is_str(json_string_value(json_object_get(c, "iss")), "https://gw.example",
           "iss is the configured issuer");
    is_str(json_string_value(json_object_get(c, "aud")), "https://billing.run.app",
           "aud is the upstream audience");
    is_int(json_integer_value(json_object_get(c, "iat")), 1000000, "iat is now");
    is_int(json_integer_value(json_object_get(c, "exp")), 1000300,
           "exp is iat + lifetime_s when the token lives longer");
    is_str(json_string_value(json_object_get(c, "sub")),
           "arn:aws:iam::123456789012:role/sfn-billing",
           "sub is the caller's role ARN (AWS outbound identity token)");
    is_str(json_string_value(json_object_get(json_object_get(c, "caller"), "aws_account")),
           "123456789012", "caller.aws_account");
    is_str(json_string_value(json_object_get(json_object_get(c, "caller"), "iss")), aws_iss.issuer,
           "caller.iss");
    is_str(json_string_value(json_object_get(json_object_get(c, "caller"), "jti")), "j-1",
           "caller.jti");
    is_int(strlen(json_string_value(json_object_get(json_object_get(c, "caller"), "token_sha256"))),
           64, "caller.token_sha256");
    ok(!json_object_get(json_object_get(c, "caller"), "client_id"),
       "no client_id member when the token has none");
    is_str(json_string_value(json_object_get(c, "step")), "billing-reconcile", "step");
    is_str(json_string_value(json_object_get(json_object_get(c, "policy"), "sha256")), "ab12",
           "policy.sha256");
    is_str(json_string_value(json_object_get(json_object_get(c, "policy"), "file")),
           "/etc/baton/policies/billing.json", "policy.file");
    is_str(json_string_value(json_object_get(json_object_get(c, "headers"), "X-Sfn-Execution")),
           hval_a[0], "headers carry the matched X-Sfn-Execution");
    ok(json_is_false(json_object_get(c, "dry_run")), "dry_run false for an enforcing step");
    is_str(json_string_value(json_object_get(c, "audit_log")), "0123456789abcdef0123456789abcdef",
           "audit_log");
    ok(!json_object_get(c, "request_id") && !json_object_get(c, "path"),
       "nothing request-specific");
    json_decref(c);
    json_decref(cl);

    fill_aws(&ar, &cl, 1000000 + 42, 'a');
    in = input(&ar, STEP, hval_a, 1000000);
    in.dry_run = true;
    c = assertion_claims(&in);
    is_int(json_integer_value(json_object_get(c, "exp")), 1000042,
           "exp never exceeds the caller token's exp");
    ok(json_is_true(json_object_get(c, "dry_run")), "dry_run true for a dry_run step");
    json_decref(c);
    json_decref(cl);

    /* Cognito client-credentials access token: no aud, client_id */
    memset(&ar, 0, sizeof(ar));
    cl = json_pack("{s:s, s:s, s:s, s:I, s:s}", "iss", cog_iss.issuer, "sub", "5kq8example",
                   "client_id", "5kq8example", "exp", (json_int_t)2000000, "token_use", "access");
    ar.issuer = &cog_iss;
    ar.claims = cl;
    ar.sub = "5kq8example";
    memset(ar.fingerprint, 'c', 64);
    in = input(&ar, STEP, hval_a, 1000000);
    c = assertion_claims(&in);
    is_str(json_string_value(json_object_get(c, "sub")), "5kq8example",
           "Cognito: sub is the client_id");
    is_str(json_string_value(json_object_get(json_object_get(c, "caller"), "client_id")),
           "5kq8example", "Cognito: caller.client_id");
    ok(!json_object_get(json_object_get(c, "caller"), "aws_account"), "Cognito: no aws_account");
    json_decref(c);
    json_decref(cl);

    {
        static const char *latin[] = {"caf\xe9"};
        fill_aws(&ar, &cl, 2000000, 'a');
        in = input(&ar, "s", latin, 1000000);
        c = assertion_claims(&in);
        is_str(json_string_value(json_object_get(json_object_get(c, "headers"), "X-Sfn-Execution")),
               "caf\xc3\xa9", "a non-UTF-8 header byte is read as Latin-1");
        json_decref(c);
        json_decref(cl);
    }
    memset(&ar, 0, sizeof(ar));
    in = input(&ar, "s", hval_a, 1);
    ok(assertion_claims(&in) == NULL, "no claims without a verified caller");
}

/* Verifies `jws` with baton's own verifier against the signer's JWKS; returns the claims (owned). */
static json_t *verify(const struct assertion_signer *s, const char *jws, size_t n,
                      const char **typ_out)
{
    size_t len;
    const char *doc = assertion_signer_jwks(s, &len);
    char err[256];
    struct jws_keyset *ks = jws_keyset_parse(doc, len, err, sizeof(err));
    struct jws_token t = JWS_TOKEN_INIT;
    json_t *claims = NULL;
    static char typ[64];

    if (ks && jws_parse(jws, n, 0, &t) == REASON_ALLOWED) {
        const struct jws_key *k = jws_keyset_find(ks, t.kid, t.kid_len);
        if (k && jws_verify(&t, k, 1u << JWS_ES256) == REASON_ALLOWED)
            claims = json_incref(t.claims);
        snprintf(typ, sizeof(typ), "%s", t.typ ? t.typ : "");
        *typ_out = typ;
    }
    jws_token_clear(&t);
    jws_keyset_unref(ks);
    return claims;
}

static void test_sign_and_cache(void)
{
    char err[512];
    struct assertion_signer *s = signer(p256_path, old_pub_path, NULL, NULL, err, sizeof(err));
    struct assertion_cache *c = assertion_cache_new();
    struct assertion_cache_stats st;
    struct authn_result ar, ar2;
    json_t *cl, *cl2, *v;
    struct assertion_input in;
    const char *line, *typ = "";
    char *first;
    size_t len, hl = strlen("x-baton-assertion: ");
    int64_t now = 1000000;

    fill_aws(&ar, &cl, now + 3600, 'a');
    in = input(&ar, STEP, hval_a, now);
    line = assertion_cache_line(c, s, &in, &len, err, sizeof(err));
    ok(line && !strncmp(line, "x-baton-assertion: ", hl) && !strcmp(line + len - 2, "\r\n"),
       "the cache returns a ready header line: %s", err);
    v = line ? verify(s, line + hl, len - hl - 2, &typ) : NULL;
    ok(v != NULL, "the assertion verifies with baton's ES256 verifier against the published JWKS");
    is_str(typ, ASSERTION_TYP, "typ is " ASSERTION_TYP);
    is_str(json_string_value(json_object_get(v, "sub")),
           "arn:aws:iam::123456789012:role/sfn-billing", "the signed claims are the builder's");
    json_decref(v);
    first = xstrndup(line, len);

    in.now_s = now + 100;
    line = assertion_cache_line(c, s, &in, &len, err, sizeof(err));
    assertion_cache_stats(c, &st);
    ok(st.hits == 1 && st.signed_ == 1 && line && !strcmp(line, first),
       "the same token, step and values hit");

    /* refresh margin: 300 s lifetime -> 30 s; signed at now, exp now+300 */
    is_int(assertion_refresh_margin_s(300), 30, "margin of a 300 s lifetime is 30 s");
    is_int(assertion_refresh_margin_s(30), 5, "margin floor 5 s");
    is_int(assertion_refresh_margin_s(3600), 60, "margin cap 60 s");
    in.now_s = now + 269;
    assertion_cache_line(c, s, &in, &len, err, sizeof(err));
    assertion_cache_stats(c, &st);
    ok(st.signed_ == 1, "31 s before exp it still hits");
    in.now_s = now + 270;
    line = assertion_cache_line(c, s, &in, &len, err, sizeof(err));
    assertion_cache_stats(c, &st);
    ok(st.signed_ == 2 && line && strcmp(line, first) != 0, "30 s before exp it is signed again");
    v = verify(s, line + hl, len - hl - 2, &typ);
    is_int(json_integer_value(json_object_get(v, "iat")), now + 270, "the new one has a new iat");
    json_decref(v);

    in = input(&ar, "other-step", hval_a, now + 271);
    assertion_cache_line(c, s, &in, &len, err, sizeof(err));
    assertion_cache_stats(c, &st);
    ok(st.signed_ == 3, "a different step misses");
    in = input(&ar, STEP, hval_b, now + 271);
    line = assertion_cache_line(c, s, &in, &len, err, sizeof(err));
    assertion_cache_stats(c, &st);
    ok(st.signed_ == 4, "a different execution value misses");
    v = verify(s, line + hl, len - hl - 2, &typ);
    is_str(json_string_value(json_object_get(json_object_get(v, "headers"), "X-Sfn-Execution")),
           hval_b[0], "and carries its own execution ARN");
    json_decref(v);
    in = input(&ar, STEP, hval_a, now + 271);
    assertion_cache_line(c, s, &in, &len, err, sizeof(err));
    assertion_cache_stats(c, &st);
    ok(st.signed_ == 4 && st.hits == 3, "the first execution value still hits");
    fill_aws(&ar2, &cl2, now + 3600, 'b');
    in = input(&ar2, STEP, hval_a, now + 271);
    assertion_cache_line(c, s, &in, &len, err, sizeof(err));
    assertion_cache_stats(c, &st);
    ok(st.signed_ == 5, "a different caller token misses");

    /* a caller token expiring within the margin: signed every time, exp = the token's */
    json_decref(cl2);
    fill_aws(&ar2, &cl2, now + 10, 'd');
    in = input(&ar2, STEP, hval_a, now);
    line = assertion_cache_line(c, s, &in, &len, err, sizeof(err));
    v = verify(s, line + hl, len - hl - 2, &typ);
    is_int(json_integer_value(json_object_get(v, "exp")), now + 10,
           "exp is the caller token's when sooner");
    json_decref(v);
    assertion_cache_line(c, s, &in, &len, err, sizeof(err));
    assertion_cache_stats(c, &st);
    ok(st.signed_ == 7, "a token about to expire is signed on every request, never served stale");

    {
        /* over the cache key cap: not cached, still correct */
        size_t big = 5000;
        char *val = xmalloc(big + 1);
        const char *vals[1] = {val};
        memset(val, 'e', big);
        val[big] = '\0';
        in = input(&ar, STEP, vals, now);
        line = assertion_cache_line(c, s, &in, &len, err, sizeof(err));
        ok(line != NULL, "a 5,000-byte value is signed (uncached)");
        line = assertion_cache_line(c, s, &in, &len, err, sizeof(err));
        assertion_cache_stats(c, &st);
        ok(line && st.signed_ == 9, "and signed again next time");
        /* over ASSERTION_MAX_BYTES: refused, counted */
        free(val);
        big = 9000;
        val = xmalloc(big + 1);
        vals[0] = val;
        memset(val, 'e', big);
        val[big] = '\0';
        in = input(&ar, STEP, vals, now);
        line = assertion_cache_line(c, s, &in, &len, err, sizeof(err));
        assertion_cache_stats(c, &st);
        ok(!line && st.failures == 1 && strstr(err, "would exceed"),
           "an assertion over 8 KiB is refused: %s", err);
        free(val);
    }
    free(first);
    json_decref(cl);
    json_decref(cl2);
    assertion_cache_free(c);
    assertion_signer_free(s);
}

int main(void)
{
    char *cmd;
    if (!mkdtemp(dir))
        return 1;
    p256 = EVP_EC_gen("P-256");
    p256_old = EVP_EC_gen("P-256");
    p256_path = write_key("p256.pem", p256, false, 0600);
    old_pub_path = write_key("old.pub.pem", p256_old, true, 0644);

    test_config();
    test_keys();
    test_claims();
    test_sign_and_cache();

    EVP_PKEY_free(p256);
    EVP_PKEY_free(p256_old);
    free(p256_path);
    free(old_pub_path);
    cmd = xasprintf("rm -rf '%s'", dir);
    if (system(cmd) != 0)
        tap_diag("could not remove %s", dir);
    free(cmd);
    return tap_done();
}
