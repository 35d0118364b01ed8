/*
 * jload.h: the strict, table-driven JSON loader under the main config
 * (config.c) and the step policies (policy_load.c).
 *
 * A loader reads one file: jload_init, then jload_parse (nesting depth and
 * every repeated member name found by jsonpos, then jansson), then walks the
 * tree, pushing each key and index it enters so that an error anywhere is
 * reported at file:line:column (jsonpos maps the JSON pointer back to the
 * text). Objects are checked against tables (struct jload_field): a row names
 * a key, its type, its range or choices, its default and where it is stored,
 * so each key's default and range is written once. A key no row names is an
 * error with a "did you mean" when a known key is within two edits; a row
 * marked JL_REQUIRED that is absent is an error. Every error is kept (up to
 * JLOAD_MAX_ERRORS, then one "too many errors" line), and jload_finish sorts
 * them by position, unknown positions last, stably. Macros and kinds carry
 * the prefix JL_.
 */
#ifndef BATON_JLOAD_H
#define BATON_JLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "diag.h"

#define JLOAD_MAX_ERRORS 100  /* errors reported per file before giving up */
#define JLOAD_MAX_PATH 40     /* JSON path segments tracked for positions */
#define JLOAD_MAX_STRING 4096 /* any string value jload_want_string accepts */

/* A table and the JSON path prefix of its keys as README names them
 * ("limits.", "issuers[]."): what the README checks compare. */
struct jload_table {
    const char *prefix;
    const struct jload_field *fields;
};

/* ---- the loading context: where we are, and the error count */

struct jload_seg {
    const char *key; /* borrowed from jansson, or NULL for an index */
    size_t idx;
};

struct jload {
    const char *file; /* borrowed: name in diagnostics */
    const char *dir;  /* borrowed: base of relative paths */
    const char *text; /* borrowed: the file bytes */
    size_t len;
    struct diags *d;
    size_t errors;
    struct jload_seg path[JLOAD_MAX_PATH];
    int depth;    /* segments in use */
    int overflow; /* pushes beyond JLOAD_MAX_PATH (positions then unknown) */
    size_t first; /* d->n when loading began: jload_finish sorts from there */
};

/* ---- tables: one row per key (name, type, range or choices, default, where stored) */

enum jload_kind {
    JL_K_BOOL,      /* bool */
    JL_K_INT,       /* int, unsigned, size_t or uint64_t (by the member's size and sign) */
    JL_K_STR,       /* char *, owned */
    JL_K_PATH,      /* char *, resolved against the loaded file's directory */
    JL_K_CHOICE,    /* an enum, stored from .choices[].value */
    JL_K_STRCHOICE, /* char *, one of .choices[].name, stored as written in the table */
    JL_K_STRLIST,   /* char ** + size_t count at .n_off */
    JL_K_CUSTOM,    /* .custom parses and stores */
};

#define JL_REQUIRED 1u
#define JL_STDOUT 2u   /* JL_K_PATH: "-" is kept as is (stdout) */
#define JL_NOCASE 4u   /* JL_K_STRCHOICE/JL_K_STRLIST: compare ignoring ASCII case */
#define JL_NONEMPTY 8u /* JL_K_STRLIST: at least one element */

struct jload_choice {
    const char *name;
    int value;
};

struct jload_field {
    const char *key;
    enum jload_kind kind;
    size_t off, size; /* member offset and size */
    bool is_signed;
    long long min, max, def;
    const char *sdef; /* JL_K_STR/JL_K_PATH/JL_K_STRCHOICE default, NULL: none */
    const struct jload_choice *choices;
    size_t n_off;     /* JL_K_STRLIST */
    size_t max_items; /* JL_K_STRLIST */
    /* JL_K_STR/JL_K_STRLIST item check, reporting at the current path; 0 ok */
    int (*check)(struct jload *c, const char *s);
    /* JL_K_CUSTOM: parses v into obj, reporting at the current path; 0 ok */
    int (*custom)(struct jload *c, const json_t *v, void *obj);
    unsigned flags;
};

#define JL_MEMBER(T, m) .off = offsetof(T, m), .size = sizeof(((T *)0)->m)
#define JL_SIGNED(T, m) \
    _Generic(((T *)0)->m, int : true, default : false) /* int is the only signed member type */
#define JL_BOOL(k, T, m, d)                                    \
    {                                                          \
        .key = k, .kind = JL_K_BOOL, JL_MEMBER(T, m), .def = d \
    }
#define JL_INT(k, T, m, lo, hi, d)                                                            \
    {                                                                                         \
        .key = k, .kind = JL_K_INT, JL_MEMBER(T, m), .is_signed = JL_SIGNED(T, m), .min = lo, \
        .max = hi, .def = d                                                                   \
    }
#define JL_STR(k, T, m, d, chk, fl)                                                       \
    {                                                                                     \
        .key = k, .kind = JL_K_STR, JL_MEMBER(T, m), .sdef = d, .check = chk, .flags = fl \
    }
#define JL_PATH(k, T, m, d, fl)                                              \
    {                                                                        \
        .key = k, .kind = JL_K_PATH, JL_MEMBER(T, m), .sdef = d, .flags = fl \
    }
#define JL_CHOICE(k, T, m, ch, d)                                               \
    {                                                                           \
        .key = k, .kind = JL_K_CHOICE, JL_MEMBER(T, m), .choices = ch, .def = d \
    }
#define JL_STRCHOICE(k, T, m, ch, d, fl)                                                         \
    {                                                                                            \
        .key = k, .kind = JL_K_STRCHOICE, JL_MEMBER(T, m), .choices = ch, .sdef = d, .flags = fl \
    }
#define JL_LIST(k, T, m, n, maxn, chk, fl)                                        \
    {                                                                             \
        .key = k, .kind = JL_K_STRLIST, JL_MEMBER(T, m), .n_off = offsetof(T, n), \
        .max_items = maxn, .check = chk, .flags = fl                              \
    }
/* A key whose value the caller reads by hand, in its own order (jload_check_keys). */
#define JL_KEY(k, fl)                              \
    {                                              \
        .key = k, .kind = JL_K_CUSTOM, .flags = fl \
    }
#define JL_CUSTOM(k, fn, fl)                                     \
    {                                                            \
        .key = k, .kind = JL_K_CUSTOM, .custom = fn, .flags = fl \
    }

/* Which keys of a table were present, and which of those parsed cleanly. */
struct jload_seen {
    uint64_t present, valid;
};

/* `c` for loading `text` (`len` bytes, borrowed, valid until jload_finish)
 * named `file` in diagnostics, resolving relative paths against `dir` (both
 * borrowed, may be NULL before jload_parse when only errors are reported). */
void jload_init(struct jload *c, const char *file, const char *dir, const char *text, size_t len,
                struct diags *d);
/*
 * Parses c's text: nesting deeper than `max_depth` containers, every repeated
 * member name (with the first one's position; jansson's last-wins reading
 * goes on so that everything else is still reported), invalid JSON, and a byte
 * jansson accepts but JSON does not. Returns the owned root, or NULL after
 * an error that leaves nothing to walk.
 */
json_t *jload_parse(struct jload *c, int max_depth);
/* Sorts what was added since jload_init by position and, past the cap, adds
 * "too many errors: N more not shown". */
void jload_finish(struct jload *c);

/* Path segments: push before descending into a key or index, pop after. The
 * key is borrowed until the matching pop. */
void jload_push_key(struct jload *c, const char *key);
void jload_push_idx(struct jload *c, size_t idx);
void jload_pop(struct jload *c);

/* Errors start with the display path of what they are about
 * ("issuers[0].audiences[1]: ..."), except jload_err_bare's, whose message
 * names its subject itself. */
/* An error positioned at the current path's value. */
void jload_err(struct jload *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* An error positioned at the current path's member name, whose message names
 * the enclosing object (for unknown keys: "limits: unknown key ..."). */
void jload_err_name(struct jload *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* An error at child `key` of the current object (its value or its name). */
void jload_err_at(struct jload *c, const char *key, bool at_key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* An error at the current path (its member name when `at_key`), the message as is. */
void jload_err_bare(struct jload *c, bool at_key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A warning at the current path's value, when d->warnings is set (`baton
 * check`): never counted, never fails a load. */
void jload_warn(struct jload *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Line and column of the current path (its member name when `at_key`), 0 0 when unknown. */
void jload_pos(const struct jload *c, bool at_key, int *line, int *col);
/* The one JSON-type-to-words helper: "an object", "an array", "a string",
 * "an integer", "a non-integer number", "a boolean", "null" (static). */
const char *jload_type_words(const json_t *v);
const char *jload_json_type_words(json_type t);
/* A quoted, escaped rendering of user text (at most 64 bytes shown, "..."
 * after) for messages, into `out` of `cap` bytes (420 holds any). */
void jload_quote(char *out, size_t cap, const char *s);
/* `p` resolved against `dir` (absolute paths and dir "." as they are); owned. */
char *jload_resolve(const char *dir, const char *p);

/* Tables. */
int jload_field_index(const struct jload_field *t, const char *key);
bool jload_has(const struct jload_field *t, const struct jload_seen *s, const char *key);
bool jload_parsed(const struct jload_field *t, const struct jload_seen *s, const char *key);
/* Stores every row's default into `obj` (JL_PATH defaults resolved against `dir`). */
void jload_defaults(const struct jload_field *t, void *obj, const char *dir);
/* A string value: type, length (JLOAD_MAX_STRING), no control bytes.
 * Borrowed from `v`, or NULL after reporting. */
const char *jload_want_string(struct jload *c, const json_t *v);
/*
 * Parses object `v` against table `t` into `obj` (defaults already applied).
 * Unknown keys and missing required keys are errors. Returns -1 when `v` is
 * not an object (nothing parsed), else 0 with `seen` filled.
 */
int jload_object(struct jload *c, const json_t *v, const struct jload_field *t, void *obj,
                 struct jload_seen *seen);
/* One row: parses `v` (at the current path) into `obj`; 0, or -1 after reporting. */
int jload_field(struct jload *c, const struct jload_field *f, const json_t *v, void *obj);
/* For an object walked by hand (whose keys must be read in an order of the
 * caller's): reports its unknown and missing required keys against `t`. */
void jload_check_keys(struct jload *c, const json_t *v, const struct jload_field *t);

#endif
