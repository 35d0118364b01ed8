/*
 * test_google.c: the signing and key-file side of google.c and mint.c, with
 * no network: assertions and local ID tokens checked byte by byte (header,
 * claims, RS256 signature verified with OpenSSL), RFC 7638 kids and the
 * public JWK set, key files refused for their permissions or content, and
 * the text a platform engineer reads when an IAM binding is missing.
 *
 * Run with `--drive ...` it is instead the driver of the end-to-end tests
 * (tests/e2e/test_google_*.py): it runs the real identity cache and credential
 * source against the Google stand-ins through http_client on its own
 * background event_base, polls identity_get, and prints one JSON line per
 * poll and a final line with readiness, detail and stats. It prints token
 * claims (the payload), never a whole token.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "b64.h"
#include "config.h"
#include "google.h"
#include "http_client.h"
#include "identity.h"
#include "mint.h"
#include "tap.h"
#include "util.h"

/* ------------------------------------------------------------- helpers */

static char tmpdir[64];

static char *tmp_path(const char *name)
{
    return xasprintf("%s/%s", tmpdir, name);
}

static char *pem_of(EVP_PKEY *k)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *data, *out;
    long n;
    PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
    n = BIO_get_mem_data(b, &data);
    out = xstrndup(data, (size_t)n);
    BIO_free(b);
    return out;
}

/* Splits a compact JWT, decodes header and payload; verifies RS256 with pub when given. */
static int jwt_open(const char *tok, EVP_PKEY *pub, json_t **hdr, json_t **claims, int *sig_ok)
{
    const char *d1 = strchr(tok, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    unsigned char buf[8192], sig[1024];
    size_t n, slen;
    *hdr = *claims = NULL;
    *sig_ok = 0;
    if (!d2 || strchr(d2 + 1, '.'))
        return -1;
    if (b64url_decode(tok, (size_t)(d1 - tok), buf, &n) != 0)
        return -1;
    *hdr = json_loadb((char *)buf, n, 0, NULL);
    if (b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), buf, &n) != 0)
        return -1;
    *claims = json_loadb((char *)buf, n, 0, NULL);
    if (pub && strlen(d2 + 1) < 1300 && b64url_decode(d2 + 1, strlen(d2 + 1), sig, &slen) == 0) {
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        *sig_ok = EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, pub) == 1 &&
                  EVP_DigestVerify(ctx, sig, slen, (const unsigned char *)tok,
                                   (size_t)(d2 - tok)) == 1;
        EVP_MD_CTX_free(ctx);
    }
    return *hdr && *claims ? 0 : -1;
}

static const char *jstr(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static long long jint(json_t *o, const char *k)
{
    return (long long)json_integer_value(json_object_get(o, k));
}

/* ------------------------------------------------------------- mint.c */

static void test_mint(void)
{
    EVP_PKEY *pk = EVP_RSA_gen(2048), *small = EVP_RSA_gen(1024), *ec = EVP_EC_gen("P-256");
    char *pem = pem_of(pk), *spem = pem_of(small), *ecpem = pem_of(ec);
    char err[256];
    struct mint_key *k = mint_key_from_pem(pem, strlen(pem), "kid-from-file", err, sizeof err);
    json_t *h = NULL, *c = NULL;
    int sig_ok;
    char *tok;

    ok(k != NULL, "an RSA-2048 PKCS#8 PEM loads");
    is_str(mint_key_kid(k), "kid-from-file", "an explicit kid is kept");

    tok = mint_sa_assertion(k, "sa@p.iam.gserviceaccount.com",
                            "https://oauth2.googleapis.com/token", "https://svc.run.app", NULL,
                            1700000000, err, sizeof err);
    ok(tok && jwt_open(tok, pk, &h, &c, &sig_ok) == 0, "ID-token assertion is a compact JWT");
    ok(sig_ok, "assertion signature verifies with the key (RS256)");
    is_str(jstr(h, "alg"), "RS256", "assertion header alg RS256");
    is_str(jstr(h, "typ"), "JWT", "assertion header typ JWT");
    is_str(jstr(h, "kid"), "kid-from-file", "assertion header kid is private_key_id");
    is_str(jstr(c, "iss"), "sa@p.iam.gserviceaccount.com", "assertion iss is client_email");
    is_str(jstr(c, "aud"), "https://oauth2.googleapis.com/token", "assertion aud is token_uri");
    is_str(jstr(c, "target_audience"), "https://svc.run.app", "assertion target_audience");
    is_int(jint(c, "iat"), 1700000000, "assertion iat");
    is_int(jint(c, "exp"), 1700003600, "assertion exp = iat + 3600");
    ok(json_object_get(c, "scope") == NULL, "ID-token assertion has no scope");
    is_int(json_object_size(c), 5, "ID-token assertion has exactly 5 claims");
    json_decref(h);
    json_decref(c);
    free(tok);

    tok = mint_sa_assertion(k, "sa@p.iam.gserviceaccount.com",
                            "https://oauth2.googleapis.com/token", NULL, GOOGLE_SCOPE, 1700000000,
                            err, sizeof err);
    ok(tok && jwt_open(tok, pk, &h, &c, &sig_ok) == 0 && sig_ok, "access-token assertion verifies");
    is_str(jstr(c, "scope"), "https://www.googleapis.com/auth/cloud-platform",
           "assertion scope cloud-platform");
    ok(json_object_get(c, "target_audience") == NULL,
       "access-token assertion has no target_audience");
    json_decref(h);
    json_decref(c);
    free(tok);

    ok(mint_sa_assertion(k, "a@b.c", "https://t", "aud", GOOGLE_SCOPE, 1, err, sizeof err) == NULL,
       "assertion with both target_audience and scope refused");
    ok(mint_sa_assertion(k, "a@b.c", "https://t", NULL, NULL, 1, err, sizeof err) == NULL,
       "assertion with neither refused");

    tok = mint_local_id_token(k, "https://baton.local", "https://svc.run.app", "baton@local",
                              1700000000, 1700003600, err, sizeof err);
    ok(tok && jwt_open(tok, pk, &h, &c, &sig_ok) == 0 && sig_ok, "local ID token verifies");
    is_str(jstr(c, "iss"), "https://baton.local", "local token iss");
    is_str(jstr(c, "aud"), "https://svc.run.app", "local token aud");
    is_str(jstr(c, "sub"), "baton@local", "local token sub");
    is_str(jstr(c, "email"), "baton@local", "local token email");
    ok(json_is_true(json_object_get(c, "email_verified")), "local token email_verified true");
    is_int(jint(c, "exp") - jint(c, "iat"), 3600, "local token lifetime");
    is_str(jstr(h, "kid"), "kid-from-file", "local token header kid");
    json_decref(h);
    json_decref(c);
    free(tok);
    mint_key_free(k);

    /* A generated key: kid is the RFC 7638 thumbprint of the published JWK. */
    k = mint_key_generate(err, sizeof err);
    ok(k != NULL, "a key is generated");
    {
        char *jwks = mint_key_jwks_json(k), *thumb_in, thumb[64];
        json_t *set = json_loads(jwks, 0, NULL),
               *jwk = json_array_get(json_object_get(set, "keys"), 0);
        unsigned char d[32];
        is_int(json_array_size(json_object_get(set, "keys")), 1, "JWK set holds one key");
        is_str(jstr(jwk, "kty"), "RSA", "JWK kty RSA");
        is_str(jstr(jwk, "alg"), "RS256", "JWK alg RS256");
        is_str(jstr(jwk, "use"), "sig", "JWK use sig");
        ok(json_object_get(jwk, "d") == NULL && json_object_get(jwk, "p") == NULL,
           "JWK has no private member");
        thumb_in = xasprintf("{\"e\":\"%s\",\"kty\":\"RSA\",\"n\":\"%s\"}", jstr(jwk, "e"),
                             jstr(jwk, "n"));
        sha256_raw(thumb_in, strlen(thumb_in), d);
        b64url_encode(d, 32, thumb);
        is_str(jstr(jwk, "kid"), thumb, "generated kid is the RFC 7638 thumbprint");
        is_str(mint_key_kid(k), thumb, "mint_key_kid matches the JWK");
        free(thumb_in);
        json_decref(set);
        free(jwks);
    }
    mint_key_free(k);

    ok(mint_key_from_pem(spem, strlen(spem), NULL, err, sizeof err) == NULL && strstr(err, "2048"),
       "RSA-1024 key refused (%s)", err);
    ok(mint_key_from_pem(ecpem, strlen(ecpem), NULL, err, sizeof err) == NULL && strstr(err, "RSA"),
       "EC key refused for RS256");
    ok(mint_key_from_pem("garbage", 7, NULL, err, sizeof err) == NULL, "garbage refused");
    ok(mint_key_from_pem("", 0, NULL, err, sizeof err) == NULL, "empty PEM refused");
    {
        BIO *b = BIO_new(BIO_s_mem());
        char *data, *enc;
        long n;
        PEM_write_bio_PKCS8PrivateKey(b, pk, EVP_aes_256_cbc(), NULL, 0, NULL, (void *)"secret");
        n = BIO_get_mem_data(b, &data);
        enc = xstrndup(data, (size_t)n);
        ok(mint_key_from_pem(enc, strlen(enc), NULL, err, sizeof err) == NULL,
           "encrypted PEM refused without prompting for a passphrase");
        free(enc);
        BIO_free(b);
    }
    free(pem);
    free(spem);
    free(ecpem);
    EVP_PKEY_free(pk);
    EVP_PKEY_free(small);
    EVP_PKEY_free(ec);
}

/* ------------------------------------------------------------- key files */

static char *write_file(const char *name, const char *text, mode_t mode)
{
    char *p = tmp_path(name);
    FILE *f = fopen(p, "w");
    fputs(text, f);
    fclose(f);
    chmod(p, mode);
    return p;
}

static char *key_json(const char *pem, const char *drop, const char *type)
{
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "type", type, "project_id", "p",
                          "private_key_id", "abc123", "private_key", pem, "client_email",
                          "sa@p.iam.gserviceaccount.com", "token_uri",
                          "https://oauth2.googleapis.com/token");
    char *s;
    if (drop)
        json_object_del(j, drop);
    s = json_dumps(j, JSON_INDENT(2));
    json_decref(j);
    return s;
}

static void test_key_files(void)
{
    EVP_PKEY *pk = EVP_RSA_gen(2048);
    char *pem = pem_of(pk), err[512], *p, *j;
    static const char *const required[] = {"type", "client_email", "private_key", "private_key_id",
                                           "token_uri"};

    j = key_json(pem, NULL, "service_account");
    p = write_file("good.json", j, 0600);
    is_int(google_sa_key_validate(p, err, sizeof err), 0, "valid key file with mode 0600 accepted");
    chmod(p, 0400);
    is_int(google_sa_key_validate(p, err, sizeof err), 0, "mode 0400 accepted");
    chmod(p, 0644);
    ok(google_sa_key_validate(p, err, sizeof err) == -1 && strstr(err, "chmod 600"),
       "group/world-readable key file refused with the fix");
    ok(strstr(err, "BEGIN") == NULL, "the error never quotes the key");
    chmod(p, 0640);
    is_int(google_sa_key_validate(p, err, sizeof err), -1, "group-readable key file refused");
    chmod(p, 0620);
    is_int(google_sa_key_validate(p, err, sizeof err), -1, "group-writable key file refused");
    free(p);
    free(j);

    for (size_t i = 0; i < 5; i++) {
        char name[64];
        j = key_json(pem, required[i], "service_account");
        snprintf(name, sizeof name, "missing-%zu.json", i);
        p = write_file(name, j, 0600);
        ok(google_sa_key_validate(p, err, sizeof err) == -1 && strstr(err, required[i]),
           "key file without %s refused, naming it", required[i]);
        free(p);
        free(j);
    }
    j = key_json(pem, NULL, "authorized_user");
    p = write_file("user.json", j, 0600);
    ok(google_sa_key_validate(p, err, sizeof err) == -1 && strstr(err, "service_account"),
       "type authorized_user refused");
    free(p);
    free(j);
    j = key_json("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", NULL,
                 "service_account");
    p = write_file("badpem.json", j, 0600);
    ok(google_sa_key_validate(p, err, sizeof err) == -1 && strstr(err, "private_key"),
       "unparsable private_key refused");
    free(p);
    free(j);
    p = write_file("notjson.json", "{\"type\": \"service_account\",", 0600);
    is_int(google_sa_key_validate(p, err, sizeof err), -1, "truncated JSON refused");
    free(p);
    p = write_file("dup.json", "{\"type\": \"service_account\", \"type\": \"service_account\"}",
                   0600);
    is_int(google_sa_key_validate(p, err, sizeof err), -1, "duplicate keys refused");
    free(p);
    {
        char *big = xmalloc(GOOGLE_MAX_KEY_FILE + 10);
        memset(big, ' ', GOOGLE_MAX_KEY_FILE + 9);
        big[GOOGLE_MAX_KEY_FILE + 9] = '\0';
        p = write_file("big.json", big, 0600);
        ok(google_sa_key_validate(p, err, sizeof err) == -1 && strstr(err, "larger"),
           "oversized key file refused");
        free(p);
        free(big);
    }
    p = tmp_path("absent.json");
    is_int(google_sa_key_validate(p, err, sizeof err), -1, "missing key file refused");
    free(p);
    is_int(google_sa_key_validate(tmpdir, err, sizeof err), -1, "a directory refused");

    /* google_source_new: sa_key loads it; local with a key file; bad host refused. */
    {
        struct cfg_google cfg;
        struct identity_source src;
        memset(&cfg, 0, sizeof cfg);
        j = key_json(pem, NULL, "service_account");
        p = write_file("src.json", j, 0600);
        cfg.source = GOOGLE_SA_KEY;
        cfg.service_account_key = p;
        ok(google_source_new(NULL, NULL, &cfg, &src, err, sizeof err) == 0, "sa_key source builds");
        ok(src.jwks_json(src.ctx) == NULL, "sa_key source publishes no JWK set");
        src.free(src.ctx);
        chmod(p, 0644);
        is_int(google_source_new(NULL, NULL, &cfg, &src, err, sizeof err), -1,
               "sa_key source refuses a world-readable key at startup");
        free(p);
        free(j);

        memset(&cfg, 0, sizeof cfg);
        cfg.source = GOOGLE_LOCAL;
        p = write_file("local.pem", pem, 0600);
        cfg.local_key = p;
        ok(google_source_new(NULL, NULL, &cfg, &src, err, sizeof err) == 0,
           "local source with a key file");
        {
            char *jw = src.jwks_json(src.ctx);
            ok(jw && strstr(jw, "\"RS256\""), "local source publishes its JWK set");
            free(jw);
        }
        src.free(src.ctx);
        chmod(p, 0604);
        is_int(google_source_new(NULL, NULL, &cfg, &src, err, sizeof err), -1,
               "local source refuses a world-readable key");
        free(p);

        memset(&cfg, 0, sizeof cfg);
        cfg.source = GOOGLE_METADATA;
        cfg.metadata_host = "evil.example/path?x=";
        ok(google_source_new(NULL, NULL, &cfg, &src, err, sizeof err) == -1 &&
               strstr(err, "metadata_host"),
           "metadata_host with a path refused");
    }
    free(pem);
    EVP_PKEY_free(pk);
}

/* ------------------------------------------------------------- texts */

static void test_texts(void)
{
    char *s;
    const char *body403 = "{\"error\":{\"code\":403,\"message\":\"Permission 'iam.serviceAccounts."
                          "getOpenIdToken' denied\",\"status\":\"PERMISSION_DENIED\"}}";
    s = google_form_encode("https://a.run.app/x?y=1&z=a b");
    is_str(s, "https%3A%2F%2Fa.run.app%2Fx%3Fy%3D1%26z%3Da%20b", "form encoding of an audience");
    free(s);
    s = google_form_encode("urn:ietf:params:oauth:grant-type:jwt-bearer");
    is_str(s, "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer",
           "form encoding of the grant type");
    free(s);

    ok(google_email_ok("billing-step@proj.iam.gserviceaccount.com"),
       "service account email accepted");
    ok(google_email_ok("123456789012345678901"), "unique id accepted");
    ok(!google_email_ok("a/b@p.iam.gserviceaccount.com"), "slash refused (path injection)");
    ok(!google_email_ok("a@p.iam.gserviceaccount.com:generateAccessToken?"), "colon and ? refused");
    ok(!google_email_ok("../x@p"), "dot segments refused");
    ok(!google_email_ok(""), "empty refused");

    is_int(google_status_failure(403), IDENTITY_FAIL_PERMISSION, "403 is a permission failure");
    is_int(google_status_failure(401), IDENTITY_FAIL_PERMISSION, "401 is a permission failure");
    is_int(google_status_failure(404), IDENTITY_FAIL_NOT_FOUND, "404 is not found");
    is_int(google_status_failure(503), IDENTITY_FAIL_HTTP_5XX, "503 is a 5xx");
    is_int(google_status_failure(429), IDENTITY_FAIL_HTTP, "429 is another status");

    s = google_impersonation_detail(403, body403, strlen(body403), "step@p.iam.gserviceaccount.com",
                                    "baton@p.iam.gserviceaccount.com");
    ok(strstr(s, "roles/iam.serviceAccountOpenIdTokenCreator") != NULL,
       "403 detail names the role");
    ok(strstr(s, "on the service account step@p.iam.gserviceaccount.com") != NULL,
       "403 detail names the account the binding goes on");
    ok(strstr(s, "--member=serviceAccount:baton@p.iam.gserviceaccount.com") != NULL,
       "403 detail names baton's identity as the member");
    ok(strstr(
           s,
           "gcloud iam service-accounts add-iam-policy-binding step@p.iam.gserviceaccount.com") !=
           NULL,
       "403 detail gives the gcloud command");
    ok(strstr(s, "PERMISSION_DENIED") != NULL, "403 detail quotes Google's status");
    free(s);
    s = google_impersonation_detail(403, "<html>", 6, "step@p.iam.gserviceaccount.com", NULL);
    ok(strstr(s, "<baton's service account>") != NULL, "403 detail without a known own email");
    free(s);
    s = google_impersonation_detail(404, "{\"error\":{\"message\":\"Not found\\n\\u0007x\"}}", 41,
                                    "ghost@p.iam.gserviceaccount.com",
                                    "b@p.iam.gserviceaccount.com");
    ok(strstr(s, "does not know the service account ghost@p.iam.gserviceaccount.com") != NULL,
       "404 detail names the unknown account");
    ok(strchr(s, '\n') == NULL && strchr(s, '\a') == NULL,
       "Google's text is stripped of control bytes");
    free(s);
}

/* ------------------------------------------------------------- driver */

struct drive {
    struct identity *id;
    struct identity_pair *pairs;
    size_t n;
    struct event_base *base;
    struct event *poll;
    int64_t t0;
};

static void print_stats(void *ctx, const struct identity_pair_stats *s)
{
    json_t *o = json_pack("{s:s, s:s, s:b, s:b, s:I, s:I, s:I}", "identity", s->identity,
                          "audience", s->audience, "active", s->active, "usable", s->usable,
                          "expires_at", (json_int_t)s->expires_at, "mints_ok",
                          (json_int_t)s->mints_ok, "latency_count", (json_int_t)s->latency_count);
    json_t *f = json_object();
    char *line;
    for (int i = 0; i < IDENTITY_FAIL__COUNT; i++)
        if (s->failures[i])
            json_object_set_new(f, identity_failure_name(i),
                                json_integer((json_int_t)s->failures[i]));
    json_object_set_new(o, "failures", f);
    json_object_set_new(o, "last_error", s->last_error ? json_string(s->last_error) : json_null());
    json_array_append_new(ctx, o);
    (void)line;
}

static void on_poll(evutil_socket_t fd, short w, void *arg)
{
    struct drive *d = arg;
    json_t *line = json_pack("{s:I, s:b}", "t_ms", (json_int_t)(now_ms() - d->t0), "ready",
                             identity_ready(d->id));
    json_t *arr = json_array();
    char *s;
    (void)fd, (void)w;
    for (size_t i = 0; i < d->n; i++) {
        struct identity_token t;
        enum reason r = identity_get(d->id, d->pairs[i].service_account, d->pairs[i].audience, &t);
        json_t *o = json_pack("{s:s?, s:s, s:s}", "sa", d->pairs[i].service_account, "audience",
                              d->pairs[i].audience, "reason", reason_code(r));
        if (r == REASON_ALLOWED) {
            const char *jwt = t.header_value + 7, *d1 = strchr(jwt, '.'),
                       *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
            char sha[65];
            sha256_hex(jwt, strlen(jwt), sha);
            json_object_set_new(o, "identity", json_string(t.identity));
            json_object_set_new(o, "minted_audience", json_string(t.audience));
            json_object_set_new(o, "expires_at", json_integer(t.expires_at));
            json_object_set_new(o, "token_sha256", json_string(sha));
            json_object_set_new(o, "bearer",
                                json_boolean(strncmp(t.header_value, "Bearer ", 7) == 0));
            if (d2) {
                unsigned char *buf = xmalloc(b64url_decoded_max((size_t)(d2 - d1 - 1)) + 1);
                size_t n;
                if (b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), buf, &n) == 0)
                    json_object_set_new(o, "claims", json_loadb((char *)buf, n, 0, NULL));
                free(buf);
            }
            identity_token_release(&t);
        }
        json_array_append_new(arr, o);
    }
    json_object_set_new(line, "pairs", arr);
    s = json_dumps(line, JSON_COMPACT);
    printf("%s\n", s);
    fflush(stdout);
    free(s);
    json_decref(line);
}

static int drive(int argc, char **argv)
{
    struct baton_config cfg;
    struct drive d;
    struct http_client *hc;
    char err[512];
    int run_ms = 1000, poll_ms = 100, rc = 1;
    struct timeval tv;

    memset(&cfg, 0, sizeof cfg);
    memset(&d, 0, sizeof d);
    d.pairs = xcalloc((size_t)argc, sizeof *d.pairs);
    cfg.google.source = GOOGLE_METADATA;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "drive: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--source"))
            cfg.google.source = !strcmp(v, "local")    ? GOOGLE_LOCAL
                                : !strcmp(v, "sa_key") ? GOOGLE_SA_KEY
                                                       : GOOGLE_METADATA;
        else if (!strcmp(a, "--metadata-host"))
            cfg.google.metadata_host = (char *)v;
        else if (!strcmp(a, "--key"))
            cfg.google.service_account_key = (char *)v;
        else if (!strcmp(a, "--token-uri"))
            cfg.google.token_uri = (char *)v;
        else if (!strcmp(a, "--iam"))
            cfg.google.iamcredentials_url = (char *)v;
        else if (!strcmp(a, "--local-key"))
            cfg.google.local_key = (char *)v;
        else if (!strcmp(a, "--local-issuer"))
            cfg.google.local_issuer = (char *)v;
        else if (!strcmp(a, "--lifetime-s"))
            cfg.google.token_lifetime_s = (unsigned)atoi(v);
        else if (!strcmp(a, "--timeout-ms"))
            cfg.google.timeout_ms = (unsigned)atoi(v);
        else if (!strcmp(a, "--run-ms"))
            run_ms = atoi(v);
        else if (!strcmp(a, "--poll-ms"))
            poll_ms = atoi(v);
        else if (!strcmp(a, "--pair")) {
            /* "SA,AUDIENCE" or "-,AUDIENCE" for baton's own identity */
            const char *comma = strchr(v, ',');
            if (!comma)
                return 2;
            d.pairs[d.n].service_account = (comma == v + 1 && v[0] == '-')
                                               ? NULL
                                               : xstrndup(v, (size_t)(comma - v));
            d.pairs[d.n++].audience = comma + 1;
        } else {
            fprintf(stderr, "drive: unknown option %s\n", a);
            return 2;
        }
    }
    if (run_ms > 120000)
        run_ms = 120000;
    evthread_use_pthreads();
    d.base = event_base_new();
    hc = http_client_new(d.base, err, sizeof err);
    if (!hc) {
        fprintf(stderr, "drive: %s\n", err);
        goto out;
    }
    d.id = identity_new(d.base, hc, &cfg, d.pairs, d.n, err, sizeof err);
    if (!d.id) {
        json_t *e = json_pack("{s:s, s:s}", "error", "identity_new", "message", err);
        char *s = json_dumps(e, JSON_COMPACT);
        printf("%s\n", s);
        free(s);
        json_decref(e);
        http_client_free(hc);
        rc = 3;
        goto out;
    }
    d.t0 = now_ms();
    identity_start(d.id);
    d.poll = event_new(d.base, -1, EV_PERSIST, on_poll, &d);
    tv.tv_sec = poll_ms / 1000;
    tv.tv_usec = (poll_ms % 1000) * 1000;
    event_add(d.poll, &tv);
    tv.tv_sec = run_ms / 1000;
    tv.tv_usec = (run_ms % 1000) * 1000;
    event_base_loopexit(d.base, &tv);
    event_base_dispatch(d.base);
    {
        json_t *fin = json_pack("{s:b, s:b}", "final", 1, "ready", identity_ready(d.id));
        json_t *stats = json_array();
        char *detail = identity_ready_detail(d.id), *jwks = identity_jwks_json(d.id), *s;
        identity_stats_visit(d.id, print_stats, stats);
        json_object_set_new(fin, "detail", json_string(detail));
        json_object_set_new(fin, "stats", stats);
        json_object_set_new(fin, "jwks", jwks ? json_loads(jwks, 0, NULL) : json_null());
        s = json_dumps(fin, JSON_COMPACT);
        printf("%s\n", s);
        free(s);
        free(detail);
        free(jwks);
        json_decref(fin);
    }
    event_free(d.poll);
    identity_free(d.id);
    http_client_free(hc);
    rc = 0;
out:
    for (size_t i = 0; i < d.n; i++)
        free((char *)d.pairs[i].service_account);
    free(d.pairs);
    if (d.base)
        event_base_free(d.base);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--drive"))
        return drive(argc - 2, argv + 2);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_google.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_mint();
    test_key_files();
    test_texts();
    {
        char *cmd = xasprintf("rm -rf '%s'", tmpdir);
        if (system(cmd) != 0)
            tap_diag("could not remove %s", tmpdir);
        free(cmd);
    }
    return tap_done();
}
