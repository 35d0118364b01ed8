/*
 * readme_tables.h: holds a README key table to the loader's tables (jload.h),
 * for test_config.c ("Main configuration") and test_policy.c ("Policy keys",
 * "Shared limits on Redis"). Header-only, like tap.h, so that each suite
 * counts its own assertions.
 *
 * A README row is "| `key` [/ `key2` ...] [*ext.*] | type | default | range |";
 * a second key without a dot takes the first one's prefix
 * ("`issuers[].refresh_min_s` / `refresh_max_s`"), and a default or range
 * cell split by " / " into as many parts gives each key its own. Checked:
 *   - every key of the tables has a row, or is a container whose members
 *     have rows, or is named ("leaf") in its parent's row
 *     (`audit.witness`: {"dir": PATH});
 *   - every row names a key of the tables (an array row `issuers[]` names
 *     `issuers`);
 *   - integers: the default is in the default cell (a 0 default of a key
 *     whose range starts above 0 means "unset" and is not looked for), and
 *     "min..max" (2^N for powers of two from 2^32) is in the range cell;
 *   - booleans: "true" or "false" in the default cell; choices: the default
 *     choice quoted in the default cell, every choice quoted in a cell;
 *     strings and paths with a default: the default in the default cell.
 * Each disagreement is one line appended to the report; the count is returned.
 */
#ifndef BATON_README_TABLES_H
#define BATON_README_TABLES_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jload.h"
#include "util.h"

#define README_MAX_KEYS 4

struct readme_row {
    char *key[README_MAX_KEYS]; /* owned, full names */
    char *def[README_MAX_KEYS]; /* owned: the default cell (its part for this key) */
    char *range[README_MAX_KEYS];
    char *all; /* owned: the whole row */
    int n;
};

static inline char *readme_trim(const char *s, size_t n)
{
    while (n && (*s == ' ' || *s == '\t')) {
        s++;
        n--;
    }
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    return xstrndup(s, n);
}

/* Splits `cell` on " / " into exactly `n` parts, or gives each key the whole cell. */
static inline void readme_split(const char *cell, int n, char **out)
{
    int parts = 1;
    for (const char *q = cell; (q = strstr(q, " / ")); q += 3)
        parts++;
    if (parts != n) {
        for (int k = 0; k < n; k++)
            out[k] = xstrdup(cell);
        return;
    }
    for (int k = 0; k < n; k++) {
        const char *e = strstr(cell, " / ");
        size_t len = e ? (size_t)(e - cell) : strlen(cell);
        out[k] = readme_trim(cell, len);
        cell = e ? e + 3 : cell + len;
    }
}

/* Parses the rows starting with "| `" between `start` (a heading line) and
 * the next heading of level 2; the rows array is owned (free with readme_free). */
static inline size_t readme_rows(const char *readme, const char *start, struct readme_row **out)
{
    const char *sec = strstr(readme, start), *end, *line;
    struct readme_row *rows = NULL;
    size_t n = 0;

    *out = NULL;
    if (!sec)
        return 0;
    sec += strlen(start);
    end = strstr(sec, "\n## ");
    if (!end)
        end = sec + strlen(sec);
    for (line = sec; line && line < end; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
        const char *eol = strchr(line, '\n');
        char *cells[5] = {0}, *text, *p;
        struct readme_row r;
        int nc = 0;

        if (strncmp(line, "| `", 3) != 0)
            continue;
        text = xstrndup(line, eol ? (size_t)(eol - line) : strlen(line));
        memset(&r, 0, sizeof(r));
        r.all = xstrdup(text);
        p = text + 1;
        while (nc < 5 && *p) {
            char *bar = strchr(p, '|');
            size_t len = bar ? (size_t)(bar - p) : strlen(p);
            cells[nc++] = readme_trim(p, len);
            if (!bar)
                break;
            p = bar + 1;
        }
        /* keys: every `name` of the first cell */
        for (char *q = cells[0]; q && (q = strchr(q, '`')) && r.n < README_MAX_KEYS;) {
            char *e = strchr(q + 1, '`');
            char *name;
            if (!e)
                break;
            name = xstrndup(q + 1, (size_t)(e - q - 1));
            if (r.n > 0 && !strchr(name, '.')) {
                const char *first = r.key[0], *dot = strrchr(first, '.');
                if (dot) {
                    char *full = xasprintf("%.*s%s", (int)(dot - first + 1), first, name);
                    free(name);
                    name = full;
                }
            }
            r.key[r.n++] = name;
            q = e + 1;
        }
        if (nc >= 4 && r.n > 0) {
            readme_split(cells[2], r.n, r.def);
            readme_split(cells[3], r.n, r.range);
            rows = xrealloc(rows, (n + 1) * sizeof(*rows));
            rows[n++] = r;
        } else {
            for (int k = 0; k < r.n; k++)
                free(r.key[k]);
            free(r.all);
        }
        for (int k = 0; k < nc; k++)
            free(cells[k]);
        free(text);
        if (!eol)
            break;
    }
    *out = rows;
    return n;
}

static inline void readme_free(struct readme_row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        for (int k = 0; k < rows[i].n; k++) {
            free(rows[i].key[k]);
            free(rows[i].def[k]);
            free(rows[i].range[k]);
        }
        free(rows[i].all);
    }
    free(rows);
}

/* The row and key index naming `name`, or NULL. */
static inline const struct readme_row *readme_find(const struct readme_row *rows, size_t n,
                                                   const char *name, int *which)
{
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < rows[i].n; k++)
            if (!strcmp(rows[i].key[k], name)) {
                *which = k;
                return &rows[i];
            }
    return NULL;
}

/* `num` in `cell` as a whole number (no digit on either side). */
static inline int readme_has_number(const char *cell, const char *num)
{
    size_t n = strlen(num);
    for (const char *q = cell; (q = strstr(q, num)); q++) {
        int before = q > cell && q[-1] >= '0' && q[-1] <= '9';
        int after = q[n] >= '0' && q[n] <= '9';
        if (!before && !after)
            return 1;
    }
    return 0;
}

static inline void readme_number(long long v, char *out, size_t cap)
{
    if (v >= (1LL << 32) && (v & (v - 1)) == 0) {
        int bits = 0;
        while ((1LL << bits) != v)
            bits++;
        snprintf(out, cap, "2^%d", bits);
    } else {
        snprintf(out, cap, "%lld", v);
    }
}

static inline void readme_note(char **report, const char *fmt, const char *a, const char *b)
    __attribute__((format(printf, 2, 0)));
static inline void readme_note(char **report, const char *fmt, const char *a, const char *b)
{
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    char *line = xasprintf(fmt, a, b);
#pragma GCC diagnostic pop
    char *next = xasprintf("%s%s\n", *report ? *report : "", line);
    free(line);
    free(*report);
    *report = next;
}

static inline int readme_documented(const struct readme_row *rows, size_t n, const char *name)
{
    int which;
    size_t len = strlen(name);
    const char *dot;
    if (readme_find(rows, n, name, &which))
        return 1;
    for (size_t i = 0; i < n; i++) /* a container whose members have rows */
        for (int k = 0; k < rows[i].n; k++)
            if (!strncmp(rows[i].key[k], name, len) &&
                (rows[i].key[k][len] == '.' || rows[i].key[k][len] == '['))
                return 1;
    dot = strrchr(name, '.');
    if (dot) { /* named in its parent's row */
        char *parent = xstrndup(name, (size_t)(dot - name));
        char *quoted = xasprintf("\"%s\"", dot + 1);
        const struct readme_row *r = readme_find(rows, n, parent, &which);
        int found = r && strstr(r->all, quoted) != NULL;
        free(parent);
        free(quoted);
        return found;
    }
    return 0;
}

/*
 * Compares the rows of README text `readme` under heading `start` with
 * tables `t` (n_t of them). `only_prefix`: when not NULL, only keys and rows
 * starting with it are compared (a section that documents some keys beside
 * other tables), and a key without a row is not an error. Returns the disagreements, each a line of
 * *report (owned, NULL when none).
 */
static inline int readme_check(const char *readme, const char *start, const struct jload_table *t,
                               size_t n_t, const char *only_prefix, char **report)
{
    struct readme_row *rows;
    size_t n = readme_rows(readme, start, &rows);
    int bad = 0;

    *report = NULL;
    if (n == 0) {
        readme_note(report, "no table rows under %s%s", start, "");
        return 1;
    }
    /* code -> README */
    for (size_t i = 0; i < n_t; i++)
        for (const struct jload_field *f = t[i].fields; f->key; f++) {
            char *name = xasprintf("%s%s", t[i].prefix, f->key);
            const struct readme_row *r;
            int k = 0;
            char num[32], want[80];
            if (only_prefix && strncmp(name, only_prefix, strlen(only_prefix)) != 0) {
                free(name);
                continue;
            }
            r = readme_find(rows, n, name, &k);
            if (!r && !only_prefix && !readme_documented(rows, n, name)) {
                readme_note(report, "%s: in the code, not in README%s", name, "");
                bad++;
            }
            if (!r) {
                free(name);
                continue;
            }
            switch (f->kind) {
            case JL_K_INT:
                readme_number(f->def, num, sizeof(num));
                if (!(f->def == 0 && f->min > 0) && !readme_has_number(r->def[k], num)) {
                    readme_note(report, "%s: README's default does not say %s", name, num);
                    bad++;
                }
                readme_number(f->min, num, sizeof(num));
                snprintf(want, sizeof(want), "%s..", num);
                readme_number(f->max, num, sizeof(num));
                strncat(want, num, sizeof(want) - strlen(want) - 1);
                if (!strstr(r->range[k], want)) {
                    readme_note(report, "%s: README's range does not say %s", name, want);
                    bad++;
                }
                break;
            case JL_K_BOOL:
                if (!strstr(r->def[k], f->def ? "true" : "false")) {
                    readme_note(report, "%s: README's default does not say %s", name,
                                f->def ? "true" : "false");
                    bad++;
                }
                break;
            case JL_K_CHOICE:
            case JL_K_STRCHOICE:
                for (const struct jload_choice *ch = f->choices; ch->name; ch++) {
                    int dflt = f->kind == JL_K_CHOICE ? ch->value == f->def
                                                      : f->sdef && !strcmp(f->sdef, ch->name);
                    snprintf(want, sizeof(want), "\"%s\"", ch->name);
                    if (dflt && !strstr(r->def[k], want)) {
                        readme_note(report, "%s: README's default does not say %s", name, want);
                        bad++;
                    } else if (!strstr(r->all, want)) {
                        readme_note(report, "%s: README does not name the choice %s", name, want);
                        bad++;
                    }
                }
                break;
            case JL_K_STR:
            case JL_K_PATH:
                if (f->sdef && !strstr(r->def[k], f->sdef)) {
                    readme_note(report, "%s: README's default does not say %s", name, f->sdef);
                    bad++;
                }
                break;
            default:
                break;
            }
            free(name);
        }
    /* README -> code */
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < rows[i].n; k++) {
            char *name = xstrdup(rows[i].key[k]);
            size_t len = strlen(name);
            int known = 0;
            if (only_prefix && strncmp(name, only_prefix, strlen(only_prefix)) != 0) {
                free(name); /* another table of the section */
                continue;
            }
            if (len > 2 && !strcmp(name + len - 2, "[]"))
                name[len - 2] = '\0';
            for (size_t j = 0; j < n_t && !known; j++)
                for (const struct jload_field *f = t[j].fields; f->key && !known; f++) {
                    size_t pl = strlen(t[j].prefix);
                    known = !strncmp(name, t[j].prefix, pl) && !strcmp(name + pl, f->key);
                }
            if (!known) {
                readme_note(report, "%s: in README, not in the code%s", rows[i].key[k], "");
                bad++;
            }
            free(name);
        }
    readme_free(rows, n);
    return bad;
}

/* README.md of the source tree, owned; NULL when unreadable. */
static inline char *readme_text(void)
{
    const char *src = getenv("BATON_SRCDIR");
    char *path = xasprintf("%s/README.md", src ? src : BATON_SRCDIR);
    char *text = NULL;
    size_t len = 0;
    if (read_file_capped(path, 1u << 22, &text, &len) < 0)
        text = NULL;
    free(path);
    return text;
}

#endif
