/*
 * buf.c: the growable byte buffer of buf.h. Every size computation is checked
 * against overflow before it is used; the cap is checked before any growth,
 * so a refused append neither allocates nor changes the contents.
 */
#include "buf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* Room for `need` bytes in total (contents and NUL). */
static void grow(struct buf *b, size_t need)
{
    size_t cap;

    if (need <= b->cap)
        return;
    cap = b->cap >= BUF_MIN_ALLOC ? b->cap : BUF_MIN_ALLOC;
    while (cap < need)
        cap = cap <= SIZE_MAX / 2 ? cap * 2 : need;
    if (b->max && b->max < SIZE_MAX && need <= b->max + 1 && cap > b->max + 1)
        cap = b->max + 1; /* the cap is reached in place: never allocate past it */
    if (b->borrowed_) {
        char *heap = xmalloc(cap);
        memcpy(heap, b->p, b->len + 1);
        b->p = heap;
        b->borrowed_ = false;
    } else {
        b->p = xrealloc(b->p, cap);
        if (b->cap == 0)
            b->p[0] = '\0';
    }
    b->cap = cap;
}

/* Total bytes for `more` beyond the contents, plus the NUL; aborts on overflow. */
static size_t need_for(const struct buf *b, size_t more)
{
    if (more > SIZE_MAX - 1 - b->len)
        abort(); /* no buffer can hold it: as an allocation failure */
    return b->len + more + 1;
}

/* Whether `more` bytes would take the contents past the cap. */
static bool over_cap(const struct buf *b, size_t more)
{
    return b->max && (more > b->max || b->len > b->max - more);
}

void buf_init_on(struct buf *b, char *storage, size_t size)
{
    *b = (struct buf){0};
    b->p = storage;
    b->cap = size;
    b->borrowed_ = true;
    storage[0] = '\0';
}

void buf_reserve(struct buf *b, size_t more)
{
    grow(b, need_for(b, more));
}

int buf_add(struct buf *b, const void *s, size_t n)
{
    if (over_cap(b, n))
        return -1;
    if (n == 0)
        return 0;
    grow(b, need_for(b, n));
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

int buf_addstr(struct buf *b, const char *s)
{
    return buf_add(b, s, strlen(s));
}

int buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    int n;

    va_copy(ap2, ap);
    n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0 || over_cap(b, (size_t)n))
        return -1;
    grow(b, need_for(b, (size_t)n));
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

void buf_truncate(struct buf *b, size_t len)
{
    if (len < b->len) {
        b->len = len;
        b->p[len] = '\0';
    }
}

const char *buf_str(const struct buf *b)
{
    return b->p ? b->p : "";
}

char *buf_take(struct buf *b, size_t *len)
{
    char *out;

    if (!b->p || b->borrowed_) {
        out = xmalloc(b->len + 1);
        if (b->len)
            memcpy(out, b->p, b->len);
        out[b->len] = '\0';
    } else {
        out = b->p;
    }
    if (len)
        *len = b->len;
    b->p = NULL;
    b->len = b->cap = 0;
    b->borrowed_ = false;
    return out;
}

void buf_free(struct buf *b)
{
    if (!b)
        return;
    if (!b->borrowed_)
        free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
    b->borrowed_ = false;
}
