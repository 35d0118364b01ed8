/*
 * jwstest.h: key generation, JWK export and JWS signing with OpenSSL for the
 * jws/authn suites, the benchmark and the fuzz seed generator. Everything is
 * generated at run time so no fixture goes stale (exp relative to now).
 * Test-only code: aborts on any OpenSSL failure.
 */
#ifndef BATON_JWSTEST_H
#define BATON_JWSTEST_H

#include <stddef.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "authn.h"
#include "config.h"
#include "jws.h"

/* Owned EVP_PKEY (EVP_PKEY_free). curve: "P-256", "P-384", "P-521". */
EVP_PKEY *tk_rsa(int bits);
EVP_PKEY *tk_ec(const char *curve);
EVP_PKEY *tk_ed25519(void);

/* The public JWK of `k` as a new JSON object; kid and alg are left out when NULL. */
json_t *tk_jwk(EVP_PKEY *k, const char *kid, const char *alg);
/* {"keys":[...]} text from a JSON array of JWKs (borrowed). Owned string. */
char *tk_jwks_text(const json_t *keys);
/* Parses tk_jwks_text(keys) with jws_keyset_parse; aborts when it is refused. */
struct jws_keyset *tk_keyset(const json_t *keys);

/* Owned unpadded base64url of `len` bytes. */
char *tk_b64(const void *data, size_t len);
/* Owned SubjectPublicKeyInfo PEM of k. */
char *tk_pem_public(EVP_PKEY *k);

/*
 * A compact JWS over exactly the header and payload texts given (so tests can
 * write duplicate members or odd spacing), signed with `k` per `alg` ("RS256",
 * "PS384", "ES256", "EdDSA"; ECDSA as raw r||s). Owned string.
 * tk_sign_der: ECDSA with the DER signature OpenSSL produces (invalid in JWS).
 * tk_sign_hmac: HS256/384/512 with `secret` as the HMAC key.
 * tk_sign_ecdsa_hash: ECDSA with key `k` but the hash of `alg` (a P-384 key
 * signing SHA-256 for an ES256 header).
 */
char *tk_sign(EVP_PKEY *k, const char *alg, const char *header, const char *payload);
char *tk_sign_der(EVP_PKEY *k, const char *alg, const char *header, const char *payload);
char *tk_sign_hmac(const char *alg, const void *secret, size_t secret_len, const char *header,
                   const char *payload);
/* Unsigned "b64(header).b64(payload)." plus `sig_b64` verbatim. */
char *tk_join(const char *header, const char *payload, const char *sig_b64);

/* A key provider (struct authn_keys) over fixed keysets, one per issuer index. */
#define TK_MAX_ISSUERS 8
struct tk_keys {
    const struct baton_config *cfg;
    struct jws_keyset *ks[TK_MAX_ISSUERS]; /* owned references; NULL: never loaded */
    uint64_t gen[TK_MAX_ISSUERS];
    int kid_misses[TK_MAX_ISSUERS];
};
struct authn_keys tk_keys_provider(struct tk_keys *tk);
/* Replaces issuer i's keyset (takes ownership of ks) and bumps its generation. */
void tk_keys_set(struct tk_keys *tk, size_t i, struct jws_keyset *ks);
void tk_keys_clear(struct tk_keys *tk);

/* A cfg_issuer with baton's defaults; strings are borrowed (static in tests). */
void tk_issuer(struct cfg_issuer *is, const char *name, const char *iss, const char **auds,
               size_t n_auds, unsigned algorithms);

#endif
