/*
 * diag.h: positioned diagnostics ("file:line:column: message").
 *
 * Loaders (config, policies, key sets) never stop at the first problem: they add
 * every error to a caller-owned `struct diags` and the caller prints them all,
 * the way `nginx -t` and `haproxy -c` do. Line and column are 1-based; 0 means
 * unknown (for example a file that could not be opened).
 */
#ifndef BATON_DIAG_H
#define BATON_DIAG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct diag {
    char *file; /* owned */
    int line, col;
    char *msg;    /* owned */
    bool warning; /* added by diags_warn: printed as "warning:" */
};

/* Warnings (a pattern that looks like a regular expression, a key that is
 * skipped) never fail a load: a loader adds them with diags_warn, which puts
 * them on `warnings` when the caller set it (`baton check` does) and drops
 * them otherwise, so `n` counts errors only. */
struct diags {
    struct diag *v; /* owned array */
    size_t n, cap;
    struct diags *warnings; /* borrowed, may be NULL */
};

#define DIAGS_INIT       \
    {                    \
        NULL, 0, 0, NULL \
    }

/* Adds one diagnostic; `file` is copied. Allocation failure aborts. */
void diags_add(struct diags *d, const char *file, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* Adds one warning to d->warnings (nothing when that is NULL). */
void diags_warn(struct diags *d, const char *file, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* Prints each as "file:line:col: error: msg" (":line:col" omitted when 0;
 * "warning:" for a warning). */
void diags_print(const struct diags *d, FILE *out);
void diags_free(struct diags *d);

#endif
