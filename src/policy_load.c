/*
 * policy_load.c: step policies: strict loading and compilation (rules in
 * policy.h).
 *
 * Loading uses the main config's strict loader (jload.h): the same JSON
 * front end (depth, every repeated name, syntax), key tables with "did you
 * mean", the same type and range messages, and the same error cap and order,
 * each error at file:line:column. The keys of each object are a jload table;
 * the limits' defaults and ranges are rows of one (limits_fields). Values that
 * compile into patterns are read by hand, in the order compilation needs.
 *
 * A loaded policy is compiled into plain arrays (policy_compiled.h): claims
 * patterns as a tree of typed nodes, path patterns as segment arrays, methods
 * and headers as strings, and the route table as an open-addressing hash of
 * (lower-case host, path_prefix), which policy_match.c then reads without
 * parsing, allocating or locking.
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

#include "buf.h"
#include "http1.h"
#include "jload.h"
#include "jsonpos.h"
#include "log.h"
#include "path.h"
#include "signurl.h"
#include "util.h"

/* ---------------------------------------------------------------- loading */

struct loader {
    const struct baton_config *cfg; /* borrowed */
    struct jload j;                 /* the path, positions and errors of this file */
};

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
    jload_warn(&L->j,
               "%s \"%s%s\" looks like a regular expression (%s); patterns are globs: \"*\" "
               "matches any run of characters and every other character only itself",
               what, esc, n > 120 ? "..." : "", why);
}

/* True when `v` has JSON type `type`; else an error naming `what`. */
static bool want(struct loader *L, const json_t *v, json_type type, const char *what)
{
    if (json_typeof(v) == type)
        return true;
    jload_err_bare(&L->j, false, "%s must be %s, not %s", what, jload_json_type_words(type),
                   jload_type_words(v));
    return false;
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
        jload_err_bare(&L->j, false, "%s must not be empty", what);
        return NULL;
    }
    if (n > max) {
        jload_err_bare(&L->j, false, "%s is %zu bytes long, the limit is %zu", what, n, max);
        return NULL;
    }
    if (!any_bytes)
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e) {
                jload_err_bare(&L->j, false,
                               "%s must be printable ASCII (byte 0x%02x at offset %zu)", what,
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
        jload_err_bare(&L->j, false, "%s must not be empty", what);
        return 0;
    }
    if (json_array_size(v) > POLICY_MAX_ENTRIES) {
        jload_err_bare(&L->j, false, "%s has %zu entries, the limit is %u", what,
                       json_array_size(v), POLICY_MAX_ENTRIES);
        return 0;
    }
    return json_array_size(v);
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
    jload_pos(&L->j, false, &out->line, &out->col);
    out->type = PT_BOOL;
    switch (json_typeof(v)) {
    case JSON_STRING: {
        size_t n = json_string_length(v);
        if (n > POLICY_MAX_PATTERN) {
            jload_err_bare(&L->j, false, "claim pattern is %zu bytes long, the limit is %u", n,
                           POLICY_MAX_PATTERN);
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
        jload_err_bare(&L->j, false,
                       "null is not a claim pattern (a pattern never matches an absent claim; "
                       "name the values to accept)");
        return;
    case JSON_OBJECT: {
        const char *key;
        json_t *mv;
        size_t i = 0, n = json_object_size(v);
        if (n == 0) {
            jload_err_bare(
                &L->j, false,
                "an empty claims object would match any object; name the claims to match");
            return;
        }
        out->type = PT_OBJ;
        out->u.obj.m = xcalloc(n, sizeof(*out->u.obj.m));
        json_object_foreach((json_t *)v, key, mv) {
            jload_push_key(&L->j, key);
            out->u.obj.m[i].key = xstrdup(key);
            out->u.obj.m[i].value.type = PT_BOOL;
            pat_compile(L, mv, &out->u.obj.m[i].value, false);
            jload_pop(&L->j);
            i++;
        }
        out->u.obj.n = i;
        return;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        if (in_list) {
            jload_err_bare(&L->j, false, "an array inside an array is not a claim pattern");
            return;
        }
        if (n == 0) {
            jload_err_bare(&L->j, false, "an empty array never matches; name the accepted values");
            return;
        }
        if (n > POLICY_MAX_ENTRIES) {
            jload_err_bare(&L->j, false, "claim pattern list has %zu entries, the limit is %u", n,
                           POLICY_MAX_ENTRIES);
            return;
        }
        out->type = PT_ANY;
        out->u.any.v = xcalloc(n, sizeof(*out->u.any.v));
        for (size_t i = 0; i < n; i++) {
            jload_push_idx(&L->j, i);
            out->u.any.v[i].type = PT_BOOL;
            pat_compile(L, json_array_get(v, i), &out->u.any.v[i], true);
            jload_pop(&L->j);
        }
        out->u.any.n = n;
        return;
    }
    }
}

static void load_scopes(struct loader *L, const json_t *v, struct caller *c)
{
    size_t n = want_array(L, v, "\"scopes\"");
    c->scopes = xcalloc(n ? n : 1, sizeof(*c->scopes));
    for (size_t i = 0; i < n; i++) {
        jload_push_idx(&L->j, i);
        const char *sc = want_string(L, json_array_get(v, i), "a scope", POLICY_MAX_PATTERN, false);
        if (sc) {
            bool dup = false;
            for (size_t j = 0; j < c->n_scopes; j++)
                dup = dup || strcmp(c->scopes[j], sc) == 0;
            /* RFC 6749 scope-token: %x21 / %x23-5B / %x5D-7E */
            if (strpbrk(sc, " \"\\"))
                jload_err_bare(&L->j, false, "\"%s\" is not a scope token (no space, '\"' or '\\')",
                               sc);
            else if (dup)
                jload_err_bare(&L->j, false, "scope \"%s\" is listed twice", sc);
            else
                c->scopes[c->n_scopes++] = xstrdup(sc);
        }
        jload_pop(&L->j);
    }
}

static void load_signed_caller(struct loader *L, const json_t *e, struct caller *c);
static void load_sign(struct loader *L, const json_t *v, struct policy *p);
static void free_signing(struct policy *p);

static const struct jload_field caller_fields[] = {
    JL_KEY("issuer", JL_REQUIRED), JL_KEY("claims", JL_REQUIRED), JL_KEY("scopes", 0), {0}};

static void load_callers(struct loader *L, const json_t *v, struct policy *p)
{
    size_t n = want_array(L, v, "\"callers\"");

    p->callers = xcalloc(n ? n : 1, sizeof(*p->callers));
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(v, i);
        struct caller *c = &p->callers[p->n_callers++];
        const json_t *iv, *cv, *sv;
        jload_push_idx(&L->j, i);

        c->claims.type = PT_BOOL;
        jload_pos(&L->j, false, &c->line, &c->col);
        if (!want(L, e, JSON_OBJECT, "a callers entry")) {
            jload_pop(&L->j);
            continue;
        }
        if (json_object_get(e, "signed_url")) {
            load_signed_caller(L, e, c);
            jload_pop(&L->j);
            continue;
        }
        jload_check_keys(&L->j, e, caller_fields);
        if ((iv = json_object_get(e, "issuer"))) {
            const char *name;
            jload_push_key(&L->j, "issuer");
            if ((name = want_string(L, iv, "\"issuer\"", 256, false))) {
                if (!config_issuer(L->cfg, name)) {
                    struct buf known = {0};
                    for (size_t k = 0; k < L->cfg->n_issuers; k++)
                        buf_printf(&known, "%s\"%s\"", k ? ", " : "", L->cfg->issuers[k].name);
                    jload_err_bare(&L->j, false, "issuer \"%s\" is not defined in %s (issuers: %s)",
                                   name, L->cfg->file ? L->cfg->file : "the config",
                                   known.len ? buf_str(&known) : "none");
                    buf_free(&known);
                }
                c->issuer = xstrdup(name);
            }
            jload_pop(&L->j);
        }
        if ((cv = json_object_get(e, "claims"))) {
            jload_push_key(&L->j, "claims");
            if (want(L, cv, JSON_OBJECT, "\"claims\""))
                pat_compile(L, cv, &c->claims, false);
            jload_pop(&L->j);
        }
        if ((sv = json_object_get(e, "scopes"))) {
            jload_push_key(&L->j, "scopes");
            jload_pos(&L->j, false, &c->scopes_line, &c->scopes_col);
            load_scopes(L, sv, c);
            jload_pop(&L->j);
        }
        if (!c->issuer)
            c->issuer = xstrdup("");
        jload_pop(&L->j);
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
        jload_err_bare(&L->j, false, "path pattern \"%s\" must start with \"/\"", text);
        return -1;
    }
    if (memchr(text, '?', n)) {
        jload_err_bare(&L->j, false,
                       "path pattern \"%s\" has a query; patterns match the path only", text);
        return -1;
    }
    if ((r = path_canonicalize(text, n, POLICY_MAX_PATTERN, &res)) != REASON_ALLOWED) {
        jload_err_bare(&L->j, false, "path pattern \"%s\" can never match a canonical path (%s)",
                       text, reason_code(r));
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
            jload_err_bare(&L->j, false,
                           "path pattern \"%s\": \"*\" and \"**\" stand for whole segments, "
                           "not parts of one (\"%.*s\")",
                           text, (int)len, s);
            return -1;
        } else {
            g->kind = SEG_LIT;
        }
        if (!e)
            break;
        s = e + 1;
    }
    if (prefix && !prefix_compatible(pp, prefix)) {
        jload_err_bare(&L->j, false,
                       "path pattern \"%s\" can never match under the route's path_prefix \"%s\"",
                       text, prefix);
        return -1;
    }
    return 0;
}

static const struct jload_field allow_fields[] = {
    JL_KEY("methods", JL_REQUIRED), JL_KEY("paths", JL_REQUIRED), {0}};

static void load_allow(struct loader *L, const json_t *v, struct policy *p)
{
    size_t n = want_array(L, v, "\"allow\"");

    p->rules = xcalloc(n ? n : 1, sizeof(*p->rules));
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(v, i), *mv, *pv;
        struct rule *r = &p->rules[p->n_rules++];
        jload_push_idx(&L->j, i);

        jload_pos(&L->j, false, &r->line, &r->col);
        if (!want(L, e, JSON_OBJECT, "an allow rule")) {
            jload_pop(&L->j);
            continue;
        }
        jload_check_keys(&L->j, e, allow_fields);
        if ((mv = json_object_get(e, "methods"))) {
            size_t m;
            jload_push_key(&L->j, "methods");
            m = want_array(L, mv, "\"methods\"");
            r->methods = xcalloc(m ? m : 1, sizeof(*r->methods));
            for (size_t j = 0; j < m; j++) {
                jload_push_idx(&L->j, j);
                const char *meth = want_string(L, json_array_get(mv, j), "a method", 32, false);
                bool okay = meth != NULL;
                for (const char *q = meth; okay && *q; q++)
                    if (!((*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9') || *q == '-' ||
                          *q == '_'))
                        okay = false;
                if (meth && !okay)
                    jload_err_bare(
                        &L->j, false,
                        "method \"%s\" must be an upper-case token (methods match exactly)", meth);
                for (size_t k = 0; okay && k < r->n_methods; k++)
                    if (strcmp(r->methods[k], meth) == 0) {
                        jload_err_bare(&L->j, false, "method \"%s\" is listed twice", meth);
                        okay = false;
                    }
                if (okay)
                    r->methods[r->n_methods++] = xstrdup(meth);
                jload_pop(&L->j);
            }
            jload_pop(&L->j);
        }
        if ((pv = json_object_get(e, "paths"))) {
            size_t m;
            jload_push_key(&L->j, "paths");
            m = want_array(L, pv, "\"paths\"");
            r->paths = xcalloc(m ? m : 1, sizeof(*r->paths));
            for (size_t j = 0; j < m; j++) {
                jload_push_idx(&L->j, j);
                const char *text = want_string(L, json_array_get(pv, j), "a path pattern",
                                               POLICY_MAX_PATTERN, true);
                bool dup = false;
                for (size_t k = 0; text && k < r->n_paths; k++)
                    if (strcmp(r->paths[k].text, text) == 0) {
                        jload_err_bare(&L->j, false, "path pattern \"%s\" is listed twice", text);
                        dup = true;
                    }
                if (text && !dup &&
                    path_pat_compile(L, text, p->prefix, &r->paths[r->n_paths]) == 0) {
                    lint_glob(L, "path pattern", text, strlen(text));
                    r->n_paths++;
                } else if (text && !dup) {
                    free(r->paths[r->n_paths].text);
                    free(r->paths[r->n_paths].segs);
                    memset(&r->paths[r->n_paths], 0, sizeof(r->paths[r->n_paths]));
                }
                jload_pop(&L->j);
            }
            jload_pop(&L->j);
        }
        jload_pop(&L->j);
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
        jload_err_bare(&L->j, false, "\"require_headers\" has %zu entries, the limit is %u", n,
                       POLICY_MAX_ENTRIES);
        return;
    }
    p->headers = xcalloc(n ? n : 1, sizeof(*p->headers));
    json_object_foreach((json_t *)v, key, hv) {
        size_t kn = strlen(key);
        bool okay = kn <= 256 && http1_token(key, kn);
        const char *glob;
        int line, col;
        jload_push_key(&L->j, key);
        jload_pos(&L->j, true, &line, &col);
        if (!okay)
            jload_err_bare(&L->j, true,
                           "\"%s\" is not a header name (RFC 9110 token, at most 256 bytes)", key);
        else if (ascii_casecmp_n(key, kn, "authorization", 13) == 0) {
            jload_err_bare(&L->j, true,
                           "\"Authorization\" carries the caller's token: authorize the caller "
                           "with \"callers\", not require_headers");
            okay = false;
        }
        for (size_t i = 0; okay && i < p->n_headers; i++)
            if (ascii_casecmp_n(p->headers[i].name, strlen(p->headers[i].name), key, kn) == 0) {
                jload_err_bare(&L->j, true,
                               "header \"%s\" is already required as \"%s\" at line %d column %d "
                               "(names are case-insensitive)",
                               key, p->headers[i].name, p->headers[i].line, p->headers[i].col);
                okay = false;
            }
        glob = want_string(L, hv, "a header value pattern", POLICY_MAX_PATTERN, false);
        if (glob && (glob[0] == ' ' || glob[strlen(glob) - 1] == ' ')) {
            jload_err_bare(&L->j, false,
                           "header value pattern \"%s\" starts or ends with a space; values are "
                           "matched without surrounding whitespace",
                           glob);
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
        jload_pop(&L->j);
    }
}

static const struct jload_choice rate_scopes[] = {
    {"instance", POLICY_RATE_INSTANCE}, {"global", POLICY_RATE_GLOBAL}, {NULL, 0}};
_Static_assert(sizeof(enum policy_rate_scope) == sizeof(int), "enums are stored as int");

/* The step's limits: each default (0: unset, the config's or the upstream's
 * value applies) and range is written here once. rate_per_s, any positive
 * number, is read by hand; rate_scope and max_in_flight are README's "Shared
 * limits on Redis". */
static const struct jload_field limits_fields[] = {
    JL_INT("max_body_bytes", struct policy_limits, max_body_bytes, 1, 1LL << 40, 0),
    JL_INT("timeout_ms", struct policy_limits, timeout_ms, 1, 3600000, 0),
    JL_KEY("rate_per_s", 0),
    JL_INT("burst", struct policy_limits, burst, 1, POLICY_MAX_RATE, 0),
    JL_CHOICE("rate_scope", struct policy_limits, rate_scope, rate_scopes, POLICY_RATE_INSTANCE),
    JL_INT("max_in_flight", struct policy_limits, max_in_flight, 1, 1000000, 0),
    {0},
};

static void load_limits(struct loader *L, const json_t *v, struct policy *p)
{
    const json_t *x;

    if (!want(L, v, JSON_OBJECT, "\"limits\""))
        return;
    jload_check_keys(&L->j, v, limits_fields);
    for (const struct jload_field *f = limits_fields; f->key; f++)
        if (f->kind != JL_K_CUSTOM && (x = json_object_get(v, f->key))) {
            jload_push_key(&L->j, f->key);
            jload_field(&L->j, f, x, &p->limits);
            jload_pop(&L->j);
        }
    /* a rate is any positive number: 0.0002 is "one request per 5000 s" */
    if ((x = json_object_get(v, "rate_per_s"))) {
        jload_push_key(&L->j, "rate_per_s");
        if (!json_is_number(x))
            jload_err_bare(&L->j, false, "\"rate_per_s\" must be a number, not %s",
                           jload_type_words(x));
        else if (!(json_number_value(x) > 0) || json_number_value(x) > POLICY_MAX_RATE)
            jload_err_bare(&L->j, false,
                           "\"rate_per_s\" is %g, the range is greater than 0 up to %d "
                           "(0.0002 is one request per 5000 s)",
                           json_number_value(x), POLICY_MAX_RATE);
        else
            p->limits.rate_per_s = json_number_value(x);
        jload_pop(&L->j);
    }
    if (json_object_get(v, "burst") && !json_object_get(v, "rate_per_s")) {
        jload_push_key(&L->j, "burst");
        jload_err_bare(&L->j, true, "\"burst\" needs \"rate_per_s\"");
        jload_pop(&L->j);
    }
    if (p->limits.rate_per_s > 0 && !p->limits.burst)
        p->limits.burst = p->limits.rate_per_s < 1 ? 1 : (unsigned)ceil(p->limits.rate_per_s);
    jload_push_key(&L->j, "rate_scope");
    if (p->limits.rate_scope == POLICY_RATE_GLOBAL && !json_object_get(v, "rate_per_s"))
        jload_err_bare(&L->j, false, "\"rate_scope\": \"global\" needs \"rate_per_s\"");
    else if (p->limits.rate_scope == POLICY_RATE_GLOBAL && !L->cfg->redis.enabled)
        jload_err_bare(&L->j, false,
                       "\"rate_scope\": \"global\" needs \"redis\" in the main "
                       "config (the store every instance shares)");
    jload_pop(&L->j);
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

static const struct jload_field route_fields[] = {
    JL_KEY("host", 0), JL_KEY("path_prefix", JL_REQUIRED), {0}};

static void load_route(struct loader *L, const json_t *v, struct policy *p)
{
    const json_t *hv, *pv;

    jload_pos(&L->j, false, &p->route_line, &p->route_col);
    if (!want(L, v, JSON_OBJECT, "\"route\""))
        return;
    jload_check_keys(&L->j, v, route_fields);
    if ((hv = json_object_get(v, "host"))) {
        const char *h;
        jload_push_key(&L->j, "host");
        if ((h = want_string(L, hv, "\"host\"", 255, false))) {
            if (strcmp(h, "*") == 0) {
                p->host_any = true;
            } else if (strchr(h, '*')) {
                jload_err_bare(&L->j, false, "host \"%s\": only \"*\" alone is a wildcard host", h);
            } else if (strchr(h, ':') && h[0] != '[') {
                jload_err_bare(
                    &L->j, false,
                    "host \"%s\" must not include a port (the port is stripped before routing)", h);
            } else if (!valid_host(h)) {
                jload_err_bare(&L->j, false, "host \"%s\" is not a host name or IP literal", h);
            } else {
                p->host = xstrdup(h);
                for (char *c = p->host; *c; c++)
                    *c = (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c);
            }
        }
        jload_pop(&L->j);
    } else {
        p->host_any = true; /* host defaults to "*" */
    }
    if (p->host_any)
        p->host = xstrdup("*");
    if (p->host)
        p->host_len = strlen(p->host);
    if ((pv = json_object_get(v, "path_prefix"))) {
        const char *pre;
        jload_push_key(&L->j, "path_prefix");
        if ((pre = want_string(L, pv, "\"path_prefix\"", POLICY_MAX_PREFIX, true))) {
            struct path_result res;
            enum reason r = path_canonicalize(pre, strlen(pre), POLICY_MAX_PREFIX, &res);
            if (r != REASON_ALLOWED)
                jload_err_bare(&L->j, false, "path_prefix \"%s\" is not a canonical path (%s)", pre,
                               reason_code(r));
            else if (res.query)
                jload_err_bare(&L->j, false, "path_prefix \"%s\" must not have a query", pre);
            else if (strchr(pre, '*'))
                jload_err_bare(
                    &L->j, false,
                    "path_prefix \"%s\" is a literal prefix; \"*\" has no special meaning "
                    "there and is not allowed",
                    pre);
            else {
                p->prefix = xstrdup(pre);
                p->prefix_len = strlen(pre);
            }
        }
        jload_pop(&L->j);
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

static const struct jload_field policy_fields[] = {JL_KEY("step", JL_REQUIRED),
                                                   JL_KEY("description", 0),
                                                   JL_KEY("mode", 0),
                                                   JL_KEY("route", JL_REQUIRED),
                                                   JL_KEY("upstream", JL_REQUIRED),
                                                   JL_KEY("callers", JL_REQUIRED),
                                                   JL_KEY("allow", JL_REQUIRED),
                                                   JL_KEY("require_headers", 0),
                                                   JL_KEY("service_account", 0),
                                                   JL_KEY("limits", 0),
                                                   JL_KEY("sign", 0),
                                                   {0}};

/* Loads one policy; NULL after errors (all added to `d`). */
static struct policy *load_one(const struct baton_config *cfg, const struct policy_source *src,
                               struct diags *d)
{
    struct loader L = {cfg, {0}};
    struct policy *p = xcalloc(1, sizeof(*p));
    json_t *root = NULL, *v;
    size_t first = d->n;

    p->file = xstrdup(src->file);
    sha256_hex(src->text, src->len, p->hash);
    p->description = xstrdup("");

    jload_init(&L.j, src->file, NULL, src->text, src->len, d);
    if (!(root = jload_parse(&L.j, POLICY_MAX_DEPTH)))
        goto out;
    if (!json_is_object(root)) {
        jload_err_bare(&L.j, false, "a step policy must be a JSON object, not %s",
                       jload_type_words(root));
        goto out;
    }
    jload_check_keys(&L.j, root, policy_fields);

    if ((v = json_object_get(root, "step"))) {
        const char *step;
        jload_push_key(&L.j, "step");
        jload_pos(&L.j, false, &p->step_line, &p->step_col);
        if ((step = want_string(&L, v, "\"step\"", 128, false))) {
            if (!valid_step(step))
                jload_err_bare(&L.j, false,
                               "step \"%s\" may only use letters, digits, '-', '_' and '.'", step);
            else
                p->step = xstrdup(step);
        }
        jload_pop(&L.j);
    }
    if ((v = json_object_get(root, "description"))) {
        const char *desc;
        jload_push_key(&L.j, "description");
        if ((desc = want_string(&L, v, "\"description\"", 4096, true))) {
            free(p->description);
            p->description = xstrdup(desc);
        }
        jload_pop(&L.j);
    }
    if ((v = json_object_get(root, "mode"))) {
        jload_push_key(&L.j, "mode");
        if (want(&L, v, JSON_STRING, "\"mode\"")) {
            if (strcmp(json_string_value(v), "dry_run") == 0)
                p->dry_run = true;
            else if (strcmp(json_string_value(v), "enforce") != 0)
                jload_err_bare(&L.j, false,
                               "\"mode\" must be \"enforce\" or \"dry_run\", not \"%s\"",
                               json_string_value(v));
        }
        jload_pop(&L.j);
    }
    if ((v = json_object_get(root, "route"))) {
        jload_push_key(&L.j, "route");
        load_route(&L, v, p);
        jload_pop(&L.j);
    }
    if ((v = json_object_get(root, "upstream"))) {
        const char *name;
        jload_push_key(&L.j, "upstream");
        if ((name = want_string(&L, v, "\"upstream\"", 256, false))) {
            p->upstream = config_upstream(cfg, name);
            if (!p->upstream) {
                struct buf known = {0};
                for (size_t k = 0; k < cfg->n_upstreams; k++)
                    buf_printf(&known, "%s\"%s\"", k ? ", " : "", cfg->upstreams[k].name);
                jload_err_bare(&L.j, false, "upstream \"%s\" is not defined in %s (upstreams: %s)",
                               name, cfg->file ? cfg->file : "the config",
                               known.len ? buf_str(&known) : "none");
                buf_free(&known);
            }
        }
        jload_pop(&L.j);
    }
    if ((v = json_object_get(root, "callers"))) {
        jload_push_key(&L.j, "callers");
        load_callers(&L, v, p);
        jload_pop(&L.j);
    }
    if ((v = json_object_get(root, "allow"))) {
        jload_push_key(&L.j, "allow");
        load_allow(&L, v, p);
        jload_pop(&L.j);
    }
    if ((v = json_object_get(root, "require_headers"))) {
        jload_push_key(&L.j, "require_headers");
        load_headers(&L, v, p);
        jload_pop(&L.j);
    }
    if ((v = json_object_get(root, "service_account"))) {
        const char *sa;
        jload_push_key(&L.j, "service_account");
        if ((sa = want_string(&L, v, "\"service_account\"", 254, false))) {
            const char *at = strchr(sa, '@');
            if (!at || at == sa || !at[1] || strchr(sa, ' ') || strchr(at + 1, '@'))
                jload_err_bare(&L.j, false,
                               "service_account \"%s\" is not a service account e-mail address",
                               sa);
            else
                p->service_account = xstrdup(sa);
        }
        jload_pop(&L.j);
    }
    if ((v = json_object_get(root, "limits"))) {
        jload_push_key(&L.j, "limits");
        load_limits(&L, v, p);
        jload_pop(&L.j);
    }
    if ((v = json_object_get(root, "sign"))) {
        jload_push_key(&L.j, "sign");
        load_sign(&L, v, p);
        jload_pop(&L.j);
    }
out:
    jload_finish(&L.j);
    json_decref(root);
    if (d->n > first) {
        policy_free(p);
        return NULL;
    }
    return p;
}

/* Route precedence: exact hosts (by name) before "*", then longer prefixes. */
static int route_cmp(const void *a, const void *b)
{
    const struct policy *x = *(const struct policy *const *)a,
                        *y = *(const struct policy *const *)b;
    int c;
    if (x->host_any != y->host_any)
        return x->host_any ? 1 : -1;
    if ((c = strcmp(x->host, y->host)) != 0)
        return c;
    if (x->prefix_len != y->prefix_len)
        return x->prefix_len > y->prefix_len ? -1 : 1;
    return strcmp(x->prefix, y->prefix);
}

struct policy_set *policy_set_build(const struct baton_config *cfg, const struct policy_source *src,
                                    size_t n, struct diags *d)
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

static const struct jload_field minted_by_fields[] = {
    JL_KEY("issuer", JL_REQUIRED), JL_KEY("claims", JL_REQUIRED), {0}};

/* {"minted_by": {"issuer": NAME, "claims": {...}}}: the caller that minted the
 * link through the sign endpoint. */
static void load_minted_by(struct loader *L, const json_t *m, struct caller *c)
{
    const json_t *iv, *cv;

    if (!want(L, m, JSON_OBJECT, "\"minted_by\""))
        return;
    jload_check_keys(&L->j, m, minted_by_fields);
    if ((iv = json_object_get(m, "issuer"))) {
        const char *name;
        jload_push_key(&L->j, "issuer");
        if ((name = want_string(L, iv, "\"issuer\"", 256, false))) {
            if (!config_issuer(L->cfg, name))
                jload_err_bare(&L->j, false, "issuer \"%s\" is not defined in %s", name,
                               L->cfg->file ? L->cfg->file : "the config");
            c->minted_issuer = xstrdup(name);
        }
        jload_pop(&L->j);
    }
    if ((cv = json_object_get(m, "claims"))) {
        jload_push_key(&L->j, "claims");
        if (want(L, cv, JSON_OBJECT, "\"claims\""))
            pat_compile(L, cv, &c->minted_claims, false);
        jload_pop(&L->j);
    }
}

static const struct jload_field signed_url_fields[] = {JL_KEY("minted_by", JL_REQUIRED), {0}};
static const struct jload_field signed_caller_fields[] = {JL_KEY("signed_url", 0), {0}};

/* A callers entry {"signed_url": true} or {"signed_url": {"minted_by": ...}}. */
static void load_signed_caller(struct loader *L, const json_t *e, struct caller *c)
{
    const json_t *v = json_object_get(e, "signed_url");

    c->issuer = xstrdup(""); /* matches no issuer name: token callers never match it */
    c->minted_claims.type = PT_BOOL;
    jload_check_keys(&L->j, e, signed_caller_fields);
    jload_push_key(&L->j, "signed_url");
    if (json_is_true(v)) {
        c->signed_url = SIGNED_ANY;
    } else if (json_is_object(v)) {
        const json_t *m;
        c->signed_url = SIGNED_MINTED_BY;
        jload_check_keys(&L->j, v, signed_url_fields);
        if ((m = json_object_get(v, "minted_by"))) {
            jload_push_key(&L->j, "minted_by");
            load_minted_by(L, m, c);
            jload_pop(&L->j);
        }
    } else {
        jload_err_bare(
            &L->j, false,
            "\"signed_url\" must be true or {\"minted_by\": {\"issuer\": ..., \"claims\": {...}}}");
    }
    jload_pop(&L->j);
    if (!c->minted_issuer)
        c->minted_issuer = xstrdup("");
}

static const struct jload_field sign_fields[] = {JL_KEY("callers", JL_REQUIRED),
                                                 JL_KEY("methods", 0),
                                                 JL_KEY("paths", 0),
                                                 {.key = "max_ttl_s",
                                                  .kind = JL_K_INT,
                                                  JL_MEMBER(struct sign_grant, max_ttl_s),
                                                  .min = 1,
                                                  .max = 604800,
                                                  .flags = JL_REQUIRED},
                                                 {0}};

/*
 * "sign": [{"callers": [...], "methods": [...], "paths": [...], "max_ttl_s": N}]
 * Callers are compiled by load_callers and methods and paths by load_allow
 * (fed each entry's two members, so their positions are the entry's own).
 */
static void load_sign(struct loader *L, const json_t *v, struct policy *p)
{
    size_t n = want_array(L, v, "\"sign\"");
    json_t *rules = json_array();
    struct policy tmp;

    memset(&tmp, 0, sizeof(tmp));
    p->grants = xcalloc(n ? n : 1, sizeof(*p->grants));
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(v, i), *x;
        struct sign_grant *g = &p->grants[p->n_grants++];
        json_t *r = json_object();
        jload_push_idx(&L->j, i);

        jload_pos(&L->j, false, &g->line, &g->col);
        if (json_is_object(e)) {
            jload_check_keys(&L->j, e, sign_fields);
            if ((x = json_object_get(e, "callers"))) {
                jload_push_key(&L->j, "callers");
                memset(&tmp, 0, sizeof(tmp));
                load_callers(L, x, &tmp);
                g->callers = tmp.callers;
                g->n_callers = tmp.n_callers;
                for (size_t k = 0; k < g->n_callers; k++)
                    if (g->callers[k].signed_url) {
                        jload_push_idx(&L->j, k);
                        jload_err_bare(
                            &L->j, false,
                            "a sign entry's callers hold tokens: a signed URL cannot mint links");
                        jload_pop(&L->j);
                    }
                jload_pop(&L->j);
            }
            if ((x = json_object_get(e, "max_ttl_s"))) {
                jload_push_key(&L->j, "max_ttl_s");
                jload_field(&L->j, &sign_fields[3], x, g);
                jload_pop(&L->j);
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
        jload_pop(&L->j);
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

const struct jload_table *policy_tables(size_t *n)
{
    static const struct jload_table tables[] = {
        {"", policy_fields},
        {"route.", route_fields},
        {"callers[].", caller_fields},
        {"callers[].", signed_caller_fields},
        {"callers[].signed_url.", signed_url_fields},
        {"callers[].signed_url.minted_by.", minted_by_fields},
        {"allow[].", allow_fields},
        {"limits.", limits_fields},
        {"sign[].", sign_fields},
    };
    *n = sizeof(tables) / sizeof(tables[0]);
    return tables;
}
