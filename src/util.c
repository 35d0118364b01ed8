/*
 * util.c: allocation wrappers, hashing and clocks used throughout baton.
 */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include <openssl/core_dispatch.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/provider.h>

static void oom(void)
{
    fputs("baton: out of memory\n", stderr);
    abort();
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom();
    return p;
}

void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        oom();
    return p;
}

void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        oom();
    return p;
}

char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *xvasprintf(const char *fmt, va_list ap)
{
    char *p;
    if (vasprintf(&p, fmt, ap) < 0)
        oom();
    return p;
}

char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    char *p;
    va_start(ap, fmt);
    p = xvasprintf(fmt, ap);
    va_end(ap);
    return p;
}

/* OpenSSL 3 looks an implementation up on every EVP_sha256() use ("implicit
 * fetch", ~0.3 us); fetch it once for the process. EVP_Digest allocates and
 * frees a context on every call, and OpenSSL 3.0's EVP_DigestInit_ex2 frees
 * and allocates the provider's context again on every init even when the
 * digest is the same (and asks the ENGINE table first): ~800 instructions and
 * a malloc/free pair per hash, and the audit writer hashes every record. So
 * each thread keeps the provider's own context, and a hash calls the
 * implementation EVP_MD_fetch chose through its dispatch table (the public
 * provider interface, core_dispatch.h): init, update, final, no allocation.
 * Where that table cannot be read, each thread keeps an EVP_MD_CTX instead. */
static EVP_MD *sha256_md;
static pthread_key_t sha256_ctx_key;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;
static struct {
    void *provctx;
    OSSL_FUNC_digest_newctx_fn *newctx;
    OSSL_FUNC_digest_freectx_fn *freectx;
    OSSL_FUNC_digest_init_fn *init;
    OSSL_FUNC_digest_update_fn *update;
    OSSL_FUNC_digest_final_fn *final;
} sha256_impl; /* all set, or newctx NULL: the EVP path */

static void sha256_ctx_free(void *ctx)
{
    if (sha256_impl.newctx)
        sha256_impl.freectx(ctx);
    else
        EVP_MD_CTX_free(ctx);
}

/* True when names (OpenSSL's "A:B:C" list) holds name. */
static bool names_have(const char *names, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = names; p && *p; p = strchr(p, ':') ? strchr(p, ':') + 1 : NULL)
        if (!strncmp(p, name, n) && (p[n] == ':' || p[n] == '\0'))
            return true;
    return false;
}

/* The dispatch table of the SHA2-256 implementation of the provider that
 * EVP_MD_fetch chose (sha256_md holds that provider loaded for the process). */
static void sha256_dispatch(void)
{
    const OSSL_PROVIDER *prov = EVP_MD_get0_provider(sha256_md);
    const OSSL_ALGORITHM *all, *alg;
    int no_store = 0;

    if (!prov || !(all = OSSL_PROVIDER_query_operation(prov, OSSL_OP_DIGEST, &no_store)))
        return;
    for (alg = all; alg->algorithm_names; alg++) {
        if (!names_have(alg->algorithm_names, "SHA2-256"))
            continue;
        OSSL_FUNC_digest_newctx_fn *newctx = NULL;
        OSSL_FUNC_digest_freectx_fn *freectx = NULL;
        OSSL_FUNC_digest_init_fn *init = NULL;
        OSSL_FUNC_digest_update_fn *update = NULL;
        OSSL_FUNC_digest_final_fn *final = NULL;
        for (const OSSL_DISPATCH *d = alg->implementation; d->function_id; d++) {
            switch (d->function_id) {
            case OSSL_FUNC_DIGEST_NEWCTX:
                newctx = OSSL_FUNC_digest_newctx(d);
                break;
            case OSSL_FUNC_DIGEST_FREECTX:
                freectx = OSSL_FUNC_digest_freectx(d);
                break;
            case OSSL_FUNC_DIGEST_INIT:
                init = OSSL_FUNC_digest_init(d);
                break;
            case OSSL_FUNC_DIGEST_UPDATE:
                update = OSSL_FUNC_digest_update(d);
                break;
            case OSSL_FUNC_DIGEST_FINAL:
                final = OSSL_FUNC_digest_final(d);
                break;
            }
        }
        if (newctx && freectx && init && update && final) {
            sha256_impl.provctx = OSSL_PROVIDER_get0_provider_ctx(prov);
            sha256_impl.freectx = freectx;
            sha256_impl.init = init;
            sha256_impl.update = update;
            sha256_impl.final = final;
            sha256_impl.newctx = newctx;
        }
        break;
    }
    OSSL_PROVIDER_unquery_operation(prov, OSSL_OP_DIGEST, all);
}

static void sha256_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA2-256", NULL);
    if (!sha256_md || pthread_key_create(&sha256_ctx_key, sha256_ctx_free) != 0)
        abort();
    sha256_dispatch();
}

void sha256_raw(const void *data, size_t len, unsigned char out[32])
{
    unsigned int n = 32;
    size_t outl = 0;
    void *ctx;

    pthread_once(&sha256_once, sha256_fetch);
    ctx = pthread_getspecific(sha256_ctx_key);
    if (!ctx) {
        ctx = sha256_impl.newctx ? sha256_impl.newctx(sha256_impl.provctx) : EVP_MD_CTX_new();
        if (!ctx || pthread_setspecific(sha256_ctx_key, ctx) != 0)
            abort();
    }
    /* cannot fail for an in-memory digest short of OOM */
    if (sha256_impl.newctx) {
        if (!sha256_impl.init(ctx, NULL) || !sha256_impl.update(ctx, data, len) ||
            !sha256_impl.final(ctx, out, &outl, 32) || outl != 32)
            abort();
    } else if (!EVP_DigestInit_ex2(ctx, sha256_md, NULL) || !EVP_DigestUpdate(ctx, data, len) ||
               !EVP_DigestFinal_ex(ctx, out, &n)) {
        abort();
    }
}

/* The two digits of every byte (hex) and of every number below 100
 * (decimal): one table load a pair instead of a shift, a mask and two loads
 * (the audit writer hex-encodes every record's chain hash, and a request head
 * and its record carry a dozen numbers). */
static const char hex_pairs[513] =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
    "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
    "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
    "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
    "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
    "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
    "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";
static const char dec_pairs[201] = "00010203040506070809101112131415161718192021222324"
                                   "25262728293031323334353637383940414243444546474849"
                                   "50515253545556575859606162636465666768697071727374"
                                   "75767778798081828384858687888990919293949596979899";

#ifdef __SSE2__
/* The hex digits of 16 nibbles (0-15 a byte). */
static inline __m128i hex_digits16(__m128i nib)
{
    __m128i over9 = _mm_cmpgt_epi8(nib, _mm_set1_epi8(9));
    return _mm_add_epi8(_mm_add_epi8(nib, _mm_set1_epi8('0')),
                        _mm_and_si128(over9, _mm_set1_epi8('a' - '0' - 10)));
}
#endif

void hex_encode(const unsigned char *in, size_t len, char *out)
{
    size_t i = 0;

#ifdef __SSE2__
    /* 16 bytes at a time: high and low nibbles interleaved, then to digits
     * (a chain hash is two rounds, a trace id one) */
    const __m128i low4 = _mm_set1_epi8(0x0f);
    for (; i + 16 <= len; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(in + i));
        __m128i hi = _mm_and_si128(_mm_srli_epi16(v, 4), low4), lo = _mm_and_si128(v, low4);
        _mm_storeu_si128((__m128i *)(void *)(out + 2 * i), hex_digits16(_mm_unpacklo_epi8(hi, lo)));
        _mm_storeu_si128((__m128i *)(void *)(out + 2 * i + 16),
                         hex_digits16(_mm_unpackhi_epi8(hi, lo)));
    }
    if (i + 8 <= len) {
        __m128i v = _mm_loadl_epi64((const __m128i *)(const void *)(in + i));
        __m128i hi = _mm_and_si128(_mm_srli_epi16(v, 4), low4), lo = _mm_and_si128(v, low4);
        _mm_storeu_si128((__m128i *)(void *)(out + 2 * i), hex_digits16(_mm_unpacklo_epi8(hi, lo)));
        i += 8;
    }
#endif
    for (; i < len; i++)
        memcpy(out + 2 * i, hex_pairs + 2 * in[i], 2);
    out[2 * len] = '\0';
}

size_t u64_decimal(uint64_t v, char out[20])
{
    static const uint64_t pow10[20] = {1ull,
                                       10ull,
                                       100ull,
                                       1000ull,
                                       10000ull,
                                       100000ull,
                                       1000000ull,
                                       10000000ull,
                                       100000000ull,
                                       1000000000ull,
                                       10000000000ull,
                                       100000000000ull,
                                       1000000000000ull,
                                       10000000000000ull,
                                       100000000000000ull,
                                       1000000000000000ull,
                                       10000000000000000ull,
                                       100000000000000000ull,
                                       1000000000000000000ull,
                                       10000000000000000000ull};
    size_t n, p;

    if (v < 10) {
        out[0] = (char)('0' + v);
        return 1;
    }
    /* digits without a loop: bits * log10(2) (1233/4096) is the number of
     * digits or one more, which the table settles */
    n = (size_t)(64 - __builtin_clzll(v)) * 1233 >> 12;
    n += v >= pow10[n];
    p = n;
    while (v >= 100) {
        p -= 2;
        memcpy(out + p, dec_pairs + 2 * (v % 100), 2);
        v /= 100;
    }
    if (v >= 10)
        memcpy(out + p - 2, dec_pairs + 2 * v, 2);
    else
        out[p - 1] = (char)('0' + v);
    return n;
}

void sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char raw[32];
    sha256_raw(data, len, raw);
    hex_encode(raw, 32, out);
}

void errbuf_set(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (!err || !errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* ASCII upper-case letters of a word lowered: a byte is A-Z when its low 7
 * bits are >= 'A' and <= 'Z' and its top bit is clear; those get 0x20. */
static inline uint64_t lower_word(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t low7 = w & ~highs;
    uint64_t ge_a = low7 + ones * (0x80 - 'A');
    uint64_t gt_z = low7 + ones * (0x80 - 'Z' - 1);
    uint64_t upper = ge_a & ~gt_z & ~w & highs;
    return w | (upper >> 2);
}

int ascii_casecmp_n(const char *a, size_t alen, const char *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen, i = 0;

    /* whole words that fold equal first; the bytes from the first word that
     * does not decide the order */
    for (; i + 8 <= n; i += 8) {
        uint64_t x, y;
        memcpy(&x, a + i, 8);
        memcpy(&y, b + i, 8);
        if (x != y && lower_word(x) != lower_word(y))
            break;
    }
    for (; i < n; i++) {
        int ca = (unsigned char)a[i], cb = (unsigned char)b[i];
        if (ca >= 'A' && ca <= 'Z')
            ca += 32;
        if (cb >= 'A' && cb <= 'Z')
            cb += 32;
        if (ca != cb)
            return ca - cb;
    }
    return alen < blen ? -1 : alen > blen;
}

/* One byte with A-Z lowered: c - 'A' below 26 unsigned means A-Z. */
static inline unsigned lower_byte(unsigned char c)
{
    return c | (unsigned)((unsigned)(c - 'A') < 26u) << 5;
}

bool ascii_case_eq(const char *a, const char *b, size_t n)
{
    size_t i = 0;

    if (n < 8) { /* a variable-length copy into a word would call memcpy */
        for (; i < n; i++)
            if (lower_byte((unsigned char)a[i]) != lower_byte((unsigned char)b[i]))
                return false;
        return true;
    }
    for (; i + 8 <= n; i += 8) {
        uint64_t x, y;
        memcpy(&x, a + i, 8);
        memcpy(&y, b + i, 8);
        if (x != y && lower_word(x) != lower_word(y))
            return false;
    }
    if (i < n) { /* the last 8 bytes, overlapping bytes already found equal */
        uint64_t x, y;
        memcpy(&x, a + n - 8, 8);
        memcpy(&y, b + n - 8, 8);
        if (x != y && lower_word(x) != lower_word(y))
            return false;
    }
    return true;
}

int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int read_file_capped(const char *path, size_t cap, char **out, size_t *len)
{
    int fd = -1, rc = -1, saved;
    char *buf = NULL;
    size_t n = 0, size = 4096;
    ssize_t r;

    *out = NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        goto out;
    buf = xmalloc(size + 1);
    for (;;) {
        if (n == size) {
            if (size > cap) { /* read one byte past the cap: too big */
                errno = EFBIG;
                goto out;
            }
            size = size * 2 > cap + 1 ? cap + 1 : size * 2;
            buf = xrealloc(buf, size + 1);
        }
        r = read(fd, buf + n, size - n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            goto out;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    if (n > cap) {
        errno = EFBIG;
        goto out;
    }
    buf[n] = '\0';
    *out = buf;
    buf = NULL;
    if (len)
        *len = n;
    rc = 0;
out:
    saved = errno;
    free(buf);
    if (fd >= 0)
        close(fd);
    errno = saved;
    return rc;
}

static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return -1; /* an encrypted key is refused, never prompted for */
}

EVP_PKEY *read_private_key_file(const char *path, size_t cap, int type, char *err, size_t errlen)
{
    size_t len = 0;
    char *pem = read_secret_file(path, cap, &len, err, errlen);
    BIO *in;
    EVP_PKEY *key = NULL;

    if (!pem)
        return NULL;
    in = BIO_new_mem_buf(pem, (int)len);
    key = in ? PEM_read_bio_PrivateKey(in, NULL, no_passphrase, NULL) : NULL;
    if (key && type && EVP_PKEY_get_id(key) != type) {
        EVP_PKEY_free(key);
        key = NULL;
    }
    if (!key)
        snprintf(err, errlen, "%s: not %s", path,
                 type == EVP_PKEY_ED25519 ? "a PEM Ed25519 private key"
                                          : "an unencrypted PEM private key");
    BIO_free(in);
    OPENSSL_cleanse(pem, len);
    free(pem);
    return key;
}

char *read_secret_file(const char *path, size_t cap, size_t *len, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    char *buf = NULL;
    size_t n = 0;
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        goto fail;
    }
    if (st.st_mode & 077) {
        snprintf(err, errlen,
                 "%s: mode %03o lets other users read or change a private key; "
                 "chmod 600 it (or mount the secret with mode 0400)",
                 path, (unsigned)(st.st_mode & 0777));
        goto fail;
    }
    if ((uint64_t)st.st_size > cap) {
        snprintf(err, errlen, "%s: larger than %zu bytes", path, cap);
        goto fail;
    }
    buf = xmalloc(cap + 1);
    for (;;) {
        ssize_t r = read(fd, buf + n, cap + 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(err, errlen, "%s: read failed: %s", path, strerror(errno));
            goto fail;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > cap) {
            snprintf(err, errlen, "%s: larger than %zu bytes", path, cap);
            goto fail;
        }
    }
    buf[n] = '\0';
    close(fd);
    *len = n;
    return buf;
fail:
    if (buf) {
        OPENSSL_cleanse(buf, n);
        free(buf);
    }
    close(fd);
    return NULL;
}

/* Edit distance of two short strings (one row of the classic table). */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), row[SUGGEST_MAX_NAME + 1];
    if (la > SUGGEST_MAX_NAME || lb > SUGGEST_MAX_NAME)
        return SIZE_MAX;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

void suggestion_offer(struct suggestion *s, const char *typed, const char *known)
{
    size_t d = edit_distance(typed, known);
    if (d < s->dist) {
        s->dist = d;
        s->best = known;
    }
}
