/*
 * buf.h: the one growable byte buffer (JSON bodies being built, a response
 * body being received, a record being formatted), instead of a hand-written
 * reserve-and-copy in each module.
 *
 * The bytes are always NUL-terminated once anything was added, so a text
 * buffer is a C string at every step. A buffer may carry a cap (`max`): an
 * append that would take it past the cap fails and adds nothing, the way
 * curl's dynbuf refuses to grow past its `toobig`; that is how a size an
 * outsider controls stays bounded. Growth doubles (a first allocation of at
 * least BUF_MIN_ALLOC bytes) and never allocates past max + 1. Allocation
 * failure aborts, as everywhere (util.h).
 *
 * A buffer may start on caller storage (buf_init_on: a stack array for the
 * common size); the first growth past it moves the bytes to the heap, and
 * buf_take always hands out heap memory.
 *
 * The audit record's builder (audit_record.h's struct sb) is this buffer
 * with inline appends in front: they only call here to grow it.
 *
 * Not thread-safe: one owner at a time.
 */
#ifndef BATON_BUF_H
#define BATON_BUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#define BUF_MIN_ALLOC 256

/* Zeroed ({0}), a buffer is empty and has no cap; {.max = N} caps it at N bytes. */
struct buf {
    char *p;        /* the bytes, NUL-terminated; NULL until the first byte or reserve */
    size_t len;     /* bytes at p, not counting the NUL */
    size_t cap;     /* bytes allocated at p (or the caller storage's size) */
    size_t max;     /* 0: no cap; else len never exceeds it */
    bool borrowed_; /* p is caller storage (buf_init_on), not to be freed */
};

/* Starts `b` empty on `storage` (`size` >= 1 bytes, borrowed until the first
 * growth past it or buf_free), without a cap. */
void buf_init_on(struct buf *b, char *storage, size_t size);

/* Makes room for `more` bytes beyond len (and the NUL) without adding any;
 * the cap does not apply (it bounds len, not the allocation asked for). */
void buf_reserve(struct buf *b, size_t more);

/* Appends n bytes of s. 0, or -1 (nothing added) when len + n would exceed max. */
int buf_add(struct buf *b, const void *s, size_t n);
/* Appends the C string s. */
int buf_addstr(struct buf *b, const char *s);
/* Appends a string literal without measuring it at run time. */
#define buf_addlit(b, lit) buf_add((b), (lit), sizeof(lit) - 1)
/* Appends printf output, whole or not at all (as buf_add). */
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The same with a va_list (which it leaves as va_arg would: the caller va_ends it). */
int buf_vprintf(struct buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

/* Cuts the contents back to their first `len` bytes (len <= b->len). */
void buf_truncate(struct buf *b, size_t len);

/* The contents as a C string, borrowed until the next change; "" when empty. */
const char *buf_str(const struct buf *b);

/*
 * Hands out the contents: owned heap memory, NUL-terminated ("" when nothing
 * was added), with its length in *len when len is not NULL. `b` is left
 * empty (its cap kept), ready for reuse.
 */
char *buf_take(struct buf *b, size_t *len);

/* Frees what `b` owns and leaves it empty (its cap kept). NULL ok. */
void buf_free(struct buf *b);

#endif
