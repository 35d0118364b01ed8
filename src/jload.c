/*
 * jload.c: the strict, table-driven JSON loader shared by the main config and
 * the step policies (jload.h): the path stack that gives every error its
 * file:line:column, the error list with its cap and order, the JSON front end
 * (depth, repeated names, syntax), and the table walker.
 */
#include "jload.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "jsonpos.h"
#include "log.h"
#include "util.h"

#define MAX_NAME 64 /* a member name shown bare in display paths */

void jload_push_key(struct jload *c, const char *key)
{
    if (c->depth < JLOAD_MAX_PATH)
        c->path[c->depth++] = (struct jload_seg){key, 0};
    else
        c->overflow++;
}

void jload_push_idx(struct jload *c, size_t idx)
{
    if (c->depth < JLOAD_MAX_PATH)
        c->path[c->depth++] = (struct jload_seg){NULL, idx};
    else
        c->overflow++;
}

void jload_pop(struct jload *c)
{
    if (c->overflow)
        c->overflow--;
    else if (c->depth)
        c->depth--;
}

/* The JSON pointer of the current path, in the rooted form "/a/0" so that a
 * top-level member named "" is "/" (owned). */
static char *pointer_of(const struct jload *c)
{
    struct buf out = {0};

    for (int k = 0; k < c->depth; k++) {
        if (c->path[k].key) {
            char *seg = jsonpos_segment(c->path[k].key, strlen(c->path[k].key));
            buf_printf(&out, "/%s", seg);
            free(seg);
        } else {
            buf_printf(&out, "/%zu", c->path[k].idx);
        }
    }
    return buf_take(&out, NULL);
}

static bool simple_key(const char *k)
{
    size_t n = 0;
    for (; k[n]; n++)
        if (!(k[n] == '_' || k[n] == '-' || (k[n] >= 'a' && k[n] <= 'z') ||
              (k[n] >= 'A' && k[n] <= 'Z') || (k[n] >= '0' && k[n] <= '9')))
            return false;
    return n > 0 && n <= MAX_NAME;
}

/* A quoted, escaped, shortened rendering of user text for messages. */
void jload_quote(char *out, size_t cap, const char *s)
{
    size_t n = strlen(s), shown = n > 64 ? 64 : n;
    char esc[6 * 64 + 1];
    json_escape(esc, sizeof(esc), s, shown);
    snprintf(out, cap, "\"%s\"%s", esc, shown < n ? "..." : "");
}

/* "issuers[0].audiences[1]" for messages, without the last `hide` segments. */
static void display_of(const struct jload *c, int hide, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    for (int k = 0; k < c->depth - hide && n < cap; k++) {
        char q[420];
        const char *key = c->path[k].key;
        if (!key)
            n += (size_t)snprintf(out + n, cap - n, "[%zu]", c->path[k].idx);
        else if (simple_key(key))
            n += (size_t)snprintf(out + n, cap - n, "%s%s", k ? "." : "", key);
        else {
            jload_quote(q, sizeof(q), key);
            n += (size_t)snprintf(out + n, cap - n, "[%s]", q);
        }
    }
}

static void vreport(struct jload *c, bool at_key, int hide, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));
static void vreport(struct jload *c, bool at_key, int hide, const char *fmt, va_list ap)
{
    char disp[512];
    char *ptr, *msg;
    struct jsonpos pos = {0, 0, 0};

    if (c->errors++ >= JLOAD_MAX_ERRORS)
        return;
    ptr = pointer_of(c);
    if (c->overflow || !c->text || jsonpos_find(c->text, c->len, ptr, at_key, &pos) < 0)
        pos.line = pos.col = 0;
    msg = xvasprintf(fmt, ap);
    if (hide >= 0)
        display_of(c, hide, disp, sizeof(disp));
    else
        disp[0] = '\0';
    if (disp[0])
        diags_add(c->d, c->file, pos.line, pos.col, "%s: %s", disp, msg);
    else
        diags_add(c->d, c->file, pos.line, pos.col, "%s", msg);
    free(msg);
    free(ptr);
}

void jload_pos(const struct jload *c, bool at_key, int *line, int *col)
{
    struct jsonpos pos = {0, 0, 0};
    char *ptr = pointer_of(c);
    if (c->overflow || !c->text || jsonpos_find(c->text, c->len, ptr, at_key, &pos) < 0)
        pos.line = pos.col = 0;
    *line = pos.line;
    *col = pos.col;
    free(ptr);
}

void jload_err_bare(struct jload *c, bool at_key, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(c, at_key, -1, fmt, ap);
    va_end(ap);
}

void jload_warn(struct jload *c, const char *fmt, ...)
{
    va_list ap;
    char *msg;
    int line, col;

    if (!c->d->warnings)
        return;
    va_start(ap, fmt);
    msg = xvasprintf(fmt, ap);
    va_end(ap);
    jload_pos(c, false, &line, &col);
    diags_warn(c->d, c->file, line, col, "%s", msg);
    free(msg);
}

/* An error positioned at the current path's value. */
void jload_err(struct jload *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(c, false, 0, fmt, ap);
    va_end(ap);
}

/*
 * An error positioned at the current path's member name, whose message names
 * the enclosing object (for unknown keys: "limits: unknown key ...").
 */
void jload_err_name(struct jload *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(c, true, 1, fmt, ap);
    va_end(ap);
}

/* An error at child `key` of the current object (its value or its name). */
void jload_err_at(struct jload *c, const char *key, bool at_key, const char *fmt, ...)
{
    va_list ap;
    jload_push_key(c, key);
    va_start(ap, fmt);
    vreport(c, at_key, 0, fmt, ap);
    va_end(ap);
    jload_pop(c);
}

const char *jload_json_type_words(json_type t)
{
    switch (t) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a non-integer number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "?";
}

const char *jload_type_words(const json_t *v)
{
    return jload_json_type_words(json_typeof(v));
}

char *jload_resolve(const char *dir, const char *p)
{
    size_t n;
    if (p[0] == '/' || !strcmp(dir, "."))
        return xstrdup(p);
    n = strlen(dir);
    return xasprintf("%s%s%s", dir, n && dir[n - 1] == '/' ? "" : "/", p);
}

int jload_field_index(const struct jload_field *t, const char *key)
{
    for (int k = 0; t[k].key; k++)
        if (!strcmp(t[k].key, key))
            return k;
    return -1;
}

bool jload_has(const struct jload_field *t, const struct jload_seen *s, const char *key)
{
    int k = jload_field_index(t, key);
    return k >= 0 && (s->present >> k & 1);
}

bool jload_parsed(const struct jload_field *t, const struct jload_seen *s, const char *key)
{
    int k = jload_field_index(t, key);
    return k >= 0 && (s->valid >> k & 1);
}

static void store_int(void *obj, const struct jload_field *f, long long v)
{
    char *p = (char *)obj + f->off;
    if (f->size == 1) {
        bool b = v != 0;
        memcpy(p, &b, 1);
    } else if (f->size == sizeof(int) && f->is_signed) {
        int x = (int)v;
        memcpy(p, &x, sizeof(x));
    } else if (f->size == sizeof(unsigned)) {
        unsigned x = (unsigned)v;
        memcpy(p, &x, sizeof(x));
    } else if (f->size == sizeof(uint64_t)) {
        uint64_t x = (uint64_t)v;
        memcpy(p, &x, sizeof(x));
    } else {
        abort(); /* a table row of an unsupported member type: a programming error */
    }
}

static void store_str(void *obj, const struct jload_field *f, char *s /* owned, stolen */)
{
    char **slot = (char **)((char *)obj + f->off);
    free(*slot);
    *slot = s;
}

void jload_defaults(const struct jload_field *t, void *obj, const char *dir)
{
    for (int k = 0; t[k].key; k++) {
        const struct jload_field *f = &t[k];
        switch (f->kind) {
        case JL_K_BOOL:
        case JL_K_INT:
        case JL_K_CHOICE:
            store_int(obj, f, f->def);
            break;
        case JL_K_STR:
        case JL_K_STRCHOICE:
            store_str(obj, f, f->sdef ? xstrdup(f->sdef) : NULL);
            break;
        case JL_K_PATH:
            store_str(obj, f,
                      !f->sdef ? NULL
                      : (f->flags & JL_STDOUT) && !strcmp(f->sdef, "-")
                          ? xstrdup("-")
                          : jload_resolve(dir, f->sdef));
            break;
        case JL_K_STRLIST:
        case JL_K_CUSTOM:
            break;
        }
    }
}

/* A string value: type, length, no control bytes. NULL after reporting. */
const char *jload_want_string(struct jload *c, const json_t *v)
{
    const char *s;
    if (!json_is_string(v)) {
        jload_err(c, "expected a string, got %s", jload_type_words(v));
        return NULL;
    }
    s = json_string_value(v);
    if (json_string_length(v) > JLOAD_MAX_STRING) {
        jload_err(c, "string longer than %d bytes", JLOAD_MAX_STRING);
        return NULL;
    }
    for (const char *q = s; *q; q++)
        if ((unsigned char)*q < 0x20 || *q == 0x7f) {
            jload_err(c, "string holds a control character");
            return NULL;
        }
    return s;
}

static void list_choices(const struct jload_choice *ch, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    for (int k = 0; ch[k].name && n < cap; k++)
        n += (size_t)snprintf(out + n, cap - n, "%s\"%s\"",
                              k ? (ch[k + 1].name ? ", " : " or ") : "", ch[k].name);
}

static const struct jload_choice *find_choice(const struct jload_field *f, const char *s)
{
    for (int k = 0; f->choices[k].name; k++) {
        const char *n = f->choices[k].name;
        if ((f->flags & JL_NOCASE) ? !ascii_casecmp_n(s, strlen(s), n, strlen(n)) : !strcmp(s, n))
            return &f->choices[k];
    }
    return NULL;
}

static int parse_list(struct jload *c, const struct jload_field *f, const json_t *v, void *obj)
{
    char ***slot = (char ***)((char *)obj + f->off);
    size_t *count = (size_t *)((char *)obj + f->n_off);
    size_t n;
    int rc = 0;

    if (!json_is_array(v)) {
        jload_err(c, "expected an array of strings, got %s", jload_type_words(v));
        return -1;
    }
    n = json_array_size(v);
    if (n > f->max_items) {
        jload_err(c, "at most %zu entries, got %zu", f->max_items, n);
        return -1;
    }
    if (n == 0 && (f->flags & JL_NONEMPTY)) {
        jload_err(c, "needs at least one entry");
        return -1;
    }
    for (size_t k = 0; k < *count; k++)
        free((*slot)[k]);
    free(*slot);
    *slot = xcalloc(n ? n : 1, sizeof(char *));
    *count = 0;
    for (size_t k = 0; k < n; k++) {
        const char *s;
        jload_push_idx(c, k);
        s = jload_want_string(c, json_array_get(v, k));
        if (s && !*s) {
            jload_err(c, "must not be empty");
            s = NULL;
        }
        if (s && f->check && f->check(c, s) < 0)
            s = NULL;
        for (size_t j = 0; s && j < *count; j++) {
            const char *o = (*slot)[j];
            if ((f->flags & JL_NOCASE) ? !ascii_casecmp_n(s, strlen(s), o, strlen(o))
                                       : !strcmp(s, o)) {
                char q[420];
                jload_quote(q, sizeof(q), s);
                jload_err(c, "%s is listed twice", q);
                s = NULL;
            }
        }
        if (s)
            (*slot)[(*count)++] = xstrdup(s);
        else
            rc = -1;
        jload_pop(c);
    }
    return rc;
}

int jload_field(struct jload *c, const struct jload_field *f, const json_t *v, void *obj)
{
    const char *s;
    char q[420];

    switch (f->kind) {
    case JL_K_BOOL:
        if (!json_is_boolean(v)) {
            jload_err(c, "expected true or false, got %s", jload_type_words(v));
            return -1;
        }
        store_int(obj, f, json_is_true(v));
        return 0;
    case JL_K_INT: {
        json_int_t x;
        if (!json_is_integer(v)) {
            jload_err(c, "expected an integer, got %s", jload_type_words(v));
            return -1;
        }
        x = json_integer_value(v);
        if (x < f->min || x > f->max) {
            jload_err(c, "%lld is out of range %lld..%lld", (long long)x, f->min, f->max);
            return -1;
        }
        store_int(obj, f, x);
        return 0;
    }
    case JL_K_STR:
    case JL_K_PATH:
        if (!(s = jload_want_string(c, v)))
            return -1;
        if (!*s) {
            jload_err(c, "must not be empty");
            return -1;
        }
        if (f->check && f->check(c, s) < 0)
            return -1;
        if (f->kind == JL_K_STR)
            store_str(obj, f, xstrdup(s));
        else
            store_str(obj, f,
                      (f->flags & JL_STDOUT) && !strcmp(s, "-") ? xstrdup("-")
                                                                : jload_resolve(c->dir, s));
        return 0;
    case JL_K_CHOICE:
    case JL_K_STRCHOICE: {
        const struct jload_choice *ch;
        char all[256];
        if (!(s = jload_want_string(c, v)))
            return -1;
        if (!(ch = find_choice(f, s))) {
            jload_quote(q, sizeof(q), s);
            list_choices(f->choices, all, sizeof(all));
            jload_err(c, "%s is not one of %s", q, all);
            return -1;
        }
        if (f->kind == JL_K_CHOICE)
            store_int(obj, f, ch->value);
        else
            store_str(obj, f, xstrdup(ch->name));
        return 0;
    }
    case JL_K_STRLIST:
        return parse_list(c, f, v, obj);
    case JL_K_CUSTOM:
        return f->custom(c, v, obj);
    }
    return -1;
}

/* Reports member `key` (pushed) of an object read with table `t` as unknown,
 * with a "did you mean" when a row's key is within two edits. */
static void unknown_key(struct jload *c, const char *key, const struct jload_field *t)
{
    struct suggestion sg = SUGGESTION_INIT;
    char q[420];
    for (int j = 0; t[j].key; j++)
        suggestion_offer(&sg, key, t[j].key);
    jload_quote(q, sizeof(q), key);
    if (sg.best)
        jload_err_name(c, "unknown key %s (did you mean \"%s\"?)", q, sg.best);
    else
        jload_err_name(c, "unknown key %s", q);
}

static void missing_keys(struct jload *c, const json_t *v, const struct jload_field *t)
{
    for (int k = 0; t[k].key; k++)
        if ((t[k].flags & JL_REQUIRED) && !json_object_get(v, t[k].key))
            jload_err(c, "missing required key \"%s\"", t[k].key);
}

void jload_check_keys(struct jload *c, const json_t *v, const struct jload_field *t)
{
    const char *key;
    json_t *val;

    json_object_foreach((json_t *)v, key, val) {
        if (jload_field_index(t, key) < 0) {
            jload_push_key(c, key);
            unknown_key(c, key, t);
            jload_pop(c);
        }
    }
    missing_keys(c, v, t);
}

int jload_object(struct jload *c, const json_t *v, const struct jload_field *t, void *obj,
                 struct jload_seen *seen)
{
    const char *key;
    json_t *val;

    memset(seen, 0, sizeof(*seen));
    if (!json_is_object(v)) {
        jload_err(c, "expected an object, got %s", jload_type_words(v));
        return -1;
    }
    json_object_foreach((json_t *)v, key, val) {
        int k = jload_field_index(t, key);
        jload_push_key(c, key);
        if (k < 0) {
            unknown_key(c, key, t);
        } else {
            seen->present |= 1ull << k;
            if (jload_field(c, &t[k], val, obj) == 0)
                seen->valid |= 1ull << k;
        }
        jload_pop(c);
    }
    missing_keys(c, v, t);
    return 0;
}

/* Sorts the diagnostics added since `first` by position (unknown last), stably. */
struct diag_ix {
    struct diag d;
    size_t ix;
};

static int cmp_diag(const void *a, const void *b)
{
    const struct diag_ix *x = a, *y = b;
    long lx = x->d.line > 0 ? x->d.line : LONG_MAX, ly = y->d.line > 0 ? y->d.line : LONG_MAX;
    if (lx != ly)
        return lx < ly ? -1 : 1;
    if (x->d.col != y->d.col)
        return x->d.col < y->d.col ? -1 : 1;
    return x->ix < y->ix ? -1 : x->ix > y->ix;
}

static void jload_sort_diags(struct diags *d, size_t first)
{
    size_t n = d->n - first;
    struct diag_ix *t;
    if (n < 2)
        return;
    t = xmalloc(n * sizeof(*t));
    for (size_t k = 0; k < n; k++)
        t[k] = (struct diag_ix){d->v[first + k], k};
    qsort(t, n, sizeof(*t), cmp_diag);
    for (size_t k = 0; k < n; k++)
        d->v[first + k] = t[k].d;
    free(t);
}

void jload_init(struct jload *c, const char *file, const char *dir, const char *text, size_t len,
                struct diags *d)
{
    memset(c, 0, sizeof(*c));
    c->file = file;
    c->dir = dir;
    c->text = text;
    c->len = len;
    c->d = d;
    c->first = d->n;
}

json_t *jload_parse(struct jload *c, int max_depth)
{
    struct jsonpos_scan scan = {0};
    json_t *root = NULL;
    json_error_t jerr;
    struct diags *d = c->d;
    const char *name = c->file;

    /* depth and repeated names first: jansson stops at the first duplicate */
    jsonpos_scan(c->text, c->len, max_depth, &scan);
    if (scan.status == JSONPOS_TOO_DEEP) {
        diags_add(d, name, scan.where.line, scan.where.col, "nesting deeper than %d levels",
                  max_depth);
        goto out;
    }
    root = json_loadb(c->text, c->len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root && json_error_code(&jerr) == json_error_duplicate_key && scan.n_dups) {
        for (size_t k = 0; k < scan.n_dups; k++) {
            char q[420];
            if (c->errors++ >= JLOAD_MAX_ERRORS)
                continue;
            jload_quote(q, sizeof(q), scan.dups[k].name);
            diags_add(d, name, scan.dups[k].at.line, scan.dups[k].at.col,
                      "duplicate key %s (first at line %d, column %d)", q, scan.dups[k].first.line,
                      scan.dups[k].first.col);
        }
        /* go on with jansson's last-wins reading to report everything else */
        root = json_loadb(c->text, c->len, 0, &jerr);
    }
    if (!root) {
        diags_add(d, name, jerr.line > 0 ? jerr.line : 1, jerr.column > 0 ? jerr.column : 1,
                  "invalid JSON: %s", jerr.text);
        goto out;
    }
    if (scan.status != JSONPOS_OK) {
        /* jansson 2.14 skips a NUL byte after a number or literal ("[1\0]");
         * the file must be JSON to both readers, or positions would be lost */
        size_t at = scan.where.offset;
        unsigned char b = at < c->len ? (unsigned char)c->text[at] : 0;
        if (at >= c->len)
            diags_add(d, name, scan.where.line, scan.where.col,
                      "invalid JSON: unexpected end of file");
        else if (b >= 0x21 && b < 0x7f)
            diags_add(d, name, scan.where.line, scan.where.col, "invalid JSON: unexpected '%c'", b);
        else
            diags_add(d, name, scan.where.line, scan.where.col,
                      "invalid JSON: unexpected byte 0x%02x", b);
        json_decref(root);
        root = NULL;
    }
out:
    jsonpos_scan_free(&scan);
    return root;
}

void jload_finish(struct jload *c)
{
    jload_sort_diags(c->d, c->first);
    if (c->errors > JLOAD_MAX_ERRORS)
        diags_add(c->d, c->file, 0, 0, "too many errors: %zu more not shown",
                  c->errors - JLOAD_MAX_ERRORS);
}
