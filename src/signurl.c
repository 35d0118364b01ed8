/*
 * signurl.c: signed URLs (signurl.h): the strict parser of the link
 * parameters, the canonical string, Ed25519 signing and verification with
 * OpenSSL EVP (keys parsed once, at load), the in-memory use store, and the
 * sign endpoint's request body.
 *
 * Nothing here blocks: keys are read by signurl_keys_load (startup, reload,
 * `baton check`, `baton sign-url`), never on the request path. The use store
 * takes one mutex for a bounded probe of a fixed table.
 */
#include "signurl.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "b64.h"
#include "util.h"

#define CANON_PREFIX "BATON-SIGNED-URL-V1\n"

/* ------------------------------------------------------------- parameters */

static const char *const param_names[5] = {"baton_exp", "baton_kid", "baton_uses", "baton_minter",
                                           "baton_sig"};

static bool id_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

static bool id_ok(const char *s, size_t n, size_t max)
{
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!id_char((unsigned char)s[i]))
            return false;
    return true;
}

/* Decimal without sign or leading zero ("0" alone allowed when zero_ok). */
static bool decimal(const char *s, size_t n, int64_t max, bool zero_ok, int64_t *out)
{
    int64_t v = 0;
    if (n == 0 || n > 13 || (s[0] == '0' && n > 1))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v > max || (v == 0 && !zero_ok))
        return false;
    *out = v;
    return true;
}

/* Whether the parameter name `s` (`n` bytes, percent escapes decoded, ASCII
 * folded) starts with "baton_". */
static bool name_is_baton(const char *s, size_t n)
{
    static const char want[] = "baton_";
    size_t i = 0, k = 0;
    while (k < 6 && i < n) {
        int c = (unsigned char)s[i];
        if (c == '%' && i + 2 < n && hex_value((unsigned char)s[i + 1]) >= 0 &&
            hex_value((unsigned char)s[i + 2]) >= 0) {
            c = hex_value((unsigned char)s[i + 1]) << 4 | hex_value((unsigned char)s[i + 2]);
            i += 3;
        } else {
            i++;
        }
        if (c >= 'A' && c <= 'Z')
            c += 'a' - 'A';
        if (c != want[k++])
            return false;
    }
    return k == 6;
}

static size_t name_len(const char *p, size_t n)
{
    const char *eq = memchr(p, '=', n);
    return eq ? (size_t)(eq - p) : n;
}

bool signurl_query_marked(const char *q, size_t n)
{
    size_t i = 0;
    if (!q)
        return false;
    while (i <= n) {
        const char *amp = memchr(q + i, '&', n - i);
        size_t end = amp ? (size_t)(amp - q) : n;
        if (name_is_baton(q + i, name_len(q + i, end - i)))
            return true;
        i = end + 1;
    }
    return false;
}

int signurl_parse_query(const char *q, size_t n, struct signurl_params *out, char *err,
                        size_t errlen)
{
    size_t i = 0, start = 0;
    int k = 0; /* next expected parameter */
    bool in_suffix = false;

    memset(out, 0, sizeof(*out));
    if (!q)
        return 0;
    while (i <= n) {
        const char *amp = memchr(q + i, '&', n - i);
        size_t end = amp ? (size_t)(amp - q) : n, nl = name_len(q + i, end - i);
        const char *name = q + i, *val = q + i + nl + 1;
        size_t vl = nl < end - i ? end - i - nl - 1 : 0;
        bool has_eq = nl < end - i;

        if (!in_suffix) {
            if (!name_is_baton(name, nl)) {
                i = end + 1;
                continue;
            }
            in_suffix = true;
            start = i;
        }
        if (k == 5) {
            errbuf_set(err, errlen, "a parameter follows baton_sig");
            return -1;
        }
        if (nl != strlen(param_names[k]) || memcmp(name, param_names[k], nl) != 0) {
            for (int j = 0; j < 5; j++)
                if (nl == strlen(param_names[j]) && !memcmp(name, param_names[j], nl)) {
                    errbuf_set(err, errlen,
                               j < k ? "%s appears twice" : "%s out of order (%s expected)",
                               param_names[j], param_names[k]);
                    return -1;
                }
            errbuf_set(err, errlen, "unknown or non-canonical baton_ parameter where %s belongs",
                       param_names[k]);
            return -1;
        }
        if (!has_eq || vl == 0) {
            errbuf_set(err, errlen, "%s has no value", param_names[k]);
            return -1;
        }
        switch (k) {
        case 0:
            if (!decimal(val, vl, SIGNURL_EXP_MAX, false, &out->exp)) {
                errbuf_set(err, errlen, "baton_exp is not a canonical unix time");
                return -1;
            }
            break;
        case 1:
            if (!id_ok(val, vl, SIGNURL_KID_MAX)) {
                errbuf_set(err, errlen, "baton_kid is not a key id");
                return -1;
            }
            memcpy(out->kid, val, vl);
            out->kid[vl] = '\0';
            break;
        case 2: {
            int64_t u;
            if (!decimal(val, vl, SIGNURL_MAX_USES, true, &u)) {
                errbuf_set(err, errlen, "baton_uses is not 0..%d in canonical decimal",
                           SIGNURL_MAX_USES);
                return -1;
            }
            out->uses = (unsigned)u;
            break;
        }
        case 3:
            if (!id_ok(val, vl, SIGNURL_MINTER_MAX)) {
                errbuf_set(err, errlen, "baton_minter is not a minter id");
                return -1;
            }
            memcpy(out->minter, val, vl);
            out->minter[vl] = '\0';
            break;
        case 4: {
            unsigned char raw[80];
            size_t rl = 0;
            if (vl != SIGNURL_SIG_CHARS || b64url_decode(val, vl, raw, &rl) != 0 || rl != 72) {
                errbuf_set(err, errlen, "baton_sig is not %d characters of canonical base64url",
                           SIGNURL_SIG_CHARS);
                return -1;
            }
            memcpy(out->sig, raw, 64);
            memcpy(out->hint, raw + 64, 8);
            out->signed_len = i - 1; /* before the '&' of "&baton_sig" */
            break;
        }
        }
        k++;
        i = end + 1;
    }
    if (!in_suffix)
        return 0;
    if (k < 5) {
        errbuf_set(err, errlen, "%s is missing", param_names[k]);
        return -1;
    }
    out->base_len = start ? start - 1 : 0;
    return 1;
}

/* ------------------------------------------------------------------- keys */

struct signurl_key {
    char id[SIGNURL_KID_MAX + 1];
    EVP_PKEY *pkey;
    /* DigestVerify-initialized at load, only ever copied (as jws.c does): a
     * verification then costs no provider fetch, and the key set stays
     * read-only, so workers share it */
    EVP_MD_CTX *verify_tmpl;
};

struct signurl_keys {
    struct signurl_key v[SIGNURL_MAX_KEYS];
    size_t n;
    unsigned max_ttl_s, leeway_s;
};

void signurl_keys_free(struct signurl_keys *k)
{
    if (!k)
        return;
    for (size_t i = 0; i < k->n; i++) {
        EVP_MD_CTX_free(k->v[i].verify_tmpl);
        EVP_PKEY_free(k->v[i].pkey);
    }
    free(k);
}

static EVP_PKEY *load_ed25519(const char *path, char *err, size_t errlen)
{
    return read_private_key_file(path, SIGNURL_KEY_FILE_MAX, EVP_PKEY_ED25519, err, errlen);
}

struct signurl_keys *signurl_keys_load(const struct cfg_url_signing *cfg, char *err, size_t errlen,
                                       int *bad)
{
    struct signurl_keys *k = xcalloc(1, sizeof(*k));

    *bad = -1;
    if (!cfg->enabled || cfg->n_keys == 0 || cfg->n_keys > SIGNURL_MAX_KEYS) {
        errbuf_set(err, errlen, "url_signing needs 1..%d keys", SIGNURL_MAX_KEYS);
        goto fail;
    }
    k->max_ttl_s = cfg->max_ttl_s;
    k->leeway_s = cfg->leeway_s;
    for (size_t i = 0; i < cfg->n_keys; i++) {
        char why[600];
        if (!id_ok(cfg->keys[i].id, strlen(cfg->keys[i].id), SIGNURL_KID_MAX)) {
            errbuf_set(err, errlen, "key id \"%s\" is not [A-Za-z0-9._-]{1,32}", cfg->keys[i].id);
            *bad = (int)i;
            goto fail;
        }
        k->v[i].pkey = load_ed25519(cfg->keys[i].file, why, sizeof(why));
        if (!k->v[i].pkey) {
            errbuf_set(err, errlen, "url_signing key \"%s\": %s", cfg->keys[i].id, why);
            *bad = (int)i;
            goto fail;
        }
        snprintf(k->v[i].id, sizeof(k->v[i].id), "%s", cfg->keys[i].id);
        k->n = i + 1;
        k->v[i].verify_tmpl = EVP_MD_CTX_new();
        if (!k->v[i].verify_tmpl || EVP_DigestVerifyInit_ex(k->v[i].verify_tmpl, NULL, NULL, NULL,
                                                            NULL, k->v[i].pkey, NULL) != 1) {
            errbuf_set(err, errlen, "url_signing key \"%s\": cannot prepare verification",
                       cfg->keys[i].id);
            *bad = (int)i;
            goto fail;
        }
    }
    return k;
fail:
    signurl_keys_free(k);
    return NULL;
}

struct signurl_keys *signurl_keys_for(const struct baton_config *cfg, struct diags *d)
{
    char err[700], where[64];
    int bad = -1;
    struct signurl_keys *k;

    if (!cfg->url_signing.enabled)
        return NULL;
    k = signurl_keys_load(&cfg->url_signing, err, sizeof(err), &bad);
    if (!k) {
        snprintf(where, sizeof(where), bad >= 0 ? "url_signing/keys/%d/file" : "url_signing", bad);
        config_diag(cfg, d, where, false, "%s", err);
    }
    return k;
}

const char *signurl_keys_signer(const struct signurl_keys *k)
{
    return k->v[0].id;
}

unsigned signurl_keys_max_ttl(const struct signurl_keys *k)
{
    return k->max_ttl_s;
}

static const struct signurl_key *key_find(const struct signurl_keys *k, const char *kid)
{
    for (size_t i = 0; i < k->n; i++)
        if (strcmp(k->v[i].id, kid) == 0)
            return &k->v[i];
    return NULL;
}

/* ------------------------------------------------------- canonical string */

/* Appends the first four lines (prefix, method, host, path) to `out` (which
 * has room: the caller sized it) and returns the length. */
static size_t canon_head(const struct signurl_scope *s, char *out)
{
    size_t o = sizeof(CANON_PREFIX) - 1, ml = strlen(s->method);
    memcpy(out, CANON_PREFIX, o);
    memcpy(out + o, s->method, ml);
    o += ml;
    out[o++] = '\n';
    for (size_t i = 0; i < s->host_len; i++) {
        char c = s->host[i];
        out[o++] = (c >= 'A' && c <= 'Z') ? (char)(c + ('a' - 'A')) : c;
    }
    out[o++] = '\n';
    memcpy(out + o, s->path, s->path_len);
    o += s->path_len;
    out[o++] = '\n';
    return o;
}

static size_t canon_head_len(const struct signurl_scope *s)
{
    return sizeof(CANON_PREFIX) - 1 + strlen(s->method) + 1 + s->host_len + 1 + s->path_len + 1;
}

static void scope_hint(const char *head, size_t len, unsigned char hint[8])
{
    unsigned char d[32];
    sha256_raw(head, len, d);
    memcpy(hint, d, 8);
}

/* ---------------------------------------------------------------- signing */

int signurl_sign(const struct signurl_keys *k, const struct signurl_scope *scope, int64_t exp,
                 unsigned uses, const char *minter, char *out, unsigned char id[SIGNURL_ID_BYTES],
                 char *err, size_t errlen)
{
    char params[SIGNURL_SUFFIX_MAX], *msg = NULL;
    unsigned char raw[72];
    size_t siglen = 64, hl, pl, ml;
    EVP_MD_CTX *ctx = NULL;
    int n, rc = -1;

    if (exp < 1 || exp > SIGNURL_EXP_MAX || uses > SIGNURL_MAX_USES ||
        !id_ok(minter, strlen(minter), SIGNURL_MINTER_MAX)) {
        errbuf_set(err, errlen, "expiry, uses or minter out of range");
        goto out;
    }
    if (signurl_query_marked(scope->query, scope->query_len)) {
        errbuf_set(err, errlen, "the URL already carries a baton_ parameter");
        goto out;
    }
    n = snprintf(params, sizeof(params),
                 "baton_exp=%lld&baton_kid=%s&baton_uses=%u&baton_minter=%s", (long long)exp,
                 k->v[0].id, uses, minter);
    if (n < 0 || (size_t)n >= sizeof(params) - SIGNURL_SIG_CHARS - 16)
        goto out;
    pl = (size_t)n;
    hl = canon_head_len(scope);
    ml = hl + (scope->query ? scope->query_len + 1 : 0) + pl;
    msg = xmalloc(ml + 1);
    canon_head(scope, msg);
    if (scope->query && scope->query_len) {
        memcpy(msg + hl, scope->query, scope->query_len);
        msg[hl + scope->query_len] = '&';
        memcpy(msg + hl + scope->query_len + 1, params, pl);
        ml = hl + scope->query_len + 1 + pl;
    } else {
        memcpy(msg + hl, params, pl);
        ml = hl + pl;
    }
    ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestSignInit(ctx, NULL, NULL, NULL, k->v[0].pkey) != 1 ||
        EVP_DigestSign(ctx, raw, &siglen, (const unsigned char *)msg, ml) != 1 || siglen != 64) {
        errbuf_set(err, errlen, "Ed25519 signing failed");
        goto out;
    }
    scope_hint(msg, hl, raw + 64);
    if (id) {
        unsigned char d[32];
        sha256_raw(raw, 64, d);
        memcpy(id, d, SIGNURL_ID_BYTES);
    }
    {
        char sig[SIGNURL_SIG_CHARS + 1];
        b64url_encode(raw, sizeof(raw), sig);
        n = snprintf(out, SIGNURL_SUFFIX_MAX, "%c%s&baton_sig=%s",
                     scope->query && scope->query_len ? '&' : '?', params, sig);
    }
    if (n < 0 || n >= SIGNURL_SUFFIX_MAX)
        goto out;
    rc = n;
out:
    EVP_MD_CTX_free(ctx);
    free(msg);
    return rc;
}

/* ----------------------------------------------------------- verification */

static bool sig_ok(const struct signurl_key *key, const unsigned char sig[64], const char *msg,
                   size_t len)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool ok = ctx && EVP_MD_CTX_copy_ex(ctx, key->verify_tmpl) == 1 &&
              EVP_DigestVerify(ctx, sig, 64, (const unsigned char *)msg, len) == 1;
    EVP_MD_CTX_free(ctx);
    return ok;
}

enum reason signurl_verify(const struct signurl_keys *k, const struct signurl_scope *scope,
                           const struct signurl_params *p, int64_t now_s)
{
    const struct signurl_key *key = k ? key_find(k, p->kid) : NULL;
    char stack[2048], *msg = stack;
    size_t hl, ml;
    enum reason r;

    if (!key)
        return REASON_URL_UNKNOWN_KEY;
    hl = canon_head_len(scope);
    ml = hl + p->signed_len;
    if (ml > sizeof(stack))
        msg = xmalloc(ml);
    canon_head(scope, msg);
    memcpy(msg + hl, scope->query, p->signed_len);
    if (!sig_ok(key, p->sig, msg, ml)) {
        unsigned char hint[8];
        scope_hint(msg, hl, hint);
        r = memcmp(hint, p->hint, 8) != 0 ? REASON_URL_SCOPE_MISMATCH : REASON_URL_BAD_SIGNATURE;
        goto out;
    }
    if (now_s >= p->exp + (int64_t)k->leeway_s ||
        p->exp - now_s > (int64_t)k->max_ttl_s + (int64_t)k->leeway_s) {
        r = REASON_URL_EXPIRED;
        goto out;
    }
    r = REASON_ALLOWED;
out:
    if (msg != stack)
        free(msg);
    return r;
}

void signurl_link_id(const struct signurl_params *p, unsigned char id[SIGNURL_ID_BYTES])
{
    unsigned char d[32];
    sha256_raw(p->sig, sizeof(p->sig), d);
    memcpy(id, d, SIGNURL_ID_BYTES);
}

void signurl_id_hex(const unsigned char id[SIGNURL_ID_BYTES], char out[2 * SIGNURL_ID_BYTES + 1])
{
    hex_encode(id, SIGNURL_ID_BYTES, out);
}

void signurl_minter_id(const char *issuer_name, const char *iss, const char *sub, char *out)
{
    size_t il = iss ? strlen(iss) : 0, sl = sub ? strlen(sub) : 0;
    char *buf = xmalloc(il + sl + 1), hex[65];
    if (il)
        memcpy(buf, iss, il);
    buf[il] = '\0';
    if (sl)
        memcpy(buf + il + 1, sub, sl);
    sha256_hex(buf, il + 1 + sl, hex);
    free(buf);
    snprintf(out, SIGNURL_MINTER_MAX + 1, "%.64s.%.12s", issuer_name, hex);
}

bool signurl_minter_issuer_is(const char *minter, const char *issuer_name)
{
    const char *dot = strrchr(minter, '.');
    size_t n = strlen(issuer_name);
    return dot && (size_t)(dot - minter) == n && memcmp(minter, issuer_name, n) == 0 &&
           strlen(dot + 1) == 12;
}

/* ---------------------------------------------------------------- use store */

struct use_entry {
    unsigned char id[SIGNURL_ID_BYTES];
    int64_t until; /* 0: empty */
    unsigned count;
};

#define PROBE 32 /* slots examined per link: the table may hold a little less than full */

struct signurl_memstore {
    pthread_mutex_t mu;
    struct use_entry *v;
    size_t mask;
};

struct signurl_memstore *signurl_memstore_new(size_t entries)
{
    struct signurl_memstore *s = xcalloc(1, sizeof(*s));
    size_t n = 64;
    if (!entries)
        entries = SIGNURL_STORE_ENTRIES;
    while (n < entries)
        n *= 2;
    s->v = xcalloc(n, sizeof(*s->v));
    s->mask = n - 1;
    pthread_mutex_init(&s->mu, NULL);
    return s;
}

void signurl_memstore_free(struct signurl_memstore *s)
{
    if (!s)
        return;
    pthread_mutex_destroy(&s->mu);
    free(s->v);
    free(s);
}

/*
 * Linear probing over a window of PROBE slots from the id's hash; an entry is
 * never emptied, only overwritten once its link has expired, so a lookup
 * scans the whole window (never stopping at a hole) and finds the id wherever
 * it was put.
 */
static enum signurl_use mem_consume(void *ctx, const unsigned char id[SIGNURL_ID_BYTES],
                                    unsigned uses, int64_t until_s, int64_t now_s)
{
    struct signurl_memstore *s = ctx;
    uint64_t h;
    struct use_entry *free_slot = NULL;
    enum signurl_use r = SIGNURL_USE_UNAVAILABLE;

    memcpy(&h, id, sizeof(h)); /* the id is a hash already */
    pthread_mutex_lock(&s->mu);
    for (size_t k = 0; k < PROBE; k++) {
        struct use_entry *e = &s->v[(h + k) & s->mask];
        bool live = e->until > now_s;
        if (live && memcmp(e->id, id, SIGNURL_ID_BYTES) == 0) {
            if (e->count >= uses) {
                r = SIGNURL_USE_USED;
            } else {
                e->count++;
                r = SIGNURL_USE_OK;
            }
            goto out;
        }
        if (!live && !free_slot)
            free_slot = e;
    }
    if (free_slot) {
        memcpy(free_slot->id, id, SIGNURL_ID_BYTES);
        free_slot->until = until_s;
        free_slot->count = 1;
        r = SIGNURL_USE_OK;
    }
out:
    pthread_mutex_unlock(&s->mu);
    return r;
}

struct signurl_uses signurl_memstore_uses(struct signurl_memstore *s)
{
    struct signurl_uses u = {mem_consume, s};
    return u;
}

/* ------------------------------------------------------------- mint request */

static bool method_known(const char *m)
{
    static const char *const known[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"};
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (strcmp(m, known[i]) == 0)
            return true;
    return false;
}

int signurl_mint_parse(const char *body, size_t len, struct signurl_mint_req *out, char *err,
                       size_t errlen)
{
    json_error_t je;
    json_t *root = NULL, *v;
    const char *key;
    int rc = -1;

    memset(out, 0, sizeof(*out));
    out->uses = 1;
    if (len > SIGNURL_MINT_BODY_MAX) {
        errbuf_set(err, errlen, "body over %d bytes", SIGNURL_MINT_BODY_MAX);
        goto out;
    }
    root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(root)) {
        errbuf_set(err, errlen, "body is not a JSON object");
        goto out;
    }
    json_object_foreach(root, key, v) {
        if (strcmp(key, "method") && strcmp(key, "path") && strcmp(key, "ttl_s") &&
            strcmp(key, "uses")) {
            errbuf_set(err, errlen, "unknown key \"%.40s\"", key);
            goto out;
        }
    }
    v = json_object_get(root, "method");
    if (!json_is_string(v) || !method_known(json_string_value(v))) {
        errbuf_set(err, errlen,
                   "\"method\" must be GET, HEAD, POST, PUT, DELETE, PATCH or OPTIONS");
        goto out;
    }
    snprintf(out->method, sizeof(out->method), "%s", json_string_value(v));
    v = json_object_get(root, "path");
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 4096 ||
        json_string_value(v)[0] != '/' || strlen(json_string_value(v)) != json_string_length(v)) {
        errbuf_set(err, errlen, "\"path\" must be an origin-form target of at most 4096 bytes");
        goto out;
    }
    out->target = xstrdup(json_string_value(v));
    v = json_object_get(root, "ttl_s");
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 604800) {
        errbuf_set(err, errlen, "\"ttl_s\" must be an integer 1..604800");
        goto out;
    }
    out->ttl_s = (unsigned)json_integer_value(v);
    if ((v = json_object_get(root, "uses"))) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) > SIGNURL_MAX_USES) {
            errbuf_set(err, errlen, "\"uses\" must be an integer 0..%d", SIGNURL_MAX_USES);
            goto out;
        }
        out->uses = (unsigned)json_integer_value(v);
    }
    rc = 0;
out:
    json_decref(root);
    if (rc != 0)
        signurl_mint_req_clear(out);
    return rc;
}

void signurl_mint_req_clear(struct signurl_mint_req *r)
{
    free(r->target);
    r->target = NULL;
}
