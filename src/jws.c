/*
 * jws.c: JWK Set loading and compact JWS parsing and verification.
 *
 * The only file that calls OpenSSL's signature APIs for verification. Keys
 * are built with EVP_PKEY_fromdata (RSA n,e; EC group + uncompressed point,
 * then EVP_PKEY_public_check) or EVP_PKEY_new_raw_public_key (Ed25519) once per
 * key-set load, and for every algorithm a key may verify a verify-initialized
 * EVP_PKEY_CTX template (padding, PSS salt = hash length, MGF1 hash = message
 * hash) is prepared then. A verification hashes the signing input with a
 * digest fetched once per process, duplicates the template (EVP_PKEY_CTX_dup:
 * no provider fetch, no key parse on the request path) and calls
 * EVP_PKEY_verify. Ed25519 (no prehash) duplicates a DigestVerify-initialized
 * EVP_MD_CTX instead. Templates are never used directly, only duplicated, so
 * a keyset is safe to share between threads read-only.
 *
 * ECDSA signatures in JWS are raw r||s of exactly twice the curve's byte
 * length; they are re-encoded here as DER for OpenSSL. A DER signature in a
 * token is therefore simply the wrong length and fails.
 */
#include "jws.h"

#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>

#include "b64.h"
#include "jws_json.h"
#include "util.h"

enum alg_kind { KIND_RSA_PKCS1, KIND_RSA_PSS, KIND_ECDSA, KIND_EDDSA };

static const struct alg_info {
    enum alg_kind kind;
    int md;          /* index into mds[]; -1 for EdDSA */
    size_t hash_len; /* PSS salt length = hash length (RFC 7518 3.5) */
} algs[JWS_ALG__COUNT] = {
    [JWS_RS256] = {KIND_RSA_PKCS1, 0, 32}, [JWS_RS384] = {KIND_RSA_PKCS1, 1, 48},
    [JWS_RS512] = {KIND_RSA_PKCS1, 2, 64}, [JWS_PS256] = {KIND_RSA_PSS, 0, 32},
    [JWS_PS384] = {KIND_RSA_PSS, 1, 48},   [JWS_PS512] = {KIND_RSA_PSS, 2, 64},
    [JWS_ES256] = {KIND_ECDSA, 0, 32},     [JWS_ES384] = {KIND_ECDSA, 1, 48},
    [JWS_ES512] = {KIND_ECDSA, 2, 64},     [JWS_EDDSA] = {KIND_EDDSA, -1, 0},
};

#define RSA_ALGS                                                                     \
    ((1u << JWS_RS256) | (1u << JWS_RS384) | (1u << JWS_RS512) | (1u << JWS_PS256) | \
     (1u << JWS_PS384) | (1u << JWS_PS512))

static const char *const md_names[3] = {"SHA256", "SHA384", "SHA512"};
static EVP_MD *mds[3];
static pthread_once_t mds_once = PTHREAD_ONCE_INIT;

/* Fetched once: an implicit fetch per EVP_Digest call costs a lookup and a lock. */
static void mds_init(void)
{
    for (int i = 0; i < 3; i++) {
        mds[i] = EVP_MD_fetch(NULL, md_names[i], NULL);
        if (!mds[i])
            abort(); /* the default provider always has SHA-2: a broken install */
    }
}

enum kty { KTY_RSA, KTY_EC, KTY_OKP };

struct jws_key {
    char *kid; /* owned, NUL-terminated, or NULL */
    size_t kid_len;
    enum kty kty;
    size_t sig_len; /* exact signature length: modulus bytes, 2 x field bytes, 64 */
    unsigned algs;  /* pinned: 1u << enum jws_alg */
    EVP_PKEY *pkey; /* owned */
    EVP_PKEY_CTX *tmpl[JWS_ALG__COUNT]; /* owned; verify-initialized, only ever duplicated */
    EVP_MD_CTX *ed_tmpl; /* owned; Ed25519 DigestVerify-initialized, only ever copied */
};

struct jws_keyset {
    atomic_uint refs;
    size_t n, skipped;
    struct jws_key *keys; /* owned array of n */
    char note[160];
};

/* ---- small helpers ---------------------------------------------------------- */

static const char *const alg_names[JWS_ALG__COUNT] = {
    [JWS_RS256] = "RS256", [JWS_RS384] = "RS384", [JWS_RS512] = "RS512", [JWS_PS256] = "PS256",
    [JWS_PS384] = "PS384", [JWS_PS512] = "PS512", [JWS_ES256] = "ES256", [JWS_ES384] = "ES384",
    [JWS_ES512] = "ES512", [JWS_EDDSA] = "EdDSA",
};

int jws_alg_from_name(const char *name)
{
    if (!name)
        return -1;
    for (int a = 0; a < JWS_ALG__COUNT; a++)
        if (!strcmp(name, alg_names[a]))
            return a;
    return -1;
}

const char *jws_alg_name(enum jws_alg alg)
{
    return (unsigned)alg < JWS_ALG__COUNT ? alg_names[alg] : "?";
}

int jws_alg_lookup(const char *name)
{
    if (strcmp(name, "Ed25519") == 0)
        return JWS_EDDSA;
    return jws_alg_from_name(name);
}

bool jws_json_too_deep(const char *s, size_t len, int max_depth)
{
    int depth = 0;
    bool in_str = false;

    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\')
                i++; /* the escaped byte cannot end the string */
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '[' || c == '{') {
            if (++depth > max_depth)
                return true;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return false;
}

/*
 * Decodes the base64url string member `name` of `obj` into an owned buffer.
 * Returns 0, or -1 when absent, not a string, not strict base64url, or
 * longer than `cap` decoded bytes.
 */
static int b64_member(const json_t *obj, const char *name, size_t cap, unsigned char **out,
                      size_t *outlen)
{
    const json_t *v = json_object_get(obj, name);
    const char *s;
    size_t slen;

    *out = NULL;
    if (!json_is_string(v))
        return -1;
    s = json_string_value(v);
    slen = json_string_length(v);
    if (b64url_decoded_max(slen) > cap + 2)
        return -1;
    *out = xmalloc(b64url_decoded_max(slen));
    if (b64url_decode(s, slen, *out, outlen) != 0 || *outlen > cap) {
        free(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

/* Prints a kid for a note: printable ASCII only, truncated. */
static void kid_for_note(const json_t *jwk, char *out, size_t cap)
{
    const json_t *v = json_object_get(jwk, "kid");
    const char *s = json_is_string(v) ? json_string_value(v) : NULL;
    size_t o = 0;

    if (!s) {
        snprintf(out, cap, "(no kid)");
        return;
    }
    out[o++] = '"';
    for (size_t i = 0; s[i] && o + 5 < cap && i < 40; i++)
        out[o++] = (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '"') ? s[i] : '?';
    out[o++] = '"';
    out[o] = '\0';
}

/* ---- keys ------------------------------------------------------------------- */

static void key_release(struct jws_key *k)
{
    for (int a = 0; a < JWS_ALG__COUNT; a++)
        EVP_PKEY_CTX_free(k->tmpl[a]);
    EVP_MD_CTX_free(k->ed_tmpl);
    EVP_PKEY_free(k->pkey);
    free(k->kid);
    memset(k, 0, sizeof(*k));
}

static EVP_PKEY *pkey_fromdata(const char *type, OSSL_PARAM *params)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    EVP_PKEY *pkey = NULL;

    if (!ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        pkey = NULL;
    EVP_PKEY_CTX_free(ctx);
    return pkey;
}

/* RSA from n, e. Returns a skip message or NULL. */
static const char *load_rsa(const json_t *jwk, struct jws_key *k)
{
    unsigned char *n = NULL, *e = NULL;
    size_t nlen = 0, elen = 0, off = 0;
    BIGNUM *bn_n = NULL, *bn_e = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    const char *why = NULL;
    int bits;

    if (b64_member(jwk, "n", JWS_RSA_MAX_BITS / 8 + 1, &n, &nlen) != 0) {
        why = "RSA n missing, not strict base64url, or over 8192 bits";
        goto out;
    }
    if (b64_member(jwk, "e", 8, &e, &elen) != 0) {
        why = "RSA e missing or not strict base64url";
        goto out;
    }
    /* e = 65537 only (see jws.h): every issuer uses it, and it rules out the
     * small-exponent signature forgeries against lax PKCS#1 parsers. */
    while (elen > 0 && e[0] == 0) {
        memmove(e, e + 1, --elen);
    }
    if (elen != 3 || e[0] != 1 || e[1] != 0 || e[2] != 1) {
        why = "RSA e is not 65537";
        goto out;
    }
    while (off < nlen && n[off] == 0)
        off++; /* tolerated leading zero octets (RFC 7518 forbids them; some issuers emit one) */
    bn_n = BN_bin2bn(n + off, (int)(nlen - off), NULL);
    bn_e = BN_bin2bn(e, (int)elen, NULL);
    if (!bn_n || !bn_e)
        abort();
    bits = BN_num_bits(bn_n);
    if (bits < JWS_RSA_MIN_BITS) {
        why = "RSA modulus under 2048 bits";
        goto out;
    }
    if (bits > JWS_RSA_MAX_BITS) {
        why = "RSA modulus over 8192 bits";
        goto out;
    }
    if (!BN_is_odd(bn_n)) {
        why = "RSA modulus is even";
        goto out;
    }
    bld = OSSL_PARAM_BLD_new();
    if (!bld || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e) ||
        !(params = OSSL_PARAM_BLD_to_param(bld)))
        abort();
    k->pkey = pkey_fromdata("RSA", params);
    if (!k->pkey) {
        why = "RSA key rejected by OpenSSL";
        goto out;
    }
    k->kty = KTY_RSA;
    k->sig_len = (size_t)(bits + 7) / 8;
    k->algs = RSA_ALGS;
out:
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn_n);
    BN_free(bn_e);
    free(n);
    free(e);
    return why;
}

static const struct curve {
    const char *crv, *group;
    size_t bytes;
    enum jws_alg alg;
} curves[] = {
    {"P-256", "prime256v1", 32, JWS_ES256},
    {"P-384", "secp384r1", 48, JWS_ES384},
    {"P-521", "secp521r1", 66, JWS_ES512},
};

/* EC from crv, x, y; the point must be on the curve. Returns a skip message or NULL. */
static const char *load_ec(const json_t *jwk, struct jws_key *k)
{
    const char *crv = json_string_value(json_object_get(jwk, "crv"));
    const struct curve *c = NULL;
    unsigned char *x = NULL, *y = NULL, pt[1 + 2 * 66];
    size_t xlen = 0, ylen = 0;
    OSSL_PARAM params[3];
    EVP_PKEY_CTX *chk = NULL;
    const char *why = NULL;

    for (size_t i = 0; crv && i < sizeof(curves) / sizeof(curves[0]); i++)
        if (strcmp(crv, curves[i].crv) == 0)
            c = &curves[i];
    if (!c) {
        why = "EC crv missing or not P-256, P-384, P-521";
        goto out;
    }
    if (b64_member(jwk, "x", c->bytes, &x, &xlen) != 0 || xlen != c->bytes ||
        b64_member(jwk, "y", c->bytes, &y, &ylen) != 0 || ylen != c->bytes) {
        why = "EC x or y missing, not strict base64url, or not the field length";
        goto out;
    }
    pt[0] = 0x04;
    memcpy(pt + 1, x, c->bytes);
    memcpy(pt + 1 + c->bytes, y, c->bytes);
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)c->group, 0);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, pt, 1 + 2 * c->bytes);
    params[2] = OSSL_PARAM_construct_end();
    k->pkey = pkey_fromdata("EC", params);
    if (!k->pkey) {
        why = "EC point rejected (not on the curve)";
        goto out;
    }
    chk = EVP_PKEY_CTX_new_from_pkey(NULL, k->pkey, NULL);
    if (!chk || EVP_PKEY_public_check(chk) != 1) {
        why = "EC public key check failed";
        goto out;
    }
    k->kty = KTY_EC;
    k->sig_len = 2 * c->bytes;
    k->algs = 1u << c->alg;
out:
    EVP_PKEY_CTX_free(chk);
    free(x);
    free(y);
    return why;
}

static const char *load_okp(const json_t *jwk, struct jws_key *k)
{
    const char *crv = json_string_value(json_object_get(jwk, "crv"));
    unsigned char *x = NULL;
    size_t xlen = 0;
    const char *why = NULL;

    if (!crv || strcmp(crv, "Ed25519") != 0) {
        why = "OKP crv is not Ed25519";
        goto out;
    }
    if (b64_member(jwk, "x", 32, &x, &xlen) != 0 || xlen != 32) {
        why = "OKP x missing, not strict base64url, or not 32 bytes";
        goto out;
    }
    k->pkey = EVP_PKEY_new_raw_public_key_ex(NULL, "ED25519", NULL, x, 32);
    if (!k->pkey) {
        why = "Ed25519 key rejected by OpenSSL";
        goto out;
    }
    k->kty = KTY_OKP;
    k->sig_len = 64;
    k->algs = 1u << JWS_EDDSA;
out:
    free(x);
    return why;
}

/* Verify contexts prepared once per key and algorithm (see the file comment). */
static int key_templates(struct jws_key *k)
{
    pthread_once(&mds_once, mds_init);
    for (int a = 0; a < JWS_ALG__COUNT; a++) {
        const struct alg_info *ai = &algs[a];
        EVP_PKEY_CTX *c;

        if (!(k->algs & (1u << a)))
            continue;
        if (ai->kind == KIND_EDDSA) {
            k->ed_tmpl = EVP_MD_CTX_new();
            if (!k->ed_tmpl ||
                EVP_DigestVerifyInit_ex(k->ed_tmpl, NULL, NULL, NULL, NULL, k->pkey, NULL) != 1)
                return -1;
            continue;
        }
        c = k->tmpl[a] = EVP_PKEY_CTX_new_from_pkey(NULL, k->pkey, NULL);
        if (!c || EVP_PKEY_verify_init(c) <= 0 ||
            EVP_PKEY_CTX_set_signature_md(c, mds[ai->md]) <= 0)
            return -1;
        if (ai->kind == KIND_RSA_PKCS1 && EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PADDING) <= 0)
            return -1;
        if (ai->kind == KIND_RSA_PSS &&
            (EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PSS_PADDING) <= 0 ||
             EVP_PKEY_CTX_set_rsa_mgf1_md(c, mds[ai->md]) <= 0 ||
             EVP_PKEY_CTX_set_rsa_pss_saltlen(c, (int)ai->hash_len) <= 0))
            return -1;
    }
    return 0;
}

/*
 * One JWK into `k`. Returns NULL when usable, else why it is skipped (a static
 * string, no key material).
 */
static const char *load_key(const json_t *jwk, struct jws_key *k)
{
    const json_t *use, *ops, *alg, *kid;
    const char *kty, *why;
    int a = -1;

    memset(k, 0, sizeof(*k));
    if (!json_is_object(jwk))
        return "not a JSON object";
    kty = json_string_value(json_object_get(jwk, "kty"));
    if (!kty)
        return "kty missing";
    use = json_object_get(jwk, "use");
    if (use && (!json_is_string(use) || strcmp(json_string_value(use), "sig") != 0))
        return "use is not \"sig\"";
    ops = json_object_get(jwk, "key_ops");
    if (ops) {
        bool verify = false;
        size_t i;
        json_t *op;
        if (!json_is_array(ops))
            return "key_ops is not an array";
        json_array_foreach(ops, i, op) {
            if (json_is_string(op) && strcmp(json_string_value(op), "verify") == 0)
                verify = true;
        }
        if (!verify)
            return "key_ops without \"verify\"";
    }
    kid = json_object_get(jwk, "kid");
    if (kid && (!json_is_string(kid) || json_string_length(kid) > JWS_KID_MAX))
        return "kid is not a string of at most 256 bytes";
    alg = json_object_get(jwk, "alg");
    if (alg) {
        if (!json_is_string(alg) || (a = jws_alg_lookup(json_string_value(alg))) < 0)
            return "alg is not a supported JWS signature algorithm";
    }
    if (strcmp(kty, "RSA") == 0)
        why = load_rsa(jwk, k);
    else if (strcmp(kty, "EC") == 0)
        why = load_ec(jwk, k);
    else if (strcmp(kty, "OKP") == 0)
        why = load_okp(jwk, k);
    else
        why = "kty is not RSA, EC or OKP";
    if (why)
        goto fail;
    if (a >= 0) { /* the JWK's own alg narrows what its type allows, never widens it */
        if (!(k->algs & (1u << a))) {
            why = "alg does not match the key type or curve";
            goto fail;
        }
        k->algs = 1u << a;
    }
    if (key_templates(k) != 0) {
        why = "OpenSSL refused a verify context for the key";
        goto fail;
    }
    if (kid) {
        k->kid_len = json_string_length(kid);
        k->kid = xstrndup(json_string_value(kid), k->kid_len);
    }
    return NULL;
fail:
    key_release(k);
    return why;
}

struct jws_keyset *jws_keyset_parse(const char *json, size_t len, char *err, size_t errlen)
{
    struct jws_keyset *ks = NULL;
    json_t *doc = NULL, *keys, *jwk;
    json_error_t jerr;
    size_t i;

    errbuf_set(err, errlen, "%s", "");
    if (len > JWS_KEYSET_MAX_BYTES) {
        errbuf_set(err, errlen, "key set document of %zu bytes exceeds the %u-byte cap", len,
                   JWS_KEYSET_MAX_BYTES);
        goto out;
    }
    if (jws_json_too_deep(json, len, JWS_JSON_MAX_DEPTH)) {
        errbuf_set(err, errlen, "key set document nests deeper than %d", JWS_JSON_MAX_DEPTH);
        goto out;
    }
    doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        errbuf_set(err, errlen, "key set is not valid JSON: %s at line %d column %d", jerr.text,
                   jerr.line, jerr.column);
        goto out;
    }
    keys = json_object_get(doc, "keys");
    if (!json_is_array(keys)) {
        errbuf_set(err, errlen, "key set has no \"keys\" array");
        goto out;
    }
    if (json_array_size(keys) > JWS_KEYSET_MAX_KEYS) {
        errbuf_set(err, errlen, "key set has %zu keys, more than the cap of %d",
                   json_array_size(keys), JWS_KEYSET_MAX_KEYS);
        goto out;
    }
    ks = xcalloc(1, sizeof(*ks));
    atomic_init(&ks->refs, 1);
    ks->keys = xcalloc(json_array_size(keys) + 1, sizeof(*ks->keys));
    json_array_foreach(keys, i, jwk) {
        struct jws_key *k = &ks->keys[ks->n];
        const char *why = load_key(jwk, k);

        if (!why && k->kid && jws_keyset_find(ks, k->kid, k->kid_len)) {
            key_release(k);
            why = "duplicate kid";
        }
        if (why) {
            if (!ks->skipped++) {
                char kidbuf[48];
                kid_for_note(jwk, kidbuf, sizeof(kidbuf));
                snprintf(ks->note, sizeof(ks->note), "key %zu %s skipped: %s", i, kidbuf, why);
            }
            continue;
        }
        ks->n++;
    }
out:
    json_decref(doc);
    return ks;
}

struct jws_keyset *jws_keyset_ref(struct jws_keyset *ks)
{
    atomic_fetch_add_explicit(&ks->refs, 1, memory_order_relaxed);
    return ks;
}

void jws_keyset_unref(struct jws_keyset *ks)
{
    if (!ks || atomic_fetch_sub_explicit(&ks->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < ks->n; i++)
        key_release(&ks->keys[i]);
    free(ks->keys);
    free(ks);
}

size_t jws_keyset_count(const struct jws_keyset *ks)
{
    return ks->n;
}

size_t jws_keyset_skipped(const struct jws_keyset *ks)
{
    return ks->skipped;
}

const char *jws_keyset_note(const struct jws_keyset *ks)
{
    return ks->note;
}

const struct jws_key *jws_keyset_key(const struct jws_keyset *ks, size_t i)
{
    return i < ks->n ? &ks->keys[i] : NULL;
}

const struct jws_key *jws_keyset_find(const struct jws_keyset *ks, const char *kid, size_t len)
{
    for (size_t i = 0; i < ks->n; i++) {
        const struct jws_key *k = &ks->keys[i];
        if (k->kid && k->kid_len == len && memcmp(k->kid, kid, len) == 0)
            return k;
    }
    return NULL;
}

const char *jws_key_kid(const struct jws_key *k)
{
    return k->kid;
}

unsigned jws_key_algs(const struct jws_key *k)
{
    return k->algs;
}

/* ---- signatures --------------------------------------------------------------- */

/* Appends a DER INTEGER of the unsigned big-endian `v` (n bytes); returns bytes written. */
static size_t der_uint(unsigned char *out, const unsigned char *v, size_t n)
{
    size_t o = 0;
    while (n > 1 && v[0] == 0) {
        v++;
        n--;
    }
    out[o++] = 0x02;
    out[o++] = (unsigned char)(n + (v[0] & 0x80 ? 1 : 0));
    if (v[0] & 0x80)
        out[o++] = 0x00;
    memcpy(out + o, v, n);
    return o + n;
}

/* Raw r||s (2 x half bytes, half <= 66) to a DER ECDSA-Sig-Value; returns its length. */
static size_t ecdsa_raw_to_der(const unsigned char *sig, size_t half, unsigned char *out)
{
    unsigned char body[2 * (2 + 67)];
    size_t blen = der_uint(body, sig, half);
    size_t o = 0;

    blen += der_uint(body + blen, sig + half, half);
    out[o++] = 0x30;
    if (blen > 127)
        out[o++] = 0x81;
    out[o++] = (unsigned char)blen;
    memcpy(out + o, body, blen);
    return o + blen;
}

/* RSA or ECDSA over a digest of the message already taken with alg's hash;
 * the caller checked alg against the key and the signature length. 0 valid. */
static int verify_digest(const struct jws_key *k, enum jws_alg alg, const unsigned char *dgst,
                         size_t dlen, const unsigned char *sig, size_t siglen)
{
    unsigned char der[8 + 2 * (2 + 67)];
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_dup(k->tmpl[alg]);
    int rc = -1;

    if (!ctx)
        return -1;
    if (algs[alg].kind == KIND_ECDSA) {
        size_t derlen = ecdsa_raw_to_der(sig, siglen / 2, der);
        rc = EVP_PKEY_verify(ctx, der, derlen, dgst, dlen) == 1 ? 0 : -1;
    } else {
        rc = EVP_PKEY_verify(ctx, sig, siglen, dgst, dlen) == 1 ? 0 : -1;
    }
    EVP_PKEY_CTX_free(ctx);
    return rc;
}

int jws_verify_raw(const struct jws_key *k, enum jws_alg alg, const void *msg, size_t msglen,
                   const unsigned char *sig, size_t siglen)
{
    const struct alg_info *ai;
    unsigned char dgst[EVP_MAX_MD_SIZE];
    unsigned dlen = 0;
    EVP_MD_CTX *mctx = NULL;
    int rc = -1;

    if ((unsigned)alg >= JWS_ALG__COUNT || !(k->algs & (1u << alg)) || siglen != k->sig_len)
        goto out;
    ai = &algs[alg];
    if (ai->kind == KIND_EDDSA) {
        mctx = EVP_MD_CTX_new();
        if (mctx && EVP_MD_CTX_copy_ex(mctx, k->ed_tmpl) == 1 &&
            EVP_DigestVerify(mctx, sig, siglen, msg, msglen) == 1)
            rc = 0;
        goto out;
    }
    if (EVP_Digest(msg, msglen, dgst, &dlen, mds[ai->md], NULL) != 1)
        goto out;
    rc = verify_digest(k, alg, dgst, dlen, sig, siglen);
out:
    EVP_MD_CTX_free(mctx);
    return rc;
}

/* ---- tokens ----------------------------------------------------------------- */

void jws_token_clear(struct jws_token *t)
{
    json_decref(t->header);
    json_decref(t->claims);
    memset(t, 0, offsetof(struct jws_token, sig));
    t->sig_len = 0;
}

/* Strict base64url part -> JSON object (jws_json.c: what json_loadb with
 * JSON_REJECT_DUPLICATES accepts, under the depth cap, in one pass). `buf`
 * holds b64url_decoded_max(len). */
static enum reason decode_json(const char *s, size_t len, unsigned char *buf, json_t **out)
{
    size_t n;

    *out = NULL;
    if (b64url_decode(s, len, buf, &n) != 0)
        return REASON_TOKEN_BAD_ENCODING;
    *out = jws_json_parse((const char *)buf, n, JWS_JSON_MAX_DEPTH);
    return *out ? REASON_ALLOWED : REASON_TOKEN_BAD_JSON;
}

/* The header members baton refuses to see; see jws.h. */
static enum reason check_header(json_t *h, struct jws_token *t)
{
    static const char *const embedded[] = {"jku", "x5u", "jwk", "x5c"};
    const json_t *alg = json_object_get(h, "alg"), *b64, *kid, *typ;
    const char *name;
    int a;

    if (!json_is_string(alg))
        return REASON_TOKEN_MALFORMED;
    name = json_string_value(alg);
    if (ascii_casecmp_n(name, strlen(name), "none", 4) == 0)
        return REASON_ALG_NONE;
    a = jws_alg_lookup(name);
    if (a < 0)
        return REASON_ALG_NOT_ALLOWED; /* HS*, unknown names, wrong case */
    /* baton implements no extension, so any crit is one it does not understand
     * (RFC 7515 4.1.11); b64:false (RFC 7797) changes what is signed. */
    if (json_object_get(h, "crit"))
        return REASON_CRIT_UNSUPPORTED;
    b64 = json_object_get(h, "b64");
    if (b64 && !json_is_true(b64))
        return REASON_CRIT_UNSUPPORTED;
    for (size_t i = 0; i < sizeof(embedded) / sizeof(embedded[0]); i++)
        if (json_object_get(h, embedded[i]))
            return REASON_EMBEDDED_KEY;
    kid = json_object_get(h, "kid");
    if (kid && !json_is_string(kid))
        return REASON_BAD_CLAIM_TYPE;
    typ = json_object_get(h, "typ");
    if (typ && !json_is_string(typ))
        return REASON_BAD_CLAIM_TYPE;
    t->alg = (enum jws_alg)a;
    if (kid) {
        t->kid = json_string_value(kid);
        t->kid_len = json_string_length(kid);
    }
    t->typ = typ ? json_string_value(typ) : NULL;
    return REASON_ALLOWED;
}

enum reason jws_parse(const char *tok, size_t len, size_t max_bytes, struct jws_token *out)
{
    const char *d1, *d2;
    size_t hlen, plen, slen, maxdec;
    unsigned char stackbuf[8192], *buf = stackbuf;
    enum reason r;

    memset(out, 0, offsetof(struct jws_token, sig));
    out->sig_len = 0;
    if (!max_bytes)
        max_bytes = JWS_DEFAULT_MAX_TOKEN_BYTES;
    if (len > max_bytes)
        return REASON_TOKEN_TOO_LARGE;
    d1 = memchr(tok, '.', len);
    if (!d1)
        return REASON_TOKEN_MALFORMED;
    d2 = memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - tok));
    if (!d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - tok)))
        return REASON_TOKEN_MALFORMED; /* not three parts (a JWE has five) */
    hlen = (size_t)(d1 - tok);
    plen = (size_t)(d2 - d1 - 1);
    slen = len - (size_t)(d2 + 1 - tok);
    if (!hlen || !plen)
        return REASON_TOKEN_MALFORMED;
    /* Signature first: cheap, and a signature no key could have made needs no JSON. */
    if (slen > b64url_encoded_len(JWS_SIG_MAX))
        return REASON_BAD_SIGNATURE;
    if (b64url_decode(d2 + 1, slen, out->sig, &out->sig_len) != 0) {
        out->sig_len = 0;
        return REASON_TOKEN_BAD_ENCODING;
    }
    maxdec = b64url_decoded_max(hlen > plen ? hlen : plen);
    if (maxdec > sizeof(stackbuf))
        buf = xmalloc(maxdec);
    r = decode_json(tok, hlen, buf, &out->header);
    if (r == REASON_ALLOWED)
        r = check_header(out->header, out);
    if (r == REASON_ALLOWED)
        r = decode_json(d1 + 1, plen, buf, &out->claims);
    if (buf != stackbuf)
        free(buf);
    if (r != REASON_ALLOWED) {
        jws_token_clear(out);
        return r;
    }
    out->signing_input = tok;
    out->signing_input_len = (size_t)(d2 - tok);
    out->text_len = len;
    return REASON_ALLOWED;
}

/* Whether alg signs a SHA-256 digest of the signing input (RS256, PS256, ES256). */
static bool signs_sha256(enum jws_alg alg)
{
    return algs[alg].kind != KIND_EDDSA && algs[alg].md == 0;
}

void jws_token_sha256(struct jws_token *t, unsigned char out[32])
{
    EVP_MD_CTX *c = EVP_MD_CTX_new(), *si = NULL;
    unsigned n = 0;

    pthread_once(&mds_once, mds_init);
    if (!c || EVP_DigestInit_ex2(c, mds[0], NULL) != 1 ||
        EVP_DigestUpdate(c, t->signing_input, t->signing_input_len) != 1)
        abort(); /* SHA-256 on a fetched digest cannot fail short of memory */
    if (signs_sha256(t->alg)) {
        /* the state after "h.p" is the signing input's digest in the making */
        if (!(si = EVP_MD_CTX_new()) || EVP_MD_CTX_copy_ex(si, c) != 1 ||
            EVP_DigestFinal_ex(si, t->si_sha256, &n) != 1 || n != 32)
            abort();
        t->si_sha256_set = true;
    }
    if (EVP_DigestUpdate(c, t->signing_input + t->signing_input_len,
                         t->text_len - t->signing_input_len) != 1 ||
        EVP_DigestFinal_ex(c, out, &n) != 1 || n != 32)
        abort();
    EVP_MD_CTX_free(si);
    EVP_MD_CTX_free(c);
}

enum reason jws_verify(const struct jws_token *t, const struct jws_key *k, unsigned allowed)
{
    int rc;

    if (!(allowed & (1u << t->alg)))
        return REASON_ALG_NOT_ALLOWED;
    if (!(k->algs & (1u << t->alg)))
        return REASON_ALG_KEY_MISMATCH;
    if (t->si_sha256_set && signs_sha256(t->alg)) /* hashed once, by jws_token_sha256 */
        rc = t->sig_len == k->sig_len
                 ? verify_digest(k, t->alg, t->si_sha256, 32, t->sig, t->sig_len)
                 : -1;
    else
        rc = jws_verify_raw(k, t->alg, t->signing_input, t->signing_input_len, t->sig, t->sig_len);
    return rc == 0 ? REASON_ALLOWED : REASON_BAD_SIGNATURE;
}
