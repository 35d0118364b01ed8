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

#include <stddef.h>
#include <stdio.h>

struct diag {
    char *file; /* owned */
    int line, col;
    char *msg; /* owned */
};

struct diags {
    struct diag *v; /* owned array */
    size_t n, cap;
};

#define DIAGS_INIT {NULL, 0, 0}

/* Adds one diagnostic; `file` is copied. Allocation failure aborts. */
void diags_add(struct diags *d, const char *file, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* Prints each as "file:line:col: error: msg" (":line:col" omitted when 0). */
void diags_print(const struct diags *d, FILE *out);
void diags_free(struct diags *d);

#endif
