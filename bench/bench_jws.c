/*
 * bench_jws.c: verifications per second on one core, for RS256, PS256,
 * ES256, ES384 and EdDSA:
 *   raw   jws_verify_raw: the signature primitive on a pre-parsed key (what
 *         `openssl speed` measures, plus hashing the signing input);
 *   cold  authn_verify without a cache: size cap, strict decoding, both JSON
 *         parts, issuer and kid lookup, signature, every claim check;
 *   warm  authn_verify with a cache hit (the cache's keyed hash of the token,
 *         lookup, whole token compare, generation and validity check);
 * plus the cost of a SHA-256 of the token alone (what a hit paid when the
 * cache was keyed by it; a miss pays it once) and libjwt 1.10.2's jwt_decode for RS256 with the PEM key (what
 * docs/design.md measured). bench/jws.sh runs this beside `openssl speed` and
 * prints the ratios. Keys and tokens are generated at start.
 *
 * Beside them, `speed`: the same signature verified the way `openssl speed`
 * does (a verify context initialized once, digest precomputed; EdDSA one-shot
 * on one reused context): the in-process reference. speed, raw and cold are
 * measured interleaved in 50 ms slices, so a neighbour's load on this shared
 * machine hits all three alike and their ratios stay meaningful.
 *
 * Times are this thread's CPU time (CLOCK_THREAD_CPUTIME_ID), as `openssl
 * speed` uses user CPU time, so figures are per core even under load.
 *
 * Usage: bench_jws [CPU seconds per measurement, default 1.0]
 * Output: one "name value" line per figure, machine-readable.
 *
 * Instruction counts: `bench_jws --count N MODE ALG` runs exactly N operations
 * of MODE (cold, warm: a cache hit found by SHA-256, hint: a cache hit found
 * through a connection's hint, raw) for ALG after the same setup, and prints
 * nothing else. bench/jws.sh runs it under callgrind for two N and divides the
 * difference, so the setup (key generation, the first, missing call) cancels.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jwt.h>
#include <openssl/ec.h>
#include <openssl/rsa.h>

#include "../tests/unit/jwstest.h"
#include "authn.h"
#include "jws.h"
#include "util.h"

#define ISS "https://abcd1234-0000-4000-8000-000000000000.tokens.sts.global.api.aws"
#define AUD "https://gateway.example.com"

static double seconds = 1.0;

/*
 * CPU time of this thread, in ns. `openssl speed` divides by user CPU time
 * (not wall time, unless -elapsed), so on a machine shared with other work its
 * figures are per busy core; measuring the same way keeps the ratios honest.
 */
static uint64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

typedef int (*op_fn)(void *ctx);

/* Runs op in batches until `seconds` elapsed; returns operations per second. */
static double rate(op_fn op, void *ctx)
{
    uint64_t start = cpu_ns(), end = start + (uint64_t)(seconds * 1e9), t;
    uint64_t n = 0;

    for (int i = 0; i < 16; i++) { /* warm-up: page in, prime caches */
        int rc = op(ctx);
        if (rc != 0) {
            fprintf(stderr, "bench_jws: operation failed (%d: %s)\n", rc,
                    rc > 0 ? reason_code((enum reason)rc) : "-");
            exit(1);
        }
    }
    do {
        for (int i = 0; i < 32; i++)
            if (op(ctx) != 0) {
                fprintf(stderr, "bench_jws: operation failed\n");
                exit(1);
            }
        n += 32;
        t = cpu_ns();
    } while (t < end);
    return (double)n * 1e9 / (double)(t - start);
}

struct meas {
    const char *name;
    op_fn op;
    void *ctx;
    uint64_t n, ns;
};

/* Runs each measurement in turn for 50 ms slices until `total` seconds passed. */
static void interleave(struct meas *m, size_t k, double total)
{
    uint64_t end = cpu_ns() + (uint64_t)(total * 1e9);

    while (cpu_ns() < end) {
        for (size_t i = 0; i < k; i++) {
            uint64_t s = cpu_ns(), t, stop = s + 50000000u;
            do {
                for (int j = 0; j < 8; j++)
                    if (m[i].op(m[i].ctx) != 0) {
                        fprintf(stderr, "bench_jws: %s failed\n", m[i].name);
                        exit(1);
                    }
                m[i].n += 8;
                t = cpu_ns();
            } while (t < stop);
            m[i].ns += t - s;
        }
    }
}

static double per_s(const struct meas *m)
{
    return (double)m->n * 1e9 / (double)m->ns;
}

struct bctx {
    struct authn *a;
    struct authn_cache *cache;
    const char *tok;
    size_t len;
    int64_t now;
    const struct jws_key *key;
    enum jws_alg alg;
    struct jws_token parsed;
    const unsigned char *pem;
    int pem_len;
    /* the openssl-speed-style reference */
    EVP_PKEY_CTX *speed_ctx;
    EVP_MD_CTX *speed_md;
    unsigned char dgst[64], der[160];
    size_t dgst_len, der_len;
    struct authn_hint hint;
};

static int op_speed(void *p)
{
    struct bctx *b = p;
    int ok;
    if (b->speed_md)
        ok = EVP_DigestVerify(b->speed_md, b->parsed.sig, b->parsed.sig_len,
                              (const unsigned char *)b->parsed.signing_input,
                              b->parsed.signing_input_len);
    else if (b->der_len)
        ok = EVP_PKEY_verify(b->speed_ctx, b->der, b->der_len, b->dgst, b->dgst_len);
    else
        ok = EVP_PKEY_verify(b->speed_ctx, b->parsed.sig, b->parsed.sig_len, b->dgst, b->dgst_len);
    return ok == 1 ? 0 : -1;
}

/* Sets up op_speed for `alg` over b->parsed with the signer's key. */
static void speed_setup(struct bctx *b, EVP_PKEY *k, const char *alg)
{
    const EVP_MD *md = strstr(alg, "384") ? EVP_sha384() : EVP_sha256();
    unsigned dl = 0;

    if (!strcmp(alg, "EdDSA")) {
        b->speed_md = EVP_MD_CTX_new();
        if (!b->speed_md ||
            EVP_DigestVerifyInit_ex(b->speed_md, NULL, NULL, NULL, NULL, k, NULL) != 1)
            abort();
        return;
    }
    EVP_Digest(b->parsed.signing_input, b->parsed.signing_input_len, b->dgst, &dl, md, NULL);
    b->dgst_len = dl;
    b->speed_ctx = EVP_PKEY_CTX_new_from_pkey(NULL, k, NULL);
    if (!b->speed_ctx || EVP_PKEY_verify_init(b->speed_ctx) <= 0 ||
        EVP_PKEY_CTX_set_signature_md(b->speed_ctx, md) <= 0)
        abort();
    if (alg[0] == 'R' && EVP_PKEY_CTX_set_rsa_padding(b->speed_ctx, RSA_PKCS1_PADDING) <= 0)
        abort();
    if (alg[0] == 'P' && (EVP_PKEY_CTX_set_rsa_padding(b->speed_ctx, RSA_PKCS1_PSS_PADDING) <= 0 ||
                          EVP_PKEY_CTX_set_rsa_pss_saltlen(b->speed_ctx, (int)dl) <= 0))
        abort();
    if (alg[0] == 'E') {
        size_t half = b->parsed.sig_len / 2;
        ECDSA_SIG *es = ECDSA_SIG_new();
        unsigned char *out = b->der;
        if (!es || !ECDSA_SIG_set0(es, BN_bin2bn(b->parsed.sig, (int)half, NULL),
                                   BN_bin2bn(b->parsed.sig + half, (int)half, NULL)))
            abort();
        b->der_len = (size_t)i2d_ECDSA_SIG(es, &out);
        ECDSA_SIG_free(es);
    }
}

static int op_cold(void *p)
{
    struct bctx *b = p;
    struct authn_result r;
    enum reason rc = authn_verify(b->a, NULL, NULL, b->tok, b->len, b->now, &r);
    authn_result_release(&r);
    return (int)rc; /* REASON_ALLOWED is 0 */
}

static int op_warm(void *p)
{
    struct bctx *b = p;
    struct authn_result r;
    enum reason rc = authn_verify(b->a, b->cache, NULL, b->tok, b->len, b->now, &r);
    int hit = r.cache_hit;
    authn_result_release(&r);
    return rc != REASON_ALLOWED ? (int)rc : hit ? 0 : -1;
}

static int op_hint(void *p)
{
    struct bctx *b = p;
    struct authn_result r;
    enum reason rc = authn_verify(b->a, b->cache, &b->hint, b->tok, b->len, b->now, &r);
    int hit = r.cache_hit;
    authn_result_release(&r);
    return rc != REASON_ALLOWED ? (int)rc : hit ? 0 : -1;
}

static int op_raw(void *p)
{
    struct bctx *b = p;
    return jws_verify_raw(b->key, b->alg, b->parsed.signing_input, b->parsed.signing_input_len,
                          b->parsed.sig, b->parsed.sig_len);
}

static int op_hash(void *p)
{
    struct bctx *b = p;
    unsigned char out[32];
    sha256_raw(b->tok, b->len, out);
    return out[0] == 0 && out[1] == 0 && out[2] == 0 && out[3] == 0 && out[4] == 0 ? 1 : 0;
}

static int op_libjwt(void *p)
{
    struct bctx *b = p;
    jwt_t *jwt = NULL;
    int rc = jwt_decode(&jwt, b->tok, b->pem, b->pem_len);
    jwt_free(jwt);
    return rc == 0 ? 0 : -1;
}

/* Exactly n operations; callgrind counts only this function
 * (--toggle-collect=count_loop), so key generation, whose cost is random,
 * stays out of the figure. */
__attribute__((noinline)) static int count_loop(op_fn op, void *ctx, long n)
{
    for (long i = 0; i < n; i++)
        if (op(ctx) != 0)
            return -1;
    return 0;
}

static struct jws_keyset *ks;
static uint64_t gen_one = 1;

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
    return gen_one;
}

static void kid_miss(void *ctx, const struct cfg_issuer *is)
{
    (void)ctx;
    (void)is;
}

int main(int argc, char **argv)
{
    static const char *auds[] = {AUD};
    static const struct {
        const char *alg, *kid;
        enum jws_alg id;
    } cases[] = {
        {"RS256", "rsa", JWS_RS256},  {"PS256", "rsa", JWS_PS256}, {"ES256", "p256", JWS_ES256},
        {"ES384", "p384", JWS_ES384}, {"EdDSA", "ed", JWS_EDDSA},
    };
    EVP_PKEY *rsa = tk_rsa(2048), *p256 = tk_ec("P-256"), *p384 = tk_ec("P-384"),
             *ed = tk_ed25519();
    EVP_PKEY *signer[] = {rsa, rsa, p256, p384, ed};
    json_t *arr = json_array();
    struct cfg_issuer is;
    struct baton_config cfg;
    struct authn_keys keys = {acquire, generation, kid_miss, NULL, NULL};
    struct authn *a;
    int64_t now = (int64_t)time(NULL);
    char *payload;
    long count = -1;
    const char *count_mode = NULL, *count_alg = NULL;

    if (argc == 5 && strcmp(argv[1], "--count") == 0) {
        count = atol(argv[2]);
        count_mode = argv[3];
        count_alg = argv[4];
    } else if (argc > 1) {
        seconds = atof(argv[1]);
    }
    if (seconds <= 0)
        seconds = 1.0;
    json_array_append_new(arr, tk_jwk(rsa, "rsa", NULL));
    json_array_append_new(arr, tk_jwk(p256, "p256", "ES256"));
    json_array_append_new(arr, tk_jwk(p384, "p384", "ES384"));
    json_array_append_new(arr, tk_jwk(ed, "ed", "EdDSA"));
    ks = tk_keyset(arr);
    memset(&cfg, 0, sizeof(cfg));
    tk_issuer(&is, "aws", ISS, auds, 1,
              (1u << JWS_RS256) | (1u << JWS_PS256) | (1u << JWS_ES256) | (1u << JWS_ES384) |
                  (1u << JWS_EDDSA));
    cfg.issuers = &is;
    cfg.n_issuers = 1;
    a = authn_new(&cfg, &keys);
    /* the shape of an AWS IAM outbound identity token */
    payload = xasprintf(
        "{\"aud\":\"" AUD "\",\"sub\":\"arn:aws:iam::123456789012:role/sfn-billing\","
        "\"https://sts.amazonaws.com/\":{\"aws_account\":\"123456789012\",\"source_region\":"
        "\"us-east-1\",\"org_id\":\"o-abcdef1234\",\"ou_path\":[\"o-abcdef1234/r-ab12/ou-ab12-"
        "11111111/\"],\"principal_tags\":{\"team\":\"billing\",\"env\":\"prod\"}},"
        "\"iss\":\"" ISS
        "\",\"exp\":%lld,\"iat\":%lld,\"jti\":\"5f1c2d3e-4b5a-6978-8a9b-0c1d2e3f4a5b\"}",
        (long long)now + 3600, (long long)now);

    if (count < 0)
        printf("seconds_per_measurement %.2f\n", seconds);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct bctx b;
        char *h = xasprintf("{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":\"%s\"}", cases[i].alg,
                            cases[i].kid);
        char *tok = tk_sign(signer[i], cases[i].alg, h, payload);
        double warm, hash;
        struct meas m[3];

        memset(&b, 0, sizeof(b));
        b.a = a;
        b.cache = authn_cache_new(1024);
        b.tok = tok;
        b.len = strlen(tok);
        b.now = now;
        b.key = jws_keyset_find(ks, cases[i].kid, strlen(cases[i].kid));
        b.alg = cases[i].id;
        if (jws_parse(tok, b.len, 0, &b.parsed) != REASON_ALLOWED) {
            fprintf(stderr, "bench_jws: %s token does not parse\n", cases[i].alg);
            return 1;
        }
        speed_setup(&b, signer[i], cases[i].alg);
        if (count >= 0) {
            op_fn op = !strcmp(count_mode, "cold")   ? op_cold
                       : !strcmp(count_mode, "warm") ? op_warm
                       : !strcmp(count_mode, "hint") ? op_hint
                       : !strcmp(count_mode, "raw")  ? op_raw
                                                     : NULL;
            if (strcmp(count_alg, cases[i].alg) != 0)
                goto next;
            if (!op) {
                fprintf(stderr, "bench_jws: mode is cold, warm, hint or raw\n");
                return 2;
            }
            if (op == op_warm || op == op_hint)
                op_hint(&b); /* the miss that fills the cache and the hint */
            if (count_loop(op, &b, count) != 0) {
                fprintf(stderr, "bench_jws: %s %s failed\n", count_mode, count_alg);
                return 1;
            }
            goto next;
        }
        m[0] = (struct meas){"speed", op_speed, &b, 0, 0};
        m[1] = (struct meas){"raw", op_raw, &b, 0, 0};
        m[2] = (struct meas){"cold", op_cold, &b, 0, 0};
        interleave(m, 3, 3 * seconds);
        op_cold(&b);
        if (op_warm(&b) != -1) { /* the first cached call is the miss that fills the cache */
            fprintf(stderr, "bench_jws: %s: the first cached verification was not a miss\n",
                    cases[i].alg);
            return 1;
        }
        {
            struct meas w[2] = {{"warm", op_warm, &b, 0, 0}, {"sha256", op_hash, &b, 0, 0}};
            interleave(w, 2, seconds);
            warm = per_s(&w[0]);
            hash = per_s(&w[1]);
        }
        printf("%s_token_bytes %zu\n", cases[i].alg, b.len);
        printf("%s_speed_per_s %.0f\n", cases[i].alg, per_s(&m[0]));
        printf("%s_raw_per_s %.0f\n", cases[i].alg, per_s(&m[1]));
        printf("%s_cold_per_s %.0f\n", cases[i].alg, per_s(&m[2]));
        printf("%s_raw_vs_speed %.3f\n", cases[i].alg, per_s(&m[1]) / per_s(&m[0]));
        printf("%s_cold_vs_speed %.3f\n", cases[i].alg, per_s(&m[2]) / per_s(&m[0]));
        printf("%s_warm_per_s %.0f\n", cases[i].alg, warm);
        printf("%s_hit_ns %.0f\n", cases[i].alg, 1e9 / warm);
        printf("%s_sha256_ns %.0f\n", cases[i].alg, 1e9 / hash);
        fflush(stdout);
        if (cases[i].id == JWS_RS256) {
            char *pem = tk_pem_public(rsa);
            b.pem = (const unsigned char *)pem;
            b.pem_len = (int)strlen(pem);
            printf("libjwt_RS256_per_s %.0f\n", rate(op_libjwt, &b));
            free(pem);
        }
    next:
        EVP_PKEY_CTX_free(b.speed_ctx);
        EVP_MD_CTX_free(b.speed_md);
        jws_token_clear(&b.parsed);
        authn_cache_free(b.cache);
        free(tok);
        free(h);
    }
    authn_free(a);
    jws_keyset_unref(ks);
    json_decref(arr);
    free(payload);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(p256);
    EVP_PKEY_free(p384);
    EVP_PKEY_free(ed);
    return 0;
}
