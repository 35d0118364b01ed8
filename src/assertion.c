/*
 * assertion.c: the caller assertion's key, claims, signature and per-worker
 * cache (see assertion.h).
 *
 * The key is parsed once into an EVP_PKEY (checked: EC on P-256), its RFC
 * 7638 thumbprint is the kid, and the JOSE header's base64url is computed
 * once, so a signature is one jansson dump of the claims, two base64url
 * encodings and one EVP_DigestSign; OpenSSL's DER signature is turned into
 * JWS's raw r||s (RFC 7518 3.4). libjwt is not used: it re-parses the PEM on
 * every call (docs/design.md), which a miss on the worker cannot afford.
 */
#include "assertion.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "authn.h"
#include "b64.h"
#include "util.h"

#define KEY_FILE_MAX 65536
#define CACHE_KEY_MAX 4096 /* a longer (token, step, values) key is signed every time, not cached */

struct assertion_signer {
    EVP_PKEY *key; /* owned reference (shared with the snapshot it was inherited from) */
    bool generated;
    char kid[48];
    char *header_b64; /* base64url of the JOSE header, owned */
    size_t header_b64_len;
    char *jwks; /* owned */
    size_t jwks_len;
};

/* Refuses to prompt for a passphrase: an encrypted PEM simply fails to load. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return -1;
}

/*
 * The public JWK of an EC P-256 key (owned object with kid, use, alg) and its
 * RFC 7638 thumbprint in kid[48]. NULL with err when the key is not one.
 */
static json_t *p256_jwk(EVP_PKEY *pkey, char kid[48], char *err, size_t errlen)
{
    char group[64];
    BIGNUM *x = NULL, *y = NULL;
    unsigned char raw[32], digest[32];
    char x64[48], y64[48];
    char *thumb_in = NULL;
    json_t *jwk = NULL;

    if (!EVP_PKEY_is_a(pkey, "EC") ||
        !EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                        NULL) ||
        strcmp(group, "prime256v1") != 0) {
        errbuf_set(
            err, errlen,
            "not an EC P-256 key (ES256 needs P-256: "
            "openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt)");
        goto out;
    }
    if (!EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_X, &x) ||
        !EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, &y) ||
        BN_bn2binpad(x, raw, 32) != 32) {
        errbuf_set(err, errlen, "cannot read the EC public point");
        goto out;
    }
    b64url_encode(raw, 32, x64);
    if (BN_bn2binpad(y, raw, 32) != 32) {
        errbuf_set(err, errlen, "cannot read the EC public point");
        goto out;
    }
    b64url_encode(raw, 32, y64);
    /* RFC 7638: the required members in lexicographic order, no whitespace */
    thumb_in = xasprintf("{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", x64, y64);
    sha256_raw(thumb_in, strlen(thumb_in), digest);
    b64url_encode(digest, sizeof(digest), kid);
    jwk = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "kty", "EC", "crv", "P-256", "x", x64,
                    "y", y64, "kid", kid, "use", "sig", "alg", "ES256");
out:
    BN_free(x);
    BN_free(y);
    free(thumb_in);
    return jwk;
}

static EVP_PKEY *load_private(const char *path, char *err, size_t errlen)
{
    char why[600];
    EVP_PKEY *pkey = read_private_key_file(path, KEY_FILE_MAX, 0, why, sizeof(why));

    if (!pkey)
        snprintf(err, errlen, "assertion signing_key %s", why);
    return pkey;
}

static EVP_PKEY *load_public(const char *path, char *err, size_t errlen)
{
    char *pem = NULL;
    size_t len = 0;
    BIO *bio = NULL;
    EVP_PKEY *pkey = NULL;

    if (read_file_capped(path, KEY_FILE_MAX, &pem, &len) != 0) {
        snprintf(err, errlen, "assertion previous_keys %s: cannot read (or larger than %d bytes)",
                 path, KEY_FILE_MAX);
        return NULL;
    }
    bio = BIO_new_mem_buf(pem, (int)len);
    pkey = bio ? PEM_read_bio_PUBKEY(bio, NULL, no_passphrase, NULL) : NULL;
    if (!pkey)
        snprintf(err, errlen, "assertion previous_keys %s: not a PEM public key (BEGIN PUBLIC KEY)",
                 path);
    BIO_free(bio);
    free(pem);
    return pkey;
}

struct assertion_signer *assertion_signer_new(const struct cfg_assertion *cfg,
                                              const struct assertion_signer *prev, char *err,
                                              size_t errlen)
{
    struct assertion_signer *s = xcalloc(1, sizeof(*s));
    json_t *keys = json_array(), *jwk, *hdr = NULL, *doc = NULL;
    char why[256], *hdr_text = NULL, *doc_text = NULL;

    if (cfg->signing_key) {
        s->key = load_private(cfg->signing_key, err, errlen);
        if (!s->key)
            goto fail;
    } else if (prev && prev->generated) {
        /* a reload keeps the generated key: assertions already out stay verifiable */
        EVP_PKEY_up_ref(prev->key);
        s->key = prev->key;
        s->generated = true;
    } else {
        s->key = EVP_EC_gen("P-256");
        s->generated = true;
        if (!s->key) {
            errbuf_set(err, errlen, "assertion: EC P-256 key generation failed");
            goto fail;
        }
    }
    jwk = p256_jwk(s->key, s->kid, why, sizeof(why));
    if (!jwk) {
        snprintf(err, errlen, "assertion signing_key %s: %s",
                 cfg->signing_key ? cfg->signing_key : "(generated)", why);
        goto fail;
    }
    json_array_append_new(keys, jwk);
    for (size_t k = 0; k < cfg->n_previous_keys; k++) {
        char kid[48];
        EVP_PKEY *pub = load_public(cfg->previous_keys[k], err, errlen);
        if (!pub)
            goto fail;
        jwk = p256_jwk(pub, kid, why, sizeof(why));
        EVP_PKEY_free(pub);
        if (!jwk) {
            snprintf(err, errlen, "assertion previous_keys %s: %s", cfg->previous_keys[k], why);
            goto fail;
        }
        for (size_t j = 0; j < json_array_size(keys); j++)
            if (!strcmp(json_string_value(json_object_get(json_array_get(keys, j), "kid")), kid)) {
                snprintf(err, errlen, "assertion previous_keys %s: the same key is listed %s",
                         cfg->previous_keys[k], j == 0 ? "as the signing key" : "twice");
                json_decref(jwk);
                goto fail;
            }
        json_array_append_new(keys, jwk);
    }
    doc = json_pack("{s:O}", "keys", keys);
    doc_text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    hdr = json_pack("{s:s, s:s, s:s}", "alg", "ES256", "kid", s->kid, "typ", ASSERTION_TYP);
    hdr_text = hdr ? json_dumps(hdr, JSON_COMPACT) : NULL;
    if (!doc_text || !hdr_text) {
        errbuf_set(err, errlen, "assertion: cannot build the key set");
        goto fail;
    }
    s->jwks = xstrdup(doc_text);
    s->jwks_len = strlen(s->jwks);
    s->header_b64 = xmalloc(b64url_encoded_len(strlen(hdr_text)) + 1);
    s->header_b64_len = b64url_encode((const unsigned char *)hdr_text, strlen(hdr_text),
                                      s->header_b64);
    goto out;
fail:
    assertion_signer_free(s);
    s = NULL;
out:
    json_decref(keys);
    json_decref(doc);
    json_decref(hdr);
    free(hdr_text);
    free(doc_text);
    return s;
}

void assertion_signer_free(struct assertion_signer *s)
{
    if (!s)
        return;
    EVP_PKEY_free(s->key);
    free(s->header_b64);
    free(s->jwks);
    free(s);
}

const char *assertion_signer_kid(const struct assertion_signer *s)
{
    return s->kid;
}

const char *assertion_signer_jwks(const struct assertion_signer *s, size_t *len)
{
    if (len)
        *len = s->jwks_len;
    return s->jwks;
}

/* ----------------------------------------------------------------- claims */

/* A JSON string of header bytes: UTF-8 as is, anything else read as Latin-1
 * (RFC 9110 obs-text), so the value is never lost nor refused. */
static json_t *header_text(const char *v, size_t n)
{
    json_t *j = json_stringn(v, n);
    char *u;
    size_t o = 0;

    if (j)
        return j;
    u = xmalloc(2 * n + 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)v[i];
        if (b < 0x80) {
            u[o++] = (char)b;
        } else {
            u[o++] = (char)(0xC0 | (b >> 6));
            u[o++] = (char)(0x80 | (b & 0x3F));
        }
    }
    j = json_stringn(u, o);
    free(u);
    return j;
}

static void set_str(json_t *o, const char *key, const char *v)
{
    if (v)
        json_object_set_new(o, key, json_string(v));
}

json_t *assertion_claims(const struct assertion_input *in)
{
    const struct authn_result *ar = in->caller;
    const json_t *cexp, *cid;
    const char *client_id = NULL, *sub;
    json_t *c, *caller, *headers;
    int64_t exp;

    if (!ar || !ar->claims)
        return NULL;
    cid = json_object_get(ar->claims, "client_id");
    if (json_is_string(cid))
        client_id = json_string_value(cid);
    sub = in->cognito && client_id ? client_id : ar->sub;
    exp = in->now_s + (int64_t)in->cfg->lifetime_s;
    cexp = json_object_get(ar->claims, "exp");
    if (json_is_number(cexp) && (int64_t)json_number_value(cexp) < exp)
        exp = (int64_t)json_number_value(cexp); /* never outlives the caller's token */

    c = json_object();
    set_str(c, "iss", in->cfg->issuer);
    set_str(c, "aud", in->audience);
    json_object_set_new(c, "iat", json_integer(in->now_s));
    json_object_set_new(c, "exp", json_integer(exp));
    set_str(c, "sub", sub);
    caller = json_object();
    set_str(caller, "iss", ar->issuer ? ar->issuer->issuer : NULL);
    set_str(caller, "sub", ar->sub);
    set_str(caller, "client_id", client_id);
    set_str(caller, "aws_account", ar->aws_account);
    set_str(caller, "jti", ar->jti);
    set_str(caller, "token_sha256", ar->fingerprint[0] ? ar->fingerprint : NULL);
    json_object_set_new(c, "caller", caller);
    set_str(c, "step", in->step);
    json_object_set_new(
        c, "policy",
        json_pack("{s:s?, s:s?}", "file", in->policy_file, "sha256", in->policy_sha256));
    headers = json_object();
    for (size_t i = 0; i < in->n_headers && i < ASSERTION_MAX_HEADERS; i++)
        json_object_set_new(headers, in->header_names[i],
                            header_text(in->header_values[i], in->header_lens[i]));
    json_object_set_new(c, "headers", headers);
    json_object_set_new(c, "dry_run", json_boolean(in->dry_run));
    set_str(c, "audit_log", in->audit_log);
    return c;
}

/* ------------------------------------------------------------------- sign */

char *assertion_sign(const struct assertion_signer *s, const json_t *claims, char *err,
                     size_t errlen)
{
    char *payload = NULL, *out = NULL;
    size_t plen, n, p64;
    EVP_MD_CTX *md = NULL;
    unsigned char der[80], raw[64];
    const unsigned char *dp = der;
    size_t derlen = sizeof(der);
    ECDSA_SIG *es = NULL;
    const BIGNUM *r, *sv;

    payload = json_dumps(claims, JSON_COMPACT);
    if (!payload) {
        errbuf_set(err, errlen, "assertion: cannot serialize the claims");
        goto out;
    }
    plen = strlen(payload);
    n = s->header_b64_len + 1 + b64url_encoded_len(plen) + 1 + b64url_encoded_len(sizeof(raw));
    if (n > ASSERTION_MAX_BYTES) {
        snprintf(err, errlen, "assertion: %zu bytes signed would exceed %d", n,
                 ASSERTION_MAX_BYTES);
        goto out;
    }
    out = xmalloc(n + 1);
    memcpy(out, s->header_b64, s->header_b64_len);
    out[s->header_b64_len] = '.';
    p64 = b64url_encode((const unsigned char *)payload, plen, out + s->header_b64_len + 1);
    md = EVP_MD_CTX_new();
    if (!md || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, s->key) != 1 ||
        EVP_DigestSign(md, der, &derlen, (const unsigned char *)out, s->header_b64_len + 1 + p64) !=
            1 ||
        !(es = d2i_ECDSA_SIG(NULL, &dp, (long)derlen))) {
        errbuf_set(err, errlen, "assertion: ES256 signing failed");
        free(out);
        out = NULL;
        goto out;
    }
    ECDSA_SIG_get0(es, &r, &sv);
    if (BN_bn2binpad(r, raw, 32) != 32 || BN_bn2binpad(sv, raw + 32, 32) != 32) {
        errbuf_set(err, errlen, "assertion: ES256 signature out of range");
        free(out);
        out = NULL;
        goto out;
    }
    n = s->header_b64_len + 1 + p64;
    out[n++] = '.';
    b64url_encode(raw, sizeof(raw), out + n);
out:
    ECDSA_SIG_free(es);
    EVP_MD_CTX_free(md);
    free(payload);
    return out;
}

/* ------------------------------------------------------------------ cache */

struct slot {
    uint64_t hash;
    char *key; /* owned: the (fingerprint, step, values) bytes, compared whole on a hit */
    size_t key_len;
    char *line; /* owned: "<header>: <jws>\r\n" */
    size_t line_len;
    int64_t use_until; /* exp - refresh margin */
};

struct assertion_cache {
    struct slot slots[ASSERTION_CACHE_SLOTS];
    char *scratch; /* the last uncacheable line, owned */
    struct assertion_cache_stats st;
};

struct assertion_cache *assertion_cache_new(void)
{
    return xcalloc(1, sizeof(struct assertion_cache));
}

void assertion_cache_free(struct assertion_cache *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < ASSERTION_CACHE_SLOTS; i++) {
        free(c->slots[i].key);
        free(c->slots[i].line);
    }
    free(c->scratch);
    free(c);
}

void assertion_cache_stats(const struct assertion_cache *c, struct assertion_cache_stats *out)
{
    *out = c->st;
}

unsigned assertion_refresh_margin_s(unsigned lifetime_s)
{
    unsigned m = lifetime_s / 10;
    return m < 5 ? 5 : m > 60 ? 60 : m;
}

/* Appends `n` bytes to the key being built; false once it would overflow. */
static bool key_put(char *key, size_t *len, const void *p, size_t n)
{
    if (n > CACHE_KEY_MAX - *len)
        return false;
    memcpy(key + *len, p, n);
    *len += n;
    return true;
}

const char *assertion_cache_line(struct assertion_cache *c, const struct assertion_signer *s,
                                 const struct assertion_input *in, size_t *len, char *err,
                                 size_t errlen)
{
    char key[CACHE_KEY_MAX];
    size_t klen = 0;
    bool cacheable;
    uint64_t h = 0;
    struct slot *sl = NULL;
    json_t *claims = NULL;
    char *jws = NULL, *line = NULL;
    const char *ret = NULL;
    size_t hl, jl;
    const json_t *exp;

    /* The key: what decides the claims besides the snapshot (whose cache this
     * is): the token's fingerprint, the step by its name's address (owned by
     * the snapshot's policy, so stable as long as this cache), the values. */
    cacheable = key_put(key, &klen, in->caller->fingerprint, 64) &&
                key_put(key, &klen, &in->step, sizeof(in->step));
    for (size_t i = 0; cacheable && i < in->n_headers; i++) {
        uint32_t vl = (uint32_t)in->header_lens[i];
        cacheable = key_put(key, &klen, &vl, sizeof(vl)) &&
                    key_put(key, &klen, in->header_values[i], in->header_lens[i]);
    }
    if (cacheable) {
        /* the fingerprint is already a hash: its first 64 bits seed a
         * word-at-a-time multiply-xorshift over the rest */
        size_t i = 64;
        memcpy(&h, key, sizeof(h)); /* 8 hex digits of SHA-256: random enough to seed */
        for (; i + 8 <= klen; i += 8) {
            uint64_t w;
            memcpy(&w, key + i, 8);
            h = (h ^ w) * 0x9E3779B97F4A7C15ull;
            h ^= h >> 29;
        }
        if (i < klen) {
            uint64_t w = 0;
            memcpy(&w, key + i, klen - i);
            h = (h ^ w) * 0x9E3779B97F4A7C15ull;
            h ^= h >> 29;
        }
        sl = &c->slots[h & (ASSERTION_CACHE_SLOTS - 1)];
        if (sl->line && sl->hash == h && sl->key_len == klen && !memcmp(sl->key, key, klen) &&
            in->now_s < sl->use_until) {
            c->st.hits++;
            *len = sl->line_len;
            return sl->line;
        }
    }
    c->st.misses++;
    claims = assertion_claims(in);
    if (!claims) {
        errbuf_set(err, errlen, "assertion: the caller has no verified claims");
        goto out;
    }
    jws = assertion_sign(s, claims, err, errlen);
    if (!jws)
        goto out;
    c->st.signed_++;
    hl = strlen(in->cfg->header);
    jl = strlen(jws);
    line = xmalloc(hl + 2 + jl + 3);
    memcpy(line, in->cfg->header, hl);
    memcpy(line + hl, ": ", 2);
    memcpy(line + hl + 2, jws, jl);
    memcpy(line + hl + 2 + jl, "\r\n", 3);
    *len = hl + 2 + jl + 2;
    exp = json_object_get(claims, "exp");
    if (sl) {
        free(sl->key);
        free(sl->line);
        sl->hash = h;
        sl->key = xmalloc(klen);
        memcpy(sl->key, key, klen);
        sl->key_len = klen;
        sl->line = line;
        sl->line_len = *len;
        sl->use_until = json_integer_value(exp) -
                        (int64_t)assertion_refresh_margin_s(in->cfg->lifetime_s);
    } else {
        free(c->scratch);
        c->scratch = line;
    }
    ret = line;
out:
    if (!ret)
        c->st.failures++;
    json_decref(claims);
    free(jws);
    return ret;
}
