/*
 * util.h: allocation that cannot fail silently, and small byte helpers shared by
 * every module. Out-of-memory aborts: a proxy that limps on after a failed
 * allocation is harder to reason about than one that restarts.
 */
#ifndef BATON_UTIL_H
#define BATON_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *xvasprintf(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));

/* SHA-256 of data, as 32 raw bytes or 64 lowercase hex digits plus NUL. */
void sha256_raw(const void *data, size_t len, unsigned char out[32]);
void sha256_hex(const void *data, size_t len, char out[65]);
void hex_encode(const unsigned char *in, size_t len, char *out /* 2*len+1 */);
/* v in decimal into out, without a NUL; returns the length (1 to 20). For
 * the request path, where printf costs more than what it formats. */
size_t u64_decimal(uint64_t v, char out[20]);

/* Fills a caller-owned error buffer (printf format); no-op when err is NULL or
 * errlen is 0. The one way modules report a message through `char *err`. */
void errbuf_set(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The value of a hex digit (either case), or -1. */
int hex_value(unsigned char c);

/* ASCII case-insensitive comparison of two byte ranges. */
int ascii_casecmp_n(const char *a, size_t alen, const char *b, size_t blen);
/* Whether a and b (n bytes each) are equal with ASCII letters folded; bytes
 * that are not A-Z or a-z must match exactly. For header names: word-wise. */
bool ascii_case_eq(const char *a, const char *b, size_t n);

/* Wall clock in milliseconds since the epoch, and a monotonic clock in ns. */
int64_t now_ms(void);
uint64_t mono_ns(void);

/* Reads a whole file (at most `cap` bytes, else fails with errno EFBIG) into a
 * NUL-terminated owned buffer. Returns 0/-1 with errno set. */
int read_file_capped(const char *path, size_t cap, char **out, size_t *len);

/*
 * Reads a private key or other secret: a regular file with no group/other
 * permission bits (checked on the opened descriptor, so no race with a
 * chmod/rename), at most cap bytes. Returns owned NUL-terminated text (*len
 * bytes; wipe with OPENSSL_cleanse before free), or NULL with a message naming
 * the path and the fix in err.
 */
char *read_secret_file(const char *path, size_t cap, size_t *len, char *err, size_t errlen);
/*
 * The unencrypted PEM private key in the secret file `path` (read_secret_file's
 * checks and cap; wiped after parsing; never a passphrase prompt). `type`
 * EVP_PKEY_ED25519 also refuses any other kind of key; 0 takes any. Returns an
 * owned key, or NULL with "PATH ...: why" (the file) or "PATH: not ..." (its
 * content) in err, for the caller to prefix with what the key is for.
 */
struct evp_pkey_st *read_private_key_file(const char *path, size_t cap, int type, char *err,
                                          size_t errlen);

/*
 * "did you mean" for every strict loader (config keys, policy keys): offer
 * each known name in turn; `best` is then the first one closest to `typed` by
 * edit distance (Levenshtein) within two edits, else NULL. Names longer than
 * SUGGEST_MAX_NAME bytes are never suggested. `best` borrows the offered name.
 */
#define SUGGEST_MAX_NAME 64
struct suggestion {
    const char *best;
    size_t dist;
};
#define SUGGESTION_INIT \
    {                   \
        NULL, 3         \
    }
void suggestion_offer(struct suggestion *s, const char *typed, const char *known);

#endif
