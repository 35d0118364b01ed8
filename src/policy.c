/*
 * policy.c: step policies: strict loading, compilation, routing, authorization
 * and the explanation of a decision (rules in policy.h).
 *
 * Loading is table-driven and reports every problem of every file at
 * file:line:column (jansson keeps no positions, so jsonpos maps each JSON
 * pointer back to the text). A loaded policy is compiled into plain arrays:
 * claims patterns as a tree of typed nodes, path patterns as segment arrays,
 * methods and headers as strings, and the route table as an open-addressing
 * hash of (lower-case host, path_prefix). The request path then walks those
 * arrays and compares bytes; it never parses, allocates or locks, so one set is
 * shared read-only by every worker and replaced whole on reload.
 */
#include "policy.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "http1.h"
#include "jsonpos.h"
#include "log.h"
#include "path.h"
#include "signurl.h"
#include "util.h"

/* ---------------------------------------------------------------- compiled */

enum pat_type { PT_STR, PT_GLOB, PT_INT, PT_REAL, PT_BOOL, PT_OBJ, PT_ANY };

struct pat_member;

/* One claims pattern value. */
struct pat {
    enum pat_type type;
    int line, col; /* of this value in the policy file */
    union {
        struct {
            char *s; /* owned */
            size_t len;
        } str; /* PT_STR, PT_GLOB */
        json_int_t i;
        double d;
        bool b;
        struct {
            struct pat_member *m; /* owned */
            size_t n;
        } obj;
        struct {
            struct pat *v; /* owned */
            size_t n;
        } any;
    } u;
};

struct pat_member {
    char *key; /* owned */
    struct pat value;
};

struct caller {
    char *issuer; /* owned config issuer name */
    struct pat claims; /* PT_OBJ */
    char **scopes;     /* owned */
    size_t n_scopes;
    int line, col;
    int scopes_line, scopes_col;
    /* signed URLs: SIGNED_NONE (a token caller, the fields above), else an
     * entry {"signed_url": true | {"minted_by": {"issuer", "claims"}}} */
    int signed_url;
    char *minted_issuer;      /* owned; SIGNED_MINTED_BY */
    struct pat minted_claims; /* PT_OBJ; SIGNED_MINTED_BY */
};

enum { SIGNED_NONE, SIGNED_ANY, SIGNED_MINTED_BY };

enum seg_kind { SEG_LIT, SEG_STAR, SEG_DSTAR };

struct seg {
    enum seg_kind kind;
    const char *s; /* slice of the owning path_pat's text */
    size_t len;
};

struct path_pat {
    char *text; /* owned */
    struct seg *segs; /* owned */
    size_t n;
};

struct rule {
    char **methods; /* owned */
    size_t n_methods;
    struct path_pat *paths; /* owned */
    size_t n_paths;
    int line, col;
};

struct req_header {
    char *name; /* owned, as written */
    char *glob; /* owned */
    size_t glob_len;
    int line, col;
};

struct policy {
    char *file; /* owned */
    char hash[65];
    char *step;
    char *description; /* owned, "" when absent */
    bool dry_run;
    char *host; /* owned, lower case, or "*" */
    size_t host_len;
    bool host_any;
    char *prefix; /* owned */
    size_t prefix_len;
    const struct cfg_upstream *upstream; /* borrowed from the config */
    char *service_account;               /* owned or NULL */
    struct policy_limits limits;
    struct caller *callers;
    size_t n_callers;
    struct rule *rules;
    size_t n_rules;
    struct req_header *headers;
    size_t n_headers;
    /* positions for cross-file errors */
    int step_line, step_col, route_line, route_col;
    struct sign_grant *grants; /* "sign" (signed URLs this step lets callers mint) */
    size_t n_grants;
};

struct route_slot {
    uint64_t hash;
    const struct policy *p; /* NULL: empty slot */
};

struct policy_set {
    struct policy **v; /* owned, route precedence order */
    size_t n;
    struct route_slot *table; /* owned, power-of-two size */
    size_t mask;
    size_t max_prefix; /* longest path_prefix, bytes */
    bool has_exact;    /* some policy names an exact host */
};

/* One "sign" entry: who may mint links for which methods and paths. */
struct sign_grant {
    struct caller *callers; /* owned; token callers only */
    size_t n_callers;
    struct rule rule;       /* methods and paths, as an allow rule */
    unsigned max_ttl_s;
    int line, col;
};

/* ---------------------------------------------------------------- matching */

/* `*` matches any run of bytes, including none; everything else itself.
 * Iterative with one backtrack point: O(pn * sn) at worst, no recursion. */
static bool glob_match(const char *p, size_t pn, const char *s, size_t sn)
{
    size_t pi = 0, si = 0, star = (size_t)-1, mark = 0;

    while (si < sn) {
        if (pi < pn && p[pi] == '*') {
            star = pi++;
            mark = si;
        } else if (pi < pn && p[pi] == s[si]) {
            pi++;
            si++;
        } else if (star != (size_t)-1) {
            pi = star + 1;
            si = ++mark;
        } else {
            return false;
        }
    }
    while (pi < pn && p[pi] == '*')
        pi++;
    return pi == pn;
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
        return json_is_string(v) &&
               glob_match(p->u.str.s, p->u.str.len, json_string_value(v), json_string_length(v));
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

    *match = count == 1 && v && glob_match(h->glob, h->glob_len, v, vn);
    return count;
}

/* ---------------------------------------------------------------- trace */

static void trace_reset(struct policy_trace *t)
{
    memset(t, 0, sizeof(*t));
    t->caller_index = t->rule_index = t->pattern_index = -1;
}

static void bufcat(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
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

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a real";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "?";
}

static const char *pat_kind(const struct pat *p)
{
    switch (p->type) {
    case PT_STR:
    case PT_GLOB:
        return "a string";
    case PT_INT:
        return "an integer";
    case PT_REAL:
        return "a real";
    case PT_BOOL:
        return "a boolean";
    case PT_OBJ:
        return "an object";
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
        bufcat(buf, cap, "%s", json_kind(v));
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
    if (strcmp(json_kind(v), pat_kind(p)) != 0) {
        bufcat(cd->detail, sizeof(cd->detail), "expected %s ", pat_kind(p));
        bufcat_pat(cd->detail, sizeof(cd->detail), p);
        bufcat(cd->detail, sizeof(cd->detail), ", got %s", json_kind(v));
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
        snprintf(t->miss_detail, sizeof(t->miss_detail), "no callers entry is for issuer \"%s\"; entries are for",
                 in->issuer_name ? in->issuer_name : "");
        for (size_t i = 0; i < p->n_callers; i++)
            bufcat(t->miss_detail, sizeof(t->miss_detail), "%s \"%s\"", i ? "," : "", p->callers[i].issuer);
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
    static const char *const schemes[] = {"bearer ", "basic ", "digest ", "negotiate ",
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

static uint64_t route_hash(const char *host, size_t hn, const char *prefix, size_t pn)
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

const struct policy *policy_route(const struct policy_set *set, const char *host,
                                  size_t host_len, const char *path, size_t path_len)
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
    return http1_token((const char *)&c, 1);
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
                    *c = (char)lower((unsigned char)*c);
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
        uint64_t h = route_hash(p->host, p->host_len, p->prefix, p->prefix_len);
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

/* ---------------------------------------------------------------- accessors */

size_t policy_set_count(const struct policy_set *set)
{
    return set ? set->n : 0;
}

const struct policy *policy_set_at(const struct policy_set *set, size_t i)
{
    return set && i < set->n ? set->v[i] : NULL;
}

const char *policy_step(const struct policy *p) { return p->step; }
const char *policy_description(const struct policy *p) { return p->description; }
const char *policy_file(const struct policy *p) { return p->file; }
const char *policy_hash_hex(const struct policy *p) { return p->hash; }
const char *policy_host(const struct policy *p) { return p->host; }
const char *policy_path_prefix(const struct policy *p) { return p->prefix; }
const struct cfg_upstream *policy_upstream(const struct policy *p) { return p->upstream; }
const char *policy_service_account(const struct policy *p) { return p->service_account; }
bool policy_dry_run(const struct policy *p) { return p->dry_run; }
const struct policy_limits *policy_limits(const struct policy *p) { return &p->limits; }
size_t policy_caller_count(const struct policy *p) { return p->n_callers; }
size_t policy_rule_count(const struct policy *p) { return p->n_rules; }

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

/* The first signed_url callers entry that accepts a link minted by `minter`,
 * or -1. */
static int signed_caller(const struct policy *p, const char *minter)
{
    for (size_t i = 0; i < p->n_callers; i++) {
        const struct caller *c = &p->callers[i];
        if (c->signed_url == SIGNED_ANY ||
            (c->signed_url == SIGNED_MINTED_BY && minter &&
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

enum reason policy_sign_check(const struct policy *p, const char *issuer_name,
                              const json_t *claims, const char *method, const char *path,
                              size_t path_len, unsigned ttl_s)
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
    if (count != 1 || !v || !glob_match(p->headers[i].glob, p->headers[i].glob_len, v, vn))
        return false;
    *value = v;
    *len = vn;
    return true;
}
