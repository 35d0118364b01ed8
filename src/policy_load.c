/*
 * policy_load.c: step policies: strict loading and compilation (rules in
 * policy.h).
 *
 * Loading is table-driven and reports every problem of every file at
 * file:line:column (jansson keeps no positions, so jsonpos maps each JSON
 * pointer back to the text). A loaded policy is compiled into plain arrays
 * (policy_compiled.h): claims patterns as a tree of typed nodes, path patterns
 * as segment arrays, methods and headers as strings, and the route table as an
 * open-addressing hash of (lower-case host, path_prefix), which policy_match.c
 * then reads without parsing, allocating or locking.
 */
#include "policy.h"
#include "policy_compiled.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "jsonpos.h"
#include "log.h"
#include "path.h"
#include "signurl.h"
#include "util.h"

/* ---------------------------------------------------------------- loading */

struct loader {
    const struct baton_config *cfg;
    struct diags *d;
    const char *file, *text;
    size_t len;
    char *ptr; /* current JSON pointer (jsonpos syntax), owned */
    size_t ptr_len, ptr_cap;
    int errors;
};

static size_t ptr_push(struct loader *L, const char *seg)
{
    size_t saved = L->ptr_len, n = strlen(seg);
    if (L->ptr_len + n + 2 > L->ptr_cap) {
        L->ptr_cap = (L->ptr_len + n + 2) * 2;
        L->ptr = xrealloc(L->ptr, L->ptr_cap);
    }
    if (L->ptr_len)
        L->ptr[L->ptr_len++] = '/';
    memcpy(L->ptr + L->ptr_len, seg, n);
    L->ptr_len += n;
    L->ptr[L->ptr_len] = '\0';
    return saved;
}

static size_t ptr_key(struct loader *L, const char *key)
{
    char *seg = jsonpos_segment(key, strlen(key));
    size_t saved = ptr_push(L, seg);
    free(seg);
    return saved;
}

static size_t ptr_index(struct loader *L, size_t i)
{
    char seg[32];
    snprintf(seg, sizeof(seg), "%zu", i);
    return ptr_push(L, seg);
}

static void ptr_pop(struct loader *L, size_t saved)
{
    L->ptr_len = saved;
    if (L->ptr)
        L->ptr[saved] = '\0';
}

static void pos_here(struct loader *L, bool at_key, int *line, int *col)
{
    struct jsonpos jp;
    if (jsonpos_find(L->text, L->len, L->ptr ? L->ptr : "", at_key, &jp) == 0) {
        *line = jp.line;
        *col = jp.col;
    } else {
        *line = *col = 0;
    }
}

/* An error at the current pointer: at its member name when `at_key`. */
static void lerr(struct loader *L, bool at_key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void lerr(struct loader *L, bool at_key, const char *fmt, ...)
{
    va_list ap;
    char *msg;
    int line, col;

    va_start(ap, fmt);
    msg = xvasprintf(fmt, ap);
    va_end(ap);
    pos_here(L, at_key, &line, &col);
    diags_add(L->d, L->file, line, col, "%s", msg);
    free(msg);
    L->errors++;
}

/* A warning at the current pointer's value: `baton check` prints it, the
 * policy still loads. */
static void lwarn(struct loader *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void lwarn(struct loader *L, const char *fmt, ...)
{
    va_list ap;
    char *msg;
    int line, col;

    if (!L->d->warnings)
        return;
    va_start(ap, fmt);
    msg = xvasprintf(fmt, ap);
    va_end(ap);
    pos_here(L, false, &line, &col);
    diags_warn(L->d, L->file, line, col, "%s", msg);
    free(msg);
}

/*
 * Why glob `s` looks like a regular expression that cannot have been meant
 * literally, or NULL. A glob has one special character, "*"; these are the
 * regex constructs whose literal reading no ARN, path, e-mail address or
 * header value needs (README, "Patterns that look like regular expressions"):
 *   - "^" first or "$" last (anchors);
 *   - a backslash before a letter class (d D w W s S b B) or a metacharacter
 *     (. * + ? ( ) [ ] { } | ^ $ /): a glob has no escapes;
 *   - ".+" anywhere, ".*" first or right after "/", ":", "(", "|" or "^"
 *     (where a literal dot is never meant; "report.*" is a fine glob);
 *   - a bracket expression "[...]" with no ":" inside ("[12]", "[0-9]",
 *     "[a-z]"; "[::1]" is an IPv6 literal);
 *   - a group "(...)" holding "|", or followed by "*", "+", "?" or "{".
 */
static const char *regex_hint(const char *s, size_t n)
{
    if (n == 0)
        return NULL;
    if (s[0] == '^')
        return "it starts with the anchor \"^\"";
    if (s[n - 1] == '$' && !(n >= 2 && s[n - 2] == '\\'))
        return "it ends with the anchor \"$\"";
    for (size_t i = 0; i + 1 < n; i++) {
        char c = s[i], d = s[i + 1];
        if (c == '\\' && d && strchr("dDwWsSbB.*+?()[]{}|^$/", d))
            return "a backslash escape; a glob has none";
        if (c == '.' && d == '+')
            return "\".+\"";
        if (c == '.' && d == '*' && (i == 0 || strchr("/:(|^", s[i - 1])))
            return "\".*\" where a literal dot is never meant";
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '[') {
            const char *close = memchr(s + i + 1, ']', n - i - 1);
            if (close && close > s + i + 1 && !memchr(s + i + 1, ':', (size_t)(close - s - i - 1)))
                return "a bracket expression \"[...]\"";
        }
        if (s[i] == '(') {
            const char *close = memchr(s + i + 1, ')', n - i - 1);
            if (close && memchr(s + i + 1, '|', (size_t)(close - s - i - 1)))
                return "an alternation \"(a|b)\"";
            if (close && close + 1 < s + n && strchr("*+?{", close[1]))
                return "a repeated group \"(...)\"";
        }
    }
    return NULL;
}

/* Warns when pattern `s` (`what`: "claim pattern", ...) looks like a regex. */
static void lint_glob(struct loader *L, const char *what, const char *s, size_t n)
{
    const char *why = regex_hint(s, n);
    char esc[200];
    if (!why)
        return;
    json_escape(esc, sizeof(esc), s, n > 120 ? 120 : n);
    lwarn(L, "%s \"%s%s\" looks like a regular expression (%s); patterns are globs: \"*\" "
             "matches any run of characters and every other character only itself",
          what, esc, n > 120 ? "..." : "", why);
}

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return "integer";
    case JSON_REAL:
        return "real";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    case JSON_NULL:
        return "null";
    }
    return "?";
}

/* True when `v` has JSON type `type`; else an error naming `what`. */
static bool want(struct loader *L, const json_t *v, json_type type, const char *what)
{
    static const char *const names[] = {
        [JSON_OBJECT] = "an object", [JSON_ARRAY] = "an array", [JSON_STRING] = "a string",
        [JSON_INTEGER] = "an integer", [JSON_REAL] = "a real", [JSON_TRUE] = "a boolean",
        [JSON_FALSE] = "a boolean", [JSON_NULL] = "null",
    };
    if (json_typeof(v) == type)
        return true;
    lerr(L, false, "%s must be %s, not %s", what, names[type], type_name(v));
    return false;
}

/* Reports members of `obj` not in `allowed` (NULL-terminated). */
static void check_keys(struct loader *L, const json_t *obj, const char *const *allowed,
                       const char *where)
{
    const char *key;
    json_t *v;

    json_object_foreach((json_t *)obj, key, v) {
        bool known = false;
        struct suggestion sg = SUGGESTION_INIT;
        for (const char *const *a = allowed; *a; a++) {
            if (strcmp(*a, key) == 0)
                known = true;
            suggestion_offer(&sg, key, *a);
        }
        if (!known) {
            size_t s = ptr_key(L, key);
            char esc[200];
            json_escape(esc, sizeof(esc), key, strlen(key)); /* one line whatever the key */
            if (sg.best)
                lerr(L, true, "unknown key \"%s\" in %s (did you mean \"%s\"?)", esc, where,
                     sg.best);
            else
                lerr(L, true, "unknown key \"%s\" in %s", esc, where);
            ptr_pop(L, s);
        }
    }
}

/* A required member, or NULL with an error at the object. */
static json_t *required(struct loader *L, const json_t *obj, const char *key, const char *where)
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        lerr(L, false, "%s lacks the required key \"%s\"", where, key);
    return v;
}

/* A non-empty string of at most `max` bytes, printable ASCII unless
 * `any_bytes`; returns it (borrowed) or NULL after an error. */
static const char *want_string(struct loader *L, const json_t *v, const char *what, size_t max,
                               bool any_bytes)
{
    const char *s;
    size_t n;
    if (!want(L, v, JSON_STRING, what))
        return NULL;
    s = json_string_value(v);
    n = json_string_length(v);
    if (n == 0) {
        lerr(L, false, "%s must not be empty", what);
        return NULL;
    }
    if (n > max) {
        lerr(L, false, "%s is %zu bytes long, the limit is %zu", what, n, max);
        return NULL;
    }
    if (!any_bytes)
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e) {
                lerr(L, false, "%s must be printable ASCII (byte 0x%02x at offset %zu)", what,
                     (unsigned char)s[i], i);
                return NULL;
            }
    return s;
}

/* A non-empty array of at most POLICY_MAX_ENTRIES; its size or 0. */
static size_t want_array(struct loader *L, const json_t *v, const char *what)
{
    if (!want(L, v, JSON_ARRAY, what))
        return 0;
    if (json_array_size(v) == 0) {
        lerr(L, false, "%s must not be empty", what);
        return 0;
    }
    if (json_array_size(v) > POLICY_MAX_ENTRIES) {
        lerr(L, false, "%s has %zu entries, the limit is %u", what, json_array_size(v),
             POLICY_MAX_ENTRIES);
        return 0;
    }
    return json_array_size(v);
}

static bool want_uint(struct loader *L, const json_t *v, const char *what, json_int_t lo,
                      json_int_t hi, json_int_t *out)
{
    if (!want(L, v, JSON_INTEGER, what))
        return false;
    *out = json_integer_value(v);
    if (*out < lo || *out > hi) {
        lerr(L, false, "%s is %" JSON_INTEGER_FORMAT ", the range is %" JSON_INTEGER_FORMAT
                       "..%" JSON_INTEGER_FORMAT,
             what, *out, lo, hi);
        return false;
    }
    return true;
}

static void pat_free(struct pat *p)
{
    switch (p->type) {
    case PT_STR:
    case PT_GLOB:
        free(p->u.str.s);
        break;
    case PT_OBJ:
        for (size_t i = 0; i < p->u.obj.n; i++) {
            free(p->u.obj.m[i].key);
            pat_free(&p->u.obj.m[i].value);
        }
        free(p->u.obj.m);
        break;
    case PT_ANY:
        for (size_t i = 0; i < p->u.any.n; i++)
            pat_free(&p->u.any.v[i]);
        free(p->u.any.v);
        break;
    default:
        break;
    }
    p->type = PT_BOOL; /* owns nothing now */
}

/* Compiles the claims pattern at the current pointer into `out` (zeroed by
 * the caller; always left freeable). `in_list`: an element of an array. */
static void pat_compile(struct loader *L, const json_t *v, struct pat *out, bool in_list)
{
    pos_here(L, false, &out->line, &out->col);
    out->type = PT_BOOL;
    switch (json_typeof(v)) {
    case JSON_STRING: {
        size_t n = json_string_length(v);
        if (n > POLICY_MAX_PATTERN) {
            lerr(L, false, "claim pattern is %zu bytes long, the limit is %u", n, POLICY_MAX_PATTERN);
            return;
        }
        out->type = memchr(json_string_value(v), '*', n) ? PT_GLOB : PT_STR;
        lint_glob(L, "claim pattern", json_string_value(v), n);
        out->u.str.s = xstrndup(json_string_value(v), n);
        out->u.str.len = n;
        return;
    }
    case JSON_INTEGER:
        out->type = PT_INT;
        out->u.i = json_integer_value(v);
        return;
    case JSON_REAL:
        out->type = PT_REAL;
        out->u.d = json_real_value(v);
        return;
    case JSON_TRUE:
    case JSON_FALSE:
        out->u.b = json_is_true(v);
        return;
    case JSON_NULL:
        lerr(L, false, "null is not a claim pattern (a pattern never matches an absent claim; "
                       "name the values to accept)");
        return;
    case JSON_OBJECT: {
        const char *key;
        json_t *mv;
        size_t i = 0, n = json_object_size(v);
        if (n == 0) {
            lerr(L, false, "an empty claims object would match any object; name the claims to match");
            return;
        }
        out->type = PT_OBJ;
        out->u.obj.m = xcalloc(n, sizeof(*out->u.obj.m));
        json_object_foreach((json_t *)v, key, mv) {
            size_t s = ptr_key(L, key);
            out->u.obj.m[i].key = xstrdup(key);
            out->u.obj.m[i].value.type = PT_BOOL;
            pat_compile(L, mv, &out->u.obj.m[i].value, false);
            ptr_pop(L, s);
            i++;
        }
        out->u.obj.n = i;
        return;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        if (in_list) {
            lerr(L, false, "an array inside an array is not a claim pattern");
            return;
        }
        if (n == 0) {
            lerr(L, false, "an empty array never matches; name the accepted values");
            return;
        }
        if (n > POLICY_MAX_ENTRIES) {
            lerr(L, false, "claim pattern list has %zu entries, the limit is %u", n, POLICY_MAX_ENTRIES);
            return;
        }
        out->type = PT_ANY;
        out->u.any.v = xcalloc(n, sizeof(*out->u.any.v));
        for (size_t i = 0; i < n; i++) {
            size_t s = ptr_index(L, i);
            out->u.any.v[i].type = PT_BOOL;
            pat_compile(L, json_array_get(v, i), &out->u.any.v[i], true);
            ptr_pop(L, s);
        }
        out->u.any.n = n;
        return;
    }
    }
}

static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static void load_scopes(struct loader *L, const json_t *v, struct caller *c)
{
    size_t n = want_array(L, v, "\"scopes\"");
    c->scopes = xcalloc(n ? n : 1, sizeof(*c->scopes));
    for (size_t i = 0; i < n; i++) {
        size_t s = ptr_index(L, i);
        const char *sc = want_string(L, json_array_get(v, i), "a scope", POLICY_MAX_PATTERN, false);
        if (sc) {
            bool dup = false;
            for (size_t j = 0; j < c->n_scopes; j++)
                dup = dup || strcmp(c->scopes[j], sc) == 0;
            /* RFC 6749 scope-token: %x21 / %x23-5B / %x5D-7E */
            if (strpbrk(sc, " \"\\"))
                lerr(L, false, "\"%s\" is not a scope token (no space, '\"' or '\\')", sc);
            else if (dup)
                lerr(L, false, "scope \"%s\" is listed twice", sc);
            else
                c->scopes[c->n_scopes++] = xstrdup(sc);
        }
        ptr_pop(L, s);
    }
}

static void load_signed_caller(struct loader *L, const json_t *e, struct caller *c);
static void load_sign(struct loader *L, const json_t *v, struct policy *p);
static void free_signing(struct policy *p);

static void load_callers(struct loader *L, const json_t *v, struct policy *p)
{
    static const char *const keys[] = {"issuer", "claims", "scopes", NULL};
    size_t n = want_array(L, v, "\"callers\"");

    p->callers = xcalloc(n ? n : 1, sizeof(*p->callers));
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(v, i);
        struct caller *c = &p->callers[p->n_callers++];
        const json_t *iv, *cv, *sv;
        size_t s = ptr_index(L, i), s2;

        c->claims.type = PT_BOOL;
        pos_here(L, false, &c->line, &c->col);
        if (!want(L, e, JSON_OBJECT, "a callers entry")) {
            ptr_pop(L, s);
            continue;
        }
        if (json_object_get(e, "signed_url")) {
            load_signed_caller(L, e, c);
            ptr_pop(L, s);
            continue;
        }
        check_keys(L, e, keys, "a callers entry");
        if ((iv = required(L, e, "issuer", "a callers entry"))) {
            const char *name;
            s2 = ptr_key(L, "issuer");
            if ((name = want_string(L, iv, "\"issuer\"", 256, false))) {
                if (!config_issuer(L->cfg, name)) {
                    char *known = xstrdup("");
                    for (size_t k = 0; k < L->cfg->n_issuers; k++) {
                        char *t = xasprintf("%s%s\"%s\"", known, k ? ", " : "", L->cfg->issuers[k].name);
                        free(known);
                        known = t;
                    }
                    lerr(L, false, "issuer \"%s\" is not defined in %s (issuers: %s)", name,
                         L->cfg->file ? L->cfg->file : "the config", *known ? known : "none");
                    free(known);
                }
                c->issuer = xstrdup(name);
            }
            ptr_pop(L, s2);
        }
        if ((cv = required(L, e, "claims", "a callers entry"))) {
            s2 = ptr_key(L, "claims");
            if (want(L, cv, JSON_OBJECT, "\"claims\""))
                pat_compile(L, cv, &c->claims, false);
            ptr_pop(L, s2);
        }
        if ((sv = json_object_get(e, "scopes"))) {
            s2 = ptr_key(L, "scopes");
            pos_here(L, false, &c->scopes_line, &c->scopes_col);
            load_scopes(L, sv, c);
            ptr_pop(L, s2);
        }
        if (!c->issuer)
            c->issuer = xstrdup("");
        ptr_pop(L, s);
    }
}

/* Can some path under route prefix `prefix` match `pp`? The prefix's whole
 * segments must be matched by the pattern's leading ones (a "**" first ends
 * the question); a prefix ending in "/" also needs one more segment. */
static bool prefix_compatible(const struct path_pat *pp, const char *prefix)
{
    size_t pn = strlen(prefix), k = 0;
    bool trailing = prefix[pn - 1] == '/';
    const char *s = prefix + 1, *end = prefix + pn - (trailing ? 1 : 0);

    while (s < end) {
        const char *e = memchr(s, '/', (size_t)(end - s));
        size_t len = e ? (size_t)(e - s) : (size_t)(end - s);
        if (k >= pp->n)
            return false;
        if (pp->segs[k].kind == SEG_DSTAR)
            return true;
        if (pp->segs[k].kind == SEG_LIT &&
            (pp->segs[k].len != len || memcmp(pp->segs[k].s, s, len) != 0))
            return false;
        k++;
        s = e ? e + 1 : end;
    }
    return trailing ? pp->n > k : true;
}

/* Compiles path pattern `text` into `pp` (zeroed; left freeable); 0, or -1
 * after an error. `prefix` is the route's path_prefix, or NULL when unknown. */
static int path_pat_compile(struct loader *L, const char *text, const char *prefix,
                            struct path_pat *pp)
{
    struct path_result res;
    enum reason r;
    size_t n = strlen(text), count = 0;

    if (text[0] != '/') {
        lerr(L, false, "path pattern \"%s\" must start with \"/\"", text);
        return -1;
    }
    if (memchr(text, '?', n)) {
        lerr(L, false, "path pattern \"%s\" has a query; patterns match the path only", text);
        return -1;
    }
    if ((r = path_canonicalize(text, n, POLICY_MAX_PATTERN, &res)) != REASON_ALLOWED) {
        lerr(L, false, "path pattern \"%s\" can never match a canonical path (%s)", text,
             reason_code(r));
        return -1;
    }
    for (const char *q = text; q; q = strchr(q + 1, '/'))
        count++;
    pp->text = xstrdup(text);
    pp->segs = xcalloc(count, sizeof(*pp->segs));
    for (const char *s = pp->text + 1;;) {
        const char *e = strchr(s, '/');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        struct seg *g = &pp->segs[pp->n++];
        g->s = s;
        g->len = len;
        if (len == 1 && s[0] == '*') {
            g->kind = SEG_STAR;
        } else if (len == 2 && s[0] == '*' && s[1] == '*') {
            g->kind = SEG_DSTAR;
        } else if (memchr(s, '*', len)) {
            lerr(L, false, "path pattern \"%s\": \"*\" and \"**\" stand for whole segments, "
                           "not parts of one (\"%.*s\")", text, (int)len, s);
            return -1;
        } else {
            g->kind = SEG_LIT;
        }
        if (!e)
            break;
        s = e + 1;
    }
    if (prefix && !prefix_compatible(pp, prefix)) {
        lerr(L, false, "path pattern \"%s\" can never match under the route's path_prefix \"%s\"",
             text, prefix);
        return -1;
    }
    return 0;
}

static void load_allow(struct loader *L, const json_t *v, struct policy *p)
{
    static const char *const keys[] = {"methods", "paths", NULL};
    size_t n = want_array(L, v, "\"allow\"");

    p->rules = xcalloc(n ? n : 1, sizeof(*p->rules));
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(v, i), *mv, *pv;
        struct rule *r = &p->rules[p->n_rules++];
        size_t s = ptr_index(L, i), s2;

        pos_here(L, false, &r->line, &r->col);
        if (!want(L, e, JSON_OBJECT, "an allow rule")) {
            ptr_pop(L, s);
            continue;
        }
        check_keys(L, e, keys, "an allow rule");
        if ((mv = required(L, e, "methods", "an allow rule"))) {
            size_t m;
            s2 = ptr_key(L, "methods");
            m = want_array(L, mv, "\"methods\"");
            r->methods = xcalloc(m ? m : 1, sizeof(*r->methods));
            for (size_t j = 0; j < m; j++) {
                size_t s3 = ptr_index(L, j);
                const char *meth = want_string(L, json_array_get(mv, j), "a method", 32, false);
                bool okay = meth != NULL;
                for (const char *q = meth; okay && *q; q++)
                    if (!((*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9') || *q == '-' || *q == '_'))
                        okay = false;
                if (meth && !okay)
                    lerr(L, false, "method \"%s\" must be an upper-case token (methods match exactly)", meth);
                for (size_t k = 0; okay && k < r->n_methods; k++)
                    if (strcmp(r->methods[k], meth) == 0) {
                        lerr(L, false, "method \"%s\" is listed twice", meth);
                        okay = false;
                    }
                if (okay)
                    r->methods[r->n_methods++] = xstrdup(meth);
                ptr_pop(L, s3);
            }
            ptr_pop(L, s2);
        }
        if ((pv = required(L, e, "paths", "an allow rule"))) {
            size_t m;
            s2 = ptr_key(L, "paths");
            m = want_array(L, pv, "\"paths\"");
            r->paths = xcalloc(m ? m : 1, sizeof(*r->paths));
            for (size_t j = 0; j < m; j++) {
                size_t s3 = ptr_index(L, j);
                const char *text = want_string(L, json_array_get(pv, j), "a path pattern",
                                               POLICY_MAX_PATTERN, true);
                bool dup = false;
                for (size_t k = 0; text && k < r->n_paths; k++)
                    if (strcmp(r->paths[k].text, text) == 0) {
                        lerr(L, false, "path pattern \"%s\" is listed twice", text);
                        dup = true;
                    }
                if (text && !dup &&
                    path_pat_compile(L, text, p->prefix, &r->paths[r->n_paths]) == 0) {
                    lint_glob(L, "path pattern", text, strlen(text));
                    r->n_paths++;
                }
                else if (text && !dup) {
                    free(r->paths[r->n_paths].text);
                    free(r->paths[r->n_paths].segs);
                    memset(&r->paths[r->n_paths], 0, sizeof(r->paths[r->n_paths]));
                }
                ptr_pop(L, s3);
            }
            ptr_pop(L, s2);
        }
        ptr_pop(L, s);
    }
}

static void load_headers(struct loader *L, const json_t *v, struct policy *p)
{
    const char *key;
    json_t *hv;
    size_t n;

    if (!want(L, v, JSON_OBJECT, "\"require_headers\""))
        return;
    n = json_object_size(v);
    if (n > POLICY_MAX_ENTRIES) {
        lerr(L, false, "\"require_headers\" has %zu entries, the limit is %u", n, POLICY_MAX_ENTRIES);
        return;
    }
    p->headers = xcalloc(n ? n : 1, sizeof(*p->headers));
    json_object_foreach((json_t *)v, key, hv) {
        size_t s = ptr_key(L, key), kn = strlen(key);
        bool okay = kn > 0 && kn <= 256;
        const char *glob;
        int line, col;
        for (size_t i = 0; okay && i < kn; i++)
            okay = is_tchar((unsigned char)key[i]);
        pos_here(L, true, &line, &col);
        if (!okay)
            lerr(L, true, "\"%s\" is not a header name (RFC 9110 token, at most 256 bytes)", key);
        else if (ascii_casecmp_n(key, kn, "authorization", 13) == 0) {
            lerr(L, true, "\"Authorization\" carries the caller's token: authorize the caller "
                          "with \"callers\", not require_headers");
            okay = false;
        }
        for (size_t i = 0; okay && i < p->n_headers; i++)
            if (ascii_casecmp_n(p->headers[i].name, strlen(p->headers[i].name), key, kn) == 0) {
                lerr(L, true, "header \"%s\" is already required as \"%s\" at line %d column %d "
                              "(names are case-insensitive)",
                     key, p->headers[i].name, p->headers[i].line, p->headers[i].col);
                okay = false;
            }
        glob = want_string(L, hv, "a header value pattern", POLICY_MAX_PATTERN, false);
        if (glob && (glob[0] == ' ' || glob[strlen(glob) - 1] == ' ')) {
            lerr(L, false, "header value pattern \"%s\" starts or ends with a space; values are "
                           "matched without surrounding whitespace", glob);
            glob = NULL;
        }
        if (glob)
            lint_glob(L, "header value pattern", glob, strlen(glob));
        if (okay && glob) {
            struct req_header *h = &p->headers[p->n_headers++];
            h->name = xstrdup(key);
            h->glob = xstrdup(glob);
            h->glob_len = strlen(glob);
            h->line = line;
            h->col = col;
        }
        ptr_pop(L, s);
    }
}

/* limits.max_in_flight and limits.rate_scope (README "Shared limits on Redis"). */
static void load_limits_shared(struct loader *L, const json_t *v, struct policy *p)
{
    const json_t *x;
    json_int_t val;
    size_t s;

    if ((x = json_object_get(v, "max_in_flight"))) {
        s = ptr_key(L, "max_in_flight");
        if (want_uint(L, x, "\"max_in_flight\"", 1, 1000000, &val))
            p->limits.max_in_flight = (unsigned)val;
        ptr_pop(L, s);
    }
    if ((x = json_object_get(v, "rate_scope"))) {
        const char *scope;
        s = ptr_key(L, "rate_scope");
        scope = want_string(L, x, "\"rate_scope\"", 16, false);
        if (scope && !strcmp(scope, "global"))
            p->limits.rate_scope = POLICY_RATE_GLOBAL;
        else if (scope && strcmp(scope, "instance") != 0)
            lerr(L, false, "\"rate_scope\" is \"instance\" or \"global\", not \"%s\"", scope);
        if (p->limits.rate_scope == POLICY_RATE_GLOBAL && !json_object_get(v, "rate_per_s"))
            lerr(L, false, "\"rate_scope\": \"global\" needs \"rate_per_s\"");
        else if (p->limits.rate_scope == POLICY_RATE_GLOBAL && !L->cfg->redis.enabled)
            lerr(L, false, "\"rate_scope\": \"global\" needs \"redis\" in the main config "
                           "(the store every instance shares)");
        ptr_pop(L, s);
    }
}

static void load_limits(struct loader *L, const json_t *v, struct policy *p)
{
    static const char *const keys[] = {"max_body_bytes", "timeout_ms", "rate_per_s", "burst",
                                       "rate_scope", "max_in_flight", NULL};
    const json_t *x;
    json_int_t val;
    size_t s;

    if (!want(L, v, JSON_OBJECT, "\"limits\""))
        return;
    check_keys(L, v, keys, "\"limits\"");
#define LIMIT(key, lo, hi, field, type)                                              \
    if ((x = json_object_get(v, key))) {                                             \
        s = ptr_key(L, key);                                                         \
        if (want_uint(L, x, "\"" key "\"", lo, hi, &val))                             \
            p->limits.field = (type)val;                                             \
        ptr_pop(L, s);                                                               \
    }
    LIMIT("max_body_bytes", 1, (json_int_t)1 << 40, max_body_bytes, uint64_t)
    LIMIT("timeout_ms", 1, 3600000, timeout_ms, unsigned)
    LIMIT("burst", 1, 1000000, burst, unsigned)
#undef LIMIT
    /* a rate is any positive number: 0.0002 is "one request per 5000 s" */
    if ((x = json_object_get(v, "rate_per_s"))) {
        s = ptr_key(L, "rate_per_s");
        if (!json_is_number(x))
            lerr(L, false, "\"rate_per_s\" must be a number, not %s", type_name(x));
        else if (!(json_number_value(x) > 0) || json_number_value(x) > POLICY_MAX_RATE)
            lerr(L, false, "\"rate_per_s\" is %g, the range is greater than 0 up to %d "
                           "(0.0002 is one request per 5000 s)",
                 json_number_value(x), POLICY_MAX_RATE);
        else
            p->limits.rate_per_s = json_number_value(x);
        ptr_pop(L, s);
    }
    if (json_object_get(v, "burst") && !json_object_get(v, "rate_per_s")) {
        s = ptr_key(L, "burst");
        lerr(L, true, "\"burst\" needs \"rate_per_s\"");
        ptr_pop(L, s);
    }
    if (p->limits.rate_per_s > 0 && !p->limits.burst)
        p->limits.burst = p->limits.rate_per_s < 1 ? 1 : (unsigned)ceil(p->limits.rate_per_s);
    load_limits_shared(L, v, p);
}

static bool valid_host(const char *h)
{
    size_t n = strlen(h);
    if (n == 0 || n > 253)
        return false;
    if (h[0] == '[')
        return n > 2 && h[n - 1] == ']' && strspn(h + 1, "0123456789abcdefABCDEF:.") == n - 2;
    for (size_t i = 0; i < n; i++) {
        char c = h[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.'))
            return false;
    }
    return true;
}

static void load_route(struct loader *L, const json_t *v, struct policy *p)
{
    static const char *const keys[] = {"host", "path_prefix", NULL};
    const json_t *hv, *pv;
    size_t s;

    pos_here(L, false, &p->route_line, &p->route_col);
    if (!want(L, v, JSON_OBJECT, "\"route\""))
        return;
    check_keys(L, v, keys, "\"route\"");
    if ((hv = json_object_get(v, "host"))) {
        const char *h;
        s = ptr_key(L, "host");
        if ((h = want_string(L, hv, "\"host\"", 255, false))) {
            if (strcmp(h, "*") == 0) {
                p->host_any = true;
            } else if (strchr(h, '*')) {
                lerr(L, false, "host \"%s\": only \"*\" alone is a wildcard host", h);
            } else if (strchr(h, ':') && h[0] != '[') {
                lerr(L, false, "host \"%s\" must not include a port (the port is stripped before routing)", h);
            } else if (!valid_host(h)) {
                lerr(L, false, "host \"%s\" is not a host name or IP literal", h);
            } else {
                p->host = xstrdup(h);
                for (char *c = p->host; *c; c++)
                    *c = (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c);
            }
        }
        ptr_pop(L, s);
    } else {
        p->host_any = true; /* host defaults to "*" */
    }
    if (p->host_any)
        p->host = xstrdup("*");
    if (p->host)
        p->host_len = strlen(p->host);
    if ((pv = required(L, v, "path_prefix", "\"route\""))) {
        const char *pre;
        s = ptr_key(L, "path_prefix");
        if ((pre = want_string(L, pv, "\"path_prefix\"", POLICY_MAX_PREFIX, true))) {
            struct path_result res;
            enum reason r = path_canonicalize(pre, strlen(pre), POLICY_MAX_PREFIX, &res);
            if (r != REASON_ALLOWED)
                lerr(L, false, "path_prefix \"%s\" is not a canonical path (%s)", pre, reason_code(r));
            else if (res.query)
                lerr(L, false, "path_prefix \"%s\" must not have a query", pre);
            else if (strchr(pre, '*'))
                lerr(L, false, "path_prefix \"%s\" is a literal prefix; \"*\" has no special meaning "
                               "there and is not allowed", pre);
            else {
                p->prefix = xstrdup(pre);
                p->prefix_len = strlen(pre);
            }
        }
        ptr_pop(L, s);
    }
}

static bool valid_step(const char *s)
{
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_' || *s == '.'))
            return false;
    return true;
}

static void policy_free(struct policy *p)
{
    if (!p)
        return;
    free_signing(p); /* before the callers it reads */
    free(p->file);
    free(p->step);
    free(p->description);
    free(p->host);
    free(p->prefix);
    free(p->service_account);
    for (size_t i = 0; i < p->n_callers; i++) {
        free(p->callers[i].issuer);
        pat_free(&p->callers[i].claims);
        for (size_t j = 0; j < p->callers[i].n_scopes; j++)
            free(p->callers[i].scopes[j]);
        free(p->callers[i].scopes);
    }
    free(p->callers);
    for (size_t i = 0; i < p->n_rules; i++) {
        for (size_t j = 0; j < p->rules[i].n_methods; j++)
            free(p->rules[i].methods[j]);
        free(p->rules[i].methods);
        for (size_t j = 0; j < p->rules[i].n_paths; j++) {
            free(p->rules[i].paths[j].text);
            free(p->rules[i].paths[j].segs);
        }
        free(p->rules[i].paths);
    }
    free(p->rules);
    for (size_t i = 0; i < p->n_headers; i++) {
        free(p->headers[i].name);
        free(p->headers[i].glob);
    }
    free(p->headers);
    free(p);
}

static int diag_cmp(const void *a, const void *b)
{
    const struct diag *x = a, *y = b;
    if (x->line != y->line)
        return x->line - y->line;
    return x->col - y->col;
}

/* Loads one policy; NULL after errors (all added to L->d). */
static struct policy *load_one(const struct baton_config *cfg, const struct policy_source *src,
                               struct diags *d)
{
    static const char *const keys[] = {"step", "description", "mode", "route", "upstream",
                                       "callers", "allow", "require_headers", "service_account",
                                       "limits", "sign", NULL};
    struct loader L = {cfg, d, src->file, src->text, src->len, NULL, 0, 0, 0};
    struct policy *p = xcalloc(1, sizeof(*p));
    struct jsonpos_scan scan;
    json_error_t jerr;
    json_t *root = NULL, *v;
    size_t first = d->n, s;

    memset(&scan, 0, sizeof(scan));
    p->file = xstrdup(src->file);
    sha256_hex(src->text, src->len, p->hash);
    p->description = xstrdup("");

    jsonpos_scan(src->text, src->len, POLICY_MAX_DEPTH, &scan);
    if (scan.status == JSONPOS_TOO_DEEP) {
        diags_add(d, L.file, scan.where.line, scan.where.col,
                  "nesting deeper than %d levels", POLICY_MAX_DEPTH);
        L.errors++;
        goto out;
    }
    /* Duplicates are not rejected by jansson: the scan above lists them all,
     * with positions, instead of stopping at the first. */
    root = json_loadb(src->text, src->len, 0, &jerr);
    if (!root || scan.status != JSONPOS_OK) {
        if (!root)
            diags_add(d, L.file, jerr.line, jerr.column, "invalid JSON: %s", jerr.text);
        else
            diags_add(d, L.file, scan.where.line, scan.where.col, "invalid JSON");
        L.errors++;
        goto out;
    }
    for (size_t i = 0; i < scan.n_dups; i++) {
        diags_add(d, L.file, scan.dups[i].at.line, scan.dups[i].at.col,
                  "duplicate key \"%s\" (first at line %d column %d)", scan.dups[i].name,
                  scan.dups[i].first.line, scan.dups[i].first.col);
        L.errors++;
    }
    if (!json_is_object(root)) {
        lerr(&L, false, "a step policy must be a JSON object, not %s", type_name(root));
        goto out;
    }
    check_keys(&L, root, keys, "a step policy");

    if ((v = required(&L, root, "step", "the policy"))) {
        const char *step;
        s = ptr_key(&L, "step");
        pos_here(&L, false, &p->step_line, &p->step_col);
        if ((step = want_string(&L, v, "\"step\"", 128, false))) {
            if (!valid_step(step))
                lerr(&L, false, "step \"%s\" may only use letters, digits, '-', '_' and '.'", step);
            else
                p->step = xstrdup(step);
        }
        ptr_pop(&L, s);
    }
    if ((v = json_object_get(root, "description"))) {
        const char *desc;
        s = ptr_key(&L, "description");
        if ((desc = want_string(&L, v, "\"description\"", 4096, true))) {
            free(p->description);
            p->description = xstrdup(desc);
        }
        ptr_pop(&L, s);
    }
    if ((v = json_object_get(root, "mode"))) {
        s = ptr_key(&L, "mode");
        if (want(&L, v, JSON_STRING, "\"mode\"")) {
            if (strcmp(json_string_value(v), "dry_run") == 0)
                p->dry_run = true;
            else if (strcmp(json_string_value(v), "enforce") != 0)
                lerr(&L, false, "\"mode\" must be \"enforce\" or \"dry_run\", not \"%s\"",
                     json_string_value(v));
        }
        ptr_pop(&L, s);
    }
    if ((v = required(&L, root, "route", "the policy"))) {
        s = ptr_key(&L, "route");
        load_route(&L, v, p);
        ptr_pop(&L, s);
    }
    if ((v = required(&L, root, "upstream", "the policy"))) {
        const char *name;
        s = ptr_key(&L, "upstream");
        if ((name = want_string(&L, v, "\"upstream\"", 256, false))) {
            p->upstream = config_upstream(cfg, name);
            if (!p->upstream) {
                char *known = xstrdup("");
                for (size_t k = 0; k < cfg->n_upstreams; k++) {
                    char *t = xasprintf("%s%s\"%s\"", known, k ? ", " : "", cfg->upstreams[k].name);
                    free(known);
                    known = t;
                }
                lerr(&L, false, "upstream \"%s\" is not defined in %s (upstreams: %s)", name,
                     cfg->file ? cfg->file : "the config", *known ? known : "none");
                free(known);
            }
        }
        ptr_pop(&L, s);
    }
    if ((v = required(&L, root, "callers", "the policy"))) {
        s = ptr_key(&L, "callers");
        load_callers(&L, v, p);
        ptr_pop(&L, s);
    }
    if ((v = required(&L, root, "allow", "the policy"))) {
        s = ptr_key(&L, "allow");
        load_allow(&L, v, p);
        ptr_pop(&L, s);
    }
    if ((v = json_object_get(root, "require_headers"))) {
        s = ptr_key(&L, "require_headers");
        load_headers(&L, v, p);
        ptr_pop(&L, s);
    }
    if ((v = json_object_get(root, "service_account"))) {
        const char *sa;
        s = ptr_key(&L, "service_account");
        if ((sa = want_string(&L, v, "\"service_account\"", 254, false))) {
            const char *at = strchr(sa, '@');
            if (!at || at == sa || !at[1] || strchr(sa, ' ') || strchr(at + 1, '@'))
                lerr(&L, false, "service_account \"%s\" is not a service account e-mail address", sa);
            else
                p->service_account = xstrdup(sa);
        }
        ptr_pop(&L, s);
    }
    if ((v = json_object_get(root, "limits"))) {
        s = ptr_key(&L, "limits");
        load_limits(&L, v, p);
        ptr_pop(&L, s);
    }
    if ((v = json_object_get(root, "sign"))) {
        s = ptr_key(&L, "sign");
        load_sign(&L, v, p);
        ptr_pop(&L, s);
    }
out:
    if (d->n > first)
        qsort(d->v + first, d->n - first, sizeof(*d->v), diag_cmp);
    jsonpos_scan_free(&scan);
    json_decref(root);
    free(L.ptr);
    if (L.errors) {
        policy_free(p);
        return NULL;
    }
    return p;
}

/* Route precedence: exact hosts (by name) before "*", then longer prefixes. */
static int route_cmp(const void *a, const void *b)
{
    const struct policy *x = *(const struct policy *const *)a, *y = *(const struct policy *const *)b;
    int c;
    if (x->host_any != y->host_any)
        return x->host_any ? 1 : -1;
    if ((c = strcmp(x->host, y->host)) != 0)
        return c;
    if (x->prefix_len != y->prefix_len)
        return x->prefix_len > y->prefix_len ? -1 : 1;
    return strcmp(x->prefix, y->prefix);
}

struct policy_set *policy_set_build(const struct baton_config *cfg,
                                    const struct policy_source *src, size_t n,
                                    struct diags *d)
{
    struct policy_set *set = xcalloc(1, sizeof(*set));
    size_t errors = d->n, size = 16;

    set->v = xcalloc(n ? n : 1, sizeof(*set->v));
    for (size_t i = 0; i < n; i++) {
        struct policy *p = load_one(cfg, &src[i], d);
        if (!p)
            continue;
        /* cross-file checks against the policies loaded before this one */
        for (size_t j = 0; j < set->n; j++) {
            const struct policy *o = set->v[j];
            if (strcmp(o->step, p->step) == 0) {
                diags_add(d, p->file, p->step_line, p->step_col,
                          "step \"%s\" is also defined by %s:%d:%d", p->step, o->file, o->step_line,
                          o->step_col);
            }
            if (strcmp(o->host, p->host) == 0 && strcmp(o->prefix, p->prefix) == 0) {
                diags_add(d, p->file, p->route_line, p->route_col,
                          "route (host \"%s\", path_prefix \"%s\") is also claimed by %s:%d:%d",
                          p->host, p->prefix, o->file, o->route_line, o->route_col);
            }
        }
        set->v[set->n++] = p;
    }
    if (d->n > errors) {
        policy_set_free(set);
        return NULL;
    }
    qsort(set->v, set->n, sizeof(*set->v), route_cmp);
    while (size < 2 * set->n)
        size *= 2;
    set->table = xcalloc(size, sizeof(*set->table));
    set->mask = size - 1;
    for (size_t i = 0; i < set->n; i++) {
        const struct policy *p = set->v[i];
        uint64_t h = policy_route_hash(p->host, p->host_len, p->prefix, p->prefix_len);
        size_t k = h & set->mask;
        while (set->table[k].p)
            k = (k + 1) & set->mask;
        set->table[k].hash = h;
        set->table[k].p = p;
        if (p->prefix_len > set->max_prefix)
            set->max_prefix = p->prefix_len;
        if (!p->host_any)
            set->has_exact = true;
    }
    return set;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

struct policy_set *policy_set_load(const struct baton_config *cfg, struct diags *d)
{
    struct policy_set *set = NULL;
    struct policy_source *src = NULL;
    char **names = NULL;
    size_t n = 0, cap = 0, errors = d->n;
    DIR *dir = NULL;
    struct dirent *e;
    const char *base = cfg->policies;

    if (!base) {
        diags_add(d, cfg->file, 0, 0, "no policy directory configured");
        goto out;
    }
    if (!(dir = opendir(base))) {
        diags_add(d, base, 0, 0, "cannot open the policy directory: %s", strerror(errno));
        goto out;
    }
    while ((e = readdir(dir))) {
        size_t len = strlen(e->d_name);
        if (e->d_name[0] == '.' || len < 6 || strcmp(e->d_name + len - 5, ".json") != 0)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            names = xrealloc(names, cap * sizeof(*names));
        }
        names[n++] = xasprintf("%s/%s", base, e->d_name);
    }
    if (n > 0)
        qsort(names, n, sizeof(*names), name_cmp);
    else
        diags_add(d, base, 0, 0, "no step policy (*.json) in the policy directory");
    src = xcalloc(n ? n : 1, sizeof(*src));
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        char *text = NULL;
        size_t len = 0;
        src[i].file = names[i];
        if (stat(names[i], &st) != 0 || !S_ISREG(st.st_mode)) {
            diags_add(d, names[i], 0, 0, "not a regular file");
            continue;
        }
        if (read_file_capped(names[i], POLICY_MAX_FILE_BYTES, &text, &len) != 0) {
            if (errno == EFBIG)
                diags_add(d, names[i], 0, 0, "larger than %u bytes", POLICY_MAX_FILE_BYTES);
            else
                diags_add(d, names[i], 0, 0, "cannot read: %s", strerror(errno));
            continue;
        }
        src[i].text = text;
        src[i].len = len;
    }
    if (d->n == errors)
        set = policy_set_build(cfg, src, n, d);
out:
    if (dir)
        closedir(dir);
    for (size_t i = 0; i < n; i++) {
        free((char *)src[i].text);
        free(names[i]);
    }
    free(src);
    free(names);
    return set;
}

void policy_set_free(struct policy_set *set)
{
    if (!set)
        return;
    for (size_t i = 0; i < set->n; i++)
        policy_free(set->v[i]);
    free(set->v);
    free(set->table);
    free(set);
}

/* ---------------------------------------------------------------- signed URLs */

/* {"minted_by": {"issuer": NAME, "claims": {...}}}: the caller that minted the
 * link through the sign endpoint. */
static void load_minted_by(struct loader *L, const json_t *m, struct caller *c)
{
    static const char *const keys[] = {"issuer", "claims", NULL};
    const json_t *iv, *cv;
    size_t s;

    if (!want(L, m, JSON_OBJECT, "\"minted_by\""))
        return;
    check_keys(L, m, keys, "\"minted_by\"");
    if ((iv = required(L, m, "issuer", "\"minted_by\""))) {
        const char *name;
        s = ptr_key(L, "issuer");
        if ((name = want_string(L, iv, "\"issuer\"", 256, false))) {
            if (!config_issuer(L->cfg, name))
                lerr(L, false, "issuer \"%s\" is not defined in %s", name,
                     L->cfg->file ? L->cfg->file : "the config");
            c->minted_issuer = xstrdup(name);
        }
        ptr_pop(L, s);
    }
    if ((cv = required(L, m, "claims", "\"minted_by\""))) {
        s = ptr_key(L, "claims");
        if (want(L, cv, JSON_OBJECT, "\"claims\""))
            pat_compile(L, cv, &c->minted_claims, false);
        ptr_pop(L, s);
    }
}

/* A callers entry {"signed_url": true} or {"signed_url": {"minted_by": ...}}. */
static void load_signed_caller(struct loader *L, const json_t *e, struct caller *c)
{
    static const char *const keys[] = {"signed_url", NULL};
    const json_t *v = json_object_get(e, "signed_url");
    size_t s;

    c->issuer = xstrdup(""); /* matches no issuer name: token callers never match it */
    c->minted_claims.type = PT_BOOL;
    check_keys(L, e, keys, "a signed_url callers entry");
    s = ptr_key(L, "signed_url");
    if (json_is_true(v)) {
        c->signed_url = SIGNED_ANY;
    } else if (json_is_object(v)) {
        static const char *const skeys[] = {"minted_by", NULL};
        const json_t *m;
        c->signed_url = SIGNED_MINTED_BY;
        check_keys(L, v, skeys, "\"signed_url\"");
        if ((m = required(L, v, "minted_by", "\"signed_url\""))) {
            size_t s2 = ptr_key(L, "minted_by");
            load_minted_by(L, m, c);
            ptr_pop(L, s2);
        }
    } else {
        lerr(L, false, "\"signed_url\" must be true or {\"minted_by\": {\"issuer\": ..., \"claims\": {...}}}");
    }
    ptr_pop(L, s);
    if (!c->minted_issuer)
        c->minted_issuer = xstrdup("");
}

/*
 * "sign": [{"callers": [...], "methods": [...], "paths": [...], "max_ttl_s": N}]
 * Callers are compiled by load_callers and methods and paths by load_allow
 * (fed each entry's two members, so their positions are the entry's own).
 */
static void load_sign(struct loader *L, const json_t *v, struct policy *p)
{
    static const char *const keys[] = {"callers", "methods", "paths", "max_ttl_s", NULL};
    size_t n = want_array(L, v, "\"sign\"");
    json_t *rules = json_array();
    struct policy tmp;

    memset(&tmp, 0, sizeof(tmp));
    p->grants = xcalloc(n ? n : 1, sizeof(*p->grants));
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(v, i), *x;
        struct sign_grant *g = &p->grants[p->n_grants++];
        json_t *r = json_object();
        size_t s = ptr_index(L, i), s2;
        json_int_t ttl;

        pos_here(L, false, &g->line, &g->col);
        if (json_is_object(e)) {
            check_keys(L, e, keys, "a sign entry");
            if ((x = required(L, e, "callers", "a sign entry"))) {
                s2 = ptr_key(L, "callers");
                memset(&tmp, 0, sizeof(tmp));
                load_callers(L, x, &tmp);
                g->callers = tmp.callers;
                g->n_callers = tmp.n_callers;
                for (size_t k = 0; k < g->n_callers; k++)
                    if (g->callers[k].signed_url) {
                        size_t s3 = ptr_index(L, k);
                        lerr(L, false, "a sign entry's callers hold tokens: a signed URL cannot mint links");
                        ptr_pop(L, s3);
                    }
                ptr_pop(L, s2);
            }
            if ((x = required(L, e, "max_ttl_s", "a sign entry"))) {
                s2 = ptr_key(L, "max_ttl_s");
                if (want_uint(L, x, "\"max_ttl_s\"", 1, 604800, &ttl))
                    g->max_ttl_s = (unsigned)ttl;
                ptr_pop(L, s2);
            }
            if ((x = json_object_get(e, "methods")))
                json_object_set(r, "methods", (json_t *)x);
            if ((x = json_object_get(e, "paths")))
                json_object_set(r, "paths", (json_t *)x);
            json_array_append_new(rules, r);
        } else {
            want(L, e, JSON_OBJECT, "a sign entry");
            json_decref(r);
        }
        ptr_pop(L, s);
    }
    /* methods and paths of every object entry, at the entry's own position */
    memset(&tmp, 0, sizeof(tmp));
    tmp.prefix = p->prefix;
    if (n && json_array_size(rules) == n) { /* else an entry is not an object: reported */
        load_allow(L, rules, &tmp);
        for (size_t i = 0; i < tmp.n_rules && i < p->n_grants; i++)
            p->grants[i].rule = tmp.rules[i];
        free(tmp.rules);
    }
    json_decref(rules);
}

static void free_callers(struct caller *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(c[i].issuer);
        pat_free(&c[i].claims);
        for (size_t j = 0; j < c[i].n_scopes; j++)
            free(c[i].scopes[j]);
        free(c[i].scopes);
        free(c[i].minted_issuer);
        pat_free(&c[i].minted_claims);
    }
    free(c);
}

static void free_signing(struct policy *p)
{
    for (size_t i = 0; i < p->n_callers; i++) {
        free(p->callers[i].minted_issuer);
        pat_free(&p->callers[i].minted_claims);
    }
    for (size_t i = 0; i < p->n_grants; i++) {
        struct rule *r = &p->grants[i].rule;
        free_callers(p->grants[i].callers, p->grants[i].n_callers);
        for (size_t j = 0; j < r->n_methods; j++)
            free(r->methods[j]);
        free(r->methods);
        for (size_t j = 0; j < r->n_paths; j++) {
            free(r->paths[j].text);
            free(r->paths[j].segs);
        }
        free(r->paths);
    }
    free(p->grants);
}
