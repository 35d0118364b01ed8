/*
 * test_buf.c: buf.h, the growable byte buffer: appends keep a C string,
 * growth keeps the bytes, the cap refuses whole appends and bounds the
 * allocation, caller storage moves to the heap on growth, take and free
 * leave an empty buffer.
 */
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "tap.h"

int main(void)
{
    struct buf b = {0};
    char big[3000], stack[16], *t;
    size_t len = 99;

    is_str(buf_str(&b), "", "an empty buffer reads as \"\"");
    ok(buf_add(&b, "", 0) == 0 && b.p == NULL, "adding nothing allocates nothing");
    ok(buf_addlit(&b, "ab") == 0 && buf_addstr(&b, "cd") == 0 && buf_add(&b, "efX", 2) == 0,
       "appends succeed without a cap");
    is_str(buf_str(&b), "abcdef", "appends concatenate, NUL-terminated");
    is_int((int)b.len, 6, "len counts the bytes, not the NUL");
    ok(b.cap >= BUF_MIN_ALLOC, "the first allocation is at least BUF_MIN_ALLOC");

    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    ok(buf_printf(&b, "[%s]%d", big, 42) == 0, "printf longer than any fixed scratch buffer");
    is_int((int)b.len, 6 + 1 + 2999 + 1 + 2, "printf output is appended whole");
    ok(!memcmp(b.p, "abcdef[x", 8) && !strcmp(b.p + b.len - 4, "x]42"),
       "growth keeps the earlier bytes and adds the new ones");

    buf_truncate(&b, 3);
    is_str(buf_str(&b), "abc", "truncate cuts back and keeps the NUL");
    buf_truncate(&b, 10);
    is_str(buf_str(&b), "abc", "truncate never lengthens");

    t = buf_take(&b, &len);
    is_str(t, "abc", "take hands out the contents");
    is_int((int)len, 3, "with their length");
    ok(b.p == NULL && b.len == 0 && b.cap == 0, "and leaves the buffer empty");
    free(t);
    t = buf_take(&b, NULL);
    ok(t && !strcmp(t, ""), "take of an empty buffer is an owned \"\"");
    free(t);

    b = (struct buf){.max = 10};
    ok(buf_addlit(&b, "12345678") == 0, "under the cap: added");
    ok(buf_addlit(&b, "abc") == -1, "past the cap: refused");
    is_str(buf_str(&b), "12345678", "a refused append adds nothing");
    ok(buf_printf(&b, "%d", 123) == -1 && b.len == 8, "a refused printf adds nothing");
    ok(buf_addlit(&b, "90") == 0 && b.len == 10, "filling to exactly the cap is allowed");
    ok(buf_add(&b, "x", 1) == -1, "one byte past it is not");
    ok(b.cap <= 11, "the allocation never exceeds the cap plus the NUL (%zu)", b.cap);
    buf_free(&b);
    ok(b.p == NULL && b.len == 0 && b.max == 10, "free empties the buffer and keeps the cap");

    b = (struct buf){.max = (size_t)-1};
    ok(buf_addlit(&b, "x") == 0, "a cap of SIZE_MAX does not overflow");
    ok(buf_add(&b, "y", (size_t)-1) == -1, "and still refuses what would pass it");
    buf_free(&b);

    buf_init_on(&b, stack, sizeof stack);
    ok(buf_addlit(&b, "on the stack") == 0 && b.p == stack,
       "a buffer started on caller storage uses it while it fits");
    t = buf_take(&b, NULL);
    ok(t != stack && !strcmp(t, "on the stack"), "take copies caller storage to the heap");
    free(t);
    buf_init_on(&b, stack, sizeof stack);
    buf_addlit(&b, "0123456789");
    ok(buf_addlit(&b, "abcdefghij") == 0 && b.p != stack, "growth moves it to the heap");
    is_str(buf_str(&b), "0123456789abcdefghij", "with every byte");
    is_str(stack, "0123456789", "the caller storage is left as it was");
    buf_free(&b); /* frees the heap copy, never the stack */

    buf_reserve(&b, 5000);
    ok(b.cap >= 5001 && b.len == 0 && !strcmp(buf_str(&b), ""),
       "reserve makes room without adding");
    buf_free(&b);

    /* buf_printf is a caller's own variadic function over buf_vprintf, as
     * audit's sb_fmt is: its va_list reaches buf_vprintf */
    ok(buf_printf(&b, "%s-%d", "seq", 7) == 0 && buf_printf(&b, "/%s", "x") == 0,
       "vprintf appends from a va_list");
    is_str(buf_str(&b), "seq-7/x", "each call's output whole, in order");
    b.max = b.len + 2;
    ok(buf_printf(&b, "%d", 123) == -1 && b.len == 7, "a refused vprintf adds nothing");
    buf_free(&b);
    buf_free(NULL);
    return tap_done();
}
