/*
 * mint.c: signing keys and the JWTs baton signs (see mint.h).
 *
 * OpenSSL parses and checks the key once (RSA, at least 2048 bits), computes
 * its RFC 7638 thumbprint and public JWK, and re-exports it as PKCS#8 PEM:
 * that normalized PEM is what libjwt receives for each signature, so a key
 * file libjwt would misread never reaches it. Key bytes are cleansed on free.
 */
#include "mint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "b64.h"
#include "util.h"

#define MINT_MIN_RSA_BITS 2048
#define MINT_MAX_PEM_BYTES 65536
#define MINT_ASSERTION_LIFETIME_S 3600

struct mint_key {
    char *pem; /* PKCS#8, owned, cleansed on free */
    size_t pem_len;
    char *kid;
    char *jwk; /* the public JWK object text */
};

/* Refuses to prompt for a passphrase: an encrypted PEM simply fails to load. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return -1;
}

/* Owned base64url of a big number's unsigned big-endian bytes. */
static char *bn_b64url(const BIGNUM *bn)
{
    int n = BN_num_bytes(bn);
    unsigned char *raw = xmalloc((size_t)n + 1);
    char *out = xmalloc(b64url_encoded_len((size_t)n) + 1);
    BN_bn2bin(bn, raw);
    b64url_encode(raw, (size_t)n, out);
    free(raw);
    return out;
}

/* Builds kid (when absent), the JWK and the PKCS#8 PEM of an RSA key. */
static struct mint_key *key_finish(EVP_PKEY *pkey, const char *kid, char *err, size_t errlen)
{
    struct mint_key *k = NULL;
    BIGNUM *n = NULL, *e = NULL;
    BIO *bio = NULL;
    char *n64 = NULL, *e64 = NULL, *thumb_in = NULL;
    char *pemdata;
    long pemlen;

    if (!EVP_PKEY_is_a(pkey, "RSA")) {
        errbuf_set(err, errlen, "the private key is not an RSA key (RS256 needs RSA)");
        goto out;
    }
    if (EVP_PKEY_get_bits(pkey) < MINT_MIN_RSA_BITS) {
        snprintf(err, errlen, "the RSA key has %d bits; at least %d are required",
                 EVP_PKEY_get_bits(pkey), MINT_MIN_RSA_BITS);
        goto out;
    }
    if (!EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_N, &n) ||
        !EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_E, &e)) {
        errbuf_set(err, errlen, "cannot read the RSA public parameters");
        goto out;
    }
    n64 = bn_b64url(n);
    e64 = bn_b64url(e);

    k = xcalloc(1, sizeof *k);
    if (kid) {
        k->kid = xstrdup(kid);
    } else {
        /* RFC 7638: members in lexicographic order, no whitespace. */
        unsigned char digest[32];
        char thumb[48]; /* 43 characters and NUL */
        thumb_in = xasprintf("{\"e\":\"%s\",\"kty\":\"RSA\",\"n\":\"%s\"}", e64, n64);
        sha256_raw(thumb_in, strlen(thumb_in), digest);
        b64url_encode(digest, sizeof digest, thumb);
        k->kid = xstrdup(thumb);
    }
    {
        json_t *jwk = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "kty", "RSA", "kid", k->kid,
                                "use", "sig", "alg", "RS256", "n", n64, "e", e64);
        k->jwk = jwk ? json_dumps(jwk, JSON_COMPACT) : NULL;
        json_decref(jwk);
        if (!k->jwk) {
            errbuf_set(err, errlen, "cannot build the public JWK (kid not valid UTF-8?)");
            goto fail;
        }
    }

    bio = BIO_new(BIO_s_mem());
    if (!bio || !PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL)) {
        errbuf_set(err, errlen, "cannot export the private key");
        goto fail;
    }
    pemlen = BIO_get_mem_data(bio, &pemdata);
    if (pemlen <= 0) {
        errbuf_set(err, errlen, "cannot export the private key");
        goto fail;
    }
    k->pem = xstrndup(pemdata, (size_t)pemlen);
    k->pem_len = (size_t)pemlen;
    OPENSSL_cleanse(pemdata, (size_t)pemlen);
    goto out;

fail:
    mint_key_free(k);
    k = NULL;
out:
    BIO_free(bio);
    BN_free(n);
    BN_free(e);
    free(n64);
    free(e64);
    free(thumb_in);
    return k;
}

struct mint_key *mint_key_from_pem(const char *pem, size_t len, const char *kid, char *err,
                                   size_t errlen)
{
    struct mint_key *k = NULL;
    EVP_PKEY *pkey = NULL;
    BIO *bio = NULL;

    if (len == 0 || len > MINT_MAX_PEM_BYTES) {
        errbuf_set(err, errlen, "the private key PEM is empty or larger than 64 KiB");
        goto out;
    }
    bio = BIO_new_mem_buf(pem, (int)len);
    if (!bio)
        goto out;
    pkey = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
    if (!pkey) {
        errbuf_set(err, errlen, "not a PEM private key (unencrypted PKCS#8 or PKCS#1 expected)");
        goto out;
    }
    k = key_finish(pkey, kid, err, errlen);
out:
    EVP_PKEY_free(pkey);
    BIO_free(bio);
    return k;
}

struct mint_key *mint_key_generate(char *err, size_t errlen)
{
    struct mint_key *k = NULL;
    EVP_PKEY *pkey = EVP_RSA_gen(MINT_MIN_RSA_BITS);
    if (!pkey) {
        errbuf_set(err, errlen, "RSA key generation failed");
        return NULL;
    }
    k = key_finish(pkey, NULL, err, errlen);
    EVP_PKEY_free(pkey);
    return k;
}

void mint_key_free(struct mint_key *k)
{
    if (!k)
        return;
    if (k->pem)
        OPENSSL_cleanse(k->pem, k->pem_len);
    free(k->pem);
    free(k->kid);
    free(k->jwk);
    free(k);
}

const char *mint_key_kid(const struct mint_key *k)
{
    return k->kid;
}

char *mint_key_jwks_json(const struct mint_key *k)
{
    return xasprintf("{\"keys\":[%s]}", k->jwk);
}

/* A libjwt object set up for RS256 with k and header kid; NULL on failure. */
static jwt_t *jwt_start(const struct mint_key *k, char *err, size_t errlen)
{
    jwt_t *j = NULL;
    if (jwt_new(&j) != 0 || !j) {
        errbuf_set(err, errlen, "libjwt: cannot allocate");
        return NULL;
    }
    if (jwt_set_alg(j, JWT_ALG_RS256, (const unsigned char *)k->pem, (int)k->pem_len) != 0 ||
        jwt_add_header(j, "kid", k->kid) != 0) {
        errbuf_set(err, errlen, "libjwt: cannot set RS256 with the key");
        jwt_free(j);
        return NULL;
    }
    return j;
}

static char *jwt_finish(jwt_t *j, char *err, size_t errlen)
{
    char *s = jwt_encode_str(j);
    char *out = NULL;
    if (!s) {
        errbuf_set(err, errlen, "libjwt: signing failed");
        return NULL;
    }
    /* Hand out memory from our allocator, whatever libjwt's is. */
    out = xstrdup(s);
    free(s);
    return out;
}

char *mint_sa_assertion(const struct mint_key *k, const char *client_email, const char *token_uri,
                        const char *target_audience, const char *scope, int64_t iat, char *err,
                        size_t errlen)
{
    jwt_t *j = NULL;
    char *out = NULL;

    if (!target_audience == !scope) {
        errbuf_set(err, errlen, "an assertion asks for either target_audience or scope");
        goto out;
    }
    j = jwt_start(k, err, errlen);
    if (!j)
        goto out;
    if (jwt_add_grant(j, "iss", client_email) != 0 || jwt_add_grant(j, "aud", token_uri) != 0 ||
        jwt_add_grant_int(j, "iat", (long)iat) != 0 ||
        jwt_add_grant_int(j, "exp", (long)(iat + MINT_ASSERTION_LIFETIME_S)) != 0 ||
        (target_audience && jwt_add_grant(j, "target_audience", target_audience) != 0) ||
        (scope && jwt_add_grant(j, "scope", scope) != 0)) {
        errbuf_set(err, errlen, "libjwt: cannot add the assertion claims");
        goto out;
    }
    out = jwt_finish(j, err, errlen);
out:
    jwt_free(j);
    return out;
}

char *mint_local_id_token(const struct mint_key *k, const char *iss, const char *aud,
                          const char *email, int64_t iat, int64_t exp, char *err, size_t errlen)
{
    jwt_t *j = jwt_start(k, err, errlen);
    char *out = NULL;
    if (!j)
        return NULL;
    if (jwt_add_grant(j, "iss", iss) != 0 || jwt_add_grant(j, "aud", aud) != 0 ||
        jwt_add_grant(j, "sub", email) != 0 || jwt_add_grant(j, "email", email) != 0 ||
        jwt_add_grant_bool(j, "email_verified", 1) != 0 ||
        jwt_add_grant_int(j, "iat", (long)iat) != 0 ||
        jwt_add_grant_int(j, "exp", (long)exp) != 0) {
        errbuf_set(err, errlen, "libjwt: cannot add the token claims");
        goto out;
    }
    out = jwt_finish(j, err, errlen);
out:
    jwt_free(j);
    return out;
}
