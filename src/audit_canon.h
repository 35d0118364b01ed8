/*
 * audit_canon.h: the canonical form of an audit record (docs/audit.md
 * "Canonical form").
 *
 * The writer's line is a function of the record's JSON value alone: members
 * in a fixed order per kind (and per nested object), no whitespace, integers
 * in plain decimal (each within +-(2^53-1), so a double holds it exactly),
 * strings with `"` and `\` escaped by a backslash, bytes 0x00-0x1f and
 * 0x7f-0xff as `\u00xx` (lowercase hex) and every other byte as itself. So
 * a record that came back through a system that keeps only the value
 * (Cloud Logging's jsonPayload, a protobuf Struct: members in any order,
 * every number a double) can be rebuilt into the exact bytes the writer
 * hashed, and verified as written.
 */
#ifndef BATON_AUDIT_CANON_H
#define BATON_AUDIT_CANON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* The largest magnitude of a number in a record: 2^53-1, the largest
 * integer below which every integer is a double (RFC 7493 section 2.2). */
#define AUDIT_NUMBER_MAX INT64_C(9007199254740991)

/*
 * Writes the canonical line of `rec` (borrowed: a record's JSON value, as
 * jansson parsed it) into out (cap bytes, no newline, NUL-terminated), its
 * length in *len. Returns 0, or -1 with why (the value cannot be a record
 * baton wrote: an unknown kind or member, a number that is not an integer
 * or out of range, a character above U+00FF, a nested object where none
 * belongs, a line longer than cap-1).
 */
int audit_canon_record(const json_t *rec, char *out, size_t cap, size_t *len, char *why,
                       size_t whylen);

/*
 * Reads the log id and seq from a line in the canonical form's fixed prefix
 * `{"v":1,"seq":N,"prev":"<64 hex>","log":"<32 hex>",` (N without leading
 * zeros, at most AUDIT_NUMBER_MAX). Returns 0, or -1 when the line does not
 * begin so. Nothing else of the line is checked.
 */
int audit_canon_key(const char *line, size_t len, char log_id[33], uint64_t *seq);

/*
 * Describes the instance an `open` record names, as "name=value ..." from its
 * `instance` object (service, revision, configuration, id, host, pid,
 * started; null members left out), or from its host and pid when it has
 * none. Strings are cut and control bytes shown as '?'. Writes "" when
 * there is nothing to say; never fails.
 */
void audit_canon_instance(const json_t *open_rec, char *out, size_t cap);
/* The same for any object's scalar members (an open record's unclean_stop). */
void audit_canon_describe(const json_t *obj, char *out, size_t cap);

#endif
