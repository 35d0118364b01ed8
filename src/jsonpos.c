/*
 * jsonpos.c: a small validating JSON scanner that maps paths to line:column
 * and finds repeated member names (see jsonpos.h for what a position means).
 *
 * One recursive-descent scanner serves both entry points. It works on a byte
 * range with an explicit index: every read is preceded by a bounds check, the
 * recursion depth is capped, and the first malformed byte stops it with the
 * offset recorded. It decodes strings only where it must compare them (member
 * names), into a buf (buf.h).
 */
#include "jsonpos.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "util.h"

struct keyrec {
    size_t obj; /* which object (numbered in document order) */
    size_t off; /* offset of the opening quote */
    char *name; /* owned, decoded */
    size_t name_len;
};

struct scanner {
    const char *s;
    size_t len, i;
    int max_depth, depth, deepest;
    enum jsonpos_status st;
    size_t err; /* offset of the first offending byte */
    /* member-name recording, for jsonpos_scan only */
    bool record;
    size_t next_obj;
    struct keyrec *keys;
    size_t n_keys, cap_keys;
    struct buf tmp; /* the member name being decoded (no cap) */
};

static int fail(struct scanner *sc, enum jsonpos_status st, size_t off)
{
    if (sc->st == JSONPOS_OK) {
        sc->st = st;
        sc->err = off < sc->len ? off : sc->len;
    }
    return -1;
}

static void skip_ws(struct scanner *sc)
{
    while (sc->i < sc->len) {
        char c = sc->s[sc->i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        sc->i++;
    }
}

/* Four hex digits at `at`; -1 when short or not hex. */
static long hex4(const struct scanner *sc, size_t at)
{
    long v = 0;
    if (at > sc->len || sc->len - at < 4)
        return -1;
    for (size_t k = 0; k < 4; k++) {
        int h = hex_value((unsigned char)sc->s[at + k]);
        if (h < 0)
            return -1;
        v = v * 16 + h;
    }
    return v;
}

static void put_utf8(struct buf *b, unsigned long cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        u[0] = (char)(0xF0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    buf_add(b, u, n);
}

/*
 * A string at sc->i (which holds '"'). With `dec`, its decoded bytes replace
 * dec's contents. Lone surrogates are malformed, as jansson has them.
 */
static int scan_string(struct scanner *sc, struct buf *dec)
{
    if (dec)
        buf_truncate(dec, 0);
    sc->i++; /* opening quote */
    for (;;) {
        size_t run = sc->i;
        /* copy a run of plain bytes at once */
        while (sc->i < sc->len) {
            unsigned char c = (unsigned char)sc->s[sc->i];
            if (c == '"' || c == '\\' || c < 0x20)
                break;
            sc->i++;
        }
        if (dec && sc->i > run)
            buf_add(dec, sc->s + run, sc->i - run);
        if (sc->i >= sc->len)
            return fail(sc, JSONPOS_MALFORMED, sc->len);
        unsigned char c = (unsigned char)sc->s[sc->i];
        if (c == '"') {
            sc->i++;
            return 0;
        }
        if (c < 0x20)
            return fail(sc, JSONPOS_MALFORMED, sc->i);
        /* backslash */
        size_t esc = sc->i;
        if (sc->i + 1 >= sc->len)
            return fail(sc, JSONPOS_MALFORMED, sc->len);
        char e = sc->s[sc->i + 1];
        const char *simple = NULL;
        switch (e) {
        case '"':
            simple = "\"";
            break;
        case '\\':
            simple = "\\";
            break;
        case '/':
            simple = "/";
            break;
        case 'b':
            simple = "\b";
            break;
        case 'f':
            simple = "\f";
            break;
        case 'n':
            simple = "\n";
            break;
        case 'r':
            simple = "\r";
            break;
        case 't':
            simple = "\t";
            break;
        case 'u':
            break;
        default:
            return fail(sc, JSONPOS_MALFORMED, esc);
        }
        if (simple) {
            if (dec)
                buf_add(dec, simple, 1);
            sc->i += 2;
            continue;
        }
        long cp = hex4(sc, sc->i + 2);
        if (cp < 0)
            return fail(sc, JSONPOS_MALFORMED, esc);
        sc->i += 6;
        if (cp >= 0xDC00 && cp <= 0xDFFF)
            return fail(sc, JSONPOS_MALFORMED, esc);
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            long lo = -1;
            if (sc->i + 1 < sc->len && sc->s[sc->i] == '\\' && sc->s[sc->i + 1] == 'u')
                lo = hex4(sc, sc->i + 2);
            if (lo < 0xDC00 || lo > 0xDFFF)
                return fail(sc, JSONPOS_MALFORMED, esc);
            sc->i += 6;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        if (dec)
            put_utf8(dec, (unsigned long)cp);
    }
}

static bool is_digit_at(const struct scanner *sc, size_t at)
{
    return at < sc->len && sc->s[at] >= '0' && sc->s[at] <= '9';
}

/* RFC 8259 number: -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)? */
static int scan_number(struct scanner *sc)
{
    if (sc->s[sc->i] == '-')
        sc->i++;
    if (!is_digit_at(sc, sc->i))
        return fail(sc, JSONPOS_MALFORMED, sc->i);
    if (sc->s[sc->i] == '0')
        sc->i++;
    else
        while (is_digit_at(sc, sc->i))
            sc->i++;
    if (sc->i < sc->len && sc->s[sc->i] == '.') {
        sc->i++;
        if (!is_digit_at(sc, sc->i))
            return fail(sc, JSONPOS_MALFORMED, sc->i);
        while (is_digit_at(sc, sc->i))
            sc->i++;
    }
    if (sc->i < sc->len && (sc->s[sc->i] == 'e' || sc->s[sc->i] == 'E')) {
        sc->i++;
        if (sc->i < sc->len && (sc->s[sc->i] == '+' || sc->s[sc->i] == '-'))
            sc->i++;
        if (!is_digit_at(sc, sc->i))
            return fail(sc, JSONPOS_MALFORMED, sc->i);
        while (is_digit_at(sc, sc->i))
            sc->i++;
    }
    return 0;
}

static int scan_literal(struct scanner *sc, const char *word)
{
    size_t n = strlen(word);
    if (sc->len - sc->i < n || memcmp(sc->s + sc->i, word, n) != 0)
        return fail(sc, JSONPOS_MALFORMED, sc->i);
    sc->i += n;
    return 0;
}

static int scan_value(struct scanner *sc);

static void record_key(struct scanner *sc, size_t obj, size_t off)
{
    if (sc->n_keys == sc->cap_keys) {
        sc->cap_keys = sc->cap_keys ? sc->cap_keys * 2 : 32;
        sc->keys = xrealloc(sc->keys, sc->cap_keys * sizeof(*sc->keys));
    }
    struct keyrec *k = &sc->keys[sc->n_keys++];
    k->obj = obj;
    k->off = off;
    k->name = xstrndup(buf_str(&sc->tmp), sc->tmp.len);
    k->name_len = sc->tmp.len;
}

static int enter(struct scanner *sc)
{
    if (sc->depth >= sc->max_depth)
        return fail(sc, JSONPOS_TOO_DEEP, sc->i);
    sc->depth++;
    if (sc->depth > sc->deepest)
        sc->deepest = sc->depth;
    sc->i++; /* the bracket */
    skip_ws(sc);
    return 0;
}

/* After a member or an element: 1 past a comma (another follows), 0 at the
 * closing bracket, -1 (failed) at anything else. */
static int next_item(struct scanner *sc, char closer)
{
    skip_ws(sc);
    if (sc->i < sc->len && sc->s[sc->i] == ',') {
        sc->i++;
        skip_ws(sc);
        return 1;
    }
    if (sc->i < sc->len && sc->s[sc->i] == closer)
        return 0;
    return fail(sc, JSONPOS_MALFORMED, sc->i);
}

/* Past the closing bracket, one level up. */
static int leave(struct scanner *sc)
{
    sc->i++;
    sc->depth--;
    return 0;
}

static int scan_object(struct scanner *sc)
{
    size_t obj = sc->next_obj++;
    if (enter(sc) < 0)
        return -1;
    if (sc->i < sc->len && sc->s[sc->i] == '}')
        return leave(sc);
    for (;;) {
        int more;
        if (sc->i >= sc->len || sc->s[sc->i] != '"')
            return fail(sc, JSONPOS_MALFORMED, sc->i);
        size_t koff = sc->i;
        if (scan_string(sc, sc->record ? &sc->tmp : NULL) < 0)
            return -1;
        if (sc->record)
            record_key(sc, obj, koff);
        skip_ws(sc);
        if (sc->i >= sc->len || sc->s[sc->i] != ':')
            return fail(sc, JSONPOS_MALFORMED, sc->i);
        sc->i++;
        skip_ws(sc);
        if (scan_value(sc) < 0 || (more = next_item(sc, '}')) < 0)
            return -1;
        if (!more)
            break;
    }
    return leave(sc);
}

static int scan_array(struct scanner *sc)
{
    if (enter(sc) < 0)
        return -1;
    if (sc->i < sc->len && sc->s[sc->i] == ']')
        return leave(sc);
    for (;;) {
        int more;
        if (scan_value(sc) < 0 || (more = next_item(sc, ']')) < 0)
            return -1;
        if (!more)
            break;
    }
    return leave(sc);
}

/* One value starting exactly at sc->i (no leading whitespace). */
static int scan_value(struct scanner *sc)
{
    if (sc->i >= sc->len)
        return fail(sc, JSONPOS_MALFORMED, sc->len);
    switch (sc->s[sc->i]) {
    case '{':
        return scan_object(sc);
    case '[':
        return scan_array(sc);
    case '"':
        return scan_string(sc, NULL);
    case 't':
        return scan_literal(sc, "true");
    case 'f':
        return scan_literal(sc, "false");
    case 'n':
        return scan_literal(sc, "null");
    case '-':
        return scan_number(sc);
    default:
        if (sc->s[sc->i] >= '0' && sc->s[sc->i] <= '9')
            return scan_number(sc);
        return fail(sc, JSONPOS_MALFORMED, sc->i);
    }
}

static void scanner_init(struct scanner *sc, const char *text, size_t len, int max_depth)
{
    memset(sc, 0, sizeof(*sc));
    sc->s = text;
    sc->len = text ? len : 0;
    if (max_depth < 0)
        max_depth = 0;
    sc->max_depth = max_depth > JSONPOS_MAX_DEPTH ? JSONPOS_MAX_DEPTH : max_depth;
    sc->st = JSONPOS_OK;
}

static void scanner_free(struct scanner *sc)
{
    for (size_t k = 0; k < sc->n_keys; k++)
        free(sc->keys[k].name);
    free(sc->keys);
    buf_free(&sc->tmp);
}

struct jsonpos jsonpos_at(const char *text, size_t len, size_t offset)
{
    struct jsonpos p = {0, 1, 1};
    if (!text)
        len = 0;
    if (offset > len)
        offset = len;
    for (size_t k = 0; k < offset; k++) {
        unsigned char c = (unsigned char)text[k];
        if (c == '\n') {
            p.line++;
            p.col = 1;
        } else if (c < 0x80 || c > 0xBF) {
            p.col++;
        }
    }
    p.offset = offset;
    return p;
}

/* Fills line/col of every `*ps` from its offset in one pass over the text. */
static int cmp_pos_ptr(const void *a, const void *b)
{
    size_t x = (*(struct jsonpos *const *)a)->offset, y = (*(struct jsonpos *const *)b)->offset;
    return x < y ? -1 : x > y;
}

static void fill_positions(const char *text, size_t len, struct jsonpos **ps, size_t n)
{
    size_t k = 0;
    int line = 1, col = 1;
    qsort(ps, n, sizeof(*ps), cmp_pos_ptr);
    for (size_t at = 0; k < n; at++) {
        while (k < n && ps[k]->offset == at) {
            ps[k]->line = line;
            ps[k]->col = col;
            k++;
        }
        if (at >= len)
            break;
        unsigned char c = (unsigned char)text[at];
        if (c == '\n') {
            line++;
            col = 1;
        } else if (c < 0x80 || c > 0xBF) {
            col++;
        }
    }
    for (; k < n; k++) { /* offsets past the end cannot occur; stay defined */
        ps[k]->line = line;
        ps[k]->col = col;
    }
}

static int cmp_keyrec(const void *a, const void *b)
{
    const struct keyrec *x = a, *y = b;
    if (x->obj != y->obj)
        return x->obj < y->obj ? -1 : 1;
    if (x->name_len != y->name_len)
        return x->name_len < y->name_len ? -1 : 1;
    int c = memcmp(x->name, y->name, x->name_len);
    if (c)
        return c;
    return x->off < y->off ? -1 : x->off > y->off;
}

static int cmp_dup(const void *a, const void *b)
{
    size_t x = ((const struct jsonpos_dup *)a)->at.offset;
    size_t y = ((const struct jsonpos_dup *)b)->at.offset;
    return x < y ? -1 : x > y;
}

static bool same_name(const struct keyrec *a, const struct keyrec *b)
{
    return a->obj == b->obj && a->name_len == b->name_len &&
           memcmp(a->name, b->name, a->name_len) == 0;
}

static void collect_dups(struct scanner *sc, struct jsonpos_scan *out)
{
    struct jsonpos **ps = NULL;
    size_t count = 0, first = 0, np = 0;

    if (sc->n_keys < 2)
        return;
    /* sorted by (object, name, offset): each run of equal names starts with
     * the first occurrence; count the repeats, then fill one allocation (a
     * file may repeat a name a hundred thousand times) */
    qsort(sc->keys, sc->n_keys, sizeof(*sc->keys), cmp_keyrec);
    for (size_t k = 1; k < sc->n_keys; k++)
        count += same_name(&sc->keys[k - 1], &sc->keys[k]);
    if (!count)
        return;
    out->dups = xcalloc(count, sizeof(*out->dups));
    for (size_t k = 1; k < sc->n_keys; k++) {
        const struct keyrec *a = &sc->keys[first], *b = &sc->keys[k];
        if (!same_name(a, b)) {
            first = k;
            continue;
        }
        struct jsonpos_dup *d = &out->dups[out->n_dups++];
        d->name = xstrndup(b->name, b->name_len);
        d->name_len = b->name_len;
        d->at.offset = b->off;
        d->first.offset = a->off;
    }
    qsort(out->dups, out->n_dups, sizeof(*out->dups), cmp_dup);
    ps = xmalloc(2 * out->n_dups * sizeof(*ps));
    for (size_t k = 0; k < out->n_dups; k++) {
        ps[np++] = &out->dups[k].at;
        ps[np++] = &out->dups[k].first;
    }
    fill_positions(sc->s, sc->len, ps, np);
    free(ps);
}

void jsonpos_scan(const char *text, size_t len, int max_depth, struct jsonpos_scan *out)
{
    struct scanner sc;

    memset(out, 0, sizeof(*out));
    scanner_init(&sc, text, len, max_depth);
    sc.record = true;
    skip_ws(&sc);
    if (scan_value(&sc) == 0) {
        skip_ws(&sc);
        if (sc.i != sc.len)
            fail(&sc, JSONPOS_MALFORMED, sc.i);
    }
    out->status = sc.st;
    out->depth = sc.deepest;
    if (sc.st != JSONPOS_OK)
        out->where = jsonpos_at(sc.s, sc.len, sc.err);
    collect_dups(&sc, out);
    scanner_free(&sc);
}

void jsonpos_scan_free(struct jsonpos_scan *s)
{
    for (size_t k = 0; k < s->n_dups; k++)
        free(s->dups[k].name);
    free(s->dups);
    s->dups = NULL;
    s->n_dups = 0;
}

char *jsonpos_segment(const char *name, size_t len)
{
    struct buf b = {0};

    for (size_t k = 0; k < len; k++) {
        if (name[k] == '~')
            buf_addlit(&b, "~0");
        else if (name[k] == '/')
            buf_addlit(&b, "~1");
        else
            buf_add(&b, name + k, 1);
    }
    return buf_take(&b, NULL);
}

/* Unescapes one pointer segment [p, end) into `seg`; -1 on a bad `~`. */
static int unescape_segment(const char *p, const char *end, struct buf *seg)
{
    buf_truncate(seg, 0);
    for (; p < end; p++) {
        if (*p != '~') {
            buf_add(seg, p, 1);
            continue;
        }
        if (p + 1 >= end || (p[1] != '0' && p[1] != '1'))
            return -1;
        buf_add(seg, p[1] == '0' ? "~" : "/", 1);
        p++;
    }
    return 0;
}

/* A decimal array index without sign or leading zero; -1 otherwise. */
static long long parse_index(const struct buf *seg)
{
    long long v = 0;
    if (seg->len == 0 || seg->len > 15 || (seg->len > 1 && seg->p[0] == '0'))
        return -1;
    for (size_t k = 0; k < seg->len; k++) {
        if (seg->p[k] < '0' || seg->p[k] > '9')
            return -1;
        v = v * 10 + (seg->p[k] - '0');
    }
    return v;
}

/* In the object at sc->i, the last member named `seg`: its name and value offsets. */
static int find_member(struct scanner *sc, const struct buf *seg, size_t *key_off, size_t *val_off)
{
    bool found = false;
    if (enter(sc) < 0)
        return -1;
    if (sc->i < sc->len && sc->s[sc->i] == '}')
        return -1;
    for (;;) {
        if (sc->i >= sc->len || sc->s[sc->i] != '"')
            return -1;
        size_t koff = sc->i;
        if (scan_string(sc, &sc->tmp) < 0)
            return -1;
        bool match = sc->tmp.len == seg->len &&
                     memcmp(buf_str(&sc->tmp), buf_str(seg), seg->len) == 0;
        skip_ws(sc);
        if (sc->i >= sc->len || sc->s[sc->i] != ':')
            return -1;
        sc->i++;
        skip_ws(sc);
        if (match) {
            found = true;
            *key_off = koff;
            *val_off = sc->i;
        }
        if (scan_value(sc) < 0)
            return -1;
        skip_ws(sc);
        if (sc->i < sc->len && sc->s[sc->i] == ',') {
            sc->i++;
            skip_ws(sc);
            continue;
        }
        if (sc->i < sc->len && sc->s[sc->i] == '}')
            break;
        return -1;
    }
    return found ? 0 : -1;
}

/* In the array at sc->i, element `idx`: leaves sc->i on it. */
static int find_element(struct scanner *sc, long long idx)
{
    if (enter(sc) < 0)
        return -1;
    if (sc->i < sc->len && sc->s[sc->i] == ']')
        return -1;
    for (long long k = 0;; k++) {
        if (k == idx)
            return sc->i < sc->len ? 0 : -1;
        if (scan_value(sc) < 0)
            return -1;
        skip_ws(sc);
        if (sc->i >= sc->len || sc->s[sc->i] != ',')
            return -1; /* `]` (too few elements) or malformed */
        sc->i++;
        skip_ws(sc);
    }
}

int jsonpos_find(const char *text, size_t len, const char *path, bool want_key, struct jsonpos *out)
{
    struct scanner sc;
    struct buf seg = {0};
    size_t key_off = SIZE_MAX;
    int rc = -1;

    scanner_init(&sc, text, len, JSONPOS_MAX_DEPTH);
    if (!path)
        goto out;
    skip_ws(&sc);
    if (sc.i >= sc.len)
        goto out;
    bool rooted = path[0] == '/'; /* the RFC 6901 form: "/" is the member named "" */
    if (*path || rooted) {
        const char *p = path + rooted;
        for (;;) {
            const char *end = strchr(p, '/');
            if (!end)
                end = p + strlen(p);
            if (unescape_segment(p, end, &seg) < 0)
                goto out;
            key_off = SIZE_MAX;
            if (sc.i >= sc.len)
                goto out;
            if (sc.s[sc.i] == '{') {
                size_t voff = 0; /* set by find_member on success */
                if (find_member(&sc, &seg, &key_off, &voff) < 0)
                    goto out;
                sc.i = voff;
            } else if (sc.s[sc.i] == '[') {
                long long idx = parse_index(&seg);
                if (idx < 0 || find_element(&sc, idx) < 0)
                    goto out;
            } else {
                goto out;
            }
            if (*end == '\0')
                break;
            p = end + 1;
        }
    }
    /* the target itself must at least start like a value */
    if (sc.i >= sc.len || !memchr("{[\"tfn-0123456789", sc.s[sc.i], 17))
        goto out;
    *out = jsonpos_at(sc.s, sc.len, want_key && key_off != SIZE_MAX ? key_off : sc.i);
    rc = 0;
out:
    buf_free(&seg);
    scanner_free(&sc);
    return rc;
}
