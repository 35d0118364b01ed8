/*
 * policy_match.c: step policies at request time: routing, authorization and
 * the explanation of a decision (rules in policy.h).
 *
 * It reads the compiled arrays policy_load.c built (policy_compiled.h) and
 * compares bytes; it never parses, allocates or locks, so one set is shared
 * read-only by every worker and replaced whole on reload.
 */
#include "policy.h"
#include "policy_compiled.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jload.h"
#include "log.h"
#include "signurl.h"
#include "util.h"

/* ---------------------------------------------------------------- matching */

/* `*` matches any run of bytes, including none; everything else itself.
 * The text before the first star must start s and the text after the last
 * star end it; each run between stars, in order, is taken at its leftmost
 * place in what is left (a later place never matches more: what follows it
 * is a suffix of what follows the leftmost one). memcmp and memmem instead of
 * a byte loop with a backtrack point: "arn:aws:states:*" costs a prefix
 * compare, whatever the value's length. */
bool policy_glob_match(const char *p, size_t pn, const char *s, size_t sn)
{
    const char *star = memchr(p, '*', pn), *last;
    size_t head, tail;

    if (!star)
        return pn == sn && memcmp(p, s, pn) == 0;
    head = (size_t)(star - p);
    if (head == pn - 1) /* "prefix*", the usual shape: one star, at the end */
        return sn >= head && memcmp(s, p, head) == 0;
    last = memrchr(p, '*', pn);
    tail = pn - (size_t)(last - p) - 1;
    if (sn < head + tail || memcmp(s, p, head) != 0 || memcmp(s + sn - tail, last + 1, tail) != 0)
        return false;
    s += head;
    sn -= head + tail;
    /* the runs between the first and the last star */
    for (const char *q = star + 1; q < last;) {
        const char *end = memchr(q, '*', (size_t)(last - q) + 1);
        size_t run = (size_t)(end - q);
        if (run) {
            const char *at = memmem(s, sn, q, run);
            if (!at)
                return false;
            sn -= (size_t)(at - s) + run;
            s = at + run;
        }
        q = end + 1;
    }
    return true;
}

static bool pat_match(const struct pat *p, const json_t *v)
{
    if (!v)
        return false;
    switch (p->type) {
    case PT_STR:
        return json_is_string(v) && json_string_length(v) == p->u.str.len &&
               memcmp(json_string_value(v), p->u.str.s, p->u.str.len) == 0;
    case PT_GLOB:
        return json_is_string(v) && policy_glob_match(p->u.str.s, p->u.str.len,
                                                      json_string_value(v), json_string_length(v));
    case PT_INT:
        return json_is_integer(v) && json_integer_value(v) == p->u.i;
    case PT_REAL:
        return json_is_real(v) && json_real_value(v) == p->u.d;
    case PT_BOOL:
        return json_is_boolean(v) && json_is_true(v) == p->u.b;
    case PT_OBJ:
        if (!json_is_object(v))
            return false;
        for (size_t i = 0; i < p->u.obj.n; i++)
            if (!pat_match(&p->u.obj.m[i].value, json_object_get(v, p->u.obj.m[i].key)))
                return false;
        return true;
    case PT_ANY:
        for (size_t i = 0; i < p->u.any.n; i++)
            if (pat_match(&p->u.any.v[i], v))
                return true;
        return false;
    }
    return false;
}

/* Is `w` one of the space-separated words of s[0, n)? */
static bool in_word_list(const char *s, size_t n, const char *w, size_t wn)
{
    size_t i = 0;
    while (i < n) {
        size_t start;
        while (i < n && s[i] == ' ')
            i++;
        start = i;
        while (i < n && s[i] != ' ')
            i++;
        if (i > start && i - start == wn && memcmp(s + start, w, wn) == 0)
            return true;
    }
    return false;
}

static bool has_scope(const json_t *claims, const char *w)
{
    size_t wn = strlen(w);
    const json_t *v = json_object_get(claims, "scope");

    if (json_is_string(v) && in_word_list(json_string_value(v), json_string_length(v), w, wn))
        return true;
    v = json_object_get(claims, "scp");
    if (json_is_string(v))
        return in_word_list(json_string_value(v), json_string_length(v), w, wn);
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) {
            const json_t *e = json_array_get(v, i);
            if (json_is_string(e) && json_string_length(e) == wn &&
                memcmp(json_string_value(e), w, wn) == 0)
                return true;
        }
    }
    return false;
}

/* The first scope of `c` the claims lack, or -1 when all are present. */
static int missing_scope(const struct caller *c, const json_t *claims)
{
    for (size_t i = 0; i < c->n_scopes; i++)
        if (!has_scope(claims, c->scopes[i]))
            return (int)i;
    return -1;
}

static bool seg_match(const struct seg *s, const char *p, size_t n)
{
    switch (s->kind) {
    case SEG_LIT:
        return n == s->len && memcmp(p, s->s, n) == 0;
    case SEG_STAR:
        return n > 0;
    case SEG_DSTAR:
        return true;
    }
    return false;
}

/* Segment-wise wildcard match: SEG_DSTAR matches any number of whole segments
 * (backtracking to the last one seen, O(segments * pattern) at worst). A path
 * position `pos` is the start of a segment; the path is done when pos > len. */
static bool path_match(const struct path_pat *pp, const char *path, size_t len)
{
    size_t i = 0, pos = 1, star_i = (size_t)-1, star_pos = 0;

    if (len == 0 || path[0] != '/')
        return false;
    while (pos <= len) {
        const char *slash = memchr(path + pos, '/', len - pos);
        size_t end = slash ? (size_t)(slash - path) : len;
        if (i < pp->n && pp->segs[i].kind == SEG_DSTAR) {
            star_i = i++;
            star_pos = pos;
            continue;
        }
        if (i < pp->n && seg_match(&pp->segs[i], path + pos, end - pos)) {
            i++;
            pos = end + 1;
            continue;
        }
        if (star_i != (size_t)-1) {
            /* the last `**` absorbs one more segment */
            const char *s2 = memchr(path + star_pos, '/', len - star_pos);
            star_pos = s2 ? (size_t)(s2 - path) + 1 : len + 1;
            pos = star_pos;
            i = star_i + 1;
            continue;
        }
        return false;
    }
    while (i < pp->n && pp->segs[i].kind == SEG_DSTAR)
        i++;
    return i == pp->n;
}

static bool rule_method(const struct rule *r, const char *method)
{
    for (size_t i = 0; i < r->n_methods; i++)
        if (strcmp(r->methods[i], method) == 0)
            return true;
    return false;
}

static int rule_path(const struct rule *r, const char *path, size_t len)
{
    for (size_t i = 0; i < r->n_paths; i++)
        if (path_match(&r->paths[i], path, len))
            return (int)i;
    return -1;
}

/* Occurrences of header `h` and whether the single one matches. */
static int header_check(const struct req_header *h, const struct policy_input *in, bool *match)
{
    const char *v = NULL;
    size_t vn = 0;
    int count = in->header ? in->header(in->header_ctx, h->name, &v, &vn) : 0;

    *match = count == 1 && v && policy_glob_match(h->glob, h->glob_len, v, vn);
    return count;
}

/* ---------------------------------------------------------------- trace */

static void trace_reset(struct policy_trace *t)
{
    memset(t, 0, sizeof(*t));
    t->caller_index = t->rule_index = t->pattern_index = -1;
}

static void bufcat(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void bufcat(char *buf, size_t cap, const char *fmt, ...)
{
    size_t n = strlen(buf);
    va_list ap;
    if (n + 1 >= cap)
        return;
    va_start(ap, fmt);
    vsnprintf(buf + n, cap - n, fmt, ap);
    va_end(ap);
}

/* Appends s as a JSON string, truncated to about 96 characters. */
static void bufcat_quoted(char *buf, size_t cap, const char *s, size_t n)
{
    char esc[200];
    bool cut = n > 96;
    json_escape(esc, sizeof(esc), s, cut ? 96 : n);
    bufcat(buf, cap, "\"%s%s\"", esc, cut ? "..." : "");
}

/* The pattern's JSON type in jload_type_words' words, so that a claim of
 * another type reads "expected an integer, got a string". */
static const char *pat_kind(const struct pat *p)
{
    switch (p->type) {
    case PT_STR:
    case PT_GLOB:
        return jload_json_type_words(JSON_STRING);
    case PT_INT:
        return jload_json_type_words(JSON_INTEGER);
    case PT_REAL:
        return jload_json_type_words(JSON_REAL);
    case PT_BOOL:
        return jload_json_type_words(JSON_TRUE);
    case PT_OBJ:
        return jload_json_type_words(JSON_OBJECT);
    case PT_ANY:
        return "one of a list";
    }
    return "?";
}

static void bufcat_value(char *buf, size_t cap, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_STRING:
        bufcat_quoted(buf, cap, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        bufcat(buf, cap, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        break;
    case JSON_REAL:
        bufcat(buf, cap, "%.17g", json_real_value(v));
        break;
    case JSON_TRUE:
        bufcat(buf, cap, "true");
        break;
    case JSON_FALSE:
        bufcat(buf, cap, "false");
        break;
    default:
        bufcat(buf, cap, "%s", jload_type_words(v));
        break;
    }
}

static void bufcat_pat(char *buf, size_t cap, const struct pat *p)
{
    switch (p->type) {
    case PT_STR:
    case PT_GLOB:
        bufcat_quoted(buf, cap, p->u.str.s, p->u.str.len);
        break;
    case PT_INT:
        bufcat(buf, cap, "%" JSON_INTEGER_FORMAT, p->u.i);
        break;
    case PT_REAL:
        bufcat(buf, cap, "%.17g", p->u.d);
        break;
    case PT_BOOL:
        bufcat(buf, cap, "%s", p->u.b ? "true" : "false");
        break;
    case PT_OBJ:
        bufcat(buf, cap, "an object");
        break;
    case PT_ANY:
        bufcat(buf, cap, "[");
        for (size_t i = 0; i < p->u.any.n; i++) {
            if (i)
                bufcat(buf, cap, ", ");
            bufcat_pat(buf, cap, &p->u.any.v[i]);
        }
        bufcat(buf, cap, "]");
        break;
    }
}

/* Appends a claim name to a display path: bare when it is a plain word,
 * quoted otherwise, joined with ".". */
static void name_push(char *name, size_t cap, const char *key)
{
    bool plain = *key != '\0';
    for (const char *k = key; *k; k++)
        if (!((*k >= 'a' && *k <= 'z') || (*k >= 'A' && *k <= 'Z') || (*k >= '0' && *k <= '9') ||
              *k == '_' || *k == '-' || *k == ':'))
            plain = false;
    if (*name)
        bufcat(name, cap, ".");
    if (plain)
        bufcat(name, cap, "%s", key);
    else
        bufcat_quoted(name, cap, key, strlen(key));
}

/* Diagnosis of one caller entry against the claims: how many leaves match,
 * and the first leaf (in file order) that does not. */
struct claim_diag {
    int matched;
    bool missed;
    char name[POLICY_MISS_NAME];
    char detail[POLICY_MISS_DETAIL];
    int line, col;
};

static void leaf_miss(struct claim_diag *cd, const char *name, const struct pat *p, const json_t *v)
{
    if (cd->missed)
        return;
    cd->missed = true;
    snprintf(cd->name, sizeof(cd->name), "%s", name);
    cd->line = p->line;
    cd->col = p->col;
    cd->detail[0] = '\0';
    if (!v) {
        bufcat(cd->detail, sizeof(cd->detail), "absent from the token, expected ");
        bufcat_pat(cd->detail, sizeof(cd->detail), p);
        return;
    }
    if (p->type == PT_ANY) {
        bufcat(cd->detail, sizeof(cd->detail), "got ");
        bufcat_value(cd->detail, sizeof(cd->detail), v);
        bufcat(cd->detail, sizeof(cd->detail), ", expected one of ");
        bufcat_pat(cd->detail, sizeof(cd->detail), p);
        return;
    }
    if (strcmp(jload_type_words(v), pat_kind(p)) != 0) {
        bufcat(cd->detail, sizeof(cd->detail), "expected %s ", pat_kind(p));
        bufcat_pat(cd->detail, sizeof(cd->detail), p);
        bufcat(cd->detail, sizeof(cd->detail), ", got %s", jload_type_words(v));
        if (!json_is_object(v) && !json_is_array(v)) {
            bufcat(cd->detail, sizeof(cd->detail), " ");
            bufcat_value(cd->detail, sizeof(cd->detail), v);
        }
        bufcat(cd->detail, sizeof(cd->detail), " (another JSON type never matches)");
        return;
    }
    bufcat(cd->detail, sizeof(cd->detail), "expected %s", p->type == PT_GLOB ? "glob " : "");
    bufcat_pat(cd->detail, sizeof(cd->detail), p);
    bufcat(cd->detail, sizeof(cd->detail), ", got ");
    bufcat_value(cd->detail, sizeof(cd->detail), v);
}

static void claims_diagnose(const struct pat *p, const json_t *obj, char *name, size_t cap,
                            struct claim_diag *cd)
{
    size_t mark = strlen(name);
    for (size_t i = 0; i < p->u.obj.n; i++) {
        const struct pat_member *m = &p->u.obj.m[i];
        const json_t *v = json_object_get(obj, m->key);
        name_push(name, cap, m->key);
        if (m->value.type == PT_OBJ && json_is_object(v))
            claims_diagnose(&m->value, v, name, cap, cd);
        else if (pat_match(&m->value, v))
            cd->matched++;
        else
            leaf_miss(cd, name, &m->value, v);
        name[mark] = '\0';
    }
}

static void trace_callers(const struct policy *p, const struct policy_input *in,
                          struct policy_trace *t)
{
    int best = -1, best_score = -1;
    struct claim_diag bd;

    memset(&bd, 0, sizeof(bd));
    for (size_t i = 0; i < p->n_callers; i++) {
        const struct caller *c = &p->callers[i];
        struct claim_diag cd;
        char name[POLICY_MISS_NAME] = "";
        if (!in->issuer_name || strcmp(c->issuer, in->issuer_name) != 0)
            continue;
        memset(&cd, 0, sizeof(cd));
        if (json_is_object(in->claims))
            claims_diagnose(&c->claims, in->claims, name, sizeof(name), &cd);
        /* an entry whose claims all match (it missed a scope) is the closest */
        if (json_is_object(in->claims) && !cd.missed)
            cd.matched = INT_MAX;
        if (cd.matched > best_score) {
            best = (int)i;
            best_score = cd.matched;
            bd = cd;
        }
    }
    if (best < 0) {
        /* no entry for this issuer at all */
        t->miss_kind = "issuer";
        snprintf(t->miss_name, sizeof(t->miss_name), "%s", in->issuer_name ? in->issuer_name : "");
        snprintf(t->miss_detail, sizeof(t->miss_detail),
                 "no callers entry is for issuer \"%s\"; entries are for",
                 in->issuer_name ? in->issuer_name : "");
        for (size_t i = 0; i < p->n_callers; i++)
            bufcat(t->miss_detail, sizeof(t->miss_detail), "%s \"%s\"", i ? "," : "",
                   p->callers[i].issuer);
        if (p->n_callers) {
            t->caller_index = 0;
            t->caller_line = t->miss_line = p->callers[0].line;
            t->caller_col = t->miss_col = p->callers[0].col;
        }
        return;
    }
    t->caller_index = best;
    t->caller_line = p->callers[best].line;
    t->caller_col = p->callers[best].col;
    if (!json_is_object(in->claims)) {
        t->miss_kind = "claim";
        snprintf(t->miss_detail, sizeof(t->miss_detail), "the claims are not a JSON object");
        return;
    }
    if (bd.missed) {
        t->miss_kind = "claim";
        snprintf(t->miss_name, sizeof(t->miss_name), "%s", bd.name);
        snprintf(t->miss_detail, sizeof(t->miss_detail), "%s", bd.detail);
        t->miss_line = bd.line;
        t->miss_col = bd.col;
        return;
    }
    {
        const struct caller *c = &p->callers[best];
        int s = missing_scope(c, in->claims);
        t->miss_kind = "scope";
        snprintf(t->miss_name, sizeof(t->miss_name), "%s", s >= 0 ? c->scopes[s] : "");
        snprintf(t->miss_detail, sizeof(t->miss_detail),
                 "scope \"%s\" is in neither the token's scope nor its scp claim",
                 s >= 0 ? c->scopes[s] : "");
        t->miss_line = c->scopes_line;
        t->miss_col = c->scopes_col;
    }
}

static void trace_rules(const struct policy *p, const struct policy_input *in,
                        struct policy_trace *t)
{
    int best = -1, best_score = -1, pi = -1;
    bool m_ok = false;
    const struct rule *r;

    /* closest rule: path matched (method differs) before method matched
     * (path differs) before neither; the first such rule */
    for (size_t i = 0; i < p->n_rules; i++) {
        bool m = rule_method(&p->rules[i], in->method);
        int pp = rule_path(&p->rules[i], in->path, in->path_len);
        int score = (pp >= 0 ? 2 : 0) + (m ? 1 : 0);
        if (score > best_score) {
            best = (int)i;
            best_score = score;
            m_ok = m;
            pi = pp;
        }
    }
    if (best < 0)
        return;
    r = &p->rules[best];
    t->rule_index = best;
    t->rule_line = t->miss_line = r->line;
    t->rule_col = t->miss_col = r->col;
    t->pattern_index = pi;
    t->miss_kind = pi >= 0 ? "method" : m_ok ? "path" : "rule";
    if (!m_ok) {
        snprintf(t->miss_name, sizeof(t->miss_name), "%s", in->method);
        bufcat(t->miss_detail, sizeof(t->miss_detail), "method ");
        bufcat_quoted(t->miss_detail, sizeof(t->miss_detail), in->method, strlen(in->method));
        bufcat(t->miss_detail, sizeof(t->miss_detail), " is not one of [");
        for (size_t i = 0; i < r->n_methods; i++)
            bufcat(t->miss_detail, sizeof(t->miss_detail), "%s%s", i ? ", " : "", r->methods[i]);
        bufcat(t->miss_detail, sizeof(t->miss_detail), "]");
    }
    if (pi < 0) {
        bufcat(t->miss_detail, sizeof(t->miss_detail), "%spath ", m_ok ? "" : "; ");
        bufcat_quoted(t->miss_detail, sizeof(t->miss_detail), in->path, in->path_len);
        bufcat(t->miss_detail, sizeof(t->miss_detail), " matches none of [");
        for (size_t i = 0; i < r->n_paths; i++) {
            if (i)
                bufcat(t->miss_detail, sizeof(t->miss_detail), ", ");
            bufcat_quoted(t->miss_detail, sizeof(t->miss_detail), r->paths[i].text,
                          strlen(r->paths[i].text));
        }
        bufcat(t->miss_detail, sizeof(t->miss_detail), "]");
    }
}

/* Whether explain must not print a header value: the name suggests a
 * credential (config_header_is_secret, the audit log's rule), or the value is
 * shaped like one (an HTTP authentication scheme, a JWT). */
static bool header_value_secret(const char *name, const char *v, size_t n)
{
    static const char *const schemes[] = {"bearer ",           "basic ", "digest ", "negotiate ",
                                          "aws4-hmac-sha256 ", NULL};
    if (config_header_is_secret(name, strlen(name)))
        return true;
    if (n >= 3 && memcmp(v, "eyJ", 3) == 0)
        return true;
    for (const char *const *sc = schemes; *sc; sc++)
        if (n >= strlen(*sc) && ascii_casecmp_n(v, strlen(*sc), *sc, strlen(*sc)) == 0)
            return true;
    return false;
}

static void trace_header(const struct req_header *h, int count, const struct policy_input *in,
                         struct policy_trace *t)
{
    t->miss_kind = "header";
    t->miss_line = h->line;
    t->miss_col = h->col;
    snprintf(t->miss_name, sizeof(t->miss_name), "%s", h->name);
    if (count == 0)
        snprintf(t->miss_detail, sizeof(t->miss_detail), "absent from the request");
    else if (count > 1)
        snprintf(t->miss_detail, sizeof(t->miss_detail),
                 "present %d times (a header sent more than once never matches)", count);
    else {
        const char *v = NULL;
        size_t vn = 0;
        in->header(in->header_ctx, h->name, &v, &vn);
        snprintf(t->miss_detail, sizeof(t->miss_detail), "got ");
        if (!v)
            bufcat(t->miss_detail, sizeof(t->miss_detail), "an empty value");
        else if (header_value_secret(h->name, v, vn))
            bufcat(t->miss_detail, sizeof(t->miss_detail), "[redacted] (%zu bytes)", vn);
        else
            bufcat_quoted(t->miss_detail, sizeof(t->miss_detail), v, vn);
        bufcat(t->miss_detail, sizeof(t->miss_detail), ", which does not match glob ");
        bufcat_quoted(t->miss_detail, sizeof(t->miss_detail), h->glob, h->glob_len);
    }
}

/* ---------------------------------------------------------------- authorize */

static int signed_caller(const struct policy *p, const char *minter);

/* policy_authorize and policy_authorize_link: `link` set for a signed URL. */
static enum reason authorize(const struct policy *p, const struct policy_input *in, bool link,
                             const char *minter, struct policy_trace *t)
{
    enum reason r;
    int ci = -1, scope_ci = -1, ri = -1, pi = -1;

    if (t)
        trace_reset(t);
    /* 1. callers */
    if (in->issuer_name && json_is_object(in->claims)) {
        for (size_t i = 0; i < p->n_callers; i++) {
            const struct caller *c = &p->callers[i];
            if (strcmp(c->issuer, in->issuer_name) != 0 || !pat_match(&c->claims, in->claims))
                continue;
            if (missing_scope(c, in->claims) >= 0) {
                if (scope_ci < 0)
                    scope_ci = (int)i;
                continue;
            }
            ci = (int)i;
            break;
        }
    }
    if (link)
        ci = signed_caller(p, minter);
    if (ci < 0) {
        r = scope_ci >= 0 ? REASON_SCOPE_MISSING : REASON_NO_CALLER_MATCH;
        if (t)
            trace_callers(p, in, t);
        goto out;
    }
    if (t) {
        t->caller_index = ci;
        t->caller_line = p->callers[ci].line;
        t->caller_col = p->callers[ci].col;
    }
    /* 2. allow rules */
    for (size_t i = 0; in->method && in->path && i < p->n_rules; i++) {
        if (!rule_method(&p->rules[i], in->method))
            continue;
        if ((pi = rule_path(&p->rules[i], in->path, in->path_len)) >= 0) {
            ri = (int)i;
            break;
        }
    }
    if (ri < 0) {
        r = REASON_NO_RULE_MATCH;
        if (t && in->method && in->path)
            trace_rules(p, in, t);
        goto out;
    }
    if (t) {
        t->rule_index = ri;
        t->rule_line = p->rules[ri].line;
        t->rule_col = p->rules[ri].col;
        t->pattern_index = pi;
    }
    /* 3. required headers */
    for (size_t i = 0; i < p->n_headers; i++) {
        bool match;
        int count = header_check(&p->headers[i], in, &match);
        if (!match) {
            r = REASON_HEADER_MISMATCH;
            if (t)
                trace_header(&p->headers[i], count, in, t);
            goto out;
        }
    }
    r = REASON_ALLOWED;
out:
    if (t)
        t->reason = r;
    return r;
}

/* ---------------------------------------------------------------- routing */

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

static inline uint64_t fnv_step(uint64_t h, unsigned char c)
{
    return (h ^ c) * FNV_PRIME;
}

static unsigned char lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* Hash of the route key: lower-case host, a 0 byte, then the prefix. */
static uint64_t host_hash(const char *host, size_t n)
{
    uint64_t h = FNV_OFFSET;
    for (size_t i = 0; i < n; i++)
        h = fnv_step(h, lower((unsigned char)host[i]));
    return fnv_step(h, 0);
}

uint64_t policy_route_hash(const char *host, size_t hn, const char *prefix, size_t pn)
{
    uint64_t h = host_hash(host, hn);
    for (size_t i = 0; i < pn; i++)
        h = fnv_step(h, (unsigned char)prefix[i]);
    return h;
}

static const struct policy *route_probe(const struct policy_set *set, uint64_t h, bool any,
                                        const char *host, size_t hn, const char *path, size_t len)
{
    for (size_t i = h & set->mask;; i = (i + 1) & set->mask) {
        const struct policy *p = set->table[i].p;
        if (!p)
            return NULL;
        if (set->table[i].hash == h && p->host_any == any && p->prefix_len == len &&
            memcmp(p->prefix, path, len) == 0 &&
            (any || ascii_casecmp_n(p->host, p->host_len, host, hn) == 0))
            return p;
    }
}

/* Longest prefix of `path` registered under (host or "*"): the candidates are
 * the path itself and, at each "/", the prefix up to and including it and the
 * one just before it; their hashes come from one forward pass. */
static const struct policy *route_host(const struct policy_set *set, bool any, const char *host,
                                       size_t hn, const char *path, size_t len)
{
    uint64_t hs[2 * POLICY_MAX_PREFIX + 3];
    uint16_t ls[2 * POLICY_MAX_PREFIX + 3];
    size_t nc = 0, lim = len < set->max_prefix ? len : set->max_prefix;
    uint64_t h = any ? host_hash("*", 1) : host_hash(host, hn);

    for (size_t i = 0;; i++) {
        if (i < len && path[i] == '/' && i > 0) {
            hs[nc] = h;
            ls[nc++] = (uint16_t)i;
        }
        if (i == lim)
            break;
        h = fnv_step(h, (unsigned char)path[i]);
        if (path[i] == '/') {
            hs[nc] = h;
            ls[nc++] = (uint16_t)(i + 1);
        }
    }
    if (len <= set->max_prefix && (nc == 0 || ls[nc - 1] != len)) {
        hs[nc] = h;
        ls[nc++] = (uint16_t)len;
    }
    while (nc-- > 0) {
        const struct policy *p = route_probe(set, hs[nc], any, host, hn, path, ls[nc]);
        if (p)
            return p;
    }
    return NULL;
}

const struct policy *policy_route(const struct policy_set *set, const char *host, size_t host_len,
                                  const char *path, size_t path_len)
{
    const struct policy *p = NULL;

    if (!set || set->n == 0 || !path || path_len == 0)
        return NULL;
    if (set->has_exact && host && host_len > 0)
        p = route_host(set, false, host, host_len, path, path_len);
    if (!p)
        p = route_host(set, true, "*", 1, path, path_len);
    return p;
}

/* ---------------------------------------------------------------- accessors */

size_t policy_set_count(const struct policy_set *set)
{
    return set ? set->n : 0;
}

const struct policy *policy_set_at(const struct policy_set *set, size_t i)
{
    return set && i < set->n ? set->v[i] : NULL;
}

const char *policy_step(const struct policy *p)
{
    return p->step;
}
const char *policy_description(const struct policy *p)
{
    return p->description;
}
const char *policy_file(const struct policy *p)
{
    return p->file;
}
const char *policy_hash_hex(const struct policy *p)
{
    return p->hash;
}
const char *policy_host(const struct policy *p)
{
    return p->host;
}
const char *policy_path_prefix(const struct policy *p)
{
    return p->prefix;
}
const struct cfg_upstream *policy_upstream(const struct policy *p)
{
    return p->upstream;
}
const char *policy_service_account(const struct policy *p)
{
    return p->service_account;
}
bool policy_dry_run(const struct policy *p)
{
    return p->dry_run;
}
const struct policy_limits *policy_limits(const struct policy *p)
{
    return &p->limits;
}
size_t policy_caller_count(const struct policy *p)
{
    return p->n_callers;
}
size_t policy_rule_count(const struct policy *p)
{
    return p->n_rules;
}

const char *policy_caller_issuer(const struct policy *p, size_t i)
{
    return i < p->n_callers ? p->callers[i].issuer : NULL;
}

const char *policy_rule_path(const struct policy *p, size_t rule, size_t pattern)
{
    if (rule >= p->n_rules || pattern >= p->rules[rule].n_paths)
        return NULL;
    return p->rules[rule].paths[pattern].text;
}

/* The name of the policy's i-th require_headers entry, NULL past the end. */
size_t policy_header_count(const struct policy *p)
{
    return p->n_headers;
}

const char *policy_header_name(const struct policy *p, size_t i)
{
    return i < p->n_headers ? p->headers[i].name : NULL;
}

/* The first signed_url callers entry that accepts a link minted by `minter`,
 * or -1. */
static int signed_caller(const struct policy *p, const char *minter)
{
    for (size_t i = 0; i < p->n_callers; i++) {
        const struct caller *c = &p->callers[i];
        if (c->signed_url == SIGNED_ANY || (c->signed_url == SIGNED_MINTED_BY && minter &&
                                            signurl_minter_issuer_is(minter, c->minted_issuer)))
            return (int)i;
    }
    return -1;
}

static bool token_caller_matches(const struct caller *c, const char *issuer_name,
                                 const json_t *claims)
{
    return !c->signed_url && issuer_name && json_is_object(claims) &&
           strcmp(c->issuer, issuer_name) == 0 && pat_match(&c->claims, claims) &&
           missing_scope(c, claims) < 0;
}

enum reason policy_sign_check(const struct policy *p, const char *issuer_name, const json_t *claims,
                              const char *method, const char *path, size_t path_len, unsigned ttl_s)
{
    bool caller = false, rule = false, accepts = false;

    for (size_t i = 0; i < p->n_grants; i++) {
        const struct sign_grant *g = &p->grants[i];
        bool match = false;
        for (size_t k = 0; k < g->n_callers && !match; k++)
            match = token_caller_matches(&g->callers[k], issuer_name, claims);
        if (!match)
            continue;
        caller = true;
        if (!rule_method(&g->rule, method) || rule_path(&g->rule, path, path_len) < 0)
            continue;
        rule = true;
        if (ttl_s <= g->max_ttl_s)
            goto granted;
    }
    return !caller ? REASON_NO_CALLER_MATCH : !rule ? REASON_NO_RULE_MATCH : REASON_BAD_REQUEST;
granted:
    /* a link this step would refuse is not minted: some signed_url entry must
     * take it (minted_by: its claims are decided here, at mint time) */
    for (size_t i = 0; i < p->n_callers && !accepts; i++) {
        const struct caller *c = &p->callers[i];
        accepts = c->signed_url == SIGNED_ANY ||
                  (c->signed_url == SIGNED_MINTED_BY && issuer_name && json_is_object(claims) &&
                   strcmp(c->minted_issuer, issuer_name) == 0 &&
                   pat_match(&c->minted_claims, claims));
    }
    return accepts ? REASON_ALLOWED : REASON_NO_CALLER_MATCH;
}

size_t policy_sign_count(const struct policy *p)
{
    return p->n_grants;
}

bool policy_accepts_signed_urls(const struct policy *p)
{
    for (size_t i = 0; i < p->n_callers; i++)
        if (p->callers[i].signed_url)
            return true;
    return false;
}

enum reason policy_authorize(const struct policy *p, const struct policy_input *in,
                             struct policy_trace *t)
{
    return authorize(p, in, false, NULL, t);
}

enum reason policy_authorize_link(const struct policy *p, const struct policy_input *in,
                                  const char *minter, struct policy_trace *t)
{
    return authorize(p, in, true, minter, t);
}

bool policy_header_matched(const struct policy *p, size_t i, const struct policy_input *in,
                           const char **value, size_t *len)
{
    const char *v = NULL;
    size_t vn = 0;
    int count;

    if (i >= p->n_headers || !in->header)
        return false;
    count = in->header(in->header_ctx, p->headers[i].name, &v, &vn);
    if (count != 1 || !v || !policy_glob_match(p->headers[i].glob, p->headers[i].glob_len, v, vn))
        return false;
    *value = v;
    *len = vn;
    return true;
}
