/*
 * fuzz_config.c: the main-config loader and the jsonpos scanner on arbitrary
 * bytes. Besides "no crash, no sanitizer report", it checks a property that
 * ties the two parsers together: for every value jansson finds in the input
 * (and every member name), jsonpos_find locates a byte that starts a value of
 * that type (or a name's opening quote). A disagreement aborts, so the fuzzer
 * reports it like a crash.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "config.h"
#include "diag.h"
#include "jsonpos.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct walk {
    const char *text;
    size_t len;
    unsigned budget; /* nodes left to check: keeps each input fast */
};

static void expect(int cond)
{
    if (!cond)
        abort();
}

static bool starts_like(const json_t *v, char ch)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return ch == '{';
    case JSON_ARRAY:
        return ch == '[';
    case JSON_STRING:
        return ch == '"';
    case JSON_INTEGER:
    case JSON_REAL:
        return ch == '-' || (ch >= '0' && ch <= '9');
    case JSON_TRUE:
        return ch == 't';
    case JSON_FALSE:
        return ch == 'f';
    case JSON_NULL:
        return ch == 'n';
    }
    return false;
}

static void check_node(struct walk *w, const json_t *v, const char *path, bool is_member)
{
    struct jsonpos p, k;
    if (!w->budget)
        return;
    w->budget--;
    expect(jsonpos_find(w->text, w->len, path, false, &p) == 0);
    expect(p.offset < w->len && starts_like(v, w->text[p.offset]));
    expect(jsonpos_find(w->text, w->len, path, true, &k) == 0);
    if (is_member)
        expect(k.offset < p.offset && w->text[k.offset] == '"');
    else
        expect(k.offset == p.offset);
    struct jsonpos again = jsonpos_at(w->text, w->len, p.offset);
    expect(again.line == p.line && again.col == p.col);

    if (json_is_object(v)) {
        const char *key;
        json_t *child;
        json_object_foreach((json_t *)v, key, child) {
            char *seg = jsonpos_segment(key, strlen(key));
            char *sub = xasprintf("%s/%s", path, seg); /* rooted form: "/" is the member "" */
            check_node(w, child, sub, true);
            free(sub);
            free(seg);
        }
    } else if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) {
            char *sub = xasprintf("%s/%zu", path, i);
            check_node(w, json_array_get(v, i), sub, false);
            free(sub);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    struct diags d = DIAGS_INIT;
    struct jsonpos_scan scan;
    struct jsonpos p;
    struct baton_config *cfg;
    json_error_t jerr;
    json_t *root;

    cfg = config_load_buffer(text, size, "fuzz/baton.json", &d);
    /* exactly one of: a config, or at least one error */
    expect((cfg != NULL) == (d.n == 0));
    for (size_t i = 0; i < d.n; i++)
        expect(d.v[i].line >= 0 && d.v[i].col >= 0 && d.v[i].msg && *d.v[i].msg);
    config_free(cfg);
    diags_free(&d);

    jsonpos_scan(text, size, JSONPOS_MAX_DEPTH, &scan);
    for (size_t i = 0; i < scan.n_dups; i++)
        expect(scan.dups[i].first.offset < scan.dups[i].at.offset &&
               text[scan.dups[i].at.offset] == '"');
    (void)jsonpos_find(text, size, "issuers/0/audiences/1", true, &p);
    (void)jsonpos_find(text, size, "a~1b/~0/0", false, &p);

    /* jansson accepts a few things RFC 8259 does not (a NUL after a
     * number); the property holds where both readers accept the text */
    root = json_loadb(text, size, 0, &jerr);
    if (root && scan.status == JSONPOS_OK) {
        struct walk w = {text, size, 256};
        check_node(&w, root, "", false);
    }
    json_decref(root);
    jsonpos_scan_free(&scan);
    return 0;
}
