/*
 * fuzz_jws.c: libFuzzer target `jws`: arbitrary bytes as a bearer token through
 * authn_verify (so jws_parse, the header checks, key lookup, jws_verify and
 * the claim checks), without and with a cache, against a fixed public key set
 * (RS256, ES256, EdDSA keys; tests/fuzz/gen_jws_seeds.py made it and the
 * seeds) at a fixed time, so replays are deterministic.
 *
 * An input starting with '{' is taken as "header\npayload\nsignature bytes"
 * and base64url-encoded into a token first, so the fuzzer can mutate the JSON
 * itself (random base64 rarely decodes to JSON); any other input is the token.
 *
 * Invariants checked beyond "no crash": a token that authenticates has claims
 * and an issuer; its three parts re-encode to exactly the input bytes (one
 * spelling per token); the cached second pass gives the same outcome.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "authn.h"
#include "b64.h"
#include "jws.h"
#include "util.h"

#define FUZZ_NOW 1767225600 /* 2026-01-01T00:00:00Z; seed tokens expire in 2100 */

static const char FUZZ_JWKS[] =
    "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"r1\",\"alg\":\"RS256\",\"use\":\"sig\",\"n"
    "\":\"h1QF-02I0dH4I_wOb4zlbsjGlbTIZ2z7BGzajZgE-SoI9c7FWApa0uJK9O0PS6OUfL4vMHE9jPM"
    "jpDC8VXUsLiEuNj4QZ9gNUMDkFYa46ZM88QhD_bMAbYkj6mHcxx8IiFuUdDpWKvuej-c8_xoT_xuvSml"
    "FWVNg2HpHjNVfrU-ODj_LznUETv58K4qPHqIWo4YvHlmuElxd9Vj5M42eAej6M5v1UeKylSz7PLCLB6f"
    "CaFPOS-Z6nnKYW-ARIbpwcljfWuC8-BL90ApznFvDJHUky4bQfGvEJ9p_Uvh8biWDZgEhkjqnJBrMisp"
    "wC8azm5_FMmf88QGiOBc1PmDmrw\",\"e\":\"AQAB\"},{\"kty\":\"EC\",\"kid\":\"e1\",\"c"
    "rv\":\"P-256\",\"x\":\"RTmbqXjP0kAVu4bnUy36tqBhRpbTPWsPPS6S-f4Kx6Q\",\"y\":\"lbK"
    "sWp-uDtQa6uSxeUlPXwQ_qVTP99ogpruniTdgHxw\"},{\"kty\":\"OKP\",\"kid\":\"d1\",\"cr"
    "v\":\"Ed25519\",\"x\":\"pOmqv6GFPDsrZwzpJY4F3n-qyi0C6EIUagWfhu94i6g\"}]}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct jws_keyset *ks;
static struct cfg_issuer issuer;
static struct baton_config cfg;
static struct authn *verifier;
static struct authn_cache *cache;

static struct jws_keyset *acquire(void *ctx, const struct cfg_issuer *is)
{
    (void)ctx;
    (void)is;
    return jws_keyset_ref(ks);
}

static uint64_t generation(void *ctx, const struct cfg_issuer *is)
{
    (void)ctx;
    (void)is;
    return 1;
}

static void kid_miss(void *ctx, const struct cfg_issuer *is)
{
    (void)ctx;
    (void)is;
}

static void init(void)
{
    static char *auds[] = {(char *)"https://gw.example"};
    static char *typs[] = {(char *)"JWT", (char *)"at+jwt"};
    static const struct authn_keys keys = {acquire, generation, kid_miss, NULL, NULL};
    char err[256];

    ks = jws_keyset_parse(FUZZ_JWKS, strlen(FUZZ_JWKS), err, sizeof(err));
    if (!ks || jws_keyset_count(ks) != 3)
        abort();
    issuer.name = (char *)"fuzz";
    issuer.issuer = (char *)"https://fuzz.example";
    issuer.audiences = auds;
    issuer.n_audiences = 1;
    issuer.audience_claim = (char *)"aud";
    issuer.algorithms = (1u << JWS_RS256) | (1u << JWS_PS256) | (1u << JWS_ES256) |
                        (1u << JWS_EDDSA);
    issuer.token_types = typs;
    issuer.n_token_types = 2;
    issuer.leeway_s = 60;
    issuer.max_token_bytes = 16384;
    cfg.issuers = &issuer;
    cfg.n_issuers = 1;
    verifier = authn_new(&cfg, &keys);
    cache = authn_cache_new(64);
}

/* Re-encodes each part of an accepted token and compares with the input. */
static void check_canonical(const char *tok, size_t len)
{
    const char *start = tok, *end = tok + len;
    for (int part = 0; part < 3; part++) {
        const char *dot = part < 2 ? memchr(start, '.', (size_t)(end - start)) : end;
        size_t n = (size_t)(dot - start), dn;
        unsigned char *raw = xmalloc(b64url_decoded_max(n));
        char *again;
        if (b64url_decode(start, n, raw, &dn) != 0)
            abort();
        again = xmalloc(b64url_encoded_len(dn) + 1);
        if (b64url_encode(raw, dn, again) != n || memcmp(again, start, n) != 0)
            abort(); /* two spellings of one token */
        free(raw);
        free(again);
        start = dot + 1;
    }
}

/* "header\npayload\nsig" -> owned "b64.b64.b64", or NULL when not two newlines. */
static char *structured(const uint8_t *data, size_t size, size_t *len)
{
    const uint8_t *n1 = memchr(data, '\n', size), *n2;
    size_t hl, pl, sl;
    char *t;

    if (!n1 || !(n2 = memchr(n1 + 1, '\n', size - (size_t)(n1 + 1 - data))))
        return NULL;
    hl = (size_t)(n1 - data);
    pl = (size_t)(n2 - n1 - 1);
    sl = size - (size_t)(n2 + 1 - data);
    t = xmalloc(b64url_encoded_len(hl) + b64url_encoded_len(pl) + b64url_encoded_len(sl) + 3);
    *len = b64url_encode(data, hl, t);
    t[(*len)++] = '.';
    *len += b64url_encode(n1 + 1, pl, t + *len);
    t[(*len)++] = '.';
    *len += b64url_encode(n2 + 1, sl, t + *len);
    return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* one connection sending every input in turn: its hint must never change
     * a result, whatever token came before */
    static struct authn_hint hint;
    struct authn_result r1, r2, r3;
    enum reason a, b, c;
    char *owned = NULL;

    if (!verifier)
        init();
    if (size > 0 && data[0] == '{' && (owned = structured(data, size, &size)))
        data = (const uint8_t *)owned;
    a = authn_verify(verifier, NULL, NULL, (const char *)data, size, FUZZ_NOW, &r1);
    b = authn_verify(verifier, cache, NULL, (const char *)data, size, FUZZ_NOW, &r2);
    c = authn_verify(verifier, cache, &hint, (const char *)data, size, FUZZ_NOW, &r3);
    if (a != b || a != c || strcmp(r1.fingerprint, r3.fingerprint) != 0)
        abort();
    if (a == REASON_ALLOWED) {
        if (!r1.claims || r1.issuer != &issuer || !r1.audience)
            abort();
        check_canonical((const char *)data, size);
    }
    authn_result_release(&r1);
    authn_result_release(&r2);
    authn_result_release(&r3);
    free(owned);
    return 0;
}
