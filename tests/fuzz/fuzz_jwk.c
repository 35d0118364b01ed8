/*
 * fuzz_jwk.c: libFuzzer target `jwk`: arbitrary bytes as a JWK Set document
 * through jws_keyset_parse. Every key that loads is then looked up by its kid
 * and asked to verify a junk signature of its exact length for each algorithm
 * it pins (exercising the prepared verify contexts); that must fail.
 * Invariants: count + skipped never exceeds JWS_KEYSET_MAX_KEYS; every
 * loaded key pins at least one algorithm; find(kid) returns that key.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jws.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    struct jws_keyset *ks = jws_keyset_parse((const char *)data, size, err, sizeof(err));
    static const unsigned char msg[] = "eyJhbGciOiJSUzI1NiJ9.e30";
    unsigned char sig[JWS_SIG_MAX];

    if (!ks) {
        if (!err[0])
            abort(); /* a refusal always says why */
        return 0;
    }
    if (jws_keyset_count(ks) + jws_keyset_skipped(ks) > JWS_KEYSET_MAX_KEYS)
        abort();
    memset(sig, 0x5a, sizeof(sig));
    for (size_t i = 0; i < jws_keyset_count(ks); i++) {
        const struct jws_key *k = jws_keyset_key(ks, i);
        const char *kid = jws_key_kid(k);
        unsigned algs = jws_key_algs(k);
        if (!algs || (kid && jws_keyset_find(ks, kid, strlen(kid)) != k))
            abort();
        for (int a = 0; a < JWS_ALG__COUNT; a++) {
            if (!(algs & (1u << a)))
                continue;
            /* try every plausible length: only the key's exact one reaches OpenSSL */
            for (size_t len = 64; len <= JWS_SIG_MAX; len *= 2)
                if (jws_verify_raw(k, (enum jws_alg)a, msg, sizeof(msg) - 1, sig, len) == 0)
                    abort(); /* a junk signature verified */
            if (jws_verify_raw(k, (enum jws_alg)a, msg, sizeof(msg) - 1, sig, 96) == 0 ||
                jws_verify_raw(k, (enum jws_alg)a, msg, sizeof(msg) - 1, sig, 132) == 0 ||
                jws_verify_raw(k, (enum jws_alg)a, msg, sizeof(msg) - 1, sig, 384) == 0)
                abort();
        }
    }
    jws_keyset_unref(ks);
    return 0;
}
