/*
 * jsonpos.h: positions in JSON text, which jansson does not keep.
 *
 * jansson reports a position only for syntax errors; once a document is
 * parsed, its values carry none. Loaders that must name file:line:column for
 * a wrong type, an out-of-range number or an unknown name keep the file text
 * and ask this scanner where a JSON path lies in it.
 *
 * What a position means: the 1-based line and 1-based column of the FIRST
 * byte of a value (its `{`, `[`, `"`, digit, `-`, `t`, `f` or `n`), or of a
 * member name (its opening `"`). Lines end at `\n` only (a `\r` before it is
 * the last column of its line). Columns count characters, not bytes: UTF-8
 * continuation bytes (0x80..0xBF) do not advance the column, so a position
 * after "é" is where an editor shows it; a tab is one column. This agrees
 * with the line and column jansson gives for syntax errors.
 *
 * Paths are RFC 6901 JSON pointers without the leading slash: segments are
 * separated by `/`, an object member is named by its (decoded) name with `~1`
 * for `/` and `~0` for `~`, an array element by its decimal index (no sign,
 * no leading zero). "" is the root value; "issuers/0/audiences/1" is the
 * second audience of the first issuer. A leading slash is accepted too (RFC
 * 6901's own form, "/issuers/0"): it is the only way to name a member whose
 * name is empty at the top level ("/").
 *
 * The scanner never reads outside [text, text + len), does not need a NUL
 * terminator, never recurses deeper than JSONPOS_MAX_DEPTH, and treats any
 * malformed text it meets on its way as "not found".
 */
#ifndef BATON_JSONPOS_H
#define BATON_JSONPOS_H

#include <stdbool.h>
#include <stddef.h>

/* Hard ceiling on nesting for every function here (bounds recursion). */
#define JSONPOS_MAX_DEPTH 512

struct jsonpos {
    size_t offset; /* byte offset from the start of the text */
    int line;      /* 1-based */
    int col;       /* 1-based, in characters (see above) */
};

/*
 * Finds `path` (NUL-terminated, borrowed) in `text` (`len` bytes, borrowed).
 * With `want_key`, and when the last segment names an object member, the
 * position is that of the member's name; otherwise that of the value. When a
 * name repeats within one object, the LAST occurrence is used, the one jansson
 * keeps when it loads without JSON_REJECT_DUPLICATES. Returns 0 and fills
 * *out, or -1 when the path does not exist, is not a valid pointer, or the
 * text is malformed before the target is reached.
 */
int jsonpos_find(const char *text, size_t len, const char *path, bool want_key,
                 struct jsonpos *out);

/* Line and column of byte `offset` (clamped to `len`). */
struct jsonpos jsonpos_at(const char *text, size_t len, size_t offset);

/*
 * Escapes a member name (`len` bytes, may hold any byte) as one path segment
 * (`~` -> `~0`, `/` -> `~1`). Returns an owned NUL-terminated string.
 */
char *jsonpos_segment(const char *name, size_t len);

enum jsonpos_status {
    JSONPOS_OK,
    JSONPOS_MALFORMED, /* not RFC 8259 JSON (at `where`) */
    JSONPOS_TOO_DEEP,  /* a container opens deeper than the cap (at `where`) */
};

struct jsonpos_dup {
    char *name;           /* owned, decoded UTF-8, NUL-terminated */
    size_t name_len;      /* bytes (a decoded \u0000 is kept) */
    struct jsonpos at;    /* this repeated occurrence's opening quote */
    struct jsonpos first; /* the first occurrence in the same object */
};

struct jsonpos_scan {
    enum jsonpos_status status;
    struct jsonpos where;     /* status != OK: the first offending byte */
    int depth;                /* deepest container nesting seen (root container = 1) */
    struct jsonpos_dup *dups; /* owned, in document order */
    size_t n_dups;
};

/*
 * Validates a whole document (one value, surrounded by optional whitespace)
 * and lists every member name that repeats within one object: the second and
 * later occurrences, each with the position of the first. `max_depth` caps
 * the nesting of containers (clamped to JSONPOS_MAX_DEPTH); the scan stops at
 * the first malformed byte or at a container deeper than the cap, keeping the
 * duplicates found before it. Strings are checked for escapes and control
 * bytes, not for UTF-8 validity. `out` is owned by the caller; free its
 * contents with jsonpos_scan_free.
 */
void jsonpos_scan(const char *text, size_t len, int max_depth, struct jsonpos_scan *out);
void jsonpos_scan_free(struct jsonpos_scan *s);

#endif
