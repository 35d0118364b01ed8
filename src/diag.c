/*
 * diag.c: the list of positioned errors that every loader fills.
 */
#include "diag.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static void add(struct diags *d, const char *file, int line, int col, char *msg, bool warning)
{
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 8;
        d->v = xrealloc(d->v, d->cap * sizeof(*d->v));
    }
    d->v[d->n].file = xstrdup(file ? file : "-");
    d->v[d->n].line = line;
    d->v[d->n].col = col;
    d->v[d->n].msg = msg;
    d->v[d->n].warning = warning;
    d->n++;
}

void diags_add(struct diags *d, const char *file, int line, int col, const char *fmt, ...)
{
    va_list ap;
    char *msg;

    va_start(ap, fmt);
    msg = xvasprintf(fmt, ap);
    va_end(ap);
    add(d, file, line, col, msg, false);
}

void diags_warn(struct diags *d, const char *file, int line, int col, const char *fmt, ...)
{
    va_list ap;
    char *msg;

    if (!d->warnings)
        return;
    va_start(ap, fmt);
    msg = xvasprintf(fmt, ap);
    va_end(ap);
    add(d->warnings, file, line, col, msg, true);
}

void diags_print(const struct diags *d, FILE *out)
{
    for (size_t i = 0; i < d->n; i++) {
        const struct diag *g = &d->v[i];
        const char *kind = g->warning ? "warning" : "error";
        if (g->line > 0)
            fprintf(out, "%s:%d:%d: %s: %s\n", g->file, g->line, g->col, kind, g->msg);
        else
            fprintf(out, "%s: %s: %s\n", g->file, kind, g->msg);
    }
}

void diags_free(struct diags *d)
{
    for (size_t i = 0; i < d->n; i++) {
        free(d->v[i].file);
        free(d->v[i].msg);
    }
    free(d->v);
    d->v = NULL;
    d->n = d->cap = 0;
}
