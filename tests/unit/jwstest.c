/*
 * jwstest.c: test-only OpenSSL helpers behind jwstest.h (keys, JWKs, signing,
 * a fixed key provider). Signing lives here, never in src/: baton verifies.
 */
#include "jwstest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "b64.h"
#include "util.h"

static void die(const char *what)
{
    fprintf(stderr, "jwstest: %s failed\n", what);
    abort();
}

EVP_PKEY *tk_rsa(int bits)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)bits);
    if (!k)
        die("RSA keygen");
    return k;
}

EVP_PKEY *tk_ec(const char *curve)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", curve);
    if (!k)
        die("EC keygen");
    return k;
}

EVP_PKEY *tk_ed25519(void)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    if (!k)
        die("Ed25519 keygen");
    return k;
}

char *tk_b64(const void *data, size_t len)
{
    char *s = xmalloc(b64url_encoded_len(len) + 1);
    b64url_encode(data, len, s);
    return s;
}

static char *bn_b64(EVP_PKEY *k, const char *param, size_t pad)
{
    BIGNUM *bn = NULL;
    unsigned char buf[1200];
    int n;

    if (!EVP_PKEY_get_bn_param(k, param, &bn))
        die("get_bn_param");
    n = pad ? BN_bn2binpad(bn, buf, (int)pad) : BN_bn2bin(bn, buf);
    BN_free(bn);
    if (n <= 0)
        die("bn2bin");
    return tk_b64(buf, (size_t)n);
}

json_t *tk_jwk(EVP_PKEY *k, const char *kid, const char *alg)
{
    json_t *j = json_object();
    char *a = NULL, *b = NULL;

    if (EVP_PKEY_is_a(k, "RSA")) {
        a = bn_b64(k, OSSL_PKEY_PARAM_RSA_N, 0);
        b = bn_b64(k, OSSL_PKEY_PARAM_RSA_E, 0);
        json_object_set_new(j, "kty", json_string("RSA"));
        json_object_set_new(j, "n", json_string(a));
        json_object_set_new(j, "e", json_string(b));
    } else if (EVP_PKEY_is_a(k, "EC")) {
        char group[32];
        size_t field;
        const char *crv;
        if (!EVP_PKEY_get_utf8_string_param(k, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                            NULL))
            die("group name");
        if (!strcmp(group, "prime256v1"))
            crv = "P-256", field = 32;
        else if (!strcmp(group, "secp384r1"))
            crv = "P-384", field = 48;
        else
            crv = "P-521", field = 66;
        a = bn_b64(k, OSSL_PKEY_PARAM_EC_PUB_X, field);
        b = bn_b64(k, OSSL_PKEY_PARAM_EC_PUB_Y, field);
        json_object_set_new(j, "kty", json_string("EC"));
        json_object_set_new(j, "crv", json_string(crv));
        json_object_set_new(j, "x", json_string(a));
        json_object_set_new(j, "y", json_string(b));
    } else {
        unsigned char raw[32];
        size_t n = sizeof(raw);
        if (!EVP_PKEY_get_raw_public_key(k, raw, &n))
            die("raw public key");
        a = tk_b64(raw, n);
        json_object_set_new(j, "kty", json_string("OKP"));
        json_object_set_new(j, "crv", json_string("Ed25519"));
        json_object_set_new(j, "x", json_string(a));
    }
    if (kid)
        json_object_set_new(j, "kid", json_string(kid));
    if (alg)
        json_object_set_new(j, "alg", json_string(alg));
    json_object_set_new(j, "use", json_string("sig"));
    free(a);
    free(b);
    return j;
}

char *tk_jwks_text(const json_t *keys)
{
    json_t *doc = json_pack("{s:O}", "keys", (json_t *)keys);
    char *s = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    return s;
}

struct jws_keyset *tk_keyset(const json_t *keys)
{
    char err[256], *text = tk_jwks_text(keys);
    struct jws_keyset *ks = jws_keyset_parse(text, strlen(text), err, sizeof(err));
    if (!ks) {
        fprintf(stderr, "jwstest: key set refused: %s\n", err);
        abort();
    }
    free(text);
    return ks;
}

char *tk_pem_public(EVP_PKEY *k)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data, *out;
    long n;

    if (!bio || !PEM_write_bio_PUBKEY(bio, k))
        die("PEM_write_bio_PUBKEY");
    n = BIO_get_mem_data(bio, &data);
    out = xstrndup(data, (size_t)n);
    BIO_free(bio);
    return out;
}

char *tk_join(const char *header, const char *payload, const char *sig_b64)
{
    char *h = tk_b64(header, strlen(header)), *p = tk_b64(payload, strlen(payload));
    char *t = xasprintf("%s.%s.%s", h, p, sig_b64);
    free(h);
    free(p);
    return t;
}

static const EVP_MD *alg_md(const char *alg)
{
    if (!strcmp(alg, "EdDSA"))
        return NULL;
    if (strstr(alg, "256"))
        return EVP_sha256();
    if (strstr(alg, "384"))
        return EVP_sha384();
    return EVP_sha512();
}

/* Signs "h.p" (the first `len` bytes of `input`); der: keep ECDSA DER. */
static char *sign_input(EVP_PKEY *k, const char *alg, const char *input, size_t len, int der)
{
    EVP_MD_CTX *mc = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pc = NULL;
    unsigned char sig[1200], raw[132];
    size_t slen = sizeof(sig);
    char *out;

    if (!mc || EVP_DigestSignInit(mc, &pc, alg_md(alg), NULL, k) != 1)
        die("DigestSignInit");
    if (alg[0] == 'P') {
        if (EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PSS_PADDING) <= 0 ||
            EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, RSA_PSS_SALTLEN_DIGEST) <= 0)
            die("PSS params");
    }
    if (EVP_DigestSign(mc, sig, &slen, (const unsigned char *)input, len) != 1)
        die("DigestSign");
    EVP_MD_CTX_free(mc);
    if (EVP_PKEY_is_a(k, "EC") && !der) {
        const unsigned char *p = sig;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)slen);
        const BIGNUM *r, *s;
        int bits = EVP_PKEY_get_bits(k), half = (bits + 7) / 8;
        if (!es)
            die("d2i_ECDSA_SIG");
        ECDSA_SIG_get0(es, &r, &s);
        BN_bn2binpad(r, raw, half);
        BN_bn2binpad(s, raw + half, half);
        ECDSA_SIG_free(es);
        return tk_b64(raw, 2 * (size_t)half);
    }
    out = tk_b64(sig, slen);
    return out;
}

static char *sign_token(EVP_PKEY *k, const char *alg, const char *header, const char *payload,
                        int der)
{
    char *unsigned_tok = tk_join(header, payload, ""), *sig, *t;
    size_t len = strlen(unsigned_tok) - 1; /* without the trailing '.' */

    sig = sign_input(k, alg, unsigned_tok, len, der);
    t = xasprintf("%s%s", unsigned_tok, sig);
    free(sig);
    free(unsigned_tok);
    return t;
}

char *tk_sign(EVP_PKEY *k, const char *alg, const char *header, const char *payload)
{
    return sign_token(k, alg, header, payload, 0);
}

char *tk_sign_der(EVP_PKEY *k, const char *alg, const char *header, const char *payload)
{
    return sign_token(k, alg, header, payload, 1);
}

char *tk_sign_hmac(const char *alg, const void *secret, size_t secret_len, const char *header,
                   const char *payload)
{
    char *unsigned_tok = tk_join(header, payload, ""), *sig, *t;
    size_t len = strlen(unsigned_tok) - 1;
    unsigned char mac[64];
    size_t mlen = 0;
    const char *digest = strstr(alg, "256") ? "SHA256" : strstr(alg, "384") ? "SHA384" : "SHA512";
    static const unsigned char zero = 0;

    if (!EVP_Q_mac(NULL, "HMAC", NULL, digest, NULL, secret_len ? secret : &zero, secret_len,
                   (const unsigned char *)unsigned_tok, len, mac, sizeof(mac), &mlen))
        die("HMAC");
    sig = tk_b64(mac, mlen);
    t = xasprintf("%s%s", unsigned_tok, sig);
    free(sig);
    free(unsigned_tok);
    return t;
}

/* ---- key provider ---------------------------------------------------------------- */

static size_t issuer_index(const struct tk_keys *tk, const struct cfg_issuer *is)
{
    return (size_t)(is - tk->cfg->issuers);
}

static struct jws_keyset *tk_acquire(void *ctx, const struct cfg_issuer *is)
{
    struct tk_keys *tk = ctx;
    struct jws_keyset *ks = tk->ks[issuer_index(tk, is)];
    return ks ? jws_keyset_ref(ks) : NULL;
}

static uint64_t tk_generation(void *ctx, const struct cfg_issuer *is)
{
    struct tk_keys *tk = ctx;
    return tk->gen[issuer_index(tk, is)];
}

static void tk_kid_miss(void *ctx, const struct cfg_issuer *is)
{
    struct tk_keys *tk = ctx;
    tk->kid_misses[issuer_index(tk, is)]++;
}

struct authn_keys tk_keys_provider(struct tk_keys *tk)
{
    struct authn_keys k = {tk_acquire, tk_generation, tk_kid_miss, tk, NULL};
    return k;
}

void tk_keys_set(struct tk_keys *tk, size_t i, struct jws_keyset *ks)
{
    jws_keyset_unref(tk->ks[i]);
    tk->ks[i] = ks;
    tk->gen[i]++;
}

void tk_keys_clear(struct tk_keys *tk)
{
    for (size_t i = 0; i < TK_MAX_ISSUERS; i++) {
        jws_keyset_unref(tk->ks[i]);
        tk->ks[i] = NULL;
    }
}

void tk_issuer(struct cfg_issuer *is, const char *name, const char *iss, const char **auds,
               size_t n_auds, unsigned algorithms)
{
    static char *typs[] = {(char *)"JWT", (char *)"at+jwt"}; /* config's default */

    memset(is, 0, sizeof(*is));
    is->name = (char *)name;
    is->issuer = (char *)iss;
    is->key_source = KEYS_JWKS_FILE;
    is->audiences = (char **)auds;
    is->n_audiences = n_auds;
    is->audience_claim = (char *)"aud";
    is->algorithms = algorithms;
    is->token_types = typs;
    is->n_token_types = 2;
    is->leeway_s = 60;
    is->max_token_bytes = 16384;
    is->refresh_min_s = 60;
    is->refresh_max_s = 3600;
    is->fetch_timeout_ms = 5000;
}
